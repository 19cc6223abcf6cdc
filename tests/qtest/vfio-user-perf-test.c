/*
 * vfio-user-server fast paths, driven by a test client on the shared
 * protocol core: a device DMA to client memory without an fd travels as
 * one DMA_READ/DMA_WRITE per max_data_xfer_size (not one per 8 bytes),
 * still only inside the client's mappings and with their permissions;
 * REGION_WRITEs flagged No_reply are applied in order and never answered,
 * not even when they fail.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "vfio-user/server-client.h"
#include "hw/pci/pci_regs.h"

#define MEM_BASE    0x200000
#define MEM_SIZE    0x4000
/* edu's whole DMA buffer but its last byte, which its range check refuses */
#define EDU_MAX     4095

typedef enum PeerMode {
    PEER_OK,
    PEER_ERROR,         /* answer every DMA request with an error */
    PEER_BAD_COUNT,     /* answer DMA_READ with fewer bytes than asked */
} PeerMode;

/* Client memory the server reaches through DMA_READ/DMA_WRITE only. */
typedef struct PeerMem {
    PeerMode mode;
    uint8_t buf[MEM_SIZE];
    unsigned reads, writes;
    uint64_t read_bytes, write_bytes;
    uint64_t max_count;
} PeerMem;

static int peer_dma(VfuConn *c, VfuMsg *msg, void *opaque)
{
    PeerMem *m = opaque;
    VfuDmaAccess *a = (VfuDmaAccess *)msg->payload;
    bool is_read = msg->hdr.command == VFU_CMD_DMA_READ;

    if (!is_read && msg->hdr.command != VFU_CMD_DMA_WRITE) {
        return -ENOSYS;
    }
    /* the server must stay inside what was mapped */
    g_assert_cmpuint(a->address, >=, MEM_BASE);
    g_assert_cmpuint(a->count, <=, MEM_SIZE);
    g_assert_cmpuint(a->address - MEM_BASE, <=, MEM_SIZE - a->count);
    m->max_count = MAX(m->max_count, a->count);
    if (is_read) {
        m->reads++;
        m->read_bytes += a->count;
    } else {
        m->writes++;
        m->write_bytes += a->count;
    }
    if (m->mode == PEER_ERROR) {
        return -EIO;
    }
    if (is_read) {
        uint64_t n = m->mode == PEER_BAD_COUNT ? a->count / 2 : a->count;
        g_autofree VfuDmaAccess *r = g_malloc0(sizeof(*r) + n);

        *r = *a;
        memcpy(r->data, m->buf + (a->address - MEM_BASE), n);
        return vfu_conn_reply(c, msg, r, sizeof(*r) + n, NULL, 0, NULL);
    } else {
        VfuDmaAccess r = *a;

        memcpy(m->buf + (a->address - MEM_BASE), a->data, a->count);
        return vfu_conn_reply(c, msg, &r, sizeof(r), NULL, 0, NULL);
    }
}

static void fill_pattern(uint8_t *p, size_t n, uint8_t seed)
{
    for (size_t i = 0; i < n; i++) {
        p[i] = seed + i * 13;
    }
}

/* Connect proposing @max_xfer as our max_data_xfer_size (0: default). */
static VfuConn *connect_xfer(const char *sock, uint64_t max_xfer)
{
    VfuLimits lim;
    VfuConn *c;

    tc_limits(&lim);
    if (max_xfer) {
        lim.max_data_xfer_size = max_xfer;
    }
    c = tc_connect_limits(sock, &lim);
    g_assert(c);
    g_assert_cmpint(vfu_client_negotiate(c, &error_abort), ==, 0);
    return c;
}

#define SCRATCH     (MEM_BASE + 0x3000)   /* mapped read-write in every test */

/*
 * edu's DMA buffer is not readable through its BAR: DMA it out to
 * SCRATCH and copy it from there, leaving the counters as they were.
 */
static void edu_buf_read(VfuConn *c, PeerMem *m, void *buf, uint32_t len)
{
    PeerMem saved = *m;

    m->mode = PEER_OK;
    tc_edu_dma(c, EDU_DMA_BUF, SCRATCH, len, true);
    memcpy(buf, m->buf + (SCRATCH - MEM_BASE), len);
    *m = saved;
}

/*
 * edu in a remote machine, and a client that maps MEM_SIZE bytes without
 * an fd and serves the DMA from @m (filled with pattern @seed).
 */
static VfuConn *peer_start(const char *sock, uint64_t max_xfer, PeerMem *m,
                           uint8_t seed, QTestState **qts)
{
    VfuConn *c;

    *qts = tc_start_edu(sock, NULL);
    c = connect_xfer(sock, max_xfer);
    fill_pattern(m->buf, EDU_MAX, seed);
    vfu_conn_set_request_func(c, peer_dma, m);
    g_assert_cmpint(tc_dma_map(c, MEM_BASE, MEM_SIZE, 0,
                               VFU_DMA_MAP_F_READ | VFU_DMA_MAP_F_WRITE, -1),
                    ==, 0);
    tc_write(c, VFU_PCI_CONFIG_REGION, PCI_COMMAND, 2, PCI_COMMAND_MASTER);
    return c;
}

/* A (4 KiB - 1) edu DMA each way is one DMA_READ and one DMA_WRITE. */
static void test_dma_bulk(void)
{
    g_autofree char *sock = tc_tmp_path("bulk");
    g_autofree PeerMem *m = g_new0(PeerMem, 1);
    QTestState *qts;
    VfuConn *c = peer_start(sock, 0, m, 5, &qts);
    uint8_t back[EDU_MAX];

    tc_edu_dma(c, MEM_BASE, EDU_DMA_BUF, EDU_MAX, false);
    g_assert_cmpuint(m->reads, ==, 1);
    g_assert_cmpuint(m->read_bytes, ==, EDU_MAX);
    edu_buf_read(c, m, back, sizeof(back));
    g_assert_cmpmem(back, sizeof(back), m->buf, EDU_MAX);

    tc_edu_dma(c, EDU_DMA_BUF, MEM_BASE + 0x1000, EDU_MAX, true);
    g_assert_cmpuint(m->writes, ==, 1);
    g_assert_cmpuint(m->write_bytes, ==, EDU_MAX);
    g_assert_cmpmem(m->buf + 0x1000, EDU_MAX, m->buf, EDU_MAX);

    /* an unaligned odd size is still one message */
    tc_edu_dma(c, MEM_BASE + 3, EDU_DMA_BUF, 1001, false);
    g_assert_cmpuint(m->reads, ==, 2);
    g_assert_cmpuint(m->read_bytes, ==, EDU_MAX + 1001);

    vfu_conn_free(c);
    qtest_quit(qts);
}

/* The client's max_data_xfer_size cuts a DMA into that many messages. */
static void test_dma_bulk_chunks(void)
{
    g_autofree char *sock = tc_tmp_path("chunks");
    g_autofree PeerMem *m = g_new0(PeerMem, 1);
    QTestState *qts;
    VfuConn *c = peer_start(sock, 1024, m, 9, &qts);
    uint8_t back[EDU_MAX];

    tc_edu_dma(c, MEM_BASE, EDU_DMA_BUF, EDU_MAX, false);
    g_assert_cmpuint(m->reads, ==, 4);
    g_assert_cmpuint(m->max_count, ==, 1024);
    edu_buf_read(c, m, back, sizeof(back));
    g_assert_cmpmem(back, sizeof(back), m->buf, EDU_MAX);

    tc_edu_dma(c, EDU_DMA_BUF, MEM_BASE + 0x1000, EDU_MAX, true);
    g_assert_cmpuint(m->writes, ==, 4);
    g_assert_cmpmem(m->buf + 0x1000, EDU_MAX, m->buf, EDU_MAX);

    vfu_conn_free(c);
    qtest_quit(qts);
}

/*
 * Bad cases on the bulk path: a DMA running off the end of a mapping,
 * into a mapping without the permission, and a client that fails or
 * answers short.  Only the mapped, permitted part reaches the client; the
 * rest reads as all-ones; the server keeps serving.
 */
static void test_dma_bulk_bad(void)
{
    g_autofree char *sock = tc_tmp_path("bulkbad");
    QTestState *qts = tc_start_edu(sock, NULL);
    VfuConn *c = connect_xfer(sock, 0);
    g_autofree PeerMem *m = g_new0(PeerMem, 1);
    uint8_t back[EDU_MAX], ones[EDU_MAX];

    memset(ones, 0xff, sizeof(ones));
    fill_pattern(m->buf, sizeof(m->buf), 17);
    vfu_conn_set_request_func(c, peer_dma, m);
    /* [0, 0x1000) read-write, [0x1000, 0x2000) read-only, then nothing */
    g_assert_cmpint(tc_dma_map(c, MEM_BASE, 0x1000, 0,
                               VFU_DMA_MAP_F_READ | VFU_DMA_MAP_F_WRITE, -1),
                    ==, 0);
    g_assert_cmpint(tc_dma_map(c, MEM_BASE + 0x1000, 0x1000, 0,
                               VFU_DMA_MAP_F_READ, -1), ==, 0);
    g_assert_cmpint(tc_dma_map(c, SCRATCH, 0x1000, 0,
                               VFU_DMA_MAP_F_READ | VFU_DMA_MAP_F_WRITE, -1),
                    ==, 0);
    tc_write(c, VFU_PCI_CONFIG_REGION, PCI_COMMAND, 2, PCI_COMMAND_MASTER);

    /* read across both mappings and past their end: two messages */
    tc_edu_dma(c, MEM_BASE + 0x1800, EDU_DMA_BUF, EDU_MAX, false);
    g_assert_cmpuint(m->reads, ==, 1);
    g_assert_cmpuint(m->read_bytes, ==, 0x800);
    edu_buf_read(c, m, back, EDU_MAX);
    g_assert_cmpmem(back, 0x800, m->buf + 0x1800, 0x800);
    g_assert_cmpmem(back + 0x800, EDU_MAX - 0x800, ones, EDU_MAX - 0x800);

    /* write to the read-only mapping: no message at all */
    tc_edu_dma(c, EDU_DMA_BUF, MEM_BASE + 0x1000, EDU_MAX, true);
    g_assert_cmpuint(m->writes, ==, 0);

    /* write straddling rw and ro: only the rw part is sent */
    tc_edu_dma(c, EDU_DMA_BUF, MEM_BASE + 0xc00, 0x800, true);
    g_assert_cmpuint(m->writes, ==, 1);
    g_assert_cmpuint(m->write_bytes, ==, 0x400);
    g_assert_cmpmem(m->buf + 0xc00, 0x400, back, 0x400);

    /* the client fails the request: all-ones, the server goes on */
    m->mode = PEER_ERROR;
    tc_edu_dma(c, MEM_BASE, EDU_DMA_BUF, EDU_MAX, false);
    g_assert_cmpuint(m->reads, ==, 2);
    edu_buf_read(c, m, back, EDU_MAX);
    g_assert_cmpmem(back, EDU_MAX, ones, EDU_MAX);

    /* a short answer is refused as a whole */
    m->mode = PEER_BAD_COUNT;
    tc_edu_dma(c, MEM_BASE, EDU_DMA_BUF, EDU_MAX, false);
    g_assert_cmpuint(m->reads, ==, 3);
    edu_buf_read(c, m, back, EDU_MAX);
    g_assert_cmpmem(back, EDU_MAX, ones, EDU_MAX);

    /* and a good one works again */
    m->mode = PEER_OK;
    tc_edu_dma(c, MEM_BASE, EDU_DMA_BUF, EDU_MAX, false);
    g_assert_cmpuint(m->reads, ==, 4);
    edu_buf_read(c, m, back, EDU_MAX);
    g_assert_cmpmem(back, EDU_MAX, m->buf, EDU_MAX);

    vfu_conn_free(c);
    qtest_quit(qts);
}

/* Send a REGION_WRITE flagged No_reply; returns its message id. */
static uint16_t post_write(VfuConn *c, uint32_t region, uint64_t off,
                           uint32_t val, uint16_t id)
{
    struct QEMU_PACKED {
        VfuRegionAccess a;
        uint8_t d[4];
    } req = { .a = { .offset = off, .region = region, .count = 4 } };

    stl_le_p(req.d, val);
    g_assert_cmpint(vfu_conn_send(c, VFU_CMD_REGION_WRITE, id,
                                  VFU_F_TYPE_COMMAND | VFU_F_NO_REPLY, 0,
                                  &req, sizeof(req), NULL, 0, NULL), ==, 0);
    return id;
}

/*
 * Posted writes are applied in order before a later read is answered,
 * get no reply, and a failing one gets no error reply either: the next
 * message from the server is the reply to the read.
 */
static void test_posted_writes(void)
{
    g_autofree char *sock = tc_tmp_path("posted");
    QTestState *qts = tc_start_edu(sock, NULL);
    VfuConn *c = connect_xfer(sock, 0);
    VfuRegionAccess rd = { .offset = EDU_LIVENESS, .region = 0, .count = 4 };
    g_autoptr(VfuMsg) reply = NULL;
    VfuRegionAccess *ra;
    uint16_t id = 0x4000;

    for (uint32_t v = 1; v <= 64; v++) {
        post_write(c, 0, EDU_LIVENESS, v, id++);
        if (v == 32) {
            /* bad region, then beyond the BAR: both fail silently */
            post_write(c, 42, 0, 0, id++);
            post_write(c, 0, UINT64_MAX - 2, 0, id++);
        }
    }
    g_assert_cmpint(vfu_conn_send(c, VFU_CMD_REGION_READ, id, VFU_F_TYPE_COMMAND,
                                  0, &rd, sizeof(rd), NULL, 0, NULL), ==, 0);
    g_assert_cmpint(vfu_conn_recv(c, &reply, true, NULL), ==, 1);
    g_assert(vfu_msg_is_reply(reply));
    g_assert_cmpuint(reply->hdr.msg_id, ==, id);
    g_assert_cmpuint(reply->hdr.command, ==, VFU_CMD_REGION_READ);
    g_assert_false(reply->hdr.flags & VFU_F_ERROR);
    g_assert_cmpint(vfu_msg_decode(reply, vfu_conn_local_limits(c), NULL),
                    ==, 0);
    ra = (VfuRegionAccess *)reply->payload;
    g_assert_cmpuint(ra->count, ==, 4);
    /* edu's liveness register answers the last value written, inverted */
    g_assert_cmphex((uint32_t)ldl_le_p(ra->data), ==, ~64u);
    /* and acked calls keep working */
    g_assert_cmphex(tc_read(c, 0, EDU_ID, 4), ==, 0x010000ed);

    vfu_conn_free(c);
    qtest_quit(qts);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    /* the test client uses QIOChannelSocket */
    module_call_init(MODULE_INIT_QOM);
    qtest_add_func("/vfio-user/perf/dma-bulk", test_dma_bulk);
    qtest_add_func("/vfio-user/perf/dma-bulk-chunks", test_dma_bulk_chunks);
    qtest_add_func("/vfio-user/perf/dma-bulk-bad", test_dma_bulk_bad);
    qtest_add_func("/vfio-user/perf/posted-writes", test_posted_writes);
    return g_test_run();
}
