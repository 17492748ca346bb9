// SPDX-License-Identifier: MIT
/*
 * smp.c - secondary CPUs: started with PSCI CPU_ON at boot, then parked in a
 * mailbox loop until smp_call() gives them work: asleep in WFI, woken by
 * SGI 0 (gic.c); without a GICv2, spinning on WFE/SEV. Each keeps its
 * TLB and TTBR0 between calls, which the probes rely on: a secondary that
 * touched a mapping keeps the translation cached until a TLBI removes it.
 */
#include "core.h"
#include "asm/barrier.h"
#include "asm/psci.h"
#include "asm/sysreg.h"

#define BOOT_TIMEOUT_MS	1000

struct mailbox {
	void (*fn)(void *);
	void *arg;
	uint64_t req;		/* bumped by CPU0 for each call */
	uint64_t done;		/* set to req by the secondary when fn returned */
	uint32_t sgi_mask;	/* its GIC CPU interface bit, 0 without a GICv2 */
} __attribute__((aligned(64)));

static struct mailbox mailbox[MAX_CPUS];
static int cpu_online[MAX_CPUS];
static int nr_cpus = 1;

int smp_cpu_id(void)
{
	return (int)read_sysreg(tpidr_el1);
}

int smp_nr_cpus(void)
{
	return nr_cpus;
}

static uint64_t now_ms(void)
{
	return read_sysreg(cntpct_el0) / (read_sysreg(cntfrq_el0) / 1000);
}

void smp_boot_secondaries(void)
{
	uint64_t self = read_sysreg(mpidr_el1) & 0xff00ffffffUL;
	uint64_t entry = virt_to_phys(secondary_entry), deadline;
	int started = 1;

	cpu_online[0] = 1;
	for (uint64_t aff0 = 0; aff0 < MAX_CPUS; aff0++) {
		uint64_t target = (self & ~0xffUL) | aff0;

		if (target == self)
			continue;
		/* context id = the logical CPU number the secondary will use */
		if (psci_call(PSCI_CPU_ON_64, target, entry, (uint64_t)started) ==
		    PSCI_SUCCESS)
			started++;
	}
	deadline = now_ms() + BOOT_TIMEOUT_MS;
	for (int cpu = 1; cpu < started; cpu++) {
		while (!load_acquire(&cpu_online[cpu])) {
			if (now_ms() > deadline)
				fatal("cpu_boot_timeout");
			cpu_relax();
		}
	}
	nr_cpus = started;
}

void secondary_main(uint64_t cpu)
{
	struct mailbox *m = &mailbox[cpu];
	uint64_t seen = 0;

	m->sgi_mask = gic_secondary_init();
	store_release(&cpu_online[cpu], 1);	/* sgi_mask visible with it */
	for (;;) {
		uint64_t req;

		while ((req = load_acquire(&m->req)) == seen) {
			if (m->sgi_mask)
				gic_wait();	/* an SGI 0 after req is written */
			else
				wfe();
		}
		m->fn(m->arg);
		seen = req;
		store_release(&m->done, req);
		dsb(ishst);	/* done visible before the event wakes CPU0 */
		sev();
	}
}

int smp_call(int cpu, void (*fn)(void *), void *arg)
{
	struct mailbox *m;
	uint64_t req;

	if (cpu == smp_cpu_id()) {
		fn(arg);
		return 0;
	}
	if (cpu < 0 || cpu >= nr_cpus || !cpu_online[cpu])
		return -1;
	m = &mailbox[cpu];
	m->fn = fn;
	m->arg = arg;
	req = m->req + 1;
	store_release(&m->req, req);	/* fn/arg visible before req */
	if (m->sgi_mask) {
		gic_send_sgi0(m->sgi_mask);
	} else {
		dsb(ishst);	/* req visible before the event wakes the secondary */
		sev();
	}
	while (load_acquire(&m->done) != req)
		wfe();
	return 0;
}
