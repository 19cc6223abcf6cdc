/*
 * Unit tests of the vfio-user protocol core: codec and connection.
 *
 * Every test runs over a real socketpair, checks the result and that no
 * file descriptor leaked.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/sockets.h"
#include "qemu/module.h"
#include "io/channel-socket.h"
#include "qemu/main-loop.h"
#include "vfio-user/client.h"
#include "vfio-user/server.h"
#include "vfio-user/socket.h"
#include "vfio-user/send-fds.h"
#include <sys/eventfd.h>

typedef struct Pair {
    VfuConn *a;         /* "client" end */
    VfuConn *b;         /* "server" end */
    int raw;            /* dup of a's socket, for hand-made bytes */
    int fds_before;
} Pair;

static int count_fds(void)
{
    g_autoptr(GDir) d = g_dir_open("/proc/self/fd", 0, NULL);
    int n = 0;

    g_assert(d);
    while (g_dir_read_name(d)) {
        n++;
    }
    return n;
}

static void pair_init2(Pair *p, const VfuLimits *la, const VfuLimits *lb)
{
    int sv[2];
    QIOChannelSocket *sa, *sb;

    p->fds_before = count_fds();
    g_assert_cmpint(qemu_socketpair(AF_UNIX, SOCK_STREAM, 0, sv), ==, 0);
    sa = qio_channel_socket_new_fd(sv[0], &error_abort);
    sb = qio_channel_socket_new_fd(sv[1], &error_abort);
    p->a = vfu_conn_new(QIO_CHANNEL(sa), "test-a", la);
    p->b = vfu_conn_new(QIO_CHANNEL(sb), "test-b", lb);
    object_unref(OBJECT(sa));
    object_unref(OBJECT(sb));
    vfu_conn_set_timeout(p->a, 2000);
    vfu_conn_set_timeout(p->b, 2000);
    p->raw = dup(sv[0]);
}

static void pair_init(Pair *p, const VfuLimits *limits)
{
    VfuLimits def;

    if (!limits) {
        vfu_limits_default(&def);
        def.max_msg_fds = 8;
        limits = &def;
    }
    pair_init2(p, limits, limits);
}

static void pair_finish(Pair *p)
{
    vfu_conn_free(p->a);
    vfu_conn_free(p->b);
    close(p->raw);
    g_assert_cmpint(count_fds(), ==, p->fds_before);
}

/* Write a hand-made message on the raw end, with optional fds. */
static void raw_send(Pair *p, uint16_t id, uint16_t cmd, uint32_t size,
                     uint32_t flags, const void *payload, size_t len,
                     const int *fds, size_t nfds)
{
    VfuHeader hdr = {
        .msg_id = cpu_to_le16(id), .command = cpu_to_le16(cmd),
        .size = cpu_to_le32(size), .flags = cpu_to_le32(flags),
    };
    struct iovec iov[2] = {
        { &hdr, sizeof(hdr) }, { (void *)payload, len },
    };

    g_assert_cmpint(vu_send_fds(p->raw, iov, len ? 2 : 1, fds, nfds), ==,
                    sizeof(hdr) + len);
}

/* Receive on b and decode; returns the decode result. */
static int recv_decode(Pair *p, VfuMsg **msgp)
{
    Error *err = NULL;
    int ret;

    g_assert_cmpint(vfu_conn_recv(p->b, msgp, true, &error_abort), ==, 1);
    ret = vfu_msg_decode(*msgp, vfu_conn_local_limits(p->b), &err);
    g_assert(!ret == !err);
    error_free(err);
    return ret;
}

/* ---- round trips ---------------------------------------------------- */

typedef struct RoundTrip {
    const char *name;
    uint16_t cmd;
    bool reply;
    size_t len;
    uint8_t payload[96];
    unsigned nfds;
} RoundTrip;

static void fill(RoundTrip *rt, const void *src, size_t len)
{
    g_assert(len <= sizeof(rt->payload));
    memcpy(rt->payload, src, len);
    rt->len = len;
}

static GPtrArray *round_trips(void)
{
    GPtrArray *a = g_ptr_array_new_with_free_func(g_free);
    RoundTrip *rt;

#define ADD(n, c, r, f, ...) do {                                   \
        rt = g_new0(RoundTrip, 1);                                   \
        rt->name = n; rt->cmd = c; rt->reply = r; rt->nfds = f;      \
        __VA_ARGS__                                                  \
        g_ptr_array_add(a, rt);                                      \
    } while (0)

    ADD("dma-map", VFU_CMD_DMA_MAP, false, 1, {
        VfuDmaMap m = { 32, VFU_DMA_MAP_F_READ | VFU_DMA_MAP_F_WRITE,
                        0x1000, 0x100000, 0x200000 };
        fill(rt, &m, sizeof(m));
    });
    ADD("dma-map-reply", VFU_CMD_DMA_MAP, true, 0, {});
    ADD("dma-unmap", VFU_CMD_DMA_UNMAP, false, 0, {
        VfuDmaUnmap m = { 24, 0, 0x100000, 0x200000 };
        fill(rt, &m, sizeof(m));
    });
    ADD("dma-unmap-reply", VFU_CMD_DMA_UNMAP, true, 0, {
        VfuDmaUnmap m = { 24, 0, 0x100000, 0x200000 };
        fill(rt, &m, sizeof(m));
    });
    ADD("get-info", VFU_CMD_DEVICE_GET_INFO, false, 0, {
        VfuDeviceInfo m = { 16, 0, 0, 0 };
        fill(rt, &m, sizeof(m));
    });
    ADD("get-info-reply", VFU_CMD_DEVICE_GET_INFO, true, 0, {
        VfuDeviceInfo m = { 16, VFU_DEV_F_PCI | VFU_DEV_F_RESET, 9, 5 };
        fill(rt, &m, sizeof(m));
    });
    ADD("region-info", VFU_CMD_DEVICE_GET_REGION_INFO, false, 0, {
        VfuRegionInfo m = { .argsz = 32, .index = 7 };
        fill(rt, &m, sizeof(m));
    });
    ADD("region-info-reply-sparse", VFU_CMD_DEVICE_GET_REGION_INFO, true, 1, {
        struct QEMU_PACKED {
            VfuRegionInfo i;
            VfuCapSparseMmap s;
            VfuSparseMmapArea area[2];
        } m = {
            { 32 + 16 + 32, VFU_REGION_F_READ | VFU_REGION_F_MMAP |
              VFU_REGION_F_CAPS, 0, 32, 0x4000, 0 },
            { { VFU_REGION_CAP_SPARSE_MMAP, 1, 0 }, 2, 0 },
            { { 0, 0x1000 }, { 0x3000, 0x1000 } },
        };
        fill(rt, &m, sizeof(m));
    });
    ADD("region-io-fds", VFU_CMD_DEVICE_GET_REGION_IO_FDS, false, 0, {
        VfuRegionIoFds m = { 16, 0, 0, 0 };
        fill(rt, &m, sizeof(m));
    });
    ADD("region-io-fds-reply", VFU_CMD_DEVICE_GET_REGION_IO_FDS, true, 2, {
        struct QEMU_PACKED {
            VfuRegionIoFds h;
            VfuSubRegionIoFd s[2];
        } m = {
            { 16 + 80, 0, 0, 2 },
            { { 0x1000, 4, 0, VFU_IO_FD_TYPE_IOEVENTFD, 0, 0, 0 },
              { 0x1004, 4, 1, VFU_IO_FD_TYPE_IOEVENTFD,
                VFU_IOEVENTFD_F_DATAMATCH, 0, 7 } },
        };
        fill(rt, &m, sizeof(m));
    });
    ADD("irq-info", VFU_CMD_DEVICE_GET_IRQ_INFO, false, 0, {
        VfuIrqInfo m = { 16, 0, VFU_PCI_MSIX_IRQ, 0 };
        fill(rt, &m, sizeof(m));
    });
    ADD("irq-info-reply", VFU_CMD_DEVICE_GET_IRQ_INFO, true, 0, {
        VfuIrqInfo m = { 16, VFU_IRQ_INFO_F_EVENTFD | VFU_IRQ_INFO_F_NORESIZE,
                         VFU_PCI_MSIX_IRQ, 64 };
        fill(rt, &m, sizeof(m));
    });
    ADD("set-irqs-eventfd", VFU_CMD_DEVICE_SET_IRQS, false, 3, {
        VfuIrqSet m = { 20, VFU_IRQ_SET_DATA_EVENTFD |
                        VFU_IRQ_SET_ACTION_TRIGGER, VFU_PCI_MSIX_IRQ, 0, 3 };
        fill(rt, &m, sizeof(m));
    });
    ADD("set-irqs-bool", VFU_CMD_DEVICE_SET_IRQS, false, 0, {
        struct QEMU_PACKED { VfuIrqSet s; uint8_t b[4]; } m = {
            { 24, VFU_IRQ_SET_DATA_BOOL | VFU_IRQ_SET_ACTION_MASK,
              VFU_PCI_MSI_IRQ, 0, 4 }, { 1, 0, 1, 0 } };
        fill(rt, &m, sizeof(m));
    });
    ADD("set-irqs-reply", VFU_CMD_DEVICE_SET_IRQS, true, 0, {});
    ADD("region-read", VFU_CMD_REGION_READ, false, 0, {
        VfuRegionAccess m = { 0x10, VFU_PCI_CONFIG_REGION, 4 };
        fill(rt, &m, sizeof(m));
    });
    ADD("region-read-reply", VFU_CMD_REGION_READ, true, 0, {
        struct QEMU_PACKED { VfuRegionAccess a; uint32_t v; } m = {
            { 0x10, VFU_PCI_CONFIG_REGION, 4 }, cpu_to_le32(0xfebc0000) };
        fill(rt, &m, sizeof(m));
    });
    ADD("region-write", VFU_CMD_REGION_WRITE, false, 0, {
        struct QEMU_PACKED { VfuRegionAccess a; uint64_t v; } m = {
            { 0x8, 0, 8 }, 0x1122334455667788ULL };
        fill(rt, &m, sizeof(m));
    });
    ADD("region-write-reply", VFU_CMD_REGION_WRITE, true, 0, {
        VfuRegionAccess m = { 0x8, 0, 8 };
        fill(rt, &m, sizeof(m));
    });
    ADD("dma-read", VFU_CMD_DMA_READ, false, 0, {
        VfuDmaAccess m = { 0x100000, 64 };
        fill(rt, &m, sizeof(m));
    });
    ADD("dma-read-reply", VFU_CMD_DMA_READ, true, 0, {
        struct QEMU_PACKED { VfuDmaAccess a; uint8_t d[8]; } m = {
            { 0x100000, 8 }, "abcdefg" };
        fill(rt, &m, sizeof(m));
    });
    ADD("dma-write", VFU_CMD_DMA_WRITE, false, 0, {
        struct QEMU_PACKED { VfuDmaAccess a; uint8_t d[8]; } m = {
            { 0x100000, 8 }, "1234567" };
        fill(rt, &m, sizeof(m));
    });
    ADD("dma-write-reply", VFU_CMD_DMA_WRITE, true, 0, {
        VfuDmaAccess m = { 0x100000, 8 };
        fill(rt, &m, sizeof(m));
    });
    ADD("device-reset", VFU_CMD_DEVICE_RESET, false, 0, {});
    ADD("device-reset-reply", VFU_CMD_DEVICE_RESET, true, 0, {});
    ADD("region-write-multi", VFU_CMD_REGION_WRITE_MULTI, false, 0, {
        struct QEMU_PACKED { VfuWriteMulti m; VfuWriteMultiEntry e[2]; } m = {
            { 2 }, { { 0x0, 0, 4, { 1, 2, 3, 4 } },
                     { 0x8, 2, 2, { 5, 6 } } } };
        fill(rt, &m, sizeof(m));
    });
    ADD("region-write-multi-reply", VFU_CMD_REGION_WRITE_MULTI, true, 0, {
        VfuWriteMulti m = { 2 };
        fill(rt, &m, sizeof(m));
    });
    ADD("device-feature", VFU_CMD_DEVICE_FEATURE, false, 0, {
        VfuDeviceFeature m = { 8, VFU_DEVICE_FEATURE_PROBE | 1 };
        fill(rt, &m, sizeof(m));
    });
    ADD("device-feature-reply", VFU_CMD_DEVICE_FEATURE, true, 0, {
        VfuDeviceFeature m = { 8, VFU_DEVICE_FEATURE_PROBE | 1 };
        fill(rt, &m, sizeof(m));
    });
    ADD("mig-data-read", VFU_CMD_MIG_DATA_READ, false, 0, {
        VfuMigData m = { 8, 4096 };
        fill(rt, &m, sizeof(m));
    });
    ADD("mig-data-read-reply", VFU_CMD_MIG_DATA_READ, true, 0, {
        struct QEMU_PACKED { VfuMigData m; uint8_t d[4]; } m = {
            { 12, 4 }, { 9, 8, 7, 6 } };
        fill(rt, &m, sizeof(m));
    });
    ADD("mig-data-write", VFU_CMD_MIG_DATA_WRITE, false, 0, {
        struct QEMU_PACKED { VfuMigData m; uint8_t d[4]; } m = {
            { 12, 4 }, { 9, 8, 7, 6 } };
        fill(rt, &m, sizeof(m));
    });
    ADD("mig-data-write-reply", VFU_CMD_MIG_DATA_WRITE, true, 0, {
        VfuMigData m = { 8, 4 };
        fill(rt, &m, sizeof(m));
    });
#undef ADD
    return a;
}

static void test_round_trip(gconstpointer opaque)
{
    const RoundTrip *rt = opaque;
    g_autoptr(VfuMsg) msg = NULL;
    uint8_t copy[sizeof(rt->payload)];
    int fds[4];
    Pair p;

    pair_init(&p, NULL);
    for (unsigned i = 0; i < rt->nfds; i++) {
        fds[i] = eventfd(0, EFD_CLOEXEC);
        g_assert_cmpint(fds[i], >=, 0);
    }
    memcpy(copy, rt->payload, rt->len);
    g_assert_cmpint(vfu_conn_send(p.a, rt->cmd, 0x1234,
                                  rt->reply ? VFU_F_TYPE_REPLY :
                                  VFU_F_TYPE_COMMAND, 0,
                                  rt->len ? copy : NULL, rt->len,
                                  fds, rt->nfds, &error_abort), ==, 0);
    /* the sender's buffer is given back in host order */
    g_assert(!rt->len || memcmp(copy, rt->payload, rt->len) == 0);
    for (unsigned i = 0; i < rt->nfds; i++) {
        close(fds[i]);
    }

    g_assert_cmpint(recv_decode(&p, &msg), ==, 0);
    g_assert_cmpuint(msg->hdr.msg_id, ==, 0x1234);
    g_assert_cmpuint(msg->hdr.command, ==, rt->cmd);
    g_assert_cmpuint(msg->hdr.size, ==, sizeof(VfuHeader) + rt->len);
    g_assert(vfu_msg_is_reply(msg) == rt->reply);
    g_assert_cmpuint(msg->len, ==, rt->len);
    /* memcmp() must not see the NULL payload of an empty message */
    g_assert(!rt->len || memcmp(msg->payload, rt->payload, rt->len) == 0);
    g_assert_cmpuint(msg->nfds, ==, rt->nfds);
    /* the fds are live: an eventfd can be written */
    for (unsigned i = 0; i < msg->nfds; i++) {
        uint64_t one = 1;
        g_assert_cmpint(write(msg->fds[i], &one, 8), ==, 8);
    }
    vfu_msg_free(g_steal_pointer(&msg));
    pair_finish(&p);
}

static void test_version_round_trip(void)
{
    VfuLimits in = {
        .max_msg_fds = 7, .max_data_xfer_size = 65536,
        .max_dma_maps = 123, .pgsizes = 0x201000, .write_multiple = true,
    }, out;
    g_autofree void *pl = NULL;
    g_autoptr(VfuMsg) msg = NULL;
    uint16_t major, minor;
    size_t len;
    Pair p;

    pair_init(&p, NULL);
    pl = vfu_version_encode(0, 2, &in, &len);
    g_assert_cmpint(vfu_conn_send(p.a, VFU_CMD_VERSION, 1, 0, 0, pl, len,
                                  NULL, 0, &error_abort), ==, 0);
    g_assert_cmpint(recv_decode(&p, &msg), ==, 0);
    g_assert(vfu_version_parse(msg->payload, msg->len, msg->nfds, &major,
                               &minor, &out, &error_abort));
    g_assert_cmpuint(major, ==, 0);
    g_assert_cmpuint(minor, ==, 2);
    g_assert_cmpuint(out.max_msg_fds, ==, 7);
    g_assert_cmpuint(out.max_data_xfer_size, ==, 65536);
    g_assert_cmpuint(out.max_dma_maps, ==, 123);
    g_assert_cmpuint(out.pgsizes, ==, 0x201000);
    g_assert(out.write_multiple);
    vfu_msg_free(g_steal_pointer(&msg));
    pair_finish(&p);
}

/* ---- VERSION capability parsing ------------------------------------- */

static bool parse_json_fds(const char *json, uint16_t major, size_t nfds,
                           VfuLimits *caps, Error **errp)
{
    size_t jl = strlen(json) + 1;
    g_autofree VfuVersion *v = g_malloc0(sizeof(*v) + jl);
    uint16_t ma, mi;

    v->major = major;
    v->minor = 0;
    memcpy(v->data, json, jl);
    return vfu_version_parse(v, sizeof(*v) + jl, nfds, &ma, &mi, caps, errp);
}

static bool parse_json(const char *json, uint16_t major, VfuLimits *caps,
                       Error **errp)
{
    return parse_json_fds(json, major, 0, caps, errp);
}

static void test_version_defaults_and_unknown(void)
{
    VfuLimits caps;

    /* no JSON at all */
    VfuVersion bare = { 0, 1 };
    uint16_t ma, mi;
    g_assert(vfu_version_parse(&bare, sizeof(bare), 0, &ma, &mi, &caps,
                               &error_abort));
    g_assert_cmpuint(caps.max_msg_fds, ==, 1);
    g_assert_cmpuint(caps.max_data_xfer_size, ==, 1024 * 1024);
    g_assert_cmpuint(caps.max_dma_maps, ==, 65535);
    g_assert_cmpuint(caps.pgsizes, ==, 4096);

    /* unknown and newer capabilities are ignored */
    g_assert(parse_json("{\"capabilities\":{\"max_msg_fds\":4,"
                        "\"migration\":{\"pgsize\":4096,"
                        "\"max_bitmap_size\":1048576},"
                        "\"twin_socket\":{\"supported\":false},"
                        "\"frobnicate\":[1,2,3]},\"vendor\":\"x\"}",
                        0, &caps, &error_abort));
    g_assert_cmpuint(caps.max_msg_fds, ==, 4);
    g_assert_cmpuint(caps.max_data_xfer_size, ==, 1024 * 1024);
}

static void test_version_bad(void)
{
    static const char *const bad[] = {
        "{\"capabilities\":",                       /* malformed */
        "[1,2]",                                    /* not an object */
        "{\"capabilities\":[]}",                    /* caps not an object */
        "{\"capabilities\":{\"max_msg_fds\":-1}}",
        "{\"capabilities\":{\"max_msg_fds\":\"8\"}}",
        "{\"capabilities\":{\"max_data_xfer_size\":0}}",
        "{\"capabilities\":{\"max_data_xfer_size\":1.5}}",
        "{\"capabilities\":{\"pgsizes\":0}}",
        "{\"capabilities\":{\"max_dma_maps\":true}}",
        "{\"capabilities\":{\"write_multiple\":1}}",
        "not json at all",
    };
    VfuLimits caps;

    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        Error *err = NULL;

        g_assert(!parse_json(bad[i], 0, &caps, &err));
        g_assert(err);
        error_free(err);
    }
}

static void test_version_wrong_major(void)
{
    VfuLimits caps;
    Error *err = NULL;

    g_assert(!parse_json("{}", 1, &caps, &err));
    g_assert(strstr(error_get_pretty(err), "major"));
    error_free(err);
}

static void test_version_no_nul(void)
{
    uint8_t buf[4 + 8] = { 0, 0, 0, 0, '{', '}', ' ', ' ', ' ', ' ', ' ',
                           ' ' };
    g_autoptr(VfuMsg) msg = NULL;
    uint16_t ma, mi;
    VfuLimits caps;
    Error *err = NULL;
    Pair p;

    g_assert(!vfu_version_parse(buf, sizeof(buf), 0, &ma, &mi, &caps, &err));
    error_free(err);

    /* the codec rejects it before the parser sees it */
    pair_init(&p, NULL);
    raw_send(&p, 1, VFU_CMD_VERSION, 16 + sizeof(buf), 0, buf, sizeof(buf),
             NULL, 0);
    g_assert_cmpint(recv_decode(&p, &msg), ==, -EINVAL);
    vfu_msg_free(g_steal_pointer(&msg));
    pair_finish(&p);
}

/* ---- framing errors ------------------------------------------------- */

static void expect_recv_error(Pair *p, const char *what)
{
    VfuMsg *msg = NULL;
    Error *err = NULL;

    g_assert_cmpint(vfu_conn_recv(p->b, &msg, true, &err), ==, -1);
    g_assert(!msg);
    g_assert(err);
    g_assert(strstr(error_get_pretty(err), what));
    error_free(err);
    g_assert(vfu_conn_is_broken(p->b));
}

static void test_truncated_header(void)
{
    Pair p;
    uint8_t half[8] = { 1, 0, 4, 0, 32, 0, 0, 0 };

    pair_init(&p, NULL);
    g_assert_cmpint(write(p.raw, half, sizeof(half)), ==, sizeof(half));
    shutdown(p.raw, SHUT_WR);
    expect_recv_error(&p, "closed");
    pair_finish(&p);
}

static void test_size_below_header(void)
{
    Pair p;

    pair_init(&p, NULL);
    raw_send(&p, 1, VFU_CMD_DEVICE_GET_INFO, 8, 0, NULL, 0, NULL, 0);
    expect_recv_error(&p, "smaller than the header");
    pair_finish(&p);
}

static void test_size_above_max(void)
{
    Pair p;
    int efd;

    pair_init(&p, NULL);
    efd = eventfd(0, EFD_CLOEXEC);
    /* with an fd attached: it must be closed, not leaked */
    raw_send(&p, 1, VFU_CMD_REGION_WRITE, 64 * 1024 * 1024, 0, NULL, 0,
             &efd, 1);
    close(efd);
    expect_recv_error(&p, "exceeds the limit");
    pair_finish(&p);
}

static void test_bad_flags(void)
{
    Pair p;

    pair_init(&p, NULL);
    raw_send(&p, 1, VFU_CMD_DEVICE_RESET, 16, 0x7, NULL, 0, NULL, 0);
    expect_recv_error(&p, "unknown message type");
    pair_finish(&p);

    pair_init(&p, NULL);
    raw_send(&p, 1, VFU_CMD_DEVICE_RESET, 16, 1u << 9, NULL, 0, NULL, 0);
    expect_recv_error(&p, "unknown header flags");
    pair_finish(&p);
}

/* A message dribbled a byte at a time still arrives whole. */
static void test_split_writes(void)
{
    VfuRegionAccess ra = { 0x40, 2, 4 };
    VfuHeader hdr = { 9, VFU_CMD_REGION_READ, 32, 0, 0 };
    uint8_t wire[32];
    g_autoptr(VfuMsg) msg = NULL;
    Pair p;
    int got = 0;

    memcpy(wire, &hdr, 16);
    memcpy(wire + 16, &ra, 16);
    pair_init(&p, NULL);
    for (size_t i = 0; i < sizeof(wire); i++) {
        g_assert_cmpint(write(p.raw, wire + i, 1), ==, 1);
        got = vfu_conn_recv(p.b, &msg, false, &error_abort);
        g_assert_cmpint(got, ==, i == sizeof(wire) - 1);
    }
    g_assert_cmpint(vfu_msg_decode(msg, vfu_conn_local_limits(p.b),
                                   &error_abort), ==, 0);
    g_assert_cmpuint(((VfuRegionAccess *)msg->payload)->offset, ==, 0x40);
    vfu_msg_free(g_steal_pointer(&msg));
    pair_finish(&p);
}

/* ---- payload errors: the message is rejected, the stream goes on ---- */

typedef struct BadPayload {
    const char *name;
    uint16_t cmd;
    uint32_t flags;
    size_t len;
    uint8_t payload[64];
    int expect;
} BadPayload;

static const BadPayload bad_payloads[] = {
    { "dma-map-short", VFU_CMD_DMA_MAP, 0, 24, { 0 }, -EINVAL },
    { "dma-map-long", VFU_CMD_DMA_MAP, 0, 40, { 0 }, -EINVAL },
    { "dma-unmap-odd", VFU_CMD_DMA_UNMAP, 0, 30, { 0 }, -EINVAL },
    { "get-info-short", VFU_CMD_DEVICE_GET_INFO, 0, 8, { 0 }, -EINVAL },
    { "region-info-short", VFU_CMD_DEVICE_GET_REGION_INFO, 0, 16, { 0 },
      -EINVAL },
    { "irq-info-long", VFU_CMD_DEVICE_GET_IRQ_INFO, 0, 20, { 0 }, -EINVAL },
    { "set-irqs-short", VFU_CMD_DEVICE_SET_IRQS, 0, 12, { 0 }, -EINVAL },
    /* argsz 20 but 24 bytes sent */
    { "set-irqs-argsz", VFU_CMD_DEVICE_SET_IRQS, 0, 24,
      { 20, 0, 0, 0, 1, 0, 0, 0 }, -EINVAL },
    /* DATA_BOOL for 8 irqs but no bools */
    { "set-irqs-bool", VFU_CMD_DEVICE_SET_IRQS, 0, 20,
      { 20, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8 }, -EINVAL },
    { "region-read-long", VFU_CMD_REGION_READ, 0, 20, { 0 }, -EINVAL },
    /* count 0x200000 > max_data_xfer_size */
    { "region-read-huge", VFU_CMD_REGION_READ, 0, 16,
      { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x20, 0 }, -E2BIG },
    /* count 8, 4 data bytes */
    { "region-write-lies", VFU_CMD_REGION_WRITE, 0, 20,
      { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8 }, -EINVAL },
    { "dma-read-short", VFU_CMD_DMA_READ, 0, 8, { 0 }, -EINVAL },
    /* count 2^63 */
    { "dma-write-huge", VFU_CMD_DMA_WRITE, 0, 16,
      { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80 }, -E2BIG },
    { "reset-payload", VFU_CMD_DEVICE_RESET, 0, 4, { 0 }, -EINVAL },
    { "write-multi-zero", VFU_CMD_REGION_WRITE_MULTI, 0, 8, { 0 }, -EINVAL },
    /* one entry announced, none sent */
    { "write-multi-short", VFU_CMD_REGION_WRITE_MULTI, 0, 8, { 1 }, -EINVAL },
    /* entry with count 9 */
    { "write-multi-count", VFU_CMD_REGION_WRITE_MULTI, 0, 32,
      { 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 9, 0, 0, 0 }, -EINVAL },
    { "mig-write-lies", VFU_CMD_MIG_DATA_WRITE, 0, 8, { 8, 0, 0, 0, 4 },
      -EINVAL },
    { "unknown-command", 99, 0, 0, { 0 }, -ENOSYS },
    { "command-zero", 0, 0, 0, { 0 }, -ENOSYS },
    { "dirty-pages", VFU_CMD_DIRTY_PAGES, 0, 16, { 0 }, -ENOSYS },
    /* replies */
    { "reply-region-read-lies", VFU_CMD_REGION_READ, VFU_F_TYPE_REPLY, 16,
      { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4 }, -EINVAL },
    { "reply-get-info-short", VFU_CMD_DEVICE_GET_INFO, VFU_F_TYPE_REPLY, 4,
      { 0 }, -EINVAL },
    { "reply-dma-map-payload", VFU_CMD_DMA_MAP, VFU_F_TYPE_REPLY, 8, { 0 },
      -EINVAL },
    { "reply-unknown-command", 77, VFU_F_TYPE_REPLY, 0, { 0 }, -EINVAL },
};

static void test_bad_payload(gconstpointer opaque)
{
    const BadPayload *bp = opaque;
    g_autoptr(VfuMsg) msg = NULL;
    Pair p;

    pair_init(&p, NULL);
    raw_send(&p, 5, bp->cmd, 16 + bp->len, bp->flags, bp->payload, bp->len,
             NULL, 0);
    /* a valid message after it still comes through */
    raw_send(&p, 6, VFU_CMD_DEVICE_RESET, 16, 0, NULL, 0, NULL, 0);
    g_assert_cmpint(recv_decode(&p, &msg), ==, bp->expect);
    vfu_msg_free(g_steal_pointer(&msg));
    g_assert_cmpint(recv_decode(&p, &msg), ==, 0);
    g_assert_cmpuint(msg->hdr.msg_id, ==, 6);
    vfu_msg_free(g_steal_pointer(&msg));
    pair_finish(&p);
}

/* ---- file descriptors ----------------------------------------------- */

static void test_fds_on_fdless_command(void)
{
    VfuDeviceInfo info = { 16 };
    g_autoptr(VfuMsg) msg = NULL;
    int efd;
    Pair p;

    pair_init(&p, NULL);
    efd = eventfd(0, EFD_CLOEXEC);
    raw_send(&p, 1, VFU_CMD_DEVICE_GET_INFO, 32, 0, &info, 16, &efd, 1);
    close(efd);
    g_assert_cmpint(recv_decode(&p, &msg), ==, -EINVAL);
    g_assert_cmpuint(msg->nfds, ==, 1);
    vfu_msg_free(g_steal_pointer(&msg));     /* closes the fd */
    pair_finish(&p);
}

static void test_too_many_fds(void)
{
    VfuDmaMap map = { 32, VFU_DMA_MAP_F_READ, 0, 0x10000, 0x1000 };
    VfuIrqSet set = { 20, VFU_IRQ_SET_DATA_EVENTFD |
                      VFU_IRQ_SET_ACTION_TRIGGER, 2, 0, 2 };
    g_autoptr(VfuMsg) msg = NULL;
    int efd[3];
    Pair p;

    pair_init(&p, NULL);
    for (int i = 0; i < 3; i++) {
        efd[i] = eventfd(0, EFD_CLOEXEC);
    }
    /* DMA_MAP takes one fd */
    raw_send(&p, 1, VFU_CMD_DMA_MAP, 48, 0, &map, 32, efd, 3);
    g_assert_cmpint(recv_decode(&p, &msg), ==, -EINVAL);
    vfu_msg_free(g_steal_pointer(&msg));
    /* SET_IRQS with count 2 and 3 eventfds */
    raw_send(&p, 2, VFU_CMD_DEVICE_SET_IRQS, 36, 0, &set, 20, efd, 3);
    g_assert_cmpint(recv_decode(&p, &msg), ==, -EINVAL);
    vfu_msg_free(g_steal_pointer(&msg));
    for (int i = 0; i < 3; i++) {
        close(efd[i]);
    }
    pair_finish(&p);
}

/* ---- calls: reply matching, errors, timeouts, nested requests ------- */

static void test_call_stray_reply(void)
{
    VfuDeviceInfo info = { 16, VFU_DEV_F_PCI, 9, 5 };
    g_autoptr(VfuMsg) reply = NULL;
    VfuDeviceInfo req = { 16 };
    Pair p;

    pair_init(&p, NULL);
    /* queue the answers first: a reply to nothing, then the real one */
    vfu_conn_send(p.b, VFU_CMD_DEVICE_GET_INFO, 4242, VFU_F_TYPE_REPLY, 0,
                  &info, 16, NULL, 0, &error_abort);
    vfu_conn_send(p.b, VFU_CMD_DEVICE_GET_INFO, 1, VFU_F_TYPE_REPLY, 0,
                  &info, 16, NULL, 0, &error_abort);
    g_assert_cmpint(vfu_client_call(p.a, VFU_CMD_DEVICE_GET_INFO, &req,
                                  sizeof(req), NULL, 0, &reply,
                                  &error_abort), ==, 0);
    g_assert_cmpuint(reply->hdr.msg_id, ==, 1);
    g_assert_cmpuint(((VfuDeviceInfo *)reply->payload)->num_regions, ==, 9);
    vfu_msg_free(g_steal_pointer(&reply));
    pair_finish(&p);
}

static void test_call_error_reply(void)
{
    Error *err = NULL;
    Pair p;

    pair_init(&p, NULL);
    vfu_conn_send(p.b, VFU_CMD_DEVICE_RESET, 1, VFU_F_TYPE_REPLY | VFU_F_ERROR,
                  EBUSY, NULL, 0, NULL, 0, &error_abort);
    g_assert_cmpint(vfu_client_call(p.a, VFU_CMD_DEVICE_RESET, NULL, 0, NULL, 0,
                                  NULL, &err), ==, -EBUSY);
    g_assert(strstr(error_get_pretty(err), g_strerror(EBUSY)));
    error_free(err);
    g_assert(!vfu_conn_is_broken(p.a));
    pair_finish(&p);
}

static void test_call_timeout(void)
{
    Error *err = NULL;
    Pair p;

    pair_init(&p, NULL);
    vfu_conn_set_timeout(p.a, 100);
    g_assert_cmpint(vfu_client_call(p.a, VFU_CMD_DEVICE_RESET, NULL, 0, NULL, 0,
                                  NULL, &err), <, 0);
    g_assert(strstr(error_get_pretty(err), "no answer"));
    error_free(err);
    g_assert(vfu_conn_is_broken(p.a));
    pair_finish(&p);
}

static int serve_dma_read(VfuConn *c, VfuMsg *msg, void *opaque)
{
    VfuDmaAccess *a = (VfuDmaAccess *)msg->payload;
    struct QEMU_PACKED { VfuDmaAccess a; uint8_t d[4]; } r;
    int *served = opaque;

    if (msg->hdr.command != VFU_CMD_DMA_READ || a->count != 4) {
        return -EINVAL;
    }
    r.a = *a;
    memcpy(r.d, "dma!", 4);
    (*served)++;
    return vfu_conn_reply(c, msg, &r, sizeof(r), NULL, 0, &error_abort);
}

/* The peer's DMA_READ arriving before our reply is served inline. */
static void test_call_nested_request(void)
{
    VfuDmaAccess dr = { 0x1000, 4 };
    g_autoptr(VfuMsg) m = NULL;
    int served = 0;
    Pair p;

    pair_init(&p, NULL);
    vfu_conn_set_request_func(p.a, serve_dma_read, &served);
    vfu_conn_send(p.b, VFU_CMD_DMA_READ, 77, 0, 0, &dr, sizeof(dr), NULL, 0,
                  &error_abort);
    vfu_conn_send(p.b, VFU_CMD_DEVICE_RESET, 1, VFU_F_TYPE_REPLY, 0, NULL, 0,
                  NULL, 0, &error_abort);
    g_assert_cmpint(vfu_client_call(p.a, VFU_CMD_DEVICE_RESET, NULL, 0, NULL, 0,
                                  NULL, &error_abort), ==, 0);
    g_assert_cmpint(served, ==, 1);

    /* b sees our RESET request, then the DMA_READ reply */
    g_assert_cmpint(recv_decode(&p, &m), ==, 0);
    g_assert_cmpuint(m->hdr.command, ==, VFU_CMD_DEVICE_RESET);
    vfu_msg_free(g_steal_pointer(&m));
    g_assert_cmpint(recv_decode(&p, &m), ==, 0);
    g_assert(vfu_msg_is_reply(m));
    g_assert_cmpuint(m->hdr.msg_id, ==, 77);
    g_assert(memcmp(m->payload + 16, "dma!", 4) == 0);
    vfu_msg_free(g_steal_pointer(&m));
    pair_finish(&p);
}

/*
 * The remote process of test_wait_group(): device Q's DMA_READ is
 * pending, and device P's reply comes only once Q's DMA was answered.
 */
static gpointer two_devices_remote(gpointer opaque)
{
    Pair *pq = opaque;
    g_autoptr(VfuMsg) m = NULL;

    g_assert_cmpint(vfu_conn_recv(pq[0].b, &m, true, &error_abort), ==, 1);
    g_assert_cmpuint(m->hdr.command, ==, VFU_CMD_DEVICE_RESET);
    vfu_msg_free(g_steal_pointer(&m));
    g_assert_cmpint(vfu_conn_recv(pq[1].b, &m, true, &error_abort), ==, 1);
    g_assert(vfu_msg_is_reply(m));
    g_assert_cmpuint(m->hdr.msg_id, ==, 88);
    /* fails where P's call gave up already */
    vfu_conn_send(pq[0].b, VFU_CMD_DEVICE_RESET, 1, VFU_F_TYPE_REPLY, 0,
                  NULL, 0, NULL, 0, NULL);
    return NULL;
}

/*
 * Two devices of one remote process: while we wait for P's reply, Q's
 * DMA request is served, or the two sides would wait for each other.
 * Outside the wait group it is not.
 */
static void test_wait_group(gconstpointer opaque)
{
    bool group = GPOINTER_TO_INT(opaque);
    VfuDmaAccess dr = { 0x1000, 4 };
    Error *err = NULL;
    int served = 0;
    GThread *t;
    Pair pq[2];
    int ret;

    pair_init(&pq[0], NULL);
    pair_init(&pq[1], NULL);
    vfu_conn_set_timeout(pq[0].a, group ? 5000 : 300);
    for (int i = 0; i < 2; i++) {
        vfu_conn_set_request_func(pq[i].a, serve_dma_read, &served);
        if (group) {
            vfu_client_attach(pq[i].a, NULL, NULL);
        }
    }
    vfu_conn_send(pq[1].b, VFU_CMD_DMA_READ, 88, 0, 0, &dr, sizeof(dr),
                  NULL, 0, &error_abort);
    t = g_thread_new("remote", two_devices_remote, pq);
    ret = vfu_client_call(pq[0].a, VFU_CMD_DEVICE_RESET, NULL, 0, NULL, 0,
                        NULL, &err);
    if (group) {
        g_assert_null(err);
        g_assert_cmpint(ret, ==, 0);
        g_thread_join(t);
    } else {
        g_assert(strstr(error_get_pretty(err), "no answer"));
        error_free(err);
        g_assert_cmpint(served, ==, 0);
        /* now it is served, as the main loop would, and the remote ends */
        g_assert_cmpint(vfu_client_serve(pq[1].a, &error_abort), ==, 0);
        g_thread_join(t);
    }
    g_assert_cmpint(served, ==, 1);
    pair_finish(&pq[1]);
    pair_finish(&pq[0]);
}

/* ---- asynchronous calls ---------------------------------------------- */

/* b answers a's request @id to @cmd, with @err as an error reply */
static void answer(Pair *p, uint16_t id, uint16_t cmd, int err)
{
    vfu_conn_send(p->b, cmd, id, VFU_F_TYPE_REPLY | (err ? VFU_F_ERROR : 0),
                  err, NULL, 0, NULL, 0, &error_abort);
}

/* b receives @n requests from a; returns the id of the first */
static uint16_t take_requests(Pair *p, unsigned n, uint16_t cmd)
{
    uint16_t first = 0;

    for (unsigned i = 0; i < n; i++) {
        g_autoptr(VfuMsg) m = NULL;

        g_assert_cmpint(vfu_conn_recv(p->b, &m, true, &error_abort), ==, 1);
        g_assert_false(vfu_msg_is_reply(m));
        g_assert_cmpuint(m->hdr.command, ==, cmd);
        if (!i) {
            first = m->hdr.msg_id;
        } else {
            g_assert_cmpuint(m->hdr.msg_id, ==, (uint16_t)(first + i));
        }
    }
    return first;
}

/* Replies in any order, one an error: the flush reports it once. */
static void test_async_out_of_order(void)
{
    Error *err = NULL;
    uint16_t id;
    Pair p;

    pair_init(&p, NULL);
    for (int i = 0; i < 3; i++) {
        g_assert_cmpint(vfu_srv_call_async(p.a, VFU_CMD_DEVICE_RESET, NULL, 0,
                                            &error_abort), ==, 0);
    }
    id = take_requests(&p, 3, VFU_CMD_DEVICE_RESET);
    answer(&p, id + 2, VFU_CMD_DEVICE_RESET, 0);
    answer(&p, id + 1, VFU_CMD_DEVICE_RESET, EFAULT);
    /* a reply to nothing among them is dropped */
    answer(&p, id + 7, VFU_CMD_DEVICE_RESET, 0);
    answer(&p, id, VFU_CMD_DEVICE_RESET, 0);
    g_assert_cmpint(vfu_srv_flush(p.a, &err), ==, -EFAULT);
    g_assert(strstr(error_get_pretty(err), g_strerror(EFAULT)));
    error_free(err);
    g_assert(!vfu_conn_is_broken(p.a));
    g_assert_cmpint(vfu_srv_flush(p.a, &error_abort), ==, 0);
    pair_finish(&p);
}

/*
 * Past VFU_MAX_ASYNC in flight, the oldest is waited for first; replies
 * that come while nobody waits are taken when requests are served, and
 * those that come during a call by the call.
 */
static void test_async_window(void)
{
    uint16_t id;
    Pair p;

    pair_init(&p, NULL);
    /* a's ids start at 1: the first one's answer is already there */
    answer(&p, 1, VFU_CMD_DMA_WRITE, 0);
    for (int i = 0; i <= VFU_MAX_ASYNC; i++) {
        g_assert_cmpint(vfu_srv_call_async(p.a, VFU_CMD_DMA_WRITE, NULL, 0,
                                            &error_abort), ==, 0);
    }
    id = take_requests(&p, VFU_MAX_ASYNC + 1, VFU_CMD_DMA_WRITE);
    g_assert_cmpuint(id, ==, 1);
    for (int i = 1; i < 10; i++) {
        answer(&p, id + i, VFU_CMD_DMA_WRITE, 0);
    }
    g_assert_cmpint(vfu_srv_serve(p.a, false, &error_abort), ==, 0);
    g_assert_cmpuint(vfu_srv_async_pending(p.a), ==, VFU_MAX_ASYNC + 1 - 10);
    for (int i = 10; i <= VFU_MAX_ASYNC; i++) {
        answer(&p, id + i, VFU_CMD_DMA_WRITE, 0);
    }
    answer(&p, id + VFU_MAX_ASYNC + 1, VFU_CMD_DEVICE_RESET, 0);
    g_assert_cmpint(vfu_srv_call(p.a, VFU_CMD_DEVICE_RESET, NULL, 0, NULL,
                                 &error_abort), ==, 0);
    /* nothing left: the flush does not wait */
    vfu_conn_set_timeout(p.a, 1);
    g_assert_cmpint(vfu_srv_flush(p.a, &error_abort), ==, 0);
    pair_finish(&p);
}

/* A peer that never answers: the flush gives up and drops it. */
static void test_async_unanswered(void)
{
    Error *err = NULL;
    Pair p;

    pair_init(&p, NULL);
    vfu_conn_set_timeout(p.a, 100);
    g_assert_cmpint(vfu_srv_call_async(p.a, VFU_CMD_DMA_WRITE, NULL, 0,
                                        &error_abort), ==, 0);
    g_assert_cmpint(vfu_srv_flush(p.a, &err), <, 0);
    g_assert(strstr(error_get_pretty(err), "no answer"));
    error_free(err);
    g_assert(vfu_conn_is_broken(p.a));
    pair_finish(&p);
}

/* A bad request gets an error reply carrying the errno. */
static void test_error_reply_errno(void)
{
    VfuRegionAccess ra = { 0, 0, 0x7fffffff };
    g_autoptr(VfuMsg) m = NULL;
    Pair p;

    pair_init(&p, NULL);
    raw_send(&p, 33, VFU_CMD_REGION_READ, 32, 0, &ra, sizeof(ra), NULL, 0);
    g_assert_cmpint(vfu_conn_recv(p.b, &m, true, &error_abort), ==, 1);
    vfu_conn_handle_request(p.b, g_steal_pointer(&m));
    g_assert_cmpint(vfu_conn_recv(p.a, &m, true, &error_abort), ==, 1);
    g_assert(vfu_msg_is_reply(m));
    g_assert(m->hdr.flags & VFU_F_ERROR);
    g_assert_cmpuint(m->hdr.error, ==, E2BIG);
    g_assert_cmpuint(m->hdr.msg_id, ==, 33);
    vfu_msg_free(g_steal_pointer(&m));
    pair_finish(&p);
}

/* ---- negotiation, both roles in one process ------------------------- */

static gpointer server_thread(gpointer opaque)
{
    VfuConn *c = opaque;
    VfuMsg *req = NULL;
    Error *err = NULL;
    int ret;

    if (vfu_conn_recv(c, &req, true, &err) != 1) {
        error_free(err);
        return GINT_TO_POINTER(-1);
    }
    ret = vfu_srv_negotiate(c, req, &err);
    error_free(err);
    vfu_msg_free(req);
    return GINT_TO_POINTER(ret);
}

static void test_negotiate(void)
{
    VfuLimits cl = { 4, 65536, 100, 4096, false };
    VfuLimits sl = { 16, 1024 * 1024, 200, 0x1000 | 0x200000, true };
    Pair p;
    GThread *t;

    pair_init2(&p, &cl, &sl);
    t = g_thread_new("server", server_thread, p.b);
    g_assert_cmpint(vfu_client_negotiate(p.a, &error_abort), ==, 0);
    g_assert_cmpint(GPOINTER_TO_INT(g_thread_join(t)), ==, 0);

    /* each side knows what the other accepts */
    g_assert_cmpuint(vfu_conn_peer_limits(p.a)->max_msg_fds, ==, 16);
    g_assert_cmpuint(vfu_conn_peer_limits(p.a)->max_dma_maps, ==, 200);
    g_assert_cmpuint(vfu_conn_peer_limits(p.a)->pgsizes, ==, 0x201000);
    g_assert(!vfu_conn_peer_limits(p.a)->write_multiple);
    g_assert_cmpuint(vfu_conn_peer_limits(p.b)->max_msg_fds, ==, 4);
    g_assert_cmpuint(vfu_conn_peer_limits(p.b)->max_data_xfer_size, ==, 65536);
    pair_finish(&p);
}

static void test_negotiate_server_rejects(void)
{
    g_autoptr(VfuMsg) req = NULL, reply = NULL;
    const char bad[] = "\x01\x00\x00\x00{}";   /* major 1 */
    Error *err = NULL;
    Pair p;

    pair_init(&p, NULL);
    raw_send(&p, 3, VFU_CMD_VERSION, 16 + sizeof(bad), 0, bad, sizeof(bad),
             NULL, 0);
    g_assert_cmpint(vfu_conn_recv(p.b, &req, true, &error_abort), ==, 1);
    g_assert_cmpint(vfu_srv_negotiate(p.b, req, &err), <, 0);
    error_free(err);
    g_assert_cmpint(vfu_conn_recv(p.a, &reply, true, &error_abort), ==, 1);
    g_assert(reply->hdr.flags & VFU_F_ERROR);
    vfu_msg_free(g_steal_pointer(&req));
    vfu_msg_free(g_steal_pointer(&reply));
    pair_finish(&p);
}

/* ---- region info: mmap areas ------------------------------------------------ */

typedef struct SparseReply {
    VfuRegionInfo info;
    VfuCapSparseMmap cap;
    VfuSparseMmapArea areas[4];
} QEMU_PACKED SparseReply;

static void sparse_reply_init(SparseReply *r, uint32_t nr_areas)
{
    memset(r, 0, sizeof(*r));
    r->info.argsz = sizeof(*r);
    r->info.flags = VFU_REGION_F_READ | VFU_REGION_F_WRITE |
                    VFU_REGION_F_MMAP | VFU_REGION_F_CAPS;
    r->info.index = 2;
    r->info.cap_offset = sizeof(VfuRegionInfo);
    r->info.size = 0x4000;
    r->cap.header.id = VFU_REGION_CAP_SPARSE_MMAP;
    r->cap.header.version = 1;
    r->cap.nr_areas = nr_areas;
    r->areas[0].offset = 0;
    r->areas[0].size = 0x1000;
    r->areas[1].offset = 0x3000;
    r->areas[1].size = 0x1000;
}

static void test_mmap_areas_good(void)
{
    VfuSparseMmapArea areas[VFU_MAX_MMAP_AREAS];
    SparseReply r;

    /* no MMAP flag: nothing to map */
    sparse_reply_init(&r, 2);
    r.info.flags &= ~VFU_REGION_F_MMAP;
    g_assert_cmpint(vfu_region_info_mmap_areas(&r.info, sizeof(r), areas,
                                               &error_abort), ==, 0);
    /* MMAP without capabilities: the whole region */
    sparse_reply_init(&r, 2);
    r.info.flags &= ~VFU_REGION_F_CAPS;
    g_assert_cmpint(vfu_region_info_mmap_areas(&r.info, sizeof(r.info), areas,
                                               &error_abort), ==, 1);
    g_assert_cmphex(areas[0].offset, ==, 0);
    g_assert_cmphex(areas[0].size, ==, 0x4000);
    /* sparse: the listed areas, empty ones dropped */
    sparse_reply_init(&r, 3);
    g_assert_cmpint(vfu_region_info_mmap_areas(&r.info, sizeof(r), areas,
                                               &error_abort), ==, 2);
    g_assert_cmphex(areas[1].offset, ==, 0x3000);
    g_assert_cmphex(areas[1].size, ==, 0x1000);
    /* an unknown capability before the sparse one is skipped */
    {
        struct QEMU_PACKED {
            VfuRegionInfo info;
            VfuCapType type;
            VfuCapSparseMmap cap;
            VfuSparseMmapArea area;
        } t = {
            .info = {
                .argsz = sizeof(t), .index = 1, .size = 0x2000,
                .flags = VFU_REGION_F_MMAP | VFU_REGION_F_CAPS,
                .cap_offset = sizeof(VfuRegionInfo),
            },
            .type = { .header = { .id = 0x77, .version = 1,
                                  .next = sizeof(VfuRegionInfo) +
                                          sizeof(VfuCapType) } },
            .cap = { .header = { .id = VFU_REGION_CAP_SPARSE_MMAP,
                                 .version = 1 }, .nr_areas = 1 },
            .area = { .offset = 0x1000, .size = 0x1000 },
        };
        g_assert_cmpint(vfu_region_info_mmap_areas(&t.info, sizeof(t), areas,
                                                   &error_abort), ==, 1);
        g_assert_cmphex(areas[0].offset, ==, 0x1000);
    }
}

static void test_mmap_areas_bad(void)
{
    VfuSparseMmapArea areas[VFU_MAX_MMAP_AREAS];
    SparseReply r;
    size_t len;

    /* reply shorter than the info */
    sparse_reply_init(&r, 2);
    g_assert_cmpint(vfu_region_info_mmap_areas(&r.info, sizeof(r.info) - 1,
                                               areas, NULL), ==, -1);
    /* capability offset inside the info, past the end, header cut off */
    for (int i = 0; i < 3; i++) {
        static const uint32_t offs[] = { 4, sizeof(SparseReply) + 8,
                                         sizeof(SparseReply) - 4 };
        sparse_reply_init(&r, 2);
        r.info.cap_offset = offs[i];
        g_assert_cmpint(vfu_region_info_mmap_areas(&r.info, sizeof(r), areas,
                                                   NULL), ==, -1);
    }
    /* a capability pointing to itself (a loop) */
    sparse_reply_init(&r, 2);
    r.cap.header.next = sizeof(VfuRegionInfo);
    g_assert_cmpint(vfu_region_info_mmap_areas(&r.info, sizeof(r), areas,
                                               NULL), ==, -1);
    /* two sparse capabilities: the second where the areas would be */
    sparse_reply_init(&r, 0);
    r.cap.header.next = offsetof(SparseReply, areas);
    memcpy(&r.areas[0], &r.cap, sizeof(r.cap));
    ((VfuCapSparseMmap *)&r.areas[0])->header.next = 0;
    g_assert_cmpint(vfu_region_info_mmap_areas(&r.info, sizeof(r), areas,
                                               NULL), ==, -1);
    /* more areas than the reply holds, and a huge count */
    sparse_reply_init(&r, 5);
    g_assert_cmpint(vfu_region_info_mmap_areas(&r.info, sizeof(r), areas,
                                               NULL), ==, -1);
    sparse_reply_init(&r, 0xffffffff);
    g_assert_cmpint(vfu_region_info_mmap_areas(&r.info, sizeof(r), areas,
                                               NULL), ==, -1);
    /* the areas must fit exactly: one area cut by the reply's length */
    sparse_reply_init(&r, 2);
    len = sizeof(VfuRegionInfo) + sizeof(VfuCapSparseMmap) +
          sizeof(VfuSparseMmapArea) + 8;
    g_assert_cmpint(vfu_region_info_mmap_areas(&r.info, len, areas, NULL),
                    ==, -1);
    /* an area past the region's end, and one whose end overflows */
    sparse_reply_init(&r, 2);
    r.areas[1].offset = 0x3800;
    g_assert_cmpint(vfu_region_info_mmap_areas(&r.info, sizeof(r), areas,
                                               NULL), ==, -1);
    sparse_reply_init(&r, 2);
    r.areas[1].offset = 0x1000;
    r.areas[1].size = UINT64_MAX - 0x800;
    g_assert_cmpint(vfu_region_info_mmap_areas(&r.info, sizeof(r), areas,
                                               NULL), ==, -1);
}

/*
 * A peer may offer more than we can ever send: negotiated values are
 * clamped to our hard limits, so nothing sizes a transfer (or an fd
 * array) from the peer's word alone.
 */
static void test_version_clamped(void)
{
    VfuLimits caps;

    g_assert(parse_json("{\"capabilities\":{\"max_msg_fds\":4000000000,"
                        "\"max_data_xfer_size\":18446744073709551615}}",
                        0, &caps, &error_abort));
    g_assert_cmpuint(caps.max_msg_fds, ==, VFU_MAX_MSG_FDS);
    g_assert_cmpuint(caps.max_data_xfer_size, ==, VFU_MAX_XFER_SIZE);
    /* below the limits, the peer's word stands */
    g_assert(parse_json("{\"capabilities\":{\"max_msg_fds\":3,"
                        "\"max_data_xfer_size\":4096}}",
                        0, &caps, &error_abort));
    g_assert_cmpuint(caps.max_msg_fds, ==, 3);
    g_assert_cmpuint(caps.max_data_xfer_size, ==, 4096);
}

/* ---- twin_socket ------------------------------------------------------- */

static void test_version_twin(void)
{
    VfuLimits in, out;
    g_autofree char *json = NULL;
    g_autofree void *pl = NULL;
    Error *err = NULL;
    uint16_t ma, mi;
    size_t len;

    /* a client's proposal: supported, no fd */
    vfu_limits_default(&in);
    in.twin_socket = true;
    pl = vfu_version_encode(0, 2, &in, &len);
    json = g_strdup(((VfuVersion *)pl)->data);
    g_assert(strstr(json, "\"twin_socket\": {\"supported\": true}"));
    g_assert(vfu_version_parse(pl, len, 0, &ma, &mi, &out, &error_abort));
    g_assert(out.twin_socket);
    g_assert_cmpint(out.twin_fd_index, ==, -1);
    g_clear_pointer(&pl, g_free);

    /* a server's reply: the fd it names must have come with it */
    in.twin_fd_index = 1;
    pl = vfu_version_encode(0, 2, &in, &len);
    g_assert(vfu_version_parse(pl, len, 2, &ma, &mi, &out, &error_abort));
    g_assert(out.twin_socket);
    g_assert_cmpint(out.twin_fd_index, ==, 1);
    g_assert(!vfu_version_parse(pl, len, 1, &ma, &mi, &out, &err));
    g_assert(strstr(error_get_pretty(err), "fd_index"));
    g_clear_pointer(&err, error_free);
    g_clear_pointer(&pl, g_free);

    /* off: not sent at all */
    in.twin_socket = false;
    pl = vfu_version_encode(0, 2, &in, &len);
    g_assert(!strstr(((VfuVersion *)pl)->data, "twin_socket"));
    g_assert(vfu_version_parse(pl, len, 1, &ma, &mi, &out, &error_abort));
    g_assert(!out.twin_socket);
    g_assert_cmpint(out.twin_fd_index, ==, -1);

    /* not supported: whatever else it says is not looked at */
    g_assert(parse_json_fds("{\"capabilities\":{\"twin_socket\":"
                            "{\"supported\":false,\"fd_index\":\"x\"}}}",
                            0, 1, &out, &error_abort));
    g_assert(!out.twin_socket);
    g_assert(parse_json_fds("{\"capabilities\":{\"twin_socket\":{}}}",
                            0, 1, &out, &error_abort));
    g_assert(!out.twin_socket);
}

static void test_version_twin_bad(void)
{
    static const struct {
        const char *twin;
        size_t nfds;
    } bad[] = {
        { "true", 1 },                                  /* not an object */
        { "[0]", 1 },
        { "{\"supported\":1,\"fd_index\":0}", 1 },      /* not a bool */
        { "{\"supported\":\"yes\"}", 1 },
        { "{\"supported\":true,\"fd_index\":-1}", 1 },
        { "{\"supported\":true,\"fd_index\":\"0\"}", 1 },
        { "{\"supported\":true,\"fd_index\":0.5}", 1 },
        { "{\"supported\":true,\"fd_index\":1}", 1 },   /* no such fd */
        { "{\"supported\":true,\"fd_index\":0}", 0 },
        { "{\"supported\":true,\"fd_index\":4294967296}", 1 },
    };
    VfuLimits caps;

    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        g_autofree char *json = g_strdup_printf(
            "{\"capabilities\":{\"twin_socket\":%s}}", bad[i].twin);
        Error *err = NULL;

        g_assert(!parse_json_fds(json, 0, bad[i].nfds, &caps, &err));
        g_assert(strstr(error_get_pretty(err), "twin_socket") ||
                 strstr(error_get_pretty(err), "fd_index"));
        error_free(err);
    }
}

typedef struct TwinServer {
    VfuConn *c;
    int twin_fd;
    int ret;
} TwinServer;

static gpointer twin_server_thread(gpointer opaque)
{
    TwinServer *ts = opaque;
    VfuMsg *req = NULL;
    Error *err = NULL;

    ts->ret = -1;
    if (vfu_conn_recv(ts->c, &req, true, &err) == 1) {
        ts->ret = vfu_srv_negotiate_twin(ts->c, req, &ts->twin_fd, &err);
    }
    error_free(err);
    vfu_msg_free(req);
    return NULL;
}

/* Bit 0: the client proposes twin_socket; bit 1: the server offers it */
static void test_negotiate_twin(gconstpointer opaque)
{
    int mode = GPOINTER_TO_INT(opaque);
    bool twin = mode == 3;
    VfuLimits cl, sl;
    TwinServer ts = { 0 };
    int cfd = -2;
    GThread *t;
    Pair p;

    vfu_limits_default(&cl);
    vfu_limits_default(&sl);
    cl.max_msg_fds = sl.max_msg_fds = 4;
    cl.twin_socket = mode & 1;
    sl.twin_socket = mode & 2;
    pair_init2(&p, &cl, &sl);
    ts.c = p.b;
    t = g_thread_new("server", twin_server_thread, &ts);
    g_assert_cmpint(vfu_client_negotiate_twin(p.a, &cfd, &error_abort), ==, 0);
    g_thread_join(t);
    g_assert_cmpint(ts.ret, ==, 0);
    g_assert_cmpint(cfd >= 0, ==, twin);
    g_assert_cmpint(ts.twin_fd >= 0, ==, twin);
    g_assert_cmpint(vfu_conn_peer_limits(p.a)->twin_socket, ==, twin);
    g_assert_cmpint(vfu_conn_peer_limits(p.b)->twin_socket, ==, twin);
    if (twin) {
        char buf[4] = { 0 };

        /* the two ends are one socket */
        g_assert(vfu_fd_is_unix_stream(cfd));
        g_assert_cmpint(write(ts.twin_fd, "dma", 4), ==, 4);
        g_assert_cmpint(read(cfd, buf, 4), ==, 4);
        g_assert_cmpstr(buf, ==, "dma");
        close(cfd);
        close(ts.twin_fd);
    }
    pair_finish(&p);
}

typedef struct TwinReply {
    VfuConn *c;
    const char *json;
    int fd;
} TwinReply;

/* Answer VERSION with a hand-made JSON and fd */
static gpointer twin_reply_thread(gpointer opaque)
{
    TwinReply *tr = opaque;
    g_autofree VfuVersion *v = NULL;
    size_t jl = strlen(tr->json) + 1;
    VfuMsg *req = NULL;

    if (vfu_conn_recv(tr->c, &req, true, NULL) == 1) {
        v = g_malloc0(sizeof(*v) + jl);
        memcpy(v->data, tr->json, jl);
        vfu_conn_reply(tr->c, req, v, sizeof(*v) + jl, &tr->fd,
                       tr->fd >= 0 ? 1 : 0, NULL);
    }
    vfu_msg_free(req);
    return NULL;
}

/* A server that enables the twin with no usable socket is refused */
static void test_negotiate_twin_bad_reply(void)
{
    static const struct {
        const char *json;
        int fd_kind;            /* 0: none, 1: a socket, 2: an eventfd */
        bool propose;
        const char *error;
    } cases[] = {
        { "{\"capabilities\":{\"twin_socket\":{\"supported\":true}}}",
          1, true, "without an fd_index" },
        { "{\"capabilities\":{\"twin_socket\":{\"supported\":true,"
          "\"fd_index\":0}}}", 2, true, "not a UNIX stream socket" },
        { "{\"capabilities\":{\"twin_socket\":{\"supported\":true,"
          "\"fd_index\":0}}}", 0, true, "fd_index" },
        { "{\"capabilities\":{\"twin_socket\":{\"supported\":true,"
          "\"fd_index\":1}}}", 1, true, "fd_index" },
        { "{\"capabilities\":{\"twin_socket\":{\"supported\":true,"
          "\"fd_index\":0}}}", 1, false, "not proposed" },
    };

    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        TwinReply tr = { .json = cases[i].json, .fd = -1 };
        VfuLimits cl;
        Error *err = NULL;
        int cfd = -2, sv[2] = { -1, -1 };
        GThread *t;
        Pair p;

        vfu_limits_default(&cl);
        cl.max_msg_fds = 4;
        cl.twin_socket = cases[i].propose;
        pair_init2(&p, &cl, &cl);
        if (cases[i].fd_kind == 1) {
            g_assert_cmpint(qemu_socketpair(AF_UNIX, SOCK_STREAM, 0, sv), ==,
                            0);
            tr.fd = sv[0];
        } else if (cases[i].fd_kind == 2) {
            tr.fd = eventfd(0, EFD_CLOEXEC);
        }
        tr.c = p.b;
        t = g_thread_new("server", twin_reply_thread, &tr);
        g_assert_cmpint(vfu_client_negotiate_twin(p.a, &cfd, &err), ==,
                        -EPROTO);
        g_thread_join(t);
        g_assert_cmpint(cfd, ==, -1);
        g_assert(strstr(error_get_pretty(err), cases[i].error));
        error_free(err);
        /* the fd that came with the reply is not leaked */
        for (int j = 0; j < 2; j++) {
            if (sv[j] >= 0) {
                close(sv[j]);
            }
        }
        if (cases[i].fd_kind == 2) {
            close(tr.fd);
        }
        pair_finish(&p);
    }
}

static void count_barrier(VfuConn *c, void *opaque)
{
    (*(unsigned *)opaque)++;
}

/* The reply barrier runs before each reply due, and before nothing else */
static void test_reply_barrier(void)
{
    unsigned barriers = 0;
    Pair p;

    pair_init(&p, NULL);
    vfu_conn_set_reply_barrier(p.b, count_barrier, &barriers);
    for (int i = 0; i < 3; i++) {
        g_autoptr(VfuMsg) req = NULL, reply = NULL;
        uint32_t flags = VFU_F_TYPE_COMMAND | (i == 2 ? VFU_F_NO_REPLY : 0);

        g_assert_cmpint(vfu_conn_send(p.a, VFU_CMD_DEVICE_RESET, 7 + i, flags,
                                      0, NULL, 0, NULL, 0, &error_abort),
                        ==, 0);
        g_assert_cmpint(vfu_conn_recv(p.b, &req, true, &error_abort), ==, 1);
        g_assert_cmpuint(barriers, ==, MIN(i, 2));
        if (i == 1) {
            vfu_conn_reply_error(p.b, req, EIO, &error_abort);
        } else {
            vfu_conn_reply(p.b, req, NULL, 0, NULL, 0, &error_abort);
        }
        g_assert_cmpuint(barriers, ==, MIN(i + 1, 2));
        if (i < 2) {
            g_assert_cmpint(vfu_conn_recv(p.a, &reply, true, &error_abort),
                            ==, 1);
            g_assert_cmpuint(reply->hdr.msg_id, ==, 7 + i);
        }
    }
    /* our own requests are not replies */
    g_assert_cmpint(vfu_conn_post(p.b, VFU_CMD_DEVICE_RESET, NULL, 0,
                                  &error_abort), ==, 0);
    g_assert_cmpuint(barriers, ==, 2);
    pair_finish(&p);
}

int main(int argc, char **argv)
{
    g_autoptr(GPtrArray) rts = NULL;

    g_test_init(&argc, &argv, NULL);
    /* a send to a peer that hung up must fail, not kill the test */
    signal(SIGPIPE, SIG_IGN);
    module_call_init(MODULE_INIT_QOM);
    /* the policies' bottom halves live there: its fds are not a leak */
    iohandler_get_aio_context();

    rts = round_trips();
    for (guint i = 0; i < rts->len; i++) {
        RoundTrip *rt = g_ptr_array_index(rts, i);
        g_autofree char *path = g_strdup_printf("/vfio-user/codec/round-trip/%s",
                                                rt->name);
        g_test_add_data_func(path, rt, test_round_trip);
    }
    g_test_add_func("/vfio-user/codec/round-trip/version",
                    test_version_round_trip);
    g_test_add_func("/vfio-user/codec/version/defaults-unknown",
                    test_version_defaults_and_unknown);
    g_test_add_func("/vfio-user/codec/version/bad-json", test_version_bad);
    g_test_add_func("/vfio-user/codec/version/wrong-major",
                    test_version_wrong_major);
    g_test_add_func("/vfio-user/codec/version/no-nul", test_version_no_nul);
    g_test_add_func("/vfio-user/codec/framing/truncated-header",
                    test_truncated_header);
    g_test_add_func("/vfio-user/codec/framing/size-below-header",
                    test_size_below_header);
    g_test_add_func("/vfio-user/codec/framing/size-above-max",
                    test_size_above_max);
    g_test_add_func("/vfio-user/codec/framing/bad-flags", test_bad_flags);
    g_test_add_func("/vfio-user/codec/framing/split-writes",
                    test_split_writes);
    for (size_t i = 0; i < ARRAY_SIZE(bad_payloads); i++) {
        g_autofree char *path = g_strdup_printf("/vfio-user/codec/bad/%s",
                                                bad_payloads[i].name);
        g_test_add_data_func(path, &bad_payloads[i], test_bad_payload);
    }
    g_test_add_func("/vfio-user/codec/fds/on-fdless-command",
                    test_fds_on_fdless_command);
    g_test_add_func("/vfio-user/codec/fds/too-many", test_too_many_fds);
    g_test_add_func("/vfio-user/codec/region-info/mmap-areas",
                    test_mmap_areas_good);
    g_test_add_func("/vfio-user/codec/region-info/mmap-areas-bad",
                    test_mmap_areas_bad);
    g_test_add_func("/vfio-user/conn/call/stray-reply", test_call_stray_reply);
    g_test_add_func("/vfio-user/conn/call/error-reply", test_call_error_reply);
    g_test_add_func("/vfio-user/conn/call/timeout", test_call_timeout);
    g_test_add_func("/vfio-user/conn/call/nested-request",
                    test_call_nested_request);
    g_test_add_data_func("/vfio-user/conn/call/wait-group",
                         GINT_TO_POINTER(true), test_wait_group);
    g_test_add_data_func("/vfio-user/conn/call/no-wait-group",
                         GINT_TO_POINTER(false), test_wait_group);
    g_test_add_func("/vfio-user/conn/async/out-of-order",
                    test_async_out_of_order);
    g_test_add_func("/vfio-user/conn/async/window", test_async_window);
    g_test_add_func("/vfio-user/conn/async/unanswered",
                    test_async_unanswered);
    g_test_add_func("/vfio-user/conn/error-reply-errno",
                    test_error_reply_errno);
    g_test_add_func("/vfio-user/conn/negotiate", test_negotiate);
    g_test_add_func("/vfio-user/conn/negotiate-server-rejects",
                    test_negotiate_server_rejects);
    g_test_add_func("/vfio-user/codec/version/clamped", test_version_clamped);
    g_test_add_func("/vfio-user/codec/version/twin-socket", test_version_twin);
    g_test_add_func("/vfio-user/codec/version/twin-socket-bad",
                    test_version_twin_bad);
    for (int m = 0; m < 4; m++) {
        static const char *const names[] = {
            "neither", "client-only", "server-only", "both",
        };
        g_autofree char *path = g_strdup_printf(
            "/vfio-user/conn/negotiate-twin/%s", names[m]);

        g_test_add_data_func(path, GINT_TO_POINTER(m), test_negotiate_twin);
    }
    g_test_add_func("/vfio-user/conn/negotiate-twin/bad-reply",
                    test_negotiate_twin_bad_reply);
    g_test_add_func("/vfio-user/conn/reply-barrier", test_reply_barrier);
    return g_test_run();
}
