/*
 * DMA address space of a device exported over vfio-user.
 *
 * The device sees exactly the client's current DMA mappings.  A mapping
 * that came with an fd is mmap'd and becomes RAM; one without an fd is
 * an MMIO window whose accesses are forwarded to the client as
 * DMA_READ/DMA_WRITE.  Everything else fails like a master abort.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/rcu.h"
#include "qemu/bswap.h"
#include "qom/object.h"
#include "exec/memory.h"
#include "exec/memory-bulk.h"
#include "vfio-user/socket.h"
#include "hw/remote/vfio-user/remote.h"
#include "trace.h"

#define TYPE_VFU_DMA_MAPPING "vfio-user-dma-mapping"
OBJECT_DECLARE_SIMPLE_TYPE(VfuDmaMapping, VFU_DMA_MAPPING)

/*
 * One client mapping.  The object owns the MemoryRegion so that users of
 * the region (address_space_map) keep it alive after an unmap.
 */
struct VfuDmaMapping {
    Object parent_obj;

    MemoryRegion mr;
    VfuDmaSpace *space;
    uint64_t iova;
    uint64_t size;
    uint32_t flags;
    void *host;             /* mmap'd client memory, or NULL */
};

struct VfuDmaSpace {
    int devfn;
    MemoryRegion root;
    MemoryRegion abort;     /* background: everything unmapped */
    AddressSpace as;
    GList *maps;            /* of VfuDmaMapping */
    unsigned nr_maps;
    uint64_t mmapped;       /* bytes of the mappings with host memory */
    VfuDmaPeerFunc *peer_fn;
    VfuDmaFlushFunc *flush_fn;
    void *peer_opaque;
    /* DMA_WRITEs sent through the peer since the last flush */
    bool writes_in_flight;
};

typedef struct VfuMunmap {
    struct rcu_head rcu;
    void *host;
    size_t len;
} VfuMunmap;

static void vfu_munmap_rcu(VfuMunmap *m)
{
    munmap(m->host, m->len);
    g_free(m);
}

static void vfu_dma_mapping_finalize(Object *obj)
{
    VfuDmaMapping *map = VFU_DMA_MAPPING(obj);

    /*
     * The MemoryRegion is gone already (child property); readers of an
     * old FlatView may still be inside the memory until a grace period.
     */
    if (map->host) {
        VfuMunmap *m = g_new0(VfuMunmap, 1);

        m->host = map->host;
        m->len = map->size;
        call_rcu(m, vfu_munmap_rcu, rcu);
    }
}

static const TypeInfo vfu_dma_mapping_info = {
    .name = TYPE_VFU_DMA_MAPPING,
    .parent = TYPE_OBJECT,
    .instance_size = sizeof(VfuDmaMapping),
    .instance_finalize = vfu_dma_mapping_finalize,
};

/* Accesses outside any mapping: master abort, never other memory. */
static MemTxResult vfu_dma_abort_read(void *opaque, hwaddr addr,
                                      uint64_t *data, unsigned size,
                                      MemTxAttrs attrs)
{
    VfuDmaSpace *s = opaque;

    trace_vfio_user_srv_dma_fault(s->devfn, addr, size, false);
    *data = size >= 8 ? UINT64_MAX : (1ULL << (size * 8)) - 1;
    return MEMTX_DECODE_ERROR;
}

static MemTxResult vfu_dma_abort_write(void *opaque, hwaddr addr,
                                       uint64_t data, unsigned size,
                                       MemTxAttrs attrs)
{
    VfuDmaSpace *s = opaque;

    trace_vfio_user_srv_dma_fault(s->devfn, addr, size, true);
    return MEMTX_DECODE_ERROR;
}

static const MemoryRegionOps vfu_dma_abort_ops = {
    .read_with_attrs = vfu_dma_abort_read,
    .write_with_attrs = vfu_dma_abort_write,
    .endianness = DEVICE_LITTLE_ENDIAN,
    .valid = { .min_access_size = 1, .max_access_size = 8, .unaligned = true },
    .impl = { .min_access_size = 1, .max_access_size = 8, .unaligned = true },
};

/*
 * A whole range outside any mapping: one fault, not one per 8 bytes.  The
 * background region is visible up to the next mapping only.
 */
static hwaddr vfu_dma_unmapped_len(VfuDmaSpace *s, hwaddr addr, hwaddr len)
{
    for (GList *l = s->maps; l; l = l->next) {
        VfuDmaMapping *m = l->data;

        if (m->iova > addr && m->iova - addr < len) {
            len = m->iova - addr;
        }
    }
    return len;
}

static MemTxResult vfu_dma_abort_bulk_read(void *opaque, hwaddr addr,
                                           void *buf, hwaddr *len,
                                           MemTxAttrs attrs)
{
    VfuDmaSpace *s = opaque;

    *len = vfu_dma_unmapped_len(s, addr, *len);
    trace_vfio_user_srv_dma_fault(s->devfn, addr, *len, false);
    memset(buf, 0xff, *len);
    return MEMTX_DECODE_ERROR;
}

static MemTxResult vfu_dma_abort_bulk_write(void *opaque, hwaddr addr,
                                            const void *buf, hwaddr *len,
                                            MemTxAttrs attrs)
{
    VfuDmaSpace *s = opaque;

    *len = vfu_dma_unmapped_len(s, addr, *len);
    trace_vfio_user_srv_dma_fault(s->devfn, addr, *len, true);
    return MEMTX_DECODE_ERROR;
}

static const MemoryRegionBulkOps vfu_dma_abort_bulk_ops = {
    .read = vfu_dma_abort_bulk_read,
    .write = vfu_dma_abort_bulk_write,
};

/*
 * Message writes are pipelined (the peer function does not wait for
 * their replies), but a write to a mapping with an fd lands at once, and
 * we cannot see it coming: it is a plain store into RAM.  So while the
 * device also has such mappings, wait for the message writes before the
 * device can make its next access, and writes stay visible in the order
 * the device made them.
 */
static void vfu_dma_flush(VfuDmaSpace *s, const char *why)
{
    if (!s->writes_in_flight) {
        return;
    }
    s->writes_in_flight = false;
    if (s->peer_fn && s->flush_fn) {
        trace_vfio_user_srv_dma_flush(s->devfn, why);
        s->flush_fn(s->peer_opaque);
    }
}

/* After a write through the peer; even a failed one may have sent some */
static MemTxResult vfu_dma_peer_wrote(VfuDmaSpace *s, MemTxResult r)
{
    s->writes_in_flight = true;
    if (s->mmapped) {
        vfu_dma_flush(s, "mixed mappings");
    }
    return r;
}

/* Accesses to a mapping without an fd: the client serves them. */
static MemTxResult vfu_dma_peer_read(void *opaque, hwaddr addr,
                                     uint64_t *data, unsigned size,
                                     MemTxAttrs attrs)
{
    VfuDmaMapping *map = opaque;
    VfuDmaSpace *s = map->space;
    uint8_t buf[8] = { 0 };
    MemTxResult r = MEMTX_DECODE_ERROR;

    if (!(map->flags & VFU_DMA_MAP_F_READ)) {
        trace_vfio_user_srv_dma_fault(s->devfn, map->iova + addr, size, false);
    } else if (s->peer_fn) {
        r = s->peer_fn(s->peer_opaque, map->iova + addr, buf, size, false);
    }
    *data = r == MEMTX_OK ? ldn_le_p(buf, size) :
            size >= 8 ? UINT64_MAX : (1ULL << (size * 8)) - 1;
    return r;
}

static MemTxResult vfu_dma_peer_write(void *opaque, hwaddr addr,
                                      uint64_t data, unsigned size,
                                      MemTxAttrs attrs)
{
    VfuDmaMapping *map = opaque;
    VfuDmaSpace *s = map->space;
    uint8_t buf[8];

    if (!(map->flags & VFU_DMA_MAP_F_WRITE) || !s->peer_fn) {
        trace_vfio_user_srv_dma_fault(s->devfn, map->iova + addr, size, true);
        return MEMTX_DECODE_ERROR;
    }
    stn_le_p(buf, size, data);
    return vfu_dma_peer_wrote(s, s->peer_fn(s->peer_opaque, map->iova + addr,
                                            buf, size, true));
}

static const MemoryRegionOps vfu_dma_peer_ops = {
    .read_with_attrs = vfu_dma_peer_read,
    .write_with_attrs = vfu_dma_peer_write,
    .endianness = DEVICE_LITTLE_ENDIAN,
    .valid = { .min_access_size = 1, .max_access_size = 8, .unaligned = true },
    .impl = { .min_access_size = 1, .max_access_size = 8, .unaligned = true },
};

/*
 * The same, a whole range at a time: address_space_read/write() of a
 * device (edu, nvme's bounce buffer) becomes one DMA_READ/DMA_WRITE per
 * max_data_xfer_size instead of one per 8 bytes.
 */
static MemTxResult vfu_dma_peer_bulk(VfuDmaMapping *map, hwaddr addr,
                                     void *buf, hwaddr *len, bool is_write)
{
    VfuDmaSpace *s = map->space;
    uint32_t perm = is_write ? VFU_DMA_MAP_F_WRITE : VFU_DMA_MAP_F_READ;

    /* mappings never overlap: the region is visible to its end */
    if (addr >= map->size) {
        *len = 1;   /* cannot happen; fail a byte rather than loop */
        return MEMTX_DECODE_ERROR;
    }
    *len = MIN(*len, map->size - addr);
    if (!(map->flags & perm) || !s->peer_fn) {
        trace_vfio_user_srv_dma_fault(s->devfn, map->iova + addr, *len,
                                      is_write);
        return MEMTX_DECODE_ERROR;
    }
    return s->peer_fn(s->peer_opaque, map->iova + addr, buf, *len, is_write);
}

static MemTxResult vfu_dma_peer_bulk_read(void *opaque, hwaddr addr,
                                          void *buf, hwaddr *len,
                                          MemTxAttrs attrs)
{
    MemTxResult r = vfu_dma_peer_bulk(opaque, addr, buf, len, false);

    if (r != MEMTX_OK) {
        memset(buf, 0xff, *len);    /* like a master abort */
    }
    return r;
}

static MemTxResult vfu_dma_peer_bulk_write(void *opaque, hwaddr addr,
                                           const void *buf, hwaddr *len,
                                           MemTxAttrs attrs)
{
    VfuDmaMapping *map = opaque;

    /* the peer function only reads @buf when writing */
    return vfu_dma_peer_wrote(map->space,
                              vfu_dma_peer_bulk(map, addr, (void *)buf, len,
                                                true));
}

static const MemoryRegionBulkOps vfu_dma_peer_bulk_ops = {
    .read = vfu_dma_peer_bulk_read,
    .write = vfu_dma_peer_bulk_write,
};

static void vfu_dma_register_types(void)
{
    type_register_static(&vfu_dma_mapping_info);
    memory_region_ops_set_bulk(&vfu_dma_abort_ops, &vfu_dma_abort_bulk_ops);
    memory_region_ops_set_bulk(&vfu_dma_peer_ops, &vfu_dma_peer_bulk_ops);
}

type_init(vfu_dma_register_types)

VfuDmaSpace *vfu_dma_space_new(Object *owner, int devfn)
{
    VfuDmaSpace *s = g_new0(VfuDmaSpace, 1);
    g_autofree char *name = g_strdup_printf("vfio-user-dma-%02x.%x",
                                            PCI_SLOT(devfn), PCI_FUNC(devfn));

    s->devfn = devfn;
    memory_region_init(&s->root, owner, name, UINT64_MAX);
    memory_region_init_io(&s->abort, owner, &vfu_dma_abort_ops, s,
                          "vfio-user-dma-unmapped", UINT64_MAX);
    /* below the device's own BARs (-1) and the client's mappings (0) */
    memory_region_add_subregion_overlap(&s->root, 0, &s->abort, -2);
    address_space_init(&s->as, &s->root, name);
    return s;
}

void vfu_dma_space_place_bar(VfuDmaSpace *s, MemoryRegion *mr, bool present,
                             uint64_t addr)
{
    bool placed = mr->container == &s->root;

    if (placed == present && (!present || mr->addr == addr)) {
        return;     /* nothing moves: spare the FlatView a rebuild */
    }
    memory_region_transaction_begin();
    if (placed) {
        memory_region_del_subregion(&s->root, mr);
    }
    if (present) {
        trace_vfio_user_srv_dma_bar(s->devfn, memory_region_name(mr), addr);
        memory_region_add_subregion_overlap(&s->root, addr, mr, -1);
    }
    memory_region_transaction_commit();
}

AddressSpace *vfu_dma_space_as(VfuDmaSpace *s)
{
    return &s->as;
}

void vfu_dma_space_set_peer(VfuDmaSpace *s, VfuDmaPeerFunc *fn, void *opaque)
{
    s->peer_fn = fn;
    s->peer_opaque = opaque;
    s->writes_in_flight = false;
}

void vfu_dma_space_set_flush(VfuDmaSpace *s, VfuDmaFlushFunc *fn)
{
    s->flush_fn = fn;
}

unsigned vfu_dma_space_count(VfuDmaSpace *s)
{
    return s->nr_maps;
}

void vfu_dma_space_foreach(VfuDmaSpace *s, VfuDmaMapFunc *fn, void *opaque)
{
    for (GList *l = s->maps; l; l = l->next) {
        VfuDmaMapping *m = l->data;

        fn(opaque, m->iova, m->size, m->flags, m->host != NULL);
    }
}

static bool vfu_dma_check_range(uint64_t addr, uint64_t size, uint64_t pgsize,
                                const char *what, Error **errp)
{
    if (size == 0) {
        error_setg(errp, "%s: size is 0", what);
        return false;
    }
    if ((addr | size) & (pgsize - 1)) {
        error_setg(errp, "%s: address 0x%" PRIx64 " or size 0x%" PRIx64
                   " is not aligned to 0x%" PRIx64, what, addr, size, pgsize);
        return false;
    }
    if (addr + size - 1 < addr) {
        error_setg(errp, "%s: 0x%" PRIx64 "+0x%" PRIx64 " overflows", what,
                   addr, size);
        return false;
    }
    return true;
}

static bool vfu_dma_overlaps(VfuDmaMapping *m, uint64_t addr, uint64_t size)
{
    return addr <= m->iova + m->size - 1 && m->iova <= addr + size - 1;
}

/* The fd of a DMA_MAP is a file holding offset..offset+size. */
static bool vfu_dma_check_fd(int fd, uint64_t offset, uint64_t size,
                             Error **errp)
{
    if (offset & (qemu_real_host_page_size() - 1)) {
        error_setg(errp, "DMA_MAP: offset 0x%" PRIx64 " is not page aligned",
                   offset);
        return false;
    }
    if (size > SIZE_MAX || offset + size < offset) {
        error_setg(errp, "DMA_MAP: offset 0x%" PRIx64 " size 0x%" PRIx64
                   " too large", offset, size);
        return false;
    }
    if (!vfu_fd_check_file(fd, offset + size, errp)) {
        error_prepend(errp, "DMA_MAP: ");
        return false;
    }
    return true;
}

/* mmap the client's memory; returns NULL and sets @errp on failure. */
static void *vfu_dma_mmap(int fd, uint64_t offset, uint64_t size,
                          uint32_t flags, Error **errp)
{
    void *p;
    int prot = PROT_READ | ((flags & VFU_DMA_MAP_F_WRITE) ? PROT_WRITE : 0);

    p = mmap(NULL, size, prot, MAP_SHARED, fd, offset);
    if (p == MAP_FAILED) {
        error_setg_errno(errp, errno, "DMA_MAP: mmap");
        return NULL;
    }
    return p;
}

int vfu_dma_space_map(VfuDmaSpace *s, const VfuDmaMap *req, int fd,
                      bool mmap_fd, const VfuDmaLimits *lim, Error **errp)
{
    VfuDmaMapping *map;
    g_autofree char *name = NULL;
    void *host = NULL;
    int ret = -EINVAL;

    if (req->argsz != sizeof(*req)) {
        error_setg(errp, "DMA_MAP: argsz %u, expected %zu", req->argsz,
                   sizeof(*req));
        goto out;
    }
    if (req->flags & ~(VFU_DMA_MAP_F_READ | VFU_DMA_MAP_F_WRITE)) {
        error_setg(errp, "DMA_MAP: unknown flags 0x%x", req->flags);
        goto out;
    }
    if (!req->flags) {
        error_setg(errp, "DMA_MAP: neither READ nor WRITE");
        goto out;
    }
    if (!vfu_dma_check_range(req->address, req->size, lim->pgsize,
                             "DMA_MAP", errp)) {
        goto out;
    }
    if (fd < 0 && req->offset) {
        error_setg(errp, "DMA_MAP: offset without an fd");
        goto out;
    }
    for (GList *l = s->maps; l; l = l->next) {
        if (vfu_dma_overlaps(l->data, req->address, req->size)) {
            error_setg(errp, "DMA_MAP: 0x%" PRIx64 "+0x%" PRIx64
                       " overlaps an existing mapping", req->address,
                       req->size);
            ret = -EEXIST;
            goto out;
        }
    }
    if (s->nr_maps >= lim->max_maps) {
        error_setg(errp, "DMA_MAP: already %u mappings", s->nr_maps);
        ret = -ENOSPC;
        goto out;
    }
    /* memory reached by message costs us nothing: only mmaps count */
    if (fd >= 0 && mmap_fd &&
        (req->size > lim->max_map_size ||
         req->size > lim->max_total_size - MIN(s->mmapped,
                                               lim->max_total_size))) {
        error_setg(errp, "DMA_MAP: 0x%" PRIx64 " bytes with 0x%" PRIx64
                   " mapped already is past the limits (0x%" PRIx64
                   " per mapping, 0x%" PRIx64 " in all)", req->size,
                   s->mmapped, lim->max_map_size, lim->max_total_size);
        ret = -ENOMEM;
        goto out;
    }
    /* even memory reached by message must be what the fd claims */
    if (fd >= 0 && !vfu_dma_check_fd(fd, req->offset, req->size, errp)) {
        goto out;
    }
    if (fd >= 0 && mmap_fd) {
        /* from now on the device writes there at once: see vfu_dma_flush() */
        vfu_dma_flush(s, "fd mapping added");
        host = vfu_dma_mmap(fd, req->offset, req->size, req->flags, errp);
        if (!host) {
            goto out;
        }
    }

    map = VFU_DMA_MAPPING(object_new(TYPE_VFU_DMA_MAPPING));
    map->space = s;
    map->iova = req->address;
    map->size = req->size;
    map->flags = req->flags;
    map->host = host;
    name = g_strdup_printf("vfio-user-dma-0x%" PRIx64, req->address);
    if (host) {
        memory_region_init_ram_ptr(&map->mr, OBJECT(map), name, req->size,
                                   host);
        if (!(req->flags & VFU_DMA_MAP_F_WRITE)) {
            memory_region_set_readonly(&map->mr, true);
        }
    } else {
        memory_region_init_io(&map->mr, OBJECT(map), &vfu_dma_peer_ops, map,
                              name, req->size);
    }
    memory_region_add_subregion(&s->root, req->address, &map->mr);
    s->maps = g_list_prepend(s->maps, map);
    s->nr_maps++;
    s->mmapped += host ? req->size : 0;
    trace_vfio_user_srv_dma_map(s->devfn, req->address, req->size,
                                req->offset, req->flags, host != NULL);
    ret = 0;
out:
    if (fd >= 0) {
        /* the mmap keeps the memory; the fd itself is not needed */
        close(fd);
    }
    return ret;
}

static void vfu_dma_remove(VfuDmaSpace *s, VfuDmaMapping *map)
{
    trace_vfio_user_srv_dma_unmap(s->devfn, map->iova, map->size);
    memory_region_del_subregion(&s->root, &map->mr);
    s->maps = g_list_remove(s->maps, map);
    s->nr_maps--;
    s->mmapped -= map->host ? map->size : 0;
    /* the FlatView and in-flight users drop their references later */
    object_unref(OBJECT(map));
}

int vfu_dma_space_unmap(VfuDmaSpace *s, const VfuDmaUnmap *req,
                        uint64_t pgsize, Error **errp)
{
    GList *victims = NULL;

    if (req->flags & VFU_DMA_UNMAP_F_GET_DIRTY_BITMAP) {
        error_setg(errp, "DMA_UNMAP: dirty page tracking is not supported");
        return -ENOTSUP;
    }
    if (req->flags & ~VFU_DMA_UNMAP_F_ALL) {
        error_setg(errp, "DMA_UNMAP: unknown flags 0x%x", req->flags);
        return -EINVAL;
    }
    if (req->flags & VFU_DMA_UNMAP_F_ALL) {
        if (req->address || req->size) {
            error_setg(errp, "DMA_UNMAP: unmap-all with an address or size");
            return -EINVAL;
        }
        vfu_dma_space_unmap_all(s);
        return 0;
    }
    if (!vfu_dma_check_range(req->address, req->size, pgsize, "DMA_UNMAP",
                             errp)) {
        return -EINVAL;
    }
    /* whole mappings only: refuse to split one */
    for (GList *l = s->maps; l; l = l->next) {
        VfuDmaMapping *m = l->data;

        if (!vfu_dma_overlaps(m, req->address, req->size)) {
            continue;
        }
        if (m->iova < req->address ||
            m->iova + m->size - 1 > req->address + req->size - 1) {
            g_list_free(victims);
            error_setg(errp, "DMA_UNMAP: 0x%" PRIx64 "+0x%" PRIx64
                       " covers part of mapping 0x%" PRIx64 "+0x%" PRIx64,
                       req->address, req->size, m->iova, m->size);
            return -EINVAL;
        }
        victims = g_list_prepend(victims, m);
    }
    if (!victims) {
        error_setg(errp, "DMA_UNMAP: nothing mapped at 0x%" PRIx64 "+0x%"
                   PRIx64, req->address, req->size);
        return -ENOENT;
    }
    memory_region_transaction_begin();
    for (GList *l = victims; l; l = l->next) {
        vfu_dma_remove(s, l->data);
    }
    memory_region_transaction_commit();
    g_list_free(victims);
    return 0;
}

void vfu_dma_space_unmap_all(VfuDmaSpace *s)
{
    memory_region_transaction_begin();
    while (s->maps) {
        vfu_dma_remove(s, s->maps->data);
    }
    memory_region_transaction_commit();
}
