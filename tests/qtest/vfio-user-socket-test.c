/*
 * Where vfio-user-server listens and who may connect:
 *   - each form of its "socket" property: a path, a SocketAddress of type
 *     unix (-object JSON and dotted keys), of type fd through QMP getfd +
 *     object-add, and an fd inherited as with systemd socket activation;
 *   - fds of the wrong kind are refused with a clear error, and not kept;
 *   - allowed-uid/allowed-gid: another user's client is logged and
 *     dropped, the next allowed one is served;
 *   - the "Running it for real" recipe of docs/system/devices/vfio-user.rst
 *     as written: a systemd-like start of a confined remote with its
 *     listening socket as fd 3, and the VM side with getfd + device_add.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <sys/eventfd.h>
#include <sys/un.h>
#include "libqtest.h"
#include "libqos/pci-pc.h"
#include "standard-headers/linux/pci_regs.h"
#include "qapi/qmp/qdict.h"
#include "qapi/qmp/qjson.h"
#include "vfio-user/vm-helpers.h"
#include "vfio-user/server-client.h"

#define EDU_ID_VALUE    0x010000edu
#define NOBODY          65534

static char *tmpdir;

static char *tmp_file(const char *name)
{
    return g_strdup_printf("%s/%s", tmpdir, name);
}

/* A client of @path reads edu's ID register, then leaves. */
static void check_edu_served(const char *path)
{
    VfuConn *c = tc_connect(path);

    g_assert_cmphex(tc_read(c, VFU_PCI_BAR0_REGION, EDU_ID, 4), ==,
                    EDU_ID_VALUE);
    vfu_conn_free(c);
}

/* A listening UNIX socket at @path, as a management layer makes it. */
static int listen_at(const char *path, mode_t mode)
{
    int fd;

    unlink(path);
    fd = unix_listen(path, &error_abort);
    g_assert_cmpint(chmod(path, mode), ==, 0);
    return fd;
}

/*
 * Start "-M remote" with @args (NULL-terminated) the way systemd starts
 * a socket-activated service: @lfd (if >= 0) becomes fd 3, the only fd
 * beyond stdio, with LISTEN_FDS=1 and LISTEN_PID; as @user if not NULL.
 * Its stderr goes to @log.
 */
static pid_t remote_spawn(const char *const *args, int lfd,
                          const struct passwd *user, const char *log)
{
    const char *qemu = g_getenv("VFIO_USER_QEMU");
    g_autoptr(GPtrArray) argv = g_ptr_array_new();
    pid_t pid;

    g_assert(qemu);
    g_ptr_array_add(argv, (char *)qemu);
    for (int i = 0; args[i]; i++) {
        g_ptr_array_add(argv, (char *)args[i]);
    }
    g_ptr_array_add(argv, NULL);

    pid = fork();
    g_assert_cmpint(pid, >=, 0);
    if (pid == 0) {
        int errfd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int nullfd = open("/dev/null", O_WRONLY);
        g_autofree char *me = NULL;

        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (errfd < 0 || nullfd < 0 || dup2(errfd, 2) < 0 ||
            dup2(nullfd, 1) < 0) {
            _exit(126);
        }
        if (lfd >= 0) {
            if (lfd == 3) {
                fcntl(3, F_SETFD, 0);
            } else if (dup2(lfd, 3) < 0) {
                _exit(126);
            }
            me = g_strdup_printf("%d", getpid());
            setenv("LISTEN_FDS", "1", 1);
            setenv("LISTEN_PID", me, 1);
        }
        for (int fd = lfd >= 0 ? 4 : 3; fd < 1024; fd++) {
            close(fd);
        }
        if (user && (setgroups(0, NULL) < 0 || setgid(user->pw_gid) < 0 ||
                     setuid(user->pw_uid) < 0)) {
            _exit(126);
        }
        execv(qemu, (char **)argv->pdata);
        _exit(127);
    }
    return pid;
}

/* Wait for the remote @pid to exit by itself; its exit status. */
static int remote_wait_exit(pid_t pid)
{
    int status;

    g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
    g_assert(WIFEXITED(status));
    return WEXITSTATUS(status);
}

/* ---- the forms of "socket" ---------------------------------------------- */

/* socket=PATH: the server creates the socket, and removes it when done */
static void test_path(void)
{
    g_autofree char *sock = tmp_file("path.sock");
    GPid pid = vu_spawn_remote(sock, "e0", "edu,id=e0");

    check_edu_served(sock);
    vu_stop_server(pid);
    g_assert_cmpint(access(sock, F_OK), <, 0);
}

/* {"type": "unix", "path": ...} in -object JSON, and as dotted keys */
static void test_unix(gconstpointer opaque)
{
    bool dotted = GPOINTER_TO_INT(opaque);
    g_autofree char *sock = tmp_file("unix.sock");
    g_autofree char *obj = dotted ?
        g_strdup_printf("vfio-user-server,id=v0,device=e0,"
                        "socket.type=unix,socket.path=%s", sock) :
        g_strdup_printf("{\"qom-type\": \"vfio-user-server\", \"id\": \"v0\","
                        " \"device\": \"e0\", \"socket\": {\"type\": "
                        "\"unix\", \"path\": \"%s\"}}", sock);
    GPid pid = vu_spawn_remote_args(sock, "-device", "edu,id=e0",
                                    "-object", obj, NULL);

    check_edu_served(sock);
    vu_stop_server(pid);
    g_assert_cmpint(access(sock, F_OK), <, 0);
}

/* A remote without server, driven over QMP; its pid in *@pid. */
static QTestState *remote_qmp_start(pid_t *pid)
{
    g_autofree char *pidfile = tmp_file("remote.pid");
    g_autofree char *text = NULL;
    QTestState *qts;

    qts = qtest_initf("-M remote -accel tcg -nodefaults -pidfile %s "
                      "-device edu,id=e0", pidfile);
    g_assert(g_file_get_contents(pidfile, &text, NULL, NULL));
    unlink(pidfile);
    *pid = atoi(text);
    return qts;
}

/* Hand @qts @fd under @name with getfd, and close ours. */
static void getfd(QTestState *qts, int fd, const char *name)
{
    QDict *rsp;

    g_assert_cmpint(fd, >=, 0);
    rsp = qtest_qmp_fds(qts, &fd, 1, "{'execute': 'getfd', "
                        "'arguments': {'fdname': %s}}", name);
    g_assert(qdict_haskey(rsp, "return"));
    qobject_unref(rsp);
    close(fd);
}

/* object-add of a server of e0 on @socket (JSON); the reply */
static QDict *server_add(QTestState *qts, const char *socket)
{
    return qtest_qmp(qts, "{'execute': 'object-add', 'arguments': {"
                     "'qom-type': 'vfio-user-server', 'id': 'v1', "
                     "'device': 'e0', 'socket': %p}}",
                     qobject_from_json(socket, &error_abort));
}

static void check_ok(QDict *rsp)
{
    if (qdict_haskey(rsp, "error")) {
        g_test_message("%s", qdict_get_str(qdict_get_qdict(rsp, "error"),
                                           "desc"));
    }
    g_assert(qdict_haskey(rsp, "return"));
    qobject_unref(rsp);
}

static void check_error(QDict *rsp, const char *why)
{
    vu_assert_qmp_error(rsp, "object-add", why);
}

/*
 * {"type": "fd", "str": NAME}: a listening socket passed with getfd.  Its
 * path belongs to whoever made it: object-del leaves it in place.
 */
static void test_getfd(void)
{
    g_autofree char *sock = tmp_file("getfd.sock");
    pid_t pid;
    QTestState *qts = remote_qmp_start(&pid);
    int before = vu_count_fds(pid);

    getfd(qts, listen_at(sock, 0600), "lsn");
    check_ok(server_add(qts, "{\"type\": \"fd\", \"str\": \"lsn\"}"));
    check_edu_served(sock);
    check_ok(qtest_qmp(qts, "{'execute': 'object-del', "
                       "'arguments': {'id': 'v1'}}"));
    g_assert_cmpint(access(sock, F_OK), ==, 0);
    g_assert_cmpint(vu_wait_fds(pid, before), ==, before);
    qtest_quit(qts);
    unlink(sock);
}

/* a remote serving edu on the listening socket it inherits as fd 3 */
static const char *const inherited_args[] = {
    "-M", "remote", "-nodefaults", "-display", "none",
    "-device", "edu,id=e0",
    "-object", "vfio-user-server,id=v0,socket.type=fd,socket.str=3,device=e0",
    NULL
};

/*
 * An inherited listening fd on the command line (socket activation):
 * served, and its path still there after the remote quit, so that the
 * next remote started on the same socket is reached again.
 */
static void test_inherited(void)
{
    g_autofree char *sock = tmp_file("inherited.sock");
    g_autofree char *log = tmp_file("inherited.log");
    int lfd = listen_at(sock, 0600);

    for (int run = 0; run < 2; run++) {
        pid_t pid = remote_spawn(inherited_args, lfd, NULL, log);

        check_edu_served(sock);
        vu_stop_server(pid);
        g_assert_cmpint(access(sock, F_OK), ==, 0);
    }
    close(lfd);
    unlink(sock);
}

/* fds that are not a listening UNIX stream socket, through QMP */
static void test_wrong_fd(void)
{
    static const char fd_json[] = "{\"type\": \"fd\", \"str\": \"bad\"}";
    g_autofree char *bound = tmp_file("bound.sock");
    g_autofree char *sock = tmp_file("wrong.sock");
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    pid_t pid;
    QTestState *qts = remote_qmp_start(&pid);
    int before = vu_count_fds(pid);
    int sv[2], lfd, fd;

    getfd(qts, eventfd(0, EFD_CLOEXEC), "bad");
    check_error(server_add(qts, fd_json), "is not a socket");

    g_assert_cmpint(socketpair(AF_UNIX, SOCK_DGRAM, 0, sv), ==, 0);
    getfd(qts, sv[0], "bad");
    close(sv[1]);
    check_error(server_add(qts, fd_json), "is not a UNIX stream socket");

    getfd(qts, socket(AF_INET, SOCK_STREAM, 0), "bad");
    check_error(server_add(qts, fd_json), "is not a UNIX stream socket");

    /* neither an unbound nor a bound socket may be made to listen */
    getfd(qts, socket(AF_UNIX, SOCK_STREAM, 0), "bad");
    check_error(server_add(qts, fd_json), "is not a listening socket");
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    g_strlcpy(sun.sun_path, bound, sizeof(sun.sun_path));
    unlink(bound);
    g_assert_cmpint(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), ==, 0);
    getfd(qts, fd, "bad");
    check_error(server_add(qts, fd_json), "is not a listening socket");
    unlink(bound);

    /* a connected socket is a client's, not a server's */
    lfd = listen_at(sock, 0600);
    getfd(qts, unix_connect(sock, &error_abort), "bad");
    check_error(server_add(qts, fd_json), "is not a listening socket");
    close(lfd);
    unlink(sock);

    /* a name never given; a decimal fd is no getfd name under QMP */
    check_error(server_add(qts, fd_json), "bad");
    check_error(server_add(qts, "{\"type\": \"fd\", \"str\": \"0\"}"), "'0'");
    check_error(server_add(qts, "{\"type\": \"inet\", \"host\": "
                           "\"127.0.0.1\", \"port\": \"1\"}"),
                "must be a UNIX socket");

    /* refused fds are closed, and the device is free for a real server */
    g_assert_cmpint(vu_wait_fds(pid, before), ==, before);
    lfd = listen_at(sock, 0600);
    getfd(qts, lfd, "good");
    check_ok(server_add(qts, "{\"type\": \"fd\", \"str\": \"good\"}"));
    check_edu_served(sock);
    qtest_quit(qts);
    unlink(sock);
}

/* An inherited fd that does not listen: the remote does not start. */
static void test_wrong_fd_inherited(void)
{
    g_autofree char *log = tmp_file("wrong-inherited.log");
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    pid_t pid = remote_spawn(inherited_args, fd, NULL, log);

    close(fd);
    g_assert_cmpint(remote_wait_exit(pid), ==, 1);
    g_assert_cmpuint(vu_count_in_file(log, "fd '3' is not a listening "
                                      "socket"), ==, 1);
}

/* ---- who may connect ---------------------------------------------------- */

/*
 * In a child running as uid/gid @uid/@gid, connect to @path; the exit
 * status says whether the server hung up on it (0) before saying
 * anything (its first message would be a reply to our VERSION).
 */
static pid_t connect_as(const char *path, uid_t uid, gid_t gid)
{
    pid_t pid = fork();

    g_assert_cmpint(pid, >=, 0);
    if (pid == 0) {
        struct pollfd pfd = { .events = POLLIN };
        char c;

        if (setgroups(0, NULL) < 0 || setgid(gid) < 0 || setuid(uid) < 0) {
            _exit(2);
        }
        pfd.fd = unix_connect(path, NULL);
        if (pfd.fd < 0) {
            _exit(3);
        }
        /* the remote decides right at accept: no need to wait long */
        if (poll(&pfd, 1, 10000) != 1) {
            _exit(4);
        }
        _exit(read(pfd.fd, &c, 1) == 0 ? 0 : 5);
    }
    return pid;
}

static void test_peer_filter(gconstpointer opaque)
{
    bool by_gid = GPOINTER_TO_INT(opaque);
    g_autofree char *sock = tmp_file("peer.sock");
    g_autofree char *log = tmp_file("peer.log");
    g_autofree char *obj = g_strdup_printf(
        "vfio-user-server,id=v0,socket=%s,device=e0,%s=%u", sock,
        by_gid ? "allowed-gid" : "allowed-uid",
        by_gid ? (unsigned)getgid() : (unsigned)getuid());
    g_autofree char *needle = g_strdup_printf(
        "refused a client running as uid %u gid %u (pid ",
        by_gid ? (unsigned)getuid() : NOBODY, NOBODY);
    const char *args[] = {
        "-M", "remote", "-nodefaults", "-display", "none",
        "-device", "edu,id=e0", "-object", obj, NULL
    };
    pid_t pid, child;
    int status;

    if (getuid() != 0) {
        /* connecting as another user needs root; a failure, not a skip */
        g_error("the peer-credential test must run as root");
    }
    unlink(sock);
    pid = remote_spawn(args, -1, NULL, log);
    vu_wait_for_socket(sock);
    /* any user may reach the socket: only the filter keeps them out */
    g_assert_cmpint(chmod(sock, 0666), ==, 0);

    /* by gid: the same user, in another group */
    child = connect_as(sock, by_gid ? getuid() : NOBODY, NOBODY);
    g_assert_cmpint(waitpid(child, &status, 0), ==, child);
    g_assert(WIFEXITED(status));
    g_assert_cmpint(WEXITSTATUS(status), ==, 0);
    g_assert_cmpuint(vu_wait_in_file(log, needle, 0), ==, 1);

    /* still listening, and the next allowed client is served */
    check_edu_served(sock);
    vu_stop_server(pid);
    g_assert_cmpuint(vu_count_in_file(log, "refused"), ==, 1);
}

/* ---- the documented recipe ---------------------------------------------- */

/*
 * docs/system/devices/vfio-user.rst, "Running it for real": keep these in
 * step with the units and commands there.  What systemd does for them is
 * done here: ListenStream= with SocketMode=0600 (owner root), then
 * ExecStart= as User=/Group= (nobody standing in for the dedicated user)
 * with the socket as fd 3.  /run/vfio-user and /srv/vfio-user stand for
 * the test's folder.
 */
#define DOC_SANDBOX "on,obsolete=deny,elevateprivileges=deny,spawn=deny," \
                    "resourcecontrol=deny"

static void test_systemd(void)
{
    g_autofree char *sock = tmp_file("nvme0.sock");
    g_autofree char *img = tmp_file("nvme0.img");
    g_autofree char *log = tmp_file("nvme0.log");
    g_autofree char *drive = g_strdup_printf(
        "if=none,id=d0,file=%s,format=raw", img);
    /* ExecStart= */
    const char *args[] = {
        "-M", "remote", "-nodefaults", "-display", "none",
        "-sandbox", DOC_SANDBOX,
        "-drive", drive,
        "-device", "nvme,id=n0,serial=nvme0,drive=d0",
        "-object", "vfio-user-server,id=v0,socket.type=fd,socket.str=3,"
                   "device=n0,allowed-uid=0",
        NULL
    };
    struct passwd *pw = getpwnam("nobody");
    g_autofree char *pidfile = tmp_file("vm.pid");
    g_autofree char *status = NULL;
    struct stat st;
    QTestState *qts;
    QPCIBus *bus;
    QPCIDevice *dev;
    QPCIBar bar;
    QDict *rsp;
    pid_t remote;
    int lfd;

    if (getuid() != 0 || !pw) {
        g_error("the systemd recipe test must run as root to drop to nobody");
    }
    g_assert(g_file_set_contents(img, "", 0, NULL));
    g_assert_cmpint(truncate(img, 1024 * 1024), ==, 0);
    g_assert_cmpint(chown(img, pw->pw_uid, pw->pw_gid), ==, 0);

    lfd = listen_at(sock, 0600);            /* vfio-user-nvme0.socket */
    remote = remote_spawn(args, lfd, pw, log);
    close(lfd);                             /* systemd keeps its own */
    status = g_strdup_printf("/proc/%d/status", remote);

    /* the VM: connect, getfd, device_add */
    qts = qtest_initf(VU_FW_ARGS "-M pc -m 64M -pidfile %s", pidfile);
    getfd(qts, unix_connect(sock, &error_abort), "nvme0");
    rsp = qtest_qmp(qts, "{'execute': 'device_add', 'arguments': {"
                    "'driver': 'vfio-user-pci', 'id': 'nvme0', "
                    "'socket': {'type': 'fd', 'str': 'nvme0'}, "
                    "'addr': '04.0'}}");
    check_ok(rsp);

    /* the guest's view: the controller's version register (NVMe 1.4) */
    bus = qpci_new_pc(qts, NULL);
    dev = vu_find_dev(bus, QPCI_DEVFN(4, 0));
    g_assert_cmphex(qpci_config_readw(dev, PCI_VENDOR_ID), ==, 0x1b36);
    bar = qpci_iomap(dev, 0, NULL);
    g_assert_cmphex(qpci_io_readl(dev, bar, 0x8), ==, 0x00010400);
    qpci_iounmap(dev, bar);
    g_free(dev);
    qpci_unplug_acpi_device_test(qts, "nvme0", 4);
    qpci_free_pc(bus);
    qtest_quit(qts);
    unlink(pidfile);

    /* it ran as nobody, seccomp filter on, and served no one else */
    g_assert_cmpint(stat(status, &st), ==, 0);
    g_assert_cmpint(st.st_uid, ==, pw->pw_uid);
    g_assert_cmpuint(vu_count_in_file(status, "Seccomp:\t2\n"), ==, 1);
    g_assert_cmpuint(vu_count_in_file(log, "refused"), ==, 0);
    vu_stop_server(remote);
    g_assert_cmpint(access(sock, F_OK), ==, 0);
    unlink(sock);
    unlink(img);
}

int main(int argc, char **argv)
{
    int ret;

    g_test_init(&argc, &argv, NULL);
    signal(SIGPIPE, SIG_IGN);
    module_call_init(MODULE_INIT_QOM);
    tmpdir = g_dir_make_tmp("vfio-user-socket-XXXXXX", NULL);
    /* other users reach the sockets in it */
    g_assert_cmpint(chmod(tmpdir, 0755), ==, 0);
    qtest_add_func("/vfio-user/socket/server/path", test_path);
    qtest_add_data_func("/vfio-user/socket/server/unix-json",
                        GINT_TO_POINTER(false), test_unix);
    qtest_add_data_func("/vfio-user/socket/server/unix-dotted",
                        GINT_TO_POINTER(true), test_unix);
    qtest_add_func("/vfio-user/socket/server/getfd", test_getfd);
    qtest_add_func("/vfio-user/socket/server/inherited", test_inherited);
    qtest_add_func("/vfio-user/socket/server/wrong-fd", test_wrong_fd);
    qtest_add_func("/vfio-user/socket/server/wrong-fd-inherited",
                   test_wrong_fd_inherited);
    qtest_add_data_func("/vfio-user/socket/server/allowed-uid",
                        GINT_TO_POINTER(false), test_peer_filter);
    qtest_add_data_func("/vfio-user/socket/server/allowed-gid",
                        GINT_TO_POINTER(true), test_peer_filter);
    qtest_add_func("/vfio-user/socket/systemd", test_systemd);
    ret = g_test_run();
    /* the remotes' logs, kept until here for a failing case's post-mortem */
    {
        g_autoptr(GDir) dir = g_dir_open(tmpdir, 0, NULL);
        const char *name;

        while (dir && (name = g_dir_read_name(dir))) {
            g_autofree char *path = tmp_file(name);

            unlink(path);
        }
    }
    rmdir(tmpdir);
    g_free(tmpdir);
    return ret;
}
