/*
 * Test program for `shootdown lint`, shaped like the firmware's teardown
 * engine: out-of-line helpers that issue one instruction and log it to a
 * static array, a run-time DSB option (a switch in the helper), and bug
 * injections tested at the line they change. Built at -O2 at test time.
 */
enum dsb_opt { OPT_ISHST, OPT_ISH, OPT_NSH };
enum bug { BUG_NONE, BUG_SKIP_ISHST, BUG_SKIP_ISH, BUG_SKIP_ISB };

unsigned long oplog[64];
unsigned oplog_len;
enum bug inject_current;

static inline int injected(enum bug b)
{
	return inject_current == b;
}

__attribute__((noinline)) void op_dsb(enum dsb_opt opt)
{
	switch (opt) {
	case OPT_ISHST: asm volatile("dsb ishst" ::: "memory"); break;
	case OPT_ISH:   asm volatile("dsb ish" ::: "memory"); break;
	case OPT_NSH:   asm volatile("dsb nsh" ::: "memory"); break;
	}
	oplog[oplog_len++ & 63] = opt;
}

__attribute__((noinline)) void op_tlbi_vae1is(unsigned long xt)
{
	asm volatile("tlbi vae1is, %0" :: "r"(xt) : "memory");
	oplog[oplog_len++ & 63] = xt;
}

__attribute__((noinline)) void op_tlbi_vaale1is(unsigned long xt)
{
	asm volatile("tlbi vaale1is, %0" :: "r"(xt) : "memory");
	oplog[oplog_len++ & 63] = xt;
}

__attribute__((noinline)) void op_isb(void)
{
	asm volatile("isb" ::: "memory");
	oplog[oplog_len++ & 63] = 0;
}

void flush_page(unsigned long *ptep, unsigned long xt)
{
	*ptep = 0;				/* clear the PTE */
	if (!injected(BUG_SKIP_ISHST))
		op_dsb(OPT_ISHST);
	op_tlbi_vae1is(xt);
	if (!injected(BUG_SKIP_ISH))
		op_dsb(OPT_ISH);
}

void flush_kernel_range(unsigned long start, unsigned long end)
{
	op_dsb(OPT_ISHST);
	for (unsigned long a = start; a < end; a++)
		op_tlbi_vaale1is(a);
	op_dsb(OPT_ISH);
	if (injected(BUG_SKIP_ISB))
		return;
	op_isb();
}

/* Wrong on purpose, whatever is injected: NSH does not complete a broadcast TLBI. */
void flush_page_nsh(unsigned long xt)
{
	op_dsb(OPT_ISHST);
	op_tlbi_vae1is(xt);
	op_dsb(OPT_NSH);
}

void _start(void)
{
	for (;;)
		;
}
