#!/usr/bin/env python3
"""Capture what our vfio-user server tells a client about real devices.

Starts qemu-system-x86_64 -M remote exporting each device below, plays
the client's realize (VERSION, DEVICE_GET_INFO, GET_REGION_INFO for every
region, GET_IRQ_INFO for every index, the config region,
GET_REGION_IO_FDS for every BAR) and writes every reply payload, hex
encoded, with the number of fds that came with it, to a JSON file:
tests/fuzz/vfio-user-devices.json, from which vfio-user-corpus.py makes
the seeds of the vfio-user-realize fuzz target.  Run it again when the
server changes what it reports:

usage: vfio-user-capture.py QEMU [OUT.json]
"""

import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time

VERSION, GET_INFO, GET_REGION_INFO, GET_REGION_IO_FDS, GET_IRQ_INFO, \
    REGION_READ = 1, 4, 5, 6, 7, 9
CONFIG = 7
ERROR = 0x20

# device name -> arguments of the remote process (device id d0)
DEVICES = {
    'nvme': ['-drive', 'if=none,id=dr,driver=null-co,size=1M',
             '-device', 'nvme,id=d0,drive=dr,serial=fuzz'],
    'e1000e': ['-device', 'e1000e,id=d0,romfile='],
    'virtio-blk-pci': ['-drive',
                       'if=none,id=dr,driver=null-co,size=1M',
                       '-device', 'virtio-blk-pci,id=d0,drive=dr'],
    'lsi53c895a': ['-device', 'lsi53c895a,id=d0'],
    'edu': ['-device', 'edu,id=d0'],
}


class Client:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.next_id = 0

    def _recv_exact(self, n, fds):
        buf = b''
        while len(buf) < n:
            data, anc, _, _ = self.sock.recvmsg(n - len(buf),
                                                socket.CMSG_SPACE(64 * 4))
            if not data:
                raise EOFError('the server closed the connection')
            for level, kind, fdata in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    got = struct.unpack(f'{len(fdata) // 4}i',
                                        fdata[:len(fdata) // 4 * 4])
                    fds.extend(got)
            buf += data
        return buf

    def call(self, cmd, payload):
        """Returns (reply payload, number of fds) or (None, 0) on error."""
        msg_id = self.next_id
        self.next_id += 1
        self.sock.sendall(struct.pack('<HHIII', msg_id, cmd, 16 + len(payload),
                                      0, 0) + payload)
        fds = []
        hdr = self._recv_exact(16, fds)
        rid, rcmd, size, flags, _ = struct.unpack('<HHIII', hdr)
        body = self._recv_exact(size - 16, fds)
        for fd in fds:
            os.close(fd)
        assert rid == msg_id and rcmd == cmd, (rid, rcmd, msg_id, cmd)
        if flags & ERROR:
            return None, 0
        return body, len(fds)


def capture(qemu, name, args, tmp):
    path = os.path.join(tmp, name + '.sock')
    proc = subprocess.Popen([qemu, '-M', 'remote', '-nodefaults',
                             '-display', 'none'] + args +
                            ['-object',
                             f'vfio-user-server,id=v0,socket={path},device=d0'],
                            stdout=subprocess.DEVNULL)
    try:
        for _ in range(200):
            if os.path.exists(path):
                break
            time.sleep(0.05)
        c = Client(path)
        caps = b'{"capabilities":{"max_msg_fds":8,' \
               b'"max_data_xfer_size":1048576}}\0'
        dev = {}
        dev['version'] = c.call(VERSION, struct.pack('<HH', 0, 2) + caps)[0]
        info = c.call(GET_INFO, struct.pack('<IIII', 16, 0, 0, 0))[0]
        dev['info'] = info
        _, _, nregions, nirqs = struct.unpack('<IIII', info)
        dev['regions'] = {}
        for i in range(nregions):
            dev['regions'][i] = c.call(GET_REGION_INFO,
                                       struct.pack('<IIIIQQ', 4096, 0, i, 0,
                                                   0, 0))
        dev['irqs'] = {i: c.call(GET_IRQ_INFO,
                                 struct.pack('<IIII', 16, 0, i, 0))[0]
                       for i in range(nirqs)}
        cfg_size = struct.unpack('<Q', dev['regions'][CONFIG][0][16:24])[0]
        config = b''
        while len(config) < min(cfg_size, 4096):
            r = c.call(REGION_READ, struct.pack('<QII', len(config), CONFIG,
                                                256))[0]
            config += r[16:]
        dev['config'] = config
        dev['iofds'] = {}
        for i in range(6):
            size = struct.unpack('<Q', dev['regions'][i][0][16:24])[0]
            if size:
                dev['iofds'][i] = c.call(GET_REGION_IO_FDS,
                                         struct.pack('<IIII', 16 + 40 * 64, 0,
                                                     i, 0))
        c.sock.close()
    finally:
        proc.terminate()
        proc.wait()

    def hexed(v):
        if isinstance(v, tuple):
            return [v[0].hex() if v[0] is not None else None, v[1]]
        if isinstance(v, dict):
            return {str(k): hexed(x) for k, x in v.items()}
        return v.hex() if v is not None else None
    return {k: hexed(v) for k, v in dev.items()}


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    out = sys.argv[2] if len(sys.argv) == 3 else \
        os.path.join(os.path.dirname(os.path.abspath(__file__)),
                     'vfio-user-devices.json')
    with tempfile.TemporaryDirectory() as tmp:
        devices = {name: capture(sys.argv[1], name, args, tmp)
                   for name, args in DEVICES.items()}
    with open(out, 'w') as f:
        json.dump(devices, f, indent=1, sort_keys=True)
        f.write('\n')


if __name__ == '__main__':
    main()
