/*
 * Unit tests of vfio-user: hand-made bytes with fds attached, the way a
 * peer sends them.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef TESTS_UNIT_VFIO_USER_SEND_FDS_H
#define TESTS_UNIT_VFIO_USER_SEND_FDS_H

/* One sendmsg() of @iov with @nfds (at most 16) fds; returns its result */
static inline ssize_t vu_send_fds(int sock, struct iovec *iov, int niov,
                                  const int *fds, size_t nfds)
{
    struct msghdr mh = { .msg_iov = iov, .msg_iovlen = niov };
    char ctl[CMSG_SPACE(sizeof(int) * 16)] = { 0 };

    g_assert(nfds <= 16);
    if (nfds) {
        struct cmsghdr *cm;

        mh.msg_control = ctl;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
    }
    return sendmsg(sock, &mh, 0);
}

#endif /* TESTS_UNIT_VFIO_USER_SEND_FDS_H */
