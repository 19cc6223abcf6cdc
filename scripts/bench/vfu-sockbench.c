/*
 * Raw AF_UNIX socket baselines for `make bench`: what any vfio-user
 * implementation pays at least, with no protocol code in the way.
 *
 *   vfu-sockbench pingpong ITERS      one 16+4-byte message each way
 *   vfu-sockbench stream SIZE BYTES   SIZE-byte writes, BYTES in total
 *   vfu-sockbench reqrep SIZE BYTES   SIZE+16 bytes out, a 16+16-byte ack
 *                                     back (a DMA_WRITE's shape)
 *
 * Prints "ns_per_op N" or "mib_per_s N" on stdout.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define HDR 16

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void xwrite(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len) {
        ssize_t n = write(fd, p, len);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            die("write");
        }
        p += n;
        len -= n;
    }
}

/* Returns 0 at EOF before the first byte. */
static int xread(int fd, void *buf, size_t len)
{
    char *p = buf;
    size_t got = 0;

    while (got < len) {
        ssize_t n = read(fd, p + got, len - got);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n == 0 && got == 0) {
            return 0;
        }
        if (n <= 0) {
            die("read");
        }
        got += n;
    }
    return 1;
}

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    int sv[2];
    pid_t pid;
    size_t size, msg;
    uint64_t total, iters;
    char *buf;
    double t0, t;

    if (argc < 3) {
        fprintf(stderr, "usage: %s pingpong ITERS | stream SIZE BYTES | "
                "reqrep SIZE BYTES\n", argv[0]);
        return 2;
    }
    if (!strcmp(argv[1], "pingpong")) {
        size = 4;
        iters = strtoull(argv[2], NULL, 0);
        total = 0;
    } else {
        if (argc < 4) {
            return 2;
        }
        size = strtoull(argv[2], NULL, 0);
        total = strtoull(argv[3], NULL, 0);
        iters = total / size;
    }
    msg = HDR + size;
    buf = calloc(1, msg + HDR + 16);
    if (!buf || socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) {
        die("setup");
    }
    pid = fork();
    if (pid < 0) {
        die("fork");
    }
    if (pid == 0) {
        /* the peer: read a message, answer as the mode wants */
        close(sv[0]);
        for (;;) {
            if (!xread(sv[1], buf, msg)) {
                _exit(0);
            }
            if (!strcmp(argv[1], "pingpong")) {
                xwrite(sv[1], buf, msg);
            } else if (!strcmp(argv[1], "reqrep")) {
                xwrite(sv[1], buf, HDR + 16);
            }
        }
    }
    close(sv[1]);
    t0 = now();
    for (uint64_t i = 0; i < iters; i++) {
        xwrite(sv[0], buf, msg);
        if (!strcmp(argv[1], "pingpong")) {
            xread(sv[0], buf, msg);
        } else if (!strcmp(argv[1], "reqrep")) {
            xread(sv[0], buf, HDR + 16);
        }
    }
    /* stream: the peer has read everything once it sees EOF */
    shutdown(sv[0], SHUT_WR);
    waitpid(pid, NULL, 0);
    t = now() - t0;
    if (!strcmp(argv[1], "pingpong")) {
        printf("ns_per_op %.1f\n", t * 1e9 / iters);
    } else {
        printf("mib_per_s %.1f\n", (double)iters * size / t / (1024 * 1024));
    }
    return 0;
}
