/*
 * vfio-user-pci: doorbells the server offers as ioeventfds
 * (DEVICE_GET_REGION_IO_FDS).
 *
 * A guest write to such a doorbell signals the server's eventfd instead of
 * becoming a REGION_WRITE the vCPU waits for; with KVM the write does not
 * even leave the kernel.  Like KVM's own ioeventfds, these writes are not
 * ordered against later reads of the device.
 *
 * Servers may only know their doorbells once the guest driver has started
 * the device (QEMU's device models register them then), so besides asking
 * at realize the client asks again about a BAR that keeps being written
 * through messages, asking less often each time nothing new comes.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/main-loop.h"
#include "qemu/range.h"
#include "exec/memory.h"
#include "sysemu/kvm.h"
#include "hw/vfio-user/pci.h"
#include "trace.h"

/* ioeventfds per device; KVM has a few hundred for the whole VM */
#define VFU_IOEVENTFDS_MAX      32
/* messaged writes to a BAR before asking again, first and at most */
#define VFU_IOFDS_ASK_MIN       64
#define VFU_IOFDS_ASK_MAX       (1u << 20)
/* sub-regions we make room for in one reply */
#define VFU_IOFDS_REPLY_MAX     VFU_MAX_MSG_FDS

struct VfuIoeventfd {
    EventNotifier e;
    VfuPciBar *bar;
    uint64_t offset;
    unsigned size;
    bool match_data;
    uint64_t data;
};

static bool vfu_ioeventfd_known(VfuPciDevice *dev, VfuPciBar *bar,
                                const VfuSubRegionIoFd *sub)
{
    bool match = sub->flags & VFU_IOEVENTFD_F_DATAMATCH;

    for (unsigned i = 0; i < dev->ioeventfds->len; i++) {
        VfuIoeventfd *io = g_ptr_array_index(dev->ioeventfds, i);

        if (io->bar == bar && io->offset == sub->offset &&
            io->size == sub->size && io->match_data == match &&
            (!match || io->data == sub->datamatch)) {
            return true;
        }
    }
    return false;
}

/*
 * Would @sub collide with a registered doorbell?  KVM refuses two at one
 * address and size unless both match different data (EEXIST, which QEMU
 * treats as fatal), and a partial overlap would make one write ring two
 * doorbells or an unpredictable one.
 */
static bool vfu_ioeventfd_collides(VfuPciDevice *dev, VfuPciBar *bar,
                                   const VfuSubRegionIoFd *sub)
{
    bool match = sub->flags & VFU_IOEVENTFD_F_DATAMATCH;

    for (unsigned i = 0; i < dev->ioeventfds->len; i++) {
        VfuIoeventfd *io = g_ptr_array_index(dev->ioeventfds, i);

        if (io->bar != bar ||
            !ranges_overlap(io->offset, io->size, sub->offset, sub->size)) {
            continue;
        }
        if (io->offset == sub->offset && io->size == sub->size &&
            io->match_data && match && io->data != sub->datamatch) {
            continue;
        }
        return true;
    }
    return false;
}

/* What the guest's MSI-X emulation owns is never a doorbell */
static bool vfu_ioeventfd_hits_msix(VfuPciDevice *dev, VfuPciBar *bar,
                                    uint64_t offset, unsigned size)
{
    if (!dev->msix_cap) {
        return false;
    }
    return (bar->index == dev->msix_table_bar &&
            ranges_overlap(offset, size, dev->msix_table_offset,
                           dev->msix_entries * PCI_MSIX_ENTRY_SIZE)) ||
           (bar->index == dev->msix_pba_bar &&
            ranges_overlap(offset, size, dev->msix_pba_offset,
                           QEMU_ALIGN_UP(dev->msix_entries, 64) / 8));
}

/* Check one sub-region of a reply; the error says what is wrong. */
static bool vfu_ioeventfd_check(VfuPciDevice *dev, VfuPciBar *bar,
                                const VfuSubRegionIoFd *sub, size_t nfds,
                                Error **errp)
{
    if (sub->type != VFU_IO_FD_TYPE_IOEVENTFD) {
        error_setg(errp, "type %u is not an ioeventfd", sub->type);
        return false;
    }
    if (sub->flags & ~(VFU_IOEVENTFD_F_DATAMATCH | VFU_IOEVENTFD_F_PIO)) {
        error_setg(errp, "unknown flags 0x%x", sub->flags);
        return false;
    }
    if (sub->size != 1 && sub->size != 2 && sub->size != 4 &&
        sub->size != 8) {
        error_setg(errp, "size %" PRIu64 " is not 1, 2, 4 or 8", sub->size);
        return false;
    }
    if (sub->offset > bar->size - sub->size ||
        !QEMU_IS_ALIGNED(sub->offset, sub->size)) {
        error_setg(errp, "offset 0x%" PRIx64 " is outside or unaligned",
                   sub->offset);
        return false;
    }
    if (vfu_ioeventfd_hits_msix(dev, bar, sub->offset, sub->size)) {
        error_setg(errp, "0x%" PRIx64 " is in the MSI-X table or PBA",
                   sub->offset);
        return false;
    }
    if (vfu_ioeventfd_collides(dev, bar, sub)) {
        error_setg(errp, "0x%" PRIx64 "+%" PRIu64 " collides with a "
                   "doorbell already registered", sub->offset, sub->size);
        return false;
    }
    if (sub->fd_index >= nfds) {
        error_setg(errp, "fd index %u but %zu fds", sub->fd_index, nfds);
        return false;
    }
    return true;
}

/* Ask the server about @bar's doorbells; returns how many are new. */
static unsigned vfu_pci_bar_ask_ioeventfds(VfuPciDevice *dev, VfuPciBar *bar)
{
    VfuRegionIoFds req = {
        .argsz = sizeof(req) + VFU_IOFDS_REPLY_MAX * sizeof(VfuSubRegionIoFd),
        .index = bar->index,
    };
    g_autoptr(VfuMsg) reply = NULL;
    const VfuRegionIoFds *hdr;
    Error *err = NULL;
    size_t entry;
    unsigned added = 0;

    if (vfu_pci_call(dev, VFU_CMD_DEVICE_GET_REGION_IO_FDS, &req, sizeof(req),
                     NULL, 0, &reply, &err)) {
        /* optional in the protocol: a server may not know the command */
        trace_vfio_user_pci_ioeventfd_skip(bar->index, 0,
                                           error_get_pretty(err));
        error_free(err);
        return 0;
    }
    hdr = (const VfuRegionIoFds *)reply->payload;
    if (hdr->index != bar->index || hdr->flags || !hdr->count) {
        return 0;
    }
    /* entries are (argsz - 16) / count bytes apart, 40 for now */
    entry = hdr->argsz > sizeof(*hdr) ?
            (hdr->argsz - sizeof(*hdr)) / hdr->count : 0;
    if (hdr->count > VFU_IOFDS_REPLY_MAX || hdr->argsz > reply->len ||
        entry < sizeof(VfuSubRegionIoFd)) {
        trace_vfio_user_pci_ioeventfd_skip(bar->index, hdr->count,
                                           "malformed reply");
        return 0;
    }
    for (uint32_t i = 0; i < hdr->count; i++) {
        VfuSubRegionIoFd sub;
        VfuIoeventfd *io;
        int fd;

        memcpy(&sub, reply->payload + sizeof(*hdr) + i * entry, sizeof(sub));
        if (vfu_ioeventfd_known(dev, bar, &sub)) {
            continue;
        }
        if (dev->ioeventfds->len >= VFU_IOEVENTFDS_MAX) {
            break;
        }
        if (!vfu_ioeventfd_check(dev, bar, &sub, reply->nfds, &err)) {
            trace_vfio_user_pci_ioeventfd_skip(bar->index, i,
                                               error_get_pretty(err));
            g_clear_pointer(&err, error_free);
            continue;
        }
        /*
         * Anything but an eventfd could block the vCPU on write (a full
         * pipe) or make KVM refuse it, which QEMU treats as fatal.
         */
        fd = reply->fds[sub.fd_index];
        if (!vfu_fd_is_eventfd(fd)) {
            trace_vfio_user_pci_ioeventfd_skip(bar->index, i,
                                               "fd is not an eventfd");
            continue;
        }
        fd = dup(fd);
        if (fd < 0) {
            break;
        }
        g_unix_set_fd_nonblocking(fd, true, NULL);
        io = g_new0(VfuIoeventfd, 1);
        event_notifier_init_fd(&io->e, fd);
        io->bar = bar;
        io->offset = sub.offset;
        io->size = sub.size;
        io->match_data = sub.flags & VFU_IOEVENTFD_F_DATAMATCH;
        io->data = sub.datamatch;
        memory_region_add_eventfd(&bar->mr, io->offset, io->size,
                                  io->match_data, io->data, &io->e);
        g_ptr_array_add(dev->ioeventfds, io);
        trace_vfio_user_pci_ioeventfd(bar->index, io->offset, io->size,
                                      io->match_data, io->data);
        added++;
    }
    return added;
}

void vfu_pci_ioeventfds_realize(VfuPciDevice *dev)
{
    dev->ioeventfds = g_ptr_array_new();
    /* KVM without enough ioeventfds would fail, and QEMU with it */
    if (dev->no_ioeventfd || (kvm_enabled() && !kvm_has_many_ioeventfds())) {
        return;
    }
    for (int i = 0; i <= VFU_PCI_BAR5_REGION; i++) {
        VfuPciBar *bar = &dev->bars[i];

        if (bar->registered) {
            bar->iofds_ask_at = VFU_IOFDS_ASK_MIN;
            vfu_pci_bar_ask_ioeventfds(dev, bar);
        }
    }
}

void vfu_pci_ioeventfds_note_write(VfuPciDevice *dev, VfuPciBar *bar)
{
    if (!bar->iofds_ask_at || dev->dead ||
        ++bar->iofds_writes < bar->iofds_ask_at) {
        return;
    }
    bar->iofds_writes = 0;
    if (vfu_pci_bar_ask_ioeventfds(dev, bar)) {
        bar->iofds_ask_at = VFU_IOFDS_ASK_MIN;
    } else {
        bar->iofds_ask_at = MIN(bar->iofds_ask_at * 2, VFU_IOFDS_ASK_MAX);
    }
}

void vfu_pci_ioeventfds_exit(VfuPciDevice *dev)
{
    if (!dev->ioeventfds) {
        return;
    }
    for (unsigned i = 0; i < dev->ioeventfds->len; i++) {
        VfuIoeventfd *io = g_ptr_array_index(dev->ioeventfds, i);

        memory_region_del_eventfd(&io->bar->mr, io->offset, io->size,
                                  io->match_data, io->data, &io->e);
        event_notifier_cleanup(&io->e);
        g_free(io);
    }
    g_clear_pointer(&dev->ioeventfds, g_ptr_array_unref);
    for (int i = 0; i <= VFU_PCI_BAR5_REGION; i++) {
        dev->bars[i].iofds_ask_at = 0;
    }
}
