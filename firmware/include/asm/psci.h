/* SPDX-License-Identifier: MIT */
/*
 * asm/psci.h - PSCI 0.2+ function IDs (Arm DEN0022, 5.1), called through
 * HVC #0 on QEMU virt without EL2 (the DTB's psci node says "hvc").
 */
#ifndef ASM_PSCI_H
#define ASM_PSCI_H

#define PSCI_VERSION		0x84000000
#define PSCI_SYSTEM_OFF		0x84000008
#define PSCI_CPU_ON_64		0xc4000003

#define PSCI_SUCCESS		0
#define PSCI_ALREADY_ON		(-4)

#ifndef __ASSEMBLY__
#include <stdint.h>
/* One HVC call; x4..x17 may be clobbered by the callee (SMCCC 1.0). */
int64_t psci_call(uint64_t fn, uint64_t a1, uint64_t a2, uint64_t a3);
#endif

#endif /* ASM_PSCI_H */
