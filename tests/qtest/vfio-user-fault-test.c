/*
 * Faults between our client and our server, and the server sandboxed:
 *   - the remote process is killed while the guest hammers the device
 *     (BAR accesses and DMA): the client VM goes on, the device inert;
 *   - a client VM is SIGKILLed with a DMA in flight: the remote frees its
 *     fds and mappings and serves the next client;
 *   - the remote runs with -sandbox on as an unprivileged user, and a
 *     client uses its device.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <pwd.h>
#include "libqtest.h"
#include "libqos/pci-pc.h"
#include "qapi/qmp/qdict.h"
#include "standard-headers/linux/pci_regs.h"
#include "vfio-user/vm-helpers.h"
#include "vfio-user/edu.h"

#define DEVFN   QPCI_DEVFN(4, 0)
/* what docs/system/devices/vfio-user.rst recommends */
#define SANDBOX_OPTS "on,obsolete=deny,elevateprivileges=deny,spawn=deny," \
                     "resourcecontrol=deny"

typedef struct Vm {
    QTestState *qts;
    QPCIBus *bus;
    QPCIDevice *dev;
    QPCIBar bar;
    pid_t pid;
} Vm;

static char *tmpdir;

/* Does the remote still map any of a client's guest RAM? */
static bool maps_memfd(pid_t pid)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/maps", pid);
    g_autofree char *maps = NULL;

    g_assert(g_file_get_contents(path, &maps, NULL, NULL));
    return strstr(maps, "memfd:") != NULL;
}

static char *proc_status(pid_t pid, const char *key)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/status", pid);
    g_autofree char *st = NULL;
    g_auto(GStrv) lines = NULL;

    g_assert(g_file_get_contents(path, &st, NULL, NULL));
    lines = g_strsplit(st, "\n", -1);
    for (int i = 0; lines[i]; i++) {
        if (g_str_has_prefix(lines[i], key)) {
            return g_strstrip(g_strdup(lines[i] + strlen(key)));
        }
    }
    g_assert_not_reached();
}

/* Start the remote (edu) on @sock, optionally sandboxed and as nobody. */
static GPid remote_start(const char *sock, bool confined)
{
    const char *qemu = g_getenv("VFIO_USER_QEMU");
    g_autofree char *obj = g_strdup_printf(
        "vfio-user-server,id=v0,socket=%s,device=e0", sock);
    g_autoptr(GPtrArray) argv = g_ptr_array_new();
    g_autofree char *setpriv = g_find_program_in_path("setpriv");

    g_assert(qemu);
    if (confined) {
        g_assert(setpriv);      /* util-linux */
        g_ptr_array_add(argv, setpriv);
        g_ptr_array_add(argv, (char *)"--reuid=nobody");
        g_ptr_array_add(argv, (char *)"--regid=nogroup");
        g_ptr_array_add(argv, (char *)"--clear-groups");
    }
    g_ptr_array_add(argv, (char *)qemu);
    g_ptr_array_add(argv, (char *)"-M");
    g_ptr_array_add(argv, (char *)"remote");
    g_ptr_array_add(argv, (char *)"-nodefaults");
    g_ptr_array_add(argv, (char *)"-display");
    g_ptr_array_add(argv, (char *)"none");
    if (confined) {
        g_ptr_array_add(argv, (char *)"-sandbox");
        g_ptr_array_add(argv, (char *)SANDBOX_OPTS);
    }
    g_ptr_array_add(argv, (char *)"-device");
    g_ptr_array_add(argv, (char *)"edu,id=e0");
    g_ptr_array_add(argv, (char *)"-object");
    g_ptr_array_add(argv, obj);
    g_ptr_array_add(argv, NULL);
    return vu_spawn_server((char **)argv->pdata, sock);
}

/* @errlog: where QEMU's stderr goes (libqtest runs it with sh -c) */
static void vm_start_log(Vm *vm, const char *sock, bool memfd,
                         const char *errlog)
{
    g_autofree char *pidfile = g_strdup_printf("%s/vm.pid", tmpdir);
    g_autofree char *redirect = errlog ? g_strdup_printf("2>%s", errlog)
                                       : g_strdup("");
    g_autofree char *pid = NULL;
    uint64_t size;

    vm->qts = qtest_initf(VU_FW_ARGS "-M pc%s -m 64M %s -pidfile %s "
                          "-device vfio-user-pci,socket=%s,id=edu,addr=04.0,"
                          "x-msg-timeout=2000 %s",
                          memfd ? ",memory-backend=mem" : "",
                          memfd ? "-object memory-backend-memfd,id=mem,"
                                  "size=64M,share=on" : "",
                          pidfile, sock, redirect);
    g_assert(g_file_get_contents(pidfile, &pid, NULL, NULL));
    unlink(pidfile);
    vm->pid = atoi(pid);
    vm->bus = qpci_new_pc(vm->qts, NULL);
    vm->dev = vu_find_dev(vm->bus, DEVFN);
    vm->bar = qpci_iomap(vm->dev, 0, &size);
    g_assert_cmpuint(size, ==, 1024 * 1024);
}

static void vm_start(Vm *vm, const char *sock, bool memfd)
{
    vm_start_log(vm, sock, memfd, NULL);
}

static void vm_free(Vm *vm)
{
    g_free(vm->dev);
    qpci_free_pc(vm->bus);
}

static void vm_stop(Vm *vm)
{
    vm_free(vm);
    qtest_quit(vm->qts);
}

static void vm_check_alive(Vm *vm)
{
    QDict *rsp = qtest_qmp(vm->qts, "{'execute': 'query-status'}");

    g_assert(qdict_haskey(rsp, "return"));
    qobject_unref(rsp);
}

/* The device works: ID, factorial, a DMA round trip through guest RAM. */
static void vm_use_edu(Vm *vm)
{
    uint8_t in[256], out[256];

    g_assert_cmphex(qpci_io_readl(vm->dev, vm->bar, EDU_ID), ==, 0x010000ed);
    qpci_io_writel(vm->dev, vm->bar, EDU_FACT, 6);
    edu_wait_clear(vm->dev, vm->bar, EDU_STATUS, EDU_STATUS_BUSY);
    g_assert_cmpuint(qpci_io_readl(vm->dev, vm->bar, EDU_FACT), ==, 720);
    for (int i = 0; i < sizeof(in); i++) {
        in[i] = i ^ 0x5a;
    }
    qtest_memwrite(vm->qts, 0x100000, in, sizeof(in));
    edu_dma(vm->dev, vm->bar, 0x100000, EDU_DMA_BUF, sizeof(in), false);
    edu_dma(vm->dev, vm->bar, EDU_DMA_BUF, 0x101000, sizeof(in), true);
    qtest_memread(vm->qts, 0x101000, out, sizeof(out));
    g_assert(memcmp(in, out, sizeof(in)) == 0);
}

static gpointer kill_later(gpointer opaque)
{
    GPid pid = GPOINTER_TO_INT(opaque);

    /* somewhere in the middle of the loop below */
    g_usleep(300 * 1000);
    kill(pid, SIGKILL);
    return NULL;
}

/*
 * The server dies under load: the guest's accesses see all-ones from the
 * next one on, QEMU carries on, and the device stays inert.
 */
static void test_server_killed(gconstpointer opaque)
{
    bool memfd = GPOINTER_TO_INT(opaque);
    g_autofree char *sock = g_strdup_printf("%s/killed.sock", tmpdir);
    g_autofree char *errlog = g_strdup_printf("%s/killed.err", tmpdir);
    g_autofree char *err = NULL;
    GPid remote = remote_start(sock, false);
    GThread *killer;
    const char *p;
    int i, nerr = 0;
    Vm vm;

    vm_start_log(&vm, sock, memfd, errlog);
    vm_use_edu(&vm);
    killer = g_thread_new("killer", kill_later, GINT_TO_POINTER(remote));
    for (i = 0; i < 100000; i++) {
        if (qpci_io_readl(vm.dev, vm.bar, EDU_ID) == 0xffffffff) {
            break;
        }
        qpci_io_writel(vm.dev, vm.bar, EDU_LIVENESS, i);
        /* DMA requests of the device, in flight when the end comes */
        qpci_io_writeq(vm.dev, vm.bar, EDU_DMA_SRC, 0x100000);
        qpci_io_writeq(vm.dev, vm.bar, EDU_DMA_DST, EDU_DMA_BUF);
        qpci_io_writeq(vm.dev, vm.bar, EDU_DMA_CNT, 256);
        qpci_io_writeq(vm.dev, vm.bar, EDU_DMA_CMD, EDU_DMA_RUN);
    }
    g_thread_join(killer);
    waitpid(remote, NULL, 0);
    g_spawn_close_pid(remote);
    g_test_message("server died after %d rounds", i);
    g_assert_cmpint(i, <, 100000);
    /* inert from now on */
    g_assert_cmphex(qpci_io_readl(vm.dev, vm.bar, EDU_ID), ==, 0xffffffff);
    qpci_io_writel(vm.dev, vm.bar, EDU_FACT, 5);
    g_assert_cmphex(qpci_config_readw(vm.dev, PCI_VENDOR_ID), ==, 0xffff);
    vm_check_alive(&vm);
    /* and it can be unplugged */
    qpci_unplug_acpi_device_test(vm.qts, "edu", 4);
    vm_check_alive(&vm);
    vm_stop(&vm);
    /* one clear error, naming the socket */
    g_assert(g_file_get_contents(errlog, &err, NULL, NULL));
    g_test_message("QEMU said: %s", err);
    for (p = err; (p = strstr(p, "lost the server")); p++) {
        nerr++;
    }
    g_assert_cmpint(nerr, ==, 1);
    g_assert(strstr(err, sock));
    unlink(errlog);
    unlink(sock);
}

/*
 * A client VM is SIGKILLed with a DMA pending: the remote drops the
 * connection and everything that came with it (fds, guest RAM mappings)
 * and serves the next client.
 */
static void test_client_killed(gconstpointer opaque)
{
    bool memfd = GPOINTER_TO_INT(opaque);
    g_autofree char *sock = g_strdup_printf("%s/client.sock", tmpdir);
    GPid remote = remote_start(sock, false);
    int idle = vu_count_fds(remote);
    Vm vm, next;

    for (int round = 0; round < 3; round++) {
        vm_start(&vm, sock, memfd);
        vm_use_edu(&vm);
        g_assert_cmpint(vu_count_fds(remote), >, idle);
        g_assert(maps_memfd(remote) == memfd);
        qpci_io_writel(vm.dev, vm.bar, EDU_LIVENESS, round);
        /* a DMA from the remote's timer, after the client is gone */
        qpci_io_writeq(vm.dev, vm.bar, EDU_DMA_SRC, 0x100000);
        qpci_io_writeq(vm.dev, vm.bar, EDU_DMA_DST, EDU_DMA_BUF);
        qpci_io_writeq(vm.dev, vm.bar, EDU_DMA_CNT, 256);
        qpci_io_writeq(vm.dev, vm.bar, EDU_DMA_CMD, EDU_DMA_RUN);
        kill(vm.pid, SIGKILL);
        /* libqtest would take a death by signal as a failure: no quit */
        waitpid(vm.pid, NULL, 0);
        vm_free(&vm);
        g_assert_cmpint(vu_wait_fds(remote, idle), ==, idle);
        /* munmap follows an RCU grace period */
        for (int i = 0; i < 1000 && maps_memfd(remote); i++) {
            g_usleep(10 * 1000);
        }
        g_assert(!maps_memfd(remote));
    }
    /* a new client is served, with the device reset */
    vm_start(&next, sock, memfd);
    vm_use_edu(&next);
    vm_stop(&next);
    g_assert_cmpint(vu_wait_fds(remote, idle), ==, idle);
    vu_stop_server(remote);
    unlink(sock);
}

/*
 * The remote confined: seccomp filter on, running as nobody, its socket
 * in a folder it may write.  A client VM uses the device, DMA included.
 */
static void test_sandboxed(gconstpointer opaque)
{
    bool memfd = GPOINTER_TO_INT(opaque);
    g_autofree char *dir = g_strdup_printf("%s/nobody", tmpdir);
    g_autofree char *sock = g_strdup_printf("%s/edu.sock", dir);
    g_autofree char *uid = NULL;
    g_autofree char *seccomp = NULL;
    struct passwd *pw = getpwnam("nobody");
    GPid remote;
    Vm vm;

    if (getuid() != 0 || !pw) {
        /* setpriv needs root; this is a failure, not a skip */
        g_error("the sandbox test must run as root to drop to nobody");
    }
    g_assert_cmpint(g_mkdir_with_parents(dir, 0700), ==, 0);
    g_assert_cmpint(chown(dir, pw->pw_uid, pw->pw_gid), ==, 0);
    remote = remote_start(sock, true);

    uid = proc_status(remote, "Uid:");
    seccomp = proc_status(remote, "Seccomp:");
    g_test_message("remote Uid: %s, Seccomp: %s", uid, seccomp);
    g_assert_cmpint(atoi(uid), ==, pw->pw_uid);
    g_assert_cmpstr(seccomp, ==, "2");      /* filter mode */

    vm_start(&vm, sock, memfd);
    vm_use_edu(&vm);
    vm_stop(&vm);
    /* still alive and confined after its client left */
    g_assert_cmpint(waitpid(remote, NULL, WNOHANG), ==, 0);
    vu_stop_server(remote);
    unlink(sock);
    rmdir(dir);
}

int main(int argc, char **argv)
{
    int ret;

    g_test_init(&argc, &argv, NULL);
    tmpdir = g_dir_make_tmp("vfio-user-fault-XXXXXX", NULL);
    /* others than root traverse it to reach the sandboxed socket */
    g_assert_cmpint(chmod(tmpdir, 0755), ==, 0);
    qtest_add_data_func("/vfio-user/fault/server-killed/nofd",
                        GINT_TO_POINTER(false), test_server_killed);
    qtest_add_data_func("/vfio-user/fault/server-killed/fd",
                        GINT_TO_POINTER(true), test_server_killed);
    qtest_add_data_func("/vfio-user/fault/client-killed/nofd",
                        GINT_TO_POINTER(false), test_client_killed);
    qtest_add_data_func("/vfio-user/fault/client-killed/fd",
                        GINT_TO_POINTER(true), test_client_killed);
    qtest_add_data_func("/vfio-user/sandbox/nofd",
                        GINT_TO_POINTER(false), test_sandboxed);
    qtest_add_data_func("/vfio-user/sandbox/fd",
                        GINT_TO_POINTER(true), test_sandboxed);
    ret = g_test_run();
    rmdir(tmpdir);
    g_free(tmpdir);
    return ret;
}
