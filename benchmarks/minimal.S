/* The smallest payload that does what a boot-to-verdict run must: print one
 * line on the virt machine's PL011 and power off through PSCI SYSTEM_OFF.
 * The raw-QEMU baseline of benchmarks/boot_latency.py, and a known-good ELF
 * for tests/test_firmware_elf.py.  Link at 0x40080000 with --build-id. */
	.section .text.boot, "ax"
	.global _start
_start:
	ldr	x1, =0x09000000		/* PL011 data register on -M virt */
	adr	x2, msg
1:	ldrb	w3, [x2], #1
	cbz	w3, 2f
	strb	w3, [x1]		/* QEMU's PL011 needs no FIFO polling */
	b	1b
2:	ldr	x0, =0x84000008		/* PSCI SYSTEM_OFF */
	hvc	#0
3:	wfi
	b	3b
msg:	.asciz	"minimal payload: up\n"
