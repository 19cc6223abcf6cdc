/*
 * Helpers for qtests that run a VM with vfio-user-pci devices.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef TESTS_QTEST_VFIO_USER_VM_HELPERS_H
#define TESTS_QTEST_VFIO_USER_VM_HELPERS_H

#include <sys/prctl.h>
#include "libqtest.h"
#include "libqos/pci-pc.h"
#include "qapi/qmp/qdict.h"

/* Debian's firmware packages; QEMU's source package has no blobs */
#define VU_FW_ARGS "-L /usr/share/seabios -L /usr/lib/ipxe/qemu " \
                   "-L /usr/share/qemu "

static inline void vu_wait_for_socket(const char *path)
{
    for (int i = 0; i < 1000; i++) {
        if (access(path, F_OK) == 0) {
            return;
        }
        g_usleep(10 * 1000);
    }
    g_error("server socket %s did not appear", path);
}

static inline void vu_die_with_parent(gpointer unused)
{
    /* a test that aborts must not leave its servers behind */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
}

/* Run @argv (NULL-terminated) in the background and wait for @sock. */
static inline GPid vu_spawn_server(char **argv, const char *sock)
{
    GPid pid;

    unlink(sock);
    g_assert(g_spawn_async(NULL, argv, NULL, G_SPAWN_DO_NOT_REAP_CHILD |
                           G_SPAWN_STDOUT_TO_DEV_NULL, vu_die_with_parent,
                           NULL, &pid, NULL));
    vu_wait_for_socket(sock);
    return pid;
}

/*
 * Start "-M remote" ($VFIO_USER_QEMU) with the further arguments, up to a
 * NULL, and wait for @sock (the socket it creates last).
 */
static inline G_GNUC_NULL_TERMINATED GPid vu_spawn_remote_args(
    const char *sock, ...)
{
    const char *qemu = g_getenv("VFIO_USER_QEMU");
    const char *fixed[] = {
        "-M", "remote", "-nodefaults", "-display", "none",
    };
    g_autoptr(GPtrArray) argv = g_ptr_array_new();
    const char *arg;
    va_list ap;

    g_assert(qemu);
    g_ptr_array_add(argv, (char *)qemu);
    for (size_t i = 0; i < G_N_ELEMENTS(fixed); i++) {
        g_ptr_array_add(argv, (char *)fixed[i]);
    }
    va_start(ap, sock);
    while ((arg = va_arg(ap, const char *))) {
        g_ptr_array_add(argv, (char *)arg);
    }
    va_end(ap);
    g_ptr_array_add(argv, NULL);
    return vu_spawn_server((char **)argv->pdata, sock);
}

/* Start "-M remote" exporting "-device @device" (id @id) on @sock. */
static inline GPid vu_spawn_remote(const char *sock, const char *id,
                                   const char *device)
{
    g_autofree char *obj = g_strdup_printf(
        "vfio-user-server,id=v0,socket=%s,device=%s", sock, id);

    return vu_spawn_remote_args(sock, "-device", device, "-object", obj,
                                NULL);
}

/* The server @pid is still running (a crash or sanitizer abort ends it). */
static inline void vu_assert_alive(GPid pid)
{
    int status = 0;
    pid_t r = waitpid(pid, &status, WNOHANG);

    if (r != 0) {
        g_test_message("server %d has ended: status 0x%x", pid, status);
    }
    g_assert_cmpint(r, ==, 0);
}

/*
 * Wait up to 10 s for the server @pid to end and check how: exit status
 * 0, or death by SIGTERM when @may_die_by_term (a peer that does not
 * handle it).  One that does not end is killed, and the test fails.
 */
static inline void vu_check_end(GPid pid, bool may_die_by_term)
{
    int status = 0;
    pid_t r = 0;

    for (int i = 0; i < 1000 && (r = waitpid(pid, &status, WNOHANG)) == 0;
         i++) {
        g_usleep(10 * 1000);
    }
    if (r == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        g_test_message("server %d did not end within 10 s", pid);
    }
    g_assert_cmpint(r, ==, pid);
    if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0) &&
        !(may_die_by_term && WIFSIGNALED(status) &&
          WTERMSIG(status) == SIGTERM)) {
        g_test_message("server %d ended with status 0x%x (exit %d, "
                       "signal %d)", pid, status,
                       WIFEXITED(status) ? WEXITSTATUS(status) : -1,
                       WIFSIGNALED(status) ? WTERMSIG(status) : 0);
        g_assert_not_reached();
    }
    g_spawn_close_pid(pid);
}

/*
 * Stop a "-M remote" QEMU started above: it must still be running, and
 * quit on SIGTERM with status 0, its exit-time sanitizer checks run.
 */
static inline void vu_stop_server(GPid pid)
{
    vu_assert_alive(pid);
    g_assert_cmpint(kill(pid, SIGTERM), ==, 0);
    vu_check_end(pid, false);
}

/* The former name of vu_stop_server(), for callers written before it. */
static inline void vu_kill_server(GPid pid)
{
    vu_stop_server(pid);
}

/* Find the device at @devfn and turn on I/O, memory and bus mastering. */
/* A QMP answer that must be an error naming @why; @what for the log */
static inline void vu_assert_qmp_error(QDict *rsp, const char *what,
                                       const char *why)
{
    const char *desc;

    g_assert(qdict_haskey(rsp, "error"));
    desc = qdict_get_str(qdict_get_qdict(rsp, "error"), "desc");
    g_test_message("%s: %s", what, desc);
    g_assert(strstr(desc, why));
    qobject_unref(rsp);
}

static inline QPCIDevice *vu_find_dev(QPCIBus *bus, int devfn)
{
    QPCIDevice *dev = qpci_device_find(bus, devfn);

    g_assert(dev);
    qpci_device_enable(dev);
    return dev;
}

/* Route the PIIX3 PIRQ lines to @irq so INTx shows on the I/O APIC. */
static inline void vu_route_pirqs(QPCIBus *bus, uint8_t irq)
{
    QPCIDevice *isa = qpci_device_find(bus, QPCI_DEVFN(1, 0));

    g_assert(isa);
    for (int i = 0; i < 4; i++) {
        qpci_config_writeb(isa, 0x60 + i, irq);     /* PIRQRC[A-D] */
    }
    g_free(isa);
}

/* How many fds process @pid has open. */
static inline int vu_count_fds(pid_t pid)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/fd", pid);
    g_autoptr(GDir) dir = g_dir_open(path, 0, NULL);
    int n = 0;

    g_assert(dir);
    while (g_dir_read_name(dir)) {
        n++;
    }
    return n;
}

/* Wait up to 10 s for @pid to have @want fds open; returns the count. */
static inline int vu_wait_fds(pid_t pid, int want)
{
    int n = vu_count_fds(pid);

    for (int i = 0; i < 1000 && n != want; i++) {
        g_usleep(10 * 1000);
        n = vu_count_fds(pid);
    }
    return n;
}

/* How often @needle stands in file @path (0 if it cannot be read). */
static inline unsigned vu_count_in_file(const char *path, const char *needle)
{
    g_autofree char *text = NULL;
    unsigned n = 0;

    if (g_file_get_contents(path, &text, NULL, NULL)) {
        for (const char *p = text; (p = strstr(p, needle)); p++) {
            n++;
        }
    }
    return n;
}

/*
 * Wait up to 5 s for @needle to stand in @path more than @above times (a
 * process logs asynchronously); returns the count.
 */
static inline unsigned vu_wait_in_file(const char *path, const char *needle,
                                       unsigned above)
{
    unsigned n = vu_count_in_file(path, needle);

    for (int i = 0; i < 500 && n <= above; i++) {
        g_usleep(10 * 1000);
        n = vu_count_in_file(path, needle);
    }
    return n;
}

#endif /* TESTS_QTEST_VFIO_USER_VM_HELPERS_H */
