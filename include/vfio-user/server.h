/*
 * vfio-user server policy, on top of the transport (transport.h).
 *
 * The client's requests take effect strictly in the order they arrived.
 * They are queued and run one at a time, never nested: a request that is
 * running may wait for the client (a device's DMA_READ), and whatever
 * comes in meanwhile joins the queue behind the requests already there;
 * the queue is always worked off before the socket is read again.
 * DMA_WRITEs may be asynchronous (posted): their replies are collected
 * later, and vfu_srv_flush() waits for all of them before anything that
 * makes them visible to the guest (an interrupt).  See
 * docs/devel/vfio-user-connections.rst for the rules and a diagram.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef VFIO_USER_SERVER_H
#define VFIO_USER_SERVER_H

#include "vfio-user/transport.h"

/*
 * Requests queued behind a running one, in number and in payload bytes.
 * Past either, a request that wants a reply gets EBUSY and a No_reply one
 * breaks the connection: it cannot be refused, and dropping it silently
 * would lose a write.
 */
#define VFU_MAX_DEFERRED        4096    /* posted writes add up quickly */
#define VFU_MAX_DEFERRED_BYTES  (8 * 1024 * 1024)
/* Requests run at most per vfu_srv_serve(), so one client cannot starve */
#define VFU_SRV_BATCH           64
/* DMA_WRITEs in flight; past that, the oldest is waited for first */
#define VFU_MAX_ASYNC           64

/* The connection broke where it could not be dropped at once */
typedef void (*VfuSrvBrokenFunc)(VfuConn *conn, void *opaque);

/*
 * Serve @conn's requests (its request function) from this process's main
 * loop: requests queued while no request was running (DMA from a timer,
 * say) are run by a bottom half in the iohandler context, like the
 * socket handler, so that no nested aio_poll() runs them.  @broken is
 * told when that bottom half finds the connection broken.
 */
void vfu_srv_attach(VfuConn *conn, VfuSrvBrokenFunc broken, void *opaque);

/* VERSION: answer @req with the limits we accept, record the client's. */
int vfu_srv_negotiate(VfuConn *conn, VfuMsg *req, Error **errp);
/*
 * The same, and when both our limits and the client's proposal have
 * twin_socket (and @twin_fd is not NULL), make a socketpair and send the
 * client its end with the reply: *@twin_fd is then ours, for our
 * requests to the client (owned by the caller), else -1.
 */
int vfu_srv_negotiate_twin(VfuConn *conn, VfuMsg *req, int *twin_fd,
                           Error **errp);

/*
 * Run queued requests, then newly arrived ones, without blocking, at most
 * a batch.  With @one_waited, stop after a request the client waits for:
 * it is unlikely to have sent more, and the socket handler comes back if
 * it did.  Does nothing while a request is running.  Returns 0, or -1
 * with @errp set when the connection is broken.
 */
int vfu_srv_serve(VfuConn *conn, bool one_waited, Error **errp);

/*
 * Run everything that has arrived up to now (a doorbell rang: what the
 * client sent before it must take effect first), however much.
 */
int vfu_srv_drain(VfuConn *conn, Error **errp);

/* A request is running: the connection must not be freed now */
bool vfu_srv_busy(VfuConn *conn);

/*
 * Send a request to the client and wait for its reply; the client's
 * requests that come in meanwhile are queued.  Returns as
 * vfu_client_call() does.
 */
int vfu_srv_call(VfuConn *conn, uint16_t cmd, void *payload, size_t len,
                 VfuMsg **reply, Error **errp);

/*
 * Send a request whose reply is not waited for now: up to VFU_MAX_ASYNC
 * are in flight.  Their replies are taken whenever the connection
 * receives; vfu_srv_flush() waits for all of them and returns the first
 * error reply among them.  Unlike No_reply, the client still answers, so
 * failures are seen and we can know when the requests were carried out.
 */
int vfu_srv_call_async(VfuConn *conn, uint16_t cmd, void *payload,
                       size_t len, Error **errp);
int vfu_srv_flush(VfuConn *conn, Error **errp);
/* Asynchronous requests whose replies have not come yet */
unsigned vfu_srv_async_pending(VfuConn *conn);

#endif /* VFIO_USER_SERVER_H */
