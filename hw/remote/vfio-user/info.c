/*
 * vfio-user-server in the monitor: its entries of x-query-vfio-user and
 * the VFIO_USER_CONNECTION_LOST event when a client's connection ends.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qom/object.h"
#include "vfio-user/monitor.h"
#include "hw/remote/vfio-user/remote.h"

static void vfu_server_info_map(void *opaque, uint64_t iova, uint64_t size,
                                uint32_t flags, bool mmapped)
{
    vfu_monitor_add_mapping(opaque, iova, size, flags, mmapped);
}

static int vfu_server_info_one(Object *obj, void *opaque)
{
    VfioUserServerInfoList ***tail = opaque;
    VfioUserServerInfo *si;
    VfuServerStatus st = { };

    if (!object_dynamic_cast(obj, TYPE_VFU_SERVER)) {
        return 0;
    }
    vfu_server_get_status(obj, &st);
    si = g_new0(VfioUserServerInfo, 1);
    si->id = g_strdup(object_get_canonical_path_component(obj) ?: "");
    si->qom_path = object_get_canonical_path(obj) ?: g_strdup("");
    si->socket = g_strdup(st.socket ?: "");
    si->device = g_strdup(st.device ?: "");
    si->state = !st.listening ? VFIO_USER_STATE_STOPPED :
                !st.conn ? VFIO_USER_STATE_LISTENING :
                !st.negotiated ? VFIO_USER_STATE_NEGOTIATING :
                VFIO_USER_STATE_CONNECTED;
    si->dma_mappings = g_new0(VfioUserDmaMappings, 1);
    if (st.dma) {
        vfu_dma_space_foreach(st.dma, vfu_server_info_map, si->dma_mappings);
    }
    if (st.conn) {
        si->has_connection = true;
        si->connection = vfu_monitor_conn_info(st.conn, st.twin);
    }
    QAPI_LIST_APPEND(*tail, si);
    return 0;
}

static void vfu_server_info_list(VfioUserInfo *info)
{
    VfioUserServerInfoList **tail = &info->servers;

    object_child_foreach_recursive(object_get_objects_root(),
                                   vfu_server_info_one, &tail);
}

void vfu_server_info_client_gone(Object *obj, VfuConn *conn, const char *why)
{
    VfuServerStatus st = { };

    vfu_server_get_status(obj, &st);
    vfu_monitor_conn_lost(obj, object_get_canonical_path_component(obj),
                          st.socket, conn, why);
}

static void vfu_server_info_init(void)
{
    vfu_monitor_register(vfu_server_info_list);
}
type_init(vfu_server_info_init)
