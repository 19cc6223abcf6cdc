/*
 * ioeventfd doorbells: pci-testdev in the remote process registers an
 * ioeventfd on BAR0 when the guest starts one of its tests; our server
 * offers it with GET_REGION_IO_FDS and our client, which asks again about
 * a BAR written through messages often enough, then signals it instead of
 * sending REGION_WRITEs.  The remote's trace tells which path each write
 * took: REGION_WRITEs to the doorbell, and our eventfd firing into the
 * device's own ioeventfd.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "libqtest.h"
#include "libqos/pci-pc.h"
#include "vfio-user/vm-helpers.h"

#define TESTDEV_DEVFN   QPCI_DEVFN(4, 0)
/* pci-testdev: BAR0 holds the current test's header, then its doorbells */
#define TEST_SELECT     0       /* header.test: writing starts a test */
#define MMIO_NO_EVENTFD 0
#define MMIO_WILDCARD   1       /* test 1: ioeventfd without datamatch */
#define MMIO_DATAMATCH  2       /* test 2: ioeventfd for 0xfa only */
#define DOORBELL        (2048 + MMIO_WILDCARD)
#define DOORBELL_MATCH  (2048 + MMIO_DATAMATCH)
#define WRITES          200

/* pci-testdev in a remote process, plugged into a VM */
typedef struct Rig {
    char *dir, *sock, *log;
    GPid pid;
    QTestState *qts;
    QPCIBus *bus;
    QPCIDevice *dev;
    QPCIBar bar0;
} Rig;

static void rig_start(Rig *r, const char *client_opts)
{
    g_autofree char *obj = NULL;

    r->dir = g_dir_make_tmp("vfio-user-iofd-XXXXXX", NULL);
    r->sock = g_strdup_printf("%s/td.sock", r->dir);
    r->log = g_strdup_printf("%s/remote.log", r->dir);
    obj = g_strdup_printf("vfio-user-server,id=v0,socket=%s,device=td",
                          r->sock);
    r->pid = vu_spawn_remote_args(r->sock, "-device", "pci-testdev,id=td",
                                  "-object", obj,
                                  "-trace", "vfio_user_srv_ioeventfd*",
                                  "-trace", "vfio_user_srv_region_write",
                                  "-D", r->log, NULL);
    r->qts = qtest_initf(VU_FW_ARGS "-M pc -m 64M "
                         "-device vfio-user-pci,socket=%s,addr=4.0%s",
                         r->sock, client_opts);
    r->bus = qpci_new_pc(r->qts, NULL);
    r->dev = vu_find_dev(r->bus, TESTDEV_DEVFN);
    r->bar0 = qpci_iomap(r->dev, 0, NULL);
}

static void rig_stop(Rig *r)
{
    g_free(r->dev);
    qpci_free_pc(r->bus);
    qtest_quit(r->qts);
    vu_stop_server(r->pid);
    unlink(r->sock);
    unlink(r->log);
    rmdir(r->dir);
    g_free(r->sock);
    g_free(r->log);
    g_free(r->dir);
}

static void test_doorbell(const void *opaque)
{
    bool ioeventfd = GPOINTER_TO_INT(opaque);
    unsigned messages;
    Rig r;

    rig_start(&r, ioeventfd ? "" : ",x-no-ioeventfd=on");
    /* the device registers its doorbell now, after the client asked */
    qpci_io_writeb(r.dev, r.bar0, TEST_SELECT, MMIO_WILDCARD);
    for (int i = 0; i < WRITES; i++) {
        qpci_io_writeb(r.dev, r.bar0, DOORBELL, 0x5a);
    }
    /* a read is a message: everything sent before it was served */
    qpci_io_readb(r.dev, r.bar0, TEST_SELECT);
    messages = vu_count_in_file(r.log, "write region 0 0x801+1 ret 0");
    if (ioeventfd) {
        /* the first writes are messages, until the client asks again */
        g_assert_cmpuint(messages, >, 0);
        g_assert_cmpuint(messages, <, WRITES);
        /* the rest rang the device's own ioeventfd in the remote */
        g_assert_cmpuint(vu_wait_in_file(r.log, "BAR0 0x801 rung, passed to "
                                         "the device ioeventfd 1", 0), >, 0);
    } else {
        g_assert_cmpuint(messages, ==, WRITES);
        g_assert_cmpuint(vu_count_in_file(r.log, "rung"), ==, 0);
    }
    rig_stop(&r);
}

/*
 * A doorbell with datamatch keeps working for the client after the device
 * dropped its ioeventfd: the server turns the signal into the write it
 * stands for.
 */
static void test_doorbell_gone(void)
{
    Rig r;

    rig_start(&r, "");
    qpci_io_writeb(r.dev, r.bar0, TEST_SELECT, MMIO_DATAMATCH);
    for (int i = 0; i < WRITES; i++) {
        qpci_io_writeb(r.dev, r.bar0, DOORBELL_MATCH, 0xfa);
    }
    /* the device drops its ioeventfd; the client keeps ours */
    qpci_io_writeb(r.dev, r.bar0, TEST_SELECT, MMIO_NO_EVENTFD);
    qpci_io_writeb(r.dev, r.bar0, DOORBELL_MATCH, 0xfa);
    g_assert_cmpuint(vu_wait_in_file(r.log, "BAR0 0x802 rung, passed to the "
                                     "device ioeventfd 0", 0), >, 0);
    rig_stop(&r);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    qtest_add_data_func("/vfio-user/ioeventfd/doorbell", GINT_TO_POINTER(1),
                        test_doorbell);
    qtest_add_data_func("/vfio-user/ioeventfd/off", GINT_TO_POINTER(0),
                        test_doorbell);
    qtest_add_func("/vfio-user/ioeventfd/device-dropped-it",
                   test_doorbell_gone);
    return g_test_run();
}
