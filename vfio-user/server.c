/*
 * vfio-user server policy: a strict in-order request queue, calls to the
 * client that queue what arrives meanwhile, asynchronous DMA_WRITEs.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/main-loop.h"
#include "block/aio.h"
#include "qemu/sockets.h"
#include "vfio-user/server.h"
#include "trace.h"

static const char vfu_srv_kind[] = "server";

typedef struct VfuSrvState {
    VfuConn *conn;
    GQueue queue;               /* requests not run yet, in arrival order */
    size_t queued_bytes;
    unsigned running;           /* requests on the stack (at most one) */
    QEMUBH *bh;
    VfuSrvBrokenFunc broken;
    void *opaque;

    /* vfu_srv_call_async() calls whose replies are due, oldest first */
    struct {
        uint16_t id;
        uint16_t cmd;
    } async[VFU_MAX_ASYNC];
    unsigned async_head;
    unsigned async_count;
    int async_err;
} VfuSrvState;

static void srv_state_free(void *opaque)
{
    VfuSrvState *st = opaque;

    while (!g_queue_is_empty(&st->queue)) {
        vfu_msg_free(g_queue_pop_head(&st->queue));
    }
    if (st->bh) {
        qemu_bh_delete(st->bh);
    }
    g_free(st);
}

static VfuSrvState *srv_state(VfuConn *c)
{
    VfuSrvState *st = vfu_conn_policy(c, vfu_srv_kind);

    if (!st) {
        st = g_new0(VfuSrvState, 1);
        st->conn = c;
        g_queue_init(&st->queue);
        vfu_conn_set_policy(c, vfu_srv_kind, st, srv_state_free);
    }
    return st;
}

/* Work left for later: queued requests, or messages read ahead */
static void srv_kick(VfuSrvState *st)
{
    if (st->bh && !st->running &&
        (!g_queue_is_empty(&st->queue) || vfu_conn_has_message(st->conn))) {
        qemu_bh_schedule(st->bh);
    }
}

static void srv_bh(void *opaque)
{
    VfuSrvState *st = opaque;

    vfu_srv_serve(st->conn, false, NULL);
    if (vfu_conn_is_broken(st->conn) && !st->running && st->broken) {
        st->broken(st->conn, st->opaque);
    }
}

void vfu_srv_attach(VfuConn *c, VfuSrvBrokenFunc broken, void *opaque)
{
    VfuSrvState *st = srv_state(c);

    st->broken = broken;
    st->opaque = opaque;
    if (!st->bh) {
        st->bh = aio_bh_new(iohandler_get_aio_context(), srv_bh, st);
    }
}

bool vfu_srv_busy(VfuConn *c)
{
    VfuSrvState *st = vfu_conn_policy(c, vfu_srv_kind);

    return st && st->running;
}

unsigned vfu_srv_async_pending(VfuConn *c)
{
    VfuSrvState *st = vfu_conn_policy(c, vfu_srv_kind);

    return st ? st->async_count : 0;
}

/*
 * Queue a request that came in behind others.  Returns false when the
 * connection broke because the client went past the limits.
 */
static bool srv_enqueue(VfuSrvState *st, VfuMsg *msg)
{
    VfuConn *c = st->conn;

    if (g_queue_get_length(&st->queue) >= VFU_MAX_DEFERRED ||
        st->queued_bytes + msg->len > VFU_MAX_DEFERRED_BYTES) {
        trace_vfio_user_deferred_full(vfu_conn_name(c), msg->hdr.msg_id,
                                      vfu_command_name(msg->hdr.command));
        if (msg->hdr.flags & VFU_F_NO_REPLY) {
            Error *err = NULL;

            error_setg(&err, "%s: too many requests while a call waits",
                       vfu_conn_name(c));
            vfu_conn_break(c, err);
            error_free(err);
        } else {
            vfu_conn_reply_error(c, msg, EBUSY, NULL);
        }
        vfu_msg_free(msg);
        return !vfu_conn_is_broken(c);
    }
    trace_vfio_user_deferred(vfu_conn_name(c), msg->hdr.msg_id,
                             vfu_command_name(msg->hdr.command));
    st->queued_bytes += msg->len;
    g_queue_push_tail(&st->queue, msg);
    return true;
}

static VfuMsg *srv_dequeue(VfuSrvState *st)
{
    VfuMsg *msg = g_queue_pop_head(&st->queue);

    if (msg) {
        st->queued_bytes -= msg->len;
    }
    return msg;
}

/*
 * Take @msg if it is the reply to an asynchronous call.  The client
 * answers in order, so it is normally the oldest; an error is kept for
 * vfu_srv_flush().
 */
static bool srv_async_reply(VfuSrvState *st, VfuMsg *msg)
{
    for (unsigned i = 0; i < st->async_count; i++) {
        unsigned slot = (st->async_head + i) % VFU_MAX_ASYNC;
        int err;

        if (st->async[slot].id != msg->hdr.msg_id ||
            st->async[slot].cmd != msg->hdr.command) {
            continue;
        }
        /* close the gap: the ones before it move up by one */
        for (unsigned j = i; j > 0; j--) {
            st->async[(st->async_head + j) % VFU_MAX_ASYNC] =
                st->async[(st->async_head + j - 1) % VFU_MAX_ASYNC];
        }
        err = (msg->hdr.flags & VFU_F_ERROR) ? -vfu_reply_errno(msg) : 0;
        st->async_head = (st->async_head + 1) % VFU_MAX_ASYNC;
        st->async_count--;
        if (!st->async_err) {
            st->async_err = -err;
        }
        trace_vfio_user_async_reply(vfu_conn_name(st->conn), msg->hdr.msg_id,
                                    vfu_command_name(msg->hdr.command), err,
                                    st->async_count);
        return true;
    }
    return false;
}

/* A reply nobody waits for (any more): asynchronous, or stray */
static void srv_other_reply(VfuSrvState *st, VfuMsg *msg)
{
    if (!srv_async_reply(st, msg)) {
        trace_vfio_user_stray_reply(vfu_conn_name(st->conn), msg->hdr.msg_id,
                                    vfu_command_name(msg->hdr.command));
    }
    vfu_msg_free(msg);
}

/* Run one request; nothing else runs meanwhile */
static void srv_run(VfuSrvState *st, VfuMsg *msg)
{
    st->running++;
    vfu_conn_handle_request(st->conn, msg);
    st->running--;
}

/*
 * The next request to run: the oldest queued one, else the next one from
 * the socket (replies are taken on the way).  NULL when there is none.
 */
static VfuMsg *srv_next(VfuSrvState *st)
{
    VfuMsg *msg = srv_dequeue(st);

    /* a client that sends nothing but replies gets a batch too */
    for (int n = 0; !msg && n < VFU_SRV_BATCH; n++) {
        if (vfu_conn_is_broken(st->conn) ||
            vfu_conn_recv(st->conn, &msg, false, NULL) <= 0) {
            return NULL;
        }
        if (vfu_msg_is_reply(msg)) {
            srv_other_reply(st, g_steal_pointer(&msg));
        }
    }
    return msg;
}

static int srv_result(VfuSrvState *st, Error **errp)
{
    VfuConn *c = st->conn;

    if (vfu_conn_is_broken(c)) {
        error_setg(errp, "%s: connection is closed (%s)", vfu_conn_name(c),
                   vfu_conn_broken_reason(c));
        return -1;
    }
    srv_kick(st);
    return 0;
}

int vfu_srv_serve(VfuConn *c, bool one_waited, Error **errp)
{
    VfuSrvState *st = srv_state(c);

    if (st->running) {
        /* the request up the stack goes on with the queue when it is done */
        return 0;
    }
    for (int n = 0; n < VFU_SRV_BATCH && !vfu_conn_is_broken(c); n++) {
        VfuMsg *msg = srv_next(st);
        bool waited;

        if (!msg) {
            break;
        }
        waited = !(msg->hdr.flags & VFU_F_NO_REPLY);
        srv_run(st, msg);
        if (waited && one_waited && g_queue_is_empty(&st->queue)) {
            break;
        }
    }
    return srv_result(st, errp);
}

int vfu_srv_drain(VfuConn *c, Error **errp)
{
    VfuSrvState *st = srv_state(c);
    uint64_t until;

    if (st->running) {
        return 0;
    }
    /* everything in the socket now came before the doorbell rang */
    until = vfu_conn_bytes_read(c) + vfu_conn_bytes_waiting(c);
    while (!vfu_conn_is_broken(c) &&
           (!g_queue_is_empty(&st->queue) ||
            vfu_conn_next_offset(c) < until)) {
        VfuMsg *msg = srv_next(st);

        if (!msg) {
            break;
        }
        srv_run(st, msg);
    }
    return srv_result(st, errp);
}

/*
 * Receive until the reply to @id arrives or, with @id < 0, until at most
 * @max_async asynchronous calls are pending.  The client's requests are
 * queued meanwhile.
 */
static int srv_await(VfuSrvState *st, uint16_t cmd, int id,
                     unsigned max_async, VfuMsg **reply, Error **errp)
{
    VfuConn *c = st->conn;
    int64_t deadline = vfu_conn_deadline(c);

    for (;;) {
        g_autoptr(VfuMsg) msg = NULL;
        Error *local_err = NULL;

        if (id < 0 && st->async_count <= max_async) {
            return 0;
        }
        if (vfu_conn_recv_until(c, &msg, true, deadline, &local_err) < 0) {
            error_propagate_prepend(errp, local_err, "%s: waiting for %s: ",
                                    vfu_conn_name(c), vfu_command_name(cmd));
            return -ECONNRESET;
        }
        if (!vfu_msg_is_reply(msg)) {
            if (!srv_enqueue(st, g_steal_pointer(&msg))) {
                error_setg(errp, "%s: connection dropped waiting for %s",
                           vfu_conn_name(c), vfu_command_name(cmd));
                return -ECONNRESET;
            }
        } else if (id >= 0 && msg->hdr.msg_id == id &&
                   msg->hdr.command == cmd) {
            *reply = g_steal_pointer(&msg);
            return 0;
        } else {
            srv_other_reply(st, g_steal_pointer(&msg));
        }
        /* a client that only ever sends requests or stray replies */
        if (vfu_conn_call_expired(c, cmd, deadline, errp)) {
            return -ETIMEDOUT;
        }
    }
}

int vfu_srv_call(VfuConn *c, uint16_t cmd, void *payload, size_t len,
                 VfuMsg **reply, Error **errp)
{
    VfuSrvState *st = srv_state(c);
    g_autoptr(VfuMsg) msg = NULL;
    uint16_t id = vfu_conn_next_id(c);
    int ret;

    if (reply) {
        *reply = NULL;
    }
    ret = vfu_conn_send(c, cmd, id, VFU_F_TYPE_COMMAND, 0, payload, len,
                        NULL, 0, errp);
    if (!ret) {
        ret = srv_await(st, cmd, id, 0, &msg, errp);
    }
    /* a call from outside a request (a timer's DMA) queued some */
    srv_kick(st);
    if (ret) {
        return ret;
    }
    return vfu_conn_take_reply(c, cmd, &msg, reply, errp);
}

int vfu_srv_call_async(VfuConn *c, uint16_t cmd, void *payload, size_t len,
                       Error **errp)
{
    VfuSrvState *st = srv_state(c);
    uint16_t id;
    unsigned slot;
    int ret;

    if (st->async_count == VFU_MAX_ASYNC) {
        /* the oldest must be answered first */
        ret = srv_await(st, cmd, -1, VFU_MAX_ASYNC - 1, NULL, errp);
        srv_kick(st);
        if (ret) {
            return ret;
        }
    }
    id = vfu_conn_next_id(c);
    ret = vfu_conn_send(c, cmd, id, VFU_F_TYPE_COMMAND, 0, payload, len,
                        NULL, 0, errp);
    if (ret) {
        return ret;
    }
    slot = (st->async_head + st->async_count) % VFU_MAX_ASYNC;
    st->async[slot].id = id;
    st->async[slot].cmd = cmd;
    st->async_count++;
    return 0;
}

int vfu_srv_flush(VfuConn *c, Error **errp)
{
    VfuSrvState *st = srv_state(c);
    int ret = 0;

    if (st->async_count) {
        ret = srv_await(st, st->async[st->async_head].cmd, -1, 0, NULL, errp);
        srv_kick(st);
    }
    if (!ret && st->async_err) {
        ret = st->async_err;
        error_setg(errp, "%s: an asynchronous request failed: %s",
                   vfu_conn_name(c), g_strerror(-ret));
    }
    st->async_err = 0;
    return ret;
}

/*
 * Make the twin socket the client asked for: our end in *@ours, the
 * client's in *@theirs.  False when we do without (traced).
 */
static bool srv_make_twin(VfuConn *c, int *ours, int *theirs)
{
    int sv[2];

    if (qemu_socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) {
        trace_vfio_user_twin_failed(vfu_conn_name(c), g_strerror(errno));
        return false;
    }
    *ours = sv[0];
    *theirs = sv[1];
    return true;
}

int vfu_srv_negotiate_twin(VfuConn *c, VfuMsg *req, int *twin_fd,
                           Error **errp)
{
    g_autofree void *answer = NULL;
    const VfuLimits *local = vfu_conn_local_limits(c);
    VfuLimits peer, ours = *local;
    uint16_t major, minor;
    int twin[2] = { -1, -1 };
    size_t len;
    int ret;

    if (twin_fd) {
        *twin_fd = -1;
    }
    if (req->hdr.command != VFU_CMD_VERSION || vfu_msg_is_reply(req)) {
        error_setg(errp, "%s: expected VERSION, got %s", vfu_conn_name(c),
                   vfu_command_name(req->hdr.command));
        vfu_conn_reply_error(c, req, EINVAL, NULL);
        return -EPROTO;
    }
    if (vfu_msg_decode(req, local, errp) ||
        !vfu_version_parse(req->payload, req->len, req->nfds, &major, &minor,
                           &peer, errp)) {
        error_prepend(errp, "%s: ", vfu_conn_name(c));
        vfu_conn_reply_error(c, req, EINVAL, NULL);
        return -EPROTO;
    }
    minor = MIN(minor, VFU_VERSION_MINOR);
    ours.write_multiple = ours.write_multiple && peer.write_multiple;
    peer.write_multiple = ours.write_multiple;
    /* the client's end travels as an fd: only to a client that takes one */
    ours.twin_socket = ours.twin_socket && twin_fd && peer.twin_socket &&
                       peer.max_msg_fds >= 1 &&
                       srv_make_twin(c, &twin[0], &twin[1]);
    ours.twin_fd_index = ours.twin_socket ? 0 : -1;
    peer.twin_socket = ours.twin_socket;
    vfu_conn_set_peer_limits(c, &peer);
    vfu_conn_set_version(c, major, minor);
    answer = vfu_version_encode(VFU_VERSION_MAJOR, minor, &ours, &len);
    trace_vfio_user_version(vfu_conn_name(c), major, minor, peer.max_msg_fds,
                            peer.max_data_xfer_size, peer.max_dma_maps,
                            peer.pgsizes);
    ret = vfu_conn_reply(c, req, answer, len, &twin[1],
                         ours.twin_socket ? 1 : 0, errp);
    if (twin[1] >= 0) {
        close(twin[1]);
    }
    if (ret) {
        if (twin[0] >= 0) {
            close(twin[0]);
        }
        return ret;
    }
    if (twin[0] >= 0) {
        trace_vfio_user_twin(vfu_conn_name(c), twin[0]);
        *twin_fd = twin[0];
    }
    return 0;
}

int vfu_srv_negotiate(VfuConn *c, VfuMsg *req, Error **errp)
{
    return vfu_srv_negotiate_twin(c, req, NULL, errp);
}
