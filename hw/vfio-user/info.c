/*
 * vfio-user-pci in the monitor: its entries of x-query-vfio-user and
 * the VFIO_USER_CONNECTION_LOST event when its server is gone.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qom/object.h"
#include "vfio-user/monitor.h"
#include "hw/vfio-user/pci.h"

static VfioUserDmaMappings *vfu_pci_info_dma(VfuPciDevice *dev)
{
    VfioUserDmaMappings *m = g_new0(VfioUserDmaMappings, 1);

    for (guint i = 0; dev->mappings && i < dev->mappings->len; i++) {
        VfuPciDmaMap *map = &g_array_index(dev->mappings, VfuPciDmaMap, i);

        vfu_monitor_add_mapping(m, map->iova, map->size, map->flags,
                                map->has_fd);
    }
    return m;
}

static int vfu_pci_info_one(Object *obj, void *opaque)
{
    VfioUserClientInfoList ***tail = opaque;
    VfuPciDevice *dev = (VfuPciDevice *)object_dynamic_cast(obj,
                                                   TYPE_VFIO_USER_PCI);
    VfioUserClientInfo *d;

    if (!dev) {
        return 0;
    }
    d = g_new0(VfioUserClientInfo, 1);
    if (DEVICE(dev)->id) {
        d->has_id = true;
        d->id = g_strdup(DEVICE(dev)->id);
    }
    d->qom_path = object_get_canonical_path(obj) ?: g_strdup("");
    d->socket = g_strdup(dev->socket_name ?: "");
    d->state = dev->dead ? VFIO_USER_STATE_DEAD :
               dev->conn ? VFIO_USER_STATE_CONNECTED : VFIO_USER_STATE_STOPPED;
    d->secure_dma = dev->secure_dma;
    d->dma_mappings = vfu_pci_info_dma(dev);
    if (dev->conn) {
        d->has_connection = true;
        d->connection = vfu_monitor_conn_info(dev->conn, dev->twin);
    }
    QAPI_LIST_APPEND(*tail, d);
    return 0;
}

static void vfu_pci_info_list(VfioUserInfo *info)
{
    VfioUserClientInfoList **tail = &info->clients;

    object_child_foreach_recursive(object_get_root(), vfu_pci_info_one,
                                   &tail);
}

void vfu_pci_info_lost(VfuPciDevice *dev, Error *err)
{
    /* a device failing to realize says so itself */
    if (DEVICE(dev)->realized) {
        vfu_monitor_conn_lost(OBJECT(dev), DEVICE(dev)->id, dev->socket_name,
                              dev->conn, err ? error_get_pretty(err)
                                             : "closed");
    }
}

static void vfu_pci_info_init(void)
{
    vfu_monitor_register(vfu_pci_info_list);
}
type_init(vfu_pci_info_init)
