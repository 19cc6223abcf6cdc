/*
 * vfio-user-pci interrupts: INTx, MSI and MSI-X through DEVICE_SET_IRQS.
 *
 * The server signals one eventfd per vector; the handlers feed QEMU's
 * own MSI/MSI-X emulation, which applies masking and the vector's current
 * address/data, so a guest re-programming a vector needs no message.
 *
 * With KVM's in-kernel irqchip, an unmasked MSI/MSI-X vector's eventfd is
 * handed to KVM as an irqfd instead: the interrupt reaches the guest
 * without waking QEMU.  A masked vector goes back to the handler, which
 * records it as pending.  INTx always takes the handler path.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/error-report.h"
#include "qemu/main-loop.h"
#include "hw/pci/msi.h"
#include "hw/pci/msix.h"
#include "hw/vfio-user/pci.h"
#include "sysemu/kvm.h"
#include "trace.h"

/* MSI capability with 64-bit address and per-vector masking */
#define VFU_MSI_CAP_MAX 24

static int vfu_set_irqs(VfuPciDevice *dev, uint32_t index, uint32_t flags,
                        uint32_t start, uint32_t count, const int *fds,
                        Error **errp)
{
    uint32_t max = MAX(vfu_conn_peer_limits(dev->conn)->max_msg_fds, 1);
    uint32_t done = 0;

    if (!fds) {
        VfuIrqSet s = {
            .argsz = sizeof(s), .flags = flags, .index = index,
            .start = start, .count = count,
        };
        trace_vfio_user_pci_set_irqs(index, flags, start, count);
        return vfu_pci_call(dev, VFU_CMD_DEVICE_SET_IRQS, &s, sizeof(s), NULL,
                            0, NULL, errp);
    }
    /* no more eventfds per message than the server takes */
    while (done < count) {
        uint32_t n = MIN(count - done, max);
        VfuIrqSet s = {
            .argsz = sizeof(s), .flags = flags, .index = index,
            .start = start + done, .count = n,
        };
        int ret;

        trace_vfio_user_pci_set_irqs(index, flags, start + done, n);
        ret = vfu_pci_call(dev, VFU_CMD_DEVICE_SET_IRQS, &s, sizeof(s),
                           fds + done, n, NULL, errp);
        if (ret) {
            return ret;
        }
        done += n;
    }
    return 0;
}

static void vfu_intx_handler(void *opaque)
{
    VfuPciDevice *dev = opaque;

    if (!event_notifier_test_and_clear(&dev->intx.trigger)) {
        return;
    }
    trace_vfio_user_pci_intx(dev->intx_pending);
    if (dev->irq_mode == VFU_PCI_INTX_IRQ && !dev->intx_pending) {
        dev->intx_pending = true;
        pci_irq_assert(PCI_DEVICE(dev));
    }
}

/*
 * INTx is level-triggered but an eventfd only says "asserted": the line
 * drops on the guest's next access to the device, and the server is told
 * to signal again if its line is still up.
 */
void vfu_pci_intx_eoi(VfuPciDevice *dev)
{
    Error *err = NULL;

    dev->intx_pending = false;
    pci_irq_deassert(PCI_DEVICE(dev));
    if (vfu_set_irqs(dev, VFU_PCI_INTX_IRQ,
                     VFU_IRQ_SET_DATA_NONE | VFU_IRQ_SET_ACTION_UNMASK,
                     0, 1, NULL, &err)) {
        error_free(err);
    }
}

static bool vfu_intx_enable(VfuPciDevice *dev, Error **errp)
{
    int fd;

    if (!dev->num_irqs[VFU_PCI_INTX_IRQ] ||
        !pci_get_byte(PCI_DEVICE(dev)->config + PCI_INTERRUPT_PIN)) {
        return true;
    }
    if (!dev->intx.active) {
        if (event_notifier_init(&dev->intx.trigger, 0) < 0) {
            error_setg_errno(errp, errno, "cannot create an eventfd");
            return false;
        }
        dev->intx.dev = dev;
        dev->intx.active = true;
        qemu_set_fd_handler(event_notifier_get_fd(&dev->intx.trigger),
                            vfu_intx_handler, NULL, dev);
    }
    fd = event_notifier_get_fd(&dev->intx.trigger);
    if (vfu_set_irqs(dev, VFU_PCI_INTX_IRQ,
                     VFU_IRQ_SET_DATA_EVENTFD | VFU_IRQ_SET_ACTION_TRIGGER,
                     0, 1, &fd, errp)) {
        return false;
    }
    dev->irq_mode = VFU_PCI_INTX_IRQ;
    return true;
}

static void vfu_intx_release(VfuPciDevice *dev)
{
    if (dev->intx_pending) {
        dev->intx_pending = false;
        pci_irq_deassert(PCI_DEVICE(dev));
    }
    if (dev->intx.active) {
        qemu_set_fd_handler(event_notifier_get_fd(&dev->intx.trigger),
                            NULL, NULL, NULL);
        event_notifier_cleanup(&dev->intx.trigger);
        dev->intx.active = false;
    }
}

static void vfu_vector_handler(void *opaque)
{
    VfuPciIrqVector *v = opaque;
    VfuPciDevice *dev = v->dev;
    PCIDevice *pdev = PCI_DEVICE(dev);

    if (!event_notifier_test_and_clear(&v->trigger)) {
        return;
    }
    trace_vfio_user_pci_vector(dev->irq_mode, v->vector);
    if (dev->irq_mode == VFU_PCI_MSIX_IRQ) {
        msix_notify(pdev, v->vector);
    } else if (dev->irq_mode == VFU_PCI_MSI_IRQ) {
        uint16_t flags = pci_get_word(pdev->config + dev->msi_cap +
                                      PCI_MSI_FLAGS);
        unsigned enabled = 1 << ((flags & PCI_MSI_FLAGS_QSIZE) >> 4);

        /* the server may name a vector the guest did not enable */
        if (v->vector < enabled) {
            msi_notify(pdev, v->vector);
        }
    }
}


/* Route @v's eventfd to KVM (when possible); the handler otherwise. */
static void vfu_vector_to_kvm(VfuPciDevice *dev, VfuPciIrqVector *v)
{
    int fd = event_notifier_get_fd(&v->trigger);

    if (v->irqfd) {
        return;
    }
    if (v->virq < 0) {
        KVMRouteChange c = kvm_irqchip_begin_route_changes(kvm_state);
        int virq = kvm_irqchip_add_msi_route(&c, v->vector, PCI_DEVICE(dev));

        if (virq < 0) {
            trace_vfio_user_pci_irqfd_fail(v->vector, virq);
            return;
        }
        kvm_irqchip_commit_route_changes(&c);
        v->virq = virq;
    }
    /* KVM checks for a signal that is already pending when it attaches */
    qemu_set_fd_handler(fd, NULL, NULL, NULL);
    if (kvm_irqchip_add_irqfd_notifier_gsi(kvm_state, &v->trigger, NULL,
                                           v->virq) < 0) {
        trace_vfio_user_pci_irqfd_fail(v->vector, v->virq);
        qemu_set_fd_handler(fd, vfu_vector_handler, NULL, v);
        return;
    }
    v->irqfd = true;
    trace_vfio_user_pci_irqfd(v->vector, v->virq, true);
}

/* Back to the handler; keep the route for a quick unmask unless @drop. */
static void vfu_vector_from_kvm(VfuPciIrqVector *v, bool drop)
{
    if (v->irqfd) {
        kvm_irqchip_remove_irqfd_notifier_gsi(kvm_state, &v->trigger, v->virq);
        v->irqfd = false;
        /* a signal KVM did not consume yet is seen by the handler */
        qemu_set_fd_handler(event_notifier_get_fd(&v->trigger),
                            vfu_vector_handler, NULL, v);
        trace_vfio_user_pci_irqfd(v->vector, v->virq, false);
    }
    if (drop && v->virq >= 0) {
        kvm_irqchip_release_virq(kvm_state, v->virq);
        v->virq = -1;
    }
}

static int vfu_msix_vector_use(PCIDevice *pdev, unsigned int vector,
                               MSIMessage msg)
{
    VfuPciDevice *dev = VFIO_USER_PCI(pdev);
    VfuPciIrqVector *v;

    if (vector >= dev->nr_vectors) {
        return 0;
    }
    v = &dev->vectors[vector];
    /* the guest may have re-programmed the vector while it was masked */
    if (v->virq >= 0 &&
        kvm_irqchip_update_msi_route(kvm_state, v->virq, msg, pdev) == 0) {
        kvm_irqchip_commit_routes(kvm_state);
    }
    vfu_vector_to_kvm(dev, v);
    return 0;
}

static void vfu_msix_vector_release(PCIDevice *pdev, unsigned int vector)
{
    VfuPciDevice *dev = VFIO_USER_PCI(pdev);

    if (vector < dev->nr_vectors) {
        vfu_vector_from_kvm(&dev->vectors[vector], false);
    }
}

/* A guest reading the PBA must see signals no handler has run for yet. */
static void vfu_msix_vector_poll(PCIDevice *pdev, unsigned int start,
                                 unsigned int end)
{
    VfuPciDevice *dev = VFIO_USER_PCI(pdev);

    for (unsigned i = start; i < MIN(end, dev->nr_vectors); i++) {
        VfuPciIrqVector *v = &dev->vectors[i];

        if (msix_is_masked(pdev, i) &&
            event_notifier_test_and_clear(&v->trigger)) {
            msix_set_pending(pdev, i);
        }
    }
}

/* MSI without per-vector masking: every vector goes to KVM. */
static bool vfu_msi_irqfd_ok(VfuPciDevice *dev)
{
    uint16_t flags = pci_get_word(PCI_DEVICE(dev)->config + dev->msi_cap +
                                  PCI_MSI_FLAGS);

    return kvm_msi_via_irqfd_enabled() && !(flags & PCI_MSI_FLAGS_MASKBIT);
}

/* The guest moved an enabled MSI (Linux does for affinity changes). */
static void vfu_msi_update_routes(VfuPciDevice *dev)
{
    PCIDevice *pdev = PCI_DEVICE(dev);
    bool changed = false;

    for (unsigned i = 0; i < dev->nr_vectors; i++) {
        VfuPciIrqVector *v = &dev->vectors[i];

        if (v->virq >= 0 &&
            kvm_irqchip_update_msi_route(kvm_state, v->virq,
                                         msi_get_message(pdev, i), pdev) == 0) {
            changed = true;
        }
    }
    if (changed) {
        kvm_irqchip_commit_routes(kvm_state);
    }
}

static void vfu_vectors_release(VfuPciDevice *dev)
{
    if (dev->msix_notifiers) {
        msix_unset_vector_notifiers(PCI_DEVICE(dev));
        dev->msix_notifiers = false;
    }
    for (unsigned i = 0; i < dev->nr_vectors; i++) {
        VfuPciIrqVector *v = &dev->vectors[i];

        vfu_vector_from_kvm(v, true);
        qemu_set_fd_handler(event_notifier_get_fd(&v->trigger), NULL, NULL,
                            NULL);
        event_notifier_cleanup(&v->trigger);
        if (dev->irq_mode == VFU_PCI_MSIX_IRQ) {
            msix_vector_unuse(PCI_DEVICE(dev), i);
        }
    }
    g_clear_pointer(&dev->vectors, g_free);
    dev->nr_vectors = 0;
}

/* Stop the current mode on the server and locally. */
static void vfu_irq_disable(VfuPciDevice *dev)
{
    Error *err = NULL;

    if (dev->irq_mode >= 0 && dev->conn && !dev->dead) {
        if (vfu_set_irqs(dev, dev->irq_mode,
                         VFU_IRQ_SET_DATA_NONE | VFU_IRQ_SET_ACTION_TRIGGER,
                         0, 0, NULL, &err)) {
            error_free(err);
        }
    }
    if (dev->irq_mode == VFU_PCI_MSI_IRQ || dev->irq_mode == VFU_PCI_MSIX_IRQ) {
        vfu_vectors_release(dev);
    }
    if (dev->intx_pending) {
        dev->intx_pending = false;
        pci_irq_deassert(PCI_DEVICE(dev));
    }
    dev->irq_mode = -1;
}

static bool vfu_vectors_enable(VfuPciDevice *dev, int mode, unsigned nvec,
                               Error **errp)
{
    g_autofree int *fds = g_new(int, nvec);
    Error *err = NULL;

    vfu_irq_disable(dev);
    dev->vectors = g_new0(VfuPciIrqVector, nvec);
    for (unsigned i = 0; i < nvec; i++) {
        VfuPciIrqVector *v = &dev->vectors[i];

        if (event_notifier_init(&v->trigger, 0) < 0) {
            error_setg_errno(errp, errno, "cannot create an eventfd");
            dev->irq_mode = mode;
            vfu_vectors_release(dev);
            dev->irq_mode = -1;
            return false;
        }
        v->dev = dev;
        v->vector = i;
        v->virq = -1;
        dev->nr_vectors = i + 1;
        fds[i] = event_notifier_get_fd(&v->trigger);
        qemu_set_fd_handler(fds[i], vfu_vector_handler, NULL, v);
        if (mode == VFU_PCI_MSIX_IRQ) {
            /* msix_notify() ignores vectors nobody uses */
            msix_vector_use(PCI_DEVICE(dev), i);
        }
    }
    dev->irq_mode = mode;
    if (mode == VFU_PCI_MSIX_IRQ && kvm_msi_via_irqfd_enabled()) {
        /* calls vfu_msix_vector_use() for each vector already unmasked */
        msix_set_vector_notifiers(PCI_DEVICE(dev), vfu_msix_vector_use,
                                  vfu_msix_vector_release,
                                  vfu_msix_vector_poll);
        dev->msix_notifiers = true;
    } else if (mode == VFU_PCI_MSI_IRQ && vfu_msi_irqfd_ok(dev)) {
        for (unsigned i = 0; i < nvec; i++) {
            vfu_vector_to_kvm(dev, &dev->vectors[i]);
        }
    }
    if (vfu_set_irqs(dev, mode,
                     VFU_IRQ_SET_DATA_EVENTFD | VFU_IRQ_SET_ACTION_TRIGGER,
                     0, nvec, fds, errp)) {
        return false;
    }
    /*
     * Vectors are masked here, in the capability we emulate.  Some servers
     * keep masks of their own that only UNMASK clears (QEMU 7.2's keeps
     * the device's MSI-X table, masked from reset, without saying so in
     * the IRQ info), so clear them all there; a server without masks may
     * refuse, which changes nothing.
     */
    if (vfu_set_irqs(dev, mode,
                     VFU_IRQ_SET_DATA_NONE | VFU_IRQ_SET_ACTION_UNMASK,
                     0, nvec, NULL, &err)) {
        trace_vfio_user_pci_unmask_refused(dev->socket_name, mode,
                                           error_get_pretty(err));
        error_free(err);
    }
    return true;
}

void vfu_pci_irq_config_changed(VfuPciDevice *dev, uint32_t addr, int len,
                                bool was_msi, bool was_msix)
{
    PCIDevice *pdev = PCI_DEVICE(dev);
    bool now_msi = msi_enabled(pdev), now_msix = msix_enabled(pdev);
    Error *err = NULL;
    bool ok = true;

    if (dev->dead) {
        return;
    }
    if (now_msi && was_msi && dev->irq_mode == VFU_PCI_MSI_IRQ &&
        ranges_overlap(addr, len, dev->msi_cap, VFU_MSI_CAP_MAX)) {
        vfu_msi_update_routes(dev);
    }
    if (now_msi == was_msi && now_msix == was_msix) {
        return;
    }
    if (now_msix && !was_msix) {
        ok = vfu_vectors_enable(dev, VFU_PCI_MSIX_IRQ, dev->msix_entries,
                                &err);
    } else if (now_msi && !was_msi) {
        ok = vfu_vectors_enable(dev, VFU_PCI_MSI_IRQ,
                                msi_nr_vectors_allocated(pdev), &err);
    } else if (!now_msi && !now_msix) {
        vfu_irq_disable(dev);
        ok = vfu_intx_enable(dev, &err);
    }
    if (!ok) {
        warn_report_err(err);
    }
}

bool vfu_pci_irq_realize(VfuPciDevice *dev, Error **errp)
{
    return vfu_intx_enable(dev, errp);
}

void vfu_pci_irq_reset(VfuPciDevice *dev)
{
    Error *err = NULL;

    if (dev->irq_mode != VFU_PCI_INTX_IRQ) {
        vfu_irq_disable(dev);
        if (!vfu_intx_enable(dev, &err)) {
            warn_report_err(err);
        }
    } else if (dev->intx_pending) {
        dev->intx_pending = false;
        pci_irq_deassert(PCI_DEVICE(dev));
    }
}

void vfu_pci_irq_exit(VfuPciDevice *dev)
{
    vfu_irq_disable(dev);
    vfu_intx_release(dev);
}
