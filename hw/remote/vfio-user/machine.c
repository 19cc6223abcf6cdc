/*
 * -M remote: a machine with no guest CPU and no RAM whose only job is to
 * host PCI device models for vfio-user-server objects.
 *
 * Each device on the bus gets a DMA address space of its own holding
 * exactly what its client mapped, and its INTx line is routed to the
 * exporting server rather than to an interrupt controller.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "hw/boards.h"
#include "hw/hotplug.h"
#include "hw/qdev-core.h"
#include "hw/sysbus.h"
#include "hw/pci/pci.h"
#include "hw/pci/pci_host.h"
#include "hw/pci/msi.h"
#include "hw/remote/vfio-user/remote.h"
#include "trace.h"

VfuRemoteMachine *vfu_remote_machine_get(void)
{
    return (VfuRemoteMachine *)object_dynamic_cast(qdev_get_machine(),
                                                   TYPE_VFU_REMOTE_MACHINE);
}

bool vfu_remote_machine_claim(PCIDevice *dev, Object *server, Error **errp)
{
    VfuRemoteMachine *m = vfu_remote_machine_get();

    if (!m) {
        error_setg(errp, "vfio-user-server needs the remote machine (-M remote)");
        return false;
    }
    if (pci_get_bus(dev) != m->bus) {
        error_setg(errp, "device '%s' is not on the remote machine's PCI bus",
                   DEVICE(dev)->id ?: object_get_typename(OBJECT(dev)));
        return false;
    }
    if (m->exporter[dev->devfn]) {
        error_setg(errp, "device '%s' is already exported by '%s'",
                   DEVICE(dev)->id ?: object_get_typename(OBJECT(dev)),
                   object_get_canonical_path_component(m->exporter[dev->devfn]));
        return false;
    }
    if (!m->dma[dev->devfn]) {
        error_setg(errp, "device '%s' has no DMA address space",
                   DEVICE(dev)->id ?: object_get_typename(OBJECT(dev)));
        return false;
    }
    m->exporter[dev->devfn] = server;
    return true;
}

void vfu_remote_machine_release(PCIDevice *dev, Object *server)
{
    VfuRemoteMachine *m = vfu_remote_machine_get();

    if (m && m->exporter[dev->devfn] == server) {
        m->exporter[dev->devfn] = NULL;
    }
}

VfuDmaSpace *vfu_remote_machine_dma(PCIDevice *dev)
{
    VfuRemoteMachine *m = vfu_remote_machine_get();

    return m ? m->dma[dev->devfn] : NULL;
}

/* INTx: one bus line per devfn so the level reaches the right server. */
static int vfu_remote_map_irq(PCIDevice *dev, int pin)
{
    return dev->devfn;
}

static void vfu_remote_set_irq(void *opaque, int devfn, int level)
{
    trace_vfio_user_srv_intx(devfn, level);
    vfu_irqs_bus_set_irq(devfn, level);
}

/* Called when a device on the bus is created, before it is realized. */
static AddressSpace *vfu_remote_dma_as(PCIBus *bus, void *opaque, int devfn)
{
    VfuRemoteMachine *m = opaque;

    if (!m->dma[devfn]) {
        m->dma[devfn] = vfu_dma_space_new(OBJECT(m), devfn);
    }
    return vfu_dma_space_as(m->dma[devfn]);
}

static void vfu_remote_machine_init(MachineState *ms)
{
    VfuRemoteMachine *m = VFU_REMOTE_MACHINE(ms);
    DeviceState *host;

    /* BARs the client programs land here; nothing else looks at them */
    memory_region_init(&m->pci_mem, OBJECT(m), "remote-pci-mem", UINT64_MAX);
    memory_region_init(&m->pci_io, OBJECT(m), "remote-pci-io", 0x10000);

    host = qdev_new(TYPE_REMOTE_PCIHOST);
    m->host = REMOTE_PCIHOST(host);
    m->host->mr_pci_mem = &m->pci_mem;
    m->host->mr_sys_io = &m->pci_io;
    m->host->mr_sys_mem = get_system_memory();
    object_property_add_child(OBJECT(m), "pcihost", OBJECT(host));
    sysbus_realize_and_unref(SYS_BUS_DEVICE(host), &error_fatal);

    m->bus = PCI_HOST_BRIDGE(host)->bus;
    pci_bus_irqs(m->bus, vfu_remote_set_irq, vfu_remote_map_irq, m,
                 PCI_DEVFN_MAX);
    /* must be in place before any device on the bus is realized */
    pci_setup_iommu(m->bus, vfu_remote_dma_as, m);
    qbus_set_hotplug_handler(BUS(m->bus), OBJECT(m));

    /* MSI goes to client eventfds, not to an interrupt controller */
    msi_nonbroken = true;
}

static void vfu_remote_machine_plug(HotplugHandler *hotplug_dev,
                                    DeviceState *dev, Error **errp)
{
}

static void vfu_remote_machine_unplug(HotplugHandler *hotplug_dev,
                                      DeviceState *dev, Error **errp)
{
    qdev_unrealize(dev);
}

/*
 * A virtio device without iommu_platform does its DMA to the process's
 * system memory, which has nothing in it here: its DMA must go through
 * the PCI DMA address space, to the client.  Only a modern (virtio 1.0)
 * device can offer that.
 */
static GlobalProperty vfu_remote_compat[] = {
    { "virtio-device", "iommu_platform", "on" },
    { "virtio-pci", "disable-legacy", "on" },
};

static void vfu_remote_machine_class_init(ObjectClass *oc, void *data)
{
    MachineClass *mc = MACHINE_CLASS(oc);
    HotplugHandlerClass *hc = HOTPLUG_HANDLER_CLASS(oc);

    mc->desc = "vfio-user remote device host (no CPU, no RAM)";
    mc->init = vfu_remote_machine_init;
    mc->max_cpus = 1;
    mc->default_ram_size = 0;
    mc->default_ram_id = NULL;
    mc->no_serial = 1;
    mc->no_parallel = 1;
    mc->no_floppy = 1;
    mc->no_cdrom = 1;
    mc->no_sdcard = 1;
    compat_props_add(mc->compat_props, vfu_remote_compat,
                     G_N_ELEMENTS(vfu_remote_compat));
    hc->plug = vfu_remote_machine_plug;
    hc->unplug = vfu_remote_machine_unplug;
}

static const TypeInfo vfu_remote_machine_info = {
    .name = TYPE_VFU_REMOTE_MACHINE,
    .parent = TYPE_MACHINE,
    .instance_size = sizeof(VfuRemoteMachine),
    .class_init = vfu_remote_machine_class_init,
    .interfaces = (InterfaceInfo[]) {
        { TYPE_HOTPLUG_HANDLER },
        { }
    },
};

static void vfu_remote_machine_register_types(void)
{
    type_register_static(&vfu_remote_machine_info);
}

type_init(vfu_remote_machine_register_types)
