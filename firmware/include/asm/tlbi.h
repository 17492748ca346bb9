/* SPDX-License-Identifier: MIT */
/*
 * asm/tlbi.h - raw TLB maintenance instructions and their operand packing
 * (Arm ARM C5.5 "TLB maintenance instructions", D8.13 "TLB maintenance").
 *
 * Every instruction is written as its SYS encoding (op1=0, CRn=c8, CRm, op2)
 * so the range forms assemble without -march=armv8.4-a; the CPU must still
 * implement FEAT_TLBIRANGE before one of those is executed.
 *
 * These helpers only issue the instruction. The teardown engine never calls
 * them directly: oplog.c wraps each kind in a helper that issues AND logs it,
 * so the reported stream is exactly what ran. Only the set-up and clean-up
 * code outside a scenario step (uspace.c) uses the raw forms.
 */
#ifndef ASM_TLBI_H
#define ASM_TLBI_H

#include <stdint.h>

/* The inner-shareable EL1 operations the policies use. */
enum tlbi_op {
	TLBI_VMALLE1IS,		/* all entries, all ASIDs (no operand) */
	TLBI_VAE1IS,		/* by VA + ASID, every level (walk caches too) */
	TLBI_ASIDE1IS,		/* by ASID */
	TLBI_VAAE1IS,		/* by VA, any ASID, every level */
	TLBI_VALE1IS,		/* by VA + ASID, last level only */
	TLBI_VAALE1IS,		/* by VA, any ASID, last level only */
	TLBI_RVAE1IS,		/* range forms (FEAT_TLBIRANGE) */
	TLBI_RVAAE1IS,
	TLBI_RVALE1IS,
	TLBI_RVAALE1IS,
	TLBI_VALE1IS_XZR,	/* VALE1IS with Rt = XZR: REPEAT_TLBI's extra sync (no operand) */
	TLBI_NR_OPS
};

/* Lower-case mnemonic of op, as the TLBI record prints it. */
static inline const char *tlbi_op_name(enum tlbi_op op)
{
	static const char *const names[TLBI_NR_OPS] = {
		"vmalle1is", "vae1is", "aside1is", "vaae1is", "vale1is",
		"vaale1is", "rvae1is", "rvaae1is", "rvale1is", "rvaale1is", "vale1is",
	};
	return (unsigned)op < TLBI_NR_OPS ? names[op] : "?";
}

/* The range form of a by-VA operation (VAE1IS -> RVAE1IS, ...). */
static inline enum tlbi_op tlbi_range_form(enum tlbi_op op)
{
	switch (op) {
	case TLBI_VAE1IS:	return TLBI_RVAE1IS;
	case TLBI_VAAE1IS:	return TLBI_RVAAE1IS;
	case TLBI_VALE1IS:	return TLBI_RVALE1IS;
	case TLBI_VAALE1IS:	return TLBI_RVAALE1IS;
	default:		return op;
	}
}

/* Issue op with operand xt (ignored by VMALLE1IS). Encodings: SYS #0, C8, CRm, #op2. */
static inline void tlbi_raw(enum tlbi_op op, uint64_t xt)
{
	switch (op) {
	case TLBI_VMALLE1IS: asm volatile("sys #0, c8, c3, #0" ::: "memory"); break;
	case TLBI_VAE1IS:    asm volatile("sys #0, c8, c3, #1, %0" :: "r"(xt) : "memory"); break;
	case TLBI_ASIDE1IS:  asm volatile("sys #0, c8, c3, #2, %0" :: "r"(xt) : "memory"); break;
	case TLBI_VAAE1IS:   asm volatile("sys #0, c8, c3, #3, %0" :: "r"(xt) : "memory"); break;
	case TLBI_VALE1IS:   asm volatile("sys #0, c8, c3, #5, %0" :: "r"(xt) : "memory"); break;
	case TLBI_VAALE1IS:  asm volatile("sys #0, c8, c3, #7, %0" :: "r"(xt) : "memory"); break;
	case TLBI_RVAE1IS:   asm volatile("sys #0, c8, c2, #1, %0" :: "r"(xt) : "memory"); break;
	case TLBI_RVAAE1IS:  asm volatile("sys #0, c8, c2, #3, %0" :: "r"(xt) : "memory"); break;
	case TLBI_RVALE1IS:  asm volatile("sys #0, c8, c2, #5, %0" :: "r"(xt) : "memory"); break;
	case TLBI_RVAALE1IS: asm volatile("sys #0, c8, c2, #7, %0" :: "r"(xt) : "memory"); break;
	case TLBI_VALE1IS_XZR: asm volatile("sys #0, c8, c3, #5, xzr" ::: "memory"); break;
	default: break;
	}
}

/* ---- operand packing --------------------------------------------------- */

#define TLBI_ASID_SHIFT		48
#define TLBI_USER_ASID_FLAG	(1UL << 48)	/* KPTI: the odd (user) ASID */

/*
 * By-VA operand: VA[55:12] in bits 43:0 whatever the granule, ASID in 63:48.
 * (Linux: __TLBI_VADDR.)
 */
static inline uint64_t tlbi_vaddr(uint64_t va, uint16_t asid)
{
	return ((va >> 12) & ((1UL << 44) - 1)) | ((uint64_t)asid << TLBI_ASID_SHIFT);
}

/* Translation granule code of the TTL and TG fields: 1 4K, 2 16K, 3 64K. */
static inline uint64_t tlbi_granule_code(unsigned page_shift)
{
	return page_shift == 12 ? 1 : page_shift == 14 ? 2 : page_shift == 16 ? 3 : 0;
}

/*
 * FEAT_TTL hint in bits 47:44 of a by-VA operand: granule in 47:46, level
 * in 45:44. level outside 0..3 means "unknown": the operand is unchanged.
 */
static inline uint64_t tlbi_with_ttl(uint64_t xt, int level, unsigned page_shift)
{
	if (level < 0 || level > 3)
		return xt;
	xt &= ~(0xfUL << 44);
	return xt | ((tlbi_granule_code(page_shift) << 2 | (uint64_t)level) << 44);
}

/*
 * Range operand (FEAT_TLBIRANGE): ASID 63:48, TG 47:46, SCALE 45:44,
 * NUM 43:39, TTL 38:37 (levels 1..3, else 0), BADDR 36:0 (the base address
 * already shifted by the caller: VA >> PAGE_SHIFT without LPA2).
 * It covers (NUM + 1) << (5 * SCALE + 1) pages.
 */
static inline uint64_t tlbi_vaddr_range(uint64_t baddr, uint16_t asid, unsigned scale,
					unsigned num, int ttl, unsigned page_shift)
{
	uint64_t t = (ttl >= 1 && ttl <= 3) ? (uint64_t)ttl : 0;

	return (baddr & ((1UL << 37) - 1)) | t << 37 | ((uint64_t)num & 0x1f) << 39 |
	       ((uint64_t)scale & 3) << 44 | tlbi_granule_code(page_shift) << 46 |
	       (uint64_t)asid << TLBI_ASID_SHIFT;
}

/* Pages covered by one range operation. */
static inline uint64_t tlbi_range_pages(unsigned num, unsigned scale)
{
	return (uint64_t)(num + 1) << (5 * scale + 1);
}

#define TLBI_RANGE_MAX_PAGES	tlbi_range_pages(31, 3)	/* 2^21 */

#endif /* ASM_TLBI_H */
