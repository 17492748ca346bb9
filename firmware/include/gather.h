/* SPDX-License-Identifier: MIT */
/*
 * gather.h - the generic mmu_gather (include/asm-generic/tlb.h and
 * mm/mmu_gather.c) in C: the state that records what a teardown cleared
 * and freed, and the points where it flushes.
 *
 * Release differences of the generic part are selected by the policy
 * (policy.h): before v4.20 there are no cleared_* / freed_tables flags.
 * The arm64 side (tlb_flush and the table-free hooks) is the policy's.
 */
#ifndef GATHER_H
#define GATHER_H

#include <stdbool.h>
#include <stdint.h>
#include "shootdown.h"

struct uspace;

/*
 * Tables unlinked during a gather, freed only after its flush
 * (tlb_remove_table). A full batch flushes, as Linux's MAX_TABLE_BATCH:
 * (PAGE_SIZE - sizeof(struct mmu_table_batch)) / sizeof(void *).
 */
#define GATHER_MAX_TABLES	((PAGE_SIZE - 24) / 8)

struct mmu_gather {
	struct uspace *mm;
	uint64_t start, end;		/* [start, end) to invalidate */
	bool fullmm;			/* exit_mmap: the whole address space goes */
	bool need_flush_all;		/* never set on arm64; kept for the state dump */
	bool freed_tables;		/* a page table was unlinked (v4.20+) */
	bool cleared_ptes, cleared_pmds, cleared_puds, cleared_p4ds;
	unsigned long nr_pages;		/* pages queued in the page batches */
	unsigned nr_tables;
	void *tables[GATHER_MAX_TABLES];	/* kernel VAs of unlinked tables */
	int8_t table_level[GATHER_MAX_TABLES];	/* level of their entries (3: PTE) */
};

void tlb_gather_mmu(struct mmu_gather *tlb, struct uspace *mm, bool fullmm);
void tlb_finish_mmu(struct mmu_gather *tlb);
/* Mid-gather flush (page batch full, end of a VMA): tlbonly, then free. */
void tlb_flush_mmu(struct mmu_gather *tlb);

/*
 * Queue the page a zap just unmapped (__tlb_remove_page / tlb_remove_page_size).
 * Returns true when that filled the page batches: the caller flushes
 * (zap_pte_range's force_flush, zap_huge_pmd's tlb_remove_page_size).
 */
bool tlb_queue_page(struct mmu_gather *tlb);

/* Record one cleared leaf entry (the caller has already cleared it). */
void tlb_remove_tlb_entry(struct mmu_gather *tlb, uint64_t addr);
void tlb_remove_pmd_tlb_entry(struct mmu_gather *tlb, uint64_t addr);
void tlb_remove_pud_tlb_entry(struct mmu_gather *tlb, uint64_t addr);

/*
 * Record one unlinked table (the caller has cleared its parent entry).
 * folded: the level does not exist in this configuration (fewer levels):
 * the generic macro still grows the range and sets its flags, but the arm64
 * __p?d_free_tlb is the empty stub of pgtable-nop?d.h, and there is no table.
 */
void pte_free_tlb(struct mmu_gather *tlb, void *table, uint64_t addr);
void pmd_free_tlb(struct mmu_gather *tlb, void *table, uint64_t addr, bool folded);
void pud_free_tlb(struct mmu_gather *tlb, void *table, uint64_t addr, bool folded);
/* p4d_free_tlb of the always-folded p4d level (v5.9+; nothing before). */
void p4d_free_tlb(struct mmu_gather *tlb, uint64_t addr);

/* tlb_get_unmap_shift / _size: the lowest cleared level gives the stride. */
unsigned tlb_get_unmap_shift(const struct mmu_gather *tlb);
uint64_t tlb_get_unmap_size(const struct mmu_gather *tlb);

#endif /* GATHER_H */
