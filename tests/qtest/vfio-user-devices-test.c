/*
 * One remote process hosts the device models vfio-user must carry (nvme,
 * e1000e, lsi53c895a, virtio-blk-pci, virtio-net-pci, edu), each on its
 * own socket; one VM plugs them all in with vfio-user-pci.  Checks what
 * the guest sees of each: IDs, BAR layout, MSI-X placement, registers,
 * and for nvme MSI-X interrupts raised by the remote device.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "libqtest.h"
#include "libqos/pci-pc.h"
#include "standard-headers/linux/pci_regs.h"
#include "vfio-user/vm-helpers.h"

typedef struct HostedDev {
    const char *id;
    const char *device;         /* -device argument on the remote side */
    uint16_t vendor, devid;
    int bar;                    /* the BAR to check */
    int bar_min;                /* its smallest size */
    bool msix;
} HostedDev;

static const HostedDev devs[] = {
    { "nvme", "nvme,id=nvme,serial=s0,drive=d0", 0x1b36, 0x0010, 0, 0x2000,
      true },
    { "e1000e", "e1000e,id=e1000e,romfile=", 0x8086, 0x10d3, 0, 0x20000,
      true },
    { "lsi", "lsi53c895a,id=lsi", 0x1000, 0x0012, 0, 0x100, false },
    /* the remote machine makes virtio devices modern-only: BAR4 */
    { "vblk", "virtio-blk-pci,id=vblk,drive=d1", 0x1af4, 0x1042, 4, 0x4000,
      true },
    { "vnet", "virtio-net-pci,id=vnet,romfile=", 0x1af4, 0x1041, 4, 0x4000,
      true },
    { "edu", "edu,id=edu", 0x1234, 0x11e8, 0, 0x100000, false },
};

/* nvme registers and the guest RAM the MSI-X check below uses */
#define NVME_CC             0x14
#define NVME_CSTS           0x1c
#define NVME_AQA            0x24
#define NVME_ASQ            0x28
#define NVME_ACQ            0x30
#define NVME_SQ0TDBL        0x1000
#define NVME_CQ0HDBL        0x1004
#define NV_SQ               0x200000
#define NV_CQ               0x201000
#define NV_BUF              0x202000
#define NV_MSI              0x203000    /* vector 0 writes its data here */
#define NV_MSI_DATA         0x5eed0001u

static bool wait_until(bool (*cond)(QTestState *, QPCIDevice *, int),
                       QTestState *qts, QPCIDevice *dev, int arg)
{
    for (int i = 0; i < 500; i++) {
        if (cond(qts, dev, arg)) {
            return true;
        }
        g_usleep(10 * 1000);
    }
    return false;
}

static bool msi_arrived(QTestState *qts, QPCIDevice *dev, int unused)
{
    return qtest_readl(qts, NV_MSI) == NV_MSI_DATA;
}

static bool msix_pending0(QTestState *qts, QPCIDevice *dev, int unused)
{
    return qpci_msix_pending(dev, 0);
}

/* the phase tag of admin completion @slot, 1 on the queue's first pass */
static bool nvme_completed(QTestState *qts, QPCIDevice *dev, int slot)
{
    return qtest_readl(qts, NV_CQ + slot * 16 + 12) & (1 << 16);
}

static void msix_vector0(QPCIDevice *dev, bool masked)
{
    qpci_io_writel(dev, dev->msix_table_bar,
                   dev->msix_table_off + PCI_MSIX_ENTRY_VECTOR_CTRL,
                   masked ? PCI_MSIX_ENTRY_CTRL_MASKBIT : 0);
}

/* Queue an Identify Controller in admin SQ @slot and ring the doorbell. */
static void nvme_identify(QTestState *qts, QPCIDevice *dev, int slot)
{
    uint32_t cmd[16] = { 0 };

    cmd[0] = 0x06 | (slot + 1) << 16;       /* opcode, command id */
    cmd[6] = NV_BUF;                         /* PRP1 */
    cmd[10] = 1;                             /* CNS: the controller */
    qtest_memwrite(qts, NV_SQ + slot * 64, cmd, sizeof(cmd));
    qpci_io_writel(dev, dev->msix_table_bar, NVME_SQ0TDBL, slot + 1);
}

/*
 * MSI-X as the remote device drives it: the table here sends vector 0
 * to guest RAM, and the remote nvme completes admin commands with an
 * interrupt on vector 0.  Unmasked, the message arrives; masked, it
 * stays pending until the vector is unmasked.
 */
static void check_nvme_msix(QTestState *qts, QPCIDevice *dev)
{
    QPCIBar bar;
    uint8_t zero[0x2000] = { 0 };

    /* BAR0 holds the registers and the table: the table's mapping */
    bar = dev->msix_table_bar;
    qtest_memwrite(qts, NV_SQ, zero, sizeof(zero));
    qtest_writel(qts, NV_MSI, 0);
    qpci_io_writel(dev, bar, dev->msix_table_off + PCI_MSIX_ENTRY_LOWER_ADDR,
                   NV_MSI);
    qpci_io_writel(dev, bar, dev->msix_table_off + PCI_MSIX_ENTRY_UPPER_ADDR,
                   0);
    qpci_io_writel(dev, bar, dev->msix_table_off + PCI_MSIX_ENTRY_DATA,
                   NV_MSI_DATA);
    msix_vector0(dev, false);

    qpci_io_writel(dev, bar, NVME_CC, 0);
    qpci_io_writel(dev, bar, NVME_AQA, 3 << 16 | 3);
    qpci_io_writeq(dev, bar, NVME_ASQ, NV_SQ);
    qpci_io_writeq(dev, bar, NVME_ACQ, NV_CQ);
    qpci_io_writel(dev, bar, NVME_CC, 1 | 6 << 16 | 4 << 20);
    for (int i = 0; i < 500 && !(qpci_io_readl(dev, bar, NVME_CSTS) & 1);
         i++) {
        g_usleep(10 * 1000);
    }
    g_assert_cmphex(qpci_io_readl(dev, bar, NVME_CSTS) & 3, ==, 1);

    nvme_identify(qts, dev, 0);
    g_assert(wait_until(msi_arrived, qts, dev, 0));
    g_assert(nvme_completed(qts, dev, 0));
    g_assert(!qpci_msix_pending(dev, 0));
    qpci_io_writel(dev, bar, NVME_CQ0HDBL, 1);

    msix_vector0(dev, true);
    qtest_writel(qts, NV_MSI, 0);
    nvme_identify(qts, dev, 1);
    g_assert(wait_until(nvme_completed, qts, dev, 1));
    g_assert(wait_until(msix_pending0, qts, dev, 0));
    g_assert_cmphex(qtest_readl(qts, NV_MSI), ==, 0);
    msix_vector0(dev, false);
    g_assert(wait_until(msi_arrived, qts, dev, 0));
    g_assert(!qpci_msix_pending(dev, 0));
    qpci_io_writel(dev, bar, NVME_CQ0HDBL, 2);
    qpci_io_writel(dev, bar, NVME_CC, 0);
}

static void test_all_devices(void)
{
    g_autofree char *dir = g_dir_make_tmp("vfio-user-devs-XXXXXX", NULL);
    g_autoptr(GPtrArray) args = g_ptr_array_new_with_free_func(g_free);
    g_autoptr(GString) vm = g_string_new(VU_FW_ARGS "-M pc -m 64M ");
    g_autofree char *last_sock = NULL;
    QTestState *qts;
    QPCIBus *bus;
    GPid pid;

    g_ptr_array_add(args, g_strdup(g_getenv("VFIO_USER_QEMU")));
    g_ptr_array_add(args, g_strdup("-M"));
    g_ptr_array_add(args, g_strdup("remote"));
    g_ptr_array_add(args, g_strdup("-nodefaults"));
    g_ptr_array_add(args, g_strdup("-display"));
    g_ptr_array_add(args, g_strdup("none"));
    g_ptr_array_add(args, g_strdup("-blockdev"));
    g_ptr_array_add(args, g_strdup("null-co,node-name=d0,size=1048576"));
    g_ptr_array_add(args, g_strdup("-blockdev"));
    g_ptr_array_add(args, g_strdup("null-co,node-name=d1,size=1048576"));
    for (int i = 0; i < ARRAY_SIZE(devs); i++) {
        g_autofree char *sock = g_strdup_printf("%s/%s.sock", dir, devs[i].id);

        g_ptr_array_add(args, g_strdup("-device"));
        g_ptr_array_add(args, g_strdup(devs[i].device));
        g_ptr_array_add(args, g_strdup("-object"));
        g_ptr_array_add(args, g_strdup_printf(
            "vfio-user-server,id=v%d,socket=%s,device=%s", i, sock,
            devs[i].id));
        g_string_append_printf(vm, "-device vfio-user-pci,socket=%s,"
                               "addr=%d.0 ", sock, 4 + i);
        g_free(last_sock);
        last_sock = g_steal_pointer(&sock);
    }
    g_ptr_array_add(args, NULL);
    /* the sockets appear in order: the last one means all are there */
    pid = vu_spawn_server((char **)args->pdata, last_sock);

    qts = qtest_init(vm->str);
    bus = qpci_new_pc(qts, NULL);
    for (int i = 0; i < ARRAY_SIZE(devs); i++) {
        QPCIDevice *dev = vu_find_dev(bus, QPCI_DEVFN(4 + i, 0));
        uint64_t size;
        QPCIBar bar;

        g_test_message("%s", devs[i].id);
        g_assert_cmphex(qpci_config_readw(dev, PCI_VENDOR_ID), ==,
                        devs[i].vendor);
        g_assert_cmphex(qpci_config_readw(dev, PCI_DEVICE_ID), ==,
                        devs[i].devid);
        bar = qpci_iomap(dev, devs[i].bar, &size);
        g_assert_cmpuint(size, >=, devs[i].bar_min);
        g_assert(!!qpci_find_capability(dev, PCI_CAP_ID_MSIX, 0) ==
                 devs[i].msix);
        if (g_str_equal(devs[i].id, "nvme")) {
            /* CAP: MQES and the doorbell stride are never all-ones */
            g_assert_cmphex(qpci_io_readq(dev, bar, 0), !=, UINT64_MAX);
            g_assert_cmphex(qpci_io_readq(dev, bar, 0) & 0xffff, !=, 0);
        } else if (g_str_equal(devs[i].id, "e1000e")) {
            /* STATUS is readable and not all-ones */
            g_assert_cmphex(qpci_io_readl(dev, bar, 0x8), !=, UINT32_MAX);
        } else if (g_str_equal(devs[i].id, "edu")) {
            g_assert_cmphex(qpci_io_readl(dev, bar, 0) & 0xff, ==, 0xed);
        }
        if (devs[i].msix) {
            /*
             * The table and PBA are emulated here, where the device says.
             * (libqos maps the table's BAR again: bar is stale after.)
             */
            qpci_msix_enable(dev);
            g_assert(qpci_msix_masked(dev, 0));     /* as after reset */
            g_assert(!qpci_msix_pending(dev, 0));
            if (g_str_equal(devs[i].id, "nvme")) {
                check_nvme_msix(qts, dev);
            }
            qpci_msix_disable(dev);
        }
        g_free(dev);
    }
    qpci_free_pc(bus);
    qtest_quit(qts);
    vu_stop_server(pid);
    for (int i = 0; i < ARRAY_SIZE(devs); i++) {
        g_autofree char *sock = g_strdup_printf("%s/%s.sock", dir, devs[i].id);
        unlink(sock);
    }
    rmdir(dir);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    qtest_add_func("/vfio-user/devices/all", test_all_devices);
    return g_test_run();
}
