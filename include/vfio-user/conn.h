/*
 * vfio-user connection: framing, fd passing and request/reply matching on
 * a UNIX socket QIOChannel.  Shared by the client and the server.
 *
 * The connection is synchronous by design: the thread that sends a
 * request reads the socket itself until its reply arrives, serving any
 * request the peer sends meanwhile (a device doing DMA while its BAR
 * write is pending).  No extra thread hop is on that path.  A VfuConn is
 * not thread-safe; its owner serialises callers.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef VFIO_USER_CONN_H
#define VFIO_USER_CONN_H

#include "io/channel.h"
#include "qapi/qapi-types-sockets.h"
#include "vfio-user/message.h"

typedef struct VfuConn VfuConn;

/*
 * Serve a decoded request from the peer.  Returns 0 once the reply (if
 * one is due) was sent with vfu_conn_reply(), or a negative errno, which
 * the connection sends back as an error reply.  @msg stays owned by the
 * connection; steal fds with vfu_msg_steal_fd() to keep them.
 */
typedef int (*VfuRequestFunc)(VfuConn *conn, VfuMsg *msg, void *opaque);

#define VFU_DEFAULT_TIMEOUT_MS  5000
/* A call the peer keeps busy with our memory ends after this many */
#define VFU_CALL_MAX_TIMEOUTS   12

/*
 * Requests from the peer kept while a call waits (see
 * vfu_conn_set_defer_func()), in number and in payload bytes.  Past
 * either, a request that wants a reply gets EBUSY and a No_reply one
 * breaks the connection: it cannot be refused, and dropping it silently
 * would lose a write.
 */
#define VFU_MAX_DEFERRED        4096    /* posted writes add up quickly */
#define VFU_MAX_DEFERRED_BYTES  (8 * 1024 * 1024)

/* Takes a reference to @ioc; it must be an AF_UNIX QIOChannelSocket. */
VfuConn *vfu_conn_new(QIOChannel *ioc, const char *name,
                      const VfuLimits *local);
void vfu_conn_free(VfuConn *conn);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VfuConn, vfu_conn_free)

void vfu_conn_set_request_func(VfuConn *conn, VfuRequestFunc func,
                               void *opaque);
void vfu_conn_set_timeout(VfuConn *conn, int64_t timeout_ms);

/*
 * Connections of one process whose peers may need each other: a server
 * process can sit in one device's DMA request to us while we wait for
 * its answer to another device's access, so while one member of the
 * group waits for its peer, the requests of the others are served too.
 * For connections that serve requests inline (no defer function: the
 * client's, whose requests only touch guest RAM); used under the BQL.
 * vfu_conn_free() leaves the group.
 */
void vfu_conn_join_wait_group(VfuConn *conn);

/* Messages taken at most per vfu_conn_serve(), so one peer cannot starve */
#define VFU_SERVE_BATCH         64

/*
 * Serve the peer's requests that have arrived, without blocking: stray
 * replies are dropped.  With @one_waited, stop after a request the peer
 * waits for: it is unlikely to have sent more, and the caller's fd
 * handler comes back if it did.  Returns 0, or -1 with @errp set when
 * the connection is broken.
 */
int vfu_conn_serve(VfuConn *conn, bool one_waited, Error **errp);

/*
 * Keep requests that arrive while vfu_conn_call() waits instead of
 * serving them inline; @func is told each time one is kept, and the
 * owner serves them later, in order, with vfu_conn_take_deferred().  A
 * server needs this: the device is busy in the access that made it call
 * the client, and must not be entered again from inside it.
 */
typedef void (*VfuDeferFunc)(VfuConn *conn, void *opaque);
void vfu_conn_set_defer_func(VfuConn *conn, VfuDeferFunc func, void *opaque);
VfuMsg *vfu_conn_take_deferred(VfuConn *conn);
const VfuLimits *vfu_conn_peer_limits(VfuConn *conn);
const VfuLimits *vfu_conn_local_limits(VfuConn *conn);
void vfu_conn_set_peer_limits(VfuConn *conn, const VfuLimits *peer);
const char *vfu_conn_name(VfuConn *conn);
QIOChannel *vfu_conn_ioc(VfuConn *conn);

/* True once the connection failed (EOF, I/O error, protocol violation). */
bool vfu_conn_is_broken(VfuConn *conn);
/* Why it broke ("" while it is not), for monitor output */
const char *vfu_conn_broken_reason(VfuConn *conn);
/* Shut the socket down; every later call fails at once. */
void vfu_conn_shutdown(VfuConn *conn);

/*
 * Send one message.  @payload is in host order; it is converted to wire
 * order in place for the write and restored before returning.
 */
int vfu_conn_send(VfuConn *conn, uint16_t cmd, uint16_t msg_id,
                  uint32_t flags, uint32_t error, void *payload, size_t len,
                  const int *fds, size_t nfds, Error **errp);

/* Reply to @req (no-op when @req asked for no reply). */
int vfu_conn_reply(VfuConn *conn, const VfuMsg *req, void *payload,
                   size_t len, const int *fds, size_t nfds, Error **errp);
int vfu_conn_reply_error(VfuConn *conn, const VfuMsg *req, int err,
                         Error **errp);

/*
 * Receive one framed message: header checked, payload and fds read, but
 * payload not decoded.  With @block, waits up to the timeout; without,
 * returns 0 when no complete message is available yet (a partial one is
 * kept for the next call).  Returns 1 with *@msgp set, 0, or -1 on EOF,
 * error or protocol violation (the connection is then broken).
 */
int vfu_conn_recv(VfuConn *conn, VfuMsg **msgp, bool block, Error **errp);

/*
 * Decode a request received with vfu_conn_recv(), run the request
 * function on it and send an error reply if that fails.  Frees @msg.
 * Returns 0 when the request was served, else a negative errno.
 */
int vfu_conn_handle_request(VfuConn *conn, VfuMsg *msg);

/*
 * Send a request and wait for its reply, serving peer requests that come
 * in meanwhile.  The call fails when the peer is silent for the timeout;
 * requests of the peer that are served successfully count as signs of
 * life, but the whole call never takes more than VFU_CALL_MAX_TIMEOUTS
 * timeouts.  Requests that are kept for later (see
 * vfu_conn_set_defer_func()) or fail do not count.
 * On success returns 0 and, if @reply is not NULL, the decoded reply.
 * An error reply from the peer returns its negative errno (-EIO when it
 * gave none); a timeout or broken connection returns -ECONNRESET /
 * -ETIMEDOUT.  @errp is set in every failure.
 */
int vfu_conn_call(VfuConn *conn, uint16_t cmd, void *payload, size_t len,
                  const int *fds, size_t nfds, VfuMsg **reply, Error **errp);

/*
 * Send a request whose reply is not waited for now: up to VFU_MAX_ASYNC
 * are in flight (past that, the oldest is waited for first).  Their
 * replies are taken whenever the connection receives; vfu_conn_flush()
 * waits for all of them and returns the first error reply among them.
 * Unlike No_reply, the peer still answers, so failures are seen and
 * the caller can know when the requests were carried out.
 */
#define VFU_MAX_ASYNC           64
int vfu_conn_call_async(VfuConn *conn, uint16_t cmd, void *payload,
                        size_t len, Error **errp);
int vfu_conn_flush(VfuConn *conn, Error **errp);

/* Send a request flagged No_reply. */
int vfu_conn_post(VfuConn *conn, uint16_t cmd, void *payload, size_t len,
                  Error **errp);

/*
 * VERSION handshake.  The client proposes its local limits and records
 * the server's; the server answers @req (a VERSION request) with the
 * limits it accepts and records the client's.
 */
int vfu_conn_negotiate_client(VfuConn *conn, Error **errp);
int vfu_conn_negotiate_server(VfuConn *conn, VfuMsg *req, Error **errp);

/*
 * Shared memory received from the peer.  A peer that shrinks the file
 * behind our mapping makes the next access fault (SIGBUS), so a side that
 * does not trust its peer maps only files sealed against shrinking.
 */
bool vfu_fd_is_shrink_sealed(int fd);
/* @fd is a regular file (or memfd) of at least @end bytes. */
bool vfu_fd_check_file(int fd, uint64_t end, Error **errp);
/*
 * @fd is an eventfd.  A peer's fd that QEMU writes or polls must be one:
 * a pipe could block a write, or stay readable for good and make the
 * main loop spin.
 */
bool vfu_fd_is_eventfd(int fd);
/* @fd is an AF_UNIX stream socket: the only kind that carries fds. */
bool vfu_fd_is_unix_stream(int fd);

/*
 * What went over a connection, for the monitor (x-query-vfio-user).
 * Plain counters bumped where messages pass: a VfuConn is used by one
 * thread at a time anyway.  Index 0 of the per-command arrays counts
 * commands we do not know.
 */
typedef struct VfuConnStats {
    uint64_t requests_sent[VFU_CMD_MAX + 1];
    uint64_t requests_received[VFU_CMD_MAX + 1];
    uint64_t replies_sent;
    uint64_t replies_received;
    uint64_t error_replies_sent;
    uint64_t error_replies_received;
    /* data bytes asked for by DMA_READ / carried by DMA_WRITE requests */
    uint64_t dma_read_bytes;
    uint64_t dma_write_bytes;
    uint64_t timeouts;
    uint64_t bytes_sent;
    uint64_t bytes_received;
} VfuConnStats;

const VfuConnStats *vfu_conn_stats(VfuConn *conn);

/* The VERSION both sides agreed on; false before the handshake. */
bool vfu_conn_version(VfuConn *conn, uint16_t *major, uint16_t *minor);

/*
 * The peer process's credentials (SO_PEERCRED), taken when the
 * connection was made; false if the socket had none.
 */
bool vfu_conn_peer_cred(VfuConn *conn, int64_t *pid, int64_t *uid,
                        int64_t *gid);

/*
 * Visit a "socket" property of either side: a path, as a plain string,
 * or a SocketAddress of type unix or fd (JSON, dotted keys).  Returns the
 * address, its name for messages (the path, or "fd:NAME") in *@display.
 */
SocketAddress *vfu_visit_socket(Visitor *v, const char *name,
                                char **display, Error **errp);
/* The getter's side: @addr, or "" while it is unset. */
void vfu_visit_socket_out(Visitor *v, const char *name, SocketAddress **addr,
                          Error **errp);

#endif /* VFIO_USER_CONN_H */
