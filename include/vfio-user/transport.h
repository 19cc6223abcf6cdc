/*
 * vfio-user transport: one connection's framing, fd passing, limits,
 * sending and receiving, the same for both sides.
 *
 * The transport has no role: it neither waits for replies nor decides
 * when a request of the peer runs.  That is the policy of each side, on
 * top of it: the client's (include/vfio-user/client.h) and the server's
 * (include/vfio-user/server.h).  Rules that both rely on:
 *
 * - A message is sent whole before the next one starts: a send that
 *   blocks marks the connection busy (vfu_conn_sending()) and a nested
 *   send on it fails instead of writing into the middle of it.
 * - Received bytes are buffered: one read takes a header and its payload,
 *   and often the messages after it.  Each received fd belongs to the
 *   message whose header came in the same read (peers send fds with the
 *   first bytes of a message), and is handed out with that message.
 * - Blocking happens only in vfu_conn_wait(), which a policy may replace
 *   (vfu_conn_set_wait_func()) to serve others while it waits.
 *
 * A VfuConn is not thread-safe; its owner serialises callers (the BQL).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef VFIO_USER_TRANSPORT_H
#define VFIO_USER_TRANSPORT_H

#include "io/channel.h"
#include "vfio-user/message.h"
#include "vfio-user/stats.h"

typedef struct VfuConn VfuConn;

#define VFU_DEFAULT_TIMEOUT_MS  5000
/* Received bytes buffered per connection; bigger messages read directly */
#define VFU_RX_BUF_SIZE         (64 * 1024)

/*
 * Serve a decoded request from the peer.  Returns 0 once the reply (if
 * one is due) was sent with vfu_conn_reply(), or a negative errno, which
 * vfu_conn_handle_request() sends back as an error reply.  @msg stays
 * owned by the caller; steal fds with vfu_msg_steal_fd() to keep them.
 */
typedef int (*VfuRequestFunc)(VfuConn *conn, VfuMsg *msg, void *opaque);

/*
 * Wait until the socket is ready for @events (G_IO_IN, G_IO_OUT) or
 * @deadline (ms, QEMU_CLOCK_REALTIME) passes.  Returns 0 when ready or
 * woken for another reason (the caller tries again), -ETIMEDOUT or -EIO
 * with @errp set.
 */
typedef int (*VfuWaitFunc)(VfuConn *conn, GIOCondition events,
                           int64_t deadline, void *opaque, Error **errp);

/* Takes a reference to @ioc; it must be an AF_UNIX QIOChannelSocket. */
VfuConn *vfu_conn_new(QIOChannel *ioc, const char *name,
                      const VfuLimits *local);
void vfu_conn_free(VfuConn *conn);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VfuConn, vfu_conn_free)

void vfu_conn_set_timeout(VfuConn *conn, int64_t timeout_ms);
int64_t vfu_conn_timeout(VfuConn *conn);
/* Now plus the timeout (ms, QEMU_CLOCK_REALTIME) */
int64_t vfu_conn_deadline(VfuConn *conn);

const VfuLimits *vfu_conn_peer_limits(VfuConn *conn);
const VfuLimits *vfu_conn_local_limits(VfuConn *conn);
void vfu_conn_set_peer_limits(VfuConn *conn, const VfuLimits *peer);
const char *vfu_conn_name(VfuConn *conn);
QIOChannel *vfu_conn_ioc(VfuConn *conn);
int vfu_conn_fd(VfuConn *conn);
uint16_t vfu_conn_next_id(VfuConn *conn);

/*
 * A policy's state, freed with the connection by @free_fn.  One policy
 * per connection: @kind (a string constant of the policy) says whose.
 */
void vfu_conn_set_policy(VfuConn *conn, const char *kind, void *state,
                         void (*free_fn)(void *state));
void *vfu_conn_policy(VfuConn *conn, const char *kind);
/* NULL: poll the socket alone (the default) */
void vfu_conn_set_wait_func(VfuConn *conn, VfuWaitFunc func, void *opaque);
int vfu_conn_wait(VfuConn *conn, GIOCondition events, int64_t deadline,
                  Error **errp);
/*
 * Poll @pfds, @n of them, until @deadline: a wait function's poll, which
 * counts a timeout on @conn.  Returns 0 (ready, or interrupted), or
 * -ETIMEDOUT / -EIO with @errp set.
 */
int vfu_conn_poll(VfuConn *conn, GPollFD *pfds, unsigned n, int64_t deadline,
                  Error **errp);
/*
 * A call of @cmd whose reply did not come by @deadline gives up, even
 * while the peer keeps the socket busy with other messages: true, with
 * the connection broken and @errp set.
 */
bool vfu_conn_call_expired(VfuConn *conn, uint16_t cmd, int64_t deadline,
                           Error **errp);

/* True once the connection failed (EOF, I/O error, protocol violation). */
bool vfu_conn_is_broken(VfuConn *conn);
/* Why it broke ("" while it is not), for monitor output */
const char *vfu_conn_broken_reason(VfuConn *conn);
/* Break the connection for @err (NULL: closed on this side) */
void vfu_conn_break(VfuConn *conn, Error *err);
/* Shut the socket down; every later call fails at once. */
void vfu_conn_shutdown(VfuConn *conn);
/* A message is being sent: nothing else may be sent on @conn now */
bool vfu_conn_sending(VfuConn *conn);

/*
 * Send one message, whole.  @payload is in host order; it is converted to
 * wire order in place for the write and restored before returning.  A
 * write that blocks waits with vfu_conn_wait() until @deadline (0: the
 * timeout from now); a timeout or error breaks the connection.
 */
int vfu_conn_send_until(VfuConn *conn, uint16_t cmd, uint16_t msg_id,
                        uint32_t flags, uint32_t error, void *payload,
                        size_t len, const int *fds, size_t nfds,
                        int64_t deadline, Error **errp);
int vfu_conn_send(VfuConn *conn, uint16_t cmd, uint16_t msg_id,
                  uint32_t flags, uint32_t error, void *payload, size_t len,
                  const int *fds, size_t nfds, Error **errp);

/*
 * Run @fn before each reply sent on @conn (NULL: none).  A side whose
 * own requests travel on another connection (twin_socket) flushes them
 * there first: the peer must not see a reply before what the request
 * did before it.
 */
typedef void (*VfuReplyBarrierFunc)(VfuConn *conn, void *opaque);
void vfu_conn_set_reply_barrier(VfuConn *conn, VfuReplyBarrierFunc fn,
                                void *opaque);

/* Reply to @req (no-op when @req asked for no reply). */
int vfu_conn_reply(VfuConn *conn, const VfuMsg *req, void *payload,
                   size_t len, const int *fds, size_t nfds, Error **errp);
int vfu_conn_reply_error(VfuConn *conn, const VfuMsg *req, int err,
                         Error **errp);
/* Send a request flagged No_reply. */
int vfu_conn_post(VfuConn *conn, uint16_t cmd, void *payload, size_t len,
                  Error **errp);

/*
 * Receive one framed message: header checked, payload and fds read, but
 * payload not decoded.  With @block, waits (vfu_conn_wait()) until
 * @deadline (0: the timeout from now); without, returns 0 when no
 * complete message is available yet (a partial one is kept for the next
 * call).  Returns 1 with *@msgp set, 0, or -1 on EOF, error or protocol
 * violation (the connection is then broken).
 */
int vfu_conn_recv_until(VfuConn *conn, VfuMsg **msgp, bool block,
                        int64_t deadline, Error **errp);
int vfu_conn_recv(VfuConn *conn, VfuMsg **msgp, bool block, Error **errp);

/* A complete message is buffered: vfu_conn_recv() returns it at once */
bool vfu_conn_has_message(VfuConn *conn);
/*
 * Bytes received so far, and bytes that have arrived in the socket but
 * were not read yet: with these a policy knows when it has taken
 * everything that came before a given moment.
 */
uint64_t vfu_conn_bytes_read(VfuConn *conn);
uint64_t vfu_conn_bytes_waiting(VfuConn *conn);
/* The stream offset of the first byte of the next message to receive */
uint64_t vfu_conn_next_offset(VfuConn *conn);

/*
 * Decode a request received with vfu_conn_recv(), run the request
 * function on it and send an error reply if that fails.  Frees @msg.
 * Returns 0 when the request was served, else a negative errno.
 */
void vfu_conn_set_request_func(VfuConn *conn, VfuRequestFunc func,
                               void *opaque);
int vfu_conn_handle_request(VfuConn *conn, VfuMsg *msg);

/* Turn an error reply into a negative errno (-EIO when it names none) */
int vfu_reply_errno(const VfuMsg *reply);
/*
 * The reply *@msgp to our @cmd: an error reply returns its negative
 * errno, else the payload is decoded and the reply moved to *@reply (if
 * not NULL).  @errp is set in every failure.
 */
int vfu_conn_take_reply(VfuConn *conn, uint16_t cmd, VfuMsg **msgp,
                        VfuMsg **reply, Error **errp);

/* The VERSION both sides agreed on; false before the handshake. */
bool vfu_conn_version(VfuConn *conn, uint16_t *major, uint16_t *minor);
void vfu_conn_set_version(VfuConn *conn, uint16_t major, uint16_t minor);

const VfuConnStats *vfu_conn_stats(VfuConn *conn);

/*
 * The peer process's credentials (SO_PEERCRED), taken when the
 * connection was made; false if the socket had none.
 */
bool vfu_conn_peer_cred(VfuConn *conn, int64_t *pid, int64_t *uid,
                        int64_t *gid);

#endif /* VFIO_USER_TRANSPORT_H */
