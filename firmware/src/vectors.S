/* SPDX-License-Identifier: MIT */
/*
 * vectors.S - the EL1 exception vector table (Arm ARM D1.10.2: four groups
 * of sync/IRQ/FIQ/SError, 0x80 bytes each, table 2 KiB aligned).
 *
 * Firmware C code runs in EL1t (SP_EL0), so every expected exception comes
 * through group 0 ("current EL with SP_EL0") and is handled on SP_EL1, the
 * per-CPU exception stack. An exception in group 1 ("current EL with
 * SP_ELx") means the handler itself faulted: power off at once, touching
 * neither memory nor the stack. Groups 2/3 (lower EL) cannot happen: no EL0
 * code runs; they are reported as unexpected.
 */
#include "core.h"
#include "asm/psci.h"

/* Save the interrupted context on SP_EL1 and call exc_handler(frame, n). */
.macro	entry, n
	.balign	0x80
	sub	sp, sp, #FRAME_SIZE
	stp	x0, x1, [sp, #0]
	mov	x0, #\n
	b	exc_common
.endm

/* A fault in the fault handler: SYSTEM_OFF without stack or memory. */
.macro	recursive
	.balign	0x80
	movz	x0, #(PSCI_SYSTEM_OFF & 0xffff)
	movk	x0, #(PSCI_SYSTEM_OFF >> 16), lsl #16
	hvc	#0
	b	.
.endm

	.section .text.vectors, "ax"
	.balign	0x800
	.global	vectors
vectors:
	entry	0		// EL1t sync: probes, and unexpected aborts
	entry	1		// EL1t IRQ
	entry	2		// EL1t FIQ
	entry	3		// EL1t SError
	recursive		// EL1h sync: the handler faulted
	recursive		// EL1h IRQ
	recursive		// EL1h FIQ
	recursive		// EL1h SError
	entry	8		// EL0 AArch64 (never: no EL0 code)
	entry	9
	entry	10
	entry	11
	entry	12		// EL0 AArch32 (never)
	entry	13
	entry	14
	entry	15

exc_common:
	stp	x2, x3, [sp, #16]
	stp	x4, x5, [sp, #32]
	stp	x6, x7, [sp, #48]
	stp	x8, x9, [sp, #64]
	stp	x10, x11, [sp, #80]
	stp	x12, x13, [sp, #96]
	stp	x14, x15, [sp, #112]
	stp	x16, x17, [sp, #128]
	stp	x18, x19, [sp, #144]
	stp	x20, x21, [sp, #160]
	stp	x22, x23, [sp, #176]
	stp	x24, x25, [sp, #192]
	stp	x26, x27, [sp, #208]
	stp	x28, x29, [sp, #224]
	mrs	x1, elr_el1
	stp	x30, x1, [sp, #240]
	mrs	x1, spsr_el1
	mrs	x2, esr_el1
	stp	x1, x2, [sp, #FRAME_SPSR]
	mrs	x1, far_el1
	str	x1, [sp, #FRAME_FAR]
	mov	x1, x0			// vector number
	mov	x0, sp			// frame
	bl	exc_handler		// returns only if the exception was handled
	ldp	x30, x1, [sp, #240]
	msr	elr_el1, x1		// possibly redirected by the probe fixup
	ldr	x1, [sp, #FRAME_SPSR]
	msr	spsr_el1, x1
	ldp	x0, x1, [sp, #0]
	ldp	x2, x3, [sp, #16]
	ldp	x4, x5, [sp, #32]
	ldp	x6, x7, [sp, #48]
	ldp	x8, x9, [sp, #64]
	ldp	x10, x11, [sp, #80]
	ldp	x12, x13, [sp, #96]
	ldp	x14, x15, [sp, #112]
	ldp	x16, x17, [sp, #128]
	ldp	x18, x19, [sp, #144]
	ldp	x20, x21, [sp, #160]
	ldp	x22, x23, [sp, #176]
	ldp	x24, x25, [sp, #192]
	ldp	x26, x27, [sp, #208]
	ldp	x28, x29, [sp, #224]
	add	sp, sp, #FRAME_SIZE
	eret			// context synchronizing: back to EL1t

/*
 * probe_read(va, val): In: x0 = VA, x1 = where to store the value.
 * Out: x0 = 0 loaded, 1 faulted (the vector moved ELR to probe_fault).
 * Clobbers x2. The load is the only instruction whose fault is expected.
 */
	.section .text.probe, "ax"
	.global	probe_read, probe_insn, probe_fault
probe_read:
probe_insn:
	ldr	x2, [x0]
	str	x2, [x1]
	mov	x0, #0
	ret
probe_fault:
	mov	x0, #1
	ret
