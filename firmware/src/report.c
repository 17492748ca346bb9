// SPDX-License-Identifier: MIT
/*
 * report.c - protocol records (docs/protocol.md): "SD1 <seq> <TAG>
 * <payload> *<crc>\n", one sequence number per record, no gaps, CRC-32 over
 * everything before " *". A spin lock keeps records whole and the sequence
 * monotonic when several CPUs print; the fault path takes it by force after
 * a bounded wait so a CPU that died holding it cannot silence the FAULT.
 */
#include "core.h"
#include "asm/barrier.h"
#include "asm/sysreg.h"

static unsigned seq;
static void banner_if_first(void);

static const char *granule_name(void)
{
	return PAGE_SHIFT == 12 ? "4k" : PAGE_SHIFT == 14 ? "16k" : "64k";
}

static int lock_owner = -1;		/* CPU holding the record lock, or -1 */
static char command[16] = "boot";

static bool mmu_on(void)
{
	return read_sysreg(sctlr_el1) & SCTLR_M;
}

/*
 * Exclusives need Normal cacheable memory, which only exists with the MMU
 * on; before that only CPU0 runs and no lock is needed.
 */
static void lock(bool force)
{
	int me = smp_cpu_id(), expect = -1;
	unsigned long spins = 0;

	if (!mmu_on())
		return;
	while (!__atomic_compare_exchange_n(&lock_owner, &expect, me, false,
					    __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
		if (force && (expect == me || ++spins > 10000000UL)) {
			store_release(&lock_owner, me);	/* steal it */
			return;
		}
		expect = -1;
		cpu_relax();
	}
}

static void unlock(void)
{
	if (mmu_on())
		store_release(&lock_owner, -1);
}

void console_puts(const char *s)
{
	while (*s)
		uart_putc(*s++);
}

static void emit(const char *tag, const char *fmt, va_list ap)
{
	char line[REPORT_MAX + 64];
	int n;

	n = snprintf(line, sizeof(line), "SD1 %u %s", seq, tag);
	if (fmt && *fmt) {
		int w;

		line[n++] = ' ';
		w = vsnprintf(line + n, REPORT_MAX, fmt, ap);
		n += w < REPORT_MAX ? w : REPORT_MAX - 1;	/* cut, kept whole */
	}
	snprintf(line + n, sizeof(line) - (size_t)n, " *%08x\n",
		 crc32_update(0, line, (size_t)n));
	seq++;
	console_puts(line);
}

void vreport(const char *tag, const char *fmt, va_list ap)
{
	lock(false);
	emit(tag, fmt, ap);
	unlock();
}

void report(const char *tag, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vreport(tag, fmt, ap);
	va_end(ap);
}

unsigned report_count(void)
{
	return READ_ONCE(seq);
}

const char *current_command(void)
{
	return command;
}

void report_set_command(const char *word)
{
	size_t i;

	for (i = 0; i + 1 < sizeof(command) && word[i] && word[i] != ' '; i++)
		command[i] = word[i];
	command[i] = '\0';
}

/* Print a record while holding the lock already. */
static void emit_locked(const char *tag, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	emit(tag, fmt, ap);
	va_end(ap);
}

void report_end(const char *status)
{
	lock(true);
	emit_locked("END", "records=%u status=%s", seq, status);
	psci_system_off();
}

void fatal(const char *why)
{
	lock(true);
	banner_if_first();
	emit_locked("ERR", "cmd=%s why=%s", command, why);
	emit_locked("END", "records=%u status=fail", seq);
	psci_system_off();
}

void report_fault(int cpu, const char *vector, const struct exc_frame *f)
{
	lock(true);
	banner_if_first();
	emit_locked("FAULT", "cpu=%d vector=%s esr=0x%lx elr=0x%lx far=0x%lx spsr=0x%lx",
		    cpu, vector, f->esr, f->elr, f->far, f->spsr);
	emit_locked("END", "records=%u status=crash", seq);
	psci_system_off();
}

/* BEGIN's payload: proto, the build-id read from the note kept in the image. */
static void banner_payload(char *buf, size_t size)
{
	const uint32_t *note = (const uint32_t *)__build_id_note_start;
	char hex[2 * 64 + 1] = "none";

	if (__build_id_note_end - __build_id_note_start >= 16) {
		/* Elf64_Nhdr: namesz, descsz, type, then "GNU\0", then desc */
		uint32_t namesz = note[0], descsz = note[1];
		const unsigned char *desc = (const unsigned char *)(note + 3) +
					    ((namesz + 3) & ~3u);

		if (descsz > 64)
			descsz = 64;
		for (uint32_t i = 0; i < descsz; i++)
			snprintf(hex + 2 * i, 3, "%02x", desc[i]);
	}
	snprintf(buf, size, "proto=1 fw=shootdown build_id=%s granule=%s version=%s",
		 hex, granule_name(), FW_VERSION);
}

void report_banner(void)
{
	char payload[256];

	banner_payload(payload, sizeof(payload));
	report("BEGIN", "%s", payload);
}

/* Lock held: a failure before BEGIN still starts with BEGIN (protocol). */
static void banner_if_first(void)
{
	char payload[256];

	if (seq)
		return;
	banner_payload(payload, sizeof(payload));
	emit_locked("BEGIN", "%s", payload);
}
