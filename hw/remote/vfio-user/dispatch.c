/*
 * vfio-user-server: the client's requests, and the device's DMA to
 * client memory that no fd maps.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/bswap.h"
#include "hw/pci/pci.h"
#include "hw/pci/pci_host.h"
#include "vfio-user/socket.h"
#include "server-internal.h"
#include "trace.h"

/* ---- requests ------------------------------------------------------------- */

static int vfu_handle_get_info(VfuServer *s, VfuConn *conn, VfuMsg *msg,
                               Error **errp)
{
    VfuDeviceInfo *req = (VfuDeviceInfo *)msg->payload;
    VfuDeviceInfo info = {
        .argsz = sizeof(info),
        .flags = VFU_DEV_F_PCI | VFU_DEV_F_RESET,
        .num_regions = VFU_PCI_NUM_REGIONS,
        .num_irqs = VFU_PCI_NUM_IRQS,
    };

    if (req->argsz < sizeof(info)) {
        error_setg(errp, "DEVICE_GET_INFO: argsz %u too small", req->argsz);
        return -EINVAL;
    }
    return vfu_conn_reply(conn, msg, &info, sizeof(info), NULL, 0, errp);
}

static int vfu_handle_region_info(VfuServer *s, VfuConn *conn, VfuMsg *msg,
                                  Error **errp)
{
    VfuRegionInfo *req = (VfuRegionInfo *)msg->payload;
    g_autofree VfuRegionInfo *info = NULL;
    VfuCapSparseMmap *cap;
    VfuMmapScan scan;
    size_t len;

    if (req->argsz < sizeof(*info)) {
        error_setg(errp, "DEVICE_GET_REGION_INFO: argsz %u too small",
                   req->argsz);
        return -EINVAL;
    }
    if (req->index >= VFU_PCI_NUM_REGIONS) {
        error_setg(errp, "DEVICE_GET_REGION_INFO: bad index %u", req->index);
        return -EINVAL;
    }
    vfu_bar_mmap_areas(s, req->index, &scan);
    if (scan.unsealed && !s->warned_unsealed_bar) {
        warn_report("vfio-user-server %s: BAR%u memory is not sealed against "
                    "shrinking; not offered for mmap (use "
                    "memory-backend-memfd)", vfu_server_id(s), req->index);
        s->warned_unsealed_bar = true;
    }
    if (!vfu_conn_peer_limits(conn)->max_msg_fds) {
        /* the offer is an fd, and this client takes none */
        scan.n = 0;
    }
    len = sizeof(*info) +
          (scan.n ? sizeof(*cap) + scan.n * sizeof(cap->areas[0]) : 0);
    info = g_malloc0(len);
    info->argsz = len;
    info->index = req->index;
    info->size = vfu_region_size(s, req->index);
    if (info->size) {
        info->flags = VFU_REGION_F_READ;
        if (req->index != VFU_PCI_ROM_REGION) {
            info->flags |= VFU_REGION_F_WRITE;
        }
    }
    trace_vfio_user_srv_region_info(vfu_server_id(s), info->index, info->size,
                                    info->flags, scan.n);
    if (!scan.n) {
        return vfu_conn_reply(conn, msg, info, sizeof(*info), NULL, 0, errp);
    }
    if (req->argsz < len) {
        /* like VFIO: say how much room the client must offer */
        return vfu_conn_reply(conn, msg, info, sizeof(*info), NULL, 0, errp);
    }
    info->flags |= VFU_REGION_F_MMAP | VFU_REGION_F_CAPS;
    info->cap_offset = sizeof(*info);
    info->offset = scan.base;
    cap = (VfuCapSparseMmap *)(info + 1);
    cap->header.id = VFU_REGION_CAP_SPARSE_MMAP;
    cap->header.version = 1;
    cap->nr_areas = scan.n;
    memcpy(cap->areas, scan.areas, scan.n * sizeof(cap->areas[0]));
    return vfu_conn_reply(conn, msg, info, len, &scan.fd, 1, errp);
}

static int vfu_handle_region_io_fds(VfuServer *s, VfuConn *conn, VfuMsg *msg,
                                    Error **errp)
{
    VfuRegionIoFds *req = (VfuRegionIoFds *)msg->payload;
    struct QEMU_PACKED {
        VfuRegionIoFds hdr;
        VfuSubRegionIoFd subs[VFU_SERVER_MAX_IOFDS];
    } reply = { .hdr = { .index = req->index } };
    int fds[VFU_SERVER_MAX_IOFDS];
    unsigned max = MIN(vfu_conn_peer_limits(conn)->max_msg_fds,
                       VFU_SERVER_MAX_IOFDS);
    unsigned n = 0;
    size_t len;

    if (req->argsz < sizeof(reply.hdr)) {
        error_setg(errp, "DEVICE_GET_REGION_IO_FDS: argsz %u too small",
                   req->argsz);
        return -EINVAL;
    }
    if (req->index >= VFU_PCI_NUM_REGIONS) {
        error_setg(errp, "DEVICE_GET_REGION_IO_FDS: bad index %u", req->index);
        return -EINVAL;
    }
    if (req->index < VFU_PCI_ROM_REGION) {
        n = vfu_iofds_get(s->iofds, req->index, reply.subs, fds, max);
    }
    len = sizeof(reply.hdr) + n * sizeof(reply.subs[0]);
    reply.hdr.argsz = len;
    trace_vfio_user_srv_region_io_fds(vfu_server_id(s), req->index, n);
    if (req->argsz < len) {
        /* like VFIO: say how much room the client must offer */
        return vfu_conn_reply(conn, msg, &reply.hdr, sizeof(reply.hdr), NULL,
                              0, errp);
    }
    reply.hdr.count = n;
    return vfu_conn_reply(conn, msg, &reply, len, fds, n, errp);
}

static int vfu_handle_irq_info(VfuServer *s, VfuConn *conn, VfuMsg *msg,
                               Error **errp)
{
    VfuIrqInfo *req = (VfuIrqInfo *)msg->payload;
    VfuIrqInfo info = { .argsz = sizeof(info) };

    if (req->argsz < sizeof(info)) {
        error_setg(errp, "DEVICE_GET_IRQ_INFO: argsz %u too small", req->argsz);
        return -EINVAL;
    }
    if (req->index >= VFU_PCI_NUM_IRQS) {
        error_setg(errp, "DEVICE_GET_IRQ_INFO: bad index %u", req->index);
        return -EINVAL;
    }
    info.index = req->index;
    info.count = vfu_irqs_count(s->irqs, req->index);
    info.flags = vfu_irqs_flags(s->irqs, req->index);
    return vfu_conn_reply(conn, msg, &info, sizeof(info), NULL, 0, errp);
}

static int vfu_handle_region_read(VfuServer *s, VfuConn *conn, VfuMsg *msg,
                                  Error **errp)
{
    VfuRegionAccess *req = (VfuRegionAccess *)msg->payload;
    g_autofree VfuRegionAccess *reply = NULL;
    int ret;

    ret = vfu_region_check(s, req->region, req->offset, req->count, errp);
    if (ret) {
        return ret;
    }
    reply = g_malloc0(sizeof(*reply) + req->count);
    *reply = *req;
    ret = vfu_region_rw(s, req->region, req->offset, reply->data, req->count,
                        false, errp);
    trace_vfio_user_srv_region_read(vfu_server_id(s), req->region,
                                    req->offset, req->count, ret);
    if (ret) {
        return ret;
    }
    return vfu_conn_reply(conn, msg, reply, sizeof(*reply) + req->count,
                          NULL, 0, errp);
}

static int vfu_handle_region_write(VfuServer *s, VfuConn *conn, VfuMsg *msg,
                                   Error **errp)
{
    VfuRegionAccess *req = (VfuRegionAccess *)msg->payload;
    VfuRegionAccess reply;
    int ret;

    ret = vfu_region_check(s, req->region, req->offset, req->count, errp);
    if (ret) {
        return ret;
    }
    reply = *req;
    ret = vfu_region_rw(s, req->region, req->offset, req->data, req->count,
                        true, errp);
    trace_vfio_user_srv_region_write(vfu_server_id(s), req->region,
                                     req->offset, req->count, ret);
    if (ret) {
        return ret;
    }
    return vfu_conn_reply(conn, msg, &reply, sizeof(reply), NULL, 0, errp);
}

static int vfu_handle_write_multi(VfuServer *s, VfuConn *conn, VfuMsg *msg,
                                  Error **errp)
{
    VfuWriteMulti *req = (VfuWriteMulti *)msg->payload;
    uint64_t wr_cnt = req->wr_cnt;
    int ret;

    /* all or nothing: check every entry before the first write */
    for (uint64_t i = 0; i < wr_cnt; i++) {
        ret = vfu_region_check(s, req->wrs[i].region, req->wrs[i].offset,
                               req->wrs[i].count, errp);
        if (ret) {
            error_prepend(errp, "REGION_WRITE_MULTI entry %" PRIu64 ": ", i);
            return ret;
        }
    }
    for (uint64_t i = 0; i < wr_cnt; i++) {
        ret = vfu_region_rw(s, req->wrs[i].region, req->wrs[i].offset,
                            req->wrs[i].data, req->wrs[i].count, true, errp);
        if (ret) {
            return ret;
        }
    }
    trace_vfio_user_srv_write_multi(vfu_server_id(s), wr_cnt);
    return vfu_conn_reply(conn, msg, &wr_cnt, sizeof(wr_cnt), NULL, 0, errp);
}

static int vfu_handle_dma_map(VfuServer *s, VfuConn *conn, VfuMsg *msg,
                              Error **errp)
{
    VfuDmaMap *req = (VfuDmaMap *)msg->payload;
    VfuDmaLimits lim = {
        .max_maps = vfu_conn_local_limits(conn)->max_dma_maps,
        .pgsize = VFU_SERVER_PGSIZE,
        .max_map_size = s->max_dma_map_size,
        .max_total_size = s->max_dma_total_size,
    };
    int fd = msg->nfds ? vfu_msg_steal_fd(msg, 0) : -1;
    /*
     * A client could truncate an unsealed file and crash this process, and
     * every device in it, at the device's next access: reach such memory
     * by message unless told to trust the client.
     */
    bool unsealed = fd >= 0 && !vfu_fd_is_shrink_sealed(fd);
    int ret;

    ret = vfu_dma_space_map(s->dma, req, fd,
                            !unsealed || s->map_unsealed_fds, &lim, errp);
    if (ret) {
        return ret;
    }
    if (unsealed && !s->map_unsealed_fds) {
        trace_vfio_user_srv_dma_unsealed(vfu_server_id(s), req->address,
                                         req->size);
        if (!s->warned_unsealed) {
            warn_report("vfio-user-server %s: the client's DMA memory is not "
                        "sealed against shrinking; reaching it by message "
                        "(map-unsealed-fds=on maps it)", vfu_server_id(s));
            s->warned_unsealed = true;
        }
    }
    return vfu_conn_reply(conn, msg, NULL, 0, NULL, 0, errp);
}

static int vfu_handle_dma_unmap(VfuServer *s, VfuConn *conn, VfuMsg *msg,
                                Error **errp)
{
    VfuDmaUnmap reply = *(VfuDmaUnmap *)msg->payload;
    int ret;

    if (reply.argsz < sizeof(reply)) {
        error_setg(errp, "DMA_UNMAP: argsz %u too small", reply.argsz);
        return -EINVAL;
    }
    ret = vfu_dma_space_unmap(s->dma, &reply, VFU_SERVER_PGSIZE, errp);
    if (ret) {
        return ret;
    }
    reply.argsz = sizeof(reply);
    return vfu_conn_reply(conn, msg, &reply, sizeof(reply), NULL, 0, errp);
}

static int vfu_handle_set_irqs(VfuServer *s, VfuConn *conn, VfuMsg *msg,
                               Error **errp)
{
    int ret = vfu_irqs_set(s->irqs, (VfuIrqSet *)msg->payload, msg->fds,
                           msg->nfds, errp);

    if (ret) {
        return ret;
    }
    return vfu_conn_reply(conn, msg, NULL, 0, NULL, 0, errp);
}

static int vfu_handle_reset(VfuServer *s, VfuConn *conn, VfuMsg *msg,
                            Error **errp)
{
    trace_vfio_user_srv_reset(vfu_server_id(s), "request");
    pci_device_reset(s->pdev);
    /* memory decoding is off again */
    vfu_server_place_bars(s, true);
    return vfu_conn_reply(conn, msg, NULL, 0, NULL, 0, errp);
}

int vfu_server_request(VfuConn *conn, VfuMsg *msg, void *opaque)
{
    VfuServer *s = opaque;
    Error *err = NULL;
    int ret;

    trace_vfio_user_srv_request(vfu_server_id(s), msg->hdr.msg_id,
                                vfu_command_name(msg->hdr.command));
    switch (msg->hdr.command) {
    case VFU_CMD_VERSION:
        error_setg(&err, "VERSION was negotiated already");
        ret = -EINVAL;
        break;
    case VFU_CMD_DMA_MAP:
        ret = vfu_handle_dma_map(s, conn, msg, &err);
        break;
    case VFU_CMD_DMA_UNMAP:
        ret = vfu_handle_dma_unmap(s, conn, msg, &err);
        break;
    case VFU_CMD_DEVICE_GET_INFO:
        ret = vfu_handle_get_info(s, conn, msg, &err);
        break;
    case VFU_CMD_DEVICE_GET_REGION_INFO:
        ret = vfu_handle_region_info(s, conn, msg, &err);
        break;
    case VFU_CMD_DEVICE_GET_REGION_IO_FDS:
        ret = vfu_handle_region_io_fds(s, conn, msg, &err);
        break;
    case VFU_CMD_DEVICE_GET_IRQ_INFO:
        ret = vfu_handle_irq_info(s, conn, msg, &err);
        break;
    case VFU_CMD_DEVICE_SET_IRQS:
        ret = vfu_handle_set_irqs(s, conn, msg, &err);
        break;
    case VFU_CMD_REGION_READ:
        ret = vfu_handle_region_read(s, conn, msg, &err);
        break;
    case VFU_CMD_REGION_WRITE:
        ret = vfu_handle_region_write(s, conn, msg, &err);
        break;
    case VFU_CMD_REGION_WRITE_MULTI:
        ret = vfu_handle_write_multi(s, conn, msg, &err);
        break;
    case VFU_CMD_DEVICE_RESET:
        ret = vfu_handle_reset(s, conn, msg, &err);
        break;
    case VFU_CMD_DMA_READ:
    case VFU_CMD_DMA_WRITE:
        error_setg(&err, "%s goes from server to client",
                   vfu_command_name(msg->hdr.command));
        ret = -EINVAL;
        break;
    case VFU_CMD_DEVICE_FEATURE:
    case VFU_CMD_MIG_DATA_READ:
    case VFU_CMD_MIG_DATA_WRITE:
        error_setg(&err, "migration is not supported");
        ret = -ENOTSUP;
        break;
    default:
        error_setg(&err, "unknown command");
        ret = -ENOSYS;
        break;
    }
    if (ret) {
        trace_vfio_user_srv_request_failed(vfu_server_id(s), msg->hdr.msg_id,
                                           vfu_command_name(msg->hdr.command),
                                           -ret,
                                           err ? error_get_pretty(err) : "");
    }
    error_free(err);
    return ret;
}

/* ---- DMA to client memory without an fd ---------------------------------- */

MemTxResult vfu_server_dma_peer(void *opaque, uint64_t addr, void *buf,
                                uint64_t len, bool is_write)
{
    VfuServer *s = opaque;
    uint8_t *p = buf;

    while (len) {
        VfuConn *conn = vfu_server_dma_conn(s);
        g_autoptr(VfuMsg) reply = NULL;
        g_autofree VfuDmaAccess *req = NULL;
        Error *err = NULL;
        uint64_t chunk, max;
        int ret;

        if (!s->conn || !vfu_server_negotiated(s) ||
            vfu_conn_is_broken(s->conn) || vfu_conn_is_broken(conn)) {
            trace_vfio_user_srv_dma_peer_failed(vfu_server_id(s), addr, len,
                                                "no client");
            return MEMTX_ERROR;
        }
        /*
         * The client takes requests of up to its limit, and the reply to a
         * DMA_READ must fit ours, or we would drop the client for it.
         */
        max = MIN(vfu_conn_peer_limits(conn)->max_data_xfer_size,
                  vfu_conn_local_limits(conn)->max_data_xfer_size);
        chunk = MIN(len, max);
        req = g_malloc0(sizeof(*req) + (is_write ? chunk : 0));
        req->address = addr;
        req->count = chunk;
        if (is_write) {
            memcpy(req->data, p, chunk);
        }
        trace_vfio_user_srv_dma_peer(vfu_server_id(s), addr, chunk, is_write);
        if (is_write) {
            /*
             * Like a posted PCI write, a DMA_WRITE is not waited for: its
             * reply comes later, and interrupts wait for all of them (see
             * vfu_server_irq_flush()).  The client serves requests in
             * order, so a later DMA_READ or reply of ours sees the data.
             */
            ret = vfu_srv_call_async(conn, VFU_CMD_DMA_WRITE, req,
                                     sizeof(*req) + chunk, &err);
        } else {
            ret = vfu_srv_call(conn, VFU_CMD_DMA_READ, req, sizeof(*req),
                               &reply, &err);
        }
        if (ret) {
            trace_vfio_user_srv_dma_peer_failed(vfu_server_id(s), addr, chunk,
                                                error_get_pretty(err));
            error_free(err);
            return MEMTX_ERROR;
        }
        if (!is_write) {
            VfuDmaAccess *a = (VfuDmaAccess *)reply->payload;

            if (reply->len != sizeof(*a) + chunk || a->address != addr ||
                a->count != chunk) {
                trace_vfio_user_srv_dma_peer_failed(vfu_server_id(s), addr,
                                                    chunk,
                                                    "reply does not match");
                return MEMTX_ERROR;
            }
            memcpy(p, a->data, chunk);
        }
        p += chunk;
        addr += chunk;
        len -= chunk;
    }
    return MEMTX_OK;
}

/*
 * The DMA_WRITEs still in flight must land before an interrupt does,
 * and, on a twin socket, before a reply on the main one.
 */
void vfu_server_irq_flush(void *opaque)
{
    VfuServer *s = opaque;
    VfuConn *conn = s->conn ? vfu_server_dma_conn(s) : NULL;
    Error *err = NULL;

    if (!conn || vfu_conn_is_broken(conn)) {
        return;
    }
    if (vfu_srv_flush(conn, &err)) {
        /* a failed posted write: the device is not told, as with PCI */
        trace_vfio_user_srv_dma_peer_failed(vfu_server_id(s), 0, 0,
                                            error_get_pretty(err));
        error_free(err);
    }
}

/* A reply on the main socket: our DMA_WRITEs on the twin go first */
void vfu_server_reply_barrier(VfuConn *conn, void *opaque)
{
    VfuServer *s = opaque;
    unsigned pending = s->twin ? vfu_srv_async_pending(s->twin) : 0;

    if (pending) {
        trace_vfio_user_srv_reply_barrier(vfu_server_id(s), pending);
        vfu_server_irq_flush(s);
    }
}
