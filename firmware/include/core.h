/* SPDX-License-Identifier: MIT */
/*
 * core.h - internals shared by the firmware core (boot, vectors, MMU, SMP,
 * console). Not part of the scenario API (that is shootdown.h). Parts of it
 * are included by the assembly files.
 */
#ifndef CORE_H
#define CORE_H

#define STACK_SIZE	0x4000	/* per-CPU thread stack (runs on SP_EL0) */
#define EXC_STACK_SIZE	0x2000	/* per-CPU exception stack (SP_EL1) */
#define KVA_OFFSET	0xffffffff80000000	/* VA - PA in the linear map */
#define UART_PA		0x09000000UL
#define GIC_PA		0x08000000UL	/* GICv2 distributor, CPU if at +0x10000 */
#define DEV_PA_START	0x08000000UL	/* device window mapped at KVA_DEV_BASE + PA */
#define DEV_PA_END	0x0a000000UL

/*
 * The batch region (docs/protocol.md, BATCH): the top BATCH_REGION_SIZE
 * bytes of the RAM window (RAM_PA_BASE up to the end of RAM or of the linear
 * map, whichever is first), kept out of the page pool so that a blob QEMU's
 * loader device put there before boot survives. Only when the window is at
 * least BATCH_MIN_WINDOW, so small guests keep their whole pool. The host
 * computes the same address from the guest's -m (session.py).
 */
#define BATCH_REGION_SIZE	0x400000UL	/* 4 MiB: ~10 000 small scenarios */
#define BATCH_MIN_WINDOW	0x4000000UL	/* 64 MiB */

/* struct boot_params offsets (start.S reads it with the MMU off). */
#define BP_MAIR		0
#define BP_TCR_BOOT	8	/* TCR with TTBR0 walks on, for the identity map */
#define BP_TCR		16	/* TCR to run with (EPD0=1) */
#define BP_IDMAP	24	/* TTBR0 value of the identity map */
#define BP_TTBR1	32
#define BP_SCTLR	40

/* Exception frame layout (vectors.S): x0..x30, elr, spsr, esr, far. */
#define FRAME_ELR	(31 * 8)
#define FRAME_SPSR	(32 * 8)
#define FRAME_ESR	(33 * 8)
#define FRAME_FAR	(34 * 8)
#define FRAME_SIZE	(36 * 8)

#ifndef __ASSEMBLY__
#include <stdint.h>
#include "shootdown.h"

struct boot_params {
	uint64_t mair, tcr_boot, tcr, idmap, ttbr1, sctlr;
};
extern struct boot_params boot_params;

struct exc_frame {
	uint64_t x[31];
	uint64_t elr, spsr, esr, far;
	uint64_t pad;
};

extern char __image_start[], __image_end[], __bss_start[], __bss_end[];
extern char __build_id_note_start[], __build_id_note_end[];
extern char vectors[], secondary_entry[];

/* head.c (MMU off): features, boot tables, boot_params. */
void head_init(void);
/* mmu.c (MMU on): drop the identity-map leftovers, start the page pool. */
void mmu_init_late(void);
/* The batch region's PA and size; false if this guest has none. */
bool mmu_batch_region(uint64_t *pa, uint64_t *size);
void cpu_features_init(void);

/* uart.c: polled PL011. uart_use_va() after the MMU is on. */
void uart_init(void);
void uart_use_va(void);
void uart_putc(char c);
int uart_getc(void);	/* -1 if nothing pending */

/* report.c */
void report_banner(void);
void report_set_command(const char *word);
void report_fault(int cpu, const char *vector, const struct exc_frame *f);
void report_end(const char *status) __attribute__((noreturn));

/* gic.c: GICv2 used only to wake CPUs from WFI (no interrupt is taken). */
bool gic_ready(void);
void gic_init(void);
uint32_t gic_secondary_init(void);
void gic_send_sgi0(uint32_t target_mask);
void gic_wait(void);
void gic_quiesce(void);
void uart_enable_rx_irq(void);

/* fdt.c */
uint64_t fdt_ram_size(const void *fdt, uint64_t base);

/* smp.c */
void smp_boot_secondaries(void);
void secondary_main(uint64_t cpu) __attribute__((noreturn));

/* probe.c */
int probe_fixup(struct exc_frame *f);
#endif

#endif /* CORE_H */
