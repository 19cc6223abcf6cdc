/*
 * What a vfio-user peer hands us besides messages: file descriptors to
 * check before use, and the "socket" property both sides share.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef VFIO_USER_SOCKET_H
#define VFIO_USER_SOCKET_H

#include "qapi/qapi-types-sockets.h"

/*
 * Shared memory received from the peer.  A peer that shrinks the file
 * behind our mapping makes the next access fault (SIGBUS), so a side that
 * does not trust its peer maps only files sealed against shrinking.
 */
bool vfu_fd_is_shrink_sealed(int fd);
/* @fd is a regular file (or memfd) of at least @end bytes. */
bool vfu_fd_check_file(int fd, uint64_t end, Error **errp);
/*
 * @fd is an eventfd.  A peer's fd that QEMU writes or polls must be one:
 * a pipe could block a write, or stay readable for good and make the
 * main loop spin.
 */
bool vfu_fd_is_eventfd(int fd);
/* @fd is an AF_UNIX stream socket: the only kind that carries fds. */
bool vfu_fd_is_unix_stream(int fd);

/*
 * Visit a "socket" property of either side: a path, as a plain string,
 * or a SocketAddress of type unix or fd (JSON, dotted keys).  Returns the
 * address, its name for messages (the path, or "fd:NAME") in *@display.
 */
SocketAddress *vfu_visit_socket(Visitor *v, const char *name,
                                char **display, Error **errp);
/* The getter's side: @addr, or "" while it is unset. */
void vfu_visit_socket_out(Visitor *v, const char *name, SocketAddress **addr,
                          Error **errp);

#endif /* VFIO_USER_SOCKET_H */
