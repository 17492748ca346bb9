/* SPDX-License-Identifier: MIT */
/*
 * inject.h - the bug injections: one list, applied at the line they change.
 *
 * Each entry is X(NAME, "name", "releases", "description"): "releases" says
 * where the bug's code path exists ("v4.20+", "every release, kpti=1").
 * The host selects one per scenario (SCN inject=<name>); the policy code
 * tests it with injected(BUG_NAME) at the exact line the bug changes, never
 * through a copied function. scenario.c emits the same list into the ELF
 * section .shootdown.bugs (a "shootdown-bugs/3" marker, then
 * name\0releases\0description\0 triples, not loaded) so the host reads it
 * from the ELF instead of keeping its own copy.
 * Strings must not contain double quotes or backslashes (they are also
 * assembler strings). docs/bugs.md gives each one's kernel history.
 *
 * injected(X) is evaluated only where the injection changes what the
 * firmware does (a site whose buggy and right outcomes are equal tests its
 * condition first), and counts each time it is true in inject_hits: SCNEND
 * reports the count, so the host can tell "the bug's code path never ran"
 * (not applicable) from "it ran and nothing noticed" (missed).
 */
#ifndef INJECT_H
#define INJECT_H

#include <stdbool.h>

#define BUG_LIST(X) \
	X(SKIP_DSB_ISHST, "skip_dsb_ishst", "every release", \
	  "no DSB ISHST before the TLBIs: a walker may refill from the old entry (v4.20 series: helpers without their own DSB ISHST once set_pmd stopped issuing it)") \
	X(SKIP_DSB_ISH, "skip_dsb_ish", "every release", \
	  "no DSB ISH after the TLBIs: the invalidation is not complete when tables are freed and the unmap returns") \
	X(LAST_LEVEL_WITH_FREED_TABLES, "last_level_with_freed_tables", "v4.20+", \
	  "leaf-only TLBI (VALE1IS) although page tables were freed: walk caches keep the freed table (285994a62c80, 7a30df49f63a)") \
	X(STRIDE_WRONG_LEVEL, "stride_wrong_level", "v4.20+", \
	  "unmap stride taken from the highest cleared level instead of the lowest: pages between the strides stay cached") \
	X(NO_STRIDE_ROUND, "no_stride_round", "v5.2+", \
	  "start/end not rounded to the stride before the loop and the cut-off (before 01d57485fcdb, v5.2)") \
	X(CUTOFF_4K_UNITS, "cutoff_4k_units", "every release, 16K/64K", \
	  "full-ASID cut-off computed in 4K units on 16K/64K: the whole ASID is flushed far too early (3d65b6bbc01e, v5.0)") \
	X(END_OFF_BY_ONE, "end_off_by_one", "every release (user ranges)", \
	  "range end one stride short: the last page of the range is not invalidated") \
	X(WRONG_ASID, "wrong_asid", "every release", \
	  "TLBI operands carry a wrong ASID (bit 7 flipped): the address space's entries survive on hardware that honours ASIDs") \
	X(KPTI_COPY_MISSING, "kpti_copy_missing", "every release, kpti=1", \
	  "no second TLBI for the user ASID (operand | 1<<48) under KPTI") \
	X(FULLMM_NO_WALK_FLUSH, "fullmm_no_walk_flush", "v4.20+", \
	  "fullmm teardown with freed tables skips flush_tlb_mm: walk caches keep the freed tables (v4.20 tlb_flush)") \
	X(SYNC_PER_TABLE, "sync_per_table", "v4.20+", \
	  "v4.19's synchronous TLBI+DSB per freed table in a later release: correct but slow (performance regression)") \
	X(KERNEL_RANGE_VAAE, "kernel_range_vaae", "v4.20+", \
	  "flush_tlb_kernel_range with VAAE1IS (all levels) instead of VAALE1IS (6899a4c82faf, v4.20)") \
	X(NO_ISB_KERNEL_PGTABLE, "no_isb_kernel_pgtable", "v5.4+", \
	  "no ISB after invalidating a freed kernel page table (51696d346c49, v5.4)") \
	X(TTL_WITH_FREED_TABLES, "ttl_with_freed_tables", "v5.14+, ttl=1 or tlbirange=1", \
	  "TTL level hint given although tables were freed: the walk-cache entries are not hit (52218fcd61cb, v5.14)") \
	X(RANGE_NUM_OVERFLOW, "range_num_overflow", "v6.9+, tlbirange=1", \
	  "range operand NUM computed with a 5-bit mask instead of a clamp: the largest ranges lose pages (e3ba51ab24fd, v6.9)") \
	X(TABLE_FREE_NO_TLBI, "table_free_no_tlbi", "v4.19", \
	  "v4.19: freed page table not invalidated at all (no synchronous walk-cache TLBI, as before 285994a62c80)") \
	X(FALLBACK_ONE_DSB_ISH, "fallback_one_dsb_ish", "v6.9..v6.19", \
	  "whole-ASID fallback of __flush_tlb_range ends in one DSB ISH: the caller's own DSB ISH after _nosync's flush_tlb_mm is dropped (v6.9 _nosync split)") \
	X(FALLBACK_EXTRA_DSB_ISH, "fallback_extra_dsb_ish", "v7.1+", \
	  "whole-ASID fallback keeps the v6.9..v7.0 second DSB ISH although __do_flush_tlb_range returns after flush_tlb_mm: a wasted barrier") \
	X(CUTOFF_RANGE_LIMIT_NO_RANGE, "cutoff_range_limit_no_range", "v7.1+, tlbirange=0", \
	  "without range TLBIs the pre-v7.1 MAX_TLBI_RANGE_PAGES limit is still applied: a range of fewer than MAX_DVM_OPS strides flushes the whole ASID") \
	X(REPEAT_TLBI_MISSING, "repeat_tlbi_missing", "every release, repeat_tlbi=1", \
	  "ARM64_WORKAROUND_REPEAT_TLBI not applied: no DSB ISH and repeated TLBI after each TLBI (before v7.1), no TLBI VALE1IS, XZR and DSB ISH after each completing DSB ISH (v7.1): an affected CPU (Cortex-A76 1286807) may keep a stale entry")

enum bug {
	BUG_NONE = 0,
#define BUG_ENUM(id, name, releases, desc) BUG_##id,
	BUG_LIST(BUG_ENUM)
#undef BUG_ENUM
	BUG_COUNT
};

/* The injection selected by the running scenario (BUG_NONE: none). */
extern enum bug inject_current;
/*
 * Count one taken injection (scenario.c; SCNEND injected=). A call, not an
 * inline increment: the policy code stays free of stores the barrier lint
 * would have to reason about (firmware/lint.toml lists it as bookkeeping).
 */
void inject_hit(void);

/* Whether bug b is injected here; counts each time the injected path is taken. */
static inline bool injected(enum bug b)
{
	if (inject_current != b)
		return false;
	inject_hit();
	return true;
}

/* Look a name up: BUG_NONE for "none", -1 if unknown. */
int inject_lookup(const char *name);

#endif /* INJECT_H */
