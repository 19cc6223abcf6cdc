/*
 * vfio-user-server internals shared by its files: server.c (sockets,
 * life cycle, properties), dispatch.c (the requests, DMA to the
 * client), bars.c (the BAR windows requests go through).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef HW_REMOTE_VFIO_USER_SERVER_INTERNAL_H
#define HW_REMOTE_VFIO_USER_SERVER_INTERNAL_H

#include "qapi/qapi-types-sockets.h"
#include "qemu/notify.h"
#include "qemu/timer.h"
#include "qemu/units.h"
#include "qom/object.h"
#include "io/channel-socket.h"
#include "exec/memory.h"
#include "hw/pci/pci.h"
#include "vfio-user/server.h"
#include "hw/remote/vfio-user/remote.h"

#define TYPE_VFU_SERVER "vfio-user-server"
OBJECT_DECLARE_SIMPLE_TYPE(VfuServer, VFU_SERVER)

#define TYPE_VFU_BAR_WINDOWS "vfio-user-bar-windows"
OBJECT_DECLARE_SIMPLE_TYPE(VfuBarWindows, VFU_BAR_WINDOWS)

/* Our limits, advertised with VERSION */
#define VFU_SERVER_MAX_FDS      8
#define VFU_SERVER_MAX_MAPS     1024
#define VFU_SERVER_PGSIZE       4096
/* allowed-uid/allowed-gid unset: (uid_t)-1 is never a process's id */
#define VFU_ANY_ID              UINT32_MAX
/*
 * Client memory we mmap, per mapping and in all, unless set otherwise.
 * Each mmap'd GiB costs about 96 KiB of dirty bitmaps (3 bits per page)
 * however sparse the client's file is, so this bounds what a client can
 * make us spend to 24 MiB while covering the RAM of most guests; a
 * bigger guest's client is told ENOMEM, and its owner raises the limit.
 */
#define VFU_SERVER_DMA_MAX      (256 * GiB)
#define VFU_NUM_BARS            (VFU_PCI_ROM_REGION + 1)
/* Doorbells in one GET_REGION_IO_FDS reply, at most */
#define VFU_SERVER_MAX_IOFDS    VFU_SERVER_MAX_FDS

/*
 * Private views of the device's BARs and ROM.  A BAR is mapped in no
 * address space until the client programs it, so accesses go through an
 * AddressSpace of our own; subregions (an MSI-X table in a BAR) resolve
 * as usual.  A separate object owns the regions so that it outlives the
 * AddressSpaces, which are freed after an RCU grace period.
 */
struct VfuBarWindows {
    Object parent_obj;

    MemoryRegion root[VFU_NUM_BARS];
    MemoryRegion alias[VFU_NUM_BARS];
    MemoryRegion self[VFU_NUM_BARS];    /* in the device's DMA space */
    AddressSpace as[VFU_NUM_BARS];
    uint64_t size[VFU_NUM_BARS];
    bool io[VFU_NUM_BARS];
};

struct VfuServer {
    Object parent_obj;

    SocketAddress *addr;            /* unix, or fd: a listening socket */
    char *socket;                   /* addr for messages: path or fd:NAME */
    uint32_t allowed_uid;           /* VFU_ANY_ID: anyone */
    uint32_t allowed_gid;
    char *device;
    uint32_t timeout_ms;
    uint64_t max_dma_map_size;
    uint64_t max_dma_total_size;
    uint64_t max_data_xfer_size;    /* what we receive, advertised */
    bool map_unsealed_fds;
    bool twin_socket;               /* offer twin_socket to clients */
    bool warned_unsealed;
    bool warned_unsealed_bar;
    /* the BAR registers as the client wrote them (see vfu_config_is_bar()) */
    uint8_t bar_regs[PCI_CONFIG_SPACE_SIZE];
    bool completed;
    Notifier machine_done;
    bool waiting_machine;
    Notifier shutdown;              /* QEMU is about to exit */
    bool shutdown_registered;

    PCIDevice *pdev;
    Error *unplug_blocker;
    VfuBarWindows *bars;
    VfuIrqs *irqs;
    VfuDmaSpace *dma;
    VfuIoFds *iofds;

    QIOChannelSocket *listener;
    guint listen_tag;

    VfuConn *conn;
    /* twin_socket: our DMA requests to the client and their replies */
    VfuConn *twin;
    QEMUTimer *handshake_timer;     /* a client that never sends VERSION */
    bool client_watched;
    char *name;
};

/* What a client may mmap of one BAR; see vfu_bar_mmap_areas(). */
typedef struct VfuMmapScan {
    VfuSparseMmapArea areas[VFU_MAX_MMAP_AREAS];
    int n;
    int fd;
    uint64_t base;          /* file offset of BAR offset 0 */
    bool unsealed;          /* RAM left out: not sealed against shrinking */
} VfuMmapScan;

/* The client's VERSION came */
static inline bool vfu_server_negotiated(VfuServer *s)
{
    uint16_t major, minor;

    return vfu_conn_version(s->conn, &major, &minor);
}

static inline const char *vfu_server_id(VfuServer *s)
{
    return s->name ?: "?";
}

/* Where our requests to the client go: the twin socket if there is one */
static inline VfuConn *vfu_server_dma_conn(VfuServer *s)
{
    return s->twin ?: s->conn;
}

/* bars.c */
VfuBarWindows *vfu_bar_windows_new(PCIDevice *pdev);
void vfu_bar_windows_free(VfuBarWindows *b);
uint64_t vfu_region_size(VfuServer *s, uint32_t index);
int vfu_region_check(VfuServer *s, uint32_t index, uint64_t offset,
                     uint64_t count, Error **errp);
void vfu_server_place_bars(VfuServer *s, bool enabled);
void vfu_config_rw(VfuServer *s, uint64_t offset, uint8_t *buf,
                   uint64_t count, bool is_write);
int vfu_region_rw(VfuServer *s, uint32_t index, uint64_t offset,
                  uint8_t *buf, uint64_t count, bool is_write,
                  Error **errp);
void vfu_bar_mmap_areas(VfuServer *s, uint32_t index, VfuMmapScan *scan);

/* dispatch.c */
int vfu_server_request(VfuConn *conn, VfuMsg *msg, void *opaque);
MemTxResult vfu_server_dma_peer(void *opaque, uint64_t addr, void *buf,
                                uint64_t len, bool is_write);
void vfu_server_irq_flush(void *opaque);
void vfu_server_reply_barrier(VfuConn *conn, void *opaque);

#endif /* HW_REMOTE_VFIO_USER_SERVER_INTERNAL_H */
