/* SPDX-License-Identifier: MIT */
/*
 * inject.h - the bug injections: one list, applied at the line they change.
 *
 * Each entry is X(NAME, "name", "description"). The host selects one per
 * scenario (SCN inject=<name>); the policy code tests it with
 * injected(BUG_NAME) at the exact line the bug changes, never through a
 * copied function. scenario.c emits the same list into the ELF section
 * .shootdown.bugs (name\0description\0 pairs, not loaded) so the host
 * reads it from the ELF instead of keeping its own copy.
 * Descriptions must not contain double quotes or backslashes (they are
 * also assembler strings). docs/bugs.md gives each one's kernel history.
 */
#ifndef INJECT_H
#define INJECT_H

#include <stdbool.h>

#define BUG_LIST(X) \
	X(SKIP_DSB_ISHST, "skip_dsb_ishst", \
	  "no DSB ISHST before the TLBIs: a walker may refill from the old entry (v4.20 series: helpers without their own DSB ISHST once set_pmd stopped issuing it)") \
	X(SKIP_DSB_ISH, "skip_dsb_ish", \
	  "no DSB ISH after the TLBIs: the invalidation is not complete when tables are freed and the unmap returns") \
	X(LAST_LEVEL_WITH_FREED_TABLES, "last_level_with_freed_tables", \
	  "leaf-only TLBI (VALE1IS) although page tables were freed: walk caches keep the freed table (285994a62c80, 7a30df49f63a)") \
	X(STRIDE_WRONG_LEVEL, "stride_wrong_level", \
	  "unmap stride taken from the highest cleared level instead of the lowest: pages between the strides stay cached") \
	X(NO_STRIDE_ROUND, "no_stride_round", \
	  "start/end not rounded to the stride before the loop and the cut-off (before 01d57485fcdb, v5.2)") \
	X(CUTOFF_4K_UNITS, "cutoff_4k_units", \
	  "full-ASID cut-off computed in 4K units on 16K/64K: the whole ASID is flushed far too early (3d65b6bbc01e, v5.0)") \
	X(END_OFF_BY_ONE, "end_off_by_one", \
	  "range end one stride short: the last page of the range is not invalidated") \
	X(WRONG_ASID, "wrong_asid", \
	  "TLBI operands carry a wrong ASID (bit 7 flipped): the address space's entries survive on hardware that honours ASIDs") \
	X(KPTI_COPY_MISSING, "kpti_copy_missing", \
	  "no second TLBI for the user ASID (operand | 1<<48) under KPTI") \
	X(FULLMM_NO_WALK_FLUSH, "fullmm_no_walk_flush", \
	  "fullmm teardown with freed tables skips flush_tlb_mm: walk caches keep the freed tables (v4.20 tlb_flush)") \
	X(SYNC_PER_TABLE, "sync_per_table", \
	  "v4.19's synchronous TLBI+DSB per freed table in a later release: correct but slow (performance regression)") \
	X(KERNEL_RANGE_VAAE, "kernel_range_vaae", \
	  "flush_tlb_kernel_range with VAAE1IS (all levels) instead of VAALE1IS (6899a4c82faf, v4.20)") \
	X(NO_ISB_KERNEL_PGTABLE, "no_isb_kernel_pgtable", \
	  "no ISB after invalidating a freed kernel page table (51696d346c49, v5.4)") \
	X(TTL_WITH_FREED_TABLES, "ttl_with_freed_tables", \
	  "TTL level hint given although tables were freed: the walk-cache entries are not hit (52218fcd61cb, v5.14)") \
	X(RANGE_NUM_OVERFLOW, "range_num_overflow", \
	  "range operand NUM computed with a 5-bit mask instead of a clamp: the largest ranges lose pages (e3ba51ab24fd, v6.9)") \
	X(TABLE_FREE_NO_TLBI, "table_free_no_tlbi", \
	  "v4.19: freed page table not invalidated at all (no synchronous walk-cache TLBI, as before 285994a62c80)")

enum bug {
	BUG_NONE = 0,
#define BUG_ENUM(id, name, desc) BUG_##id,
	BUG_LIST(BUG_ENUM)
#undef BUG_ENUM
	BUG_COUNT
};

/* The injection selected by the running scenario (BUG_NONE: none). */
extern enum bug inject_current;

static inline bool injected(enum bug b)
{
	return inject_current == b;
}

/* Look a name up: BUG_NONE for "none", -1 if unknown. */
int inject_lookup(const char *name);

#endif /* INJECT_H */
