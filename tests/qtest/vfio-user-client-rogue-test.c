/*
 * A rogue server against the vfio-user-pci client.  One VM lives through
 * every case.  Each case hotplugs vfio-user-pci against a scripted server
 * that misbehaves once, at a chosen message, and asserts:
 *   - the outcome: the plug fails with a clear error, or the device works,
 *     or it goes inert (all-ones) once the server broke the protocol, or
 *     the server's own bad request gets the expected error reply;
 *   - QEMU lives on and QMP answers;
 *   - another vfio-user-pci device of the VM, served by a well-behaved
 *     server, keeps working;
 *   - no fd leak: QEMU's fd count is back where it was once the device
 *     is gone;
 *   - where a case names one, the reason: a line of QEMU's trace log
 *     written during the case (e.g. why a capability was hidden or a
 *     doorbell refused), so that another check cannot stand in for it.
 * The nest case has one server export two devices and fill both sockets;
 * see test_nest().
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <poll.h>
#include "libqtest.h"
#include "libqos/pci-pc.h"
#include "qapi/qmp/qdict.h"
#include "qapi/qmp/qjson.h"
#include "qapi/qmp/qlist.h"
#include "qapi/error.h"
#include "qemu/module.h"
#include "qemu/sockets.h"
#include "io/channel-socket.h"
#include "vfio-user/client.h"
#include "vfio-user/server.h"
#include "vfio-user/socket.h"
#include "standard-headers/linux/pci_regs.h"
#include "vfio-user/vm-helpers.h"

#define ROGUE_SLOT      4
#define GOOD_SLOT       5
#define BAR0_MAGIC      0xcafe0001
#define MSG_TIMEOUT_MS  1000
/* Case.nth: the first BAR0 read, whatever came before */
#define BAR0_READ       -1

typedef enum Action {
    A_NONE,
    A_ERROR,            /* error reply, errno @val */
    A_ERROR_ZERO,       /* error reply without an errno */
    A_SHORT,            /* reply cut to @off bytes */
    A_LONG,             /* reply with @off extra bytes */
    A_FIELD32,          /* reply with u32 at @off set to @val */
    A_FIELD64,          /* reply with u64 at @off set to @val */
    A_SILENT,           /* no reply */
    A_CLOSE,            /* hang up instead */
    A_RAW_HDR,          /* a reply header with size @off and flags @val */
    A_FDS,              /* the reply carries @off eventfds */
    A_WRONG_ID,         /* the reply comes with another msg_id */
    A_WRONG_CMD,        /* the reply comes with another command */
    A_NOT_REPLY,        /* the reply is flagged as a command */
    A_SPLIT,            /* the reply comes one byte per write */
    A_TWICE,            /* the reply comes twice */
    A_STRAY_FIRST,      /* a reply to nothing comes first */
    A_REQ_FIRST,        /* a request (@val: command) comes first */
    A_FLOOD,            /* DMA_READ requests, and never the reply */
    A_BUSY,             /* DMA_READ requests for @off ms, then the reply */
    A_LATER,            /* the reply, then @off (LATER_*) a little later */
    A_VERSION,          /* VERSION answered with JSON @str */
    A_VERSION_FD,       /* the same, with an fd of kind @val (TWIN_*) */
    A_MMAP,             /* BAR0 offered for mmap, broken as @off says */
    A_IOFDS,            /* BAR0 doorbells, broken as @off says */
    A_BACKLOG,          /* a listen queue kept full: never accepts */
} Action;

/*
 * A_LATER: what the rogue server does after its reply, once the client
 * waits for the good server; the good server answers when the client has
 * dealt with it (a DMA answered, the connection dropped), which proves
 * the client did so while it waited
 */
enum {
    LATER_GARBAGE, LATER_CLOSE, LATER_DMA, LATER_DMA_UNMAPPED, LATER_FLOOD,
    LATER_STRAY,
};
/* less than MSG_TIMEOUT_MS: the good server answers by then in any case */
#define LATER_WAIT_MS   800
#define LATER_FLOOD_MS  200

/* A_MMAP: what is wrong with the mmap offer */
enum {
    MMAP_NO_FD, MMAP_DEV_NULL, MMAP_FILE_SHORT, MMAP_CAP_LOOP,
    MMAP_UNALIGNED, MMAP_TWO_FILES, MMAP_AREAS_HUGE, MMAP_AREA_OUTSIDE,
    /* not broken: unsealed (shrunk after the plug), or sealed */
    MMAP_UNSEALED, MMAP_SEALED,
    /* nothing to map: the only area is empty */
    MMAP_NO_AREA,
};
/* A_IOFDS: what is wrong with the doorbell */
enum {
    IOFD_PIPE, IOFD_OUTSIDE, IOFD_BAD_INDEX, IOFD_COUNT_HUGE, IOFD_REGIONFD,
    IOFD_SIZE_3, IOFD_FLAGS, IOFD_ARGSZ_LIES, IOFD_UNALIGNED,
    /* a second doorbell overlaps the first; one in the MSI-X table */
    IOFD_COLLIDE, IOFD_OVERLAP, IOFD_IN_MSIX,
};

/* A_VERSION_FD: what comes with the VERSION reply */
enum {
    TWIN_SOCKET, TWIN_EVENTFD,
};

typedef enum Expect {
    PLUG_FAIL,          /* device_add fails, with @reason in the error */
    PLUG_OK,            /* the device works */
    INERT,              /* plugged, dead after the BAR read that broke it */
    REQ_ERROR,          /* the request sent first got error @err */
    BAD_ONCE,           /* that BAR0 read fails (all-ones), the next works */
    /*
     * A_LATER: a slow read of the good device is fine, and after it the
     * rogue one is dead, or works and got errno @err for its request
     */
    LATER_DEAD,
    LATER_ALIVE,
} Expect;

typedef struct Rogue Rogue;

typedef struct Case {
    const char *name;
    uint16_t cmd;       /* the message to misbehave on */
    int nth;            /* its occurrence, from 1 */
    Action action;
    uint64_t off, val;
    Expect expect;
    const char *reason;
    const char *str;
    int err;
    int max_maps;       /* PLUG_OK: DMA_MAPs the server may have seen */
    void (*setup)(Rogue *r);    /* shapes the device before the plug */
    const char *trace;  /* in QEMU's trace log during the case */
    bool mapped;        /* A_MMAP: BAR0 must be mapped, else must not */
    int timeout;        /* x-msg-timeout: 0 for MSG_TIMEOUT_MS, -1 for 0 */
    bool twin;          /* VERSION gives the client a twin socket */
} Case;

struct Rogue {
    const Case *k;
    char *path;
    QIOChannelSocket *listener;
    GThread *thread;
    uint8_t config[256];
    uint32_t bar0[16];
    uint64_t bar0_size;
    uint32_t irqs[VFU_PCI_NUM_IRQS];    /* vectors per IRQ index */
    int bar0_fd;        /* A_MMAP: the file offered for BAR0, or -1 */
    int seen[VFU_CMD_MAX + 1];
    int bar0_reads;
    /* the answer to a request we sent the client (A_REQ_FIRST) */
    int req_error;
    bool req_answered;
    int filler;         /* A_BACKLOG: the connection that fills the queue */
    int twin_fd;        /* Case.twin: our end of the twin socket, or -1 */
    bool stop;
    /* A_LATER: act now; done (or hung up on); done while the client waited */
    bool later_go, later_done, hung_up, overlapped;
};

static char *tmpdir;
static QTestState *qts;
static pid_t qpid;
static QPCIBus *bus;
static Rogue *good;
static Rogue *later;    /* A_LATER: the rogue the good server waits for */
static int ncases;
static char *trace_log;     /* QEMU's -D file: the trace events below */

/* ---- the scripted server ------------------------------------------------- */

static void rogue_send_raw(VfuConn *c, const VfuHeader *h, const void *payload,
                           size_t len, bool split)
{
    g_autofree uint8_t *wire = g_malloc(sizeof(*h) + len);

    vfu_header_encode(h, wire);
    memcpy(wire + sizeof(*h), payload, len);
    if (!split) {
        qio_channel_write_all(vfu_conn_ioc(c), (char *)wire, sizeof(*h) + len,
                              NULL);
        return;
    }
    for (size_t i = 0; i < sizeof(*h) + len; i++) {
        if (qio_channel_write_all(vfu_conn_ioc(c), (char *)wire + i, 1,
                                  NULL) < 0) {
            return;
        }
        g_usleep(100);
    }
}

/* The normal answer to @m, in host order, into @buf; its length or -errno */
static int rogue_answer(Rogue *r, VfuMsg *m, uint8_t *buf, size_t size)
{
    switch (m->hdr.command) {
    case VFU_CMD_DEVICE_GET_INFO: {
        VfuDeviceInfo *i = (VfuDeviceInfo *)buf;

        *i = (VfuDeviceInfo) { sizeof(*i), VFU_DEV_F_PCI | VFU_DEV_F_RESET,
                               VFU_PCI_NUM_REGIONS, VFU_PCI_NUM_IRQS };
        return sizeof(*i);
    }
    case VFU_CMD_DEVICE_GET_REGION_INFO: {
        VfuRegionInfo *i = (VfuRegionInfo *)buf;
        uint32_t index = ((VfuRegionInfo *)m->payload)->index;

        *i = (VfuRegionInfo) { .argsz = sizeof(*i), .index = index };
        if (index == VFU_PCI_CONFIG_REGION || index == 0) {
            i->size = index ? 256 : r->bar0_size;
            i->flags = VFU_REGION_F_READ | VFU_REGION_F_WRITE;
        }
        return sizeof(*i);
    }
    case VFU_CMD_DEVICE_GET_IRQ_INFO: {
        VfuIrqInfo *i = (VfuIrqInfo *)buf;

        *i = *(VfuIrqInfo *)m->payload;
        i->flags = VFU_IRQ_INFO_F_EVENTFD;
        i->count = i->index < VFU_PCI_NUM_IRQS ? r->irqs[i->index] : 0;
        return sizeof(*i);
    }
    case VFU_CMD_DMA_UNMAP:
        memcpy(buf, m->payload, sizeof(VfuDmaUnmap));
        return sizeof(VfuDmaUnmap);
    case VFU_CMD_DMA_MAP:
    case VFU_CMD_DEVICE_SET_IRQS:
    case VFU_CMD_DEVICE_RESET:
        return 0;
    case VFU_CMD_REGION_READ:
    case VFU_CMD_REGION_WRITE: {
        VfuRegionAccess *a = (VfuRegionAccess *)m->payload;
        uint8_t *base = a->region ? r->config : (uint8_t *)r->bar0;
        size_t limit = a->region ? sizeof(r->config) : sizeof(r->bar0);
        bool rd = m->hdr.command == VFU_CMD_REGION_READ;

        if ((a->region && a->region != VFU_PCI_CONFIG_REGION) ||
            a->offset > limit || a->count > limit - a->offset ||
            sizeof(*a) + a->count > size) {
            return -EINVAL;
        }
        if (!rd && a->region == 0) {
            memcpy(base + a->offset, a->data, a->count);
        }
        memcpy(buf, a, sizeof(*a));
        if (rd) {
            memcpy(buf + sizeof(*a), base + a->offset, a->count);
        }
        return sizeof(*a) + (rd ? a->count : 0);
    }
    default:
        return -ENOTSUP;
    }
}

/*
 * Send the client a request first and note how it answers.  The payload
 * is well formed for @cmd, so that the check the case names answers, not
 * the decoder.
 */
static void rogue_request_first(Rogue *r, VfuConn *c, uint16_t cmd)
{
    struct QEMU_PACKED {
        VfuDmaAccess a;
        uint8_t data[16];
    } access = { .a = { .address = 0xfff00000000ULL, .count = 16 } };
    VfuDmaMap map = {
        .argsz = sizeof(map), .flags = VFU_DMA_MAP_F_READ,
        .address = 0xfff00000000ULL, .size = 0x1000,
    };
    g_autoptr(VfuMsg) m = NULL;
    void *p = &access;
    size_t len = sizeof(access.a);

    if (cmd == VFU_CMD_DMA_WRITE) {
        len = sizeof(access);
    } else if (cmd == VFU_CMD_DMA_MAP) {
        p = &map;
        len = sizeof(map);
    }
    if (vfu_conn_send(c, cmd, 0x9000, 0, 0, p, len, NULL, 0, NULL) ||
        vfu_conn_recv(c, &m, true, NULL) != 1) {
        return;
    }
    r->req_answered = vfu_msg_is_reply(m) && m->hdr.msg_id == 0x9000;
    r->req_error = m->hdr.flags & VFU_F_ERROR ? m->hdr.error : 0;
}

/*
 * DMA_READs of guest RAM for @ms ms (one at least), each answer awaited,
 * @gap_us apart.
 * Returns true when all of them were answered without an error.
 */
static bool rogue_dma_reads(VfuConn *c, int64_t ms, unsigned gap_us)
{
    int64_t end = g_get_monotonic_time() + ms * 1000;
    uint16_t id = 0x8000;

    do {
        VfuDmaAccess a = { .address = 0x1000, .count = 8 };
        g_autoptr(VfuMsg) ans = NULL;

        if (vfu_conn_send(c, VFU_CMD_DMA_READ, id++, 0, 0, &a, sizeof(a),
                          NULL, 0, NULL) ||
            vfu_conn_recv(c, &ans, true, NULL) != 1 ||
            (ans->hdr.flags & VFU_F_ERROR)) {
            return false;
        }
        if (gap_us) {
            g_usleep(gap_us);
        }
    } while (g_get_monotonic_time() < end);
    return true;
}

/* A_LATER: misbehave without being asked */
static void rogue_later(Rogue *r, VfuConn *c, int how)
{
    VfuDmaAccess a = { .address = 0x1000, .count = 8 };
    VfuHeader h = { .msg_id = 0x9000, .command = VFU_CMD_DMA_READ };
    g_autoptr(VfuMsg) m = NULL;

    switch (how) {
    case LATER_GARBAGE:
        h.size = 0xffffff00;
        rogue_send_raw(c, &h, &a, sizeof(a), false);
        return;
    case LATER_CLOSE:
        /* still reading: the client's hang-up shows it saw ours */
        qio_channel_shutdown(vfu_conn_ioc(c), QIO_CHANNEL_SHUTDOWN_WRITE,
                             NULL);
        return;
    case LATER_DMA_UNMAPPED:
        a.address = 0xfff00000000ULL;
        /* fall through */
    case LATER_DMA:
        if (vfu_conn_send(c, VFU_CMD_DMA_READ, 0x9000, 0, 0, &a, sizeof(a),
                          NULL, 0, NULL) ||
            vfu_conn_recv(c, &m, true, NULL) != 1) {
            return;
        }
        r->req_answered = vfu_msg_is_reply(m) && m->hdr.msg_id == 0x9000;
        r->req_error = m->hdr.flags & VFU_F_ERROR ? m->hdr.error : 0;
        return;
    case LATER_FLOOD:
        /* over before the good server answers: then nothing reads ours */
        r->req_answered = rogue_dma_reads(c, LATER_FLOOD_MS, 0);
        return;
    case LATER_STRAY:
        for (int i = 0; i < 3; i++) {
            vfu_conn_send(c, VFU_CMD_REGION_READ, 0x7000 + i,
                          VFU_F_TYPE_REPLY, 0, NULL, 0, NULL, 0, NULL);
        }
        /* answered: the client read past the strays */
        r->req_answered = rogue_dma_reads(c, 0, 0);
        return;
    }
}

static bool wait_flag(bool *flag, int ms)
{
    int64_t end = g_get_monotonic_time() + ms * 1000;

    while (!qatomic_read(flag) && g_get_monotonic_time() < end) {
        g_usleep(1000);
    }
    return qatomic_read(flag);
}

/* Send a reply built here, with @nfds fds (which stay ours). */
static void rogue_send_fds(VfuConn *c, VfuHeader *h, uint8_t *buf, int len,
                           const int *fds, int nfds)
{
    g_autofree uint8_t *wire = g_malloc(sizeof(*h) + len);
    struct iovec iov = { wire, sizeof(*h) + len };

    h->size = sizeof(*h) + len;
    vfu_payload_encode(h->command, true, buf, len);
    vfu_header_encode(h, wire);
    memcpy(wire + sizeof(*h), buf, len);
    qio_channel_writev_full(vfu_conn_ioc(c), &iov, 1, (int *)fds, nfds, 0,
                            NULL);
}

static void rogue_close_fds(int *fds, int n)
{
    for (int i = 0; i < n; i++) {
        if (fds[i] >= 0) {
            close(fds[i]);
        }
    }
}

/* A BAR file as a careful server makes it: sealed against shrinking */
static int rogue_memfd(size_t size, bool sealed)
{
    int fd = memfd_create("rogue-bar", MFD_CLOEXEC | MFD_ALLOW_SEALING);

    g_assert(fd >= 0);
    g_assert_cmpint(ftruncate(fd, size), ==, 0);
    if (sealed) {
        g_assert_cmpint(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW),
                        ==, 0);
    }
    return fd;
}

/*
 * BAR0 (4 KiB here) offered for mmap: wrongly, so that the client must not
 * map it, or from an unsealed file, which the test shrinks after the plug
 * (mapped, the next access would kill the VM), or as it should be.
 */
static void rogue_mmap(Rogue *r, VfuConn *c, VfuHeader *h, uint64_t how)
{
    struct QEMU_PACKED {
        VfuRegionInfo info;
        VfuCapSparseMmap cap;
        VfuSparseMmapArea area;
    } rep = {
        .info = {
            .argsz = sizeof(rep), .index = 0, .size = 4096,
            .cap_offset = sizeof(VfuRegionInfo),
            .flags = VFU_REGION_F_READ | VFU_REGION_F_WRITE |
                     VFU_REGION_F_MMAP | VFU_REGION_F_CAPS,
        },
        .cap = { .header = { .id = VFU_REGION_CAP_SPARSE_MMAP,
                             .version = 1 }, .nr_areas = 1 },
        .area = { .offset = 0, .size = 4096 },
    };
    int fds[2] = { -1, -1 };
    int nfds = 1;

    switch (how) {
    case MMAP_NO_FD:
        nfds = 0;
        break;
    case MMAP_DEV_NULL:
        fds[0] = open("/dev/null", O_RDWR | O_CLOEXEC);
        break;
    case MMAP_FILE_SHORT:
        fds[0] = rogue_memfd(0, true);
        break;
    case MMAP_CAP_LOOP:
        rep.cap.header.next = sizeof(VfuRegionInfo);
        break;
    case MMAP_UNALIGNED:
        rep.area.offset = 0x800;
        rep.area.size = 0x800;
        break;
    case MMAP_TWO_FILES:
        fds[1] = rogue_memfd(4096, true);
        nfds = 2;
        break;
    case MMAP_AREAS_HUGE:
        rep.cap.nr_areas = UINT32_MAX;
        break;
    case MMAP_AREA_OUTSIDE:
        rep.area.offset = 4096;
        break;
    case MMAP_NO_AREA:
        rep.area.size = 0;
        break;
    case MMAP_UNSEALED:
    case MMAP_SEALED:
        fds[0] = rogue_memfd(4096, how == MMAP_SEALED);
        /* what a mapped BAR0 reads: the same as by message */
        g_assert_cmpint(pwrite(fds[0], r->bar0, sizeof(r->bar0), 0), ==,
                        sizeof(r->bar0));
        r->bar0_fd = dup(fds[0]);
        break;
    }
    if (nfds && fds[0] < 0) {
        fds[0] = rogue_memfd(4096, true);
    }
    rogue_send_fds(c, h, (uint8_t *)&rep, sizeof(rep), fds, nfds);
    rogue_close_fds(fds, 2);
}

/* One doorbell on BAR0, wrongly: the client must skip it */
static void rogue_bad_iofds(VfuConn *c, VfuHeader *h, uint64_t how)
{
    struct QEMU_PACKED {
        VfuRegionIoFds hdr;
        VfuSubRegionIoFd sub;
        VfuSubRegionIoFd sub2;  /* sent when hdr.count is 2 */
    } rep = {
        .hdr = { .argsz = sizeof(rep) - sizeof(rep.sub2), .index = 0,
                 .count = 1 },
        .sub = { .offset = 8, .size = 4, .fd_index = 0,
                 .type = VFU_IO_FD_TYPE_IOEVENTFD },
        .sub2 = { .size = 4, .fd_index = 1,
                  .type = VFU_IO_FD_TYPE_IOEVENTFD },
    };
    size_t len = sizeof(rep) - sizeof(rep.sub2);
    int fds[2] = { -1, -1 };
    int nfds = 1;

    switch (how) {
    case IOFD_PIPE:
        g_assert_cmpint(pipe2(fds, O_CLOEXEC), ==, 0);
        break;
    case IOFD_OUTSIDE:
        rep.sub.offset = 1ULL << 40;
        break;
    case IOFD_BAD_INDEX:
        rep.sub.fd_index = 5;
        break;
    case IOFD_COUNT_HUGE:
        rep.hdr.count = 100000;
        break;
    case IOFD_REGIONFD:
        rep.sub.type = VFU_IO_FD_TYPE_IOREGIONFD;
        break;
    case IOFD_SIZE_3:
        rep.sub.size = 3;
        break;
    case IOFD_FLAGS:
        rep.sub.flags = 1u << 7;
        break;
    case IOFD_ARGSZ_LIES:
        rep.hdr.argsz = 1u << 20;
        break;
    case IOFD_UNALIGNED:
        rep.sub.offset = 6;
        break;
    case IOFD_COLLIDE:
        /* the same doorbell with and without a datamatch: KVM's EEXIST */
        rep.sub.offset = rep.sub2.offset = 0x10;
        rep.sub2.flags = VFU_IOEVENTFD_F_DATAMATCH;
        rep.sub2.datamatch = 1;
        break;
    case IOFD_OVERLAP:
        rep.sub.offset = 0x10;
        rep.sub.size = 8;
        rep.sub2.offset = 0x14;
        break;
    case IOFD_IN_MSIX:
        /* rogue_setup_msix() puts the table at 0x800 */
        rep.sub.offset = 0x800;
        break;
    }
    if (how == IOFD_COLLIDE || how == IOFD_OVERLAP) {
        rep.hdr.count = 2;
        rep.hdr.argsz = len = sizeof(rep);
        fds[1] = eventfd(0, EFD_CLOEXEC);
        nfds = 2;
    }
    if (fds[0] < 0) {
        fds[0] = eventfd(0, EFD_CLOEXEC);
    }
    rogue_send_fds(c, h, (uint8_t *)&rep, len, fds, nfds);
    rogue_close_fds(fds, 2);
}

static void rogue_misbehave(Rogue *r, VfuConn *c, VfuMsg *m, uint8_t *buf,
                            int len)
{
    const Case *k = r->k;
    VfuHeader h = { .msg_id = m->hdr.msg_id, .command = m->hdr.command,
                    .flags = VFU_F_TYPE_REPLY };
    int fds[20];

    switch (k->action) {
    case A_ERROR:
    case A_ERROR_ZERO:
        vfu_conn_send(c, h.command, h.msg_id, VFU_F_TYPE_REPLY | VFU_F_ERROR,
                      k->action == A_ERROR ? k->val : 0, NULL, 0, NULL, 0,
                      NULL);
        return;
    case A_SHORT:
        len = MIN(len, k->off);
        break;
    case A_LONG:
        len += k->off;
        break;
    case A_FIELD32:
        stl_he_p(buf + k->off, k->val);
        break;
    case A_FIELD64:
        stq_he_p(buf + k->off, k->val);
        break;
    case A_SILENT:
        return;
    case A_CLOSE:
        vfu_conn_shutdown(c);
        return;
    case A_RAW_HDR: {
        uint8_t junk[64] = { 0 };

        h.size = k->off;
        h.flags = k->val;
        rogue_send_raw(c, &h, junk, sizeof(junk), false);
        return;
    }
    case A_FDS:
        for (int i = 0; i < k->off; i++) {
            fds[i] = eventfd(0, EFD_CLOEXEC);
        }
        rogue_send_fds(c, &h, buf, len, fds, k->off);
        for (int i = 0; i < k->off; i++) {
            close(fds[i]);
        }
        return;
    case A_MMAP:
        rogue_mmap(r, c, &h, k->off);
        return;
    case A_IOFDS:
        rogue_bad_iofds(c, &h, k->off);
        return;
    case A_WRONG_ID:
        vfu_conn_send(c, h.command, h.msg_id + 1, VFU_F_TYPE_REPLY, 0, buf,
                      len, NULL, 0, NULL);
        return;
    case A_WRONG_CMD:
        vfu_conn_send(c, k->val, h.msg_id, VFU_F_TYPE_REPLY, 0, buf, len,
                      NULL, 0, NULL);
        return;
    case A_NOT_REPLY:
        /* a "request" the client refuses; the real reply never comes */
        vfu_conn_send(c, h.command, h.msg_id, 0, 0, buf, len, NULL, 0, NULL);
        return;
    case A_SPLIT:
        h.size = sizeof(h) + len;
        vfu_payload_encode(h.command, true, buf, len);
        rogue_send_raw(c, &h, buf, len, true);
        return;
    case A_TWICE:
        vfu_conn_reply(c, m, buf, len, NULL, 0, NULL);
        break;
    case A_STRAY_FIRST:
        vfu_conn_send(c, VFU_CMD_REGION_READ, 0x7777, VFU_F_TYPE_REPLY, 0,
                      NULL, 0, NULL, 0, NULL);
        break;
    case A_REQ_FIRST:
        rogue_request_first(r, c, k->val);
        break;
    case A_FLOOD:
        for (uint16_t id = 0x8000; !vfu_conn_is_broken(c); id++) {
            VfuDmaAccess a = { .address = 0, .count = 8 };

            if (vfu_conn_send(c, VFU_CMD_DMA_READ, id,
                              VFU_F_NO_REPLY * (k->val != 0), 0, &a,
                              sizeof(a), NULL, 0, NULL)) {
                break;
            }
            /* take its answer off the socket, keep going */
            if (!k->val) {
                g_autoptr(VfuMsg) ans = NULL;

                if (vfu_conn_recv(c, &ans, true, NULL) != 1) {
                    break;
                }
            }
        }
        return;
    case A_BUSY:
        /* like a device running a script it fetches from guest memory */
        if (!rogue_dma_reads(c, k->off, 1000)) {
            return;
        }
        break;
    case A_LATER:
        vfu_conn_reply(c, m, buf, len, NULL, 0, NULL);
        /* the good server says when the client waits for it */
        if (wait_flag(&r->later_go, 10 * 1000)) {
            rogue_later(r, c, k->off);
            if (k->off != LATER_GARBAGE && k->off != LATER_CLOSE) {
                qatomic_set(&r->later_done, true);
            }
        }
        return;
    case A_VERSION:
    case A_VERSION_FD:
    case A_BACKLOG:
    case A_NONE:
        break;
    }
    vfu_conn_reply(c, m, buf, len, NULL, 0, NULL);
}

static int rogue_request(VfuConn *c, VfuMsg *m, void *opaque)
{
    Rogue *r = opaque;
    const Case *k = r->k;
    g_autofree uint8_t *buf = g_malloc0(4096);
    int len = rogue_answer(r, m, buf, 4096 - 256);
    int n = ++r->seen[MIN(m->hdr.command, VFU_CMD_MAX)];
    bool bar0 = m->hdr.command == VFU_CMD_REGION_READ &&
                ((VfuRegionAccess *)m->payload)->region == 0;

    if (bar0 && r == good && later) {
        /*
         * The client waits for this answer (under qtest, in the main loop
         * itself): whatever it does about the rogue's act meanwhile is
         * the wait serving its other connections.
         */
        qatomic_set(&later->later_go, true);
        qatomic_set(&later->overlapped,
                    wait_flag(&later->later_done, LATER_WAIT_MS) ||
                    wait_flag(&later->hung_up, 0));
    }
    if (bar0 && !r->bar0_reads++ && k && k->nth == BAR0_READ) {
        n = BAR0_READ;
    }
    if (k && m->hdr.command == k->cmd && n == k->nth) {
        if (len < 0) {
            len = 0;
        }
        rogue_misbehave(r, c, m, buf, len);
        return 0;
    }
    if (len < 0) {
        return len;
    }
    return vfu_conn_reply(c, m, buf, len, NULL, 0, NULL);
}

/* VERSION 0.2 answered with JSON @k->str and one fd (twin_socket) */
static void rogue_version_fd(VfuConn *c, VfuMsg *m, const Case *k)
{
    VfuVersion v = { .major = 0, .minor = 2 };
    size_t len = sizeof(v) + strlen(k->str) + 1;
    g_autofree uint8_t *p = g_malloc0(len);
    int fds[2] = { -1, -1 };

    memcpy(p, &v, sizeof(v));
    memcpy(p + sizeof(v), k->str, len - sizeof(v));
    if (k->val == TWIN_EVENTFD) {
        fds[0] = eventfd(0, EFD_CLOEXEC);
    } else {
        g_assert_cmpint(qemu_socketpair(AF_UNIX, SOCK_STREAM, 0, fds), ==, 0);
    }
    g_assert_cmpint(fds[0], >=, 0);
    vfu_conn_reply(c, m, p, len, fds, 1, NULL);
    for (int i = 0; i < 2; i++) {
        if (fds[i] >= 0) {
            close(fds[i]);
        }
    }
}

static void rogue_version(Rogue *r, VfuConn *c, VfuMsg *m)
{
    const Case *k = r->k;
    g_autofree uint8_t *p = NULL;
    size_t len;

    r->seen[VFU_CMD_VERSION]++;
    if (k && k->twin) {
        /* a good twin, kept open; the rogue goes on on the main socket */
        vfu_srv_negotiate_twin(c, m, &r->twin_fd, NULL);
        return;
    }
    if (!k || k->cmd != VFU_CMD_VERSION) {
        vfu_srv_negotiate(c, m, NULL);
        return;
    }
    if (k->action == A_VERSION_FD) {
        rogue_version_fd(c, m, k);
        return;
    }
    if (k->action == A_VERSION) {
        VfuVersion v = { .major = k->off, .minor = k->val };

        len = sizeof(v) + strlen(k->str) + (k->err ? 0 : 1);
        p = g_malloc0(len);
        memcpy(p, &v, sizeof(v));
        memcpy(p + sizeof(v), k->str, len - sizeof(v));
        vfu_conn_reply(c, m, p, len, NULL, 0, NULL);
        return;
    }
    {
        VfuLimits lim;
        g_autofree void *ver = NULL;

        vfu_limits_default(&lim);
        lim.max_msg_fds = 8;
        ver = vfu_version_encode(0, 2, &lim, &len);
        p = g_malloc0(len + 64);
        memcpy(p, ver, len);
        rogue_misbehave(r, c, m, p, len);
    }
}

static gpointer rogue_thread(gpointer opaque)
{
    Rogue *r = opaque;
    g_autoptr(VfuConn) c = NULL;
    QIOChannelSocket *sioc;
    VfuLimits lim;
    VfuMsg *m;

    if (r->k && r->k->action == A_BACKLOG) {
        /*
         * Accept nothing for a while.  Then, or when the case is over,
         * take what is queued: a client that blocks in connect() gets
         * through at last (and fails later, for another reason).
         */
        for (int i = 0; i < MSG_TIMEOUT_MS * 5 / 10 && !qatomic_read(&r->stop);
             i++) {
            g_usleep(10 * 1000);
        }
        qio_channel_set_blocking(QIO_CHANNEL(r->listener), false, NULL);
        while ((sioc = qio_channel_socket_accept(r->listener, NULL))) {
            object_unref(OBJECT(sioc));
        }
        return NULL;
    }
    qio_channel_set_blocking(QIO_CHANNEL(r->listener), true, NULL);
    sioc = qio_channel_socket_accept(r->listener, NULL);
    if (!sioc) {
        return NULL;
    }
    vfu_limits_default(&lim);
    lim.max_msg_fds = 8;
    lim.twin_socket = r->k && r->k->twin;
    c = vfu_conn_new(QIO_CHANNEL(sioc), "rogue-server", &lim);
    object_unref(OBJECT(sioc));
    vfu_conn_set_timeout(c, 60000);
    vfu_conn_set_request_func(c, rogue_request, r);
    if (vfu_conn_recv(c, &m, true, NULL) != 1) {
        return NULL;
    }
    rogue_version(r, c, m);
    vfu_msg_free(m);
    while (!vfu_conn_is_broken(c) && vfu_conn_recv(c, &m, true, NULL) == 1) {
        if (vfu_msg_is_reply(m)) {
            vfu_msg_free(m);
            continue;
        }
        vfu_conn_handle_request(c, m);
    }
    qatomic_set(&r->hung_up, true);
    if (r->k && r->k->action == A_LATER &&
        (r->k->off == LATER_GARBAGE || r->k->off == LATER_CLOSE)) {
        qatomic_set(&r->later_done, true);
    }
    return NULL;
}

/* A server for @k, listening, its device shaped; no thread serves it yet */
static Rogue *rogue_new(const Case *k)
{
    Rogue *r = g_new0(Rogue, 1);
    SocketAddress addr = { .type = SOCKET_ADDRESS_TYPE_UNIX };
    static int n;

    r->k = k;
    r->path = g_strdup_printf("%s/rogue%d.sock", tmpdir, n++);
    addr.u.q_unix.path = r->path;
    r->listener = qio_channel_socket_new();
    r->filler = -1;
    r->twin_fd = -1;
    if (k && k->action == A_BACKLOG) {
        /* a backlog of 0 holds one connection: ours */
        qio_channel_socket_listen_sync(r->listener, &addr, 0, &error_abort);
        r->filler = unix_connect(r->path, &error_abort);
    } else {
        qio_channel_socket_listen_sync(r->listener, &addr, 1, &error_abort);
    }
    stw_le_p(r->config + PCI_VENDOR_ID, 0x1234);
    stw_le_p(r->config + PCI_DEVICE_ID, 0xfeed);
    r->config[PCI_INTERRUPT_PIN] = 1;
    r->bar0[0] = BAR0_MAGIC;
    r->bar0_size = sizeof(r->bar0);
    r->irqs[VFU_PCI_INTX_IRQ] = 1;
    r->bar0_fd = -1;
    if (k && k->setup) {
        k->setup(r);
    }
    return r;
}

static Rogue *rogue_start(const Case *k)
{
    Rogue *r = rogue_new(k);

    r->thread = g_thread_new("rogue-server", rogue_thread, r);
    return r;
}

static void rogue_free(Rogue *r)
{
    qatomic_set(&r->stop, true);
    qio_channel_shutdown(QIO_CHANNEL(r->listener), QIO_CHANNEL_SHUTDOWN_BOTH,
                         NULL);
    if (r->thread) {
        g_thread_join(r->thread);
    }
    object_unref(OBJECT(r->listener));
    if (r->bar0_fd >= 0) {
        close(r->bar0_fd);
    }
    if (r->filler >= 0) {
        close(r->filler);
    }
    if (r->twin_fd >= 0) {
        close(r->twin_fd);
    }
    unlink(r->path);
    g_free(r->path);
    g_free(r);
}

/* ---- device shapes (Case.setup) ------------------------------------------- */

/* The capability list starts at @pos */
static void rogue_cap(Rogue *r, uint8_t pos, uint8_t id, uint8_t next)
{
    if (!r->config[PCI_CAPABILITY_LIST]) {
        stw_le_p(r->config + PCI_STATUS, PCI_STATUS_CAP_LIST);
        r->config[PCI_CAPABILITY_LIST] = pos;
    }
    r->config[pos] = id;
    r->config[pos + PCI_CAP_LIST_NEXT] = next;
}

/* MSI, 64-bit with per-vector masking: 0x18 bytes */
static void rogue_msi(Rogue *r, uint8_t pos)
{
    rogue_cap(r, pos, PCI_CAP_ID_MSI, 0);
    stw_le_p(r->config + pos + PCI_MSI_FLAGS,
             PCI_MSI_FLAGS_64BIT | PCI_MSI_FLAGS_MASKBIT);
    r->irqs[VFU_PCI_MSI_IRQ] = 1;
}

static void setup_msi_e8(Rogue *r)
{
    rogue_msi(r, 0xe8);     /* ends right at 0x100 */
}

static void setup_msi_ec(Rogue *r)
{
    rogue_msi(r, 0xec);
}

static void setup_msi_f0(Rogue *r)
{
    rogue_msi(r, 0xf0);
}

static void setup_msi_f4(Rogue *r)
{
    rogue_msi(r, 0xf4);
}

/* 0x10 bytes to the next capability */
static void setup_msi_before_next(Rogue *r)
{
    rogue_msi(r, 0x50);
    r->config[0x50 + PCI_CAP_LIST_NEXT] = 0x60;
    rogue_cap(r, 0x60, PCI_CAP_ID_VNDR, 0);
}

/* MSI-X in a 4 KiB BAR0: @entries, table and PBA as given, @vectors */
static void rogue_msix(Rogue *r, uint8_t pos, uint16_t entries,
                       uint32_t table, uint32_t pba, uint32_t vectors)
{
    rogue_cap(r, pos, PCI_CAP_ID_MSIX, 0);
    stw_le_p(r->config + pos + PCI_MSIX_FLAGS, entries - 1);
    stl_le_p(r->config + pos + PCI_MSIX_TABLE, table);
    if (pos + PCI_CAP_MSIX_SIZEOF <= sizeof(r->config)) {
        stl_le_p(r->config + pos + PCI_MSIX_PBA, pba);
    }
    r->irqs[VFU_PCI_MSIX_IRQ] = vectors;
    r->bar0_size = 4096;
}

static void setup_msix(Rogue *r)
{
    rogue_msix(r, 0x40, 4, 0x800, 0xc00, 4);
}

static void setup_msix_f8(Rogue *r)
{
    rogue_msix(r, 0xf8, 4, 0x800, 0xc00, 4);
}

static void setup_msix_no_bar(Rogue *r)
{
    rogue_msix(r, 0x40, 4, 0x800 | 2, 0xc00, 4);
}

static void setup_msix_io_bar(Rogue *r)
{
    rogue_msix(r, 0x40, 4, 0x800, 0xc00, 4);
    r->config[PCI_BASE_ADDRESS_0] = PCI_BASE_ADDRESS_SPACE_IO;
}

static void setup_msix_outside(Rogue *r)
{
    rogue_msix(r, 0x40, 4, 0xfe0, 0xc00, 4);
}

static void setup_msix_pba_outside(Rogue *r)
{
    rogue_msix(r, 0x40, 4, 0x800, 0x1000, 4);
}

static void setup_msix_few_vectors(Rogue *r)
{
    rogue_msix(r, 0x40, 4, 0x800, 0xc00, 2);
}

/* ---- the VM --------------------------------------------------------------- */

static QDict *plug(const char *id, const char *path, int slot, int timeout)
{
    g_autofree char *addr = g_strdup_printf("%02x.0", slot);

    return qtest_qmp(qts, "{'execute': 'device_add', 'arguments': {"
                     "'driver': 'vfio-user-pci', 'id': %s, 'socket': %s,"
                     "'x-msg-timeout': %d, 'addr': %s}}", id, path,
                     timeout ? MAX(timeout, 0) : MSG_TIMEOUT_MS, addr);
}

/* QEMU's trace log from byte @from on */
static char *trace_since(size_t from)
{
    g_autofree char *all = NULL;
    size_t len;

    g_assert(g_file_get_contents(trace_log, &all, &len, NULL));
    return g_strdup(all + MIN(from, len));
}

static size_t trace_size(void)
{
    struct stat st;

    return stat(trace_log, &st) ? 0 : st.st_size;
}

static uint32_t bar0_read(int slot)
{
    QPCIDevice *dev = qpci_device_find(bus, QPCI_DEVFN(slot, 0));
    QPCIBar bar;
    uint32_t v;

    g_assert(dev);
    qpci_device_enable(dev);
    bar = qpci_iomap(dev, 0, NULL);
    v = qpci_io_readl(dev, bar, 0);
    qpci_iounmap(dev, bar);
    g_free(dev);
    return v;
}

static void vm_check_alive(void)
{
    QDict *rsp = qtest_qmp(qts, "{'execute': 'query-status'}");

    g_assert(qdict_haskey(rsp, "return"));
    qobject_unref(rsp);
    /* the other device is still served */
    g_assert_cmphex(bar0_read(GOOD_SLOT), ==, BAR0_MAGIC);
}

static void vm_start(void)
{
    g_autofree char *pidfile = NULL;
    g_autofree char *pid = NULL;
    QDict *rsp;

    if (qts) {
        return;
    }
    tmpdir = g_dir_make_tmp("vfu-client-rogue-XXXXXX", NULL);
    pidfile = g_strdup_printf("%s/pid", tmpdir);
    trace_log = g_strdup_printf("%s/trace.log", tmpdir);
    qts = qtest_initf(VU_FW_ARGS "-M pc -pidfile %s -D %s "
                      "-trace vfio_user_pci_cap* "
                      "-trace vfio_user_pci_ioeventfd* "
                      "-trace vfio_user_pci_bar_mmap* "
                      "-trace vfio_user_pci_dma_denied "
                      "-trace vfio_user_pci_bad_request "
                      "-trace vfio_user_pci_dma_off_twin", pidfile, trace_log);
    g_assert(g_file_get_contents(pidfile, &pid, NULL, NULL));
    unlink(pidfile);
    qpid = atoi(pid);
    bus = qpci_new_pc(qts, NULL);
    good = rogue_start(NULL);
    rsp = plug("good", good->path, GOOD_SLOT, 0);
    g_assert(qdict_haskey(rsp, "return"));
    qobject_unref(rsp);
    vm_check_alive();
}

static void vm_stop(void)
{
    if (!qts) {
        return;
    }
    qpci_free_pc(bus);
    qtest_quit(qts);
    rogue_free(good);
    unlink(trace_log);
    g_free(trace_log);
    rmdir(tmpdir);
    g_free(tmpdir);
}

static void test_case(gconstpointer opaque)
{
    const Case *k = opaque;
    g_autofree char *log = NULL;
    size_t log_from;
    Rogue *r;
    QDict *rsp;
    int before;

    vm_start();
    before = vu_count_fds(qpid);
    log_from = trace_size();
    r = rogue_start(k);
    rsp = plug("rogue", r->path, ROGUE_SLOT, k->timeout);
    if (k->expect == PLUG_FAIL) {
        const char *desc;

        if (!qdict_haskey(rsp, "error")) {
            g_test_message("%s: the plug worked", k->name);
            g_test_fail();
            qobject_unref(rsp);
            qpci_unplug_acpi_device_test(qts, "rogue", ROGUE_SLOT);
            vm_check_alive();
            rogue_free(r);
            return;
        }
        desc = qdict_get_str(qdict_get_qdict(rsp, "error"), "desc");
        g_test_message("device_add: %s", desc);
        g_assert(strstr(desc, r->path));
        if (!strstr(desc, k->reason)) {
            g_test_message("%s: expected '%s' in the error", k->name,
                           k->reason);
            g_test_fail();
        }
        qobject_unref(rsp);
    } else {
        g_assert(qdict_haskey(rsp, "return"));
        qobject_unref(rsp);
        QPCIDevice *dev = qpci_device_find(bus, QPCI_DEVFN(ROGUE_SLOT, 0));
        QPCIBar bar;

        g_assert(dev);
        qpci_device_enable(dev);
        bar = qpci_iomap(dev, 0, NULL);
        if (k->action == A_MMAP) {
            g_autofree char *mtree = qtest_hmp(qts, "info mtree");

            if (!!strstr(mtree, "vfio-user-bar0-mmap") != k->mapped) {
                g_test_message("%s: BAR0 %s mapped", k->name,
                               k->mapped ? "not" : "wrongly");
                g_test_fail();
            }
        }
        if (r->bar0_fd >= 0 && k->off == MMAP_UNSEALED) {
            /* mapped, the next access would be a SIGBUS */
            g_assert_cmpint(ftruncate(r->bar0_fd, 0), ==, 0);
        }
        if (k->expect == PLUG_OK) {
            g_assert_cmphex(qpci_io_readl(dev, bar, 0), ==, BAR0_MAGIC);
            g_assert_cmphex(qpci_io_readl(dev, bar, 0), ==, BAR0_MAGIC);
            /* writes reach the server (no bogus doorbell or mapping) */
            qpci_io_writel(dev, bar, 8, 0x12345678);
            g_assert_cmphex(qpci_io_readl(dev, bar, 8), ==, 0x12345678);
            if (k->max_maps) {
                /* read by the server thread, done with the plug */
                g_test_message("%d DMA_MAPs", r->seen[VFU_CMD_DMA_MAP]);
                g_assert_cmpint(r->seen[VFU_CMD_DMA_MAP], >, 0);
                g_assert_cmpint(r->seen[VFU_CMD_DMA_MAP], <=, k->max_maps);
            }
        } else if (k->expect == BAD_ONCE) {
            g_assert_cmphex(qpci_io_readl(dev, bar, 0), ==, 0xffffffff);
            g_assert_cmphex(qpci_io_readl(dev, bar, 0), ==, BAR0_MAGIC);
        } else if (k->expect == LATER_DEAD || k->expect == LATER_ALIVE) {
            QPCIDevice *gdev = qpci_device_find(bus,
                                                QPCI_DEVFN(GOOD_SLOT, 0));
            QPCIBar gbar = qpci_iomap(gdev, 0, NULL);

            /* the rogue answers, and acts up while we wait for good */
            g_assert_cmphex(qpci_io_readl(dev, bar, 0), ==, BAR0_MAGIC);
            later = r;
            g_assert_cmphex(qpci_io_readl(gdev, gbar, 0), ==, BAR0_MAGIC);
            later = NULL;
            if (!r->overlapped) {
                g_test_message("%s: the client did not deal with the rogue "
                               "while it waited for the good server",
                               k->name);
                g_test_fail();
            }
            if (k->expect == LATER_DEAD) {
                g_assert_cmphex(qpci_io_readl(dev, bar, 0), ==, 0xffffffff);
            } else {
                /* after rogue_later(): the server thread serves in turn */
                g_assert_cmphex(qpci_io_readl(dev, bar, 0), ==, BAR0_MAGIC);
                g_assert(r->req_answered);
                g_assert_cmpint(r->req_error, ==, k->err);
            }
            g_assert_cmphex(qpci_io_readl(gdev, gbar, 0), ==, BAR0_MAGIC);
            g_free(gdev);
        } else if (k->expect == INERT) {
            g_assert_cmphex(qpci_io_readl(dev, bar, 0), ==, 0xffffffff);
            /* no more messages: the server would answer this one */
            g_assert_cmphex(qpci_io_readl(dev, bar, 0), ==, 0xffffffff);
            g_assert_cmphex(qpci_config_readw(dev, PCI_DEVICE_ID), ==,
                            0xffff);
        } else {
            g_assert_cmphex(qpci_io_readl(dev, bar, 0), ==, BAR0_MAGIC);
            g_assert(r->req_answered);
            if (r->req_error != k->err) {
                g_test_message("%s: got errno %d, expected %d", k->name,
                               r->req_error, k->err);
                g_test_fail();
            }
        }
        g_free(dev);
        qpci_unplug_acpi_device_test(qts, "rogue", ROGUE_SLOT);
    }
    if (k->trace) {
        log = trace_since(log_from);
        if (!strstr(log, k->trace)) {
            g_test_message("%s: no '%s' in the trace log:\n%s", k->name,
                           k->trace, log);
            g_test_fail();
        }
    }
    vm_check_alive();
    rogue_free(r);
    g_assert_cmpint(vu_wait_fds(qpid, before), ==, before);
    if (!g_test_failed()) {
        ncases++;
    }
}

#define VERSION_JSON(nm, maj, min, json, reason) \
    { nm, VFU_CMD_VERSION, 1, A_VERSION, maj, min, PLUG_FAIL, reason, json }
/* VERSION enables twin_socket as @json says, with an fd of kind @fd */
#define TWIN(nm, fd, json, reason) \
    { nm, VFU_CMD_VERSION, 1, A_VERSION_FD, 0, fd, PLUG_FAIL, reason, \
      "{\"capabilities\":{\"twin_socket\":" json "}}" }
#define FAIL(nm, cmd, nth, act, off, val, reason) \
    { nm, cmd, nth, act, off, val, PLUG_FAIL, reason }
#define OK(nm, cmd, nth, act, off, val) \
    { nm, cmd, nth, act, off, val, PLUG_OK }
/* misbehave on the test's first BAR0 read (the plug reads none) */
#define DEAD(nm, act, off, val) \
    { nm, VFU_CMD_REGION_READ, BAR0_READ, act, off, val, INERT }
#define REQ(nm, cmd, err, why) \
    { nm, VFU_CMD_REGION_READ, BAR0_READ, A_REQ_FIRST, 0, cmd, REQ_ERROR, \
      NULL, NULL, err, .trace = why }

#define GI  VFU_CMD_DEVICE_GET_INFO
#define RI  VFU_CMD_DEVICE_GET_REGION_INFO
#define II  VFU_CMD_DEVICE_GET_IRQ_INFO
#define RR  VFU_CMD_REGION_READ
#define IO  VFU_CMD_DEVICE_GET_REGION_IO_FDS
/* BAR0's region info comes second, after the config space's */
#define MMAP(nm, how, why) \
    { "mmap/" nm, RI, 2, A_MMAP, how, 0, PLUG_OK, .trace = why }
#define IOFDS(nm, how, why) \
    { "io-fds/" nm, IO, 1, A_IOFDS, how, 0, PLUG_OK, .trace = why }
/* the device works, with the capability hidden for @why */
#define CAP(nm, fn, why) \
    { "caps/" nm, .expect = PLUG_OK, .setup = fn, .trace = why }

static const Case cases[] = {
    /* VERSION */
    VERSION_JSON("version/major-1", 1, 0, "{}", "major version"),
    VERSION_JSON("version/minor-newer", 0, 99, "{}", "newer"),
    VERSION_JSON("version/json-garbage", 0, 2, "{\"capab", "JSON"),
    VERSION_JSON("version/json-array", 0, 2, "[1,2]", "object"),
    VERSION_JSON("version/max-msg-fds-string", 0, 2,
                 "{\"capabilities\":{\"max_msg_fds\":\"x\"}}", "max_msg_fds"),
    /* a huge proposal is only a bound on what we send: harmless */
    { "version/max-msg-fds-huge", VFU_CMD_VERSION, 1, A_VERSION, 0, 2,
      PLUG_OK, NULL, "{\"capabilities\":{\"max_msg_fds\":100000}}" },
    VERSION_JSON("version/xfer-size-tiny", 0, 2,
                 "{\"capabilities\":{\"max_data_xfer_size\":1}}",
                 "max_data_xfer_size"),
    /* the client sends no more mappings than the server takes */
    { "version/max-dma-maps-2", VFU_CMD_VERSION, 1, A_VERSION, 0, 2,
      PLUG_OK, NULL, "{\"capabilities\":{\"max_dma_maps\":2}}", 0, 2 },
    VERSION_JSON("version/pgsizes-zero", 0, 2,
                 "{\"capabilities\":{\"pgsizes\":0}}", "pgsizes"),
    /* twin_socket enabled, but its fd is not a socket we can use */
    TWIN("version/twin-fd-index-out", TWIN_SOCKET,
         "{\"supported\":true,\"fd_index\":1}", "names none of the 1"),
    TWIN("version/twin-fd-index-string", TWIN_SOCKET,
         "{\"supported\":true,\"fd_index\":\"0\"}", "fd_index"),
    TWIN("version/twin-no-fd-index", TWIN_SOCKET, "{\"supported\":true}",
         "without an fd_index"),
    TWIN("version/twin-not-socket", TWIN_EVENTFD,
         "{\"supported\":true,\"fd_index\":0}",
         "not a UNIX stream socket"),
    FAIL("version/short", VFU_CMD_VERSION, 1, A_SHORT, 2, 0, "bad reply"),
    FAIL("version/no-nul", VFU_CMD_VERSION, 1, A_SHORT, 6, 0,
         "NUL-terminated"),
    FAIL("version/error", VFU_CMD_VERSION, 1, A_ERROR, 0, EPERM,
         "not permitted"),
    FAIL("version/silent", VFU_CMD_VERSION, 1, A_SILENT, 0, 0, "no answer"),
    FAIL("version/close", VFU_CMD_VERSION, 1, A_CLOSE, 0, 0, "closed"),
    FAIL("version/wrong-id", VFU_CMD_VERSION, 1, A_WRONG_ID, 0, 0,
         "no answer"),
    FAIL("version/flood", VFU_CMD_VERSION, 1, A_FLOOD, 0, 0, "no answer"),
    /* DEVICE_GET_INFO */
    FAIL("info/not-pci", GI, 1, A_FIELD32, 4, VFU_DEV_F_RESET, "not a PCI"),
    FAIL("info/short", GI, 1, A_SHORT, 8, 0, "bad reply"),
    OK("info/long", GI, 1, A_LONG, 16, 0),
    FAIL("info/regions-few", GI, 1, A_FIELD32, 8, 3, "at least"),
    FAIL("info/regions-huge", GI, 1, A_FIELD32, 8, UINT32_MAX, "accepted"),
    FAIL("info/irqs-huge", GI, 1, A_FIELD32, 12, 1u << 30, "accepted"),
    FAIL("info/error", GI, 1, A_ERROR, 0, ENODEV, "No such device"),
    FAIL("info/error-no-errno", GI, 1, A_ERROR_ZERO, 0, 0, "Input/output"),
    FAIL("info/silent", GI, 1, A_SILENT, 0, 0, "no answer"),
    FAIL("info/close", GI, 1, A_CLOSE, 0, 0, "closed"),
    FAIL("info/wrong-command", GI, 1, A_WRONG_CMD, 0, VFU_CMD_DEVICE_RESET,
         "no answer"),
    FAIL("info/flagged-command", GI, 1, A_NOT_REPLY, 0, 0, "no answer"),
    FAIL("info/hdr-size-small", GI, 1, A_RAW_HDR, 4, VFU_F_TYPE_REPLY,
         "size"),
    FAIL("info/hdr-size-huge", GI, 1, A_RAW_HDR, UINT32_MAX, VFU_F_TYPE_REPLY,
         "size"),
    FAIL("info/hdr-flags-unknown", GI, 1, A_RAW_HDR, 32,
         VFU_F_TYPE_REPLY | (1u << 11), "flags"),
    FAIL("info/hdr-type-2", GI, 1, A_RAW_HDR, 32, 2, "message type"),
    FAIL("info/fds-on-reply", GI, 1, A_FDS, 2, 0, "bad reply"),
    FAIL("info/fds-16", GI, 1, A_FDS, 16, 0, "bad reply"),
    FAIL("info/flood-requests", GI, 1, A_FLOOD, 0, 0, "no answer"),
    FAIL("info/flood-no-reply", GI, 1, A_FLOOD, 0, 1, "no answer"),
    OK("info/split", GI, 1, A_SPLIT, 0, 0),
    OK("info/twice", GI, 1, A_TWICE, 0, 0),
    OK("info/stray-first", GI, 1, A_STRAY_FIRST, 0, 0),
    /* REGION_INFO (config first, then BAR0..5, ROM) */
    FAIL("region-info/config-small", RI, 1, A_FIELD64, 16, 64, "too small"),
    FAIL("region-info/wrong-index", RI, 1, A_FIELD32, 8, 3, "answered for"),
    FAIL("region-info/short", RI, 1, A_SHORT, 12, 0, "bad reply"),
    FAIL("region-info/error", RI, 1, A_ERROR, 0, EINVAL, "Invalid"),
    FAIL("region-info/bar-huge", RI, 2, A_FIELD64, 16, 1ULL << 50,
         "too large"),
    FAIL("region-info/bar-no-access", RI, 2, A_FIELD32, 4, 0,
         "neither readable"),
    OK("region-info/argsz-lies", RI, 1, A_FIELD32, 0, 4096),
    /* a BAR offered for mmap wrongly stays on messages */
    MMAP("no-fd", MMAP_NO_FD, "BAR0: no fd came"),
    MMAP("dev-null", MMAP_DEV_NULL, "BAR0: its fd is not sealed"),
    MMAP("file-too-short", MMAP_FILE_SHORT,
         "BAR0: the fd is not a file of at least 4096 bytes"),
    MMAP("cap-loop", MMAP_CAP_LOOP, "points back"),
    MMAP("area-unaligned", MMAP_UNALIGNED, "is not page aligned"),
    MMAP("two-files", MMAP_TWO_FILES, "are not all the same file"),
    MMAP("areas-huge", MMAP_AREAS_HUGE, "sparse mmap capability with"),
    MMAP("area-outside", MMAP_AREA_OUTSIDE, "outside its 0x1000 bytes"),
    /* in every DMA mode: shrunk under a mapping, it would kill the VM */
    MMAP("unsealed-shrunk", MMAP_UNSEALED, "BAR0: its fd is not sealed"),
    { "mmap/sealed", RI, 2, A_MMAP, MMAP_SEALED, 0, PLUG_OK,
      .trace = "BAR0: 0x0+0x1000 mapped", .mapped = true },
    /* found by the realize fuzzer: the error path had no error */
    MMAP("no-area", MMAP_NO_AREA, "BAR0: no area to map"),
    /* a bad doorbell is skipped */
    IOFDS("pipe-not-eventfd", IOFD_PIPE, "BAR0 entry 0: fd is not an eventfd"),
    IOFDS("outside-bar", IOFD_OUTSIDE,
          "BAR0 entry 0: offset 0x10000000000 is outside"),
    IOFDS("fd-index", IOFD_BAD_INDEX, "BAR0 entry 0: fd index 5 but 1 fds"),
    IOFDS("count-huge", IOFD_COUNT_HUGE, "malformed reply"),
    IOFDS("ioregionfd", IOFD_REGIONFD, "BAR0 entry 0: type 1 is not"),
    IOFDS("size-3", IOFD_SIZE_3, "BAR0 entry 0: size 3 is not"),
    IOFDS("flags-unknown", IOFD_FLAGS, "BAR0 entry 0: unknown flags 0x80"),
    IOFDS("argsz-lies", IOFD_ARGSZ_LIES, "malformed reply"),
    IOFDS("unaligned", IOFD_UNALIGNED,
          "BAR0 entry 0: offset 0x6 is outside or unaligned"),
    /* KVM would refuse the second (EEXIST), and QEMU abort */
    IOFDS("collide", IOFD_COLLIDE,
          "BAR0 entry 1: 0x10+4 collides with a doorbell"),
    IOFDS("overlap", IOFD_OVERLAP,
          "BAR0 entry 1: 0x14+4 collides with a doorbell"),
    { "io-fds/in-msix-table", IO, 1, A_IOFDS, IOFD_IN_MSIX, 0, PLUG_OK,
      .setup = setup_msix,
      .trace = "BAR0 entry 0: 0x800 is in the MSI-X table" },
    /* capabilities the PCI core would write past config space for */
    CAP("msi-fits-e8", setup_msi_e8, "capability 0x5 at 0xe8 size 24"),
    CAP("msi-64-mask-at-ec", setup_msi_ec,
        "capability 0x5 at 0xec hidden: too large"),
    CAP("msi-64-mask-at-f0", setup_msi_f0,
        "capability 0x5 at 0xf0 hidden: too large"),
    CAP("msi-64-mask-at-f4", setup_msi_f4,
        "capability 0x5 at 0xf4 hidden: too large"),
    CAP("msi-over-next", setup_msi_before_next,
        "capability 0x5 at 0x50 hidden: too large"),
    CAP("msix-good", setup_msix, "capability 0x11 at 0x40 size"),
    CAP("msix-at-f8", setup_msix_f8,
        "capability 0x11 at 0xf8 hidden: too large"),
    CAP("msix-no-bar", setup_msix_no_bar,
        "hidden: the MSI-X table is in BAR2, which does not exist"),
    CAP("msix-io-bar", setup_msix_io_bar,
        "hidden: the MSI-X table is in BAR0, an I/O BAR"),
    CAP("msix-table-outside", setup_msix_outside,
        "hidden: the MSI-X table at 0xfe0+0x40 lies outside BAR0"),
    CAP("msix-pba-outside", setup_msix_pba_outside,
        "hidden: the MSI-X PBA at 0x1000+0x8 lies outside BAR0"),
    CAP("msix-few-vectors", setup_msix_few_vectors,
        "hidden: the MSI-X table has 4 entries but the server takes 2"),
    /* connecting */
    { "connect/backlog-full", .action = A_BACKLOG, .expect = PLUG_FAIL,
      .reason = "listen queue is full" },
    { "connect/timeout-zero", .expect = PLUG_FAIL, .timeout = -1,
      .reason = "x-msg-timeout must be at least 1" },
    /* the fds that may come are closed: the fd count tells */
    OK("region-info/with-fd", RI, 2, A_FDS, 1, 0),
    OK("region-info/cap-offset-outside", RI, 2, A_FIELD32, 12, 0x10000),
    OK("version/with-fd", VFU_CMD_VERSION, 1, A_FDS, 1, 0),
    FAIL("version/with-two-fds", VFU_CMD_VERSION, 1, A_FDS, 2, 0,
         "file descriptors"),
    FAIL("irq-info/with-fds", II, 1, A_FDS, 3, 0, "file descriptors"),
    /* config space read */
    FAIL("config/short", RR, 1, A_SHORT, 20, 0, "bad reply"),
    FAIL("config/count-lies", RR, 1, A_FIELD32, 12, 16, "bad reply"),
    FAIL("config/header-type-1", RR, 1, A_FIELD32,
         sizeof(VfuRegionAccess) + PCI_HEADER_TYPE - 2, 0x00010000,
         "type 0"),
    FAIL("config/error", RR, 1, A_ERROR, 0, EIO, "Input/output"),
    /* IRQ_INFO */
    FAIL("irq-info/count-huge", II, 1, A_FIELD32, 12, 1u << 20,
         "more than"),
    FAIL("irq-info/wrong-index", II, 1, A_FIELD32, 8, 4, "answered for"),
    FAIL("irq-info/short", II, 1, A_SHORT, 4, 0, "bad reply"),
    FAIL("irq-info/error", II, 2, A_ERROR, 0, EINVAL, "Invalid"),
    /* broken after the plug: inert, all-ones */
    DEAD("bar/close", A_CLOSE, 0, 0),
    DEAD("bar/silent", A_SILENT, 0, 0),
    DEAD("bar/garbage-header", A_RAW_HDR, 0xffffffff, 0xffff),
    /* given up after VFU_CALL_MAX_TIMEOUTS timeouts, DMA or not */
    DEAD("bar/flood", A_FLOOD, 0, 0),
    /* DMA the client serves is a sign of life: past the timeout is fine */
    OK("bar/busy-with-dma", RR, BAR0_READ, A_BUSY, MSG_TIMEOUT_MS * 5 / 2, 0),
    /* a well-framed but wrong reply fails that access only */
    { "bar/count-lies", RR, BAR0_READ, A_FIELD32, 12, 8, BAD_ONCE },
    { "bar/error-reply", RR, BAR0_READ, A_ERROR, 0, EIO, BAD_ONCE },
    { "bar/short-reply", RR, BAR0_READ, A_SHORT, 18, 0, BAD_ONCE },
    { "bar/wrong-offset", RR, BAR0_READ, A_FIELD64, 0, 8, BAD_ONCE },
    { "bar/wrong-region", RR, BAR0_READ, A_FIELD32, 8, 2, BAD_ONCE },
    OK("bar/split", RR, BAR0_READ, A_SPLIT, 0, 0),
    /* the server acts up while the client waits for another device */
    { "later/garbage", RR, BAR0_READ, A_LATER, LATER_GARBAGE, 0, LATER_DEAD },
    { "later/close", RR, BAR0_READ, A_LATER, LATER_CLOSE, 0, LATER_DEAD },
    { "later/dma", RR, BAR0_READ, A_LATER, LATER_DMA, 0, LATER_ALIVE },
    { "later/dma-unmapped", RR, BAR0_READ, A_LATER, LATER_DMA_UNMAPPED, 0,
      LATER_ALIVE, NULL, NULL, EFAULT },
    { "later/dma-flood", RR, BAR0_READ, A_LATER, LATER_FLOOD, 0,
      LATER_ALIVE },
    { "later/stray-replies", RR, BAR0_READ, A_LATER, LATER_STRAY, 0,
      LATER_ALIVE },
    /* requests from the server while the client waits */
    REQ("req/dma-read-unmapped", VFU_CMD_DMA_READ, EFAULT,
        "vfio_user_pci_dma_denied write 0 addr 0xfff00000000 count 0x10"),
    REQ("req/dma-write-unmapped", VFU_CMD_DMA_WRITE, EFAULT,
        "vfio_user_pci_dma_denied write 1 addr 0xfff00000000 count 0x10"),
    REQ("req/version", VFU_CMD_VERSION, ENOTSUP, NULL),
    /* a command only a client sends */
    REQ("req/dma-map", VFU_CMD_DMA_MAP, ENOTSUP,
        "vfio_user_pci_bad_request command 2"),
    REQ("req/region-read", VFU_CMD_REGION_READ, ENOTSUP,
        "vfio_user_pci_bad_request command 9"),
    REQ("req/unknown", 99, ENOSYS, NULL),
    /* with a twin socket, DMA requests on the main socket are refused */
    { "req/dma-read-off-twin", RR, BAR0_READ, A_REQ_FIRST, 0, VFU_CMD_DMA_READ,
      REQ_ERROR, NULL, NULL, EINVAL, .twin = true,
      .trace = "vfio_user_pci_dma_off_twin command 11" },
};

/*
 * The device's state lives in its server: until vfio-user migration
 * exists, migration and snapshots must be refused, naming the device, and
 * the VM and device go on as before.
 */
static void test_migrate_blocked(void)
{
    g_autofree char *why = NULL;
    g_autofree char *out = NULL;
    QDict *rsp, *ret;

    vm_start();
    why = g_strdup_printf("vfio-user-pci good (socket %s) cannot be migrated",
                          good->path);
    rsp = qtest_qmp(qts, "{'execute': 'migrate', 'arguments': {"
                    "'uri': 'exec:cat >/dev/null'}}");
    g_assert(qdict_haskey(rsp, "error"));
    g_test_message("migrate: %s",
                   qdict_get_str(qdict_get_qdict(rsp, "error"), "desc"));
    g_assert(strstr(qdict_get_str(qdict_get_qdict(rsp, "error"), "desc"),
                    why));
    qobject_unref(rsp);
    out = qtest_hmp(qts, "savevm rogue-snap");
    g_test_message("savevm: %s", out);
    g_assert(strstr(out, why));

    rsp = qtest_qmp(qts, "{'execute': 'query-status'}");
    ret = qdict_get_qdict(rsp, "return");
    g_assert_cmpstr(qdict_get_str(ret, "status"), ==, "running");
    qobject_unref(rsp);
    vm_check_alive();
}

/* ---- one server, two devices, both sockets full -------------------------- */

/*
 * A server exporting two devices to the VM floods both sockets with
 * DMA_READs and reads neither, so that every reply the client begins
 * sticks half-sent.  While the client waits to send, it serves the other
 * members of its wait group (vfu_client_attach()).  It must not
 * write a message into the middle of a half-sent one, nor nest serving
 * without bound (the stack overflows: a crash); it gives up on both
 * devices with its timeout, and the VM runs on.
 */
#define NEST_SLOT_A     6
#define NEST_SLOT_B     7
#define NEST_TIMEOUT_MS 500
/* each DMA_READ asks for all the client takes: no reply fits the socket */
#define NEST_COUNT      VFU_MAX_XFER_SIZE
/* request i reads guest RAM at NEST_BASE + (i % NEST_ADDRS) * NEST_STRIDE */
#define NEST_BASE       0x1000000ULL
#define NEST_ADDRS      16
#define NEST_STRIDE     0x10000
#define NEST_WINDOW     (NEST_COUNT + NEST_ADDRS * NEST_STRIDE)
#define NEST_ID0        0x100
#define NEST_MAX_REQS   0xf000      /* per socket: message ids stay unique */
#define NEST_REQ_SIZE   (sizeof(VfuHeader) + sizeof(VfuDmaAccess))
#define NEST_BATCH      256         /* requests per write */
#define NEST_FLOOD_MS   6000        /* the longest a flood goes on */
#define NEST_READ_MS    3000        /* then, to read the rest of a stream */
/* no more is read of a client that keeps writing */
#define NEST_MAX_STREAM (64 * 1024 * 1024)
/* this much unread from the client: its reply is stuck half-sent */
#define NEST_FULL       (32 * 1024)
/*
 * A moment later (a client that nests is deep by then), all of it is read,
 * once: a client that nests writes its innermost message into the room,
 * the middle of the outermost; one that does not goes on with the one it
 * was sending (a UNIX socket polls writable only when nearly empty)
 */
#define NEST_DRAIN_MS   100
/*
 * DMA_READ replies the client may begin on one socket while it can finish
 * none: each is a request taken in and not answered, nested or queued
 */
#define NEST_MAX_REPLIES 16

typedef struct NestSock {
    Rogue *r;           /* the device's shape and listening socket */
    VfuConn *c;
    int fd;
    uint8_t batch[NEST_BATCH * NEST_REQ_SIZE];
    size_t batch_len, batch_off;
    unsigned queued;    /* DMA_READs put into a batch so far */
    bool gone;          /* the client hung up */
    int64_t full_at;    /* when its reply stuck (ms), or 0 */
    bool drained;
    GByteArray *stream; /* what the client wrote from the flood on */
} NestSock;

typedef struct Nest {
    NestSock s[2];
    int wake;           /* eventfd: flood now */
    bool full;          /* the client's reply on device A is stuck */
    GThread *thread;
} Nest;

static uint8_t *nest_ram;  /* what guest RAM holds at NEST_BASE */

static uint64_t nest_addr(unsigned i)
{
    return NEST_BASE + (i % NEST_ADDRS) * NEST_STRIDE;
}

static int64_t nest_now_ms(void)
{
    return g_get_monotonic_time() / 1000;
}

/*
 * A connection comes, or messages on it (all that were read: the
 * transport buffers); false if the client hung up
 */
static bool nest_serve_one(NestSock *s)
{
    VfuMsg *m = NULL;
    int r;

    if (!s->c) {
        QIOChannelSocket *sioc = qio_channel_socket_accept(s->r->listener,
                                                           NULL);
        VfuLimits lim;

        if (!sioc) {
            return false;
        }
        vfu_limits_default(&lim);
        s->c = vfu_conn_new(QIO_CHANNEL(sioc), "nest-server", &lim);
        object_unref(OBJECT(sioc));
        s->fd = vfu_conn_fd(s->c);
        vfu_conn_set_timeout(s->c, 60000);
        vfu_conn_set_request_func(s->c, rogue_request, s->r);
        return true;
    }
    while ((r = vfu_conn_recv(s->c, &m, false, NULL)) == 1) {
        if (vfu_msg_is_reply(m)) {
            vfu_msg_free(m);
        } else if (m->hdr.command == VFU_CMD_VERSION) {
            rogue_version(s->r, s->c, m);
            vfu_msg_free(m);
        } else {
            vfu_conn_handle_request(s->c, m);
        }
    }
    return r == 0;
}

/* Serve both devices well until the test says flood; false on a hang-up */
static bool nest_serve(Nest *n)
{
    for (;;) {
        GPollFD pfd[3] = { { .fd = n->wake, .events = G_IO_IN } };

        for (int i = 0; i < 2; i++) {
            NestSock *s = &n->s[i];

            pfd[i + 1].fd = s->c ? s->fd : s->r->listener->fd;
            pfd[i + 1].events = G_IO_IN;
        }
        if (g_poll(pfd, 3, -1) < 0 && errno != EINTR) {
            return false;
        }
        if (pfd[0].revents) {
            return true;
        }
        for (int i = 0; i < 2; i++) {
            if (pfd[i + 1].revents && !nest_serve_one(&n->s[i])) {
                return false;
            }
        }
    }
}

/* The next DMA_READs into @s's batch; false when all are out */
static bool nest_fill(NestSock *s)
{
    unsigned k = MIN(NEST_BATCH, NEST_MAX_REQS - s->queued);

    for (unsigned j = 0; j < k; j++, s->queued++) {
        VfuHeader h = {
            .msg_id = NEST_ID0 + s->queued, .command = VFU_CMD_DMA_READ,
            .size = NEST_REQ_SIZE, .flags = VFU_F_TYPE_COMMAND,
        };
        VfuDmaAccess a = {
            .address = nest_addr(s->queued), .count = NEST_COUNT,
        };
        uint8_t *w = s->batch + j * NEST_REQ_SIZE;

        vfu_header_encode(&h, w);
        vfu_payload_encode(VFU_CMD_DMA_READ, false, &a, sizeof(a));
        memcpy(w + sizeof(h), &a, sizeof(a));
    }
    s->batch_len = k * NEST_REQ_SIZE;
    s->batch_off = 0;
    return k > 0;
}

static bool nest_more(NestSock *s)
{
    return s->batch_off < s->batch_len || s->queued < NEST_MAX_REQS;
}

/* Write as much as the socket takes now */
static void nest_write(NestSock *s)
{
    ssize_t n;

    if (s->batch_off == s->batch_len && !nest_fill(s)) {
        return;
    }
    n = send(s->fd, s->batch + s->batch_off, s->batch_len - s->batch_off,
             MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
        s->batch_off += n;
    } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
        s->gone = true;     /* EPIPE: the client hung up */
    }
}

/* Read up to @max bytes the client wrote; false at its end */
static bool nest_take(NestSock *s, size_t max)
{
    size_t had = s->stream->len;
    ssize_t n;

    g_byte_array_set_size(s->stream, had + max);
    n = recv(s->fd, s->stream->data + had, max, MSG_DONTWAIT);
    g_byte_array_set_size(s->stream, had + MAX(n, 0));
    return n > 0 || (n < 0 && (errno == EAGAIN || errno == EINTR));
}

/*
 * Flood both sockets, reading nothing (but once, see NEST_DRAIN_MS), until
 * the client has hung up on both or NEST_FLOOD_MS have passed
 */
static void nest_flood(Nest *n)
{
    int64_t end = nest_now_ms() + NEST_FLOOD_MS;

    while (!(n->s[0].gone && n->s[1].gone) && nest_now_ms() < end) {
        struct pollfd pfd[2];

        for (int i = 0; i < 2; i++) {
            pfd[i].fd = n->s[i].gone ? -1 : n->s[i].fd;
            pfd[i].events = nest_more(&n->s[i]) ? POLLOUT : 0;
            pfd[i].revents = 0;
        }
        /* woken by room to write; else soon, for the drain */
        poll(pfd, 2, 10);
        for (int i = 0; i < 2; i++) {
            NestSock *s = &n->s[i];
            int unread = 0;

            if (s->gone) {
                continue;
            }
            if (pfd[i].revents & (POLLHUP | POLLERR)) {
                s->gone = true;
                continue;
            }
            if (pfd[i].revents & POLLOUT) {
                nest_write(s);
            }
            if (!s->full_at && ioctl(s->fd, FIONREAD, &unread) == 0 &&
                unread >= NEST_FULL) {
                s->full_at = nest_now_ms();
                if (i == 0) {
                    qatomic_set(&n->full, true);
                }
            }
            if (s->full_at && !s->drained &&
                nest_now_ms() - s->full_at >= NEST_DRAIN_MS) {
                if (ioctl(s->fd, FIONREAD, &unread) == 0 && unread > 0) {
                    nest_take(s, unread);
                }
                s->drained = true;
            }
        }
    }
}

/* The rest of what the client wrote, up to its hang-up */
static void nest_read_rest(Nest *n)
{
    int64_t end = nest_now_ms() + NEST_READ_MS;
    bool done[2] = { false, false };

    while (!(done[0] && done[1]) && nest_now_ms() < end) {
        struct pollfd pfd[2];

        for (int i = 0; i < 2; i++) {
            pfd[i].fd = done[i] ? -1 : n->s[i].fd;
            pfd[i].events = POLLIN;
            pfd[i].revents = 0;
        }
        poll(pfd, 2, 10);
        for (int i = 0; i < 2; i++) {
            if (!done[i] && pfd[i].revents) {
                done[i] = !nest_take(&n->s[i], 256 * 1024) ||
                          n->s[i].stream->len > NEST_MAX_STREAM;
            }
        }
    }
}

static gpointer nest_thread(gpointer opaque)
{
    Nest *n = opaque;

    if (nest_serve(n)) {
        nest_flood(n);
        nest_read_rest(n);
    }
    return NULL;
}

static void nest_fail(const char *dev, size_t off, const char *fmt, ...)
    G_GNUC_PRINTF(3, 4);

static void nest_fail(const char *dev, size_t off, const char *fmt, ...)
{
    g_autofree char *what = NULL;
    va_list ap;

    va_start(ap, fmt);
    what = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_test_message("%s: byte %zu of what the client wrote: %s", dev, off,
                   what);
    g_test_fail();
}

/*
 * What the client wrote on @s from the flood on must be whole messages,
 * one after the other: replies to our DMA_READs, each with the guest's
 * bytes from where it asked (or an error), and REGION_READs of BAR0.  The
 * last one may end early, where the client gave up.  Returns the number
 * of DMA_READ replies begun, or -1 at the first wrong byte.
 */
static int nest_check_stream(NestSock *s, const char *dev)
{
    const uint8_t *p = s->stream->data;
    size_t len = s->stream->len;
    g_autofree bool *answered = g_new0(bool, MAX(s->queued, 1));
    int replies = 0;

    for (size_t off = 0; off + sizeof(VfuHeader) <= len; ) {
        const uint8_t *body = p + off + sizeof(VfuHeader);
        Error *err = NULL;
        VfuHeader h;
        size_t size, have;
        unsigned i;

        if (!vfu_header_decode(p + off, &h, NEST_REQ_SIZE + NEST_COUNT,
                               &err)) {
            nest_fail(dev, off, "not a header: %s", error_get_pretty(err));
            error_free(err);
            return -1;
        }
        size = h.size - sizeof(VfuHeader);
        have = MIN(size, len - off - sizeof(VfuHeader));
        if ((h.flags & VFU_F_TYPE_MASK) != VFU_F_TYPE_REPLY) {
            if (h.command != VFU_CMD_REGION_READ ||
                size != sizeof(VfuRegionAccess)) {
                nest_fail(dev, off, "a %s request of %zu bytes",
                          vfu_command_name(h.command), size);
                return -1;
            }
            /* xp reads 4 bytes of BAR0 */
            if (have == size &&
                (ldl_le_p(body + 8) || ldl_le_p(body + 12) != 4)) {
                nest_fail(dev, off, "a REGION_READ of region %u count %u",
                          ldl_le_p(body + 8), ldl_le_p(body + 12));
                return -1;
            }
            off += sizeof(VfuHeader) + have;
            continue;
        }
        i = (uint16_t)(h.msg_id - NEST_ID0);
        if (h.command != VFU_CMD_DMA_READ || i >= s->queued || answered[i]) {
            nest_fail(dev, off, "a %s reply with id 0x%x, to none of our "
                      "requests", vfu_command_name(h.command), h.msg_id);
            return -1;
        }
        answered[i] = true;
        if (h.flags & VFU_F_ERROR) {
            if (size) {
                nest_fail(dev, off, "an error reply of %zu bytes", size);
                return -1;
            }
            off += sizeof(VfuHeader);
            continue;
        }
        replies++;
        if (size != sizeof(VfuDmaAccess) + NEST_COUNT) {
            nest_fail(dev, off, "a DMA_READ reply of %zu bytes", size);
            return -1;
        }
        if (have >= sizeof(VfuDmaAccess) &&
            (ldq_le_p(body) != nest_addr(i) ||
             ldq_le_p(body + 8) != NEST_COUNT)) {
            nest_fail(dev, off, "the reply to DMA_READ 0x%x is for 0x%"
                      PRIx64 "+0x%" PRIx64, h.msg_id, ldq_le_p(body),
                      ldq_le_p(body + 8));
            return -1;
        }
        for (size_t j = sizeof(VfuDmaAccess); j < have; j++) {
            VfuHeader in;

            if (body[j] == nest_ram[nest_addr(i) - NEST_BASE + j -
                                    sizeof(VfuDmaAccess)]) {
                continue;
            }
            if (have - j >= sizeof(in) &&
                vfu_header_decode(body + j, &in, UINT32_MAX, NULL)) {
                nest_fail(dev, off + sizeof(VfuHeader) + j, "in the reply "
                          "to DMA_READ 0x%x, at data byte %zu: the header "
                          "of another message (%s, id 0x%x, flags 0x%x, "
                          "%u bytes)", h.msg_id, j - sizeof(VfuDmaAccess),
                          vfu_command_name(in.command), in.msg_id, in.flags,
                          in.size);
            } else {
                nest_fail(dev, off + sizeof(VfuHeader) + j, "data byte %zu "
                          "of the reply to DMA_READ 0x%x is not the guest's",
                          j - sizeof(VfuDmaAccess), h.msg_id);
            }
            return -1;
        }
        off += sizeof(VfuHeader) + have;
    }
    g_test_message("%s: %u bytes from the client, %d DMA_READ replies "
                   "begun, %u requests sent", dev, s->stream->len, replies,
                   s->queued);
    return replies;
}

/* x-query-vfio-user's entry for the device @id; *@rsp keeps it */
static QDict *nest_query(const char *id, QDict **rsp)
{
    QListEntry *e;

    *rsp = qtest_qmp(qts, "{'execute': 'x-query-vfio-user'}");
    g_assert(qdict_haskey(*rsp, "return"));
    QLIST_FOREACH_ENTRY(qdict_get_qlist(qdict_get_qdict(*rsp, "return"),
                                        "clients"), e) {
        QDict *d = qobject_to(QDict, qlist_entry_obj(e));

        if (g_strcmp0(qdict_get_try_str(d, "id"), id) == 0) {
            return d;
        }
    }
    g_assert_not_reached();
}

static int64_t nest_counter(QDict *d, const char *name)
{
    g_assert(qdict_haskey(d, "connection"));
    return qdict_get_int(qdict_get_qdict(qdict_get_qdict(d, "connection"),
                                         "counters"), name);
}

/* Guest RAM from NEST_BASE on, as a readable DMA mapping has it */
static void nest_check_mapped(const char *id)
{
    QDict *rsp;
    QDict *d = nest_query(id, &rsp);
    QListEntry *e;
    bool found = false;

    QLIST_FOREACH_ENTRY(qdict_get_qlist(qdict_get_qdict(d, "dma-mappings"),
                                        "mappings"), e) {
        QDict *m = qobject_to(QDict, qlist_entry_obj(e));
        uint64_t iova = qdict_get_int(m, "iova");

        found |= qdict_get_bool(m, "readable") && iova <= NEST_BASE &&
                 iova + qdict_get_int(m, "size") >= NEST_BASE + NEST_WINDOW;
    }
    g_assert(found);
    qobject_unref(rsp);
}

/*
 * QEMU is ending, or has ended.  A process that dies closes its fds only
 * after it is marked as exiting: so once its sockets closed, this tells
 * a crash from a hang-up.
 */
static bool vm_ending(void)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/stat", qpid);
    g_autofree char *stat = NULL;
    const char *p;
    char state;
    unsigned long flags;

    if (!g_file_get_contents(path, &stat, NULL, NULL)) {
        return true;
    }
    /* after "pid (comm)": state ppid pgrp session tty_nr tpgid flags */
    p = strrchr(stat, ')');
    g_assert(p && sscanf(p + 1, " %c %*d %*d %*d %*d %*d %lu", &state,
                         &flags) == 2);
    return state == 'Z' || state == 'X' || (flags & 0x4 /* PF_EXITING */);
}

/* If QEMU is ending (a crash), say how, and forget the VM */
static bool vm_lost(void)
{
    int status = 0;

    if (!vm_ending()) {
        return false;
    }
    g_assert_cmpint(waitpid(qpid, &status, 0), ==, qpid);
    g_test_message("QEMU (pid %d) has ended: %s %d", qpid,
                   WIFSIGNALED(status) ? "signal" : "exit status",
                   WIFSIGNALED(status) ? WTERMSIG(status) :
                   WEXITSTATUS(status));
    g_test_fail();
    qtest_remove_abrt_handler(qts);
    qpci_free_pc(bus);
    rogue_free(good);
    unlink(trace_log);
    /* a later case starts another VM */
    qts = NULL;
    return true;
}

/*
 * Both devices plugged and working, the server floods both sockets (see
 * the top of this part) and the test has the client read device A's BAR0
 * once A's reply is stuck.  Then: QEMU runs on; what the client wrote on
 * each socket is whole messages; it began few replies (a client that
 * nests begins one per level, and overflows its stack); it gave up on
 * both devices after their timeout, the BAR0 read all-ones; QMP answers,
 * the VM's other device works, and no fd is left.
 */
static void test_nest(void)
{
    static const char *const ids[2] = { "nest-a", "nest-b" };
    static const int slots[2] = { NEST_SLOT_A, NEST_SLOT_B };
    g_autofree char *xp = NULL;
    g_autofree char *out = NULL;
    g_autoptr(GRand) rand = g_rand_new_with_seed(15);
    QPCIDevice *dev[2];
    int64_t replies0[2];
    Nest n = { .wake = eventfd(0, EFD_CLOEXEC) };
    uint64_t one = 1;
    QDict *rsp;
    int before;

    vm_start();
    before = vu_count_fds(qpid);
    nest_ram = g_malloc(NEST_WINDOW);
    for (size_t i = 0; i < NEST_WINDOW; i++) {
        nest_ram[i] = g_rand_int(rand);
    }
    qtest_bufwrite(qts, NEST_BASE, nest_ram, NEST_WINDOW);
    for (int i = 0; i < 2; i++) {
        n.s[i].r = rogue_new(NULL);
        n.s[i].stream = g_byte_array_new();
    }
    n.thread = g_thread_new("nest-server", nest_thread, &n);
    for (int i = 0; i < 2; i++) {
        QPCIBar bar;

        rsp = plug(ids[i], n.s[i].r->path, slots[i], NEST_TIMEOUT_MS);
        g_assert(qdict_haskey(rsp, "return"));
        qobject_unref(rsp);
        dev[i] = vu_find_dev(bus, QPCI_DEVFN(slots[i], 0));
        bar = qpci_iomap(dev[i], 0, NULL);
        g_assert_cmphex(qpci_io_readl(dev[i], bar, 0), ==, BAR0_MAGIC);
        if (i == 0) {
            xp = g_strdup_printf("xp /1wx 0x%" PRIx64, bar.addr);
        }
        nest_check_mapped(ids[i]);
        replies0[i] = nest_counter(nest_query(ids[i], &rsp), "replies-sent");
        qobject_unref(rsp);
    }

    g_assert_cmpint(write(n.wake, &one, sizeof(one)), ==, sizeof(one));
    /* once device A's socket is full, read its BAR0: the client must send */
    if (!wait_flag(&n.full, 10 * 1000)) {
        g_test_message("the client's reply on %s never stuck", ids[0]);
        g_test_fail();
    }
    if (!vm_lost()) {
        qtest_qmp_send(qts, "{'execute': 'human-monitor-command', "
                       "'arguments': {'command-line': %s}}", xp);
    }
    g_thread_join(n.thread);

    for (int i = 0; i < 2; i++) {
        /* the client served both, until their sockets were full */
        if (!nest_check_stream(&n.s[i], ids[i])) {
            g_test_message("%s: the client began no DMA_READ reply", ids[i]);
            g_test_fail();
        }
    }
    if (qts && !vm_lost()) {
        /* it gave up on A's BAR0, and its monitor answers */
        rsp = qtest_qmp_receive(qts);
        out = g_strdup(qdict_get_str(rsp, "return"));
        qobject_unref(rsp);
        g_test_message("%s: %s", xp, g_strstrip(out));
        g_assert(g_str_has_suffix(out, ": 0xffffffff"));
        for (int i = 0; i < 2; i++) {
            QDict *d = nest_query(ids[i], &rsp);
            QDict *conn = qdict_get_qdict(d, "connection");
            int64_t replies = nest_counter(d, "replies-sent") - replies0[i];

            g_test_message("%s: %s, %" PRId64 " replies begun, %" PRId64
                           " timeouts: %s", ids[i],
                           qdict_get_str(d, "state"), replies,
                           nest_counter(d, "timeouts"),
                           qdict_get_try_str(conn, "broken-reason"));
            g_assert_cmpstr(qdict_get_str(d, "state"), ==, "dead");
            g_assert_cmpint(nest_counter(d, "timeouts"), >=, 1);
            g_assert(strstr(qdict_get_str(conn, "broken-reason"),
                            stringify(NEST_TIMEOUT_MS) " ms"));
            /* nesting is bounded */
            g_assert_cmpint(replies, <=, NEST_MAX_REPLIES);
            qobject_unref(rsp);
            qpci_unplug_acpi_device_test(qts, ids[i], slots[i]);
        }
    }
    for (int i = 0; i < 2; i++) {
        g_free(dev[i]);
        if (n.s[i].c) {
            vfu_conn_free(n.s[i].c);
        }
        rogue_free(n.s[i].r);
        g_byte_array_free(n.s[i].stream, true);
    }
    close(n.wake);
    g_clear_pointer(&nest_ram, g_free);
    if (qts) {
        vm_check_alive();
        g_assert_cmpint(vu_wait_fds(qpid, before), ==, before);
    }
}

/* ---- socket addresses ---------------------------------------------------- */

/* device_add of a vfio-user-pci with @socket (JSON) at the rogue slot */
static QDict *plug_json(const char *socket)
{
    return qtest_qmp(qts, "{'execute': 'device_add', 'arguments': {"
                     "'driver': 'vfio-user-pci', 'id': 'rogue',"
                     "'socket': %p, 'addr': '04.0'}}",
                     qobject_from_json(socket, &error_abort));
}

/* The plugged device reads the server's BAR0, then goes. */
static void check_plugged_and_unplug(QDict *rsp)
{
    if (qdict_haskey(rsp, "error")) {
        g_test_message("device_add: %s",
                       qdict_get_str(qdict_get_qdict(rsp, "error"), "desc"));
    }
    g_assert(qdict_haskey(rsp, "return"));
    qobject_unref(rsp);
    g_assert_cmphex(bar0_read(ROGUE_SLOT), ==, BAR0_MAGIC);
    qpci_unplug_acpi_device_test(qts, "rogue", ROGUE_SLOT);
}

static void check_plug_error(QDict *rsp, const char *why)
{
    vu_assert_qmp_error(rsp, "device_add", why);
}

/* {"type": "unix", "path": ...} as QMP device_add takes it */
static void test_socket_unix(void)
{
    g_autofree char *json = NULL;
    int before;
    Rogue *r;

    vm_start();
    before = vu_count_fds(qpid);
    r = rogue_start(NULL);
    json = g_strdup_printf("{\"type\": \"unix\", \"path\": \"%s\"}",
                           r->path);
    check_plugged_and_unplug(plug_json(json));
    rogue_free(r);
    vm_check_alive();
    g_assert_cmpint(vu_wait_fds(qpid, before), ==, before);
}

/* Hand QEMU @fd under @name with getfd (and close ours). */
static void getfd(int fd, const char *name)
{
    QDict *rsp = qtest_qmp_fds(qts, &fd, 1, "{'execute': 'getfd', "
                               "'arguments': {'fdname': %s}}", name);

    g_assert(qdict_haskey(rsp, "return"));
    qobject_unref(rsp);
    close(fd);
}

/* A connected socket passed with getfd: {"type": "fd", "str": NAME} */
static void test_socket_getfd(void)
{
    int before;
    Rogue *r;

    vm_start();
    before = vu_count_fds(qpid);
    r = rogue_start(NULL);
    getfd(unix_connect(r->path, &error_abort), "vfu-good");
    check_plugged_and_unplug(plug_json("{\"type\": \"fd\", "
                                       "\"str\": \"vfu-good\"}"));
    rogue_free(r);
    vm_check_alive();
    g_assert_cmpint(vu_wait_fds(qpid, before), ==, before);
}

/* fds of the wrong kind are refused, and not kept */
static void test_socket_getfd_wrong(void)
{
    static const char fd_json[] = "{\"type\": \"fd\", \"str\": \"bad\"}";
    int sv[2];
    int before;

    vm_start();
    before = vu_count_fds(qpid);

    getfd(eventfd(0, EFD_CLOEXEC), "bad");
    check_plug_error(plug_json(fd_json), "is not a socket");

    g_assert_cmpint(socketpair(AF_UNIX, SOCK_DGRAM, 0, sv), ==, 0);
    getfd(sv[0], "bad");
    close(sv[1]);
    check_plug_error(plug_json(fd_json), "is not a UNIX stream socket");

    getfd(socket(AF_UNIX, SOCK_STREAM, 0), "bad");
    check_plug_error(plug_json(fd_json), "is not a connected socket");

    /* a name that was never given */
    check_plug_error(plug_json(fd_json), "bad");
    /* not a UNIX socket address at all */
    check_plug_error(plug_json("{\"type\": \"inet\", \"host\": "
                               "\"127.0.0.1\", \"port\": \"1\"}"),
                     "must be a UNIX socket");
    vm_check_alive();
    g_assert_cmpint(vu_wait_fds(qpid, before), ==, before);
}

int main(int argc, char **argv)
{
    int ret;

    g_test_init(&argc, &argv, NULL);
    /* a client closing mid-send must fail the write, not kill the test */
    signal(SIGPIPE, SIG_IGN);
    module_call_init(MODULE_INIT_QOM);
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        g_autofree char *path = g_strdup_printf(
            "/vfio-user/client-rogue/case/%s", cases[i].name);

        qtest_add_data_func(path, &cases[i], test_case);
    }
    qtest_add_func("/vfio-user/client-rogue/nest/two-devices-sockets-full",
                   test_nest);
    qtest_add_func("/vfio-user/client-rogue/migrate-blocked",
                   test_migrate_blocked);
    qtest_add_func("/vfio-user/client-rogue/socket/unix", test_socket_unix);
    qtest_add_func("/vfio-user/client-rogue/socket/getfd", test_socket_getfd);
    qtest_add_func("/vfio-user/client-rogue/socket/getfd-wrong-kind",
                   test_socket_getfd_wrong);
    ret = g_test_run();
    vm_stop();
    printf("# rogue-cases: rogue server vs vfio-user-pci: %d of %zu "
           "passed\n", ncases, ARRAY_SIZE(cases));
    return ret;
}
