"""The arm64 TLB maintenance functions, per policy.

Every invalidation follows one template (``tlbflush.h`` from v4.20)::

    DSB ISHST   // the page-table stores must reach every walker first
    TLBI ...    // invalidate (and its KPTI copy with the user ASID)
    DSB ISH     // wait until every CPU has completed the invalidation
    ISB         // only after kernel mappings: drop instructions fetched
                //   through the old mapping (user: the exception return does it)

The methods are named after the kernel functions they model and say in their
docstrings which releases they follow.  Raw operations (``dsb``, ``tlbi``,
operand packing) are kept apart from the policy decisions.  Nothing here does
I/O: instructions are appended to a list the caller owns.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from shootdown.model.instructions import (
    USER_ASID_FLAG,
    Dsb,
    Instruction,
    Isb,
    Tlbi,
    Why,
)
from shootdown.model.policy import Policy
from shootdown.scenario.geometry import Geometry

if TYPE_CHECKING:
    from shootdown.model.gather import MmuGather

#: __TLBI_VADDR keeps VA[55:12] in operand bits 43:0
_VA_MASK = (1 << 44) - 1
#: FEAT_TTL hint field, operand bits 47:44
_TTL_MASK = 0xF << 44
#: range operand base address field, bits 36:0
_BADDR_MASK = (1 << 37) - 1
#: v4.19/v4.20 cut-off: more than this many TLBIs and the whole ASID goes
MAX_TLBI_OPS_OLD = 1024
#: __TLBI_RANGE_PAGES(31, 3): the most one range-op sequence covers
MAX_TLBI_RANGE_PAGES = 32 << 16


def tlbi_vaddr(addr: int, asid: int) -> int:
    """__TLBI_VADDR: VA >> 12 in bits 43:0, ASID in 63:48."""
    return ((addr >> 12) & _VA_MASK) | (asid << 48)


def range_pages(num: int, scale: int) -> int:
    """__TLBI_RANGE_PAGES: (NUM + 1) * 2^(5*SCALE + 1) pages."""
    return (num + 1) << (5 * scale + 1)


class Arm64:
    """One CPU configuration under one policy, emitting into ``out``."""

    def __init__(self, policy: Policy, geo: Geometry, *, asid: int, kpti: bool,
                 features: Iterable[str], out: list[Instruction]) -> None:
        self.p = policy
        self.geo = geo
        self.asid = asid
        self.kpti = kpti
        feats = frozenset(features)
        #: FEAT_TTL is only used by releases that know it (v5.9+)
        self.has_ttl = policy.ttl_and_range and "ttl" in feats
        #: FEAT_TLBIRANGE likewise
        self.has_range = policy.ttl_and_range and "tlbirange" in feats
        #: LPA2 in use (v6.9+; the caller refuses it for older releases)
        self.lpa2 = policy.lpa2_ranges and "lpa2" in feats
        #: ARM64_WORKAROUND_REPEAT_TLBI (Cortex-A76 erratum 1286807, Falkor E1009, ...):
        #: each TLBI repeated after a DSB ISH, or (the rework) each completion followed
        #: by TLBI VALE1IS, XZR; DSB ISH
        repeat = "repeat_tlbi" in feats
        self.repeat_each = repeat and not policy.repeat_tlbi_sync
        self.repeat_sync = repeat and policy.repeat_tlbi_sync
        self.out = out
        #: provenance attached to what is emitted next
        self.why: Why | None = None

    # -- raw operations --------------------------------------------------
    def dsb(self, domain: str) -> None:
        self.out.append(Dsb(domain, self.why))

    def sync_s1ish(self) -> None:
        """The DSB ISH that completes TLB maintenance (__tlbi_sync_s1ish from the
        REPEAT_TLBI rework): with the erratum, then ``TLBI VALE1IS, XZR; DSB ISH``."""
        self.out.append(Dsb("ish", self.why))
        if self.repeat_sync:
            self.out.append(Tlbi("vale1is", None, self.why))
            self.out.append(Dsb("ish", self.why))

    def isb(self) -> None:
        self.out.append(Isb(self.why))

    def tlbi(self, op: str, xt: int | None = None) -> None:
        self.out.append(Tlbi(op, xt, self.why))
        if self.repeat_each:  # the old __TLBI_0/1 ALTERNATIVE: DSB ISH, the same TLBI again
            self.out.append(Dsb("ish", self.why))
            self.out.append(Tlbi(op, xt, self.why))

    def tlbi_user(self, op: str, xt: int) -> None:
        """__tlbi_user: under KPTI, the same TLBI for the user ASID (bit 48)."""
        if self.kpti:
            self.tlbi(op, xt | USER_ASID_FLAG)

    def _hinted(self, level: int | None) -> bool:
        if self.p.ttl_unknown_constant:  # v6.8: TLBI_TTL_UNKNOWN; 0..3 are hints
            return level is not None and 0 <= level <= 3
        return bool(level)              # v5.9: 0 means "no hint"

    def tlbi_level(self, op: str, xt: int, level: int | None) -> None:
        """__tlbi_level (v5.9+): the TTL hint in bits 47:44 when FEAT_TTL is there."""
        if self.has_ttl and self._hinted(level):
            assert level is not None
            xt = (xt & ~_TTL_MASK) | (((level & 3) | self.geo.tg << 2) << 44)
        self.tlbi(op, xt)

    def tlbi_user_level(self, op: str, xt: int, level: int | None) -> None:
        if self.kpti:
            self.tlbi_level(op, xt | USER_ASID_FLAG, level)

    def tlbi_vaddr_range(self, baddr: int, asid: int, scale: int, num: int,
                         level: int | None) -> int:
        """__TLBI_VADDR_RANGE: ASID 63:48, TG 47:46, SCALE 45:44, NUM 43:39, TTL 38:37,
        BADDR 36:0.  The TTL field is filled whether or not the CPU has FEAT_TTL."""
        if self.p.ttl_unknown_constant:  # v6.8: only levels 1..3 are encoded
            ttl = level if level is not None and 1 <= level <= 3 else 0
        else:
            ttl = level or 0
        return ((baddr & _BADDR_MASK) | (ttl & 3) << 37 | (num & 31) << 39 | scale << 44
                | self.geo.tg << 46 | asid << 48)

    def tlbi_run(self, op: str, first: int, step: int, count: int, level: int | None = None,
                 *, user: bool = True) -> None:
        """``count`` TLBIs at ``first``, ``first + step``, ... (each with its KPTI
        copy when ``user``): the per-stride loops, kept tight because they are
        the model's hot path.  ``level`` is a TTL hint as for tlbi_level."""
        hint = 0
        if self.has_ttl and self._hinted(level):
            assert level is not None
            hint = ((level & 3) | self.geo.tg << 2) << 44
        if self.repeat_each:  # every TLBI doubled: the slow path, through tlbi()
            for k in range(count):
                x = ((first + k * step) & ~_TTL_MASK) | hint if hint else first + k * step
                self.tlbi(op, x)
                if user and self.kpti:
                    self.tlbi(op, x | USER_ASID_FLAG)
            return
        why = self.why
        append = self.out.append
        copy = user and self.kpti
        xt = first
        for _ in range(count):
            x = (xt & ~_TTL_MASK) | hint if hint else xt
            append(Tlbi(op, x, why))
            if copy:
                append(Tlbi(op, x | USER_ASID_FLAG, why))
            xt += step

    # -- page-table updates inside a teardown ------------------------------
    def pmd_clear(self) -> None:
        """set_pmd(0): v4.19 always DSB ISHST; v4.20+ nothing for an invalid entry."""
        if not self.p.pmd_barrier_valid_only:
            self.dsb("ishst")

    pud_clear = pmd_clear  # set_pud follows set_pmd in every release

    def pgd_clear(self) -> None:
        """set_pgd(0) / set_p4d(0): always DSB ISHST; v5.4+ then ISB."""
        self.dsb("ishst")
        if self.p.pgtable_isb:
            self.isb()

    # -- TLB invalidation ----------------------------------------------------
    def flush_tlb_all(self) -> None:
        """All releases: DSB ISHST; TLBI VMALLE1IS; DSB ISH; ISB."""
        self.dsb("ishst")
        self.tlbi("vmalle1is")
        self.sync_s1ish()
        self.isb()

    def flush_tlb_mm(self) -> None:
        """All releases: the whole ASID, DSB ISHST; TLBI ASIDE1IS (+copy); DSB ISH."""
        xt = tlbi_vaddr(0, self.asid)
        self.dsb("ishst")
        self.tlbi("aside1is", xt)
        self.tlbi_user("aside1is", xt)
        self.sync_s1ish()

    def flush_tlb_page(self, uaddr: int) -> None:
        """One last-level entry: no TTL hint up to v7.0; from v7.1 (through
        __do_flush_tlb_range with level 3) a level-3 hint under FEAT_TTL."""
        xt = tlbi_vaddr(uaddr, self.asid)
        self.dsb("ishst")
        if self.p.page_flush_ttl:
            self.tlbi_level("vale1is", xt, 3)
            self.tlbi_user_level("vale1is", xt, 3)
        else:
            self.tlbi("vale1is", xt)
            self.tlbi_user("vale1is", xt)
        self.sync_s1ish()

    def flush_tlb_pgtable(self, uaddr: int) -> None:
        """__flush_tlb_pgtable (v4.19 only): a freed table's walk-cache entries.

        No DSB ISHST of its own: the pmd_clear/pud_clear/pgd_clear just before
        issued one.  Removed by the v4.20 series.
        """
        xt = tlbi_vaddr(uaddr, self.asid)
        self.tlbi("vae1is", xt)
        self.tlbi_user("vae1is", xt)
        self.sync_s1ish()

    def flush_tlb_range(self, start: int, end: int, stride: int, last_level: bool,
                        level: int | None) -> None:
        """__flush_tlb_range of the policy's release: user [start, end) of our ASID."""
        if not self.p.gather_flags:
            self._flush_tlb_range_v4_19(start, end, last_level)
        elif not self.p.ttl_and_range:
            self._flush_tlb_range_v4_20(start, end, stride, last_level)
        else:
            self._flush_tlb_range_v5_9(start, end, stride, last_level, level)

    def _flush_tlb_range_v4_19(self, start: int, end: int, last_level: bool) -> None:
        """v4.19: page stride (no stride argument); > 1024 pages: the whole ASID."""
        ps = self.geo.page_shift
        if end - start > MAX_TLBI_OPS_OLD << ps:
            self.flush_tlb_mm()
            return
        op = "vale1is" if last_level else "vae1is"
        addr = tlbi_vaddr(start, self.asid)
        stop = tlbi_vaddr(end, self.asid)
        step = 1 << (ps - 12)
        self.dsb("ishst")
        # for (addr = start; addr < end; addr += step)
        self.tlbi_run(op, addr, step, max(0, -(-(stop - addr) // step)))
        self.sync_s1ish()

    def _flush_tlb_range_v4_20(self, start: int, end: int, stride: int,
                               last_level: bool) -> None:
        """v4.20 (> 1024 * stride: whole ASID), v5.0 (>= PTRS_PER_PTE * stride),
        v5.2 (start/end rounded to the stride first)."""
        if self.p.round_to_stride:
            start -= start % stride
            end = -(-end // stride) * stride
        if self.p.range_cutoff == "1024_gt":
            too_big = end - start > MAX_TLBI_OPS_OLD * stride
        else:
            too_big = end - start >= self.geo.ptrs_per_pte * stride
        if too_big:
            self.flush_tlb_mm()
            return
        op = "vale1is" if last_level else "vae1is"
        addr = tlbi_vaddr(start, self.asid)
        stop = tlbi_vaddr(end, self.asid)
        step = stride >> 12
        self.dsb("ishst")
        self.tlbi_run(op, addr, step, max(0, -(-(stop - addr) // step)))
        self.sync_s1ish()

    def range_limit_excess(self, start: int, end: int, pages: int, stride: int) -> bool:
        """The cut-off of v5.9+ (__flush_tlb_range_limit_excess from v6.13)."""
        if not self.has_range and end - start >= self.geo.ptrs_per_pte * stride:
            return True
        if not self.has_range and self.p.cutoff_dvm_only_without_range:  # v7.1
            return False
        if self.p.range_max_inclusive:  # v6.10
            return pages > MAX_TLBI_RANGE_PAGES
        return pages >= MAX_TLBI_RANGE_PAGES

    def _flush_tlb_range_v5_9(self, start: int, end: int, stride: int, last_level: bool,
                              level: int | None) -> None:
        """v5.9+: rounded range, TTL hints, range TLBIs, the v5.9 cut-off."""
        start -= start % stride
        end = -(-end // stride) * stride
        pages = (end - start) >> self.geo.page_shift
        if self.range_limit_excess(start, end, pages, stride):
            self.flush_tlb_mm()
            if self.p.range_nosync_split:  # v6.9..v7.0: __flush_tlb_range's own DSB ISH
                self.sync_s1ish()
            return
        self.dsb("ishst")
        self.flush_tlb_range_op("vale1is" if last_level else "vae1is", start, pages, stride,
                                self.asid, level, user=True)
        self.sync_s1ish()

    def flush_tlb_range_op(self, op: str, start: int, pages: int, stride: int, asid: int,
                           level: int | None, *, user: bool) -> None:
        """The TLBI loop of v5.9+ (__flush_tlb_range_op from v6.8).

        Without FEAT_TLBIRANGE: one TLBI per stride.  With it, v5.9 issues an
        odd page first and then range ops with SCALE counted up from 0; v6.8
        counts SCALE down from 3 and issues a last odd page at the end; v6.9
        lets NUM reach 31.
        """
        ps = self.geo.page_shift
        step_pages = stride >> ps
        if not self.has_range:  # one TLBI per stride: the common, hot case
            count = -(-pages // step_pages)
            self.tlbi_run(op, tlbi_vaddr(start, asid), stride >> 12, count, level, user=user)
            if pages % step_pages:
                raise RuntimeError("range loop overshot: start/end not aligned to the stride")
            return
        down = self.p.range_loop == "down"
        scale = 3 if down else 0
        # LPA2 (v6.9): the range operand's base is VA[52:16], so a range op must start
        # 64 KiB aligned: single ops until it does
        base_shift = 16 if self.lpa2 else ps
        while pages > 0:
            single = (not self.has_range or (pages == 1 if down else pages % 2 == 1)
                      or (self.lpa2 and start % 0x10000 != 0))
            if single:
                xt = tlbi_vaddr(start, asid)
                self.tlbi_level(op, xt, level)
                if user:
                    self.tlbi_user_level(op, xt, level)
                start += stride
                pages -= step_pages
                continue
            if not 0 <= scale <= 3:
                raise RuntimeError(f"range loop left scale 0..3 with {pages} pages left")
            unit = 5 * scale + 1
            if self.p.range_num_clamp:  # v6.9
                num = (min(pages, range_pages(31, scale)) >> unit) - 1
            else:
                num = ((pages >> unit) & 31) - 1
            if num >= 0:
                xt = self.tlbi_vaddr_range(start >> base_shift, asid, scale, num, level)
                self.tlbi("r" + op, xt)
                if user:
                    self.tlbi_user("r" + op, xt)
                start += range_pages(num, scale) << ps
                pages -= range_pages(num, scale)
            scale += -1 if down else 1
        if pages < 0:
            raise RuntimeError("range loop overshot: start/end not aligned to the stride")

    def flush_tlb_kernel_range(self, start: int, end: int) -> None:
        """Kernel pages [start, end): ASID 0, last level (VAAE1IS in v4.19), then ISB.

        Up to v6.12: > 1024 (v5.0: > PTRS_PER_PTE) pages -> flush_tlb_all, else
        one TLBI per page.  v6.13: rounded, the range loop and its cut-off.
        """
        ps = self.geo.page_shift
        if self.p.kernel_range_loop:
            start -= start % self.geo.page_size
            end = -(-end // self.geo.page_size) * self.geo.page_size
            pages = (end - start) >> ps
            if self.range_limit_excess(start, end, pages, self.geo.page_size):
                self.flush_tlb_all()
                return
            self.dsb("ishst")
            self.flush_tlb_range_op(self.p.kernel_range_op, start, pages, self.geo.page_size,
                                    0, None, user=False)
            self.sync_s1ish()
            self.isb()
            return
        limit = self.geo.ptrs_per_pte if self.p.kernel_cutoff_ptrs else MAX_TLBI_OPS_OLD
        if end - start > limit << ps:
            self.flush_tlb_all()
            return
        addr = tlbi_vaddr(start, 0)
        stop = tlbi_vaddr(end, 0)
        step = 1 << (ps - 12)
        self.dsb("ishst")
        self.tlbi_run(self.p.kernel_range_op, addr, step, max(0, -(-(stop - addr) // step)),
                      user=False)
        self.sync_s1ish()
        self.isb()

    def flush_tlb_kernel_pgtable(self, kaddr: int) -> None:
        """__flush_tlb_kernel_pgtable: TLBI VAAE1IS; DSB ISH; v4.20 adds DSB ISHST
        in front, v5.4 an ISB after."""
        if self.p.kernel_pgtable_ishst:
            self.dsb("ishst")
        self.tlbi("vaae1is", tlbi_vaddr(kaddr, 0))
        self.sync_s1ish()
        if self.p.kernel_pgtable_isb:
            self.isb()

    # -- the mmu_gather hook -------------------------------------------------
    def tlb_get_level(self, g: MmuGather) -> int | None:
        """tlb_get_level (v5.9+): the level of the only cleared_* flag; None: unknown."""
        if self.p.no_ttl_when_freed and g.freed_tables:  # v5.14
            return None
        ptes, pmds, puds, p4ds = g.cleared_ptes, g.cleared_pmds, g.cleared_puds, g.cleared_p4ds
        if ptes and not (pmds or puds or p4ds):
            return 3
        if pmds and not (ptes or puds or p4ds):
            return 2
        if puds and not (ptes or pmds or p4ds):
            return 1
        if self.p.ttl_unknown_constant and p4ds and not (ptes or pmds or puds):
            return 0
        return None

    def tlb_flush(self, g: MmuGather, reason: str, step: int) -> None:
        """arm64 tlb_flush(): turn the gathered range into invalidations.

        v4.19: nothing for fullmm, else a last-level range at page stride (the
        tables were already invalidated one by one).  v4.20+: non-leaf when
        tables were freed, at the unmap stride; fullmm flushes the ASID only
        when tables were freed.
        """
        if not self.p.gather_flags:
            self.why = Why(step, f"{reason} > tlb_flush", g.snapshot(self.geo.page_size, True,
                                                                     None))
            if not g.fullmm:
                self._flush_tlb_range_v4_19(g.start, g.end, True)
            return
        last_level = not g.freed_tables
        stride = 1 << g.unmap_shift()
        level = self.tlb_get_level(g) if self.p.ttl_and_range else None
        self.why = Why(step, f"{reason} > tlb_flush", g.snapshot(stride, last_level, level))
        if g.fullmm:
            if not last_level:
                self.flush_tlb_mm()
            return
        self.flush_tlb_range(g.start, g.end, stride, last_level, level)

