"""Property tests over random gathers, every policy, granule and VA size.

The properties are the barrier rules of docs/policies.md, checked on the
model's output for inputs nobody worked out by hand:

* every entry removed in a gather is invalidated, for the right ASID (and
  its KPTI twin), after its removal and before the gather ends, by a TLBI
  whose address lies in it, a range TLBI covering it, or an ASID/all flush;
* no TLBI comes before a DSB that follows the last page-table change;
* every run of TLBIs is completed by a DSB ISH;
* v4.20 never issues more DSB ISH than v4.19 on the same scenario.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shootdown.insn import USER_ASID_FLAG, decode_operand
from shootdown.model import POLICIES, Dsb, Instruction, Tlbi
from shootdown.model.arm64 import Arm64
from shootdown.model.gather import MmuGather
from shootdown.scenario import GatherOp, Geometry
from shootdown.scenario.geometry import GRANULE_VA_BITS

GEOMETRIES = [Geometry(g, v) for g, vs in GRANULE_VA_BITS.items() for v in vs]


@dataclass
class Case:
    geo: Geometry
    ops: list[GatherOp]
    fullmm: bool
    asid: int
    kpti: bool
    features: frozenset[str]


@st.composite
def cases(draw: st.DrawFn) -> Case:
    geo = draw(st.sampled_from(GEOMETRIES))
    base = 1 << 30 if geo.task_size > 1 << 34 else 0   # stay inside the VA size
    pmd = geo.pmd_size
    n_pmds = 48
    op_strategies = [
        st.builds(lambda i, c: GatherOp("remove_pte", base + i * geo.page_size, c),
                  st.integers(0, n_pmds * geo.ptrs_per_pte - 700), st.integers(1, 700)),
        st.builds(lambda i: GatherOp("remove_pmd", base + i * pmd), st.integers(0, n_pmds - 1)),
        st.builds(lambda i: GatherOp("free_pte_table", base + i * pmd),
                  st.integers(0, n_pmds - 1)),
        st.just(GatherOp("flush")),
    ]
    if geo.levels >= 3 and base % geo.pud_size == 0:
        op_strategies.append(st.just(GatherOp("free_pmd_table", base)))
    if geo.pud_blocks:
        op_strategies.append(st.just(GatherOp("remove_pud", base)))
    ops = draw(st.lists(st.one_of(op_strategies), min_size=1, max_size=12))
    return Case(geo, ops, draw(st.booleans()), draw(st.integers(0, 0xFFFF)), draw(st.booleans()),
                frozenset(draw(st.sets(st.sampled_from(["ttl", "tlbirange"])))))


def execute(case: Case, policy: str) -> tuple[list[Instruction], list[int]]:
    """Run one gather; also return where in the output each op started."""
    out: list[Instruction] = []
    arm = Arm64(POLICIES[policy], case.geo, asid=case.asid, kpti=case.kpti,
                features=case.features, out=out)
    g = MmuGather(arm, case.fullmm, 1)
    starts = []
    for op in case.ops:
        starts.append(len(out))
        if op.op == "flush":
            g.flush()
        elif op.op == "remove_pte":
            g.remove_pte(op.addr, op.count)
        else:
            getattr(g, op.op)(op.addr)
    g.finish()
    return out, starts


def covers(ins: Instruction, asid: int, lo: int, hi: int, page_shift: int) -> bool:
    """Whether ``ins`` invalidates a user entry mapping [lo, hi) for ``asid``."""
    if not isinstance(ins, Tlbi):
        return False
    if ins.op == "vmalle1is":
        return True
    assert ins.xt is not None
    f = decode_operand(ins.op, ins.xt)
    if f["asid"] != asid or ins.op in ("vaae1is", "vaale1is", "rvaae1is", "rvaale1is"):
        return False
    if ins.op == "aside1is":
        return True
    if ins.op.startswith("r"):
        return f["va"] < hi and f["va"] + (f["pages"] << page_shift) > lo
    return lo <= f["va"] < hi


def removed_entries(case: Case) -> list[tuple[int, int, int]]:
    """(op index, lo, hi) per removed leaf entry (pages of a run checked at both ends)."""
    geo = case.geo
    entries = []
    for i, op in enumerate(case.ops):
        if op.op == "remove_pte":
            last = op.addr + (op.count - 1) * geo.page_size
            entries += [(i, op.addr, op.addr + geo.page_size), (i, last, last + geo.page_size)]
        elif op.op == "remove_pmd":
            entries.append((i, op.addr, op.addr + geo.pmd_size))
        elif op.op == "remove_pud":
            entries.append((i, op.addr, op.addr + geo.block_size(1)))
    return entries


SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(cases(), st.sampled_from(list(POLICIES)))
def test_every_removed_entry_is_invalidated_for_its_asid(case: Case, policy: str) -> None:
    out, starts = execute(case, policy)
    if case.fullmm:
        return  # exit/execve: the ASID allocator invalidates before reuse
    asids = {case.asid} | ({case.asid | 1} if case.kpti else set())
    for i, lo, hi in removed_entries(case):
        for asid in asids:
            assert any(covers(ins, asid, lo, hi, case.geo.page_shift)
                       for ins in out[starts[i]:]), (policy, case.ops[i], hex(lo), asid)


@SETTINGS
@given(cases(), st.sampled_from(list(POLICIES)))
def test_no_tlbi_precedes_the_barrier_after_the_last_table_change(case: Case, policy: str) -> None:
    out, starts = execute(case, policy)
    for pos, ins in enumerate(out):
        if not isinstance(ins, Tlbi):
            continue
        last_change = max(s for s in starts if s <= pos)
        assert any(isinstance(d, Dsb) for d in out[last_change:pos]), (policy, pos, out)


@SETTINGS
@given(cases(), st.sampled_from(list(POLICIES)))
def test_every_tlbi_run_is_completed_by_dsb_ish(case: Case, policy: str) -> None:
    out, _ = execute(case, policy)
    for pos, ins in enumerate(out):
        if isinstance(ins, Tlbi):
            nxt = next((x for x in out[pos + 1:] if not isinstance(x, Tlbi)), None)
            assert nxt == Dsb("ish"), (policy, pos, out)


@SETTINGS
@given(cases())
def test_v4_20_never_issues_more_dsb_ish_than_v4_19(case: Case) -> None:
    old, _ = execute(case, "v4.19")
    new, _ = execute(case, "v4.20")
    assert new.count(Dsb("ish")) <= old.count(Dsb("ish"))


@SETTINGS
@given(cases(), st.sampled_from(list(POLICIES)))
def test_kpti_only_adds_the_user_asid_copies(case: Case, policy: str) -> None:
    case.kpti = False
    plain, _ = execute(case, policy)
    case.kpti = True
    with_copies, _ = execute(case, policy)
    without = [i for i in with_copies
               if not (isinstance(i, Tlbi) and i.xt is not None and i.xt & USER_ASID_FLAG
                       and not case.asid & 1)]
    if not case.asid & 1:
        assert without == plain
    assert len(with_copies) >= len(plain)
