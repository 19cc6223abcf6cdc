/*
 * vfio-user-pci: BAR areas the server lets us map.
 *
 * A region info reply with the MMAP flag carries an fd; the region, or the
 * areas of its sparse mmap capability, are mapped from it and put in the
 * BAR as RAM device subregions, so guest accesses to them never become
 * messages.  The rest of the BAR, and any area we cannot map, is still
 * served with REGION_READ/WRITE.
 *
 * A server can shrink the file under our mapping and make the next guest
 * access fault (SIGBUS kills the VM).  That has nothing to do with who may
 * DMA where, so in every mode only fds sealed against shrinking (memfd
 * with F_SEAL_SHRINK) are mapped; any other BAR stays on messages.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/error-report.h"
#include "exec/memory.h"
#include "hw/vfio-user/pci.h"
#include "trace.h"

#include <sys/mman.h>

static bool vfu_mmap_fd_ok(int fd, uint64_t end, Error **errp)
{
    if (!vfu_fd_is_shrink_sealed(fd)) {
        error_setg(errp, "its fd is not sealed against shrinking");
        return false;
    }
    return vfu_fd_check_file(fd, end, errp);
}

/*
 * Map the areas of @info (a decoded region info reply of @len bytes) from
 * @fd into @bar.  Anything wrong leaves the BAR to messages: the device
 * works either way, only slower.
 */
/* Some servers repeat the fd per area: fine if it is the same file. */
static bool vfu_mmap_same_file(const int *fds, size_t nfds)
{
    struct stat first, st;

    if (fstat(fds[0], &first) < 0) {
        return false;
    }
    for (size_t i = 1; i < nfds; i++) {
        if (fstat(fds[i], &st) < 0 || st.st_dev != first.st_dev ||
            st.st_ino != first.st_ino) {
            return false;
        }
    }
    return true;
}

void vfu_pci_bar_mmap(VfuPciDevice *dev, VfuPciBar *bar,
                      const VfuRegionInfo *info, size_t len, const int *fds,
                      size_t nfds)
{
    VfuSparseMmapArea areas[VFU_MAX_MMAP_AREAS];
    uint64_t page = qemu_real_host_page_size();
    Error *err = NULL;
    int fd, n;

    if (dev->no_mmap || !(info->flags & VFU_REGION_F_MMAP)) {
        return;
    }
    n = vfu_region_info_mmap_areas(info, len, areas, &err);
    if (n < 0) {
        goto fail;
    }
    if (!n) {
        /* a sparse capability of empty areas: nothing to map, no error */
        trace_vfio_user_pci_bar_mmap_fail(bar->index, "no area to map");
        return;
    }
    if (!nfds) {
        error_setg(&err, "no fd came with the region info");
        goto fail;
    }
    if (!vfu_mmap_same_file(fds, nfds)) {
        error_setg(&err, "its %zu fds are not all the same file", nfds);
        goto fail;
    }
    fd = fds[0];
    /* a BAR mapped read-only would fault on the guest's first write */
    if ((info->flags & (VFU_REGION_F_READ | VFU_REGION_F_WRITE)) !=
        (VFU_REGION_F_READ | VFU_REGION_F_WRITE)) {
        error_setg(&err, "it is not both readable and writable");
        goto fail;
    }
    for (int i = 0; i < n; i++) {
        /* the codec checked that the area lies inside the region */
        if (!QEMU_IS_ALIGNED(info->offset | areas[i].offset | areas[i].size,
                             page) ||
            info->offset > UINT64_MAX - info->size) {
            error_setg(&err, "area 0x%" PRIx64 "+0x%" PRIx64 " at file offset "
                       "0x%" PRIx64 " is not page aligned", areas[i].offset,
                       areas[i].size, info->offset);
            goto fail;
        }
        if (!vfu_mmap_fd_ok(fd, info->offset + areas[i].offset +
                            areas[i].size, &err)) {
            goto fail;
        }
    }

    bar->mmaps = g_new0(VfuMmapArea, n);
    for (int i = 0; i < n; i++) {
        VfuMmapArea *m = &bar->mmaps[i];
        g_autofree char *name = g_strdup_printf("vfio-user-bar%u-mmap%d",
                                                bar->index, i);

        m->ptr = mmap(NULL, areas[i].size, PROT_READ | PROT_WRITE, MAP_SHARED,
                      fd, info->offset + areas[i].offset);
        if (m->ptr == MAP_FAILED) {
            error_setg_errno(&err, errno, "cannot mmap area 0x%" PRIx64
                             "+0x%" PRIx64, areas[i].offset, areas[i].size);
            m->ptr = NULL;
            vfu_pci_bar_unmap(bar);
            vfu_pci_bar_mmap_free(bar);
            goto fail;
        }
        m->size = areas[i].size;
        memory_region_init_ram_device_ptr(&m->mr, OBJECT(dev), name, m->size,
                                          m->ptr);
        /* below the MSI-X table and PBA, should an area cover them */
        memory_region_add_subregion_overlap(&bar->mr, areas[i].offset, &m->mr,
                                            -1);
        bar->nr_mmaps = i + 1;
        trace_vfio_user_pci_bar_mmap(bar->index, areas[i].offset,
                                     areas[i].size);
    }
    return;

fail:
    trace_vfio_user_pci_bar_mmap_fail(bar->index, error_get_pretty(err));
    warn_report("vfio-user-pci: BAR%u not mapped, its accesses are messages: "
                "%s", bar->index, error_get_pretty(err));
    error_free(err);
}

/* Take the areas out of the BAR (unrealize). */
void vfu_pci_bar_unmap(VfuPciBar *bar)
{
    for (unsigned i = 0; i < bar->nr_mmaps; i++) {
        memory_region_del_subregion(&bar->mr, &bar->mmaps[i].mr);
    }
}

/*
 * Free the areas once nothing can reach them (finalize: RCU readers may
 * still use the regions until then).
 */
void vfu_pci_bar_mmap_free(VfuPciBar *bar)
{
    for (unsigned i = 0; i < bar->nr_mmaps; i++) {
        VfuMmapArea *m = &bar->mmaps[i];

        object_unparent(OBJECT(&m->mr));
        munmap(m->ptr, m->size);
    }
    g_clear_pointer(&bar->mmaps, g_free);
    bar->nr_mmaps = 0;
}
