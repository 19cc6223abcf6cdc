/*
 * Interrupts of a device exported over vfio-user: INTx, MSI and MSI-X
 * are delivered by signalling the eventfds the client set with
 * DEVICE_SET_IRQS instead of reaching an interrupt controller.
 *
 * MSI and MSI-X messages are intercepted by replacing the device's
 * prepare-message hooks (which then encode the index and vector) and its
 * trigger hook.  INTx arrives from the remote machine's bus, one line
 * per devfn.  INTx is automasked on delivery, as with VFIO: the client
 * unmasks it once the guest has serviced it.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/main-loop.h"
#include "hw/pci/pci.h"
#include "hw/pci/msi.h"
#include "hw/pci/msix.h"
#include "hw/remote/vfio-user/remote.h"
#include "vfio-user/socket.h"
#include "trace.h"

typedef struct VfuIrqVector {
    int trigger_fd;
    int mask_fd;            /* we signal it when we mask (INTx automask) */
    int unmask_fd;          /* the client signals it to unmask (resample) */
    bool masked;
    bool pending;
} VfuIrqVector;

typedef struct VfuIrqIndex {
    uint32_t count;
    VfuIrqVector *vec;
} VfuIrqIndex;

struct VfuIrqs {
    PCIDevice *dev;
    char *name;
    VfuIrqIndex index[VFU_PCI_NUM_IRQS];
    MSITriggerFunc *saved_trigger;
    MSIPrepareMessageFunc *saved_msi_prepare;
    MSIxPrepareMessageFunc *saved_msix_prepare;
    VfuIrqFlushFunc *flush;
    void *flush_opaque;
};

/* INTx levels on the remote bus, and who exports each devfn */
static uint8_t vfu_intx_level[PCI_DEVFN_MAX];
static VfuIrqs *vfu_irq_owner[PCI_DEVFN_MAX];

static void vfu_irq_signal(int fd)
{
    uint64_t one = 1;

    /* non-blocking fd: a full or bogus one drops the event, never hangs */
    if (fd >= 0 && write(fd, &one, sizeof(one)) != sizeof(one)) {
        trace_vfio_user_srv_irq_signal_failed(fd, errno);
    }
}

static void vfu_irq_unmask(VfuIrqs *irqs, uint32_t index, uint32_t i);

/* Deliver vector @i of @index, honouring the mask. */
static void vfu_irq_fire(VfuIrqs *irqs, uint32_t index, uint32_t i)
{
    VfuIrqVector *v = &irqs->index[index].vec[i];

    if (v->masked) {
        v->pending = true;
        trace_vfio_user_srv_irq_pending(irqs->name, index, i);
        return;
    }
    trace_vfio_user_srv_irq_fire(irqs->name, index, i, v->trigger_fd);
    if (irqs->flush && v->trigger_fd >= 0) {
        irqs->flush(irqs->flush_opaque);
    }
    vfu_irq_signal(v->trigger_fd);
    if (index == VFU_PCI_INTX_IRQ) {
        v->masked = true;
        vfu_irq_signal(v->mask_fd);
    }
}

static void vfu_irq_unmask(VfuIrqs *irqs, uint32_t index, uint32_t i)
{
    VfuIrqVector *v = &irqs->index[index].vec[i];

    v->masked = false;
    if (index == VFU_PCI_INTX_IRQ) {
        /* level triggered: still asserted means deliver again */
        v->pending = false;
        if (vfu_intx_level[irqs->dev->devfn]) {
            vfu_irq_fire(irqs, index, i);
        }
    } else if (v->pending) {
        v->pending = false;
        vfu_irq_fire(irqs, index, i);
    }
}

void vfu_irqs_bus_set_irq(int devfn, int level)
{
    VfuIrqs *irqs;
    bool rising;

    if (devfn < 0 || devfn >= PCI_DEVFN_MAX) {
        return;
    }
    rising = level && !vfu_intx_level[devfn];
    vfu_intx_level[devfn] = !!level;
    irqs = vfu_irq_owner[devfn];
    if (irqs && rising && irqs->index[VFU_PCI_INTX_IRQ].count) {
        vfu_irq_fire(irqs, VFU_PCI_INTX_IRQ, 0);
    }
}

/* MSI/MSI-X: the message carries the index in the address, the vector in data */
static MSIMessage vfu_msi_prepare(PCIDevice *dev, unsigned vector)
{
    return (MSIMessage) { .address = VFU_PCI_MSI_IRQ, .data = vector };
}

static MSIMessage vfu_msix_prepare(PCIDevice *dev, unsigned vector)
{
    return (MSIMessage) { .address = VFU_PCI_MSIX_IRQ, .data = vector };
}

static void vfu_msi_trigger(PCIDevice *dev, MSIMessage msg)
{
    VfuIrqs *irqs = vfu_irq_owner[dev->devfn];
    uint32_t index = msg.address;

    if (!irqs || irqs->dev != dev ||
        (index != VFU_PCI_MSI_IRQ && index != VFU_PCI_MSIX_IRQ) ||
        msg.data >= irqs->index[index].count) {
        trace_vfio_user_srv_irq_bad_msg(dev->devfn, msg.address, msg.data);
        return;
    }
    vfu_irq_fire(irqs, index, msg.data);
}

static void vfu_irq_close(int *fd, bool watched)
{
    if (*fd >= 0) {
        if (watched) {
            qemu_set_fd_handler(*fd, NULL, NULL, NULL);
        }
        close(*fd);
        *fd = -1;
    }
}

/*
 * The vectors a driver may enable (Multiple Message Capable), not the
 * ones enabled now, which is 1 after reset; none without MSI, whose
 * msi_cap offset 0 would read the device ID as MSI flags.
 */
static uint32_t vfu_msi_vectors_capable(PCIDevice *dev)
{
    uint16_t flags;

    if (!msi_present(dev) || !dev->msi_cap) {
        return 0;
    }
    flags = pci_get_word(dev->config + dev->msi_cap + PCI_MSI_FLAGS);
    return 1u << ((flags & PCI_MSI_FLAGS_QMASK) >> 1);
}

VfuIrqs *vfu_irqs_new(PCIDevice *dev, const char *name)
{
    VfuIrqs *irqs = g_new0(VfuIrqs, 1);
    uint8_t pin = pci_get_byte(dev->config + PCI_INTERRUPT_PIN);

    irqs->dev = dev;
    irqs->name = g_strdup(name);
    irqs->index[VFU_PCI_INTX_IRQ].count = pin ? 1 : 0;
    irqs->index[VFU_PCI_MSI_IRQ].count = vfu_msi_vectors_capable(dev);
    irqs->index[VFU_PCI_MSIX_IRQ].count = dev->msix_entries_nr;
    for (int i = 0; i < VFU_PCI_NUM_IRQS; i++) {
        VfuIrqIndex *x = &irqs->index[i];

        x->vec = g_new0(VfuIrqVector, x->count);
        for (uint32_t j = 0; j < x->count; j++) {
            x->vec[j].trigger_fd = x->vec[j].mask_fd = x->vec[j].unmask_fd = -1;
        }
    }

    /* set after realize by the PCI core, so override them now */
    irqs->saved_trigger = dev->msi_trigger;
    irqs->saved_msi_prepare = dev->msi_prepare_message;
    irqs->saved_msix_prepare = dev->msix_prepare_message;
    dev->msi_trigger = vfu_msi_trigger;
    if (dev->msi_prepare_message) {
        dev->msi_prepare_message = vfu_msi_prepare;
    }
    if (dev->msix_prepare_message) {
        dev->msix_prepare_message = vfu_msix_prepare;
    }
    vfu_irq_owner[dev->devfn] = irqs;
    return irqs;
}

void vfu_irqs_set_flush(VfuIrqs *irqs, VfuIrqFlushFunc *fn,
                        void *opaque)
{
    irqs->flush = fn;
    irqs->flush_opaque = opaque;
}

void vfu_irqs_reset(VfuIrqs *irqs)
{
    for (int i = 0; i < VFU_PCI_NUM_IRQS; i++) {
        VfuIrqIndex *x = &irqs->index[i];

        for (uint32_t j = 0; j < x->count; j++) {
            vfu_irq_close(&x->vec[j].trigger_fd, false);
            vfu_irq_close(&x->vec[j].mask_fd, false);
            vfu_irq_close(&x->vec[j].unmask_fd, true);
            x->vec[j].masked = false;
            x->vec[j].pending = false;
        }
    }
}

void vfu_irqs_free(VfuIrqs *irqs)
{
    PCIDevice *dev;

    if (!irqs) {
        return;
    }
    dev = irqs->dev;
    vfu_irqs_reset(irqs);
    dev->msi_trigger = irqs->saved_trigger;
    dev->msi_prepare_message = irqs->saved_msi_prepare;
    dev->msix_prepare_message = irqs->saved_msix_prepare;
    if (vfu_irq_owner[dev->devfn] == irqs) {
        vfu_irq_owner[dev->devfn] = NULL;
    }
    for (int i = 0; i < VFU_PCI_NUM_IRQS; i++) {
        g_free(irqs->index[i].vec);
    }
    g_free(irqs->name);
    g_free(irqs);
}

uint32_t vfu_irqs_count(VfuIrqs *irqs, uint32_t index)
{
    return index < VFU_PCI_NUM_IRQS ? irqs->index[index].count : 0;
}

uint32_t vfu_irqs_flags(VfuIrqs *irqs, uint32_t index)
{
    switch (index) {
    case VFU_PCI_INTX_IRQ:
        return VFU_IRQ_INFO_F_EVENTFD | VFU_IRQ_INFO_F_MASKABLE |
               VFU_IRQ_INFO_F_AUTOMASKED;
    case VFU_PCI_MSI_IRQ:
    case VFU_PCI_MSIX_IRQ:
        return VFU_IRQ_INFO_F_EVENTFD | VFU_IRQ_INFO_F_MASKABLE |
               VFU_IRQ_INFO_F_NORESIZE;
    default:
        return VFU_IRQ_INFO_F_EVENTFD;
    }
}

/* The client signalled an unmask eventfd (VFIO resample semantics). */
static void vfu_irq_unmask_fd_read(void *opaque)
{
    VfuIrqs *irqs = opaque;

    for (int i = 0; i < VFU_PCI_NUM_IRQS; i++) {
        VfuIrqIndex *x = &irqs->index[i];

        for (uint32_t j = 0; j < x->count; j++) {
            uint64_t cnt;

            if (x->vec[j].unmask_fd >= 0 &&
                read(x->vec[j].unmask_fd, &cnt, sizeof(cnt)) == sizeof(cnt)) {
                trace_vfio_user_srv_irq_unmask_fd(irqs->name, i, j);
                vfu_irq_unmask(irqs, i, j);
            }
        }
    }
}

static void vfu_irq_set_fd(VfuIrqs *irqs, uint32_t index, uint32_t i,
                           uint32_t action, int fd)
{
    VfuIrqVector *v = &irqs->index[index].vec[i];

    if (fd >= 0) {
        /* received fds are blocking; a bogus fd must not stall us */
        int fl = fcntl(fd, F_GETFL);

        if (fl >= 0) {
            fcntl(fd, F_SETFL, fl | O_NONBLOCK);
        }
    }
    switch (action) {
    case VFU_IRQ_SET_ACTION_TRIGGER:
        vfu_irq_close(&v->trigger_fd, false);
        v->trigger_fd = fd;
        /*
         * The client emulates the MSI-X table the guest programs, masks
         * included; the device's own copy stays as reset left it, all
         * masked, and would only ever set pending bits.  Masking is the
         * client's (and SET_IRQS's) business here.
         */
        if (fd >= 0 && index == VFU_PCI_MSIX_IRQ &&
            i < irqs->dev->msix_entries_nr) {
            msix_set_mask(irqs->dev, i, false);
        }
        break;
    case VFU_IRQ_SET_ACTION_MASK:
        vfu_irq_close(&v->mask_fd, false);
        v->mask_fd = fd;
        break;
    case VFU_IRQ_SET_ACTION_UNMASK:
        vfu_irq_close(&v->unmask_fd, true);
        v->unmask_fd = fd;
        if (fd >= 0) {
            qemu_set_fd_handler(fd, vfu_irq_unmask_fd_read, NULL, irqs);
        }
        break;
    }
}

int vfu_irqs_set(VfuIrqs *irqs, const VfuIrqSet *set, int *fds, size_t nfds,
                 Error **errp)
{
    uint32_t data = set->flags & VFU_IRQ_SET_DATA_MASK;
    uint32_t action = set->flags & VFU_IRQ_SET_ACTION_MASKS;
    VfuIrqIndex *x;

    if (set->flags & ~(VFU_IRQ_SET_DATA_MASK | VFU_IRQ_SET_ACTION_MASKS)) {
        error_setg(errp, "SET_IRQS: unknown flags 0x%x", set->flags);
        return -EINVAL;
    }
    if (!is_power_of_2(data) || !is_power_of_2(action)) {
        error_setg(errp, "SET_IRQS: flags 0x%x need one DATA and one ACTION",
                   set->flags);
        return -EINVAL;
    }
    if (set->index >= VFU_PCI_NUM_IRQS) {
        error_setg(errp, "SET_IRQS: bad index %u", set->index);
        return -EINVAL;
    }
    x = &irqs->index[set->index];
    if (data == VFU_IRQ_SET_DATA_NONE && action == VFU_IRQ_SET_ACTION_TRIGGER &&
        set->start == 0 && set->count == 0) {
        /* disable every interrupt of the index */
        trace_vfio_user_srv_set_irqs(irqs->name, set->index, set->start,
                                     set->count, set->flags, nfds);
        for (uint32_t j = 0; j < x->count; j++) {
            vfu_irq_set_fd(irqs, set->index, j, action, -1);
            x->vec[j].pending = false;
        }
        return 0;
    }
    if (set->start > x->count || set->count > x->count - set->start) {
        error_setg(errp, "SET_IRQS: vectors %u+%u beyond the %u of index %u",
                   set->start, set->count, x->count, set->index);
        return -EINVAL;
    }
    if (data == VFU_IRQ_SET_DATA_EVENTFD && nfds && nfds != set->count) {
        error_setg(errp, "SET_IRQS: %zu fds for %u vectors", nfds, set->count);
        return -EINVAL;
    }
    if (data != VFU_IRQ_SET_DATA_EVENTFD && nfds) {
        error_setg(errp, "SET_IRQS: fds without DATA_EVENTFD");
        return -EINVAL;
    }
    /* a pipe as unmask fd whose writer closed would make us spin */
    for (size_t k = 0; k < nfds; k++) {
        if (!vfu_fd_is_eventfd(fds[k])) {
            error_setg(errp, "SET_IRQS: fd %zu is not an eventfd", k);
            return -EINVAL;
        }
    }
    trace_vfio_user_srv_set_irqs(irqs->name, set->index, set->start,
                                 set->count, set->flags, nfds);

    for (uint32_t k = 0; k < set->count; k++) {
        uint32_t j = set->start + k;

        if (data == VFU_IRQ_SET_DATA_EVENTFD) {
            int fd = -1;

            /* no fds at all: de-assign the range */
            if (nfds) {
                fd = fds[k];
                fds[k] = -1;
            }
            vfu_irq_set_fd(irqs, set->index, j, action, fd);
            continue;
        }
        if (data == VFU_IRQ_SET_DATA_BOOL && !set->data[k]) {
            continue;
        }
        switch (action) {
        case VFU_IRQ_SET_ACTION_TRIGGER:
            vfu_irq_fire(irqs, set->index, j);
            break;
        case VFU_IRQ_SET_ACTION_MASK:
            x->vec[j].masked = true;
            break;
        case VFU_IRQ_SET_ACTION_UNMASK:
            vfu_irq_unmask(irqs, set->index, j);
            break;
        }
    }
    return 0;
}
