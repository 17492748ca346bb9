// SPDX-License-Identifier: MIT
/*
 * probe.c - the C side of the exception vectors: turns a data abort on the
 * probe_read load into a return value, and everything else into a FAULT
 * record and a crash exit.
 */
#include "core.h"
#include "asm/sysreg.h"

extern char probe_insn[], probe_fault[];

static struct {
	uint64_t esr, far;
} __attribute__((aligned(64))) last_fault[MAX_CPUS];

void probe_last_fault(uint64_t *esr, uint64_t *far)
{
	int cpu = smp_cpu_id();

	*esr = last_fault[cpu].esr;
	*far = last_fault[cpu].far;
}

/* Names of the 16 vectors; a switch, not a pointer table (MMU-off safe). */
static const char *vector_name(unsigned n)
{
	switch (n) {
	case 0: return "el1t_sync";
	case 1: return "el1t_irq";
	case 2: return "el1t_fiq";
	case 3: return "el1t_serror";
	case 8: return "el0_64_sync";
	case 9: return "el0_64_irq";
	case 10: return "el0_64_fiq";
	case 11: return "el0_64_serror";
	case 12: return "el0_32_sync";
	case 13: return "el0_32_irq";
	case 14: return "el0_32_fiq";
	case 15: return "el0_32_serror";
	default: return "unknown";
	}
}

void exc_handler(struct exc_frame *f, unsigned vector);

void exc_handler(struct exc_frame *f, unsigned vector)
{
	if (vector == 0 && f->elr == (uintptr_t)probe_insn &&
	    ESR_EC(f->esr) == ESR_EC_DABT_CUR &&
	    FSC_IS_TRANS_ACCESS_PERM(ESR_FSC(f->esr))) {
		int cpu = smp_cpu_id();

		last_fault[cpu].esr = f->esr;
		last_fault[cpu].far = f->far;
		f->elr = (uintptr_t)probe_fault;	/* resume at "return 1" */
		return;
	}
	report_fault(smp_cpu_id(), vector_name(vector), f);
}
