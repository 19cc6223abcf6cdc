/*
 * libFuzzer targets for vfio-user, run in qemu-fuzz-x86_64:
 *
 *   vfio-user-server  the input is what a client sends to vfio-user-server
 *                     exporting edu on -M remote (after a valid VERSION).
 *   vfio-user-client  the input is what a server sends to vfio-user-pci
 *                     (after a valid realize handshake): replies to its
 *                     requests and DMA_READ/DMA_WRITE requests.
 *   vfio-user-realize the input describes the server's device, which a
 *                     thread serves to vfio-user-pci from VERSION through
 *                     realize (see "realize target" below), then accesses.
 *
 * All drive the real code over a real UNIX socket.  Each input runs in a
 * forked child, as QEMU's other fuzzers do, so inputs do not see each
 * other's state; a child that dies is reported as a crash of the input.
 *
 * In the server and client targets an input is a byte stream of vfio-user
 * messages (see the seeds made by tests/fuzz/vfio-user-corpus.py).  It is
 * framed by the headers' size fields so that fds can go with the messages
 * that carry them:
 *   DMA_MAP with bit 15 of msg_id set: a 1 MiB memfd, sealed against
 *   shrinking unless bit 14 is set too;
 *   SET_IRQS with DATA_EVENTFD: min(count, 8) eventfds.
 * A header whose size does not fit sends the rest of the input as is.
 * In the client target, the msg_id of a reply counts from the first
 * request the client makes after realize (0 = that request).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sys/eventfd.h>
#include "qemu/main-loop.h"
#include "qemu/bswap.h"
#include "qemu/memfd.h"
#include "qemu/thread.h"
#include "qemu/timer.h"
#include "qemu/error-report.h"
#include "qapi/error.h"
#include "exec/address-spaces.h"
#include "hw/qdev-core.h"
#include "hw/qdev-properties.h"
#include "hw/pci/pci.h"
#include "hw/pci/pci_host.h"
#include "vfio-user/protocol.h"
#include "tests/qtest/libqtest.h"
#include "tests/qtest/fuzz/fuzz.h"
#include "tests/qtest/fuzz/fork_fuzz.h"

#define HDR_SIZE            ((uint32_t)sizeof(VfuHeader))
/* Inputs are cut here: a message stream needs no more to reach any path */
#define FUZZ_MAX_INPUT      (256 * 1024)
#define MAX_FDS             8
#define DMA_MEMFD_SIZE      (1024 * 1024)
/* A child whose peer never finishes is a hang: let libFuzzer see it */
#define STALL_NS            (10 * NANOSECONDS_PER_SECOND)
#define SERVER_SENTINEL_ID  0xffff

static char *fuzz_dir;
static bool debug;          /* VFIO_USER_FUZZ_DEBUG=1 */
static char *sock_path;

/* ---- the peer's side of the socket ------------------------------------------ */

typedef struct Peer {
    int fd;
    QemuThread thread;
    bool answer_dma;            /* act as a client: answer DMA requests */
    bool (*serve)(struct Peer *p, VfuHeader *h, uint8_t *payload);
    bool serving;               /* client target: realize handshake phase */
    int last_req_id;            /* last request seen while serving */
    bool sentinel;              /* server target: the last reply came */
    bool eof;
} Peer;

static bool read_full(int fd, void *buf, size_t len)
{
    uint8_t *p = buf;

    while (len) {
        ssize_t n = read(fd, p, len);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return false;
        }
        p += n;
        len -= n;
    }
    return true;
}

typedef union FdControl {
    char buf[CMSG_SPACE(sizeof(int) * MAX_FDS)];
    struct cmsghdr align;
} FdControl;

/* Let @mh carry @nfds (at most MAX_FDS) fds in @control. */
static void attach_fds(struct msghdr *mh, FdControl *control, const int *fds,
                       size_t nfds)
{
    struct cmsghdr *cmsg;

    if (!nfds) {
        return;
    }
    memset(control, 0, sizeof(*control));
    mh->msg_control = control->buf;
    mh->msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    cmsg = CMSG_FIRSTHDR(mh);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * nfds);
}

/*
 * Write everything from QEMU's thread, without blocking: when the socket
 * is full, run QEMU's main loop so that it reads.
 */
static bool send_all(int fd, const void *buf, size_t len, const int *fds,
                     size_t nfds)
{
    const uint8_t *p = buf;
    int64_t start = qemu_clock_get_ns(QEMU_CLOCK_REALTIME);

    while (len) {
        struct iovec iov = { .iov_base = (void *)p, .iov_len = len };
        FdControl control;
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
        ssize_t n;

        attach_fds(&mh, &control, fds, nfds);
        n = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            main_loop_wait(true);
            if (qemu_clock_get_ns(QEMU_CLOCK_REALTIME) - start > STALL_NS) {
                fprintf(stderr, "vfio-user fuzz: the peer stopped reading\n");
                abort();
            }
            continue;
        }
        if (n <= 0) {
            return false;   /* the peer dropped us: nothing more to send */
        }
        p += n;
        len -= n;
        nfds = 0;
    }
    return true;
}

static void put_header(uint8_t *wire, uint16_t id, uint16_t cmd,
                       uint32_t size, uint32_t flags)
{
    stw_le_p(wire, id);
    stw_le_p(wire + 2, cmd);
    stl_le_p(wire + 4, size);
    stl_le_p(wire + 8, flags);
    stl_le_p(wire + 12, 0);
}

/*
 * Answer @h with @payload (already in wire order) and @fds from the peer
 * thread; an error reply when @error is not 0.
 */
static void peer_send_reply(Peer *p, const VfuHeader *h, uint32_t error,
                            const void *payload, uint32_t len, const int *fds,
                            size_t nfds)
{
    g_autofree uint8_t *wire = g_malloc0(HDR_SIZE + len);

    put_header(wire, h->msg_id, h->command, HDR_SIZE + len,
               VFU_F_TYPE_REPLY | (error ? VFU_F_ERROR : 0));
    stl_le_p(wire + 12, error);
    if (len) {
        memcpy(wire + HDR_SIZE, payload, len);
    }
    /* blocking: the peer thread may wait for QEMU to read */
    for (size_t off = 0; off < HDR_SIZE + len;) {
        struct iovec iov = {
            .iov_base = wire + off, .iov_len = HDR_SIZE + len - off,
        };
        FdControl control;
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
        ssize_t n;

        attach_fds(&mh, &control, fds, nfds);
        n = sendmsg(p->fd, &mh, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return;     /* QEMU closed the connection */
        }
        off += n;
        nfds = 0;
    }
}

static void peer_reply(Peer *p, const VfuHeader *h, const void *payload,
                       uint32_t len)
{
    peer_send_reply(p, h, 0, payload, len, NULL, 0);
}

/* Receive one message, closing any fd that came with it. */
static uint8_t *peer_recv(Peer *p, VfuHeader *h)
{
    uint8_t wire[HDR_SIZE];
    union {
        char buf[CMSG_SPACE(sizeof(int) * 16)];
        struct cmsghdr align;
    } control;
    struct iovec iov = { .iov_base = wire, .iov_len = sizeof(wire) };
    struct msghdr mh = {
        .msg_iov = &iov, .msg_iovlen = 1,
        .msg_control = control.buf, .msg_controllen = sizeof(control.buf),
    };
    struct cmsghdr *cmsg;
    uint8_t *payload;
    ssize_t n;

    do {
        n = recvmsg(p->fd, &mh, MSG_CMSG_CLOEXEC | MSG_WAITALL);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) {
        return NULL;
    }
    for (cmsg = CMSG_FIRSTHDR(&mh); cmsg; cmsg = CMSG_NXTHDR(&mh, cmsg)) {
        if (cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_RIGHTS) {
            int nfd = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);

            for (int i = 0; i < nfd; i++) {
                close(((int *)CMSG_DATA(cmsg))[i]);
            }
        }
    }
    if (n < HDR_SIZE && !read_full(p->fd, wire + n, HDR_SIZE - n)) {
        return NULL;
    }
    h->msg_id = lduw_le_p(wire);
    h->command = lduw_le_p(wire + 2);
    h->size = ldl_le_p(wire + 4);
    h->flags = ldl_le_p(wire + 8);
    h->error = ldl_le_p(wire + 12);
    /* QEMU is the trusted side here; still, do not trust it blindly */
    if (h->size < HDR_SIZE || h->size > 64 * 1024 * 1024) {
        return NULL;
    }
    payload = g_malloc0(h->size - HDR_SIZE + 1);
    if (!read_full(p->fd, payload, h->size - HDR_SIZE)) {
        g_free(payload);
        return NULL;
    }
    return payload;
}

/* Answer QEMU's DMA requests as a client holding zeroed memory would. */
static void peer_answer_dma(Peer *p, VfuHeader *h, uint8_t *payload)
{
    uint32_t len = h->size - HDR_SIZE;
    uint64_t count;
    g_autofree uint8_t *reply = NULL;

    if (len < sizeof(VfuDmaAccess)) {
        return;
    }
    count = ldq_le_p(payload + 8);
    if (h->command == VFU_CMD_DMA_READ && count <= 1024 * 1024) {
        reply = g_malloc0(sizeof(VfuDmaAccess) + count);
        memcpy(reply, payload, sizeof(VfuDmaAccess));
        peer_reply(p, h, reply, sizeof(VfuDmaAccess) + count);
    } else if (h->command == VFU_CMD_DMA_WRITE) {
        peer_reply(p, h, payload, sizeof(VfuDmaAccess));
    }
}

static void *peer_thread(void *opaque)
{
    Peer *p = opaque;
    VfuHeader h;
    uint8_t *payload;

    while ((payload = peer_recv(p, &h))) {
        bool reply = (h.flags & VFU_F_TYPE_MASK) == VFU_F_TYPE_REPLY;

        if (debug) {
            /* what QEMU sends: helps writing seeds */
            fprintf(stderr, "vfio-user fuzz: QEMU sent %s %u id %u size %u\n",
                    reply ? "reply" : "request", h.command, h.msg_id, h.size);
        }
        if (!reply && qatomic_read(&p->serving)) {
            qatomic_set(&p->last_req_id, h.msg_id);
            if (!p->serve(p, &h, payload)) {
                g_free(payload);
                break;
            }
        } else if (!reply && p->answer_dma) {
            peer_answer_dma(p, &h, payload);
        } else if (reply && h.msg_id == SERVER_SENTINEL_ID &&
                   h.command == VFU_CMD_DEVICE_GET_INFO) {
            qatomic_set(&p->sentinel, true);
        }
        g_free(payload);
    }
    qatomic_set(&p->eof, true);
    return NULL;
}

static void peer_start(Peer *p)
{
    qemu_thread_create(&p->thread, "vfio-user-fuzz-peer", peer_thread, p,
                       QEMU_THREAD_JOINABLE);
}

/*
 * Run QEMU's main loop until the peer thread sets @flag or sees the
 * connection end.
 */
static void run_until(Peer *p, bool *flag, const char *what)
{
    int64_t start = qemu_clock_get_ns(QEMU_CLOCK_REALTIME);

    while (!qatomic_read(flag) && !qatomic_read(&p->eof)) {
        main_loop_wait(true);
        if (qemu_clock_get_ns(QEMU_CLOCK_REALTIME) - start > STALL_NS) {
            fprintf(stderr, "vfio-user fuzz: stalled waiting for %s\n", what);
            abort();
        }
    }
}

/*
 * Send the input, message by message, with the fds described above.
 * Returns false when the input did not end on a message boundary (or the
 * peer hung up): what follows would be read as part of the last message.
 */
static bool send_input(Peer *p, const uint8_t *data, size_t size,
                       int reply_id_base)
{
    g_autofree uint8_t *buf = g_memdup2(data, size);
    size_t off = 0;

    while (off < size) {
        uint8_t *m = buf + off;
        uint32_t msize = size - off >= HDR_SIZE ? ldl_le_p(m + 4) : 0;
        int fds[MAX_FDS];
        size_t nfds = 0;
        bool ok;

        if (msize < HDR_SIZE || msize > size - off) {
            send_all(p->fd, m, size - off, NULL, 0);
            return false;
        }
        if ((ldl_le_p(m + 8) & VFU_F_TYPE_MASK) == VFU_F_TYPE_REPLY &&
            reply_id_base >= 0) {
            stw_le_p(m, lduw_le_p(m) + reply_id_base);
        }
        switch (lduw_le_p(m + 2)) {
        case VFU_CMD_DMA_MAP:
            if (lduw_le_p(m) & 0x8000) {
                fds[0] = qemu_memfd_create("vfio-user-fuzz", DMA_MEMFD_SIZE,
                                           false, 0,
                                           (lduw_le_p(m) & 0x4000) ?
                                           0 : F_SEAL_SHRINK, NULL);
                nfds = fds[0] >= 0;
            }
            break;
        case VFU_CMD_DEVICE_SET_IRQS:
            if (msize >= HDR_SIZE + sizeof(VfuIrqSet) &&
                (ldl_le_p(m + HDR_SIZE + 4) & VFU_IRQ_SET_DATA_EVENTFD)) {
                uint32_t count = ldl_le_p(m + HDR_SIZE + 16);

                while (nfds < MIN(count, MAX_FDS)) {
                    fds[nfds++] = eventfd(0, EFD_CLOEXEC);
                }
            }
            break;
        }
        ok = send_all(p->fd, m, msize, fds, nfds);
        for (size_t i = 0; i < nfds; i++) {
            close(fds[i]);
        }
        if (!ok) {
            return false;
        }
        off += msize;
    }
    return true;
}

/* Fork, run @fn in the child, and turn a child's death into a crash. */
static void run_forked(QTestState *s, const uint8_t *data, size_t size,
                       void (*fn)(QTestState *, const uint8_t *, size_t))
{
    pid_t pid = fork();
    int status;

    if (pid == 0) {
        fn(s, data, MIN(size, FUZZ_MAX_INPUT));
        _Exit(0);
    }
    if (pid < 0 || waitpid(pid, &status, 0) != pid) {
        perror("vfio-user fuzz: fork/waitpid");
        abort();
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "vfio-user fuzz: the child %s %d\n",
                WIFSIGNALED(status) ? "died of signal" : "exited with",
                WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
        abort();
    }
    flush_events(s);
}

static int unix_socket(void)
{
    return socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
}

static struct sockaddr_un unix_addr(const char *path)
{
    struct sockaddr_un un = { .sun_family = AF_UNIX };

    g_assert(strlen(path) < sizeof(un.sun_path));
    strcpy(un.sun_path, path);
    return un;
}

static void make_fuzz_dir(void)
{
    debug = getenv("VFIO_USER_FUZZ_DEBUG");
    if (!fuzz_dir) {
        fuzz_dir = g_dir_make_tmp("vfio-user-fuzz-XXXXXX", NULL);
        g_assert(fuzz_dir);
        sock_path = g_build_filename(fuzz_dir, "sock", NULL);
    }
}

static void remove_fuzz_dir(void)
{
    unlink(sock_path);
    rmdir(fuzz_dir);
}

/*
 * KVM refuses an ioeventfd that collides with one it has (same bus and
 * address, and same length with a wildcard or the same data), and QEMU
 * then aborts (kvm_mem_ioeventfd_add).  The fuzzer runs without KVM: a
 * listener applies KVM's rule, so that such inputs are findings here too.
 */
typedef struct KvmLikeIoeventfd {
    hwaddr addr;
    uint64_t size;
    bool match_data;
    uint64_t data;
} KvmLikeIoeventfd;

typedef struct KvmLikeBus {
    MemoryListener listener;
    GArray *fds;                /* KvmLikeIoeventfd */
} KvmLikeBus;

static KvmLikeBus kvm_like_mmio, kvm_like_pio;

static KvmLikeIoeventfd kvm_like_entry(MemoryRegionSection *section,
                                       bool match_data, uint64_t data)
{
    return (KvmLikeIoeventfd) {
        .addr = section->offset_within_address_space,
        .size = int128_get64(section->size),
        .match_data = match_data,
        .data = data,
    };
}

static void kvm_like_eventfd_add(MemoryListener *listener,
                                 MemoryRegionSection *section,
                                 bool match_data, uint64_t data,
                                 EventNotifier *e)
{
    KvmLikeBus *bus = container_of(listener, KvmLikeBus, listener);
    KvmLikeIoeventfd n = kvm_like_entry(section, match_data, data);

    for (guint i = 0; i < bus->fds->len; i++) {
        KvmLikeIoeventfd *o = &g_array_index(bus->fds, KvmLikeIoeventfd, i);

        if (o->addr == n.addr &&
            (!o->size || !n.size ||
             (o->size == n.size &&
              (!o->match_data || !n.match_data || o->data == n.data)))) {
            fprintf(stderr, "vfio-user fuzz: the ioeventfd at 0x%" HWADDR_PRIx
                    " (%" PRIu64 " bytes) collides with one registered: KVM "
                    "would refuse it and QEMU abort\n", n.addr, n.size);
            abort();
        }
    }
    g_array_append_val(bus->fds, n);
}

static void kvm_like_eventfd_del(MemoryListener *listener,
                                 MemoryRegionSection *section,
                                 bool match_data, uint64_t data,
                                 EventNotifier *e)
{
    KvmLikeBus *bus = container_of(listener, KvmLikeBus, listener);
    KvmLikeIoeventfd n = kvm_like_entry(section, match_data, data);

    for (guint i = 0; i < bus->fds->len; i++) {
        KvmLikeIoeventfd *o = &g_array_index(bus->fds, KvmLikeIoeventfd, i);

        if (o->addr == n.addr && o->size == n.size &&
            o->match_data == n.match_data && o->data == n.data) {
            g_array_remove_index(bus->fds, i);
            return;
        }
    }
}

/* From now on, in this child, ioeventfds must pass KVM's check. */
static void kvm_like_ioeventfds(void)
{
    KvmLikeBus *buses[] = { &kvm_like_mmio, &kvm_like_pio };
    AddressSpace *spaces[] = { &address_space_memory, &address_space_io };

    for (int i = 0; i < ARRAY_SIZE(buses); i++) {
        buses[i]->fds = g_array_new(false, true, sizeof(KvmLikeIoeventfd));
        buses[i]->listener = (MemoryListener) {
            .name = "vfio-user-fuzz-kvm-like",
            .eventfd_add = kvm_like_eventfd_add,
            .eventfd_del = kvm_like_eventfd_del,
        };
        memory_listener_register(&buses[i]->listener, spaces[i]);
    }
}

/* ---- server target -------------------------------------------------------- */

static GString *server_cmdline(FuzzTarget *t)
{
    GString *cmd = g_string_new(NULL);

    make_fuzz_dir();
    g_string_printf(cmd, "%s -machine remote -accel qtest -nodefaults "
                    "-device edu,id=e0 "
                    "-object vfio-user-server,id=v0,socket=%s,device=e0",
                    TARGET_NAME, sock_path);
    return cmd;
}

static void server_pre_fuzz(QTestState *s)
{
    counter_shm_init();
    atexit(remove_fuzz_dir);
}

/* edu's DMA registers and buffer (docs/specs/edu.txt) */
#define EDU_DMA_SRC         0x80
#define EDU_DMA_DST         0x88
#define EDU_DMA_CNT         0x90
#define EDU_DMA_CMD         0x98
#define EDU_DMA_RUN         0x1
#define EDU_DMA_TO_PCI      0x2
#define EDU_DMA_START       0x40000
#define EDU_DMA_SIZE        4096

static uint64_t edu_reg(MemoryRegion *mr, hwaddr addr)
{
    uint64_t val = 0;

    memory_region_dispatch_read(mr, addr, &val, MO_64 | MO_TE,
                                MEMTXATTRS_UNSPECIFIED);
    return val;
}

/*
 * edu calls hw_error() for a DMA outside its buffer, which its guest (here
 * the client) may ask for: a known flaw of that test device, found by any
 * input that touches its DMA registers, not one of vfio-user.  Would the
 * DMA that the next clock step runs stop the machine?  Then the clock is
 * left alone.  VFIO_USER_FUZZ_EDU_UNCHECKED=1 lets it run, to show that
 * hw_error counts as a crash.
 */
static bool edu_dma_stops_machine(void)
{
    Object *obj = object_resolve_path("/machine/peripheral/e0", NULL);
    MemoryRegion *mr = PCI_DEVICE(obj)->io_regions[0].memory;
    uint64_t cmd = edu_reg(mr, EDU_DMA_CMD);
    uint64_t addr, end;

    if (!(cmd & EDU_DMA_RUN) || getenv("VFIO_USER_FUZZ_EDU_UNCHECKED")) {
        return false;
    }
    /* edu's own check: start and end inside, end excluded */
    addr = edu_reg(mr, (cmd & EDU_DMA_TO_PCI) ? EDU_DMA_SRC : EDU_DMA_DST);
    end = addr + edu_reg(mr, EDU_DMA_CNT);
    if (addr >= EDU_DMA_START && addr < EDU_DMA_START + EDU_DMA_SIZE &&
        end > addr && end < EDU_DMA_START + EDU_DMA_SIZE) {
        return false;
    }
    if (debug) {
        fprintf(stderr, "vfio-user fuzz: edu DMA out of its buffer, "
                "not run\n");
    }
    return true;
}

static void server_one(QTestState *s, const uint8_t *data, size_t size)
{
    static const char json[] =
        "{\"capabilities\":{\"max_msg_fds\":8,"
        "\"max_data_xfer_size\":1048576,\"pgsizes\":4096}}";
    struct sockaddr_un un = unix_addr(sock_path);
    uint8_t version[HDR_SIZE + 4 + sizeof(json)];
    uint8_t sentinel[HDR_SIZE + sizeof(VfuDeviceInfo)] = { 0 };
    Peer p = { .answer_dma = true };

    p.fd = unix_socket();
    if (connect(p.fd, (struct sockaddr *)&un, sizeof(un)) < 0) {
        perror("vfio-user fuzz: connect");
        abort();
    }
    peer_start(&p);

    put_header(version, 0, VFU_CMD_VERSION, sizeof(version), 0);
    stw_le_p(version + HDR_SIZE, VFU_VERSION_MAJOR);
    stw_le_p(version + HDR_SIZE + 2, VFU_VERSION_MINOR);
    memcpy(version + HDR_SIZE + 4, json, sizeof(json));
    send_all(p.fd, version, sizeof(version), NULL, 0);
    if (send_input(&p, data, size, -1)) {
        /* everything before it was served once its reply is back */
        put_header(sentinel, SERVER_SENTINEL_ID, VFU_CMD_DEVICE_GET_INFO,
                   sizeof(sentinel), 0);
        stl_le_p(sentinel + HDR_SIZE, sizeof(VfuDeviceInfo));
        send_all(p.fd, sentinel, sizeof(sentinel), NULL, 0);
        run_until(&p, &p.sentinel, "the sentinel's reply");
    }
    if (qatomic_read(&p.sentinel) && !qatomic_read(&p.eof) &&
        !edu_dma_stops_machine()) {
        /* let edu's DMA timer and its interrupts run with the client on */
        for (int i = 0; i < 4; i++) {
            qtest_clock_step(s, 200 * SCALE_MS);
            main_loop_wait(true);
        }
    }
    shutdown(p.fd, SHUT_WR);
    run_until(&p, &p.eof, "the server to drop the client");
    qemu_thread_join(&p.thread);
    close(p.fd);
}

static void server_fuzz(QTestState *s, const unsigned char *data, size_t size)
{
    run_forked(s, data, size, server_one);
}

/* ---- client target -------------------------------------------------------- */

/*
 * The realize handshake comes from a minimal device served by the peer
 * thread: 256 bytes of config space (no capabilities), a 4 KiB memory
 * BAR0 and INTx.
 */
#define CLIENT_BAR0_SIZE    4096
#define CLIENT_BAR0_ADDR    0xe0000000u
#define CLIENT_DEVFN        PCI_DEVFN(4, 0)

static uint8_t client_config[PCI_CONFIG_SPACE_SIZE];

static bool client_serve(Peer *p, VfuHeader *h, uint8_t *req)
{
    uint32_t len = h->size - HDR_SIZE;
    uint8_t buf[64] = { 0 };

    switch (h->command) {
    case VFU_CMD_VERSION: {
        static const char json[] =
            "{\"capabilities\":{\"max_msg_fds\":8,"
            "\"max_data_xfer_size\":1048576,\"pgsizes\":4096,"
            "\"max_dma_maps\":64}}";

        uint8_t v[4 + sizeof(json)];

        stw_le_p(v, VFU_VERSION_MAJOR);
        stw_le_p(v + 2, VFU_VERSION_MINOR);
        memcpy(v + 4, json, sizeof(json));
        peer_reply(p, h, v, sizeof(v));
        return true;
    }
    case VFU_CMD_DEVICE_GET_INFO:
        stl_le_p(buf, sizeof(VfuDeviceInfo));
        stl_le_p(buf + 4, VFU_DEV_F_PCI | VFU_DEV_F_RESET);
        stl_le_p(buf + 8, VFU_PCI_NUM_REGIONS);
        stl_le_p(buf + 12, VFU_PCI_NUM_IRQS);
        peer_reply(p, h, buf, sizeof(VfuDeviceInfo));
        return true;
    case VFU_CMD_DEVICE_GET_REGION_INFO: {
        uint32_t index = len >= 12 ? ldl_le_p(req + 8) : 0;
        uint64_t size = index == VFU_PCI_CONFIG_REGION ? PCI_CONFIG_SPACE_SIZE :
                        index == VFU_PCI_BAR0_REGION ? CLIENT_BAR0_SIZE : 0;

        stl_le_p(buf, sizeof(VfuRegionInfo));
        stl_le_p(buf + 4, size ? VFU_REGION_F_READ | VFU_REGION_F_WRITE : 0);
        stl_le_p(buf + 8, index);
        stq_le_p(buf + 16, size);
        peer_reply(p, h, buf, sizeof(VfuRegionInfo));
        return true;
    }
    case VFU_CMD_DEVICE_GET_IRQ_INFO: {
        uint32_t index = len >= 12 ? ldl_le_p(req + 8) : 0;

        stl_le_p(buf, sizeof(VfuIrqInfo));
        stl_le_p(buf + 4, VFU_IRQ_INFO_F_EVENTFD);
        stl_le_p(buf + 8, index);
        stl_le_p(buf + 12, index == VFU_PCI_INTX_IRQ);
        peer_reply(p, h, buf, sizeof(VfuIrqInfo));
        return true;
    }
    case VFU_CMD_REGION_READ: {
        uint64_t offset = len >= 16 ? ldq_le_p(req) : 0;
        uint32_t region = len >= 16 ? ldl_le_p(req + 8) : 0;
        uint32_t count = len >= 16 ? ldl_le_p(req + 12) : 0;
        g_autofree uint8_t *r = NULL;

        if (count > 4096) {
            return false;
        }
        r = g_malloc0(sizeof(VfuRegionAccess) + count);
        memcpy(r, req, sizeof(VfuRegionAccess));
        if (region == VFU_PCI_CONFIG_REGION && offset < sizeof(client_config)) {
            memcpy(r + sizeof(VfuRegionAccess), client_config + offset,
                   MIN(count, sizeof(client_config) - offset));
        }
        peer_reply(p, h, r, sizeof(VfuRegionAccess) + count);
        return true;
    }
    case VFU_CMD_REGION_WRITE:
        peer_reply(p, h, req, MIN(len, sizeof(VfuRegionAccess)));
        return true;
    case VFU_CMD_DMA_UNMAP:
        peer_reply(p, h, req, MIN(len, sizeof(VfuDmaUnmap)));
        return true;
    default:
        /* DMA_MAP, SET_IRQS, RESET, ...: accepted */
        if (!(h->flags & VFU_F_NO_REPLY)) {
            peer_reply(p, h, NULL, 0);
        }
        return true;
    }
}

static GString *client_cmdline(FuzzTarget *t)
{
    GString *cmd = g_string_new(NULL);

    make_fuzz_dir();
    /* the device is added by each run, on a socket of its own */
    g_string_printf(cmd, "%s -machine pc -accel qtest -m 64M -nodefaults "
                    "-L /usr/share/seabios -L /usr/lib/ipxe/qemu "
                    "-L /usr/share/qemu", TARGET_NAME);
    return cmd;
}

static int client_listener = -1;

static void client_pre_fuzz(QTestState *s)
{
    struct sockaddr_un un = unix_addr(sock_path);

    pci_set_word(client_config + PCI_VENDOR_ID, 0x1234);
    pci_set_word(client_config + PCI_DEVICE_ID, 0x11e8);
    pci_set_long(client_config + PCI_BASE_ADDRESS_0, 0);
    client_config[PCI_INTERRUPT_PIN] = 1;

    client_listener = unix_socket();
    if (bind(client_listener, (struct sockaddr *)&un, sizeof(un)) < 0 ||
        listen(client_listener, 1) < 0) {
        perror("vfio-user fuzz: listen");
        abort();
    }
    counter_shm_init();
    atexit(remove_fuzz_dir);
}

static void *client_accept_thread(void *opaque)
{
    Peer *p = opaque;

    p->fd = accept4(client_listener, NULL, NULL, SOCK_CLOEXEC);
    if (p->fd < 0) {
        qatomic_set(&p->eof, true);
        return NULL;
    }
    return peer_thread(p);
}

static void client_one(QTestState *s, const uint8_t *data, size_t size)
{
    static const struct { uint8_t offset, len; uint32_t val; } cfg[] = {
        /* forwarded to the server, then emulated parts */
        { PCI_VENDOR_ID, 4 }, { PCI_CLASS_REVISION, 4 }, { 0x40, 4, 1 },
        { 0x80, 2, 0xffff }, { PCI_STATUS, 2 }, { 0xfc, 1, 0x5a },
    };
    PCIBus *bus = PCI_BUS(object_resolve_path_type("", TYPE_PCI_BUS, NULL));
    Peer p = { .fd = -1, .serve = client_serve, .serving = true };
    QemuThread accept_thread;
    Error *err = NULL;
    DeviceState *dev;
    PCIDevice *pdev;

    kvm_like_ioeventfds();
    qemu_thread_create(&accept_thread, "vfio-user-fuzz-peer",
                       client_accept_thread, &p, QEMU_THREAD_JOINABLE);
    dev = qdev_new("vfio-user-pci");
    qdev_prop_set_string(dev, "socket", sock_path);
    qdev_prop_set_int32(dev, "addr", CLIENT_DEVFN);
    qdev_prop_set_uint32(dev, "x-msg-timeout", 2000);
    if (!qdev_realize_and_unref(dev, BUS(bus), &err)) {
        /* the handshake is ours: it must work, or nothing gets fuzzed */
        error_report_err(err);
        abort();
    }
    pdev = PCI_DEVICE(dev);
    qatomic_set(&p.serving, false);
    send_input(&p, data, size, qatomic_read(&p.last_req_id) + 1);
    /* the end of the input is the end of the connection: nobody waits */
    shutdown(p.fd, SHUT_WR);

    /* the guest's accesses: each call consumes replies and requests */
    pci_host_config_write_common(pdev, PCI_BASE_ADDRESS_0,
                                 PCI_CONFIG_SPACE_SIZE, CLIENT_BAR0_ADDR, 4);
    pci_host_config_write_common(pdev, PCI_COMMAND, PCI_CONFIG_SPACE_SIZE,
                                 PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER, 2);
    for (int i = 0; i < ARRAY_SIZE(cfg); i++) {
        pci_host_config_read_common(pdev, cfg[i].offset, PCI_CONFIG_SPACE_SIZE,
                                    cfg[i].len);
        if (cfg[i].val) {
            pci_host_config_write_common(pdev, cfg[i].offset,
                                         PCI_CONFIG_SPACE_SIZE, cfg[i].val,
                                         cfg[i].len);
        }
    }
    qtest_readl(s, CLIENT_BAR0_ADDR);
    qtest_writel(s, CLIENT_BAR0_ADDR + 4, 0x12345678);
    qtest_readw(s, CLIENT_BAR0_ADDR + 0x10);
    qtest_writeq(s, CLIENT_BAR0_ADDR + 0x18, 0x1122334455667788ULL);
    qtest_readb(s, CLIENT_BAR0_ADDR + CLIENT_BAR0_SIZE - 1);
    /* and whatever the server sent on its own: DMA requests */
    for (int i = 0; i < 8 && !qatomic_read(&p.eof); i++) {
        main_loop_wait(true);
    }
    object_unparent(OBJECT(dev));
    run_until(&p, &p.eof, "the client to close the connection");
    qemu_thread_join(&accept_thread);
    close(p.fd);
}

static void client_fuzz(QTestState *s, const unsigned char *data, size_t size)
{
    run_forked(s, data, size, client_one);
}

/* ---- realize target ------------------------------------------------------- */

/*
 * The input describes the device of a server: the peer thread answers
 * every request of vfio-user-pci's realize from it, and the accesses it
 * lists are made once the device is realized.  It is a series of records
 *
 *   u8 kind, u8 index, u8 attr, u16 length (LE), length bytes
 *
 * whose bytes are, for the kinds below, the payload of the reply to the
 * request named (in wire order, untouched: the index and argsz fields are
 * the input's too).  A request without a record gets the answer of a
 * minimal device (see realize_default), a later record replaces an
 * earlier one and a record cut short by the end of the input is dropped.
 *
 *   'V'  VERSION
 *   'D'  DEVICE_GET_INFO
 *   'R'  DEVICE_GET_REGION_INFO of region <index>; attr bits 0-1: the fds
 *        that come with it: 1 a memfd sealed against shrinking, 2 one not
 *        sealed, 3 the sealed one twice; sized offset + size of the reply
 *        (at most REALIZE_MEMFD_MAX)
 *   'I'  DEVICE_GET_IRQ_INFO of IRQ index <index>
 *   'F'  DEVICE_GET_REGION_IO_FDS of BAR <index>; attr bits 0-3: how many
 *        eventfds come with it (at most MAX_FDS), bit 4: the first is the
 *        read end of a pipe instead
 *   'C'  the config region's contents (REGION_READ/WRITE on it use them)
 *   'A'  accesses after realize, 16 bytes each:
 *          u8 op (bit 0 write, bits 1-2 log2 of the size), u8 target
 *          (0-5 BAR, 6 ROM, 7 config space, 8 reset the device),
 *          u16 unused, u32 offset, u64 value
 *
 * Attr bit 7 makes the reply an error reply (errno EINVAL) instead.  The
 * BARs are placed in the guest's address space, with memory, I/O and bus
 * mastering enabled, before the accesses.
 */
#define REALIZE_CONFIG_SIZE     4096
#define REALIZE_MEMFD_MAX       (16 * 1024 * 1024)
#define REALIZE_ATTR_ERROR      0x80
#define REALIZE_ATTR_PIPE       0x10
#define REALIZE_ACCESS_SIZE     16
#define REALIZE_MMIO_BASE       0xe0000000u
#define REALIZE_MMIO_END        0xfec00000u
#define REALIZE_PIO_BASE        0xc000u
#define REALIZE_PIO_END         0x10000u

typedef struct RealizeReply {
    const uint8_t *data;    /* NULL: no record */
    uint16_t len;
    uint8_t attr;
} RealizeReply;

/* The device of the current input (each input runs in a child of its own) */
static struct {
    RealizeReply version, info, regions[256], irqs[256], iofds[256];
    uint8_t config[REALIZE_CONFIG_SIZE];
    const uint8_t *accesses;
    size_t naccesses;
} rdev;

static void realize_parse(const uint8_t *data, size_t size)
{
    size_t off = 0;

    memset(&rdev, 0, sizeof(rdev));
    /* the minimal device: vendor:device of edu, INTx pin A */
    pci_set_word(rdev.config + PCI_VENDOR_ID, 0x1234);
    pci_set_word(rdev.config + PCI_DEVICE_ID, 0x11e8);
    rdev.config[PCI_INTERRUPT_PIN] = 1;
    while (size - off >= 5) {
        uint8_t kind = data[off], index = data[off + 1], attr = data[off + 2];
        uint16_t len = lduw_le_p(data + off + 3);
        RealizeReply r = { .data = data + off + 5, .len = len, .attr = attr };

        if (len > size - off - 5) {
            break;
        }
        off += 5 + len;
        switch (kind) {
        case 'V':
            rdev.version = r;
            break;
        case 'D':
            rdev.info = r;
            break;
        case 'R':
            rdev.regions[index] = r;
            break;
        case 'I':
            rdev.irqs[index] = r;
            break;
        case 'F':
            rdev.iofds[index] = r;
            break;
        case 'C':
            memset(rdev.config, 0, sizeof(rdev.config));
            memcpy(rdev.config, r.data, MIN(len, sizeof(rdev.config)));
            break;
        case 'A':
            rdev.accesses = r.data;
            rdev.naccesses = len / REALIZE_ACCESS_SIZE;
            break;
        }
    }
}

/* The minimal device's answer to a query without a record. */
static uint32_t realize_default(uint16_t cmd, uint32_t index, uint8_t *buf)
{
    static const char json[] =
        "{\"capabilities\":{\"max_msg_fds\":8,"
        "\"max_data_xfer_size\":1048576,\"pgsizes\":4096,"
        "\"max_dma_maps\":64}}";
    /* every interrupt type, as many vectors as a function can have */
    static const uint32_t irq_counts[VFU_PCI_NUM_IRQS] = { 1, 32, 2048, 1, 1 };
    uint64_t size;

    switch (cmd) {
    case VFU_CMD_VERSION:
        stw_le_p(buf, VFU_VERSION_MAJOR);
        stw_le_p(buf + 2, VFU_VERSION_MINOR);
        memcpy(buf + 4, json, sizeof(json));
        return 4 + sizeof(json);
    case VFU_CMD_DEVICE_GET_INFO:
        stl_le_p(buf, sizeof(VfuDeviceInfo));
        stl_le_p(buf + 4, VFU_DEV_F_PCI | VFU_DEV_F_RESET);
        stl_le_p(buf + 8, VFU_PCI_NUM_REGIONS);
        stl_le_p(buf + 12, VFU_PCI_NUM_IRQS);
        return sizeof(VfuDeviceInfo);
    case VFU_CMD_DEVICE_GET_REGION_INFO:
        size = index == VFU_PCI_CONFIG_REGION ? PCI_CONFIG_SPACE_SIZE :
               index == VFU_PCI_BAR0_REGION ? 4096 : 0;
        stl_le_p(buf, sizeof(VfuRegionInfo));
        stl_le_p(buf + 4, size ? VFU_REGION_F_READ | VFU_REGION_F_WRITE : 0);
        stl_le_p(buf + 8, index);
        stq_le_p(buf + 16, size);
        return sizeof(VfuRegionInfo);
    case VFU_CMD_DEVICE_GET_IRQ_INFO:
        stl_le_p(buf, sizeof(VfuIrqInfo));
        stl_le_p(buf + 4, VFU_IRQ_INFO_F_EVENTFD);
        stl_le_p(buf + 8, index);
        stl_le_p(buf + 12, index < VFU_PCI_NUM_IRQS ? irq_counts[index] : 0);
        return sizeof(VfuIrqInfo);
    }
    return 0;
}

/* The fds a record says come with its reply; returns how many. */
static size_t realize_fds(uint16_t cmd, const RealizeReply *r, int *fds)
{
    size_t nfds = 0;

    if (cmd == VFU_CMD_DEVICE_GET_REGION_INFO && (r->attr & 3)) {
        uint64_t size = REALIZE_MEMFD_MAX;

        if (r->len >= sizeof(VfuRegionInfo)) {
            uint64_t end = ldq_le_p(r->data + 16) + ldq_le_p(r->data + 24);

            size = MIN(end, size);
        }
        fds[0] = qemu_memfd_create("vfio-user-fuzz-bar", size, false, 0,
                                   (r->attr & 3) == 2 ? 0 : F_SEAL_SHRINK,
                                   NULL);
        if (fds[0] < 0) {
            return 0;
        }
        nfds = 1;
        if ((r->attr & 3) == 3) {
            fds[nfds++] = dup(fds[0]);
        }
    } else if (cmd == VFU_CMD_DEVICE_GET_REGION_IO_FDS) {
        while (nfds < MIN(r->attr & 0xf, MAX_FDS)) {
            if (nfds == 0 && (r->attr & REALIZE_ATTR_PIPE)) {
                int pipefd[2];

                if (pipe2(pipefd, O_CLOEXEC) < 0) {
                    break;
                }
                close(pipefd[1]);
                fds[nfds++] = pipefd[0];
            } else {
                fds[nfds++] = eventfd(0, EFD_CLOEXEC);
            }
        }
    }
    return nfds;
}

/* A server's REGION_READ/WRITE: the config region from the input, BARs 0 */
static void realize_access(Peer *p, VfuHeader *h, uint8_t *req, uint32_t len)
{
    uint64_t offset = ldq_le_p(req);
    uint32_t region = ldl_le_p(req + 8);
    uint32_t count = ldl_le_p(req + 12);
    bool in_config = region == VFU_PCI_CONFIG_REGION &&
                     offset <= REALIZE_CONFIG_SIZE &&
                     count <= REALIZE_CONFIG_SIZE - offset;
    g_autofree uint8_t *r = NULL;

    if (h->command == VFU_CMD_REGION_WRITE) {
        if (in_config && count <= len - sizeof(VfuRegionAccess)) {
            memcpy(rdev.config + offset, req + sizeof(VfuRegionAccess), count);
        }
        peer_reply(p, h, req, sizeof(VfuRegionAccess));
        return;
    }
    if (count > 64 * 1024) {
        peer_send_reply(p, h, EINVAL, NULL, 0, NULL, 0);
        return;
    }
    r = g_malloc0(sizeof(VfuRegionAccess) + count);
    memcpy(r, req, sizeof(VfuRegionAccess));
    if (in_config) {
        memcpy(r + sizeof(VfuRegionAccess), rdev.config + offset, count);
    }
    peer_reply(p, h, r, sizeof(VfuRegionAccess) + count);
}

static bool realize_serve(Peer *p, VfuHeader *h, uint8_t *req)
{
    uint32_t len = h->size - HDR_SIZE;
    uint32_t index = len >= 12 ? ldl_le_p(req + 8) : 0;
    const RealizeReply *r = NULL;
    uint8_t buf[128];
    int fds[MAX_FDS];
    size_t nfds;

    switch (h->command) {
    case VFU_CMD_VERSION:
        r = &rdev.version;
        break;
    case VFU_CMD_DEVICE_GET_INFO:
        r = &rdev.info;
        break;
    case VFU_CMD_DEVICE_GET_REGION_INFO:
        r = index < ARRAY_SIZE(rdev.regions) ? &rdev.regions[index] : NULL;
        break;
    case VFU_CMD_DEVICE_GET_IRQ_INFO:
        r = index < ARRAY_SIZE(rdev.irqs) ? &rdev.irqs[index] : NULL;
        break;
    case VFU_CMD_DEVICE_GET_REGION_IO_FDS:
        r = index < ARRAY_SIZE(rdev.iofds) ? &rdev.iofds[index] : NULL;
        if (!r || !r->data) {
            /* the command is optional: a server may not know it */
            peer_send_reply(p, h, ENOTSUP, NULL, 0, NULL, 0);
            return true;
        }
        break;
    case VFU_CMD_REGION_READ:
    case VFU_CMD_REGION_WRITE:
        if (len >= sizeof(VfuRegionAccess)) {
            realize_access(p, h, req, len);
        } else {
            peer_send_reply(p, h, EINVAL, NULL, 0, NULL, 0);
        }
        return true;
    case VFU_CMD_DMA_UNMAP:
        peer_reply(p, h, req, MIN(len, sizeof(VfuDmaUnmap)));
        return true;
    default:
        /* DMA_MAP, SET_IRQS, RESET, ...: accepted */
        if (!(h->flags & VFU_F_NO_REPLY)) {
            peer_reply(p, h, NULL, 0);
        }
        return true;
    }
    if (!r || !r->data) {
        peer_reply(p, h, buf, realize_default(h->command, index, buf));
        return true;
    }
    if (r->attr & REALIZE_ATTR_ERROR) {
        peer_send_reply(p, h, EINVAL, NULL, 0, NULL, 0);
        return true;
    }
    nfds = realize_fds(h->command, r, fds);
    peer_send_reply(p, h, 0, r->data, r->len, fds, nfds);
    for (size_t i = 0; i < nfds; i++) {
        close(fds[i]);
    }
    return true;
}

/* Place the BARs as firmware would, where they fit, and enable them. */
static void realize_place_bars(PCIDevice *pdev)
{
    uint64_t mmio = REALIZE_MMIO_BASE, pio = REALIZE_PIO_BASE;

    for (int i = 0; i < PCI_NUM_REGIONS; i++) {
        PCIIORegion *r = &pdev->io_regions[i];
        uint32_t reg = i == PCI_ROM_SLOT ? PCI_ROM_ADDRESS :
                       PCI_BASE_ADDRESS_0 + i * 4;
        uint64_t addr;

        if (!r->size) {
            continue;
        }
        if (r->type & PCI_BASE_ADDRESS_SPACE_IO) {
            addr = ROUND_UP(pio, r->size);
            if (addr + r->size > REALIZE_PIO_END) {
                continue;
            }
            pio = addr + r->size;
        } else {
            addr = ROUND_UP(mmio, r->size);
            if (r->size > REALIZE_MMIO_END - REALIZE_MMIO_BASE ||
                addr + r->size > REALIZE_MMIO_END) {
                continue;
            }
            mmio = addr + r->size;
        }
        pci_host_config_write_common(pdev, reg, PCI_CONFIG_SPACE_SIZE,
                                     addr | (i == PCI_ROM_SLOT ?
                                             PCI_ROM_ADDRESS_ENABLE : 0), 4);
        if (r->type & PCI_BASE_ADDRESS_MEM_TYPE_64) {
            pci_host_config_write_common(pdev, reg + 4, PCI_CONFIG_SPACE_SIZE,
                                         0, 4);
        }
    }
    pci_host_config_write_common(pdev, PCI_COMMAND, PCI_CONFIG_SPACE_SIZE,
                                 PCI_COMMAND_IO | PCI_COMMAND_MEMORY |
                                 PCI_COMMAND_MASTER, 2);
}

/* Make the input's accesses, as a guest would (aligned, in bounds). */
static void realize_run_accesses(PCIDevice *pdev)
{
    for (size_t i = 0; i < rdev.naccesses; i++) {
        const uint8_t *a = rdev.accesses + i * REALIZE_ACCESS_SIZE;
        bool write = a[0] & 1;
        unsigned size = 1 << ((a[0] >> 1) & 3);
        uint8_t target = a[1];
        uint32_t offset = ldl_le_p(a + 4);
        uint64_t val = ldq_le_p(a + 8);
        PCIIORegion *r;
        uint8_t buf[8];

        if (target == 8) {
            device_cold_reset(DEVICE(pdev));
            continue;
        }
        if (target == 7) {
            size = MIN(size, 4);
            offset = QEMU_ALIGN_DOWN(offset % PCI_CONFIG_SPACE_SIZE, size);
            if (write) {
                pci_host_config_write_common(pdev, offset,
                                             PCI_CONFIG_SPACE_SIZE, val, size);
            } else {
                pci_host_config_read_common(pdev, offset,
                                            PCI_CONFIG_SPACE_SIZE, size);
            }
            continue;
        }
        if (target >= PCI_NUM_REGIONS) {
            continue;
        }
        r = &pdev->io_regions[target];
        if (!r->size || r->addr == PCI_BAR_UNMAPPED || r->size < size) {
            continue;
        }
        offset = QEMU_ALIGN_DOWN(offset % r->size, size);
        stq_le_p(buf, val);
        address_space_rw((r->type & PCI_BASE_ADDRESS_SPACE_IO) ?
                         &address_space_io : &address_space_memory,
                         r->addr + offset, MEMTXATTRS_UNSPECIFIED, buf, size,
                         write);
    }
}

static void realize_one(QTestState *s, const uint8_t *data, size_t size)
{
    PCIBus *bus = PCI_BUS(object_resolve_path_type("", TYPE_PCI_BUS, NULL));
    Peer p = { .fd = -1, .serve = realize_serve, .serving = true };
    QemuThread accept_thread;
    Error *err = NULL;
    DeviceState *dev;

    realize_parse(data, size);
    kvm_like_ioeventfds();
    qemu_thread_create(&accept_thread, "vfio-user-fuzz-peer",
                       client_accept_thread, &p, QEMU_THREAD_JOINABLE);
    dev = qdev_new("vfio-user-pci");
    qdev_prop_set_string(dev, "socket", sock_path);
    qdev_prop_set_int32(dev, "addr", CLIENT_DEVFN);
    qdev_prop_set_uint32(dev, "x-msg-timeout", 2000);
    /* refusing a device is a fine outcome; the rest is in the error */
    object_ref(OBJECT(dev));
    if (qdev_realize_and_unref(dev, BUS(bus), &err)) {
        realize_place_bars(PCI_DEVICE(dev));
        if (debug) {
            /* where the BARs, their mmap areas and MSI-X went */
            mtree_info(false, false, false, false);
        }
        realize_run_accesses(PCI_DEVICE(dev));
        object_unparent(OBJECT(dev));
    } else if (debug) {
        error_report_err(err);
    } else {
        error_free(err);
    }
    object_unref(OBJECT(dev));
    /* realize closes the connection when it fails, unrealize when not */
    run_until(&p, &p.eof, "the client to close the connection");
    qemu_thread_join(&accept_thread);
    close(p.fd);
}

static void realize_fuzz(QTestState *s, const unsigned char *data,
                         size_t size)
{
    run_forked(s, data, size, realize_one);
}

static void register_vfio_user_fuzz_targets(void)
{
    fuzz_add_target(&(FuzzTarget){
        .name = "vfio-user-server",
        .description = "vfio-user-server exporting edu on -M remote, fed "
                       "a client's messages",
        .get_init_cmdline = server_cmdline,
        .pre_fuzz = server_pre_fuzz,
        .fuzz = server_fuzz,
    });
    fuzz_add_target(&(FuzzTarget){
        .name = "vfio-user-client",
        .description = "vfio-user-pci on a PC, fed a server's replies and "
                       "DMA requests",
        .get_init_cmdline = client_cmdline,
        .pre_fuzz = client_pre_fuzz,
        .fuzz = client_fuzz,
    });
    fuzz_add_target(&(FuzzTarget){
        .name = "vfio-user-realize",
        .description = "vfio-user-pci on a PC, realized against a server "
                       "the input describes, then accessed",
        .get_init_cmdline = client_cmdline,
        .pre_fuzz = client_pre_fuzz,
        .fuzz = realize_fuzz,
    });
}

fuzz_target_init(register_vfio_user_fuzz_targets);
