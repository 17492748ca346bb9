// Test program for `shootdown lint`: one function per case, built with
// aarch64-linux-gnu-gcc -nostdlib -static at test time.  The good_* functions
// follow the kernel's barrier templates and must be clean; each bad_*
// function breaks exactly one rule and must be reported with that rule.
	.text

// flush_tlb_page: DSB ISHST; TLBI VALE1IS; DSB ISH.
	.globl good_page
	.type good_page, %function
good_page:
	str	xzr, [x0]		// clear the PTE
	dsb	ishst
	tlbi	vale1is, x1
	dsb	ish
	ret
	.size good_page, . - good_page

// A range loop: the kernel's __flush_tlb_range shape.
	.globl good_range
	.type good_range, %function
good_range:
	dsb	ishst
1:	tlbi	vale1is, x0
	add	x0, x0, x2
	cmp	x0, x1
	b.lo	1b
	dsb	ish
	ret
	.size good_range, . - good_range

// flush_tlb_kernel_range: ASID-less, so an ISB after the DSB ISH.
	.globl good_kernel
	.type good_kernel, %function
good_kernel:
	dsb	ishst
	tlbi	vaale1is, x0
	dsb	ish
	isb
	ret
	.size good_kernel, . - good_kernel

// Stack stores (the frame) are not page-table stores.
	.globl good_frame
	.type good_frame, %function
good_frame:
	stp	x29, x30, [sp, #-16]!
	dsb	ishst
	str	x1, [sp, #8]
	tlbi	vae1is, x1
	dsb	ish
	ldp	x29, x30, [sp], #16
	ret
	.size good_frame, . - good_frame

// Rule 1: store, then TLBI with no DSB ISHST.
	.globl bad_no_ishst
	.type bad_no_ishst, %function
bad_no_ishst:
	str	xzr, [x0]
	tlbi	vale1is, x1
	dsb	ish
	ret
	.size bad_no_ishst, . - bad_no_ishst

// Rule 1 from entry: no store inside, still no DSB ISHST before the TLBI.
	.globl bad_entry_no_ishst
	.type bad_entry_no_ishst, %function
bad_entry_no_ishst:
	tlbi	aside1is, x0
	dsb	ish
	ret
	.size bad_entry_no_ishst, . - bad_entry_no_ishst

// Rule 1: a DMB is not a DSB.
	.globl bad_dmb
	.type bad_dmb, %function
bad_dmb:
	str	xzr, [x0]
	dmb	ishst
	tlbi	vale1is, x1
	dsb	ish
	ret
	.size bad_dmb, . - bad_dmb

// Rule 2: no DSB ISH after the TLBI.
	.globl bad_no_ish
	.type bad_no_ish, %function
bad_no_ish:
	dsb	ishst
	tlbi	vale1is, x1
	ret
	.size bad_no_ish, . - bad_no_ish

// Rule 2: DSB ISHST does not complete a TLBI.
	.globl bad_ishst_after
	.type bad_ishst_after, %function
bad_ishst_after:
	dsb	ishst
	tlbi	vale1is, x1
	dsb	ishst
	ret
	.size bad_ishst_after, . - bad_ishst_after

// Rule 3: kernel (ASID-less) invalidation without the ISB.
	.globl bad_no_isb
	.type bad_no_isb, %function
bad_no_isb:
	dsb	ishst
	tlbi	vaale1is, x0
	dsb	ish
	ret
	.size bad_no_isb, . - bad_no_isb

// Rule 3: an ISB *before* the completing DSB does not count.
	.globl bad_isb_early
	.type bad_isb_early, %function
bad_isb_early:
	dsb	ishst
	tlbi	vmalle1is
	isb
	dsb	ish
	ret
	.size bad_isb_early, . - bad_isb_early

// Rule 2 on one path: a branch skips the DSB ISH.
	.globl bad_branch_skips_dsb
	.type bad_branch_skips_dsb, %function
bad_branch_skips_dsb:
	dsb	ishst
	tlbi	vae1is, x0
	cbz	x2, 1f
	dsb	ish
1:	ret
	.size bad_branch_skips_dsb, . - bad_branch_skips_dsb

// Rule 1 on one path: a branch skips the DSB ISHST.
	.globl bad_branch_skips_ishst
	.type bad_branch_skips_ishst, %function
bad_branch_skips_ishst:
	str	xzr, [x0]
	tbnz	x2, #3, 1f
	dsb	ishst
1:	tlbi	vae1is, x1
	dsb	ish
	ret
	.size bad_branch_skips_ishst, . - bad_branch_skips_ishst

// A decidable branch: x3 is 1, so the DSB-skipping path never runs.
	.globl good_dead_path
	.type good_dead_path, %function
good_dead_path:
	mov	w3, #1
	cmp	w3, #2
	b.eq	1f
	dsb	ishst
1:	tlbi	vae1is, x1
	dsb	ish
	ret
	.size good_dead_path, . - good_dead_path

// Helpers: each issues one barrier; the callers below hold the template.
	.type h_dsb_ishst, %function
h_dsb_ishst:
	dsb	ishst
	ret
	.size h_dsb_ishst, . - h_dsb_ishst

	.type h_dsb_ish, %function
h_dsb_ish:
	dsb	ish
	ret
	.size h_dsb_ish, . - h_dsb_ish

	.type h_tlbi, %function
h_tlbi:
	tlbi	vae1is, x0
	ret
	.size h_tlbi, . - h_tlbi

	.globl good_via_helpers
	.type good_via_helpers, %function
good_via_helpers:
	stp	x29, x30, [sp, #-32]!
	str	x19, [sp, #16]
	mov	x19, x1
	str	xzr, [x0]
	bl	h_dsb_ishst
	mov	x0, x19
	bl	h_tlbi
	bl	h_dsb_ish
	ldr	x19, [sp, #16]
	ldp	x29, x30, [sp], #32
	ret
	.size good_via_helpers, . - good_via_helpers

	.globl bad_via_helpers
	.type bad_via_helpers, %function
bad_via_helpers:
	stp	x29, x30, [sp, #-32]!
	str	xzr, [x0]
	mov	x0, x1
	bl	h_tlbi
	bl	h_dsb_ish
	ldp	x29, x30, [sp], #32
	ret
	.size bad_via_helpers, . - bad_via_helpers

// Local (non-broadcast) invalidation: NSH barriers are enough.
	.globl good_local
	.type good_local, %function
good_local:
	dsb	nshst
	tlbi	vmalle1
	dsb	nsh
	isb
	ret
	.size good_local, . - good_local

// ... but not for a broadcast one.
	.globl bad_nsh_for_broadcast
	.type bad_nsh_for_broadcast, %function
bad_nsh_for_broadcast:
	dsb	nshst
	tlbi	vae1is, x0
	dsb	ish
	ret
	.size bad_nsh_for_broadcast, . - bad_nsh_for_broadcast

	.globl _start
	.type _start, %function
_start:
	b	.
	.size _start, . - _start
