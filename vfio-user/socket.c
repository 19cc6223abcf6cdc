/*
 * What a vfio-user peer hands us besides messages: file descriptors to
 * check before use, and the "socket" property both sides share.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qapi/visitor.h"
#include "qapi/visitor-impl.h"
#include "qapi/qapi-visit-sockets.h"
#include "vfio-user/socket.h"

bool vfu_fd_is_shrink_sealed(int fd)
{
    int seals = fcntl(fd, F_GET_SEALS);

    return seals >= 0 && (seals & F_SEAL_SHRINK);
}

bool vfu_fd_is_eventfd(int fd)
{
    g_autofree char *path = g_strdup_printf("/proc/self/fdinfo/%d", fd);
    g_autofree char *info = NULL;

    /* the kernel names an eventfd's counter in its fdinfo */
    return g_file_get_contents(path, &info, NULL, NULL) &&
           strstr(info, "\neventfd-count:");
}

bool vfu_fd_is_unix_stream(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    int type = 0;
    socklen_t tlen = sizeof(type);

    return getsockname(fd, (struct sockaddr *)&ss, &len) == 0 &&
           ss.ss_family == AF_UNIX &&
           getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) == 0 &&
           type == SOCK_STREAM;
}

bool vfu_fd_check_file(int fd, uint64_t end, Error **errp)
{
    struct stat st;

    if (fstat(fd, &st) < 0) {
        error_setg_errno(errp, errno, "cannot stat the fd");
        return false;
    }
    if (!S_ISREG(st.st_mode) || st.st_size < 0 ||
        (uint64_t)st.st_size < end) {
        error_setg(errp, "the fd is not a file of at least %" PRIu64
                   " bytes", end);
        return false;
    }
    return true;
}

SocketAddress *vfu_visit_socket(Visitor *v, const char *name,
                                char **display, Error **errp)
{
    g_autoptr(SocketAddress) addr = NULL;
    GenericAlternate *alt = NULL;
    char *path = NULL;
    bool ok = false;

    /* a string input visitor (-global, a string qom-set) has no alternates */
    if (!v->start_alternate) {
        ok = visit_type_str(v, name, &path, errp);
    } else if (visit_start_alternate(v, name, &alt, sizeof(*alt), errp)) {
        switch (alt->type) {
        case QTYPE_QSTRING:
            ok = visit_type_str(v, name, &path, errp);
            break;
        case QTYPE_QDICT:
            ok = visit_type_SocketAddress(v, name, &addr, errp);
            break;
        default:
            error_setg(errp, "'%s' takes a path or a socket address", name);
            break;
        }
        visit_end_alternate(v, (void **)&alt);
        g_free(alt);
    }
    if (!ok) {
        g_free(path);
        return NULL;
    }
    if (path) {
        addr = g_new0(SocketAddress, 1);
        addr->type = SOCKET_ADDRESS_TYPE_UNIX;
        addr->u.q_unix.path = path;
    }
    switch (addr->type) {
    case SOCKET_ADDRESS_TYPE_UNIX:
        *display = g_strdup(addr->u.q_unix.path);
        break;
    case SOCKET_ADDRESS_TYPE_FD:
        *display = g_strdup_printf("fd:%s", addr->u.fd.str);
        break;
    default:
        error_setg(errp, "'%s' must be a UNIX socket (type unix or fd)",
                   name);
        return NULL;
    }
    return g_steal_pointer(&addr);
}

void vfu_visit_socket_out(Visitor *v, const char *name, SocketAddress **addr,
                          Error **errp)
{
    g_autofree char *empty = g_strdup("");

    if (!*addr) {
        visit_type_str(v, name, &empty, errp);
        return;
    }
    visit_type_SocketAddress(v, name, addr, errp);
}
