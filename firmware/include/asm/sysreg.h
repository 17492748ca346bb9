/* SPDX-License-Identifier: MIT */
/*
 * asm/sysreg.h - system register access and the fields shootdown uses
 * (Arm ARM D13.2: ID_AA64*, SCTLR_EL1, TCR_EL1, ESR_EL1).
 */
#ifndef ASM_SYSREG_H
#define ASM_SYSREG_H

#include <stdint.h>

#define read_sysreg(r)	({ uint64_t v_; asm volatile("mrs %0, " #r : "=r"(v_)); v_; })
#define write_sysreg(r, v) asm volatile("msr " #r ", %0" :: "r"((uint64_t)(v)) : "memory")

/* ID_AA64MMFR0_EL1 */
#define MMFR0_PARANGE(v)	((v) & 0xf)
#define MMFR0_ASIDBITS(v)	(((v) >> 4) & 0xf)	/* 0: 8 bits, 2: 16 bits */
#define MMFR0_TGRAN16(v)	(((v) >> 20) & 0xf)	/* 0: no, 1/2: yes */
#define MMFR0_TGRAN64(v)	(((v) >> 24) & 0xf)	/* 0: yes, 0xf: no */
#define MMFR0_TGRAN4(v)		(((v) >> 28) & 0xf)	/* 0/1: yes, 0xf: no */
/* ID_AA64MMFR2_EL1.TTL: TLBI by VA with a level hint (FEAT_TTL). */
#define MMFR2_TTL(v)		(((v) >> 48) & 0xf)
/* ID_AA64ISAR0_EL1.TLB: 1 outer-shareable ops, 2 also range ops. */
#define ISAR0_TLB(v)		(((v) >> 56) & 0xf)

/* SCTLR_EL1 */
#define SCTLR_M		(1UL << 0)	/* stage 1 MMU */
#define SCTLR_C		(1UL << 2)	/* data cacheability */
#define SCTLR_SA	(1UL << 3)	/* SP alignment check, EL1 */
#define SCTLR_SA0	(1UL << 4)	/* SP alignment check, EL0 */
#define SCTLR_I		(1UL << 12)	/* instruction cacheability */
#define SCTLR_RES1	((1UL << 11) | (1UL << 20) | (3UL << 22) | (3UL << 28))
#define SCTLR_VALUE	(SCTLR_RES1 | SCTLR_M | SCTLR_C | SCTLR_SA | SCTLR_SA0 | SCTLR_I)

/* TCR_EL1 */
#define TCR_T0SZ(bits)	((64UL - (bits)) << 0)
#define TCR_T0SZ_MASK	(0x3fUL << 0)
#define TCR_EPD0	(1UL << 7)	/* no TTBR0 walks */
#define TCR_IRGN0_WBWA	(1UL << 8)
#define TCR_ORGN0_WBWA	(1UL << 10)
#define TCR_SH0_INNER	(3UL << 12)
#define TCR_TG0_MASK	(3UL << 14)
#define TCR_TG0_4K	(0UL << 14)
#define TCR_TG0_64K	(1UL << 14)
#define TCR_TG0_16K	(2UL << 14)
#define TCR_T1SZ(bits)	((64UL - (bits)) << 16)
#define TCR_A1		(1UL << 22)	/* ASID from TTBR1 (we keep 0: TTBR0) */
#define TCR_EPD1	(1UL << 23)
#define TCR_IRGN1_WBWA	(1UL << 24)
#define TCR_ORGN1_WBWA	(1UL << 26)
#define TCR_SH1_INNER	(3UL << 28)
#define TCR_TG1_16K	(1UL << 30)
#define TCR_TG1_4K	(2UL << 30)
#define TCR_TG1_64K	(3UL << 30)
#define TCR_IPS(x)	((uint64_t)(x) << 32)
#define TCR_AS		(1UL << 36)	/* 16-bit ASIDs */

#define TTBR_ASID_SHIFT	48

/* ESR_EL1 */
#define ESR_EC(esr)		(((esr) >> 26) & 0x3f)
#define ESR_EC_DABT_CUR		0x25	/* data abort, same EL */
#define ESR_FSC(esr)		((esr) & 0x3f)
#define FSC_IS_TRANS_ACCESS_PERM(fsc)	((fsc) >= 0x04 && (fsc) <= 0x0f)

#endif /* ASM_SYSREG_H */
