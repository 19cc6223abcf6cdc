/*
 * qtests of the vfio-user-pci client device.
 *
 * Peers: libvfio-user's gpio-pci-idio-16 and server samples (from the
 * QEMU source package, a vfio-user implementation we did not write), and a
 * scripted server in this file that can misbehave on purpose.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "libqtest.h"
#include "libqos/pci-pc.h"
#include "qapi/qmp/qdict.h"
#include "qapi/error.h"
#include "qemu/module.h"
#include "qemu/sockets.h"
#include "io/channel-socket.h"
#include "vfio-user/client.h"
#include "vfio-user/server.h"
#include "vfio-user/socket.h"
#include "standard-headers/linux/pci_regs.h"
#include "vfio-user/vm-helpers.h"

#define FW_ARGS VU_FW_ARGS
#define DEVFN   QPCI_DEVFN(4, 0)

static char *tmpdir;

static char *sock_path(const char *name)
{
    return g_strdup_printf("%s/%s.sock", tmpdir, name);
}

/* Start one of libvfio-user's samples; returns its pid. */
static GPid start_sample(const char *sample, const char *path)
{
    const char *peers = g_getenv("VFIO_USER_PEERS");
    g_autofree char *bin = NULL;
    char *argv[3];

    g_assert(peers);
    bin = g_build_filename(peers, sample, NULL);
    argv[0] = bin;
    argv[1] = (char *)path;
    argv[2] = NULL;
    return vu_spawn_server(argv, path);
}

/* ---- against libvfio-user's gpio-pci-idio-16 sample ------------------ */

static void test_gpio(void)
{
    g_autofree char *path = sock_path("gpio");
    GPid pid = start_sample("gpio-pci-idio-16", path);
    QTestState *qts;
    QPCIBus *bus;
    QPCIDevice *dev;
    QPCIBar bar2;
    uint64_t size;
    uint8_t pins[6];

    qts = qtest_initf(FW_ARGS "-M pc -device vfio-user-pci,socket=%s,"
                      "id=gpio,addr=04.0", path);
    bus = qpci_new_pc(qts, NULL);
    dev = vu_find_dev(bus, DEVFN);
    /* identity comes from the server's config space */
    g_assert_cmphex(qpci_config_readw(dev, PCI_VENDOR_ID), ==, 0x494f);
    g_assert_cmphex(qpci_config_readw(dev, PCI_DEVICE_ID), ==, 0x0dc8);
    /* BAR2 is an I/O BAR of 256 bytes, as the sample sets it up */
    g_assert(qpci_config_readl(dev, PCI_BASE_ADDRESS_2) &
             PCI_BASE_ADDRESS_SPACE_IO);
    bar2 = qpci_iomap(dev, 2, &size);
    g_assert_cmpuint(size, ==, 0x100);
    /* the sample's input register counts up every third read */
    for (int i = 0; i < 6; i++) {
        pins[i] = qpci_io_readb(dev, bar2, 0);
    }
    g_assert_cmpuint(pins[0], ==, pins[2]);
    g_assert_cmpuint(pins[3], ==, pins[5]);
    g_assert_cmpuint(pins[3], ==, pins[0] + 1);
    qpci_io_writeb(dev, bar2, 1, 0x5a);     /* accepted, no effect */

    g_free(dev);
    qpci_free_pc(bus);
    qtest_quit(qts);
    /* the sample waits for its next client; it does not handle SIGTERM */
    vu_assert_alive(pid);
    kill(pid, SIGTERM);
    vu_check_end(pid, true);
    /* picked up by make check's interop table */
    g_test_message("interop: config ids, BAR2 I/O 256 B, input pins read "
                   "and counting, write accepted; sample alive until "
                   "SIGTERM");
}

/* ---- against libvfio-user's server sample ---------------------------- */

static void test_server_sample(bool memfd)
{
    g_autofree char *path = sock_path(memfd ? "srv-memfd" : "srv");
    GPid pid = start_sample("server", path);
    QTestState *qts;
    QPCIBus *bus;
    QPCIDevice *dev;
    QPCIBar bar1;
    uint64_t size1;
    uint8_t buf[4096];
    bool dma_done = false;

    qts = qtest_initf(FW_ARGS "-M pc%s -m 64M %s "
                      "-device vfio-user-pci,socket=%s,addr=04.0",
                      memfd ? ",memory-backend=mem" : "",
                      memfd ? "-object memory-backend-memfd,id=mem,"
                              "size=64M,share=on" : "",
                      path);
    bus = qpci_new_pc(qts, NULL);
    qtest_irq_intercept_in(qts, "ioapic");
    vu_route_pirqs(bus, 11);
    dev = vu_find_dev(bus, DEVFN);
    g_assert_cmphex(qpci_config_readw(dev, PCI_VENDOR_ID), ==, 0xdead);
    g_assert_cmphex(qpci_config_readw(dev, PCI_DEVICE_ID), ==, 0xbeef);
    g_assert_cmphex(qpci_config_readw(dev, PCI_SUBSYSTEM_VENDOR_ID), ==,
                    0xcafe);
    /*
     * The sample declares its BARs without the memory flag, so they are
     * I/O BARs: BAR0 (8 bytes, 8-byte accesses only) cannot be reached
     * by port I/O, BAR1 is 12 KiB, rounded up to a power of two here.
     */
    g_assert(qpci_config_readl(dev, PCI_BASE_ADDRESS_0) &
             PCI_BASE_ADDRESS_SPACE_IO);
    bar1 = qpci_iomap(dev, 1, &size1);
    g_assert_cmpuint(size1, ==, 0x4000);

    /* BAR1 is plain memory on the server (its reads ignore the offset) */
    qpci_io_writel(dev, bar1, 0, 0x89abcdef);
    g_assert_cmphex(qpci_io_readl(dev, bar1, 0), ==, 0x89abcdef);

    /*
     * On SIGALRM the sample raises INTx and DMA-writes 4 KiB of 'A' to its
     * first DMA mapping (guest address 0), reads it back with DMA_READ and
     * exits if the two differ.
     */
    memset(buf, 0, sizeof(buf));
    qtest_memwrite(qts, 0, buf, sizeof(buf));
    g_assert(!qtest_get_irq(qts, 11));
    kill(pid, SIGALRM);
    for (int i = 0; i < 100 && !dma_done; i++) {
        g_usleep(50 * 1000);
        qtest_memread(qts, 0, buf, sizeof(buf));
        dma_done = buf[0] == 'A' && buf[sizeof(buf) - 1] == 'A';
    }
    g_assert(dma_done);
    for (size_t i = 0; i < sizeof(buf); i++) {
        g_assert_cmpuint(buf[i], ==, 'A');
    }
    g_assert(qtest_get_irq(qts, 11));
    /* the guest's next access to the device ends the INTx assertion */
    g_assert_cmphex(qpci_io_readl(dev, bar1, 0), ==, 0x89abcdef);
    g_assert(!qtest_get_irq(qts, 11));
    /*
     * The sample exits 1 if its DMA read-back did not match (before it
     * served the read above: it is single-threaded), 0 once its client
     * hangs up: it must still be serving, then end with 0.
     */
    vu_assert_alive(pid);

    g_free(dev);
    qpci_free_pc(bus);
    qtest_quit(qts);
    vu_check_end(pid, false);
    /* picked up by make check's interop table */
    g_test_message("interop: config ids, BAR1 read/write, INTx raised and "
                   "ended, 4 KiB DMA_WRITE + read-back %s; sample exit 0 "
                   "after the VM left", memfd ? "through the memfd mapping"
                                             : "by message");
}

static void test_server_sample_nofd(void)
{
    test_server_sample(false);
}

static void test_server_sample_memfd(void)
{
    test_server_sample(true);
}

/* ---- a scripted server that can misbehave ---------------------------- */

typedef enum Misbehave {
    BEHAVE,
    NOT_PCI,            /* DEVICE_GET_INFO without the PCI flag */
    BAD_MAJOR,          /* VERSION answered with major 1 */
    SHORT_REPLY,        /* DEVICE_GET_INFO reply too short */
    SILENT,             /* never answers GET_INFO */
    CLOSE_ON_BAR_READ,  /* closes the socket mid-request */
    GARBAGE_HEADER,     /* answers a BAR read with a broken header */
    REPLY_POSTED,       /* answers No_reply writes anyway */
} Misbehave;

/* A DMA_MAP the scripted server received */
typedef struct FakeMap {
    uint64_t address;
    uint64_t size;
    uint64_t offset;
    uint32_t flags;
    size_t nfds;
    int fd;                 /* kept open, or -1 */
} FakeMap;

/*
 * A request the scripted server sends the client, as a rogue device
 * would, when the test writes FAKE_GO_OFFSET of BAR0.  The client serves
 * it while it waits for that write's reply.
 */
typedef struct DmaProbe {
    uint16_t cmd;
    uint64_t address;
    uint64_t count;         /* as claimed in the request */
    const uint8_t *data;    /* DMA_WRITE: data_len bytes sent after it */
    size_t data_len;
    /* results */
    int sent;               /* vfu_conn_send() */
    int got;                /* vfu_conn_recv() of the answer */
    bool matched;           /* the answer is the reply to this request */
    uint32_t flags;
    uint32_t error;
    int decoded;            /* vfu_msg_decode() of a non-error reply */
    uint8_t *reply;         /* reply payload in host order */
    size_t reply_len;
} DmaProbe;

#define FAKE_GO_OFFSET  0x3c
/* BAR0 writes here are logged in order; writes to FAIL fail */
#define FAKE_LOG_OFFSET  0x30
#define FAKE_FAIL_OFFSET 0x34
#define FAKE_LOG_MAX     64

typedef struct FakeServer {
    Misbehave how;
    char *path;
    QIOChannelSocket *listener;
    GThread *thread;
    uint8_t config[256];
    uint32_t bar0[16];
    int resets;
    int bar_reads;
    int posted_writes, acked_writes;    /* BAR0 REGION_WRITEs */
    int posted_config_writes;
    uint32_t bar0_reg;      /* the last BAR0 register write we got */
    uint32_t log[FAKE_LOG_MAX];
    int nlog;
    /* shared with the test thread, under @lock */
    GMutex lock;
    GArray *maps;           /* FakeMap, in the order received */
    DmaProbe *probe;        /* to send on the next "go"; cleared when done */
    uint16_t probe_id;
} FakeServer;

static int fake_reply_region_info(VfuConn *c, VfuMsg *m)
{
    VfuRegionInfo *req = (VfuRegionInfo *)m->payload;
    VfuRegionInfo r = { .argsz = sizeof(r), .index = req->index };

    if (req->index == VFU_PCI_CONFIG_REGION) {
        r.size = 256;
        r.flags = VFU_REGION_F_READ | VFU_REGION_F_WRITE;
    } else if (req->index == 0) {
        r.size = 64;
        r.flags = VFU_REGION_F_READ | VFU_REGION_F_WRITE;
    }
    return vfu_conn_reply(c, m, &r, sizeof(r), NULL, 0, NULL);
}

static void fake_record_map(FakeServer *fs, VfuMsg *m)
{
    VfuDmaMap *req = (VfuDmaMap *)m->payload;
    FakeMap fm = {
        .address = req->address, .size = req->size, .offset = req->offset,
        .flags = req->flags, .nfds = m->nfds, .fd = -1,
    };

    if (m->nfds == 1) {
        fm.fd = vfu_msg_steal_fd(m, 0);
    }
    g_mutex_lock(&fs->lock);
    g_array_append_val(fs->maps, fm);
    g_mutex_unlock(&fs->lock);
}

/* Send @p to the client and record what comes back. */
static void fake_send_probe(FakeServer *fs, VfuConn *c, DmaProbe *p)
{
    size_t len = sizeof(VfuDmaAccess) + p->data_len;
    g_autofree VfuDmaAccess *req = g_malloc0(len);
    g_autoptr(VfuMsg) m = NULL;
    /* ids of our own, apart from anything vfu_client_call() would pick */
    uint16_t id = 0x8000 | fs->probe_id++;

    req->address = p->address;
    req->count = p->count;
    if (p->data_len) {
        memcpy(req->data, p->data, p->data_len);
    }
    p->sent = vfu_conn_send(c, p->cmd, id, VFU_F_TYPE_COMMAND, 0, req, len,
                            NULL, 0, NULL);
    if (p->sent) {
        return;
    }
    p->got = vfu_conn_recv(c, &m, true, NULL);
    if (p->got != 1) {
        return;
    }
    p->matched = vfu_msg_is_reply(m) && m->hdr.msg_id == id &&
                 m->hdr.command == p->cmd;
    p->flags = m->hdr.flags;
    p->error = m->hdr.error;
    if (!(m->hdr.flags & VFU_F_ERROR)) {
        p->decoded = vfu_msg_decode(m, vfu_conn_local_limits(c), NULL);
        p->reply = g_memdup2(m->payload, m->len);
        p->reply_len = m->len;
    }
}

static void fake_go(FakeServer *fs, VfuConn *c)
{
    /* the test thread waits in its BAR write meanwhile */
    g_mutex_lock(&fs->lock);
    if (fs->probe) {
        fake_send_probe(fs, c, fs->probe);
        fs->probe = NULL;
    }
    g_mutex_unlock(&fs->lock);
}

static int fake_request(VfuConn *c, VfuMsg *m, void *opaque)
{
    FakeServer *fs = opaque;

    switch (m->hdr.command) {
    case VFU_CMD_DEVICE_GET_INFO: {
        VfuDeviceInfo r = { sizeof(r), VFU_DEV_F_PCI | VFU_DEV_F_RESET,
                            VFU_PCI_NUM_REGIONS, VFU_PCI_NUM_IRQS };
        if (fs->how == SILENT) {
            return 0;
        }
        if (fs->how == NOT_PCI) {
            r.flags = VFU_DEV_F_RESET;
        }
        return vfu_conn_reply(c, m, &r, fs->how == SHORT_REPLY ? 8 : sizeof(r),
                              NULL, 0, NULL);
    }
    case VFU_CMD_DEVICE_GET_REGION_INFO:
        return fake_reply_region_info(c, m);
    case VFU_CMD_DEVICE_GET_IRQ_INFO: {
        VfuIrqInfo r = *(VfuIrqInfo *)m->payload;
        r.flags = VFU_IRQ_INFO_F_EVENTFD;
        r.count = r.index == VFU_PCI_INTX_IRQ ? 1 : 0;
        return vfu_conn_reply(c, m, &r, sizeof(r), NULL, 0, NULL);
    }
    case VFU_CMD_DMA_MAP:
        fake_record_map(fs, m);
        return vfu_conn_reply(c, m, NULL, 0, NULL, 0, NULL);
    case VFU_CMD_DEVICE_SET_IRQS:
    case VFU_CMD_DMA_UNMAP:
        if (m->hdr.command == VFU_CMD_DMA_UNMAP) {
            return vfu_conn_reply(c, m, m->payload, sizeof(VfuDmaUnmap),
                                  NULL, 0, NULL);
        }
        return vfu_conn_reply(c, m, NULL, 0, NULL, 0, NULL);
    case VFU_CMD_DEVICE_RESET:
        fs->resets++;
        return vfu_conn_reply(c, m, NULL, 0, NULL, 0, NULL);
    case VFU_CMD_REGION_READ:
    case VFU_CMD_REGION_WRITE: {
        VfuRegionAccess *a = (VfuRegionAccess *)m->payload;
        uint8_t *base = a->region == VFU_PCI_CONFIG_REGION ? fs->config :
                        (uint8_t *)fs->bar0;
        size_t limit = a->region == VFU_PCI_CONFIG_REGION ? 256 : 64;
        struct QEMU_PACKED { VfuRegionAccess a; uint8_t d[256]; } r;

        if ((a->region != 0 && a->region != VFU_PCI_CONFIG_REGION) ||
            a->offset + a->count > limit) {
            return -EINVAL;
        }
        if (a->region == 0 && m->hdr.command == VFU_CMD_REGION_READ) {
            fs->bar_reads++;
            if (fs->how == CLOSE_ON_BAR_READ) {
                vfu_conn_shutdown(c);
                return 0;
            }
            if (fs->how == GARBAGE_HEADER) {
                uint8_t junk[16] = { 0xff, 0xff, 0xff, 0xff, 3, 0, 0, 0 };
                qio_channel_write_all(vfu_conn_ioc(c), (char *)junk,
                                      sizeof(junk), NULL);
                return 0;
            }
        }
        r.a = *a;
        if (m->hdr.command == VFU_CMD_REGION_WRITE) {
            bool posted = m->hdr.flags & VFU_F_NO_REPLY;

            if (a->region == VFU_PCI_CONFIG_REGION && posted) {
                fs->posted_config_writes++;
            }
            if (a->region == VFU_PCI_CONFIG_REGION &&
                a->offset == PCI_BASE_ADDRESS_0 && a->count == 4) {
                fs->bar0_reg = ldl_le_p(a->data);
            }
            if (a->region == 0) {
                *(posted ? &fs->posted_writes : &fs->acked_writes) += 1;
            }
            if (posted && fs->how == REPLY_POSTED) {
                /* a peer that ignores No_reply: the client drops these */
                bool fail = a->region == 0 && a->offset == FAKE_FAIL_OFFSET;

                vfu_conn_send(c, m->hdr.command, m->hdr.msg_id,
                              VFU_F_TYPE_REPLY | (fail ? VFU_F_ERROR : 0),
                              fail ? EIO : 0, fail ? NULL : &r.a,
                              fail ? 0 : sizeof(r.a), NULL, 0, NULL);
            }
            if (a->region == 0 && a->offset == FAKE_FAIL_OFFSET) {
                return -EIO;
            }
            if (a->region == 0 && a->offset == FAKE_LOG_OFFSET &&
                a->count == 4 && fs->nlog < FAKE_LOG_MAX) {
                fs->log[fs->nlog++] = ldl_le_p(a->data);
            }
            if (a->region == 0 && a->offset == FAKE_GO_OFFSET) {
                fake_go(fs, c);
                if (vfu_conn_is_broken(c)) {
                    return 0;
                }
            }
            if (a->region == 0) {
                memcpy(base + a->offset, a->data, a->count);
            }
            return vfu_conn_reply(c, m, &r.a, sizeof(r.a), NULL, 0, NULL);
        }
        memcpy(r.d, base + a->offset, a->count);
        return vfu_conn_reply(c, m, &r, sizeof(r.a) + a->count, NULL, 0,
                              NULL);
    }
    default:
        return -ENOTSUP;
    }
}

static gpointer fake_server_thread(gpointer opaque)
{
    FakeServer *fs = opaque;
    QIOChannelSocket *sioc;
    g_autoptr(VfuConn) c = NULL;
    VfuLimits limits;
    VfuMsg *m;

    qio_channel_set_blocking(QIO_CHANNEL(fs->listener), true, NULL);
    sioc = qio_channel_socket_accept(fs->listener, NULL);
    if (!sioc) {
        return NULL;
    }
    vfu_limits_default(&limits);
    limits.max_msg_fds = 8;
    c = vfu_conn_new(QIO_CHANNEL(sioc), "fake-server", &limits);
    object_unref(OBJECT(sioc));
    vfu_conn_set_timeout(c, 30000);
    vfu_conn_set_request_func(c, fake_request, fs);

    if (vfu_conn_recv(c, &m, true, NULL) != 1) {
        return NULL;
    }
    if (fs->how == BAD_MAJOR) {
        VfuVersion v = { 1, 0 };
        vfu_conn_reply(c, m, &v, sizeof(v), NULL, 0, NULL);
        vfu_msg_free(m);
    } else {
        int r = vfu_srv_negotiate(c, m, NULL);
        vfu_msg_free(m);
        if (r) {
            return NULL;
        }
    }
    while (!vfu_conn_is_broken(c) && vfu_conn_recv(c, &m, true, NULL) == 1) {
        vfu_conn_handle_request(c, m);
    }
    return NULL;
}

static FakeServer *fake_server_start(Misbehave how)
{
    FakeServer *fs = g_new0(FakeServer, 1);
    SocketAddress addr = { .type = SOCKET_ADDRESS_TYPE_UNIX };
    static int n;

    fs->how = how;
    fs->path = g_strdup_printf("%s/fake%d.sock", tmpdir, n++);
    addr.u.q_unix.path = fs->path;
    fs->listener = qio_channel_socket_new();
    qio_channel_socket_listen_sync(fs->listener, &addr, 1, &error_abort);
    stw_le_p(fs->config + PCI_VENDOR_ID, 0x1234);
    stw_le_p(fs->config + PCI_DEVICE_ID, 0xfeed);
    fs->config[PCI_INTERRUPT_PIN] = 1;
    stl_le_p(fs->config + PCI_BASE_ADDRESS_0, 0);   /* 32-bit memory */
    fs->bar0[0] = 0xcafe0001;
    g_mutex_init(&fs->lock);
    fs->maps = g_array_new(false, true, sizeof(FakeMap));
    fs->thread = g_thread_new("fake-server", fake_server_thread, fs);
    return fs;
}

static void fake_server_free(FakeServer *fs)
{
    qio_channel_shutdown(QIO_CHANNEL(fs->listener), QIO_CHANNEL_SHUTDOWN_BOTH,
                         NULL);
    g_thread_join(fs->thread);
    object_unref(OBJECT(fs->listener));
    for (guint i = 0; i < fs->maps->len; i++) {
        FakeMap *fm = &g_array_index(fs->maps, FakeMap, i);

        if (fm->fd >= 0) {
            close(fm->fd);
        }
    }
    g_array_free(fs->maps, true);
    g_mutex_clear(&fs->lock);
    unlink(fs->path);
    g_free(fs->path);
    g_free(fs);
}

static QTestState *vm_start(void)
{
    return qtest_init(FW_ARGS "-M pc");
}

/* device_add must fail with @reason in the error, and QEMU live on. */
static void expect_plug_failure(QTestState *qts, const char *path,
                                const char *timeout, const char *reason)
{
    QDict *rsp;
    const char *desc;

    rsp = qtest_qmp(qts, "{'execute': 'device_add', 'arguments': {"
                    "'driver': 'vfio-user-pci', 'id': 'vu', 'socket': %s,"
                    "'x-msg-timeout': %s, 'addr': '04.0'}}",
                    path, timeout);
    g_assert(qdict_haskey(rsp, "error"));
    desc = qdict_get_str(qdict_get_qdict(rsp, "error"), "desc");
    g_test_message("device_add: %s", desc);
    g_assert(strstr(desc, path));
    g_assert(strstr(desc, reason));
    qobject_unref(rsp);
    rsp = qtest_qmp(qts, "{'execute': 'query-status'}");
    g_assert(qdict_haskey(rsp, "return"));
    qobject_unref(rsp);
}

static void test_no_server(void)
{
    QTestState *qts = vm_start();
    g_autofree char *path = sock_path("nobody");

    expect_plug_failure(qts, path, "1000", "No such file");
    qtest_quit(qts);
}

static void test_bad_server(gconstpointer opaque)
{
    const struct { Misbehave how; const char *reason; } *t = opaque;
    QTestState *qts = vm_start();
    FakeServer *fs = fake_server_start(t->how);

    expect_plug_failure(qts, fs->path, "300", t->reason);
    qtest_quit(qts);
    fake_server_free(fs);
}

static QPCIDevice *plug_fake(QTestState *qts, FakeServer *fs, QPCIBus **bus)
{
    QDict *rsp = qtest_qmp(qts, "{'execute': 'device_add', 'arguments': {"
                           "'driver': 'vfio-user-pci', 'id': 'vu',"
                           "'socket': %s, 'addr': '04.0'}}", fs->path);

    g_assert(qdict_haskey(rsp, "return"));
    qobject_unref(rsp);
    *bus = qpci_new_pc(qts, NULL);
    return vu_find_dev(*bus, DEVFN);
}

/* The scripted server, behaving: hotplug, BAR access sizes, reset, unplug. */
static void test_fake_good(void)
{
    QTestState *qts = vm_start();
    FakeServer *fs = fake_server_start(BEHAVE);
    QPCIBus *bus;
    QPCIDevice *dev = plug_fake(qts, fs, &bus);
    QPCIBar bar;
    uint64_t size;
    QDict *rsp;

    g_assert_cmphex(qpci_config_readw(dev, PCI_DEVICE_ID), ==, 0xfeed);
    bar = qpci_iomap(dev, 0, &size);
    g_assert_cmpuint(size, ==, 64);
    g_assert_cmphex(qpci_io_readl(dev, bar, 0), ==, 0xcafe0001);
    qpci_io_writeb(dev, bar, 8, 0x11);
    qpci_io_writew(dev, bar, 10, 0x3322);
    qpci_io_writel(dev, bar, 12, 0x77665544);
    g_assert_cmphex(qpci_io_readq(dev, bar, 8), ==, 0x7766554433220011ULL);
    qpci_io_writeq(dev, bar, 16, 0x8877665544332211ULL);
    g_assert_cmphex(qpci_io_readb(dev, bar, 17), ==, 0x22);
    g_assert_cmphex(qpci_io_readw(dev, bar, 18), ==, 0x4433);
    g_assert_cmphex(qpci_io_readl(dev, bar, 20), ==, 0x88776655);

    /* system_reset resets the device on the server */
    rsp = qtest_qmp(qts, "{'execute': 'system_reset'}");
    qobject_unref(rsp);
    qtest_qmp_eventwait(qts, "RESET");
    g_assert_cmpint(fs->resets, >=, 1);

    g_free(dev);
    qpci_free_pc(bus);
    qpci_unplug_acpi_device_test(qts, "vu", 4);
    qtest_quit(qts);
    fake_server_free(fs);
}

/*
 * BAR writes are posted (No_reply) unless x-posted-writes=off, arrive in
 * order before a later read is answered; a failing one changes nothing
 * for the writes after it; config writes are always acked; stray replies
 * from a peer that answers posted writes anyway are dropped.
 */
static void test_posted(gconstpointer opaque)
{
    const char *mode = opaque;
    bool posted = strcmp(mode, "off") != 0;
    QTestState *qts = vm_start();
    FakeServer *fs = fake_server_start(strcmp(mode, "stray-replies") ?
                                       BEHAVE : REPLY_POSTED);
    QPCIBus *bus;
    QPCIDevice *dev;
    QPCIBar bar;
    QDict *rsp;

    rsp = qtest_qmp(qts, "{'execute': 'device_add', 'arguments': {"
                    "'driver': 'vfio-user-pci', 'id': 'vu', 'socket': %s,"
                    "'x-posted-writes': %i, 'addr': '04.0'}}", fs->path,
                    posted);
    g_assert(qdict_haskey(rsp, "return"));
    qobject_unref(rsp);
    bus = qpci_new_pc(qts, NULL);
    dev = vu_find_dev(bus, DEVFN);
    bar = qpci_iomap(dev, 0, NULL);
    /* the server learns where the guest put BAR0, as VFIO would tell it */
    g_assert_cmphex(fs->bar0_reg, ==,
                    qpci_config_readl(dev, PCI_BASE_ADDRESS_0));

    for (uint32_t v = 1; v <= 40; v++) {
        qpci_io_writel(dev, bar, FAKE_LOG_OFFSET, v * 0x01010101u);
        if (v == 20) {
            qpci_io_writel(dev, bar, FAKE_FAIL_OFFSET, 0xdead);
        }
    }
    qpci_io_writel(dev, bar, 8, 0x12345678);
    g_assert_cmphex(qpci_io_readl(dev, bar, 8), ==, 0x12345678);
    g_assert_cmpint(fs->nlog, ==, 40);
    for (int i = 0; i < 40; i++) {
        g_assert_cmphex(fs->log[i], ==, (i + 1) * 0x01010101u);
    }
    g_assert_cmpint(fs->posted_writes, ==, posted ? 42 : 0);
    g_assert_cmpint(fs->acked_writes, ==, posted ? 0 : 42);
    qpci_config_writew(dev, PCI_COMMAND,
                       qpci_config_readw(dev, PCI_COMMAND) | PCI_COMMAND_MASTER);
    g_assert_cmpint(fs->posted_config_writes, ==, 0);
    rsp = qtest_qmp(qts, "{'execute': 'query-status'}");
    g_assert(qdict_haskey(rsp, "return"));
    qobject_unref(rsp);

    g_free(dev);
    qpci_free_pc(bus);
    qpci_unplug_acpi_device_test(qts, "vu", 4);
    qtest_quit(qts);
    fake_server_free(fs);
}

/* The server vanishes mid-request: all-ones, QEMU and the guest go on. */
static void test_fake_dies(gconstpointer opaque)
{
    Misbehave how = GPOINTER_TO_INT(opaque);
    QTestState *qts = vm_start();
    FakeServer *fs = fake_server_start(how);
    QPCIBus *bus;
    QPCIDevice *dev = plug_fake(qts, fs, &bus);
    QPCIBar bar;
    QDict *rsp;

    bar = qpci_iomap(dev, 0, NULL);
    g_assert_cmphex(qpci_io_readl(dev, bar, 0), ==, 0xffffffff);
    g_assert_cmpint(fs->bar_reads, ==, 1);
    /* inert from now on: no more messages, reads all-ones */
    qpci_io_writel(dev, bar, 4, 1);
    g_assert_cmphex(qpci_io_readw(dev, bar, 0), ==, 0xffff);
    g_assert_cmphex(qpci_config_readw(dev, PCI_DEVICE_ID), ==, 0xffff);
    rsp = qtest_qmp(qts, "{'execute': 'query-status'}");
    g_assert(qdict_haskey(rsp, "return"));
    qobject_unref(rsp);

    g_free(dev);
    qpci_free_pc(bus);
    qpci_unplug_acpi_device_test(qts, "vu", 4);
    qtest_quit(qts);
    fake_server_free(fs);
}

/* ---- a rogue server's DMA requests ----------------------------------- */

/* Guest memory the rogue requests must leave alone, checked byte for byte */
typedef struct Guard {
    uint64_t addr;
    size_t len;
    uint8_t *before;
} Guard;

typedef struct DmaTest {
    QTestState *qts;
    FakeServer *fs;
    QPCIBus *bus;
    QPCIDevice *dev;
    QPCIBar bar;
    GArray *maps;           /* FakeMap: the DMA_MAPs seen at plug time */
    Guard guards[4];
    int nguards;
} DmaTest;

#define DMA_RAM_BASE    0x100000    /* the low 1 MiB holds the ROMs */
#define DMA_HAPPY       0x200000
#define DMA_XFER_MAX    (1024 * 1024)   /* the client's max_data_xfer_size */

static void qemu_alive(QTestState *qts)
{
    QDict *rsp = qtest_qmp(qts, "{'execute': 'query-status'}");

    g_assert(qdict_haskey(rsp, "return"));
    qobject_unref(rsp);
}

/* Do the mappings cover [addr, addr + len) with @perm, contiguously? */
static bool maps_cover(GArray *maps, uint64_t addr, uint64_t len,
                       uint32_t perm)
{
    uint64_t end = addr + len;
    bool progress = true;

    while (addr < end && progress) {
        progress = false;
        for (guint i = 0; i < maps->len; i++) {
            FakeMap *fm = &g_array_index(maps, FakeMap, i);

            if (fm->address <= addr && addr < fm->address + fm->size &&
                (fm->flags & perm) == perm) {
                addr = fm->address + fm->size;
                progress = true;
            }
        }
    }
    return addr >= end;
}

static FakeMap *find_map(GArray *maps, uint64_t addr)
{
    for (guint i = 0; i < maps->len; i++) {
        FakeMap *fm = &g_array_index(maps, FakeMap, i);

        if (fm->address <= addr && addr < fm->address + fm->size) {
            return fm;
        }
    }
    return NULL;
}

static void guard_add(DmaTest *t, uint64_t addr, size_t len)
{
    g_assert(t->nguards < ARRAY_SIZE(t->guards));
    t->guards[t->nguards++] = (Guard) { .addr = addr, .len = len };
}

static void guards_snapshot(DmaTest *t)
{
    for (int i = 0; i < t->nguards; i++) {
        Guard *g = &t->guards[i];

        g_free(g->before);
        g->before = g_malloc(g->len);
        qtest_memread(t->qts, g->addr, g->before, g->len);
    }
}

static void guards_check(DmaTest *t)
{
    for (int i = 0; i < t->nguards; i++) {
        Guard *g = &t->guards[i];
        g_autofree uint8_t *now = g_malloc(g->len);

        qtest_memread(t->qts, g->addr, now, g->len);
        g_assert(memcmp(now, g->before, g->len) == 0);
    }
}

/* Have the scripted server send @p now, and wait until it was answered. */
static void run_probe(DmaTest *t, DmaProbe *p)
{
    g_mutex_lock(&t->fs->lock);
    t->fs->probe = p;
    g_mutex_unlock(&t->fs->lock);
    qpci_io_writel(t->dev, t->bar, FAKE_GO_OFFSET, 1);
    g_mutex_lock(&t->fs->lock);
    g_assert(!t->fs->probe);
    g_mutex_unlock(&t->fs->lock);
}

static void probe_clear(DmaProbe *p)
{
    g_free(p->reply);
}

/* A rogue request: an error reply with @err, memory untouched, QEMU up. */
static void expect_dma_error(DmaTest *t, uint16_t cmd, uint64_t addr,
                             uint64_t count, size_t data_len, int err)
{
    g_autofree uint8_t *data = g_malloc(data_len ?: 1);
    DmaProbe p = {
        .cmd = cmd, .address = addr, .count = count,
        .data = data, .data_len = data_len,
    };

    g_test_message("%s 0x%" PRIx64 " count 0x%" PRIx64 " (%zu data bytes)",
                   cmd == VFU_CMD_DMA_READ ? "DMA_READ" : "DMA_WRITE",
                   addr, count, data_len);
    memset(data, 0xa5, data_len ?: 1);
    guards_snapshot(t);
    run_probe(t, &p);
    g_assert_cmpint(p.sent, ==, 0);
    g_assert_cmpint(p.got, ==, 1);
    g_assert(p.matched);
    g_assert(p.flags & VFU_F_ERROR);
    g_assert_cmpint(p.error, ==, err);
    guards_check(t);
    qemu_alive(t->qts);
    /* the device still works */
    g_assert_cmphex(qpci_io_readl(t->dev, t->bar, 0), ==, 0xcafe0001);
    probe_clear(&p);
}

/* A well-formed request: a reply with the access header echoed. */
static void expect_dma_ok(DmaTest *t, DmaProbe *p)
{
    VfuDmaAccess *r;

    run_probe(t, p);
    g_assert_cmpint(p->sent, ==, 0);
    g_assert_cmpint(p->got, ==, 1);
    g_assert(p->matched);
    g_assert(!(p->flags & VFU_F_ERROR));
    g_assert_cmpint(p->decoded, ==, 0);
    g_assert_cmpuint(p->reply_len, >=, sizeof(VfuDmaAccess));
    r = (VfuDmaAccess *)p->reply;
    g_assert_cmphex(r->address, ==, p->address);
    g_assert_cmphex(r->count, ==, p->count);
    if (p->cmd == VFU_CMD_DMA_READ) {
        g_assert_cmpuint(p->reply_len, ==, sizeof(*r) + p->count);
    }
}

static void dma_test_start(DmaTest *t, bool secure)
{
    QDict *rsp;

    /* shared guest RAM: only secure-dma keeps its fd from the server */
    t->qts = qtest_init(FW_ARGS "-M pc,memory-backend=mem -m 64M "
                        "-object memory-backend-memfd,id=mem,size=64M,"
                        "share=on");
    t->fs = fake_server_start(BEHAVE);
    /*
     * Acked BAR writes: the scripted server takes the next message after
     * its probe for the answer, and the GO write must keep the client
     * waiting until then.
     */
    rsp = qtest_qmp(t->qts, "{'execute': 'device_add', 'arguments': {"
                    "'driver': 'vfio-user-pci', 'id': 'vu', 'socket': %s,"
                    "'secure-dma': %i, 'x-posted-writes': false,"
                    "'addr': '04.0'}}", t->fs->path, secure);
    g_assert(qdict_haskey(rsp, "return"));
    qobject_unref(rsp);
    t->bus = qpci_new_pc(t->qts, NULL);
    t->dev = vu_find_dev(t->bus, DEVFN);   /* enables bus mastering too */
    t->bar = qpci_iomap(t->dev, 0, NULL);

    /* the realize sent every DMA_MAP; the test owns the copy */
    g_mutex_lock(&t->fs->lock);
    t->maps = g_array_new(false, false, sizeof(FakeMap));
    g_array_append_vals(t->maps, t->fs->maps->data, t->fs->maps->len);
    g_mutex_unlock(&t->fs->lock);
    for (guint i = 0; i < t->maps->len; i++) {
        FakeMap *fm = &g_array_index(t->maps, FakeMap, i);

        g_test_message("DMA_MAP 0x%" PRIx64 "+0x%" PRIx64 " flags %u fds %zu",
                       fm->address, fm->size, fm->flags, fm->nfds);
    }
    g_assert_cmpuint(t->maps->len, >, 0);
}

static void dma_test_stop(DmaTest *t)
{
    for (int i = 0; i < t->nguards; i++) {
        g_free(t->guards[i].before);
    }
    g_array_free(t->maps, true);
    g_free(t->dev);
    qpci_free_pc(t->bus);
    qpci_unplug_acpi_device_test(t->qts, "vu", 4);
    qtest_quit(t->qts);
    fake_server_free(t->fs);
}

/* The fd that came with guest RAM's DMA_MAP really maps guest RAM. */
static void check_ram_fd(DmaTest *t)
{
    FakeMap *fm = find_map(t->maps, DMA_HAPPY);
    uint8_t pattern[256];
    uint8_t *host;

    g_assert(fm);
    g_assert_cmpuint(fm->nfds, ==, 1);
    g_assert_cmpint(fm->fd, >=, 0);
    host = mmap(NULL, fm->size, PROT_READ, MAP_SHARED, fm->fd, fm->offset);
    g_assert(host != MAP_FAILED);
    for (int i = 0; i < sizeof(pattern); i++) {
        pattern[i] = i ^ 0x3c;
    }
    qtest_memwrite(t->qts, DMA_HAPPY, pattern, sizeof(pattern));
    g_assert(memcmp(host + (DMA_HAPPY - fm->address), pattern,
                    sizeof(pattern)) == 0);
    munmap(host, fm->size);
}

static void test_fake_dma(gconstpointer opaque)
{
    bool secure = GPOINTER_TO_INT(opaque);
    DmaTest t = { 0 };
    FakeMap *rom = NULL, *edge = NULL;
    g_autofree uint8_t *pattern = g_malloc(DMA_XFER_MAX);
    g_autofree uint8_t *mem = g_malloc(DMA_XFER_MAX);
    DmaProbe p;

    dma_test_start(&t, secure);

    /* fds: never with secure-dma; shared guest RAM's otherwise */
    if (secure) {
        for (guint i = 0; i < t.maps->len; i++) {
            g_assert_cmpuint(g_array_index(t.maps, FakeMap, i).nfds, ==, 0);
        }
    } else {
        check_ram_fd(&t);
    }

    /*
     * A read-only mapping (isa-bios, pc.bios, pc.rom), and a writable one
     * whose end no other mapping continues.
     */
    for (guint i = 0; i < t.maps->len; i++) {
        FakeMap *fm = &g_array_index(t.maps, FakeMap, i);

        g_assert(fm->flags & VFU_DMA_MAP_F_READ);
        if (!(fm->flags & VFU_DMA_MAP_F_WRITE) && !rom) {
            rom = fm;
        }
        if ((fm->flags & VFU_DMA_MAP_F_WRITE) && !edge &&
            !find_map(t.maps, fm->address + fm->size)) {
            edge = fm;
        }
    }
    g_assert(rom);
    g_assert(edge);
    g_assert(maps_cover(t.maps, DMA_RAM_BASE, 2 * DMA_XFER_MAX,
                        VFU_DMA_MAP_F_READ | VFU_DMA_MAP_F_WRITE));

    /*
     * What a wrong check would hit: low memory (addresses truncated or
     * wrapped), the last bytes below the edge, the ROM, the happy area.
     */
    guard_add(&t, 0, 0x2000);
    guard_add(&t, edge->address + edge->size - 0x1000, 0x1000);
    guard_add(&t, rom->address, 0x1000);
    guard_add(&t, DMA_HAPPY, 0x10000);

    /* outside every mapping */
    expect_dma_error(&t, VFU_CMD_DMA_READ, 0xfff00000000ULL, 0x100, 0, EFAULT);
    expect_dma_error(&t, VFU_CMD_DMA_WRITE, 0xfff00000000ULL, 0x100, 0x100,
                     EFAULT);
    /* straddling a mapping's end */
    expect_dma_error(&t, VFU_CMD_DMA_READ, edge->address + edge->size - 8, 16,
                     0, EFAULT);
    expect_dma_error(&t, VFU_CMD_DMA_WRITE, edge->address + edge->size - 8, 16,
                     16, EFAULT);
    /* writing read-only memory */
    expect_dma_error(&t, VFU_CMD_DMA_WRITE, rom->address, 0x100, 0x100,
                     EFAULT);
    /* address + count wraps around */
    expect_dma_error(&t, VFU_CMD_DMA_READ, 0xfffffffffffff000ULL, 0x2000, 0,
                     EFAULT);
    expect_dma_error(&t, VFU_CMD_DMA_WRITE, 0xfffffffffffff000ULL, 0x2000,
                     0x2000, EFAULT);
    /* more than max_data_xfer_size: the codec refuses it */
    expect_dma_error(&t, VFU_CMD_DMA_READ, DMA_HAPPY, 2 * DMA_XFER_MAX, 0,
                     E2BIG);
    expect_dma_error(&t, VFU_CMD_DMA_WRITE, DMA_HAPPY, 2 * DMA_XFER_MAX, 16,
                     E2BIG);
    /* a count that does not match the data sent */
    expect_dma_error(&t, VFU_CMD_DMA_WRITE, DMA_HAPPY, 32, 16, EINVAL);
    /* nothing to transfer */
    expect_dma_error(&t, VFU_CMD_DMA_READ, DMA_HAPPY, 0, 0, EFAULT);
    expect_dma_error(&t, VFU_CMD_DMA_WRITE, DMA_HAPPY, 0, 0, EFAULT);

    /* reading a read-only mapping is fine */
    p = (DmaProbe) { .cmd = VFU_CMD_DMA_READ, .address = rom->address,
                     .count = 0x100 };
    expect_dma_ok(&t, &p);
    qtest_memread(t.qts, rom->address, mem, 0x100);
    g_assert(memcmp(p.reply + sizeof(VfuDmaAccess), mem, 0x100) == 0);
    probe_clear(&p);

    /* the happy path: a pattern written, then read back, 64 KiB */
    for (size_t i = 0; i < DMA_XFER_MAX; i++) {
        pattern[i] = (i * 7 + (i >> 12)) & 0xff;
    }
    p = (DmaProbe) { .cmd = VFU_CMD_DMA_WRITE, .address = DMA_HAPPY,
                     .count = 0x10000, .data = pattern, .data_len = 0x10000 };
    expect_dma_ok(&t, &p);
    g_assert_cmpuint(p.reply_len, >=, VFU_DMA_WRITE_REPLY_MIN_SIZE);
    probe_clear(&p);
    qtest_memread(t.qts, DMA_HAPPY, mem, 0x10000);
    for (size_t i = 0; i < 0x10000; i++) {
        g_assert_cmphex(mem[i], ==, pattern[i]);
    }
    p = (DmaProbe) { .cmd = VFU_CMD_DMA_READ, .address = DMA_HAPPY,
                     .count = 0x10000 };
    expect_dma_ok(&t, &p);
    g_assert(memcmp(p.reply + sizeof(VfuDmaAccess), pattern, 0x10000) == 0);
    probe_clear(&p);

    /* a full max_data_xfer_size each way, twice: the reply buffer is reused */
    for (int round = 0; round < 2; round++) {
        uint64_t addr = DMA_RAM_BASE + round * DMA_XFER_MAX;

        pattern[0] = round;
        p = (DmaProbe) { .cmd = VFU_CMD_DMA_WRITE, .address = addr,
                         .count = DMA_XFER_MAX, .data = pattern,
                         .data_len = DMA_XFER_MAX };
        expect_dma_ok(&t, &p);
        probe_clear(&p);
        qtest_memread(t.qts, addr, mem, DMA_XFER_MAX);
        g_assert(memcmp(mem, pattern, DMA_XFER_MAX) == 0);
        p = (DmaProbe) { .cmd = VFU_CMD_DMA_READ, .address = addr,
                         .count = DMA_XFER_MAX };
        expect_dma_ok(&t, &p);
        g_assert(memcmp(p.reply + sizeof(VfuDmaAccess), pattern,
                        DMA_XFER_MAX) == 0);
        probe_clear(&p);
    }
    qemu_alive(t.qts);
    dma_test_stop(&t);
}

/*
 * A DMA_WRITE that really carries 2 MiB is bigger than any message the
 * client takes: it drops the connection rather than read it, and the
 * device goes inert with guest memory untouched.
 */
static void test_fake_dma_oversized(void)
{
    DmaTest t = { 0 };
    g_autofree uint8_t *data = g_malloc(2 * DMA_XFER_MAX);
    DmaProbe p = {
        .cmd = VFU_CMD_DMA_WRITE, .address = DMA_RAM_BASE,
        .count = 2 * DMA_XFER_MAX, .data = data,
        .data_len = 2 * DMA_XFER_MAX,
    };

    dma_test_start(&t, true);
    guard_add(&t, DMA_RAM_BASE, 2 * DMA_XFER_MAX);
    memset(data, 0x5a, 2 * DMA_XFER_MAX);
    guards_snapshot(&t);
    run_probe(&t, &p);
    /* no reply: the send broke off or the socket was closed after it */
    g_assert(p.sent != 0 || p.got != 1);
    guards_check(&t);
    qemu_alive(t.qts);
    g_assert_cmphex(qpci_io_readl(t.dev, t.bar, 0), ==, 0xffffffff);
    probe_clear(&p);
    dma_test_stop(&t);
}

int main(int argc, char **argv)
{
    static const struct { Misbehave how; const char *reason; } bad[] = {
        { NOT_PCI, "not a PCI device" },
        { BAD_MAJOR, "major version" },
        { SHORT_REPLY, "bad reply" },
        { SILENT, "no answer" },
    };
    static const char *const bad_names[] = {
        "not-pci", "bad-major", "short-reply", "silent",
    };
    int ret;

    g_test_init(&argc, &argv, NULL);
    /* a peer closing mid-send must fail the write, not kill the test */
    signal(SIGPIPE, SIG_IGN);
    module_call_init(MODULE_INIT_QOM);
    tmpdir = g_dir_make_tmp("vfio-user-pci-test-XXXXXX", NULL);

    qtest_add_func("/vfio-user-pci/libvfio-user/gpio", test_gpio);
    qtest_add_func("/vfio-user-pci/libvfio-user/server-nofd",
                   test_server_sample_nofd);
    qtest_add_func("/vfio-user-pci/libvfio-user/server-memfd",
                   test_server_sample_memfd);
    qtest_add_func("/vfio-user-pci/fail/no-server", test_no_server);
    for (int i = 0; i < ARRAY_SIZE(bad); i++) {
        g_autofree char *p = g_strdup_printf("/vfio-user-pci/fail/%s",
                                             bad_names[i]);
        qtest_add_data_func(p, &bad[i], test_bad_server);
    }
    qtest_add_func("/vfio-user-pci/fake/good", test_fake_good);
    qtest_add_data_func("/vfio-user-pci/posted/on", "on", test_posted);
    qtest_add_data_func("/vfio-user-pci/posted/off", "off", test_posted);
    qtest_add_data_func("/vfio-user-pci/posted/stray-replies",
                        "stray-replies", test_posted);
    qtest_add_data_func("/vfio-user-pci/fail/close-mid-request",
                        GINT_TO_POINTER(CLOSE_ON_BAR_READ), test_fake_dies);
    qtest_add_data_func("/vfio-user-pci/fail/garbage-reply",
                        GINT_TO_POINTER(GARBAGE_HEADER), test_fake_dies);
    qtest_add_data_func("/vfio-user-pci/dma/rogue-secure",
                        GINT_TO_POINTER(true), test_fake_dma);
    qtest_add_data_func("/vfio-user-pci/dma/rogue-fd",
                        GINT_TO_POINTER(false), test_fake_dma);
    qtest_add_func("/vfio-user-pci/dma/oversized-message",
                   test_fake_dma_oversized);
    ret = g_test_run();
    rmdir(tmpdir);
    g_free(tmpdir);
    return ret;
}
