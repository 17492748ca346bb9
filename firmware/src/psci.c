// SPDX-License-Identifier: MIT
/*
 * psci.c - PSCI calls through HVC #0 (QEMU virt at EL1 without EL2: QEMU
 * itself implements PSCI on the HVC conduit).
 */
#include "shootdown.h"
#include "asm/barrier.h"
#include "asm/psci.h"

int64_t psci_call(uint64_t fn, uint64_t a1, uint64_t a2, uint64_t a3)
{
	register uint64_t x0 asm("x0") = fn;
	register uint64_t x1 asm("x1") = a1;
	register uint64_t x2 asm("x2") = a2;
	register uint64_t x3 asm("x3") = a3;

	asm volatile("hvc #0"
		     : "+r"(x0), "+r"(x1), "+r"(x2), "+r"(x3)
		     :
		     : "x4", "x5", "x6", "x7", "x8", "x9", "x10", "x11", "x12",
		       "x13", "x14", "x15", "x16", "x17", "memory");
	return (int64_t)x0;
}

void psci_system_off(void)
{
	dsb(sy);	/* every console byte and store out before power goes */
	psci_call(PSCI_SYSTEM_OFF, 0, 0, 0);
	for (;;)	/* SYSTEM_OFF does not return; if it did, stop quietly */
		wfi();
}
