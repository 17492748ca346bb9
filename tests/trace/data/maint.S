// Test program for the QEMU trace reader: a known sequence of TLBI/DSB/ISB
// with known operands, on the boot CPU with the MMU off, then PSCI SYSTEM_OFF.
// The loop issues `tlbi vale1is` three times with operands 0x1000, 0x1001,
// 0x1002 (the register changes between executions of the same instruction).
	.text
	.globl _start
	.type _start, %function
_start:
	mov	x1, #0x1000
	mov	x2, #3
	dsb	ishst
1:	tlbi	vale1is, x1
	add	x1, x1, #1
	subs	x2, x2, #1
	b.ne	1b
	dsb	ish
	bl	kernel_flush
	mov	x0, #0x0008
	movk	x0, #0x8400, lsl #16
	hvc	#0			// PSCI SYSTEM_OFF
	b	.
	.size _start, . - _start

	.type kernel_flush, %function
kernel_flush:
	movz	x3, #0xbeef
	movk	x3, #0xffff, lsl #48
	dsb	ishst
	tlbi	vaale1is, x3
	tlbi	vmalle1is
	dsb	ish
	isb
	ret
	.size kernel_flush, . - kernel_flush
