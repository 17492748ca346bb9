/* SPDX-License-Identifier: MIT */
/*
 * policy.c - the arm64 side of Linux's TLB invalidation, one function per
 * variant a release shipped, and the table of releases.
 *
 * The template every invalidation follows (arch/arm64/include/asm/tlbflush.h):
 *
 *   DSB ISHST   page-table stores visible to every walker before the TLBI,
 *               or a walker could refill the TLB from the old entry after it
 *   TLBI ...    broadcast (inner shareable) invalidation
 *   DSB ISH     the invalidation has completed on every CPU: only now may a
 *               freed table be reused or the unmap be reported done
 *   ISB         kernel mappings only: discard instructions fetched through
 *               the old mapping (user mappings get it from the ERET)
 *
 * Under KPTI every ASID-tagged TLBI is issued twice, the second time for
 * the user ASID (operand | 1 << 48). Every instruction goes through oplog.c.
 * Bug injections are tested at the line they change (inject.h).
 */
#include "shootdown.h"
#include "asm/pgtable-hwdef.h"
#include "gather.h"
#include "inject.h"
#include "oplog.h"
#include "policy.h"

struct tlb_env tlb_env;
const struct policy *policy_current;

/* Per-op limit before the whole ASID is cheaper (PTRS_PER_PTE from v5.0). */
#define MAX_TLBI_OPS_V4		1024UL
#define PTRS_PER_PTE		PTRS_PER_TABLE

/* ---- building blocks ---------------------------------------------------- */

/*
 * __tlbi: one TLBI, and under ARM64_WORKAROUND_REPEAT_TLBI before its rework
 * (v4.19 .. v7.0, the ALTERNATIVE of __TLBI_0/__TLBI_1 in tlbflush.h) DSB ISH
 * and the same TLBI again: on the affected CPUs (Cortex-A76 erratum 1286807,
 * Falkor E1009, ...) the first one may leave an entry behind. From v7.1 the
 * repeat moved to the completion (dsb_ish_after_tlbi). Out of line: inlined
 * at every call site it pushes range_loop_scale_down's op into a stack slot,
 * where the barrier lint no longer follows it to op_tlbi's switch.
 */
static __attribute__((noinline)) void tlbi(enum tlbi_op op, uint64_t xt)
{
	op_tlbi(op, xt);
	if (!tlb_env.repeat_tlbi || policy_current->repeat_tlbi_sync)
		return;
	if (injected(BUG_REPEAT_TLBI_MISSING))
		return;
	op_dsb(DSB_ISH);	/* erratum: the first TLBI completes before the repeat */
	op_tlbi(op, xt);
}

static uint16_t mm_asid(void)
{
	if (injected(BUG_WRONG_ASID))
		return tlb_env.asid ^ 0x80;
	return tlb_env.asid;
}

/* __tlbi_user: the KPTI copy for the user ASID. */
static void tlbi_user(enum tlbi_op op, uint64_t xt)
{
	if (!tlb_env.kpti)
		return;
	if (injected(BUG_KPTI_COPY_MISSING))
		return;
	tlbi(op, xt | TLBI_USER_ASID_FLAG);
}

/* __tlbi_level: a by-VA op with the TTL hint when the CPU has FEAT_TTL. */
static void tlbi_level(enum tlbi_op op, uint64_t xt, int level, bool user)
{
	if (tlb_env.ttl)
		xt = tlbi_with_ttl(xt, level, PAGE_SHIFT);
	tlbi(op, xt);
	if (user)
		tlbi_user(op, xt);
}

static void dsb_ishst_before_tlbi(void)
{
	if (injected(BUG_SKIP_DSB_ISHST))
		return;
	op_dsb(DSB_ISHST);	/* page-table stores reach the walkers before the TLBI */
}

/*
 * The DSB ISH that completes TLB maintenance. From v7.1 (__tlbi_sync_s1ish)
 * under ARM64_WORKAROUND_REPEAT_TLBI it is followed by TLBI VALE1IS, XZR and
 * another DSB ISH: one dummy invalidation, completed, instead of repeating
 * every TLBI.
 */
static void dsb_ish_after_tlbi(void)
{
	if (injected(BUG_SKIP_DSB_ISH))
		return;
	op_dsb(DSB_ISH);	/* the invalidation has completed everywhere */
	if (!tlb_env.repeat_tlbi || !policy_current->repeat_tlbi_sync)
		return;
	if (injected(BUG_REPEAT_TLBI_MISSING))
		return;
	op_tlbi(TLBI_VALE1IS_XZR, 0);
	op_dsb(DSB_ISH);	/* erratum: the dummy TLBI completes too */
}

static uint64_t round_down(uint64_t x, uint64_t a) { return x & ~(a - 1); }
static uint64_t round_up(uint64_t x, uint64_t a) { return (x + a - 1) & ~(a - 1); }
/* Rounding [start, end) to the stride would change nothing. */
static bool stride_aligned(uint64_t start, uint64_t end, uint64_t stride)
{
	return round_down(start, stride) == start && round_up(end, stride) == end;
}

/*
 * Whether a range of size bytes is past the full-ASID cut-off of limit ops
 * of stride each (size >= cut-off when inclusive, else size > cut-off).
 * cutoff_4k_units is only "taken" when it flips the decision (never on 4K).
 */
static bool past_cutoff(uint64_t size, uint64_t limit, uint64_t stride, bool inclusive)
{
	uint64_t right = limit * stride, wrong = right >> (PAGE_SHIFT - 12);
	bool past = inclusive ? size >= right : size > right;
	bool past_wrong = inclusive ? size >= wrong : size > wrong;

	if (past_wrong != past && injected(BUG_CUTOFF_4K_UNITS))
		return past_wrong;
	return past;
}

void pt_clear_barrier(enum pt_clear_barrier b)
{
	if (b == PTC_NONE)
		return;
	op_dsb(DSB_ISHST);	/* set_p?d: the cleared entry reaches the walkers */
	if (b == PTC_DSB_ISB)
		op_isb();	/* set_pgd/set_p4d (v5.4+): no stale "invalid" marker in the pipeline */
}

/* ---- whole-space operations (unchanged v4.19 .. v6.19) ------------------- */

/*
 * flush_tlb_mm - every entry of the ASID, all levels, all CPUs.
 * DSB ISHST; TLBI ASIDE1IS (+ KPTI copy); DSB ISH. No ISB: user mappings.
 */
static void flush_tlb_mm_all(void)
{
	uint64_t xt = tlbi_vaddr(0, mm_asid());

	dsb_ishst_before_tlbi();
	tlbi(TLBI_ASIDE1IS, xt);
	tlbi_user(TLBI_ASIDE1IS, xt);
	dsb_ish_after_tlbi();
}

/*
 * flush_tlb_page - the last-level entry of one user page, all CPUs.
 * DSB ISHST; TLBI VALE1IS (+ copy), no level hint; DSB ISH.
 */
static void flush_tlb_page_all(uint64_t uaddr)
{
	uint64_t xt = tlbi_vaddr(uaddr, mm_asid());

	dsb_ishst_before_tlbi();
	tlbi(TLBI_VALE1IS, xt);
	tlbi_user(TLBI_VALE1IS, xt);
	dsb_ish_after_tlbi();
}

/*
 * v7.1 flush_tlb_page: __do_flush_tlb_range(vma, page, page + PAGE_SIZE,
 * PAGE_SIZE, 3, TLBF_NOWALKCACHE): one page is never past the cut-off and
 * is a single op even with range TLBIs, so the same sequence as before
 * but the TTL hint of level 3 under FEAT_TTL.
 */
static void flush_tlb_page_v7_1(uint64_t uaddr)
{
	dsb_ishst_before_tlbi();
	tlbi_level(TLBI_VALE1IS, tlbi_vaddr(uaddr, mm_asid()), 3, true);
	dsb_ish_after_tlbi();
}

/* flush_tlb_all - everything, every ASID; DSB ISHST; VMALLE1IS; DSB ISH; ISB. */
static void flush_tlb_all(void)
{
	dsb_ishst_before_tlbi();
	tlbi(TLBI_VMALLE1IS, 0);
	dsb_ish_after_tlbi();
	op_isb();		/* kernel mappings may have gone: refetch */
}

/* ---- __flush_tlb_range ---------------------------------------------------- */

/* The per-stride loop of v4.19 .. v5.4: [start, end) in TLBI (4K) units. */
static void range_loop_simple(uint64_t start, uint64_t end, uint64_t stride, bool last_level)
{
	uint64_t asid = mm_asid();
	uint64_t s = tlbi_vaddr(start, asid), e = tlbi_vaddr(end, asid);
	enum tlbi_op op = last_level ? TLBI_VALE1IS : TLBI_VAE1IS;

	stride >>= 12;		/* in 4K units, as the operand */
	dsb_ishst_before_tlbi();
	for (uint64_t a = s; a < e; a += stride) {
		tlbi(op, a);
		tlbi_user(op, a);
	}
	dsb_ish_after_tlbi();
}

/*
 * v4.19 __flush_tlb_range(vma, start, end, last_level): [start, end) at
 * PAGE_SIZE steps (no stride yet), no rounding; over 1024 pages (strictly
 * more) the whole ASID instead. The stride argument is ignored.
 */
static void flush_range_v4_19(uint64_t start, uint64_t end, uint64_t stride,
			      bool last_level, int tlb_level)
{
	(void)stride; (void)tlb_level;
	if (past_cutoff(end - start, MAX_TLBI_OPS_V4, PAGE_SIZE, false)) {
		flush_tlb_mm_all();
		return;
	}
	if (injected(BUG_END_OFF_BY_ONE))
		end -= PAGE_SIZE;
	range_loop_simple(start, end, PAGE_SIZE, last_level);
}

/*
 * v4.20 __flush_tlb_range(vma, start, end, stride, last_level): one TLBI per
 * stride over [start, end), unrounded; above 1024 * stride (strictly) the
 * whole ASID. Leaf-only (VALE1IS) when last_level, else VAE1IS (walk caches).
 */
static void flush_range_v4_20(uint64_t start, uint64_t end, uint64_t stride,
			      bool last_level, int tlb_level)
{
	(void)tlb_level;
	if (past_cutoff(end - start, MAX_TLBI_OPS_V4, stride, false)) {
		flush_tlb_mm_all();
		return;
	}
	if (injected(BUG_END_OFF_BY_ONE))
		end -= stride;
	range_loop_simple(start, end, stride, last_level);
}

/*
 * v5.0 (3d65b6bbc01e): as v4.20 but the cut-off is PTRS_PER_PTE * stride
 * and compared with >= (a full last-level table's worth).
 */
static void flush_range_v5_0(uint64_t start, uint64_t end, uint64_t stride,
			     bool last_level, int tlb_level)
{
	(void)tlb_level;
	if (past_cutoff(end - start, PTRS_PER_PTE, stride, true)) {
		flush_tlb_mm_all();
		return;
	}
	if (injected(BUG_END_OFF_BY_ONE))
		end -= stride;
	range_loop_simple(start, end, stride, last_level);
}

/*
 * v5.2 .. v5.8 (01d57485fcdb): start rounded down and end up to the stride
 * before the cut-off (>= PTRS_PER_PTE * stride) and the loop.
 */
static void flush_range_v5_2(uint64_t start, uint64_t end, uint64_t stride,
			     bool last_level, int tlb_level)
{
	(void)tlb_level;
	if (!stride_aligned(start, end, stride) && !injected(BUG_NO_STRIDE_ROUND)) {
		start = round_down(start, stride);
		end = round_up(end, stride);
	}
	if (past_cutoff(end - start, PTRS_PER_PTE, stride, true)) {
		flush_tlb_mm_all();
		return;
	}
	if (injected(BUG_END_OFF_BY_ONE))
		end -= stride;
	range_loop_simple(start, end, stride, last_level);
}

/*
 * Pages left after one non-range step of stride. The kernel subtracts
 * (pages is a multiple of the stride once rounded); with no_stride_round
 * injected it is not, and the unsigned count would wrap into an endless
 * loop, so the walk stops at zero instead.
 */
static uint64_t pages_after_stride(uint64_t pages, uint64_t stride)
{
	uint64_t step = stride >> PAGE_SHIFT;

	return pages > step ? pages - step : 0;
}

/* One by-VA TLBI (+ copy) with the level hint: the non-range step. */
static void range_single(enum tlbi_op op, uint64_t start, uint16_t asid, int level, bool user)
{
	tlbi_level(op, tlbi_vaddr(start, asid), level, user);
}

/* One range TLBI (+ copy) of (num + 1) << (5 * scale + 1) pages from start. */
static void range_op(enum tlbi_op op, uint64_t start, uint16_t asid, unsigned scale,
		     unsigned num, int level, bool user)
{
	uint64_t xt = tlbi_vaddr_range(start >> PAGE_SHIFT, asid, scale, num, level, PAGE_SHIFT);

	tlbi(tlbi_range_form(op), xt);
	if (user)
		tlbi_user(tlbi_range_form(op), xt);
}

/*
 * v5.9 .. v6.7 loop: odd page counts take one non-range op first, then
 * range ops with scale counted UP from 0, NUM = ((pages >> (5*scale+1)) & 31) - 1
 * (at most 30). Without FEAT_TLBIRANGE, one op per stride.
 */
static void range_loop_scale_up(enum tlbi_op op, uint64_t start, uint64_t pages,
				uint64_t stride, uint16_t asid, int level, bool user)
{
	unsigned scale = 0;

	while (pages > 0) {
		int num;

		if (!tlb_env.range || pages % 2 == 1) {
			range_single(op, start, asid, level, user);
			start += stride;
			pages = pages_after_stride(pages, stride);
			continue;
		}
		if (scale > 3)
			break;		/* unreachable below MAX_TLBI_RANGE_PAGES */
		num = (int)((pages >> (5 * scale + 1)) & 31) - 1;
		if (num >= 0) {
			range_op(op, start, asid, scale, num, level, user);
			start += tlbi_range_pages(num, scale) << PAGE_SHIFT;
			pages -= tlbi_range_pages(num, scale);
		}
		scale++;
	}
}

/*
 * v6.8 .. v6.19 loop (__flush_tlb_range_op): scale counted DOWN from 3 so
 * the biggest chunks go first; a single remaining page takes a non-range
 * op. v6.8 still masks NUM to 5 bits; v6.9 (e3ba51ab24fd) clamps the page
 * count instead so NUM reaches 31. No LPA2 here (va_bits <= 48).
 */
static void range_loop_scale_down(enum tlbi_op op, uint64_t start, uint64_t pages,
				  uint64_t stride, uint16_t asid, int level, bool user,
				  bool clamp_num)
{
	int scale = 3;

	while (pages > 0) {
		int num;

		if (!tlb_env.range || pages == 1) {
			range_single(op, start, asid, level, user);
			start += stride;
			pages = pages_after_stride(pages, stride);
			continue;
		}
		if (scale < 0)
			break;		/* only with range_num_overflow: pages are left over */
		/* masking and clamping differ only from 32 << (5*scale+1) pages on */
		if (clamp_num && (pages < tlbi_range_pages(31, scale) ||
				  !injected(BUG_RANGE_NUM_OVERFLOW))) {
			uint64_t p = pages < tlbi_range_pages(31, scale) ? pages
								       : tlbi_range_pages(31, scale);
			num = (int)(p >> (5 * scale + 1)) - 1;
		} else {
			num = (int)((pages >> (5 * scale + 1)) & 31) - 1;
		}
		if (num >= 0) {
			range_op(op, start, asid, scale, num, level, user);
			start += tlbi_range_pages(num, scale) << PAGE_SHIFT;
			pages -= tlbi_range_pages(num, scale);
		}
		scale--;
	}
}

/* How a v5.9+ release walks a range (the fields changed in v6.8, v6.9, v6.10). */
struct range_kind {
	bool scale_down;	/* v6.8: scale from 3 down, single page last */
	bool clamp_num;		/* v6.9: NUM from a clamped count (up to 31) */
	bool max_inclusive;	/* v6.10: exactly MAX_TLBI_RANGE_PAGES still by range */
	bool nosync_split;	/* v6.9..v7.0: the caller's DSB ISH follows flush_tlb_mm too */
};

/*
 * __flush_tlb_range_limit_excess: without range ops, PTRS_PER_PTE strides;
 * and beyond the range-op limit (pages >= MAX_TLBI_RANGE_PAGES, > from
 * v6.10), which from v7.1 bounds range ops only. Kept out of line: the
 * barrier lint follows the TLBI op in registers, and this keeps the caller's
 * op out of a stack slot.
 */
static __attribute__((noinline)) bool range_past_limit(uint64_t len, uint64_t stride,
						       struct range_kind k)
{
	uint64_t pages = len >> PAGE_SHIFT;
	bool dvm_only = policy_current->range_fallback_returns;	/* v7.1 */

	if (!tlb_env.range && past_cutoff(len, PTRS_PER_PTE, stride, true))
		return true;
	if (dvm_only && !tlb_env.range && (pages <= TLBI_RANGE_MAX_PAGES ||
					   !injected(BUG_CUTOFF_RANGE_LIMIT_NO_RANGE)))
		return false;
	return k.max_inclusive ? pages > TLBI_RANGE_MAX_PAGES : pages >= TLBI_RANGE_MAX_PAGES;
}

/*
 * The whole-ASID fallback: flush_tlb_mm, then (v6.9..v7.0) __flush_tlb_range's
 * own DSB ISH after _nosync returned; from v7.1 __do_flush_tlb_range returns
 * straight away.
 */
static __attribute__((noinline)) void range_fallback(struct range_kind k)
{
	flush_tlb_mm_all();
	if (k.nosync_split && !injected(BUG_FALLBACK_ONE_DSB_ISH))
		dsb_ish_after_tlbi();
	else if (policy_current->range_fallback_returns &&
		 injected(BUG_FALLBACK_EXTRA_DSB_ISH))
		dsb_ish_after_tlbi();
}

/*
 * v5.9+ __flush_tlb_range(vma, start, end, stride, last_level, tlb_level):
 * rounded to the stride; past the limit the whole ASID; else DSB ISHST, the
 * loop of the release, DSB ISH.
 */
static void flush_range_ranged(uint64_t start, uint64_t end, uint64_t stride,
			       bool last_level, int tlb_level, struct range_kind k)
{
	enum tlbi_op op = last_level ? TLBI_VALE1IS : TLBI_VAE1IS;
	uint64_t pages;

	if (!stride_aligned(start, end, stride) && !injected(BUG_NO_STRIDE_ROUND)) {
		start = round_down(start, stride);
		end = round_up(end, stride);
	}
	if (!k.scale_down && tlb_level == 0)	/* before v6.8, 0 meant "no hint" */
		tlb_level = TLB_LEVEL_UNKNOWN;
	pages = (end - start) >> PAGE_SHIFT;
	if (range_past_limit(end - start, stride, k)) {
		range_fallback(k);
		return;
	}
	if (injected(BUG_END_OFF_BY_ONE)) {
		end -= stride;
		pages = (end - start) >> PAGE_SHIFT;
	}
	dsb_ishst_before_tlbi();
	if (!k.scale_down)
		range_loop_scale_up(op, start, pages, stride, mm_asid(), tlb_level, true);
	else
		range_loop_scale_down(op, start, pages, stride, mm_asid(), tlb_level, true,
				      k.clamp_num);
	dsb_ish_after_tlbi();
}

/* v5.9 .. v6.7: scale up from 0, odd page first, NUM masked to 5 bits (<= 30). */
static void flush_range_v5_9(uint64_t s, uint64_t e, uint64_t st, bool ll, int lvl)
{
	flush_range_ranged(s, e, st, ll, lvl, (struct range_kind){ false, false, false, false });
}

/* v6.8: scale down from 3, single page last, NUM still masked. */
static void flush_range_v6_8(uint64_t s, uint64_t e, uint64_t st, bool ll, int lvl)
{
	flush_range_ranged(s, e, st, ll, lvl, (struct range_kind){ true, false, false, false });
}

/* v6.9 (e3ba51ab24fd): NUM from min(pages, 32 << (5*scale+1)): up to 31. */
static void flush_range_v6_9(uint64_t s, uint64_t e, uint64_t st, bool ll, int lvl)
{
	flush_range_ranged(s, e, st, ll, lvl, (struct range_kind){ true, true, false, true });
}

/* v6.10: a range of exactly MAX_TLBI_RANGE_PAGES is still done by range ops. */
static void flush_range_v6_10(uint64_t s, uint64_t e, uint64_t st, bool ll, int lvl)
{
	flush_range_ranged(s, e, st, ll, lvl, (struct range_kind){ true, true, true, true });
}

/*
 * v7.1 (__do_flush_tlb_range, TLBF_* flags): the whole-ASID fallback returns
 * at once, so flush_tlb_mm's DSB ISH is the only one; without range ops the
 * cut-off is only pages >= MAX_DVM_OPS strides.
 */
static void flush_range_v7_1(uint64_t s, uint64_t e, uint64_t st, bool ll, int lvl)
{
	flush_range_ranged(s, e, st, ll, lvl, (struct range_kind){ true, true, true, false });
}

/* ---- flush_tlb_kernel_range ------------------------------------------------ */

static enum tlbi_op kernel_leaf_op(void)
{
	if (injected(BUG_KERNEL_RANGE_VAAE))
		return TLBI_VAAE1IS;
	return TLBI_VAALE1IS;
}

/* The per-page loop of v4.19 .. v6.12, with ASID 0 (global entries). */
static void kernel_range_loop(uint64_t start, uint64_t end, enum tlbi_op op)
{
	uint64_t s = tlbi_vaddr(start, 0), e = tlbi_vaddr(end, 0);

	dsb_ishst_before_tlbi();
	for (uint64_t a = s; a < e; a += 1UL << (PAGE_SHIFT - 12))
		tlbi(op, a);
	dsb_ish_after_tlbi();
	op_isb();		/* kernel mappings changed: refetch through the new ones */
}

/*
 * v4.19 flush_tlb_kernel_range: [start, end) of global kernel pages, every
 * CPU, all levels (VAAE1IS); over 1024 pages flush_tlb_all. Ends with ISB.
 */
static void kernel_range_v4_19(uint64_t start, uint64_t end)
{
	if (end - start > MAX_TLBI_OPS_V4 * PAGE_SIZE) {
		flush_tlb_all();
		return;
	}
	kernel_range_loop(start, end, TLBI_VAAE1IS);
}

/* v4.20 (6899a4c82faf): last level only, VAALE1IS; cut-off still 1024 pages. */
static void kernel_range_v4_20(uint64_t start, uint64_t end)
{
	if (end - start > MAX_TLBI_OPS_V4 * PAGE_SIZE) {
		flush_tlb_all();
		return;
	}
	kernel_range_loop(start, end, kernel_leaf_op());
}

/* v5.0 .. v6.12: the cut-off becomes PTRS_PER_PTE pages (still strictly more). */
static void kernel_range_v5_0(uint64_t start, uint64_t end)
{
	if (end - start > PTRS_PER_PTE * PAGE_SIZE) {
		flush_tlb_all();
		return;
	}
	kernel_range_loop(start, end, kernel_leaf_op());
}

/*
 * v6.13+: rounded to pages, the same limit as user ranges
 * (__flush_tlb_range_limit_excess), and the range-op loop with ASID 0, no
 * level hint and no KPTI copy (global entries).
 */
static void kernel_range_v6_13(uint64_t start, uint64_t end)
{
	uint64_t pages;

	start = round_down(start, PAGE_SIZE);
	end = round_up(end, PAGE_SIZE);
	pages = (end - start) >> PAGE_SHIFT;
	if ((!tlb_env.range && end - start >= PTRS_PER_PTE * PAGE_SIZE) ||
	    pages > TLBI_RANGE_MAX_PAGES) {
		flush_tlb_all();
		return;
	}
	dsb_ishst_before_tlbi();
	range_loop_scale_down(kernel_leaf_op(), start, pages, PAGE_SIZE, 0,
			      TLB_LEVEL_UNKNOWN, false, true);
	dsb_ish_after_tlbi();
	op_isb();		/* kernel mappings changed: refetch through the new ones */
}

/* ---- __flush_tlb_kernel_pgtable -------------------------------------------- */

/*
 * v4.19: TLBI VAAE1IS (all levels, walk caches of the freed kernel table);
 * DSB ISH. No DSB ISHST of its own: pmd_clear's set_pmd issued one.
 */
static void kernel_pgtable_v4_19(uint64_t kaddr)
{
	tlbi(TLBI_VAAE1IS, tlbi_vaddr(kaddr, 0));
	dsb_ish_after_tlbi();
}

/* v4.20: set_pmd no longer orders a cleared entry, so DSB ISHST first. */
static void kernel_pgtable_v4_20(uint64_t kaddr)
{
	dsb_ishst_before_tlbi();
	tlbi(TLBI_VAAE1IS, tlbi_vaddr(kaddr, 0));
	dsb_ish_after_tlbi();
}

/* v5.4 (51696d346c49): and an ISB, so no walk uses the freed table afterwards. */
static void kernel_pgtable_v5_4(uint64_t kaddr)
{
	dsb_ishst_before_tlbi();
	tlbi(TLBI_VAAE1IS, tlbi_vaddr(kaddr, 0));
	dsb_ish_after_tlbi();
	if (injected(BUG_NO_ISB_KERNEL_PGTABLE))
		return;
	op_isb();		/* the freed table may no longer be walked */
}

/* ---- freed user tables (__p?d_free_tlb) ------------------------------------ */

/*
 * v4.19 __flush_tlb_pgtable: each freed table invalidated at once, walk
 * caches included: TLBI VAE1IS of addr (+ copy); DSB ISH. No DSB ISHST:
 * the pmd_clear/pud_clear before it issued one (set_p?d in v4.19).
 */
static void flush_pgtable_sync(uint64_t addr)
{
	uint64_t xt = tlbi_vaddr(addr, mm_asid());

	tlbi(TLBI_VAE1IS, xt);
	tlbi_user(TLBI_VAE1IS, xt);
	dsb_ish_after_tlbi();
}

static void free_table_v4_19(struct mmu_gather *tlb, uint64_t addr)
{
	(void)tlb;
	if (injected(BUG_TABLE_FREE_NO_TLBI))
		return;
	flush_pgtable_sync(addr);
}

/* v4.20+: nothing now; the gather's flush covers the table (freed_tables). */
static void free_table_v4_20(struct mmu_gather *tlb, uint64_t addr)
{
	(void)tlb;
	if (injected(BUG_SYNC_PER_TABLE))
		flush_pgtable_sync(addr);
}

/* ---- tlb_get_level ---------------------------------------------------------- */

static int level_of_only_flag(const struct mmu_gather *tlb, bool p4d_level0)
{
	int n = tlb->cleared_ptes + tlb->cleared_pmds + tlb->cleared_puds + tlb->cleared_p4ds;

	if (n != 1)
		return TLB_LEVEL_UNKNOWN;
	if (tlb->cleared_ptes)
		return 3;
	if (tlb->cleared_pmds)
		return 2;
	if (tlb->cleared_puds)
		return 1;
	return p4d_level0 ? 0 : TLB_LEVEL_UNKNOWN;
}

/* Before v5.9: no hints. */
static int level_none(const struct mmu_gather *tlb)
{
	(void)tlb;
	return TLB_LEVEL_UNKNOWN;
}

/* v5.9: the level of the only cleared_* flag (0 = none), freed tables or not. */
static int level_v5_9(const struct mmu_gather *tlb)
{
	return level_of_only_flag(tlb, false);
}

/*
 * With tables freed: whether ttl_with_freed_tables gives the hint anyway.
 * Taken only when there is a hint to give and something carries it (the
 * TTL field with FEAT_TTL, or a range operand's TTL field).
 */
static bool ttl_hint_used(int level)
{
	if (level == TLB_LEVEL_UNKNOWN || !(tlb_env.ttl || tlb_env.range))
		return false;
	return injected(BUG_TTL_WITH_FREED_TABLES);
}

/* v5.14 (52218fcd61cb): no hint when tables were freed (TTL is leaf-only). */
static int level_v5_14(const struct mmu_gather *tlb)
{
	if (tlb->freed_tables && !ttl_hint_used(level_of_only_flag(tlb, false)))
		return TLB_LEVEL_UNKNOWN;
	return level_of_only_flag(tlb, false);
}

/* v6.8+: TLBI_TTL_UNKNOWN for "no hint", so level 0 (p4ds only) is a hint. */
static int level_v6_8(const struct mmu_gather *tlb)
{
	if (tlb->freed_tables && !ttl_hint_used(level_of_only_flag(tlb, true)))
		return TLB_LEVEL_UNKNOWN;
	return level_of_only_flag(tlb, true);
}

/* ---- tlb_flush ---------------------------------------------------------------- */

/*
 * v4.19 tlb_flush: nothing for fullmm (the ASID allocator invalidates before
 * reuse); else a last-level range flush of [start, end) at PAGE_SIZE steps
 * (tables were already invalidated one by one when freed).
 */
static void tlb_flush_v4_19(struct mmu_gather *tlb)
{
	if (tlb->fullmm)
		return;
	policy_current->flush_tlb_range(tlb->start, tlb->end, PAGE_SIZE, true,
					TLB_LEVEL_UNKNOWN);
}

/*
 * v4.20+ tlb_flush: leaf-only unless tables were freed; stride from the
 * lowest cleared level. fullmm: only the walk caches matter, so the whole
 * ASID when tables were freed, else nothing.
 */
static void tlb_flush_v4_20(struct mmu_gather *tlb)
{
	bool last_level = !tlb->freed_tables;
	uint64_t stride = tlb_get_unmap_size(tlb);
	int level = policy_current->tlb_get_level(tlb);

	if (!last_level && injected(BUG_LAST_LEVEL_WITH_FREED_TABLES))
		last_level = true;
	if (tlb->fullmm) {
		if (!last_level && !injected(BUG_FULLMM_NO_WALK_FLUSH))
			flush_tlb_mm_all();
		return;
	}
	policy_current->flush_tlb_range(tlb->start, tlb->end, stride, last_level, level);
}

/* ---- the releases -------------------------------------------------------------- */

/* Fields shared by every release from v4.20 on (flush_tlb_page changed in v7.1). */
#define GENERIC_V4_20_TLB	.has_flags = true, .batch_full_flushes = true, \
			.tlb_flush = tlb_flush_v4_20, .free_table_flush = free_table_v4_20, \
			.flush_tlb_mm = flush_tlb_mm_all, \
			.clear_pmd = PTC_NONE, .clear_pud = PTC_NONE
#define GENERIC_V4_20	GENERIC_V4_20_TLB, .flush_tlb_page = flush_tlb_page_all
/* And from v5.9 on (p4d folded by pgtable-nop4d.h; flags decide the skip). */
#define V5_9_FIELDS	.skip_by_flags = true, .generic_p4d_free = true, \
			.flush_tlb_kernel_pgtable = kernel_pgtable_v5_4, \
			.clear_top = PTC_DSB_ISB, .clear_pgd_l4 = PTC_NONE
#define GENERIC_V5_9	GENERIC_V4_20, V5_9_FIELDS
#define GENERIC_V7_1	GENERIC_V4_20_TLB, V5_9_FIELDS, .flush_tlb_page = flush_tlb_page_v7_1

/* The names and rules of docs/policies.md; each selects its release until the next. */
static const struct policy policies[] = {
	{ .name = "v4.19",
	  .tlb_flush = tlb_flush_v4_19, .free_table_flush = free_table_v4_19,
	  .tlb_get_level = level_none, .flush_tlb_mm = flush_tlb_mm_all,
	  .flush_tlb_page = flush_tlb_page_all, .flush_tlb_range = flush_range_v4_19,
	  .flush_tlb_kernel_range = kernel_range_v4_19,
	  .flush_tlb_kernel_pgtable = kernel_pgtable_v4_19,
	  .clear_pmd = PTC_DSB, .clear_pud = PTC_DSB, .clear_top = PTC_DSB,
	  .clear_pgd_l4 = PTC_DSB },
	{ .name = "v4.20", GENERIC_V4_20, .tlb_get_level = level_none,
	  .flush_tlb_range = flush_range_v4_20, .flush_tlb_kernel_range = kernel_range_v4_20,
	  .flush_tlb_kernel_pgtable = kernel_pgtable_v4_20,
	  .clear_top = PTC_DSB, .clear_pgd_l4 = PTC_DSB },
	{ .name = "v5.0", GENERIC_V4_20, .tlb_get_level = level_none,
	  .flush_tlb_range = flush_range_v5_0, .flush_tlb_kernel_range = kernel_range_v5_0,
	  .flush_tlb_kernel_pgtable = kernel_pgtable_v4_20,
	  .clear_top = PTC_DSB, .clear_pgd_l4 = PTC_DSB },
	{ .name = "v5.2", GENERIC_V4_20, .tlb_get_level = level_none,
	  .flush_tlb_range = flush_range_v5_2, .flush_tlb_kernel_range = kernel_range_v5_0,
	  .flush_tlb_kernel_pgtable = kernel_pgtable_v4_20,
	  .clear_top = PTC_DSB, .clear_pgd_l4 = PTC_DSB },
	{ .name = "v5.4", GENERIC_V4_20, .tlb_get_level = level_none,
	  .flush_tlb_range = flush_range_v5_2, .flush_tlb_kernel_range = kernel_range_v5_0,
	  .flush_tlb_kernel_pgtable = kernel_pgtable_v5_4,
	  .clear_top = PTC_DSB_ISB, .clear_pgd_l4 = PTC_DSB_ISB },
	{ .name = "v5.9", GENERIC_V5_9, .tlb_get_level = level_v5_9,
	  .flush_tlb_range = flush_range_v5_9, .flush_tlb_kernel_range = kernel_range_v5_0 },
	{ .name = "v5.14", GENERIC_V5_9, .tlb_get_level = level_v5_14,
	  .flush_tlb_range = flush_range_v5_9, .flush_tlb_kernel_range = kernel_range_v5_0 },
	{ .name = "v6.8", GENERIC_V5_9, .tlb_get_level = level_v6_8,
	  .flush_tlb_range = flush_range_v6_8, .flush_tlb_kernel_range = kernel_range_v5_0 },
	{ .name = "v6.9", GENERIC_V5_9, .tlb_get_level = level_v6_8, .page_batch_keep_slot = true,
	  .flush_tlb_range = flush_range_v6_9, .flush_tlb_kernel_range = kernel_range_v5_0 },
	{ .name = "v6.10", GENERIC_V5_9, .tlb_get_level = level_v6_8, .page_batch_keep_slot = true,
	  .flush_tlb_range = flush_range_v6_10, .flush_tlb_kernel_range = kernel_range_v5_0 },
	{ .name = "v6.13", GENERIC_V5_9, .tlb_get_level = level_v6_8, .page_batch_keep_slot = true,
	  .flush_tlb_range = flush_range_v6_10, .flush_tlb_kernel_range = kernel_range_v6_13 },
	{ .name = "v6.19", GENERIC_V5_9, .tlb_get_level = level_v6_8, .page_batch_keep_slot = true,
	  .pud_page_batched = true,
	  .flush_tlb_range = flush_range_v6_10, .flush_tlb_kernel_range = kernel_range_v6_13 },
	{ .name = "v7.1", GENERIC_V7_1, .tlb_get_level = level_v6_8, .page_batch_keep_slot = true,
	  .pud_page_batched = true, .range_fallback_returns = true, .repeat_tlbi_sync = true,
	  .flush_tlb_range = flush_range_v7_1, .flush_tlb_kernel_range = kernel_range_v6_13 },
};

const struct policy *policy_lookup(const char *name)
{
	for (unsigned i = 0; i < sizeof(policies) / sizeof(policies[0]); i++)
		if (!strcmp(policies[i].name, name))
			return &policies[i];
	return NULL;
}
