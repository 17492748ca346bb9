/* SPDX-License-Identifier: MIT */
/*
 * asm/barrier.h - memory and context barriers (Arm ARM B2.3.12 DMB, B2.3.13
 * DSB, C6.2.102 ISB). One line each; the caller states why on its line.
 */
#ifndef ASM_BARRIER_H
#define ASM_BARRIER_H

#define isb()		asm volatile("isb" ::: "memory")
#define dsb(opt)	asm volatile("dsb " #opt ::: "memory")
#define dmb(opt)	asm volatile("dmb " #opt ::: "memory")
#define sev()		asm volatile("sev" ::: "memory")
#define sevl()		asm volatile("sevl" ::: "memory")
#define wfe()		asm volatile("wfe" ::: "memory")
#define wfi()		asm volatile("wfi" ::: "memory")
#define cpu_relax()	asm volatile("yield" ::: "memory")
#define barrier()	asm volatile("" ::: "memory")

/* Acquire load / release store (LDAR / STLR) of any 1..8-byte scalar. */
#define load_acquire(p)		__atomic_load_n((p), __ATOMIC_ACQUIRE)
#define store_release(p, v)	__atomic_store_n((p), (v), __ATOMIC_RELEASE)

#define READ_ONCE(x)	(*(const volatile __typeof__(x) *)&(x))
#define WRITE_ONCE(x, v) (*(volatile __typeof__(x) *)&(x) = (v))

#endif /* ASM_BARRIER_H */
