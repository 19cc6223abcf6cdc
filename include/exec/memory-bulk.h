/*
 * Bulk accesses to MMIO regions.
 *
 * address_space_read()/write() split an access to an MMIO region into
 * pieces of at most 8 bytes, one dispatch each.  A region whose accesses
 * are forwarded elsewhere (a vfio-user client serving a server's DMA as
 * messages) pays a round trip per piece.  Ops registered here get the
 * whole part of a memory transaction that falls into one of their
 * regions in a single call instead, and address_space_map() gives their
 * regions bounce buffers of their own, larger than a page and many at a
 * time, so a DMA scatter list is mapped as a whole.  Guest CPU accesses
 * (TCG/KVM MMIO exits) are unchanged: they are never larger than 8 bytes.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef EXEC_MEMORY_BULK_H
#define EXEC_MEMORY_BULK_H

#include "exec/memory.h"

typedef struct MemoryRegionBulkOps {
    /*
     * @opaque is the region's, @addr an offset in it.  The memory core
     * does not clamp MMIO accesses to what is visible of a region, so
     * *@len may reach past it: handle a prefix only as far as the region
     * is visible (at least 1 byte) and set *@len to its length; the core
     * continues with the rest.
     */
    MemTxResult (*read)(void *opaque, hwaddr addr, void *buf, hwaddr *len,
                        MemTxAttrs attrs);
    MemTxResult (*write)(void *opaque, hwaddr addr, const void *buf,
                         hwaddr *len, MemTxAttrs attrs);
} MemoryRegionBulkOps;

/*
 * Route every access to a region initialised with @ops through @bulk.
 * Both must be static; a few registrations at most (a small table).
 */
void memory_region_ops_set_bulk(const MemoryRegionOps *ops,
                                const MemoryRegionBulkOps *bulk);

#endif /* EXEC_MEMORY_BULK_H */
