/*
 * A rogue client against vfio-user-server: every malformed request gets
 * an error reply (or, for a broken header, a disconnect), the server
 * process survives, and the next client is served normally.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "vfio-user/server-client.h"
#include "qapi/qmp/qdict.h"

typedef struct Rogue {
    char *sock;
    QTestState *qts;
    VfuConn *c;
} Rogue;

static void rogue_start(Rogue *r, const char *what)
{
    r->sock = tc_tmp_path(what);
    r->qts = tc_start_edu(r->sock, NULL);
    r->c = tc_connect(r->sock);
}

/* The server still answers, here and for a new client. */
static void rogue_check_alive(Rogue *r)
{
    QDict *rsp;

    g_assert_cmphex(tc_read(r->c, 0, EDU_ID, 4), ==, 0x010000ed);
    rsp = qtest_qmp(r->qts, "{ 'execute': 'query-status' }");
    g_assert(qdict_haskey(rsp, "return"));
    qobject_unref(rsp);
}

static void rogue_stop(Rogue *r)
{
    if (r->c) {
        vfu_conn_free(r->c);
    }
    r->c = tc_connect(r->sock);
    rogue_check_alive(r);
    vfu_conn_free(r->c);
    qtest_quit(r->qts);
    g_free(r->sock);
}

static int region_access(VfuConn *c, uint32_t region, uint64_t offset,
                         uint32_t count, size_t data_len, bool is_write)
{
    g_autofree VfuRegionAccess *a = g_malloc0(sizeof(*a) + data_len);

    a->offset = offset;
    a->region = region;
    a->count = count;
    return tc_call(c, is_write ? VFU_CMD_REGION_WRITE : VFU_CMD_REGION_READ,
                   a, sizeof(*a) + data_len, NULL, 0, NULL);
}

static void test_regions(void)
{
    Rogue r;

    rogue_start(&r, "regions");
    g_assert_cmpint(region_access(r.c, 9, 0, 4, 0, false), ==, -EINVAL);
    g_assert_cmpint(region_access(r.c, 0xdeadbeef, 0, 4, 0, false), ==,
                    -EINVAL);
    g_assert_cmpint(region_access(r.c, VFU_PCI_VGA_REGION, 0, 4, 0, false),
                    ==, -EINVAL);
    g_assert_cmpint(region_access(r.c, 1, 0, 4, 0, false), ==, -EINVAL);
    g_assert_cmpint(region_access(r.c, 0, UINT64_MAX - 1, 4, 0, false), ==,
                    -EINVAL);
    g_assert_cmpint(region_access(r.c, 0, 1024 * 1024 - 2, 4, 0, false), ==,
                    -EINVAL);
    g_assert_cmpint(region_access(r.c, VFU_PCI_CONFIG_REGION, 254, 4, 0,
                                  false), ==, -EINVAL);
    g_assert_cmpint(region_access(r.c, 0, 0, 0, 0, false), ==, -EINVAL);
    g_assert_cmpint(region_access(r.c, 0, 0, 2 * 1024 * 1024, 0, false), ==,
                    -E2BIG);
    /* write whose data is shorter than its count */
    g_assert_cmpint(region_access(r.c, 0, 4, 8, 4, true), ==, -EINVAL);
    g_assert_cmpint(region_access(r.c, 0, UINT64_MAX - 3, 4, 4, true), ==,
                    -EINVAL);
    g_assert_cmpint(region_access(r.c, VFU_PCI_ROM_REGION, 0, 4, 4, true), ==,
                    -EINVAL);

    /* REGION_WRITE_MULTI is all or nothing */
    {
        size_t len = sizeof(VfuWriteMulti) + 2 * sizeof(VfuWriteMultiEntry);
        g_autofree VfuWriteMulti *m = g_malloc0(len);

        tc_write(r.c, 0, EDU_LIVENESS, 4, 0);
        m->wr_cnt = 2;
        m->wrs[0] = (VfuWriteMultiEntry) { .offset = EDU_LIVENESS, .count = 4 };
        m->wrs[0].data[0] = 0x55;
        m->wrs[1] = (VfuWriteMultiEntry) { .offset = 0, .region = 12,
                                           .count = 4 };
        g_assert_cmpint(tc_call(r.c, VFU_CMD_REGION_WRITE_MULTI, m, len,
                                NULL, 0, NULL), ==, -EINVAL);
        g_assert_cmphex(tc_read(r.c, 0, EDU_LIVENESS, 4), ==, ~0u);
        m->wrs[1].region = 0;
        m->wrs[1].count = 9;
        g_assert_cmpint(tc_call(r.c, VFU_CMD_REGION_WRITE_MULTI, m, len,
                                NULL, 0, NULL), ==, -EINVAL);
        m->wr_cnt = 3;
        g_assert_cmpint(tc_call(r.c, VFU_CMD_REGION_WRITE_MULTI, m, len,
                                NULL, 0, NULL), ==, -EINVAL);
    }

    /* info requests with bad indexes or sizes */
    {
        VfuRegionInfo ri = { .argsz = sizeof(ri), .index = 9 };
        VfuIrqInfo ii = { .argsz = sizeof(ii), .index = 5 };
        VfuDeviceInfo di = { .argsz = 8 };

        g_assert_cmpint(tc_call(r.c, VFU_CMD_DEVICE_GET_REGION_INFO, &ri,
                                sizeof(ri), NULL, 0, NULL), ==, -EINVAL);
        ri = (VfuRegionInfo) { .argsz = 8, .index = 0 };
        g_assert_cmpint(tc_call(r.c, VFU_CMD_DEVICE_GET_REGION_INFO, &ri,
                                sizeof(ri), NULL, 0, NULL), ==, -EINVAL);
        g_assert_cmpint(tc_call(r.c, VFU_CMD_DEVICE_GET_REGION_INFO, &ri,
                                8, NULL, 0, NULL), ==, -EINVAL);
        g_assert_cmpint(tc_call(r.c, VFU_CMD_DEVICE_GET_IRQ_INFO, &ii,
                                sizeof(ii), NULL, 0, NULL), ==, -EINVAL);
        g_assert_cmpint(tc_call(r.c, VFU_CMD_DEVICE_GET_INFO, &di,
                                sizeof(di), NULL, 0, NULL), ==, -EINVAL);
    }
    rogue_check_alive(&r);
    rogue_stop(&r);
}

static void test_dma(void)
{
    Rogue r;
    const uint32_t rw = VFU_DMA_MAP_F_READ | VFU_DMA_MAP_F_WRITE;
    int mfd = memfd_create("rogue", MFD_CLOEXEC);
    int empty = memfd_create("rogue-empty", MFD_CLOEXEC);
    int pfd[2];

    g_assert_cmpint(ftruncate(mfd, 0x4000), ==, 0);
    g_assert_cmpint(pipe(pfd), ==, 0);
    rogue_start(&r, "dma");

    g_assert_cmpint(tc_dma_map(r.c, 0x10000, 0x2000, 0, rw, -1), ==, 0);
    /* overlaps, at either end or inside */
    g_assert_cmpint(tc_dma_map(r.c, 0x10000, 0x1000, 0, rw, -1), ==, -EEXIST);
    g_assert_cmpint(tc_dma_map(r.c, 0xf000, 0x2000, 0, rw, -1), ==, -EEXIST);
    g_assert_cmpint(tc_dma_map(r.c, 0x11000, 0x2000, 0, rw, -1), ==, -EEXIST);
    g_assert_cmpint(tc_dma_map(r.c, 0x8000, 0x10000, 0, rw, -1), ==, -EEXIST);
    /* alignment, size, overflow, flags */
    g_assert_cmpint(tc_dma_map(r.c, 0x20800, 0x1000, 0, rw, -1), ==, -EINVAL);
    g_assert_cmpint(tc_dma_map(r.c, 0x20000, 0x800, 0, rw, -1), ==, -EINVAL);
    g_assert_cmpint(tc_dma_map(r.c, 0x20000, 0, 0, rw, -1), ==, -EINVAL);
    g_assert_cmpint(tc_dma_map(r.c, 0xfffffffffffff000ULL, 0x2000, 0, rw, -1),
                    ==, -EINVAL);
    g_assert_cmpint(tc_dma_map(r.c, 0x20000, 0x1000, 0, rw | 0x4, -1), ==,
                    -EINVAL);
    g_assert_cmpint(tc_dma_map(r.c, 0x20000, 0x1000, 0, 0, -1), ==, -EINVAL);
    g_assert_cmpint(tc_dma_map(r.c, 0x20000, 0x1000, 0x1000, rw, -1), ==,
                    -EINVAL);
    /* fds: beyond the file, unaligned offset, empty file, not memory */
    g_assert_cmpint(tc_dma_map(r.c, 0x20000, 0x1000, 0x4000, rw, mfd), ==,
                    -EINVAL);
    g_assert_cmpint(tc_dma_map(r.c, 0x20000, 0x5000, 0, rw, mfd), ==, -EINVAL);
    g_assert_cmpint(tc_dma_map(r.c, 0x20000, 0x1000, 0xfffffffffffff000ULL,
                               rw, mfd), ==, -EINVAL);
    g_assert_cmpint(tc_dma_map(r.c, 0x20000, 0x1000, 0x800, rw, mfd), ==,
                    -EINVAL);
    g_assert_cmpint(tc_dma_map(r.c, 0x20000, 0x1000, 0, rw, empty), ==,
                    -EINVAL);
    g_assert_cmpint(tc_dma_map(r.c, 0x20000, 0x1000, 0, rw, pfd[0]), ==,
                    -EINVAL);
    /* the good one, last */
    g_assert_cmpint(tc_dma_map(r.c, 0x20000, 0x1000, 0x3000, rw, mfd), ==, 0);
    /* too many fds for DMA_MAP, and an fd on a command that takes none */
    {
        VfuDmaMap m = { .argsz = sizeof(m), .flags = rw, .address = 0x30000,
                        .size = 0x1000 };
        int fds[2] = { mfd, mfd };
        VfuDeviceInfo di = { .argsz = sizeof(di) };

        g_assert_cmpint(tc_call(r.c, VFU_CMD_DMA_MAP, &m, sizeof(m), fds, 2,
                                NULL), ==, -EINVAL);
        g_assert_cmpint(tc_call(r.c, VFU_CMD_DEVICE_GET_INFO, &di, sizeof(di),
                                fds, 1, NULL), ==, -EINVAL);
        m.argsz = 8;
        g_assert_cmpint(tc_call(r.c, VFU_CMD_DMA_MAP, &m, sizeof(m), NULL, 0,
                                NULL), ==, -EINVAL);
    }

    /* unmaps: partial, unknown, bad flags */
    g_assert_cmpint(tc_dma_unmap(r.c, 0x10000, 0x1000, 0), ==, -EINVAL);
    g_assert_cmpint(tc_dma_unmap(r.c, 0x11000, 0x2000, 0), ==, -EINVAL);
    g_assert_cmpint(tc_dma_unmap(r.c, 0x50000, 0x1000, 0), ==, -ENOENT);
    g_assert_cmpint(tc_dma_unmap(r.c, 0x50000, 0, 0), ==, -EINVAL);
    g_assert_cmpint(tc_dma_unmap(r.c, 0x50800, 0x1000, 0), ==, -EINVAL);
    g_assert_cmpint(tc_dma_unmap(r.c, 0xfffffffffffff000ULL, 0x2000, 0), ==,
                    -EINVAL);
    g_assert_cmpint(tc_dma_unmap(r.c, 0x10000, 0x2000, 0x8), ==, -EINVAL);
    g_assert_cmpint(tc_dma_unmap(r.c, 0x10000, 0x2000,
                                 VFU_DMA_UNMAP_F_ALL), ==, -EINVAL);
    g_assert_cmpint(tc_dma_unmap(r.c, 0x10000, 0x2000,
                                 VFU_DMA_UNMAP_F_GET_DIRTY_BITMAP), ==,
                    -ENOTSUP);
    /* a range covering whole mappings removes them */
    g_assert_cmpint(tc_dma_unmap(r.c, 0, 0x100000, 0), ==, 0);

    /* max_dma_maps */
    for (uint64_t i = 0; i < 1024; i++) {
        g_assert_cmpint(tc_dma_map(r.c, i * 0x1000, 0x1000, 0, rw, -1), ==, 0);
    }
    g_assert_cmpint(tc_dma_map(r.c, 1024 * 0x1000, 0x1000, 0, rw, -1), ==,
                    -ENOSPC);
    g_assert_cmpint(tc_dma_unmap(r.c, 0, 0, VFU_DMA_UNMAP_F_ALL), ==, 0);
    g_assert_cmpint(tc_dma_map(r.c, 0, 0x1000, 0, rw, -1), ==, 0);

    rogue_check_alive(&r);
    rogue_stop(&r);
    close(mfd);
    close(empty);
    close(pfd[0]);
    close(pfd[1]);
}

static void test_irqs(void)
{
    Rogue r;
    const uint32_t efd_trig = VFU_IRQ_SET_DATA_EVENTFD |
                              VFU_IRQ_SET_ACTION_TRIGGER;
    int fds[9];

    for (int i = 0; i < 9; i++) {
        fds[i] = eventfd(0, EFD_CLOEXEC);
    }
    rogue_start(&r, "irqs");
    g_assert_cmpint(tc_set_irqs(r.c, efd_trig, 5, 0, 1, fds, 1), ==, -EINVAL);
    g_assert_cmpint(tc_set_irqs(r.c, efd_trig, VFU_PCI_INTX_IRQ, 1, 1, fds, 1),
                    ==, -EINVAL);
    g_assert_cmpint(tc_set_irqs(r.c, efd_trig, VFU_PCI_INTX_IRQ, 0, 2, fds, 2),
                    ==, -EINVAL);
    g_assert_cmpint(tc_set_irqs(r.c, VFU_IRQ_SET_DATA_NONE |
                                VFU_IRQ_SET_ACTION_TRIGGER,
                                VFU_PCI_INTX_IRQ, UINT32_MAX, 2, NULL, 0), ==,
                    -EINVAL);
    g_assert_cmpint(tc_set_irqs(r.c, VFU_IRQ_SET_DATA_NONE |
                                VFU_IRQ_SET_ACTION_MASK,
                                VFU_PCI_MSIX_IRQ, 0, 1, NULL, 0), ==, -EINVAL);
    g_assert_cmpint(tc_set_irqs(r.c, VFU_IRQ_SET_DATA_NONE |
                                VFU_IRQ_SET_ACTION_MASK,
                                VFU_PCI_ERR_IRQ, 0, 1, NULL, 0), ==, -EINVAL);
    /* flags: two DATA, two ACTION, none, unknown bits */
    g_assert_cmpint(tc_set_irqs(r.c, VFU_IRQ_SET_DATA_NONE |
                                VFU_IRQ_SET_DATA_EVENTFD |
                                VFU_IRQ_SET_ACTION_TRIGGER,
                                VFU_PCI_INTX_IRQ, 0, 1, fds, 1), ==, -EINVAL);
    g_assert_cmpint(tc_set_irqs(r.c, VFU_IRQ_SET_DATA_NONE |
                                VFU_IRQ_SET_ACTION_MASK |
                                VFU_IRQ_SET_ACTION_UNMASK,
                                VFU_PCI_INTX_IRQ, 0, 1, NULL, 0), ==, -EINVAL);
    g_assert_cmpint(tc_set_irqs(r.c, VFU_IRQ_SET_DATA_NONE,
                                VFU_PCI_INTX_IRQ, 0, 1, NULL, 0), ==, -EINVAL);
    g_assert_cmpint(tc_set_irqs(r.c, VFU_IRQ_SET_DATA_NONE |
                                VFU_IRQ_SET_ACTION_TRIGGER | (1u << 9),
                                VFU_PCI_INTX_IRQ, 0, 1, NULL, 0), ==, -EINVAL);
    /* fds: without DATA_EVENTFD, count mismatch, more than max_msg_fds */
    g_assert_cmpint(tc_set_irqs(r.c, VFU_IRQ_SET_DATA_NONE |
                                VFU_IRQ_SET_ACTION_TRIGGER,
                                VFU_PCI_INTX_IRQ, 0, 1, fds, 1), ==, -EINVAL);
    g_assert_cmpint(tc_set_irqs(r.c, efd_trig, VFU_PCI_INTX_IRQ, 0, 1, fds, 2),
                    ==, -EINVAL);
    g_assert_cmpint(tc_set_irqs(r.c, efd_trig, VFU_PCI_MSI_IRQ, 0, 9, fds, 9),
                    ==, -EINVAL);
    /* argsz not matching the payload */
    {
        VfuIrqSet s = { .argsz = 100, .flags = efd_trig,
                        .index = VFU_PCI_INTX_IRQ, .count = 1 };

        g_assert_cmpint(tc_call(r.c, VFU_CMD_DEVICE_SET_IRQS, &s, sizeof(s),
                                fds, 1, NULL), ==, -EINVAL);
    }
    /* and a valid one still works */
    g_assert_cmpint(tc_set_irqs(r.c, efd_trig, VFU_PCI_INTX_IRQ, 0, 1, fds, 1),
                    ==, 0);
    rogue_check_alive(&r);
    rogue_stop(&r);
    for (int i = 0; i < 9; i++) {
        close(fds[i]);
    }
}

static void test_commands(void)
{
    Rogue r;
    uint8_t junk[32] = { 0 };
    g_autofree void *ver = NULL;
    VfuLimits lim;
    size_t len;

    rogue_start(&r, "commands");
    g_assert_cmpint(tc_call(r.c, 99, junk, 8, NULL, 0, NULL), ==, -ENOSYS);
    g_assert_cmpint(tc_call(r.c, VFU_CMD_DIRTY_PAGES, junk, 16, NULL, 0, NULL),
                    ==, -ENOSYS);
    g_assert_cmpint(tc_call(r.c, VFU_CMD_DEVICE_FEATURE, junk, 8, NULL, 0,
                            NULL), ==, -ENOTSUP);
    g_assert_cmpint(tc_call(r.c, VFU_CMD_MIG_DATA_READ, junk, 8, NULL, 0,
                            NULL), ==, -ENOTSUP);
    g_assert_cmpint(tc_call(r.c, VFU_CMD_DMA_READ, junk, 16, NULL, 0, NULL),
                    ==, -EINVAL);
    g_assert_cmpint(tc_call(r.c, VFU_CMD_DEVICE_RESET, junk, 4, NULL, 0, NULL),
                    ==, -EINVAL);
    vfu_limits_default(&lim);
    ver = vfu_version_encode(0, 2, &lim, &len);
    g_assert_cmpint(tc_call(r.c, VFU_CMD_VERSION, ver, len, NULL, 0, NULL),
                    ==, -EINVAL);
    g_assert_cmpint(tc_call(r.c, VFU_CMD_DEVICE_GET_REGION_IO_FDS, junk, 16,
                            NULL, 0, NULL), ==, 0);
    rogue_check_alive(&r);
    rogue_stop(&r);
}

/* Raw bytes on a fresh connection; the server must hang up on us. */
static void expect_hangup(const char *sock, const void *bytes, size_t len,
                          bool negotiate)
{
    VfuConn *c = negotiate ? tc_connect(sock) : tc_connect_raw(sock);
    g_autoptr(VfuMsg) msg = NULL;
    Error *err = NULL;
    gint64 start = g_get_monotonic_time();
    int r;

    g_assert(c);
    g_assert_cmpint(qio_channel_write_all(vfu_conn_ioc(c), bytes, len, NULL),
                    ==, 0);
    /* an error reply may come first, then EOF */
    do {
        g_clear_pointer(&msg, vfu_msg_free);
        r = vfu_conn_recv(c, &msg, true, &err);
    } while (r == 1);
    g_assert_cmpint(r, ==, -1);
    /* EOF from the server, not our own timeout */
    g_test_message("hangup: %s", error_get_pretty(err));
    g_assert_nonnull(strstr(error_get_pretty(err), "closed the connection"));
    g_assert_cmpint(g_get_monotonic_time() - start, <, 5 * G_USEC_PER_SEC);
    error_free(err);
    vfu_conn_free(c);
}

static void test_protocol_violations(void)
{
    Rogue r;
    VfuHeader h;

    rogue_start(&r, "proto");
    vfu_conn_free(r.c);
    r.c = NULL;

    /* size smaller than a header */
    h = (VfuHeader) { .msg_id = 1, .command = VFU_CMD_DEVICE_GET_INFO,
                      .size = 8 };
    expect_hangup(r.sock, &h, sizeof(h), true);
    /* size beyond any message we accept */
    h.size = 64 * 1024 * 1024;
    expect_hangup(r.sock, &h, sizeof(h), true);
    /* unknown flags, unknown type, error flag on a command */
    h = (VfuHeader) { .msg_id = 1, .command = VFU_CMD_DEVICE_RESET,
                      .size = sizeof(h), .flags = 1u << 12 };
    expect_hangup(r.sock, &h, sizeof(h), true);
    h.flags = 3;
    expect_hangup(r.sock, &h, sizeof(h), true);
    h.flags = VFU_F_ERROR;
    expect_hangup(r.sock, &h, sizeof(h), true);
    /* the first message is not VERSION */
    h = (VfuHeader) { .msg_id = 1, .command = VFU_CMD_DEVICE_RESET,
                      .size = sizeof(h) };
    expect_hangup(r.sock, &h, sizeof(h), false);
    /* VERSION with malformed capabilities */
    {
        struct QEMU_PACKED {
            VfuHeader h;
            VfuVersion v;
            char json[12];
        } m = {
            .h = { .msg_id = 1, .command = VFU_CMD_VERSION,
                   .size = sizeof(m) },
            .v = { .major = 0, .minor = 2 },
            .json = "{\"capab",
        };

        expect_hangup(r.sock, &m, sizeof(m), false);
        memcpy(m.json, "[1,2,3]", 8);
        expect_hangup(r.sock, &m, sizeof(m), false);
        memset(m.json, 'x', sizeof(m.json));   /* no NUL */
        expect_hangup(r.sock, &m, sizeof(m), false);
        memcpy(m.json, "{}", 3);
        m.v.major = 7;
        expect_hangup(r.sock, &m, sizeof(m), false);
    }
    rogue_stop(&r);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    /* the test client uses QIOChannelSocket */
    module_call_init(MODULE_INIT_QOM);
    qtest_add_func("/vfio-user/server-rogue/regions", test_regions);
    qtest_add_func("/vfio-user/server-rogue/dma", test_dma);
    qtest_add_func("/vfio-user/server-rogue/irqs", test_irqs);
    qtest_add_func("/vfio-user/server-rogue/commands", test_commands);
    qtest_add_func("/vfio-user/server-rogue/protocol-violations",
                   test_protocol_violations);
    return g_test_run();
}
