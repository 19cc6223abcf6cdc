/*
 * The remote machine (-M remote) and the pieces vfio-user-server builds
 * on: per-device DMA address spaces and interrupt redirection.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef HW_REMOTE_VFIO_USER_REMOTE_H
#define HW_REMOTE_VFIO_USER_REMOTE_H

#include "hw/boards.h"
#include "hw/pci/pci.h"
#include "hw/pci-host/remote.h"
#include "vfio-user/protocol.h"

typedef struct VfuDmaSpace VfuDmaSpace;
typedef struct VfuIrqs VfuIrqs;
typedef struct VfuIoFds VfuIoFds;

/* ---- machine.c ---------------------------------------------------------- */

#define TYPE_VFU_REMOTE_MACHINE MACHINE_TYPE_NAME("remote")
OBJECT_DECLARE_SIMPLE_TYPE(VfuRemoteMachine, VFU_REMOTE_MACHINE)

struct VfuRemoteMachine {
    MachineState parent_obj;

    RemotePCIHost *host;
    PCIBus *bus;
    MemoryRegion pci_mem;
    MemoryRegion pci_io;
    /* one DMA address space per devfn, created when a device asks for it */
    VfuDmaSpace *dma[PCI_DEVFN_MAX];
    /* the vfio-user-server exporting each devfn, if any */
    Object *exporter[PCI_DEVFN_MAX];
};

/* The current machine if it is the remote machine, else NULL. */
VfuRemoteMachine *vfu_remote_machine_get(void);

/*
 * Reserve @dev for @server: it must sit directly on the remote machine's
 * bus and not be exported already.
 */
bool vfu_remote_machine_claim(PCIDevice *dev, Object *server, Error **errp);
void vfu_remote_machine_release(PCIDevice *dev, Object *server);
VfuDmaSpace *vfu_remote_machine_dma(PCIDevice *dev);

/* ---- dma.c -------------------------------------------------------------- */

/*
 * Serve a device access to a mapping that has no fd: forward it to the
 * client.  Returns a MemTxResult.
 */
typedef MemTxResult VfuDmaPeerFunc(void *opaque, uint64_t addr, void *buf,
                                   uint64_t len, bool is_write);

VfuDmaSpace *vfu_dma_space_new(Object *owner, int devfn);
AddressSpace *vfu_dma_space_as(VfuDmaSpace *s);
void vfu_dma_space_set_peer(VfuDmaSpace *s, VfuDmaPeerFunc *fn,
                            void *opaque);
/*
 * Wait until the client has carried out the writes the peer function
 * sent (called with the peer function's opaque).  Needed while the
 * device has mappings with an fd too: see vfu_dma_flush() in dma.c.
 */
typedef void VfuDmaFlushFunc(void *opaque);
void vfu_dma_space_set_flush(VfuDmaSpace *s, VfuDmaFlushFunc *fn);
unsigned vfu_dma_space_count(VfuDmaSpace *s);

/*
 * Call @fn for each of the client's mappings (in no order): its
 * VFU_DMA_MAP_F_* @flags, and whether it is mmap'd here (else reached
 * by message).
 */
typedef void VfuDmaMapFunc(void *opaque, uint64_t iova, uint64_t size,
                           uint32_t flags, bool mmapped);
void vfu_dma_space_foreach(VfuDmaSpace *s, VfuDmaMapFunc *fn, void *opaque);

/* What one client may map */
typedef struct VfuDmaLimits {
    uint32_t max_maps;
    uint64_t pgsize;
    /*
     * Bytes of client memory mmap'd into this process, per mapping and
     * in all: each becomes a RAMBlock whose dirty bitmaps grow with it.
     */
    uint64_t max_map_size;
    uint64_t max_total_size;
} VfuDmaLimits;

/*
 * Add a mapping; @fd (or -1) is consumed whatever the outcome.  With
 * @mmap_fd false the fd is only checked and the mapping is reached by
 * message like one without an fd.  Returns 0 or a negative errno for the
 * error reply.
 */
int vfu_dma_space_map(VfuDmaSpace *s, const VfuDmaMap *req, int fd,
                      bool mmap_fd, const VfuDmaLimits *lim, Error **errp);
int vfu_dma_space_unmap(VfuDmaSpace *s, const VfuDmaUnmap *req,
                        uint64_t pgsize, Error **errp);
void vfu_dma_space_unmap_all(VfuDmaSpace *s);
/*
 * Put @mr, an alias of one of the device's own BARs, at @addr of its DMA
 * address space (where the client's guest placed the BAR), or take it out
 * with @present false.  The client's mappings win where they overlap.
 */
void vfu_dma_space_place_bar(VfuDmaSpace *s, MemoryRegion *mr, bool present,
                             uint64_t addr);

/* ---- irq.c -------------------------------------------------------------- */

/* Redirect @dev's INTx, MSI and MSI-X to client eventfds. */
VfuIrqs *vfu_irqs_new(PCIDevice *dev, const char *name);
/* Restore the device's own MSI hooks and close every eventfd. */
void vfu_irqs_free(VfuIrqs *irqs);
/* Forget a client's eventfds and masks (disconnect). */
void vfu_irqs_reset(VfuIrqs *irqs);
/*
 * Called before an interrupt is signalled: the device's DMA writes that
 * are still on their way to the client must land before the client's
 * driver looks at them.
 */
typedef void VfuIrqFlushFunc(void *opaque);
void vfu_irqs_set_flush(VfuIrqs *irqs, VfuIrqFlushFunc *fn,
                        void *opaque);
uint32_t vfu_irqs_count(VfuIrqs *irqs, uint32_t index);
uint32_t vfu_irqs_flags(VfuIrqs *irqs, uint32_t index);
/*
 * Apply a decoded SET_IRQS request; eventfds are taken from @fds/@nfds
 * (set to -1 when taken).  Returns 0 or a negative errno.
 */
int vfu_irqs_set(VfuIrqs *irqs, const VfuIrqSet *set, int *fds, size_t nfds,
                 Error **errp);
/* INTx level of the device at @devfn on the remote bus changed. */
void vfu_irqs_bus_set_irq(int devfn, int level);

/* ---- ioeventfd.c -------------------------------------------------------- */

/* Serve what the client sent so far (before a doorbell it rang). */
typedef void VfuIoFdsFlushFunc(void *opaque);

/*
 * Follow the ioeventfds registered in @as[0..n-1] (NULL for no region),
 * the address spaces of the device's BARs.
 */
VfuIoFds *vfu_iofds_new(AddressSpace **as, unsigned n, const char *name,
                        VfuIoFdsFlushFunc *flush, void *opaque);
void vfu_iofds_free(VfuIoFds *f);
/* Give every doorbell a new eventfd (a client left). */
void vfu_iofds_reset(VfuIoFds *f);
/*
 * The doorbells of region @bar, at most @max: sub-region entries and, in
 * @fds, the eventfd of each (still ours: the caller must not close them).
 */
unsigned vfu_iofds_get(VfuIoFds *f, unsigned bar, VfuSubRegionIoFd *subs,
                       int *fds, unsigned max);

/* ---- info.c: monitor view of the servers (x-query-vfio-user) ---------- */

#define TYPE_VFU_SERVER "vfio-user-server"

/* What server.c tells info.c about one vfio-user-server */
typedef struct VfuServerStatus {
    const char *socket;     /* its path, or fd:NAME */
    const char *device;
    bool listening;         /* started: accepts a client when it has none */
    struct VfuConn *conn;   /* the client's connection, or NULL */
    struct VfuConn *twin;   /* its twin socket, or NULL */
    bool negotiated;
    VfuDmaSpace *dma;       /* NULL until started */
} VfuServerStatus;

/* server.c */
void vfu_server_get_status(Object *obj, VfuServerStatus *st);
/* info.c: a client's connection ends (QMP event) */
void vfu_server_info_client_gone(Object *obj, struct VfuConn *conn,
                                 const char *why);

#endif /* HW_REMOTE_VFIO_USER_REMOTE_H */
