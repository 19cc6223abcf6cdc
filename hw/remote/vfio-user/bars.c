/*
 * vfio-user-server: the windows through which requests reach the
 * device's BARs and ROM, config space, and the BAR areas a client may
 * mmap.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/bswap.h"
#include "exec/memory.h"
#include "hw/pci/pci.h"
#include "hw/pci/pci_host.h"
#include "vfio-user/socket.h"
#include "server-internal.h"

static const TypeInfo vfu_bar_windows_info = {
    .name = TYPE_VFU_BAR_WINDOWS,
    .parent = TYPE_OBJECT,
    .instance_size = sizeof(VfuBarWindows),
};

/* ---- regions -------------------------------------------------------------- */

VfuBarWindows *vfu_bar_windows_new(PCIDevice *pdev)
{
    VfuBarWindows *b = VFU_BAR_WINDOWS(object_new(TYPE_VFU_BAR_WINDOWS));

    for (int i = 0; i < VFU_NUM_BARS; i++) {
        PCIIORegion *r = &pdev->io_regions[i];
        g_autofree char *name = g_strdup_printf("vfio-user-bar%d", i);

        if (!r->size || !r->memory) {
            continue;
        }
        b->size[i] = r->size;
        b->io[i] = r->type & PCI_BASE_ADDRESS_SPACE_IO;
        memory_region_init(&b->root[i], OBJECT(b), name, r->size);
        memory_region_init_alias(&b->alias[i], OBJECT(b), name, r->memory, 0,
                                 r->size);
        memory_region_init_alias(&b->self[i], OBJECT(b), name, r->memory, 0,
                                 r->size);
        memory_region_add_subregion(&b->root[i], 0, &b->alias[i]);
        address_space_init(&b->as[i], &b->root[i], name);
    }
    return b;
}

void vfu_bar_windows_free(VfuBarWindows *b)
{
    for (int i = 0; i < VFU_NUM_BARS; i++) {
        if (b->size[i]) {
            address_space_destroy(&b->as[i]);
        }
    }
    /* each AddressSpace holds a reference until its RCU callback */
    object_unref(OBJECT(b));
}

uint64_t vfu_region_size(VfuServer *s, uint32_t index)
{
    if (index < VFU_NUM_BARS) {
        return s->bars->size[index];
    }
    if (index == VFU_PCI_CONFIG_REGION) {
        return pci_config_size(s->pdev);
    }
    return 0;
}

int vfu_region_check(VfuServer *s, uint32_t index, uint64_t offset,
                     uint64_t count, Error **errp)
{
    uint64_t size;

    if (index >= VFU_PCI_NUM_REGIONS) {
        error_setg(errp, "bad region index %u", index);
        return -EINVAL;
    }
    size = vfu_region_size(s, index);
    if (count == 0 || offset > size || count > size - offset) {
        error_setg(errp, "region %u: 0x%" PRIx64 "+0x%" PRIx64
                   " outside its 0x%" PRIx64 " bytes", index, offset, count,
                   size);
        return -EINVAL;
    }
    return 0;
}

/*
 * The BAR registers (a naturally aligned access is inside or outside
 * them).  Their addresses are the client's business: as VFIO does, the
 * server keeps writes to them from the device, so that its BARs never
 * appear on the remote machine's bus, where clients would place them on
 * top of each other; its regions are reached through VfuBarWindows.  The
 * addresses still matter to a device that DMAs to its own BARs (as
 * lsi53c895a fetches SCRIPTS from its RAM BAR): see vfu_server_place_bars().
 */
static bool vfu_config_is_bar(PCIDevice *pdev, uint64_t offset)
{
    bool bridge = (pdev->config[PCI_HEADER_TYPE] &
                   ~PCI_HEADER_TYPE_MULTI_FUNCTION) == PCI_HEADER_TYPE_BRIDGE;
    uint64_t bars_end = bridge ? PCI_BASE_ADDRESS_2 : PCI_BASE_ADDRESS_5 + 4;
    uint64_t rom = pci_bar(pdev, PCI_ROM_SLOT);

    return (offset >= PCI_BASE_ADDRESS_0 && offset < bars_end) ||
           (offset >= rom && offset < rom + 4);
}

/*
 * The device's memory BARs at the addresses the client gave them, in the
 * device's DMA space while the client enabled memory decoding: a device
 * reaches its own BARs there, as on a real bus.
 */
void vfu_server_place_bars(VfuServer *s, bool enabled)
{
    PCIDevice *pdev = s->pdev;
    bool mem = pci_get_word(pdev->config + PCI_COMMAND) & PCI_COMMAND_MEMORY;

    /* BAR i (6: the ROM) is region i, and PCI_ROM_SLOT is 6 too */
    for (int i = 0; i < VFU_NUM_BARS; i++) {
        PCIIORegion *r = &pdev->io_regions[i];
        uint32_t reg = ldl_le_p(s->bar_regs + pci_bar(pdev, i));
        uint64_t size = s->bars->size[i], addr;

        if (!size || s->bars->io[i]) {
            continue;
        }
        if (i == PCI_ROM_SLOT) {
            addr = reg & (reg & PCI_ROM_ADDRESS_ENABLE ?
                          PCI_ROM_ADDRESS_MASK : 0);
        } else {
            addr = reg & PCI_BASE_ADDRESS_MEM_MASK;
            if ((r->type & PCI_BASE_ADDRESS_MEM_TYPE_64) && i < 5) {
                addr |= (uint64_t)ldl_le_p(s->bar_regs +
                                           pci_bar(pdev, i + 1)) << 32;
            }
        }
        addr &= ~(size - 1);
        vfu_dma_space_place_bar(s->dma, &s->bars->self[i],
                                enabled && mem && addr &&
                                addr + size - 1 > addr, addr);
    }
}

/* Config space, in naturally aligned pieces of at most 4 bytes. */
void vfu_config_rw(VfuServer *s, uint64_t offset, uint8_t *buf,
                   uint64_t count, bool is_write)
{
    uint32_t limit = pci_config_size(s->pdev);
    bool bars_changed = false;

    while (count) {
        unsigned len = !(offset & 3) && count >= 4 ? 4 :
                       !(offset & 1) && count >= 2 ? 2 : 1;

        if (is_write && vfu_config_is_bar(s->pdev, offset)) {
            memcpy(s->bar_regs + offset, buf, len);
            bars_changed = true;
        } else if (is_write) {
            bars_changed |= offset <= PCI_COMMAND &&
                            offset + len > PCI_COMMAND;
            pci_host_config_write_common(s->pdev, offset, limit,
                                         ldn_le_p(buf, len), len);
        } else {
            stn_le_p(buf, len, pci_host_config_read_common(s->pdev, offset,
                                                           limit, len));
        }
        offset += len;
        buf += len;
        count -= len;
    }
    if (bars_changed) {
        vfu_server_place_bars(s, true);
    }
}

/* Access a checked range of a region. */
int vfu_region_rw(VfuServer *s, uint32_t index, uint64_t offset,
                  uint8_t *buf, uint64_t count, bool is_write,
                  Error **errp)
{
    MemTxResult r;

    if (index == VFU_PCI_CONFIG_REGION) {
        vfu_config_rw(s, offset, buf, count, is_write);
        return 0;
    }
    if (index == VFU_PCI_ROM_REGION && is_write) {
        error_setg(errp, "the ROM is read-only");
        return -EINVAL;
    }
    /* a 1/2/4/8-byte aligned count becomes one access of that size */
    r = address_space_rw(&s->bars->as[index], offset, MEMTXATTRS_UNSPECIFIED,
                         buf, count, is_write);
    if (r != MEMTX_OK) {
        error_setg(errp, "region %u: access at 0x%" PRIx64 " failed (%u)",
                   index, offset, r);
        return -EIO;
    }
    return 0;
}

static bool vfu_mmap_scan_range(Int128 start, Int128 len,
                                const MemoryRegion *cmr, hwaddr offset,
                                void *opaque)
{
    VfuMmapScan *scan = opaque;
    MemoryRegion *mr = (MemoryRegion *)cmr;
    uint64_t page = qemu_real_host_page_size();
    uint64_t bar_off = int128_get64(start), size = int128_get64(len);
    int fd;

    /*
     * Only RAM of a memory backend: its fd maps the whole block from file
     * offset 0, so @offset is also the offset in the file.
     */
    if (!memory_region_is_ram(mr) || memory_region_is_ram_device(mr) ||
        mr->readonly) {
        return false;
    }
    fd = memory_region_get_fd(mr);
    /*
     * The client gets the fd read-write: a file it could shrink would make
     * the device's next access to its own BAR fault and take the whole
     * process down, so only memory sealed against shrinking is offered.
     */
    if (fd >= 0 && !vfu_fd_is_shrink_sealed(fd)) {
        scan->unsealed = true;
        return false;
    }
    if (fd < 0 ||
        !object_dynamic_cast(memory_region_owner(mr), TYPE_MEMORY_BACKEND) ||
        !QEMU_IS_ALIGNED(bar_off | size | offset, page) ||
        offset < bar_off || scan->n == VFU_MAX_MMAP_AREAS) {
        return false;
    }
    /* one fd and one base offset per region */
    if (scan->n && (fd != scan->fd || offset - bar_off != scan->base)) {
        return false;
    }
    scan->fd = fd;
    scan->base = offset - bar_off;
    scan->areas[scan->n].offset = bar_off;
    scan->areas[scan->n].size = size;
    scan->n++;
    return false;
}

void vfu_bar_mmap_areas(VfuServer *s, uint32_t index, VfuMmapScan *scan)
{
    scan->n = 0;
    scan->fd = -1;
    scan->unsealed = false;
    if (index >= VFU_NUM_BARS || index == VFU_PCI_ROM_REGION ||
        !s->bars->size[index] || s->bars->io[index]) {
        return;
    }
    WITH_RCU_READ_LOCK_GUARD() {
        flatview_for_each_range(address_space_to_flatview(&s->bars->as[index]),
                                vfu_mmap_scan_range, scan);
    }
}

static void vfu_bar_windows_register_types(void)
{
    type_register_static(&vfu_bar_windows_info);
}

type_init(vfu_bar_windows_register_types)
