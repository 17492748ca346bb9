/* SPDX-License-Identifier: MIT */
/*
 * start.S - boot path of CPU0 and of the secondaries.
 *
 * The image is linked at KVA_RAM_BASE + 2 MiB but entered at its physical
 * address with the MMU off, so until the branch to the high VA every address
 * is computed PC-relative (ADR/ADRP) and is therefore physical. head_init()
 * (C, MMU off) builds two sets of tables: TTBR1 for the firmware's high
 * mapping and a TTBR0 identity map of the image, which keeps the PC valid
 * across the SCTLR.M write. Once at the high VA the identity map is dropped
 * (EPD0=1, local TLBI) and TTBR0 belongs to the scenarios.
 *
 * Stacks: C code runs on SP_EL0 (EL1t); exceptions switch to SP_EL1, a
 * separate per-CPU exception stack, so a corrupt thread stack cannot stop a
 * FAULT report, and an exception taken while on SP_EL1 (a fault in the fault
 * handler) lands in the "current EL, SP_ELx" vectors, which power off.
 */
#include "core.h"
#include "asm/psci.h"

	.section .text.boot, "ax"

/* Load the absolute (linked, high) address of sym. */
.macro	ldr_va, reg, sym
	ldr	\reg, =\sym
.endm

/* Load the current-mode address of sym (physical before the MMU is on). */
.macro	adr_l, reg, sym
	adrp	\reg, \sym
	add	\reg, \reg, :lo12:\sym
.endm

	.global	_start
_start:
	msr	daifset, #0xf			// no interrupts while booting
	adr_l	x0, __bss_start			// .bss holds the stacks: zero it first
	adr_l	x1, __bss_end
1:	cmp	x0, x1
	b.hs	2f
	stp	xzr, xzr, [x0], #16
	b	1b
2:	mov	x0, #0
	adr_l	x1, cpu_stacks
	adr_l	x2, exc_stacks
	bl	set_stacks			// physical stacks, C on SP_EL0
	mrs	x0, CurrentEL
	cmp	x0, #(1 << 2)
	b.ne	wrong_el			// only EL1 is supported
	adr_l	x0, vectors
	msr	vbar_el1, x0			// physical vectors until the MMU is on
	msr	tpidr_el1, xzr			// logical CPU 0
	isb					// VBAR in force before any C code faults
	bl	head_init			// MMU off; returns only if we can go on
	adr_l	x0, boot_params
	bl	enable_mmu			// returns to the high VA
	bl	drop_idmap
	mov	x0, #0
	b	enter_c				// fw_main() on CPU0's stacks

wrong_el:
	bl	head_wrong_el			// BEGIN, ERR, END; SYSTEM_OFF by SMC
1:	wfi
	b	1b

/*
 * secondary_entry: PSCI CPU_ON target (physical). In: x0 = logical CPU
 * number (the context id). MMU off, caches off, nothing set up.
 */
	.global	secondary_entry
secondary_entry:
	msr	daifset, #0xf			// no interrupts
	mov	x19, x0
	msr	tpidr_el1, x0			// smp_cpu_id()
	adr_l	x1, cpu_stacks
	adr_l	x2, exc_stacks
	bl	set_stacks			// physical stacks, so faults report
	adr_l	x1, vectors
	msr	vbar_el1, x1
	isb					// vectors before anything can fault
	adr_l	x0, boot_params
	bl	enable_mmu
	bl	drop_idmap
	mov	x0, x19
	b	enter_c

/*
 * enable_mmu: In: x0 = physical address of boot_params. Out: returns to the
 * caller's return address moved to the high VA. Clobbers x0..x3. Leaf, no
 * stack (secondaries have none yet).
 */
enable_mmu:
	ldr	x1, [x0, #BP_MAIR]
	msr	mair_el1, x1
	ldr	x1, [x0, #BP_TCR_BOOT]
	msr	tcr_el1, x1
	ldr	x1, [x0, #BP_IDMAP]
	msr	ttbr0_el1, x1
	ldr	x1, [x0, #BP_TTBR1]
	msr	ttbr1_el1, x1
	isb					// MAIR/TCR/TTBRs in force before the TLBI
	tlbi	vmalle1				// nothing stale from before reset
	dsb	nsh				// TLBI done before the MMU goes on
	ldr	x1, [x0, #BP_SCTLR]
	msr	sctlr_el1, x1
	isb					// fetch through the identity map from here
	ldr	x2, =KVA_OFFSET
	add	x30, x30, x2			// return to the high VA
	ret

/*
 * drop_idmap: at the high VA; vectors moved to the high VA, TTBR0 walks off
 * (EPD0=1), TTBR0 = 0, and the identity map's TLB entries thrown away on
 * this CPU. Clobbers x0, x1.
 */
drop_idmap:
	ldr_va	x0, vectors
	msr	vbar_el1, x0
	isb					// high vectors before the idmap goes
	ldr_va	x0, boot_params
	ldr	x1, [x0, #BP_TCR]
	msr	tcr_el1, x1
	msr	ttbr0_el1, xzr
	isb					// no TTBR0 walks before the TLBI
	tlbi	vmalle1				// drop the identity-map entries (local)
	dsb	nsh				// TLBI done before we rely on it
	isb					// and before the next instruction fetch
	ret

/*
 * set_stacks: In: x0 = logical CPU, x1 = cpu_stacks, x2 = exc_stacks (both
 * physical or both virtual). Out: SP_EL1 = top of this CPU's exception
 * stack, SP_EL0 = top of its thread stack, SPSel = 0 (C code on SP_EL0).
 * Clobbers x3, x4. Leaf.
 */
set_stacks:
	msr	spsel, #1
	mov	x3, #EXC_STACK_SIZE
	madd	x4, x0, x3, x2
	add	sp, x4, x3			// SP_EL1: exception stack
	mov	x3, #STACK_SIZE
	madd	x4, x0, x3, x1
	add	x4, x4, x3
	msr	sp_el0, x4			// SP_EL0: thread stack
	msr	spsel, #0
	ret

/*
 * enter_c: In: x0 = logical CPU number, running at the high VA. Moves the
 * stacks to the high VA and calls fw_main (CPU0) or secondary_main
 * (others). Never returns.
 */
enter_c:
	mov	x19, x0
	ldr_va	x1, cpu_stacks
	ldr_va	x2, exc_stacks
	bl	set_stacks
	msr	daifclr, #4			// SError reported (as a FAULT)
	isb					// SPSel/DAIF in force before C code
	mov	x29, #0
	mov	x0, x19
	cbnz	x19, 1f
	bl	fw_main				// does not return
1:	bl	secondary_main			// does not return
	ldr	x0, =PSCI_SYSTEM_OFF		// but if it ever did: power off
	hvc	#0
	b	.

	.ltorg

	.section .bss.stacks, "aw", %nobits
	.balign	16
	.global	cpu_stacks, exc_stacks
cpu_stacks:
	.space	STACK_SIZE * 8
exc_stacks:
	.space	EXC_STACK_SIZE * 8
