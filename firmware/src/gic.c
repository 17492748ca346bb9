// SPDX-License-Identifier: MIT
/*
 * gic.c - just enough GICv2 (Arm IHI 0048B) to sleep instead of spin.
 *
 * Under QEMU's multi-threaded TCG, WFE is a no-op and a polling loop keeps a
 * host core busy, so an idle guest with N CPUs would burn N host cores while
 * it waits for the host. Instead, with interrupts still masked in PSTATE,
 * CPUs wait in WFI, which wakes on any interrupt *pending* at the CPU
 * interface (Arm ARM D1.16.2, WFI wake-up events): SGI 0 wakes a parked
 * secondary, the PL011 receive interrupt (SPI 1, INTID 33) wakes CPU0 when
 * the host sends a line. Nothing is ever taken as an exception; the pending
 * state is cleared by acknowledging (IAR, EOIR).
 *
 * Only a GICv2 (QEMU virt's default) is driven; with another GIC (e.g.
 * -M virt,gic-version=3) gic_ready() is false and callers poll instead.
 */
#include "core.h"
#include "asm/barrier.h"

#define GICD		((volatile uint32_t *)(KVA_DEV_BASE + GIC_PA))
#define GICC		((volatile uint32_t *)(KVA_DEV_BASE + GIC_PA + 0x10000))
#define GICD_CTLR	(0x000 / 4)
#define GICD_ISENABLER	(0x100 / 4)	/* + n: INTIDs 32n..32n+31 */
#define GICD_ITARGETSR	(0x800 / 4)	/* + n: INTIDs 4n..4n+3, a byte each */
#define GICD_SGIR	(0xf00 / 4)
#define GICD_PIDR2	(0xfe8 / 4)
#define GICC_CTLR	(0x000 / 4)
#define GICC_PMR	(0x004 / 4)
#define GICC_IAR	(0x00c / 4)
#define GICC_EOIR	(0x010 / 4)
#define INTID_SPURIOUS	1020
#define INTID_UART	33		/* QEMU virt: PL011 on SPI 1 */

static bool gic_v2;

bool gic_ready(void)
{
	return gic_v2;
}

/* This CPU's interface: SGI 0 enabled, all priorities let through. */
static void gic_cpu_init(void)
{
	GICD[GICD_ISENABLER] = 1u << 0;	/* SGI 0 (banked per CPU) */
	GICC[GICC_PMR] = 0xf0;		/* priority 0 (the reset value) passes */
	GICC[GICC_CTLR] = 1;		/* signal group 0 to this CPU */
}

void gic_init(void)
{
	uint32_t arch = (GICD[GICD_PIDR2] >> 4) & 0xf;

	if (arch != 2)
		return;	/* not a GICv2: everybody polls */
	GICD[GICD_CTLR] = 1;
	GICD[GICD_ITARGETSR + INTID_UART / 4] = 1u << (8 * (INTID_UART % 4)); /* CPU0 */
	GICD[GICD_ISENABLER + INTID_UART / 32] = 1u << (INTID_UART % 32);
	gic_cpu_init();
	gic_v2 = true;
}

/* Secondary: set up its interface; returns its SGI target mask (or 0). */
uint32_t gic_secondary_init(void)
{
	if (!gic_v2)
		return 0;
	gic_cpu_init();
	return GICD[GICD_ITARGETSR] & 0xff;	/* reads back this CPU's own bit */
}

void gic_send_sgi0(uint32_t target_mask)
{
	dsb(ishst);	/* mailbox stores visible before the SGI can wake anyone */
	GICD[GICD_SGIR] = target_mask << 16;	/* SGI 0 to the listed CPUs */
}

/* Sleep until something is pending, then clear every pending interrupt. */
void gic_wait(void)
{
	wfi();
	for (int i = 0; i < 8; i++) {
		uint32_t iar = GICC[GICC_IAR];

		if ((iar & 0x3ff) >= INTID_SPURIOUS)
			break;
		GICC[GICC_EOIR] = iar;
	}
}

/* Stop this CPU's interface from signalling anything (DEBUG hang). */
void gic_quiesce(void)
{
	if (gic_v2)
		GICC[GICC_CTLR] = 0;
}
