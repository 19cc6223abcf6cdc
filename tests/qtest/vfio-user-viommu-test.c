/*
 * vfio-user-pci behind a vIOMMU: our client on q35 with intel-iommu
 * (caching mode) against our remote machine hosting edu.  The test
 * programs the IOMMU itself (legacy root/context tables, second-level
 * page tables, register-based invalidation) and checks that the server's
 * device reaches exactly the IOVA windows the "guest" mapped.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "libqtest.h"
#include "libqos/pci-pc.h"
#include "vfio-user/vm-helpers.h"
#include "vfio-user/edu.h"

#define DEVFN               QPCI_DEVFN(4, 0)

/* intel-iommu registers (hw/i386/intel_iommu_internal.h, VT-d spec) */
#define VTD_BASE            0xfed90000ULL  /* Q35_HOST_BRIDGE_IOMMU_ADDR */
#define VTD_CAP             0x08
#define VTD_GCMD            0x18
#define VTD_GSTS            0x1c
#define VTD_RTADDR          0x20
#define VTD_CCMD            0x28
#define VTD_IVA             0xf0
#define VTD_IOTLB           0xf8
#define VTD_GCMD_TE         (1u << 31)
#define VTD_GCMD_SRTP       (1u << 30)
#define VTD_CCMD_ICC        (1ULL << 63)
#define VTD_CCMD_GLOBAL     (1ULL << 61)
#define VTD_IOTLB_IVT       (1ULL << 63)
#define VTD_IOTLB_GLOBAL    (1ULL << 60)
#define VTD_IOTLB_PSI       (3ULL << 60)
#define VTD_CAP_SAGAW(cap)  (((cap) >> 8) & 0x1f)
#define VTD_PTE_RW          3ULL           /* read | write */
#define DOMAIN_ID           1

/* guest RAM layout: DMA buffers low, IOMMU tables from 32 MiB */
#define GPA_WIN             0x100000ULL    /* behind IOVA_WIN */
#define GPA_PRE             0x300000ULL    /* behind IOVA_PRE */
#define GPA_OTHER           0x200000ULL    /* never mapped */
#define TABLES              0x2000000ULL
/* below edu's 28-bit DMA mask, and not guest RAM addresses (64 MiB) */
#define IOVA_WIN            0x8000000ULL
#define IOVA_PRE            0x9000000ULL
#define WIN_SIZE            0x2000ULL      /* two 4 KiB pages */
#define WIN_UNMAP           UINT64_MAX

typedef enum DmaMode {
    DMA_FD,         /* shared memfd guest RAM: the server maps it */
    DMA_SECURE,     /* secure-dma=on: every DMA is a checked message */
} DmaMode;

static const char *const mode_names[] = { "fd", "secure" };

typedef struct Rig {
    EduRig vm;      /* vm.log: the client's trace of its DMA_UNMAPs */
    /* IOMMU page tables */
    int levels;
    uint64_t next_table;
    uint64_t top;
} Rig;

static void rig_start(Rig *r, DmaMode mode)
{
    edu_rig_serve(&r->vm, "vfio-user-viommu");
    /* MAP notifications need caching mode; the IOMMU goes first */
    r->vm.qts = qtest_initf(VU_FW_ARGS "-M q35,memory-backend=mem -m 64M "
                            "-object memory-backend-memfd,id=mem,size=64M,"
                            "share=on "
                            "-device intel-iommu,caching-mode=on "
                            "-D %s -trace vfio_user_pci_dma_unmap "
                            "-device vfio-user-pci,socket=%s,id=edu,"
                            "addr=04.0%s",
                            r->vm.log, r->vm.sock,
                            mode == DMA_SECURE ? ",secure-dma=on" : "");
    edu_rig_attach(&r->vm, DEVFN);
}

static uint32_t edu_rd(Rig *r, uint64_t off)
{
    return qpci_io_readl(r->vm.dev, r->vm.bar, off);
}

static uint64_t table_alloc(Rig *r)
{
    uint64_t t = r->next_table;

    r->next_table += 0x1000;
    qtest_memset(r->vm.qts, t, 0, 0x1000);
    return t;
}

/* Set the last-level PTE of @iova to @pte, creating tables on the way. */
static void pte_set(Rig *r, uint64_t iova, uint64_t pte)
{
    uint64_t table = r->top;

    for (int lvl = r->levels; lvl > 1; lvl--) {
        uint64_t slot = table + ((iova >> (12 + 9 * (lvl - 1))) & 511) * 8;
        uint64_t e = qtest_readq(r->vm.qts, slot);

        if (!e) {
            e = table_alloc(r) | VTD_PTE_RW;
            qtest_writeq(r->vm.qts, slot, e);
        }
        table = e & ~0xfffULL;
    }
    qtest_writeq(r->vm.qts, table + ((iova >> 12) & 511) * 8, pte);
}

/* Page-selective IOTLB invalidation of 2^@am pages: what caching mode needs */
static void iotlb_psi(Rig *r, uint64_t iova, unsigned am)
{
    qtest_writeq(r->vm.qts, VTD_BASE + VTD_IVA, iova | am);
    qtest_writeq(r->vm.qts, VTD_BASE + VTD_IOTLB,
                 VTD_IOTLB_IVT | VTD_IOTLB_PSI | ((uint64_t)DOMAIN_ID << 32));
    g_assert(!(qtest_readq(r->vm.qts, VTD_BASE + VTD_IOTLB) & VTD_IOTLB_IVT));
}

/* Map the 8 KiB window at @iova to @gpa, or unmap it (WIN_UNMAP). */
static void window_set(Rig *r, uint64_t iova, uint64_t gpa, bool invalidate)
{
    for (uint64_t off = 0; off < WIN_SIZE; off += 0x1000) {
        pte_set(r, iova + off, gpa == WIN_UNMAP ? 0 : (gpa + off) | VTD_PTE_RW);
    }
    if (invalidate) {
        iotlb_psi(r, iova, 1);
    }
}

/*
 * Legacy-mode translation for bus 0 / DEVFN, with the page tables'
 * depth from SAGAW, then translation on.  @pre is mapped before the
 * IOMMU is on, so the client finds it by replaying.
 */
static void vtd_enable(Rig *r, bool pre)
{
    uint64_t cap = qtest_readq(r->vm.qts, VTD_BASE + VTD_CAP);
    uint64_t root, ctx;

    /* 3-level (39-bit) if offered, else 4-level (48-bit) */
    if (VTD_CAP_SAGAW(cap) & 2) {
        r->levels = 3;
    } else {
        g_assert(VTD_CAP_SAGAW(cap) & 4);
        r->levels = 4;
    }
    r->next_table = TABLES;
    root = table_alloc(r);
    ctx = table_alloc(r);
    r->top = table_alloc(r);
    qtest_writeq(r->vm.qts, root + 0 * 16, ctx | 1);          /* bus 0, P */
    qtest_writeq(r->vm.qts, ctx + DEVFN * 16, r->top | 1);   /* TT 0, P */
    qtest_writeq(r->vm.qts, ctx + DEVFN * 16 + 8,
                 (r->levels - 2) | (DOMAIN_ID << 8));     /* AW, DID */
    if (pre) {
        window_set(r, IOVA_PRE, GPA_PRE, false);
    }

    qtest_writeq(r->vm.qts, VTD_BASE + VTD_RTADDR, root);
    qtest_writel(r->vm.qts, VTD_BASE + VTD_GCMD, VTD_GCMD_SRTP);
    g_assert(qtest_readl(r->vm.qts, VTD_BASE + VTD_GSTS) & VTD_GCMD_SRTP);
    qtest_writeq(r->vm.qts, VTD_BASE + VTD_CCMD,
                 VTD_CCMD_ICC | VTD_CCMD_GLOBAL);
    g_assert(!(qtest_readq(r->vm.qts, VTD_BASE + VTD_CCMD) & VTD_CCMD_ICC));
    qtest_writeq(r->vm.qts, VTD_BASE + VTD_IOTLB,
                 VTD_IOTLB_IVT | VTD_IOTLB_GLOBAL);
    qtest_writel(r->vm.qts, VTD_BASE + VTD_GCMD, VTD_GCMD_TE);
    g_assert(qtest_readl(r->vm.qts, VTD_BASE + VTD_GSTS) & VTD_GCMD_TE);
}

static void fill(uint8_t *buf, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++) {
        buf[i] = i * 7 + (i >> 8) + seed;
    }
}

/*
 * Guest RAM → edu → guest RAM through the window at @iova (backed by
 * @gpa), with transfers that cross its page boundary.
 */
static void check_window_works(Rig *r, uint64_t iova, uint64_t gpa,
                               unsigned seed)
{
    uint8_t pattern[3000], back[3000];

    fill(pattern, sizeof(pattern), seed);
    qtest_memset(r->vm.qts, gpa, 0, WIN_SIZE);
    qtest_memwrite(r->vm.qts, gpa + 0x800, pattern, sizeof(pattern));
    edu_dma(r->vm.dev, r->vm.bar, iova + 0x800, EDU_DMA_BUF, sizeof(pattern),
            false);
    edu_dma(r->vm.dev, r->vm.bar, EDU_DMA_BUF, iova + 0x1100, sizeof(pattern),
            true);
    qtest_memread(r->vm.qts, gpa + 0x1100, back, sizeof(back));
    g_assert(memcmp(pattern, back, sizeof(back)) == 0);
}

/* A device-to-memory DMA at @iova leaves guest RAM at @gpa untouched. */
static void check_dma_blocked(Rig *r, uint64_t iova, uint64_t gpa)
{
    uint8_t before[3000], after[3000];

    /* edu's buffer holds a pattern from an earlier transfer */
    qtest_memset(r->vm.qts, gpa, 0x5a, sizeof(before));
    qtest_memread(r->vm.qts, gpa, before, sizeof(before));
    edu_dma(r->vm.dev, r->vm.bar, EDU_DMA_BUF, iova, sizeof(before), true);
    qtest_memread(r->vm.qts, gpa, after, sizeof(after));
    g_assert(memcmp(before, after, sizeof(after)) == 0);
    /* and the client is still alive and serving the device */
    g_assert_cmphex(edu_rd(r, EDU_ID) & 0xff, ==, 0xed);
}

/*
 * Did the client send the server a DMA_UNMAP of [iova, iova + size)?
 * In secure mode the client's own vIOMMU translation would stop a stale
 * mapping too, so the guest-visible checks alone cannot tell.
 */
static bool client_unmapped(Rig *r, uint64_t iova, uint64_t size)
{
    g_autofree char *log = NULL;
    g_autofree char *line = g_strdup_printf(
        "vfio_user_pci_dma_unmap iova 0x%" PRIx64 " size 0x%" PRIx64 "\n",
        iova, size);

    g_assert(g_file_get_contents(r->vm.log, &log, NULL, NULL));
    return strstr(log, line) != NULL;
}

/*
 * Only the windows the guest mapped reach the server: one mapped before
 * translation was on (replay), one mapped and then unmapped after (MAP
 * and UNMAP notifications), and guest-RAM addresses never mapped.
 */
static void test_windows(gconstpointer opaque)
{
    DmaMode mode = GPOINTER_TO_INT(opaque);
    Rig r;

    rig_start(&r, mode);
    /* before translation is on, bus addresses are guest RAM */
    check_window_works(&r, GPA_OTHER, GPA_OTHER, 1);

    vtd_enable(&r, true);
    check_window_works(&r, IOVA_PRE, GPA_PRE, 2);
    /* nothing is mapped at IOVA_WIN yet */
    check_dma_blocked(&r, IOVA_WIN, GPA_WIN);
    /* guest RAM's own address, never mapped: no access, even in fd mode */
    check_dma_blocked(&r, GPA_OTHER, GPA_OTHER);

    window_set(&r, IOVA_WIN, GPA_WIN, true);
    check_window_works(&r, IOVA_WIN, GPA_WIN, 3);

    /* the unmap revokes it, and the other window is untouched */
    g_assert(!client_unmapped(&r, IOVA_WIN, 0x1000));
    window_set(&r, IOVA_WIN, WIN_UNMAP, true);
    g_assert(client_unmapped(&r, IOVA_WIN, 0x1000));
    g_assert(client_unmapped(&r, IOVA_WIN + 0x1000, 0x1000));
    check_dma_blocked(&r, IOVA_WIN, GPA_WIN);
    check_dma_blocked(&r, IOVA_WIN + 0x1000, GPA_WIN + 0x1000);
    check_window_works(&r, IOVA_PRE, GPA_PRE, 4);

    /* and it can be mapped again, elsewhere */
    window_set(&r, IOVA_WIN, GPA_OTHER, true);
    check_window_works(&r, IOVA_WIN, GPA_OTHER, 5);
    edu_rig_stop(&r.vm);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    for (int m = DMA_FD; m <= DMA_SECURE; m++) {
        g_autofree char *p = g_strdup_printf("/vfio-user/viommu/windows/%s",
                                             mode_names[m]);
        qtest_add_data_func(p, GINT_TO_POINTER(m), test_windows);
    }
    return g_test_run();
}
