/*
 * Unit tests of the vfio-user transport and of each side's policy, over
 * real socketpairs: framing and fds with buffered receive, partial and
 * nested sends, the server's request order and nesting, the client's
 * wait group.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <sys/eventfd.h>
#include "qapi/error.h"
#include "qemu/sockets.h"
#include "qemu/module.h"
#include "qemu/main-loop.h"
#include "io/channel-socket.h"
#include "block/aio.h"
#include "vfio-user/client.h"
#include "vfio-user/server.h"
#include "vfio-user/send-fds.h"

typedef struct Ends {
    VfuConn *c;         /* ours */
    int peer;           /* the other end, raw */
} Ends;

static void ends_init(Ends *e, uint64_t xfer)
{
    g_autoptr(QIOChannelSocket) sioc = NULL;
    VfuLimits lim;
    int sv[2];

    g_assert_cmpint(qemu_socketpair(AF_UNIX, SOCK_STREAM, 0, sv), ==, 0);
    sioc = qio_channel_socket_new_fd(sv[0], &error_abort);
    vfu_limits_default(&lim);
    lim.max_msg_fds = 8;
    lim.max_data_xfer_size = xfer;
    e->c = vfu_conn_new(QIO_CHANNEL(sioc), "test", &lim);
    vfu_conn_set_timeout(e->c, 2000);
    e->peer = sv[1];
}

static void ends_finish(Ends *e)
{
    vfu_conn_free(e->c);
    close(e->peer);
}

/* Append one message to @buf (host order, little-endian host assumed ok) */
static void put_msg(GByteArray *buf, uint16_t id, uint16_t cmd,
                    uint32_t flags, const void *payload, size_t len)
{
    VfuHeader hdr = {
        .msg_id = cpu_to_le16(id), .command = cpu_to_le16(cmd),
        .size = cpu_to_le32(sizeof(hdr) + len), .flags = cpu_to_le32(flags),
    };

    g_byte_array_append(buf, (guint8 *)&hdr, sizeof(hdr));
    if (len) {
        g_byte_array_append(buf, payload, len);
    }
}

/* Write @len bytes with @nfds fds attached, in one sendmsg() */
static void peer_send(int fd, const void *data, size_t len, const int *fds,
                      size_t nfds)
{
    struct iovec iov = { (void *)data, len };

    g_assert_cmpint(vu_send_fds(fd, &iov, 1, fds, nfds), ==, len);
}

static void peer_send_buf(int fd, GByteArray *buf, const int *fds,
                          size_t nfds)
{
    peer_send(fd, buf->data, buf->len, fds, nfds);
    g_byte_array_set_size(buf, 0);
}

static uint64_t eventfd_id(int fd)
{
    struct stat st;

    g_assert_cmpint(fstat(fd, &st), ==, 0);
    return st.st_ino;
}

/* ---- transport -------------------------------------------------------- */

/*
 * Three messages in the socket before we read: fds go to the message they
 * were sent with, though one read takes the second and third together.
 */
static void test_transport_fds_by_message(void)
{
    g_autoptr(GByteArray) buf = g_byte_array_new();
    int e1 = eventfd(0, 0), e2 = eventfd(0, 0), e3 = eventfd(0, 0);
    int two[2] = { e2, e3 };
    Ends e;

    ends_init(&e, 4096);
    put_msg(buf, 1, VFU_CMD_DMA_MAP, 0, "aaaa", 4);
    peer_send_buf(e.peer, buf, &e1, 1);
    put_msg(buf, 2, VFU_CMD_DEVICE_RESET, 0, NULL, 0);
    peer_send_buf(e.peer, buf, NULL, 0);
    put_msg(buf, 3, VFU_CMD_DMA_MAP, 0, "bbbb", 4);
    peer_send_buf(e.peer, buf, two, 2);
    /* and one whose header and fds come apart from its payload */
    put_msg(buf, 4, VFU_CMD_DMA_MAP, 0, "cccc", 4);
    peer_send(e.peer, buf->data, 10, &e1, 1);
    peer_send(e.peer, buf->data + 10, buf->len - 10, NULL, 0);

    for (uint16_t id = 1; id <= 4; id++) {
        g_autoptr(VfuMsg) m = NULL;
        size_t want[] = { 0, 1, 0, 2, 1 };

        g_assert_cmpint(vfu_conn_recv(e.c, &m, true, &error_abort), ==, 1);
        g_assert_cmpuint(m->hdr.msg_id, ==, id);
        g_assert_cmpuint(m->nfds, ==, want[id]);
        if (id == 1 || id == 4) {
            g_assert_cmpuint(eventfd_id(m->fds[0]), ==, eventfd_id(e1));
        } else if (id == 3) {
            g_assert_cmpuint(eventfd_id(m->fds[0]), ==, eventfd_id(e2));
            g_assert_cmpuint(eventfd_id(m->fds[1]), ==, eventfd_id(e3));
        }
    }
    close(e1);
    close(e2);
    close(e3);
    ends_finish(&e);
}

/* One read takes many small messages: the rest come from the buffer. */
static void test_transport_read_ahead(void)
{
    g_autoptr(GByteArray) buf = g_byte_array_new();
    Ends e;

    ends_init(&e, 4096);
    for (int i = 0; i < 100; i++) {
        put_msg(buf, i, VFU_CMD_REGION_WRITE, VFU_F_NO_REPLY, "0123456789ab",
                12);
    }
    peer_send_buf(e.peer, buf, NULL, 0);
    for (int i = 0; i < 100; i++) {
        g_autoptr(VfuMsg) m = NULL;

        g_assert_cmpint(vfu_conn_recv(e.c, &m, false, &error_abort), ==, 1);
        g_assert_cmpuint(m->hdr.msg_id, ==, i);
        g_assert_cmpmem(m->payload, m->len, "0123456789ab", 12);
        if (!i) {
            /* all of them came with the first read */
            g_assert_cmpuint(vfu_conn_bytes_read(e.c), ==, 100 * 28);
        }
    }
    g_assert_false(vfu_conn_has_message(e.c));
    ends_finish(&e);
}

typedef struct Trickle {
    int fd;
    GByteArray *bytes;
    size_t step;
} Trickle;

/* Write the bytes in small pieces, pausing between them */
static gpointer trickle_thread(gpointer opaque)
{
    Trickle *t = opaque;

    for (size_t off = 0; off < t->bytes->len; off += t->step) {
        size_t n = MIN(t->step, t->bytes->len - off);

        g_assert_cmpint(write(t->fd, t->bytes->data + off, n), ==, n);
        g_usleep(100);
    }
    return NULL;
}

/*
 * A message bigger than the receive buffer, arriving in pieces, then a
 * small one: both whole, and a non-blocking receive keeps the partial
 * one for the next call.
 */
static void test_transport_big_partial(void)
{
    size_t big = 3 * VFU_RX_BUF_SIZE + 123;
    g_autofree uint8_t *data = g_malloc(big);
    g_autoptr(VfuMsg) m = NULL;
    Trickle t;
    GThread *th;
    Ends e;

    ends_init(&e, 1024 * 1024);
    for (size_t i = 0; i < big; i++) {
        data[i] = i * 7;
    }
    t.fd = e.peer;
    t.bytes = g_byte_array_new();
    t.step = 40000;
    put_msg(t.bytes, 5, VFU_CMD_DMA_WRITE, 0, data, big);
    put_msg(t.bytes, 6, VFU_CMD_DEVICE_RESET, 0, NULL, 0);
    /* a header alone is not a message */
    g_assert_cmpint(write(e.peer, t.bytes->data, 9), ==, 9);
    g_assert_cmpint(vfu_conn_recv(e.c, &m, false, &error_abort), ==, 0);
    g_byte_array_remove_range(t.bytes, 0, 9);
    th = g_thread_new("trickle", trickle_thread, &t);
    g_assert_cmpint(vfu_conn_recv(e.c, &m, true, &error_abort), ==, 1);
    g_assert_cmpuint(m->hdr.msg_id, ==, 5);
    g_assert_cmpmem(m->payload, m->len, data, big);
    vfu_msg_free(g_steal_pointer(&m));
    g_assert_cmpint(vfu_conn_recv(e.c, &m, true, &error_abort), ==, 1);
    g_assert_cmpuint(m->hdr.msg_id, ==, 6);
    g_thread_join(th);
    g_byte_array_unref(t.bytes);
    ends_finish(&e);
}

typedef struct Drain {
    int fd;
    size_t want;
    GByteArray *got;
} Drain;

/* Read @want bytes slowly, so that the other side's writes block */
static gpointer drain_thread(gpointer opaque)
{
    Drain *d = opaque;
    uint8_t chunk[4096];

    while (d->got->len < d->want) {
        ssize_t n = read(d->fd, chunk, sizeof(chunk));

        if (n <= 0) {
            break;
        }
        g_byte_array_append(d->got, chunk, n);
        g_usleep(200);
    }
    return NULL;
}

static int nested_send_result;

/* A wait that tries to send on the connection whose send is blocked */
static int wait_and_send(VfuConn *c, GIOCondition events, int64_t deadline,
                         void *opaque, Error **errp)
{
    GPollFD pfd = { .fd = vfu_conn_fd(c), .events = events };
    Error *err = NULL;

    if (!nested_send_result) {
        nested_send_result = vfu_conn_post(c, VFU_CMD_DEVICE_RESET, NULL, 0,
                                           &err);
        error_free(err);
    }
    qemu_poll_ns(&pfd, 1, 10 * SCALE_MS);
    return 0;
}

/*
 * A send that blocks is finished whole, and nothing can be sent on the
 * connection in its middle.
 */
static void test_transport_partial_send(void)
{
    size_t len = 512 * 1024;
    g_autofree uint8_t *data = g_malloc(len);
    VfuHeader hdr;
    Drain d;
    GThread *th;
    Ends e;

    ends_init(&e, 1024 * 1024);
    memset(data, 0xab, len);
    vfu_conn_set_wait_func(e.c, wait_and_send, NULL);
    d.fd = e.peer;
    d.want = sizeof(VfuHeader) + len;
    d.got = g_byte_array_new();
    th = g_thread_new("drain", drain_thread, &d);
    nested_send_result = 0;
    g_assert_cmpint(vfu_conn_send(e.c, VFU_CMD_DMA_WRITE, 9, 0, 0, data, len,
                                  NULL, 0, &error_abort), ==, 0);
    g_thread_join(th);
    g_assert_cmpint(nested_send_result, ==, -EBUSY);
    g_assert_false(vfu_conn_is_broken(e.c));
    g_assert_cmpuint(d.got->len, ==, d.want);
    g_assert(vfu_header_decode(d.got->data, &hdr, SIZE_MAX, &error_abort));
    g_assert_cmpuint(hdr.size, ==, d.want);
    g_assert_cmpmem(d.got->data + sizeof(hdr), len, data, len);
    g_byte_array_unref(d.got);
    ends_finish(&e);
}

/* ---- server policy ---------------------------------------------------- */

typedef struct SrvLog {
    GArray *ids;        /* requests run, in order */
    int peer;
    bool nested_tried;
} SrvLog;

static void put_write(GByteArray *buf, uint16_t id, bool posted, uint32_t v)
{
    struct QEMU_PACKED {
        VfuRegionAccess a;
        uint32_t v;
    } w = { { 0, 0, 4 }, v };

    put_msg(buf, id, VFU_CMD_REGION_WRITE, posted ? VFU_F_NO_REPLY : 0,
            &w, sizeof(w));
}

/*
 * Request 10 makes a DMA_READ call to the client, as a device would in a
 * BAR write, and tries to get the server to run other requests inside it.
 */
static int srv_request(VfuConn *c, VfuMsg *msg, void *opaque)
{
    SrvLog *log = opaque;
    uint16_t id = msg->hdr.msg_id;

    g_array_append_val(log->ids, id);
    if (id == 10) {
        VfuDmaAccess req = { .address = 0x1000, .count = 4 };
        g_autoptr(VfuMsg) reply = NULL;

        g_assert_cmpint(vfu_srv_call(c, VFU_CMD_DMA_READ, &req, sizeof(req),
                                     &reply, &error_abort), ==, 0);
        /* none of the requests queued meanwhile runs in here */
        g_assert_cmpint(vfu_srv_serve(c, false, &error_abort), ==, 0);
        g_assert_cmpint(vfu_srv_drain(c, &error_abort), ==, 0);
        aio_poll(qemu_get_aio_context(), false);
        aio_poll(iohandler_get_aio_context(), false);
        g_assert_cmpuint(log->ids->len, ==, 1);
        g_assert(vfu_srv_busy(c));
        log->nested_tried = true;
    }
    return vfu_conn_reply(c, msg, NULL, 0, NULL, 0, NULL);
}

/*
 * Posted writes that arrive while a request waits for the client's DMA
 * reply take effect after it and before anything newer (issue 15, items
 * 1 and 2).
 */
static void test_server_in_order(void)
{
    g_autoptr(GByteArray) buf = g_byte_array_new();
    struct QEMU_PACKED {
        VfuDmaAccess a;
        uint8_t d[4];
    } dma = { { 0x1000, 4 }, "dma" };
    SrvLog log = { .ids = g_array_new(false, false, sizeof(uint16_t)) };
    uint16_t want[] = { 10, 11, 12, 13 };
    Ends e;

    ends_init(&e, 4096);
    vfu_conn_set_request_func(e.c, srv_request, &log);
    vfu_srv_attach(e.c, NULL, NULL);
    put_write(buf, 10, false, 1);
    put_write(buf, 11, true, 2);            /* during the DMA wait */
    /* our first request id is 1 */
    put_msg(buf, 1, VFU_CMD_DMA_READ, VFU_F_TYPE_REPLY, &dma, sizeof(dma));
    put_write(buf, 12, true, 3);            /* after it */
    put_write(buf, 13, false, 4);
    peer_send_buf(e.peer, buf, NULL, 0);

    g_assert_cmpint(vfu_srv_serve(e.c, false, &error_abort), ==, 0);
    g_assert(log.nested_tried);
    g_assert_cmpmem(log.ids->data, log.ids->len * 2, want, sizeof(want));
    g_assert_false(vfu_srv_busy(e.c));
    g_array_free(log.ids, true);
    ends_finish(&e);
}

static int srv_count(VfuConn *c, VfuMsg *msg, void *opaque)
{
    (*(unsigned *)opaque)++;
    return vfu_conn_reply(c, msg, NULL, 0, NULL, 0, NULL);
}

/*
 * A doorbell: everything that arrived before it runs first, more than a
 * batch (issue 15, item 4); a plain serve stops after a batch.
 */
static void test_server_drain(void)
{
    g_autoptr(GByteArray) buf = g_byte_array_new();
    unsigned ran = 0;
    Ends e;

    ends_init(&e, 4096);
    vfu_conn_set_request_func(e.c, srv_count, &ran);
    for (int i = 0; i < 3 * VFU_SRV_BATCH + 5; i++) {
        put_write(buf, i, true, i);
    }
    peer_send_buf(e.peer, buf, NULL, 0);
    g_assert_cmpint(vfu_srv_serve(e.c, false, &error_abort), ==, 0);
    g_assert_cmpuint(ran, ==, VFU_SRV_BATCH);
    g_assert_cmpint(vfu_srv_drain(e.c, &error_abort), ==, 0);
    g_assert_cmpuint(ran, ==, 3 * VFU_SRV_BATCH + 5);
    ends_finish(&e);
}

/*
 * A client that sends nothing but stray replies is served a batch at a
 * time like one that sends requests: the main loop gets its turn.
 */
static void test_server_stray_replies(void)
{
    g_autoptr(GByteArray) buf = g_byte_array_new();
    unsigned ran = 0, calls = 0;
    Ends e;

    ends_init(&e, 4096);
    vfu_conn_set_request_func(e.c, srv_count, &ran);
    for (int i = 0; i < 3 * VFU_SRV_BATCH; i++) {
        put_msg(buf, 500 + i, VFU_CMD_DEVICE_RESET, VFU_F_TYPE_REPLY, NULL, 0);
    }
    put_write(buf, 1, true, 1);
    peer_send_buf(e.peer, buf, NULL, 0);
    g_assert_cmpint(vfu_srv_serve(e.c, false, &error_abort), ==, 0);
    g_assert_cmpuint(ran, ==, 0);
    g_assert(vfu_conn_has_message(e.c));
    while (!ran && calls++ < 10) {
        g_assert_cmpint(vfu_srv_serve(e.c, false, &error_abort), ==, 0);
    }
    g_assert_cmpuint(ran, ==, 1);
    g_assert_cmpuint(calls, ==, 3);
    ends_finish(&e);
}

/* ---- client policy ---------------------------------------------------- */

typedef struct Served {
    unsigned p, q;
    VfuConn *pc;
} Served;

/* Serve a DMA_READ with as many bytes as asked */
static int client_dma(VfuConn *c, VfuMsg *msg, void *opaque)
{
    Served *s = opaque;
    VfuDmaAccess *a = (VfuDmaAccess *)msg->payload;
    g_autofree VfuDmaAccess *r = g_malloc0(sizeof(*r) + a->count);

    if (c == s->pc) {
        s->p++;
    } else {
        s->q++;
    }
    *r = *a;
    return vfu_conn_reply(c, msg, r, sizeof(*r) + a->count, NULL, 0, NULL);
}

static void small_sndbuf(VfuConn *c)
{
    int size = 4096;

    setsockopt(vfu_conn_fd(c), SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
}

/*
 * Two devices of one remote process that reads neither socket.  While
 * P's posted write is half-sent, Q's DMA request is served, and when Q's
 * reply blocks too, Q's wait must not serve P: P is busy sending, and
 * P's reply would land in the middle of P's write (issue 15, item 3).
 */
static void test_client_busy_not_served(void)
{
    g_autoptr(GByteArray) buf = g_byte_array_new();
    VfuDmaAccess big = { .address = 0, .count = 256 * 1024 };
    size_t len = 256 * 1024;
    g_autofree uint8_t *data = g_malloc(len);
    g_autofree uint8_t *got = g_malloc(len + 64);
    Served s = { 0 };
    Error *err = NULL;
    VfuHeader hdr;
    size_t n = 0;
    ssize_t r;
    Ends p, q;

    ends_init(&p, 1024 * 1024);
    ends_init(&q, 1024 * 1024);
    s.pc = p.c;
    vfu_conn_set_timeout(p.c, 400);
    vfu_conn_set_timeout(q.c, 200);
    small_sndbuf(p.c);
    small_sndbuf(q.c);
    vfu_conn_set_request_func(p.c, client_dma, &s);
    vfu_conn_set_request_func(q.c, client_dma, &s);
    vfu_client_attach(p.c, NULL, NULL);
    vfu_client_attach(q.c, NULL, NULL);
    /* both remote devices want big DMA reads */
    put_msg(buf, 70, VFU_CMD_DMA_READ, 0, &big, sizeof(big));
    peer_send_buf(p.peer, buf, NULL, 0);
    put_msg(buf, 71, VFU_CMD_DMA_READ, 0, &big, sizeof(big));
    peer_send_buf(q.peer, buf, NULL, 0);

    memset(data, 0xab, len);
    /* a posted write, as vfio-user-pci sends BAR writes */
    g_assert_cmpint(vfu_conn_post(p.c, VFU_CMD_DMA_WRITE, data, len, &err),
                    <, 0);
    error_free(err);
    /* Q was served from P's wait; P was never served while it sent */
    g_assert_cmpuint(s.q, ==, 1);
    g_assert_cmpuint(s.p, ==, 0);

    /* what reached P's peer is one request and nothing in its middle */
    while (n < len + 64 && (r = read(p.peer, got + n, len + 64 - n)) > 0) {
        n += r;
    }
    g_assert_cmpuint(n, >, sizeof(hdr));
    g_assert(vfu_header_decode(got, &hdr, SIZE_MAX, &error_abort));
    g_assert_cmpuint(hdr.command, ==, VFU_CMD_DMA_WRITE);
    for (size_t i = sizeof(hdr); i < MIN(n, hdr.size); i++) {
        g_assert_cmpuint(got[i], ==, 0xab);
    }
    ends_finish(&q);
    ends_finish(&p);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    signal(SIGPIPE, SIG_IGN);
    module_call_init(MODULE_INIT_QOM);
    qemu_init_main_loop(&error_abort);

    g_test_add_func("/vfio-user/transport/fds-by-message",
                    test_transport_fds_by_message);
    g_test_add_func("/vfio-user/transport/read-ahead",
                    test_transport_read_ahead);
    g_test_add_func("/vfio-user/transport/big-partial",
                    test_transport_big_partial);
    g_test_add_func("/vfio-user/transport/partial-send",
                    test_transport_partial_send);
    g_test_add_func("/vfio-user/server-policy/in-order",
                    test_server_in_order);
    g_test_add_func("/vfio-user/server-policy/drain", test_server_drain);
    g_test_add_func("/vfio-user/server-policy/stray-replies",
                    test_server_stray_replies);
    g_test_add_func("/vfio-user/client-policy/busy-not-served",
                    test_client_busy_not_served);
    return g_test_run();
}
