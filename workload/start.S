/*
 * start.S: the entry point and the few routines C cannot express.
 *
 * _start        In: sp -> argc, argv[], 0, envp[], 0, auxv[] (the ELF ABI's
 *               initial stack). Calls main(sp) and exits with its value.
 * spawn_thread  long spawn_thread(unsigned long flags, void *stack_top,
 *                                 void (*fn)(void *), void *arg)
 *               clone(2) whose child runs fn(arg) on stack_top, then exits
 *               (the thread alone). Returns the child's tid, or -errno.
 * probe_read    int probe_read(const volatile void *addr)
 *               One user load (LDRB) from addr. Returns 0 if it read, 1 if
 *               it faulted: the SIGSEGV handler recognises probe_insn as the
 *               faulting PC, sets x0 = 1 and resumes after it.
 * sigreturn_restorer  the SA_RESTORER trampoline: rt_sigreturn(2).
 */
#define SYS_clone         220
#define SYS_exit          93
#define SYS_rt_sigreturn  139

	.text
	.global _start
	.type _start, %function
_start:
	mov	x29, #0
	mov	x30, #0
	mov	x0, sp
	and	sp, x0, #~15
	bl	main
	mov	x8, #94			/* exit_group(main's value) */
	svc	#0
	b	.
	.size _start, . - _start

	.global spawn_thread
	.type spawn_thread, %function
spawn_thread:
	stp	x2, x3, [x1, #-16]!	/* fn and arg, on the child's stack */
	mov	x8, #SYS_clone		/* clone(flags, newsp, ptid, tls, ctid) */
	mov	x2, xzr
	mov	x3, xzr
	mov	x4, xzr
	svc	#0
	cbnz	x0, 1f			/* parent, or -errno */
	ldp	x1, x0, [sp], #16	/* child: x1 = fn, x0 = arg */
	blr	x1
	mov	x0, #0
	mov	x8, #SYS_exit		/* this thread only */
	svc	#0
	b	.
1:	ret
	.size spawn_thread, . - spawn_thread

	.global probe_read
	.global probe_insn
	.type probe_read, %function
probe_read:
	mov	x1, x0
	mov	x0, #0
probe_insn:
	ldrb	w2, [x1]		/* the probe: a user load through this CPU's TLB */
	ret
	.size probe_read, . - probe_read

	.global sigreturn_restorer
	.type sigreturn_restorer, %function
sigreturn_restorer:
	mov	x8, #SYS_rt_sigreturn
	svc	#0
	.size sigreturn_restorer, . - sigreturn_restorer
