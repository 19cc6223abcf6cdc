/*
 * What went over a vfio-user connection, for the monitor
 * (x-query-vfio-user).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef VFIO_USER_STATS_H
#define VFIO_USER_STATS_H

#include "vfio-user/message.h"

/*
 * Plain counters bumped where messages pass: a connection is used by one
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

/* A message sent; @payload in host order */
void vfu_stats_sent(VfuConnStats *st, uint16_t cmd, uint32_t flags,
                    const void *payload, size_t len);
/* A message received; its payload is not decoded yet */
void vfu_stats_received(VfuConnStats *st, const VfuMsg *msg);
/* The peer's DMA request, decoded: its data bytes */
void vfu_stats_dma_request(VfuConnStats *st, const VfuMsg *msg);

#endif /* VFIO_USER_STATS_H */
