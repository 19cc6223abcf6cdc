/*
 * vfio-user client policy, on top of the transport (transport.h).
 *
 * The client's requests are synchronous: the thread that sends one reads
 * the socket itself until its reply arrives, with no extra thread hop.
 * Meanwhile it serves the requests the server sends (DMA_READ and
 * DMA_WRITE: a device doing DMA while its BAR access is pending), right
 * away, since they only touch guest memory.  See
 * docs/devel/vfio-user-connections.rst for the rules and a diagram.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef VFIO_USER_CLIENT_H
#define VFIO_USER_CLIENT_H

#include "vfio-user/transport.h"

/* A call the server keeps busy with our memory ends after this many */
#define VFU_CALL_MAX_TIMEOUTS   12
/* Requests served at most per vfu_client_serve(), so one peer cannot starve */
#define VFU_SERVE_BATCH         64
/*
 * How deep waits may nest: a call that waits serves the other
 * connections of the wait group, whose replies may have to wait in turn.
 */
#define VFU_CLIENT_MAX_NESTING  4

/* The connection broke while served outside a call; @err says why */
typedef void (*VfuClientBrokenFunc)(VfuConn *conn, Error *err, void *opaque);

/*
 * Make @conn a client connection in this process's wait group: one
 * process may export several of our devices, and can sit in one device's
 * DMA request to us while we wait for its answer to another's access, so
 * a call that waits serves the requests of the other members too.  A
 * member is not served while it sends, waits for a reply or is being
 * served already.  Requests left over when a call returns are served
 * from a bottom half of the main loop; @broken is told if that breaks the
 * connection.  Used under the BQL.  vfu_conn_free() leaves the group.
 */
void vfu_client_attach(VfuConn *conn, VfuClientBrokenFunc broken,
                       void *opaque);

/*
 * Send a request and wait for its reply, serving the server's requests
 * that come in meanwhile.  The call fails when the peer is silent for the
 * timeout; requests of the peer that are served successfully count as
 * signs of life, but the whole call never takes more than
 * VFU_CALL_MAX_TIMEOUTS timeouts.  On success returns 0 and, if @reply is
 * not NULL, the decoded reply.  An error reply returns its negative
 * errno (-EIO when it gave none); a timeout or broken connection returns
 * -ECONNRESET / -ETIMEDOUT.  @errp is set in every failure.
 */
int vfu_client_call(VfuConn *conn, uint16_t cmd, void *payload, size_t len,
                    const int *fds, size_t nfds, VfuMsg **reply,
                    Error **errp);

/*
 * Serve the server's requests that have arrived, without blocking, at
 * most a batch: stray replies are dropped.  Returns 0, or -1 with @errp
 * set when the connection is broken.
 */
int vfu_client_serve(VfuConn *conn, Error **errp);

/* VERSION: propose our limits, record the server's. */
int vfu_client_negotiate(VfuConn *conn, Error **errp);
/*
 * The same, also proposing twin_socket when our limits say so.  When
 * the server returns one, *@twin_fd is the client's end of the twin
 * socket (checked: an AF_UNIX stream socket), owned by the caller, else
 * -1.  A reply that enables the twin with no valid fd fails.
 */
int vfu_client_negotiate_twin(VfuConn *conn, int *twin_fd, Error **errp);

#endif /* VFIO_USER_CLIENT_H */
