/*
 * vfio-user-server in the monitor: its entries of x-query-vfio-user and
 * the VFIO_USER_CONNECTION_LOST event when a client's connection ends.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qom/object.h"
#include "hw/vfio-user/monitor.h"
#include "hw/remote/vfio-user/remote.h"

static int vfu_server_info_one(Object *obj, void *opaque)
{
    VfioUserServerInfoList ***tail = opaque;
    VfioUserDmaMappings *m;
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
    m = si->dma_mappings = g_new0(VfioUserDmaMappings, 1);
    if (st.dma) {
        VfuDmaStats ds;

        vfu_dma_space_stats(st.dma, &ds);
        m->count = ds.maps;
        m->bytes = ds.bytes;
        m->fd_count = ds.mmapped_maps;
        m->fd_bytes = ds.mmapped_bytes;
    }
    if (st.conn) {
        si->has_connection = true;
        si->connection = vfu_monitor_conn_info(st.conn);
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
