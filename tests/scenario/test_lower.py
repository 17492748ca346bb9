"""Lowering: munmap -> gather calls (free_pgtables walk), guest layout, protocol lines."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shootdown.errors import ScenarioError
from shootdown.scenario import (
    GatherOp,
    GatherStep,
    Geometry,
    KernelMapping,
    Mapping,
    guest_layout,
    load_scenario,
    load_scenario_text,
    lower,
    parse_scenario,
    to_protocol_lines,
)
from shootdown.scenario.geometry import GRANULE_VA_BITS
from shootdown.scenario.types import MunmapStep, Scenario

ROOT = Path(__file__).resolve().parents[2]
EX = ROOT / "docs" / "examples"


def munmap(start: int, end: int, *, floor: int | None = None, ceiling: int | None = None,
           granule: str = "4k", va_bits: int = 48, extra: str = "") -> GatherStep:
    fields = f"start = {start:#x}\nend = {end:#x}\n"
    if floor is not None:
        fields += f"floor = {floor:#x}\n"
    if ceiling is not None:
        fields += f"ceiling = {ceiling:#x}\n"
    sc = load_scenario_text(f'granule = "{granule}"\nva_bits = {va_bits}\n{extra}'
                            f'[[step]]\nkind = "munmap"\n{fields}')
    step = lower(sc).steps[0].step
    assert isinstance(step, GatherStep)
    return step


def test_munmap_of_one_pte_table_between_close_neighbours_frees_only_it() -> None:
    step = munmap(0x40000000, 0x40200000, floor=0x3FE00000, ceiling=0x40400000)
    assert step.ops == (GatherOp("remove_pte", 0x40000000, 512), GatherOp("flush"),
                        GatherOp("free_pte_table", 0x40000000))


def test_partial_tables_shared_with_neighbours_are_kept() -> None:
    step = munmap(0x40100000, 0x40300000)  # floor/ceiling default to start/end
    assert step.ops == (GatherOp("remove_pte", 0x40100000, 512), GatherOp("flush"))
    step = munmap(0x40100000, 0x40300000, floor=0x40000000, ceiling=0x40400000)
    assert step.ops[2:] == (GatherOp("free_pte_table", 0x40000000),
                            GatherOp("free_pte_table", 0x40200000))


def test_full_teardown_frees_every_level_including_the_folded_p4d() -> None:
    step = munmap(0x1000, 0x2000, floor=0, ceiling=0)
    assert step.ops == (GatherOp("remove_pte", 0x1000, 1), GatherOp("flush"),
                        GatherOp("free_pte_table", 0), GatherOp("free_pmd_table", 0),
                        GatherOp("free_pud_table", 0), GatherOp("free_p4d_table", 0))


@pytest.mark.parametrize(("granule", "va_bits", "tail"), [
    # 4 levels: the PUD table spans 512G, not freed; the PMD table (1G) is
    ("4k", 48, ("free_pmd_table",)),
    # 3 levels: PUD folded; its free and the p4d one follow the 1G PMD table's
    ("4k", 39, ("free_pmd_table", "free_pud_table", "free_p4d_table")),
    # 16K/47: the PMD table spans 64G: kept
    ("16k", 47, ()),
])
def test_aligned_1g_munmap_per_configuration(granule: str, va_bits: int,
                                             tail: tuple[str, ...]) -> None:
    step = munmap(0x40000000, 0x80000000, granule=granule, va_bits=va_bits)
    names = [op.op for op in step.ops]
    pmd = {"4k": 1 << 21, "16k": 1 << 25}[granule]
    assert names[:2] == ["remove_pte", "flush"]
    assert names.count("free_pte_table") == (1 << 30) // pmd
    assert tuple(n for n in names if n not in ("remove_pte", "flush", "free_pte_table")) == tail


def test_two_level_configuration_calls_the_folded_frees_per_top_entry() -> None:
    step = munmap(0x40000000, 0x60000000, granule="64k", va_bits=42)   # one 512M entry
    assert step.ops[2:] == (GatherOp("free_pte_table", 0x40000000),
                            GatherOp("free_pmd_table", 0x40000000),
                            GatherOp("free_pud_table", 0x40000000),
                            GatherOp("free_p4d_table", 0x40000000))


def test_a_table_freed_by_one_step_is_not_freed_again() -> None:
    sc = load_scenario(EX / "munmap-2m.toml")
    text = (EX / "munmap-2m.toml").read_text()
    twice = load_scenario_text(text + text[text.index("[[step]]"):])
    steps = lower(twice).steps
    assert steps[0].step == lower(sc).steps[0].step
    assert steps[1].step == GatherStep(False, (GatherOp("remove_pte", 0x40000000, 512),
                                               GatherOp("flush")))


def test_zap_order_and_blocks_in_the_thp_example() -> None:
    step = lower(load_scenario(EX / "thp.toml")).steps[0].step
    assert isinstance(step, GatherStep)
    assert step.ops == (GatherOp("remove_pte", 0x200000000, 16),
                        GatherOp("remove_pmd", 0x200200000), GatherOp("remove_pmd", 0x200400000),
                        GatherOp("remove_pte", 0x2007FF000, 1), GatherOp("flush"),
                        GatherOp("free_pte_table", 0x200000000),
                        GatherOp("free_pte_table", 0x200600000))


def test_protocol_lines_of_the_basic_example() -> None:
    lines = to_protocol_lines(load_scenario(EX / "basic.toml"), scn_id=7, policy="v4.20")
    assert lines == [
        "SCN id=7 policy=v4.20 granule=4k va_bits=48 asid=42 kpti=0 ttl=0 tlbirange=0 "
        "repeat_tlbi=0 inject=none",
        "MAP level=3 addr=0x400000 count=512",
        "MAP level=2 addr=0x800000 count=1",
        "KMAP addr=0xffff000008000000 count=16",
        "STEP n=1 kind=gather fullmm=0",
        "OP name=remove_pte addr=0x400000 count=512",
        "OP name=remove_pmd addr=0x800000",
        "OP name=free_pte_table addr=0x400000",
        "OP name=flush",
        "STEP n=2 kind=flush_tlb_kernel_range start=0xffff000008000000 end=0xffff000008010000",
        "STEP n=3 kind=flush_tlb_page addr=0x400000",
        "GO",
    ]


def test_protocol_lines_of_a_munmap_carry_the_lowered_calls() -> None:
    sc = load_scenario(EX / "munmap-2m.toml")
    assert to_protocol_lines(sc, policy="v6.19", inject="skip_dsb") == [
        "SCN id=0 policy=v6.19 granule=4k va_bits=48 asid=42 kpti=0 ttl=0 tlbirange=0 "
        "repeat_tlbi=0 inject=skip_dsb",
        "MAP level=3 addr=0x40000000 count=512",
        "STEP n=1 kind=gather fullmm=0",
        "OP name=remove_pte addr=0x40000000 count=512",
        "OP name=flush",
        "OP name=free_pte_table addr=0x40000000",
        "GO",
    ]
    with pytest.raises(ScenarioError, match="no policy given"):
        to_protocol_lines(sc)


def test_layout_maps_what_raw_steps_touch() -> None:
    sc = load_scenario_text(
        '[[map]]\nlevel = 2\naddr = 0x200000\ncount = 1\n'
        '[[step]]\nkind = "gather"\nops = [ { op = "free_pte_table", addr = 0x600000 } ]\n'
        '[[step]]\nkind = "flush_tlb_range"\nstart = 0x0\nend = 0x400000\n'
        '[[step]]\nkind = "flush_tlb_kernel_range"\nstart = 0xffff000000001000\n'
        'end = 0xffff000000003000\n')
    lay = guest_layout(sc)
    # [0x200000, 0x400000) is already a block: only the gap gets pages
    assert lay.user == (Mapping(3, 0, 512), Mapping(2, 0x200000, 1), Mapping(3, 0x600000, 1))
    assert lay.kernel == (KernelMapping(0xFFFF000000001000, 2),)


def test_layout_conflicts_are_reported() -> None:
    sc = load_scenario_text('[[map]]\nlevel = 2\naddr = 0x200000\n'
                            '[[step]]\nkind = "gather"\n'
                            'ops = [ { op = "remove_pte", addr = 0x200000 } ]\n')
    with pytest.raises(ScenarioError, match="mappings overlap at 0x200000"):
        guest_layout(sc)
    sc = load_scenario_text('[[map]]\nlevel = 2\naddr = 0x200000\n'
                            '[[step]]\nkind = "gather"\n'
                            'ops = [ { op = "free_pte_table", addr = 0x200000 } ]\n')
    with pytest.raises(ScenarioError, match=r"step 1: ops\[0\]\.addr: free_pte_table at 0x200000"):
        guest_layout(sc)


# --- property: free_pgtables frees exactly the tables between floor and ceiling -----


GEOMETRIES = [Geometry(g, v) for g, vs in GRANULE_VA_BITS.items() for v in vs]


@st.composite
def munmaps(draw: st.DrawFn) -> tuple[Geometry, int, int, int, int]:
    geo = draw(st.sampled_from(GEOMETRIES))
    # a window of two top-level-table spans below the PUD table's, in pages
    span = 2 * max(geo.pud_size, 8 * geo.pmd_size)
    pages = span // geo.page_size
    a = draw(st.integers(0, pages - 1))
    b = draw(st.integers(a + 1, min(pages, a + draw(st.sampled_from([1, 700, pages])))))
    f = draw(st.integers(0, a))
    c = draw(st.one_of(st.just(0), st.integers(b, pages + 4)))
    ps = geo.page_size
    return geo, a * ps, b * ps, f * ps, c * ps


@settings(max_examples=200, deadline=None)
@given(munmaps())
def test_munmap_frees_exactly_the_tables_inside_floor_and_ceiling(
        case: tuple[Geometry, int, int, int, int]) -> None:
    geo, start, end, floor, ceiling = case
    sc = parse_scenario({"granule": geo.granule, "va_bits": geo.va_bits,
                         "step": [{"kind": "munmap", "start": start, "end": end,
                                   "floor": floor, "ceiling": ceiling}]})
    step = lower(sc).steps[0].step
    assert isinstance(step, GatherStep)
    top = ceiling or geo.task_size

    def expected(size: int) -> set[int]:
        first = start - start % size
        return {x for x in range(first, end, size) if floor <= x and x + size <= top}

    freed = {name: {op.addr for op in step.ops if op.op == name}
             for name in ("free_pte_table", "free_pmd_table", "free_pud_table")}
    assert freed["free_pte_table"] == expected(geo.pmd_size)
    if geo.levels >= 3:
        assert freed["free_pmd_table"] == expected(geo.pud_size)
    if geo.levels == 4:
        assert freed["free_pud_table"] == expected(geo.pgdir_size)
    # post-order: a table goes after every table below it
    for k, op in enumerate(step.ops):
        span = {"free_pmd_table": geo.pud_size, "free_pud_table": geo.pgdir_size}.get(op.op)
        if span and geo.levels >= (3 if op.op == "free_pmd_table" else 4):
            later = [o for o in step.ops[k + 1:] if o.op == "free_pte_table"]
            assert not any(op.addr <= o.addr < op.addr + span for o in later)


def test_lowering_and_the_model_are_computed_once_per_scenario() -> None:
    """The guest's lines and the golden model share one lowering, and the
    model one run per (scenario, policy): whatever the injection, and handing
    out a dict the caller may change without touching the next caller's."""
    from shootdown.session import Job, expected_steps

    sc = load_scenario(EX / "basic.toml")
    assert lower(sc) is lower(load_scenario(EX / "basic.toml"))  # equal files, one lowering
    first = expected_steps(Job(sc, "v4.20"))
    first.clear()
    again = expected_steps(Job(sc, "v4.20", "skip_dsb_ish"))
    assert again and again == expected_steps(Job(sc, "v4.20"))
    assert again != expected_steps(Job(sc, "v4.19"))


# --- property: the jumping walk equals the entry-by-entry walk (issue 11) ------------
#
# The lowering keeps tables as runs of entry indices and jumps from one present
# table to the next; this reference is the kernel's loops written the slow way
# (a set of table addresses, every entry visited), on ranges small enough for it.

_M64 = (1 << 64) - 1


def _reference_lowering(sc: Scenario) -> list[tuple[GatherOp, ...]]:
    geo = sc.geometry
    layout = guest_layout(sc)
    pte: set[int] = set()
    pmd: set[int] = set()
    pud: set[int] = set()
    for m in layout.user:
        end = m.addr + m.count * geo.block_size(m.level)
        if m.level == 3:
            pte.update(range(m.addr - m.addr % geo.pmd_size, end, geo.pmd_size))
        if geo.levels >= 3 and m.level >= 2:
            pmd.update(range(m.addr - m.addr % geo.pud_size, end, geo.pud_size))
        if geo.levels == 4:
            pud.update(range(m.addr - m.addr % geo.pgdir_size, end, geo.pgdir_size))
    sets = {"free_pte_table": pte, "free_pmd_table": pmd, "free_pud_table": pud}
    ops: list[GatherOp] = []

    def emit(name: str, addr: int) -> None:
        ops.append(GatherOp(name, addr))
        sets.get(name, set()).discard(addr)

    def addr_end(addr: int, end: int, size: int) -> int:
        b = ((addr + size) & ~(size - 1)) & _M64
        return b if ((b - 1) & _M64) < ((end - 1) & _M64) else end

    def tail(start: int, end: int, floor: int, ceiling: int, size: int) -> int | None:
        start &= ~(size - 1)
        if start < floor:
            return None
        if ceiling:
            ceiling &= ~(size - 1)
            if not ceiling:
                return None
        return None if ((end - 1) & _M64) > ((ceiling - 1) & _M64) else start

    def loop(addr: int, end: int, size: int) -> list[tuple[int, int]]:
        out = []
        while True:
            nxt = addr_end(addr, end, size)
            out.append((addr, nxt))
            addr = nxt
            if addr == end:
                return out

    def pmd_range(addr: int, end: int, floor: int, ceiling: int) -> None:
        for a, _ in loop(addr, end, geo.pmd_size):
            if a - a % geo.pmd_size in pte:
                emit("free_pte_table", a)
        at = tail(addr, end, floor, ceiling, geo.pud_size)
        if at is not None:
            emit("free_pmd_table", at)

    def pud_range(addr: int, end: int, floor: int, ceiling: int) -> None:
        for a, n in loop(addr, end, geo.pud_size):
            if geo.levels < 3 or a - a % geo.pud_size in pmd:
                pmd_range(a, n, floor, ceiling)
        at = tail(addr, end, floor, ceiling, geo.pgdir_size)
        if at is not None:
            emit("free_pud_table", at)

    def pgd_range(addr: int, end: int, floor: int, ceiling: int) -> None:
        size = geo.pmd_size
        addr &= ~(size - 1)
        if addr < floor:
            addr = (addr + size) & _M64
            if not addr:
                return
        if ceiling:
            ceiling &= ~(size - 1)
            if not ceiling:
                return
        if ((end - 1) & _M64) > ((ceiling - 1) & _M64):
            end -= size
        if addr > ((end - 1) & _M64):
            return
        for a, n in loop(addr, end, geo.pgdir_size):
            if geo.levels < 4 or a - a % geo.pgdir_size in pud:
                pud_range(a, n, floor, ceiling)
                at = tail(a, n, floor, ceiling, geo.pgdir_size)
                if at is not None:
                    emit("free_p4d_table", at)

    steps: list[tuple[GatherOp, ...]] = []
    for step in sc.steps:
        if isinstance(step, MunmapStep):
            ops = []
            for op in lower_munmap_zaps(step, geo):
                ops.append(op)
            ops.append(GatherOp("flush"))
            pgd_range(step.start, step.end, step.floor, step.ceiling)
            steps.append(tuple(ops))
    return steps


def lower_munmap_zaps(step: MunmapStep, geo: Geometry) -> list[GatherOp]:
    """The zap calls (not under test here: the walk is)."""
    from shootdown.scenario.lower import _zap_ops

    return _zap_ops(step, geo)


@st.composite
def sparse_munmaps(draw: st.DrawFn) -> dict[str, object]:
    geo = draw(st.sampled_from(GEOMETRIES))
    unit = geo.pmd_size
    window = 3 * max(geo.pgdir_size if geo.levels == 4 else geo.pud_size, 8 * unit) // unit
    maps = []
    used: set[int] = set()
    for _ in range(draw(st.integers(1, 6))):
        k = draw(st.integers(0, window - 1))
        if k in used:
            continue
        used.add(k)
        if draw(st.booleans()):
            maps.append({"level": 2, "addr": k * unit, "count": 1})
        else:
            pages = unit // geo.page_size
            off = draw(st.integers(0, pages - 1))
            maps.append({"level": 3, "addr": k * unit + off * geo.page_size,
                         "count": draw(st.integers(1, pages - off))})
    steps = []
    for _ in range(draw(st.integers(1, 2))):
        a = draw(st.integers(0, window - 1))
        b = draw(st.integers(a + 1, window))
        steps.append({"kind": "munmap", "start": a * unit, "end": b * unit,
                      "layout": [m for m in maps if a * unit <= m["addr"] < b * unit
                                 and m["addr"] + m["count"] * geo.block_size(m["level"])
                                 <= b * unit],
                      "floor": draw(st.sampled_from([0, a * unit])),
                      "ceiling": draw(st.sampled_from([0, b * unit]))})
    return {"granule": geo.granule, "va_bits": geo.va_bits, "map": maps, "step": steps}


@settings(max_examples=300, deadline=None)
@given(sparse_munmaps())
def test_jumping_free_walk_equals_the_entry_by_entry_walk(data: dict[str, object]) -> None:
    try:
        sc = parse_scenario(data)
        want = _reference_lowering(sc)
    except ScenarioError:
        return  # e.g. a block and pages in one entry: not a layout to walk
    got = [ls.step.ops for ls in lower(sc).steps if isinstance(ls.step, GatherStep)]
    assert got == want


# --- the layout: raw steps fill what is missing, linear in the steps (issue 11) ------

def _reference_fill(sc: Scenario) -> set[tuple[int, int, int]]:
    """Pages every raw flush and free needs, added one step at a time by re-scanning
    every mapping (the quadratic original), as (level, start, end) of merged runs."""
    from shootdown.scenario.types import FlushTlbPageStep, FlushTlbRangeStep

    geo = sc.geometry
    spans = [(m.addr, m.addr + m.count * geo.block_size(m.level), m.level) for m in sc.maps]
    for step in sc.steps:
        if isinstance(step, GatherStep):
            for op in step.ops:
                if op.op == "remove_pte":
                    spans.append((op.addr, op.addr + op.count * geo.page_size, 3))
    for step in sc.steps:
        ranges: list[tuple[int, int]] = []
        if isinstance(step, FlushTlbPageStep):
            ranges = [(step.addr, step.addr + geo.page_size)]
        elif isinstance(step, FlushTlbRangeStep):
            ranges = [(step.start, step.end)]
        elif isinstance(step, GatherStep):
            ranges = [(op.addr, op.addr + geo.pmd_size) for op in step.ops
                      if op.op == "free_pte_table"]
            for a, b in ranges:  # a free needs one page in its span if nothing is there
                if not any(s < b and e > a for s, e, _ in spans):
                    spans.append((a, a + geo.page_size, 3))
            continue
        for a, b in ranges:
            covered = sorted((s, e) for s, e, _ in spans if s < b and e > a)
            pos = a
            for s, e in covered:
                if s > pos:
                    spans.append((pos, s, 3))
                pos = max(pos, e)
            if pos < b:
                spans.append((pos, b, 3))
    pages = sorted(s for s in spans if s[2] == 3)
    merged: list[list[int]] = []
    for s, e, _ in pages:
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return {(3, s, e) for s, e in merged}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["page", "range", "free", "remove"]),
                          st.integers(0, 63), st.integers(1, 40)), min_size=1, max_size=12))
def test_layout_fill_equals_the_rescanning_reference(steps: list[tuple[str, int, int]]) -> None:
    page, pmd = 0x1000, 0x200000
    body = ""
    for kind, k, n in steps:
        addr = 0x40000000 + k * 0x10000
        if kind == "page":
            body += f'[[step]]\nkind = "flush_tlb_page"\naddr = {addr:#x}\n'
        elif kind == "range":
            body += (f'[[step]]\nkind = "flush_tlb_range"\nstart = {addr:#x}\n'
                     f"end = {addr + n * page:#x}\n")
        elif kind == "free":
            at = addr - addr % pmd
            body += (f'[[step]]\nkind = "gather"\n'
                     f'ops = [{{ op = "free_pte_table", addr = {at:#x} }}]\n')
        else:
            body += (f'[[step]]\nkind = "gather"\n'
                     f'ops = [{{ op = "remove_pte", addr = {addr:#x}, count = {n} }}]\n')
    sc = load_scenario_text(body)
    geo = sc.geometry
    got = {(m.level, m.addr, m.addr + m.count * geo.page_size) for m in guest_layout(sc).user}
    assert got == _reference_fill(sc)


def test_many_raw_frees_lay_out_in_linear_time() -> None:
    """20,000 free_pte_table ops took 84 s (every op re-sorted every mapping); the
    bound only tells that regression (quadratic) from load on the machine."""
    import time

    ops = ", ".join(f'{{ op = "free_pte_table", addr = {i << 21:#x} }}' for i in range(20000))
    sc = load_scenario_text(f'[[step]]\nkind = "gather"\nops = [{ops}]\n')
    t0 = time.process_time()
    layout = guest_layout(sc)
    assert time.process_time() - t0 < 20
    assert len(layout.user) == 20000
