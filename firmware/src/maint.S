/* SPDX-License-Identifier: MIT */
/*
 * maint.S - the teardown's maintenance instructions, one stub each.
 *
 * oplog.c's op_tlbi/op_dsb/op_isb call these with a direct BL. The stubs
 * sit alone on their own 4 KiB page(s), away from every caller, for the
 * execution trace (shootdown run --trace): QEMU chains a direct branch into
 * the target block only when both are on the same page, so every entry into
 * a stub goes through QEMU's block lookup, which logs it (-d exec) with the
 * registers (-d cpu) - without -d nochain or -singlestep, which would slow
 * every block of the guest. Each stub's block starts at its maintenance
 * instruction, so the logged X0 is the TLBI operand.
 *
 * In:  x0 = TLBI operand (ignored by VMALLE1IS and the XZR form). Out: nothing.
 * Clobbers: none.
 */
	.section .text.maint, "ax"
	.balign	4096

	.macro	stub name, insn:vararg
	.global	\name
	.type	\name, %function
\name:
	\insn
	ret
	.size	\name, . - \name
	.endm

/* TLBI: SYS #0, C8, CRm, #op2 (C3: by VA/ASID; C2: range forms, FEAT_TLBIRANGE) */
	stub	maint_tlbi_vmalle1is,	sys #0, c8, c3, #0
	stub	maint_tlbi_vae1is,	sys #0, c8, c3, #1, x0
	stub	maint_tlbi_aside1is,	sys #0, c8, c3, #2, x0
	stub	maint_tlbi_vaae1is,	sys #0, c8, c3, #3, x0
	stub	maint_tlbi_vale1is,	sys #0, c8, c3, #5, x0
	stub	maint_tlbi_vaale1is,	sys #0, c8, c3, #7, x0
	stub	maint_tlbi_rvae1is,	sys #0, c8, c2, #1, x0
	stub	maint_tlbi_rvaae1is,	sys #0, c8, c2, #3, x0
	stub	maint_tlbi_rvale1is,	sys #0, c8, c2, #5, x0
	stub	maint_tlbi_rvaale1is,	sys #0, c8, c2, #7, x0
/* Rt = XZR: no operand (ARM64_WORKAROUND_REPEAT_TLBI's sync from v7.1, __tlbi_sync_s1ish) */
	stub	maint_tlbi_vale1is_xzr,	sys #0, c8, c3, #5, xzr

/* DSB <option> and ISB */
	stub	maint_dsb_ishst,	dsb ishst
	stub	maint_dsb_ish,		dsb ish
	stub	maint_dsb_nshst,	dsb nshst
	stub	maint_dsb_nsh,		dsb nsh
	stub	maint_dsb_sy,		dsb sy
	stub	maint_isb,		isb

	.balign	4096	/* nothing else on the stubs' page */
