// SPDX-License-Identifier: MIT
/*
 * mmu.c - CPU features, the page pool and the TTBR0 hooks, all with the MMU
 * on (cpu_features_init excepted: head.c calls it with the MMU off).
 */
#include "core.h"
#include "asm/barrier.h"
#include "asm/pgtable-hwdef.h"
#include "asm/sysreg.h"

static struct cpu_features features;

void cpu_features_init(void)
{
	struct cpu_features *f = &features;

	f->midr = read_sysreg(midr_el1);
	f->mmfr0 = read_sysreg(id_aa64mmfr0_el1);
	f->mmfr1 = read_sysreg(id_aa64mmfr1_el1);
	f->mmfr2 = read_sysreg(id_aa64mmfr2_el1);
	f->isar0 = read_sysreg(id_aa64isar0_el1);
	f->granule4k = MMFR0_TGRAN4(f->mmfr0) != 0xf;
	f->granule16k = MMFR0_TGRAN16(f->mmfr0) != 0;
	f->granule64k = MMFR0_TGRAN64(f->mmfr0) != 0xf;
	f->ttl = MMFR2_TTL(f->mmfr2) >= 1;
	f->tlbios = ISAR0_TLB(f->isar0) >= 1;
	f->tlbirange = ISAR0_TLB(f->isar0) == 2;
	f->asid_bits = MMFR0_ASIDBITS(f->mmfr0) == 2 ? 16 : 8;
	switch (MMFR0_PARANGE(f->mmfr0)) {
	case 0: f->pa_bits = 32; break;
	case 1: f->pa_bits = 36; break;
	case 2: f->pa_bits = 40; break;
	case 3: f->pa_bits = 42; break;
	case 4: f->pa_bits = 44; break;
	case 5: f->pa_bits = 48; break;
	default: f->pa_bits = 52; break;
	}
}

const struct cpu_features *cpu_features(void)
{
	return &features;
}

/* ---- linear map and page pool ------------------------------------------- */

uint64_t virt_to_phys(const void *va)
{
	return (uint64_t)(uintptr_t)va - KVA_RAM_BASE + RAM_PA_BASE;
}

void *phys_to_virt(uint64_t pa)
{
	return (void *)(uintptr_t)(pa - RAM_PA_BASE + KVA_RAM_BASE);
}

/*
 * The pool: every page from the end of the image to the end of RAM or of
 * the linear map, whichever comes first, less the batch region at the top
 * (core.h). RAM size from the DTB that QEMU
 * leaves at the bottom of RAM; without one, QEMU virt's default 128 MiB.
 * Bump allocation, plus a free list threaded through freed pages.
 */
#define RAM_SIZE_DEFAULT	0x8000000UL

static uintptr_t pool_next, pool_end;
static void *free_list;
static unsigned long free_count;
static uint64_t ram_size;
static uint64_t batch_pa;	/* 0: no batch region */

void mmu_init_late(void)
{
	uint64_t window;

	ram_size = fdt_ram_size(phys_to_virt(RAM_PA_BASE), RAM_PA_BASE);
	if (!ram_size)
		ram_size = RAM_SIZE_DEFAULT;
	window = ram_size < RAM_MAP_SIZE ? ram_size : RAM_MAP_SIZE;
	if (window >= BATCH_MIN_WINDOW) {
		window -= BATCH_REGION_SIZE;	/* the top: BATCH blobs, never the pool */
		batch_pa = RAM_PA_BASE + window;
	}
	pool_next = ((uintptr_t)__image_end + PAGE_SIZE - 1) & PAGE_MASK;
	pool_end = KVA_RAM_BASE + window;
	if (pool_end < pool_next)
		pool_end = pool_next;	/* no pool: page_alloc returns NULL */
}

uint64_t mmu_ram_size(void)
{
	return ram_size;
}

bool mmu_batch_region(uint64_t *pa, uint64_t *size)
{
	*pa = batch_pa;
	*size = batch_pa ? BATCH_REGION_SIZE : 0;
	return batch_pa != 0;
}

void *page_alloc(void)
{
	void *p;

	if (free_list) {
		p = free_list;
		free_list = *(void **)p;
		free_count--;
	} else if (pool_next < pool_end) {
		p = (void *)pool_next;
		pool_next += PAGE_SIZE;
	} else {
		return NULL;
	}
	memset(p, 0, PAGE_SIZE);
	return p;
}

void page_free(void *page)
{
	if (!page)
		return;
	*(void **)page = free_list;
	free_list = page;
	free_count++;
}

unsigned long page_pool_free(void)
{
	return (pool_end - pool_next) / PAGE_SIZE + free_count;
}

/* ---- TTBR1 / TTBR0 ------------------------------------------------------ */

uint64_t *kernel_pgd(void)
{
	return phys_to_virt(boot_params.ttbr1 & PTE_ADDR_MASK);
}

int kernel_start_level(void)
{
	return pt_start_level(48);
}

int pt_start_level(unsigned va_bits)
{
	unsigned levels;

	if (va_bits < 25 || va_bits > 48)
		return -1;
	levels = (va_bits - PAGE_SHIFT + PT_BITS - 1) / PT_BITS;
	return 4 - (int)levels;
}

uint64_t mmu_tcr(void)
{
	return read_sysreg(tcr_el1);
}

static void local_tlb_flush_all(void)
{
	asm volatile("tlbi vmalle1" ::: "memory");	/* this CPU only */
	dsb(nsh);	/* invalidation complete before the next access */
	isb();		/* and before the next instruction fetch */
}

int mmu_set_user(uint64_t ttbr0_pa, uint16_t asid, unsigned va_bits)
{
	uint64_t tcr;

	if (pt_start_level(va_bits) < 0 || (features.asid_bits == 8 && asid > 0xff) ||
	    (ttbr0_pa & (PAGE_SIZE - 1)))
		return -1;
	tcr = boot_params.tcr & ~(TCR_T0SZ_MASK | TCR_EPD0);
	tcr |= TCR_T0SZ(va_bits);
	write_sysreg(ttbr0_el1, ttbr0_pa | ((uint64_t)asid << TTBR_ASID_SHIFT));
	write_sysreg(tcr_el1, tcr);
	isb();		/* new TTBR0/TCR in force before the flush and any walk */
	local_tlb_flush_all();
	return 0;
}

void mmu_clear_user(void)
{
	write_sysreg(tcr_el1, boot_params.tcr);	/* EPD0=1: no TTBR0 walks */
	write_sysreg(ttbr0_el1, 0);
	isb();		/* walks off before the flush, so nothing refills */
	local_tlb_flush_all();
}
