#!/usr/bin/env python3
"""End-to-end scenarios: a Linux guest drives devices of remote processes.

One boot per DMA mode (fd: guest RAM is a shared memfd the servers map;
secure: secure-dma=on, every DMA is a checked message) runs all scenarios
in order; the guest (scripts/vfio-user-guest.sh, vfu.test=e2e) reports
each step on its serial console and this script acts on what it reads:

  nvme        remote nvme: the guest checks a pattern the host wrote and
              writes a derived one the host then checks byte for byte
  virtio-blk  the same on a remote virtio-blk-pci disk
  lsi         the same on a SCSI disk behind a remote lsi53c895a, which
              runs SCRIPTS it fetches from its own RAM BAR by DMA
  e1000e      remote e1000e with -netdev user (slirp in the remote
              process): DHCP, then an HTTP download and upload against a
              service of this script, sha256-checked on both sides
  hotplug     QMP device_add of a vfio-user-pci nvme; the guest finds it
              and checks data; device_del; the guest sees it go, QEMU
              emits DEVICE_DELETED, forgets it and holds no more fds
  crash       kill -9 of the nvme's remote process during guest reads:
              the guest gets an I/O error and goes on, QMP answers, the
              VM is running, QEMU logged exactly one error

Output is TAP: one `ok`/`not ok` line per scenario and mode.  On a failure
the guest console and the QEMU logs are printed as TAP comments.  Every
process started here is killed before exit.
"""

import argparse
import base64
import hashlib
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

STEPS = ['nvme', 'virtio-blk', 'lsi', 'e1000e', 'hotplug', 'crash']
# the steps whose disk image the host checks after the guest wrote it
DISK_STEPS = {'nvme': 'nvme', 'virtio-blk': 'vblk', 'lsi': 'scsi'}
# MODE:STEP -> why it is left out by default (see --leave-out).
KNOWN_BAD = {}
IMG_SIZE = 2 * 1024 * 1024
# Secure-dma moves data in small messages: keep transfers modest.
REGION_LEN = 128 * 1024
REGION_A = 0
REGION_B = 1024 * 1024
BLOB_LEN = 64 * 1024


def pattern(seed, n):
    """n bytes of a sha256 chain: no two 32-byte runs repeat."""
    out, h = bytearray(), hashlib.sha256(seed.encode()).digest()
    while len(out) < n:
        out += h
        h = hashlib.sha256(h).digest()
    return bytes(out[:n])


def plus_one(data):
    return bytes((x + 1) & 0xff for x in data)


def make_image(path, seed):
    img = bytearray(b'\x5a' * IMG_SIZE)
    a = pattern(seed, REGION_LEN)
    img[REGION_A:REGION_A + REGION_LEN] = a
    with open(path, 'wb') as f:
        f.write(img)
    return hashlib.sha256(a).hexdigest()


def check_image(path, seed):
    """Empty string if the image holds A, B = A + 1 and filler; else why."""
    a = pattern(seed, REGION_LEN)
    want = bytearray(b'\x5a' * IMG_SIZE)
    want[REGION_A:REGION_A + REGION_LEN] = a
    want[REGION_B:REGION_B + REGION_LEN] = plus_one(a)
    with open(path, 'rb') as f:
        got = f.read()
    if len(got) != IMG_SIZE:
        return f'image is {len(got)} bytes, expected {IMG_SIZE}'
    if got != want:
        bad = [i for i in range(IMG_SIZE) if got[i] != want[i]]
        i = bad[0]
        return (f'{len(bad)} bytes differ, first at {i}: 0x{got[i]:02x}, '
                f'expected 0x{want[i]:02x}')
    return ''


class Blobs(http.server.BaseHTTPRequestHandler):
    """GET /blob serves the blob; POST /upload takes base64 (busybox wget
    posts C strings) and answers the sha256 of the decoded bytes."""

    blob = b''
    uploads = []

    def do_GET(self):
        if self.path != '/blob':
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header('Content-Length', str(len(self.blob)))
        self.end_headers()
        self.wfile.write(self.blob)

    def do_POST(self):
        n = int(self.headers.get('Content-Length', '0'))
        body = self.rfile.read(n) if 0 <= n <= 16 * 1024 * 1024 else b''
        try:
            body = base64.b64decode(body)
        except ValueError:
            body = b''
        self.uploads.append(body)
        digest = hashlib.sha256(body).hexdigest().encode()
        self.send_response(200)
        self.send_header('Content-Length', str(len(digest)))
        self.end_headers()
        self.wfile.write(digest)

    def log_message(self, *args):
        pass


class Qmp:
    """Just enough QMP: commands in order, events kept for later."""

    def __init__(self, path, deadline):
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.sock.settimeout(30)
        self.buf = b''
        self.events = []
        self._read()  # greeting
        self.cmd('qmp_capabilities')

    def _read(self):
        while b'\n' not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError('QMP closed')
            self.buf += data
        line, self.buf = self.buf.split(b'\n', 1)
        return json.loads(line)

    def cmd(self, name, **args):
        msg = {'execute': name}
        if args:
            msg['arguments'] = args
        self.sock.sendall(json.dumps(msg).encode() + b'\n')
        while True:
            r = self._read()
            if 'event' in r:
                self.events.append(r)
            else:
                return r

    def poll_events(self):
        """Collect events that arrived without a command."""
        self.sock.setblocking(False)
        try:
            while True:
                try:
                    data = self.sock.recv(65536)
                except BlockingIOError:
                    break
                if not data:
                    break
                self.buf += data
        finally:
            self.sock.settimeout(30)
        while b'\n' in self.buf:
            line, self.buf = self.buf.split(b'\n', 1)
            r = json.loads(line)
            if 'event' in r:
                self.events.append(r)

    def close(self):
        self.sock.close()


class Boot:
    def __init__(self, args, mode, tmp, logs, steps):
        self.args, self.mode, self.tmp, self.logs = args, mode, tmp, logs
        self.steps = steps
        self.procs = []
        self.notes = {s: [] for s in steps}
        self.guest = {}        # step -> (ok, why) from the guest
        self.host = {s: True for s in steps}

    def fail(self, step, why):
        self.host[step] = False
        self.notes[step].append(why)

    def spawn(self, name, argv):
        log = open(os.path.join(self.logs, f'{self.mode}-{name}.log'), 'wb')
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                             stderr=subprocess.STDOUT)
        log.close()
        p.name = name
        self.procs.append(p)
        return p

    def log_text(self, name):
        try:
            with open(os.path.join(self.logs, f'{self.mode}-{name}.log'),
                      errors='replace') as f:
                return f.read()
        except OSError:
            return ''

    def stop_all(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def remote(self, name, devargs, sock):
        qemu = self.args.qemu
        p = self.spawn(name, [qemu, '-M', 'remote', '-nodefaults',
                              '-display', 'none'] + devargs)
        deadline = time.monotonic() + 30
        while not os.path.exists(sock):
            if p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f'{name} did not listen on {sock}:\n'
                                   + self.log_text(name))
            time.sleep(0.1)
        return p

    def run(self):
        t, mode = self.tmp, self.mode
        secure = mode == 'secure'
        seed = f'vfio-user e2e {mode} {os.getpid()} {time.time()}'
        img = {k: os.path.join(t, f'{k}.img')
               for k in ('nvme', 'vblk', 'scsi', 'hot')}
        sha = {k: make_image(img[k], seed + k) for k in img}
        sock = {k: os.path.join(t, f'{k}.sock')
                for k in ('nvme', 'net', 'vblk', 'scsi', 'hot')}

        Blobs.blob = pattern(seed + 'blob', BLOB_LEN)
        Blobs.uploads = []
        httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Blobs)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        port = httpd.server_address[1]
        try:
            return self._run(img, sha, sock, seed, port, secure)
        finally:
            httpd.shutdown()
            httpd.server_close()
            self.stop_all()

    def _run(self, img, sha, sock, seed, port, secure):
        # The nvme that crashes lives alone; so does the hot-plugged one.
        rnvme = self.remote('remote-nvme', [
            '-drive', f'file={img["nvme"]},format=raw,if=none,id=d0',
            '-device', 'nvme,id=n0,drive=d0,serial=vfunvme0',
            '-object', f'vfio-user-server,id=v0,socket={sock["nvme"]},device=n0'],
            sock['nvme'])
        vblk = 'virtio-blk' in self.steps
        # lsi53c895a fetches its SCRIPTS from its own RAM BAR by DMA
        scsi = 'lsi' in self.steps
        self.remote('remote-net-blk', [
            '-netdev', 'user,id=net0',
            '-device', 'e1000e,id=e0,netdev=net0,romfile=',
            '-object', f'vfio-user-server,id=v1,socket={sock["net"]},device=e0'
        ] + ([
            '-drive', f'file={img["vblk"]},format=raw,if=none,id=d1',
            '-device', 'virtio-blk-pci,id=b0,drive=d1',
            '-object', f'vfio-user-server,id=v2,socket={sock["vblk"]},device=b0'
        ] if vblk else []) + ([
            '-drive', f'file={img["scsi"]},format=raw,if=none,id=d3',
            '-device', 'lsi53c895a,id=s0',
            '-device', 'scsi-hd,drive=d3,bus=s0.0',
            '-object', f'vfio-user-server,id=v4,socket={sock["scsi"]},device=s0'
        ] if scsi else []), sock['scsi' if scsi else 'vblk' if vblk else 'net'])
        if not os.path.exists(sock['net']):
            raise RuntimeError(f'nobody listens on {sock["net"]}')
        self.remote('remote-hot', [
            '-drive', f'file={img["hot"]},format=raw,if=none,id=d2',
            '-device', 'nvme,id=n1,drive=d2,serial=vfuhot',
            '-object', f'vfio-user-server,id=v3,socket={sock["hot"]},device=n1'],
            sock['hot'])

        sec = ',secure-dma=on' if secure else ''
        kvm = self.mode == 'kvm'
        console = os.path.join(self.logs, f'{self.mode}-console.log')
        open(console, 'w').close()
        qmp_path = os.path.join(self.tmp, 'qmp.sock')
        append = ('console=ttyS0 quiet panic=-1 vfu.test=e2e'
                  f' vfu.timeout={self.args.timeout} vfu.len={REGION_LEN}'
                  f' vfu.a={REGION_A} vfu.b={REGION_B} vfu.sha={sha["nvme"]}'
                  + (f' vfu.vsha={sha["vblk"]}' if vblk else '')
                  + (f' vfu.ssha={sha["scsi"]}' if scsi else '') +
                  f' vfu.hsha={sha["hot"]}'
                  + (f' vfu.net=10.0.2.2:{port}'
                     f' vfu.nsha={hashlib.sha256(Blobs.blob).hexdigest()}'
                     if 'e1000e' in self.steps else ''))
        vm = self.spawn('vm', [
            self.args.qemu, '-M', 'q35,memory-backend=mem',
            '-accel', 'kvm' if kvm else self.args.accel, '-m', '512M',
            '-object', 'memory-backend-memfd,id=mem,size=512M,share=on',
            '-nodefaults', '-display', 'none', '-no-reboot',
            '-serial', f'file:{console}',
            '-qmp', f'unix:{qmp_path},server=on,wait=off',
            '-kernel', os.path.join(self.args.guest, 'vmlinuz'),
            '-initrd', os.path.join(self.args.guest, 'initramfs.cpio.gz'),
            '-append', append,
            '-device', f'vfio-user-pci,socket={sock["nvme"]},id=nvme0{sec}',
            '-device', f'vfio-user-pci,socket={sock["net"]},id=net0{sec}',
            # an empty slot for the hot-plugged device
            '-device', 'pcie-root-port,id=rp1,chassis=1,slot=1'] +
            # under KVM, MSI-X vectors must go to KVM irqfds
            (['-trace', 'vfio_user_pci_irqfd*'] if kvm else []) +
            (['-device', f'vfio-user-pci,socket={sock["vblk"]},id=vblk0{sec}']
             if vblk else []) +
            (['-device', f'vfio-user-pci,socket={sock["scsi"]},id=scsi0{sec}']
             if scsi else []))
        deadline = time.monotonic() + self.args.timeout + 30
        qmp = Qmp(qmp_path, time.monotonic() + 30)
        try:
            self._watch(vm, qmp, console, img, seed, sock, sec, rnvme,
                        deadline)
        finally:
            qmp.close()

    def _watch(self, vm, qmp, console, img, seed, sock, sec, rnvme,
               deadline):
        pos, partial = 0, ''
        fds_before = None
        killed = eio = False
        booted = False
        boot_deadline = time.monotonic() + 150
        alive = 0
        done = False
        while not done:
            if time.monotonic() > deadline:
                for s in self.steps:
                    if s not in self.guest:
                        self.fail(s, 'the guest did not report this step in time')
                break
            if not booted and time.monotonic() > boot_deadline:
                for s in self.steps:
                    self.fail(s, 'the guest kernel did not start in 150s')
                break
            if vm.poll() is not None:
                for s in self.steps:
                    if s not in self.guest:
                        self.fail(s, f'the VM exited ({vm.returncode}) first')
                break
            with open(console, 'rb') as f:
                f.seek(pos)
                data = f.read()
            pos += len(data)
            text = partial + data.decode(errors='replace').replace('\r', '')
            lines = text.split('\n')
            partial = lines.pop()
            if not lines:
                time.sleep(0.2)
                continue
            for line in lines:
                if line.startswith('VFU-BOOT'):
                    booted = True
                elif line.startswith('VFU-STEP: '):
                    parts = line.split(' ', 3)
                    step, res = parts[1], parts[2] if len(parts) > 2 else ''
                    why = parts[3] if len(parts) > 3 else ''
                    if step in self.steps:
                        self.guest[step] = (res == 'PASS', why)
                    if step in DISK_STEPS:
                        disk = DISK_STEPS[step]
                        why = check_image(img[disk], seed + disk)
                        if why:
                            self.fail(step, 'host check: ' + why)
                    elif step == 'e1000e':
                        want = hashlib.sha256(plus_one(Blobs.blob)).hexdigest()
                        got = [hashlib.sha256(u).hexdigest()
                               for u in Blobs.uploads]
                        if want not in got:
                            self.fail('e1000e', 'host received no upload with '
                                      f'sha256 {want} (got {got})')
                    elif step == 'hotplug':
                        self._after_unplug(qmp, vm, fds_before)
                    elif step == 'crash':
                        self._after_crash(qmp, vm, killed, eio, alive)
                elif line == 'VFU-HOTPLUG-READY':
                    fds_before = len(os.listdir(f'/proc/{vm.pid}/fd'))
                    r = qmp.cmd('device_add', driver='vfio-user-pci',
                                id='hot0', bus='rp1', socket=sock['hot'],
                                **({'secure-dma': True} if sec else {}))
                    if 'error' in r:
                        self.fail('hotplug', f'device_add: {r["error"]}')
                elif line == 'VFU-HOTPLUG-USED':
                    why = check_image(img['hot'], seed + 'hot')
                    if why:
                        self.fail('hotplug', 'host check: ' + why)
                    r = qmp.cmd('device_del', id='hot0')
                    if 'error' in r:
                        self.fail('hotplug', f'device_del: {r["error"]}')
                elif line == 'VFU-CRASH-READY':
                    rnvme.kill()
                    rnvme.wait()
                    killed = True
                elif line.startswith('VFU-CRASH-EIO'):
                    eio = True
                elif line.startswith('VFU-ALIVE'):
                    alive += 1
                elif line in ('VFU-RESULT: DONE', 'VFU-RESULT: FAIL'):
                    for s in self.steps:
                        if s not in self.guest:
                            self.fail(s, 'the guest gave up before this step')
                    done = True
        if vm.poll() is None:
            try:
                qmp.cmd('quit')
            except (OSError, EOFError):
                pass
            try:
                vm.wait(timeout=20)
            except subprocess.TimeoutExpired:
                vm.kill()

    def _after_unplug(self, qmp, vm, fds_before):
        # The guest saw it go; QEMU must have finished with it too.
        deadline = time.monotonic() + 30
        while True:
            qmp.poll_events()
            if any(e['event'] == 'DEVICE_DELETED' and
                   e.get('data', {}).get('device') == 'hot0'
                   for e in qmp.events):
                break
            if time.monotonic() > deadline:
                self.fail('hotplug', 'no DEVICE_DELETED event for hot0')
                return
            time.sleep(0.2)
        r = qmp.cmd('qom-get', path='/machine/peripheral/hot0', property='type')
        if 'error' not in r:
            self.fail('hotplug', 'hot0 still exists after DEVICE_DELETED')
        if fds_before is not None:
            fds = len(os.listdir(f'/proc/{vm.pid}/fd'))
            if fds != fds_before:
                self.fail('hotplug', f'the VM holds {fds} fds after device_del, '
                          f'{fds_before} before device_add')

    def _after_crash(self, qmp, vm, killed, eio, alive):
        if not killed:
            self.fail('crash', 'the guest never said CRASH-READY')
            return
        if not eio:
            self.fail('crash', 'the guest reported no I/O error')
        if alive < 3:
            self.fail('crash', f'the guest sent {alive} heartbeats, not 3')
        r = qmp.cmd('query-status')
        status = r.get('return', {}).get('status')
        if status != 'running':
            self.fail('crash', f'query-status after the crash: {r}')
        errs = [l for l in self.log_text('vm').splitlines()
                if 'vfio-user' in l]
        lost = [l for l in errs if 'lost the server' in l]
        if len(errs) != 1 or len(lost) != 1:
            self.fail('crash', f'QEMU logged {len(errs)} vfio-user lines, '
                      'expected one "lost the server": ' + ' | '.join(errs))
        else:
            self.notes['crash'].append('QEMU said: ' + errs[0])

    def dump(self):
        """Logs as TAP comments, for debugging a failure."""
        out = []
        con = self.log_text('console').replace('\r', '').splitlines()
        out.append(f'--- {self.mode}: guest console (last 80 lines) ---')
        out += con[-80:]
        for name in ('vm', 'remote-nvme', 'remote-net-blk', 'remote-hot'):
            text = self.log_text(name).splitlines()
            out.append(f'--- {self.mode}: {name} log (last 20 lines) ---')
            out += text[-20:]
        for line in out:
            print('# ' + line)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--qemu', required=True)
    ap.add_argument('--guest', required=True,
                    help='folder with vmlinuz and initramfs.cpio.gz')
    ap.add_argument('--logs', required=True, help='folder for the logs')
    ap.add_argument('--modes', default='fd secure kvm',
                    help='fd, secure, kvm (fd mode under KVM, which must '
                    'route MSI-X to irqfds; skipped without /dev/kvm, and '
                    'unless VFIO_USER_E2E_KVM=1)')
    ap.add_argument('--accel', default='tcg')
    ap.add_argument('--leave-out', default=' '.join(KNOWN_BAD),
                    help='MODE:STEP pairs not to run (known bugs)')
    ap.add_argument('--timeout', type=int, default=300,
                    help='seconds a boot may take, also the guest watchdog')
    args = ap.parse_args()
    modes = args.modes.split()
    os.makedirs(args.logs, exist_ok=True)

    # A signal from the check runner still lets `finally` stop the VMs.
    def on_signal(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)

    args.leave_out = args.leave_out.split()
    kvm_why = None
    if 'kvm' in modes:
        # nested KVM, where there is any, is too flaky to fail a check on
        kvm_why = (kvm_unusable(args.qemu)
                   if os.environ.get('VFIO_USER_E2E_KVM') == '1'
                   else 'KVM steps run with VFIO_USER_E2E_KVM=1')
    if kvm_why:
        modes.remove('kvm')
    # the steps each boot runs; kvm adds a host-side check of irqfds
    plan = {m: [s for s in STEPS if f'{m}:{s}' not in args.leave_out]
               + (['irqfd'] if m == 'kvm' else []) for m in modes}
    left_out = sum(len(STEPS) + (m == 'kvm') - len(plan[m]) for m in modes)
    # a skipped KVM boot still reports each of its steps: a stable count
    kvm_skipped = STEPS + ['irqfd'] if kvm_why else []
    print(f'1..{sum(map(len, plan.values())) + len(kvm_skipped) + left_out}',
          flush=True)
    n = 0
    failed = 0
    for s in kvm_skipped:
        n += 1
        print(f'ok {n} - {s} (kvm) # SKIP {kvm_why}', flush=True)
    for mode in modes:
        # UNIX socket paths must stay short: /tmp, not the build root.
        with tempfile.TemporaryDirectory(prefix='vfu-e2e.') as tmp:
            mode_steps = plan[mode]
            for s in STEPS:
                if s not in mode_steps:
                    n += 1
                    print(f'ok {n} - {s} ({mode}) # SKIP '
                          + KNOWN_BAD.get(f'{mode}:{s}', 'left out'),
                          flush=True)
            boot = Boot(args, mode, tmp, args.logs,
                        [s for s in mode_steps if s in STEPS])
            t0 = time.monotonic()
            err = ''
            try:
                boot.run()
            except Exception as e:  # report every step as failed, go on
                err = f'{type(e).__name__}: {e}'
            secs = time.monotonic() - t0
            print(f'# mode {mode}: boot took {secs:.0f}s', flush=True)
            if mode == 'kvm':
                # host-side only: a vector went to KVM, and nvme worked
                boot.guest['irqfd'] = (True, '')
                boot.host['irqfd'], boot.notes['irqfd'] = True, []
                if 'kvm irqfd 1' not in boot.log_text('vm'):
                    boot.fail('irqfd', 'no MSI-X vector became a KVM irqfd')
            bad = False
            for s in mode_steps:
                n += 1
                gok, gwhy = boot.guest.get(s, (False, 'not reported'))
                ok = gok and boot.host[s] and not err
                why = [] if gok else ['guest: ' + (gwhy or 'FAIL')]
                why += boot.notes[s] + ([err] if err else [])
                print(f'{"ok" if ok else "not ok"} {n} - {s} ({mode})'
                      + ('' if ok else ': ' + '; '.join(why)), flush=True)
                if ok and boot.notes[s]:
                    print('# ' + '; '.join(boot.notes[s]))
                bad |= not ok
            if bad:
                failed += 1
                boot.dump()
                sys.stdout.flush()
    return 1 if failed else 0


def kvm_unusable(qemu):
    """Why KVM cannot run the guest here, or None."""
    if not os.access('/dev/kvm', os.R_OK | os.W_OK):
        return 'no usable /dev/kvm'
    try:
        r = subprocess.run([qemu, '-accel', 'kvm', '-M', 'none', '-display',
                            'none', '-nodefaults', '-S', '-qmp', 'stdio'],
                           input=b'{"execute":"qmp_capabilities"}\n'
                                 b'{"execute":"quit"}\n',
                           capture_output=True, timeout=30)
    except subprocess.TimeoutExpired:
        return 'QEMU with -accel kvm did not start'
    if r.returncode != 0:
        lines = r.stderr.decode(errors='replace').strip().splitlines()
        return 'QEMU with -accel kvm failed: ' + (lines[-1] if lines else '?')
    return None


if __name__ == '__main__':
    sys.exit(main())
