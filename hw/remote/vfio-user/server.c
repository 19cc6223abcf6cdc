/*
 * vfio-user-server: export one PCI device of the remote machine over a
 * vfio-user UNIX socket, to one client at a time.
 *
 *   -object vfio-user-server,id=v0,socket=/run/n0.sock,device=n0
 *
 * Everything runs in the main loop with the BQL held: the listening and
 * client sockets are watched there, requests are served to completion,
 * in order, and a device's DMA to client memory without an fd is a
 * DMA_READ/DMA_WRITE round trip (the server policy, vfio-user/server.c,
 * queues client requests that arrive meanwhile).  This file has the
 * sockets and the object's life cycle; dispatch.c the requests and DMA
 * to the client; bars.c the windows on the device's BARs.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qapi/visitor.h"
#include "qemu/error-report.h"
#include "qemu/main-loop.h"
#include "qemu/timer.h"
#include "qom/object.h"
#include "qom/object_interfaces.h"
#include "sysemu/sysemu.h"
#include "sysemu/runstate.h"
#include "io/channel-socket.h"
#include "qemu/cutils.h"
#include "qemu/sockets.h"
#include "hw/qdev-core.h"
#include "hw/pci/pci.h"
#include "vfio-user/server.h"
#include "vfio-user/socket.h"
#include "hw/remote/vfio-user/remote.h"
#include "server-internal.h"
#include "trace.h"

/* ---- sockets -------------------------------------------------------------- */

static gboolean vfu_server_accept(QIOChannel *ioc, GIOCondition cond,
                                  gpointer opaque);

static void vfu_server_listen_watch(VfuServer *s)
{
    if (s->listener && !s->listen_tag) {
        s->listen_tag = qio_channel_add_watch(QIO_CHANNEL(s->listener),
                                              G_IO_IN, vfu_server_accept,
                                              s, NULL);
    }
}

/*
 * Forget the client: its interrupts, its DMA mappings and whatever state
 * it left in the device.
 */
static void vfu_server_drop_client(VfuServer *s, bool relisten)
{
    VfuConn *gone;

    if (!s->conn) {
        return;
    }
    if (vfu_srv_busy(s->conn) || (s->twin && vfu_srv_busy(s->twin))) {
        /*
         * Not with a request on the stack, which still uses the device
         * and the connection: the socket handler sees the connection
         * closed once the request is done.
         */
        vfu_conn_shutdown(s->conn);
        if (s->twin) {
            vfu_conn_shutdown(s->twin);
        }
        return;
    }
    trace_vfio_user_srv_disconnect(vfu_server_id(s));
    /* the twin may be the one that saw the client go */
    gone = s->twin && vfu_conn_is_broken(s->twin) &&
           !vfu_conn_is_broken(s->conn) ? s->twin : s->conn;
    vfu_server_info_client_gone(OBJECT(s), gone,
                                relisten ? "dropped by the server"
                                         : "the server stopped");
    if (s->client_watched) {
        /* fine from the handler itself */
        qio_channel_set_aio_fd_handler(vfu_conn_ioc(s->conn),
                                       iohandler_get_aio_context(),
                                       NULL, NULL, NULL);
        s->client_watched = false;
    }
    if (s->twin) {
        qio_channel_set_aio_fd_handler(vfu_conn_ioc(s->twin),
                                       iohandler_get_aio_context(),
                                       NULL, NULL, NULL);
        vfu_conn_shutdown(s->twin);
    }
    vfu_conn_shutdown(s->conn);
    vfu_dma_space_set_peer(s->dma, NULL, NULL);
    vfu_irqs_reset(s->irqs);
    vfu_iofds_reset(s->iofds);
    trace_vfio_user_srv_reset(vfu_server_id(s), "disconnect");
    pci_device_reset(s->pdev);
    vfu_server_place_bars(s, false);
    memset(s->bar_regs, 0, sizeof(s->bar_regs));
    vfu_dma_space_unmap_all(s->dma);
    if (s->handshake_timer) {
        timer_del(s->handshake_timer);
    }
    g_clear_pointer(&s->twin, vfu_conn_free);
    vfu_conn_free(s->conn);
    s->conn = NULL;
    if (relisten) {
        vfu_server_listen_watch(s);
    }
}

/* The request queue's bottom half found the connection broken */
static void vfu_server_conn_broken(VfuConn *conn, void *opaque)
{
    vfu_server_drop_client(opaque, true);
}

/* The twin carries our requests only: the client's get an error */
static int vfu_server_twin_request(VfuConn *conn, VfuMsg *msg, void *opaque)
{
    VfuServer *s = opaque;

    trace_vfio_user_srv_twin_request(vfu_server_id(s), msg->hdr.msg_id,
                                     vfu_command_name(msg->hdr.command));
    return -EINVAL;
}

/* Replies to our DMA requests, or the client closed the twin */
static void vfu_server_twin_read(void *opaque)
{
    VfuServer *s = opaque;
    Error *err = NULL;

    if (s->twin && vfu_srv_serve(s->twin, false, &err) < 0) {
        trace_vfio_user_srv_client_error(vfu_server_id(s),
                                         error_get_pretty(err));
        error_free(err);
        vfu_server_drop_client(s, true);
    }
}

/*
 * The client took the twin socket (our end: @fd): our DMA requests go
 * there, with the main connection's limits.
 */
static bool vfu_server_twin_start(VfuServer *s, int fd, Error **errp)
{
    g_autoptr(QIOChannelSocket) sioc = qio_channel_socket_new_fd(fd, errp);
    g_autofree char *name = NULL;

    if (!sioc) {
        close(fd);
        return false;
    }
    name = g_strdup_printf("vfio-user-server %s dma", vfu_server_id(s));
    qio_channel_set_name(QIO_CHANNEL(sioc), name);
    s->twin = vfu_conn_new(QIO_CHANNEL(sioc), name,
                           vfu_conn_local_limits(s->conn));
    vfu_conn_set_peer_limits(s->twin, vfu_conn_peer_limits(s->conn));
    vfu_conn_set_timeout(s->twin, s->timeout_ms);
    vfu_conn_set_request_func(s->twin, vfu_server_twin_request, s);
    vfu_srv_attach(s->twin, vfu_server_conn_broken, s);
    vfu_conn_set_reply_barrier(s->conn, vfu_server_reply_barrier, s);
    qio_channel_set_aio_fd_handler(QIO_CHANNEL(sioc),
                                   iohandler_get_aio_context(),
                                   vfu_server_twin_read, NULL, s);
    return true;
}

/* The client's first message must be VERSION; false: drop the client. */
static bool vfu_server_negotiate(VfuServer *s)
{
    g_autoptr(VfuMsg) msg = NULL;
    Error *err = NULL;
    int r = vfu_conn_recv(s->conn, &msg, false, &err);
    int twin_fd = -1;

    if (r == 0) {
        return true;
    }
    if (r > 0 && vfu_srv_negotiate_twin(s->conn, msg, &twin_fd, &err) == 0 &&
        (twin_fd < 0 || vfu_server_twin_start(s, twin_fd, &err))) {
        timer_del(s->handshake_timer);
        vfu_dma_space_set_peer(s->dma, vfu_server_dma_peer, s);
        return true;
    }
    trace_vfio_user_srv_client_error(vfu_server_id(s),
                                     err ? error_get_pretty(err) : "");
    error_free(err);
    vfu_conn_shutdown(s->conn);
    return false;
}

/*
 * Serve what the client sent: at most a batch, stopping after a request
 * that the client waits for (see vfu_srv_serve()), or with @drain (a
 * doorbell rang) everything that had arrived (vfu_srv_drain()).
 * Returns false when the connection is broken and the client must be
 * dropped.
 */
static bool vfu_server_serve_pending(VfuServer *s, bool drain)
{
    Error *err = NULL;
    int r;

    if (!s->conn || vfu_conn_is_broken(s->conn)) {
        return false;
    }
    if (!vfu_server_negotiated(s)) {
        if (!vfu_server_negotiate(s)) {
            return false;
        }
        if (!vfu_server_negotiated(s)) {
            return true;
        }
        /* what came behind VERSION may be in the buffer already */
    }
    r = drain ? vfu_srv_drain(s->conn, &err)
              : vfu_srv_serve(s->conn, true, &err);
    if (r < 0) {
        trace_vfio_user_srv_client_error(vfu_server_id(s),
                                         error_get_pretty(err));
        error_free(err);
        return false;
    }
    return true;
}

/* The client's VERSION did not come within the timeout: next client. */
static void vfu_server_handshake_timeout(void *opaque)
{
    VfuServer *s = opaque;

    if (s->conn && !vfu_server_negotiated(s)) {
        trace_vfio_user_srv_client_error(vfu_server_id(s),
                                         "no VERSION within the timeout");
        vfu_server_drop_client(s, true);
    }
}

static void vfu_server_client_read(void *opaque)
{
    VfuServer *s = opaque;

    if (!vfu_server_serve_pending(s, false)) {
        vfu_server_drop_client(s, true);
    }
}

/* A doorbell rang: what the client wrote before it must be served first. */
static void vfu_server_flush_client(void *opaque)
{
    VfuServer *s = opaque;

    if (s->conn && !vfu_server_serve_pending(s, true)) {
        vfu_server_drop_client(s, true);
    }
}

/*
 * allowed-uid/allowed-gid: whoever can reach the socket may still not be
 * the one meant to drive the device (SO_PEERCRED: the peer's credentials
 * when it connected, kept by the kernel, so they cannot be forged).
 */
static bool vfu_server_peer_allowed(VfuServer *s, VfuConn *conn)
{
    int64_t pid, uid, gid;

    if (s->allowed_uid == VFU_ANY_ID && s->allowed_gid == VFU_ANY_ID) {
        return true;
    }
    if (!vfu_conn_peer_cred(conn, &pid, &uid, &gid)) {
        warn_report("vfio-user-server '%s': cannot get a client's "
                    "credentials: dropped", vfu_server_id(s));
        return false;
    }
    if ((s->allowed_uid != VFU_ANY_ID && uid != s->allowed_uid) ||
        (s->allowed_gid != VFU_ANY_ID && gid != s->allowed_gid)) {
        trace_vfio_user_srv_refused(vfu_server_id(s), uid, gid, pid);
        warn_report("vfio-user-server '%s': refused a client running as "
                    "uid %" PRId64 " gid %" PRId64 " (pid %" PRId64 ")",
                    vfu_server_id(s), uid, gid, pid);
        return false;
    }
    return true;
}

static gboolean vfu_server_accept(QIOChannel *ioc, GIOCondition cond,
                                  gpointer opaque)
{
    VfuServer *s = opaque;
    g_autoptr(QIOChannelSocket) sioc = NULL;
    g_autofree char *name = NULL;
    Error *err = NULL;
    VfuLimits ours;
    VfuConn *conn;

    sioc = qio_channel_socket_accept(s->listener, &err);
    if (!sioc) {
        trace_vfio_user_srv_client_error(vfu_server_id(s),
                                         err ? error_get_pretty(err) : "");
        error_free(err);
        return G_SOURCE_CONTINUE;
    }
    if (s->conn) {
        /* cannot happen: we stop watching while a client is connected */
        return G_SOURCE_CONTINUE;
    }
    vfu_limits_default(&ours);
    ours.max_msg_fds = VFU_SERVER_MAX_FDS;
    ours.max_data_xfer_size = s->max_data_xfer_size;
    ours.max_dma_maps = VFU_SERVER_MAX_MAPS;
    ours.pgsizes = VFU_SERVER_PGSIZE;
    ours.write_multiple = true;
    ours.twin_socket = s->twin_socket;
    name = g_strdup_printf("vfio-user-server %s", vfu_server_id(s));
    qio_channel_set_name(QIO_CHANNEL(sioc), name);
    conn = vfu_conn_new(QIO_CHANNEL(sioc), name, &ours);
    if (!vfu_server_peer_allowed(s, conn)) {
        /* dropped; the next client in the backlog gets its turn */
        vfu_conn_free(conn);
        return G_SOURCE_CONTINUE;
    }
    trace_vfio_user_srv_accept(vfu_server_id(s));
    s->conn = conn;
    vfu_conn_set_timeout(s->conn, s->timeout_ms);
    s->warned_unsealed = false;
    vfu_conn_set_request_func(s->conn, vfu_server_request, s);
    vfu_srv_attach(s->conn, vfu_server_conn_broken, s);
    /* the only client slot is not held by one that never negotiates */
    if (!s->handshake_timer) {
        s->handshake_timer = timer_new_ms(QEMU_CLOCK_REALTIME,
                                          vfu_server_handshake_timeout, s);
    }
    timer_mod(s->handshake_timer,
              qemu_clock_get_ms(QEMU_CLOCK_REALTIME) + s->timeout_ms);
    /*
     * An fd handler of the main loop rather than a GSource watch: glib
     * takes a watch's fds out of the poll set and back around each
     * dispatch, and wakes its own loop each time, which costs a whole
     * extra main loop turn per request.  The iohandler context keeps
     * block layer polling from serving the socket in the middle of I/O.
     */
    qio_channel_set_aio_fd_handler(QIO_CHANNEL(sioc),
                                   iohandler_get_aio_context(),
                                   vfu_server_client_read, NULL, s);
    s->client_watched = true;
    /* one client at a time: the next waits in the backlog */
    s->listen_tag = 0;
    return G_SOURCE_REMOVE;
}

/* A live server answers on the path; a stale socket file does not. */
static bool vfu_server_prepare_path(const char *path, Error **errp)
{
    g_autoptr(QIOChannelSocket) probe = NULL;
    SocketAddress addr = {
        .type = SOCKET_ADDRESS_TYPE_UNIX,
        .u.q_unix.path = (char *)path,
    };
    struct stat st;

    if (lstat(path, &st) < 0) {
        return true;
    }
    if (!S_ISSOCK(st.st_mode)) {
        error_setg(errp, "'%s' exists and is not a socket", path);
        return false;
    }
    probe = qio_channel_socket_new();
    if (qio_channel_socket_connect_sync(probe, &addr, NULL) == 0) {
        error_setg(errp, "'%s' is in use by a running server", path);
        return false;
    }
    if (unlink(path) < 0 && errno != ENOENT) {
        error_setg_errno(errp, errno, "cannot remove stale socket '%s'", path);
        return false;
    }
    return true;
}

/* For the monitor (info.c) */
void vfu_server_get_status(Object *obj, VfuServerStatus *st)
{
    VfuServer *s = VFU_SERVER(obj);

    st->socket = s->socket;
    st->device = s->device;
    st->listening = s->listener != NULL;
    st->conn = s->conn;
    st->twin = s->twin;
    st->negotiated = s->conn && vfu_server_negotiated(s);
    st->dma = s->dma;
}

/*
 * A listening socket the management layer made for us: a getfd name
 * under QMP, or an inherited fd's number (systemd socket activation).
 * It must listen already: listen() here would quietly turn a bound or
 * even unbound socket into a listening one nobody can find.
 */
static QIOChannelSocket *vfu_server_take_fd(const char *str, Error **errp)
{
    SocketAddress addr = {
        .type = SOCKET_ADDRESS_TYPE_FD, .u.fd.str = g_strdup(str),
    };
    g_autofree char *num = NULL;
    QIOChannelSocket *sioc;
    int listening = 0;
    socklen_t ilen = sizeof(int);
    int fd = -1;

    /* takes the fd from the monitor; refuses and closes a non-socket */
    if (socket_address_parse_named_fd(&addr, errp) < 0) {
        g_free(addr.u.fd.str);
        return NULL;
    }
    num = addr.u.fd.str;
    if (qemu_strtoi(num, NULL, 10, &fd) < 0) {
        error_setg(errp, "fd '%s' is not a number", str);
        return NULL;
    }
    if (!vfu_fd_is_unix_stream(fd)) {
        error_setg(errp, "fd '%s' is not a UNIX stream socket", str);
        goto fail;
    }
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &ilen) < 0 ||
        !listening) {
        error_setg(errp, "fd '%s' is not a listening socket", str);
        goto fail;
    }
    /* a client gone between poll and accept must not block us */
    qemu_socket_set_nonblock(fd);
    /*
     * Not qio_channel_socket_listen_sync(): the channel it makes unlinks
     * its socket's path when closed, and this path is the management
     * layer's (systemd listens on it again for the next start).
     */
    sioc = qio_channel_socket_new_fd(fd, errp);
    if (!sioc) {
        goto fail;
    }
    return sioc;

fail:
    close(fd);
    return NULL;
}

static bool vfu_server_listen(VfuServer *s, Error **errp)
{
    if (s->addr->type == SOCKET_ADDRESS_TYPE_FD) {
        s->listener = vfu_server_take_fd(s->addr->u.fd.str, errp);
        if (!s->listener) {
            return false;
        }
    } else {
        if (!vfu_server_prepare_path(s->addr->u.q_unix.path, errp)) {
            return false;
        }
        s->listener = qio_channel_socket_new();
        if (qio_channel_socket_listen_sync(s->listener, s->addr, 1,
                                           errp) < 0) {
            object_unref(OBJECT(s->listener));
            s->listener = NULL;
            return false;
        }
    }
    qio_channel_set_name(QIO_CHANNEL(s->listener), "vfio-user-server-listen");
    return true;
}

/* ---- life cycle ----------------------------------------------------------- */

static bool vfu_server_start(VfuServer *s, Error **errp)
{
    PCIDevice *pdev;
    int ret;

    ret = pci_qdev_find_device(s->device, &pdev);
    if (ret) {
        error_setg(errp, "vfio-user-server '%s': no PCI device '%s'",
                   vfu_server_id(s), s->device);
        return false;
    }
    if (object_property_find(OBJECT(pdev), "iommu_platform") &&
        !object_property_get_bool(OBJECT(pdev), "iommu_platform", NULL)) {
        error_setg(errp, "vfio-user-server '%s': virtio device '%s' needs "
                   "iommu_platform=on, or its DMA misses the client's memory",
                   vfu_server_id(s), s->device);
        return false;
    }
    if (!vfu_remote_machine_claim(pdev, OBJECT(s), errp)) {
        error_prepend(errp, "vfio-user-server '%s': ", vfu_server_id(s));
        return false;
    }
    s->pdev = PCI_DEVICE(object_ref(OBJECT(pdev)));
    error_setg(&s->unplug_blocker, "device is exported by vfio-user-server '%s'",
               vfu_server_id(s));
    qdev_add_unplug_blocker(DEVICE(pdev), s->unplug_blocker);
    s->dma = vfu_remote_machine_dma(pdev);
    vfu_dma_space_set_flush(s->dma, vfu_server_irq_flush);
    s->bars = vfu_bar_windows_new(pdev);
    s->irqs = vfu_irqs_new(pdev, vfu_server_id(s));
    vfu_irqs_set_flush(s->irqs, vfu_server_irq_flush, s);
    {
        AddressSpace *as[VFU_NUM_BARS] = { };

        for (int i = 0; i < VFU_NUM_BARS; i++) {
            as[i] = s->bars->size[i] ? &s->bars->as[i] : NULL;
        }
        s->iofds = vfu_iofds_new(as, VFU_NUM_BARS, vfu_server_id(s),
                                 vfu_server_flush_client, s);
    }

    if (!vfu_server_listen(s, errp)) {
        error_prepend(errp, "vfio-user-server '%s': ", vfu_server_id(s));
        return false;
    }
    vfu_server_listen_watch(s);
    trace_vfio_user_srv_listen(vfu_server_id(s), s->socket, s->device);
    return true;
}

static void vfu_server_stop(VfuServer *s)
{
    vfu_server_drop_client(s, false);
    if (s->listen_tag) {
        g_source_remove(s->listen_tag);
        s->listen_tag = 0;
    }
    if (s->listener) {
        /* closing a listening UNIX socket unlinks its path (ours only) */
        qio_channel_close(QIO_CHANNEL(s->listener), NULL);
        object_unref(OBJECT(s->listener));
        s->listener = NULL;
    }
    if (s->irqs) {
        vfu_irqs_free(s->irqs);
        s->irqs = NULL;
    }
    g_clear_pointer(&s->iofds, vfu_iofds_free);
    if (s->bars) {
        vfu_bar_windows_free(s->bars);
        s->bars = NULL;
    }
    s->dma = NULL;
    if (s->pdev) {
        qdev_del_unplug_blocker(DEVICE(s->pdev), s->unplug_blocker);
        vfu_remote_machine_release(s->pdev, OBJECT(s));
        object_unref(OBJECT(s->pdev));
        s->pdev = NULL;
    }
    error_free(s->unplug_blocker);
    s->unplug_blocker = NULL;
}

static void vfu_server_machine_done(Notifier *n, void *data)
{
    VfuServer *s = container_of(n, VfuServer, machine_done);
    Error *err = NULL;

    qemu_remove_machine_init_done_notifier(&s->machine_done);
    s->waiting_machine = false;
    if (!vfu_server_start(s, &err)) {
        /* as a failing -object would: startup cannot go on */
        error_report_err(err);
        exit(1);
    }
}

/*
 * QEMU is about to exit: let the client go now, while the device and its
 * backends still exist.  Left for later, a hangup seen while the main
 * loop's cleanup polls our socket, or the object's finalization, would
 * reset the device after its backends are gone (an e1000e's NIC).
 */
static void vfu_server_shutdown(Notifier *n, void *data)
{
    VfuServer *s = container_of(n, VfuServer, shutdown);

    vfu_server_drop_client(s, false);
}

static void vfu_server_complete(UserCreatable *uc, Error **errp)
{
    VfuServer *s = VFU_SERVER(uc);

    if (!s->addr) {
        error_setg(errp, "vfio-user-server: 'socket' is required");
        return;
    }
    if (!s->device || !*s->device) {
        error_setg(errp, "vfio-user-server: 'device' is required");
        return;
    }
    s->name = g_strdup(object_get_canonical_path_component(OBJECT(s)));
    s->completed = true;
    s->shutdown.notify = vfu_server_shutdown;
    qemu_register_shutdown_notifier(&s->shutdown);
    s->shutdown_registered = true;
    if (phase_check(PHASE_MACHINE_READY)) {
        if (!vfu_server_start(s, errp)) {
            vfu_server_stop(s);
        }
        return;
    }
    /* -object comes before -device: find the device once it exists */
    s->machine_done.notify = vfu_server_machine_done;
    qemu_add_machine_init_done_notifier(&s->machine_done);
    s->waiting_machine = true;
}

static bool vfu_server_can_be_deleted(UserCreatable *uc)
{
    return true;
}

/*
 * "socket": a path, as the plain string of socket=PATH, or a
 * SocketAddress of type unix or fd (socket.type=fd,socket.str=3, or the
 * same as JSON in -object and object-add).
 */
static void vfu_server_set_socket(Object *obj, Visitor *v, const char *name,
                                  void *opaque, Error **errp)
{
    VfuServer *s = VFU_SERVER(obj);
    g_autofree char *display = NULL;
    SocketAddress *addr;

    if (s->completed) {
        error_setg(errp, "'socket' cannot change once the server exists");
        return;
    }
    addr = vfu_visit_socket(v, name, &display, errp);
    if (!addr) {
        return;
    }
    if (!*display) {
        error_setg(errp, "'socket' needs a path");
        qapi_free_SocketAddress(addr);
        return;
    }
    qapi_free_SocketAddress(s->addr);
    s->addr = addr;
    g_free(s->socket);
    s->socket = g_steal_pointer(&display);
}

static void vfu_server_get_socket(Object *obj, Visitor *v, const char *name,
                                  void *opaque, Error **errp)
{
    vfu_visit_socket_out(v, name, &VFU_SERVER(obj)->addr, errp);
}

/* allowed-uid, allowed-gid: VFU_ANY_ID ((uid_t)-1, never an id) for anyone */
static void vfu_server_get_id(Object *obj, Visitor *v, const char *name,
                              void *opaque, Error **errp)
{
    uint32_t *field = (uint32_t *)((char *)obj + (uintptr_t)opaque);

    visit_type_uint32(v, name, field, errp);
}

static void vfu_server_set_id(Object *obj, Visitor *v, const char *name,
                              void *opaque, Error **errp)
{
    uint32_t *field = (uint32_t *)((char *)obj + (uintptr_t)opaque);
    uint32_t value;

    /* may change at any time: it applies to the next client */
    if (visit_type_uint32(v, name, &value, errp)) {
        *field = value;
    }
}

static char *vfu_server_get_device(Object *obj, Error **errp)
{
    return g_strdup(VFU_SERVER(obj)->device);
}

static void vfu_server_set_device(Object *obj, const char *value,
                                  Error **errp)
{
    VfuServer *s = VFU_SERVER(obj);

    if (s->completed) {
        error_setg(errp, "'device' cannot change once the server exists");
        return;
    }
    g_free(s->device);
    s->device = g_strdup(value);
}

static void vfu_server_get_timeout(Object *obj, Visitor *v, const char *name,
                                   void *opaque, Error **errp)
{
    visit_type_uint32(v, name, &VFU_SERVER(obj)->timeout_ms, errp);
}

static void vfu_server_set_timeout(Object *obj, Visitor *v, const char *name,
                                   void *opaque, Error **errp)
{
    VfuServer *s = VFU_SERVER(obj);
    uint32_t value;

    if (!visit_type_uint32(v, name, &value, errp)) {
        return;
    }
    if (!value) {
        error_setg(errp, "'%s' must be at least 1 ms", name);
        return;
    }
    /* applies to the next client */
    s->timeout_ms = value;
}

static void vfu_server_get_u64(Object *obj, Visitor *v, const char *name,
                               void *opaque, Error **errp)
{
    uint64_t *field = (uint64_t *)((char *)obj + (uintptr_t)opaque);

    visit_type_size(v, name, field, errp);
}

/* A size of at least one page; DMA_MAPs check it as they come. */
static void vfu_server_set_dma_max(Object *obj, Visitor *v, const char *name,
                                   void *opaque, Error **errp)
{
    uint64_t *field = (uint64_t *)((char *)obj + (uintptr_t)opaque);
    uint64_t value;

    if (!visit_type_size(v, name, &value, errp)) {
        return;
    }
    if (value < VFU_SERVER_PGSIZE) {
        error_setg(errp, "'%s' must be at least %d bytes", name,
                   VFU_SERVER_PGSIZE);
        return;
    }
    *field = value;
}

static void vfu_server_set_xfer_size(Object *obj, Visitor *v,
                                     const char *name, void *opaque,
                                     Error **errp)
{
    uint64_t value;

    if (!visit_type_size(v, name, &value, errp)) {
        return;
    }
    if (value < VFU_MIN_XFER_SIZE || value > VFU_MAX_XFER_SIZE) {
        error_setg(errp, "'%s' must be %d to %d bytes", name,
                   VFU_MIN_XFER_SIZE, VFU_MAX_XFER_SIZE);
        return;
    }
    /* applies to the next client */
    VFU_SERVER(obj)->max_data_xfer_size = value;
}

static bool vfu_server_get_map_unsealed(Object *obj, Error **errp)
{
    return VFU_SERVER(obj)->map_unsealed_fds;
}

static void vfu_server_set_map_unsealed(Object *obj, bool value,
                                        Error **errp)
{
    VFU_SERVER(obj)->map_unsealed_fds = value;
}

static bool vfu_server_get_twin_socket(Object *obj, Error **errp)
{
    return VFU_SERVER(obj)->twin_socket;
}

static void vfu_server_set_twin_socket(Object *obj, bool value, Error **errp)
{
    /* applies to the next client */
    VFU_SERVER(obj)->twin_socket = value;
}

static void vfu_server_instance_init(Object *obj)
{
    VfuServer *s = VFU_SERVER(obj);

    s->twin_socket = true;
    s->timeout_ms = VFU_DEFAULT_TIMEOUT_MS;
    s->max_dma_map_size = VFU_SERVER_DMA_MAX;
    s->max_dma_total_size = VFU_SERVER_DMA_MAX;
    s->max_data_xfer_size = VFU_MAX_XFER_SIZE;
    s->allowed_uid = VFU_ANY_ID;
    s->allowed_gid = VFU_ANY_ID;
}

static void vfu_server_finalize(Object *obj)
{
    VfuServer *s = VFU_SERVER(obj);

    if (s->waiting_machine) {
        qemu_remove_machine_init_done_notifier(&s->machine_done);
    }
    if (s->shutdown_registered) {
        notifier_remove(&s->shutdown);
    }
    vfu_server_stop(s);
    if (s->handshake_timer) {
        timer_free(s->handshake_timer);
    }
    qapi_free_SocketAddress(s->addr);
    g_free(s->socket);
    g_free(s->device);
    g_free(s->name);
}

static void vfu_server_class_init(ObjectClass *oc, void *data)
{
    UserCreatableClass *ucc = USER_CREATABLE_CLASS(oc);

    ucc->complete = vfu_server_complete;
    ucc->can_be_deleted = vfu_server_can_be_deleted;
    object_class_property_add(oc, "socket", "str or SocketAddress",
                              vfu_server_get_socket, vfu_server_set_socket,
                              NULL, NULL);
    object_class_property_set_description(oc, "socket",
        "where to listen for a vfio-user client (required): a path, or a "
        "SocketAddress of type unix or fd (a listening UNIX socket: a "
        "getfd name under QMP, an inherited fd's number on the command "
        "line)");
    object_class_property_add(oc, "allowed-uid", "uint32",
                              vfu_server_get_id, vfu_server_set_id, NULL,
                              (void *)offsetof(VfuServer, allowed_uid));
    object_class_property_set_description(oc, "allowed-uid",
        "serve only clients running as this user id (SO_PEERCRED); others "
        "are logged and dropped (default: any user)");
    object_class_property_add(oc, "allowed-gid", "uint32",
                              vfu_server_get_id, vfu_server_set_id, NULL,
                              (void *)offsetof(VfuServer, allowed_gid));
    object_class_property_set_description(oc, "allowed-gid",
        "serve only clients whose effective group id is this one "
        "(SO_PEERCRED); others are logged and dropped (default: any group)");
    object_class_property_add_str(oc, "device", vfu_server_get_device,
                                  vfu_server_set_device);
    object_class_property_set_description(oc, "device",
        "id of the PCI device (on the remote machine) to export");
    object_class_property_add(oc, "timeout", "uint32",
                              vfu_server_get_timeout, vfu_server_set_timeout,
                              NULL, NULL);
    object_class_property_set_description(oc, "timeout",
        "ms to wait for the client's answer to a DMA request, for room "
        "in its socket or for a new client's VERSION; also how long one "
        "stuck client can hold up the other sockets of this process "
        "(default 5000)");
    object_class_property_add_bool(oc, "map-unsealed-fds",
                                   vfu_server_get_map_unsealed,
                                   vfu_server_set_map_unsealed);
    object_class_property_set_description(oc, "map-unsealed-fds",
        "map the client's DMA memory even when its fd is not sealed "
        "against shrinking (a client that then truncates the file crashes "
        "this process); by default such memory is reached by DMA_READ/"
        "DMA_WRITE messages");
    object_class_property_add(oc, "max-dma-map-size", "size",
                              vfu_server_get_u64, vfu_server_set_dma_max,
                              NULL, (void *)offsetof(VfuServer,
                                                     max_dma_map_size));
    object_class_property_set_description(oc, "max-dma-map-size",
        "largest DMA mapping of the client's memory to mmap; a bigger one "
        "gets ENOMEM (default 256G)");
    object_class_property_add(oc, "max-dma-total-size", "size",
                              vfu_server_get_u64, vfu_server_set_dma_max,
                              NULL, (void *)offsetof(VfuServer,
                                                     max_dma_total_size));
    object_class_property_set_description(oc, "max-dma-total-size",
        "client memory mmap'd at a time, in all mappings; past it, "
        "DMA_MAP gets ENOMEM (default 256G)");
    object_class_property_add(oc, "x-max-data-xfer-size", "size",
                              vfu_server_get_u64, vfu_server_set_xfer_size,
                              NULL, (void *)offsetof(VfuServer,
                                                     max_data_xfer_size));
    object_class_property_set_description(oc, "x-max-data-xfer-size",
        "max_data_xfer_size advertised to the next client: the largest "
        "data count it may send us, and our DMA requests' chunk size "
        "(512 to 1M, default 1M)");
    object_class_property_add_bool(oc, "twin-socket",
                                   vfu_server_get_twin_socket,
                                   vfu_server_set_twin_socket);
    object_class_property_set_description(oc, "twin-socket",
        "offer the twin_socket capability: to a client that proposes it, "
        "our DMA_READ/DMA_WRITE requests and their replies go over a "
        "second socket of their own (default on; applies to the next "
        "client)");
}

static const TypeInfo vfu_server_info = {
    .name = TYPE_VFU_SERVER,
    .parent = TYPE_OBJECT,
    .instance_size = sizeof(VfuServer),
    .instance_init = vfu_server_instance_init,
    .instance_finalize = vfu_server_finalize,
    .class_init = vfu_server_class_init,
    .interfaces = (InterfaceInfo[]) {
        { TYPE_USER_CREATABLE },
        { }
    },
};

static void vfu_server_register_types(void)
{
    type_register_static(&vfu_server_info);
}

type_init(vfu_server_register_types)
