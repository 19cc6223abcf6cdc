/*
 * vfio-user-pci: a PCI device served by a vfio-user server.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef HW_VFIO_USER_PCI_H
#define HW_VFIO_USER_PCI_H

#include "hw/pci/pci.h"
#include "qemu/event_notifier.h"
#include "exec/memory.h"
#include "vfio-user/client.h"
#include "vfio-user/socket.h"
#include "qapi/qapi-types-sockets.h"

#define TYPE_VFIO_USER_PCI "vfio-user-pci"
OBJECT_DECLARE_SIMPLE_TYPE(VfuPciDevice, VFIO_USER_PCI)

/* Part of a BAR mapped from the server's fd (mmap.c) */
typedef struct VfuMmapArea {
    MemoryRegion mr;
    void *ptr;
    uint64_t size;
} VfuMmapArea;

typedef struct VfuPciBar {
    VfuPciDevice *dev;
    MemoryRegion mr;
    uint32_t index;
    uint64_t size;
    bool registered;
    VfuMmapArea *mmaps;
    unsigned nr_mmaps;
    /* ioeventfd.c: messaged writes since we last asked, when to ask */
    uint32_t iofds_writes;
    uint32_t iofds_ask_at;  /* 0: do not ask */
} VfuPciBar;

typedef struct VfuIoeventfd VfuIoeventfd;

/* One DMA_MAP we sent: the server may access [iova, iova + size). */
typedef struct VfuPciDmaMap {
    uint64_t iova;
    uint64_t size;
    uint32_t flags;         /* VFU_DMA_MAP_F_* */
    bool has_fd;
} VfuPciDmaMap;

typedef struct VfuPciIrqVector {
    VfuPciDevice *dev;
    EventNotifier trigger;
    unsigned vector;
    bool active;            /* INTx only: the eventfd exists */
    int virq;               /* KVM MSI route, or -1 */
    bool irqfd;             /* KVM consumes the eventfd, no handler */
} VfuPciIrqVector;

struct VfuPciDevice {
    PCIDevice parent_obj;

    /* properties */
    SocketAddress *socket;  /* unix or fd */
    char *socket_name;      /* its path, or fd:NAME: for messages */
    bool secure_dma;
    bool no_mmap;
    bool no_ioeventfd;
    uint32_t msg_timeout_ms;
    bool posted_writes;     /* BAR writes go out flagged No_reply */
    bool twin_socket;       /* propose twin_socket */

    Error *migration_blocker;

    VfuConn *conn;
    /* twin_socket: the server's DMA requests and our replies, or NULL */
    VfuConn *twin;
    bool dead;              /* server gone: the device is inert */

    VfuDeviceInfo info;
    VfuRegionInfo config_region;
    VfuPciBar bars[PCI_NUM_REGIONS];    /* BAR0..5, then the ROM */
    uint32_t num_irqs[VFU_PCI_NUM_IRQS];

    /* config space: bytes set here come from QEMU's emulation */
    uint8_t emulated[PCI_CONFIG_SPACE_SIZE];
    uint8_t msi_cap, msix_cap;
    uint8_t msix_table_bar, msix_pba_bar;
    uint32_t msix_table_offset, msix_pba_offset;
    uint16_t msix_entries;

    /* interrupts */
    int irq_mode;           /* VFU_PCI_*_IRQ in use, or -1 */
    VfuPciIrqVector intx;
    bool intx_pending;
    VfuPciIrqVector *vectors;  /* MSI or MSI-X */
    unsigned nr_vectors;
    bool msix_notifiers;    /* KVM irqfds follow MSI-X vector masking */

    GPtrArray *ioeventfds;  /* VfuIoeventfd */

    /* DMA */
    MemoryListener listener;
    bool listener_registered;
    GArray *mappings;       /* VfuPciDmaMap, sorted by iova */
    /* struct VfuIommuWatch (dma.c): one per vIOMMU section we follow */
    QLIST_HEAD(, VfuIommuWatch) iommu_watches;
    /* DMA_READ reply, room for our max_data_xfer_size: no per-read malloc */
    VfuDmaAccess *dma_rsp;
    size_t dma_rsp_max;     /* data bytes dma_rsp can hold */
};

/* pci.c */
void vfu_pci_set_dead(VfuPciDevice *dev, Error *err);
int vfu_pci_call(VfuPciDevice *dev, uint16_t cmd, void *payload, size_t len,
                 const int *fds, size_t nfds, VfuMsg **reply, Error **errp);

/* irq.c */
bool vfu_pci_irq_realize(VfuPciDevice *dev, Error **errp);
void vfu_pci_irq_exit(VfuPciDevice *dev);
void vfu_pci_irq_reset(VfuPciDevice *dev);
void vfu_pci_irq_config_changed(VfuPciDevice *dev, uint32_t addr, int len,
                                bool was_msi, bool was_msix);
void vfu_pci_intx_eoi(VfuPciDevice *dev);

/* mmap.c */
void vfu_pci_bar_mmap(VfuPciDevice *dev, VfuPciBar *bar,
                      const VfuRegionInfo *info, size_t len, const int *fds,
                      size_t nfds);
void vfu_pci_bar_unmap(VfuPciBar *bar);
void vfu_pci_bar_mmap_free(VfuPciBar *bar);

/* ioeventfd.c */
void vfu_pci_ioeventfds_realize(VfuPciDevice *dev);
void vfu_pci_ioeventfds_note_write(VfuPciDevice *dev, VfuPciBar *bar);
void vfu_pci_ioeventfds_exit(VfuPciDevice *dev);

/* dma.c */
void vfu_pci_dma_realize(VfuPciDevice *dev);
void vfu_pci_dma_exit(VfuPciDevice *dev);
int vfu_pci_serve_request(VfuConn *conn, VfuMsg *msg, void *opaque);

/* info.c: the server is gone (QMP event) */
void vfu_pci_info_lost(VfuPciDevice *dev, Error *err);

#endif /* HW_VFIO_USER_PCI_H */
