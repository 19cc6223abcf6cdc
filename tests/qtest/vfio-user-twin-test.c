/*
 * twin_socket against vfio-user-server: a scripted client (the shared
 * protocol core) proposes it and checks that the VERSION reply carries
 * the socket, that the server's DMA requests come there and only there,
 * that a reply on the main socket waits for the DMA_WRITEs sent before
 * it, that requests on the twin are refused, that a twin that hangs up
 * ends the client, and that twin-socket=off leaves everything on one
 * socket.  Our client device against our server is in
 * vfio-user-info-test (secure-dma, both ways).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "vfio-user/server-client.h"
#include "vfio-user/vm-helpers.h"
#include "qapi/qmp/qdict.h"
#include "qapi/qmp/qlist.h"
#include "hw/pci/pci_regs.h"

#define DMA_BASE    0x200000

typedef struct TwinRig {
    char *sock;
    char *log;              /* the server's trace */
    QTestState *qts;        /* the remote machine */
    VfuConn *c;
    VfuConn *twin;          /* NULL when the server gave none */
} TwinRig;

/*
 * Start edu with @server_args on its vfio-user-server, connect proposing
 * twin_socket and map our memory without an fd, for DMA by message.
 */
static void rig_start(TwinRig *r, const char *server_args)
{
    g_autofree char *extra = NULL;
    VfuLimits lim;
    int fd = -2;

    r->sock = tc_tmp_path("twin");
    r->log = tc_tmp_path("twin-trace");
    unlink(r->log);
    extra = g_strdup_printf("-trace vfio_user_srv_reply_barrier "
                            "-trace vfio_user_srv_twin_request "
                            "-trace vfio_user_srv_disconnect -D %s", r->log);
    r->qts = qtest_initf("-M remote -accel tcg -nodefaults "
                         "-device edu,id=e0 "
                         "-object vfio-user-server,id=v0,socket=%s,"
                         "device=e0%s %s", r->sock, server_args, extra);
    tc_limits(&lim);
    lim.twin_socket = true;
    r->c = tc_connect_limits(r->sock, &lim);
    g_assert(r->c);
    g_assert_cmpint(vfu_client_negotiate_twin(r->c, &fd, &error_abort), ==,
                    0);
    r->twin = NULL;
    if (fd >= 0) {
        g_autoptr(QIOChannelSocket) sioc =
            qio_channel_socket_new_fd(fd, &error_abort);

        r->twin = vfu_conn_new(QIO_CHANNEL(sioc), "test-twin", &lim);
        vfu_conn_set_timeout(r->twin, 10000);
    } else {
        g_assert_cmpint(fd, ==, -1);
    }
    g_assert_cmpint(tc_dma_map(r->c, DMA_BASE, 0x1000, 0,
                               VFU_DMA_MAP_F_READ | VFU_DMA_MAP_F_WRITE, -1),
                    ==, 0);
    tc_write(r->c, VFU_PCI_CONFIG_REGION, PCI_COMMAND, 2, PCI_COMMAND_MASTER);
}

static void rig_stop(TwinRig *r)
{
    g_clear_pointer(&r->twin, vfu_conn_free);
    g_clear_pointer(&r->c, vfu_conn_free);
    qtest_quit(r->qts);
    unlink(r->sock);
    unlink(r->log);
    g_free(r->sock);
    g_free(r->log);
}

/* The server's view of its connection (x-query-vfio-user); unref *@rsp */
static QDict *server_conn(TwinRig *r, QDict **rsp)
{
    QDict *ret, *s;

    *rsp = qtest_qmp(r->qts, "{'execute': 'x-query-vfio-user'}");
    ret = qdict_get_qdict(*rsp, "return");
    g_assert(ret);
    s = qobject_to(QDict, qlist_peek(qdict_get_qlist(ret, "servers")));
    g_assert(s);
    return qdict_get_qdict(s, "connection");
}

/* DMA_READ/DMA_WRITE requests the server sent, per @counters */
static uint64_t dma_sent(QDict *counters, const char *cmd)
{
    QListEntry *e;

    QLIST_FOREACH_ENTRY(qdict_get_qlist(counters, "requests"), e) {
        QDict *c = qobject_to(QDict, qlist_entry_obj(e));

        if (g_str_equal(qdict_get_str(c, "command"), cmd)) {
            return qdict_get_int(c, "sent");
        }
    }
    return 0;
}

/* The VERSION reply carried the twin; the server's DMA goes there only */
static void test_dma_on_twin(void)
{
    MsgDmaMem m = { .base = DMA_BASE };
    uint8_t pattern[64];
    QDict *rsp, *conn, *tc;
    TwinRig r;

    rig_start(&r, "");
    g_assert(r.twin);
    g_assert(vfu_conn_peer_limits(r.c)->twin_socket);
    /* DMA requests on the main socket would fail: it serves none */
    vfu_conn_set_request_func(r.twin, serve_dma, &m);
    /* our calls on the main socket serve the twin while they wait */
    vfu_client_attach(r.c, NULL, NULL);
    vfu_client_attach(r.twin, NULL, NULL);

    for (size_t i = 0; i < sizeof(pattern); i++) {
        pattern[i] = 0x5a ^ (i * 3);
    }
    memcpy(m.buf, pattern, sizeof(pattern));
    tc_edu_dma(r.c, DMA_BASE, EDU_DMA_BUF, sizeof(pattern), false);
    tc_edu_dma(r.c, EDU_DMA_BUF, DMA_BASE + 0x800, sizeof(pattern), true);
    g_assert_cmpmem(m.buf + 0x800, sizeof(pattern), pattern, sizeof(pattern));
    g_assert_cmpuint(m.reads, >, 0);
    g_assert_cmpuint(m.writes, >, 0);
    g_assert_cmpuint(vfu_conn_stats(r.c)->requests_received[VFU_CMD_DMA_READ],
                     ==, 0);
    g_assert_cmpuint(vfu_conn_stats(r.c)->requests_received[VFU_CMD_DMA_WRITE],
                     ==, 0);

    /* the server counts them on its twin too */
    conn = server_conn(&r, &rsp);
    g_assert(qdict_get_bool(qdict_get_qdict(conn, "peer"), "twin-socket"));
    tc = qdict_get_qdict(conn, "twin-counters");
    g_assert(tc);
    g_assert_cmpuint(dma_sent(tc, "DMA_READ"), ==, m.reads);
    g_assert_cmpuint(dma_sent(tc, "DMA_WRITE"), ==, m.writes);
    g_assert_cmpuint(dma_sent(qdict_get_qdict(conn, "counters"), "DMA_READ"),
                     ==, 0);
    g_assert_cmpuint(dma_sent(qdict_get_qdict(conn, "counters"), "DMA_WRITE"),
                     ==, 0);
    qobject_unref(rsp);
    rig_stop(&r);
}

/*
 * A reply on the main socket waits for the DMA_WRITEs the server sent on
 * the twin before it: edu writes our memory and then says it is done,
 * and a client must not see "done" before the data.
 */
static void test_reply_waits_for_dma(void)
{
    g_autoptr(VfuMsg) dma = NULL, early = NULL, reply = NULL;
    VfuRegionAccess req = {
        .offset = EDU_DMA_CMD, .region = 0, .count = 8,
    };
    VfuDmaAccess *a;
    VfuDmaAccess ack;
    unsigned barriers;
    uint16_t id;
    TwinRig r;

    rig_start(&r, "");
    g_assert(r.twin);
    /* edu's buffer to our memory: a DMA_WRITE, not waited for */
    tc_edu_dma_start(r.c, EDU_DMA_BUF, DMA_BASE, 64,
                     EDU_DMA_RUN | EDU_DMA_TO_PCI);
    g_assert_cmpint(vfu_conn_recv(r.twin, &dma, true, &error_abort), ==, 1);
    g_assert_cmpuint(dma->hdr.command, ==, VFU_CMD_DMA_WRITE);
    g_assert_cmpint(vfu_msg_decode(dma, vfu_conn_local_limits(r.twin),
                                   &error_abort), ==, 0);
    a = (VfuDmaAccess *)dma->payload;
    g_assert_cmphex(a->address, ==, DMA_BASE);
    g_assert_cmpuint(a->count, ==, 64);

    /* is it done?  The answer must wait for our answer to the DMA_WRITE */
    id = vfu_conn_next_id(r.c);
    g_assert_cmpint(vfu_conn_send(r.c, VFU_CMD_REGION_READ, id,
                                  VFU_F_TYPE_COMMAND, 0, &req, sizeof(req),
                                  NULL, 0, &error_abort), ==, 0);
    /* the server says it holds the reply back (it would have sent it) */
    barriers = vu_wait_in_file(r.log, "vfio_user_srv_reply_barrier ", 0);
    g_assert_cmpint(vfu_conn_recv(r.c, &early, false, &error_abort), ==, 0);
    g_assert_cmpuint(barriers, ==, 1);

    ack = (VfuDmaAccess) { .address = a->address, .count = a->count };
    g_assert_cmpint(vfu_conn_reply(r.twin, dma, &ack, sizeof(ack), NULL, 0,
                                   &error_abort), ==, 0);
    g_assert_cmpint(vfu_conn_recv(r.c, &reply, true, &error_abort), ==, 1);
    g_assert(vfu_msg_is_reply(reply));
    g_assert_cmpuint(reply->hdr.msg_id, ==, id);
    g_assert_cmpint(vfu_msg_decode(reply, vfu_conn_local_limits(r.c),
                                   &error_abort), ==, 0);
    g_assert_cmphex(ldq_le_p(((VfuRegionAccess *)reply->payload)->data) &
                    EDU_DMA_RUN, ==, 0);
    rig_stop(&r);
}

/* The twin carries the server's requests only: ours get an error */
static void test_request_on_twin(void)
{
    VfuRegionAccess req = {
        .offset = EDU_ID, .region = 0, .count = 4,
    };
    TwinRig r;

    rig_start(&r, "");
    g_assert(r.twin);
    g_assert_cmpint(tc_call(r.twin, VFU_CMD_REGION_READ, &req, sizeof(req),
                            NULL, 0, NULL), ==, -EINVAL);
    g_assert_cmpuint(vu_wait_in_file(r.log, "vfio_user_srv_twin_request ", 0),
                     ==, 1);
    /* and the client is kept */
    g_assert_cmphex(tc_read(r.c, 0, EDU_ID, 4), ==, 0x010000ed);
    g_assert_cmpuint(vu_count_in_file(r.log, "vfio_user_srv_disconnect "),
                     ==, 0);
    rig_stop(&r);
}

/* A client whose twin hangs up is dropped, and the next one is served */
static void test_twin_hangup(void)
{
    g_autoptr(VfuMsg) msg = NULL;
    Error *err = NULL;
    VfuConn *next;
    TwinRig r;

    rig_start(&r, "");
    g_assert(r.twin);
    g_clear_pointer(&r.twin, vfu_conn_free);
    g_assert_cmpint(vfu_conn_recv(r.c, &msg, true, &err), ==, -1);
    g_assert(strstr(error_get_pretty(err), "closed"));
    error_free(err);
    g_assert_cmpuint(vu_wait_in_file(r.log, "vfio_user_srv_disconnect ", 0),
                     ==, 1);
    next = tc_connect(r.sock);
    g_assert_cmphex(tc_read(next, 0, EDU_ID, 4), ==, 0x010000ed);
    vfu_conn_free(next);
    rig_stop(&r);
}

/* twin-socket=off: no fd with VERSION, DMA on the main socket as before */
static void test_server_off(void)
{
    MsgDmaMem m = { .base = DMA_BASE };
    QDict *rsp, *conn;
    TwinRig r;

    rig_start(&r, ",twin-socket=off");
    g_assert(!r.twin);
    g_assert(!vfu_conn_peer_limits(r.c)->twin_socket);
    vfu_conn_set_request_func(r.c, serve_dma, &m);
    memset(m.buf, 0x77, 64);
    tc_edu_dma(r.c, DMA_BASE, EDU_DMA_BUF, 64, false);
    tc_edu_dma(r.c, EDU_DMA_BUF, DMA_BASE + 0x800, 64, true);
    g_assert_cmpuint(m.buf[0x800 + 63], ==, 0x77);
    g_assert_cmpuint(vfu_conn_stats(r.c)->requests_received[VFU_CMD_DMA_READ],
                     ==, m.reads);
    g_assert_cmpuint(m.reads, >, 0);
    g_assert_cmpuint(m.writes, >, 0);
    conn = server_conn(&r, &rsp);
    g_assert(!qdict_get_bool(qdict_get_qdict(conn, "local"), "twin-socket"));
    g_assert(!qdict_get_bool(qdict_get_qdict(conn, "peer"), "twin-socket"));
    g_assert(!qdict_haskey(conn, "twin-counters"));
    qobject_unref(rsp);
    rig_stop(&r);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    /* the test client uses QIOChannelSocket */
    module_call_init(MODULE_INIT_QOM);
    qtest_add_func("/vfio-user/twin/dma-on-twin", test_dma_on_twin);
    qtest_add_func("/vfio-user/twin/reply-waits-for-dma",
                   test_reply_waits_for_dma);
    qtest_add_func("/vfio-user/twin/request-on-twin", test_request_on_twin);
    qtest_add_func("/vfio-user/twin/twin-hangup", test_twin_hangup);
    qtest_add_func("/vfio-user/twin/server-off", test_server_off);
    return g_test_run();
}
