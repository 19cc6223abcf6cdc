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

usage: vfio-user-corpus.py OUTDIR
"""

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


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    for target, seeds in (('server', server_seeds()),
                          ('client', client_seeds())):
        d = os.path.join(sys.argv[1], target)
        os.makedirs(d, exist_ok=True)
        for name, data in seeds.items():
            with open(os.path.join(d, name), 'wb') as f:
                f.write(data)


if __name__ == '__main__':
    main()
