/* SPDX-License-Identifier: MIT */
/*
 * policy.h - the arm64 TLB invalidation policy of one Linux release.
 *
 * A policy is a row of function pointers and a few named constants, each
 * pointing at the variant of the kernel function that release shipped
 * (policy.c has one function per variant, with its contract). The
 * scenario's environment (ASID, KPTI, CPU features, level geometry) is in
 * tlb_env, set once per scenario.
 */
#ifndef POLICY_H
#define POLICY_H

#include <stdbool.h>
#include <stdint.h>

struct mmu_gather;

/* The scenario's address-space facts the policies read (Linux: mm, cpucaps). */
struct tlb_env {
	uint16_t asid;			/* ASID(mm) */
	bool kpti;			/* arm64_kernel_unmapped_at_el0() */
	bool ttl;			/* ARM64_HAS_ARMv8_4_TTL */
	bool range;			/* system_supports_tlb_range() */
	bool repeat_tlbi;		/* ARM64_WORKAROUND_REPEAT_TLBI (Cortex-A76 1286807, ...) */
	unsigned levels;		/* CONFIG_PGTABLE_LEVELS for the VA size */
	unsigned pmd_shift, pud_shift, p4d_shift;	/* folded levels collapse upwards */
	uint64_t task_size;		/* 1 << va_bits */
};
extern struct tlb_env tlb_env;

/* What a page-table entry clear costs in barriers (set_pmd/set_pud/set_pgd). */
enum pt_clear_barrier {
	PTC_NONE,		/* v4.20+ set_pmd/set_pud of an invalid entry */
	PTC_DSB,		/* DSB ISHST */
	PTC_DSB_ISB,		/* DSB ISHST; ISB (v5.4+ set_pgd/set_p4d) */
};

/* "No level hint" (Linux TLBI_TTL_UNKNOWN, or level 0 before v6.x). */
#define TLB_LEVEL_UNKNOWN	(-1)

struct policy {
	const char *name;		/* release, as the SCN policy= field */

	/* Generic mmu_gather. */
	bool has_flags;			/* freed_tables / cleared_* exist (v4.20+) */
	bool skip_by_flags;		/* tlbonly skips on no flag (v5.9+), else on end == 0 */
	bool batch_full_flushes;	/* a full table batch invalidates first (v4.20+) */
	bool generic_p4d_free;		/* p4d_free_tlb grows the range (pgtable-nop4d.h, v5.9+) */
	bool page_batch_keep_slot;	/* a batch is left with one slot free (folio pairs, v6.9+) */
	bool pud_page_batched;		/* zap_huge_pud queues the (DAX) page (v6.19) */
	bool range_fallback_returns;	/* __do_flush_tlb_range (v7.1): one DSB ISH after the
					   whole-ASID fallback; no range-op limit without range ops */
	bool repeat_tlbi_sync;		/* REPEAT_TLBI repeats at each completion (TLBI VALE1IS,
					   XZR; DSB ISH), not after each TLBI (v7.1) */

	/* arm64 tlb.h */
	void (*tlb_flush)(struct mmu_gather *tlb);
	/* __p?d_free_tlb's invalidation part (v4.19: synchronous), NULL if none. */
	void (*free_table_flush)(struct mmu_gather *tlb, uint64_t addr);
	int (*tlb_get_level)(const struct mmu_gather *tlb);

	/* arm64 tlbflush.h */
	void (*flush_tlb_mm)(void);
	void (*flush_tlb_page)(uint64_t uaddr);
	void (*flush_tlb_range)(uint64_t start, uint64_t end, uint64_t stride,
				bool last_level, int tlb_level);
	void (*flush_tlb_kernel_range)(uint64_t start, uint64_t end);
	void (*flush_tlb_kernel_pgtable)(uint64_t kaddr);

	/*
	 * arm64 pgtable.h: the barrier of clearing a PMD, PUD, PGD/P4D entry
	 * (free_pte/pmd/pud_range), and of free_p4d_range's pgd_clear on a
	 * 4-level space (only up to v5.4, where 5level-fixup.h made it set_pgd).
	 */
	enum pt_clear_barrier clear_pmd, clear_pud, clear_top, clear_pgd_l4;
};

/* The policy named name, or NULL. */
const struct policy *policy_lookup(const char *name);
/* The policy of the running scenario. */
extern const struct policy *policy_current;

/* Issue the barriers a page-table entry clear implies under the policy. */
void pt_clear_barrier(enum pt_clear_barrier b);

#endif /* POLICY_H */
