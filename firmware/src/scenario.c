/* SPDX-License-Identifier: MIT */
/*
 * scenario.c - the scenario interpreter: buffer SCN .. GO, check that this
 * CPU and build can run it, build the address spaces, touch them from every
 * CPU, run each step through the selected policy, probe, report, reset.
 *
 * The host never sends the expected answer: the maintenance a step issues
 * is decided here, by the C policy of the release named in SCN.
 */
#include "shootdown.h"
#include "asm/barrier.h"
#include "asm/pgtable-hwdef.h"
#include "gather.h"
#include "inject.h"
#include "oplog.h"
#include "policy.h"
#include "scenario.h"
#include "uspace.h"

/* ---- the bug list, in the code and in the ELF ------------------------------- */

enum bug inject_current;
/* How often the running scenario took the injected path (SCNEND injected=). */
static unsigned long inject_hits;

void inject_hit(void)
{
	inject_hits++;
}

static const char *const bug_names[BUG_COUNT] = {
	[BUG_NONE] = "none",
#define BUG_NAME(id, name, releases, desc) [BUG_##id] = name,
	BUG_LIST(BUG_NAME)
#undef BUG_NAME
};

/*
 * .shootdown.bugs: the marker "shootdown-bugs/3", then
 * "name\0releases\0description\0" for every injection, in list order.
 * Not loaded (no "a" flag), so it costs no guest memory and survives
 * --gc-sections; the host reads it with pyelftools.
 */
#define BUG_ASM(id, name, releases, desc) \
	".asciz \"" name "\"\n.asciz \"" releases "\"\n.asciz \"" desc "\"\n"
asm(".pushsection .shootdown.bugs, \"\", %progbits\n"
    ".asciz \"shootdown-bugs/3\"\n"
    BUG_LIST(BUG_ASM)
    ".popsection\n");
#undef BUG_ASM

int inject_lookup(const char *name)
{
	for (int i = 0; i < BUG_COUNT; i++)
		if (!strcmp(bug_names[i], name))
			return i;
	return -1;
}

/* ---- the buffered scenario ------------------------------------------------------ */

enum scn_state { S_IDLE, S_BUFFER, S_DISCARD };

static struct {
	enum scn_state state;
	uint64_t id, va_bits, asid;
	unsigned granule_shift;
	bool kpti, ttl, range, repeat_tlbi;
	const struct policy *policy;
	enum bug inject;
	unsigned nr_maps, nr_steps, nr_ops;
	struct scn_map maps[SCN_MAX_MAPS];
	struct scn_step steps[SCN_MAX_STEPS];
	struct scn_op ops[SCN_MAX_OPS];
} scn;

/*
 * The step running now (its n, 0 between steps): for debuggers only.
 * shootdown run --gdb stops at the diverging instruction with the condition
 * "scn_step_now == N && oplog_len == I" on op_tlbi/op_dsb/op_isb.
 */
unsigned scn_step_now;

static struct probe_point points[SCN_MAX_POINTS];
static bool now_mapped[SCN_MAX_POINTS];
static unsigned nr_points;
static struct mmu_gather gather;

/* Reject the current line: ERR, then ignore the scenario up to its GO. */
static int reject(const char *cmd, const char *why)
{
	report("ERR", "cmd=%s why=%s", cmd, why);
	scn.state = S_DISCARD;
	return SCN_MORE;
}

static int need_u64(const char *line, const char *key, uint64_t *v)
{
	return arg_u64(line, key, v) == 0;
}

static int need_bool(const char *line, const char *key, bool *b)
{
	uint64_t v;

	if (arg_u64(line, key, &v) || v > 1)
		return 0;
	*b = v;
	return 1;
}

/* need_bool for a field added later: absent reads as 0 (older host lines stay valid). */
static int opt_bool(const char *line, const char *key, bool *b)
{
	uint64_t v = 0;

	if (arg_u64(line, key, &v) == -2 || v > 1)
		return 0;
	*b = v;
	return 1;
}

static int parse_scn(const char *line)
{
	char buf[48];
	int bug;

	scn.nr_maps = scn.nr_steps = scn.nr_ops = 0;
	if (!need_u64(line, "id", &scn.id))
		return reject("SCN", "id");
	if (arg_str(line, "policy", buf, sizeof(buf)) || !(scn.policy = policy_lookup(buf)))
		return reject("SCN", "policy");
	if (arg_str(line, "granule", buf, sizeof(buf)))
		return reject("SCN", "granule");
	if (!strcmp(buf, "4k"))
		scn.granule_shift = 12;
	else if (!strcmp(buf, "16k"))
		scn.granule_shift = 14;
	else if (!strcmp(buf, "64k"))
		scn.granule_shift = 16;
	else
		return reject("SCN", "granule");
	if (!need_u64(line, "va_bits", &scn.va_bits) || scn.va_bits > 64)
		return reject("SCN", "va_bits");
	if (!need_u64(line, "asid", &scn.asid) || scn.asid > 0xffff)
		return reject("SCN", "asid");
	if (!need_bool(line, "kpti", &scn.kpti))
		return reject("SCN", "kpti");
	if (!need_bool(line, "ttl", &scn.ttl))
		return reject("SCN", "ttl");
	if (!need_bool(line, "tlbirange", &scn.range))
		return reject("SCN", "tlbirange");
	/* an erratum workaround, not a feature: any CPU runs its sequence */
	if (!opt_bool(line, "repeat_tlbi", &scn.repeat_tlbi))
		return reject("SCN", "repeat_tlbi");
	if (arg_str(line, "inject", buf, sizeof(buf)) || (bug = inject_lookup(buf)) < 0)
		return reject("SCN", "inject");
	scn.inject = (enum bug)bug;
	scn.state = S_BUFFER;
	return SCN_MORE;
}

static int parse_map(const char *line, bool kernel)
{
	const char *cmd = kernel ? "KMAP" : "MAP";
	struct scn_map *m;
	uint64_t level = 3;

	if (scn.nr_maps == SCN_MAX_MAPS)
		return reject(cmd, "too_many");
	m = &scn.maps[scn.nr_maps];
	if (!kernel && (!need_u64(line, "level", &level) || level < 1 || level > 3))
		return reject(cmd, "level");
	if (!need_u64(line, "addr", &m->addr))
		return reject(cmd, "addr");
	if (!need_u64(line, "count", &m->count) || m->count == 0 || m->count > SCN_MAX_COUNT)
		return reject(cmd, "count");
	m->kernel = kernel;
	m->level = (int)level;
	scn.nr_maps++;
	return SCN_MORE;
}

static int parse_step(const char *line)
{
	struct scn_step *s;
	uint64_t n;
	char kind[40];

	if (scn.nr_steps == SCN_MAX_STEPS)
		return reject("STEP", "too_many");
	s = &scn.steps[scn.nr_steps];
	*s = (struct scn_step){ 0 };
	if (!need_u64(line, "n", &n))
		return reject("STEP", "n");
	s->n = (unsigned)n;
	if (arg_str(line, "kind", kind, sizeof(kind)))
		return reject("STEP", "kind");
	s->first_op = scn.nr_ops;
	if (!strcmp(kind, "gather")) {
		s->kind = STEP_GATHER;
		if (!need_bool(line, "fullmm", &s->fullmm))
			return reject("STEP", "fullmm");
	} else if (!strcmp(kind, "flush_tlb_mm")) {
		s->kind = STEP_FLUSH_TLB_MM;
	} else if (!strcmp(kind, "flush_tlb_page")) {
		s->kind = STEP_FLUSH_TLB_PAGE;
		if (!need_u64(line, "addr", &s->addr))
			return reject("STEP", "addr");
	} else if (!strcmp(kind, "flush_tlb_range")) {
		s->kind = STEP_FLUSH_TLB_RANGE;
		if (!need_u64(line, "start", &s->start) || !need_u64(line, "end", &s->end) ||
		    s->end < s->start)
			return reject("STEP", "range");
		if (!need_u64(line, "stride", &s->stride) || !s->stride ||
		    (s->stride & (s->stride - 1)) || s->stride < PAGE_SIZE)
			return reject("STEP", "stride");
		if (!need_bool(line, "last_level", &s->last_level))
			return reject("STEP", "last_level");
		s->level = TLB_LEVEL_UNKNOWN;	/* optional TTL hint, 0..3 */
		if (arg_u64(line, "level", &n) != -1) {
			if (arg_u64(line, "level", &n) || n > 3)
				return reject("STEP", "level");
			s->level = (int)n;
		}
	} else if (!strcmp(kind, "flush_tlb_kernel_range")) {
		s->kind = STEP_FLUSH_TLB_KERNEL_RANGE;
		if (!need_u64(line, "start", &s->start) || !need_u64(line, "end", &s->end) ||
		    s->end < s->start)
			return reject("STEP", "range");
	} else if (!strcmp(kind, "flush_tlb_kernel_pgtable")) {
		s->kind = STEP_FLUSH_TLB_KERNEL_PGTABLE;
		if (!need_u64(line, "addr", &s->addr))
			return reject("STEP", "addr");
	} else {
		return reject("STEP", "kind");
	}
	scn.nr_steps++;
	return SCN_MORE;
}

static int parse_op(const char *line)
{
	static const char *const names[] = {
		[OP_REMOVE_PTE] = "remove_pte", [OP_REMOVE_PMD] = "remove_pmd",
		[OP_REMOVE_PUD] = "remove_pud", [OP_FREE_PTE_TABLE] = "free_pte_table",
		[OP_FREE_PMD_TABLE] = "free_pmd_table", [OP_FREE_PUD_TABLE] = "free_pud_table",
		[OP_FREE_P4D_TABLE] = "free_p4d_table", [OP_FLUSH] = "flush",
	};
	struct scn_step *s = scn.nr_steps ? &scn.steps[scn.nr_steps - 1] : NULL;
	struct scn_op *op;
	char name[32];
	unsigned k;

	if (!s || s->kind != STEP_GATHER)
		return reject("OP", "not_in_gather");
	if (scn.nr_ops == SCN_MAX_OPS)
		return reject("OP", "too_many");
	op = &scn.ops[scn.nr_ops];
	if (arg_str(line, "name", name, sizeof(name)))
		return reject("OP", "name");
	for (k = 0; k < sizeof(names) / sizeof(names[0]); k++)
		if (!strcmp(names[k], name))
			break;
	if (k == sizeof(names) / sizeof(names[0]))
		return reject("OP", "name");
	op->kind = (enum op_kind_scn)k;
	op->addr = 0;
	op->count = 1;
	if (op->kind != OP_FLUSH && !need_u64(line, "addr", &op->addr))
		return reject("OP", "addr");
	if (op->kind == OP_REMOVE_PTE &&
	    (!need_u64(line, "count", &op->count) || !op->count || op->count > SCN_MAX_COUNT))
		return reject("OP", "count");
	scn.nr_ops++;
	s->nr_ops++;
	return SCN_MORE;
}

/* ---- checks at GO: can this CPU and build run it? --------------------------- */

/*
 * Kernel test addresses: anywhere in the TTBR1 space below the firmware's
 * own top gigabyte. The walker shares the core's existing tables where a
 * root entry is shared (16K: bit 47 is one root entry) and refuses to
 * touch any entry that is already valid, so the firmware's mappings are
 * never changed; only tables it created itself are freed again.
 */
static int kva_unusable(uint64_t start, uint64_t end)
{
	return start < KVA_SCN_BASE || end > KVA_FW_BASE || end < start;
}

/* NULL if the scenario can run here, else a one-word reason for SKIP. */
static const char *check_runnable(void)
{
	const struct cpu_features *f = cpu_features();
	bool has_granule = scn.granule_shift == 12 ? f->granule4k :
			   scn.granule_shift == 14 ? f->granule16k : f->granule64k;
	int start_level;

	if (!has_granule)
		return scn.granule_shift == 12 ? "cpu_lacks_granule_4k" :
		       scn.granule_shift == 14 ? "cpu_lacks_granule_16k" : "cpu_lacks_granule_64k";
	if (scn.granule_shift != PAGE_SHIFT)
		return PAGE_SHIFT == 12 ? "firmware_built_for_4k" :
		       PAGE_SHIFT == 14 ? "firmware_built_for_16k" : "firmware_built_for_64k";
	if (scn.ttl && !f->ttl)
		return "cpu_lacks_feat_ttl";
	if (scn.range && !f->tlbirange)
		return "cpu_lacks_feat_tlbirange";
	if (scn.asid >> f->asid_bits)
		return "asid_exceeds_asid_bits";
	start_level = pt_start_level((unsigned)scn.va_bits);
	if (start_level < 0 || scn.va_bits > 48)
		return "va_bits_unsupported";
	for (unsigned i = 0; i < scn.nr_maps; i++) {
		const struct scn_map *m = &scn.maps[i];
		uint64_t size = level_size(m->level), end = m->addr + m->count * size;

		if (m->addr & (size - 1))
			return "map_unaligned";
		if (m->kernel) {
			if (kva_unusable(m->addr, end))
				return "kmap_in_reserved_kernel_va";
			continue;
		}
		if (m->level == 1 && PAGE_SHIFT != 12)
			return "pud_block_needs_4k";
		if (m->level < start_level)
			return "block_level_above_root";
		if (end > (1UL << scn.va_bits) || end < m->addr)
			return "map_beyond_va_bits";
	}
	for (unsigned i = 0; i < scn.nr_steps; i++) {
		const struct scn_step *s = &scn.steps[i];

		if (s->kind == STEP_FLUSH_TLB_KERNEL_RANGE && kva_unusable(s->start, s->end))
			return "kernel_range_in_reserved_kernel_va";
		if (s->kind == STEP_FLUSH_TLB_KERNEL_PGTABLE && kva_unusable(s->addr, s->addr + 1))
			return "kernel_pgtable_in_reserved_kernel_va";
		for (unsigned k = s->first_op; k < s->first_op + s->nr_ops; k++) {
			const struct scn_op *op = &scn.ops[k];

			if (op->kind == OP_REMOVE_PUD && (PAGE_SHIFT != 12 || start_level > 1))
				return "pud_block_unsupported";
		}
	}
	return NULL;
}

/* ---- building --------------------------------------------------------------- */

static void env_init(void)
{
	unsigned levels = 4 - pt_start_level((unsigned)scn.va_bits);

	tlb_env.asid = (uint16_t)scn.asid;
	tlb_env.kpti = scn.kpti;
	tlb_env.ttl = scn.ttl;
	tlb_env.range = scn.range;
	tlb_env.repeat_tlbi = scn.repeat_tlbi;
	tlb_env.levels = levels;
	tlb_env.pmd_shift = LEVEL_SHIFT(2);
	/* Folded levels take the shift of the level above (PGDIR_SHIFT). */
	tlb_env.pud_shift = levels >= 3 ? LEVEL_SHIFT(1) : LEVEL_SHIFT(2);
	tlb_env.p4d_shift = LEVEL_SHIFT(4 - levels);
	tlb_env.task_size = 1UL << scn.va_bits;
	policy_current = scn.policy;
	inject_current = scn.inject;
	inject_hits = 0;
}

/*
 * Map everything and list the probe points; NULL or a SKIP reason. A big
 * MAP is probed at an even sample of its entries (first and last included),
 * SCN_MAX_POINTS / nr_maps of them, so a 1 GiB munmap still fits.
 */
static const char *build(void)
{
	nr_points = 0;
	if (uspace_init((unsigned)scn.va_bits))
		return "out_of_memory";
	for (unsigned i = 0; i < scn.nr_maps; i++) {
		const struct scn_map *m = &scn.maps[i];
		struct uspace *mm = m->kernel ? &kernel_mm : &user_mm;
		const char *why = uspace_map(mm, m->level, m->addr, m->count);
		uint64_t want = SCN_MAX_POINTS / scn.nr_maps;

		if (why)
			return why;
		if (want > m->count)
			want = m->count;
		for (uint64_t j = 0; j < want; j++) {
			uint64_t k = want > 1 ? j * (m->count - 1) / (want - 1) : 0;
			uint64_t va = m->addr + k * level_size(m->level);
			struct probe_point *p = &points[nr_points++];
			int level;

			p->va = uspace_probe_va(va, m->level);
			p->expect = uspace_value(va, m->level);
			p->kernel = m->kernel;
			p->leaf = uspace_leaf(mm, va, &level);
		}
	}
	uspace_touch(points, nr_points, (uint16_t)scn.asid);
	return NULL;
}

/* ---- running the steps -------------------------------------------------------- */

/* Clear the leaf mapping va (any level) in mm, if there is one. */
static void clear_leaf(struct uspace *mm, uint64_t va)
{
	int level;
	uint64_t *e = uspace_leaf(mm, va, &level);

	if (e)
		WRITE_ONCE(*e, 0);
}

/* Clear every mapped leaf of mm that lies wholly inside [start, end). */
static void clear_leaves_in(bool kernel, uint64_t start, uint64_t end)
{
	struct uspace *mm = kernel ? &kernel_mm : &user_mm;

	for (unsigned i = 0; i < scn.nr_maps; i++) {
		const struct scn_map *m = &scn.maps[i];
		uint64_t size = level_size(m->level);

		if (m->kernel != kernel)
			continue;
		for (uint64_t k = 0; k < m->count; k++) {
			uint64_t va = m->addr + k * size;

			if (va >= start && va + size <= end)
				clear_leaf(mm, va);
		}
	}
}

/*
 * Unlink the table that the level-`level` entry for addr points to: clear
 * the entry (with the barrier the release's set_p?d issues) and return the
 * table, or NULL if there is none (the bookkeeping still happens). A level
 * above the root is folded: its clear is the empty stub, no barrier.
 */
static void *unlink_table(struct uspace *mm, uint64_t addr, int level, enum pt_clear_barrier b)
{
	uint64_t *e;
	void *table;

	if (level < mm->start_level)
		return NULL;
	e = uspace_entry(mm, addr, level);
	table = e ? uspace_entry_table(*e, level) : NULL;
	if (table)
		WRITE_ONCE(*e, 0);
	pt_clear_barrier(b);
	return table;
}

static void run_op(struct mmu_gather *tlb, const struct scn_op *op)
{
	const struct policy *p = policy_current;
	uint64_t *e;
	void *t;

	switch (op->kind) {
	case OP_REMOVE_PTE:
		for (uint64_t i = 0; i < op->count; i++) {
			uint64_t va = op->addr + i * PAGE_SIZE;

			e = uspace_entry(&user_mm, va, 3);
			if (e)
				WRITE_ONCE(*e, 0);	/* ptep_get_and_clear: no barrier */
			tlb_remove_tlb_entry(tlb, va);
			if (tlb_queue_page(tlb))	/* zap_pte_range's force_flush */
				tlb_flush_mmu(tlb);
		}
		break;
	case OP_REMOVE_PMD:			/* zap_huge_pmd of an anonymous THP */
		e = uspace_entry(&user_mm, op->addr, 2);
		if (e && (*e & PTE_TYPE_MASK) == PTE_TYPE_BLOCK)
			WRITE_ONCE(*e, 0);		/* pmdp_huge_get_and_clear: no barrier */
		tlb_remove_pmd_tlb_entry(tlb, op->addr);
		if (tlb_queue_page(tlb))	/* tlb_remove_page_size */
			tlb_flush_mmu(tlb);
		break;
	case OP_REMOVE_PUD:			/* zap_huge_pud of a DAX PUD */
		e = uspace_entry(&user_mm, op->addr, 1);
		if (e && (*e & PTE_TYPE_MASK) == PTE_TYPE_BLOCK)
			WRITE_ONCE(*e, 0);
		tlb_remove_pud_tlb_entry(tlb, op->addr);
		if (p->pud_page_batched && tlb_queue_page(tlb))
			tlb_flush_mmu(tlb);
		break;
	case OP_FREE_PTE_TABLE:		/* free_pte_range: pmd_clear; pte_free_tlb */
		t = unlink_table(&user_mm, op->addr, 2, p->clear_pmd);
		pte_free_tlb(tlb, t, op->addr);
		break;
	case OP_FREE_PMD_TABLE:		/* free_pmd_range: pud_clear; pmd_free_tlb */
		t = unlink_table(&user_mm, op->addr, 1, p->clear_pud);
		pmd_free_tlb(tlb, t, op->addr, user_mm.start_level > 1);
		break;
	case OP_FREE_PUD_TABLE:		/* free_pud_range: p4d_clear; pud_free_tlb */
		t = unlink_table(&user_mm, op->addr, 0, p->clear_top);
		pud_free_tlb(tlb, t, op->addr, user_mm.start_level > 0);
		break;
	case OP_FREE_P4D_TABLE:		/* free_p4d_range: pgd_clear; p4d_free_tlb */
		/* No p4d table exists; up to v5.4 pgd_clear was set_pgd on 4 levels. */
		if (user_mm.start_level == 0)
			pt_clear_barrier(p->clear_pgd_l4);
		p4d_free_tlb(tlb, op->addr);
		break;
	case OP_FLUSH:
		tlb_flush_mmu(tlb);
		break;
	}
}

static void run_step(const struct scn_step *s)
{
	const struct policy *p = policy_current;
	void *t;

	switch (s->kind) {
	case STEP_GATHER:
		tlb_gather_mmu(&gather, &user_mm, s->fullmm);
		for (unsigned k = s->first_op; k < s->first_op + s->nr_ops; k++)
			run_op(&gather, &scn.ops[k]);
		tlb_finish_mmu(&gather);
		break;
	case STEP_FLUSH_TLB_MM:
		p->flush_tlb_mm();
		break;
	case STEP_FLUSH_TLB_PAGE:		/* ptep_clear_flush */
		clear_leaf(&user_mm, s->addr);
		p->flush_tlb_page(s->addr);
		break;
	case STEP_FLUSH_TLB_RANGE:
		clear_leaves_in(false, s->start, s->end);
		p->flush_tlb_range(s->start, s->end, s->stride, s->last_level, s->level);
		break;
	case STEP_FLUSH_TLB_KERNEL_RANGE:	/* unmap_kernel_range */
		clear_leaves_in(true, s->start, s->end);
		p->flush_tlb_kernel_range(s->start, s->end);
		break;
	case STEP_FLUSH_TLB_KERNEL_PGTABLE:	/* pmd_free_pte_page */
		t = unlink_table(&kernel_mm, s->addr, 2, p->clear_pmd);
		p->flush_tlb_kernel_pgtable(s->addr);
		if (t)
			uspace_free_table(t, 3);	/* pte_free_kernel, after the TLBI */
		break;
	}
}

static void mark_mapped(bool *out)
{
	for (unsigned i = 0; i < nr_points; i++)
		out[i] = uspace_translates(points[i].kernel ? &kernel_mm : &user_mm, points[i].va);
}

static void run_scenario(void)
{
	const char *why = check_runnable();
	unsigned probefail = 0;
	struct oplog_totals tot;

	if (why) {
		report("SKIP", "id=%lu why=%s", scn.id, why);
		return;
	}
	env_init();
	why = build();
	if (why) {
		uspace_reset();
		report("SKIP", "id=%lu why=%s", scn.id, why);
		return;
	}
	report("SCN", "id=%lu status=start", scn.id);
	oplog_totals_reset();
	mark_mapped(now_mapped);
	for (unsigned i = 0; i < scn.nr_steps; i++) {
		const struct scn_step *s = &scn.steps[i];
		uint64_t lo, hi;

		for (unsigned k = 0; k < nr_points; k++)
			points[k].mapped = now_mapped[k];
		report("STEP", "n=%u", s->n);
		oplog_reset();
		scn_step_now = s->n;
		run_step(s);
		oplog_report();
		mark_mapped(now_mapped);
		if (s->kind == STEP_GATHER && s->fullmm)
			lo = hi = 0;
		else
			lo = 0, hi = ~0UL;
		probefail += probe_step(s->n, points, nr_points, now_mapped, lo, hi);
		uspace_free_deferred();
	}
	scn_step_now = 0;
	tot = oplog_totals();
	report("SCNEND", "id=%lu tlbi=%lu dsb=%lu isb=%lu probefail=%u injected=%lu",
	       scn.id, tot.tlbi, tot.dsb, tot.isb, probefail, inject_hits);
	uspace_reset();
	inject_current = BUG_NONE;
}

/* ---- the command hook ------------------------------------------------------------ */

static int first_word_is(const char *line, const char *w)
{
	size_t n = strlen(w);

	return !strncmp(line, w, n) && (line[n] == ' ' || line[n] == '\0');
}

int scenario_handle_line(const char *line)
{
	if (!line) {			/* main rejected a line of this scenario */
		scn.state = S_DISCARD;
		return SCN_MORE;
	}
	if (first_word_is(line, "GO")) {
		enum scn_state st = scn.state;

		scn.state = S_IDLE;
		if (st == S_BUFFER)
			run_scenario();
		else if (st == S_IDLE)
			report("ERR", "cmd=GO why=no_scn");
		return SCN_DONE;
	}
	if (first_word_is(line, "SCN"))
		return parse_scn(line);
	if (scn.state == S_DISCARD)
		return SCN_MORE;
	if (scn.state == S_IDLE) {
		char w[8] = { 0 };

		for (unsigned i = 0; i < sizeof(w) - 1 && line[i] && line[i] != ' '; i++)
			w[i] = line[i];
		report("ERR", "cmd=%s why=no_scn", w);
		return SCN_DONE;
	}
	if (first_word_is(line, "MAP"))
		return parse_map(line, false);
	if (first_word_is(line, "KMAP"))
		return parse_map(line, true);
	if (first_word_is(line, "STEP"))
		return parse_step(line);
	if (first_word_is(line, "OP"))
		return parse_op(line);
	return reject("?", "unknown");
}
