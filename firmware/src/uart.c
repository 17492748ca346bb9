// SPDX-License-Identifier: MIT
/*
 * uart.c - polled PL011 (ARM DDI 0183) at QEMU virt's 0x09000000: physical
 * address while the MMU is off, its device mapping at KVA_DEV_BASE + PA
 * after. No interrupts, no DMA.
 */
#include "core.h"
#include "asm/barrier.h"

#define UART_DR		0x00
#define UART_FR		0x18
#define UART_LCR_H	0x2c
#define UART_CR		0x30
#define UART_IMSC	0x38
#define IMSC_RXIM	(1u << 4)	/* receive interrupt */
#define IMSC_RTIM	(1u << 6)	/* receive timeout interrupt */
#define FR_RXFE		(1u << 4)	/* receive FIFO empty */
#define FR_TXFF		(1u << 5)	/* transmit FIFO full */
#define LCR_H_FEN	(1u << 4)	/* FIFOs on */
#define LCR_H_WLEN8	(3u << 5)
#define CR_UARTEN	(1u << 0)
#define CR_TXE		(1u << 8)
#define CR_RXE		(1u << 9)

static volatile uint32_t *uart_base = (volatile uint32_t *)UART_PA;
/* Bytes that arrived before uart_init turned the FIFOs on. */
static unsigned char early[4096];
static unsigned early_len, early_pos;

static inline uint32_t uart_read(unsigned off)
{
	return uart_base[off / 4];
}

static inline void uart_write(unsigned off, uint32_t v)
{
	uart_base[off / 4] = v;
}

/*
 * QEMU's PL011 starts with its FIFOs off (one byte of buffer, refilled from
 * the host as soon as it is read) and empties them whenever LCR_H.FEN
 * changes: first drain whatever the host already sent. The host should send
 * nothing before READY (docs/protocol.md); this only makes an early sender's
 * first 4 KiB survive.
 */
void uart_init(void)
{
	uart_write(UART_IMSC, 0);			/* polled: no interrupts */
	while (early_len < sizeof(early) && !(uart_read(UART_FR) & FR_RXFE))
		early[early_len++] = (unsigned char)uart_read(UART_DR);
	uart_write(UART_LCR_H, LCR_H_FEN | LCR_H_WLEN8);	/* 8N1, FIFOs */
	uart_write(UART_CR, CR_UARTEN | CR_TXE | CR_RXE);
}

/* Raise the RX line when a byte arrives (gic.c turns it into a WFI wake-up). */
void uart_enable_rx_irq(void)
{
	uart_write(UART_IMSC, IMSC_RXIM | IMSC_RTIM);
}

void uart_use_va(void)
{
	uart_base = (volatile uint32_t *)(KVA_DEV_BASE + UART_PA);
}

void uart_putc(char c)
{
	while (uart_read(UART_FR) & FR_TXFF)
		cpu_relax();
	uart_write(UART_DR, (unsigned char)c);
}

int uart_getc(void)
{
	if (early_pos < early_len)
		return early[early_pos++];
	if (uart_read(UART_FR) & FR_RXFE)
		return -1;
	return (int)(uart_read(UART_DR) & 0xff);
}
