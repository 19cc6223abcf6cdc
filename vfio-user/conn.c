/*
 * vfio-user connection: framing, fd passing and request/reply matching.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qapi/visitor.h"
#include "qapi/visitor-impl.h"
#include "qapi/qapi-visit-sockets.h"
#include "qemu/timer.h"
#include "qemu/iov.h"
#include "qemu/main-loop.h"
#include "qemu/queue.h"
#include "io/channel-socket.h"
#include "vfio-user/conn.h"
#include "trace.h"

struct VfuConn {
    QIOChannel *ioc;
    int fd;
    char *name;
    VfuLimits local;
    VfuLimits peer;
    size_t max_msg_size;
    uint16_t next_id;
    int64_t timeout_ms;
    bool broken;
    bool waiting;               /* in conn_await() */
    bool in_wait_group;
    QLIST_ENTRY(VfuConn) wait_group_next;
    /* conn_wait()'s poll set, kept from one wait to the next */
    GArray *wait_pfds;
    GPtrArray *wait_conns;

    VfuRequestFunc request_func;
    void *request_opaque;

    VfuDeferFunc defer_func;
    void *defer_opaque;
    GQueue deferred;
    size_t deferred_bytes;

    /* vfu_conn_call_async() calls whose replies are due, oldest first */
    struct {
        uint16_t id;
        uint16_t cmd;
    } async[VFU_MAX_ASYNC];
    unsigned async_head;
    unsigned async_count;
    int async_err;

    /* a message being received, kept across non-blocking calls */
    uint8_t rx_hdr[sizeof(VfuHeader)];
    size_t rx_hdr_got;
    int *rx_fds;
    size_t rx_nfds;
    VfuMsg *rx_msg;
    size_t rx_got;

    /* for the monitor */
    VfuConnStats stats;
    char *broken_reason;
    bool negotiated;
    uint16_t major, minor;
    bool has_cred;
    struct ucred cred;
};

/* See vfu_conn_join_wait_group(); used under the BQL only */
static QLIST_HEAD(, VfuConn) wait_group = QLIST_HEAD_INITIALIZER(wait_group);

static void conn_drop_rx_fds(VfuConn *c)
{
    for (size_t i = 0; i < c->rx_nfds; i++) {
        close(c->rx_fds[i]);
    }
    g_free(c->rx_fds);
    c->rx_fds = NULL;
    c->rx_nfds = 0;
}

VfuConn *vfu_conn_new(QIOChannel *ioc, const char *name,
                      const VfuLimits *local)
{
    VfuConn *c = g_new0(VfuConn, 1);

    c->ioc = QIO_CHANNEL(object_ref(OBJECT(ioc)));
    c->fd = QIO_CHANNEL_SOCKET(ioc)->fd;
    c->name = g_strdup(name);
    c->local = *local;
    c->max_msg_size = vfu_max_msg_size(local);
    vfu_limits_default(&c->peer);
    c->timeout_ms = VFU_DEFAULT_TIMEOUT_MS;
    c->next_id = 1;
    qio_channel_set_blocking(ioc, false, NULL);
    {
        socklen_t cred_len = sizeof(c->cred);

        c->has_cred = getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &c->cred,
                                 &cred_len) == 0 &&
                      cred_len == sizeof(c->cred) && c->cred.pid > 0;
    }
    return c;
}

void vfu_conn_free(VfuConn *c)
{
    if (!c) {
        return;
    }
    if (c->in_wait_group) {
        QLIST_REMOVE(c, wait_group_next);
        g_array_free(c->wait_pfds, true);
        g_ptr_array_free(c->wait_conns, true);
    }
    vfu_msg_free(c->rx_msg);
    conn_drop_rx_fds(c);
    while (!g_queue_is_empty(&c->deferred)) {
        vfu_msg_free(g_queue_pop_head(&c->deferred));
    }
    qio_channel_close(c->ioc, NULL);
    object_unref(OBJECT(c->ioc));
    g_free(c->broken_reason);
    g_free(c->name);
    g_free(c);
}

void vfu_conn_set_request_func(VfuConn *c, VfuRequestFunc func, void *opaque)
{
    c->request_func = func;
    c->request_opaque = opaque;
}

void vfu_conn_join_wait_group(VfuConn *c)
{
    assert(!c->defer_func);
    if (!c->in_wait_group) {
        c->in_wait_group = true;
        c->wait_pfds = g_array_new(false, false, sizeof(GPollFD));
        c->wait_conns = g_ptr_array_new();
        QLIST_INSERT_HEAD(&wait_group, c, wait_group_next);
    }
}

void vfu_conn_set_defer_func(VfuConn *c, VfuDeferFunc func, void *opaque)
{
    assert(!c->in_wait_group);
    c->defer_func = func;
    c->defer_opaque = opaque;
}

VfuMsg *vfu_conn_take_deferred(VfuConn *c)
{
    VfuMsg *msg = g_queue_pop_head(&c->deferred);

    if (msg) {
        c->deferred_bytes -= msg->len;
    }
    return msg;
}

void vfu_conn_set_timeout(VfuConn *c, int64_t timeout_ms)
{
    c->timeout_ms = timeout_ms;
}

const VfuLimits *vfu_conn_peer_limits(VfuConn *c)
{
    return &c->peer;
}

const VfuLimits *vfu_conn_local_limits(VfuConn *c)
{
    return &c->local;
}

void vfu_conn_set_peer_limits(VfuConn *c, const VfuLimits *peer)
{
    c->peer = *peer;
}

const char *vfu_conn_name(VfuConn *c)
{
    return c->name;
}

QIOChannel *vfu_conn_ioc(VfuConn *c)
{
    return c->ioc;
}

bool vfu_conn_is_broken(VfuConn *c)
{
    return c->broken;
}

const char *vfu_conn_broken_reason(VfuConn *c)
{
    return c->broken_reason ?: "";
}

const VfuConnStats *vfu_conn_stats(VfuConn *c)
{
    return &c->stats;
}

bool vfu_conn_version(VfuConn *c, uint16_t *major, uint16_t *minor)
{
    *major = c->major;
    *minor = c->minor;
    return c->negotiated;
}

bool vfu_conn_peer_cred(VfuConn *c, int64_t *pid, int64_t *uid, int64_t *gid)
{
    *pid = c->cred.pid;
    *uid = c->cred.uid;
    *gid = c->cred.gid;
    return c->has_cred;
}

/* Per-command counter slot: 0 for a command we do not know */
static unsigned conn_cmd_slot(uint16_t cmd)
{
    return cmd <= VFU_CMD_MAX ? cmd : 0;
}

static void conn_break(VfuConn *c, Error *err)
{
    if (!c->broken) {
        trace_vfio_user_conn_broken(c->name, err ? error_get_pretty(err) : "");
        c->broken_reason = g_strdup(err ? error_get_pretty(err)
                                        : "closed on this side");
        c->broken = true;
        qio_channel_shutdown(c->ioc, QIO_CHANNEL_SHUTDOWN_BOTH, NULL);
    }
}

void vfu_conn_shutdown(VfuConn *c)
{
    conn_break(c, NULL);
}

static int64_t deadline_from_now(VfuConn *c)
{
    return qemu_clock_get_ms(QEMU_CLOCK_REALTIME) + c->timeout_ms;
}

/*
 * The poll set of a wait: @c's socket for @events first, then, for a
 * member of the wait group, the sockets of the other members that can be
 * served now (their connections in c->wait_conns).  Returns its size.
 */
static unsigned conn_wait_fds(VfuConn *c, short events, GPollFD **pfds)
{
    GPollFD own = { .fd = c->fd, .events = events };
    VfuConn *o;

    g_array_set_size(c->wait_pfds, 0);
    g_array_append_val(c->wait_pfds, own);
    g_ptr_array_set_size(c->wait_conns, 0);
    g_ptr_array_add(c->wait_conns, c);
    QLIST_FOREACH(o, &wait_group, wait_group_next) {
        GPollFD pfd = { .fd = o->fd, .events = G_IO_IN };

        /* one waiting further up the stack reads its own socket */
        if (o != c && !o->broken && !o->waiting) {
            g_array_append_val(c->wait_pfds, pfd);
            g_ptr_array_add(c->wait_conns, o);
        }
    }
    *pfds = (GPollFD *)c->wait_pfds->data;
    return c->wait_pfds->len;
}

/*
 * Wait for @events on the socket until @deadline (ms, REALTIME).  A
 * member of the wait group serves the other members meanwhile.
 */
static int conn_wait(VfuConn *c, short events, int64_t deadline, Error **errp)
{
    GPollFD own = { .fd = c->fd, .events = events };
    GPollFD *pfds = &own;
    unsigned n = 1;
    int64_t left;
    int r;

    do {
        if (c->in_wait_group) {
            n = conn_wait_fds(c, events, &pfds);
        }
        left = deadline - qemu_clock_get_ms(QEMU_CLOCK_REALTIME);
        if (left <= 0) {
            c->stats.timeouts++;
            error_setg(errp, "%s: no answer from the peer within %" PRId64
                       " ms", c->name, c->timeout_ms);
            return -ETIMEDOUT;
        }
        r = qemu_poll_ns(pfds, n, left * SCALE_MS);
        if (r > 0 && n > 1) {
            for (unsigned i = 1; i < n; i++) {
                if (pfds[i].revents) {
                    /* a failure breaks that one; its owner sees it later */
                    vfu_conn_serve(g_ptr_array_index(c->wait_conns, i),
                                   false, NULL);
                }
            }
            if (!pfds[0].revents) {
                r = 0;
            }
        }
    } while (r == 0 || (r < 0 && errno == EINTR));
    if (r < 0) {
        error_setg_errno(errp, errno, "%s: poll failed", c->name);
        return -EIO;
    }
    return 0;
}

/* @payload in host order */
static void conn_count_send(VfuConn *c, uint16_t cmd, uint32_t flags,
                            const void *payload, size_t len)
{
    VfuConnStats *st = &c->stats;

    st->bytes_sent += sizeof(VfuHeader) + len;
    if ((flags & VFU_F_TYPE_MASK) == VFU_F_TYPE_REPLY) {
        st->replies_sent++;
        st->error_replies_sent += !!(flags & VFU_F_ERROR);
        return;
    }
    st->requests_sent[conn_cmd_slot(cmd)]++;
    if ((cmd == VFU_CMD_DMA_READ || cmd == VFU_CMD_DMA_WRITE) &&
        len >= sizeof(VfuDmaAccess)) {
        uint64_t count = ((const VfuDmaAccess *)payload)->count;

        if (cmd == VFU_CMD_DMA_READ) {
            st->dma_read_bytes += count;
        } else {
            st->dma_write_bytes += count;
        }
    }
}

/* A received message; the payload is not decoded yet */
static void conn_count_recv(VfuConn *c, const VfuMsg *msg)
{
    VfuConnStats *st = &c->stats;

    st->bytes_received += msg->hdr.size;
    if (vfu_msg_is_reply(msg)) {
        st->replies_received++;
        st->error_replies_received += !!(msg->hdr.flags & VFU_F_ERROR);
    } else {
        st->requests_received[conn_cmd_slot(msg->hdr.command)]++;
    }
}

int vfu_conn_send(VfuConn *c, uint16_t cmd, uint16_t msg_id, uint32_t flags,
                  uint32_t error, void *payload, size_t len,
                  const int *fds, size_t nfds, Error **errp)
{
    VfuHeader hdr = {
        .msg_id = msg_id,
        .command = cmd,
        .size = sizeof(VfuHeader) + len,
        .flags = flags,
        .error = error,
    };
    uint8_t wire[sizeof(VfuHeader)];
    struct iovec iov[2] = {
        { .iov_base = wire, .iov_len = sizeof(wire) },
        { .iov_base = payload, .iov_len = len },
    };
    struct iovec *cur = iov;
    unsigned int niov = len ? 2 : 1;
    int64_t deadline = 0;
    bool reply = (flags & VFU_F_TYPE_MASK) == VFU_F_TYPE_REPLY;
    int ret = 0;

    if (c->broken) {
        error_setg(errp, "%s: connection is closed", c->name);
        return -ECONNRESET;
    }
    if (len > UINT32_MAX - sizeof(VfuHeader) || nfds > VFU_MAX_MSG_FDS) {
        error_setg(errp, "%s: message too large", c->name);
        return -EINVAL;
    }
    trace_vfio_user_send(c->name, msg_id, vfu_command_name(cmd), flags,
                         hdr.size, nfds);
    conn_count_send(c, cmd, flags, payload, len);
    vfu_header_encode(&hdr, wire);
    if (len) {
        vfu_payload_encode(cmd, reply, payload, len);
    }

    while (niov) {
        ssize_t n = qio_channel_writev_full(c->ioc, cur, niov, (int *)fds,
                                            nfds, 0, errp);
        if (n == QIO_CHANNEL_ERR_BLOCK) {
            if (!deadline) {
                deadline = deadline_from_now(c);
            }
            ret = conn_wait(c, G_IO_OUT, deadline, errp);
            if (ret) {
                break;
            }
            continue;
        }
        if (n < 0) {
            ret = -EIO;
            break;
        }
        /* fds travel with the first bytes only */
        fds = NULL;
        nfds = 0;
        iov_discard_front(&cur, &niov, n);
    }
    /* iov_discard_front() moved iov bases: payload itself is intact */
    if (len) {
        vfu_payload_encode(cmd, reply, payload, len);
    }
    if (ret) {
        error_prepend(errp, "%s: sending %s: ", c->name, vfu_command_name(cmd));
        conn_break(c, errp ? *errp : NULL);
    }
    return ret;
}

int vfu_conn_reply(VfuConn *c, const VfuMsg *req, void *payload, size_t len,
                   const int *fds, size_t nfds, Error **errp)
{
    if (req->hdr.flags & VFU_F_NO_REPLY) {
        return 0;
    }
    return vfu_conn_send(c, req->hdr.command, req->hdr.msg_id,
                         VFU_F_TYPE_REPLY, 0, payload, len, fds, nfds, errp);
}

int vfu_conn_reply_error(VfuConn *c, const VfuMsg *req, int err, Error **errp)
{
    trace_vfio_user_error_reply(c->name, req->hdr.msg_id,
                                vfu_command_name(req->hdr.command), err);
    if (req->hdr.flags & VFU_F_NO_REPLY) {
        return 0;
    }
    return vfu_conn_send(c, req->hdr.command, req->hdr.msg_id,
                         VFU_F_TYPE_REPLY | VFU_F_ERROR, err, NULL, 0,
                         NULL, 0, errp);
}

/*
 * One step of reading: returns 1 when the current message is complete,
 * 2 when bytes came but the message is not complete yet (call again),
 * 0 when the socket has no more bytes now, -1 on error or EOF.
 */
static int conn_read_some(VfuConn *c, Error **errp)
{
    struct iovec iov;
    int *fds = NULL;
    size_t nfds = 0;
    ssize_t n;

    if (!c->rx_msg) {
        iov.iov_base = c->rx_hdr + c->rx_hdr_got;
        iov.iov_len = sizeof(c->rx_hdr) - c->rx_hdr_got;
        /* always offer a control buffer: fds come with the header bytes */
        n = qio_channel_readv_full(c->ioc, &iov, 1, &fds, &nfds, errp);
    } else {
        iov.iov_base = c->rx_msg->payload + c->rx_got;
        iov.iov_len = c->rx_msg->len - c->rx_got;
        n = qio_channel_readv_full(c->ioc, &iov, 1, NULL, NULL, errp);
    }
    if (n == QIO_CHANNEL_ERR_BLOCK) {
        return 0;
    }
    if (n < 0) {
        return -1;
    }
    if (n == 0) {
        error_setg(errp, "%s: peer closed the connection", c->name);
        return -1;
    }

    if (!c->rx_msg) {
        VfuHeader hdr;
        VfuMsg *msg;

        c->rx_hdr_got += n;
        if (nfds) {
            /* a header split over several writes: keep fds until it ends */
            c->rx_fds = g_renew(int, c->rx_fds, c->rx_nfds + nfds);
            memcpy(c->rx_fds + c->rx_nfds, fds, nfds * sizeof(int));
            c->rx_nfds += nfds;
            g_free(fds);
            if (c->rx_nfds > VFU_MAX_MSG_FDS) {
                conn_drop_rx_fds(c);
                error_setg(errp, "%s: too many file descriptors", c->name);
                return -1;
            }
        }
        if (c->rx_hdr_got < sizeof(c->rx_hdr)) {
            return 2;
        }
        if (!vfu_header_decode(c->rx_hdr, &hdr, c->max_msg_size, errp)) {
            conn_drop_rx_fds(c);
            error_prepend(errp, "%s: ", c->name);
            return -1;
        }
        msg = g_new0(VfuMsg, 1);
        msg->hdr = hdr;
        msg->len = hdr.size - sizeof(VfuHeader);
        msg->payload = msg->len ? g_malloc(msg->len) : NULL;
        msg->fds = g_steal_pointer(&c->rx_fds);
        msg->nfds = c->rx_nfds;
        c->rx_nfds = 0;
        c->rx_msg = msg;
        c->rx_got = 0;
    } else {
        c->rx_got += n;
    }
    return c->rx_got == c->rx_msg->len ? 1 : 2;
}

/*
 * Take @msg if it is the reply to an asynchronous call.  The peer answers
 * in order, so it is normally the oldest; an error is kept for
 * vfu_conn_flush().
 */
static bool conn_async_reply(VfuConn *c, VfuMsg *msg)
{
    for (unsigned i = 0; i < c->async_count; i++) {
        unsigned slot = (c->async_head + i) % VFU_MAX_ASYNC;
        int err;

        if (c->async[slot].id != msg->hdr.msg_id ||
            c->async[slot].cmd != msg->hdr.command) {
            continue;
        }
        /* close the gap: the ones before it move up by one */
        for (unsigned j = i; j > 0; j--) {
            c->async[(c->async_head + j) % VFU_MAX_ASYNC] =
                c->async[(c->async_head + j - 1) % VFU_MAX_ASYNC];
        }
        err = (msg->hdr.flags & VFU_F_ERROR) ?
              MIN(msg->hdr.error ?: EIO, 4095) : 0;
        c->async_head = (c->async_head + 1) % VFU_MAX_ASYNC;
        c->async_count--;
        if (!c->async_err) {
            c->async_err = -err;
        }
        trace_vfio_user_async_reply(c->name, msg->hdr.msg_id,
                                    vfu_command_name(msg->hdr.command), err,
                                    c->async_count);
        return true;
    }
    return false;
}

/*
 * @deadline: 0 to start the timeout at the first wait.  Replies to
 * asynchronous calls are taken here; with @async_return, taking one
 * returns 0 so that the caller can look at what is still pending.
 */
static int conn_recv(VfuConn *c, VfuMsg **msgp, bool block, int64_t deadline,
                     bool async_return, Error **errp)
{
    int r;

    *msgp = NULL;
    if (c->broken) {
        error_setg(errp, "%s: connection is closed", c->name);
        return -1;
    }
again:
    for (;;) {
        r = conn_read_some(c, errp);
        if (r < 0) {
            conn_break(c, errp ? *errp : NULL);
            return -1;
        }
        if (r == 1) {
            break;
        }
        if (r == 2) {
            /* the payload may be there already: a non-blocking read too */
            continue;
        }
        if (!block) {
            return 0;
        }
        if (!deadline) {
            deadline = deadline_from_now(c);
        }
        if (conn_wait(c, G_IO_IN, deadline, errp) < 0) {
            conn_break(c, errp ? *errp : NULL);
            return -1;
        }
    }

    *msgp = g_steal_pointer(&c->rx_msg);
    c->rx_hdr_got = 0;
    c->rx_got = 0;
    conn_count_recv(c, *msgp);
    trace_vfio_user_recv(c->name, (*msgp)->hdr.msg_id,
                         vfu_command_name((*msgp)->hdr.command),
                         (*msgp)->hdr.flags, (*msgp)->hdr.size,
                         (*msgp)->nfds);
    if (c->async_count && vfu_msg_is_reply(*msgp) &&
        conn_async_reply(c, *msgp)) {
        g_clear_pointer(msgp, vfu_msg_free);
        if (async_return) {
            return 0;
        }
        goto again;
    }
    return 1;
}

int vfu_conn_recv(VfuConn *c, VfuMsg **msgp, bool block, Error **errp)
{
    return conn_recv(c, msgp, block, 0, false, errp);
}

/* The peer's DMA request, decoded: its data bytes */
static void conn_count_dma_request(VfuConn *c, const VfuMsg *msg)
{
    uint16_t cmd = msg->hdr.command;
    uint64_t count;

    if ((cmd != VFU_CMD_DMA_READ && cmd != VFU_CMD_DMA_WRITE) ||
        msg->len < sizeof(VfuDmaAccess)) {
        return;
    }
    count = ((const VfuDmaAccess *)msg->payload)->count;
    if (cmd == VFU_CMD_DMA_READ) {
        c->stats.dma_read_bytes += count;
    } else {
        c->stats.dma_write_bytes += count;
    }
}

int vfu_conn_handle_request(VfuConn *c, VfuMsg *msg)
{
    Error *err = NULL;
    int ret;

    ret = vfu_msg_decode(msg, &c->local, &err);
    if (ret) {
        trace_vfio_user_bad_request(c->name, msg->hdr.msg_id,
                                    error_get_pretty(err));
        error_free(err);
        err = NULL;
    } else if (!c->request_func) {
        ret = -ENOTSUP;
    } else {
        conn_count_dma_request(c, msg);
        ret = c->request_func(c, msg, c->request_opaque);
    }
    if (ret && !c->broken) {
        vfu_conn_reply_error(c, msg, -ret, &err);
        if (err) {
            trace_vfio_user_bad_request(c->name, msg->hdr.msg_id,
                                        error_get_pretty(err));
            error_free(err);
        }
    }
    vfu_msg_free(msg);
    return ret;
}

int vfu_conn_serve(VfuConn *c, bool one_waited, Error **errp)
{
    for (int n = 0; n < VFU_SERVE_BATCH && !c->broken; n++) {
        g_autoptr(VfuMsg) msg = NULL;
        int r = conn_recv(c, &msg, false, 0, false, errp);
        bool waited;

        if (r <= 0) {
            return r;
        }
        if (vfu_msg_is_reply(msg)) {
            trace_vfio_user_stray_reply(c->name, msg->hdr.msg_id,
                                        vfu_command_name(msg->hdr.command));
            continue;
        }
        waited = !(msg->hdr.flags & VFU_F_NO_REPLY);
        vfu_conn_handle_request(c, g_steal_pointer(&msg));
        if (waited && one_waited) {
            break;
        }
    }
    if (c->broken) {
        error_setg(errp, "%s: connection is closed", c->name);
        return -1;
    }
    return 0;
}

/*
 * Keep a request that came in during a call.  Returns false when the
 * connection broke because the peer went past the limits.
 */
static bool conn_defer(VfuConn *c, VfuMsg *msg)
{
    if (g_queue_get_length(&c->deferred) >= VFU_MAX_DEFERRED ||
        c->deferred_bytes + msg->len > VFU_MAX_DEFERRED_BYTES) {
        trace_vfio_user_deferred_full(c->name, msg->hdr.msg_id,
                                      vfu_command_name(msg->hdr.command));
        if (msg->hdr.flags & VFU_F_NO_REPLY) {
            Error *err = NULL;

            error_setg(&err, "%s: too many requests while a call waits",
                       c->name);
            conn_break(c, err);
            error_free(err);
        } else {
            vfu_conn_reply_error(c, msg, EBUSY, NULL);
        }
        vfu_msg_free(msg);
        return !c->broken;
    }
    trace_vfio_user_deferred(c->name, msg->hdr.msg_id,
                             vfu_command_name(msg->hdr.command));
    c->deferred_bytes += msg->len;
    g_queue_push_tail(&c->deferred, msg);
    c->defer_func(c, c->defer_opaque);
    return true;
}

/*
 * A call whose reply did not come by @deadline gives up even while the
 * peer keeps the socket busy with other messages.
 */
static bool conn_call_expired(VfuConn *c, uint16_t cmd, int64_t deadline,
                              Error **errp)
{
    Error *err = NULL;

    if (qemu_clock_get_ms(QEMU_CLOCK_REALTIME) < deadline) {
        return false;
    }
    c->stats.timeouts++;
    error_setg(&err, "%s: no answer to %s within %" PRId64 " ms", c->name,
               vfu_command_name(cmd), c->timeout_ms);
    conn_break(c, err);
    error_propagate(errp, err);
    return true;
}

/*
 * Receive until the reply to @id arrives (returned in *@reply) or, with
 * @id < 0, until at most @max_async asynchronous calls are pending.  The
 * peer's requests meanwhile are served or kept (see conn_defer()).
 *
 * A peer that works on our request may need our memory for it (a device
 * running a script it fetches by DMA): each of its requests that we
 * serve successfully is a sign of life and moves @deadline to a timeout
 * from then on, up to VFU_CALL_MAX_TIMEOUTS timeouts in all, so that a
 * peer cannot keep the call going for good.
 */
static int conn_await_reply(VfuConn *c, uint16_t cmd, int id,
                            unsigned max_async, int64_t deadline,
                            VfuMsg **reply, Error **errp)
{
    int64_t last = deadline + (VFU_CALL_MAX_TIMEOUTS - 1) * c->timeout_ms;

    /*
     * A reply we just asked for is not there yet: sleep first instead of
     * trying a read that fails (a syscall is not free).
     */
    if (id >= 0 && !c->rx_msg && !c->rx_hdr_got) {
        Error *local_err = NULL;

        if (conn_wait(c, G_IO_IN, deadline, &local_err) < 0) {
            conn_break(c, local_err);
            error_propagate_prepend(errp, local_err, "%s: waiting for %s: ",
                                    c->name, vfu_command_name(cmd));
            return -ECONNRESET;
        }
    }
    for (;;) {
        g_autoptr(VfuMsg) msg = NULL;
        Error *local_err = NULL;
        int r;

        if (id < 0 && c->async_count <= max_async) {
            return 0;
        }
        r = conn_recv(c, &msg, true, deadline, true, &local_err);
        if (r < 0) {
            error_propagate_prepend(errp, local_err, "%s: waiting for %s: ",
                                    c->name, vfu_command_name(cmd));
            return -ECONNRESET;
        }
        if (!r) {
            /* an asynchronous call was answered */
        } else if (!vfu_msg_is_reply(msg)) {
            if (c->defer_func) {
                if (!conn_defer(c, g_steal_pointer(&msg))) {
                    error_setg(errp, "%s: connection dropped waiting for %s",
                               c->name, vfu_command_name(cmd));
                    return -ECONNRESET;
                }
            } else {
                if (!vfu_conn_handle_request(c, g_steal_pointer(&msg))) {
                    deadline = MIN(deadline_from_now(c), last);
                }
                if (c->broken) {
                    error_setg(errp, "%s: connection lost waiting for %s",
                               c->name, vfu_command_name(cmd));
                    return -ECONNRESET;
                }
            }
        } else if (id >= 0 && msg->hdr.msg_id == id &&
                   msg->hdr.command == cmd) {
            *reply = g_steal_pointer(&msg);
            return 0;
        } else {
            /* e.g. a peer answering a No_reply write: drop it */
            trace_vfio_user_stray_reply(c->name, msg->hdr.msg_id,
                                        vfu_command_name(msg->hdr.command));
        }
        /* a peer that only ever sends requests or stray replies */
        if (conn_call_expired(c, cmd, deadline, errp)) {
            return -ETIMEDOUT;
        }
    }
}

static int conn_await(VfuConn *c, uint16_t cmd, int id, unsigned max_async,
                      int64_t deadline, VfuMsg **reply, Error **errp)
{
    bool was_waiting = c->waiting;
    int ret;

    c->waiting = true;
    ret = conn_await_reply(c, cmd, id, max_async, deadline, reply, errp);
    c->waiting = was_waiting;
    return ret;
}

int vfu_conn_call(VfuConn *c, uint16_t cmd, void *payload, size_t len,
                  const int *fds, size_t nfds, VfuMsg **reply, Error **errp)
{
    g_autoptr(VfuMsg) msg = NULL;
    uint16_t id = c->next_id++;
    int64_t deadline = deadline_from_now(c);
    Error *local_err = NULL;
    int ret;

    if (reply) {
        *reply = NULL;
    }
    ret = vfu_conn_send(c, cmd, id, VFU_F_TYPE_COMMAND, 0, payload, len,
                        fds, nfds, errp);
    if (ret) {
        return ret;
    }
    ret = conn_await(c, cmd, id, 0, deadline, &msg, errp);
    if (ret) {
        return ret;
    }
    if (msg->hdr.flags & VFU_F_ERROR) {
        int err = msg->hdr.error ? msg->hdr.error : EIO;

        error_setg(errp, "%s: %s failed on the server: %s", c->name,
                   vfu_command_name(cmd), g_strerror(err));
        return -(int)MIN(err, 4095);
    }
    ret = vfu_msg_decode(msg, &c->local, &local_err);
    if (ret) {
        error_propagate_prepend(errp, local_err, "%s: bad reply: ", c->name);
        return -EPROTO;
    }
    if (reply) {
        *reply = g_steal_pointer(&msg);
    }
    return 0;
}

int vfu_conn_call_async(VfuConn *c, uint16_t cmd, void *payload, size_t len,
                        Error **errp)
{
    uint16_t id = c->next_id;
    unsigned slot;
    int ret;

    if (c->async_count == VFU_MAX_ASYNC) {
        /* the oldest must be answered first */
        ret = conn_await(c, cmd, -1, VFU_MAX_ASYNC - 1,
                         deadline_from_now(c), NULL, errp);
        if (ret) {
            return ret;
        }
    }
    ret = vfu_conn_send(c, cmd, id, VFU_F_TYPE_COMMAND, 0, payload, len,
                        NULL, 0, errp);
    if (ret) {
        return ret;
    }
    c->next_id++;
    slot = (c->async_head + c->async_count) % VFU_MAX_ASYNC;
    c->async[slot].id = id;
    c->async[slot].cmd = cmd;
    c->async_count++;
    return 0;
}

int vfu_conn_flush(VfuConn *c, Error **errp)
{
    int ret = 0;

    if (c->async_count) {
        ret = conn_await(c, c->async[c->async_head].cmd, -1, 0,
                         deadline_from_now(c), NULL, errp);
    }
    if (!ret && c->async_err) {
        ret = c->async_err;
        error_setg(errp, "%s: an asynchronous request failed: %s", c->name,
                   g_strerror(-ret));
    }
    c->async_err = 0;
    return ret;
}

int vfu_conn_post(VfuConn *c, uint16_t cmd, void *payload, size_t len,
                  Error **errp)
{
    return vfu_conn_send(c, cmd, c->next_id++,
                         VFU_F_TYPE_COMMAND | VFU_F_NO_REPLY, 0,
                         payload, len, NULL, 0, errp);
}

int vfu_conn_negotiate_client(VfuConn *c, Error **errp)
{
    g_autofree void *proposal = NULL;
    g_autoptr(VfuMsg) reply = NULL;
    VfuLimits peer;
    uint16_t major, minor;
    size_t len;
    int ret;

    proposal = vfu_version_encode(VFU_VERSION_MAJOR, VFU_VERSION_MINOR,
                                  &c->local, &len);
    ret = vfu_conn_call(c, VFU_CMD_VERSION, proposal, len, NULL, 0, &reply,
                        errp);
    if (ret) {
        return ret;
    }
    if (!vfu_version_parse(reply->payload, reply->len, &major, &minor,
                           &peer, errp)) {
        error_prepend(errp, "%s: ", c->name);
        return -EPROTO;
    }
    if (minor > VFU_VERSION_MINOR) {
        error_setg(errp, "%s: server answered version %u.%u, newer than the "
                   "proposed %u.%u", c->name, major, minor,
                   VFU_VERSION_MAJOR, VFU_VERSION_MINOR);
        return -EPROTO;
    }
    /* we never propose write_multiple, so the server may not enable it */
    peer.write_multiple = peer.write_multiple && c->local.write_multiple;
    c->peer = peer;
    c->negotiated = true;
    c->major = major;
    c->minor = minor;
    trace_vfio_user_version(c->name, major, minor, peer.max_msg_fds,
                            peer.max_data_xfer_size, peer.max_dma_maps,
                            peer.pgsizes);
    return 0;
}

int vfu_conn_negotiate_server(VfuConn *c, VfuMsg *req, Error **errp)
{
    g_autofree void *answer = NULL;
    VfuLimits peer, ours = c->local;
    uint16_t major, minor;
    size_t len;

    if (req->hdr.command != VFU_CMD_VERSION || vfu_msg_is_reply(req)) {
        error_setg(errp, "%s: expected VERSION, got %s", c->name,
                   vfu_command_name(req->hdr.command));
        vfu_conn_reply_error(c, req, EINVAL, NULL);
        return -EPROTO;
    }
    if (vfu_msg_decode(req, &c->local, errp) ||
        !vfu_version_parse(req->payload, req->len, &major, &minor, &peer,
                           errp)) {
        error_prepend(errp, "%s: ", c->name);
        vfu_conn_reply_error(c, req, EINVAL, NULL);
        return -EPROTO;
    }
    minor = MIN(minor, VFU_VERSION_MINOR);
    ours.write_multiple = ours.write_multiple && peer.write_multiple;
    peer.write_multiple = ours.write_multiple;
    c->peer = peer;
    c->negotiated = true;
    c->major = major;
    c->minor = minor;
    answer = vfu_version_encode(VFU_VERSION_MAJOR, minor, &ours, &len);
    trace_vfio_user_version(c->name, major, minor, peer.max_msg_fds,
                            peer.max_data_xfer_size, peer.max_dma_maps,
                            peer.pgsizes);
    return vfu_conn_reply(c, req, answer, len, NULL, 0, errp);
}

bool vfu_fd_is_shrink_sealed(int fd)
{
    int seals = fcntl(fd, F_GET_SEALS);

    return seals >= 0 && (seals & F_SEAL_SHRINK);
}

bool vfu_fd_is_eventfd(int fd)
{
    g_autofree char *path = g_strdup_printf("/proc/self/fdinfo/%d", fd);
    g_autofree char *info = NULL;

    /* the kernel names an eventfd's counter in its fdinfo */
    return g_file_get_contents(path, &info, NULL, NULL) &&
           strstr(info, "\neventfd-count:");
}

bool vfu_fd_is_unix_stream(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    int type = 0;
    socklen_t tlen = sizeof(type);

    return getsockname(fd, (struct sockaddr *)&ss, &len) == 0 &&
           ss.ss_family == AF_UNIX &&
           getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) == 0 &&
           type == SOCK_STREAM;
}

bool vfu_fd_check_file(int fd, uint64_t end, Error **errp)
{
    struct stat st;

    if (fstat(fd, &st) < 0) {
        error_setg_errno(errp, errno, "cannot stat the fd");
        return false;
    }
    if (!S_ISREG(st.st_mode) || st.st_size < 0 ||
        (uint64_t)st.st_size < end) {
        error_setg(errp, "the fd is not a file of at least %" PRIu64
                   " bytes", end);
        return false;
    }
    return true;
}

SocketAddress *vfu_visit_socket(Visitor *v, const char *name,
                                char **display, Error **errp)
{
    g_autoptr(SocketAddress) addr = NULL;
    GenericAlternate *alt = NULL;
    char *path = NULL;
    bool ok = false;

    /* a string input visitor (-global, a string qom-set) has no alternates */
    if (!v->start_alternate) {
        ok = visit_type_str(v, name, &path, errp);
    } else if (visit_start_alternate(v, name, &alt, sizeof(*alt), errp)) {
        switch (alt->type) {
        case QTYPE_QSTRING:
            ok = visit_type_str(v, name, &path, errp);
            break;
        case QTYPE_QDICT:
            ok = visit_type_SocketAddress(v, name, &addr, errp);
            break;
        default:
            error_setg(errp, "'%s' takes a path or a socket address", name);
            break;
        }
        visit_end_alternate(v, (void **)&alt);
        g_free(alt);
    }
    if (!ok) {
        g_free(path);
        return NULL;
    }
    if (path) {
        addr = g_new0(SocketAddress, 1);
        addr->type = SOCKET_ADDRESS_TYPE_UNIX;
        addr->u.q_unix.path = path;
    }
    switch (addr->type) {
    case SOCKET_ADDRESS_TYPE_UNIX:
        *display = g_strdup(addr->u.q_unix.path);
        break;
    case SOCKET_ADDRESS_TYPE_FD:
        *display = g_strdup_printf("fd:%s", addr->u.fd.str);
        break;
    default:
        error_setg(errp, "'%s' must be a UNIX socket (type unix or fd)",
                   name);
        return NULL;
    }
    return g_steal_pointer(&addr);
}

void vfu_visit_socket_out(Visitor *v, const char *name, SocketAddress **addr,
                          Error **errp)
{
    g_autofree char *empty = g_strdup("");

    if (!*addr) {
        visit_type_str(v, name, &empty, errp);
        return;
    }
    visit_type_SocketAddress(v, name, addr, errp);
}
