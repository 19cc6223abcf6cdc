/*
 * vfio-user message codec, shared by the client and the server.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/bswap.h"
#include "qapi/error.h"
#include "qapi/qmp/qdict.h"
#include "qapi/qmp/qjson.h"
#include "qapi/qmp/qnum.h"
#include "qapi/qmp/qbool.h"
#include "vfio-user/message.h"

static const char *const command_names[] = {
    [VFU_CMD_VERSION] = "VERSION",
    [VFU_CMD_DMA_MAP] = "DMA_MAP",
    [VFU_CMD_DMA_UNMAP] = "DMA_UNMAP",
    [VFU_CMD_DEVICE_GET_INFO] = "DEVICE_GET_INFO",
    [VFU_CMD_DEVICE_GET_REGION_INFO] = "DEVICE_GET_REGION_INFO",
    [VFU_CMD_DEVICE_GET_REGION_IO_FDS] = "DEVICE_GET_REGION_IO_FDS",
    [VFU_CMD_DEVICE_GET_IRQ_INFO] = "DEVICE_GET_IRQ_INFO",
    [VFU_CMD_DEVICE_SET_IRQS] = "DEVICE_SET_IRQS",
    [VFU_CMD_REGION_READ] = "REGION_READ",
    [VFU_CMD_REGION_WRITE] = "REGION_WRITE",
    [VFU_CMD_DMA_READ] = "DMA_READ",
    [VFU_CMD_DMA_WRITE] = "DMA_WRITE",
    [VFU_CMD_DEVICE_RESET] = "DEVICE_RESET",
    [VFU_CMD_DIRTY_PAGES] = "DIRTY_PAGES",
    [VFU_CMD_REGION_WRITE_MULTI] = "REGION_WRITE_MULTI",
    [VFU_CMD_DEVICE_FEATURE] = "DEVICE_FEATURE",
    [VFU_CMD_MIG_DATA_READ] = "MIG_DATA_READ",
    [VFU_CMD_MIG_DATA_WRITE] = "MIG_DATA_WRITE",
};

const char *vfu_command_name(unsigned cmd)
{
    if (cmd < ARRAY_SIZE(command_names) && command_names[cmd]) {
        return command_names[cmd];
    }
    return "UNKNOWN";
}

void vfu_limits_default(VfuLimits *l)
{
    *l = (VfuLimits) {
        .max_msg_fds = VFU_DEFAULT_MAX_MSG_FDS,
        .max_data_xfer_size = VFU_DEFAULT_MAX_DATA_XFER_SIZE,
        .max_dma_maps = VFU_DEFAULT_MAX_DMA_MAPS,
        .pgsizes = VFU_DEFAULT_PGSIZES,
        .write_multiple = false,
        .twin_socket = false,
        .twin_fd_index = -1,
    };
}

void vfu_msg_free(VfuMsg *msg)
{
    if (!msg) {
        return;
    }
    for (size_t i = 0; i < msg->nfds; i++) {
        if (msg->fds[i] >= 0) {
            close(msg->fds[i]);
        }
    }
    g_free(msg->fds);
    g_free(msg->payload);
    g_free(msg);
}

int vfu_msg_steal_fd(VfuMsg *msg, size_t i)
{
    int fd;

    if (i >= msg->nfds) {
        return -1;
    }
    fd = msg->fds[i];
    msg->fds[i] = -1;
    return fd;
}

size_t vfu_max_msg_size(const VfuLimits *local)
{
    /* data transfers carry at most a 16-byte access header */
    return sizeof(VfuHeader) +
           MAX(local->max_data_xfer_size + sizeof(VfuRegionAccess),
               MAX(VFU_MAX_CTRL_PAYLOAD, VFU_MAX_JSON_SIZE + sizeof(VfuVersion)));
}

bool vfu_header_decode(const void *wire, VfuHeader *hdr, size_t max_size,
                       Error **errp)
{
    const VfuHeader *w = wire;
    unsigned type;

    hdr->msg_id = le16_to_cpu(w->msg_id);
    hdr->command = le16_to_cpu(w->command);
    hdr->size = le32_to_cpu(w->size);
    hdr->flags = le32_to_cpu(w->flags);
    hdr->error = le32_to_cpu(w->error);

    if (hdr->size < sizeof(VfuHeader)) {
        error_setg(errp, "message size %" PRIu32 " is smaller than the header",
                   hdr->size);
        return false;
    }
    if (hdr->size > max_size) {
        error_setg(errp, "message size %" PRIu32 " exceeds the limit of %zu",
                   hdr->size, max_size);
        return false;
    }
    type = hdr->flags & VFU_F_TYPE_MASK;
    if (type != VFU_F_TYPE_COMMAND && type != VFU_F_TYPE_REPLY) {
        error_setg(errp, "unknown message type %u", type);
        return false;
    }
    if (hdr->flags & ~VFU_F_KNOWN) {
        error_setg(errp, "unknown header flags 0x%" PRIx32, hdr->flags);
        return false;
    }
    if (type == VFU_F_TYPE_COMMAND && (hdr->flags & VFU_F_ERROR)) {
        error_setg(errp, "error flag set on a command");
        return false;
    }
    if (type == VFU_F_TYPE_REPLY && (hdr->flags & VFU_F_NO_REPLY)) {
        error_setg(errp, "no-reply flag set on a reply");
        return false;
    }
    return true;
}

void vfu_header_encode(const VfuHeader *hdr, void *wire)
{
    VfuHeader *w = wire;

    w->msg_id = cpu_to_le16(hdr->msg_id);
    w->command = cpu_to_le16(hdr->command);
    w->size = cpu_to_le32(hdr->size);
    w->flags = cpu_to_le32(hdr->flags);
    w->error = cpu_to_le32(hdr->error);
}

/*
 * Byte order.  A layout string lists the widths of consecutive fields
 * ("448" = u32, u32, u64); swapping is its own inverse, so the same walk
 * serves decode and encode.  It is a no-op on little-endian hosts.
 */
static size_t swap_fields(uint8_t *p, size_t len, const char *layout)
{
    size_t off = 0;

    for (; *layout; layout++) {
        size_t w = *layout - '0';

        if (off + w > len) {
            break;
        }
        if (HOST_BIG_ENDIAN) {
            switch (w) {
            case 2:
                bswap16s((uint16_t *)(p + off));
                break;
            case 4:
                bswap32s((uint32_t *)(p + off));
                break;
            case 8:
                bswap64s((uint64_t *)(p + off));
                break;
            }
        }
        off += w;
    }
    return off;
}

static void swap_region_caps(uint8_t *p, size_t len, bool to_host)
{
    VfuRegionInfo *info = (VfuRegionInfo *)p;
    uint32_t off;
    unsigned hops = 0;

    if (!HOST_BIG_ENDIAN || len < sizeof(*info)) {
        return;
    }
    off = info->cap_offset;     /* already host order (decode) or not */
    if (!to_host) {
        off = bswap32(off);
    }
    while (off && off + sizeof(VfuCapHeader) <= len && hops++ < 64) {
        VfuCapHeader *h = (VfuCapHeader *)(p + off);
        uint16_t id;
        uint32_t next;

        if (to_host) {
            swap_fields(p + off, len - off, "224");
            id = h->id;
            next = h->next;
        } else {
            id = h->id;
            next = h->next;
            swap_fields(p + off, len - off, "224");
        }
        if (id == VFU_REGION_CAP_SPARSE_MMAP) {
            VfuCapSparseMmap *s = (VfuCapSparseMmap *)h;
            uint32_t n;

            if (off + sizeof(*s) > len) {
                break;
            }
            n = to_host ? bswap32(s->nr_areas) : s->nr_areas;
            swap_fields(p + off + sizeof(*h), len - off - sizeof(*h), "44");
            for (uint32_t i = 0; i < n; i++) {
                size_t a = off + sizeof(*s) + i * sizeof(VfuSparseMmapArea);
                if (a + sizeof(VfuSparseMmapArea) > len) {
                    break;
                }
                swap_fields(p + a, len - a, "88");
            }
        } else if (id == VFU_REGION_CAP_TYPE) {
            swap_fields(p + off + sizeof(*h), len - off - sizeof(*h), "44");
        }
        if (next <= off) {
            break;
        }
        off = next;
    }
}

static void swap_payload(unsigned cmd, bool reply, uint8_t *p, size_t len,
                         bool to_host)
{
    if (!HOST_BIG_ENDIAN) {
        return;
    }
    switch (cmd) {
    case VFU_CMD_VERSION:
        swap_fields(p, len, "22");
        break;
    case VFU_CMD_DMA_MAP:
        swap_fields(p, len, "44888");
        break;
    case VFU_CMD_DMA_UNMAP:
        swap_fields(p, len, "448888");
        break;
    case VFU_CMD_DEVICE_GET_INFO:
    case VFU_CMD_DEVICE_GET_IRQ_INFO:
        swap_fields(p, len, "4444");
        break;
    case VFU_CMD_DEVICE_GET_REGION_INFO:
        if (to_host) {
            swap_fields(p, len, "444488");
            swap_region_caps(p, len, true);
        } else {
            swap_region_caps(p, len, false);
            swap_fields(p, len, "444488");
        }
        break;
    case VFU_CMD_DEVICE_GET_REGION_IO_FDS: {
        uint32_t count;
        size_t entry;

        if (len < sizeof(VfuRegionIoFds)) {
            break;
        }
        if (!to_host) {
            count = ((VfuRegionIoFds *)p)->count;
        }
        swap_fields(p, len, "4444");
        if (to_host) {
            count = ((VfuRegionIoFds *)p)->count;
        }
        if (!reply || !count) {
            break;
        }
        entry = (len - sizeof(VfuRegionIoFds)) / count;
        for (uint32_t i = 0; entry >= sizeof(VfuSubRegionIoFd) && i < count; i++) {
            size_t o = sizeof(VfuRegionIoFds) + i * entry;
            swap_fields(p + o, len - o, "8844448");
        }
        break;
    }
    case VFU_CMD_DEVICE_SET_IRQS:
        swap_fields(p, len, "44444");
        break;
    case VFU_CMD_REGION_READ:
    case VFU_CMD_REGION_WRITE:
        swap_fields(p, len, "844");
        break;
    case VFU_CMD_DMA_READ:
    case VFU_CMD_DMA_WRITE:
        swap_fields(p, len, "88");
        break;
    case VFU_CMD_REGION_WRITE_MULTI: {
        uint64_t n;

        if (len < sizeof(VfuWriteMulti)) {
            break;
        }
        n = to_host ? bswap64(*(uint64_t *)p) : *(uint64_t *)p;
        swap_fields(p, len, "8");
        for (uint64_t i = 0; !reply && i < n; i++) {
            size_t o = sizeof(VfuWriteMulti) + i * sizeof(VfuWriteMultiEntry);
            if (o + sizeof(VfuWriteMultiEntry) > len) {
                break;
            }
            swap_fields(p + o, len - o, "844");
        }
        break;
    }
    case VFU_CMD_DEVICE_FEATURE:
    case VFU_CMD_MIG_DATA_READ:
    case VFU_CMD_MIG_DATA_WRITE:
        swap_fields(p, len, "44");
        break;
    }
}

void vfu_payload_encode(unsigned cmd, bool reply, void *payload, size_t len)
{
    swap_payload(cmd, reply, payload, len, false);
}

/* Payload checks: a peer's message must match the command's layout. */

static int check_size(const VfuMsg *msg, size_t min, size_t exact,
                      Error **errp)
{
    const char *what = vfu_msg_is_reply(msg) ? "reply" : "request";

    if (exact && msg->len != exact) {
        error_setg(errp, "%s %s: payload is %zu bytes, expected %zu",
                   vfu_command_name(msg->hdr.command), what, msg->len, exact);
        return -EINVAL;
    }
    if (msg->len < min) {
        error_setg(errp, "%s %s: payload is %zu bytes, expected at least %zu",
                   vfu_command_name(msg->hdr.command), what, msg->len, min);
        return -EINVAL;
    }
    return 0;
}

static int check_fds(const VfuMsg *msg, size_t max, Error **errp)
{
    if (msg->nfds > max) {
        error_setg(errp, "%s %s carries %zu file descriptors, at most %zu allowed",
                   vfu_command_name(msg->hdr.command),
                   vfu_msg_is_reply(msg) ? "reply" : "request",
                   msg->nfds, max);
        return -EINVAL;
    }
    return 0;
}

static int check_xfer(const VfuMsg *msg, uint64_t count,
                      const VfuLimits *local, Error **errp)
{
    if (count > local->max_data_xfer_size) {
        error_setg(errp, "%s: count %" PRIu64 " exceeds max_data_xfer_size %"
                   PRIu64, vfu_command_name(msg->hdr.command), count,
                   local->max_data_xfer_size);
        return -E2BIG;
    }
    return 0;
}

static int check_json(const VfuMsg *msg, Error **errp)
{
    size_t json_len = msg->len - sizeof(VfuVersion);

    if (json_len && !memchr(msg->payload + sizeof(VfuVersion), '\0', json_len)) {
        error_setg(errp, "VERSION: capabilities are not NUL-terminated");
        return -EINVAL;
    }
    return 0;
}

static int decode_request(VfuMsg *msg, const VfuLimits *local, Error **errp)
{
    uint8_t *p = msg->payload;
    int ret;

    switch (msg->hdr.command) {
    case VFU_CMD_VERSION:
        ret = check_size(msg, sizeof(VfuVersion), 0, errp) ?:
              check_fds(msg, 0, errp) ?: check_json(msg, errp);
        break;
    case VFU_CMD_DMA_MAP:
        ret = check_size(msg, 0, sizeof(VfuDmaMap), errp) ?:
              check_fds(msg, 1, errp);
        break;
    case VFU_CMD_DMA_UNMAP:
        ret = check_size(msg, sizeof(VfuDmaUnmap), 0, errp) ?:
              check_fds(msg, 0, errp);
        if (!ret && msg->len != sizeof(VfuDmaUnmap) &&
            msg->len != sizeof(VfuDmaUnmap) + sizeof(VfuDmaBitmap)) {
            ret = check_size(msg, 0, sizeof(VfuDmaUnmap), errp);
        }
        break;
    case VFU_CMD_DEVICE_GET_INFO:
        ret = check_size(msg, 0, sizeof(VfuDeviceInfo), errp) ?:
              check_fds(msg, 0, errp);
        break;
    case VFU_CMD_DEVICE_GET_REGION_INFO:
        ret = check_size(msg, 0, sizeof(VfuRegionInfo), errp) ?:
              check_fds(msg, 0, errp);
        break;
    case VFU_CMD_DEVICE_GET_REGION_IO_FDS:
        ret = check_size(msg, 0, sizeof(VfuRegionIoFds), errp) ?:
              check_fds(msg, 0, errp);
        break;
    case VFU_CMD_DEVICE_GET_IRQ_INFO:
        ret = check_size(msg, 0, sizeof(VfuIrqInfo), errp) ?:
              check_fds(msg, 0, errp);
        break;
    case VFU_CMD_DEVICE_SET_IRQS: {
        ret = check_size(msg, sizeof(VfuIrqSet), 0, errp);
        if (ret) {
            break;
        }
        swap_payload(msg->hdr.command, false, p, msg->len, true);
        VfuIrqSet *s = (VfuIrqSet *)p;
        if (s->argsz != msg->len) {
            error_setg(errp, "DEVICE_SET_IRQS: argsz %" PRIu32
                       " does not match payload size %zu", s->argsz, msg->len);
            return -EINVAL;
        }
        if (s->flags & VFU_IRQ_SET_DATA_BOOL) {
            ret = check_size(msg, 0, sizeof(*s) + (size_t)s->count, errp);
        } else {
            ret = check_size(msg, 0, sizeof(*s), errp);
        }
        if (!ret) {
            ret = check_fds(msg, (s->flags & VFU_IRQ_SET_DATA_EVENTFD) ?
                            MIN(s->count, local->max_msg_fds) : 0, errp);
        }
        if (!ret && msg->nfds && msg->nfds != s->count) {
            error_setg(errp, "DEVICE_SET_IRQS: %zu eventfds for %" PRIu32
                       " interrupts", msg->nfds, s->count);
            ret = -EINVAL;
        }
        return ret;
    }
    case VFU_CMD_REGION_READ:
        ret = check_size(msg, 0, sizeof(VfuRegionAccess), errp) ?:
              check_fds(msg, 0, errp);
        if (!ret) {
            swap_payload(msg->hdr.command, false, p, msg->len, true);
            return check_xfer(msg, ((VfuRegionAccess *)p)->count, local, errp);
        }
        break;
    case VFU_CMD_REGION_WRITE:
        ret = check_size(msg, sizeof(VfuRegionAccess), 0, errp) ?:
              check_fds(msg, 0, errp);
        if (!ret) {
            VfuRegionAccess *a = (VfuRegionAccess *)p;

            swap_payload(msg->hdr.command, false, p, msg->len, true);
            return check_xfer(msg, a->count, local, errp) ?:
                   check_size(msg, 0, sizeof(*a) + (size_t)a->count, errp);
        }
        break;
    case VFU_CMD_DMA_READ:
        ret = check_size(msg, 0, sizeof(VfuDmaAccess), errp) ?:
              check_fds(msg, 0, errp);
        if (!ret) {
            swap_payload(msg->hdr.command, false, p, msg->len, true);
            return check_xfer(msg, ((VfuDmaAccess *)p)->count, local, errp);
        }
        break;
    case VFU_CMD_DMA_WRITE:
        ret = check_size(msg, sizeof(VfuDmaAccess), 0, errp) ?:
              check_fds(msg, 0, errp);
        if (!ret) {
            VfuDmaAccess *a = (VfuDmaAccess *)p;

            swap_payload(msg->hdr.command, false, p, msg->len, true);
            return check_xfer(msg, a->count, local, errp) ?:
                   check_size(msg, 0, sizeof(*a) + a->count, errp);
        }
        break;
    case VFU_CMD_DEVICE_RESET:
        ret = check_size(msg, 0, 0, errp) ?: check_fds(msg, 0, errp);
        if (!ret && msg->len) {
            error_setg(errp, "DEVICE_RESET request has a %zu-byte payload",
                       msg->len);
            ret = -EINVAL;
        }
        break;
    case VFU_CMD_REGION_WRITE_MULTI: {
        VfuWriteMulti *m = (VfuWriteMulti *)p;

        ret = check_size(msg, sizeof(*m), 0, errp) ?: check_fds(msg, 0, errp);
        if (ret) {
            break;
        }
        swap_payload(msg->hdr.command, false, p, msg->len, true);
        if (m->wr_cnt == 0 || m->wr_cnt > VFU_WRITE_MULTI_MAX) {
            error_setg(errp, "REGION_WRITE_MULTI: wr_cnt %" PRIu64
                       " out of range 1..%d", m->wr_cnt, VFU_WRITE_MULTI_MAX);
            return -EINVAL;
        }
        ret = check_size(msg, 0, sizeof(*m) +
                         m->wr_cnt * sizeof(VfuWriteMultiEntry), errp);
        for (uint64_t i = 0; !ret && i < m->wr_cnt; i++) {
            if (m->wrs[i].count < 1 ||
                m->wrs[i].count > VFU_WRITE_MULTI_DATA_MAX) {
                error_setg(errp, "REGION_WRITE_MULTI: entry %" PRIu64
                           " has count %" PRIu32, i, m->wrs[i].count);
                ret = -EINVAL;
            }
        }
        return ret;
    }
    case VFU_CMD_DEVICE_FEATURE:
        ret = check_size(msg, sizeof(VfuDeviceFeature), 0, errp) ?:
              check_fds(msg, 0, errp);
        break;
    case VFU_CMD_MIG_DATA_READ:
        ret = check_size(msg, 0, sizeof(VfuMigData), errp) ?:
              check_fds(msg, 0, errp);
        break;
    case VFU_CMD_MIG_DATA_WRITE:
        ret = check_size(msg, sizeof(VfuMigData), 0, errp) ?:
              check_fds(msg, 0, errp);
        if (!ret) {
            VfuMigData *m = (VfuMigData *)p;

            swap_payload(msg->hdr.command, false, p, msg->len, true);
            return check_xfer(msg, m->size, local, errp) ?:
                   check_size(msg, 0, sizeof(*m) + (size_t)m->size, errp);
        }
        break;
    case VFU_CMD_DIRTY_PAGES:
    default:
        error_setg(errp, "unsupported command %u (%s)", msg->hdr.command,
                   vfu_command_name(msg->hdr.command));
        return -ENOSYS;
    }
    if (!ret) {
        swap_payload(msg->hdr.command, false, p, msg->len, true);
    }
    return ret;
}

static int decode_reply(VfuMsg *msg, const VfuLimits *local, Error **errp)
{
    uint8_t *p = msg->payload;
    int ret;

    if (msg->hdr.flags & VFU_F_ERROR) {
        /* An error reply is the header alone; ignore anything else. */
        return check_fds(msg, 0, errp);
    }

    switch (msg->hdr.command) {
    case VFU_CMD_VERSION:
        ret = check_size(msg, sizeof(VfuVersion), 0, errp) ?:
              check_fds(msg, 1, errp) ?: check_json(msg, errp);
        break;
    case VFU_CMD_DMA_MAP:
    case VFU_CMD_DEVICE_SET_IRQS:
    case VFU_CMD_DEVICE_RESET:
        ret = check_fds(msg, 0, errp);
        if (!ret && msg->len) {
            error_setg(errp, "%s reply has a %zu-byte payload, expected none",
                       vfu_command_name(msg->hdr.command), msg->len);
            ret = -EINVAL;
        }
        break;
    case VFU_CMD_DMA_UNMAP:
        ret = check_size(msg, sizeof(VfuDmaUnmap), 0, errp) ?:
              check_fds(msg, 0, errp);
        break;
    case VFU_CMD_DEVICE_GET_INFO:
        ret = check_size(msg, sizeof(VfuDeviceInfo), 0, errp) ?:
              check_fds(msg, 0, errp);
        break;
    case VFU_CMD_DEVICE_GET_REGION_INFO:
        /* libvfio-user sends its fd once per sparse mmap area */
        ret = check_size(msg, sizeof(VfuRegionInfo), 0, errp) ?:
              check_fds(msg, local->max_msg_fds, errp);
        break;
    case VFU_CMD_DEVICE_GET_REGION_IO_FDS:
        ret = check_size(msg, sizeof(VfuRegionIoFds), 0, errp) ?:
              check_fds(msg, local->max_msg_fds, errp);
        break;
    case VFU_CMD_DEVICE_GET_IRQ_INFO:
        ret = check_size(msg, sizeof(VfuIrqInfo), 0, errp) ?:
              check_fds(msg, 0, errp);
        break;
    case VFU_CMD_REGION_READ:
        ret = check_size(msg, sizeof(VfuRegionAccess), 0, errp) ?:
              check_fds(msg, 0, errp);
        if (!ret) {
            VfuRegionAccess *a = (VfuRegionAccess *)p;

            swap_payload(msg->hdr.command, true, p, msg->len, true);
            return check_xfer(msg, a->count, local, errp) ?:
                   check_size(msg, 0, sizeof(*a) + (size_t)a->count, errp);
        }
        break;
    case VFU_CMD_REGION_WRITE:
        ret = check_size(msg, sizeof(VfuRegionAccess), 0, errp) ?:
              check_fds(msg, 0, errp);
        break;
    case VFU_CMD_DMA_READ:
        ret = check_size(msg, sizeof(VfuDmaAccess), 0, errp) ?:
              check_fds(msg, 0, errp);
        if (!ret) {
            VfuDmaAccess *a = (VfuDmaAccess *)p;

            swap_payload(msg->hdr.command, true, p, msg->len, true);
            return check_xfer(msg, a->count, local, errp) ?:
                   check_size(msg, 0, sizeof(*a) + a->count, errp);
        }
        break;
    case VFU_CMD_DMA_WRITE:
        ret = check_size(msg, VFU_DMA_WRITE_REPLY_MIN_SIZE, 0, errp) ?:
              check_fds(msg, 0, errp);
        if (!ret && msg->len < sizeof(VfuDmaAccess)) {
            /* 0.9.1's 4-byte count: widen it so readers see a u64 */
            msg->payload = g_realloc(msg->payload, sizeof(VfuDmaAccess));
            memset(msg->payload + msg->len, 0, sizeof(VfuDmaAccess) - msg->len);
            msg->len = sizeof(VfuDmaAccess);
            p = msg->payload;
        }
        break;
    case VFU_CMD_REGION_WRITE_MULTI:
        ret = check_size(msg, 0, sizeof(VfuWriteMulti), errp) ?:
              check_fds(msg, 0, errp);
        break;
    case VFU_CMD_DEVICE_FEATURE:
        ret = check_size(msg, sizeof(VfuDeviceFeature), 0, errp) ?:
              check_fds(msg, 0, errp);
        break;
    case VFU_CMD_MIG_DATA_READ:
        ret = check_size(msg, sizeof(VfuMigData), 0, errp) ?:
              check_fds(msg, 0, errp);
        if (!ret) {
            VfuMigData *m = (VfuMigData *)p;

            swap_payload(msg->hdr.command, true, p, msg->len, true);
            return check_size(msg, 0, sizeof(*m) + (size_t)m->size, errp);
        }
        break;
    case VFU_CMD_MIG_DATA_WRITE:
        ret = check_size(msg, sizeof(VfuMigData), 0, errp) ?:
              check_fds(msg, 0, errp);
        break;
    default:
        error_setg(errp, "reply to unknown command %u", msg->hdr.command);
        return -EINVAL;
    }
    if (!ret) {
        swap_payload(msg->hdr.command, true, p, msg->len, true);
    }
    return ret;
}

int vfu_msg_decode(VfuMsg *msg, const VfuLimits *local, Error **errp)
{
    assert(msg->len == msg->hdr.size - sizeof(VfuHeader));
    if (vfu_msg_is_reply(msg)) {
        return decode_reply(msg, local, errp);
    }
    return decode_request(msg, local, errp);
}

/* VERSION capabilities, as JSON through QEMU's qobject. */

void *vfu_version_encode(uint16_t major, uint16_t minor,
                         const VfuLimits *caps, size_t *len)
{
    g_autoptr(QDict) root = qdict_new();
    QDict *c = qdict_new();
    g_autoptr(GString) json = NULL;
    VfuVersion *v;

    qdict_put_int(c, VFU_CAP_MAX_MSG_FDS, caps->max_msg_fds);
    qdict_put(c, VFU_CAP_MAX_DATA_XFER_SIZE,
              qnum_from_uint(caps->max_data_xfer_size));
    qdict_put_int(c, VFU_CAP_MAX_DMA_MAPS, caps->max_dma_maps);
    qdict_put(c, VFU_CAP_PGSIZES, qnum_from_uint(caps->pgsizes));
    if (caps->write_multiple) {
        qdict_put_bool(c, VFU_CAP_WRITE_MULTIPLE, true);
    }
    if (caps->twin_socket) {
        QDict *t = qdict_new();

        qdict_put_bool(t, VFU_CAP_TWIN_SUPPORTED, true);
        if (caps->twin_fd_index >= 0) {
            qdict_put_int(t, VFU_CAP_TWIN_FD_INDEX, caps->twin_fd_index);
        }
        qdict_put(c, VFU_CAP_TWIN_SOCKET, t);
    }
    qdict_put(root, VFU_CAP_CAPABILITIES, c);
    json = qobject_to_json(QOBJECT(root));

    *len = sizeof(*v) + json->len + 1;
    v = g_malloc0(*len);
    v->major = major;
    v->minor = minor;
    memcpy(v->data, json->str, json->len + 1);
    return v;
}

static bool get_uint_cap(QDict *caps, const char *name, uint64_t min,
                         uint64_t max, uint64_t *val, Error **errp)
{
    QObject *o = qdict_get(caps, name);
    QNum *n;

    if (!o) {
        return true;
    }
    n = qobject_to(QNum, o);
    if (!n || !qnum_get_try_uint(n, val)) {
        error_setg(errp, "VERSION: capability '%s' is not an unsigned integer",
                   name);
        return false;
    }
    if (*val < min || *val > max) {
        error_setg(errp, "VERSION: capability '%s' = %" PRIu64
                   " is out of range %" PRIu64 "..%" PRIu64,
                   name, *val, min, max);
        return false;
    }
    return true;
}

/* twin_socket: { "supported": bool, "fd_index": index of an fd we got } */
static bool parse_twin_socket(QObject *o, size_t nfds, VfuLimits *caps,
                              Error **errp)
{
    QDict *t = qobject_to(QDict, o);
    QObject *s;
    uint64_t val = UINT64_MAX;

    if (!t) {
        error_setg(errp, "VERSION: capability '%s' is not a JSON object",
                   VFU_CAP_TWIN_SOCKET);
        return false;
    }
    s = qdict_get(t, VFU_CAP_TWIN_SUPPORTED);
    if (s) {
        QBool *b = qobject_to(QBool, s);

        if (!b) {
            error_setg(errp, "VERSION: '%s.%s' is not a boolean",
                       VFU_CAP_TWIN_SOCKET, VFU_CAP_TWIN_SUPPORTED);
            return false;
        }
        caps->twin_socket = qbool_get_bool(b);
    }
    if (!caps->twin_socket) {
        return true;    /* an fd_index without the twin means nothing */
    }
    if (!get_uint_cap(t, VFU_CAP_TWIN_FD_INDEX, 0, UINT32_MAX, &val, errp)) {
        return false;
    }
    if (val == UINT64_MAX) {
        return true;    /* absent: a proposal */
    }
    if (val >= nfds) {
        error_setg(errp, "VERSION: '%s.%s' = %" PRIu64 " names none of the "
                   "%zu file descriptors of the message", VFU_CAP_TWIN_SOCKET,
                   VFU_CAP_TWIN_FD_INDEX, val, nfds);
        return false;
    }
    caps->twin_fd_index = val;
    return true;
}

bool vfu_version_parse(const void *payload, size_t len, size_t nfds,
                       uint16_t *major, uint16_t *minor, VfuLimits *caps,
                       Error **errp)
{
    const VfuVersion *v = payload;
    const char *json;
    size_t json_len;
    g_autoptr(QDict) root = NULL;
    QObject *obj;
    QDict *c;
    QObject *o;
    uint64_t val;

    vfu_limits_default(caps);
    if (len < sizeof(*v)) {
        error_setg(errp, "VERSION: payload of %zu bytes is too short", len);
        return false;
    }
    *major = v->major;
    *minor = v->minor;
    if (*major != VFU_VERSION_MAJOR) {
        error_setg(errp, "VERSION: unsupported major version %u (we speak %u)",
                   *major, VFU_VERSION_MAJOR);
        return false;
    }

    json = v->data;
    json_len = len - sizeof(*v);
    if (json_len == 0) {
        return true;    /* no capabilities: defaults */
    }
    if (!memchr(json, '\0', json_len)) {
        error_setg(errp, "VERSION: capabilities are not NUL-terminated");
        return false;
    }
    if (strlen(json) > VFU_MAX_JSON_SIZE) {
        error_setg(errp, "VERSION: capabilities are too long");
        return false;
    }
    if (json[0] == '\0') {
        return true;
    }
    obj = qobject_from_json(json, errp);
    if (!obj) {
        error_prepend(errp, "VERSION: malformed capabilities: ");
        return false;
    }
    root = qobject_to(QDict, obj);
    if (!root) {
        qobject_unref(obj);
        error_setg(errp, "VERSION: capabilities are not a JSON object");
        return false;
    }
    o = qdict_get(root, VFU_CAP_CAPABILITIES);
    if (!o) {
        return true;
    }
    c = qobject_to(QDict, o);
    if (!c) {
        error_setg(errp, "VERSION: '%s' is not a JSON object",
                   VFU_CAP_CAPABILITIES);
        return false;
    }

    val = caps->max_msg_fds;
    if (!get_uint_cap(c, VFU_CAP_MAX_MSG_FDS, 0, UINT32_MAX, &val, errp)) {
        return false;
    }
    /*
     * A peer may take more than we can ever send or receive; what it
     * offers beyond that is clamped, so no user of the negotiated values
     * sizes a transfer past our own limits.
     */
    caps->max_msg_fds = MIN(val, VFU_MAX_MSG_FDS);

    val = caps->max_data_xfer_size;
    if (!get_uint_cap(c, VFU_CAP_MAX_DATA_XFER_SIZE, VFU_MIN_XFER_SIZE,
                      UINT64_MAX, &val, errp)) {
        return false;
    }
    caps->max_data_xfer_size = MIN(val, VFU_MAX_XFER_SIZE);

    val = caps->max_dma_maps;
    if (!get_uint_cap(c, VFU_CAP_MAX_DMA_MAPS, 1, UINT32_MAX, &val, errp)) {
        return false;
    }
    caps->max_dma_maps = val;

    val = caps->pgsizes;
    if (!get_uint_cap(c, VFU_CAP_PGSIZES, 1, UINT64_MAX, &val, errp)) {
        return false;
    }
    caps->pgsizes = val;

    o = qdict_get(c, VFU_CAP_WRITE_MULTIPLE);
    if (o) {
        QBool *b = qobject_to(QBool, o);

        if (!b) {
            error_setg(errp, "VERSION: capability '%s' is not a boolean",
                       VFU_CAP_WRITE_MULTIPLE);
            return false;
        }
        caps->write_multiple = qbool_get_bool(b);
    }
    o = qdict_get(c, VFU_CAP_TWIN_SOCKET);
    if (o && !parse_twin_socket(o, nfds, caps, errp)) {
        return false;
    }
    /* migration and unknown capabilities: ignored */
    return true;
}

int vfu_region_info_mmap_areas(const VfuRegionInfo *info, size_t len,
                               VfuSparseMmapArea *areas, Error **errp)
{
    const uint8_t *p = (const uint8_t *)info;
    uint32_t off = info->cap_offset;
    const VfuCapSparseMmap *sparse = NULL;
    unsigned n = 0;

    if (len < sizeof(*info)) {
        error_setg(errp, "region info of %zu bytes is too short", len);
        return -1;
    }
    if (!(info->flags & VFU_REGION_F_MMAP) || !info->size) {
        return 0;
    }
    if (!(info->flags & VFU_REGION_F_CAPS)) {
        off = 0;
    }
    /* each capability must come after the previous one: no loops */
    while (off) {
        const VfuCapHeader *h = (const VfuCapHeader *)(p + off);

        if (off < sizeof(*info) || off > len || len - off < sizeof(*h)) {
            error_setg(errp, "region %u: capability at %u outside the "
                       "%zu-byte reply", info->index, off, len);
            return -1;
        }
        if (h->id == VFU_REGION_CAP_SPARSE_MMAP) {
            const VfuCapSparseMmap *c = (const VfuCapSparseMmap *)h;

            if (sparse) {
                error_setg(errp, "region %u: two sparse mmap capabilities",
                           info->index);
                return -1;
            }
            if (len - off < sizeof(*c) ||
                c->nr_areas > VFU_MAX_MMAP_AREAS ||
                (len - off - sizeof(*c)) / sizeof(c->areas[0]) < c->nr_areas) {
                error_setg(errp, "region %u: sparse mmap capability with %u "
                           "areas does not fit in the reply", info->index,
                           len - off < sizeof(*c) ? 0 : c->nr_areas);
                return -1;
            }
            sparse = c;
        }
        if (h->next && h->next <= off) {
            error_setg(errp, "region %u: capability at %u points back to %u",
                       info->index, off, h->next);
            return -1;
        }
        off = h->next;
    }

    if (!sparse) {
        areas[0].offset = 0;
        areas[0].size = info->size;
        return 1;
    }
    for (uint32_t i = 0; i < sparse->nr_areas; i++) {
        VfuSparseMmapArea a;

        memcpy(&a, &sparse->areas[i], sizeof(a));
        if (!a.size) {
            continue;
        }
        if (a.offset > info->size || a.size > info->size - a.offset) {
            error_setg(errp, "region %u: mmap area 0x%" PRIx64 "+0x%" PRIx64
                       " outside its 0x%" PRIx64 " bytes", info->index,
                       a.offset, a.size, info->size);
            return -1;
        }
        areas[n++] = a;
    }
    return n;
}
