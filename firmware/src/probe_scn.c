/* SPDX-License-Identifier: MIT */
/*
 * probe_scn.c - after each step, read every test address from CPU0 and
 * from CPU1: what the step unmapped must fault, what is still mapped must
 * read its value. Under TCG a missing or misdirected TLBI leaves a working
 * stale translation, which is what these reads catch.
 */
#include "shootdown.h"
#include "asm/barrier.h"
#include "scenario.h"

/* Failures kept per CPU and step; PROBE still counts all of them. */
#define PROBEFAIL_MAX	32

enum got { GOT_READ, GOT_FAULT, GOT_WRONG };

struct probe_fail {
	uint64_t addr;
	bool expect_fault;
	enum got got;
};

struct probe_run {
	struct probe_point *pts;
	const bool *now;
	unsigned n;
	uint64_t lo, hi;
	/* results */
	unsigned unmapped, faulted, mapped, intact, nr_fail, total_fail;
	struct probe_fail fail[PROBEFAIL_MAX];
};

static void add_fail(struct probe_run *r, uint64_t addr, bool expect_fault, enum got got)
{
	r->total_fail++;
	if (r->nr_fail < PROBEFAIL_MAX) {
		r->fail[r->nr_fail].addr = addr;
		r->fail[r->nr_fail].expect_fault = expect_fault;
		r->fail[r->nr_fail].got = got;
		r->nr_fail++;
	}
}

static void probe_cpu(void *arg)
{
	struct probe_run *r = arg;

	for (unsigned i = 0; i < r->n; i++) {
		const struct probe_point *p = &r->pts[i];
		uint64_t v = 0;
		int fault;

		/* Lost only with its table (leaf still set): not this step's unmap. */
		if (!r->now[i] && (!p->mapped || READ_ONCE(*p->leaf) ||
				   p->va < r->lo || p->va >= r->hi))
			continue;
		fault = probe_read(p->va, &v);
		if (!r->now[i]) {
			r->unmapped++;
			if (fault)
				r->faulted++;
			else
				add_fail(r, p->va, true, GOT_READ);
		} else {
			r->mapped++;
			if (fault)
				add_fail(r, p->va, false, GOT_FAULT);
			else if (v != p->expect)
				add_fail(r, p->va, false, GOT_WRONG);
			else
				r->intact++;
		}
	}
}

static struct probe_run runs[2];

unsigned probe_step(unsigned step, struct probe_point *pts, unsigned n,
		    const bool *now_mapped, uint64_t lo, uint64_t hi)
{
	static const char *const got_name[] = { "read", "fault", "wrong" };
	int cpus = smp_nr_cpus() > 1 ? 2 : 1;
	unsigned fails = 0;

	for (int cpu = 0; cpu < cpus; cpu++) {
		struct probe_run *r = &runs[cpu];

		*r = (struct probe_run){ .pts = pts, .now = now_mapped, .n = n,
					 .lo = lo, .hi = hi };
		smp_call(cpu, probe_cpu, r);
	}
	for (int cpu = 0; cpu < cpus; cpu++) {
		struct probe_run *r = &runs[cpu];

		report("PROBE", "step=%u cpu=%d unmapped=%u faulted=%u mapped=%u intact=%u",
		       step, cpu, r->unmapped, r->faulted, r->mapped, r->intact);
		for (unsigned i = 0; i < r->nr_fail; i++)
			report("PROBEFAIL", "step=%u cpu=%d addr=0x%lx expect=%s got=%s",
			       step, cpu, r->fail[i].addr,
			       r->fail[i].expect_fault ? "fault" : "value",
			       got_name[r->fail[i].got]);
		fails += r->total_fail;
	}
	return fails;
}
