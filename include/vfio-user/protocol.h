/*
 * vfio-user wire protocol: commands, flags and payload layouts.
 *
 * Follows the vfio-user specification 0.9.1 as carried by the QEMU 7.2
 * source, with the command numbering, capabilities and REGION_WRITE_MULTI
 * of revision 0.9.2.  Every multi-byte field is little-endian on the wire;
 * the codec (vfio-user/message.c) converts payloads to and from host
 * order, so code outside the codec sees host-order values only.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef VFIO_USER_PROTOCOL_H
#define VFIO_USER_PROTOCOL_H

/* Protocol version we speak. */
#define VFU_VERSION_MAJOR   0
#define VFU_VERSION_MINOR   2

typedef enum VfuCommand {
    VFU_CMD_VERSION                 = 1,
    VFU_CMD_DMA_MAP                 = 2,
    VFU_CMD_DMA_UNMAP               = 3,
    VFU_CMD_DEVICE_GET_INFO         = 4,
    VFU_CMD_DEVICE_GET_REGION_INFO  = 5,
    VFU_CMD_DEVICE_GET_REGION_IO_FDS = 6,
    VFU_CMD_DEVICE_GET_IRQ_INFO     = 7,
    VFU_CMD_DEVICE_SET_IRQS         = 8,
    VFU_CMD_REGION_READ             = 9,
    VFU_CMD_REGION_WRITE            = 10,
    VFU_CMD_DMA_READ                = 11,
    VFU_CMD_DMA_WRITE               = 12,
    VFU_CMD_DEVICE_RESET            = 13,
    VFU_CMD_DIRTY_PAGES             = 14,   /* removed in 0.9.2 */
    VFU_CMD_REGION_WRITE_MULTI      = 15,
    VFU_CMD_DEVICE_FEATURE          = 16,
    VFU_CMD_MIG_DATA_READ           = 17,
    VFU_CMD_MIG_DATA_WRITE          = 18,
    VFU_CMD_MAX                     = 18,
} VfuCommand;

/* Message header (16 bytes) */
typedef struct QEMU_PACKED VfuHeader {
    uint16_t msg_id;
    uint16_t command;
    uint32_t size;          /* whole message, header included */
    uint32_t flags;
    uint32_t error;         /* errno, valid in replies with VFU_F_ERROR */
} VfuHeader;

#define VFU_F_TYPE_MASK     0xfu
#define VFU_F_TYPE_COMMAND  0x0u
#define VFU_F_TYPE_REPLY    0x1u
#define VFU_F_NO_REPLY      (1u << 4)
#define VFU_F_ERROR         (1u << 5)
#define VFU_F_KNOWN         (VFU_F_TYPE_MASK | VFU_F_NO_REPLY | VFU_F_ERROR)

/* VERSION: followed by an optional NUL-terminated JSON object */
typedef struct QEMU_PACKED VfuVersion {
    uint16_t major;
    uint16_t minor;
    char data[];
} VfuVersion;

/* JSON capability names */
#define VFU_CAP_CAPABILITIES        "capabilities"
#define VFU_CAP_MAX_MSG_FDS         "max_msg_fds"
#define VFU_CAP_MAX_DATA_XFER_SIZE  "max_data_xfer_size"
#define VFU_CAP_MAX_DMA_MAPS        "max_dma_maps"
#define VFU_CAP_PGSIZES             "pgsizes"
#define VFU_CAP_MIGRATION           "migration"
#define VFU_CAP_TWIN_SOCKET         "twin_socket"
#define VFU_CAP_TWIN_SUPPORTED      "supported"
#define VFU_CAP_TWIN_FD_INDEX       "fd_index"
#define VFU_CAP_WRITE_MULTIPLE      "write_multiple"

/* Defaults when a capability is absent */
#define VFU_DEFAULT_MAX_MSG_FDS         1
#define VFU_DEFAULT_MAX_DATA_XFER_SIZE  (1024 * 1024)
#define VFU_DEFAULT_MAX_DMA_MAPS        65535
#define VFU_DEFAULT_PGSIZES             4096

/* DMA_MAP */
typedef struct QEMU_PACKED VfuDmaMap {
    uint32_t argsz;
    uint32_t flags;
    uint64_t offset;        /* into the fd passed with the message */
    uint64_t address;
    uint64_t size;
} VfuDmaMap;

#define VFU_DMA_MAP_F_READ      (1u << 0)
#define VFU_DMA_MAP_F_WRITE     (1u << 1)

/* DMA_UNMAP: request and reply; a VfuDmaBitmap may follow in 0.9.1 */
typedef struct QEMU_PACKED VfuDmaUnmap {
    uint32_t argsz;
    uint32_t flags;
    uint64_t address;
    uint64_t size;
} VfuDmaUnmap;

#define VFU_DMA_UNMAP_F_GET_DIRTY_BITMAP (1u << 0)
#define VFU_DMA_UNMAP_F_ALL              (1u << 1)

typedef struct QEMU_PACKED VfuDmaBitmap {
    uint64_t pgsize;
    uint64_t size;
} VfuDmaBitmap;

/* DEVICE_GET_INFO: request and reply */
typedef struct QEMU_PACKED VfuDeviceInfo {
    uint32_t argsz;
    uint32_t flags;
    uint32_t num_regions;
    uint32_t num_irqs;
} VfuDeviceInfo;

#define VFU_DEV_F_RESET     (1u << 0)
#define VFU_DEV_F_PCI       (1u << 1)

/* Region and IRQ indexes of a PCI device (as in linux/vfio.h) */
enum {
    VFU_PCI_BAR0_REGION     = 0,
    VFU_PCI_BAR5_REGION     = 5,
    VFU_PCI_ROM_REGION      = 6,
    VFU_PCI_CONFIG_REGION   = 7,
    VFU_PCI_VGA_REGION      = 8,
    VFU_PCI_NUM_REGIONS     = 9,
};

enum {
    VFU_PCI_INTX_IRQ        = 0,
    VFU_PCI_MSI_IRQ         = 1,
    VFU_PCI_MSIX_IRQ        = 2,
    VFU_PCI_ERR_IRQ         = 3,
    VFU_PCI_REQ_IRQ         = 4,
    VFU_PCI_NUM_IRQS        = 5,
};

/* DEVICE_GET_REGION_INFO: request and reply; capabilities may follow */
typedef struct QEMU_PACKED VfuRegionInfo {
    uint32_t argsz;
    uint32_t flags;
    uint32_t index;
    uint32_t cap_offset;    /* from the start of this struct, 0 = none */
    uint64_t size;
    uint64_t offset;        /* mmap offset into the fd sent with the reply */
} VfuRegionInfo;

#define VFU_REGION_F_READ   (1u << 0)
#define VFU_REGION_F_WRITE  (1u << 1)
#define VFU_REGION_F_MMAP   (1u << 2)
#define VFU_REGION_F_CAPS   (1u << 3)

typedef struct QEMU_PACKED VfuCapHeader {
    uint16_t id;
    uint16_t version;
    uint32_t next;          /* offset of the next capability, 0 = last */
} VfuCapHeader;

#define VFU_REGION_CAP_SPARSE_MMAP  1
#define VFU_REGION_CAP_TYPE         2

typedef struct QEMU_PACKED VfuSparseMmapArea {
    uint64_t offset;
    uint64_t size;
} VfuSparseMmapArea;

typedef struct QEMU_PACKED VfuCapSparseMmap {
    VfuCapHeader header;
    uint32_t nr_areas;
    uint32_t reserved;
    VfuSparseMmapArea areas[];
} VfuCapSparseMmap;

typedef struct QEMU_PACKED VfuCapType {
    VfuCapHeader header;
    uint32_t type;
    uint32_t subtype;
} VfuCapType;

/* DEVICE_GET_REGION_IO_FDS */
typedef struct QEMU_PACKED VfuRegionIoFds {
    uint32_t argsz;
    uint32_t flags;
    uint32_t index;
    uint32_t count;
    uint8_t sub_regions[];  /* (argsz - 16) / count bytes per entry */
} VfuRegionIoFds;

#define VFU_IO_FD_TYPE_IOEVENTFD    0
#define VFU_IO_FD_TYPE_IOREGIONFD   1

#define VFU_IOEVENTFD_F_DATAMATCH   (1u << 0)
#define VFU_IOEVENTFD_F_PIO         (1u << 1)

typedef struct QEMU_PACKED VfuSubRegionIoFd {
    uint64_t offset;
    uint64_t size;
    uint32_t fd_index;
    uint32_t type;
    uint32_t flags;
    uint32_t padding;
    uint64_t datamatch;     /* user_data for an ioregionfd */
} VfuSubRegionIoFd;

/* DEVICE_GET_IRQ_INFO: request and reply */
typedef struct QEMU_PACKED VfuIrqInfo {
    uint32_t argsz;
    uint32_t flags;
    uint32_t index;
    uint32_t count;
} VfuIrqInfo;

#define VFU_IRQ_INFO_F_EVENTFD      (1u << 0)
#define VFU_IRQ_INFO_F_MASKABLE     (1u << 1)
#define VFU_IRQ_INFO_F_AUTOMASKED   (1u << 2)
#define VFU_IRQ_INFO_F_NORESIZE     (1u << 3)

/* DEVICE_SET_IRQS */
typedef struct QEMU_PACKED VfuIrqSet {
    uint32_t argsz;
    uint32_t flags;
    uint32_t index;
    uint32_t start;
    uint32_t count;
    uint8_t data[];         /* count bools with VFU_IRQ_SET_DATA_BOOL */
} VfuIrqSet;

#define VFU_IRQ_SET_DATA_NONE       (1u << 0)
#define VFU_IRQ_SET_DATA_BOOL       (1u << 1)
#define VFU_IRQ_SET_DATA_EVENTFD    (1u << 2)
#define VFU_IRQ_SET_ACTION_MASK     (1u << 3)
#define VFU_IRQ_SET_ACTION_UNMASK   (1u << 4)
#define VFU_IRQ_SET_ACTION_TRIGGER  (1u << 5)
#define VFU_IRQ_SET_DATA_MASK       (VFU_IRQ_SET_DATA_NONE | \
                                     VFU_IRQ_SET_DATA_BOOL | \
                                     VFU_IRQ_SET_DATA_EVENTFD)
#define VFU_IRQ_SET_ACTION_MASKS    (VFU_IRQ_SET_ACTION_MASK | \
                                     VFU_IRQ_SET_ACTION_UNMASK | \
                                     VFU_IRQ_SET_ACTION_TRIGGER)

/* REGION_READ / REGION_WRITE: request and reply */
typedef struct QEMU_PACKED VfuRegionAccess {
    uint64_t offset;
    uint32_t region;
    uint32_t count;
    uint8_t data[];         /* read reply and write request */
} VfuRegionAccess;

/* DMA_READ / DMA_WRITE: request and reply */
typedef struct QEMU_PACKED VfuDmaAccess {
    uint64_t address;
    uint64_t count;
    uint8_t data[];         /* read reply and write request */
} VfuDmaAccess;

/*
 * 0.9.1 documents the DMA_WRITE reply count as 4 bytes; peers send 8.
 * Accept either on receive, send 8.
 */
#define VFU_DMA_WRITE_REPLY_MIN_SIZE    12

/* REGION_WRITE_MULTI */
#define VFU_WRITE_MULTI_DATA_MAX    8
#define VFU_WRITE_MULTI_MAX         2048

typedef struct QEMU_PACKED VfuWriteMultiEntry {
    uint64_t offset;
    uint32_t region;
    uint32_t count;         /* 1..8 */
    uint8_t data[VFU_WRITE_MULTI_DATA_MAX];
} VfuWriteMultiEntry;

typedef struct QEMU_PACKED VfuWriteMulti {
    uint64_t wr_cnt;
    VfuWriteMultiEntry wrs[];   /* request only; the reply has wr_cnt */
} VfuWriteMulti;

/* DEVICE_FEATURE: request and reply */
typedef struct QEMU_PACKED VfuDeviceFeature {
    uint32_t argsz;
    uint32_t flags;
    uint8_t data[];
} VfuDeviceFeature;

#define VFU_DEVICE_FEATURE_MASK     0xffffu
#define VFU_DEVICE_FEATURE_GET      (1u << 16)
#define VFU_DEVICE_FEATURE_SET      (1u << 17)
#define VFU_DEVICE_FEATURE_PROBE    (1u << 18)

/* MIG_DATA_READ / MIG_DATA_WRITE: request and reply */
typedef struct QEMU_PACKED VfuMigData {
    uint32_t argsz;
    uint32_t size;
    uint8_t data[];
} VfuMigData;

#endif /* VFIO_USER_PROTOCOL_H */
