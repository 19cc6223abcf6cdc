/*
 * vfio-user-server applies what the client sends in the order it was
 * sent, and the device's DMA becomes visible in the order the device made
 * it (issue 15, items 1, 4 and 5):
 *
 * - in-order: requests that arrive while the server waits for a DMA_READ
 *   reply take effect before the ones that arrive after it (lsi53c895a
 *   fetching its SCRIPTS by message from inside a register write);
 * - doorbell: everything sent before a doorbell's eventfd was signalled
 *   is applied before the doorbell rings the device (pci-testdev);
 * - msg-dma-across, msg-dma-then-direct: with one mapping reached by
 *   message and one mapped by fd, a device write to the first does not
 *   land after its later write to the second (edu: one DMA across both,
 *   or two DMAs).
 *
 * The client here drives the connection message by message (send, recv,
 * reply), and holds the remote process stopped (SIGSTOP) while it queues
 * messages that must all be in the socket when the server next reads it:
 * the order of arrival is then fixed, not a matter of timing.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/bswap.h"
#include "vfio-user/server-client.h"
#include "vfio-user/vm-helpers.h"
#include "hw/pci/pci_regs.h"

/* ids of the requests sent here, apart from vfu_client_call()'s */
static uint16_t next_id = 0x4000;

/* A temporary directory with the remote's socket and trace log */
typedef struct OrderRig {
    char *dir;
    char *sock;
    char *log;
    GPid pid;
    VfuConn *c;
    VfuLimits lim;          /* ours, to decode what we receive */
} OrderRig;

/*
 * Serve "-device @device" (id @id), with the trace events @trace1 and
 * @trace2 when @trace1 is not NULL.
 */
static void rig_start(OrderRig *r, const char *id, const char *device,
                      const char *trace1, const char *trace2)
{
    g_autofree char *obj = NULL;

    r->dir = g_dir_make_tmp("vfu-order-XXXXXX", NULL);
    g_assert(r->dir);
    r->sock = g_strdup_printf("%s/srv.sock", r->dir);
    r->log = g_strdup_printf("%s/remote.log", r->dir);
    obj = g_strdup_printf("vfio-user-server,id=v0,socket=%s,device=%s",
                          r->sock, id);
    if (trace1) {
        r->pid = vu_spawn_remote_args(r->sock, "-device", device,
                                      "-object", obj, "-trace", trace1,
                                      "-trace", trace2, "-D", r->log, NULL);
    } else {
        r->pid = vu_spawn_remote_args(r->sock, "-device", device,
                                      "-object", obj, NULL);
    }
    r->c = tc_connect(r->sock);
    tc_limits(&r->lim);
}

static void rig_stop(OrderRig *r)
{
    vfu_conn_free(r->c);
    vu_stop_server(r->pid);
    unlink(r->sock);
    unlink(r->log);
    rmdir(r->dir);
    g_free(r->log);
    g_free(r->sock);
    g_free(r->dir);
}

/* The remote's main thread is stopped ('T' in /proc/PID/stat). */
static bool remote_stopped(GPid pid)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/stat", pid);
    g_autofree char *text = NULL;
    const char *p;

    if (!g_file_get_contents(path, &text, NULL, NULL)) {
        return false;
    }
    p = strrchr(text, ')');         /* the name may hold anything */
    return p && (p[2] == 'T' || p[2] == 't');
}

/*
 * Freeze the remote: what we send until remote_cont() is all in its
 * socket when it next looks.
 */
static void remote_stop(GPid pid)
{
    g_assert_cmpint(kill(pid, SIGSTOP), ==, 0);
    for (int i = 0; i < 10000 && !remote_stopped(pid); i++) {
        g_usleep(1000);
    }
    g_assert(remote_stopped(pid));
}

static void remote_cont(GPid pid)
{
    g_assert_cmpint(kill(pid, SIGCONT), ==, 0);
}

/* Send a REGION_READ or REGION_WRITE with vfu_conn_send(); its id. */
static uint16_t send_access(VfuConn *c, uint16_t cmd, uint32_t flags,
                            uint32_t region, uint64_t off, uint32_t size,
                            uint64_t val)
{
    g_autofree VfuRegionAccess *req = g_malloc0(sizeof(*req) + size);
    bool write = cmd == VFU_CMD_REGION_WRITE;
    uint16_t id = next_id++;

    req->offset = off;
    req->region = region;
    req->count = size;
    if (write) {
        stn_le_p(req->data, size, val);
    }
    g_assert_cmpint(vfu_conn_send(c, cmd, id, VFU_F_TYPE_COMMAND | flags, 0,
                                  req, sizeof(*req) + (write ? size : 0),
                                  NULL, 0, &error_abort), ==, 0);
    return id;
}

/* A posted write: No_reply, as a guest's MMIO write under x-posted-writes */
static void post_write(VfuConn *c, uint32_t region, uint64_t off,
                       uint32_t size, uint64_t val)
{
    send_access(c, VFU_CMD_REGION_WRITE, VFU_F_NO_REPLY, region, off, size,
                val);
}

/* A REGION_READ we will wait for; its id. */
static uint16_t send_read(VfuConn *c, uint32_t region, uint64_t off,
                          uint32_t size)
{
    return send_access(c, VFU_CMD_REGION_READ, 0, region, off, size, 0);
}

/* Decode a message received with vfu_conn_recv() */
static VfuMsg *decoded(OrderRig *r, VfuMsg *msg)
{
    g_assert_cmpint(vfu_msg_decode(msg, &r->lim, &error_abort), ==, 0);
    return msg;
}

/* The next message from the server (waits up to the timeout, 10 s) */
static VfuMsg *recv_msg(OrderRig *r)
{
    VfuMsg *msg = NULL;

    g_assert_cmpint(vfu_conn_recv(r->c, &msg, true, &error_abort), ==, 1);
    return decoded(r, msg);
}

/* The next message, which must be a DMA request of @cmd at @addr */
static VfuMsg *expect_dma(OrderRig *r, uint16_t cmd, uint64_t addr)
{
    VfuMsg *msg = recv_msg(r);
    VfuDmaAccess *a = (VfuDmaAccess *)msg->payload;

    g_assert_cmpstr(vfu_command_name(msg->hdr.command), ==,
                    vfu_command_name(cmd));
    g_assert(!vfu_msg_is_reply(msg));
    g_assert_cmphex(a->address, ==, addr);
    return msg;
}

/* The value a REGION_READ reply carries */
static uint64_t read_value(VfuMsg *msg)
{
    VfuRegionAccess *a = (VfuRegionAccess *)msg->payload;

    g_assert(vfu_msg_is_reply(msg));
    g_assert_cmpuint(msg->hdr.flags & VFU_F_ERROR, ==, 0);
    g_assert_cmpuint(msg->len, ==, sizeof(*a) + a->count);
    return ldn_le_p(a->data, a->count);
}

/*
 * Answer a DMA_READ or DMA_WRITE to the client memory @mem at @base
 * (which the request must lie in).
 */
static void answer_dma(VfuConn *c, VfuMsg *msg, uint8_t *mem, uint64_t base,
                       uint64_t size)
{
    VfuDmaAccess *a = (VfuDmaAccess *)msg->payload;
    g_autofree VfuDmaAccess *rep = g_malloc0(sizeof(*rep) + a->count);
    size_t len = sizeof(*rep);

    g_assert_cmphex(a->address, >=, base);
    g_assert_cmpuint(a->count, <=, size);
    g_assert_cmphex(a->address - base, <=, size - a->count);
    *rep = *a;
    if (msg->hdr.command == VFU_CMD_DMA_READ) {
        memcpy(rep->data, mem + (a->address - base), a->count);
        len += a->count;
    } else {
        g_assert_cmpuint(msg->hdr.command, ==, VFU_CMD_DMA_WRITE);
        memcpy(mem + (a->address - base), a->data, a->count);
    }
    g_assert_cmpint(vfu_conn_reply(c, msg, rep, len, NULL, 0, &error_abort),
                    ==, 0);
}

/* ---- 1: requests take effect in the order they arrived ----------------- */

#define LSI_MMIO_BAR        1
#define LSI_DSP             0x2c    /* writing its top byte starts SCRIPTS */
#define LSI_SCRATCHA        0x34
#define SCRIPT_IOVA         0x100000
#define SCRIPT_SIZE         0x1000
#define INSN_INT            0x98080000  /* INT when true, always: stop */
#define ORDER_WRITES        8

/*
 * A posted write to DSP makes lsi53c895a fetch its first instruction by
 * DMA_READ from inside the write.  While the server waits for that, the
 * client posts SCRATCHA = 1, 2 and asks for SCRATCHA; once the fetches
 * are answered it posts SCRATCHA = 3 .. ORDER_WRITES and asks again.
 * The last fetch's reply and everything after it reach the server's
 * socket together (it is stopped meanwhile), so it finds the newer
 * requests there the moment it finishes the DSP write: those must still
 * wait for the ones that came during the fetch.
 */
static void test_in_order(void)
{
    OrderRig r = { };
    uint8_t script[SCRIPT_SIZE] = { };
    uint16_t during, after, first = 0;
    uint64_t v_during = 0, v_after = 0;
    unsigned replies = 0;
    VfuMsg *msg;

    rig_start(&r, "lsi", "lsi53c895a,id=lsi", NULL, NULL);
    stl_le_p(script, INSN_INT);
    g_assert_cmpint(tc_dma_map(r.c, SCRIPT_IOVA, SCRIPT_SIZE, 0,
                               VFU_DMA_MAP_F_READ | VFU_DMA_MAP_F_WRITE, -1),
                    ==, 0);
    tc_write(r.c, VFU_PCI_CONFIG_REGION, PCI_COMMAND, 2, PCI_COMMAND_MASTER);

    post_write(r.c, LSI_MMIO_BAR, LSI_DSP, 4, SCRIPT_IOVA);
    msg = expect_dma(&r, VFU_CMD_DMA_READ, SCRIPT_IOVA);
    /* the server is inside the DSP write, waiting for us */
    post_write(r.c, LSI_MMIO_BAR, LSI_SCRATCHA, 4, 1);
    post_write(r.c, LSI_MMIO_BAR, LSI_SCRATCHA, 4, 2);
    during = send_read(r.c, LSI_MMIO_BAR, LSI_SCRATCHA, 4);
    answer_dma(r.c, msg, script, SCRIPT_IOVA, SCRIPT_SIZE);
    vfu_msg_free(msg);

    /* the INT's second dword: the script's last fetch */
    msg = expect_dma(&r, VFU_CMD_DMA_READ, SCRIPT_IOVA + 4);
    remote_stop(r.pid);
    answer_dma(r.c, msg, script, SCRIPT_IOVA, SCRIPT_SIZE);
    vfu_msg_free(msg);
    for (int v = 3; v <= ORDER_WRITES; v++) {
        post_write(r.c, LSI_MMIO_BAR, LSI_SCRATCHA, 4, v);
    }
    after = send_read(r.c, LSI_MMIO_BAR, LSI_SCRATCHA, 4);
    remote_cont(r.pid);

    while (replies < 2) {
        msg = recv_msg(&r);
        if (!vfu_msg_is_reply(msg)) {
            /* no further fetch is due, but answer rather than hang */
            answer_dma(r.c, msg, script, SCRIPT_IOVA, SCRIPT_SIZE);
            vfu_msg_free(msg);
            continue;
        }
        if (msg->hdr.msg_id == during) {
            v_during = read_value(msg);
        } else {
            g_assert_cmpuint(msg->hdr.msg_id, ==, after);
            v_after = read_value(msg);
        }
        first = replies++ ? first : msg->hdr.msg_id;
        vfu_msg_free(msg);
    }
    g_test_message("SCRATCHA: %" PRIu64 " for the read sent during the "
                   "fetch, %" PRIu64 " for the one after; replies in order "
                   "%s", v_during, v_after,
                   first == during ? "yes" : "no");

    /* a round trip later the register holds the last value written */
    g_assert_cmpuint(tc_read(r.c, LSI_MMIO_BAR, LSI_SCRATCHA, 4), ==,
                     ORDER_WRITES);
    g_assert_cmpuint(tc_read(r.c, LSI_MMIO_BAR, LSI_SCRATCHA, 4), ==,
                     ORDER_WRITES);
    /* each read saw exactly the writes sent before it */
    g_assert_cmpuint(v_during, ==, 2);
    g_assert_cmpuint(v_after, ==, ORDER_WRITES);
    g_assert_cmpuint(first, ==, during);

    rig_stop(&r);
}

/* ---- 4: a doorbell rings after the writes sent before it -------------- */

#define TD_TEST_SELECT      0
#define TD_MMIO_WILDCARD    1       /* an ioeventfd at BAR0 2048 + 1 */
#define TD_SPARE            0x10    /* ignored by the device */
#define TD_SPARE_WRITE      "addr 0x10 value"   /* its trace */
#define TD_WRITES           200     /* > VFU_SRV_BATCH (64), twice over */
#define TD_RUNG             "BAR0 0x801 rung"

typedef struct IoFdsReply {
    VfuRegionIoFds hdr;
    VfuSubRegionIoFd subs[8];
} QEMU_PACKED IoFdsReply;

/*
 * TD_WRITES posted writes, then the doorbell's eventfd, all in the socket
 * and the eventfd before the server looks at either: in the trace log,
 * every write (memory_region_ops_write at TD_SPARE) must come before
 * the doorbell's line.
 */
static void test_doorbell_after_writes(void)
{
    OrderRig r = { };
    g_autoptr(VfuMsg) reply = NULL;
    VfuRegionIoFds req = { .argsz = sizeof(IoFdsReply), .index = 0 };
    g_autofree char *text = NULL;
    g_auto(GStrv) lines = NULL;
    unsigned before = 0, total = 0;
    bool rung = false;
    uint64_t one = 1;
    int fd;

    rig_start(&r, "td", "pci-testdev,id=td", "memory_region_ops_write",
              "vfio_user_srv_ioeventfd_fired");
    tc_write(r.c, 0, TD_TEST_SELECT, 1, TD_MMIO_WILDCARD);
    g_assert_cmpint(tc_call(r.c, VFU_CMD_DEVICE_GET_REGION_IO_FDS, &req,
                            sizeof(req), NULL, 0, &reply), ==, 0);
    g_assert_cmpuint(((VfuRegionIoFds *)reply->payload)->count, ==, 1);
    g_assert_cmpuint(reply->nfds, ==, 1);
    fd = reply->fds[0];

    remote_stop(r.pid);
    for (unsigned i = 0; i < TD_WRITES; i++) {
        post_write(r.c, 0, TD_SPARE, 1, i);
    }
    g_assert_cmpint(write(fd, &one, sizeof(one)), ==, sizeof(one));
    remote_cont(r.pid);

    g_assert_cmpuint(vu_wait_in_file(r.log, TD_RUNG, 0), ==, 1);
    /* a round trip: the writes have all been served by its reply */
    tc_read(r.c, 0, TD_TEST_SELECT, 1);

    g_assert(g_file_get_contents(r.log, &text, NULL, NULL));
    lines = g_strsplit(text, "\n", -1);
    for (char **l = lines; *l; l++) {
        if (strstr(*l, TD_RUNG)) {
            rung = true;
        } else if (strstr(*l, TD_SPARE_WRITE)) {
            total++;
            before += !rung;
        }
    }
    g_test_message("%u of %u posted writes applied before the doorbell",
                   before, total);
    g_assert(rung);
    g_assert_cmpuint(total, ==, TD_WRITES);
    g_assert_cmpuint(before, ==, TD_WRITES);

    rig_stop(&r);
}

/* ---- 5: message DMA is not overtaken by direct DMA -------------------- */

#define MSG_IOVA            0x100000    /* no fd: DMA_WRITE messages */
#define FD_IOVA             0x101000    /* right after it, mapped by fd */
#define MAP_SIZE            0x1000
#define DMA_LEN             64          /* half to each mapping */
#define SRC_OFF             0x800       /* the data, in the fd mapping */
#define FLUSHING            "waiting for the DMA_WRITEs in flight"

/* edu with both kinds of mapping, its DMA buffer holding @pattern */
typedef struct MixedRig {
    OrderRig r;
    int fd;
    uint8_t *mem;                   /* the memfd mapped at FD_IOVA */
    uint8_t msg_mem[MAP_SIZE];      /* what we serve at MSG_IOVA */
    uint8_t pattern[DMA_LEN];
} MixedRig;

static void mixed_start(MixedRig *m)
{
    VfuConn *c;

    for (int i = 0; i < DMA_LEN; i++) {
        m->pattern[i] = 0x40 + i;
    }
    rig_start(&m->r, "e0", "edu,id=e0", "vfio_user_srv_dma_flush",
              "vfio_user_srv_dma_peer");
    c = m->r.c;
    m->fd = memfd_create("vfu-order", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    g_assert_cmpint(m->fd, >=, 0);
    g_assert_cmpint(ftruncate(m->fd, MAP_SIZE), ==, 0);
    g_assert_cmpint(fcntl(m->fd, F_ADD_SEALS, F_SEAL_SHRINK), ==, 0);
    m->mem = mmap(NULL, MAP_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, m->fd,
                  0);
    g_assert(m->mem != MAP_FAILED);
    memcpy(m->mem + SRC_OFF, m->pattern, DMA_LEN);

    g_assert_cmpint(tc_dma_map(c, MSG_IOVA, MAP_SIZE, 0,
                               VFU_DMA_MAP_F_READ | VFU_DMA_MAP_F_WRITE, -1),
                    ==, 0);
    g_assert_cmpint(tc_dma_map(c, FD_IOVA, MAP_SIZE, 0,
                               VFU_DMA_MAP_F_READ | VFU_DMA_MAP_F_WRITE,
                               m->fd), ==, 0);
    tc_write(c, VFU_PCI_CONFIG_REGION, PCI_COMMAND, 2, PCI_COMMAND_MASTER);
    /* edu's buffer from the fd mapping: no messages */
    tc_edu_dma(c, FD_IOVA + SRC_OFF, EDU_DMA_BUF, DMA_LEN, false);
}

/*
 * The device wrote the first half of the pattern by DMA_WRITE (@wr, not
 * answered yet), and the second half to the start of the memfd after
 * it, or will.  Check that the second half is not there before we answer
 * @wr: to know the server went as far as it will, send a REGION_READ;
 * either the server answers it (it is done with the device's access) or
 * it says in its trace that it waits for the DMA_WRITE first.  When it
 * answered, @settle (if true) waits for edu's DMA to end first.
 */
static void mixed_check(MixedRig *m, VfuMsg *wr, bool settle)
{
    uint8_t zero[DMA_LEN / 2] = { };
    bool flushing = false;
    VfuMsg *msg = NULL;
    uint16_t id;

    g_assert_cmpuint(((VfuDmaAccess *)wr->payload)->count, ==, DMA_LEN / 2);
    id = send_read(m->r.c, 0, EDU_DMA_CMD, 8);
    for (int i = 0; i < 10000 && !msg && !flushing; i++) {
        int ret = vfu_conn_recv(m->r.c, &msg, false, &error_abort);

        g_assert_cmpint(ret, >=, 0);
        if (ret) {
            decoded(&m->r, msg);
            g_assert(vfu_msg_is_reply(msg));
            g_assert_cmpuint(msg->hdr.msg_id, ==, id);
        } else if (vu_count_in_file(m->r.log, FLUSHING)) {
            flushing = true;
        } else {
            g_usleep(1000);
        }
    }
    g_test_message("with the DMA_WRITE unanswered the server %s",
                   msg ? "answered a later request" :
                   flushing ? "waits for it" : "did nothing");
    g_assert(msg || flushing);
    for (int i = 0; msg && settle && i < 500 &&
         (tc_read(m->r.c, 0, EDU_DMA_CMD, 8) & EDU_DMA_RUN); i++) {
        g_usleep(10 * 1000);
    }
    /* the device wrote the message half first: not the rest before it */
    g_assert_cmpmem(m->mem, DMA_LEN / 2, zero, sizeof(zero));

    answer_dma(m->r.c, wr, m->msg_mem, MSG_IOVA, MAP_SIZE);
    if (!msg) {
        msg = recv_msg(&m->r);
        g_assert(vfu_msg_is_reply(msg));
        g_assert_cmpuint(msg->hdr.msg_id, ==, id);
    }
    vfu_msg_free(msg);
    for (int i = 0; i < 500 && (tc_read(m->r.c, 0, EDU_DMA_CMD, 8) &
                                EDU_DMA_RUN); i++) {
        g_usleep(10 * 1000);
    }
    g_assert_cmpmem(m->msg_mem + (((VfuDmaAccess *)wr->payload)->address -
                                  MSG_IOVA), DMA_LEN / 2,
                    m->pattern, DMA_LEN / 2);
    g_assert_cmpmem(m->mem, DMA_LEN / 2, m->pattern + DMA_LEN / 2,
                    DMA_LEN / 2);
}

static void mixed_stop(MixedRig *m)
{
    munmap(m->mem, MAP_SIZE);
    close(m->fd);
    rig_stop(&m->r);
}

/*
 * One edu DMA from its buffer across the end of the message mapping into
 * the fd mapping: the first half goes as a DMA_WRITE, the second half is
 * a plain store into our memfd.
 */
static void test_msg_dma_across(void)
{
    MixedRig *m = g_new0(MixedRig, 1);
    VfuMsg *wr;

    mixed_start(m);
    tc_edu_dma_start(m->r.c, EDU_DMA_BUF, FD_IOVA - DMA_LEN / 2, DMA_LEN,
                     EDU_DMA_RUN | EDU_DMA_TO_PCI);
    wr = expect_dma(&m->r, VFU_CMD_DMA_WRITE, FD_IOVA - DMA_LEN / 2);
    mixed_check(m, wr, false);
    vfu_msg_free(wr);
    mixed_stop(m);
    g_free(m);
}

/*
 * Two edu DMAs: the first half of the buffer to the message mapping,
 * then, programmed while the first one's DMA_WRITE is unanswered (with
 * posted writes: the server may be waiting for us), the second half to
 * the fd mapping.
 */
static void test_msg_dma_then_direct(void)
{
    MixedRig *m = g_new0(MixedRig, 1);
    VfuConn *c;
    VfuMsg *wr;

    mixed_start(m);
    c = m->r.c;
    tc_edu_dma_start(c, EDU_DMA_BUF, MSG_IOVA, DMA_LEN / 2,
                     EDU_DMA_RUN | EDU_DMA_TO_PCI);
    wr = expect_dma(&m->r, VFU_CMD_DMA_WRITE, MSG_IOVA);
    post_write(c, 0, EDU_DMA_SRC, 8, EDU_DMA_BUF + DMA_LEN / 2);
    post_write(c, 0, EDU_DMA_DST, 8, FD_IOVA);
    post_write(c, 0, EDU_DMA_CNT, 8, DMA_LEN / 2);
    post_write(c, 0, EDU_DMA_CMD, 8, EDU_DMA_RUN | EDU_DMA_TO_PCI);
    mixed_check(m, wr, true);
    vfu_msg_free(wr);
    mixed_stop(m);
    g_free(m);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    module_call_init(MODULE_INIT_QOM);
    /* first: the others fail (abort) until the server keeps the order */
    qtest_add_func("/vfio-user/server-order/msg-dma-across",
                   test_msg_dma_across);
    qtest_add_func("/vfio-user/server-order/msg-dma-then-direct",
                   test_msg_dma_then_direct);
    qtest_add_func("/vfio-user/server-order/in-order", test_in_order);
    qtest_add_func("/vfio-user/server-order/doorbell-after-writes",
                   test_doorbell_after_writes);
    return g_test_run();
}
