/* SPDX-License-Identifier: MIT */
/*
 * uspace.h - the scenario's address spaces: the user one in TTBR0 (its own
 * root, the scenario's ASID, nG entries) and the kernel test mappings under
 * the core's TTBR1 root (global entries, in [KVA_SCN_BASE, KVA_SCN_END)).
 *
 * Leaves point into a small pool of data pages with known values, so large
 * scenarios fit in guest memory: a page at VA v maps pool page
 * (v >> PAGE_SHIFT) % DATA_POOL_PAGES; every block maps the aligned region
 * around pool page 0 and is probed at the offset of that page.
 */
#ifndef USPACE_H
#define USPACE_H

#include <stdbool.h>
#include <stdint.h>

#define DATA_POOL_PAGES	8

struct uspace {
	uint64_t *root;			/* root table (kernel VA) */
	unsigned va_bits;		/* size of the space (TTBR1: 48) */
	int start_level;		/* level of the root table */
	bool kernel;			/* TTBR1 space: global entries, shared root */
};

/* One address the probes read: a page, or the marker inside a block. */
struct probe_point {
	uint64_t va;
	uint64_t expect;		/* the value mapped there */
	uint64_t *leaf;			/* its leaf entry (0 once a step cleared it) */
	uint8_t kernel;			/* 1: TTBR1 mapping */
	uint8_t mapped;			/* translation present before the step */
};

/* The user space of the running scenario and the TTBR1 view. */
extern struct uspace user_mm, kernel_mm;

/* Set up user_mm (allocates its root) for va_bits; 0 or -1 (no memory). */
int uspace_init(unsigned va_bits);
/* Free every user table, every kernel test table, clear the TLBs. */
void uspace_reset(void);

/*
 * Map count leaves of level (3 page, 2 PMD block, 1 PUD block) from addr.
 * Returns 0, or a one-word reason: "overlap", "nomem", "block_level".
 */
const char *uspace_map(struct uspace *mm, int level, uint64_t addr, uint64_t count);

/* Pointer to the level-`level` entry for va, NULL if a table above is missing
 * (or a block sits above). */
uint64_t *uspace_entry(struct uspace *mm, uint64_t va, int level);
/* The table an entry points to (kernel VA), NULL if it is not a table. */
void *uspace_entry_table(uint64_t entry, int level);
/* 1 if va translates (valid leaf) in mm, by a software walk. */
int uspace_translates(struct uspace *mm, uint64_t va);
/* The leaf entry mapping va and its level, NULL if none. */
uint64_t *uspace_leaf(struct uspace *mm, uint64_t va, int *level);

/*
 * Give back a table unlinked by a teardown (after its flush) whose entries
 * are of level `level` (3: a PTE table), with any table still under it.
 * The pages reach page_free at uspace_free_deferred(), after the step's
 * probes, so the probes can still read the cleared leaf entries they held;
 * nothing is allocated in between, so this changes no reuse.
 */
void uspace_free_table(void *table, int level);
void uspace_free_deferred(void);

/* Value of the data page / block marker for va at level. */
uint64_t uspace_value(uint64_t va, int level);
/* Probe address of a leaf of level mapped at va (va itself for pages). */
uint64_t uspace_probe_va(uint64_t va, int level);

/* Bytes mapped by one entry of level. */
uint64_t level_size(int level);

/* CPU0 + CPU1: load TTBR0 (user_mm, asid) and read every point once. */
void uspace_touch(struct probe_point *pts, unsigned n, uint16_t asid);
/* Drop TTBR0 on every CPU (end of scenario). */
void uspace_release_cpus(void);

#endif /* USPACE_H */
