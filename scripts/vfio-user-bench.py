#!/usr/bin/env python3
"""make bench: how fast vfio-user is here, next to what it cannot beat.

Not a test: nothing passes or fails on time.  Every figure is the median
of --runs runs; a table goes to stdout, every number to a CSV file and
the medians with the targets to a bar chart next to it (--chart, gnuplot).

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

PING = ("raw", "pingpong 16+4 B round trip")
PING_ALONGSIDE = ("mmio", "raw ping-pong alongside each run")
MMIO_RT = ("mmio", "BAR read round trip (vfio-user - in process)")


def nvme_key(mode, op, bs):
    return ("nvme", "%s %s bs=%d" % (mode, op, bs))


def target_list():
    """(name, numerator, denominator, target, higher is better, chart).

    A denominator of None means the numerator is already a ratio; chart is
    (bar, reference) when the chart marks target x reference on that bar.
    A target of 0 is information only.
    """
    t = [("MMIO round trip / raw ping-pong (<= 1.3)",
          ("mmio", "round trip / ping-pong alongside"), None, 1.3, False,
          (MMIO_RT, PING_ALONGSIDE)),
         # each MMIO run against a ping-pong run right before it
         ("(info) MMIO round trip / raw part's ping-pong", MMIO_RT, PING,
          0, False, None)]
    for op in ("read", "write"):
        t.append(("fd DMA / in process, dd %s 1 MiB blocks (>= 0.9)" % op,
                  nvme_key("fd", op, 1048576),
                  nvme_key("inproc", op, 1048576), 0.9, True, ()))
    for op in ("read", "write"):
        t.append(("secure-dma / raw stream, dd %s 64 KiB (>= 0.5)" % op,
                  nvme_key("secure", op, 65536), ("raw", "stream 65536"),
                  0.5, True, ()))
    for bs in (4096, 65536):
        for op in ("read", "write"):
            t.append(("guest nvme fd / in process, %s %d (>= 0.7)" % (op, bs),
                      nvme_key("fd", op, bs), nvme_key("inproc", op, bs),
                      0.7, True, ()))
    for op in ("read", "write"):
        for bs in SIZES:
            t.append(("(info) secure / fd, %s %d" % (op, bs),
                      nvme_key("secure", op, bs), nvme_key("fd", op, bs),
                      0, True, None))
    t.append(("(info) posted / acked BAR write rate",
              ("mmio", "BAR write rate, posted"),
              ("mmio", "BAR write rate, acked"), 0, True, None))
    for name in ("ioeventfd", "posted"):
        t.append(("(info) %s / acked doorbell rate" % name,
                  ("bell", "doorbell rate, %s" % name),
                  ("bell", "doorbell rate, acked"), 0, True, None))
    return t


def targets(res):
    rows = []
    for name, numk, denk, target, higher_better, _ in target_list():
        num = res.get(*numk)
        den = res.get(*denk) if denk else 1
        if num is None or den is None or den == 0:
            rows.append((name, None, target, "not measured"))
            continue
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
    return rows


# ---- chart -------------------------------------------------------------------

# Bar series: (colour, legend text; %s is the implementation's label)
SERIES = {
    "inproc": ("#4477aa", "in process (same device inside QEMU)"),
    "fd": ("#ee7733", "%s, DMA by fd"),
    "secure": ("#228833", "%s, secure-dma"),
    "other": ("#aa3377", "%s, DMA by fd"),
    "raw": ("#999999", "raw AF_UNIX socket"),
    "ping": ("#999999", "raw AF_UNIX ping-pong, measured alongside"),
}


def chart_panels(ours, other):
    """The chart's panels: (title, unit, log scale, categories, targets).

    A category is (x label, [(series, value, target or None)]); @ours and
    @other map (group, name) to a median.  targets says in words what the
    panel's target marks are.
    """
    def size(bs):
        return "%d %s" % ((bs >> 20, "MiB") if bs >= 1 << 20 else
                          (bs >> 10, "KiB"))

    # target x reference, marked on the bar the target is about
    marks = {}
    words = {}
    for _, numk, denk, target, higher, chart in target_list():
        if target and chart is not None:
            bar, ref = chart or (numk, denk)
            if ours.get(ref) and ours.get(bar) is not None:
                marks[bar] = target * ours[ref]
                what = {"raw": "raw stream 64 KiB (secure-dma)",
                        "mmio": "raw ping-pong",
                        "nvme": "in process (DMA by fd)"}[ref[0]]
                words.setdefault(bar[0], {}).setdefault(what, set()).add(
                    "%s%g" % (">=" if higher else "<=", target))

    def bar(series, key, src=None):
        v = (ours if src is None else src).get(key)
        if v is None:
            return []
        return [(series, v, marks.get(key) if src is None else None)]

    other = other or {}
    raw = [("%s\\n%s" % (n.replace("request", "req"), size(bs)),
            bar("raw", ("raw", "%s %d" % (n, bs))))
           for n in ("stream", "request+ack") for bs in SIZES]
    mmio = [("BAR read\\nround trip",
             bar("fd", MMIO_RT) + bar("other", MMIO_RT, other) +
             bar("ping", PING_ALONGSIDE))]
    for how in ("posted", "acked"):
        k = ("mmio", "BAR write via vfio-user, %s" % how)
        mmio.append(("BAR write\\n%s" % how,
                     bar("inproc", ("mmio", "BAR write in process")) +
                     bar("fd", k) + bar("other", k, other)))
    for how in ("ioeventfd", "posted", "acked"):
        k = ("bell", "doorbell write via vfio-user, %s" % how)
        mmio.append(("doorbell\\n%s" % how,
                     bar("fd", k) + bar("other", k, other)))
    nvme = [("%s %s" % (op, size(bs)),
             bar("inproc", nvme_key("inproc", op, bs)) +
             bar("fd", nvme_key("fd", op, bs)) +
             bar("secure", nvme_key("secure", op, bs)) +
             bar("other", nvme_key("fd", op, bs), other))
            for op in ("read", "write") for bs in SIZES]
    panels = [("raw", "Raw AF_UNIX socket bandwidth (vfu-sockbench)",
               "MiB/s, higher is better", False, raw),
              ("mmio", "BAR accesses and doorbell writes (qtest)",
               "us per access, lower is better", False, mmio),
              ("nvme", "Guest nvme: direct-I/O dd (every byte is device DMA)",
               "MiB/s (log scale), higher is better", True, nvme)]
    return [(t, u, log, [c for c in cats if c[1]],
             "; ".join("%s x %s" % ("/".join(sorted(v)), k)
                       for k, v in words.get(g, {}).items()))
            for g, t, u, log, cats in panels if any(c[1] for c in cats)]


def chart_script(panels, labels, png, title):
    """A gnuplot script drawing @panels into @png."""
    def q(text):
        return '"%s"' % text.replace('"', "'")

    # raw and MMIO side by side above nvme, which has the most bars
    if len(panels) == 3:
        rows = 2
        layout = [(0, 0.5, 0.4, 0.48), (0.4, 0.5, 0.6, 0.48), (0, 0, 1, 0.5)]
    else:
        rows = len(panels)
        layout = [(0, (rows - 1 - i) / rows, 1, 0.96 / rows)
                  for i in range(rows)]
    out = ['set terminal pngcairo size 1280,%d font "DejaVu Sans,10" '
           'noenhanced' % (400 * rows),
           "set output %s" % q(png),
           "set multiplot title %s font \",12\"" % q(title),
           "set style fill solid 0.9 border -1", "set grid ytics",
           "set key top left Left reverse font \",9\"",
           # room for two-line category names
           "set xtics scale 0", "set bmargin 3.5"]
    for i, (ptitle, unit, log, cats, twords) in enumerate(panels):
        x0, y0, width, height = layout[i]
        nbars = max(len(c[1]) for c in cats)
        w = 0.8 / nbars
        vals = [v for c in cats for _, v, t in c[1]] + \
               [t for c in cats for _, _, t in c[1] if t]
        lo = min([v for v in vals if v > 0] or [1]) / 2 if log else 0
        # headroom for the legend
        hi = max(vals + [lo * 2, 1e-3]) * (30 if log else 1.6)
        blocks = {k: [] for k in list(SERIES) + ["target"]}
        for x, (_, bars) in enumerate(cats):
            for j, (series, v, t) in enumerate(bars):
                bx = x + (j - (len(bars) - 1) / 2) * w
                blocks[series].append('%g %g %g %g %g "%s"' % (
                    bx, max(v, lo), bx - w / 2, bx + w / 2, lo,
                    "%.0f" % v if v >= 100 else "%.3g" % v))
                if t:
                    blocks["target"].append(
                        "%g %g %g" % (bx - w * 0.6, t, w * 1.2))
        out += ["set origin %g,%g" % (x0, y0),
                "set size %g,%g" % (width, height),
                "set title %s" % q(ptitle), "set ylabel %s" % q(unit),
                "%s logscale y" % ("set" if log else "unset"),
                "set format y %s" % q("%g"),
                "set xrange [-0.6:%g]" % (len(cats) - 0.4),
                "set yrange [%g:%g]" % (lo, hi),
                "set xtics (%s)" % ", ".join("%s %d" % (q(c[0]), x)
                                             for x, c in enumerate(cats))]
        plots = []
        for name, data in blocks.items():
            if not data:
                continue
            out += ["$%s%d << EOD" % (name, i)] + data + ["EOD"]
            if name == "target":
                plots.append("$target%d using 1:2:3:(0) with vectors nohead "
                             "lw 3 lc rgb \"#cc0000\" title %s" %
                             (i, q("target: " + twords)))
                continue
            colour, text = SERIES[name]
            label = labels[1] if name == "other" else labels[0]
            plots.append("$%s%d using 1:2:3:4:5:2 with boxxyerror "
                         "lc rgb \"%s\" title %s" %
                         (name, i, colour, q(text.replace("%s", label))))
            plots.append("$%s%d using 1:2:6 with labels "
                         "font \",8\" offset 0,0.6 notitle" % (name, i))
        out.append("plot " + ", \\\n     ".join(plots))
    out.append("unset multiplot")
    return "\n".join(out) + "\n"


def draw_chart(png, ours, other=None, labels=("ours", "other"), title=""):
    """Draw the medians of one run (and another implementation's) into @png."""
    panels = chart_panels(ours, other)
    if not panels:
        return
    try:
        subprocess.run(["gnuplot"], text=True, check=True,
                       input=chart_script(panels, labels, png, title))
    except FileNotFoundError:
        log("no gnuplot: no chart (./configure installs gnuplot-nox)")
        return
    print("chart: %s" % png)


def read_csv(path):
    with open(path, newline="") as f:
        return {(r["group"], r["name"]): r for r in csv.DictReader(f)}


def medians(rows):
    return {k: float(r["value"]) for k, r in rows.items()}


def chart_title(what, rows):
    runs = max((len(r["runs"].split()) for r in rows.values()
                if r["group"] != "nvme"), default=0)
    boots = max((len(r["runs"].split()) for r in rows.values()
                 if r["group"] == "nvme"), default=0)
    return "%s, %s: median of %d run%s, %d guest boot%s per mode" % (
        what, time.strftime("%Y-%m-%d"), runs, "s" * (runs != 1), boots,
        "s" * (boots != 1))


def compare(paths, labels):
    """Print the medians of two runs' CSV files side by side."""
    runs = [read_csv(path) for path in paths]
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
                   help="names of the implementations: the one measured "
                        "(and the other one of --compare)")
    p.add_argument("--chart", metavar="PNG",
                   help="bar chart of the medians and targets (gnuplot); "
                        "default: the CSV's name with .png, none with "
                        "--compare; '' for none")
    a = p.parse_args()
    labels = a.labels.split(",") + ["other"]
    if a.compare:
        compare(a.compare, labels)
        if a.chart:
            ours, other = [read_csv(path) for path in a.compare]
            draw_chart(a.chart, medians(ours), medians(other), labels,
                       chart_title("%s vs %s" % tuple(labels[:2]), ours))
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
    if a.chart is None:
        a.chart = os.path.splitext(a.csv)[0] + ".png"
    if a.chart:
        rows = read_csv(a.csv)
        draw_chart(a.chart, medians(rows), None, labels,
                   chart_title("make bench (%s)" % labels[0], rows))


if __name__ == "__main__":
    main()
