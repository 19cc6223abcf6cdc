/*
 * vfio-user-server on -M remote, driven by a client built on the shared
 * protocol core: device info, regions, edu's registers, DMA through fd
 * mappings and through DMA_READ/DMA_WRITE messages, interrupts, reset on
 * disconnect, run-time object-add/object-del, and libvfio-user's client.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "vfio-user/server-client.h"
#include "vfio-user/vm-helpers.h"
#include "qapi/qmp/qdict.h"
#include "hw/pci/pci_regs.h"

static void test_basic(void)
{
    g_autofree char *sock = tc_tmp_path("basic");
    QTestState *qts = tc_start_edu(sock, NULL);
    VfuConn *c = tc_connect(sock);
    g_autoptr(VfuMsg) reply = NULL;
    VfuDeviceInfo info = { .argsz = sizeof(info) };
    VfuRegionInfo ri = { .argsz = sizeof(ri) };
    VfuIrqInfo ii = { .argsz = sizeof(ii) };
    const VfuLimits *peer = vfu_conn_peer_limits(c);
    uint32_t expect_irqs[VFU_PCI_NUM_IRQS] = { 1, 1, 0, 0, 0 };

    /* our limits as advertised */
    g_assert_cmpuint(peer->max_msg_fds, ==, 8);
    g_assert_cmpuint(peer->max_data_xfer_size, ==, 1024 * 1024);
    g_assert_cmpuint(peer->max_dma_maps, ==, 1024);
    g_assert_cmpuint(peer->pgsizes, ==, 4096);
    g_assert_true(peer->write_multiple);

    g_assert_cmpint(tc_call(c, VFU_CMD_DEVICE_GET_INFO, &info, sizeof(info),
                            NULL, 0, &reply), ==, 0);
    info = *(VfuDeviceInfo *)reply->payload;
    g_assert_cmpuint(info.flags, ==, VFU_DEV_F_PCI | VFU_DEV_F_RESET);
    g_assert_cmpuint(info.num_regions, ==, 9);
    g_assert_cmpuint(info.num_irqs, ==, 5);
    g_clear_pointer(&reply, vfu_msg_free);

    ri.index = VFU_PCI_CONFIG_REGION;
    g_assert_cmpint(tc_call(c, VFU_CMD_DEVICE_GET_REGION_INFO, &ri,
                            sizeof(ri), NULL, 0, &reply), ==, 0);
    ri = *(VfuRegionInfo *)reply->payload;
    g_assert_cmpuint(ri.size, ==, 256);
    g_assert_cmpuint(ri.flags, ==, VFU_REGION_F_READ | VFU_REGION_F_WRITE);
    g_clear_pointer(&reply, vfu_msg_free);

    ri = (VfuRegionInfo) { .argsz = sizeof(ri), .index = 0 };
    g_assert_cmpint(tc_call(c, VFU_CMD_DEVICE_GET_REGION_INFO, &ri,
                            sizeof(ri), NULL, 0, &reply), ==, 0);
    ri = *(VfuRegionInfo *)reply->payload;
    g_assert_cmpuint(ri.index, ==, 0);
    g_assert_cmpuint(ri.size, ==, 1024 * 1024);
    g_assert_cmpuint(ri.flags, ==, VFU_REGION_F_READ | VFU_REGION_F_WRITE);
    g_clear_pointer(&reply, vfu_msg_free);

    ri = (VfuRegionInfo) { .argsz = sizeof(ri), .index = 1 };
    g_assert_cmpint(tc_call(c, VFU_CMD_DEVICE_GET_REGION_INFO, &ri,
                            sizeof(ri), NULL, 0, &reply), ==, 0);
    g_assert_cmpuint(((VfuRegionInfo *)reply->payload)->size, ==, 0);
    g_clear_pointer(&reply, vfu_msg_free);

    for (uint32_t i = 0; i < VFU_PCI_NUM_IRQS; i++) {
        ii = (VfuIrqInfo) { .argsz = sizeof(ii), .index = i };
        g_assert_cmpint(tc_call(c, VFU_CMD_DEVICE_GET_IRQ_INFO, &ii,
                                sizeof(ii), NULL, 0, &reply), ==, 0);
        g_assert_cmpuint(((VfuIrqInfo *)reply->payload)->count, ==,
                         expect_irqs[i]);
        g_assert_true(((VfuIrqInfo *)reply->payload)->flags &
                      VFU_IRQ_INFO_F_EVENTFD);
        g_clear_pointer(&reply, vfu_msg_free);
    }

    /* config space and edu's registers */
    g_assert_cmphex(tc_read(c, VFU_PCI_CONFIG_REGION, PCI_VENDOR_ID, 2), ==,
                    0x1234);
    g_assert_cmphex(tc_read(c, VFU_PCI_CONFIG_REGION, PCI_DEVICE_ID, 2), ==,
                    0x11e8);
    g_assert_cmphex(tc_read(c, VFU_PCI_CONFIG_REGION, 0, 4), ==, 0x11e81234);
    g_assert_cmphex(tc_read(c, 0, EDU_ID, 4), ==, 0x010000ed);
    tc_write(c, 0, EDU_LIVENESS, 4, 0x12345678);
    g_assert_cmphex(tc_read(c, 0, EDU_LIVENESS, 4), ==, ~0x12345678u);

    tc_write(c, 0, EDU_FACT, 4, 5);
    for (int i = 0; i < 500 && (tc_read(c, 0, EDU_STATUS, 4) & 1); i++) {
        g_usleep(10 * 1000);
    }
    g_assert_cmpuint(tc_read(c, 0, EDU_FACT, 4), ==, 120);

    /* REGION_WRITE_MULTI: two writes, applied in order */
    {
        g_autofree VfuWriteMulti *m =
            g_malloc0(sizeof(*m) + 2 * sizeof(VfuWriteMultiEntry));

        m->wr_cnt = 2;
        m->wrs[0] = (VfuWriteMultiEntry) { .offset = EDU_LIVENESS,
                                           .region = 0, .count = 4 };
        stl_le_p(m->wrs[0].data, 1);
        m->wrs[1] = (VfuWriteMultiEntry) { .offset = EDU_LIVENESS,
                                           .region = 0, .count = 4 };
        stl_le_p(m->wrs[1].data, 0xf0);
        g_assert_cmpint(tc_call(c, VFU_CMD_REGION_WRITE_MULTI, m,
                                sizeof(*m) + 2 * sizeof(VfuWriteMultiEntry),
                                NULL, 0, &reply), ==, 0);
        g_assert_cmpuint(*(uint64_t *)reply->payload, ==, 2);
        g_clear_pointer(&reply, vfu_msg_free);
        g_assert_cmphex(tc_read(c, 0, EDU_LIVENESS, 4), ==, ~0xf0u);
    }

    /* DEVICE_RESET puts config space back */
    tc_write(c, VFU_PCI_CONFIG_REGION, PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
    g_assert_cmphex(tc_read(c, VFU_PCI_CONFIG_REGION, PCI_COMMAND, 2), ==,
                    PCI_COMMAND_MEMORY);
    g_assert_cmpint(tc_call(c, VFU_CMD_DEVICE_RESET, NULL, 0, NULL, 0, NULL),
                    ==, 0);
    g_assert_cmphex(tc_read(c, VFU_PCI_CONFIG_REGION, PCI_COMMAND, 2), ==, 0);

    vfu_conn_free(c);
    qtest_quit(qts);
}

static void fill_pattern(uint8_t *p, size_t n, uint8_t seed)
{
    for (size_t i = 0; i < n; i++) {
        p[i] = seed + i * 7;
    }
}

static void test_dma_fd(void)
{
    g_autofree char *sock = tc_tmp_path("dmafd");
    QTestState *qts = tc_start_edu(sock, NULL);
    VfuConn *c = tc_connect(sock);
    const size_t len = 0x4000;
    uint8_t pattern[256], ones[256];
    uint8_t *mem;
    int fd;

    /* the server maps only memory we cannot shrink under it */
    fd = memfd_create("vfu-test", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(ftruncate(fd, len), ==, 0);
    g_assert_cmpint(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK), ==, 0);
    mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    g_assert(mem != MAP_FAILED);
    fill_pattern(pattern, sizeof(pattern), 3);
    memcpy(mem, pattern, sizeof(pattern));
    memset(ones, 0xff, sizeof(ones));

    g_assert_cmpint(tc_dma_map(c, 0x100000, len, 0,
                               VFU_DMA_MAP_F_READ | VFU_DMA_MAP_F_WRITE, fd),
                    ==, 0);
    /* the device may DMA only once the client allows bus mastering */
    tc_write(c, VFU_PCI_CONFIG_REGION, PCI_COMMAND, 2, PCI_COMMAND_MASTER);

    /* client memory -> edu -> client memory elsewhere */
    tc_edu_dma(c, 0x100000, EDU_DMA_BUF, sizeof(pattern), false);
    tc_edu_dma(c, EDU_DMA_BUF, 0x102000, sizeof(pattern), true);
    g_assert_cmpmem(mem + 0x2000, sizeof(pattern), pattern, sizeof(pattern));

    /* outside any mapping: a master abort, reads as all ones */
    tc_edu_dma(c, 0x800000, EDU_DMA_BUF, sizeof(pattern), false);
    tc_edu_dma(c, EDU_DMA_BUF, 0x103000, sizeof(pattern), true);
    g_assert_cmpmem(mem + 0x3000, sizeof(pattern), ones, sizeof(ones));

    /* after UNMAP the memory is out of reach at once */
    g_assert_cmpint(tc_dma_unmap(c, 0x100000, len, 0), ==, 0);
    memset(mem + 0x1000, 0x5a, sizeof(pattern));
    tc_edu_dma(c, EDU_DMA_BUF, 0x101000, sizeof(pattern), true);
    for (size_t i = 0; i < sizeof(pattern); i++) {
        g_assert_cmphex(mem[0x1000 + i], ==, 0x5a);
    }
    g_assert_cmpint(tc_dma_unmap(c, 0x100000, len, 0), ==, -ENOENT);

    /* a read-only mapping: the device cannot write it */
    g_assert_cmpint(tc_dma_map(c, 0x100000, len, 0, VFU_DMA_MAP_F_READ, fd),
                    ==, 0);
    tc_edu_dma(c, EDU_DMA_BUF, 0x101000, sizeof(pattern), true);
    g_assert_cmphex(mem[0x1000], ==, 0x5a);
    /* unmap-all */
    g_assert_cmpint(tc_dma_unmap(c, 0, 0, VFU_DMA_UNMAP_F_ALL), ==, 0);
    g_assert_cmpint(tc_dma_unmap(c, 0x100000, len, 0), ==, -ENOENT);

    munmap(mem, len);
    close(fd);
    vfu_conn_free(c);
    qtest_quit(qts);
}

static void test_dma_msg(void)
{
    g_autofree char *sock = tc_tmp_path("dmamsg");
    QTestState *qts = tc_start_edu(sock, NULL);
    VfuConn *c = tc_connect(sock);
    MsgDmaMem m = { .base = 0x200000 };
    uint8_t pattern[64];

    fill_pattern(pattern, sizeof(pattern), 11);
    memcpy(m.buf, pattern, sizeof(pattern));
    vfu_conn_set_request_func(c, serve_dma, &m);

    g_assert_cmpint(tc_dma_map(c, m.base, sizeof(m.buf), 0,
                               VFU_DMA_MAP_F_READ | VFU_DMA_MAP_F_WRITE, -1),
                    ==, 0);
    tc_write(c, VFU_PCI_CONFIG_REGION, PCI_COMMAND, 2, PCI_COMMAND_MASTER);
    tc_edu_dma(c, m.base, EDU_DMA_BUF, sizeof(pattern), false);
    tc_edu_dma(c, EDU_DMA_BUF, m.base + 0x800, sizeof(pattern), true);
    g_assert_cmpmem(m.buf + 0x800, sizeof(pattern), pattern, sizeof(pattern));
    g_assert_cmpuint(m.reads, >, 0);
    g_assert_cmpuint(m.writes, >, 0);

    vfu_conn_free(c);
    qtest_quit(qts);
}

/*
 * Memory whose fd is not sealed against shrinking: by default the server
 * reaches it by message (and survives the file being emptied);
 * map-unsealed-fds=on, given on the command line, maps it.
 */
static void test_dma_unsealed(void)
{
    g_autofree char *sock = tc_tmp_path("unsealed");
    MsgDmaMem m = { .base = 0x200000 };
    uint8_t pattern[64];

    fill_pattern(pattern, sizeof(pattern), 5);
    memcpy(m.buf, pattern, sizeof(pattern));
    for (int trust = 0; trust < 2; trust++) {
        QTestState *qts = qtest_initf("-M remote -accel tcg -nodefaults "
                                      "-device edu,id=e0 "
                                      "-object vfio-user-server,id=v0,"
                                      "socket=%s,device=e0,timeout=2500,"
                                      "map-unsealed-fds=%s", sock,
                                      trust ? "on" : "off");
        VfuConn *c = tc_connect(sock);
        int fd = memfd_create("vfu-unsealed", MFD_CLOEXEC);
        QDict *rsp;
        uint8_t *mem;

        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(ftruncate(fd, sizeof(m.buf)), ==, 0);
        mem = mmap(NULL, sizeof(m.buf), PROT_READ | PROT_WRITE, MAP_SHARED,
                   fd, 0);
        g_assert(mem != MAP_FAILED);
        memcpy(mem, pattern, sizeof(pattern));
        m.reads = m.writes = 0;
        vfu_conn_set_request_func(c, serve_dma, &m);

        g_assert_cmpint(tc_dma_map(c, m.base, sizeof(m.buf), 0,
                                   VFU_DMA_MAP_F_READ | VFU_DMA_MAP_F_WRITE,
                                   fd), ==, 0);
        tc_write(c, VFU_PCI_CONFIG_REGION, PCI_COMMAND, 2,
                 PCI_COMMAND_MASTER);
        if (!trust) {
            /* what we do to the file does not matter to the server */
            munmap(mem, sizeof(m.buf));
            g_assert_cmpint(ftruncate(fd, 0), ==, 0);
        }
        tc_edu_dma(c, m.base, EDU_DMA_BUF, sizeof(pattern), false);
        tc_edu_dma(c, EDU_DMA_BUF, m.base + 0x800, sizeof(pattern), true);
        if (trust) {
            g_assert_cmpmem(mem + 0x800, sizeof(pattern), pattern,
                            sizeof(pattern));
            g_assert_cmpuint(m.reads + m.writes, ==, 0);
            munmap(mem, sizeof(m.buf));
        } else {
            g_assert_cmpmem(m.buf + 0x800, sizeof(pattern), pattern,
                            sizeof(pattern));
            g_assert_cmpuint(m.reads, >, 0);
            g_assert_cmpuint(m.writes, >, 0);
        }
        close(fd);

        /* -object took the timeout too */
        rsp = qtest_qmp(qts, "{ 'execute': 'qom-get', 'arguments': "
                        "{ 'path': '/objects/v0', 'property': 'timeout' } }");
        g_assert_cmpint(qdict_get_int(rsp, "return"), ==, 2500);
        qobject_unref(rsp);
        vfu_conn_free(c);
        qtest_quit(qts);
    }
}

/*
 * A client that writes the BAR registers, as QEMU's vfio code does: the
 * server keeps them from the device (which stays where the client cannot
 * stack it on another device), the BAR is still reached by region, and
 * the device's own DMA finds the BAR at the client's address.
 */
static void test_bar_writes(void)
{
    g_autofree char *sock = tc_tmp_path("barw");
    QTestState *qts = tc_start_edu(sock, NULL);
    VfuConn *c = tc_connect(sock);
    uint32_t bar0 = tc_read(c, VFU_PCI_CONFIG_REGION, PCI_BASE_ADDRESS_0, 4);

    tc_write(c, VFU_PCI_CONFIG_REGION, PCI_BASE_ADDRESS_0, 4, 0xffffffff);
    /* below 256 MiB: edu clamps its DMA addresses to 28 bits */
    tc_write(c, VFU_PCI_CONFIG_REGION, PCI_BASE_ADDRESS_0, 4, 0x08000000);
    tc_write(c, VFU_PCI_CONFIG_REGION, PCI_ROM_ADDRESS, 4, 0xfff00001);
    tc_write(c, VFU_PCI_CONFIG_REGION, PCI_COMMAND, 2,
             PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
    g_assert_cmphex(tc_read(c, VFU_PCI_CONFIG_REGION, PCI_BASE_ADDRESS_0, 4),
                    ==, bar0);
    g_assert_cmphex(tc_read(c, VFU_PCI_CONFIG_REGION, PCI_COMMAND, 2), ==,
                    PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
    g_assert_cmphex(tc_read(c, 0, EDU_ID, 4), ==, 0x010000ed);
    tc_write(c, 0, EDU_LIVENESS, 4, 0x55);
    g_assert_cmphex(tc_read(c, 0, EDU_LIVENESS, 4), ==, ~0x55u);

    /*
     * The device reaches its own BAR by DMA where the client placed it:
     * its ID register into its buffer, and back into its liveness
     * register (which reads back inverted).
     */
    tc_edu_dma(c, 0x08000000 + EDU_ID, EDU_DMA_BUF, 4, false);
    tc_edu_dma(c, EDU_DMA_BUF, 0x08000000 + EDU_LIVENESS, 4, true);
    g_assert_cmphex(tc_read(c, 0, EDU_LIVENESS, 4), ==, ~0x010000edu);
    /* ... and not with memory decoding off */
    tc_write(c, 0, EDU_LIVENESS, 4, 0x55);
    tc_write(c, VFU_PCI_CONFIG_REGION, PCI_COMMAND, 2, PCI_COMMAND_MASTER);
    tc_edu_dma(c, EDU_DMA_BUF, 0x08000000 + EDU_LIVENESS, 4, true);
    g_assert_cmphex(tc_read(c, 0, EDU_LIVENESS, 4), ==, ~0x55u);
    vfu_conn_free(c);
    qtest_quit(qts);
}

static uint8_t find_cap(VfuConn *c, uint8_t id)
{
    uint8_t pos = tc_read(c, VFU_PCI_CONFIG_REGION, PCI_CAPABILITY_LIST, 1);

    while (pos) {
        if (tc_read(c, VFU_PCI_CONFIG_REGION, pos, 1) == id) {
            return pos;
        }
        pos = tc_read(c, VFU_PCI_CONFIG_REGION, pos + 1, 1);
    }
    return 0;
}

static void test_irq(void)
{
    g_autofree char *sock = tc_tmp_path("irq");
    QTestState *qts = tc_start_edu(sock, NULL);
    VfuConn *c = tc_connect(sock);
    int intx = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    int msi = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    uint8_t bools[1] = { 1 };
    uint8_t cap;

    /*
     * The server signals an eventfd from the handler of the request that
     * raised or unmasked the interrupt, before its reply: every check
     * below reads the eventfd right after a reply, without waiting.  The
     * ones that expect a signal show this holds; the ones that expect
     * none then need no time to pass.
     */

    /* INTx: delivered, then automasked until the client unmasks */
    g_assert_cmpint(tc_set_irqs(c, VFU_IRQ_SET_DATA_EVENTFD |
                                VFU_IRQ_SET_ACTION_TRIGGER,
                                VFU_PCI_INTX_IRQ, 0, 1, &intx, 1), ==, 0);
    tc_write(c, 0, EDU_IRQ_RAISE, 4, 1);
    g_assert_cmpuint(tc_eventfd_wait(intx, 0), ==, 1);
    tc_write(c, 0, EDU_IRQ_ACK, 4, 1);
    tc_write(c, 0, EDU_IRQ_RAISE, 4, 1);
    g_assert_cmpuint(tc_eventfd_wait(intx, 0), ==, 0);
    g_assert_cmpint(tc_set_irqs(c, VFU_IRQ_SET_DATA_NONE |
                                VFU_IRQ_SET_ACTION_UNMASK,
                                VFU_PCI_INTX_IRQ, 0, 1, NULL, 0), ==, 0);
    g_assert_cmpuint(tc_eventfd_wait(intx, 0), ==, 1);
    tc_write(c, 0, EDU_IRQ_ACK, 4, 1);
    g_assert_cmpint(tc_set_irqs(c, VFU_IRQ_SET_DATA_NONE |
                                VFU_IRQ_SET_ACTION_UNMASK,
                                VFU_PCI_INTX_IRQ, 0, 1, NULL, 0), ==, 0);
    g_assert_cmpuint(tc_eventfd_wait(intx, 0), ==, 0);

    /* MSI: enable it in config space, then edu uses it */
    cap = find_cap(c, PCI_CAP_ID_MSI);
    g_assert_cmpuint(cap, !=, 0);
    g_assert_cmpint(tc_set_irqs(c, VFU_IRQ_SET_DATA_EVENTFD |
                                VFU_IRQ_SET_ACTION_TRIGGER,
                                VFU_PCI_MSI_IRQ, 0, 1, &msi, 1), ==, 0);
    tc_write(c, VFU_PCI_CONFIG_REGION, PCI_COMMAND, 2, PCI_COMMAND_MASTER);
    tc_write(c, VFU_PCI_CONFIG_REGION, cap + PCI_MSI_FLAGS, 2,
             PCI_MSI_FLAGS_ENABLE);
    tc_write(c, 0, EDU_IRQ_RAISE, 4, 2);
    g_assert_cmpuint(tc_eventfd_wait(msi, 0), ==, 1);
    g_assert_cmpuint(tc_eventfd_wait(intx, 0), ==, 0);

    /* masked MSI stays pending until unmasked */
    g_assert_cmpint(tc_set_irqs(c, VFU_IRQ_SET_DATA_BOOL |
                                VFU_IRQ_SET_ACTION_MASK,
                                VFU_PCI_MSI_IRQ, 0, 1, NULL, 0) , ==, -EINVAL);
    {
        g_autofree VfuIrqSet *s = g_malloc0(sizeof(*s) + 1);

        *s = (VfuIrqSet) { .argsz = sizeof(*s) + 1,
                           .flags = VFU_IRQ_SET_DATA_BOOL |
                                    VFU_IRQ_SET_ACTION_MASK,
                           .index = VFU_PCI_MSI_IRQ, .start = 0, .count = 1 };
        memcpy(s->data, bools, 1);
        g_assert_cmpint(tc_call(c, VFU_CMD_DEVICE_SET_IRQS, s, sizeof(*s) + 1,
                                NULL, 0, NULL), ==, 0);
    }
    tc_write(c, 0, EDU_IRQ_RAISE, 4, 4);
    g_assert_cmpuint(tc_eventfd_wait(msi, 0), ==, 0);
    g_assert_cmpint(tc_set_irqs(c, VFU_IRQ_SET_DATA_NONE |
                                VFU_IRQ_SET_ACTION_UNMASK,
                                VFU_PCI_MSI_IRQ, 0, 1, NULL, 0), ==, 0);
    g_assert_cmpuint(tc_eventfd_wait(msi, 0), ==, 1);

    /* the client can trigger an interrupt itself (loopback) */
    g_assert_cmpint(tc_set_irqs(c, VFU_IRQ_SET_DATA_NONE |
                                VFU_IRQ_SET_ACTION_TRIGGER,
                                VFU_PCI_MSI_IRQ, 0, 1, NULL, 0), ==, 0);
    g_assert_cmpuint(tc_eventfd_wait(msi, 0), ==, 1);

    /* de-assign: no more signals */
    g_assert_cmpint(tc_set_irqs(c, VFU_IRQ_SET_DATA_EVENTFD |
                                VFU_IRQ_SET_ACTION_TRIGGER,
                                VFU_PCI_MSI_IRQ, 0, 1, NULL, 0), ==, 0);
    g_assert_cmpint(tc_set_irqs(c, VFU_IRQ_SET_DATA_NONE |
                                VFU_IRQ_SET_ACTION_TRIGGER,
                                VFU_PCI_MSI_IRQ, 0, 1, NULL, 0), ==, 0);
    g_assert_cmpuint(tc_eventfd_wait(msi, 0), ==, 0);

    close(intx);
    close(msi);
    vfu_conn_free(c);
    qtest_quit(qts);
}

/*
 * A client that does not wait for the VERSION reply: what it sent behind
 * VERSION comes in the same read, and must be served all the same (the
 * server's buffered receive once left it in its buffer for good).
 */
static void test_pipelined_after_version(void)
{
    g_autofree char *sock = tc_tmp_path("pipelined");
    QTestState *qts = tc_start_edu(sock, NULL);
    VfuConn *c = tc_connect_raw(sock);
    g_autofree void *version = NULL;
    VfuDeviceInfo info = { .argsz = sizeof(info) };
    VfuRegionAccess rd = { .offset = EDU_ID, .region = 0, .count = 4 };
    g_autoptr(GByteArray) wire = g_byte_array_new();
    VfuLimits lim;
    size_t len;

    g_assert(c);
    tc_limits(&lim);
    version = vfu_version_encode(VFU_VERSION_MAJOR, VFU_VERSION_MINOR, &lim,
                                 &len);
    /* three requests, one write */
    for (int i = 0; i < 3; i++) {
        static const uint16_t cmds[] = {
            VFU_CMD_VERSION, VFU_CMD_DEVICE_GET_INFO, VFU_CMD_REGION_READ,
        };
        void *payload = i == 0 ? version : i == 1 ? (void *)&info : &rd;
        size_t plen = i == 0 ? len : i == 1 ? sizeof(info) : sizeof(rd);
        VfuHeader hdr = {
            .msg_id = i + 1, .command = cmds[i],
            .size = sizeof(hdr) + plen, .flags = VFU_F_TYPE_COMMAND,
        };
        uint8_t h[sizeof(hdr)];

        vfu_header_encode(&hdr, h);
        vfu_payload_encode(cmds[i], false, payload, plen);
        g_byte_array_append(wire, h, sizeof(h));
        g_byte_array_append(wire, payload, plen);
    }
    g_assert_cmpint(qio_channel_write_all(vfu_conn_ioc(c), (char *)wire->data,
                                          wire->len, NULL), ==, 0);
    for (int i = 1; i <= 3; i++) {
        g_autoptr(VfuMsg) m = NULL;

        g_assert_cmpint(vfu_conn_recv(c, &m, true, &error_abort), ==, 1);
        g_assert(vfu_msg_is_reply(m));
        g_assert_cmpuint(m->hdr.msg_id, ==, i);
        g_assert_false(m->hdr.flags & VFU_F_ERROR);
        if (i == 3) {
            g_assert_cmpint(vfu_msg_decode(m, &lim, &error_abort), ==, 0);
            g_assert_cmphex(ldl_le_p(m->payload + sizeof(rd)), ==,
                            0x010000ed);
        }
    }
    vfu_conn_free(c);
    qtest_quit(qts);
}

/*
 * QEMU exits (SIGTERM) while a client is connected: the server lets the
 * client go before the device's backends are cleaned up.  Without that,
 * the object's finalization reset an e1000 whose NIC was freed already
 * (SIGSEGV in e1000_reset(), or a use-after-free under ASan).
 */
static void test_exit_with_client(void)
{
    g_autofree char *sock = tc_tmp_path("exit");
    QTestState *qts = qtest_initf("-M remote -accel tcg -nodefaults "
                                  "-device e1000,id=n0,romfile= "
                                  "-object vfio-user-server,id=v0,socket=%s,"
                                  "device=n0", sock);
    VfuConn *c = tc_connect(sock);

    /* e1000's vendor and device ids: the client is really served */
    g_assert_cmphex(tc_read(c, VFU_PCI_CONFIG_REGION, PCI_VENDOR_ID, 4), ==,
                    0x100e8086);
    /* qtest_quit() fails the test if QEMU died of a signal */
    qtest_quit(qts);
    vfu_conn_free(c);
}

static void test_reset_on_disconnect(void)
{
    g_autofree char *sock = tc_tmp_path("reset");
    QTestState *qts = tc_start_edu(sock, NULL);
    VfuConn *c = tc_connect(sock);
    g_autoptr(VfuMsg) msg = NULL;
    Error *err = NULL;

    /* leave state behind, then vanish while the server waits on a DMA */
    g_assert_cmpint(tc_dma_map(c, 0x200000, 0x1000, 0,
                               VFU_DMA_MAP_F_READ | VFU_DMA_MAP_F_WRITE, -1),
                    ==, 0);
    tc_write(c, VFU_PCI_CONFIG_REGION, PCI_COMMAND, 2,
             PCI_COMMAND_MASTER | PCI_COMMAND_MEMORY);
    tc_write(c, VFU_PCI_CONFIG_REGION, PCI_INTERRUPT_LINE, 1, 0x42);
    tc_edu_dma_start(c, 0x200000, EDU_DMA_BUF, 16, EDU_DMA_RUN);
    g_assert_cmpint(vfu_conn_recv(c, &msg, true, &err), ==, 1);
    g_assert_cmpuint(msg->hdr.command, ==, VFU_CMD_DMA_READ);
    vfu_conn_free(c);

    /* the next client gets a fresh device and no mappings */
    c = tc_connect(sock);
    g_assert_cmphex(tc_read(c, VFU_PCI_CONFIG_REGION, PCI_COMMAND, 2), ==, 0);
    g_assert_cmphex(tc_read(c, VFU_PCI_CONFIG_REGION, PCI_INTERRUPT_LINE, 1),
                    ==, 0);
    g_assert_cmpint(tc_dma_unmap(c, 0x200000, 0x1000, 0), ==, -ENOENT);
    g_assert_cmphex(tc_read(c, 0, EDU_ID, 4), ==, 0x010000ed);
    vfu_conn_free(c);

    /* a client that goes away mid-message does not hurt either */
    c = tc_connect_raw(sock);
    g_assert(c);
    {
        uint8_t partial[10] = { 1, 0, VFU_CMD_VERSION, 0, 64, 0 };

        g_assert_cmpint(qio_channel_write_all(vfu_conn_ioc(c), (char *)partial,
                                              sizeof(partial), NULL), ==, 0);
    }
    vfu_conn_free(c);
    c = tc_connect(sock);
    g_assert_cmphex(tc_read(c, 0, EDU_ID, 4), ==, 0x010000ed);
    vfu_conn_free(c);
    qtest_quit(qts);
}

static void test_object_add_del(void)
{
    g_autofree char *sock = tc_tmp_path("add0");
    g_autofree char *sock1 = tc_tmp_path("add1");
    g_autofree char *sock2 = tc_tmp_path("add2");
    g_autofree char *sock3 = tc_tmp_path("add3");
    QTestState *qts = tc_start_edu(sock, NULL);
    VfuConn *c;
    QDict *rsp;

    /* a second device and its server at run time */
    qtest_qmp_assert_success(qts, "{ 'execute': 'device_add', 'arguments': "
                             "{ 'driver': 'edu', 'id': 'e1' } }");
    qtest_qmp_assert_success(qts, "{ 'execute': 'object-add', 'arguments': "
                             "{ 'qom-type': 'vfio-user-server', 'id': 'v1', "
                             "'socket': %s, 'device': 'e1' } }", sock1);
    c = tc_connect(sock1);
    g_assert_cmphex(tc_read(c, 0, EDU_ID, 4), ==, 0x010000ed);
    tc_write(c, 0, EDU_LIVENESS, 4, 7);
    vfu_conn_free(c);

    /* a live socket is never replaced; a device is exported once */
    rsp = qtest_qmp(qts, "{ 'execute': 'object-add', 'arguments': "
                    "{ 'qom-type': 'vfio-user-server', 'id': 'v2', "
                    "'socket': %s, 'device': 'e1' } }", sock);
    g_assert(qdict_haskey(rsp, "error"));
    qobject_unref(rsp);
    rsp = qtest_qmp(qts, "{ 'execute': 'object-add', 'arguments': "
                    "{ 'qom-type': 'vfio-user-server', 'id': 'v3', "
                    "'socket': %s, 'device': 'e0' } }", sock2);
    g_assert(qdict_haskey(rsp, "error"));
    qobject_unref(rsp);
    rsp = qtest_qmp(qts, "{ 'execute': 'object-add', 'arguments': "
                    "{ 'qom-type': 'vfio-user-server', 'id': 'v4', "
                    "'socket': %s, 'device': 'nosuch' } }", sock3);
    g_assert(qdict_haskey(rsp, "error"));
    qobject_unref(rsp);

    /* an exported device cannot be unplugged */
    rsp = qtest_qmp(qts, "{ 'execute': 'device_del', 'arguments': "
                    "{ 'id': 'e1' } }");
    g_assert(qdict_haskey(rsp, "error"));
    qobject_unref(rsp);

    /* object-del closes the socket */
    qtest_qmp_assert_success(qts, "{ 'execute': 'object-del', 'arguments': "
                             "{ 'id': 'v1' } }");
    g_assert_false(g_file_test(sock1, G_FILE_TEST_EXISTS));
    /* ... and the device can be exported again */
    qtest_qmp_assert_success(qts, "{ 'execute': 'object-add', 'arguments': "
                             "{ 'qom-type': 'vfio-user-server', 'id': 'v1', "
                             "'socket': %s, 'device': 'e1' } }", sock1);
    c = tc_connect(sock1);
    g_assert_cmphex(tc_read(c, 0, EDU_ID, 4), ==, 0x010000ed);
    vfu_conn_free(c);

    /* the first server was not disturbed */
    c = tc_connect(sock);
    g_assert_cmphex(tc_read(c, 0, EDU_ID, 4), ==, 0x010000ed);
    vfu_conn_free(c);
    qtest_quit(qts);
}

/*
 * What the server's trace (-trace vfio_user_version, vfio_user_srv_*)
 * shows of the connection after the @nth accept: its requests in order,
 * a failed one with its errno, repeats as "xN".
 */
static char *served_requests(const char *log, unsigned nth)
{
    g_autofree char *text = NULL;
    g_auto(GStrv) lines = NULL;
    g_autoptr(GPtrArray) seen = g_ptr_array_new_with_free_func(g_free);
    GString *out = g_string_new("");
    unsigned accepts = 0;

    g_assert(g_file_get_contents(log, &text, NULL, NULL));
    lines = g_strsplit(text, "\n", -1);
    for (char **l = lines; *l; l++) {
        const char *failed = strstr(*l, "vfio_user_srv_request_failed ");
        const char *req = strstr(*l, "vfio_user_srv_request ");

        if (strstr(*l, "vfio_user_srv_accept ")) {
            accepts++;
        } else if (accepts != nth) {
            continue;
        } else if (strstr(*l, "vfio_user_version ")) {
            g_ptr_array_add(seen, g_strdup("VERSION"));
        } else if (failed) {
            char cmd[64];
            int e;

            g_assert_cmpint(sscanf(failed, "vfio_user_srv_request_failed %*s "
                                   "id %*u %63s failed, errno %d", cmd, &e),
                            ==, 2);
            g_assert(seen->len && g_str_equal(seen->pdata[seen->len - 1],
                                              cmd));
            g_free(seen->pdata[seen->len - 1]);
            seen->pdata[seen->len - 1] = g_strdup_printf(
                "%s -> %s", cmd, strerrorname_np(e));
        } else if (req) {
            g_ptr_array_add(seen, g_strdup(strrchr(req, ' ') + 1));
        }
    }
    for (guint i = 0; i < seen->len;) {
        guint n = 1;

        while (i + n < seen->len &&
               g_str_equal(seen->pdata[i], seen->pdata[i + n])) {
            n++;
        }
        g_string_append_printf(out, "%s%s", out->len ? ", " : "",
                               (char *)seen->pdata[i]);
        if (n > 1) {
            g_string_append_printf(out, " x%u", n);
        }
        i += n;
    }
    return g_string_free(out, false);
}

/*
 * libvfio-user's sample client is written for its own sample server (a
 * device with a migration region, ten regions in all, 0xdead:0xbeef
 * ids).  Against edu it negotiates, has a read of a bogus region refused
 * with EINVAL, asks for the device info and stops there, as edu has nine
 * regions.  Exactly these requests must reach the server, the sample
 * must end with that complaint alone and status 1, and the server must
 * serve the next client.
 */
static void test_libvfio_user_client(void)
{
    const char *peers = g_getenv("VFIO_USER_PEERS");
    g_autofree char *sock = tc_tmp_path("lvu");
    g_autofree char *log = tc_tmp_path("lvu-trace");
    g_autofree char *client = NULL;
    g_autofree char *out = NULL, *err = NULL, *served = NULL;
    g_autofree char *extra = NULL;
    g_autoptr(GError) gerr = NULL;
    QTestState *qts;
    VfuConn *c;
    int status;

    g_assert(peers);
    client = g_build_filename(peers, "client", NULL);
    g_assert_true(g_file_test(client, G_FILE_TEST_IS_EXECUTABLE));
    unlink(log);
    extra = g_strdup_printf("-trace vfio_user_version -trace "
                            "vfio_user_srv_* -D %s", log);
    qts = tc_start_edu(sock, extra);
    c = tc_connect(sock);        /* wait until it listens */
    vfu_conn_free(c);

    {
        const char *argv[] = { client, sock, NULL };

        g_assert_true(g_spawn_sync(NULL, (char **)argv, NULL, 0, NULL, NULL,
                                   &out, &err, &status, &gerr));
    }
    g_test_message("client stdout: %s", out);
    g_test_message("client stderr: %s", err);
    /*
     * Its warning on the refused read (as it expects), then errx(1, ...)
     * in its get_device_info(), and nothing else.
     */
    g_assert_true(WIFEXITED(status));
    g_assert_cmpint(WEXITSTATUS(status), ==, 1);
    g_assert_cmpstr(err, ==, "client: failed to read from region -559038737 "
                    "0-0x3: Invalid argument\n"
                    "client: bad number of device regions 9\n");

    /* the server saw the sample leave, then exactly its requests */
    g_assert_cmpuint(vu_wait_in_file(log, "vfio_user_srv_disconnect ", 1),
                     ==, 2);
    served = served_requests(log, 2);
    g_assert_cmpstr(served, ==,
                    "VERSION, REGION_READ -> EINVAL, DEVICE_GET_INFO");
    /* picked up by make check's interop table */
    g_test_message("interop: %s (9 regions); stops: the sample expects its "
                   "own device (10 regions), exit 1", served);

    c = tc_connect(sock);
    g_assert_cmphex(tc_read(c, 0, EDU_ID, 4), ==, 0x010000ed);
    vfu_conn_free(c);
    qtest_quit(qts);
    unlink(log);
}

/* Two devices in one process, each on its own socket: edu and nvme */
static void test_nvme(void)
{
    g_autofree char *sock = tc_tmp_path("nv-edu");
    g_autofree char *nsock = tc_tmp_path("nvme");
    g_autofree char *extra = g_strdup_printf(
        "-blockdev null-co,node-name=d0 "
        "-device nvme,id=n0,serial=s0,drive=d0 "
        "-object vfio-user-server,id=v1,socket=%s,device=n0", nsock);
    QTestState *qts = tc_start_edu(sock, extra);
    VfuConn *n = tc_connect(nsock);
    VfuConn *e = tc_connect(sock);
    g_autoptr(VfuMsg) reply = NULL;
    VfuIrqInfo ii = { .argsz = sizeof(ii), .index = VFU_PCI_MSIX_IRQ };
    uint64_t cap;

    g_assert_cmphex(tc_read(n, VFU_PCI_CONFIG_REGION, PCI_VENDOR_ID, 2), ==,
                    0x1b36);
    g_assert_cmphex(tc_read(n, VFU_PCI_CONFIG_REGION, PCI_DEVICE_ID, 2), ==,
                    0x0010);
    /* CAP is a 64-bit register: one 8-byte access */
    cap = tc_read(n, 0, 0, 8);
    g_assert_cmphex(cap, !=, 0);
    g_assert_cmphex(cap & 0xffff, ==, tc_read(n, 0, 0, 2));
    g_assert_cmphex(tc_read(n, 0, 8, 4), >=, 0x10200);
    g_assert_cmpint(tc_call(n, VFU_CMD_DEVICE_GET_IRQ_INFO, &ii, sizeof(ii),
                            NULL, 0, &reply), ==, 0);
    g_assert_cmpuint(((VfuIrqInfo *)reply->payload)->count, >, 1);
    g_assert_true(((VfuIrqInfo *)reply->payload)->flags &
                  VFU_IRQ_INFO_F_MASKABLE);
    g_assert_cmphex(tc_read(e, 0, EDU_ID, 4), ==, 0x010000ed);

    /* dropping one client resets its device only: edu's, not nvme's */
    tc_write(e, VFU_PCI_CONFIG_REGION, PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
    tc_write(e, VFU_PCI_CONFIG_REGION, PCI_INTERRUPT_LINE, 1, 0x42);
    tc_write(n, VFU_PCI_CONFIG_REGION, PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
    tc_write(n, VFU_PCI_CONFIG_REGION, PCI_INTERRUPT_LINE, 1, 0x43);
    vfu_conn_free(e);
    e = tc_connect(sock);
    g_assert_cmphex(tc_read(e, VFU_PCI_CONFIG_REGION, PCI_COMMAND, 2), ==, 0);
    g_assert_cmphex(tc_read(e, VFU_PCI_CONFIG_REGION, PCI_INTERRUPT_LINE, 1),
                    ==, 0);
    g_assert_cmphex(tc_read(n, VFU_PCI_CONFIG_REGION, PCI_COMMAND, 2), ==,
                    PCI_COMMAND_MEMORY);
    g_assert_cmphex(tc_read(n, VFU_PCI_CONFIG_REGION, PCI_INTERRUPT_LINE, 1),
                    ==, 0x43);
    vfu_conn_free(e);
    vfu_conn_free(n);
    qtest_quit(qts);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    /* the test client uses QIOChannelSocket */
    module_call_init(MODULE_INIT_QOM);
    qtest_add_func("/vfio-user/server/basic", test_basic);
    qtest_add_func("/vfio-user/server/dma-fd", test_dma_fd);
    qtest_add_func("/vfio-user/server/dma-msg", test_dma_msg);
    qtest_add_func("/vfio-user/server/dma-unsealed", test_dma_unsealed);
    qtest_add_func("/vfio-user/server/bar-writes", test_bar_writes);
    qtest_add_func("/vfio-user/server/irq", test_irq);
    qtest_add_func("/vfio-user/server/pipelined-after-version",
                   test_pipelined_after_version);
    qtest_add_func("/vfio-user/server/exit-with-client",
                   test_exit_with_client);
    qtest_add_func("/vfio-user/server/reset-on-disconnect",
                   test_reset_on_disconnect);
    qtest_add_func("/vfio-user/server/object-add-del", test_object_add_del);
    qtest_add_func("/vfio-user/server/nvme", test_nvme);
    qtest_add_func("/vfio-user/server/libvfio-user-client",
                   test_libvfio_user_client);
    return g_test_run();
}
