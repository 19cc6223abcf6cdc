/*
 * x-query-vfio-user in a binary built without vfio-user: every system
 * binary links the QAPI commands.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-vfio-user.h"

VfioUserInfo *qmp_x_query_vfio_user(Error **errp)
{
    error_setg(errp, "vfio-user support is not built in");
    return NULL;
}
