/*
 * vfio-user-server's DEVICE_GET_REGION_IO_FDS, driven by a raw client:
 * pci-testdev registers an ioeventfd on BAR0 when a test is started; the
 * server offers an eventfd of its own for it, which rings the device's
 * ioeventfd, and which a client that has gone can no longer ring.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "vfio-user/server-client.h"
#include "vfio-user/vm-helpers.h"

#define TEST_SELECT     0
#define MMIO_WILDCARD   1       /* registers an ioeventfd at 2048 + 1 */
#define DOORBELL        0x801
#define RUNG            "BAR0 0x801 rung, passed to the device ioeventfd 1"

typedef struct IoFdsReply {
    VfuRegionIoFds hdr;
    VfuSubRegionIoFd subs[8];
} QEMU_PACKED IoFdsReply;

static void ring(int fd)
{
    uint64_t one = 1;

    g_assert_cmpint(write(fd, &one, sizeof(one)), ==, sizeof(one));
}

/* GET_REGION_IO_FDS for @index with @argsz; the reply stays in @reply. */
static int get_io_fds(VfuConn *c, uint32_t index, uint32_t argsz,
                      VfuMsg **reply)
{
    VfuRegionIoFds req = { .argsz = argsz, .index = index };

    return tc_call(c, VFU_CMD_DEVICE_GET_REGION_IO_FDS, &req, sizeof(req),
                   NULL, 0, reply);
}

static void test_io_fds(void)
{
    g_autofree char *sock = tc_tmp_path("iofds");
    g_autofree char *log = g_strdup_printf("%s.log", sock);
    QTestState *qts = qtest_initf(
        "-M remote -accel tcg -nodefaults -device pci-testdev,id=td "
        "-object vfio-user-server,id=v0,socket=%s,device=td "
        "-trace vfio_user_srv_ioeventfd_fired -D %s", sock, log);
    VfuConn *c = tc_connect(sock);
    g_autoptr(VfuMsg) reply = NULL;
    IoFdsReply *r;
    int old_fd;

    /* nothing registered yet */
    g_assert_cmpint(get_io_fds(c, 0, sizeof(IoFdsReply), &reply), ==, 0);
    g_assert_cmpuint(((VfuRegionIoFds *)reply->payload)->count, ==, 0);
    g_assert_cmpuint(reply->nfds, ==, 0);
    g_clear_pointer(&reply, vfu_msg_free);

    /* the device registers its doorbell */
    tc_write(c, 0, TEST_SELECT, 1, MMIO_WILDCARD);
    g_assert_cmpint(get_io_fds(c, 0, sizeof(IoFdsReply), &reply), ==, 0);
    r = (IoFdsReply *)reply->payload;
    g_assert_cmpuint(r->hdr.count, ==, 1);
    g_assert_cmpuint(r->hdr.argsz, ==, sizeof(r->hdr) + sizeof(r->subs[0]));
    g_assert_cmpuint(r->hdr.flags, ==, 0);
    g_assert_cmphex(r->subs[0].offset, ==, DOORBELL);
    g_assert_cmpuint(r->subs[0].size, ==, 1);
    g_assert_cmpuint(r->subs[0].type, ==, VFU_IO_FD_TYPE_IOEVENTFD);
    g_assert_cmpuint(r->subs[0].flags, ==, 0);
    g_assert_cmpuint(r->subs[0].fd_index, ==, 0);
    g_assert_cmpuint(reply->nfds, ==, 1);

    /* ringing it rings the device's own ioeventfd */
    ring(reply->fds[0]);
    g_assert_cmpuint(vu_wait_in_file(log, RUNG, 0), ==, 1);
    old_fd = vfu_msg_steal_fd(reply, 0);
    g_clear_pointer(&reply, vfu_msg_free);

    /* too little room: the header says how much is needed, no fds */
    g_assert_cmpint(get_io_fds(c, 0, sizeof(VfuRegionIoFds), &reply), ==, 0);
    r = (IoFdsReply *)reply->payload;
    g_assert_cmpuint(reply->len, ==, sizeof(r->hdr));
    g_assert_cmpuint(r->hdr.count, ==, 0);
    g_assert_cmpuint(r->hdr.argsz, ==, sizeof(r->hdr) + sizeof(r->subs[0]));
    g_assert_cmpuint(reply->nfds, ==, 0);
    g_clear_pointer(&reply, vfu_msg_free);

    /* other regions have none; a bad index or argsz is an error */
    for (uint32_t i = 1; i < VFU_PCI_NUM_REGIONS; i++) {
        g_assert_cmpint(get_io_fds(c, i, sizeof(IoFdsReply), &reply), ==, 0);
        g_assert_cmpuint(((VfuRegionIoFds *)reply->payload)->count, ==, 0);
        g_clear_pointer(&reply, vfu_msg_free);
    }
    g_assert_cmpint(get_io_fds(c, VFU_PCI_NUM_REGIONS, sizeof(IoFdsReply),
                               NULL), ==, -EINVAL);
    g_assert_cmpint(get_io_fds(c, 0, 8, NULL), ==, -EINVAL);

    /*
     * The client leaves but keeps the eventfd: after a new client came,
     * ringing it does nothing; the new client's eventfd works.  The old
     * one rings first, so a server still watching it would see both in
     * the iteration that serves the new one; a round trip after that
     * one's trace line lets any such handler run.  Then the old ring
     * must have left no trace line and still sit unread in the eventfd.
     */
    vfu_conn_free(c);
    c = tc_connect(sock);
    tc_write(c, 0, TEST_SELECT, 1, MMIO_WILDCARD);  /* reset stopped it */
    g_assert_cmpint(get_io_fds(c, 0, sizeof(IoFdsReply), &reply), ==, 0);
    g_assert_cmpuint(reply->nfds, ==, 1);
    ring(old_fd);
    ring(reply->fds[0]);
    g_assert_cmpuint(vu_wait_in_file(log, RUNG, 1), ==, 2);
    tc_read(c, 0, TEST_SELECT, 1);                  /* the round trip */
    g_assert_cmpuint(vu_count_in_file(log, RUNG), ==, 2);
    g_assert_cmpuint(tc_eventfd_wait(old_fd, 0), ==, 1);
    g_clear_pointer(&reply, vfu_msg_free);

    close(old_fd);
    vfu_conn_free(c);
    qtest_quit(qts);
    unlink(log);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    module_call_init(MODULE_INIT_QOM);
    qtest_add_func("/vfio-user/server/io-fds", test_io_fds);
    return g_test_run();
}
