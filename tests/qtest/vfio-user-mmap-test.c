/*
 * mmap'd BARs: our server offers a BAR backed by a memory backend with an
 * fd (ivshmem-plain's shared memory) for mmap, and our client maps it into
 * the guest, so accesses to it are no messages.  The test reads and writes
 * the BAR through the guest and the backing file directly, and checks in
 * the client's memory tree whether the BAR is mapped.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "libqtest.h"
#include "libqos/pci-pc.h"
#include "vfio-user/vm-helpers.h"

#define SHM_SIZE    (1024 * 1024)
#define IVSHMEM_DEVFN QPCI_DEVFN(4, 0)

typedef struct MmapCase {
    const char *backend;        /* memory-backend-file or -memfd */
    const char *client_opts;
    bool mapped;                /* the client must map BAR2 */
} MmapCase;

static void test_mmap(const void *opaque)
{
    const MmapCase *c = opaque;
    g_autofree char *dir = g_dir_make_tmp("vfio-user-mmap-XXXXXX", NULL);
    g_autofree char *sock = g_strdup_printf("%s/iv.sock", dir);
    g_autofree char *shm = g_strdup_printf("%s/shm", dir);
    g_autofree char *backend = NULL;
    g_autofree char *obj = g_strdup_printf(
        "vfio-user-server,id=v0,socket=%s,device=iv", sock);
    g_autofree char *mtree = NULL;
    g_autofree uint8_t *buf = g_malloc(8192);
    g_autofree uint8_t *back = g_malloc(8192);
    bool is_file = g_str_equal(c->backend, "memory-backend-file");
    QTestState *qts;
    QPCIBus *bus;
    QPCIDevice *dev;
    QPCIBar bar2;
    uint64_t size;
    GPid pid;
    int fd = -1;

    backend = is_file ?
        g_strdup_printf("memory-backend-file,id=shm,size=%d,mem-path=%s,"
                        "share=on", SHM_SIZE, shm) :
        g_strdup_printf("memory-backend-memfd,id=shm,size=%d,share=on",
                        SHM_SIZE);
    pid = vu_spawn_remote_args(sock, "-object", backend,
                               "-device", "ivshmem-plain,id=iv,memdev=shm",
                               "-object", obj, NULL);

    qts = qtest_initf(VU_FW_ARGS "-M pc -m 64M "
                      "-device vfio-user-pci,socket=%s,addr=4.0%s", sock,
                      c->client_opts);
    bus = qpci_new_pc(qts, NULL);
    dev = vu_find_dev(bus, IVSHMEM_DEVFN);
    bar2 = qpci_iomap(dev, 2, &size);
    g_assert_cmpuint(size, ==, SHM_SIZE);

    mtree = qtest_hmp(qts, "info mtree");
    g_assert_cmpint(!!strstr(mtree, "vfio-user-bar2-mmap0"), ==, c->mapped);

    /* the guest writes, the server's memory has it */
    for (int i = 0; i < 8192; i++) {
        buf[i] = i * 7 + 3;
    }
    qpci_memwrite(dev, bar2, 4096, buf, 8192);
    qpci_memread(dev, bar2, 4096, back, 8192);
    g_assert(memcmp(buf, back, 8192) == 0);
    if (is_file) {
        fd = open(shm, O_RDWR);
        g_assert(fd >= 0);
        g_assert_cmpint(pread(fd, back, 8192, 4096), ==, 8192);
        g_assert(memcmp(buf, back, 8192) == 0);

        /* the server's memory changes, the guest sees it */
        memset(buf, 0x5a, 4096);
        g_assert_cmpint(pwrite(fd, buf, 4096, 0), ==, 4096);
        g_assert_cmphex(qpci_io_readl(dev, bar2, 0), ==, 0x5a5a5a5a);
        g_assert_cmphex(qpci_io_readq(dev, bar2, 4088), ==,
                        0x5a5a5a5a5a5a5a5aULL);
        close(fd);
    }
    /* accesses of every size at both ends of the BAR */
    qpci_io_writeb(dev, bar2, 0, 0x11);
    qpci_io_writew(dev, bar2, 2, 0x2233);
    qpci_io_writel(dev, bar2, SHM_SIZE - 4, 0x44556677);
    qpci_io_writeq(dev, bar2, SHM_SIZE - 16, 0x8899aabbccddeeffULL);
    g_assert_cmphex(qpci_io_readb(dev, bar2, 0), ==, 0x11);
    g_assert_cmphex(qpci_io_readw(dev, bar2, 2), ==, 0x2233);
    g_assert_cmphex(qpci_io_readl(dev, bar2, SHM_SIZE - 4), ==, 0x44556677);
    g_assert_cmphex(qpci_io_readq(dev, bar2, SHM_SIZE - 16), ==,
                    0x8899aabbccddeeffULL);

    g_free(dev);
    qpci_free_pc(bus);
    qtest_quit(qts);
    vu_kill_server(pid);
    unlink(sock);
    unlink(shm);
    rmdir(dir);
}

static const MmapCase cases[] = {
    /* the server offers only memory sealed against shrinking */
    { "memory-backend-file", "", false },
    { "memory-backend-memfd", "", true },
    { "memory-backend-memfd", ",x-no-mmap=on", false },
    /* not sealed against shrinking: an untrusted server's fd is not mapped */
    { "memory-backend-file", ",secure-dma=on", false },
    { "memory-backend-memfd", ",secure-dma=on", true },
};
static const char *const names[] = {
    "file", "memfd", "memfd/no-mmap", "file/secure-dma", "memfd/secure-dma",
};

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    for (int i = 0; i < ARRAY_SIZE(cases); i++) {
        g_autofree char *path = g_strdup_printf("/vfio-user/mmap/%s",
                                                names[i]);
        qtest_add_data_func(path, &cases[i], test_mmap);
    }
    return g_test_run();
}
