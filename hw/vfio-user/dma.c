/*
 * vfio-user-pci DMA: tell the server which guest memory its device may
 * reach (DMA_MAP/DMA_UNMAP, from a MemoryListener on the device's DMA
 * address space), and serve its DMA_READ/DMA_WRITE requests.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/error-report.h"
#include "exec/memory.h"
#include "exec/ramblock.h"
#include "exec/address-spaces.h"
#include "hw/vfio-user/pci.h"
#include "trace.h"

static uint64_t vfu_dma_pgsize(VfuPciDevice *dev)
{
    uint64_t pgsizes = vfu_conn_peer_limits(dev->conn)->pgsizes;

    /* the smallest page size both sides know; 4 KiB if nothing sensible */
    pgsizes &= ~(qemu_real_host_page_size() - 1);
    return pgsizes ? pgsizes & -pgsizes : qemu_real_host_page_size();
}

static bool vfu_section_range(VfuPciDevice *dev, MemoryRegionSection *section,
                              uint64_t *iova, uint64_t *size)
{
    uint64_t pg = vfu_dma_pgsize(dev);
    uint64_t start = section->offset_within_address_space;
    uint64_t end = start + int128_get64(section->size);

    if (!memory_region_is_ram(section->mr) ||
        memory_region_is_ram_device(section->mr)) {
        return false;
    }
    start = ROUND_UP(start, pg);
    end = ROUND_DOWN(end, pg);
    if (end <= start) {
        return false;
    }
    *iova = start;
    *size = end - start;
    return true;
}

static void vfu_dma_region_add(MemoryListener *listener,
                               MemoryRegionSection *section)
{
    VfuPciDevice *dev = container_of(listener, VfuPciDevice, listener);
    MemoryRegion *mr = section->mr;
    VfuDmaMapping m = { 0 };
    VfuDmaMap req = { .argsz = sizeof(req) };
    Error *err = NULL;
    int fd = -1;

    if (dev->dead) {
        return;
    }
    if (memory_region_is_iommu(mr)) {
        warn_report_once("vfio-user-pci: DMA through a vIOMMU is not "
                         "supported yet; the device gets no DMA access there");
        return;
    }
    if (!vfu_section_range(dev, section, &m.iova, &m.size)) {
        return;
    }
    m.flags = VFU_DMA_MAP_F_READ;
    if (!mr->readonly && !memory_region_is_rom(mr)) {
        m.flags |= VFU_DMA_MAP_F_WRITE;
    }
    if (!dev->secure_dma) {
        fd = memory_region_get_fd(mr);
        if (fd >= 0) {
            void *host = memory_region_get_ram_ptr(mr) +
                         section->offset_within_region +
                         (m.iova - section->offset_within_address_space);
            ram_addr_t offset;
            RAMBlock *rb = qemu_ram_block_from_host(host, false, &offset);

            /* a private mapping would not show the guest's writes */
            if (rb && qemu_ram_is_shared(rb)) {
                req.offset = offset;
            } else {
                fd = -1;
            }
        }
    }
    if (dev->mappings->len >= vfu_conn_peer_limits(dev->conn)->max_dma_maps) {
        warn_report_once("vfio-user-pci: the server takes at most %u DMA "
                         "mappings; guest memory above that is not mapped",
                         vfu_conn_peer_limits(dev->conn)->max_dma_maps);
        return;
    }
    req.flags = m.flags;
    req.address = m.iova;
    req.size = m.size;
    m.has_fd = fd >= 0;
    trace_vfio_user_pci_dma_map(m.iova, m.size, m.flags, m.has_fd);
    if (vfu_pci_call(dev, VFU_CMD_DMA_MAP, &req, sizeof(req),
                     m.has_fd ? &fd : NULL, m.has_fd ? 1 : 0, NULL, &err)) {
        warn_report_err(err);
        return;
    }
    /* keep the array sorted by iova */
    for (guint i = 0; i <= dev->mappings->len; i++) {
        if (i == dev->mappings->len ||
            g_array_index(dev->mappings, VfuDmaMapping, i).iova > m.iova) {
            g_array_insert_val(dev->mappings, i, m);
            break;
        }
    }
}

static void vfu_dma_unmap_one(VfuPciDevice *dev, guint i)
{
    VfuDmaMapping *m = &g_array_index(dev->mappings, VfuDmaMapping, i);
    VfuDmaUnmap req = {
        .argsz = sizeof(req), .address = m->iova, .size = m->size,
    };
    Error *err = NULL;

    trace_vfio_user_pci_dma_unmap(m->iova, m->size);
    if (dev->conn && !dev->dead &&
        vfu_pci_call(dev, VFU_CMD_DMA_UNMAP, &req, sizeof(req), NULL, 0,
                     NULL, &err)) {
        warn_report_err(err);
    }
    g_array_remove_index(dev->mappings, i);
}

static void vfu_dma_region_del(MemoryListener *listener,
                               MemoryRegionSection *section)
{
    VfuPciDevice *dev = container_of(listener, VfuPciDevice, listener);
    uint64_t iova, size;

    if (!vfu_section_range(dev, section, &iova, &size)) {
        return;
    }
    for (guint i = 0; i < dev->mappings->len;) {
        VfuDmaMapping *m = &g_array_index(dev->mappings, VfuDmaMapping, i);

        if (m->iova >= iova && m->iova + m->size <= iova + size) {
            vfu_dma_unmap_one(dev, i);
        } else {
            i++;
        }
    }
}

void vfu_pci_dma_realize(VfuPciDevice *dev)
{
    /*
     * Before the listener: the server may read a range as soon as its
     * DMA_MAP went out, while later sections are still being mapped.
     */
    dev->dma_rsp_max = vfu_conn_local_limits(dev->conn)->max_data_xfer_size;
    dev->dma_rsp = g_malloc(sizeof(*dev->dma_rsp) + dev->dma_rsp_max);
    dev->listener = (MemoryListener) {
        .name = "vfio-user-pci",
        .region_add = vfu_dma_region_add,
        .region_del = vfu_dma_region_del,
    };
    memory_listener_register(&dev->listener,
                             pci_device_iommu_address_space(PCI_DEVICE(dev)));
    dev->listener_registered = true;
}

void vfu_pci_dma_exit(VfuPciDevice *dev)
{
    if (dev->listener_registered) {
        memory_listener_unregister(&dev->listener);
        dev->listener_registered = false;
    }
    while (dev->mappings && dev->mappings->len) {
        vfu_dma_unmap_one(dev, dev->mappings->len - 1);
    }
    /* nothing is mapped any more, so no DMA_READ can reach the buffer */
    g_clear_pointer(&dev->dma_rsp, g_free);
    dev->dma_rsp_max = 0;
}

/*
 * Is [addr, addr + len) inside the mappings, with @perm?  Adjacent
 * mappings count as one range.
 */
static bool vfu_dma_allowed(VfuPciDevice *dev, uint64_t addr, uint64_t len,
                            uint32_t perm)
{
    uint64_t end;

    if (len == 0 || addr + len < addr) {
        return false;
    }
    end = addr + len;
    for (guint i = 0; i < dev->mappings->len && addr < end; i++) {
        VfuDmaMapping *m = &g_array_index(dev->mappings, VfuDmaMapping, i);

        if (m->iova + m->size <= addr) {
            continue;
        }
        if (m->iova > addr || (m->flags & perm) != perm) {
            return false;
        }
        addr = m->iova + m->size;
    }
    return addr >= end;
}

static void vfu_dma_reply(VfuConn *conn, VfuMsg *msg, void *payload,
                          size_t len)
{
    /*
     * A failed send breaks the connection (traced there) and the call
     * we are serving this from then fails: nothing more to do here.
     */
    vfu_conn_reply(conn, msg, payload, len, NULL, 0, NULL);
}

int vfu_pci_serve_request(VfuConn *conn, VfuMsg *msg, void *opaque)
{
    VfuPciDevice *dev = opaque;
    VfuDmaAccess *a = (VfuDmaAccess *)msg->payload;
    AddressSpace *as = pci_get_address_space(PCI_DEVICE(dev));
    VfuDmaAccess *rsp;
    bool is_write;

    switch (msg->hdr.command) {
    case VFU_CMD_DMA_READ:
        is_write = false;
        break;
    case VFU_CMD_DMA_WRITE:
        is_write = true;
        break;
    default:
        trace_vfio_user_pci_bad_request(msg->hdr.command);
        return -ENOTSUP;
    }
    trace_vfio_user_pci_dma_access(is_write, a->address, a->count);
    if (!vfu_dma_allowed(dev, a->address, a->count,
                         is_write ? VFU_DMA_MAP_F_WRITE : VFU_DMA_MAP_F_READ)) {
        trace_vfio_user_pci_dma_denied(is_write, a->address, a->count);
        return -EFAULT;
    }
    if (is_write) {
        VfuDmaAccess hdr = { .address = a->address, .count = a->count };

        if (address_space_write(as, a->address, MEMTXATTRS_UNSPECIFIED,
                                a->data, a->count) != MEMTX_OK) {
            return -EIO;
        }
        vfu_dma_reply(conn, msg, &hdr, sizeof(hdr));
        return 0;
    }
    /*
     * The codec already capped count at our max_data_xfer_size; check
     * again against the buffer rather than trust that.  The buffer is
     * not re-entered: only RAM is mapped, so the read runs no device code.
     */
    if (!dev->dma_rsp || a->count > dev->dma_rsp_max) {
        return -E2BIG;
    }
    rsp = dev->dma_rsp;
    rsp->address = a->address;
    rsp->count = a->count;
    if (address_space_read(as, a->address, MEMTXATTRS_UNSPECIFIED,
                           rsp->data, a->count) != MEMTX_OK) {
        return -EIO;
    }
    vfu_dma_reply(conn, msg, rsp, sizeof(*rsp) + a->count);
    return 0;
}
