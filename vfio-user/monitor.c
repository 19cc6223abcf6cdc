/*
 * vfio-user in the monitor: x-query-vfio-user, "info vfio-user" and
 * VFIO_USER_CONNECTION_LOST, shared by the client and the server.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-vfio-user.h"
#include "qapi/qapi-events-vfio-user.h"
#include "qapi/qmp/qdict.h"
#include "monitor/monitor.h"
#include "monitor/hmp.h"
#include "qom/object.h"
#include "vfio-user/monitor.h"

/* Client and server: at most one each */
#define VFU_MONITOR_MAX_LISTS   4

static VfuMonitorListFunc *list_funcs[VFU_MONITOR_MAX_LISTS];

void vfu_monitor_register(VfuMonitorListFunc *fn)
{
    for (int i = 0; i < VFU_MONITOR_MAX_LISTS; i++) {
        if (!list_funcs[i]) {
            list_funcs[i] = fn;
            return;
        }
    }
    g_assert_not_reached();
}

void vfu_monitor_add_mapping(VfioUserDmaMappings *m, uint64_t iova,
                             uint64_t size, uint32_t flags, bool fd)
{
    VfioUserDmaMapping *map = g_new0(VfioUserDmaMapping, 1);
    VfioUserDmaMappingList **pos = &m->mappings;

    map->iova = iova;
    map->size = size;
    map->readable = flags & VFU_DMA_MAP_F_READ;
    map->writable = flags & VFU_DMA_MAP_F_WRITE;
    map->fd = fd;
    /* in address order, whatever order the caller keeps them in */
    while (*pos && (*pos)->value->iova < iova) {
        pos = &(*pos)->next;
    }
    QAPI_LIST_PREPEND(*pos, map);
    m->count++;
    m->bytes += size;
    if (fd) {
        m->fd_count++;
        m->fd_bytes += size;
    }
}

static VfioUserCapabilities *caps_info(const VfuLimits *l)
{
    VfioUserCapabilities *c = g_new0(VfioUserCapabilities, 1);

    c->max_msg_fds = l->max_msg_fds;
    c->max_data_xfer_size = l->max_data_xfer_size;
    c->max_dma_maps = l->max_dma_maps;
    c->pgsizes = l->pgsizes;
    c->write_multiple = l->write_multiple;
    c->twin_socket = l->twin_socket;
    return c;
}

static VfioUserCounters *counters_info(const VfuConnStats *st)
{
    VfioUserCounters *c = g_new0(VfioUserCounters, 1);
    VfioUserCommandCountList **tail = &c->requests;

    for (unsigned cmd = 0; cmd <= VFU_CMD_MAX; cmd++) {
        VfioUserCommandCount *n;

        if (!st->requests_sent[cmd] && !st->requests_received[cmd]) {
            continue;
        }
        n = g_new0(VfioUserCommandCount, 1);
        n->command = g_strdup(vfu_command_name(cmd));
        n->sent = st->requests_sent[cmd];
        n->received = st->requests_received[cmd];
        QAPI_LIST_APPEND(tail, n);
    }
    c->replies_sent = st->replies_sent;
    c->replies_received = st->replies_received;
    c->error_replies_sent = st->error_replies_sent;
    c->error_replies_received = st->error_replies_received;
    c->dma_read_bytes = st->dma_read_bytes;
    c->dma_write_bytes = st->dma_write_bytes;
    c->timeouts = st->timeouts;
    c->bytes_sent = st->bytes_sent;
    c->bytes_received = st->bytes_received;
    return c;
}

VfioUserConnectionInfo *vfu_monitor_conn_info(VfuConn *conn, VfuConn *twin)
{
    VfioUserConnectionInfo *ci = g_new0(VfioUserConnectionInfo, 1);
    uint16_t major, minor;

    ci->has_peer_pid = ci->has_peer_uid = ci->has_peer_gid =
        vfu_conn_peer_cred(conn, &ci->peer_pid, &ci->peer_uid,
                           &ci->peer_gid);
    if (vfu_conn_version(conn, &major, &minor)) {
        ci->has_version = true;
        ci->version = g_strdup_printf("%u.%u", major, minor);
    }
    ci->local = caps_info(vfu_conn_local_limits(conn));
    ci->peer = caps_info(vfu_conn_peer_limits(conn));
    if (vfu_conn_is_broken(conn)) {
        ci->has_broken_reason = true;
        ci->broken_reason = g_strdup(vfu_conn_broken_reason(conn));
    }
    ci->counters = counters_info(vfu_conn_stats(conn));
    if (twin) {
        ci->has_twin_counters = true;
        ci->twin_counters = counters_info(vfu_conn_stats(twin));
    }
    return ci;
}

void vfu_monitor_conn_lost(Object *obj, const char *id, const char *socket,
                           VfuConn *conn, const char *why)
{
    g_autofree char *path = object_get_canonical_path(obj);
    const char *reason = conn && vfu_conn_is_broken(conn) ?
                         vfu_conn_broken_reason(conn) : why;

    qapi_event_send_vfio_user_connection_lost(!!id, id, path ?: "",
                                              socket ?: "", reason);
}

VfioUserInfo *qmp_x_query_vfio_user(Error **errp)
{
    VfioUserInfo *info = g_new0(VfioUserInfo, 1);

    for (int i = 0; i < VFU_MONITOR_MAX_LISTS && list_funcs[i]; i++) {
        list_funcs[i](info);
    }
    return info;
}

/* ---- HMP --------------------------------------------------------------- */

static void hmp_print_caps(Monitor *mon, const char *who,
                           const VfioUserCapabilities *c)
{
    monitor_printf(mon, "    %s: max_msg_fds %u, max_data_xfer_size %" PRIu64
                   ", max_dma_maps %u, pgsizes 0x%" PRIx64
                   ", write_multiple %s, twin_socket %s\n", who,
                   c->max_msg_fds, c->max_data_xfer_size, c->max_dma_maps,
                   c->pgsizes, c->write_multiple ? "on" : "off",
                   c->twin_socket ? "on" : "off");
}

static void hmp_print_dma(Monitor *mon, const VfioUserDmaMappings *m,
                          const char *fd_what)
{
    monitor_printf(mon, "  DMA mappings: %" PRIu64 " (%" PRIu64 " bytes), "
                   "%s %" PRIu64 " (%" PRIu64 " bytes)\n", m->count, m->bytes,
                   fd_what, m->fd_count, m->fd_bytes);
    for (VfioUserDmaMappingList *l = m->mappings; l; l = l->next) {
        monitor_printf(mon, "    0x%" PRIx64 "+0x%" PRIx64 " %s%s %s\n",
                       l->value->iova, l->value->size,
                       l->value->readable ? "r" : "-",
                       l->value->writable ? "w" : "-",
                       l->value->fd ? fd_what : "by message");
    }
}

static void hmp_print_counters(Monitor *mon, const VfioUserCounters *c)
{
    monitor_printf(mon, "  requests (sent/received):");
    for (VfioUserCommandCountList *l = c->requests; l; l = l->next) {
        monitor_printf(mon, " %s %" PRIu64 "/%" PRIu64, l->value->command,
                       l->value->sent, l->value->received);
    }
    monitor_printf(mon, "\n  replies (sent/received): %" PRIu64 "/%" PRIu64
                   ", errors %" PRIu64 "/%" PRIu64 "\n", c->replies_sent,
                   c->replies_received, c->error_replies_sent,
                   c->error_replies_received);
    monitor_printf(mon, "  DMA_READ %" PRIu64 " bytes, DMA_WRITE %" PRIu64
                   " bytes, timeouts %" PRIu64 ", bytes sent %" PRIu64
                   ", received %" PRIu64 "\n", c->dma_read_bytes,
                   c->dma_write_bytes, c->timeouts, c->bytes_sent,
                   c->bytes_received);
}

static void hmp_print_conn(Monitor *mon, const VfioUserConnectionInfo *ci,
                           const char *peer)
{
    if (ci->has_peer_pid) {
        monitor_printf(mon, "  %s: pid %" PRId64 ", uid %" PRId64 ", gid %"
                       PRId64 "\n", peer, ci->peer_pid, ci->peer_uid,
                       ci->peer_gid);
    }
    monitor_printf(mon, "  version: %s\n",
                   ci->has_version ? ci->version : "(not negotiated)");
    monitor_printf(mon, "  capabilities:\n");
    hmp_print_caps(mon, "ours", ci->local);
    hmp_print_caps(mon, peer, ci->peer);
    if (ci->has_broken_reason) {
        monitor_printf(mon, "  broken: %s\n", ci->broken_reason);
    }
    hmp_print_counters(mon, ci->counters);
    if (ci->has_twin_counters) {
        monitor_printf(mon, "  twin socket:\n");
        hmp_print_counters(mon, ci->twin_counters);
    }
}

static void hmp_info_vfio_user(Monitor *mon, const QDict *qdict)
{
    Error *err = NULL;
    g_autoptr(VfioUserInfo) info = qmp_x_query_vfio_user(&err);

    if (hmp_handle_error(mon, err)) {
        return;
    }
    if (!info->clients && !info->servers) {
        monitor_printf(mon, "no vfio-user devices or servers\n");
        return;
    }
    for (VfioUserClientInfoList *l = info->clients; l; l = l->next) {
        VfioUserClientInfo *d = l->value;

        monitor_printf(mon, "vfio-user-pci %s (%s): %s\n",
                       d->has_id ? d->id : "(no id)", d->qom_path,
                       VfioUserState_str(d->state));
        monitor_printf(mon, "  socket: %s\n", d->socket);
        monitor_printf(mon, "  DMA: %s\n", d->secure_dma ?
                       "secure-dma (by message)" : "guest RAM passed by fd");
        hmp_print_dma(mon, d->dma_mappings, "with fd");
        if (d->has_connection) {
            hmp_print_conn(mon, d->connection, "server");
        }
    }
    for (VfioUserServerInfoList *l = info->servers; l; l = l->next) {
        VfioUserServerInfo *s = l->value;

        monitor_printf(mon, "vfio-user-server %s (%s): %s\n", s->id,
                       s->qom_path, VfioUserState_str(s->state));
        monitor_printf(mon, "  socket: %s\n", s->socket);
        monitor_printf(mon, "  device: %s\n", s->device);
        hmp_print_dma(mon, s->dma_mappings, "mmap'd");
        if (s->has_connection) {
            hmp_print_conn(mon, s->connection, "client");
        }
    }
}

static void vfu_monitor_init(void)
{
    monitor_register_hmp("vfio-user", true, hmp_info_vfio_user);
}
type_init(vfu_monitor_init)
