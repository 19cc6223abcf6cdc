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

#endif /* TESTS_QTEST_VFIO_USER_EDU_H */
