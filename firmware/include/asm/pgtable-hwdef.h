/* SPDX-License-Identifier: MIT */
/*
 * asm/pgtable-hwdef.h - VMSAv8-64 translation table descriptors and the
 * level geometry of the build's granule (Arm ARM D8.3, "Translation table
 * descriptor formats"; D8.2 for the levels).
 */
#ifndef ASM_PGTABLE_HWDEF_H
#define ASM_PGTABLE_HWDEF_H

/* Level n (0..3) resolves VA bits [level_shift(n) + PT_BITS - 1, level_shift(n)]. */
#define PT_BITS			(GRANULE_SHIFT - 3)	/* 9, 11, 13 index bits */
#define PTRS_PER_TABLE		(1UL << PT_BITS)
#define LEVEL_SHIFT(n)		(PT_BITS * (4 - (n)) + 3)	/* 3 -> PAGE_SHIFT */
#define PMD_SHIFT		LEVEL_SHIFT(2)	/* 21, 25, 29 */
#define PUD_SHIFT		LEVEL_SHIFT(1)	/* 30, 36, 42 */
#define PMD_SIZE		(1UL << PMD_SHIFT)
#define PUD_SIZE		(1UL << PUD_SHIFT)

/*
 * Index of va in a level-n table. VA bits above 47 are dropped first: a
 * TTBR1 address (0xffff...) indexes its root table with bits [47:shift]
 * only, e.g. 64 entries at level 1 with 64K pages (Arm ARM D8.2.5).
 */
#define PT_INDEX(va, n)	\
	((unsigned)((((va) & ((1UL << 48) - 1)) >> LEVEL_SHIFT(n)) & (PTRS_PER_TABLE - 1)))

/* Descriptor type, bits [1:0]. */
#define PTE_VALID		(1UL << 0)
#define PTE_TYPE_MASK		(3UL << 0)
#define PTE_TYPE_BLOCK		(1UL << 0)	/* levels 1, 2 (4K: 1, 2; 64K: 2) */
#define PTE_TYPE_TABLE		(3UL << 0)	/* levels 0..2 */
#define PTE_TYPE_PAGE		(3UL << 0)	/* level 3 */

/* Lower attributes of block and page descriptors. */
#define PTE_ATTRINDX(i)		((unsigned long)(i) << 2)	/* MAIR_EL1 index */
#define PTE_NS			(1UL << 5)
#define PTE_AP_EL0		(1UL << 6)	/* AP[1]: EL0 access */
#define PTE_AP_RDONLY		(1UL << 7)	/* AP[2]: read-only */
#define PTE_SH_INNER		(3UL << 8)
#define PTE_AF			(1UL << 10)	/* access flag: 0 faults (no HW AF here) */
#define PTE_NG			(1UL << 11)	/* not global: tagged with the ASID */
#define PTE_PXN			(1UL << 53)
#define PTE_UXN			(1UL << 54)

/* Output address: bits [47:PAGE_SHIFT] (no 52-bit PA support). */
#define PTE_ADDR_MASK		(((1UL << 48) - 1) & ~((1UL << GRANULE_SHIFT) - 1))

/* MAIR_EL1 attribute indices, as programmed by mmu.c. */
#define MT_DEVICE_nGnRnE	0	/* 0x00 */
#define MT_NORMAL		1	/* 0xff: inner/outer write-back RA/WA */
#define MT_NORMAL_NC		2	/* 0x44: non-cacheable */
#define MAIR_VALUE		0x000000000044ff00UL

/* Ready-made attribute sets. */
#define PROT_NORMAL	(PTE_AF | PTE_SH_INNER | PTE_ATTRINDX(MT_NORMAL) | PTE_UXN | PTE_PXN)
#define PROT_DEVICE	(PTE_AF | PTE_ATTRINDX(MT_DEVICE_nGnRnE) | PTE_UXN | PTE_PXN)
#define PROT_KTEXT	(PTE_AF | PTE_SH_INNER | PTE_ATTRINDX(MT_NORMAL) | PTE_UXN)
/* User test data: EL1 read/write, no EL0 access, no execute, ASID-tagged. */
#define PROT_USER_DATA	(PROT_NORMAL | PTE_NG)

#endif /* ASM_PGTABLE_HWDEF_H */
