/*
 * The edu device's registers (hw/misc/edu.c), for the vfio-user qtests.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef TESTS_QTEST_VFIO_USER_EDU_H
#define TESTS_QTEST_VFIO_USER_EDU_H

#define EDU_ID              0x00
#define EDU_LIVENESS        0x04
#define EDU_FACT            0x08
#define EDU_STATUS          0x20
#define EDU_STATUS_BUSY     0x01
#define EDU_IRQ_STATUS      0x24
#define EDU_IRQ_RAISE       0x60
#define EDU_IRQ_ACK         0x64
#define EDU_DMA_SRC         0x80
#define EDU_DMA_DST         0x88
#define EDU_DMA_CNT         0x90
#define EDU_DMA_CMD         0x98
#define EDU_DMA_BUF         0x40000
#define EDU_DMA_RUN         1
#define EDU_DMA_TO_PCI      2
#define EDU_DMA_IRQ         4

#ifdef LIBQOS_PCI_H
/* Wait for @off & @mask to read 0 (edu works on timers and threads). */
static inline void edu_wait_clear(QPCIDevice *dev, QPCIBar bar, uint64_t off,
                                  uint32_t mask)
{
    for (int i = 0; i < 500; i++) {
        if (!(qpci_io_readl(dev, bar, off) & mask)) {
            return;
        }
        g_usleep(10 * 1000);
    }
    g_error("edu register 0x%" PRIx64 " stuck at 0x%x", off,
            qpci_io_readl(dev, bar, off));
}

/* One DMA of the edu engine, to or from its buffer, waited for. */
static inline void edu_dma(QPCIDevice *dev, QPCIBar bar, uint64_t src,
                           uint64_t dst, uint32_t len, bool to_pci)
{
    qpci_io_writeq(dev, bar, EDU_DMA_SRC, src);
    qpci_io_writeq(dev, bar, EDU_DMA_DST, dst);
    qpci_io_writeq(dev, bar, EDU_DMA_CNT, len);
    qpci_io_writeq(dev, bar, EDU_DMA_CMD,
                   EDU_DMA_RUN | (to_pci ? EDU_DMA_TO_PCI : 0));
    edu_wait_clear(dev, bar, EDU_DMA_CMD, EDU_DMA_RUN);
}

#include "vm-helpers.h"

/* edu in a remote process, and the client VM that drives it */
typedef struct EduRig {
    char *dir;
    char *sock;
    char *log;              /* for the client's -D */
    GPid remote;
    QTestState *qts;
    QPCIBus *bus;
    QPCIDevice *dev;
    QPCIBar bar;
} EduRig;

/*
 * Serve edu on a socket in a new temporary directory named after
 * @prefix; the caller then starts r->qts with r->sock (and r->log).
 */
static inline void edu_rig_serve(EduRig *r, const char *prefix)
{
    g_autofree char *tmpl = g_strdup_printf("%s-XXXXXX", prefix);

    r->dir = g_dir_make_tmp(tmpl, NULL);
    g_assert(r->dir);
    r->sock = g_strdup_printf("%s/edu.sock", r->dir);
    r->log = g_strdup_printf("%s/client.log", r->dir);
    r->remote = vu_spawn_remote(r->sock, "e0", "edu,id=e0");
}

/* Find the client's edu at @devfn, enabled, with its 1 MiB BAR 0 mapped. */
static inline void edu_rig_attach(EduRig *r, int devfn)
{
    uint64_t size;

    r->bus = qpci_new_pc(r->qts, NULL);
    r->dev = vu_find_dev(r->bus, devfn);
    r->bar = qpci_iomap(r->dev, 0, &size);
    g_assert_cmpuint(size, ==, 1024 * 1024);
}

static inline void edu_rig_stop(EduRig *r)
{
    g_free(r->dev);
    qpci_free_pc(r->bus);
    qtest_quit(r->qts);
    vu_stop_server(r->remote);
    unlink(r->sock);
    unlink(r->log);
    rmdir(r->dir);
    g_free(r->log);
    g_free(r->sock);
    g_free(r->dir);
}
#endif

#endif /* TESTS_QTEST_VFIO_USER_EDU_H */
