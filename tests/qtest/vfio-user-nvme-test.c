/*
 * nvme through vfio-user, driven like a guest driver would: admin queue,
 * Identify, an I/O queue pair, then a read and a write of a raw disk
 * image that the test checks byte for byte on the host.  In fd mode the
 * remote process reaches guest RAM directly; with secure-dma=on every
 * transfer is a DMA_READ/DMA_WRITE message checked by the client.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/bswap.h"
#include "libqtest.h"
#include "libqos/pci-pc.h"
#include "standard-headers/linux/pci_regs.h"
#include "vfio-user/vm-helpers.h"

/* controller registers */
#define NVME_CAP        0x00
#define NVME_CC         0x14
#define NVME_CSTS       0x1c
#define NVME_AQA        0x24
#define NVME_ASQ        0x28
#define NVME_ACQ        0x30
#define NVME_DBS        0x1000

#define QDEPTH          8
#define LBA             512

/* guest memory layout */
#define ASQ_ADDR        0x100000
#define ACQ_ADDR        0x101000
#define IOSQ_ADDR       0x102000
#define IOCQ_ADDR       0x103000
#define BUF_ADDR        0x104000
#define MSI_ADDR        0x110000

typedef struct NvmeQueue {
    uint64_t sq, cq;
    uint16_t qid, tail, head;
    bool phase;
} NvmeQueue;

typedef struct Nvme {
    QTestState *qts;
    QPCIBus *bus;
    QPCIDevice *dev;
    QPCIBar bar;
    unsigned dstrd;
    uint16_t cid;
    NvmeQueue admin, io;
} Nvme;

static void nvme_queue_init(NvmeQueue *q, uint16_t qid, uint64_t sq,
                            uint64_t cq)
{
    *q = (NvmeQueue) { .sq = sq, .cq = cq, .qid = qid, .phase = true };
}

/* Submit one command and poll its completion; returns the status field. */
static uint16_t nvme_cmd(Nvme *n, NvmeQueue *q, uint8_t opc, uint32_t nsid,
                         uint64_t prp1, uint32_t cdw10, uint32_t cdw11,
                         uint32_t cdw12)
{
    uint8_t sqe[64] = { 0 };
    uint32_t dw3 = 0;
    uint16_t cid = ++n->cid;

    sqe[0] = opc;
    stw_le_p(sqe + 2, cid);
    stl_le_p(sqe + 4, nsid);
    stq_le_p(sqe + 24, prp1);
    stl_le_p(sqe + 40, cdw10);
    stl_le_p(sqe + 44, cdw11);
    stl_le_p(sqe + 48, cdw12);
    qtest_memwrite(n->qts, q->sq + q->tail * 64, sqe, sizeof(sqe));
    q->tail = (q->tail + 1) % QDEPTH;
    qpci_io_writel(n->dev, n->bar, NVME_DBS + (2 * q->qid) * (4 << n->dstrd),
                   q->tail);

    for (int i = 0; i < 2000; i++) {
        dw3 = qtest_readl(n->qts, q->cq + q->head * 16 + 12);
        if (!!(dw3 & (1 << 16)) == q->phase) {
            break;
        }
        g_usleep(5 * 1000);
    }
    g_assert(!!(dw3 & (1 << 16)) == q->phase);
    g_assert_cmpuint(dw3 & 0xffff, ==, cid);
    q->head = (q->head + 1) % QDEPTH;
    if (!q->head) {
        q->phase = !q->phase;
    }
    qpci_io_writel(n->dev, n->bar,
                   NVME_DBS + (2 * q->qid + 1) * (4 << n->dstrd), q->head);
    return dw3 >> 17;
}

static void nvme_enable(Nvme *n)
{
    uint64_t cap = qpci_io_readq(n->dev, n->bar, NVME_CAP);

    n->dstrd = (cap >> 32) & 0xf;
    qtest_memset(n->qts, ASQ_ADDR, 0, 0x5000);
    nvme_queue_init(&n->admin, 0, ASQ_ADDR, ACQ_ADDR);
    qpci_io_writel(n->dev, n->bar, NVME_AQA,
                   (QDEPTH - 1) << 16 | (QDEPTH - 1));
    qpci_io_writeq(n->dev, n->bar, NVME_ASQ, ASQ_ADDR);
    qpci_io_writeq(n->dev, n->bar, NVME_ACQ, ACQ_ADDR);
    /* 4 KiB pages, 64-byte SQ entries, 16-byte CQ entries, enable */
    qpci_io_writel(n->dev, n->bar, NVME_CC, (6 << 16) | (4 << 20) | 1);
    for (int i = 0; i < 1000; i++) {
        if (qpci_io_readl(n->dev, n->bar, NVME_CSTS) & 1) {
            return;
        }
        g_usleep(5 * 1000);
    }
    g_error("nvme did not become ready");
}

static void test_nvme(gconstpointer opaque)
{
    bool secure = GPOINTER_TO_INT(opaque);
    g_autofree char *dir = g_dir_make_tmp("vfio-user-nvme-XXXXXX", NULL);
    g_autofree char *img = g_strdup_printf("%s/disk.img", dir);
    g_autofree char *sock = g_strdup_printf("%s/nvme.sock", dir);
    g_autofree char *drive = g_strdup_printf(
        "if=none,id=d0,format=raw,file=%s", img);
    g_autofree char *obj = g_strdup_printf(
        "vfio-user-server,id=v0,socket=%s,device=n0", sock);
    g_autofree uint8_t *disk = g_malloc(1024 * 1024);
    g_autofree uint8_t *file = NULL;
    uint8_t buf[4096], id[4096];
    size_t len;
    uint64_t entry;
    GPid pid;
    Nvme n = { 0 };

    for (size_t i = 0; i < 1024 * 1024; i++) {
        disk[i] = (i * 13) ^ (i >> 9);
    }
    g_assert(g_file_set_contents(img, (char *)disk, 1024 * 1024, NULL));
    pid = vu_spawn_remote_args(sock, "-drive", drive, "-device",
                               "nvme,id=n0,serial=vfu-nvme-0,drive=d0",
                               "-object", obj, NULL);

    n.qts = qtest_initf(VU_FW_ARGS "-M pc,memory-backend=mem -m 64M "
                        "-object memory-backend-memfd,id=mem,size=64M,"
                        "share=on -device vfio-user-pci,socket=%s,addr=04.0%s",
                        sock, secure ? ",secure-dma=on" : "");
    n.bus = qpci_new_pc(n.qts, NULL);
    n.dev = vu_find_dev(n.bus, QPCI_DEVFN(4, 0));
    /*
     * MSI-X vector 0, aimed at guest RAM so its delivery is a memory
     * write the test can see; nvme's admin queue completes on it.
     * (libqos maps the table's BAR, which is BAR0, for us.)
     */
    qpci_msix_enable(n.dev);
    n.bar = n.dev->msix_table_bar;
    entry = n.dev->msix_table_off;
    qpci_io_writel(n.dev, n.bar, entry + PCI_MSIX_ENTRY_LOWER_ADDR, MSI_ADDR);
    qpci_io_writel(n.dev, n.bar, entry + PCI_MSIX_ENTRY_UPPER_ADDR, 0);
    qpci_io_writel(n.dev, n.bar, entry + PCI_MSIX_ENTRY_DATA, 0x4d5a);
    qpci_io_writel(n.dev, n.bar, entry + PCI_MSIX_ENTRY_VECTOR_CTRL, 0);
    qtest_writel(n.qts, MSI_ADDR, 0);
    nvme_enable(&n);

    /* Identify controller: the device writes 4 KiB into guest memory */
    qtest_memset(n.qts, BUF_ADDR, 0xaa, sizeof(id));
    g_assert_cmpuint(nvme_cmd(&n, &n.admin, 0x06, 0, BUF_ADDR, 1, 0, 0), ==,
                     0);
    qtest_memread(n.qts, BUF_ADDR, id, sizeof(id));
    g_assert_cmphex(lduw_le_p(id), ==, 0x1b36);             /* VID */
    g_assert(memcmp(id + 4, "vfu-nvme-0          ", 20) == 0); /* SN */
    /* its completion raised the MSI-X vector the guest programmed */
    for (int i = 0; i < 500 && qtest_readl(n.qts, MSI_ADDR) != 0x4d5a; i++) {
        g_usleep(10 * 1000);
    }
    g_assert_cmphex(qtest_readl(n.qts, MSI_ADDR), ==, 0x4d5a);

    /* I/O queue pair 1 */
    nvme_queue_init(&n.io, 1, IOSQ_ADDR, IOCQ_ADDR);
    g_assert_cmpuint(nvme_cmd(&n, &n.admin, 0x05, 0, IOCQ_ADDR,
                              (QDEPTH - 1) << 16 | 1, 1, 0), ==, 0);
    g_assert_cmpuint(nvme_cmd(&n, &n.admin, 0x01, 0, IOSQ_ADDR,
                              (QDEPTH - 1) << 16 | 1, 1 << 16 | 1, 0), ==, 0);

    /* read LBAs 8..15: the image's bytes, into guest memory */
    g_assert_cmpuint(nvme_cmd(&n, &n.io, 0x02, 1, BUF_ADDR, 8, 0, 7), ==, 0);
    qtest_memread(n.qts, BUF_ADDR, buf, sizeof(buf));
    g_assert(memcmp(buf, disk + 8 * LBA, sizeof(buf)) == 0);

    /* write a new pattern to LBAs 64..71 from guest memory */
    for (size_t i = 0; i < sizeof(buf); i++) {
        buf[i] = 0xff - (i & 0x7f) - secure;
    }
    qtest_memwrite(n.qts, BUF_ADDR, buf, sizeof(buf));
    g_assert_cmpuint(nvme_cmd(&n, &n.io, 0x01, 1, BUF_ADDR, 64, 0, 7), ==, 0);
    g_assert_cmpuint(nvme_cmd(&n, &n.io, 0x00, 1, 0, 0, 0, 0), ==, 0);

    g_assert(g_file_get_contents(img, (char **)&file, &len, NULL));
    g_assert_cmpuint(len, ==, 1024 * 1024);
    g_assert(memcmp(file + 64 * LBA, buf, sizeof(buf)) == 0);
    /* and nothing else changed */
    g_assert(memcmp(file, disk, 64 * LBA) == 0);
    g_assert(memcmp(file + 72 * LBA, disk + 72 * LBA,
                    1024 * 1024 - 72 * LBA) == 0);

    g_free(n.dev);
    qpci_free_pc(n.bus);
    qtest_quit(n.qts);
    vu_stop_server(pid);
    unlink(img);
    unlink(sock);
    rmdir(dir);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    qtest_add_data_func("/vfio-user/nvme/fd", GINT_TO_POINTER(false),
                        test_nvme);
    qtest_add_data_func("/vfio-user/nvme/secure-dma", GINT_TO_POINTER(true),
                        test_nvme);
    return g_test_run();
}
