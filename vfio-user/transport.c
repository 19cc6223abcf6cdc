/*
 * vfio-user transport: framing, fd passing, limits, send and receive.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <sys/ioctl.h>
#include "qapi/error.h"
#include "qemu/timer.h"
#include "qemu/iov.h"
#include "qemu/main-loop.h"
#include "io/channel-socket.h"
#include "vfio-user/transport.h"
#include "trace.h"

/* fds that came with the read holding the header at stream offset @owner */
typedef struct VfuRxFds {
    uint64_t owner;
    int *fds;
    size_t nfds;
} VfuRxFds;

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
    char *broken_reason;
    bool sending;

    VfuRequestFunc request_func;
    void *request_opaque;
    VfuWaitFunc wait_func;
    void *wait_opaque;
    VfuReplyBarrierFunc reply_barrier;
    void *reply_barrier_opaque;
    const char *policy_kind;
    void *policy;
    void (*policy_free)(void *state);

    /*
     * Received bytes: rx_buf[rx_head, rx_tail) are stream offsets
     * [rx_offset, rx_offset + rx_tail - rx_head).  A message that does
     * not fit is read straight into its payload (rx_big).
     */
    uint8_t *rx_buf;
    size_t rx_head;
    size_t rx_tail;
    uint64_t rx_offset;
    VfuMsg *rx_big;
    size_t rx_big_got;
    GArray *rx_fds;                 /* VfuRxFds, by owner */

    VfuConnStats stats;
    bool negotiated;
    uint16_t major, minor;
    bool has_cred;
    struct ucred cred;
};

static void rx_fds_clear(GArray *a)
{
    for (guint i = 0; i < a->len; i++) {
        VfuRxFds *f = &g_array_index(a, VfuRxFds, i);

        for (size_t j = 0; j < f->nfds; j++) {
            close(f->fds[j]);
        }
        g_free(f->fds);
    }
    g_array_set_size(a, 0);
}

VfuConn *vfu_conn_new(QIOChannel *ioc, const char *name,
                      const VfuLimits *local)
{
    VfuConn *c = g_new0(VfuConn, 1);
    socklen_t cred_len = sizeof(c->cred);

    c->ioc = QIO_CHANNEL(object_ref(OBJECT(ioc)));
    c->fd = QIO_CHANNEL_SOCKET(ioc)->fd;
    c->name = g_strdup(name);
    c->local = *local;
    c->max_msg_size = vfu_max_msg_size(local);
    vfu_limits_default(&c->peer);
    c->timeout_ms = VFU_DEFAULT_TIMEOUT_MS;
    c->next_id = 1;
    c->rx_buf = g_malloc(VFU_RX_BUF_SIZE);
    c->rx_fds = g_array_new(false, false, sizeof(VfuRxFds));
    qio_channel_set_blocking(ioc, false, NULL);
    c->has_cred = getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &c->cred,
                             &cred_len) == 0 &&
                  cred_len == sizeof(c->cred) && c->cred.pid > 0;
    return c;
}

void vfu_conn_free(VfuConn *c)
{
    if (!c) {
        return;
    }
    if (c->policy_free) {
        c->policy_free(c->policy);
    }
    vfu_msg_free(c->rx_big);
    rx_fds_clear(c->rx_fds);
    g_array_free(c->rx_fds, true);
    g_free(c->rx_buf);
    qio_channel_close(c->ioc, NULL);
    object_unref(OBJECT(c->ioc));
    g_free(c->broken_reason);
    g_free(c->name);
    g_free(c);
}

void vfu_conn_set_timeout(VfuConn *c, int64_t timeout_ms)
{
    c->timeout_ms = timeout_ms;
}

int64_t vfu_conn_timeout(VfuConn *c)
{
    return c->timeout_ms;
}

int64_t vfu_conn_deadline(VfuConn *c)
{
    return qemu_clock_get_ms(QEMU_CLOCK_REALTIME) + c->timeout_ms;
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

int vfu_conn_fd(VfuConn *c)
{
    return c->fd;
}

uint16_t vfu_conn_next_id(VfuConn *c)
{
    return c->next_id++;
}

void vfu_conn_set_policy(VfuConn *c, const char *kind, void *state,
                         void (*free_fn)(void *))
{
    /* one side's policy per connection */
    assert(!c->policy);
    c->policy_kind = kind;
    c->policy = state;
    c->policy_free = free_fn;
}

void *vfu_conn_policy(VfuConn *c, const char *kind)
{
    assert(!c->policy || c->policy_kind == kind);
    return c->policy;
}

void vfu_conn_set_wait_func(VfuConn *c, VfuWaitFunc func, void *opaque)
{
    c->wait_func = func;
    c->wait_opaque = opaque;
}

void vfu_conn_set_reply_barrier(VfuConn *c, VfuReplyBarrierFunc fn,
                                void *opaque)
{
    c->reply_barrier = fn;
    c->reply_barrier_opaque = opaque;
}

void vfu_conn_set_request_func(VfuConn *c, VfuRequestFunc func, void *opaque)
{
    c->request_func = func;
    c->request_opaque = opaque;
}

bool vfu_conn_is_broken(VfuConn *c)
{
    return c->broken;
}

const char *vfu_conn_broken_reason(VfuConn *c)
{
    return c->broken_reason ?: "";
}

bool vfu_conn_sending(VfuConn *c)
{
    return c->sending;
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

void vfu_conn_set_version(VfuConn *c, uint16_t major, uint16_t minor)
{
    c->negotiated = true;
    c->major = major;
    c->minor = minor;
}

bool vfu_conn_peer_cred(VfuConn *c, int64_t *pid, int64_t *uid, int64_t *gid)
{
    *pid = c->cred.pid;
    *uid = c->cred.uid;
    *gid = c->cred.gid;
    return c->has_cred;
}

void vfu_conn_break(VfuConn *c, Error *err)
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
    vfu_conn_break(c, NULL);
}

int vfu_reply_errno(const VfuMsg *reply)
{
    uint32_t err = reply->hdr.error ?: EIO;

    return -(int)MIN(err, 4095);
}

int vfu_conn_take_reply(VfuConn *c, uint16_t cmd, VfuMsg **msgp,
                        VfuMsg **reply, Error **errp)
{
    VfuMsg *msg = *msgp;
    Error *local_err = NULL;
    int ret;

    if (msg->hdr.flags & VFU_F_ERROR) {
        ret = vfu_reply_errno(msg);
        error_setg(errp, "%s: %s failed on the peer: %s", c->name,
                   vfu_command_name(cmd), g_strerror(-ret));
        return ret;
    }
    ret = vfu_msg_decode(msg, &c->local, &local_err);
    if (ret) {
        error_propagate_prepend(errp, local_err, "%s: bad reply: ", c->name);
        return -EPROTO;
    }
    if (reply) {
        *reply = g_steal_pointer(msgp);
    }
    return 0;
}

/* ---- waiting ------------------------------------------------------------- */

int vfu_conn_poll(VfuConn *c, GPollFD *pfds, unsigned n, int64_t deadline,
                  Error **errp)
{
    int64_t left = deadline - qemu_clock_get_ms(QEMU_CLOCK_REALTIME);

    if (left <= 0) {
        c->stats.timeouts++;
        error_setg(errp, "%s: no answer from the peer within %" PRId64 " ms",
                   c->name, c->timeout_ms);
        return -ETIMEDOUT;
    }
    if (qemu_poll_ns(pfds, n, left * SCALE_MS) < 0 && errno != EINTR) {
        error_setg_errno(errp, errno, "%s: poll failed", c->name);
        return -EIO;
    }
    return 0;
}

bool vfu_conn_call_expired(VfuConn *c, uint16_t cmd, int64_t deadline,
                           Error **errp)
{
    Error *err = NULL;

    if (qemu_clock_get_ms(QEMU_CLOCK_REALTIME) < deadline) {
        return false;
    }
    c->stats.timeouts++;
    error_setg(&err, "%s: no answer to %s within %" PRId64 " ms", c->name,
               vfu_command_name(cmd), c->timeout_ms);
    vfu_conn_break(c, err);
    error_propagate(errp, err);
    return true;
}

int vfu_conn_wait(VfuConn *c, GIOCondition events, int64_t deadline,
                  Error **errp)
{
    if (c->wait_func) {
        return c->wait_func(c, events, deadline, c->wait_opaque, errp);
    }
    GPollFD pfd = { .fd = c->fd, .events = events };

    return vfu_conn_poll(c, &pfd, 1, deadline, errp);
}

/* ---- sending ------------------------------------------------------------- */

int vfu_conn_send_until(VfuConn *c, uint16_t cmd, uint16_t msg_id,
                        uint32_t flags, uint32_t error, void *payload,
                        size_t len, const int *fds, size_t nfds,
                        int64_t deadline, Error **errp)
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
    bool reply = (flags & VFU_F_TYPE_MASK) == VFU_F_TYPE_REPLY;
    Error *local_err = NULL;
    int ret = 0;

    if (c->broken) {
        error_setg(errp, "%s: connection is closed", c->name);
        return -ECONNRESET;
    }
    if (c->sending) {
        /* a policy bug, not the peer's doing: never interleave messages */
        error_setg(errp, "%s: %s while another message is being sent",
                   c->name, vfu_command_name(cmd));
        return -EBUSY;
    }
    if (len > UINT32_MAX - sizeof(VfuHeader) || nfds > VFU_MAX_MSG_FDS) {
        error_setg(errp, "%s: message too large", c->name);
        return -EINVAL;
    }
    trace_vfio_user_send(c->name, msg_id, vfu_command_name(cmd), flags,
                         hdr.size, nfds);
    vfu_stats_sent(&c->stats, cmd, flags, payload, len);
    vfu_header_encode(&hdr, wire);
    if (len) {
        vfu_payload_encode(cmd, reply, payload, len);
    }

    c->sending = true;
    while (niov) {
        ssize_t n = qio_channel_writev_full(c->ioc, cur, niov, (int *)fds,
                                            nfds, 0, &local_err);
        if (n == QIO_CHANNEL_ERR_BLOCK) {
            if (!deadline) {
                deadline = vfu_conn_deadline(c);
            }
            ret = vfu_conn_wait(c, G_IO_OUT, deadline, &local_err);
            if (ret || c->broken) {
                ret = ret ?: -ECONNRESET;
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
    c->sending = false;
    /* iov_discard_front() moved iov bases: payload itself is intact */
    if (len) {
        vfu_payload_encode(cmd, reply, payload, len);
    }
    if (ret) {
        if (!local_err) {
            error_setg(&local_err, "connection is closed");
        }
        error_prepend(&local_err, "%s: sending %s: ", c->name,
                      vfu_command_name(cmd));
        vfu_conn_break(c, local_err);
        error_propagate(errp, local_err);
    }
    return ret;
}

int vfu_conn_send(VfuConn *c, uint16_t cmd, uint16_t msg_id, uint32_t flags,
                  uint32_t error, void *payload, size_t len,
                  const int *fds, size_t nfds, Error **errp)
{
    return vfu_conn_send_until(c, cmd, msg_id, flags, error, payload, len,
                               fds, nfds, 0, errp);
}

/* @req wants a reply: what must go before it is out */
static bool reply_due(VfuConn *c, const VfuMsg *req)
{
    if (req->hdr.flags & VFU_F_NO_REPLY) {
        return false;
    }
    if (c->reply_barrier) {
        c->reply_barrier(c, c->reply_barrier_opaque);
    }
    return true;
}

int vfu_conn_reply(VfuConn *c, const VfuMsg *req, void *payload, size_t len,
                   const int *fds, size_t nfds, Error **errp)
{
    if (!reply_due(c, req)) {
        return 0;
    }
    return vfu_conn_send(c, req->hdr.command, req->hdr.msg_id,
                         VFU_F_TYPE_REPLY, 0, payload, len, fds, nfds, errp);
}

int vfu_conn_reply_error(VfuConn *c, const VfuMsg *req, int err, Error **errp)
{
    trace_vfio_user_error_reply(c->name, req->hdr.msg_id,
                                vfu_command_name(req->hdr.command), err);
    if (!reply_due(c, req)) {
        return 0;
    }
    return vfu_conn_send(c, req->hdr.command, req->hdr.msg_id,
                         VFU_F_TYPE_REPLY | VFU_F_ERROR, err, NULL, 0,
                         NULL, 0, errp);
}

int vfu_conn_post(VfuConn *c, uint16_t cmd, void *payload, size_t len,
                  Error **errp)
{
    return vfu_conn_send(c, cmd, vfu_conn_next_id(c),
                         VFU_F_TYPE_COMMAND | VFU_F_NO_REPLY, 0,
                         payload, len, NULL, 0, errp);
}

/* ---- receiving ----------------------------------------------------------- */

static size_t rx_avail(VfuConn *c)
{
    return c->rx_tail - c->rx_head;
}

/* The size of the message at buffer position @pos, 0 if not known yet */
static uint32_t rx_size_at(VfuConn *c, size_t pos)
{
    if (pos > c->rx_tail || c->rx_tail - pos < sizeof(VfuHeader)) {
        return 0;
    }
    /* checked by vfu_header_decode() when the message is taken */
    return ldl_le_p(c->rx_buf + pos + offsetof(VfuHeader, size));
}

/*
 * fds came with the read that ended at stream offset @end: they belong
 * to the last message that begins before @end, which is the one whose
 * header came in that read if any did: the peer sends fds with a
 * message's first bytes, and the kernel ends a read after the bytes that
 * carry fds.  Without one, they go to the message those bytes are part
 * of.
 */
static uint64_t rx_fds_owner(VfuConn *c, uint64_t end)
{
    uint64_t pos = c->rx_offset;
    uint64_t owner = pos;
    size_t bpos = c->rx_head;

    if (c->rx_big) {
        return vfu_conn_next_offset(c);
    }
    while (pos < end) {
        uint32_t size = rx_size_at(c, bpos);

        owner = pos;
        if (size < sizeof(VfuHeader)) {
            break;      /* header incomplete, or bad: fails when taken */
        }
        pos += size;
        bpos += size;
    }
    return owner;
}

static bool rx_add_fds(VfuConn *c, uint64_t end, int *fds, size_t nfds,
                       Error **errp)
{
    VfuRxFds f = { .owner = rx_fds_owner(c, end) };
    size_t total = nfds;

    for (guint i = 0; i < c->rx_fds->len; i++) {
        VfuRxFds *o = &g_array_index(c->rx_fds, VfuRxFds, i);

        if (o->owner == f.owner) {
            total += o->nfds;
        }
    }
    f.fds = fds;
    f.nfds = nfds;
    g_array_append_val(c->rx_fds, f);
    if (total > VFU_MAX_MSG_FDS) {
        error_setg(errp, "%s: too many file descriptors", c->name);
        return false;
    }
    return true;
}

/* Hand the fds owned by the message at @owner to @msg; close older ones */
static void rx_take_fds(VfuConn *c, uint64_t owner, VfuMsg *msg)
{
    guint i = 0;

    while (i < c->rx_fds->len) {
        VfuRxFds *f = &g_array_index(c->rx_fds, VfuRxFds, i);

        if (f->owner > owner) {
            i++;
            continue;
        }
        if (f->owner == owner) {
            msg->fds = g_renew(int, msg->fds, msg->nfds + f->nfds);
            memcpy(msg->fds + msg->nfds, f->fds, f->nfds * sizeof(int));
            msg->nfds += f->nfds;
        } else {
            for (size_t j = 0; j < f->nfds; j++) {
                close(f->fds[j]);
            }
        }
        g_free(f->fds);
        g_array_remove_index(c->rx_fds, i);
    }
}

/*
 * One read from the socket into the buffer (or the big message being
 * received).  Returns the number of bytes, 0 when there were none, -1 on
 * error or EOF.
 */
static ssize_t rx_fill(VfuConn *c, Error **errp)
{
    struct iovec iov;
    int *fds = NULL;
    size_t nfds = 0;
    ssize_t n;

    if (c->rx_big) {
        iov.iov_base = c->rx_big->payload + c->rx_big_got;
        iov.iov_len = c->rx_big->len - c->rx_big_got;
    } else {
        /* room for the whole message at the head, and for reading ahead */
        size_t need = MAX(rx_size_at(c, c->rx_head), 4096);

        if (c->rx_head == c->rx_tail) {
            c->rx_head = c->rx_tail = 0;
        } else if (c->rx_head + need > VFU_RX_BUF_SIZE) {
            memmove(c->rx_buf, c->rx_buf + c->rx_head, rx_avail(c));
            c->rx_tail -= c->rx_head;
            c->rx_head = 0;
        }
        iov.iov_base = c->rx_buf + c->rx_tail;
        iov.iov_len = VFU_RX_BUF_SIZE - c->rx_tail;
        if (!iov.iov_len) {
            /* cannot happen: a message that does not fit is read apart */
            error_setg(errp, "%s: receive buffer full", c->name);
            return -1;
        }
    }
    n = qio_channel_readv_full(c->ioc, &iov, 1, &fds, &nfds, errp);
    if (n == QIO_CHANNEL_ERR_BLOCK) {
        return 0;
    }
    if (n < 0) {
        return -1;
    }
    if (n == 0) {
        g_free(fds);
        error_setg(errp, "%s: peer closed the connection", c->name);
        return -1;
    }
    if (c->rx_big) {
        c->rx_big_got += n;
        c->rx_offset += n;
    } else {
        c->rx_tail += n;
    }
    if (nfds && !rx_add_fds(c, vfu_conn_bytes_read(c), fds, nfds, errp)) {
        return -1;
    }
    if (!nfds) {
        g_free(fds);
    }
    return n;
}

/*
 * Take the next complete message.  Returns 1 with *@msgp set, 0 when it
 * is not complete yet, -1 on a protocol violation.
 */
static int rx_take(VfuConn *c, VfuMsg **msgp, Error **errp)
{
    VfuHeader hdr;
    VfuMsg *msg;
    uint64_t owner;
    size_t len;

    if (c->rx_big) {
        if (c->rx_big_got < c->rx_big->len) {
            return 0;
        }
        msg = g_steal_pointer(&c->rx_big);
        rx_take_fds(c, c->rx_offset - msg->len - sizeof(VfuHeader), msg);
        *msgp = msg;
        return 1;
    }
    if (rx_avail(c) < sizeof(VfuHeader)) {
        return 0;
    }
    if (!vfu_header_decode(c->rx_buf + c->rx_head, &hdr, c->max_msg_size,
                           errp)) {
        error_prepend(errp, "%s: ", c->name);
        return -1;
    }
    len = hdr.size - sizeof(VfuHeader);
    owner = c->rx_offset;
    if (hdr.size > rx_avail(c) && hdr.size <= VFU_RX_BUF_SIZE) {
        return 0;
    }
    msg = g_new0(VfuMsg, 1);
    msg->hdr = hdr;
    msg->len = len;
    msg->payload = len ? g_malloc(len) : NULL;
    if (hdr.size > rx_avail(c)) {
        /* bigger than the buffer: the rest goes straight into the payload */
        size_t have = rx_avail(c) - sizeof(VfuHeader);

        memcpy(msg->payload, c->rx_buf + c->rx_head + sizeof(VfuHeader), have);
        c->rx_offset += rx_avail(c);
        c->rx_head = c->rx_tail = 0;
        c->rx_big = msg;
        c->rx_big_got = have;
        return 0;
    }
    if (len) {
        memcpy(msg->payload, c->rx_buf + c->rx_head + sizeof(VfuHeader), len);
    }
    c->rx_head += hdr.size;
    c->rx_offset += hdr.size;
    rx_take_fds(c, owner, msg);
    *msgp = msg;
    return 1;
}

bool vfu_conn_has_message(VfuConn *c)
{
    uint32_t size;

    if (c->broken) {
        return false;
    }
    if (c->rx_big) {
        return c->rx_big_got == c->rx_big->len;
    }
    size = rx_size_at(c, c->rx_head);
    /* a bad size is "complete" too: taking it reports the error */
    return size && (size < sizeof(VfuHeader) || size > c->max_msg_size ||
                    size <= rx_avail(c));
}

uint64_t vfu_conn_bytes_read(VfuConn *c)
{
    return c->rx_offset + (c->rx_big ? 0 : rx_avail(c));
}

uint64_t vfu_conn_bytes_waiting(VfuConn *c)
{
    int n = 0;

    if (ioctl(c->fd, FIONREAD, &n) < 0 || n < 0) {
        return 0;
    }
    return n;
}

uint64_t vfu_conn_next_offset(VfuConn *c)
{
    return c->rx_big ? c->rx_offset - c->rx_big_got - sizeof(VfuHeader)
                     : c->rx_offset;
}

int vfu_conn_recv_until(VfuConn *c, VfuMsg **msgp, bool block,
                        int64_t deadline, Error **errp)
{
    Error *local_err = NULL;

    *msgp = NULL;
    if (c->broken) {
        error_setg(errp, "%s: connection is closed", c->name);
        return -1;
    }
    for (;;) {
        int r = rx_take(c, msgp, &local_err);
        ssize_t n;

        if (r > 0) {
            break;
        }
        if (r < 0) {
            goto fail;
        }
        n = rx_fill(c, &local_err);
        if (n < 0) {
            goto fail;
        }
        if (n > 0) {
            continue;
        }
        if (!block) {
            return 0;
        }
        if (!deadline) {
            deadline = vfu_conn_deadline(c);
        }
        if (vfu_conn_wait(c, G_IO_IN, deadline, &local_err) < 0) {
            goto fail;
        }
        if (c->broken) {
            error_setg(&local_err, "%s: connection is closed", c->name);
            goto fail;
        }
    }
    vfu_stats_received(&c->stats, *msgp);
    trace_vfio_user_recv(c->name, (*msgp)->hdr.msg_id,
                         vfu_command_name((*msgp)->hdr.command),
                         (*msgp)->hdr.flags, (*msgp)->hdr.size,
                         (*msgp)->nfds);
    return 1;

fail:
    vfu_conn_break(c, local_err);
    error_propagate(errp, local_err);
    return -1;
}

int vfu_conn_recv(VfuConn *c, VfuMsg **msgp, bool block, Error **errp)
{
    return vfu_conn_recv_until(c, msgp, block, 0, errp);
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
        vfu_stats_dma_request(&c->stats, msg);
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
