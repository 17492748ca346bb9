"""The probe check: unmapped addresses must fault, mapped ones must still read.

Under TCG a missing or misdirected TLBI leaves a stale translation that
still works, so a probe that reads an unmapped address catches it. Each step
must have been probed by every CPU the guest has (a missing broadcast shows
only on the CPU that did not do the teardown).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from shootdown.trace.scenario import ObservedScenario, ProbeSummary


@dataclass(frozen=True)
class ProbeCheck:
    """The outcome of the probe check."""

    #: whether every probe behaved and every step was probed by every CPU
    ok: bool
    #: one line per problem, for people
    problems: tuple[str, ...]
    #: addresses probed as unmapped / as mapped, over all steps and CPUs
    unmapped: int
    mapped: int
    #: the steps with a problem, in order
    failed_steps: tuple[int, ...] = ()


def check_probes(observed: ObservedScenario, steps: Iterable[int], cpus: int) -> ProbeCheck:
    """Check the probes of every step in ``steps`` from each of ``cpus`` CPUs."""
    problems = [f.describe() for f in observed.probe_failures]
    failed = {f.step for f in observed.probe_failures}
    seen = {(p.step, p.cpu): p for p in observed.probes}
    for step in steps:
        for cpu in range(cpus):
            p = seen.get((step, cpu))
            before = len(problems)
            if p is None:
                problems.append(f"step {step}: no probe from cpu {cpu}")
                p = ProbeSummary(step, cpu, 0, 0, 0, 0)
            if p.faulted != p.unmapped:
                problems.append(f"step {step}, cpu {cpu}: {p.unmapped - p.faulted} of "
                                f"{p.unmapped} unmapped addresses still readable")
            if p.intact != p.mapped:
                problems.append(f"step {step}, cpu {cpu}: {p.mapped - p.intact} of "
                                f"{p.mapped} mapped pages lost or wrong")
            if len(problems) > before:
                failed.add(step)
    # one PROBEFAIL and its summary line describe the same address: keep both,
    # the summary gives the count and the PROBEFAIL lines give the addresses
    return ProbeCheck(ok=not problems, problems=tuple(problems),
                      unmapped=sum(p.unmapped for p in observed.probes),
                      mapped=sum(p.mapped for p in observed.probes),
                      failed_steps=tuple(sorted(failed)))
