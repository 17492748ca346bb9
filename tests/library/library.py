"""The scenario library, as the tests and the detection table see it.

``guests/scenarios/<granule>/*.toml`` only: other folders under
``guests/scenarios`` (generated sweeps) are not the library.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from shootdown.check.scenario import ScenarioResult
from shootdown.commands.fuzz import RunReport, run_jobs
from shootdown.guest.definition import GuestDefinition
from shootdown.model.policy import POLICIES
from shootdown.result import Verdict
from shootdown.scenario.load import load_scenario
from shootdown.scenario.types import Scenario
from shootdown.session import Job

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "guests" / "scenarios"
GRANULES = ("4k", "16k", "64k")

#: (file relative to LIBRARY, policy) -> why the model and the guest disagree there.
#: Each entry is a reported disagreement awaiting a decision; the library test
#: requires these to FAIL (strict), so a fix shows up as a test to update.
KNOWN_DISAGREEMENTS: dict[tuple[str, str], str] = {}

#: bug -> the release to run it under, and why that one.
BUG_POLICY: dict[str, tuple[str, str]] = {
    "table_free_no_tlbi": ("v4.19", "only v4.19 invalidates each freed table synchronously"),
    "no_stride_round": ("v5.4", "v5.2 added the rounding; from v5.9 the unrounded page count "
                        "underflows in the range loop and the guest loops (hang)"),
    "no_isb_kernel_pgtable": ("v5.4", "the ISB exists from v5.4"),
    "cutoff_4k_units": ("v5.4", "the PTRS_PER_PTE cut-off of v5.0, before range ops"),
    "ttl_with_freed_tables": ("v6.19", "TTL hints exist from v5.9 (library: cpu_features ttl)"),
    "range_num_overflow": ("v6.19", "the 2^21-page range op exists from v6.10 "
                           "(library: cpu_features tlbirange)"),
    "fallback_extra_dsb_ish": ("v7.1", "the fallback returns after flush_tlb_mm from v7.1"),
    "cutoff_range_limit_no_range": ("v7.1", "the cut-off without range ops tests only "
                                    "MAX_DVM_OPS strides from v7.1"),
}
#: every other bug runs under today's release
DEFAULT_BUG_POLICY = ("v6.19", "today's release")


def library_files() -> list[Path]:
    """Every library scenario file, sorted by granule then name."""
    return [p for g in GRANULES for p in sorted((LIBRARY / g).glob("*.toml"))]


def rel(path: str | os.PathLike[str]) -> str:
    """A scenario's name relative to the library (``4k/gather-small.toml``)."""
    return os.path.relpath(path, LIBRARY)


def load_library(granules: Iterable[str] = GRANULES) -> list[Scenario]:
    """The library scenarios of ``granules``."""
    wanted = set(granules)
    return [load_scenario(p) for p in library_files() if p.parent.name in wanted]


def run_library(definition: GuestDefinition, scenarios: list[Scenario], *,
                policies: Iterable[str] = POLICIES, inject: str = "none",
                logdir: str, workers: int = 2) -> RunReport:
    """Every scenario under every policy, split over ``workers`` concurrent boots per granule."""
    jobs = [Job(sc, p, inject) for p in policies for sc in scenarios]
    per_granule = max(1, max((sum(1 for j in jobs if j.scenario.granule == g)
                              for g in GRANULES), default=1))
    chunk = -(-per_granule // workers)
    return run_jobs(definition, jobs, logdir=logdir, chunk=chunk, workers=workers)


def caught_by(result: ScenarioResult) -> str:
    """``sequence``, ``probe`` or ``sequence+probe``: which check saw the bug."""
    parts = []
    if result.sequence is not None and not result.sequence.ok:
        parts.append("sequence")
    if result.probes is not None and not result.probes.ok:
        parts.append("probe")
    return "+".join(parts) or "rejected"


@dataclass(frozen=True)
class Detection:
    """One row of the detection table."""

    bug: str
    policy: str
    #: library scenarios that caught it, and how many of them through probes
    caught: tuple[str, ...]
    by_probe: tuple[str, ...]
    #: library scenarios that ran (not skipped)
    ran: int

    @property
    def example(self) -> str:
        """The scenario to cite: one caught by probes too if any."""
        return (self.by_probe or self.caught or ("-",))[0]


def detections(results: Iterable[ScenarioResult]) -> dict[str, Detection]:
    """Per bug, what caught it, from injected runs (known disagreements left out)."""
    rows: dict[str, tuple[str, list[str], list[str], int]] = {}
    for r in results:
        name = rel(r.scenario)
        if (name, r.policy) in KNOWN_DISAGREEMENTS:
            continue
        pol, caught, probe, ran = rows.get(r.inject, (r.policy, [], [], 0))
        if r.verdict is not Verdict.SKIP:
            ran += 1
        if r.verdict is Verdict.CAUGHT:
            caught.append(name)
            if "probe" in caught_by(r):
                probe.append(name)
        rows[r.inject] = (pol, caught, probe, ran)
    return {bug: Detection(bug, pol, tuple(sorted(set(c))), tuple(sorted(set(p))), ran)
            for bug, (pol, c, p, ran) in rows.items()}


def markdown_table(found: dict[str, Detection], order: Iterable[str]) -> list[str]:
    """The "Detection table" of docs/bugs.md (scenarios marked * were caught by probes too)."""
    lines = ["| bug | policy (why) | caught by | library scenarios that caught it |",
             "| --- | --- | --- | --- |"]
    for bug in order:
        d = found.get(bug)
        why = BUG_POLICY.get(bug, DEFAULT_BUG_POLICY)[1]
        if d is None:
            lines.append(f"| `{bug}` | - | not run | - |")
            continue
        if not d.caught:
            lines.append(f"| `{bug}` | {d.policy} ({why}) | **MISSED** | none of {d.ran} |")
            continue
        how = "sequence" + (" + probes" if d.by_probe else " only")
        shown = sorted(d.caught, key=lambda n: (n not in d.by_probe, n))[:3]
        names = ", ".join(f"`{n}`" + ("*" if n in d.by_probe else "") for n in shown)
        more = f" (+{len(d.caught) - len(shown)} more)" if len(d.caught) > len(shown) else ""
        lines.append(f"| `{bug}` | {d.policy} ({why}) | {how} | {len(d.caught)} of {d.ran}: "
                     f"{names}{more} |")
    return lines
