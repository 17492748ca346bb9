// SPDX-License-Identifier: MIT
/*
 * head.c - the part of boot that runs with the MMU off, at the physical
 * address, before start.S turns the MMU on.
 *
 * Everything here must be position-independent: only ADRP-relative symbol
 * references (the default of -mcmodel=small -fno-pic), no tables of
 * pointers, no absolute addresses stored in data. With the MMU off every data
 * access is Device-nGnRnE, hence -mstrict-align in the Makefile.
 *
 * Tables built (all static, in .bss):
 *   TTBR1: the RAM linear map [RAM_PA_BASE, +RAM_MAP_SIZE) at KVA_RAM_BASE
 *          (normal write-back) and the device window [DEV_PA_START,
 *          DEV_PA_END) at KVA_DEV_BASE + PA (Device-nGnRnE), level-2
 *          blocks (2 MiB / 32 MiB / 512 MiB) rounded out to the block size.
 *   TTBR0: an identity map of the same RAM and device window, only while
 *          the MMU goes on.
 */
#include "core.h"
#include "asm/barrier.h"
#include "asm/pgtable-hwdef.h"
#include "asm/psci.h"
#include "asm/sysreg.h"

#define BOOT_TABLES	8

struct boot_params boot_params;
static uint64_t boot_tables[BOOT_TABLES][PTRS_PER_TABLE]
	__attribute__((aligned(PAGE_SIZE)));
static unsigned boot_tables_used;

/* The root level with 48-bit VAs: 0 for 4K and 16K, 1 for 64K. */
#define ROOT_LEVEL	(PAGE_SHIFT == 16 ? 1 : 0)

static uint64_t *boot_table_alloc(void)
{
	if (boot_tables_used == BOOT_TABLES)
		fatal("boot_tables");
	return boot_tables[boot_tables_used++];	/* zeroed with .bss */
}

/* Map [va, va+size) -> pa with level-2 blocks; va, pa, size block aligned. */
static void map_blocks(uint64_t *root, uint64_t va, uint64_t pa, uint64_t size,
		       uint64_t prot)
{
	for (uint64_t off = 0; off < size; off += PMD_SIZE) {
		uint64_t *t = root;

		for (int level = ROOT_LEVEL; level < 2; level++) {
			uint64_t *e = &t[PT_INDEX(va + off, level)];

			if (!(*e & PTE_VALID))
				*e = (uint64_t)(uintptr_t)boot_table_alloc() | PTE_TYPE_TABLE;
			t = (uint64_t *)(uintptr_t)(*e & PTE_ADDR_MASK);	/* PA = VA now */
		}
		t[PT_INDEX(va + off, 2)] = ((pa + off) & PTE_ADDR_MASK) | prot | PTE_TYPE_BLOCK;
	}
}

static uint64_t tg_bits(void)
{
	if (PAGE_SHIFT == 12)
		return TCR_TG0_4K | TCR_TG1_4K;
	if (PAGE_SHIFT == 14)
		return TCR_TG0_16K | TCR_TG1_16K;
	return TCR_TG0_64K | TCR_TG1_64K;
}

static bool granule_supported(const struct cpu_features *f)
{
	return PAGE_SHIFT == 12 ? f->granule4k : PAGE_SHIFT == 14 ? f->granule16k
								  : f->granule64k;
}

/* Not at EL1 (e.g. QEMU -M virt,virtualization=on starts at EL2). */
void head_wrong_el(void)
{
	register uint64_t x0 asm("x0") = PSCI_SYSTEM_OFF;

	uart_init();
	report_banner();
	report("ERR", "cmd=boot why=not_el1");
	report("END", "records=%u status=fail", report_count());
	/* At EL2 QEMU's PSCI conduit is SMC. */
	asm volatile("smc #0" : "+r"(x0) :: "x1", "x2", "x3", "memory");
}

void head_init(void)
{
	const struct cpu_features *f;
	uint64_t *kroot, *idroot, dev_start, dev_end, tcr;

	uart_init();
	cpu_features_init();
	f = cpu_features();
	if (!granule_supported(f)) {
		/* The TG1 encoding would be IMPLEMENTATION DEFINED: refuse. */
		report_banner();
		report("CPU", "midr=0x%lx mmfr0=0x%lx mmfr2=0x%lx isar0=0x%lx smp=1",
		       f->midr, f->mmfr0, f->mmfr2, f->isar0);
		fatal("granule_unsupported");
	}

	kroot = boot_table_alloc();
	idroot = boot_table_alloc();
	map_blocks(kroot, KVA_RAM_BASE, RAM_PA_BASE, RAM_MAP_SIZE, PROT_KTEXT);
	dev_start = DEV_PA_START & ~(PMD_SIZE - 1);
	dev_end = (DEV_PA_END + PMD_SIZE - 1) & ~(PMD_SIZE - 1);
	map_blocks(kroot, KVA_DEV_BASE + dev_start, dev_start, dev_end - dev_start,
		   PROT_DEVICE);
	map_blocks(idroot, RAM_PA_BASE, RAM_PA_BASE, RAM_MAP_SIZE, PROT_KTEXT | PTE_NG);
	/* The UART too, so a fault between SCTLR.M=1 and the jump still reports. */
	map_blocks(idroot, dev_start, dev_start, dev_end - dev_start, PROT_DEVICE | PTE_NG);

	tcr = TCR_T0SZ(48) | TCR_IRGN0_WBWA | TCR_ORGN0_WBWA | TCR_SH0_INNER |
	      TCR_T1SZ(48) | TCR_IRGN1_WBWA | TCR_ORGN1_WBWA | TCR_SH1_INNER |
	      tg_bits() | TCR_IPS(MMFR0_PARANGE(f->mmfr0) > 5 ? 5 : MMFR0_PARANGE(f->mmfr0));
	if (f->asid_bits == 16)
		tcr |= TCR_AS;
	boot_params.mair = MAIR_VALUE;
	boot_params.tcr_boot = tcr;
	boot_params.tcr = tcr | TCR_EPD0;
	boot_params.idmap = (uintptr_t)idroot;
	boot_params.ttbr1 = (uintptr_t)kroot;
	boot_params.sctlr = SCTLR_VALUE;
	dsb(sy);	/* tables and params in memory before any walker reads them */
}
