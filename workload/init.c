/*
 * init.c: the workload, /init of the initramfs shootdown writes.
 *
 * It reads commands from the console, one per line, and answers each with
 * lines the host parses (docs/kernel.md, "The workload's console protocol"):
 *
 *   READY workload=1 pagesize=P cpu=C probe_cpu=D     once, when it can take commands
 *   STEP n OP args...   ->  STEP n BEGIN OP
 *                           STEP n END OP rc=R ns=T [results]
 *   PING                ->  PONG
 *   HANDSHAKE 0|1       ->  OK handshake=0|1   with 1, every STEP waits after its BEGIN
 *                           line for a line "GO" from the host before its system call,
 *                           so the host can open a tracing window in between
 *   MAPS                ->  MAP lines of /proc/self/maps, then MAPS END n=N
 *   THP                 ->  THP followed by the transparent hugepage modes ("none": no THP)
 *   KALLSYMS            ->  the text symbols of /proc/kallsyms (mounted on first use),
 *                           "SYM addr type name" per line (and _text, _etext), then "KALLSYMS END n=N"
 *   POWEROFF            ->  BYE, then the machine powers off
 *   anything else       ->  ERR reason
 *
 * The host opens a tracing window at BEGIN and closes it at END: between
 * them the guest does exactly the step's system call(s) and nothing else.
 *
 * Steps (addresses and lengths in hex with 0x, or decimal):
 *   MMAP addr len [populate] [thp|nothp]  anonymous private read-write mapping at addr
 *                                         (MAP_FIXED_NOREPLACE; 0 = anywhere); thp/nothp
 *                                         is madvise(MADV_[NO]HUGEPAGE), default nothp;
 *                                         populate writes one byte per page
 *   MUNMAP addr len
 *   DONTNEED addr len                     madvise(MADV_DONTNEED)
 *   MPROTECT addr len none|r|rw
 *   EXIT-CHILD addr len [thp]             a forked child maps and populates addr/len
 *                                         (outside the window), then exits inside it:
 *                                         the fullmm teardown of exit_mmap()
 *   SWITCH-MM 0 0                         a child forked before BEGIN exits and is reaped
 *                                         inside the window: this CPU switches to the
 *                                         child's mm and back, so a traced window sees
 *                                         this mm's ASID written to TTBR1
 *   PROBE addr len [local]                the probe thread (pinned to another CPU, or
 *                                         this one with "local") loads one byte of each
 *                                         page; results: cpu, pages, loaded, segv,
 *                                         efault, si_code
 *
 * What PROBE sees: "segv" counts user loads (LDRB at EL0) that faulted, a
 * real use of the probing CPU's TLB; a load that succeeds after MUNMAP is
 * a stale translation.  "efault" counts write(pipe, page, 1) calls that
 * failed with EFAULT: the kernel's own uaccess load from that CPU, which
 * under KPTI runs with the kernel's ASID, not the user's, and whose fault
 * is resolved by the kernel walking the page tables.  See docs/kernel.md.
 */
#include "sys.h"

extern long spawn_thread(unsigned long flags, void *stack_top, void (*fn)(void *), void *arg);
extern int probe_read(const volatile void *addr);
extern char probe_insn[];
extern void sigreturn_restorer(void);

void *memset(void *s, int c, unsigned long n);
void *memcpy(void *d, const void *s, unsigned long n);
void *memset(void *s, int c, unsigned long n)
{
	u8 *p = s;
	while (n--)
		*p++ = (u8)c;
	return s;
}
void *memcpy(void *d, const void *s, unsigned long n)
{
	u8 *o = d;
	const u8 *i = s;
	while (n--)
		*o++ = *i++;
	return d;
}

/* ---- console output: one write(2) per line, so lines do not interleave ---- */

static char out[512];
static unsigned outlen;

static void put(const char *s)
{
	while (*s && outlen < sizeof(out) - 2)
		out[outlen++] = *s++;
}

static void put_dec(long v)
{
	char tmp[24];
	int i = 0;
	unsigned long u = v < 0 ? -(unsigned long)v : (unsigned long)v;
	if (v < 0)
		put("-");
	do {
		tmp[i++] = (char)('0' + u % 10);
		u /= 10;
	} while (u);
	while (i && outlen < sizeof(out) - 2)
		out[outlen++] = tmp[--i];
}

static void put_hex(u64 v)
{
	char tmp[20];
	int i = 0;
	put("0x");
	do {
		tmp[i++] = "0123456789abcdef"[v & 15];
		v >>= 4;
	} while (v);
	while (i && outlen < sizeof(out) - 2)
		out[outlen++] = tmp[--i];
}

static void put_kv(const char *key, long v)
{
	put(" ");
	put(key);
	put("=");
	put_dec(v);
}

static void line_end(void)
{
	out[outlen++] = '\n';
	sys3(SYS_write, 1, out, outlen);
	outlen = 0;
}

static void say(const char *s)
{
	put(s);
	line_end();
}

/* ---- the SIGSEGV handler: only probe_insn may fault ---- */

static volatile int last_si_code;

static void on_segv(int sig, void *info, void *ucv)
{
	struct ucontext *uc = ucv;
	struct siginfo *si = info;
	(void)sig;
	if (uc->uc_mcontext.pc == (u64)probe_insn) {
		last_si_code = si->si_code;
		uc->uc_mcontext.regs[0] = 1;	/* probe_read returns 1: it faulted */
		uc->uc_mcontext.pc += 4;
		return;
	}
	outlen = 0;
	put("FATAL SIGSEGV pc=");
	put_hex(uc->uc_mcontext.pc);
	put(" addr=");
	put_hex((u64)si->si_addr);
	line_end();
	sys1(SYS_exit_group, 3);
}

/* ---- helpers ---- */

static u64 pagesize = 4096;
static int pipe_fds[2];

static long now_ns(void)
{
	struct timespec ts;
	sys2(SYS_clock_gettime, CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static int this_cpu(void)
{
	unsigned cpu = ~0u;
	sys3(SYS_getcpu, &cpu, 0, 0);
	return (int)cpu;
}

static long pin_to(int cpu)
{
	u64 mask = 1UL << cpu;
	return sys3(SYS_sched_setaffinity, 0, sizeof(mask), &mask);
}

static int streq(const char *a, const char *b)
{
	while (*a && *a == *b)
		a++, b++;
	return *a == *b;
}

/* 0x-prefixed hex or decimal; returns 0 on a malformed number */
static int parse_num(const char *s, u64 *v)
{
	u64 r = 0;
	if (!*s)
		return 0;
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		s += 2;
		if (!*s)
			return 0;
		for (; *s; s++) {
			int d = (*s >= '0' && *s <= '9') ? *s - '0' :
				(*s >= 'a' && *s <= 'f') ? *s - 'a' + 10 :
				(*s >= 'A' && *s <= 'F') ? *s - 'A' + 10 : -1;
			if (d < 0)
				return 0;
			r = r * 16 + (u64)d;
		}
	} else {
		for (; *s; s++) {
			if (*s < '0' || *s > '9')
				return 0;
			r = r * 10 + (u64)(*s - '0');
		}
	}
	*v = r;
	return 1;
}

static void populate(u64 addr, u64 len)
{
	for (u64 p = addr; p < addr + len; p += pagesize)
		*(volatile u8 *)p = 1;
}

/* ---- the probe thread, pinned to another CPU ---- */

static struct {
	int seq;	/* bumped by the main thread to start a probe */
	int done;	/* set to seq by the probe thread when finished */
	u64 addr, len;
	long loaded, segv, efault, cpu, si_code;
} job;
static u8 probe_stack[65536] __attribute__((aligned(16)));
static int probe_cpu = -1;

static void probe_pages(u64 addr, u64 len)
{
	char sink;
	job.loaded = job.segv = job.efault = 0;
	last_si_code = 0;
	for (u64 p = addr; p < addr + len; p += pagesize) {
		if (probe_read((const volatile void *)p))
			job.segv++;
		else
			job.loaded++;
		long w = sys3(SYS_write, pipe_fds[1], p, 1);
		if (w == -EFAULT)
			job.efault++;
		else if (w == 1)
			sys3(SYS_read, pipe_fds[0], &sink, 1);
	}
	job.cpu = this_cpu();
	job.si_code = last_si_code;
}

static void probe_thread(void *arg)
{
	int seen = 0;
	int want = (int)(long)arg;
	pin_to(want);
	__atomic_store_n(&probe_cpu, this_cpu(), __ATOMIC_RELEASE);
	sys6(SYS_futex, &probe_cpu, FUTEX_WAKE_PRIVATE, 1, 0, 0, 0);
	for (;;) {
		int seq;
		while ((seq = __atomic_load_n(&job.seq, __ATOMIC_ACQUIRE)) == seen)
			sys6(SYS_futex, &job.seq, FUTEX_WAIT_PRIVATE, seen, 0, 0, 0);
		seen = seq;
		probe_pages(job.addr, job.len);
		__atomic_store_n(&job.done, seq, __ATOMIC_RELEASE);
		sys6(SYS_futex, &job.done, FUTEX_WAKE_PRIVATE, 1, 0, 0, 0);
	}
}

static void remote_probe(u64 addr, u64 len)
{
	int seq = job.seq + 1;
	job.addr = addr;
	job.len = len;
	__atomic_store_n(&job.seq, seq, __ATOMIC_RELEASE);
	sys6(SYS_futex, &job.seq, FUTEX_WAKE_PRIVATE, 1, 0, 0, 0);
	int done;
	while ((done = __atomic_load_n(&job.done, __ATOMIC_ACQUIRE)) != seq)
		sys6(SYS_futex, &job.done, FUTEX_WAIT_PRIVATE, done, 0, 0, 0);
}

/* ---- steps ---- */

#define MAXARGS 8

static int handshake;

static void begin(const char *n, const char *op)
{
	put("STEP ");
	put(n);
	put(" BEGIN ");
	put(op);
	line_end();
	if (handshake) {
		/* the console is in canonical mode: one read is one line ("GO") */
		char go[16];
		sys3(SYS_read, 0, go, sizeof(go));
	}
}

static void end(const char *n, const char *op, long rc, long ns)
{
	put("STEP ");
	put(n);
	put(" END ");
	put(op);
	put_kv("rc", rc);
	put_kv("ns", ns);
}

static int has(char **argv, int argc, int from, const char *word)
{
	for (int i = from; i < argc; i++)
		if (streq(argv[i], word))
			return 1;
	return 0;
}

static void err(const char *why, const char *what)
{
	put("ERR ");
	put(why);
	put(": ");
	put(what);
	line_end();
}

static long map_region(u64 addr, u64 len, int thp, int do_populate, u64 *got)
{
	long flags = MAP_PRIVATE | MAP_ANONYMOUS | (addr ? MAP_FIXED_NOREPLACE : 0);
	long r = sys6(SYS_mmap, addr, len, PROT_READ | PROT_WRITE, flags, -1, 0);
	if (r < 0 && r > -4096)
		return r;
	*got = (u64)r;
	long m = sys3(SYS_madvise, r, len, thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
	if (m < 0 && !thp)
		m = 0;	/* a kernel without THP refuses NOHUGEPAGE: nothing to turn off */
	if (m < 0)
		return m;
	if (do_populate)
		populate((u64)r, len);
	return 0;
}

static void exit_child(const char *n, u64 addr, u64 len, int thp)
{
	int ready[2], go[2];
	char c = 0;
	long t0, rc, status = 0;
	if (sys2(SYS_pipe2, ready, 0) < 0 || sys2(SYS_pipe2, go, 0) < 0) {
		err("pipe2 failed", n);
		return;
	}
	long pid = sys6(SYS_clone, SIGCHLD, 0, 0, 0, 0, 0);
	if (pid == 0) {
		u64 got;
		c = map_region(addr, len, thp, 1, &got) == 0 ? 'y' : 'n';
		sys3(SYS_write, ready[1], &c, 1);
		sys3(SYS_read, go[0], &c, 1);
		sys1(SYS_exit_group, 0);
	}
	if (pid < 0) {
		err("fork failed", n);
		return;
	}
	sys3(SYS_read, ready[0], &c, 1);
	begin(n, "EXIT-CHILD");
	t0 = now_ns();
	sys3(SYS_write, go[1], &c, 1);
	rc = sys4(SYS_wait4, pid, &status, 0, 0);
	long ns = now_ns() - t0;
	end(n, "EXIT-CHILD", rc < 0 ? rc : (c == 'y' ? 0 : -1), ns);
	put_kv("status", status);
	line_end();
	for (int i = 0; i < 2; i++) {
		sys1(SYS_close, ready[i]);
		sys1(SYS_close, go[i]);
	}
}

static void step(char **argv, int argc)
{
	const char *n = argv[1], *op = argv[2];
	u64 addr = 0, len = 0;
	long rc, t0, ns;
	if (argc < 5 || !parse_num(argv[3], &addr) || !parse_num(argv[4], &len)) {
		err("usage: STEP n OP addr len [flags]", argc > 2 ? op : "");
		return;
	}
	if (streq(op, "MMAP")) {
		u64 got = 0;
		begin(n, op);
		t0 = now_ns();
		rc = map_region(addr, len, has(argv, argc, 5, "thp"), has(argv, argc, 5, "populate"),
				&got);
		ns = now_ns() - t0;
		end(n, op, rc, ns);
		put(" addr=");
		put_hex(got);
	} else if (streq(op, "MUNMAP") || streq(op, "DONTNEED") || streq(op, "MPROTECT")) {
		long prot = PROT_NONE;
		if (streq(op, "MPROTECT")) {
			const char *p = argc > 5 ? argv[5] : "";
			if (streq(p, "r"))
				prot = PROT_READ;
			else if (streq(p, "rw"))
				prot = PROT_READ | PROT_WRITE;
			else if (!streq(p, "none")) {
				err("MPROTECT wants none, r or rw", p);
				return;
			}
		}
		begin(n, op);
		t0 = now_ns();
		if (streq(op, "MUNMAP"))
			rc = sys2(SYS_munmap, addr, len);
		else if (streq(op, "DONTNEED"))
			rc = sys3(SYS_madvise, addr, len, MADV_DONTNEED);
		else
			rc = sys3(SYS_mprotect, addr, len, prot);
		ns = now_ns() - t0;
		end(n, op, rc, ns);
	} else if (streq(op, "EXIT-CHILD")) {
		exit_child(n, addr, len, has(argv, argc, 5, "thp"));
		return;
	} else if (streq(op, "SWITCH-MM")) {
		/* the child is forked before BEGIN (copying the mm is slow when traced)
		 * and waits on a pipe; inside the window it is woken, exits, and is
		 * reaped: this CPU switches to its mm and back to ours */
		long status = 0;
		int go[2];
		char c = 0;
		if (sys2(SYS_pipe2, go, 0) < 0) {
			err("pipe2 failed", n);
			return;
		}
		long pid = sys6(SYS_clone, SIGCHLD, 0, 0, 0, 0, 0);
		if (pid == 0) {
			sys3(SYS_read, go[0], &c, 1);
			sys1(SYS_exit_group, 0);
		}
		begin(n, op);
		t0 = now_ns();
		if (pid > 0)
			sys3(SYS_write, go[1], &c, 1);
		rc = pid < 0 ? pid : sys4(SYS_wait4, pid, &status, 0, 0);
		rc = rc < 0 ? rc : 0;
		ns = now_ns() - t0;
		sys1(SYS_close, go[0]);
		sys1(SYS_close, go[1]);
		end(n, op, rc, ns);
	} else if (streq(op, "PROBE")) {
		int local = has(argv, argc, 5, "local");
		begin(n, op);
		t0 = now_ns();
		if (local)
			probe_pages(addr, len);
		else
			remote_probe(addr, len);
		ns = now_ns() - t0;
		end(n, op, 0, ns);
		put_kv("cpu", job.cpu);
		put_kv("pages", (long)((len + pagesize - 1) / pagesize));
		put_kv("loaded", job.loaded);
		put_kv("segv", job.segv);
		put_kv("efault", job.efault);
		put_kv("si_code", job.si_code);
	} else {
		err("unknown step", op);
		return;
	}
	line_end();
}

static void kallsyms(void);
static void maps(void);
static void thp_mode(void);

static void command(char *line)
{
	char *argv[MAXARGS];
	int argc = 0;
	char *p = line;
	while (*p && argc < MAXARGS) {
		while (*p == ' ' || *p == '\t' || *p == '\r')
			*p++ = 0;
		if (!*p)
			break;
		argv[argc++] = p;
		while (*p && *p != ' ' && *p != '\t' && *p != '\r')
			p++;
	}
	if (argc == 0)
		return;
	if (streq(argv[0], "STEP") && argc >= 3)
		step(argv, argc);
	else if (streq(argv[0], "PING"))
		say("PONG");
	else if (streq(argv[0], "HANDSHAKE") && argc == 2) {
		handshake = streq(argv[1], "1");
		/* While tracing, the kernel's warnings about slow interrupts (hrtimer:
		 * interrupt took ...: single-stepping is slow) would cut into the
		 * protocol's lines: console messages below KERN_ERR off (syslog(2)
		 * SYSLOG_ACTION_CONSOLE_LEVEL); panics and errors still print. */
		sys3(SYS_syslog, 8, 0, handshake ? 4 : 7);
		put("OK");
		put_kv("handshake", handshake);
		line_end();
	} else if (streq(argv[0], "KALLSYMS"))
		kallsyms();
	else if (streq(argv[0], "MAPS"))
		maps();
	else if (streq(argv[0], "THP"))
		thp_mode();
	else if (streq(argv[0], "POWEROFF")) {
		say("BYE");
		sys4(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2,
		     LINUX_REBOOT_CMD_POWER_OFF, 0);
		say("FATAL reboot(POWER_OFF) returned");
	} else
		err("unknown command", argv[0]);
}

/* Mount /proc once; 0 when it is there. */
static int mount_proc(const char *who)
{
	static int mounted;
	if (!mounted) {
		long r = sys6(SYS_mount, "proc", "/proc", "proc", 0, 0, 0);
		if (r < 0 && r != -16 /* EBUSY: mounted already */) {
			err("mount /proc failed", who);
			return -1;
		}
		mounted = 1;
	}
	return 0;
}

/* Call each() on every line of a /proc file; the number of lines, or -1. */
static long proc_lines(const char *path, const char *who, int (*each)(char *line))
{
	static char kbuf[8192];
	long fd, r, count = 0;
	unsigned have = 0;
	if (mount_proc(who) < 0)
		return -1;
	fd = sys4(SYS_openat, AT_FDCWD, path, O_RDONLY, 0);
	if (fd < 0) {
		err("open failed", path);
		return -1;
	}
	for (;;) {
		r = sys3(SYS_read, fd, kbuf + have, sizeof(kbuf) - 1 - have);
		if (r <= 0)
			break;
		have += (unsigned)r;
		unsigned start = 0;
		for (unsigned i = 0; i < have; i++) {
			if (kbuf[i] != '\n')
				continue;
			kbuf[i] = 0;
			count += each(kbuf + start);
			start = i + 1;
		}
		memcpy(kbuf, kbuf + start, have - start);
		have -= start;
	}
	sys1(SYS_close, fd);
	return count;
}

/* "ffff800008000000 T _text": text symbols, and the Image's start and text's end. */
static int one_symbol(char *line)
{
	char *type = line;
	while (*type && *type != ' ')
		type++;
	if (!*type || !type[1] || type[2] != ' ')
		return 0;
	if (type[1] != 't' && type[1] != 'T' && !streq(type + 3, "_text") &&
	    !streq(type + 3, "_etext"))
		return 0;
	put("SYM ");
	put(line);
	line_end();
	return 1;
}

/* Each line of a /proc file through each(), then "<cmd> END n=<lines printed>". */
static void proc_listing(const char *path, const char *cmd, int (*each)(char *line))
{
	long count = proc_lines(path, cmd, each);
	if (count < 0)
		return;
	put(cmd);
	put(" END");
	put_kv("n", count);
	line_end();
}

/* The text symbols of /proc/kallsyms (types t and T), for the host to attribute
 * addresses to functions (nokaslr keeps them stable from boot to boot). */
static void kallsyms(void)
{
	proc_listing("/proc/kallsyms", "KALLSYMS", one_symbol);
}

static int one_mapping(char *line)
{
	put("MAP ");
	put(line);
	line_end();
	return 1;
}

/* The transparent hugepage mode (/sys/kernel/mm/transparent_hugepage/enabled,
 * e.g. "always [madvise] never"): below 512 MiB of RAM the kernel turns THP off
 * (mm/huge_memory.c hugepage_init), and then a thp workload maps pages. */
static void thp_mode(void)
{
	static int mounted;
	static char buf[128];
	long fd, n;
	if (!mounted) {
		long r = sys6(SYS_mount, "sysfs", "/sys", "sysfs", 0, 0, 0);
		if (r < 0 && r != -16 /* EBUSY */) {
			err("mount /sys failed", "THP");
			return;
		}
		mounted = 1;
	}
	fd = sys4(SYS_openat, AT_FDCWD, "/sys/kernel/mm/transparent_hugepage/enabled",
		  O_RDONLY, 0);
	if (fd < 0) {		/* CONFIG_TRANSPARENT_HUGEPAGE=n */
		say("THP none");
		return;
	}
	n = sys3(SYS_read, fd, buf, sizeof(buf) - 1);
	sys1(SYS_close, fd);
	if (n < 0)
		n = 0;
	buf[n] = 0;
	for (long i = 0; i < n; i++)
		if (buf[i] == '\n')
			buf[i] = 0;
	put("THP ");
	put(buf);
	line_end();
}

/* This process's VMAs (/proc/self/maps): the layout free_pgtables walks. */
static void maps(void)
{
	proc_listing("/proc/self/maps", "MAPS", one_mapping);
}

static void console_quiet(void)
{
	struct termios t;
	if (sys3(SYS_ioctl, 0, TCGETS, &t) == 0) {
		t.c_lflag &= ~(u32)(ECHO | ECHOE | ECHOK | ECHONL);	/* no echo of commands */
		sys3(SYS_ioctl, 0, TCSETS, &t);
	}
}

int main(u64 *sp)
{
	u64 argc = sp[0];
	u64 *envp = sp + 1 + argc + 1;
	while (*envp)
		envp++;
	for (u64 *aux = envp + 1; aux[0]; aux += 2)
		if (aux[0] == AT_PAGESZ)
			pagesize = aux[1];

	console_quiet();
	pin_to(0);
	struct k_sigaction sa = { on_segv, SA_SIGINFO | SA_RESTORER, sigreturn_restorer, 0 };
	if (sys4(SYS_rt_sigaction, SIGSEGV, &sa, 0, 8) < 0)
		say("FATAL rt_sigaction failed");
	if (sys2(SYS_pipe2, pipe_fds, 0) < 0)
		say("FATAL pipe2 failed");
	long tid = spawn_thread(CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD |
				CLONE_SYSVSEM, probe_stack + sizeof(probe_stack), probe_thread,
				(void *)1L);
	if (tid < 0)
		say("FATAL clone of the probe thread failed");
	int seen;
	while ((seen = __atomic_load_n(&probe_cpu, __ATOMIC_ACQUIRE)) == -1)
		sys6(SYS_futex, &probe_cpu, FUTEX_WAIT_PRIVATE, -1, 0, 0, 0);

	put("READY workload=1");
	put_kv("pagesize", (long)pagesize);
	put_kv("cpu", this_cpu());
	put_kv("probe_cpu", seen);
	line_end();

	static char buf[256];
	unsigned len = 0;
	for (;;) {
		long r = sys3(SYS_read, 0, buf + len, sizeof(buf) - 1 - len);
		if (r <= 0) {
			say("FATAL console read failed");
			sys1(SYS_exit_group, 4);
		}
		len += (unsigned)r;
		for (;;) {
			unsigned i = 0;
			while (i < len && buf[i] != '\n')
				i++;
			if (i == len)
				break;
			buf[i] = 0;
			command(buf);
			memcpy(buf, buf + i + 1, len - i - 1);
			len -= i + 1;
		}
		if (len == sizeof(buf) - 1) {
			say("ERR line too long");
			len = 0;
		}
	}
}
