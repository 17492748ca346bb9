"""Checks of a real kernel's teardown stream that need no model.

A kernel the golden model does not know is still judged by what the
architecture requires of any correct unmap (Arm ARM D8.13 "TLB maintenance",
and the barrier template of ``arch/arm64/include/asm/tlbflush.h``: "DSB
ISHST; TLBI ...IS; DSB ISH" in ``__flush_tlb_range``/``flush_tlb_mm``):

* **coverage**: every page the step unmapped is invalidated by a
  *broadcast* (inner-shareable) TLBI of the workload's ASID: by VA, by
  range (the operand decoded: BaseADDR, NUM, SCALE, TTL, TG), by ASID
  (``aside1is``), or for every ASID (``vmalle1is``, ``vaae1is``...), that is
  *ordered* after the page-table stores (a DSB ISHST, ISH or SY before it)
  and *completed* (a DSB ISH or SY after it) before the step ends;
* **walk caches**: a step that freed page tables also invalidates the walk
  caches over the range: a non-leaf form (``vae1is``, ``rvae1is``) of a VA in
  it, or an ASID-wide or global invalidation, ordered and completed alike;
* **KPTI**: with KPTI on, every page is also covered under the user ASID
  (``asid | 1``, ``__tlbi_user``), the copy the kernel issues for EL0's
  ASID.

Each check is a pure function of the stream (any objects with ``kind``,
``op`` and ``xt``, in execution order: :class:`shootdown.kernel.observe.ObservedOp`)
and the step's facts (:class:`StepFacts`), and returns a
:class:`KernelCheck`; a mismatch is a result with a reason, never an
exception.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

#: TLBI operation -> (broadcast, takes an ASID, leaf only, by range, whole ASID or all)
_OPS: dict[str, tuple[bool, bool, bool, bool, bool]] = {}
for _name, _asid, _leaf, _range, _wide in (
    ("vae1", True, False, False, False), ("vale1", True, True, False, False),
    ("vaae1", False, False, False, False), ("vaale1", False, True, False, False),
    ("rvae1", True, False, True, False), ("rvale1", True, True, True, False),
    ("rvaae1", False, False, True, False), ("rvaale1", False, True, True, False),
    ("aside1", True, False, False, True), ("vmalle1", False, False, False, True),
):
    _OPS[_name] = (False, _asid, _leaf, _range, _wide)
    _OPS[_name + "is"] = (True, _asid, _leaf, _range, _wide)
    _OPS[_name + "os"] = (True, _asid, _leaf, _range, _wide)

#: DSB options that order earlier stores before a broadcast TLBI (ISH or wider)
ORDERING_DSBS = frozenset({"ishst", "ish", "sy", "st", "oshst", "osh"})
#: DSB options that wait for a broadcast TLBI to complete (ISH or wider, all accesses)
COMPLETING_DSBS = frozenset({"ish", "sy", "osh"})
#: TG field (range operand) and TTL[3:2] (by-VA operand) -> granule in bytes
_GRANULES = {1: 4096, 2: 16384, 3: 65536}
#: bit 0 of the ASID: the KPTI user ASID (arch/arm64/include/asm/mmu.h, USER_ASID_BIT 48)
USER_ASID_BIT = 1


class Op(Protocol):
    """What a check reads of an executed instruction."""

    @property
    def kind(self) -> str: ...
    @property
    def op(self) -> str: ...
    @property
    def xt(self) -> int | None: ...


@dataclass(frozen=True)
class StepFacts:
    """What the step did, as the checks need it (from the workload, not from the model)."""

    #: the unmapped range, [start, end), page-aligned
    start: int
    end: int
    #: the kernel's page size (the workload's AT_PAGESZ)
    page_size: int
    #: the workload's ASID (its TTBR1 write; the kernel ASID under KPTI)
    asid: int
    #: KPTI on in this boot
    kpti: bool
    #: the CPU runs with 52-bit VA / LPA2 (TCR_EL1.DS): range operands' base is in 64 KiB units
    lpa2: bool = False
    #: the step surely freed a page table (the range covers a whole table's span)
    tables_freed: bool = False
    #: the level of the leaf entries the step removed (3: pages; 2: 2 MiB blocks with 4K)
    leaf_level: int = 3


@dataclass(frozen=True)
class KernelCheck:
    """One check's result."""

    #: coverage, walk-caches, kpti
    name: str
    #: "pass", "fail", or "skip" (not applicable: why is in ``reason``)
    status: str
    #: one line: what was found, or the first thing that is wrong
    reason: str

    @property
    def passed(self) -> bool:
        """Not a failure."""
        return self.status != "fail"


@dataclass(frozen=True)
class Invalidation:
    """What one TLBI invalidates (decoded operand)."""

    #: the operation
    op: str
    #: inner/outer shareable: reaches every CPU
    broadcast: bool
    #: the ASID it is limited to; None: every ASID
    asid: int | None
    #: the VA range [start, end) it covers; None: the whole ASID (or everything)
    start: int | None
    end: int | None
    #: limited to leaf (last-level) entries: leaves walk caches alone
    leaf_only: bool
    #: the TTL level hint (1-3), None without one
    level: int | None
    #: why the operand invalidates nothing the step needs (granule mismatch...), else ""
    defect: str = ""


def decode_tlbi(op: str, xt: int | None, *, page_size: int, lpa2: bool) -> Invalidation | None:
    """The invalidation a TLBI performs; None for an operation these checks do not know."""
    spec = _OPS.get(op)
    if spec is None:
        return None
    broadcast, has_asid, leaf, by_range, wide = spec
    value = xt or 0
    asid = value >> 48 if has_asid else None
    if wide:
        return Invalidation(op, broadcast, asid, None, None, False, None)
    if by_range:
        tg = (value >> 46) & 3
        scale = (value >> 44) & 3
        num = (value >> 39) & 31
        ttl = (value >> 37) & 3
        granule = _GRANULES.get(tg)
        base_shift = 16 if lpa2 else (granule or 4096).bit_length() - 1
        start = (value & ((1 << 37) - 1)) << base_shift
        defect = "" if granule == page_size else (
            f"TG={tg} ({granule or 'reserved'}) is not the {page_size}-byte granule: "
            "the range invalidates nothing")
        size = (num + 1) << (5 * scale + 1)
        return Invalidation(op, broadcast, asid, start, start + size * (granule or page_size),
                            leaf, ttl or None, defect)
    va = (value & ((1 << 44) - 1)) << 12
    ttl4 = (value >> 44) & 0xF
    defect = ""
    level = None
    if ttl4:
        granule = _GRANULES.get(ttl4 >> 2)
        level = ttl4 & 3
        if granule != page_size:
            defect = (f"TTL={ttl4:#x} names the {granule or 'reserved'} granule, not "
                      f"{page_size}: may invalidate nothing")
    return Invalidation(op, broadcast, asid, va, va + 1, leaf, level, defect)


def _tlbi(ops: Sequence[Op], facts: StepFacts) -> list[tuple[int, Invalidation | None, Op]]:
    return [(i, decode_tlbi(o.op, o.xt, page_size=facts.page_size, lpa2=facts.lpa2), o)
            for i, o in enumerate(ops) if o.kind == "tlbi"]


def _barriers(ops: Sequence[Op], i: int) -> str:
    """Why the TLBI at index ``i`` is not properly fenced ("" when it is)."""
    before = any(o.kind == "dsb" and o.op in ORDERING_DSBS for o in ops[:i])
    after = any(o.kind == "dsb" and o.op in COMPLETING_DSBS for o in ops[i + 1:])
    if not before:
        return "no DSB ISHST (or ISH/SY) before it to order the page-table stores"
    if not after:
        return "no DSB ISH (or SY) after it: not completed before the step ended"
    return ""


def _covers(inv: Invalidation, asid: int, lo: int, hi: int, *, leaf_level: int,
            walk: bool) -> str:
    """Why ``inv`` does not invalidate [lo, hi) of ``asid`` ("" when it does)."""
    if inv.defect:  # its range means nothing (another granule's units)
        return f"{inv.op}: {inv.defect}"
    if inv.start is not None and inv.end is not None and (inv.end <= lo or inv.start >= hi):
        return f"{inv.op} covers [{inv.start:#x}, {inv.end:#x})"
    if not inv.broadcast:
        return f"{inv.op} is local (not inner-shareable): other CPUs keep the entry"
    if inv.asid is not None and inv.asid != asid:
        return f"{inv.op} of ASID {inv.asid}, not {asid}"
    if walk and inv.leaf_only:
        return f"{inv.op} is leaf-only: walk caches are kept"
    if not walk and inv.start is not None and inv.level is not None and \
            inv.level != leaf_level:
        return f"{inv.op}: TTL level {inv.level}, the leaves are at level {leaf_level}"
    return ""


def leaf_entry_size(page_size: int, leaf_level: int) -> int:
    """The VA span of one leaf entry: a page at level 3, a block at level 2 (2 MiB with
    4K pages, 32 MiB with 16K, 512 MiB with 64K): page_size / 8 entries per table level."""
    shift = page_size.bit_length() - 1
    return page_size << ((3 - leaf_level) * (shift - 3))


def _cover_pages(ops: Sequence[Op], facts: StepFacts, asid: int, name: str) -> KernelCheck:
    tlbis = _tlbi(ops, facts)
    unknown = [o.op for _, inv, o in tlbis if inv is None]
    # One TLB entry per leaf: a TLBI by VA of any address a block translates removes the
    # block's entry (Arm ARM D8.13: by-VA maintenance affects the entries "used for the
    # translation of" that address), so with PMD blocks only (THP) each block is covered
    # by a TLBI anywhere in it -- the kernel flushes them with a PMD_SIZE stride.
    unit = leaf_entry_size(facts.page_size, facts.leaf_level)
    pages = range(facts.start - facts.start % unit, facts.end, unit)
    if not pages:
        return KernelCheck(name, "skip", "the step unmapped no page")
    used: set[int] = set()
    for page in pages:
        misses: list[str] = []
        found = False
        for i, inv, _ in tlbis:
            if inv is None:
                continue
            why = _covers(inv, asid, page, page + unit,
                          leaf_level=facts.leaf_level, walk=False)
            if not why:
                why = _barriers(ops, i)
            if not why:
                found = True
                used.add(i)
                break
            if not why.startswith(f"{inv.op} covers"):
                misses.append(f"#{i} {why}")
        if not found:
            near = "; ".join(misses[:3]) if misses else "no TLBI of it at all"
            extra = f" (unknown TLBIs: {', '.join(unknown)})" if unknown else ""
            return KernelCheck(name, "fail", f"page {page:#x} (ASID {asid}) is not invalidated "
                               f"by a fenced broadcast TLBI: {near}{extra}")
    what = "pages" if unit == facts.page_size else f"{unit >> 20} MiB blocks"
    return KernelCheck(name, "pass", f"{len(pages)} {what} of ASID {asid} invalidated by "
                       f"{len(used)} fenced broadcast TLBI(s)")


def check_coverage(ops: Sequence[Op], facts: StepFacts) -> KernelCheck:
    """Every page of [start, end) invalidated, broadcast, for the workload's ASID, fenced."""
    return _cover_pages(ops, facts, facts.asid, "coverage")


def check_kpti(ops: Sequence[Op], facts: StepFacts) -> KernelCheck:
    """With KPTI on, every page is covered under the user ASID (``asid | 1``) too."""
    if not facts.kpti:
        return KernelCheck("kpti", "skip", "KPTI is off in this boot: no user-ASID copy needed")
    return _cover_pages(ops, facts, facts.asid | USER_ASID_BIT, "kpti")


def check_walk_caches(ops: Sequence[Op], facts: StepFacts) -> KernelCheck:
    """A table-freeing step invalidates walk caches over its range (non-leaf or ASID-wide)."""
    name = "walk-caches"
    if not facts.tables_freed:
        return KernelCheck(name, "skip", "the range covers no whole page table: freeing one is "
                           "not certain")
    asids = [facts.asid] + ([facts.asid | USER_ASID_BIT] if facts.kpti else [])
    reasons: list[str] = []
    for asid in asids:
        hit = False
        for i, inv, _ in _tlbi(ops, facts):
            if inv is None:
                continue
            why = _covers(inv, asid, facts.start, facts.end, leaf_level=facts.leaf_level,
                          walk=True) or _barriers(ops, i)
            if not why:
                hit = True
                break
            if not why.startswith(f"{inv.op} covers"):
                reasons.append(f"#{i} {why}")
        if not hit:
            near = "; ".join(reasons[:3]) if reasons else "no TLBI at all"
            return KernelCheck(name, "fail", f"tables were freed under [{facts.start:#x}, "
                               f"{facts.end:#x}) but no fenced non-leaf or ASID-wide TLBI of "
                               f"ASID {asid} invalidates the walk caches: {near}")
    return KernelCheck(name, "pass", "walk caches invalidated for ASID " +
                       " and ".join(str(a) for a in asids))


def run_checks(ops: Sequence[Op], facts: StepFacts) -> tuple[KernelCheck, ...]:
    """Every model-free check of one step, in a fixed order."""
    return (check_coverage(ops, facts), check_walk_caches(ops, facts), check_kpti(ops, facts))
