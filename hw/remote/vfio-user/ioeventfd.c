/*
 * Doorbells for vfio-user clients: the ioeventfds a device registers on its
 * BARs, offered with DEVICE_GET_REGION_IO_FDS.
 *
 * QEMU's device models add and remove their ioeventfds at run time (virtio
 * when the driver starts or resets the device, nvme when a queue is
 * created), while a client keeps what it was given.  So the client gets a
 * proxy eventfd of ours per doorbell, which stays valid for the life of
 * the server: when it fires, the device's current ioeventfd for that
 * doorbell is signalled, or, if there is none right now, the write it
 * stands for is done as an ordinary access when its value is known
 * (datamatch), and dropped otherwise.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/main-loop.h"
#include "qemu/event_notifier.h"
#include "exec/memory.h"
#include "hw/remote/vfio-user/remote.h"
#include "trace.h"

/* Doorbells we keep a proxy for, per server */
#define VFU_IOFDS_MAX   256

typedef struct VfuIoFd {
    VfuIoFds *owner;
    unsigned bar;
    uint64_t offset;
    unsigned size;
    bool match_data;
    uint64_t data;
    EventNotifier proxy;    /* what the client signals */
    bool dead;              /* no proxy eventfd: never offered */
    EventNotifier *dev;     /* the device's ioeventfd, while registered */
} VfuIoFd;

typedef struct VfuIoFdsListener {
    MemoryListener listener;
    VfuIoFds *owner;
    unsigned bar;
} VfuIoFdsListener;

struct VfuIoFds {
    AddressSpace *as[VFU_PCI_NUM_REGIONS];
    VfuIoFdsListener listeners[VFU_PCI_NUM_REGIONS];
    GPtrArray *fds;         /* VfuIoFd */
    VfuIoFdsFlushFunc *flush;
    void *opaque;
    char *name;
    /* bumped by vfu_iofds_reset(): the client the rings came from left */
    unsigned generation;
};

static VfuIoFd *vfu_iofds_find(VfuIoFds *f, unsigned bar, uint64_t offset,
                               unsigned size, bool match_data, uint64_t data)
{
    for (unsigned i = 0; i < f->fds->len; i++) {
        VfuIoFd *e = g_ptr_array_index(f->fds, i);

        if (e->bar == bar && e->offset == offset && e->size == size &&
            e->match_data == match_data && (!match_data || e->data == data)) {
            return e;
        }
    }
    return NULL;
}

static void vfu_iofd_fired(EventNotifier *n)
{
    VfuIoFd *e = container_of(n, VfuIoFd, proxy);
    VfuIoFds *f = e->owner;
    unsigned generation = f->generation;

    if (!event_notifier_test_and_clear(n)) {
        return;
    }
    /* writes the client sent before ringing must reach the device first */
    if (f->flush) {
        f->flush(f->opaque);
    }
    /*
     * The flush may have dropped the client, and the device was reset for
     * the next one: this ring is stale.  Entries live as long as @f, so
     * @e is still ours to look at.
     */
    if (f->generation != generation) {
        trace_vfio_user_srv_ioeventfd_stale(f->name, e->bar, e->offset);
        return;
    }
    trace_vfio_user_srv_ioeventfd_fired(f->name, e->bar, e->offset, !!e->dev);
    if (e->dev) {
        event_notifier_set(e->dev);
    } else if (e->match_data) {
        uint8_t buf[8];

        stn_le_p(buf, e->size, e->data);
        address_space_write(f->as[e->bar], e->offset, MEMTXATTRS_UNSPECIFIED,
                            buf, e->size);
    }
}

/* The entry for the ioeventfd a listener callback names, if we have it */
static VfuIoFd *vfu_iofds_lookup(MemoryListener *l,
                                 MemoryRegionSection *section,
                                 bool match_data, uint64_t data)
{
    VfuIoFdsListener *il = container_of(l, VfuIoFdsListener, listener);

    return vfu_iofds_find(il->owner, il->bar,
                          section->offset_within_address_space,
                          int128_get64(section->size), match_data, data);
}

static void vfu_iofds_eventfd_add(MemoryListener *l,
                                  MemoryRegionSection *section,
                                  bool match_data, uint64_t data,
                                  EventNotifier *n)
{
    VfuIoFdsListener *il = container_of(l, VfuIoFdsListener, listener);
    VfuIoFds *f = il->owner;
    unsigned size = int128_get64(section->size);
    VfuIoFd *e = vfu_iofds_lookup(l, section, match_data, data);

    if (!e) {
        /* sizes other than 1/2/4/8 cannot be a client's ioeventfd */
        if (f->fds->len >= VFU_IOFDS_MAX || !size || size > 8 ||
            !is_power_of_2(size)) {
            return;
        }
        e = g_new0(VfuIoFd, 1);
        if (event_notifier_init(&e->proxy, 0) < 0) {
            g_free(e);
            return;
        }
        e->owner = f;
        e->bar = il->bar;
        e->offset = section->offset_within_address_space;
        e->size = size;
        e->match_data = match_data;
        e->data = data;
        event_notifier_set_handler(&e->proxy, vfu_iofd_fired);
        g_ptr_array_add(f->fds, e);
    }
    e->dev = n;
    trace_vfio_user_srv_ioeventfd(f->name, e->bar, e->offset, size,
                                  match_data, data, true);
}

static void vfu_iofds_eventfd_del(MemoryListener *l,
                                  MemoryRegionSection *section,
                                  bool match_data, uint64_t data,
                                  EventNotifier *n)
{
    VfuIoFd *e = vfu_iofds_lookup(l, section, match_data, data);

    if (e && e->dev == n) {
        e->dev = NULL;
        trace_vfio_user_srv_ioeventfd(e->owner->name, e->bar, e->offset,
                                      e->size, match_data, data, false);
    }
}

VfuIoFds *vfu_iofds_new(AddressSpace **as, unsigned n, const char *name,
                        VfuIoFdsFlushFunc *flush, void *opaque)
{
    VfuIoFds *f = g_new0(VfuIoFds, 1);

    assert(n <= VFU_PCI_NUM_REGIONS);
    f->fds = g_ptr_array_new();
    f->flush = flush;
    f->opaque = opaque;
    f->name = g_strdup(name);
    for (unsigned i = 0; i < n; i++) {
        VfuIoFdsListener *il = &f->listeners[i];

        if (!as[i]) {
            continue;
        }
        f->as[i] = as[i];
        il->owner = f;
        il->bar = i;
        il->listener.name = "vfio-user-ioeventfds";
        il->listener.eventfd_add = vfu_iofds_eventfd_add;
        il->listener.eventfd_del = vfu_iofds_eventfd_del;
        memory_listener_register(&il->listener, as[i]);
    }
    return f;
}

/*
 * A new client: eventfds an earlier client may have kept must not ring
 * doorbells any more, so every proxy gets a new eventfd.
 */
void vfu_iofds_reset(VfuIoFds *f)
{
    f->generation++;
    for (unsigned i = 0; i < f->fds->len; i++) {
        VfuIoFd *e = g_ptr_array_index(f->fds, i);

        if (!e->dead) {
            event_notifier_set_handler(&e->proxy, NULL);
            event_notifier_cleanup(&e->proxy);
        }
        /*
         * Without a new eventfd the doorbell is not offered (the client
         * gets messages there), but the entry stays: vfu_iofd_fired() of
         * this very entry may be what is resetting us.
         */
        e->dead = event_notifier_init(&e->proxy, 0) < 0;
        if (!e->dead) {
            event_notifier_set_handler(&e->proxy, vfu_iofd_fired);
        }
    }
}

void vfu_iofds_free(VfuIoFds *f)
{
    if (!f) {
        return;
    }
    for (unsigned i = 0; i < VFU_PCI_NUM_REGIONS; i++) {
        if (f->as[i]) {
            memory_listener_unregister(&f->listeners[i].listener);
        }
    }
    for (unsigned i = 0; i < f->fds->len; i++) {
        VfuIoFd *e = g_ptr_array_index(f->fds, i);

        if (!e->dead) {
            event_notifier_set_handler(&e->proxy, NULL);
            event_notifier_cleanup(&e->proxy);
        }
        g_free(e);
    }
    g_ptr_array_free(f->fds, true);
    g_free(f->name);
    g_free(f);
}

unsigned vfu_iofds_get(VfuIoFds *f, unsigned bar, VfuSubRegionIoFd *subs,
                       int *fds, unsigned max)
{
    unsigned n = 0;

    for (unsigned i = 0; i < f->fds->len && n < max; i++) {
        VfuIoFd *e = g_ptr_array_index(f->fds, i);

        if (e->bar != bar || e->dead) {
            continue;
        }
        subs[n] = (VfuSubRegionIoFd) {
            .offset = e->offset,
            .size = e->size,
            .fd_index = n,
            .type = VFU_IO_FD_TYPE_IOEVENTFD,
            .flags = e->match_data ? VFU_IOEVENTFD_F_DATAMATCH : 0,
            .datamatch = e->data,
        };
        fds[n] = event_notifier_get_fd(&e->proxy);
        n++;
    }
    return n;
}
