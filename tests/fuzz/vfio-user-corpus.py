#!/usr/bin/env python3
"""Write the seed corpora of the vfio-user fuzz targets.

Each seed is a stream of valid vfio-user messages, as the targets in
tests/qtest/fuzz/vfio_user_fuzz.c expect them:

  server/  what a client sends to vfio-user-server exporting edu, after
           VERSION: queries, config and BAR accesses, DMA mappings with and
           without an fd (msg_id bit 15 set = the target attaches a memfd,
           bit 14 too = one not sealed against shrinking),
           edu DMA in both directions, interrupts, reset.
  client/  what a server sends to vfio-user-pci after realize: replies to
           the target's accesses (msg_id 0 = its first request) and
           DMA_READ/DMA_WRITE requests.
  realize/ the devices our server exports (nvme, e1000e, virtio-blk-pci,
           lsi53c895a, edu: their replies as vfio-user-capture.py recorded
           them in vfio-user-devices.json) described as the realize target
           reads them, then crafted ones: capability chains that end near
           the end of config space, sparse mmap areas, doorbells (also
           two that KVM would refuse together).

usage: vfio-user-corpus.py OUTDIR
"""

import json
import os
import struct
import sys

# commands (protocol.h)
VERSION, DMA_MAP, DMA_UNMAP, GET_INFO, GET_REGION_INFO, GET_REGION_IO_FDS, \
    GET_IRQ_INFO, SET_IRQS, REGION_READ, REGION_WRITE, DMA_READ, DMA_WRITE, \
    RESET = range(1, 14)
WRITE_MULTI = 15
REPLY, NO_REPLY, ERROR = 0x1, 0x10, 0x20
CONFIG, BAR0 = 7, 0
FD = 0x8000             # msg_id flag: the target sends a memfd along
UNSEALED = 0x4000       # with FD: a memfd the server must not mmap

# edu's registers (docs/specs/edu.txt) and its DMA buffer
EDU_ID, EDU_LIVE, EDU_FACT, EDU_STATUS = 0x00, 0x04, 0x08, 0x20
EDU_IRQ_RAISE, EDU_IRQ_ACK = 0x60, 0x64
EDU_DMA_SRC, EDU_DMA_DST, EDU_DMA_CNT, EDU_DMA_CMD = 0x80, 0x88, 0x90, 0x98
EDU_BUF = 0x40000


def msg(cmd, payload=b'', msg_id=0, flags=0, error=0):
    return struct.pack('<HHIII', msg_id, cmd, 16 + len(payload), flags,
                       error) + payload


class Stream:
    def __init__(self):
        self.out = b''
        self.next_id = 1

    def req(self, cmd, payload=b'', flags=0, msg_id=None):
        if msg_id is None:
            msg_id = self.next_id
            self.next_id += 1
        self.out += msg(cmd, payload, msg_id, flags)
        return self


def region_access(region, offset, data=b'', count=None):
    count = len(data) if count is None else count
    return struct.pack('<QII', offset, region, count) + data


def server_seeds():
    seeds = {}

    s = Stream()
    s.req(GET_INFO, struct.pack('<IIII', 16, 0, 0, 0))
    for i in range(9):
        s.req(GET_REGION_INFO, struct.pack('<IIIIQQ', 32, 0, i, 0, 0, 0))
    for i in range(5):
        s.req(GET_IRQ_INFO, struct.pack('<IIII', 16, 0, i, 0))
    s.req(GET_REGION_IO_FDS, struct.pack('<IIII', 16, 0, BAR0, 0))
    seeds['query'] = s.out

    s = Stream()
    s.req(REGION_READ, region_access(CONFIG, 0, count=256))
    s.req(REGION_WRITE, region_access(CONFIG, 4, struct.pack('<H', 0x6)))
    s.req(REGION_READ, region_access(CONFIG, 0x34, count=1))
    s.req(REGION_READ, region_access(BAR0, EDU_ID, count=4))
    s.req(REGION_WRITE, region_access(BAR0, EDU_LIVE, struct.pack('<I', 0x55)))
    s.req(REGION_READ, region_access(BAR0, EDU_LIVE, count=4))
    s.req(REGION_WRITE, region_access(BAR0, EDU_FACT, struct.pack('<I', 5)))
    s.req(REGION_READ, region_access(BAR0, EDU_STATUS, count=4))
    s.req(REGION_READ, region_access(BAR0, EDU_FACT, count=4))
    s.req(REGION_READ, region_access(BAR0, EDU_DMA_SRC, count=8))
    s.req(REGION_WRITE, region_access(BAR0, EDU_FACT, struct.pack('<I', 3)),
          flags=NO_REPLY)
    seeds['access'] = s.out

    s = Stream()
    entries = [(EDU_LIVE, 4, 1), (EDU_FACT, 4, 4), (EDU_STATUS, 4, 0x80)]
    payload = struct.pack('<Q', len(entries))
    for off, count, val in entries:
        payload += struct.pack('<QII', off, BAR0, count) + \
            struct.pack('<Q', val)
    s.req(WRITE_MULTI, payload)
    s.req(RESET)
    s.req(REGION_READ, region_access(BAR0, EDU_FACT, count=4))
    seeds['multi-reset'] = s.out

    # edu DMA, both directions, through a mapping without an fd (the
    # server asks us) and one with an fd (the server maps it)
    for name, fd in (('dma-msg', 0), ('dma-fd', FD),
                     ('dma-unsealed', FD | UNSEALED)):
        s = Stream()
        s.req(REGION_WRITE, region_access(CONFIG, 4, struct.pack('<H', 0x6)))
        s.req(DMA_MAP, struct.pack('<IIQQQ', 32, 3, 0, 0x100000, 0x10000),
              msg_id=(s.next_id | fd))
        s.next_id += 1
        for off, val in ((EDU_DMA_SRC, 0x100000), (EDU_DMA_DST, EDU_BUF),
                         (EDU_DMA_CNT, 64), (EDU_DMA_CMD, 1 | 4)):
            s.req(REGION_WRITE, region_access(BAR0, off, struct.pack('<Q', val)))
        seeds[name + '-from'] = s.out
        for off, val in ((EDU_DMA_SRC, EDU_BUF), (EDU_DMA_DST, 0x100800),
                         (EDU_DMA_CNT, 128), (EDU_DMA_CMD, 1 | 2)):
            s.req(REGION_WRITE, region_access(BAR0, off, struct.pack('<Q', val)))
        seeds[name + '-to'] = s.out
        t = Stream()
        t.out, t.next_id = s.out, s.next_id
        t.req(DMA_UNMAP, struct.pack('<IIQQ', 24, 0, 0x100000, 0x10000))
        t.req(DMA_UNMAP, struct.pack('<IIQQ', 24, 2, 0, 0))
        seeds[name + '-unmap'] = t.out

    # interrupts: INTx and MSI eventfds (attached by the target), a raise
    s = Stream()
    s.req(SET_IRQS, struct.pack('<IIIII', 20, 4 | 32, 0, 0, 1))
    s.req(SET_IRQS, struct.pack('<IIIII', 20, 1 | 16, 0, 0, 1))
    s.req(REGION_WRITE, region_access(BAR0, EDU_IRQ_RAISE,
                                      struct.pack('<I', 1)))
    s.req(REGION_WRITE, region_access(BAR0, EDU_IRQ_ACK, struct.pack('<I', 1)))
    s.req(SET_IRQS, struct.pack('<IIIII', 20, 4 | 32, 1, 0, 1))
    s.req(SET_IRQS, struct.pack('<IIIII', 21, 2 | 8, 0, 0, 1) + b'\x01')
    s.req(SET_IRQS, struct.pack('<IIIII', 20, 1 | 32, 0, 0, 0))
    seeds['irqs'] = s.out

    # edu DMA outside edu's buffer: edu would call hw_error(), which the
    # target does not let happen (scripts/vfio-user-fuzz.py replays this
    # one without that guard to show that hw_error counts as a crash)
    s = Stream()
    for off, val in ((EDU_DMA_SRC, 0x100000), (EDU_DMA_DST, 0),
                     (EDU_DMA_CNT, 64), (EDU_DMA_CMD, 1)):
        s.req(REGION_WRITE, region_access(BAR0, off, struct.pack('<Q', val)))
    seeds['dma-out-of-range'] = s.out
    return seeds


def client_seeds():
    """Replies to the target's accesses, in the order it makes them."""
    seeds = {}
    config = bytearray(256)
    config[0:4] = struct.pack('<HH', 0x1234, 0x11e8)
    config[0x3d] = 1

    def read_reply(i, region, offset, count):
        data = bytes(config[offset:offset + count]) if region == CONFIG \
            else bytes(count)
        return msg(REGION_READ, region_access(region, offset, data), i, REPLY)

    def write_reply(i, region, offset, count):
        return msg(REGION_WRITE, region_access(region, offset, count=count),
                   i, REPLY)

    accesses = [
        (write_reply, CONFIG, 4, 2), (read_reply, CONFIG, 0, 4),
        (read_reply, CONFIG, 8, 4), (read_reply, CONFIG, 0x40, 4),
        (write_reply, CONFIG, 0x40, 4), (read_reply, CONFIG, 0x80, 2),
        (write_reply, CONFIG, 0x80, 2), (read_reply, CONFIG, 6, 2),
        (read_reply, CONFIG, 0xfc, 1), (write_reply, CONFIG, 0xfc, 1),
        (read_reply, BAR0, 0, 4), (write_reply, BAR0, 4, 4),
        (read_reply, BAR0, 0x10, 2), (write_reply, BAR0, 0x18, 8),
        (read_reply, BAR0, 0xfff, 1),
    ]
    replies = b''.join(f(i, r, o, c) for i, (f, r, o, c) in enumerate(accesses))
    seeds['replies'] = replies

    dma = (msg(DMA_WRITE, struct.pack('<QQ', 0x1000, 16) + bytes(range(16)),
               0x100) +
           msg(DMA_READ, struct.pack('<QQ', 0x1000, 16), 0x101) +
           msg(DMA_READ, struct.pack('<QQ', 0x3fff000, 4096), 0x102))
    seeds['dma'] = dma
    seeds['dma-replies'] = dma + replies
    seeds['errors'] = b''.join(
        msg(cmd, b'', i, REPLY | ERROR, 22)
        for i, (f, cmd) in enumerate(
            [(None, REGION_WRITE)] + [(None, REGION_READ)] * 3))
    seeds['mixed'] = replies[:200] + dma[:60] + replies[200:]
    return seeds


DEVICES_JSON = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                            'vfio-user-devices.json')
CAP_MSI, CAP_MSIX = 0x05, 0x11
RD, WR, MMAP, CAPS = 1, 2, 4, 8         # region flags
SEALED, ERR_REPLY = 1, 0x80             # record attrs


def rec(kind, payload=b'', index=0, attr=0):
    """One record of a realize target input (vfio_user_fuzz.c)."""
    return struct.pack('<BBBH', ord(kind), index, attr, len(payload)) + payload


def access(target, offset, size=4, value=None):
    op = (0 if value is None else 1) | ({1: 0, 2: 1, 4: 2, 8: 3}[size] << 1)
    return struct.pack('<BBHIQ', op, target, 0, offset, value or 0)


CONFIG_TARGET, RESET_TARGET = 7, 8


def cap_chain(config):
    """[(id, pos)] of a config space's capability list."""
    caps, pos = [], config[0x34] & ~3 if config[6] & 0x10 else 0
    while pos and len(caps) < 48 and pos not in [p for _, p in caps]:
        caps.append((config[pos], pos))
        pos = config[pos + 1] & ~3
    return caps


def device_accesses(config, bars):
    """What a guest driver does first: reads, interrupt set-up, reset."""
    out = b''.join(access(CONFIG_TARGET, o) for o in (0, 4, 8, 0xc, 0x2c,
                                                      0x34, 0x3c))
    for cid, pos in cap_chain(config):
        out += access(CONFIG_TARGET, pos) + access(CONFIG_TARGET, pos + 4)
        if cid == CAP_MSI:
            out += access(CONFIG_TARGET, pos + 2, 2, 0x0001)
        elif cid == CAP_MSIX:
            out += access(CONFIG_TARGET, pos + 2, 2, 0x8000)
    for i in bars:
        out += access(i, 0) + access(i, 4, 4, 0x12345678) + access(i, 0, 8)
    return out + access(RESET_TARGET, 0) + access(CONFIG_TARGET, 0)


def region_info(index, size, flags=RD | WR, caps=b'', offset=0):
    argsz = 32 + len(caps)
    return struct.pack('<IIIIQQ', argsz, flags | (CAPS if caps else 0), index,
                       32 if caps else 0, size, offset) + caps


def sparse_mmap(areas):
    return struct.pack('<HHIII', 1, 1, 0, len(areas), 0) + \
        b''.join(struct.pack('<QQ', o, s) for o, s in areas)


def io_fds(index, entries):
    """entries: (offset, size, fd_index, flags, datamatch)"""
    return struct.pack('<IIII', 16 + 40 * len(entries), 0, index,
                       len(entries)) + \
        b''.join(struct.pack('<QQIIIIQ', o, s, fi, 0, fl, 0, d)
                 for o, s, fi, fl, d in entries)


def irq_info(index, count):
    return struct.pack('<IIII', 16, 1, index, count)


def realize_seeds():
    seeds = {}
    with open(DEVICES_JSON) as f:
        devices = json.load(f)
    for name, d in sorted(devices.items()):
        out = rec('V', bytes.fromhex(d['version'])) + \
            rec('D', bytes.fromhex(d['info']))
        bars = []
        for i, (payload, nfds) in sorted(d['regions'].items(),
                                         key=lambda kv: int(kv[0])):
            if payload is None:
                out += rec('R', index=int(i), attr=ERR_REPLY)
                continue
            out += rec('R', bytes.fromhex(payload), int(i),
                       SEALED if nfds else 0)
            if int(i) < 7 and struct.unpack('<Q', bytes.fromhex(
                    payload)[16:24])[0]:
                bars.append(int(i))
        for i, payload in sorted(d['irqs'].items(), key=lambda kv: int(kv[0])):
            out += rec('I', bytes.fromhex(payload), int(i)) if payload else \
                rec('I', index=int(i), attr=ERR_REPLY)
        for i, (payload, nfds) in sorted(d['iofds'].items(),
                                         key=lambda kv: int(kv[0])):
            if payload is not None:
                out += rec('F', bytes.fromhex(payload), int(i), min(nfds, 8))
        config = bytes.fromhex(d['config'])
        out += rec('C', config)
        seeds[name] = out + rec('A', device_accesses(config, bars))

    # A device of our own: MSI-X in a BAR partly offered for mmap, with
    # doorbells, and an MSI capability; then the same MSI capability at
    # the last places of config space where its 0x18 bytes do not fit
    # (issue 13 item 1: they must be refused, never written).
    def crafted(caps_at, msi_flags, bar0=None, iofds=None):
        config = bytearray(256)
        config[0:4] = struct.pack('<HH', 0x1234, 0x11e8)
        config[6] = 0x10                        # capability list
        config[0x3d] = 1
        config[0x34] = caps_at[0][1]
        for n, (cid, pos) in enumerate(caps_at):
            nxt = caps_at[n + 1][1] if n + 1 < len(caps_at) else 0
            config[pos:pos + 2] = bytes([cid, nxt])
            if cid == CAP_MSI:
                config[pos + 2:pos + 4] = struct.pack('<H', msi_flags)
            elif cid == CAP_MSIX:
                # 16 vectors, table at BAR0+0x2000, PBA at BAR0+0x3000
                config[pos + 2:pos + 12] = struct.pack('<HII', 15, 0x2000,
                                                       0x3000)
        out = rec('R', region_info(7, 256), 7)
        out += rec('R', bar0 or region_info(0, 0x4000), 0,
                   SEALED if bar0 else 0)
        out += rec('I', irq_info(1, 1), 1) + rec('I', irq_info(2, 16), 2)
        if iofds:
            out += rec('F', iofds, 0, 2)
        out += rec('C', bytes(config))
        return out + rec('A', device_accesses(config, [0]))

    mmap_bar0 = region_info(0, 0x4000, RD | WR | MMAP,
                            sparse_mmap([(0, 0x1000), (0x1000, 0x1000)]))
    doorbells = io_fds(0, [(0x3800, 4, 0, 0, 0), (0x3808, 4, 1, 1, 7)])
    seeds['crafted-msix-mmap-doorbells'] = crafted(
        [(CAP_MSI, 0x40), (CAP_MSIX, 0x60)], 0x0180, mmap_bar0, doorbells)
    # one doorbell twice, with and without data match: KVM refuses the
    # second (issue 13 item 2), which the target checks as KVM would
    doorbells = io_fds(0, [(0x3800, 4, 0, 0, 0), (0x3800, 4, 1, 1, 7)])
    seeds['crafted-doorbells-collide'] = crafted(
        [(CAP_MSI, 0x40), (CAP_MSIX, 0x60)], 0x0180, mmap_bar0, doorbells)
    for pos in (0xec, 0xf0, 0xf4):
        seeds[f'crafted-msi-at-{pos:x}'] = crafted([(CAP_MSI, pos)], 0x0180)
    return seeds


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    for target, seeds in (('server', server_seeds()),
                          ('client', client_seeds()),
                          ('realize', realize_seeds())):
        d = os.path.join(sys.argv[1], target)
        os.makedirs(d, exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(d, name), 'wb') as f:
                f.write(data)


if __name__ == '__main__':
    main()
