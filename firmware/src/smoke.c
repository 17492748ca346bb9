// SPDX-License-Identifier: MIT
/*
 * smoke.c - the built-in SMOKE check, independent of the teardown engine:
 * proves on this guest that (1) TTBR0 user mappings with nG and an ASID
 * work on every CPU, (2) a cleared PTE stays reachable through the TLB until
 * it is invalidated (the effect every probe relies on), and (3) DSB ISHST;
 * TLBI VALE1IS; DSB ISH from CPU0 removes it on all CPUs while the
 * neighbouring pages still read.
 *
 * Record: SMOKE status=pass|fail cpus=<n> pages=<n> asid=0x.. va=0x..
 *   stale=<cpus that still read the cleared page before the TLBI>
 *   faulted=<probes of the cleared page that faulted after it, of cpus>
 *   intact=<neighbour reads with the right value, of cpus*(pages-1)>
 *   why=<first failure, or none>
 *   ram=<RAM bytes, from the DTB> pool=<free pages before this run's are freed>
 * pass needs faulted == cpus and intact == cpus*(pages-1). stale is a
 * figure, not a condition: hardware may evict a TLB entry at any time; under
 * QEMU TCG stale == cpus is expected, and 0 would mean probes are blind.
 */
#include "shootdown.h"
#include "asm/barrier.h"
#include "asm/pgtable-hwdef.h"

#define SMOKE_PAGES	4
#define SMOKE_VA	0x0000004000000000UL	/* 256 GiB: block aligned on all granules */
#define SMOKE_ASID	0x5a
#define SMOKE_VA_BITS	48
#define SMOKE_VICTIM	1			/* the page whose PTE is cleared */
#define SMOKE_MAGIC	0x5d0e000000000000UL

struct smoke {
	uint64_t root_pa;
	void *tables[8];
	unsigned ntables;
	void *data[SMOKE_PAGES];
	uint64_t *victim_pte;
	int ok;			/* set by the per-CPU steps */
	int stale, faulted, intact, readable;
};

static uint64_t page_va(unsigned i)
{
	return SMOKE_VA + (uint64_t)i * PAGE_SIZE;
}

/* The level-3 entry for va, creating tables on the way; NULL if out of pages. */
static uint64_t *smoke_pte(struct smoke *s, uint64_t *root, uint64_t va)
{
	uint64_t *t = root;

	for (int level = pt_start_level(SMOKE_VA_BITS); level < 3; level++) {
		uint64_t *e = &t[PT_INDEX(va, level)];

		if (!(*e & PTE_VALID)) {
			void *n = page_alloc();

			if (!n || s->ntables == 8)
				return NULL;
			s->tables[s->ntables++] = n;
			*e = virt_to_phys(n) | PTE_TYPE_TABLE;
		}
		t = phys_to_virt(*e & PTE_ADDR_MASK);
	}
	return &t[PT_INDEX(va, 3)];
}

/* On each CPU: switch to the smoke address space and read every page. */
static void smoke_touch(void *arg)
{
	struct smoke *s = arg;
	uint64_t v;

	if (mmu_set_user(s->root_pa, SMOKE_ASID, SMOKE_VA_BITS))
		return;
	for (unsigned i = 0; i < SMOKE_PAGES; i++)
		if (!probe_read(page_va(i), &v) && v == (SMOKE_MAGIC | i))
			s->readable++;
}

/* Before the TLBI: does the cleared page still translate from the TLB? */
static void smoke_stale(void *arg)
{
	struct smoke *s = arg;
	uint64_t v;

	if (!probe_read(page_va(SMOKE_VICTIM), &v))
		s->stale++;
}

/* After the TLBI: the victim must fault, the others must still read. */
static void smoke_check(void *arg)
{
	struct smoke *s = arg;
	uint64_t v;

	for (unsigned i = 0; i < SMOKE_PAGES; i++) {
		int r = probe_read(page_va(i), &v);

		if (i == SMOKE_VICTIM)
			s->faulted += r == 1;
		else
			s->intact += r == 0 && v == (SMOKE_MAGIC | i);
	}
	mmu_clear_user();
}

void smoke_run(void)
{
	struct smoke s = { 0 };
	void *root = page_alloc();
	int cpus = smp_nr_cpus();
	const char *why = "none";

	if (!root) {
		report("SMOKE", "status=fail why=nomem");
		return;
	}
	s.root_pa = virt_to_phys(root);
	for (unsigned i = 0; i < SMOKE_PAGES; i++) {
		uint64_t *pte = smoke_pte(&s, root, page_va(i));

		s.data[i] = page_alloc();
		if (!pte || !s.data[i]) {
			why = "nomem";
			goto out;
		}
		*(uint64_t *)s.data[i] = SMOKE_MAGIC | i;
		*pte = virt_to_phys(s.data[i]) | PROT_USER_DATA | PTE_TYPE_PAGE;
		if (i == SMOKE_VICTIM)
			s.victim_pte = pte;
	}
	dsb(ishst);	/* tables visible to every walker before any CPU uses them */

	for (int cpu = 0; cpu < cpus; cpu++)
		smp_call(cpu, smoke_touch, &s);
	if (s.readable != cpus * SMOKE_PAGES) {
		why = "unreadable";
		goto out_clear;
	}

	WRITE_ONCE(*s.victim_pte, 0);
	dsb(ishst);	/* PTE store visible to walkers before the probes */
	for (int cpu = 0; cpu < cpus; cpu++)
		smp_call(cpu, smoke_stale, &s);

	/* The invalidation under test, as flush_tlb_page issues it. */
	dsb(ishst);	/* PTE store visible to walkers before the TLBI */
	asm volatile("tlbi vale1is, %0"
		     :: "r"(((uint64_t)SMOKE_ASID << 48) | (page_va(SMOKE_VICTIM) >> 12))
		     : "memory");
	dsb(ish);	/* TLBI complete on every CPU before the probes */

	for (int cpu = 0; cpu < cpus; cpu++)
		smp_call(cpu, smoke_check, &s);
	if (s.faulted != cpus)
		why = "notfaulted";
	else if (s.intact != cpus * (SMOKE_PAGES - 1))
		why = "notintact";
	goto out;

out_clear:
	for (int cpu = 0; cpu < cpus; cpu++)
		smp_call(cpu, (void (*)(void *))mmu_clear_user, NULL);
out:
	report("SMOKE", "status=%s cpus=%d pages=%d asid=0x%x va=0x%lx stale=%d faulted=%d "
	       "intact=%d why=%s ram=0x%lx pool=%lu", strcmp(why, "none") ? "fail" : "pass", cpus,
	       SMOKE_PAGES, SMOKE_ASID, SMOKE_VA, s.stale, s.faulted, s.intact, why,
	       mmu_ram_size(), page_pool_free());
	for (unsigned i = 0; i < SMOKE_PAGES; i++)
		page_free(s.data[i]);
	for (unsigned i = 0; i < s.ntables; i++)
		page_free(s.tables[i]);
	page_free(root);
}
