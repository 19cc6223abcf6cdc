/*
 * End to end in qtest: our vfio-user-pci client against our remote
 * machine hosting edu.  MMIO, DMA both ways (guest RAM passed by fd,
 * not shareable, and in secure-dma mode), MSI and INTx.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "libqtest.h"
#include "libqos/pci-pc.h"
#include "qapi/qmp/qdict.h"
#include "standard-headers/linux/pci_regs.h"
#include "vfio-user/protocol.h"
#include "vfio-user/vm-helpers.h"
#include "vfio-user/edu.h"

#define DEVFN               QPCI_DEVFN(4, 0)
#define INTX_GSI            11

typedef enum DmaMode {
    DMA_FD,         /* shared memfd guest RAM: the server maps it */
    DMA_NOFD,       /* anonymous guest RAM: DMA by message */
    DMA_SECURE,     /* shared memfd but secure-dma=on: DMA by message */
} DmaMode;

static const char *const mode_names[] = { "fd", "nofd", "secure" };

typedef EduRig Rig;

static void rig_start(Rig *r, DmaMode mode)
{
    edu_rig_serve(r, "vfio-user-edu");
    r->qts = qtest_initf(VU_FW_ARGS "-M pc%s -m 64M %s "
                         "-trace vfio_user_pci_set_irqs -D %s "
                         "-device vfio-user-pci,socket=%s,id=edu,addr=04.0%s",
                         mode == DMA_NOFD ? "" : ",memory-backend=mem",
                         mode == DMA_NOFD ? "" :
                         "-object memory-backend-memfd,id=mem,size=64M,"
                         "share=on",
                         r->log, r->sock,
                         mode == DMA_SECURE ? ",secure-dma=on" : "");
    edu_rig_attach(r, DEVFN);
    qtest_irq_intercept_in(r->qts, "ioapic");
    vu_route_pirqs(r->bus, INTX_GSI);
}

static uint32_t edu_rd(Rig *r, uint64_t off)
{
    return qpci_io_readl(r->dev, r->bar, off);
}

static void edu_wr(Rig *r, uint64_t off, uint32_t val)
{
    qpci_io_writel(r->dev, r->bar, off, val);
}

static void test_mmio(gconstpointer opaque)
{
    Rig r;

    rig_start(&r, DMA_FD);
    g_assert_cmphex(qpci_config_readw(r.dev, PCI_VENDOR_ID), ==, 0x1234);
    g_assert_cmphex(qpci_config_readw(r.dev, PCI_DEVICE_ID), ==, 0x11e8);
    g_assert_cmphex(edu_rd(&r, EDU_ID) & 0xff, ==, 0xed);
    edu_wr(&r, EDU_LIVENESS, 0x12345678);
    g_assert_cmphex(edu_rd(&r, EDU_LIVENESS), ==, ~0x12345678u);
    edu_wr(&r, EDU_FACT, 10);
    edu_wait_clear(r.dev, r.bar, EDU_STATUS, EDU_STATUS_BUSY);
    g_assert_cmpuint(edu_rd(&r, EDU_FACT), ==, 3628800);
    /* 8-byte accesses stay whole on the way through */
    qpci_io_writeq(r.dev, r.bar, EDU_DMA_SRC, 0x1122334455667788ULL);
    g_assert_cmphex(qpci_io_readq(r.dev, r.bar, EDU_DMA_SRC), ==,
                    0x1122334455667788ULL);
    edu_rig_stop(&r);
}

/*
 * Does process @pid hold guest RAM's memfd, mapped or as an fd?  The
 * memfd backend names its memfd after the type, so /proc shows it.
 */
static void remote_memfd_use(GPid pid, bool *mapped, bool *open_fd)
{
    g_autofree char *maps_path = g_strdup_printf("/proc/%d/maps", pid);
    g_autofree char *fd_dir = g_strdup_printf("/proc/%d/fd", pid);
    g_autofree char *maps = NULL;
    g_autoptr(GDir) dir = NULL;
    const char *name;

    g_assert(g_file_get_contents(maps_path, &maps, NULL, NULL));
    *mapped = strstr(maps, "memfd:memory-backend-memfd") != NULL;
    *open_fd = false;
    dir = g_dir_open(fd_dir, 0, NULL);
    g_assert(dir);
    while ((name = g_dir_read_name(dir))) {
        g_autofree char *link = g_strdup_printf("%s/%s", fd_dir, name);
        g_autofree char *target = g_file_read_link(link, NULL);

        if (target && strstr(target, "memfd:memory-backend-memfd")) {
            *open_fd = true;
        }
    }
}

/* Guest RAM → edu buffer → other guest RAM, compared byte for byte. */
static void test_dma(gconstpointer opaque)
{
    DmaMode mode = GPOINTER_TO_INT(opaque);
    /* edu refuses a transfer that ends at the end of its buffer */
    uint8_t pattern[4000], back[4000];
    bool mapped, open_fd;
    Rig r;

    for (size_t i = 0; i < sizeof(pattern); i++) {
        pattern[i] = i * 7 + (i >> 8) + mode;
    }
    rig_start(&r, mode);
    qtest_memwrite(r.qts, 0x100000, pattern, sizeof(pattern));
    qtest_memset(r.qts, 0x200000, 0, sizeof(back));
    edu_dma(r.dev, r.bar, 0x100000, EDU_DMA_BUF, sizeof(pattern), false);
    edu_dma(r.dev, r.bar, EDU_DMA_BUF, 0x200000, sizeof(pattern), true);
    qtest_memread(r.qts, 0x200000, back, sizeof(back));
    g_assert(memcmp(pattern, back, sizeof(back)) == 0);
    /* an odd size and an unaligned address */
    qtest_memset(r.qts, 0x300000, 0xee, 64);
    edu_dma(r.dev, r.bar, EDU_DMA_BUF + 5, 0x300003, 33, true);
    qtest_memread(r.qts, 0x300000, back, 64);
    g_assert_cmpuint(back[2], ==, 0xee);
    g_assert(memcmp(back + 3, pattern + 5, 33) == 0);
    g_assert_cmpuint(back[36], ==, 0xee);

    /* only fd mode lets guest memory into the remote process */
    remote_memfd_use(r.remote, &mapped, &open_fd);
    if (mode == DMA_FD) {
        g_assert(mapped);
    } else {
        g_assert(!mapped && !open_fd);
    }
    edu_rig_stop(&r);
}

/*
 * How often the client's trace (vfio_user_send, vfio_user_recv) shows
 * a DMA_READ request received on one connection while a REGION_READ of
 * another connection waited for its reply.
 */
static unsigned count_overlaps(const char *log)
{
    g_autofree char *text = NULL;
    g_auto(GStrv) lines = NULL;
    g_autoptr(GHashTable) waiting = g_hash_table_new_full(g_str_hash,
                                                          g_str_equal,
                                                          g_free, NULL);
    unsigned overlaps = 0;

    g_assert(g_file_get_contents(log, &text, NULL, NULL));
    lines = g_strsplit(text, "\n", -1);
    for (char **l = lines; *l; l++) {
        const char *p = strstr(*l, "vfio_user_");
        char conn[128], cmd[32];
        unsigned id, flags;
        bool send;

        if (!p || sscanf(p, "vfio_user_%*[a-z] %127s id %u %31s flags 0x%x",
                         conn, &id, cmd, &flags) != 4) {
            continue;
        }
        send = g_str_has_prefix(p, "vfio_user_send ");
        if (send && g_str_equal(cmd, "REGION_READ")) {
            g_hash_table_insert(waiting, g_strdup(conn),
                                GUINT_TO_POINTER(id + 1));
        } else if (!send && (flags & VFU_F_TYPE_REPLY) &&
                   GPOINTER_TO_UINT(g_hash_table_lookup(waiting, conn)) ==
                   id + 1) {
            g_hash_table_remove(waiting, conn);
        } else if (!send && g_str_equal(cmd, "DMA_READ") &&
                   !(flags & VFU_F_TYPE_REPLY)) {
            overlaps += g_hash_table_size(waiting) -
                        g_hash_table_contains(waiting, conn);
        }
    }
    return overlaps;
}

/*
 * Two edus of one remote process under secure-dma.  While the client
 * waits for one's BAR read, the remote may be waiting for the client's
 * answer to the other's DMA_READ: the client serves it meanwhile, or
 * each side waits for the other until a timeout gives a device up.
 */
static void test_two_devices(void)
{
    g_autofree char *dir = g_dir_make_tmp("vfio-user-edu2-XXXXXX", NULL);
    g_autofree char *sock0 = g_strdup_printf("%s/e0.sock", dir);
    g_autofree char *sock1 = g_strdup_printf("%s/e1.sock", dir);
    g_autofree char *obj0 = g_strdup_printf(
        "vfio-user-server,id=v0,socket=%s,device=e0", sock0);
    g_autofree char *obj1 = g_strdup_printf(
        "vfio-user-server,id=v1,socket=%s,device=e1", sock1);
    g_autofree char *log = g_strdup_printf("%s/client.log", dir);
    uint8_t pattern[4000], back[4000];
    g_autofree uint8_t *bar0 = g_malloc(64 * 1024);
    unsigned overlaps = 0;
    int round;
    QPCIDevice *dev[2];
    QPCIBar bar[2];
    QTestState *qts;
    QPCIBus *bus;
    GPid remote;

    remote = vu_spawn_remote_args(sock1, "-device", "edu,id=e0",
                                  "-device", "edu,id=e1",
                                  "-object", obj0, "-object", obj1, NULL);
    vu_wait_for_socket(sock0);
    qts = qtest_initf(VU_FW_ARGS "-M pc,memory-backend=mem -m 64M "
                      "-object memory-backend-memfd,id=mem,size=64M,share=on "
                      "-device vfio-user-pci,socket=%s,addr=04.0,"
                      "secure-dma=on,x-msg-timeout=2000 "
                      "-device vfio-user-pci,socket=%s,addr=05.0,"
                      "secure-dma=on,x-msg-timeout=2000 "
                      "-trace vfio_user_send -trace vfio_user_recv -D %s",
                      sock0, sock1, log);
    bus = qpci_new_pc(qts, NULL);
    for (int i = 0; i < 2; i++) {
        dev[i] = vu_find_dev(bus, QPCI_DEVFN(4 + i, 0));
        bar[i] = qpci_iomap(dev[i], 0, NULL);
    }
    /*
     * At least two rounds, and more (up to ten) until the trace shows
     * the overlap the case is about.
     */
    for (round = 0; round < 10 && (round < 2 || !overlaps); round++) {
        for (size_t i = 0; i < sizeof(pattern); i++) {
            pattern[i] = i * 3 + round;
        }
        qtest_memwrite(qts, 0x100000, pattern, sizeof(pattern));
        /* edu 1 reads the pattern about 100 ms from now */
        qpci_io_writeq(dev[1], bar[1], EDU_DMA_SRC, 0x100000);
        qpci_io_writeq(dev[1], bar[1], EDU_DMA_DST, EDU_DMA_BUF);
        qpci_io_writeq(dev[1], bar[1], EDU_DMA_CNT, sizeof(pattern));
        qpci_io_writeq(dev[1], bar[1], EDU_DMA_CMD, EDU_DMA_RUN);
        /*
         * Meanwhile one qtest command reads 64 KiB of edu 0's BAR: 8192
         * reads back to back, without a main loop turn in between.
         */
        qpci_memread(dev[0], bar[0], 0, bar0, 64 * 1024);
        /* which still answers */
        g_assert_cmphex(qpci_io_readl(dev[0], bar[0], EDU_ID) & 0xff, ==,
                        0xed);
        edu_wait_clear(dev[1], bar[1], EDU_DMA_CMD, EDU_DMA_RUN);
        /* the pattern made it: out again to other guest RAM */
        qtest_memset(qts, 0x200000, 0, sizeof(back));
        edu_dma(dev[1], bar[1], EDU_DMA_BUF, 0x200000, sizeof(back), true);
        qtest_memread(qts, 0x200000, back, sizeof(back));
        g_assert(memcmp(pattern, back, sizeof(back)) == 0);
        overlaps = count_overlaps(log);
    }
    g_test_message("%u DMA_READs served during the other edu's BAR reads, "
                   "%d rounds", overlaps, round);
    g_assert_cmpuint(overlaps, >, 0);

    for (int i = 0; i < 2; i++) {
        g_free(dev[i]);
    }
    qpci_free_pc(bus);
    qtest_quit(qts);
    vu_stop_server(remote);
    unlink(log);
    unlink(sock0);
    unlink(sock1);
    rmdir(dir);
}

static void msi_setup(Rig *r, uint64_t addr, uint16_t data)
{
    uint8_t cap = qpci_find_capability(r->dev, PCI_CAP_ID_MSI, 0);
    uint16_t flags;

    g_assert(cap);
    flags = qpci_config_readw(r->dev, cap + PCI_MSI_FLAGS);
    qpci_config_writel(r->dev, cap + PCI_MSI_ADDRESS_LO, addr);
    if (flags & PCI_MSI_FLAGS_64BIT) {
        qpci_config_writel(r->dev, cap + PCI_MSI_ADDRESS_HI, 0);
        qpci_config_writew(r->dev, cap + PCI_MSI_DATA_64, data);
    } else {
        qpci_config_writew(r->dev, cap + PCI_MSI_DATA_32, data);
    }
    qpci_config_writew(r->dev, cap + PCI_MSI_FLAGS,
                       flags | PCI_MSI_FLAGS_ENABLE);
}

static bool wait_mem32(Rig *r, uint64_t addr, uint32_t val)
{
    for (int i = 0; i < 500; i++) {
        if (qtest_readl(r->qts, addr) == val) {
            return true;
        }
        g_usleep(10 * 1000);
    }
    return false;
}

/*
 * MSI: the message is aimed at guest RAM, so its delivery shows up as a
 * memory write the test can read.
 */
static void test_msi(gconstpointer opaque)
{
    Rig r;

    rig_start(&r, DMA_FD);
    qtest_writel(r.qts, 0x400000, 0);
    msi_setup(&r, 0x400000, 0x4321);
    /* the eventfd, then the server's own mask cleared (index 1: MSI) */
    g_assert_cmpuint(vu_count_in_file(r.log, "index 1 flags 0x24 start 0 "
                                      "count 1"), ==, 1);
    g_assert_cmpuint(vu_count_in_file(r.log, "index 1 flags 0x11 start 0 "
                                      "count 1"), ==, 1);
    edu_wr(&r, EDU_IRQ_RAISE, 0x1);
    g_assert(wait_mem32(&r, 0x400000, 0x4321));
    g_assert_cmphex(edu_rd(&r, EDU_IRQ_STATUS), ==, 0x1);
    edu_wr(&r, EDU_IRQ_ACK, 0x1);
    /* a re-programmed vector is used for the next interrupt */
    qtest_writel(r.qts, 0x400000, 0);
    msi_setup(&r, 0x400010, 0x5555);
    edu_wr(&r, EDU_IRQ_RAISE, 0x2);
    g_assert(wait_mem32(&r, 0x400010, 0x5555));
    g_assert_cmphex(qtest_readl(r.qts, 0x400000), ==, 0);
    edu_wr(&r, EDU_IRQ_ACK, 0x2);
    g_assert(!qtest_get_irq(r.qts, INTX_GSI));
    edu_rig_stop(&r);
}

/*
 * Wait for the INTx line to reach @level.  Waiting for it to drop reads
 * the status register each time, as a guest's handler would when it is
 * entered again: a level interrupt that was re-signalled while the line
 * was still up is only ended by the next access.
 */
static bool wait_irq(Rig *r, bool level)
{
    for (int i = 0; i < 500; i++) {
        if (qtest_get_irq(r->qts, INTX_GSI) == level) {
            return true;
        }
        if (!level) {
            g_assert_cmphex(edu_rd(r, EDU_IRQ_STATUS), ==, 0);
        }
        g_usleep(10 * 1000);
    }
    return false;
}

static void test_intx(gconstpointer opaque)
{
    Rig r;

    rig_start(&r, DMA_FD);
    g_assert(!qtest_get_irq(r.qts, INTX_GSI));
    edu_wr(&r, EDU_IRQ_RAISE, 0x10);
    g_assert(wait_irq(&r, true));
    /* the driver's ack ends the assertion; the line is low on the server */
    edu_wr(&r, EDU_IRQ_ACK, 0x10);
    g_assert_cmphex(edu_rd(&r, EDU_IRQ_STATUS), ==, 0);
    g_assert(wait_irq(&r, false));
    /* and a second interrupt comes through after the unmask */
    edu_wr(&r, EDU_IRQ_RAISE, 0x20);
    g_assert(wait_irq(&r, true));
    g_assert_cmphex(edu_rd(&r, EDU_IRQ_STATUS), ==, 0x20);
    edu_wr(&r, EDU_IRQ_ACK, 0x20);
    g_assert(wait_irq(&r, false));
    edu_rig_stop(&r);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    qtest_add_data_func("/vfio-user/edu/mmio", NULL, test_mmio);
    for (int m = DMA_FD; m <= DMA_SECURE; m++) {
        g_autofree char *p = g_strdup_printf("/vfio-user/edu/dma/%s",
                                             mode_names[m]);
        qtest_add_data_func(p, GINT_TO_POINTER(m), test_dma);
    }
    qtest_add_func("/vfio-user/edu/two-devices-secure", test_two_devices);
    qtest_add_data_func("/vfio-user/edu/msi", NULL, test_msi);
    qtest_add_data_func("/vfio-user/edu/intx", NULL, test_intx);
    return g_test_run();
}
