/* SPDX-License-Identifier: MIT */
/*
 * oplog.c - issue-and-log helpers for TLBI/DSB/ISB and their records.
 *
 * The policies (policy.c) and the gather (gather.c) call only these; this
 * file is the single place where a teardown's maintenance instructions are
 * executed, so the log cannot drift from what the CPU did.
 */
#include "shootdown.h"
#include "asm/barrier.h"
#include "oplog.h"

enum op_kind { K_TLBI, K_DSB, K_ISB };

struct op_entry {
	uint8_t kind;		/* enum op_kind */
	uint8_t op;		/* enum tlbi_op or enum dsb_opt */
	uint64_t xt;		/* TLBI operand */
};

/* Big enough for the longest step (8191 TLBIs + KPTI copies on 64K). */
#define OPLOG_MAX	32768
static struct op_entry oplog[OPLOG_MAX];
static unsigned oplog_len;
static struct oplog_totals totals;

static void oplog_push(uint8_t kind, uint8_t op, uint64_t xt)
{
	if (oplog_len == OPLOG_MAX)
		oplog_report();		/* keeps program order: earlier records first */
	oplog[oplog_len].kind = kind;
	oplog[oplog_len].op = op;
	oplog[oplog_len].xt = xt;
	oplog_len++;
}

/* The stubs of maint.S: one maintenance instruction each, on a page of their own. */
void maint_tlbi_vmalle1is(uint64_t xt);
void maint_tlbi_vae1is(uint64_t xt);
void maint_tlbi_aside1is(uint64_t xt);
void maint_tlbi_vaae1is(uint64_t xt);
void maint_tlbi_vale1is(uint64_t xt);
void maint_tlbi_vaale1is(uint64_t xt);
void maint_tlbi_rvae1is(uint64_t xt);
void maint_tlbi_rvaae1is(uint64_t xt);
void maint_tlbi_rvale1is(uint64_t xt);
void maint_tlbi_rvaale1is(uint64_t xt);
void maint_tlbi_vale1is_xzr(void);
void maint_dsb_ishst(void);
void maint_dsb_ish(void);
void maint_dsb_nshst(void);
void maint_dsb_nsh(void);
void maint_dsb_sy(void);
void maint_isb(void);

void op_tlbi(enum tlbi_op op, uint64_t xt)
{
	if (op == TLBI_VMALLE1IS)
		xt = 0;
	/*
	 * The XZR form outside the switch: one case more makes GCC dispatch
	 * through a jump table (BR), where the barrier lint loses the op.
	 */
	if (op == TLBI_VALE1IS_XZR) {
		maint_tlbi_vale1is_xzr();
		xt = 0;
	}
	switch (op) {
	case TLBI_VMALLE1IS: maint_tlbi_vmalle1is(xt); break;
	case TLBI_VAE1IS:    maint_tlbi_vae1is(xt); break;
	case TLBI_ASIDE1IS:  maint_tlbi_aside1is(xt); break;
	case TLBI_VAAE1IS:   maint_tlbi_vaae1is(xt); break;
	case TLBI_VALE1IS:   maint_tlbi_vale1is(xt); break;
	case TLBI_VAALE1IS:  maint_tlbi_vaale1is(xt); break;
	case TLBI_RVAE1IS:   maint_tlbi_rvae1is(xt); break;
	case TLBI_RVAAE1IS:  maint_tlbi_rvaae1is(xt); break;
	case TLBI_RVALE1IS:  maint_tlbi_rvale1is(xt); break;
	case TLBI_RVAALE1IS: maint_tlbi_rvaale1is(xt); break;
	case TLBI_VALE1IS_XZR: break;	/* issued above */
	case TLBI_NR_OPS:    break;	/* not an operation */
	}
	oplog_push(K_TLBI, op, xt);
	totals.tlbi++;
}

void op_dsb(enum dsb_opt opt)
{
	switch (opt) {
	case DSB_ISHST: maint_dsb_ishst(); break;	/* stores visible to walkers first */
	case DSB_ISH:   maint_dsb_ish(); break;	/* TLBIs complete on every CPU */
	case DSB_NSHST: maint_dsb_nshst(); break;	/* local-only variants */
	case DSB_NSH:   maint_dsb_nsh(); break;
	case DSB_SY:    maint_dsb_sy(); break;	/* full system */
	}
	oplog_push(K_DSB, opt, 0);
	totals.dsb++;
}

void op_isb(void)
{
	maint_isb();	/* context synchronisation after kernel TLBIs */
	oplog_push(K_ISB, 0, 0);
	totals.isb++;
}

void oplog_reset(void)
{
	oplog_len = 0;
}

void oplog_totals_reset(void)
{
	totals = (struct oplog_totals){ 0 };
}

struct oplog_totals oplog_totals(void)
{
	return totals;
}

static const char *dsb_name(unsigned opt)
{
	static const char *const names[] = { "ishst", "ish", "nshst", "nsh", "sy" };
	return opt < sizeof(names) / sizeof(names[0]) ? names[opt] : "?";
}

/* Runs only step through the address bits (range operands: BADDR 36:0). */
#define RUN_MAX_INC	(1UL << 37)

static int is_tlbi(unsigned i, uint8_t op)
{
	return i < oplog_len && oplog[i].kind == K_TLBI && oplog[i].op == op;
}

/*
 * Length of the TLBI group starting at i: 2 if entry i+1 is its KPTI copy
 * (same op, operand | bit 48), else 1.
 */
static unsigned group_len(unsigned i)
{
	if (is_tlbi(i + 1, oplog[i].op) &&
	    oplog[i + 1].xt == (oplog[i].xt | TLBI_USER_ASID_FLAG))
		return 2;
	return 1;
}

/*
 * Print one TLBI record for the run starting at i and return the number of
 * log entries it covers. A run is n groups of the same op and shape whose
 * operands step by a constant inc; expanding it gives back the log exactly.
 */
static unsigned report_tlbi_run(unsigned i)
{
	const struct op_entry *e = &oplog[i];
	unsigned g = group_len(i), n = 1, j = i + g;
	uint64_t inc = 0;

	if (e->op == TLBI_VMALLE1IS || e->op == TLBI_VALE1IS_XZR) {	/* no operand */
		report("TLBI", "op=%s", tlbi_op_name(e->op));
		return 1;
	}
	while (is_tlbi(j, e->op) && group_len(j) == g) {
		uint64_t step = oplog[j].xt - e->xt;

		if (n == 1) {
			if (oplog[j].xt <= e->xt || step >= RUN_MAX_INC)
				break;	/* not an address walk: keep records readable */
			inc = step;
		}
		else if (step != inc * n)
			break;
		n++;
		j += g;
	}
	if (n == 1 && g == 1)
		report("TLBI", "op=%s xt=0x%016lx", tlbi_op_name(e->op), e->xt);
	else
		report("TLBI", "op=%s xt=0x%016lx n=%u inc=0x%lx user=%u",
		       tlbi_op_name(e->op), e->xt, n, inc, g == 2);
	return j - i;
}

void oplog_report(void)
{
	unsigned i = 0;

	while (i < oplog_len) {
		switch (oplog[i].kind) {
		case K_TLBI:
			i += report_tlbi_run(i);
			break;
		case K_DSB:
			report("DSB", "opt=%s", dsb_name(oplog[i].op));
			i++;
			break;
		default:
			report("ISB", NULL);
			i++;
			break;
		}
	}
	oplog_len = 0;
}
