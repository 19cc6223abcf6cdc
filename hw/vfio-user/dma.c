/*
 * vfio-user-pci DMA: tell the server which guest memory its device may
 * reach (DMA_MAP/DMA_UNMAP, from a MemoryListener on the device's DMA
 * address space and, behind a vIOMMU, from its IOMMU notifier), and
 * serve its DMA_READ/DMA_WRITE requests.
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

/* Only guest RAM is ever mapped for the server, never MMIO. */
static bool vfu_dma_is_guest_ram(MemoryRegion *mr)
{
    return memory_region_is_ram(mr) && !memory_region_is_ram_device(mr);
}

static bool vfu_dma_ram_writable(MemoryRegion *mr)
{
    return !mr->readonly && !memory_region_is_rom(mr);
}

static bool vfu_section_range(VfuPciDevice *dev, MemoryRegionSection *section,
                              uint64_t *iova, uint64_t *size)
{
    uint64_t pg = vfu_dma_pgsize(dev);
    uint64_t start = section->offset_within_address_space;
    uint64_t end = start + int128_get64(section->size);

    if (!vfu_dma_is_guest_ram(section->mr)) {
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

/* Send a DMA_MAP for @m and record it; @fd < 0 maps without an fd. */
static void vfu_dma_map_send(VfuPciDevice *dev, VfuPciDmaMap *m, int fd,
                             uint64_t fd_offset)
{
    VfuDmaMap req = { .argsz = sizeof(req) };
    Error *err = NULL;

    if (dev->mappings->len >= vfu_conn_peer_limits(dev->conn)->max_dma_maps) {
        warn_report_once("vfio-user-pci: the server takes at most %u DMA "
                         "mappings; guest memory above that is not mapped",
                         vfu_conn_peer_limits(dev->conn)->max_dma_maps);
        return;
    }
    req.flags = m->flags;
    req.address = m->iova;
    req.size = m->size;
    req.offset = fd >= 0 ? fd_offset : 0;
    m->has_fd = fd >= 0;
    trace_vfio_user_pci_dma_map(m->iova, m->size, m->flags, m->has_fd);
    if (vfu_pci_call(dev, VFU_CMD_DMA_MAP, &req, sizeof(req),
                     m->has_fd ? &fd : NULL, m->has_fd ? 1 : 0, NULL, &err)) {
        warn_report_err(err);
        return;
    }
    /* keep the array sorted by iova */
    for (guint i = 0; i <= dev->mappings->len; i++) {
        if (i == dev->mappings->len ||
            g_array_index(dev->mappings, VfuPciDmaMap, i).iova > m->iova) {
            g_array_insert_val(dev->mappings, i, *m);
            break;
        }
    }
}

/*
 * The fd and file offset that let the server map the RAM at @host
 * itself, or -1.  Never in secure-dma mode, and only for shared RAM: a
 * private mapping would not show the guest's writes.
 */
static int vfu_dma_ram_fd(VfuPciDevice *dev, MemoryRegion *mr, void *host,
                          uint64_t *fd_offset)
{
    ram_addr_t offset;
    RAMBlock *rb;
    int fd;

    if (dev->secure_dma) {
        return -1;
    }
    fd = memory_region_get_fd(mr);
    if (fd < 0) {
        return -1;
    }
    rb = qemu_ram_block_from_host(host, false, &offset);
    if (!rb || !qemu_ram_is_shared(rb)) {
        return -1;
    }
    *fd_offset = offset;
    return fd;
}

static void vfu_dma_unmap_one(VfuPciDevice *dev, guint i)
{
    VfuPciDmaMap *m = &g_array_index(dev->mappings, VfuPciDmaMap, i);
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

/*
 * Unmap every mapping that overlaps [first, last], even partly: a
 * vfio-user mapping can only be removed whole, and access the guest
 * revoked must not outlive the revocation.
 */
static void vfu_dma_unmap_overlap(VfuPciDevice *dev, uint64_t first,
                                  uint64_t last)
{
    for (guint i = 0; i < dev->mappings->len;) {
        VfuPciDmaMap *m = &g_array_index(dev->mappings, VfuPciDmaMap, i);

        if (m->iova <= last && m->iova + m->size - 1 >= first) {
            vfu_dma_unmap_one(dev, i);
        } else {
            i++;
        }
    }
}

/*
 * Behind a vIOMMU the device may reach only what the guest mapped: a
 * mapping of IOVA -> guest RAM becomes a DMA_MAP at that IOVA, an unmap
 * a DMA_UNMAP.  DMA_READ/WRITE then go through the same vIOMMU.
 */
typedef struct VfuIommuWatch {
    IOMMUNotifier n;
    VfuPciDevice *dev;
    MemoryRegion *mr;
    hwaddr as_offset;       /* address space address - IOMMU region offset */
    QLIST_ENTRY(VfuIommuWatch) next;
} VfuIommuWatch;

static void vfu_dma_iommu_map(VfuPciDevice *dev, IOMMUTLBEntry *entry,
                              uint64_t iova, uint64_t size)
{
    uint64_t pg = vfu_dma_pgsize(dev);
    VfuPciDmaMap m = { .iova = iova, .size = size };
    uint64_t fd_offset = 0;
    MemoryRegion *mr;
    hwaddr xlat, len = size;
    int fd;

    if ((iova | size) & (pg - 1)) {
        trace_vfio_user_pci_iommu_skip(iova, size, "not server-page aligned");
        warn_report_once("vfio-user-pci: a vIOMMU mapping is not aligned to "
                         "the server's page size; the device cannot use it");
        return;
    }
    /* the BQL keeps the RAM region alive after the RCU section */
    WITH_RCU_READ_LOCK_GUARD() {
        mr = address_space_translate(entry->target_as, entry->translated_addr,
                                     &xlat, &len, entry->perm & IOMMU_WO,
                                     MEMTXATTRS_UNSPECIFIED);
    }
    if (!vfu_dma_is_guest_ram(mr)) {
        trace_vfio_user_pci_iommu_skip(iova, size, "not RAM");
        return;
    }
    if (len < size) {
        trace_vfio_user_pci_iommu_skip(iova, size, "crosses a RAM boundary");
        return;
    }
    if (entry->perm & IOMMU_RO) {
        m.flags |= VFU_DMA_MAP_F_READ;
    }
    if ((entry->perm & IOMMU_WO) && vfu_dma_ram_writable(mr)) {
        m.flags |= VFU_DMA_MAP_F_WRITE;
    }
    if (!m.flags) {
        return;
    }
    fd = vfu_dma_ram_fd(dev, mr, memory_region_get_ram_ptr(mr) + xlat,
                        &fd_offset);
    vfu_dma_map_send(dev, &m, fd, fd_offset);
}

static void vfu_dma_iommu_notify(IOMMUNotifier *n, IOMMUTLBEntry *entry)
{
    VfuIommuWatch *w = container_of(n, VfuIommuWatch, n);
    VfuPciDevice *dev = w->dev;
    uint64_t iova = entry->iova + w->as_offset;

    trace_vfio_user_pci_iommu_event(iova, entry->addr_mask + 1,
                                    entry->translated_addr, entry->perm);
    /* a changed translation replaces whatever was mapped there */
    vfu_dma_unmap_overlap(dev, iova, iova + entry->addr_mask);
    if (entry->perm == IOMMU_NONE || dev->dead || !dev->conn ||
        entry->addr_mask == UINT64_MAX) {
        return;
    }
    vfu_dma_iommu_map(dev, entry, iova, entry->addr_mask + 1);
}

static void vfu_dma_iommu_add(VfuPciDevice *dev, MemoryRegionSection *section)
{
    IOMMUMemoryRegion *iommu_mr = IOMMU_MEMORY_REGION(section->mr);
    VfuIommuWatch *w = g_new0(VfuIommuWatch, 1);
    hwaddr start = section->offset_within_region;
    /* inclusive, and the section may end at 2^64 */
    hwaddr last = int128_get64(int128_sub(
        int128_add(int128_make64(start), section->size), int128_one()));
    int idx = memory_region_iommu_attrs_to_index(iommu_mr,
                                                 MEMTXATTRS_UNSPECIFIED);
    Error *err = NULL;

    w->dev = dev;
    w->mr = section->mr;
    w->as_offset = section->offset_within_address_space - start;
    /*
     * MAP events are what let the server reach anything; an IOMMU that
     * cannot send them (intel-iommu without caching-mode=on) refuses.
     */
    iommu_notifier_init(&w->n, vfu_dma_iommu_notify,
                        IOMMU_NOTIFIER_IOTLB_EVENTS, start, last, idx);
    if (memory_region_register_iommu_notifier(section->mr, &w->n, &err)) {
        error_prepend(&err, "vfio-user-pci: the device gets no DMA access "
                      "through the vIOMMU: ");
        warn_report_err(err);
        g_free(w);
        return;
    }
    trace_vfio_user_pci_iommu_watch(start + w->as_offset, last + w->as_offset,
                                    true);
    QLIST_INSERT_HEAD(&dev->iommu_watches, w, next);
    /* what the guest mapped before we looked */
    memory_region_iommu_replay(iommu_mr, &w->n);
}

static void vfu_dma_iommu_drop(VfuPciDevice *dev, VfuIommuWatch *w)
{
    trace_vfio_user_pci_iommu_watch(w->n.start + w->as_offset,
                                    w->n.end + w->as_offset, false);
    memory_region_unregister_iommu_notifier(w->mr, &w->n);
    QLIST_REMOVE(w, next);
    /* no UNMAP events come once unregistered: revoke the whole window */
    vfu_dma_unmap_overlap(dev, w->n.start + w->as_offset,
                          w->n.end + w->as_offset);
    g_free(w);
}

static void vfu_dma_iommu_del(VfuPciDevice *dev, MemoryRegionSection *section)
{
    VfuIommuWatch *w, *tmp;

    QLIST_FOREACH_SAFE(w, &dev->iommu_watches, next, tmp) {
        if (w->mr == section->mr &&
            w->n.start == section->offset_within_region) {
            vfu_dma_iommu_drop(dev, w);
        }
    }
}

static void vfu_dma_region_add(MemoryListener *listener,
                               MemoryRegionSection *section)
{
    VfuPciDevice *dev = container_of(listener, VfuPciDevice, listener);
    MemoryRegion *mr = section->mr;
    VfuPciDmaMap m = { 0 };
    uint64_t fd_offset = 0;
    int fd;

    if (dev->dead) {
        return;
    }
    if (memory_region_is_iommu(mr)) {
        vfu_dma_iommu_add(dev, section);
        return;
    }
    if (!vfu_section_range(dev, section, &m.iova, &m.size)) {
        return;
    }
    m.flags = VFU_DMA_MAP_F_READ;
    if (vfu_dma_ram_writable(mr)) {
        m.flags |= VFU_DMA_MAP_F_WRITE;
    }
    fd = vfu_dma_ram_fd(dev, mr, memory_region_get_ram_ptr(mr) +
                        section->offset_within_region +
                        (m.iova - section->offset_within_address_space),
                        &fd_offset);
    vfu_dma_map_send(dev, &m, fd, fd_offset);
}

static void vfu_dma_region_del(MemoryListener *listener,
                               MemoryRegionSection *section)
{
    VfuPciDevice *dev = container_of(listener, VfuPciDevice, listener);
    uint64_t iova, size;

    if (memory_region_is_iommu(section->mr)) {
        vfu_dma_iommu_del(dev, section);
        return;
    }
    if (vfu_section_range(dev, section, &iova, &size)) {
        vfu_dma_unmap_overlap(dev, iova, iova + size - 1);
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
    /* region_del normally dropped them already */
    while (!QLIST_EMPTY(&dev->iommu_watches)) {
        vfu_dma_iommu_drop(dev, QLIST_FIRST(&dev->iommu_watches));
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
        VfuPciDmaMap *m = &g_array_index(dev->mappings, VfuPciDmaMap, i);

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
    /*
     * With a twin socket the server's requests come there only: here
     * they could overwrite dma_rsp while the twin sends from it.
     */
    if (dev->twin && conn != dev->twin) {
        trace_vfio_user_pci_dma_off_twin(msg->hdr.command);
        return -EINVAL;
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
