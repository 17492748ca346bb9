/* SPDX-License-Identifier: MIT */
/*
 * shootdown.h - the firmware core API: console records, fatal exits, page
 * allocator, fault probes, SMP calls, CPU features and the MMU hooks.
 *
 * The teardown engine (scenario.c, uspace.c, gather.c, policy.c, oplog.c) is
 * written against this header only; everything here is implemented by the
 * core (start.S, vectors.S, main.c, uart.c, report.c, crc32.c, mmu.c,
 * psci.c, smp.c, probe.c, lib.c).
 *
 * Execution model: CPU0 runs main.c's command loop; the other CPUs sit in
 * smp.c's mailbox loop and only run what smp_call() hands them. Interrupts
 * are masked everywhere; nothing is preemptive. Unless a function says
 * otherwise, call it from CPU0 with the MMU on.
 */
#ifndef SHOOTDOWN_H
#define SHOOTDOWN_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- build constants -------------------------------------------------- */

#ifndef GRANULE_SHIFT
#error "GRANULE_SHIFT must be 12, 14 or 16 (set by the Makefile)"
#endif
#define PAGE_SHIFT	GRANULE_SHIFT
#define PAGE_SIZE	(1UL << PAGE_SHIFT)
#define PAGE_MASK	(~(PAGE_SIZE - 1))

#define MAX_CPUS	8	/* MPIDR.Aff0 0..7: one virt cluster */

/*
 * Kernel virtual address space (TTBR1, T1SZ=16: 0xffff000000000000 and up).
 * The firmware lives in the top 1 GiB, but the whole upper half of the TTBR1
 * space is reserved so that no root-table entry is shared with scenarios on
 * any granule (with 16K the root entry for bit 47 = 1 spans 128 TiB).
 * Scenarios (KMAP, flush_tlb_kernel_*) may use [KVA_SCN_BASE, KVA_SCN_END)
 * only, where the root entries are empty at boot and belong to them.
 */
#define KVA_SCN_BASE		0xffff000000000000UL
#define KVA_SCN_END		0xffff800000000000UL	/* reserved from here */
#define KVA_FW_BASE		0xffffffffc0000000UL	/* top 1 GiB: firmware */
#define KVA_RAM_BASE		KVA_FW_BASE		/* RAM linear map */
#define KVA_DEV_BASE		0xffffffffe0000000UL	/* + PA of a device */
#define RAM_PA_BASE		0x40000000UL		/* QEMU virt */
#define RAM_MAP_SIZE		0x20000000UL		/* 512 MiB mapped, pool within RAM */

/* 1 if [start, end) touches the reserved part of the kernel VA space. */
static inline int kva_reserved(uint64_t start, uint64_t end)
{
	return end > KVA_SCN_END || start < KVA_SCN_BASE || end < start;
}

/* ---- console records (report.c) -------------------------------------- */

/*
 * report - print one protocol record: "SD1 <seq> <tag> <payload> *<crc>".
 * fmt/... is the payload (key=value tokens, no newline); fmt may be "" or
 * NULL for an empty payload. Adds the sequence number and the CRC-32.
 * printf subset: %s %c %d %i %u %x %lx %llx %ld %lu %lld %llu %p %%, with
 * '0' flag, width and the 'l'/'ll'/'z' length modifiers (e.g. %016lx).
 * A payload longer than REPORT_MAX bytes is cut (never overflows).
 * SMP-safe: any CPU may call it (a spin lock serialises records).
 */
#define REPORT_MAX 480
void report(const char *tag, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void vreport(const char *tag, const char *fmt, va_list ap);

/* Number of records printed so far (= the next sequence number). */
unsigned report_count(void);

/*
 * fatal - the run cannot go on: print "ERR cmd=<current command> why=<why>"
 * and "END records=<n> status=fail", then PSCI SYSTEM_OFF. why is one word
 * (no spaces). Never returns. Any CPU.
 */
void fatal(const char *why) __attribute__((noreturn));

/* The command word being executed ("boot" before the first READY). */
const char *current_command(void);

/* Plain text to the console, no record (debug only: the host ignores it). */
void console_puts(const char *s);

/* ---- formatting and parsing helpers (lib.c) ---------------------------- */

int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
int snprintf(char *buf, size_t size, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void *memset(void *s, int c, size_t n);
void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);

/*
 * Parse a decimal or 0x-prefixed hex number, the whole string up to the
 * first space or NUL. 0 on success, -1 if malformed or overflowing.
 */
int parse_u64(const char *s, uint64_t *out);

/*
 * Find "key=value" among the space-separated tokens of line (the first word,
 * the command, is skipped). arg_u64: 0 found and parsed, -1 missing, -2
 * malformed. arg_str copies the value (NUL-terminated, at most size-1
 * bytes): 0 found, -1 missing, -2 too long.
 */
int arg_u64(const char *line, const char *key, uint64_t *out);
int arg_str(const char *line, const char *key, char *buf, size_t size);

/* CRC-32 (IEEE 802.3, zlib.crc32-compatible); crc = 0 to start. */
uint32_t crc32_update(uint32_t crc, const void *buf, size_t len);

/* ---- page allocator (mmu.c) ------------------------------------------- */

/*
 * page_alloc - one zeroed, PAGE_SIZE-aligned page of normal write-back RAM
 * from the pool after the image (up to the end of RAM, at most the 512 MiB
 * linear map: about 125 MiB with QEMU's -m 128M), returned as
 * a kernel VA; NULL when the pool is exhausted. For page tables and for the
 * data pages that user/kernel test mappings point at. CPU0 only.
 * page_free - give it back (any page from page_alloc, once). CPU0 only.
 * page_pool_free - pages still available.
 */
void *page_alloc(void);
void page_free(void *page);
unsigned long page_pool_free(void);

/* Bytes of RAM at RAM_PA_BASE (from the DTB; the pool ends at the smaller
 * of this and RAM_MAP_SIZE). */
uint64_t mmu_ram_size(void);

/* Linear-map conversions, valid for RAM in [RAM_PA_BASE, +RAM_MAP_SIZE). */
uint64_t virt_to_phys(const void *va);
void *phys_to_virt(uint64_t pa);

/* ---- MMU (mmu.c) ------------------------------------------------------ */

/*
 * kernel_pgd - the TTBR1 root table (kernel VA). Scenario tables go under its
 * entries for [KVA_SCN_BASE, KVA_SCN_END) only; they are empty at boot.
 * kernel_start_level - the level of that root (0 for 4K/16K, 1 for 64K,
 * with T1SZ=16). Install leaf/table entries with the bits of
 * asm/pgtable-hwdef.h; mark kernel test mappings global (nG=0).
 */
uint64_t *kernel_pgd(void);
int kernel_start_level(void);

/*
 * pt_start_level - the level of the root table that TTBR0 walks for a
 * va_bits-bit user space on this build's granule (the translation starts at
 * the level that resolves bit va_bits-1). -1 if va_bits is not usable.
 */
int pt_start_level(unsigned va_bits);

/*
 * mmu_set_user - point this CPU's TTBR0 at root ttbr0_pa (page aligned) with
 * ASID asid, T0SZ = 64 - va_bits, TG0 = the build's granule, and enable
 * TTBR0 walks (EPD0=0). Then invalidates this CPU's own TLB (TLBI VMALLE1,
 * non-broadcast) so the scenario starts from a clean slate on this CPU.
 * Returns 0, or -1 if va_bits (25..48) or asid (>= 2^asid_bits) is invalid.
 * Any CPU (run it on each CPU that will touch the user space).
 * mmu_clear_user - disable TTBR0 walks (EPD0=1), TTBR0 = 0, and invalidate
 * this CPU's TLB locally, so no stale user entry survives. Any CPU.
 */
int mmu_set_user(uint64_t ttbr0_pa, uint16_t asid, unsigned va_bits);
void mmu_clear_user(void);

/* Register values the MMU runs with (for the MMU record and for checks). */
uint64_t mmu_tcr(void);

/* ---- CPU features (probe of ID registers, mmu.c) ----------------------- */

struct cpu_features {
	uint64_t midr;		/* MIDR_EL1 */
	uint64_t mmfr0;		/* ID_AA64MMFR0_EL1 */
	uint64_t mmfr1;		/* ID_AA64MMFR1_EL1 */
	uint64_t mmfr2;		/* ID_AA64MMFR2_EL1 */
	uint64_t isar0;		/* ID_AA64ISAR0_EL1 */
	bool granule4k;		/* MMFR0.TGran4 == 0 */
	bool granule16k;	/* MMFR0.TGran16 != 0 */
	bool granule64k;	/* MMFR0.TGran64 == 0 */
	bool ttl;		/* FEAT_TTL: MMFR2.TTL == 1 */
	bool tlbios;		/* FEAT_TLBIOS: ISAR0.TLB >= 1 */
	bool tlbirange;		/* FEAT_TLBIRANGE: ISAR0.TLB == 2 */
	unsigned asid_bits;	/* 8 or 16 (MMFR0.ASIDBits) */
	unsigned pa_bits;	/* from MMFR0.PARange */
};

/* Read once at boot from the ID registers (CPU0), never assumed. */
const struct cpu_features *cpu_features(void);

/* ---- fault probes (probe.c + vectors.S) --------------------------------- */

/*
 * probe_read - load 64 bits from va (8-byte aligned). Returns 0 if the load
 * completed (*val set), 1 if it took a data abort with a translation,
 * access-flag or permission fault (any level), which the vector turns into
 * this return (*val untouched). Any other exception, here or anywhere else,
 * is unexpected: FAULT record, END status=crash, power off. Any CPU, MMU on.
 * probe_last_fault - ESR_EL1 and FAR_EL1 of the calling CPU's last probe
 * fault (0/0 before the first).
 */
int probe_read(uint64_t va, uint64_t *val);
void probe_last_fault(uint64_t *esr, uint64_t *far);

/* ---- SMP (smp.c) -------------------------------------------------------- */

/* Number of CPUs online (CPU0 plus the secondaries PSCI CPU_ON started). */
int smp_nr_cpus(void);

/* This CPU's logical number: 0 for the boot CPU, then 1.. in start order. */
int smp_cpu_id(void);

/*
 * smp_call - run fn(arg) on CPU cpu and wait until it returns. fn runs with
 * the MMU on, the same TTBR1/TCR/MAIR/SCTLR, interrupts masked, on that
 * CPU's own stack; its TTBR0 is whatever the last mmu_set_user/clear_user
 * on that CPU left. cpu == smp_cpu_id() calls fn directly. Returns 0, or -1
 * if cpu is not online. Call from CPU0 (one call at a time).
 */
int smp_call(int cpu, void (*fn)(void *), void *arg);

/* ---- power (psci.c) ---------------------------------------------------- */

void psci_system_off(void) __attribute__((noreturn));

/* ---- the scenario hook (weak stub in main.c; scenario.c overrides) ------ */

enum {
	SCN_MORE = 0,	/* line taken, more lines of this scenario expected */
	SCN_DONE = 1,	/* the command is complete: main prints READY */
};

/*
 * scenario_handle_line - main.c forwards every checked command line whose
 * first word is SCN, MAP, KMAP, STEP, OP or GO, without its " *crc" suffix
 * and without the line end. Return SCN_MORE while the scenario is being
 * buffered (no READY), SCN_DONE after GO (run it first, print its records)
 * or when the line ended the command otherwise. Print ERR records yourself
 * for lines you reject. line == NULL: main rejected a line of the current
 * scenario (bad checksum, already answered with ERR): discard the buffered
 * scenario and ignore lines up to GO. Called on CPU0.
 * The weak default answers ERR why=unsupported and returns SCN_DONE.
 */
int scenario_handle_line(const char *line);

/* ---- SMOKE (smoke.c) --------------------------------------------------- */

/* The built-in smoke check; prints its SMOKE record. */
void smoke_run(void);

#endif /* SHOOTDOWN_H */
