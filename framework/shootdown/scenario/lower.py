"""Lowering a scenario into what the guest executes.

Three products, all pure functions of the :class:`Scenario`:

* :func:`lower` turns every ``munmap`` step into the gather calls the kernel's
  ``unmap_region()`` makes (zap calls in address order, ``tlb_end_vma``'s
  flush, then ``free_pgtables``), so the golden model and the guest work from
  the same list of calls;
* :func:`guest_layout` is the mapping the guest builds before the teardown:
  the file's ``[[map]]``/``[[kmap]]``, each munmap's layout, and what the raw
  steps touch (the pages they clear, a table for each table they free);
* :func:`to_protocol_lines` writes both as the ``SCN .. GO`` command lines of
  ``docs/protocol.md`` (without checksums).

The ``free_pgtables`` walk is a transliteration of ``free_pgd_range`` and its
``free_p?d_range`` helpers (floor/ceiling trimming, 64-bit wrap-around
included), with the folded levels of ``asm-generic/pgtable-nop*.h``: a folded
level's ``p?d_none`` is false, so its free call is made (with its generic
range and flag effects) even though no table exists.
"""

from __future__ import annotations

import bisect
import functools
import itertools
from collections.abc import Iterator
from dataclasses import dataclass

from shootdown.errors import ScenarioError
from shootdown.scenario.geometry import MASK64, Geometry
from shootdown.scenario.types import (
    FlushTlbKernelPgtableStep,
    FlushTlbKernelRangeStep,
    FlushTlbMmStep,
    FlushTlbPageStep,
    FlushTlbRangeStep,
    GatherOp,
    GatherStep,
    KernelMapping,
    Mapping,
    MunmapStep,
    RawFlushStep,
    Scenario,
)


@dataclass(frozen=True)
class Layout:
    """The mappings the guest builds before running the steps."""

    #: user mappings, sorted by address, adjacent runs of one level merged
    user: tuple[Mapping, ...]
    #: kernel pages, sorted and merged
    kernel: tuple[KernelMapping, ...]


@dataclass(frozen=True)
class LoweredStep:
    """One step as the guest and the model execute it."""

    #: step number, from 1
    index: int
    #: the calls: a gather (munmap lowered into one) or a raw flush
    step: GatherStep | RawFlushStep
    #: the kind written in the file ("munmap" for an expanded munmap)
    source_kind: str


@dataclass(frozen=True)
class Lowered:
    """A scenario lowered for execution."""

    layout: Layout
    steps: tuple[LoweredStep, ...]


# --------------------------------------------------------------------------
# layout

def _spans(maps: list[Mapping], geo: Geometry) -> list[tuple[int, int, int]]:
    """(start, end, level) per mapping, sorted; same-level overlaps merged."""
    by_level: dict[int, list[tuple[int, int]]] = {}
    for m in maps:
        by_level.setdefault(m.level, []).append(
            (m.addr, m.addr + m.count * geo.block_size(m.level)))
    out: list[tuple[int, int, int]] = []
    for level, spans in by_level.items():
        spans.sort()
        cur_s, cur_e = spans[0]
        for s, e in spans[1:]:
            if s <= cur_e:
                cur_e = max(cur_e, e)
            else:
                out.append((cur_s, cur_e, level))
                cur_s, cur_e = s, e
        out.append((cur_s, cur_e, level))
    out.sort()
    return out


class _Runs:
    """Sorted, disjoint [start, end) runs (touching ones merged), with bisection."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def add(self, start: int, end: int) -> None:
        i = bisect.bisect_left(self.ends, start)     # first run ending at or after start
        j = bisect.bisect_right(self.starts, end)    # runs starting at or before end
        if i < j:
            start = min(start, self.starts[i])
            end = max(end, self.ends[j - 1])
        self.starts[i:j] = [start]
        self.ends[i:j] = [end]

    def overlaps(self, start: int, end: int) -> bool:
        """Whether any run meets [start, end)."""
        i = bisect.bisect_left(self.starts, end) - 1  # the last run starting before end
        return i >= 0 and self.ends[i] > start

    def gaps(self, start: int, end: int) -> list[tuple[int, int]]:
        """Sub-ranges of [start, end) that no run covers."""
        out: list[tuple[int, int]] = []
        pos = start
        i = bisect.bisect_right(self.ends, start)    # the first run ending after start
        while i < len(self.starts) and self.starts[i] < end:
            if self.starts[i] > pos:
                out.append((pos, self.starts[i]))
            pos = max(pos, self.ends[i])
            i += 1
        if pos < end:
            out.append((pos, end))
        return out


class _LayoutBuilder:
    def __init__(self, scenario: Scenario) -> None:
        self.sc = scenario
        self.geo = scenario.geometry
        self.maps: list[Mapping] = list(scenario.maps)
        self.kmaps: list[KernelMapping] = list(scenario.kmaps)

    def build(self) -> Layout:
        geo = self.geo
        # Leaf entries first: what the steps remove or clear.
        for step in self.sc.steps:
            if isinstance(step, MunmapStep):
                self.maps.extend(step.layout)
            elif isinstance(step, GatherStep):
                for op in step.ops:
                    if op.op == "remove_pte":
                        self.maps.append(Mapping(3, op.addr, op.count))
                    elif op.op == "remove_pmd":
                        self.maps.append(Mapping(2, op.addr, 1))
                    elif op.op == "remove_pud":
                        self.maps.append(Mapping(1, op.addr, 1))
            elif isinstance(step, FlushTlbKernelRangeStep):
                first = step.start - step.start % geo.page_size
                pages = -(-(step.end - first) // geo.page_size)
                self.kmaps.append(KernelMapping(first, pages))
        # Then pages for raw flushes and tables for raw frees, where nothing is yet.
        # The queries go to sorted runs (all levels, and per level) kept up to
        # date as pages are added: linear in the steps and ops, not quadratic.
        self.union = _Runs()
        self.by_level: dict[int, _Runs] = {1: _Runs(), 2: _Runs(), 3: _Runs()}
        for s, e, lvl in _spans(self.maps, geo):
            self.union.add(s, e)
            self.by_level[lvl].add(s, e)
        for i, step in enumerate(self.sc.steps, start=1):
            if isinstance(step, FlushTlbPageStep):
                self.fill(step.addr, step.addr + geo.page_size)
            elif isinstance(step, FlushTlbRangeStep):
                self.fill(step.start, step.end)
            elif isinstance(step, GatherStep):
                for j, op in enumerate(step.ops):
                    self.need_table(op, i, j)
        spans = _spans(self.maps, geo)
        for (_a_s, a_e, a_l), (b_s, _, b_l) in itertools.pairwise(spans):
            if b_s < a_e:
                raise ScenarioError(self.sc.path, f"mappings overlap at {b_s:#x}: level {a_l} "
                                    f"and level {b_l} (one entry cannot be both)", field="map")
        user = tuple(Mapping(lvl, s, (e - s) // geo.block_size(lvl)) for s, e, lvl in spans)
        return Layout(user, _merge_kernel(self.kmaps, geo))

    def _add_pages(self, start: int, end: int) -> None:
        self.maps.append(Mapping(3, start, (end - start) // self.geo.page_size))
        self.union.add(start, end)
        self.by_level[3].add(start, end)

    def fill(self, start: int, end: int) -> None:
        for s, e in self.union.gaps(start, end):
            self._add_pages(s, e)

    def need_table(self, op: GatherOp, step: int, j: int) -> None:
        """A raw free_*_table op needs the table it frees to exist."""
        geo = self.geo
        span = {"free_pte_table": geo.pmd_size,
                "free_pmd_table": geo.pud_size if geo.levels >= 3 else 0,
                "free_pud_table": 1 << geo.p4d_shift if geo.levels >= 4 else 0,
                "free_p4d_table": geo.pgdir_size if geo.levels == 5 else 0}.get(op.op, 0)
        if not span:
            return  # not a free op, or a folded level: no table exists
        inside = {lvl for lvl, runs in self.by_level.items()
                  if runs.overlaps(op.addr, op.addr + span)}
        if op.op == "free_pte_table" and inside - {3}:
            raise ScenarioError(self.sc.path, f"free_pte_table at {op.addr:#x}: that "
                                "entry maps a block, not a PTE table", step=step,
                                field=f"ops[{j}].addr")
        if op.op == "free_pmd_table" and 1 in inside:
            raise ScenarioError(self.sc.path, f"free_pmd_table at {op.addr:#x}: that "
                                "entry maps a PUD block, not a PMD table", step=step,
                                field=f"ops[{j}].addr")
        if not inside:
            self._add_pages(op.addr, op.addr + geo.page_size)


def _merge_kernel(kmaps: list[KernelMapping], geo: Geometry) -> tuple[KernelMapping, ...]:
    spans = sorted((k.addr, k.addr + k.count * geo.page_size) for k in kmaps)
    out: list[KernelMapping] = []
    for s, e in spans:
        if out and s <= out[-1].addr + out[-1].count * geo.page_size:
            last = out[-1]
            new_end = max(e, last.addr + last.count * geo.page_size)
            out[-1] = KernelMapping(last.addr, (new_end - last.addr) // geo.page_size)
        else:
            out.append(KernelMapping(s, (e - s) // geo.page_size))
    return tuple(out)


def guest_layout(scenario: Scenario) -> Layout:
    """The mappings to build before the teardown (see the module docstring)."""
    return _LayoutBuilder(scenario).build()


# --------------------------------------------------------------------------
# munmap -> gather calls

#: The most gather calls one munmap may lower into (zap calls plus the
#: free_pgtables walk's frees).  The model and the guest run every call, so a
#: munmap that frees millions of tables (e.g. all of a 48-bit VA: 2^27 PTE
#: tables at 4K) is refused up front instead of being enumerated.
MAX_LOWERED_OPS = 1 << 16


class _TooManyOps(Exception):
    """A munmap lowers into more than MAX_LOWERED_OPS calls (turned into a ScenarioError)."""


class _Present:
    """Which entries of one table level hold a table, as sorted disjoint runs
    of entry indices (``addr >> shift``): O(runs), not O(tables), so a
    mapping over the whole VA costs one run, and the walk can jump from one
    present entry to the next without visiting the empty ones."""

    def __init__(self, shift: int, spans: list[tuple[int, int]]) -> None:
        self.shift = shift
        runs: list[list[int]] = []
        for s, e in sorted((s >> shift, ((e - 1) >> shift) + 1) for s, e in spans):
            if runs and s <= runs[-1][1]:
                runs[-1][1] = max(runs[-1][1], e)
            else:
                runs.append([s, e])
        self.starts = [r[0] for r in runs]
        self.ends = [r[1] for r in runs]

    def first_from(self, idx: int) -> int | None:
        """The smallest present index >= idx, or None."""
        i = bisect.bisect_right(self.ends, idx)
        if i == len(self.ends):
            return None
        return max(idx, self.starts[i])

    def __contains__(self, idx: int) -> bool:
        i = bisect.bisect_right(self.starts, idx) - 1
        return i >= 0 and idx < self.ends[i]

    def discard(self, idx: int) -> None:
        i = bisect.bisect_right(self.starts, idx) - 1
        if i < 0 or idx >= self.ends[i]:
            return
        s, e = self.starts[i], self.ends[i]
        del self.starts[i], self.ends[i]
        for a, b in ((idx + 1, e), (s, idx)):  # right part first: inserted at i
            if a < b:
                self.starts.insert(i, a)
                self.ends.insert(i, b)


class _Tables:
    """Which page tables exist, by the index of the entry that points at them."""

    def __init__(self, layout: Layout, geo: Geometry) -> None:
        self.geo = geo
        pte: list[tuple[int, int]] = []
        pmd: list[tuple[int, int]] = []
        pud: list[tuple[int, int]] = []
        p4d: list[tuple[int, int]] = []
        for m in layout.user:
            span = (m.addr, m.addr + m.count * geo.block_size(m.level))
            if m.level == 3:
                pte.append(span)
            if geo.levels >= 3 and m.level >= 2:
                pmd.append(span)
            if geo.levels >= 4:
                pud.append(span)
            if geo.levels == 5:
                p4d.append(span)
        self.pte = _Present(geo.pmd_shift, pte)      # PTE tables, one per PMD entry
        self.pmd = _Present(geo.pud_shift, pmd)      # PMD tables (levels >= 3), per PUD entry
        self.pud = _Present(geo.p4d_shift, pud)      # PUD tables (levels >= 4), per P4D entry
        self.p4d = _Present(geo.pgdir_shift, p4d)    # P4D tables (levels == 5), per PGD entry

    # p?d_none: true when the entry holds no table; folded levels never are.
    def pgd_none(self, addr: int) -> bool:
        if self.geo.levels == 5:
            return addr >> self.geo.pgdir_shift not in self.p4d
        return self.geo.levels == 4 and addr >> self.geo.pgdir_shift not in self.pud

    def pud_none(self, addr: int) -> bool:
        return self.geo.levels >= 3 and addr >> self.geo.pud_shift not in self.pmd

    def pmd_none(self, addr: int) -> bool:
        return addr >> self.geo.pmd_shift not in self.pte

    def discard(self, op: GatherOp) -> None:
        table = {"free_pte_table": self.pte, "free_pmd_table": self.pmd,
                 "free_pud_table": self.pud, "free_p4d_table": self.p4d}.get(op.op)
        if table is not None and op.addr % (1 << table.shift) == 0:
            table.discard(op.addr >> table.shift)


def _tail(start: int, end: int, floor: int, ceiling: int, size: int) -> int | None:
    """The floor/ceiling test that ends each free_p?d_range: may the table go?"""
    start &= ~(size - 1)
    if start < floor:
        return None
    if ceiling:
        ceiling &= ~(size - 1)
        if not ceiling:
            return None
    if ((end - 1) & MASK64) > ((ceiling - 1) & MASK64):
        return None
    return start


def _entries(addr: int, end: int, shift: int,
             present: _Present | None) -> Iterator[tuple[int, int]]:
    """The kernel's ``do { next = p?d_addr_end(addr, end); ...; } while (addr = next,
    addr != end)`` loop over [addr, end) (end 0: the top of the 64-bit space),
    yielding (addr, next) for each entry; with ``present``, only for the
    entries that hold a table (the others' ``p?d_none`` skips them), found by
    jumping rather than by visiting every empty entry."""
    top = ((end - 1) & MASK64) + 1
    last = (top - 1) >> shift
    idx = addr >> shift
    while idx <= last:
        if present is not None:
            nxt_idx = present.first_from(idx)
            if nxt_idx is None or nxt_idx > last:
                return
            idx = nxt_idx
        lo = max(idx << shift, addr)
        hi = min((idx + 1) << shift, top)
        yield lo, hi & MASK64
        idx += 1


class _FreeWalk:
    """free_pgd_range() and helpers, emitting the free_*_table calls."""

    def __init__(self, tables: _Tables, ops: list[GatherOp]) -> None:
        self.t = tables
        self.geo = tables.geo
        self.ops = ops

    def emit(self, name: str, addr: int) -> None:
        if len(self.ops) >= MAX_LOWERED_OPS:
            raise _TooManyOps
        op = GatherOp(name, addr)
        self.ops.append(op)
        self.t.discard(op)

    def free_pgd_range(self, addr: int, end: int, floor: int, ceiling: int) -> None:
        pmd = self.geo.pmd_size
        addr &= ~(pmd - 1)
        if addr < floor:
            addr = (addr + pmd) & MASK64
            if not addr:
                return
        if ceiling:
            ceiling &= ~(pmd - 1)
            if not ceiling:
                return
        if ((end - 1) & MASK64) > ((ceiling - 1) & MASK64):
            end -= pmd
        if addr > ((end - 1) & MASK64):
            return
        levels = self.geo.levels
        real = self.t.p4d if levels == 5 else self.t.pud if levels == 4 else None  # pgd_none
        for a, nxt in _entries(addr, end, self.geo.pgdir_shift, real):
            self.free_p4d_range(a, nxt, floor, ceiling)

    def free_p4d_range(self, addr: int, end: int, floor: int, ceiling: int) -> None:
        start = addr
        if self.geo.levels == 5:  # a real p4d level (4K, 52-bit, LPA2): p4d_none skips
            for a, nxt in _entries(addr, end, self.geo.p4d_shift, self.t.pud):
                self.free_pud_range(a, nxt, floor, ceiling)
        else:  # folded: one entry, never none
            self.free_pud_range(addr, end, floor, ceiling)
        at = _tail(start, end, floor, ceiling, self.geo.pgdir_size)
        if at is not None:
            self.emit("free_p4d_table", at)

    def free_pud_range(self, addr: int, end: int, floor: int, ceiling: int) -> None:
        start = addr
        real = self.t.pmd if self.geo.levels >= 3 else None  # pud_none
        for a, nxt in _entries(addr, end, self.geo.pud_shift, real):
            self.free_pmd_range(a, nxt, floor, ceiling)
        at = _tail(start, end, floor, ceiling, 1 << self.geo.p4d_shift)
        if at is not None:
            self.emit("free_pud_table", at)

    def free_pmd_range(self, addr: int, end: int, floor: int, ceiling: int) -> None:
        start = addr
        for a, _ in _entries(addr, end, self.geo.pmd_shift, self.t.pte):  # pmd_none
            self.emit("free_pte_table", a)
        at = _tail(start, end, floor, ceiling, self.geo.pud_size)
        if at is not None:
            self.emit("free_pmd_table", at)


def _zap_ops(step: MunmapStep, geo: Geometry) -> list[GatherOp]:
    """unmap_vmas(): one call per present entry, in address order."""
    blocks = sum(m.count for m in step.layout if m.level != 3)
    if blocks + len(step.layout) > MAX_LOWERED_OPS:
        raise _TooManyOps
    ops: list[GatherOp] = []
    for m in sorted(step.layout, key=lambda m: m.addr):
        if m.level == 3:
            last = ops[-1] if ops else None
            if last and last.op == "remove_pte" and \
                    last.addr + last.count * geo.page_size == m.addr:
                ops[-1] = GatherOp("remove_pte", last.addr, last.count + m.count)
            else:
                ops.append(GatherOp("remove_pte", m.addr, m.count))
        else:
            name = "remove_pmd" if m.level == 2 else "remove_pud"
            size = geo.block_size(m.level)
            ops.extend(GatherOp(name, m.addr + k * size) for k in range(m.count))
    return ops


def lower_munmap(step: MunmapStep, tables: _Tables) -> GatherStep:
    """unmap_region(): gather, zap, tlb_end_vma flush, free_pgtables, finish."""
    ops = _zap_ops(step, tables.geo)
    ops.append(GatherOp("flush"))  # tlb_end_vma(): tlb_flush_mmu_tlbonly, not fullmm
    _FreeWalk(tables, ops).free_pgd_range(step.start, step.end, step.floor, step.ceiling)
    return GatherStep(fullmm=False, ops=tuple(ops))


@functools.lru_cache(maxsize=1024)
def lower(scenario: Scenario) -> Lowered:
    """The layout and the executable steps (munmaps expanded), in order.

    Cached: the guest's lines and the golden model both lower the same
    (frozen, hashable) scenario, and a matrix worker lowers each file of its
    sets once for every policy and injection.  Everything returned is frozen.
    """
    layout = guest_layout(scenario)
    tables = _Tables(layout, scenario.geometry)
    steps: list[LoweredStep] = []
    for i, step in enumerate(scenario.steps, start=1):
        if isinstance(step, MunmapStep):
            try:
                gather = lower_munmap(step, tables)
            except _TooManyOps:
                raise ScenarioError(
                    scenario.path, f"munmap of [{step.start:#x}, {step.end:#x}) lowers into more "
                    f"than {MAX_LOWERED_OPS} gather calls (zaps and page-table frees; the "
                    "limit MAX_LOWERED_OPS): unmap a smaller range", step=i, field="end") from None
            steps.append(LoweredStep(i, gather, "munmap"))
        else:
            if isinstance(step, GatherStep):
                for op in step.ops:
                    tables.discard(op)
            steps.append(LoweredStep(i, step, step.kind))
    return Lowered(layout, tuple(steps))


# --------------------------------------------------------------------------
# protocol

def _op_line(op: GatherOp) -> str:
    if op.op == "flush":
        return "OP name=flush"
    if op.op == "remove_pte":
        return f"OP name=remove_pte addr={op.addr:#x} count={op.count}"
    return f"OP name={op.op} addr={op.addr:#x}"


def _step_line(index: int, step: GatherStep | RawFlushStep) -> str:
    head = f"STEP n={index} kind={step.kind}"
    if isinstance(step, GatherStep):
        return f"{head} fullmm={int(step.fullmm)}"
    if isinstance(step, FlushTlbMmStep):
        return head
    if isinstance(step, FlushTlbPageStep | FlushTlbKernelPgtableStep):
        return f"{head} addr={step.addr:#x}"
    if isinstance(step, FlushTlbRangeStep):
        line = (f"{head} start={step.start:#x} end={step.end:#x} stride={step.stride:#x} "
                f"last_level={int(step.last_level)}")
        # The caller's TTL level, only when the scenario gives one (protocol addition).
        return line if step.level is None else f"{line} level={step.level}"
    return f"{head} start={step.start:#x} end={step.end:#x}"


def to_protocol_lines(scenario: Scenario, *, scn_id: int = 0, policy: str | None = None,
                      inject: str = "none") -> list[str]:
    """The ``SCN`` .. ``GO`` lines for the guest, without checksums.

    ``policy`` defaults to the scenario's own; one of the two must be set.
    The lines carry the calls and the mappings, never the expected answer.
    """
    name = policy or scenario.policy
    if not name:
        raise ScenarioError(scenario.path, "no policy given (set policy = \"vX.Y\" or pass one)",
                            field="policy")
    low = lower(scenario)
    feats = scenario.cpu_features
    lines = [f"SCN id={scn_id} policy={name} granule={scenario.granule} "
             f"va_bits={scenario.va_bits} asid={scenario.asid} kpti={int(scenario.kpti)} "
             f"ttl={int('ttl' in feats)} tlbirange={int('tlbirange' in feats)} "
             f"repeat_tlbi={int('repeat_tlbi' in feats)} inject={inject}"]
    lines += [f"MAP level={m.level} addr={m.addr:#x} count={m.count}" for m in low.layout.user]
    lines += [f"KMAP addr={k.addr:#x} count={k.count}" for k in low.layout.kernel]
    for ls in low.steps:
        lines.append(_step_line(ls.index, ls.step))
        if isinstance(ls.step, GatherStep):
            lines += [_op_line(op) for op in ls.step.ops]
    lines.append("GO")
    return lines
