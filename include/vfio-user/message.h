/*
 * vfio-user message codec, shared by the client and the server.
 *
 * Validates what a peer sent before anything else looks at it, converts
 * payloads between wire (little-endian) and host order, and encodes and
 * parses the VERSION capabilities.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef VFIO_USER_MESSAGE_H
#define VFIO_USER_MESSAGE_H

#include "vfio-user/protocol.h"

/* Hard limits of this implementation, whatever a peer proposes. */
#define VFU_MAX_MSG_FDS         16      /* SCM_RIGHTS buffer of QIOChannel */
#define VFU_MAX_XFER_SIZE       (1024 * 1024)
#define VFU_MIN_XFER_SIZE       512
#define VFU_MAX_JSON_SIZE       4096
/* Region info with capabilities: reply size we ask for and accept */
#define VFU_REGION_INFO_MAX     4096
/* Sparse mmap areas we accept in one region */
#define VFU_MAX_MMAP_AREAS      64
/* Largest non-data payload: a maximal REGION_WRITE_MULTI */
#define VFU_MAX_CTRL_PAYLOAD    (sizeof(VfuWriteMulti) + \
                                 VFU_WRITE_MULTI_MAX * sizeof(VfuWriteMultiEntry))

/* What one side of a connection can take; negotiated with VERSION. */
typedef struct VfuLimits {
    uint32_t max_msg_fds;
    uint64_t max_data_xfer_size;
    uint32_t max_dma_maps;
    uint64_t pgsizes;
    bool write_multiple;
    /*
     * twin_socket: proposed by a client, offered by a server.  In a
     * VERSION reply, the index of the fd that carries the client's end
     * of the twin socket (-1: none).
     */
    bool twin_socket;
    int twin_fd_index;
} VfuLimits;

/* A received or to-be-sent message; all fields in host order. */
typedef struct VfuMsg {
    VfuHeader hdr;
    uint8_t *payload;
    size_t len;             /* hdr.size - sizeof(VfuHeader) */
    int *fds;
    size_t nfds;
} VfuMsg;

void vfu_limits_default(VfuLimits *l);
const char *vfu_command_name(unsigned cmd);

static inline bool vfu_msg_is_reply(const VfuMsg *msg)
{
    return (msg->hdr.flags & VFU_F_TYPE_MASK) == VFU_F_TYPE_REPLY;
}

/* Free a message and close any fd it still owns. */
void vfu_msg_free(VfuMsg *msg);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VfuMsg, vfu_msg_free)

/* Take fd @i out of @msg: the caller owns it from now on. */
int vfu_msg_steal_fd(VfuMsg *msg, size_t i);

/*
 * Largest message size we accept from a peer, given our own limits.
 */
size_t vfu_max_msg_size(const VfuLimits *local);

/*
 * Decode a wire header into host order and check it on its own: size
 * and flag bits.  @max_size is the largest message we accept.
 */
bool vfu_header_decode(const void *wire, VfuHeader *hdr, size_t max_size,
                       Error **errp);
void vfu_header_encode(const VfuHeader *hdr, void *wire);

/*
 * Check a complete received message against the command's layout and our
 * limits, and convert its payload to host order.  Returns 0, or a
 * negative errno to put in the error reply (commands) and sets @errp.
 */
int vfu_msg_decode(VfuMsg *msg, const VfuLimits *local, Error **errp);

/* Convert a payload built in host order to wire order, in place. */
void vfu_payload_encode(unsigned cmd, bool reply, void *payload, size_t len);

/*
 * VERSION payloads.  vfu_version_encode() returns a g_malloc'd payload
 * (major, minor, JSON with @caps, NUL) and its length.
 * vfu_version_parse() checks a received payload: the JSON must be a
 * NUL-terminated object; unknown capabilities are ignored; missing ones
 * take the spec's defaults; values are checked for type and range.
 * @nfds is the number of fds that came with the message: a twin_socket
 * fd_index must name one of them.
 */
void *vfu_version_encode(uint16_t major, uint16_t minor,
                         const VfuLimits *caps, size_t *len);
bool vfu_version_parse(const void *payload, size_t len, size_t nfds,
                       uint16_t *major, uint16_t *minor, VfuLimits *caps,
                       Error **errp);

/*
 * The areas of a decoded DEVICE_GET_REGION_INFO reply (@info with @len
 * bytes of payload) that may be mmap'ed: none without the MMAP flag, the
 * sparse mmap capability's areas when there is one, else the whole region.
 * Fails on a malformed capability chain or an area outside the region.
 * Returns the number of areas written to @areas (at most
 * VFU_MAX_MMAP_AREAS), or -1.
 */
int vfu_region_info_mmap_areas(const VfuRegionInfo *info, size_t len,
                               VfuSparseMmapArea *areas, Error **errp);

#endif /* VFIO_USER_MESSAGE_H */
