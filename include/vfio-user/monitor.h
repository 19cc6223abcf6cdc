/*
 * vfio-user in the monitor: x-query-vfio-user, "info vfio-user" and the
 * VFIO_USER_CONNECTION_LOST event, for both sides.  The client
 * (hw/vfio-user/info.c) and the server (hw/remote/vfio-user/info.c)
 * each register what they list, so that either can be left out.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef VFIO_USER_MONITOR_H
#define VFIO_USER_MONITOR_H

#include "qapi/qapi-types-vfio-user.h"
#include "vfio-user/transport.h"

/* Append this side's entries to @info's lists */
typedef void VfuMonitorListFunc(VfioUserInfo *info);
void vfu_monitor_register(VfuMonitorListFunc *fn);

/* Add a mapping to @m (counts and list) */
void vfu_monitor_add_mapping(VfioUserDmaMappings *m, uint64_t iova,
                             uint64_t size, uint32_t flags, bool fd);

/* The monitor view of @conn, and of its twin socket (may be NULL) */
VfioUserConnectionInfo *vfu_monitor_conn_info(VfuConn *conn, VfuConn *twin);

/*
 * Send VFIO_USER_CONNECTION_LOST for @obj (a device or server, @id may be
 * NULL): the reason is why @conn broke, or @why if it did not.
 */
void vfu_monitor_conn_lost(Object *obj, const char *id, const char *socket,
                           VfuConn *conn, const char *why);

#endif /* VFIO_USER_MONITOR_H */
