/* SPDX-License-Identifier: MIT */
/*
 * scenario.h - a buffered scenario (docs/protocol.md, "Scenarios") and the
 * probes that check its result.
 */
#ifndef SCENARIO_H
#define SCENARIO_H

#include <stdbool.h>
#include <stdint.h>
#include "uspace.h"

#define SCN_MAX_MAPS	64
#define SCN_MAX_STEPS	64
#define SCN_MAX_OPS	1024
#define SCN_MAX_POINTS	16384		/* probe points per scenario (sampled beyond) */
#define SCN_MAX_COUNT	(1UL << 22)	/* pages of one MAP / remove_pte */

enum step_kind {
	STEP_GATHER, STEP_FLUSH_TLB_MM, STEP_FLUSH_TLB_PAGE, STEP_FLUSH_TLB_RANGE,
	STEP_FLUSH_TLB_KERNEL_RANGE, STEP_FLUSH_TLB_KERNEL_PGTABLE,
};

enum op_kind_scn {
	OP_REMOVE_PTE, OP_REMOVE_PMD, OP_REMOVE_PUD,
	OP_FREE_PTE_TABLE, OP_FREE_PMD_TABLE, OP_FREE_PUD_TABLE, OP_FREE_P4D_TABLE,
	OP_FLUSH,
};

struct scn_map {
	bool kernel;
	int level;
	uint64_t addr, count;
};

struct scn_op {
	enum op_kind_scn kind;
	uint64_t addr, count;
};

struct scn_step {
	unsigned n;
	enum step_kind kind;
	bool fullmm, last_level;
	uint64_t addr, start, end, stride;
	int level;			/* flush_tlb_range's TTL hint, or TLB_LEVEL_UNKNOWN */
	unsigned first_op, nr_ops;
};

/*
 * Probe every point from CPU0 and CPU1 after step `step`. A point the step
 * unmapped must fault: it translated before the step, does not now, its
 * leaf entry was cleared (a point lost only because its table was freed
 * with the leaf still set is not the invalidation's business: Linux frees
 * tables only after zapping and flushing their entries), and it lies in
 * [lo, hi) (empty for a fullmm gather: the ASID is dead and Linux leaves
 * its leaf entries to the ASID allocator). A point that translates now must
 * read its value. Prints PROBE and PROBEFAIL records; returns the failures.
 */
unsigned probe_step(unsigned step, struct probe_point *pts, unsigned n,
		    const bool *now_mapped, uint64_t lo, uint64_t hi);

#endif /* SCENARIO_H */
