/*
 * vfio-user client policy: synchronous calls that serve the server's
 * requests while they wait, and the wait group.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/main-loop.h"
#include "qemu/queue.h"
#include "block/aio.h"
#include "vfio-user/client.h"
#include "vfio-user/socket.h"
#include "trace.h"

static const char vfu_client_kind[] = "client";

typedef struct VfuClientState VfuClientState;

struct VfuClientState {
    VfuConn *conn;
    bool in_group;
    QLIST_ENTRY(VfuClientState) next;
    bool awaiting;          /* in a call: it reads its own socket */
    bool serving;           /* its requests are being served */
    QEMUBH *bh;             /* requests left in the buffer after a call */
    VfuClientBrokenFunc broken;
    void *opaque;
    /* the poll set of a wait, kept from one wait to the next */
    GArray *pfds;
    GPtrArray *members;
};

/* See vfu_client_attach(); under the BQL only */
static QLIST_HEAD(, VfuClientState) wait_group =
    QLIST_HEAD_INITIALIZER(wait_group);
/* Waits currently serving another member, all connections together */
static unsigned client_nesting;

static void client_state_free(void *opaque)
{
    VfuClientState *st = opaque;

    if (st->in_group) {
        QLIST_REMOVE(st, next);
    }
    if (st->bh) {
        qemu_bh_delete(st->bh);
    }
    g_array_free(st->pfds, true);
    g_ptr_array_free(st->members, true);
    g_free(st);
}

static VfuClientState *client_state(VfuConn *c)
{
    VfuClientState *st = vfu_conn_policy(c, vfu_client_kind);

    if (!st) {
        st = g_new0(VfuClientState, 1);
        st->conn = c;
        st->pfds = g_array_new(false, false, sizeof(GPollFD));
        st->members = g_ptr_array_new();
        vfu_conn_set_policy(c, vfu_client_kind, st, client_state_free);
    }
    return st;
}

static bool client_busy(VfuClientState *st)
{
    return st->awaiting || st->serving || vfu_conn_sending(st->conn) ||
           vfu_conn_is_broken(st->conn);
}

static void client_kick(VfuClientState *st)
{
    if (st->bh && vfu_conn_has_message(st->conn)) {
        qemu_bh_schedule(st->bh);
    }
}

/* Serve another member of the wait group from inside a wait */
static void client_serve_member(VfuClientState *o)
{
    client_nesting++;
    /* a failure breaks that one; its owner sees it at its next use */
    vfu_client_serve(o->conn, NULL);
    client_nesting--;
    if (vfu_conn_is_broken(o->conn) && o->bh) {
        qemu_bh_schedule(o->bh);
    }
}

/*
 * The wait of a wait group member: its own socket, and the sockets of the
 * members that can be served now.  Returns after serving any of them, so
 * that the caller tries its own read or write again.
 */
static int client_wait(VfuConn *c, GIOCondition events, int64_t deadline,
                       void *opaque, Error **errp)
{
    VfuClientState *st = opaque;
    GPollFD own = { .fd = vfu_conn_fd(c), .events = events };
    VfuClientState *o;
    int r;

    g_array_set_size(st->pfds, 0);
    g_array_append_val(st->pfds, own);
    g_ptr_array_set_size(st->members, 0);
    g_ptr_array_add(st->members, st);
    if (client_nesting < VFU_CLIENT_MAX_NESTING) {
        QLIST_FOREACH(o, &wait_group, next) {
            GPollFD pfd = { .fd = vfu_conn_fd(o->conn), .events = G_IO_IN };

            if (o == st || client_busy(o)) {
                continue;
            }
            /* read ahead earlier: its socket may have nothing more */
            if (vfu_conn_has_message(o->conn)) {
                client_serve_member(o);
                return 0;
            }
            g_array_append_val(st->pfds, pfd);
            g_ptr_array_add(st->members, o);
        }
    }

    r = vfu_conn_poll(c, (GPollFD *)st->pfds->data, st->pfds->len, deadline,
                      errp);
    if (r < 0) {
        return r;
    }
    /* a member served here that must wait polls with a set of its own */
    for (guint i = st->pfds->len; i-- > 1;) {
        if (g_array_index(st->pfds, GPollFD, i).revents) {
            o = g_ptr_array_index(st->members, i);
            if (!client_busy(o)) {
                client_serve_member(o);
            }
        }
    }
    return 0;
}

static void client_bh(void *opaque)
{
    VfuClientState *st = opaque;
    Error *err = NULL;

    if (vfu_client_serve(st->conn, &err) < 0 && st->broken) {
        st->broken(st->conn, err, st->opaque);
    }
    error_free(err);
}

void vfu_client_attach(VfuConn *c, VfuClientBrokenFunc broken, void *opaque)
{
    VfuClientState *st = client_state(c);

    if (!st->in_group) {
        st->in_group = true;
        QLIST_INSERT_HEAD(&wait_group, st, next);
        vfu_conn_set_wait_func(c, client_wait, st);
    }
    st->broken = broken;
    st->opaque = opaque;
    if (!st->bh) {
        /* like the socket handler: not run by a nested aio_poll() */
        st->bh = aio_bh_new(iohandler_get_aio_context(), client_bh, st);
    }
}

int vfu_client_serve(VfuConn *c, Error **errp)
{
    VfuClientState *st = client_state(c);
    bool was_serving = st->serving;

    if (st->awaiting || vfu_conn_sending(c)) {
        /* the call up the stack reads the socket and serves them */
        return 0;
    }
    st->serving = true;
    for (int n = 0; n < VFU_SERVE_BATCH && !vfu_conn_is_broken(c); n++) {
        VfuMsg *msg;
        int r = vfu_conn_recv(c, &msg, false, NULL);

        if (r <= 0) {
            break;
        }
        if (vfu_msg_is_reply(msg)) {
            trace_vfio_user_stray_reply(vfu_conn_name(c), msg->hdr.msg_id,
                                        vfu_command_name(msg->hdr.command));
            vfu_msg_free(msg);
            continue;
        }
        vfu_conn_handle_request(c, msg);
    }
    st->serving = was_serving;
    if (vfu_conn_is_broken(c)) {
        error_setg(errp, "%s: connection is closed (%s)", vfu_conn_name(c),
                   vfu_conn_broken_reason(c));
        return -1;
    }
    client_kick(st);
    return 0;
}

/*
 * Receive until the reply to @id arrives, serving the server's requests.
 * A server that works on our request may need our memory for it (a
 * device running a script it fetches by DMA): each of its requests that
 * we serve successfully is a sign of life and moves @deadline to a
 * timeout from then on, up to VFU_CALL_MAX_TIMEOUTS timeouts in all.
 */
static int client_await(VfuConn *c, uint16_t cmd, uint16_t id,
                        int64_t deadline, VfuMsg **reply, Error **errp)
{
    int64_t last = deadline +
                   (VFU_CALL_MAX_TIMEOUTS - 1) * vfu_conn_timeout(c);

    /*
     * A reply we just asked for is not there yet: sleep first instead of
     * trying a read that fails (a syscall is not free).
     */
    if (!vfu_conn_has_message(c)) {
        Error *local_err = NULL;

        if (vfu_conn_wait(c, G_IO_IN, deadline, &local_err) < 0) {
            vfu_conn_break(c, local_err);
            error_propagate_prepend(errp, local_err, "%s: waiting for %s: ",
                                    vfu_conn_name(c), vfu_command_name(cmd));
            return -ECONNRESET;
        }
    }
    for (;;) {
        g_autoptr(VfuMsg) msg = NULL;
        Error *local_err = NULL;

        if (vfu_conn_recv_until(c, &msg, true, deadline, &local_err) < 0) {
            error_propagate_prepend(errp, local_err, "%s: waiting for %s: ",
                                    vfu_conn_name(c), vfu_command_name(cmd));
            return -ECONNRESET;
        }
        if (!vfu_msg_is_reply(msg)) {
            if (!vfu_conn_handle_request(c, g_steal_pointer(&msg))) {
                deadline = MIN(vfu_conn_deadline(c), last);
            }
            if (vfu_conn_is_broken(c)) {
                error_setg(errp, "%s: connection lost waiting for %s",
                           vfu_conn_name(c), vfu_command_name(cmd));
                return -ECONNRESET;
            }
        } else if (msg->hdr.msg_id == id && msg->hdr.command == cmd) {
            *reply = g_steal_pointer(&msg);
            return 0;
        } else {
            /* e.g. a peer answering a No_reply write: drop it */
            trace_vfio_user_stray_reply(vfu_conn_name(c), msg->hdr.msg_id,
                                        vfu_command_name(msg->hdr.command));
        }
        /* a peer that only ever sends requests or stray replies */
        if (vfu_conn_call_expired(c, cmd, deadline, errp)) {
            return -ETIMEDOUT;
        }
    }
}

int vfu_client_call(VfuConn *c, uint16_t cmd, void *payload, size_t len,
                    const int *fds, size_t nfds, VfuMsg **reply, Error **errp)
{
    VfuClientState *st = client_state(c);
    g_autoptr(VfuMsg) msg = NULL;
    int64_t deadline = vfu_conn_deadline(c);
    uint16_t id;
    int ret;

    if (reply) {
        *reply = NULL;
    }
    if (st->awaiting || vfu_conn_sending(c)) {
        /* e.g. a DMA of this device into its own BAR */
        error_setg(errp, "%s: %s while a call is in progress",
                   vfu_conn_name(c), vfu_command_name(cmd));
        return -EBUSY;
    }
    id = vfu_conn_next_id(c);
    st->awaiting = true;
    ret = vfu_conn_send_until(c, cmd, id, VFU_F_TYPE_COMMAND, 0, payload, len,
                              fds, nfds, deadline, errp);
    if (!ret) {
        ret = client_await(c, cmd, id, deadline, &msg, errp);
    }
    st->awaiting = false;
    if (ret) {
        return ret;
    }
    /* the server's requests read along with the reply */
    client_kick(st);
    return vfu_conn_take_reply(c, cmd, &msg, reply, errp);
}

/*
 * The client's end of the twin socket it returned with VERSION: checked
 * and taken out of @reply (-1 without a twin).
 */
static int client_take_twin(VfuConn *c, VfuMsg *reply, const VfuLimits *peer,
                            bool proposed, Error **errp)
{
    int idx = peer->twin_fd_index;
    int fd;

    if (!peer->twin_socket) {
        return -1;
    }
    if (!proposed) {
        error_setg(errp, "%s: server enabled %s, which was not proposed",
                   vfu_conn_name(c), VFU_CAP_TWIN_SOCKET);
        return -EPROTO;
    }
    if (idx < 0) {
        error_setg(errp, "%s: server enabled %s without an %s",
                   vfu_conn_name(c), VFU_CAP_TWIN_SOCKET,
                   VFU_CAP_TWIN_FD_INDEX);
        return -EPROTO;
    }
    /* vfu_version_parse() checked that the index names an fd */
    if (!vfu_fd_is_unix_stream(reply->fds[idx])) {
        error_setg(errp, "%s: the %s fd is not a UNIX stream socket",
                   vfu_conn_name(c), VFU_CAP_TWIN_SOCKET);
        return -EPROTO;
    }
    fd = vfu_msg_steal_fd(reply, idx);
    trace_vfio_user_twin(vfu_conn_name(c), fd);
    return fd;
}

int vfu_client_negotiate_twin(VfuConn *c, int *twin_fd, Error **errp)
{
    g_autofree void *proposal = NULL;
    g_autoptr(VfuMsg) reply = NULL;
    VfuLimits local = *vfu_conn_local_limits(c);
    VfuLimits peer;
    uint16_t major, minor;
    size_t len;
    int ret;

    if (twin_fd) {
        *twin_fd = -1;
    }
    /* without a place to put it, we cannot take a twin */
    local.twin_socket = local.twin_socket && twin_fd;
    local.twin_fd_index = -1;
    proposal = vfu_version_encode(VFU_VERSION_MAJOR, VFU_VERSION_MINOR,
                                  &local, &len);
    ret = vfu_client_call(c, VFU_CMD_VERSION, proposal, len, NULL, 0, &reply,
                          errp);
    if (ret) {
        return ret;
    }
    if (!vfu_version_parse(reply->payload, reply->len, reply->nfds, &major,
                           &minor, &peer, errp)) {
        error_prepend(errp, "%s: ", vfu_conn_name(c));
        return -EPROTO;
    }
    if (minor > VFU_VERSION_MINOR) {
        error_setg(errp, "%s: server answered version %u.%u, newer than the "
                   "proposed %u.%u", vfu_conn_name(c), major, minor,
                   VFU_VERSION_MAJOR, VFU_VERSION_MINOR);
        return -EPROTO;
    }
    ret = client_take_twin(c, reply, &peer, local.twin_socket, errp);
    if (ret < -1) {
        return ret;
    }
    if (twin_fd) {
        *twin_fd = ret;
    }
    /* we never propose write_multiple, so the server may not enable it */
    peer.write_multiple = peer.write_multiple && local.write_multiple;
    vfu_conn_set_peer_limits(c, &peer);
    vfu_conn_set_version(c, major, minor);
    trace_vfio_user_version(vfu_conn_name(c), major, minor, peer.max_msg_fds,
                            peer.max_data_xfer_size, peer.max_dma_maps,
                            peer.pgsizes);
    return 0;
}

int vfu_client_negotiate(VfuConn *c, Error **errp)
{
    return vfu_client_negotiate_twin(c, NULL, errp);
}
