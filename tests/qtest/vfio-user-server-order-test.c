/*
 * vfio-user-server keeps the order of what the device does (issue 15):
 *
 * - msg-dma-across, msg-dma-then-direct: with one mapping reached by
 *   message and one mapped by fd, a device write to the first does not
 *   land after its later write to the second (edu: one DMA across both,
 *   or two DMAs).
 *
 * The client here drives the connection message by message (send, recv,
 * reply).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/bswap.h"
#include "vfio-user/server-client.h"
#include "vfio-user/vm-helpers.h"
#include "hw/pci/pci_regs.h"

/* ids of the requests sent here, apart from vfu_conn_call()'s */
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
    qtest_add_func("/vfio-user/server-order/msg-dma-across",
                   test_msg_dma_across);
    qtest_add_func("/vfio-user/server-order/msg-dma-then-direct",
                   test_msg_dma_then_direct);
    return g_test_run();
}
