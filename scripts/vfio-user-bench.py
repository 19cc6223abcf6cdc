#!/usr/bin/env python3
"""make bench: how fast vfio-user is here, next to what it cannot beat.

Not a test: nothing passes or fails on time.  Every figure is the median
of --runs runs; a table goes to stdout and every number to a CSV file.

  raw         AF_UNIX ping-pong of a 16+4-byte message, streaming and
              request/ack bandwidth at 4 KiB / 64 KiB / 1 MiB
              (scripts/bench/vfu-sockbench.c)
  mmio        BAR read round trip through vfio-user vs the same device in
              process (edu's ID register), and BAR write cost posted vs
              acked; measured with qtest, whose own per-command cost is
              taken out by timing the same commands on guest RAM
  bell        doorbell writes to pci-testdev (an ioeventfd it registers
              when a test starts): through the ioeventfd the server offers,
              posted messages, and acked messages
  nvme        a Linux guest's direct-I/O dd on an nvme disk, in process vs
              remote with guest RAM passed by fd vs secure-dma, at 4 KiB /
              64 KiB / 1 MiB blocks (this is also the DMA bandwidth: every
              byte is device DMA)

The client and server binaries and the argument templates are parameters,
so another implementation can be measured the same way: in the templates
{sock} is the socket path and {img} the nvme disk image.  --compare prints
two such runs' CSV files side by side (make bench-upstream: ours against
QEMU 7.2's own libvfio-user based server).
"""

import argparse
import csv
import os
import re
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time

FW = ["-L", "/usr/share/seabios", "-L", "/usr/lib/ipxe/qemu",
      "-L", "/usr/share/qemu"]
EDU_BAR = 0xe0000000
DEVFN_CFG = 0x80000000 | (4 << 11)     # 00:04.0 through 0xcf8

DEF_EDU_SERVER = ("-M remote -nodefaults -display none -device edu,id=e0 "
                  "-object vfio-user-server,id=v0,socket={sock},device=e0")
DEF_NVME_SERVER = ("-M remote -nodefaults -display none "
                   "-drive file={img},format=raw,if=none,id=d0,cache=none,"
                   "aio=threads "
                   "-device nvme,id=n0,drive=d0,serial=vfubench "
                   "-object vfio-user-server,id=v0,socket={sock},device=n0")
DEF_TESTDEV_SERVER = ("-M remote -nodefaults -display none "
                      "-device pci-testdev,id=td "
                      "-object vfio-user-server,id=v0,socket={sock},device=td")
DEF_CLIENT_DEV = "vfio-user-pci,socket={sock},addr=04.0"
# pci-testdev: writing 1 at BAR0 offset 0 starts its test 1, which
# registers an ioeventfd (no datamatch) on the byte at 0x801
TESTDEV_DOORBELL = 0x801
SIZES = [4096, 65536, 1048576]


def log(*a):
    print("bench:", *a, file=sys.stderr, flush=True)


class Results:
    def __init__(self):
        self.rows = []

    def add(self, group, name, value, unit, runs):
        self.rows.append(dict(group=group, name=name, value=value, unit=unit,
                              runs=" ".join("%.4g" % r for r in runs)))
        log("%-6s %-40s %12.4g %s" % (group, name, value, unit))
        return value

    def get(self, group, name):
        for r in self.rows:
            if r["group"] == group and r["name"] == name:
                return r["value"]
        return None


def median_of(fn, runs):
    vals = [fn() for _ in range(runs)]
    return statistics.median(vals), vals


# ---- raw sockets -------------------------------------------------------------

def sockbench(binary, *args):
    out = subprocess.run([binary] + [str(a) for a in args], check=True,
                         capture_output=True, text=True).stdout
    return float(out.split()[1])


def bench_raw(a, res):
    v, r = median_of(lambda: sockbench(a.sockbench, "pingpong", 20000), a.runs)
    res.add("raw", "pingpong 16+4 B round trip", v / 1000, "us", r)
    for size in SIZES:
        total = max(size * 64, 128 << 20)
        v, r = median_of(lambda: sockbench(a.sockbench, "stream", size, total),
                         a.runs)
        res.add("raw", "stream %d" % size, v, "MiB/s", r)
        v, r = median_of(lambda: sockbench(a.sockbench, "reqrep", size, total),
                         a.runs)
        res.add("raw", "request+ack %d" % size, v, "MiB/s", r)


# ---- processes ---------------------------------------------------------------

class Server:
    """A vfio-user server process listening on a socket."""

    def __init__(self, binary, template, sock, img="", logf=None):
        self.sock = sock
        args = [binary] + shlex.split(template.format(sock=sock, img=img))
        self.p = subprocess.Popen(args, stdout=logf or subprocess.DEVNULL,
                                  stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while not os.path.exists(sock):
            if self.p.poll() is not None or time.time() > deadline:
                self.stop()
                raise RuntimeError("server did not listen: %s" % " ".join(args))
            time.sleep(0.05)

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        if os.path.exists(self.sock):
            os.unlink(self.sock)


class Qtest:
    """A client QEMU driven over the qtest protocol."""

    def __init__(self, binary, extra, tmp):
        path = os.path.join(tmp, "qtest.sock")
        if os.path.exists(path):
            os.unlink(path)
        lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lsock.bind(path)
        lsock.listen(1)
        lsock.settimeout(30)
        args = [binary] + FW + [
            "-qtest", "unix:" + path, "-accel", "qtest", "-display", "none",
            "-nodefaults", "-M", "pc,memory-backend=mem", "-m", "256M",
            "-object", "memory-backend-memfd,id=mem,size=256M,share=on",
        ] + extra
        self.p = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            self.s, _ = lsock.accept()
        except socket.timeout:
            self.p.kill()
            raise RuntimeError("client QEMU did not start: %s" % " ".join(args))
        finally:
            lsock.close()
            os.unlink(path)
        self.s.settimeout(60)
        self.buf = b""

    def _lines(self, n):
        out = []
        while len(out) < n:
            while b"\n" not in self.buf:
                data = self.s.recv(1 << 20)
                if not data:
                    raise RuntimeError("qtest connection closed")
                self.buf += data
            line, self.buf = self.buf.split(b"\n", 1)
            if line.startswith(b"IRQ"):
                continue
            if not line.startswith(b"OK"):
                raise RuntimeError("qtest: %r" % line)
            out.append(line)
        return out

    def cmds(self, cmds):
        """Send commands back to back; returns the replies."""
        self.s.sendall("".join(c + "\n" for c in cmds).encode())
        return self._lines(len(cmds))

    def cmd(self, c):
        return self.cmds([c])[0]

    def timed(self, cmds):
        t0 = time.perf_counter()
        self.cmds(cmds)
        return time.perf_counter() - t0

    def stop(self):
        self.s.close()
        self.p.terminate()
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()


def assign_bar0(q):
    """Assign 00:04.0's BAR0 at EDU_BAR and enable memory decoding."""
    q.cmds(["outl 0xcf8 0x%x" % (DEVFN_CFG | 0x10),
            "outl 0xcfc 0x%x" % EDU_BAR,
            "outl 0xcf8 0x%x" % (DEVFN_CFG | 0x04),
            "outw 0xcfc 0x6"])


def map_bar0(q):
    """Assign edu's BAR0 at EDU_BAR and check that edu answers."""
    assign_bar0(q)
    ident = int(q.cmd("readl 0x%x" % EDU_BAR).split()[1], 16)
    if ident & 0xff != 0xed:
        raise RuntimeError("no edu at 0x%x (read 0x%x)" % (EDU_BAR, ident))


def bench_mmio(a, res, tmp):
    n = a.mmio_ops
    ram = 0x100000
    configs = [("inproc", None, ["-device", "edu,addr=04.0"]),
               ("posted", "on", None), ("acked", "off", None)]
    per = {}
    for name, posted, extra in configs:
        srv = None
        if extra is None:
            sock = os.path.join(tmp, "edu.sock")
            srv = Server(a.server, a.edu_server_args, sock)
            dev = a.client_dev.format(sock=sock)
            if posted:
                dev += ",x-posted-writes=" + posted
            extra = ["-device", dev]
        q = Qtest(a.client, extra, tmp)
        try:
            map_bar0(q)
            reads = ["readl 0x%x" % EDU_BAR] * n
            writes = ["writel 0x%x 0x%x" % (EDU_BAR + 4, i) for i in range(n)]
            ram_reads = ["readl 0x%x" % ram] * n
            ram_writes = ["writel 0x%x 0x%x" % (ram, i) for i in range(n)]
            # a read after the writes: posted ones count once they landed
            sync = ["readl 0x%x" % (EDU_BAR + 4)]
            for _ in range(2):      # warm up
                q.timed(reads[:200] + writes[:200] + sync)
            for _ in range(a.runs):
                per.setdefault((name, "ram-read"), []).append(
                    q.timed(ram_reads) / n)
                per.setdefault((name, "ram-write"), []).append(
                    q.timed(ram_writes + ["readl 0x%x" % ram]) / n)
                if name == "acked":
                    # the floor right next to each run: the machine's
                    # speed drifts by up to 2x between minutes
                    per.setdefault((name, "ping"), []).append(
                        sockbench(a.sockbench, "pingpong", n) / 1e9)
                per.setdefault((name, "read"), []).append(q.timed(reads) / n)
                per.setdefault((name, "write"), []).append(
                    q.timed(writes + sync) / n)
        finally:
            q.stop()
            if srv:
                srv.stop()

    def net(name, op):
        """Per-op time of @op minus qtest's own cost on RAM, in us."""
        dev = per[(name, op)]
        base = per[(name, "ram-" + op)]
        vals = [max(d - b, 0) * 1e6 for d, b in zip(dev, base)]
        return statistics.median(vals), vals

    res.add("mmio", "qtest readl on RAM (subtracted)",
            statistics.median(per[("inproc", "ram-read")]) * 1e6, "us",
            [v * 1e6 for v in per[("inproc", "ram-read")]])
    v, r = net("inproc", "read")
    res.add("mmio", "BAR read in process", v, "us", r)
    inproc_read = v
    v, r = net("acked", "read")
    res.add("mmio", "BAR read via vfio-user", v, "us", r)
    res.add("mmio", "BAR read round trip (vfio-user - in process)",
            max(v - inproc_read, 0), "us", [max(x - inproc_read, 0) for x in r])
    pings = [x * 1e6 for x in per[("acked", "ping")]]
    res.add("mmio", "raw ping-pong alongside each run", statistics.median(pings),
            "us", pings)
    pairs = [max(x - inproc_read, 0) / p for x, p in zip(r, pings)]
    res.add("mmio", "round trip / ping-pong alongside", statistics.median(pairs),
            "x", pairs)
    v, r = net("inproc", "write")
    res.add("mmio", "BAR write in process", v, "us", r)
    for name in ("posted", "acked"):
        v, r = net(name, "write")
        res.add("mmio", "BAR write via vfio-user, %s" % name, v, "us", r)
        res.add("mmio", "BAR write rate, %s" % name, 1 / v if v else 0,
                "M/s", [1 / x if x else 0 for x in r])


def bench_doorbell(a, res, tmp):
    """Doorbell writes to pci-testdev: ioeventfd, posted and acked."""
    n = a.mmio_ops
    ram = 0x100000
    configs = [("ioeventfd", ""),
               ("posted", ",x-no-ioeventfd=on"),
               ("acked", ",x-no-ioeventfd=on,x-posted-writes=off")]
    per = {}
    for name, opts in configs:
        sock = os.path.join(tmp, "td.sock")
        srv = Server(a.server, a.testdev_server_args, sock)
        q = Qtest(a.client, ["-device", a.client_dev.format(sock=sock) + opts],
                  tmp)
        try:
            assign_bar0(q)
            q.cmd("writeb 0x%x 0x1" % EDU_BAR)       # start test 1
            rings = ["writeb 0x%x 0x1" % (EDU_BAR + TESTDEV_DOORBELL)] * n
            sync = ["readb 0x%x" % EDU_BAR]
            ram_writes = ["writeb 0x%x 0x1" % ram] * n
            for _ in range(2):      # warm up (the client asks for doorbells)
                q.timed(rings + sync)
            for _ in range(a.runs):
                base = q.timed(ram_writes + ["readb 0x%x" % ram]) / n
                per.setdefault(name, []).append(
                    max(q.timed(rings + sync) / n - base, 0) * 1e6)
        finally:
            q.stop()
            srv.stop()
    for name, _ in configs:
        vals = per[name]
        v = statistics.median(vals)
        res.add("bell", "doorbell write via vfio-user, %s" % name, v, "us",
                vals)
        res.add("bell", "doorbell rate, %s" % name, 1 / v if v else 0, "M/s",
                [1 / x if x else 0 for x in vals])


# ---- guest nvme dd -----------------------------------------------------------

def guest_dd(a, mode, tmp):
    """Boot the test guest once; returns {(op, bs): MiB/s}."""
    img = os.path.join(tmp, "disk.img")
    with open(img, "wb") as f:
        f.truncate(max(a.dd_mib, 1) * 1024 * 1024 + (1 << 20))
    sock = os.path.join(tmp, "nvme.sock")
    console = os.path.join(tmp, "console-%s.log" % mode)
    srv = None
    if mode == "inproc":
        dev = ["-drive", "file=%s,format=raw,if=none,id=d0,cache=none,"
               "aio=threads" % img,
               "-device", "nvme,drive=d0,serial=vfubench"]
    else:
        srvlog = open(os.path.join(tmp, "server-%s.log" % mode), "w")
        srv = Server(a.server, a.nvme_server_args, sock, img, srvlog)
        d = a.client_dev.format(sock=sock).replace(",addr=04.0", "")
        if mode == "secure":
            d += ",secure-dma=on"
        dev = ["-device", d]
    args = [a.client] + FW + [
        "-M", "q35,memory-backend=mem", "-accel", a.accel, "-m", "512M",
        "-object", "memory-backend-memfd,id=mem,size=512M,share=on",
        "-nodefaults", "-display", "none", "-no-reboot",
        "-serial", "file:" + console,
        "-kernel", os.path.join(a.guest, "vmlinuz"),
        "-initrd", os.path.join(a.guest, "initramfs.cpio.gz"),
        "-append", "console=ttyS0 quiet panic=-1 vfu.test=dd-bench "
                   "vfu.mb=%d vfu.bs=%s vfu.timeout=%d" %
                   (a.dd_mib, ",".join(str(s) for s in SIZES), a.guest_timeout),
    ] + dev
    try:
        subprocess.run(args, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=a.guest_timeout + 60)
    finally:
        if srv:
            srv.stop()
    text = open(console, errors="replace").read()
    if "VFU-RESULT: PASS" not in text:
        tail = "\n".join(text.splitlines()[-15:])
        raise RuntimeError("guest dd (%s) failed:\n%s" % (mode, tail))
    out = {}
    for m in re.finditer(r"VFU-DD: (\w+) bs=(\d+) bytes=(\d+) "
                         r"t0=([\d.]+) t1=([\d.]+)", text):
        op, bs, nbytes = m.group(1), int(m.group(2)), int(m.group(3))
        t = max(float(m.group(5)) - float(m.group(4)), 1e-4)
        out[(op, bs)] = nbytes / t / (1024 * 1024)
    return out


def bench_nvme(a, res, tmp):
    for mode in a.nvme_modes.split(","):
        runs = [guest_dd(a, mode, tmp) for _ in range(a.guest_runs)]
        for op in ("read", "write"):
            for bs in SIZES:
                vals = [r[(op, bs)] for r in runs if (op, bs) in r]
                if vals:
                    res.add("nvme", "%s %s bs=%d" % (mode, op, bs),
                            statistics.median(vals), "MiB/s", vals)


# ---- targets -----------------------------------------------------------------

def targets(res):
    rows = []

    def ratio(name, num, den, target, higher_better):
        if num is None or den is None or den == 0:
            rows.append((name, None, target, "not measured"))
            return
        r = num / den
        ok = r >= target if higher_better else r <= target
        if target == 0:
            verdict = ""
        elif ok:
            verdict = "met"
        elif higher_better:
            verdict = "missed by %.0f%%" % ((target - r) / target * 100)
        else:
            verdict = "missed by %.0f%%" % ((r - target) / target * 100)
        rows.append((name, r, target, verdict))

    ping = res.get("raw", "pingpong 16+4 B round trip")
    # each MMIO run against a ping-pong run right before it
    ratio("MMIO round trip / raw ping-pong (<= 1.3)",
          res.get("mmio", "round trip / ping-pong alongside"), 1, 1.3, False)
    ratio("(info) MMIO round trip / raw part's ping-pong",
          res.get("mmio", "BAR read round trip (vfio-user - in process)"),
          ping, 0, False)
    for op in ("read", "write"):
        ratio("fd DMA / in process, dd %s 1 MiB blocks (>= 0.9)" % op,
              res.get("nvme", "fd %s bs=1048576" % op),
              res.get("nvme", "inproc %s bs=1048576" % op), 0.9, True)
    for op in ("read", "write"):
        ratio("secure-dma / raw stream, dd %s 64 KiB (>= 0.5)" % op,
              res.get("nvme", "secure %s bs=65536" % op),
              res.get("raw", "stream 65536"), 0.5, True)
    for bs in (4096, 65536):
        for op in ("read", "write"):
            ratio("guest nvme fd / in process, %s %d (>= 0.7)" % (op, bs),
                  res.get("nvme", "fd %s bs=%d" % (op, bs)),
                  res.get("nvme", "inproc %s bs=%d" % (op, bs)), 0.7, True)
    for op in ("read", "write"):
        for bs in SIZES:
            ratio("(info) secure / fd, %s %d" % (op, bs),
                  res.get("nvme", "secure %s bs=%d" % (op, bs)),
                  res.get("nvme", "fd %s bs=%d" % (op, bs)), 0, True)
    ratio("(info) posted / acked BAR write rate",
          res.get("mmio", "BAR write rate, posted"),
          res.get("mmio", "BAR write rate, acked"), 0, True)
    for name in ("ioeventfd", "posted"):
        ratio("(info) %s / acked doorbell rate" % name,
              res.get("bell", "doorbell rate, %s" % name),
              res.get("bell", "doorbell rate, acked"), 0, True)
    return rows


def compare(paths, labels):
    """Print the medians of two runs' CSV files side by side."""
    runs = []
    for path in paths:
        with open(path, newline="") as f:
            runs.append({(r["group"], r["name"]): r for r in csv.DictReader(f)})
    keys = list(runs[0]) + [k for k in runs[1] if k not in runs[0]]
    print("%-6s %-48s %12s %12s %-6s %7s" % ("group", "measure", labels[0],
                                              labels[1], "unit", "ratio"))
    for k in keys:
        vals = [float(r[k]["value"]) if k in r else None for r in runs]
        unit = (runs[0].get(k) or runs[1].get(k))["unit"]
        ratio = ("%.2f" % (vals[1] / vals[0])
                 if None not in vals and vals[0] else "-")
        print("%-6s %-48s %12s %12s %-6s %7s" % (
            k[0], k[1], *("-" if v is None else "%.4g" % v for v in vals),
            unit, ratio))


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    build = os.environ.get("BUILD_ROOT", os.path.join(here, "..", "build"))
    qemu = os.path.join(build, "qemu", "qemu-system-x86_64")
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--client", default=qemu, help="client QEMU binary")
    p.add_argument("--server", default=qemu, help="server binary")
    p.add_argument("--edu-server-args", default=DEF_EDU_SERVER,
                   help="server arguments exporting edu ({sock})")
    p.add_argument("--nvme-server-args", default=DEF_NVME_SERVER,
                   help="server arguments exporting nvme ({sock}, {img})")
    p.add_argument("--testdev-server-args", default=DEF_TESTDEV_SERVER,
                   help="server arguments exporting pci-testdev ({sock})")
    p.add_argument("--client-dev", default=DEF_CLIENT_DEV,
                   help="client -device option ({sock})")
    p.add_argument("--sockbench", default=os.path.join(build, "bench",
                                                       "vfu-sockbench"))
    p.add_argument("--guest", default=os.path.join(build, "guest"))
    p.add_argument("--accel", default="tcg")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--guest-runs", type=int, default=3)
    p.add_argument("--mmio-ops", type=int, default=2000)
    p.add_argument("--dd-mib", type=int, default=16)
    p.add_argument("--guest-timeout", type=int, default=240)
    p.add_argument("--only", default="raw,mmio,bell,nvme",
                   help="comma-separated parts to run")
    p.add_argument("--nvme-modes", default="inproc,fd,secure",
                   help="guest runs: nvme in process, remote by fd, "
                        "remote with secure-dma")
    p.add_argument("--csv", default=os.path.join(build, "bench",
                                                 "results.csv"))
    p.add_argument("--compare", nargs=2, metavar="CSV",
                   help="only print two earlier runs side by side")
    p.add_argument("--labels", default="ours,other",
                   help="column names for --compare")
    a = p.parse_args()
    if a.compare:
        compare(a.compare, a.labels.split(","))
        return

    res = Results()
    parts = a.only.split(",")
    with tempfile.TemporaryDirectory(prefix="vfu-bench.", dir="/tmp") as tmp:
        if "raw" in parts:
            bench_raw(a, res)
        if "mmio" in parts:
            bench_mmio(a, res, tmp)
        if "bell" in parts:
            bench_doorbell(a, res, tmp)
        if "nvme" in parts:
            bench_nvme(a, res, tmp)

    os.makedirs(os.path.dirname(os.path.abspath(a.csv)), exist_ok=True)
    with open(a.csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["group", "name", "value", "unit",
                                          "runs"])
        w.writeheader()
        w.writerows(res.rows)

    print("%-6s %-48s %12s %-6s" % ("group", "measure", "median", "unit"))
    for r in res.rows:
        print("%-6s %-48s %12.4g %-6s" % (r["group"], r["name"], r["value"],
                                         r["unit"]))
    print()
    print("%-62s %8s %8s  %s" % ("target", "ratio", "target", "verdict"))
    for name, r, target, verdict in targets(res):
        print("%-62s %8s %8.2f  %s" % (name, "-" if r is None else "%.2f" % r,
                                        target, verdict))
    print()
    print("CSV: %s (medians of %d runs, %d for the guest)" %
          (a.csv, a.runs, a.guest_runs))


if __name__ == "__main__":
    main()
