"""The scenario library: it loads, it covers the language, it passes on real
guests for every policy, and every bug injection is caught by some scenario.

Guest runs use two concurrent boots (the machine has 2 cores).  The library
for all twelve policies on virt-max (three granules) and virt-a57 (4K, 64K;
16K is refused by the CPU and every scenario SKIPs with that reason), and the
bug catalogue, take about a minute together.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from shootdown.bugs import read_bugs
from shootdown.guest.definition import find_guest
from shootdown.model.policy import POLICIES
from shootdown.result import Verdict
from shootdown.scenario.geometry import GRANULE_VA_BITS
from shootdown.scenario.load import load_scenario
from shootdown.scenario.lower import lower
from shootdown.scenario.types import GATHER_OPS, STEP_KINDS, GatherStep, MunmapStep

from .library import (
    BUG_POLICY,
    DEFAULT_BUG_POLICY,
    GRANULES,
    KNOWN_DISAGREEMENTS,
    LIBRARY,
    caught_by,
    detections,
    library_files,
    load_library,
    rel,
    run_library,
)

FILES = library_files()


# -- static: the files ---------------------------------------------------------

@pytest.mark.parametrize("path", FILES, ids=[rel(p) for p in FILES])
def test_file_loads_and_says_what_it_is(path: Path) -> None:
    sc = load_scenario(path)
    assert sc.policy is None, "library files leave policy unset (every policy runs them)"
    assert sc.granule == path.parent.name, "a file lives in its granule's folder"
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# Exercises:"), "each file starts by saying what it exercises"
    assert "Catches:" in path.read_text(encoding="utf-8")
    lower(sc)  # the layout is buildable (no overlapping levels)


def test_library_covers_the_language() -> None:
    scenarios = [load_scenario(p) for p in FILES]
    kinds = {s.kind for sc in scenarios for s in sc.steps}
    assert kinds == set(STEP_KINDS)
    ops = {op.op for sc in scenarios for s in sc.steps if isinstance(s, GatherStep)
           for op in s.ops}
    assert ops == set(GATHER_OPS)
    for g in GRANULES:
        # 52-bit 64K needs LPA (not modelled by the firmware): 42 and 48 are covered.
        wanted = {v for v in GRANULE_VA_BITS[g] if v != 52}
        assert {sc.va_bits for sc in scenarios if sc.granule == g} == wanted, g
        assert {sc.kpti for sc in scenarios if sc.granule == g} == {False, True}, g
        feats = {f for sc in scenarios if sc.granule == g for f in sc.cpu_features}
        assert feats - {"repeat_tlbi"} == {"ttl", "tlbirange"}, g
    # The REPEAT_TLBI erratum does not depend on the granule: one 4K file covers it.
    assert "repeat_tlbi" in {f for sc in scenarios for f in sc.cpu_features}
    # Freed tables via munmap lowering, and fullmm both ways.
    lowered = [ls.step for sc in scenarios for ls in lower(sc).steps
               if isinstance(ls.step, GatherStep)]
    freed = {op.op for st in lowered for op in st.ops if op.op.startswith("free_")}
    assert {"free_pte_table", "free_pmd_table", "free_pud_table", "free_p4d_table"} <= freed
    assert {st.fullmm for st in lowered} == {False, True}
    munmap_levels = {m.level for sc in scenarios for s in sc.steps
                     if isinstance(s, MunmapStep) for m in s.layout}
    assert munmap_levels == {1, 2, 3}


def test_known_disagreements_name_real_files() -> None:
    for name, policy in KNOWN_DISAGREEMENTS:
        assert (LIBRARY / name).is_file(), name
        assert policy in POLICIES


# -- real guests -----------------------------------------------------------------

CASES = [("virt-max", "4k"), ("virt-max", "16k"), ("virt-max", "64k"),
         ("virt-a57", "4k"), ("virt-a57", "16k"), ("virt-a57", "64k")]
#: the third guest of the acceptance matrix: a second ARMv8.0 core, same verdicts as the A57
SLOW_CASES = [("virt-a72", "4k"), ("virt-a72", "16k"), ("virt-a72", "64k")]


@pytest.mark.guest
@pytest.mark.parametrize(("guest", "granule"), CASES, ids=[f"{g}-{n}" for g, n in CASES])
def test_library_passes(guest: str, granule: str, firmware_elf: Path, qemu: str,
                        tmp_path: Path) -> None:
    check_library(guest, granule, tmp_path)


@pytest.mark.slow
@pytest.mark.guest
@pytest.mark.parametrize(("guest", "granule"), SLOW_CASES,
                         ids=[f"{g}-{n}" for g, n in SLOW_CASES])
def test_library_passes_slow_matrix(guest: str, granule: str, firmware_elf: Path, qemu: str,
                                    tmp_path: Path) -> None:
    check_library(guest, granule, tmp_path)


def check_library(guest: str, granule: str, tmp_path: Path) -> None:
    """All policies over the granule's library on ``guest``: PASS or an expected SKIP."""
    definition = find_guest(guest)
    report = run_library(definition, load_library([granule]), logdir=str(tmp_path))
    assert not report.errors, report.errors
    results = report.results
    assert len(results) == len([p for p in FILES if p.parent.name == granule]) * len(POLICIES)
    if guest in ("virt-a57", "virt-a72") and granule == "16k":
        # The Cortex-A57/A72 have no 16K granule: the firmware says so, nothing runs.
        assert {r.verdict for r in results} == {Verdict.SKIP}
        assert all("granule_unsupported" in r.reason for r in results)
        return
    problems = []
    for r in results:
        key = (rel(r.scenario), r.policy)
        if key in KNOWN_DISAGREEMENTS:
            if r.verdict is not Verdict.FAIL:
                problems.append(f"{key}: known disagreement now {r.verdict}: update "
                                "KNOWN_DISAGREEMENTS")
        elif r.verdict not in (Verdict.PASS, Verdict.SKIP):
            problems.append(f"{key}: {r.verdict} {r.reason}\n    " + "\n    ".join(r.detail[:12]))
    assert not problems, "\n".join(problems)
    skipped = Counter(r.reason for r in results if r.verdict is Verdict.SKIP)
    if guest == "virt-max":
        assert not skipped, f"virt-max has every feature, yet: {skipped}"
    else:
        # A57/A72: only the scenarios asking for TTL / TLBIRANGE are skipped.
        assert all("cpu_lacks_feat" in why for why in skipped), skipped


@pytest.mark.guest
def test_every_bug_is_caught(firmware_elf: Path, qemu: str, tmp_path: Path) -> None:
    """Each injection, under the release that has the code it breaks, makes at
    least one library scenario fail (CAUGHT), on virt-max (all features)."""
    bugs = [b.name for b in read_bugs(firmware_elf)]
    definition = find_guest("virt-max")
    scenarios = load_library()
    from shootdown.commands.fuzz import run_jobs
    from shootdown.session import Job

    jobs = [Job(sc, BUG_POLICY.get(bug, DEFAULT_BUG_POLICY)[0], bug)
            for bug in bugs for sc in scenarios]
    report = run_jobs(definition, jobs, logdir=str(tmp_path), chunk=400, workers=2)
    assert not report.errors, report.errors
    found = detections(report.results)
    missed = [bug for bug in bugs if bug not in found or not found[bug].caught]
    assert not missed, f"injections no library scenario caught: {missed}"
    # A CAUGHT always names the check that saw it.
    assert all(caught_by(r) in ("sequence", "probe", "sequence+probe")
               for r in report.results if r.verdict is Verdict.CAUGHT)
