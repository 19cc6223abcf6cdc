/*
 * vfio-user-pci: a PCI device whose config space, BARs, interrupts and DMA
 * are served by a vfio-user server over a UNIX socket.
 *
 * QEMU owns what the machine must see consistently (BAR registers and
 * sizing, ROM BAR, MSI/MSI-X capabilities, command register); every other
 * config byte and every BAR access goes to the server.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/units.h"
#include "qapi/error.h"
#include "qemu/error-report.h"
#include "qemu/main-loop.h"
#include "qemu/module.h"
#include "qemu/bswap.h"
#include "qemu/log.h"
#include "qemu/sockets.h"
#include "io/channel-socket.h"
#include "migration/blocker.h"
#include "hw/qdev-properties.h"
#include "hw/pci/msi.h"
#include "hw/pci/msix.h"
#include "hw/vfio-user/pci.h"
#include "trace.h"

#define VFU_PCI_MAX_CAPS    48
/* What we accept from a server's DEVICE_GET_INFO / GET_IRQ_INFO */
#define VFU_PCI_MAX_REGIONS         64
#define VFU_PCI_MAX_IRQ_INDEXES     64
#define VFU_PCI_MAX_IRQS            2048    /* MSI-X table size limit */

static const char *dev_name(VfuPciDevice *dev)
{
    DeviceState *d = DEVICE(dev);

    return d->id ? d->id : dev->socket_name;
}

static void vfu_pci_exit(PCIDevice *pdev);

/* Requests the server sends while no call of ours is in progress. */
static void vfu_pci_serve_conn(VfuPciDevice *dev, VfuConn *conn)
{
    Error *err = NULL;

    if (!dev->dead && vfu_client_serve(conn, &err) < 0) {
        vfu_pci_set_dead(dev, err);
        error_free(err);
    }
}

static void vfu_pci_socket_readable(void *opaque)
{
    VfuPciDevice *dev = opaque;

    vfu_pci_serve_conn(dev, dev->conn);
}

static void vfu_pci_twin_readable(void *opaque)
{
    VfuPciDevice *dev = opaque;

    vfu_pci_serve_conn(dev, dev->twin);
}

/* Serve our sockets from the main loop, or stop (@on false) */
static void vfu_pci_watch(VfuPciDevice *dev, bool on)
{
    if (dev->conn) {
        qemu_set_fd_handler(vfu_conn_fd(dev->conn),
                            on ? vfu_pci_socket_readable : NULL, NULL, dev);
    }
    if (dev->twin) {
        qemu_set_fd_handler(vfu_conn_fd(dev->twin),
                            on ? vfu_pci_twin_readable : NULL, NULL, dev);
    }
}

void vfu_pci_set_dead(VfuPciDevice *dev, Error *err)
{
    if (dev->dead) {
        return;
    }
    dev->dead = true;
    error_report("vfio-user-pci %s: lost the server at %s (%s); "
                 "the device no longer responds", dev_name(dev),
                 dev->socket_name, err ? error_get_pretty(err) : "closed");
    trace_vfio_user_pci_dead(dev_name(dev));
    vfu_pci_info_lost(dev, err);
    vfu_pci_watch(dev, false);
    if (dev->conn) {
        vfu_conn_shutdown(dev->conn);
    }
    if (dev->twin) {
        vfu_conn_shutdown(dev->twin);
    }
    if (dev->intx_pending) {
        dev->intx_pending = false;
        pci_irq_deassert(PCI_DEVICE(dev));
    }
}

int vfu_pci_call(VfuPciDevice *dev, uint16_t cmd, void *payload, size_t len,
                 const int *fds, size_t nfds, VfuMsg **reply, Error **errp)
{
    Error *local_err = NULL;
    int ret;

    if (dev->dead) {
        error_setg(errp, "vfio-user-pci %s: the server is gone", dev_name(dev));
        return -ECONNRESET;
    }
    ret = vfu_client_call(dev->conn, cmd, payload, len, fds, nfds, reply,
                          &local_err);
    if (ret && vfu_conn_is_broken(dev->conn)) {
        vfu_pci_set_dead(dev, local_err);
    }
    if (ret) {
        trace_vfio_user_pci_call_failed(dev_name(dev), vfu_command_name(cmd),
                                        error_get_pretty(local_err));
        error_propagate(errp, local_err);
    }
    return ret;
}

/* Serving requests left from a call broke the connection */
static void vfu_pci_conn_broken(VfuConn *conn, Error *err, void *opaque)
{
    vfu_pci_set_dead(opaque, err);
}

static int vfu_pci_region_read(VfuPciDevice *dev, uint32_t region,
                               uint64_t offset, void *buf, uint32_t count,
                               Error **errp)
{
    VfuRegionAccess req = {
        .offset = offset, .region = region, .count = count,
    };
    g_autoptr(VfuMsg) reply = NULL;
    VfuRegionAccess *rsp;
    int ret;

    ret = vfu_pci_call(dev, VFU_CMD_REGION_READ, &req, sizeof(req), NULL, 0,
                       &reply, errp);
    if (ret) {
        return ret;
    }
    rsp = (VfuRegionAccess *)reply->payload;
    if (rsp->count != count) {
        error_setg(errp, "vfio-user-pci %s: REGION_READ of %u bytes returned "
                   "%u", dev_name(dev), count, rsp->count);
        return -EPROTO;
    }
    /* data for another place would be taken as this one's */
    if (rsp->region != region || rsp->offset != offset) {
        error_setg(errp, "vfio-user-pci %s: REGION_READ of region %u at 0x%"
                   PRIx64 " answered for region %u at 0x%" PRIx64,
                   dev_name(dev), region, offset, rsp->region, rsp->offset);
        return -EPROTO;
    }
    memcpy(buf, rsp->data, count);
    return 0;
}

/* Send a request flagged No_reply: it is not waited for. */
static int vfu_pci_post(VfuPciDevice *dev, uint16_t cmd, void *payload,
                        size_t len, Error **errp)
{
    Error *local_err = NULL;
    int ret;

    if (dev->dead) {
        error_setg(errp, "vfio-user-pci %s: the server is gone", dev_name(dev));
        return -ECONNRESET;
    }
    ret = vfu_conn_post(dev->conn, cmd, payload, len, &local_err);
    if (ret) {
        if (vfu_conn_is_broken(dev->conn)) {
            vfu_pci_set_dead(dev, local_err);
        }
        error_propagate(errp, local_err);
    }
    return ret;
}

/*
 * With @posted the write is not acknowledged: the server serves requests
 * in order, so a later read or acked request still sees its effect.
 */
static int vfu_pci_region_write(VfuPciDevice *dev, uint32_t region,
                                uint64_t offset, const void *buf,
                                uint32_t count, bool posted, Error **errp)
{
    struct QEMU_PACKED {
        VfuRegionAccess hdr;
        uint8_t data[8];
    } small;
    g_autofree uint8_t *big = NULL;
    VfuRegionAccess *req;

    if (count <= sizeof(small.data)) {
        req = &small.hdr;
    } else {
        big = g_malloc(sizeof(VfuRegionAccess) + count);
        req = (VfuRegionAccess *)big;
    }
    req->offset = offset;
    req->region = region;
    req->count = count;
    memcpy(req->data, buf, count);
    if (posted) {
        return vfu_pci_post(dev, VFU_CMD_REGION_WRITE, req,
                            sizeof(VfuRegionAccess) + count, errp);
    }
    return vfu_pci_call(dev, VFU_CMD_REGION_WRITE, req,
                        sizeof(VfuRegionAccess) + count, NULL, 0, NULL, errp);
}

/* BARs */

static uint64_t vfu_pci_bar_read(void *opaque, hwaddr addr, unsigned size)
{
    VfuPciBar *bar = opaque;
    VfuPciDevice *dev = bar->dev;
    uint8_t buf[8];
    Error *err = NULL;
    uint64_t val;

    if (dev->intx_pending) {
        vfu_pci_intx_eoi(dev);
    }
    if (vfu_pci_region_read(dev, bar->index, addr, buf, size, &err)) {
        if (!dev->dead) {
            qemu_log_mask(LOG_GUEST_ERROR, "%s\n", error_get_pretty(err));
        }
        error_free(err);
        return size == 8 ? UINT64_MAX : MAKE_64BIT_MASK(0, size * 8);
    }
    val = ldn_le_p(buf, size);
    trace_vfio_user_pci_bar_read(dev_name(dev), bar->index, addr, size, val);
    return val;
}

static void vfu_pci_bar_write(void *opaque, hwaddr addr, uint64_t val,
                              unsigned size)
{
    VfuPciBar *bar = opaque;
    VfuPciDevice *dev = bar->dev;
    uint8_t buf[8];
    Error *err = NULL;

    if (bar->index == VFU_PCI_ROM_REGION) {
        return;     /* read-only */
    }
    trace_vfio_user_pci_bar_write(dev_name(dev), bar->index, addr, size, val);
    stn_le_p(buf, size, val);
    if (vfu_pci_region_write(dev, bar->index, addr, buf, size,
                             dev->posted_writes, &err)) {
        if (!dev->dead) {
            qemu_log_mask(LOG_GUEST_ERROR, "%s\n", error_get_pretty(err));
        }
        error_free(err);
    }
    vfu_pci_ioeventfds_note_write(dev, bar);
    /* after the write: it may be the ack that lowers the line */
    if (dev->intx_pending) {
        vfu_pci_intx_eoi(dev);
    }
}

static const MemoryRegionOps vfu_pci_bar_ops = {
    .read = vfu_pci_bar_read,
    .write = vfu_pci_bar_write,
    .endianness = DEVICE_LITTLE_ENDIAN,
    .valid = {
        .min_access_size = 1,
        .max_access_size = 8,
    },
    .impl = {
        .min_access_size = 1,
        .max_access_size = 8,
    },
};

/* Config space */

/* Does QEMU itself own every byte of this config access? */
static bool all_emulated(VfuPciDevice *dev, uint32_t addr, int len)
{
    for (int i = 0; i < len; i++) {
        if (!dev->emulated[addr + i]) {
            return false;
        }
    }
    return true;
}

static uint32_t vfu_pci_read_config(PCIDevice *pdev, uint32_t addr, int len)
{
    VfuPciDevice *dev = VFIO_USER_PCI(pdev);
    uint32_t emu = pci_default_read_config(pdev, addr, len);
    uint8_t buf[4];
    uint32_t val = 0;
    Error *err = NULL;

    if (addr + len > PCI_CONFIG_SPACE_SIZE) {
        return emu;
    }
    if (all_emulated(dev, addr, len)) {
        return emu;
    }
    if (vfu_pci_region_read(dev, VFU_PCI_CONFIG_REGION, addr, buf, len,
                            &err)) {
        error_free(err);
        memset(buf, 0xff, sizeof(buf));
    }
    for (int i = 0; i < len; i++) {
        uint8_t b = dev->emulated[addr + i] ? (emu >> (i * 8)) : buf[i];
        val |= (uint32_t)b << (i * 8);
    }
    trace_vfio_user_pci_config_read(dev_name(dev), addr, len, val);
    return val;
}

static void vfu_pci_write_config(PCIDevice *pdev, uint32_t addr, uint32_t val,
                                 int len)
{
    VfuPciDevice *dev = VFIO_USER_PCI(pdev);
    bool was_msi = msi_enabled(pdev), was_msix = msix_enabled(pdev);
    uint8_t buf[4];
    Error *err = NULL;

    trace_vfio_user_pci_config_write(dev_name(dev), addr, len, val);
    /*
     * The server sees every write, as a VFIO device does: it must know
     * about COMMAND (bus master) and the MSI/MSI-X enable bits to deliver
     * DMA and interrupts, and some servers (QEMU 7.2's libvfio-user based
     * one) reach a BAR only where the guest placed it.  The BARs we show
     * the guest stay our own.
     */
    if (addr + len <= PCI_CONFIG_SPACE_SIZE && !dev->dead) {
        stl_le_p(buf, val);
        if (vfu_pci_region_write(dev, VFU_PCI_CONFIG_REGION, addr, buf, len,
                                 false, &err)) {
            error_free(err);
        }
    }
    pci_default_write_config(pdev, addr, val, len);
    vfu_pci_irq_config_changed(dev, addr, len, was_msi, was_msix);
}

/* Realize */

/*
 * Connect without blocking: a server whose listen queue is full would
 * otherwise hold realize, and the BQL with it, until it accepts.  AF_UNIX
 * answers EAGAIN (not EINPROGRESS) while the queue is full, so try again
 * until the message timeout.
 */
static int vfu_pci_connect_unix(const char *path, int64_t timeout_ms,
                                Error **errp)
{
    struct sockaddr_un un = { .sun_family = AF_UNIX };
    int64_t deadline = qemu_clock_get_ms(QEMU_CLOCK_REALTIME) + timeout_ms;
    int fd;

    if (strlen(path) >= sizeof(un.sun_path)) {
        error_setg(errp, "socket path '%s' is too long", path);
        return -1;
    }
    strcpy(un.sun_path, path);
    fd = qemu_socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0) {
        error_setg_errno(errp, errno, "cannot create a socket");
        return -1;
    }
    qemu_socket_set_nonblock(fd);
    while (connect(fd, (struct sockaddr *)&un, sizeof(un)) < 0) {
        int64_t left = deadline - qemu_clock_get_ms(QEMU_CLOCK_REALTIME);

        if (errno == EINTR) {
            continue;
        }
        if (errno != EAGAIN) {
            error_setg_errno(errp, errno, "cannot connect to %s", path);
            close(fd);
            return -1;
        }
        if (left <= 0) {
            error_setg(errp, "the server did not accept the connection "
                       "within %" PRId64 " ms (its listen queue is full)",
                       timeout_ms);
            close(fd);
            return -1;
        }
        g_usleep(MIN(left, 10) * 1000);
    }
    return fd;
}

/*
 * A socket the management layer connected for us (getfd, or inherited):
 * it must be a connected AF_UNIX stream socket, or fds could not pass.
 */
static int vfu_pci_take_fd(const char *str, Error **errp)
{
    SocketAddress addr = {
        .type = SOCKET_ADDRESS_TYPE_FD, .u.fd.str = (char *)str,
    };
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    int fd;

    /* a getfd name from the monitor, or a number on the command line */
    fd = socket_connect(&addr, errp);
    if (fd < 0) {
        return -1;
    }
    if (!vfu_fd_is_unix_stream(fd)) {
        error_setg(errp, "fd '%s' is not a UNIX stream socket", str);
        close(fd);
        return -1;
    }
    if (getpeername(fd, (struct sockaddr *)&ss, &len) < 0) {
        error_setg(errp, "fd '%s' is not a connected socket", str);
        close(fd);
        return -1;
    }
    return fd;
}

static VfuConn *vfu_pci_conn_new(VfuPciDevice *dev, QIOChannel *ioc,
                                 const char *name, const VfuLimits *local)
{
    VfuConn *conn = vfu_conn_new(ioc, name, local);

    vfu_conn_set_timeout(conn, dev->msg_timeout_ms);
    vfu_conn_set_request_func(conn, vfu_pci_serve_request, dev);
    /*
     * Two devices of one server process must not wait for each other,
     * and a call on the main socket serves the twin while it waits.
     */
    vfu_client_attach(conn, vfu_pci_conn_broken, dev);
    return conn;
}

/*
 * The server returned a twin socket (our end: @fd): its DMA requests
 * come there, served like those of the main socket.
 */
static bool vfu_pci_twin_start(VfuPciDevice *dev, int fd, Error **errp)
{
    g_autoptr(QIOChannelSocket) sioc = qio_channel_socket_new_fd(fd, errp);
    g_autofree char *name = NULL;
    uint16_t major, minor;

    if (!sioc) {
        close(fd);
        return false;
    }
    name = g_strdup_printf("vfio-user-pci-twin:%s", dev_name(dev));
    qio_channel_set_name(QIO_CHANNEL(sioc), name);
    dev->twin = vfu_pci_conn_new(dev, QIO_CHANNEL(sioc), name,
                                 vfu_conn_local_limits(dev->conn));
    vfu_conn_set_peer_limits(dev->twin, vfu_conn_peer_limits(dev->conn));
    vfu_conn_version(dev->conn, &major, &minor);
    vfu_conn_set_version(dev->twin, major, minor);
    return true;
}

static bool vfu_pci_connect(VfuPciDevice *dev, Error **errp)
{
    g_autoptr(QIOChannelSocket) sioc = NULL;
    g_autofree char *name = NULL;
    VfuLimits local;
    int fd, twin_fd;

    if (dev->socket->type == SOCKET_ADDRESS_TYPE_FD) {
        fd = vfu_pci_take_fd(dev->socket->u.fd.str, errp);
    } else {
        fd = vfu_pci_connect_unix(dev->socket->u.q_unix.path,
                                  dev->msg_timeout_ms, errp);
    }
    if (fd < 0) {
        return false;
    }
    sioc = qio_channel_socket_new_fd(fd, errp);
    if (!sioc) {
        close(fd);
        return false;
    }
    name = g_strdup_printf("vfio-user-pci:%s", dev_name(dev));
    qio_channel_set_name(QIO_CHANNEL(sioc), name);
    vfu_limits_default(&local);
    local.max_msg_fds = 8;
    local.max_data_xfer_size = VFU_MAX_XFER_SIZE;
    local.twin_socket = dev->twin_socket;
    dev->conn = vfu_pci_conn_new(dev, QIO_CHANNEL(sioc), name, &local);
    if (vfu_client_negotiate_twin(dev->conn, &twin_fd, errp)) {
        return false;
    }
    return twin_fd < 0 || vfu_pci_twin_start(dev, twin_fd, errp);
}

static bool vfu_pci_get_device_info(VfuPciDevice *dev, Error **errp)
{
    VfuDeviceInfo req = { .argsz = sizeof(req) };
    g_autoptr(VfuMsg) reply = NULL;

    if (vfu_pci_call(dev, VFU_CMD_DEVICE_GET_INFO, &req, sizeof(req), NULL, 0,
                     &reply, errp)) {
        return false;
    }
    dev->info = *(VfuDeviceInfo *)reply->payload;
    trace_vfio_user_pci_device_info(dev_name(dev), dev->info.flags,
                                    dev->info.num_regions,
                                    dev->info.num_irqs);
    if (!(dev->info.flags & VFU_DEV_F_PCI)) {
        error_setg(errp, "the server's device is not a PCI device");
        return false;
    }
    /*
     * A PCI device has 9 regions and 5 IRQ indexes; device-specific ones
     * may follow but we use none, so absurd counts mean a broken server.
     */
    if (dev->info.num_regions > VFU_PCI_MAX_REGIONS ||
        dev->info.num_irqs > VFU_PCI_MAX_IRQ_INDEXES) {
        error_setg(errp, "the server reports %u regions and %u IRQ indexes, "
                   "more than the %u and %u accepted", dev->info.num_regions,
                   dev->info.num_irqs, VFU_PCI_MAX_REGIONS,
                   VFU_PCI_MAX_IRQ_INDEXES);
        return false;
    }
    if (dev->info.num_regions <= VFU_PCI_CONFIG_REGION) {
        error_setg(errp, "the server reports %u regions, a PCI device has "
                   "at least %u", dev->info.num_regions,
                   VFU_PCI_CONFIG_REGION + 1);
        return false;
    }
    return true;
}

/*
 * Region info; the reply (with its capabilities and fd) goes to @reply_out
 * when the caller wants it.
 */
static bool vfu_pci_get_region_info(VfuPciDevice *dev, uint32_t index,
                                    VfuRegionInfo *info, VfuMsg **reply_out,
                                    Error **errp)
{
    /* room for capabilities, so that one request is enough */
    VfuRegionInfo req = { .argsz = VFU_REGION_INFO_MAX, .index = index };
    g_autoptr(VfuMsg) reply = NULL;

    if (vfu_pci_call(dev, VFU_CMD_DEVICE_GET_REGION_INFO, &req, sizeof(req),
                     NULL, 0, &reply, errp)) {
        return false;
    }
    *info = *(VfuRegionInfo *)reply->payload;
    if (info->index != index) {
        error_setg(errp, "region info for region %u answered for region %u",
                   index, info->index);
        return false;
    }
    trace_vfio_user_pci_region_info(dev_name(dev), index, info->flags,
                                    info->size);
    if (reply_out) {
        *reply_out = g_steal_pointer(&reply);
    }
    return true;
}

static bool vfu_pci_get_irq_info(VfuPciDevice *dev, uint32_t index,
                                 Error **errp)
{
    VfuIrqInfo req = { .argsz = sizeof(req), .index = index };
    g_autoptr(VfuMsg) reply = NULL;
    VfuIrqInfo *info;

    if (index >= dev->info.num_irqs) {
        return true;
    }
    if (vfu_pci_call(dev, VFU_CMD_DEVICE_GET_IRQ_INFO, &req, sizeof(req),
                     NULL, 0, &reply, errp)) {
        return false;
    }
    info = (VfuIrqInfo *)reply->payload;
    if (info->index != index) {
        error_setg(errp, "IRQ info for index %u answered for index %u",
                   index, info->index);
        return false;
    }
    if (info->count > VFU_PCI_MAX_IRQS) {
        error_setg(errp, "IRQ index %u: %u vectors, more than the %u a PCI "
                   "function can have", index, info->count, VFU_PCI_MAX_IRQS);
        return false;
    }
    if (info->count && !(info->flags & VFU_IRQ_INFO_F_EVENTFD)) {
        warn_report("vfio-user-pci %s: IRQ index %u does not take eventfds; "
                    "ignored", dev_name(dev), index);
        return true;
    }
    dev->num_irqs[index] = info->count;
    trace_vfio_user_pci_irq_info(dev_name(dev), index, info->flags,
                                 info->count);
    return true;
}

static bool vfu_pci_setup_bars(VfuPciDevice *dev, const uint8_t *srv_config,
                               Error **errp)
{
    PCIDevice *pdev = PCI_DEVICE(dev);

    for (int i = 0; i <= VFU_PCI_BAR5_REGION; i++) {
        VfuPciBar *bar = &dev->bars[i];
        uint32_t reg = ldl_le_p(srv_config + PCI_BASE_ADDRESS_0 + 4 * i);
        VfuRegionInfo info;
        uint8_t attr;
        bool is64 = false;
        g_autofree char *name = NULL;
        g_autoptr(VfuMsg) reply = NULL;

        if (!vfu_pci_get_region_info(dev, i, &info, &reply, errp)) {
            return false;
        }
        if (!info.size) {
            continue;
        }
        if (reg & PCI_BASE_ADDRESS_SPACE_IO) {
            attr = PCI_BASE_ADDRESS_SPACE_IO;
            if (info.size > 64 * KiB) {
                error_setg(errp, "I/O BAR%d of %" PRIu64 " bytes does not fit "
                           "in the I/O space", i, info.size);
                return false;
            }
        } else {
            attr = reg & (PCI_BASE_ADDRESS_MEM_TYPE_MASK |
                          PCI_BASE_ADDRESS_MEM_PREFETCH);
            is64 = (reg & PCI_BASE_ADDRESS_MEM_TYPE_MASK) ==
                   PCI_BASE_ADDRESS_MEM_TYPE_64;
            if (is64 && i == VFU_PCI_BAR5_REGION) {
                error_setg(errp, "BAR5 cannot be a 64-bit BAR");
                return false;
            }
            if (!is64 && info.size > (1ULL << 31)) {
                error_setg(errp, "32-bit BAR%d of %" PRIu64 " bytes is too "
                           "large", i, info.size);
                return false;
            }
        }
        if (info.size > (1ULL << 40)) {
            error_setg(errp, "BAR%d of %" PRIu64 " bytes is larger than 1 TiB",
                       i, info.size);
            return false;
        }
        if (!(info.flags & (VFU_REGION_F_READ | VFU_REGION_F_WRITE))) {
            error_setg(errp, "BAR%d is neither readable nor writable", i);
            return false;
        }
        bar->dev = dev;
        bar->index = i;
        /*
         * A BAR is a power of two; the server decides what lies past the
         * end of its region (normally an error, read as all-ones).
         */
        bar->size = pow2ceil(info.size);
        name = g_strdup_printf("vfio-user-bar%d", i);
        memory_region_init_io(&bar->mr, OBJECT(dev), &vfu_pci_bar_ops, bar,
                              name, bar->size);
        /* I/O space takes no mapping */
        if (!(attr & PCI_BASE_ADDRESS_SPACE_IO)) {
            vfu_pci_bar_mmap(dev, bar, (VfuRegionInfo *)reply->payload,
                             reply->len, reply->fds, reply->nfds);
        }
        pci_register_bar(pdev, i, attr, &bar->mr);
        bar->registered = true;
        if (is64) {
            i++;
        }
    }

    if (dev->info.num_regions > VFU_PCI_ROM_REGION) {
        VfuPciBar *bar = &dev->bars[PCI_ROM_SLOT];
        VfuRegionInfo info;

        if (!vfu_pci_get_region_info(dev, VFU_PCI_ROM_REGION, &info, NULL,
                                     errp)) {
            return false;
        }
        if (info.size && (info.flags & VFU_REGION_F_READ)) {
            if (!is_power_of_2(info.size) || info.size > (16 << 20)) {
                error_setg(errp, "ROM size %" PRIu64 " is not a power of two "
                           "up to 16 MiB", info.size);
                return false;
            }
            bar->dev = dev;
            bar->index = VFU_PCI_ROM_REGION;
            bar->size = info.size;
            memory_region_init_io(&bar->mr, OBJECT(dev), &vfu_pci_bar_ops, bar,
                                  "vfio-user-rom", bar->size);
            pci_register_bar(pdev, PCI_ROM_SLOT, 0, &bar->mr);
            bar->registered = true;
        }
    }
    return true;
}

typedef struct VfuPciCap {
    uint8_t id;
    uint8_t pos;
    uint8_t size;
} VfuPciCap;

static int cap_cmp(const void *a, const void *b)
{
    return ((const VfuPciCap *)a)->pos - ((const VfuPciCap *)b)->pos;
}

/*
 * Bytes the PCI core will own of a capability: msi_init() sizes MSI from
 * its flags, msix_init() takes 12, any other is added as it lies.
 */
static unsigned vfu_pci_cap_need(PCIDevice *pdev, const VfuPciCap *cap)
{
    uint16_t flags;

    switch (cap->id) {
    case PCI_CAP_ID_MSI:
        flags = pci_get_word(pdev->config + cap->pos + PCI_MSI_FLAGS);
        return 0x0a + (flags & PCI_MSI_FLAGS_64BIT ? 4 : 0) +
               (flags & PCI_MSI_FLAGS_MASKBIT ? 10 : 0);
    case PCI_CAP_ID_MSIX:
        return PCI_CAP_MSIX_SIZEOF;
    default:
        return PCI_CAP_SIZEOF;
    }
}

/* Can the MSI-X table or PBA live in BAR @bir at [@off, @off + @len)? */
static bool vfu_pci_msix_bar_ok(VfuPciDevice *dev, uint8_t bir, uint32_t off,
                                uint64_t len, const char *what, Error **errp)
{
    PCIDevice *pdev = PCI_DEVICE(dev);

    if (bir > VFU_PCI_BAR5_REGION || !dev->bars[bir].registered) {
        error_setg(errp, "the MSI-X %s is in BAR%u, which does not exist",
                   what, bir);
        return false;
    }
    if (pdev->io_regions[bir].type & PCI_BASE_ADDRESS_SPACE_IO) {
        error_setg(errp, "the MSI-X %s is in BAR%u, an I/O BAR", what, bir);
        return false;
    }
    if (off + len > dev->bars[bir].size) {
        error_setg(errp, "the MSI-X %s at 0x%x+0x%" PRIx64 " lies outside "
                   "BAR%u", what, off, len, bir);
        return false;
    }
    return true;
}

static bool vfu_pci_add_msix(VfuPciDevice *dev, uint8_t pos, Error **errp)
{
    PCIDevice *pdev = PCI_DEVICE(dev);
    uint16_t ctrl = pci_get_word(pdev->config + pos + PCI_MSIX_FLAGS);
    uint32_t table = pci_get_long(pdev->config + pos + PCI_MSIX_TABLE);
    uint32_t pba = pci_get_long(pdev->config + pos + PCI_MSIX_PBA);
    uint16_t entries = (ctrl & PCI_MSIX_FLAGS_QSIZE) + 1;
    uint8_t tbir = table & PCI_MSIX_FLAGS_BIRMASK;
    uint8_t pbir = pba & PCI_MSIX_FLAGS_BIRMASK;
    uint32_t toff = table & ~PCI_MSIX_FLAGS_BIRMASK;
    uint32_t poff = pba & ~PCI_MSIX_FLAGS_BIRMASK;

    if (!vfu_pci_msix_bar_ok(dev, tbir, toff,
                             (uint64_t)entries * PCI_MSIX_ENTRY_SIZE, "table",
                             errp) ||
        !vfu_pci_msix_bar_ok(dev, pbir, poff, QEMU_ALIGN_UP(entries, 64) / 8,
                             "PBA", errp)) {
        return false;
    }
    /* the guest may use every entry of the table: the server must too */
    if (entries > dev->num_irqs[VFU_PCI_MSIX_IRQ]) {
        error_setg(errp, "the MSI-X table has %u entries but the server "
                   "takes %u vectors", entries,
                   dev->num_irqs[VFU_PCI_MSIX_IRQ]);
        return false;
    }
    if (msix_init(pdev, entries, &dev->bars[tbir].mr, tbir, toff,
                  &dev->bars[pbir].mr, pbir, poff, pos, errp)) {
        return false;
    }
    dev->msix_cap = pos;
    dev->msix_entries = entries;
    dev->msix_table_bar = tbir;
    dev->msix_table_offset = toff;
    dev->msix_pba_bar = pbir;
    dev->msix_pba_offset = poff;
    memset(dev->emulated + pos, 1, PCI_CAP_MSIX_SIZEOF);
    return true;
}

static bool vfu_pci_add_msi(VfuPciDevice *dev, const VfuPciCap *cap,
                            Error **errp)
{
    PCIDevice *pdev = PCI_DEVICE(dev);
    uint16_t flags = pci_get_word(pdev->config + cap->pos + PCI_MSI_FLAGS);
    unsigned nvec = 1 << ((flags & PCI_MSI_FLAGS_QMASK) >> 1);
    bool is64 = flags & PCI_MSI_FLAGS_64BIT;
    bool maskbit = flags & PCI_MSI_FLAGS_MASKBIT;

    nvec = MIN(nvec, dev->num_irqs[VFU_PCI_MSI_IRQ]);
    nvec = MAX(nvec, 1);
    /* msi_init() takes a power of two */
    nvec = pow2floor(nvec);
    if (msi_init(pdev, cap->pos, nvec, is64, maskbit, errp)) {
        return false;
    }
    dev->msi_cap = cap->pos;
    memset(dev->emulated + cap->pos, 1, vfu_pci_cap_need(pdev, cap));
    return true;
}

/*
 * Rebuild the capability list the way QEMU's PCI core keeps it, so that
 * msi_init()/msix_init() can take over their capabilities in place.
 */
static bool vfu_pci_setup_caps(VfuPciDevice *dev, Error **errp)
{
    PCIDevice *pdev = PCI_DEVICE(dev);
    VfuPciCap caps[VFU_PCI_MAX_CAPS];
    VfuPciCap sorted[VFU_PCI_MAX_CAPS];
    unsigned n = 0;
    uint8_t pos;

    dev->emulated[PCI_CAPABILITY_LIST] = 1;
    if (!(pci_get_word(pdev->config + PCI_STATUS) & PCI_STATUS_CAP_LIST)) {
        pdev->config[PCI_CAPABILITY_LIST] = 0;
        return true;
    }
    pos = pdev->config[PCI_CAPABILITY_LIST] & ~3;
    while (pos) {
        if (pos < PCI_CONFIG_HEADER_SIZE || n == VFU_PCI_MAX_CAPS) {
            error_setg(errp, "malformed capability list at 0x%x", pos);
            return false;
        }
        for (unsigned i = 0; i < n; i++) {
            if (caps[i].pos == pos) {
                error_setg(errp, "capability list loops at 0x%x", pos);
                return false;
            }
        }
        caps[n].id = pdev->config[pos];
        caps[n].pos = pos;
        n++;
        pos = pdev->config[pos + PCI_CAP_LIST_NEXT] & ~3;
    }
    /* a capability extends to the next one in address order */
    memcpy(sorted, caps, n * sizeof(caps[0]));
    qsort(sorted, n, sizeof(sorted[0]), cap_cmp);
    for (unsigned i = 0; i < n; i++) {
        unsigned end = i + 1 < n ? sorted[i + 1].pos : PCI_CONFIG_SPACE_SIZE;
        for (unsigned j = 0; j < n; j++) {
            if (caps[j].pos == sorted[i].pos) {
                caps[j].size = end - sorted[i].pos;
            }
        }
    }

    pdev->config[PCI_CAPABILITY_LIST] = 0;
    /* adding puts a capability first: go backwards to keep the order */
    for (int i = n - 1; i >= 0; i--) {
        unsigned need = vfu_pci_cap_need(pdev, &caps[i]);
        Error *local_err = NULL;
        bool ok = true;

        dev->emulated[caps[i].pos + PCI_CAP_LIST_NEXT] = 1;
        /*
         * The PCI core and emulated[] would write past config space, or
         * over the next capability: hide it, never write there.
         */
        if (need > caps[i].size) {
            trace_vfio_user_pci_cap_hidden(dev_name(dev), caps[i].id,
                                           caps[i].pos, "too large");
            warn_report("vfio-user-pci %s: capability 0x%x at 0x%x needs %u "
                        "bytes but only %u are free; hidden", dev_name(dev),
                        caps[i].id, caps[i].pos, need, caps[i].size);
            continue;
        }
        switch (caps[i].id) {
        case PCI_CAP_ID_MSI:
            if (!dev->num_irqs[VFU_PCI_MSI_IRQ]) {
                continue;   /* hidden from the guest */
            }
            ok = vfu_pci_add_msi(dev, &caps[i], &local_err);
            break;
        case PCI_CAP_ID_MSIX:
            if (!dev->num_irqs[VFU_PCI_MSIX_IRQ]) {
                continue;
            }
            ok = vfu_pci_add_msix(dev, caps[i].pos, &local_err);
            break;
        default:
            ok = pci_add_capability(pdev, caps[i].id, caps[i].pos,
                                    caps[i].size, &local_err) >= 0;
            break;
        }
        if (!ok) {
            if (caps[i].id == PCI_CAP_ID_MSI || caps[i].id == PCI_CAP_ID_MSIX) {
                /* e.g. no MSI-capable interrupt controller: go without */
                trace_vfio_user_pci_cap_hidden(dev_name(dev), caps[i].id,
                                               caps[i].pos,
                                               error_get_pretty(local_err));
                warn_reportf_err(local_err, "vfio-user-pci %s: capability "
                                 "0x%x hidden: ", dev_name(dev), caps[i].id);
                continue;
            }
            error_propagate(errp, local_err);
            return false;
        }
        trace_vfio_user_pci_cap(dev_name(dev), caps[i].id, caps[i].pos,
                                caps[i].size);
    }
    return true;
}

static void vfu_pci_realize(PCIDevice *pdev, Error **errp)
{
    ERRP_GUARD();
    VfuPciDevice *dev = VFIO_USER_PCI(pdev);
    uint8_t srv_config[PCI_CONFIG_SPACE_SIZE];
    static const uint8_t emulated_ranges[][2] = {
        { PCI_COMMAND, 2 },
        { PCI_BASE_ADDRESS_0, 24 },
        { PCI_ROM_ADDRESS, 4 },
        { PCI_INTERRUPT_LINE, 2 },
    };

    if (!dev->socket) {
        error_setg(errp, "vfio-user-pci: the 'socket' property is required");
        return;
    }
    /* 0 would make every call time out at once */
    if (!dev->msg_timeout_ms) {
        error_setg(errp, "vfio-user-pci: socket '%s': x-msg-timeout must "
                   "be at least 1 (milliseconds)", dev->socket_name);
        return;
    }
    dev->irq_mode = -1;
    dev->mappings = g_array_new(false, true, sizeof(VfuPciDmaMap));

    /*
     * The device's state lives in the server, which we cannot yet save or
     * restore: a migration or snapshot would lose it without a word.
     */
    error_setg(&dev->migration_blocker, "vfio-user-pci %s (socket %s) "
               "cannot be migrated: its state lives in the vfio-user "
               "server", dev_name(dev), dev->socket_name);
    if (migrate_add_blocker(dev->migration_blocker, errp) < 0) {
        g_clear_pointer(&dev->migration_blocker, error_free);
        goto fail;
    }

    if (!vfu_pci_connect(dev, errp) ||
        !vfu_pci_get_device_info(dev, errp) ||
        !vfu_pci_get_region_info(dev, VFU_PCI_CONFIG_REGION,
                                 &dev->config_region, NULL, errp)) {
        goto fail;
    }
    /* some servers leave the config region's access flags clear */
    if (dev->config_region.size < PCI_CONFIG_SPACE_SIZE) {
        error_setg(errp, "config space region of %" PRIu64 " bytes is too "
                   "small", dev->config_region.size);
        goto fail;
    }
    if (vfu_pci_region_read(dev, VFU_PCI_CONFIG_REGION, 0, srv_config,
                            sizeof(srv_config), errp)) {
        goto fail;
    }
    if ((srv_config[PCI_HEADER_TYPE] & ~PCI_HEADER_TYPE_MULTI_FUNCTION) !=
        PCI_HEADER_TYPE_NORMAL) {
        error_setg(errp, "only type 0 (normal) PCI headers are supported");
        goto fail;
    }
    for (int i = VFU_PCI_INTX_IRQ; i <= VFU_PCI_MSIX_IRQ; i++) {
        if (!vfu_pci_get_irq_info(dev, i, errp)) {
            goto fail;
        }
    }

    /* start from the server's config space; QEMU then claims its parts */
    memcpy(pdev->config, srv_config, PCI_CONFIG_SPACE_SIZE);
    pdev->config[PCI_HEADER_TYPE] &= ~PCI_HEADER_TYPE_MULTI_FUNCTION;
    memset(pdev->config + PCI_BASE_ADDRESS_0, 0, 24);
    memset(pdev->config + PCI_ROM_ADDRESS, 0, 4);
    pci_set_word(pdev->config + PCI_COMMAND, 0);
    if (!dev->num_irqs[VFU_PCI_INTX_IRQ]) {
        pdev->config[PCI_INTERRUPT_PIN] = 0;
    }
    for (int i = 0; i < ARRAY_SIZE(emulated_ranges); i++) {
        memset(dev->emulated + emulated_ranges[i][0], 1, emulated_ranges[i][1]);
    }

    if (!vfu_pci_setup_bars(dev, srv_config, errp) ||
        !vfu_pci_setup_caps(dev, errp) ||
        !vfu_pci_irq_realize(dev, errp)) {
        goto fail;
    }
    vfu_pci_dma_realize(dev);
    vfu_pci_ioeventfds_realize(dev);
    if (dev->dead) {
        error_setg(errp, "the server closed the connection");
        goto fail;
    }
    vfu_pci_watch(dev, true);
    return;

fail:
    error_prepend(errp, "vfio-user-pci: socket '%s': ", dev->socket_name);
    vfu_pci_exit(pdev);
}

/* Undo realize, also a partial one. */
static void vfu_pci_exit(PCIDevice *pdev)
{
    VfuPciDevice *dev = VFIO_USER_PCI(pdev);

    vfu_pci_watch(dev, false);
    vfu_pci_dma_exit(dev);
    vfu_pci_irq_exit(dev);
    vfu_pci_ioeventfds_exit(dev);
    for (int i = 0; i < PCI_NUM_REGIONS; i++) {
        vfu_pci_bar_unmap(&dev->bars[i]);
    }
    if (dev->msix_cap) {
        msix_uninit(pdev, &dev->bars[dev->msix_table_bar].mr,
                    &dev->bars[dev->msix_pba_bar].mr);
        dev->msix_cap = 0;
    }
    if (dev->msi_cap) {
        msi_uninit(pdev);
        dev->msi_cap = 0;
    }
    g_clear_pointer(&dev->twin, vfu_conn_free);
    g_clear_pointer(&dev->conn, vfu_conn_free);
    if (dev->migration_blocker) {
        migrate_del_blocker(dev->migration_blocker);
        g_clear_pointer(&dev->migration_blocker, error_free);
    }
}

static void vfu_pci_finalize(Object *obj)
{
    VfuPciDevice *dev = VFIO_USER_PCI(obj);

    if (dev->mappings) {
        g_array_free(dev->mappings, true);
    }
    qapi_free_SocketAddress(dev->socket);
    g_free(dev->socket_name);
    for (int i = 0; i < PCI_NUM_REGIONS; i++) {
        vfu_pci_bar_mmap_free(&dev->bars[i]);
    }
}

static void vfu_pci_reset(DeviceState *d)
{
    VfuPciDevice *dev = VFIO_USER_PCI(d);
    Error *err = NULL;

    if (!dev->conn || dev->dead) {
        return;
    }
    trace_vfio_user_pci_reset(dev_name(dev));
    vfu_pci_irq_reset(dev);
    if ((dev->info.flags & VFU_DEV_F_RESET) &&
        vfu_pci_call(dev, VFU_CMD_DEVICE_RESET, NULL, 0, NULL, 0, NULL,
                     &err)) {
        warn_report_err(err);
    }
}

static Property vfu_pci_properties[] = {
    DEFINE_PROP_BOOL("secure-dma", VfuPciDevice, secure_dma, false),
    DEFINE_PROP_BOOL("x-no-mmap", VfuPciDevice, no_mmap, false),
    DEFINE_PROP_BOOL("x-no-ioeventfd", VfuPciDevice, no_ioeventfd, false),
    DEFINE_PROP_UINT32("x-msg-timeout", VfuPciDevice, msg_timeout_ms,
                       VFU_DEFAULT_TIMEOUT_MS),
    DEFINE_PROP_BOOL("x-posted-writes", VfuPciDevice, posted_writes, true),
    DEFINE_PROP_BOOL("x-twin-socket", VfuPciDevice, twin_socket, true),
    DEFINE_PROP_END_OF_LIST(),
};

/*
 * "socket": a path, as the plain string of -device socket=PATH, or a
 * SocketAddress of type unix or fd, as in -device/device_add JSON.
 */
static void vfu_pci_set_socket(Object *obj, Visitor *v, const char *name,
                               void *opaque, Error **errp)
{
    VfuPciDevice *dev = VFIO_USER_PCI(obj);
    g_autofree char *display = NULL;
    SocketAddress *addr;

    if (DEVICE(obj)->realized) {
        error_setg(errp, "'socket' cannot be changed on a realized device");
        return;
    }
    addr = vfu_visit_socket(v, name, &display, errp);
    if (!addr) {
        return;
    }
    qapi_free_SocketAddress(dev->socket);
    dev->socket = addr;
    g_free(dev->socket_name);
    dev->socket_name = g_steal_pointer(&display);
}

static void vfu_pci_get_socket(Object *obj, Visitor *v, const char *name,
                               void *opaque, Error **errp)
{
    vfu_visit_socket_out(v, name, &VFIO_USER_PCI(obj)->socket, errp);
}

static void vfu_pci_class_init(ObjectClass *klass, void *data)
{
    DeviceClass *dc = DEVICE_CLASS(klass);
    PCIDeviceClass *pdc = PCI_DEVICE_CLASS(klass);

    dc->desc = "PCI device served by a vfio-user server";
    dc->reset = vfu_pci_reset;
    set_bit(DEVICE_CATEGORY_MISC, dc->categories);
    device_class_set_props(dc, vfu_pci_properties);
    object_class_property_add(klass, "socket", "str or SocketAddress",
                              vfu_pci_get_socket, vfu_pci_set_socket, NULL,
                              NULL);
    object_class_property_set_description(klass, "socket",
        "the vfio-user server's UNIX socket (required): a path, or a "
        "SocketAddress of type unix or fd (a connected socket)");
    object_class_property_set_description(klass, "secure-dma",
        "never pass guest memory fds: every DMA is a DMA_READ/DMA_WRITE "
        "message checked against the device's mappings");
    object_class_property_set_description(klass, "x-no-mmap",
        "serve every BAR access with a message, even where the server "
        "offers the BAR for mmap");
    object_class_property_set_description(klass, "x-no-ioeventfd",
        "send every BAR write as a message, even to doorbells the server "
        "offers as ioeventfds");
    object_class_property_set_description(klass, "x-posted-writes",
        "send BAR writes without waiting for the server to acknowledge "
        "them (No_reply); config space writes are always acknowledged");
    object_class_property_set_description(klass, "x-twin-socket",
        "propose the twin_socket capability: a server that takes it sends "
        "its DMA requests over a second socket of their own, apart from "
        "our requests and their replies");
    object_class_property_set_description(klass, "x-msg-timeout",
        "milliseconds the server may stay silent while a request waits "
        "for its reply; DMA requests served meanwhile restart the wait, "
        "up to 12 times this for the request, and the time to connect; "
        "at least 1");
    pdc->realize = vfu_pci_realize;
    pdc->exit = vfu_pci_exit;
    pdc->config_read = vfu_pci_read_config;
    pdc->config_write = vfu_pci_write_config;
}

static const TypeInfo vfu_pci_info = {
    .name = TYPE_VFIO_USER_PCI,
    .parent = TYPE_PCI_DEVICE,
    .instance_size = sizeof(VfuPciDevice),
    .instance_finalize = vfu_pci_finalize,
    .class_init = vfu_pci_class_init,
    .interfaces = (InterfaceInfo[]) {
        { INTERFACE_CONVENTIONAL_PCI_DEVICE },
        { }
    },
};

static void vfu_pci_register_types(void)
{
    type_register_static(&vfu_pci_info);
}

type_init(vfu_pci_register_types)
