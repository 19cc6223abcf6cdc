/*
 * A minimal vfio-user client for the vfio-user-server qtests, built on
 * the shared protocol core (vfio-user/transport.c, client.c).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef TESTS_QTEST_VFIO_USER_SERVER_CLIENT_H
#define TESTS_QTEST_VFIO_USER_SERVER_CLIENT_H

#include "qemu/osdep.h"
#include <sys/eventfd.h>
#include "libqtest.h"
#include "qapi/error.h"
#include "qemu/sockets.h"
#include "qemu/module.h"
#include "io/channel-socket.h"
#include "vfio-user/client.h"
#include "vfio-user/server.h"
#include "vfio-user/socket.h"

#include "edu.h"

static inline char *tc_tmp_path(const char *what)
{
    return g_strdup_printf("%s/vfu-srv-%d-%s.sock", g_get_tmp_dir(),
                           getpid(), what);
}

/* Start a remote machine hosting edu, exported on @sock. */
static inline QTestState *tc_start_edu(const char *sock, const char *extra)
{
    /* -accel tcg first: qtest's own accelerator would freeze the clock */
    return qtest_initf("-M remote -accel tcg -nodefaults "
                       "-device edu,id=e0 "
                       "-object vfio-user-server,id=v0,socket=%s,device=e0 %s",
                       sock, extra ? extra : "");
}

/* The limits our test client proposes unless told otherwise. */
static inline void tc_limits(VfuLimits *lim)
{
    vfu_limits_default(lim);
    lim->max_msg_fds = 8;
    lim->write_multiple = true;
}

/*
 * Connect proposing @lim (the server may still be starting); NULL after
 * 10 s.
 */
static inline VfuConn *tc_connect_limits(const char *path,
                                         const VfuLimits *lim)
{
    SocketAddress addr = {
        .type = SOCKET_ADDRESS_TYPE_UNIX,
        .u.q_unix.path = (char *)path,
    };

    for (int i = 0; i < 1000; i++) {
        g_autoptr(QIOChannelSocket) sioc = qio_channel_socket_new();

        if (qio_channel_socket_connect_sync(sioc, &addr, NULL) == 0) {
            VfuConn *c = vfu_conn_new(QIO_CHANNEL(sioc), "test-client", lim);

            vfu_conn_set_timeout(c, 10000);
            return c;
        }
        g_usleep(10 * 1000);
    }
    return NULL;
}

static inline VfuConn *tc_connect_raw(const char *path)
{
    VfuLimits lim;

    tc_limits(&lim);
    return tc_connect_limits(path, &lim);
}

static inline VfuConn *tc_connect(const char *path)
{
    VfuConn *c = tc_connect_raw(path);

    g_assert(c);
    g_assert_cmpint(vfu_client_negotiate(c, &error_abort), ==, 0);
    return c;
}

static inline int tc_call(VfuConn *c, uint16_t cmd, void *payload, size_t len,
                          const int *fds, size_t nfds, VfuMsg **reply)
{
    Error *err = NULL;
    int ret = vfu_client_call(c, cmd, payload, len, fds, nfds, reply, &err);

    if (err) {
        g_test_message("%s: %s", vfu_command_name(cmd), error_get_pretty(err));
        error_free(err);
    }
    return ret;
}

static inline int tc_region_rw(VfuConn *c, uint32_t region, uint64_t offset,
                               void *buf, uint32_t count, bool is_write)
{
    g_autofree VfuRegionAccess *req = g_malloc0(sizeof(*req) + count);
    g_autoptr(VfuMsg) reply = NULL;
    int ret;

    req->offset = offset;
    req->region = region;
    req->count = count;
    if (is_write) {
        memcpy(req->data, buf, count);
    }
    ret = tc_call(c, is_write ? VFU_CMD_REGION_WRITE : VFU_CMD_REGION_READ,
                  req, sizeof(*req) + (is_write ? count : 0), NULL, 0, &reply);
    if (ret) {
        return ret;
    }
    if (!is_write) {
        VfuRegionAccess *a = (VfuRegionAccess *)reply->payload;

        g_assert_cmpuint(reply->len, ==, sizeof(*a) + count);
        g_assert_cmpuint(a->count, ==, count);
        memcpy(buf, a->data, count);
    }
    return 0;
}

static inline uint64_t tc_read(VfuConn *c, uint32_t region, uint64_t off,
                               unsigned size)
{
    uint8_t b[8] = { 0 };

    g_assert_cmpint(tc_region_rw(c, region, off, b, size, false), ==, 0);
    return ldn_le_p(b, size);
}

static inline void tc_write(VfuConn *c, uint32_t region, uint64_t off,
                            unsigned size, uint64_t val)
{
    uint8_t b[8];

    stn_le_p(b, size, val);
    g_assert_cmpint(tc_region_rw(c, region, off, b, size, true), ==, 0);
}

static inline int tc_dma_map(VfuConn *c, uint64_t iova, uint64_t size,
                             uint64_t offset, uint32_t flags, int fd)
{
    VfuDmaMap m = {
        .argsz = sizeof(m), .flags = flags, .offset = offset,
        .address = iova, .size = size,
    };

    return tc_call(c, VFU_CMD_DMA_MAP, &m, sizeof(m), fd >= 0 ? &fd : NULL,
                   fd >= 0 ? 1 : 0, NULL);
}

static inline int tc_dma_unmap(VfuConn *c, uint64_t iova, uint64_t size,
                               uint32_t flags)
{
    VfuDmaUnmap u = {
        .argsz = sizeof(u), .flags = flags, .address = iova, .size = size,
    };

    return tc_call(c, VFU_CMD_DMA_UNMAP, &u, sizeof(u), NULL, 0, NULL);
}

static inline int tc_set_irqs(VfuConn *c, uint32_t flags, uint32_t index,
                              uint32_t start, uint32_t count, const int *fds,
                              size_t nfds)
{
    VfuIrqSet s = {
        .argsz = sizeof(s), .flags = flags, .index = index,
        .start = start, .count = count,
    };

    return tc_call(c, VFU_CMD_DEVICE_SET_IRQS, &s, sizeof(s), fds, nfds, NULL);
}

/* Client memory the server reaches through DMA_READ/DMA_WRITE only */
typedef struct MsgDmaMem {
    uint64_t base;
    uint8_t buf[0x1000];
    unsigned reads, writes;
} MsgDmaMem;

static inline int serve_dma(VfuConn *c, VfuMsg *msg, void *opaque)
{
    MsgDmaMem *m = opaque;
    VfuDmaAccess *a = (VfuDmaAccess *)msg->payload;

    if (a->address < m->base || a->count > sizeof(m->buf) ||
        a->address - m->base > sizeof(m->buf) - a->count) {
        return -EFAULT;
    }
    if (msg->hdr.command == VFU_CMD_DMA_READ) {
        g_autofree VfuDmaAccess *r = g_malloc0(sizeof(*r) + a->count);

        *r = *a;
        memcpy(r->data, m->buf + (a->address - m->base), a->count);
        m->reads++;
        return vfu_conn_reply(c, msg, r, sizeof(*r) + a->count, NULL, 0, NULL);
    }
    if (msg->hdr.command == VFU_CMD_DMA_WRITE) {
        VfuDmaAccess r = *a;

        memcpy(m->buf + (a->address - m->base), a->data, a->count);
        m->writes++;
        return vfu_conn_reply(c, msg, &r, sizeof(r), NULL, 0, NULL);
    }
    return -ENOSYS;
}

/* Wait up to @ms for an eventfd to fire; returns its count or 0. */
static inline uint64_t tc_eventfd_wait(int fd, int ms)
{
    GPollFD pfd = { .fd = fd, .events = G_IO_IN };
    uint64_t cnt = 0;

    if (g_poll(&pfd, 1, ms) == 1 && read(fd, &cnt, sizeof(cnt)) != sizeof(cnt)) {
        cnt = 0;
    }
    return cnt;
}

/* Run an edu DMA and wait (serving DMA requests) until it is done. */
/* Start an edu DMA; edu runs it from a timer (tc_edu_dma() waits for it) */
static inline void tc_edu_dma_start(VfuConn *c, uint64_t src, uint64_t dst,
                                    uint64_t cnt, uint64_t cmd)
{
    tc_write(c, 0, EDU_DMA_SRC, 8, src);
    tc_write(c, 0, EDU_DMA_DST, 8, dst);
    tc_write(c, 0, EDU_DMA_CNT, 8, cnt);
    tc_write(c, 0, EDU_DMA_CMD, 8, cmd);
}

static inline void tc_edu_dma(VfuConn *c, uint64_t src, uint64_t dst,
                              uint64_t cnt, bool to_pci)
{
    tc_edu_dma_start(c, src, dst, cnt,
                     EDU_DMA_RUN | (to_pci ? EDU_DMA_TO_PCI : 0));
    for (int i = 0; i < 500; i++) {
        if (!(tc_read(c, 0, EDU_DMA_CMD, 8) & EDU_DMA_RUN)) {
            return;
        }
        g_usleep(10 * 1000);
    }
    g_assert_not_reached();
}

#endif
