/*
 * What went over a vfio-user connection, for the monitor.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "vfio-user/stats.h"

/* Per-command counter slot: 0 for a command we do not know */
static unsigned stats_cmd_slot(uint16_t cmd)
{
    return cmd <= VFU_CMD_MAX ? cmd : 0;
}

static void stats_dma(VfuConnStats *st, uint16_t cmd, const void *payload,
                      size_t len)
{
    uint64_t count;

    if ((cmd != VFU_CMD_DMA_READ && cmd != VFU_CMD_DMA_WRITE) ||
        len < sizeof(VfuDmaAccess)) {
        return;
    }
    count = ((const VfuDmaAccess *)payload)->count;
    if (cmd == VFU_CMD_DMA_READ) {
        st->dma_read_bytes += count;
    } else {
        st->dma_write_bytes += count;
    }
}

void vfu_stats_sent(VfuConnStats *st, uint16_t cmd, uint32_t flags,
                    const void *payload, size_t len)
{
    st->bytes_sent += sizeof(VfuHeader) + len;
    if ((flags & VFU_F_TYPE_MASK) == VFU_F_TYPE_REPLY) {
        st->replies_sent++;
        st->error_replies_sent += !!(flags & VFU_F_ERROR);
        return;
    }
    st->requests_sent[stats_cmd_slot(cmd)]++;
    stats_dma(st, cmd, payload, len);
}

void vfu_stats_received(VfuConnStats *st, const VfuMsg *msg)
{
    st->bytes_received += msg->hdr.size;
    if (vfu_msg_is_reply(msg)) {
        st->replies_received++;
        st->error_replies_received += !!(msg->hdr.flags & VFU_F_ERROR);
    } else {
        st->requests_received[stats_cmd_slot(msg->hdr.command)]++;
    }
}

void vfu_stats_dma_request(VfuConnStats *st, const VfuMsg *msg)
{
    stats_dma(st, msg->hdr.command, msg->payload, msg->len);
}
