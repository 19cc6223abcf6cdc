/*
 * The monitor view of vfio-user on both sides: x-query-vfio-user and
 * "info vfio-user" of a VM with a vfio-user-pci edu and of the remote
 * process serving it, and VFIO_USER_CONNECTION_LOST when either side
 * goes away.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "libqtest.h"
#include "libqos/pci-pc.h"
#include "qapi/qmp/qdict.h"
#include "qapi/qmp/qlist.h"
#include "vfio-user/vm-helpers.h"
#include "vfio-user/edu.h"

#define DEVFN   QPCI_DEVFN(4, 0)

/* A remote process serving edu and a VM using it, both under qtest */
typedef struct Pair {
    char *dir;
    char *sock;
    QTestState *remote;
    QTestState *vm;
    pid_t remote_pid;
    pid_t vm_pid;
    QPCIBus *bus;
    QPCIDevice *dev;
    QPCIBar bar;
} Pair;

static pid_t read_pidfile(const char *path)
{
    g_autofree char *text = NULL;
    pid_t pid;

    g_assert(g_file_get_contents(path, &text, NULL, NULL));
    unlink(path);
    pid = atoi(text);
    g_assert_cmpint(pid, >, 0);
    return pid;
}

/* twin_socket: both sides offer it (the default), or one side does not */
typedef enum TwinMode {
    TWIN_ON, TWIN_CLIENT_OFF, TWIN_SERVER_OFF,
} TwinMode;

static void pair_start_twin(Pair *p, bool secure_dma, TwinMode twin)
{
    g_autofree char *rpid = NULL, *vpid = NULL;
    uint64_t size;

    p->dir = g_dir_make_tmp("vfu-info-XXXXXX", NULL);
    g_assert(p->dir);
    p->sock = g_strdup_printf("%s/edu.sock", p->dir);
    rpid = g_strdup_printf("%s/remote.pid", p->dir);
    vpid = g_strdup_printf("%s/vm.pid", p->dir);
    /* tcg: edu's DMA runs on a virtual clock timer */
    p->remote = qtest_initf("-M remote -accel tcg -nodefaults -pidfile %s "
                            "-device edu,id=e0 "
                            "-object vfio-user-server,id=v0,socket=%s,"
                            "device=e0%s", rpid, p->sock,
                            twin == TWIN_SERVER_OFF ? ",twin-socket=off" : "");
    p->remote_pid = read_pidfile(rpid);
    p->vm = qtest_initf(VU_FW_ARGS "-M pc,memory-backend=mem -m 64M "
                        "-object memory-backend-memfd,id=mem,size=64M,"
                        "share=on -pidfile %s "
                        "-device vfio-user-pci,socket=%s,id=edu,addr=04.0%s%s",
                        vpid, p->sock, secure_dma ? ",secure-dma=on" : "",
                        twin == TWIN_CLIENT_OFF ? ",x-twin-socket=off" : "");
    p->vm_pid = read_pidfile(vpid);
    p->bus = qpci_new_pc(p->vm, NULL);
    p->dev = vu_find_dev(p->bus, DEVFN);
    p->bar = qpci_iomap(p->dev, 0, &size);
}

static void pair_start(Pair *p, bool secure_dma)
{
    pair_start_twin(p, secure_dma, TWIN_ON);
}

static void pair_free(Pair *p)
{
    g_free(p->dev);
    if (p->bus) {
        qpci_free_pc(p->bus);
    }
    if (p->vm) {
        qtest_quit(p->vm);
    }
    if (p->remote) {
        qtest_quit(p->remote);
    }
    unlink(p->sock);
    rmdir(p->dir);
    g_free(p->sock);
    g_free(p->dir);
}

/*
 * x-query-vfio-user on @qts: the one entry of @side ("clients" or
 * "servers"), the other list empty.  *@rsp keeps it; unref it.
 */
static QDict *query_one(QTestState *qts, const char *side, QDict **rsp)
{
    const char *other = g_str_equal(side, "clients") ? "servers" : "clients";
    QDict *ret;
    QList *list;

    *rsp = qtest_qmp(qts, "{'execute': 'x-query-vfio-user'}");
    g_assert(qdict_haskey(*rsp, "return"));
    ret = qdict_get_qdict(*rsp, "return");
    g_assert(qlist_empty(qdict_get_qlist(ret, other)));
    list = qdict_get_qlist(ret, side);
    g_assert_cmpint(qlist_size(list), ==, 1);
    return qobject_to(QDict, qlist_peek(list));
}

static QDict *conn_of(QDict *entry)
{
    g_assert(qdict_haskey(entry, "connection"));
    return qdict_get_qdict(entry, "connection");
}

static uint64_t counter(QDict *conn, const char *name)
{
    return qdict_get_int(qdict_get_qdict(conn, "counters"), name);
}

/* Requests of @cmd sent or received (@dir) on @conn */
static uint64_t requests(QDict *conn, const char *cmd, const char *dir)
{
    QList *l = qdict_get_qlist(qdict_get_qdict(conn, "counters"), "requests");
    QListEntry *e;

    QLIST_FOREACH_ENTRY(l, e) {
        QDict *c = qobject_to(QDict, qlist_entry_obj(e));

        if (g_str_equal(qdict_get_str(c, "command"), cmd)) {
            return qdict_get_int(c, dir);
        }
    }
    return 0;
}

/*
 * @conn's twin socket, shaped like a connection (its "counters") for
 * counter() and requests(); unref it.
 */
static QDict *twin_of(QDict *conn)
{
    QDict *t = qdict_new();

    g_assert(qdict_haskey(conn, "twin-counters"));
    qdict_put_obj(t, "counters",
                  qobject_ref(qdict_get(conn, "twin-counters")));
    return t;
}

static bool twin_in_use(QDict *conn)
{
    return qdict_get_bool(qdict_get_qdict(conn, "peer"), "twin-socket");
}

static uint64_t mappings(QDict *entry, const char *name)
{
    return qdict_get_int(qdict_get_qdict(entry, "dma-mappings"), name);
}

/*
 * The server holds exactly the mappings the client sent, in address
 * order; @fd: each is mmap'd where it went with an fd.
 */
static void assert_mappings_match(QDict *client, QDict *server, bool fd)
{
    QDict *cm = qdict_get_qdict(client, "dma-mappings");
    QDict *sm = qdict_get_qdict(server, "dma-mappings");
    QList *cl = qdict_get_qlist(cm, "mappings");
    QList *sl = qdict_get_qlist(sm, "mappings");
    const QListEntry *ce = qlist_first(cl), *se = qlist_first(sl);
    uint64_t prev = 0;

    g_assert_cmpint(qlist_size(cl), ==, qdict_get_int(cm, "count"));
    g_assert_cmpint(qlist_size(sl), ==, qdict_get_int(sm, "count"));
    for (; ce && se; ce = qlist_next(ce), se = qlist_next(se)) {
        QDict *c = qobject_to(QDict, qlist_entry_obj(ce));
        QDict *s = qobject_to(QDict, qlist_entry_obj(se));

        g_assert_cmphex(qdict_get_int(c, "iova"), ==, qdict_get_int(s, "iova"));
        g_assert_cmphex(qdict_get_int(c, "size"), ==, qdict_get_int(s, "size"));
        g_assert_cmphex(qdict_get_int(c, "iova"), >=, prev);
        prev = qdict_get_int(c, "iova") + qdict_get_int(c, "size");
        g_assert(qdict_get_bool(c, "readable") ==
                 qdict_get_bool(s, "readable"));
        g_assert(qdict_get_bool(c, "writable") ==
                 qdict_get_bool(s, "writable"));
        g_assert(qdict_get_bool(s, "fd") ==
                 (fd && qdict_get_bool(c, "fd")));
    }
    g_assert(!ce && !se);
}

/* What one side sent the other received, command by command */
static void assert_counters_match(QDict *client, QDict *server)
{
    static const char *const cmds[] = {
        "VERSION", "DMA_MAP", "DMA_UNMAP", "DEVICE_GET_INFO",
        "DEVICE_GET_REGION_INFO", "DEVICE_GET_REGION_IO_FDS",
        "DEVICE_GET_IRQ_INFO", "DEVICE_SET_IRQS", "REGION_READ",
        "REGION_WRITE", "DMA_READ", "DMA_WRITE", "DEVICE_RESET",
    };

    for (size_t i = 0; i < G_N_ELEMENTS(cmds); i++) {
        g_assert_cmpuint(requests(client, cmds[i], "sent"), ==,
                         requests(server, cmds[i], "received"));
        g_assert_cmpuint(requests(server, cmds[i], "sent"), ==,
                         requests(client, cmds[i], "received"));
    }
    g_assert_cmpuint(counter(client, "bytes-sent"), ==,
                     counter(server, "bytes-received"));
    g_assert_cmpuint(counter(server, "bytes-sent"), ==,
                     counter(client, "bytes-received"));
    g_assert_cmpuint(counter(client, "dma-read-bytes"), ==,
                     counter(server, "dma-read-bytes"));
    g_assert_cmpuint(counter(client, "dma-write-bytes"), ==,
                     counter(server, "dma-write-bytes"));
}

/* "info vfio-user" on @qts, its "\r\n" line ends made "\n" */
static char *info_vfio_user(QTestState *qts)
{
    char *out = qtest_hmp(qts, "info vfio-user");
    char *w = out;

    for (const char *r = out; *r; r++) {
        if (*r != '\r') {
            *w++ = *r;
        }
    }
    *w = 0;
    g_test_message("%s", out);
    return out;
}

static void assert_peer(QDict *conn, pid_t pid)
{
    g_assert_cmpint(qdict_get_int(conn, "peer-pid"), ==, pid);
    g_assert_cmpint(qdict_get_int(conn, "peer-uid"), ==, getuid());
    g_assert_cmpint(qdict_get_int(conn, "peer-gid"), ==, getgid());
    g_assert_cmpstr(qdict_get_str(conn, "version"), ==, "0.2");
    g_assert(!qdict_haskey(conn, "broken-reason"));
}

/* Guest RAM by fd: identity, peers, caps, mappings, BAR access counts */
static void test_fd(void)
{
    QDict *rsp_c, *rsp_s, *c, *s, *cc, *sc, *caps;
    uint64_t rd_c, rd_s, wr_c, wr_s;
    g_autofree char *hmp_c = NULL, *hmp_s = NULL, *line = NULL;
    Pair p = { };

    pair_start(&p, false);

    c = query_one(p.vm, "clients", &rsp_c);
    g_assert_cmpstr(qdict_get_str(c, "id"), ==, "edu");
    g_assert_cmpstr(qdict_get_str(c, "qom-path"), ==,
                    "/machine/peripheral/edu");
    g_assert_cmpstr(qdict_get_str(c, "socket"), ==, p.sock);
    g_assert_cmpstr(qdict_get_str(c, "state"), ==, "connected");
    g_assert(!qdict_get_bool(c, "secure-dma"));
    cc = conn_of(c);
    assert_peer(cc, p.remote_pid);
    /* the server's limits (hw/remote/vfio-user/server.c) */
    caps = qdict_get_qdict(cc, "peer");
    g_assert_cmpint(qdict_get_int(caps, "max-msg-fds"), ==, 8);
    g_assert_cmpint(qdict_get_int(caps, "max-dma-maps"), ==, 1024);
    g_assert_cmpint(qdict_get_int(caps, "pgsizes"), ==, 4096);
    /* the client does not propose it */
    g_assert(!qdict_get_bool(caps, "write-multiple"));
    /* guest RAM (but the legacy VGA and ROM hole) went with its fd */
    g_assert_cmpuint(mappings(c, "fd-bytes"), >=,
                     64 * 1024 * 1024 - (0x100000 - 0xa0000));

    s = query_one(p.remote, "servers", &rsp_s);
    g_assert_cmpstr(qdict_get_str(s, "id"), ==, "v0");
    g_assert_cmpstr(qdict_get_str(s, "qom-path"), ==, "/objects/v0");
    g_assert_cmpstr(qdict_get_str(s, "socket"), ==, p.sock);
    g_assert_cmpstr(qdict_get_str(s, "device"), ==, "e0");
    g_assert_cmpstr(qdict_get_str(s, "state"), ==, "connected");
    sc = conn_of(s);
    assert_peer(sc, p.vm_pid);
    /* every mapping the client sent is there; the memfd ones mmap'd */
    g_assert_cmpuint(mappings(s, "count"), ==, mappings(c, "count"));
    g_assert_cmpuint(mappings(s, "bytes"), ==, mappings(c, "bytes"));
    g_assert_cmpuint(mappings(s, "fd-count"), ==, mappings(c, "fd-count"));
    g_assert_cmpuint(mappings(s, "fd-bytes"), ==, mappings(c, "fd-bytes"));
    assert_mappings_match(c, s, true);
    assert_counters_match(cc, sc);
    rd_c = requests(cc, "REGION_READ", "sent");
    rd_s = requests(sc, "REGION_READ", "received");
    wr_c = requests(cc, "REGION_WRITE", "sent");
    wr_s = requests(sc, "REGION_WRITE", "received");
    qobject_unref(rsp_c);
    qobject_unref(rsp_s);

    /* 3 BAR writes, 5 BAR reads: as many messages each way */
    for (int i = 0; i < 3; i++) {
        qpci_io_writel(p.dev, p.bar, EDU_LIVENESS, i);
    }
    for (int i = 0; i < 5; i++) {
        g_assert_cmphex(qpci_io_readl(p.dev, p.bar, EDU_ID) & 0xff, ==, 0xed);
    }
    c = query_one(p.vm, "clients", &rsp_c);
    s = query_one(p.remote, "servers", &rsp_s);
    cc = conn_of(c);
    sc = conn_of(s);
    g_assert_cmpuint(requests(cc, "REGION_READ", "sent"), ==, rd_c + 5);
    g_assert_cmpuint(requests(sc, "REGION_READ", "received"), ==, rd_s + 5);
    g_assert_cmpuint(requests(cc, "REGION_WRITE", "sent"), ==, wr_c + 3);
    g_assert_cmpuint(requests(sc, "REGION_WRITE", "received"), ==, wr_s + 3);
    assert_counters_match(cc, sc);
    /* by fd: no DMA message */
    g_assert_cmpuint(counter(sc, "dma-read-bytes"), ==, 0);
    g_assert_cmpuint(counter(sc, "dma-write-bytes"), ==, 0);
    g_assert_cmpuint(counter(cc, "timeouts"), ==, 0);
    g_assert_cmpuint(counter(cc, "error-replies-received"), ==, 0);

    hmp_c = info_vfio_user(p.vm);
    g_assert(strstr(hmp_c, "vfio-user-pci edu (/machine/peripheral/edu): "
                    "connected\n"));
    line = g_strdup_printf("  socket: %s\n", p.sock);
    g_assert(strstr(hmp_c, line));
    g_free(line);
    line = g_strdup_printf("  server: pid %d, uid %d", p.remote_pid,
                           getuid());
    g_assert(strstr(hmp_c, line));
    g_free(line);
    line = g_strdup_printf(" REGION_READ %" PRIu64 "/0",
                           requests(cc, "REGION_READ", "sent"));
    g_assert(strstr(hmp_c, line));
    g_assert(strstr(hmp_c, "  version: 0.2\n"));
    g_assert(strstr(hmp_c, "  DMA: guest RAM passed by fd\n"));
    /* guest RAM from 1 MiB up, by fd */
    g_assert(strstr(hmp_c, "\n    0x100000+0x3f00000 rw with fd\n"));

    hmp_s = info_vfio_user(p.remote);
    g_assert(strstr(hmp_s, "vfio-user-server v0 (/objects/v0): connected\n"));
    g_assert(strstr(hmp_s, "  device: e0\n"));
    g_assert(strstr(hmp_s, "\n    0x100000+0x3f00000 rw mmap'd\n"));
    g_free(line);
    line = g_strdup_printf("  client: pid %d, uid %d", p.vm_pid, getuid());
    g_assert(strstr(hmp_s, line));
    g_free(line);
    line = g_strdup_printf(" REGION_READ 0/%" PRIu64,
                           requests(sc, "REGION_READ", "received"));
    g_assert(strstr(hmp_s, line));
    qobject_unref(rsp_c);
    qobject_unref(rsp_s);
    pair_free(&p);
}

/*
 * secure-dma: every DMA a message, counted in bytes on both sides, on
 * the twin socket when both sides offer it, else on the main one.
 */
static void test_secure_dma(gconstpointer opaque)
{
    TwinMode mode = GPOINTER_TO_INT(opaque);
    bool twin = mode == TWIN_ON;
    QDict *rsp_c, *rsp_s, *c, *s, *cc, *sc;
    g_autoptr(QDict) dc = NULL, ds = NULL;
    uint8_t pattern[4000], back[4000];
    uint64_t rd, wr, nrd, nwr;
    g_autofree char *hmp_c = NULL;
    Pair p = { };

    for (size_t i = 0; i < sizeof(pattern); i++) {
        pattern[i] = i * 13 + 1;
    }
    pair_start_twin(&p, true, mode);
    c = query_one(p.vm, "clients", &rsp_c);
    s = query_one(p.remote, "servers", &rsp_s);
    g_assert(qdict_get_bool(c, "secure-dma"));
    g_assert_cmpuint(mappings(c, "count"), >, 0);
    g_assert_cmpuint(mappings(c, "fd-count"), ==, 0);
    g_assert_cmpuint(mappings(s, "count"), ==, mappings(c, "count"));
    g_assert_cmpuint(mappings(s, "bytes"), ==, mappings(c, "bytes"));
    g_assert_cmpuint(mappings(s, "fd-count"), ==, 0);
    assert_mappings_match(c, s, false);
    sc = conn_of(s);
    /* what each side offered, and what is in use */
    g_assert(qdict_get_bool(qdict_get_qdict(sc, "local"), "twin-socket") ==
             (mode != TWIN_SERVER_OFF));
    g_assert(qdict_get_bool(qdict_get_qdict(conn_of(c), "local"),
                            "twin-socket") == (mode != TWIN_CLIENT_OFF));
    g_assert(twin_in_use(sc) == twin);
    g_assert(twin_in_use(conn_of(c)) == twin);
    g_assert(qdict_haskey(sc, "twin-counters") == twin);
    g_assert(qdict_haskey(conn_of(c), "twin-counters") == twin);
    ds = twin ? twin_of(sc) : qobject_ref(sc);
    rd = counter(ds, "dma-read-bytes");
    wr = counter(ds, "dma-write-bytes");
    nrd = requests(ds, "DMA_READ", "sent");
    nwr = requests(ds, "DMA_WRITE", "sent");
    qobject_unref(ds);
    ds = NULL;
    qobject_unref(rsp_c);
    qobject_unref(rsp_s);

    qtest_memwrite(p.vm, 0x100000, pattern, sizeof(pattern));
    edu_dma(p.dev, p.bar, 0x100000, EDU_DMA_BUF, sizeof(pattern), false);
    edu_dma(p.dev, p.bar, EDU_DMA_BUF, 0x200000, sizeof(pattern), true);
    qtest_memread(p.vm, 0x200000, back, sizeof(back));
    g_assert(memcmp(pattern, back, sizeof(back)) == 0);

    c = query_one(p.vm, "clients", &rsp_c);
    s = query_one(p.remote, "servers", &rsp_s);
    cc = conn_of(c);
    sc = conn_of(s);
    ds = twin ? twin_of(sc) : qobject_ref(sc);
    dc = twin ? twin_of(cc) : qobject_ref(cc);
    g_assert_cmpuint(counter(ds, "dma-read-bytes"), ==, rd + sizeof(pattern));
    g_assert_cmpuint(counter(ds, "dma-write-bytes"), ==, wr + sizeof(back));
    g_assert_cmpuint(requests(ds, "DMA_READ", "sent"), >, nrd);
    g_assert_cmpuint(requests(ds, "DMA_WRITE", "sent"), >, nwr);
    assert_counters_match(cc, sc);
    assert_counters_match(dc, ds);
    if (twin) {
        /* none of it went over the main socket */
        g_assert_cmpuint(counter(sc, "dma-read-bytes"), ==, 0);
        g_assert_cmpuint(counter(sc, "dma-write-bytes"), ==, 0);
        g_assert_cmpuint(requests(cc, "DMA_READ", "received"), ==, 0);
        g_assert_cmpuint(requests(cc, "DMA_WRITE", "received"), ==, 0);
    }

    hmp_c = info_vfio_user(p.vm);
    g_assert(strstr(hmp_c, "  DMA: secure-dma (by message)\n"));
    g_assert(strstr(hmp_c, "with fd 0 (0 bytes)"));
    g_assert(strstr(hmp_c, "\n    0x100000+0x3f00000 rw by message\n"));
    g_assert(!strstr(hmp_c, "  twin socket:\n") == !twin);
    qobject_unref(rsp_c);
    qobject_unref(rsp_s);
    pair_free(&p);
}

/* The peer process ended: the socket saw EOF (or a reset, were a byte left) */
static void assert_reason_eof(const char *reason)
{
    g_test_message("reason: %s", reason);
    g_assert(strstr(reason, "peer closed the connection") ||
             strstr(reason, "reset by peer"));
}

/* The remote process ends: the device goes dead, and QMP says so */
static void test_server_lost(void)
{
    QDict *ev, *data, *rsp, *c;
    g_autofree char *hmp = NULL;
    Pair p = { };

    pair_start(&p, false);
    qtest_kill_qemu(p.remote);
    ev = qtest_qmp_eventwait_ref(p.vm, "VFIO_USER_CONNECTION_LOST");
    data = qdict_get_qdict(ev, "data");
    g_assert_cmpstr(qdict_get_str(data, "id"), ==, "edu");
    g_assert_cmpstr(qdict_get_str(data, "qom-path"), ==,
                    "/machine/peripheral/edu");
    g_assert_cmpstr(qdict_get_str(data, "socket"), ==, p.sock);
    assert_reason_eof(qdict_get_str(data, "reason"));
    qobject_unref(ev);

    c = query_one(p.vm, "clients", &rsp);
    g_assert_cmpstr(qdict_get_str(c, "state"), ==, "dead");
    g_assert(qdict_haskey(conn_of(c), "broken-reason"));
    qobject_unref(rsp);
    hmp = info_vfio_user(p.vm);
    g_assert(strstr(hmp, "vfio-user-pci edu (/machine/peripheral/edu): "
                    "dead\n"));
    g_assert(strstr(hmp, "  broken: "));
    pair_free(&p);
}

/* The VM ends: the server says its client is gone and listens again */
static void test_client_lost(void)
{
    QDict *ev, *data, *rsp, *s;
    g_autofree char *hmp = NULL;
    Pair p = { };

    pair_start(&p, false);
    qpci_free_pc(p.bus);
    p.bus = NULL;
    qtest_quit(p.vm);
    p.vm = NULL;
    ev = qtest_qmp_eventwait_ref(p.remote, "VFIO_USER_CONNECTION_LOST");
    data = qdict_get_qdict(ev, "data");
    g_assert_cmpstr(qdict_get_str(data, "id"), ==, "v0");
    g_assert_cmpstr(qdict_get_str(data, "qom-path"), ==, "/objects/v0");
    g_assert_cmpstr(qdict_get_str(data, "socket"), ==, p.sock);
    assert_reason_eof(qdict_get_str(data, "reason"));
    qobject_unref(ev);

    s = query_one(p.remote, "servers", &rsp);
    g_assert_cmpstr(qdict_get_str(s, "state"), ==, "listening");
    g_assert(!qdict_haskey(s, "connection"));
    /* the client's mappings went with it */
    g_assert_cmpuint(mappings(s, "count"), ==, 0);
    qobject_unref(rsp);
    hmp = info_vfio_user(p.remote);
    g_assert(strstr(hmp, "vfio-user-server v0 (/objects/v0): listening\n"));
    pair_free(&p);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    qtest_add_func("/vfio-user/info/fd", test_fd);
    qtest_add_data_func("/vfio-user/info/secure-dma",
                        GINT_TO_POINTER(TWIN_ON), test_secure_dma);
    qtest_add_data_func("/vfio-user/info/secure-dma-no-twin-client",
                        GINT_TO_POINTER(TWIN_CLIENT_OFF), test_secure_dma);
    qtest_add_data_func("/vfio-user/info/secure-dma-no-twin-server",
                        GINT_TO_POINTER(TWIN_SERVER_OFF), test_secure_dma);
    qtest_add_func("/vfio-user/info/server-lost", test_server_lost);
    qtest_add_func("/vfio-user/info/client-lost", test_client_lost);
    return g_test_run();
}
