// SPDX-License-Identifier: MIT
/*
 * main.c - CPU0 after the MMU is on: the boot records, then the command
 * loop of docs/protocol.md (one checked line in, records out, READY).
 */
#include "core.h"
#include "asm/barrier.h"
#include "asm/sysreg.h"

#define LINE_MAX	512
/* Below the firmware's top 1 GiB and above the scenario half: never mapped. */
#define DEBUG_CRASH_VA	0xffffffff8badf000UL

/* Weak default: the teardown engine (scenario.c) replaces it. */
__attribute__((weak)) int scenario_handle_line(const char *line)
{
	if (line)
		report("ERR", "cmd=%s why=unsupported", current_command());
	return SCN_DONE;
}

/*
 * Read one line (without its end) into buf. Returns its length, or -1 if it
 * was longer than size-1 bytes (the rest up to the line end is dropped).
 * "\r", "\n" and "\r\n" all end a line; empty lines are skipped.
 */
static int read_line(char *buf, int size)
{
	int n = 0;
	bool overflow = false;

	for (;;) {
		int c = uart_getc();

		if (c < 0) {
			/*
			 * Sleep until the UART's RX interrupt is pending. Without
			 * a GICv2, poll, but not flat out: every MMIO access
			 * takes QEMU's global lock, which the thread feeding the
			 * UART needs too.
			 */
			if (gic_ready())
				gic_wait();
			else
				for (int i = 0; i < 256; i++)
					cpu_relax();
			continue;
		}
		if (c == '\r' || c == '\n') {
			if (overflow)
				return -1;
			if (n == 0)
				continue;
			buf[n] = '\0';
			return n;
		}
		if (n < size - 1)
			buf[n++] = (char)c;
		else
			overflow = true;
	}
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Strip and check " *<8 hex>"; 0 if it matches the CRC-32 of the rest. */
static int check_crc(char *line, int len)
{
	uint32_t want = 0;

	if (len < 11 || line[len - 10] != ' ' || line[len - 9] != '*')
		return -1;
	for (int i = len - 8; i < len; i++) {
		int v = hexval(line[i]);

		if (v < 0)
			return -1;
		want = want << 4 | (uint32_t)v;
	}
	line[len - 10] = '\0';
	return crc32_update(0, line, (size_t)(len - 10)) == want ? 0 : -1;
}

/* The command word as an ERR value: [A-Za-z0-9_] only, "?" if none. */
static void set_word(const char *line)
{
	char w[16];
	int n = 0;

	for (; n < 15 && line[n] && line[n] != ' '; n++) {
		char c = line[n];

		w[n] = ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
			(c >= '0' && c <= '9') || c == '_') ? c : '_';
	}
	if (!n)
		w[n++] = '?';
	w[n] = '\0';
	report_set_command(w);
}

static bool is_word(const char *line, const char *word)
{
	size_t n = strlen(word);

	return !strncmp(line, word, n) && (line[n] == ' ' || line[n] == '\0');
}

static bool is_scenario_line(const char *line)
{
	return is_word(line, "SCN") || is_word(line, "MAP") || is_word(line, "KMAP") ||
	       is_word(line, "STEP") || is_word(line, "OP") || is_word(line, "GO");
}

static void debug_command(const char *line)
{
	if (!strcmp(line, "DEBUG hang")) {
		gic_quiesce();	/* nothing can wake us: no host CPU burnt */
		for (;;)
			wfi();
	}
	if (!strcmp(line, "DEBUG crash")) {
		volatile uint64_t *bad = (volatile uint64_t *)DEBUG_CRASH_VA;

		(void)*bad;	/* translation fault: FAULT, END status=crash */
	}
	report("ERR", "cmd=DEBUG why=arg");
}

/* Where the command loop is; one instance, on CPU0. */
struct cmd_state {
	bool in_scn;		/* inside a multi-line scenario (SCN .. GO) */
	bool in_batch;		/* lines come from a BATCH blob, not the UART */
	unsigned commands;	/* complete commands so far (READY n=) */
};

static void handle_line(char *line, int len, struct cmd_state *st);

/*
 * BATCH addr=<PA> len=<bytes> crc=<CRC-32 of the bytes>: the command lines
 * QEMU's loader device put in the batch region before boot, each framed and
 * checked as on the UART, fed one by one to handle_line(). Same records, no
 * READY between commands: the caller prints one after the whole batch. The
 * blob is only read (the pool never reaches the region), so a batch can be
 * run again.
 */
static void batch_command(const char *cmd, struct cmd_state *st)
{
	static char line[LINE_MAX];
	uint64_t addr, len, crc, base, size;
	const char *blob;

	if (arg_u64(cmd, "addr", &addr) || arg_u64(cmd, "len", &len) ||
	    arg_u64(cmd, "crc", &crc) || crc > 0xffffffffUL) {
		report("ERR", "cmd=BATCH why=arg");
		return;
	}
	if (st->in_batch) {
		report("ERR", "cmd=BATCH why=nested");
		return;
	}
	/* Inside the region, without overflowing: addr - base first. */
	if (!mmu_batch_region(&base, &size) || !len || addr < base ||
	    addr - base >= size || len > size - (addr - base)) {
		report("ERR", "cmd=BATCH why=range");
		return;
	}
	blob = phys_to_virt(addr);
	if (crc32_update(0, blob, len) != crc) {
		report("ERR", "cmd=BATCH why=crc");
		return;
	}
	st->in_batch = true;
	for (uint64_t pos = 0; pos < len;) {
		uint64_t end = pos;
		int n;

		while (end < len && blob[end] != '\n' && blob[end] != '\r')
			end++;
		if (end == pos) {	/* an empty line, or the \n of \r\n */
			pos++;
			continue;
		}
		if (end - pos >= LINE_MAX) {
			n = -1;
		} else {
			n = (int)(end - pos);
			memcpy(line, blob + pos, (size_t)n);
			line[n] = '\0';
		}
		handle_line(line, n, st);
		pos = end + 1;
	}
	st->in_batch = false;
	report_set_command("BATCH");
	if (st->in_scn) {
		/* The blob ended inside a scenario: drop it, leave scenario.c idle. */
		report("ERR", "cmd=BATCH why=truncated");
		scenario_handle_line(NULL);
		scenario_handle_line("GO");
		st->in_scn = false;
	}
}

/*
 * One command line from the UART or a batch, still with its " *crc" (len
 * -1: it was too long). Updates st; READY is due when !st->in_scn.
 */
static void handle_line(char *line, int len, struct cmd_state *st)
{
	bool ok = false;

	if (len < 0) {
		report_set_command("?");
		report("ERR", "cmd=? why=toolong");
	} else {
		set_word(line);
		ok = !check_crc(line, len);
		if (!ok)
			report("ERR", "cmd=%s why=crc", current_command());
	}
	if (!ok) {
		/*
		 * A rejected line. Inside a scenario, or at the start of one, it
		 * drops the scenario: scenario.c discards lines up to GO. A
		 * damaged GO still ends it, so READY comes.
		 */
		bool scn_line = len >= 0 && is_scenario_line(line);
		bool go = len >= 0 && is_word(line, "GO");

		if (st->in_scn || (scn_line && !go)) {
			scenario_handle_line(NULL);
			st->in_scn = !go;
			if (st->in_scn)
				return;
		}
		st->commands++;
		return;
	}
	if (is_scenario_line(line)) {
		st->in_scn = scenario_handle_line(line) == SCN_MORE;
		if (st->in_scn)
			return;
	} else if (st->in_scn) {
		/* Another command inside a scenario: drop the scenario. */
		report("ERR", "cmd=%s why=inscenario", current_command());
		scenario_handle_line(NULL);
		st->in_scn = false;
	} else if (!strcmp(line, "PING")) {
		report("PONG", NULL);
	} else if (!strcmp(line, "SMOKE")) {
		smoke_run();
	} else if (is_word(line, "BATCH")) {
		batch_command(line, st);
	} else if (is_word(line, "DEBUG")) {
		debug_command(line);
	} else if (!strcmp(line, "BYE")) {
		report_end("ok");
	} else if (is_word(line, "PING") || is_word(line, "SMOKE") ||
		   is_word(line, "BYE")) {
		report("ERR", "cmd=%s why=arg", current_command());
	} else {
		report("ERR", "cmd=%s why=unknown", current_command());
	}
	st->commands++;
}

void fw_main(void);

void fw_main(void)
{
	static char line[LINE_MAX];
	const struct cpu_features *f = cpu_features();
	struct cmd_state st = { 0 };

	uart_use_va();
	mmu_init_late();
	report_banner();
	gic_init();
	uart_enable_rx_irq();
	smp_boot_secondaries();
	report("CPU", "midr=0x%lx mmfr0=0x%lx mmfr2=0x%lx isar0=0x%lx smp=%d",
	       f->midr, f->mmfr0, f->mmfr2, f->isar0, smp_nr_cpus());
	report("MMU", "sctlr=0x%lx tcr=0x%lx ttbr1=0x%lx", read_sysreg(sctlr_el1),
	       read_sysreg(tcr_el1), read_sysreg(ttbr1_el1));

	for (;;) {
		if (!st.in_scn)
			report("READY", "n=%u", st.commands);
		handle_line(line, read_line(line, sizeof(line)), &st);
	}
}
