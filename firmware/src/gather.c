/* SPDX-License-Identifier: MIT */
/*
 * gather.c - the generic mmu_gather: range and flag bookkeeping, the flush
 * points, and the deferred freeing of unlinked page tables.
 *
 * Mirrors include/asm-generic/tlb.h and mm/mmu_gather.c (mm/memory.c before
 * v4.20). The arm64 parts are called through policy_current.
 */
#include "shootdown.h"
#include "asm/pgtable-hwdef.h"
#include "gather.h"
#include "inject.h"
#include "policy.h"
#include "uspace.h"

/* __tlb_reset_range: empty range; v4.20+ also clears the flags. */
static void tlb_reset_range(struct mmu_gather *tlb)
{
	if (tlb->fullmm) {
		tlb->start = tlb->end = ~0UL;
	} else {
		tlb->start = tlb_env.task_size;
		tlb->end = 0;
	}
	tlb->freed_tables = false;
	tlb->cleared_ptes = tlb->cleared_pmds = false;
	tlb->cleared_puds = tlb->cleared_p4ds = false;
}

/* __tlb_adjust_range: grow [start, end) to cover [addr, addr + size). */
static void tlb_adjust_range(struct mmu_gather *tlb, uint64_t addr, uint64_t size)
{
	if (addr < tlb->start)
		tlb->start = addr;
	if (addr + size > tlb->end)
		tlb->end = addr + size;
}

void tlb_gather_mmu(struct mmu_gather *tlb, struct uspace *mm, bool fullmm)
{
	tlb->mm = mm;
	tlb->fullmm = fullmm;
	tlb->need_flush_all = false;
	tlb->nr_pages = 0;
	tlb->nr_tables = 0;
	tlb_reset_range(tlb);
}

/* stride_wrong_level: the highest cleared level wins instead of the lowest. */
static unsigned highest_cleared_shift(const struct mmu_gather *tlb)
{
	if (tlb->cleared_p4ds)
		return tlb_env.p4d_shift;
	if (tlb->cleared_puds)
		return tlb_env.pud_shift;
	if (tlb->cleared_pmds)
		return tlb_env.pmd_shift;
	return PAGE_SHIFT;
}

unsigned tlb_get_unmap_shift(const struct mmu_gather *tlb)
{
	unsigned shift = PAGE_SHIFT;

	if (tlb->cleared_ptes)
		shift = PAGE_SHIFT;
	else if (tlb->cleared_pmds)
		shift = tlb_env.pmd_shift;
	else if (tlb->cleared_puds)
		shift = tlb_env.pud_shift;
	else if (tlb->cleared_p4ds)
		shift = tlb_env.p4d_shift;
	/* taken only where the two orders disagree (more than one level cleared) */
	if (highest_cleared_shift(tlb) != shift && injected(BUG_STRIDE_WRONG_LEVEL))
		return highest_cleared_shift(tlb);
	return shift;
}

uint64_t tlb_get_unmap_size(const struct mmu_gather *tlb)
{
	return 1UL << tlb_get_unmap_shift(tlb);
}

/*
 * tlb_flush_mmu_tlbonly: invalidate what was gathered, then start a new
 * range. Skipped when nothing was gathered: end == 0 up to v5.5, no
 * cleared/freed flag from v5.6 (the same thing for arm64, which never sets
 * need_flush_all).
 */
static void tlb_flush_mmu_tlbonly(struct mmu_gather *tlb)
{
	const struct policy *p = policy_current;

	if (p->skip_by_flags) {
		if (!(tlb->freed_tables || tlb->cleared_ptes || tlb->cleared_pmds ||
		      tlb->cleared_puds || tlb->cleared_p4ds))
			return;
	} else if (!tlb->end) {
		return;
	}
	p->tlb_flush(tlb);
	tlb_reset_range(tlb);
}

/*
 * How many pages the page batches hold before __tlb_remove_page_size says
 * "full": the on-stack bundle of MMU_GATHER_BUNDLE (8) slots, then at most
 * MAX_GATHER_BATCH_COUNT = 10000 / MAX_GATHER_BATCH allocated batches of
 * MAX_GATHER_BATCH = (PAGE_SIZE - 16) / 8 slots. A batch is left when it is
 * full, or from v6.9 when one slot is left (a folio takes two).
 * 4K: 9698 (v6.9+: 9678); 16K: 8192 (8187); 64K: 8198 (8196).
 */
static unsigned long page_batch_capacity(void)
{
	unsigned long per_batch = (PAGE_SIZE - 16) / 8;
	unsigned long batches = 10000 / per_batch;

	if (policy_current->page_batch_keep_slot)
		return 7 + batches * (per_batch - 1);
	return 8 + batches * per_batch;
}

bool tlb_queue_page(struct mmu_gather *tlb)
{
	return ++tlb->nr_pages >= page_batch_capacity();
}

/*
 * tlb_flush_mmu_free: the queued pages and the unlinked tables go back only
 * after the flush (the batches stay allocated: the next round has the same
 * capacity).
 */
static void tlb_flush_mmu_free(struct mmu_gather *tlb)
{
	tlb->nr_pages = 0;
	for (unsigned i = 0; i < tlb->nr_tables; i++)
		uspace_free_table(tlb->tables[i], tlb->table_level[i]);
	tlb->nr_tables = 0;
}

void tlb_flush_mmu(struct mmu_gather *tlb)
{
	tlb_flush_mmu_tlbonly(tlb);
	tlb_flush_mmu_free(tlb);
}

void tlb_finish_mmu(struct mmu_gather *tlb)
{
	tlb_flush_mmu(tlb);
}

void tlb_remove_tlb_entry(struct mmu_gather *tlb, uint64_t addr)
{
	tlb_adjust_range(tlb, addr, PAGE_SIZE);
	if (policy_current->has_flags)
		tlb->cleared_ptes = true;
}

void tlb_remove_pmd_tlb_entry(struct mmu_gather *tlb, uint64_t addr)
{
	tlb_adjust_range(tlb, addr, PMD_SIZE);	/* HPAGE_PMD_SIZE */
	if (policy_current->has_flags)
		tlb->cleared_pmds = true;
}

void tlb_remove_pud_tlb_entry(struct mmu_gather *tlb, uint64_t addr)
{
	tlb_adjust_range(tlb, addr, PUD_SIZE);	/* HPAGE_PUD_SIZE */
	if (policy_current->has_flags)
		tlb->cleared_puds = true;
}

/*
 * Queue a table for freeing after the flush (tlb_remove_table). When the
 * batch is full, tlb_table_flush invalidates (tlb_flush_mmu_tlbonly) and
 * frees the batch.
 */
static void queue_table(struct mmu_gather *tlb, void *table, int level)
{
	if (!table)
		return;		/* the scenario freed a table that is not there */
	tlb->tables[tlb->nr_tables] = table;
	tlb->table_level[tlb->nr_tables] = (int8_t)level;
	tlb->nr_tables++;
	if (tlb->nr_tables < GATHER_MAX_TABLES)
		return;
	if (policy_current->batch_full_flushes)
		tlb_flush_mmu_tlbonly(tlb);	/* tlb_table_invalidate */
	tlb_flush_mmu_free(tlb);
}

/*
 * p?d_free_tlb: the range grows by PAGE_SIZE at addr only (not the table's
 * span); v4.20+ set freed_tables and the flag of the level above the table.
 */
void pte_free_tlb(struct mmu_gather *tlb, void *table, uint64_t addr)
{
	tlb_adjust_range(tlb, addr, PAGE_SIZE);
	if (policy_current->has_flags) {
		tlb->freed_tables = true;
		tlb->cleared_pmds = true;
	}
	policy_current->free_table_flush(tlb, addr);
	queue_table(tlb, table, 3);
}

void pmd_free_tlb(struct mmu_gather *tlb, void *table, uint64_t addr, bool folded)
{
	tlb_adjust_range(tlb, addr, PAGE_SIZE);
	if (policy_current->has_flags) {
		tlb->freed_tables = true;
		tlb->cleared_puds = true;
	}
	if (folded)
		return;
	policy_current->free_table_flush(tlb, addr);
	queue_table(tlb, table, 2);
}

void pud_free_tlb(struct mmu_gather *tlb, void *table, uint64_t addr, bool folded)
{
	tlb_adjust_range(tlb, addr, PAGE_SIZE);
	if (policy_current->has_flags) {
		tlb->freed_tables = true;
		tlb->cleared_p4ds = true;
	}
	if (folded)
		return;
	policy_current->free_table_flush(tlb, addr);
	queue_table(tlb, table, 1);
}

/*
 * The p4d level is always folded here (no LPA2 / 5 levels). Up to v5.4
 * (5level-fixup.h) p4d_free_tlb is empty; from v5.9 (pgtable-nop4d.h) the
 * generic macro grows the range and sets freed_tables (no cleared_* flag).
 */
void p4d_free_tlb(struct mmu_gather *tlb, uint64_t addr)
{
	if (!policy_current->generic_p4d_free)
		return;
	tlb_adjust_range(tlb, addr, PAGE_SIZE);
	tlb->freed_tables = true;
}
