/* SPDX-License-Identifier: MIT */
/*
 * uspace.c - building, walking and dropping the scenario's page tables.
 *
 * Set-up and clean-up happen outside any reported step, so their barriers
 * and TLB maintenance use the raw instructions, not oplog.c: they are not
 * part of the teardown under test.
 */
#include "shootdown.h"
#include "asm/barrier.h"
#include "asm/pgtable-hwdef.h"
#include "asm/tlbi.h"
#include "uspace.h"

struct uspace user_mm, kernel_mm;

static void *data_pool[DATA_POOL_PAGES];
static uint64_t data_pool_pa[DATA_POOL_PAGES];

/* Tables this firmware linked under the core's TTBR1 root. */
#define KTABLES_MAX	4096
static struct {
	void *table;
	uint64_t *parent;		/* the entry that points at it */
} ktables[KTABLES_MAX];
static unsigned nr_ktables;

#define DATA_MAGIC	0xd47a5d0000000000UL

uint64_t level_size(int level)
{
	return 1UL << LEVEL_SHIFT(level);
}

static int pool_init(void)
{
	for (unsigned i = 0; i < DATA_POOL_PAGES; i++) {
		if (data_pool[i])
			continue;
		data_pool[i] = page_alloc();
		if (!data_pool[i])
			return -1;
		data_pool_pa[i] = virt_to_phys(data_pool[i]);
		*(volatile uint64_t *)data_pool[i] = DATA_MAGIC | (uint64_t)i << 32 |
						     (data_pool_pa[i] >> PAGE_SHIFT);
	}
	return 0;
}

uint64_t uspace_value(uint64_t va, int level)
{
	unsigned i = level == 3 ? (va >> PAGE_SHIFT) % DATA_POOL_PAGES : 0;

	return *(volatile uint64_t *)data_pool[i];
}

uint64_t uspace_probe_va(uint64_t va, int level)
{
	if (level == 3)
		return va;
	return va + (data_pool_pa[0] & (level_size(level) - 1));
}

/* Output address of a leaf of level at va. */
static uint64_t leaf_pa(uint64_t va, int level)
{
	if (level == 3)
		return data_pool_pa[(va >> PAGE_SHIFT) % DATA_POOL_PAGES];
	return data_pool_pa[0] & ~(level_size(level) - 1);
}

/* Index of va in a table of level; the root may be shorter than a page. */
static unsigned pt_index(const struct uspace *mm, uint64_t va, int level)
{
	unsigned shift = LEVEL_SHIFT(level);
	unsigned bits = PT_BITS;

	if (level == mm->start_level && mm->va_bits - shift < bits)
		bits = mm->va_bits - shift;
	return (va >> shift) & ((1UL << bits) - 1);
}

void *uspace_entry_table(uint64_t entry, int level)
{
	if (level >= 3 || (entry & PTE_TYPE_MASK) != PTE_TYPE_TABLE)
		return NULL;
	return phys_to_virt(entry & PTE_ADDR_MASK);
}

/* Walk to the level-`level` entry of va, allocating tables if alloc. */
static uint64_t *walk(struct uspace *mm, uint64_t va, int level, bool alloc)
{
	uint64_t *table = mm->root;

	for (int l = mm->start_level; ; l++) {
		uint64_t *e = &table[pt_index(mm, va, l)];

		if (l == level)
			return e;
		if (!(*e & PTE_VALID)) {
			void *t;

			if (!alloc)
				return NULL;
			if (mm->kernel && nr_ktables == KTABLES_MAX)
				return NULL;
			t = page_alloc();
			if (!t)
				return NULL;
			if (mm->kernel) {
				ktables[nr_ktables].table = t;
				ktables[nr_ktables].parent = e;
				nr_ktables++;
			}
			WRITE_ONCE(*e, virt_to_phys(t) | PTE_TYPE_TABLE);
		}
		table = uspace_entry_table(*e, l);
		if (!table)
			return NULL;	/* a block above the level asked for */
	}
}

uint64_t *uspace_entry(struct uspace *mm, uint64_t va, int level)
{
	if (level < mm->start_level)
		return NULL;
	return walk(mm, va, level, false);
}

uint64_t *uspace_leaf(struct uspace *mm, uint64_t va, int *level)
{
	uint64_t *table = mm->root;

	for (int l = mm->start_level; l <= 3; l++) {
		uint64_t *e = &table[pt_index(mm, va, l)];

		if (!(*e & PTE_VALID))
			return NULL;
		if (l == 3 || (*e & PTE_TYPE_MASK) == PTE_TYPE_BLOCK) {
			*level = l;
			return e;
		}
		table = uspace_entry_table(*e, l);
	}
	return NULL;
}

int uspace_translates(struct uspace *mm, uint64_t va)
{
	int level;

	return uspace_leaf(mm, va, &level) != NULL;
}

const char *uspace_map(struct uspace *mm, int level, uint64_t addr, uint64_t count)
{
	uint64_t prot = mm->kernel ? PROT_NORMAL : PROT_USER_DATA;
	uint64_t type = level == 3 ? PTE_TYPE_PAGE : PTE_TYPE_BLOCK;

	if (level < mm->start_level)
		return "block_level";
	for (uint64_t i = 0; i < count; i++) {
		uint64_t va = addr + i * level_size(level);
		uint64_t *e = walk(mm, va, level, true);

		if (!e) {
			if (mm->kernel && nr_ktables == KTABLES_MAX)
				return "too_many_kernel_tables";
			return page_pool_free() ? "overlap" : "out_of_memory";
		}
		if (*e & PTE_VALID)
			return "overlap";
		WRITE_ONCE(*e, leaf_pa(va, level) | type | prot);
	}
	return NULL;
}

/* Tables given back by teardowns, freed after the step's probes. */
#define DEFERRED_MAX	1024
static struct {
	void *table;
	int level;
} deferred[DEFERRED_MAX];
static unsigned nr_deferred;

static void free_tree(void *table, int level)
{
	uint64_t *t = table;

	if (level < 3) {
		for (unsigned i = 0; i < PTRS_PER_TABLE; i++) {
			void *sub = uspace_entry_table(t[i], level);

			if (sub)
				free_tree(sub, level + 1);
		}
	}
	page_free(table);
}

void uspace_free_table(void *table, int level)
{
	for (unsigned i = 0; i < nr_ktables; i++)
		if (ktables[i].table == table)
			ktables[i].table = NULL;	/* its parent is already clear */
	if (nr_deferred == DEFERRED_MAX)
		uspace_free_deferred();
	deferred[nr_deferred].table = table;
	deferred[nr_deferred].level = level;
	nr_deferred++;
}

void uspace_free_deferred(void)
{
	while (nr_deferred) {
		nr_deferred--;
		free_tree(deferred[nr_deferred].table, deferred[nr_deferred].level);
	}
}

int uspace_init(unsigned va_bits)
{
	if (pool_init())
		return -1;
	user_mm.root = page_alloc();
	if (!user_mm.root)
		return -1;
	user_mm.va_bits = va_bits;
	user_mm.start_level = pt_start_level(va_bits);
	user_mm.kernel = false;
	kernel_mm.root = kernel_pgd();
	kernel_mm.va_bits = 48;
	kernel_mm.start_level = kernel_start_level();
	kernel_mm.kernel = true;
	dsb(ishst);		/* the new tables are visible to the walkers */
	return 0;
}

static void release_cpu(void *arg)
{
	(void)arg;
	mmu_clear_user();
}

void uspace_release_cpus(void)
{
	for (int cpu = 1; cpu < smp_nr_cpus(); cpu++)
		smp_call(cpu, release_cpu, NULL);
	mmu_clear_user();
}

void uspace_reset(void)
{
	uspace_release_cpus();
	uspace_free_deferred();
	/* Kernel test tables, newest first: deeper tables before their parents. */
	while (nr_ktables) {
		nr_ktables--;
		if (ktables[nr_ktables].table) {
			WRITE_ONCE(*ktables[nr_ktables].parent, 0);
			page_free(ktables[nr_ktables].table);
		}
	}
	if (user_mm.root) {
		free_tree(user_mm.root, user_mm.start_level);
		user_mm.root = NULL;
	}
	/* Nothing of this scenario may survive in any TLB or walk cache. */
	dsb(ishst);		/* the cleared kernel entries reach the walkers first */
	tlbi_raw(TLBI_VMALLE1IS, 0);
	dsb(ish);		/* the invalidation is complete on every CPU */
	isb();			/* and this CPU's pipeline is past it */
}

struct touch_arg {
	struct probe_point *pts;
	unsigned n;
	uint16_t asid;
};

static void touch_cpu(void *arg)
{
	struct touch_arg *t = arg;
	uint64_t v;

	mmu_set_user(virt_to_phys(user_mm.root), t->asid, user_mm.va_bits);
	for (unsigned i = 0; i < t->n; i++)
		(void)probe_read(t->pts[i].va, &v);
}

void uspace_touch(struct probe_point *pts, unsigned n, uint16_t asid)
{
	struct touch_arg t = { pts, n, asid };

	dsb(ishst);		/* every new entry is visible to every walker */
	isb();
	for (int cpu = 0; cpu < smp_nr_cpus(); cpu++)
		smp_call(cpu, touch_cpu, &t);
}
