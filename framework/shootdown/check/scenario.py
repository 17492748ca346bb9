"""The verdict on one scenario: the only place that sees both sides.

Expected (the golden model's per-step sequences) and observed (the guest's
report, or later a trace) come in; a frozen :class:`ScenarioResult` goes out.
With a bug injected, a failing check is the *wanted* outcome (CAUGHT). The
guest counts how often the injected code path was taken (``SCNEND
injected=``): a scenario that never took it is NOT_APPLICABLE (the bug cannot
exist there: another release, no TLBI range ops, an aligned range); one that
took it and still passed is PASS, and a run in which some scenario took the
path but none caught it is MISSED: the checkers were blind to it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shootdown.check.emulator import explain_probes
from shootdown.check.probes import ProbeCheck, check_probes
from shootdown.check.sequence import SequenceCheck, check_sequence
from shootdown.insn import Instruction, counts
from shootdown.result import Verdict
from shootdown.trace.scenario import ObservedScenario


@dataclass(frozen=True)
class ScenarioResult:
    """What happened to one scenario on one guest."""

    #: scenario file
    scenario: str
    #: policy (kernel release), granule and injected bug ("none")
    policy: str
    granule: str
    inject: str
    verdict: Verdict
    #: one line saying why (the first problem found), empty on PASS
    reason: str
    #: the sequence check (None when skipped or rejected)
    sequence: SequenceCheck | None
    #: the probe check (None when skipped or rejected)
    probes: ProbeCheck | None
    #: TLBI / DSB ISHST / DSB ISH / ISB counts, expected and issued
    expected_counts: dict[str, int] = field(default_factory=dict)
    observed_counts: dict[str, int] = field(default_factory=dict)
    #: seconds from sending the scenario to its last record
    seconds: float = 0.0
    #: the QEMU execution log, when a trace disagreed with the report
    trace_log: str = ""
    #: with --trace: whether what the CPU executed "matches" or "differs" from
    #: the model, or the firmware "misreports" it; "" when not traced
    trace_view: str = ""

    @property
    def detail(self) -> list[str]:
        """Lines for a failure report: the first divergence, its diff, probe problems."""
        lines: list[str] = []
        if self.sequence is not None and self.sequence.divergence is not None:
            lines += self.sequence.divergence.describe().splitlines()
            lines += list(self.sequence.diff)
        if self.probes is not None:
            lines += [f"probe: {p}" for p in self.probes.problems]
        if self.trace_view == "differs":
            lines.append("trace: the executed sequence differs from the model too")
        if self.trace_log:
            lines.append(f"trace: {self.trace_log}")
        return lines

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {
            "scenario": self.scenario, "policy": self.policy, "granule": self.granule,
            "inject": self.inject, "verdict": str(self.verdict), "reason": self.reason,
            "expected_counts": self.expected_counts, "observed_counts": self.observed_counts,
            "detail": self.detail, "seconds": round(self.seconds, 4),
            "trace_view": self.trace_view,
        }


def judge(*, scenario: str, policy: str, granule: str, inject: str,
          expected: Mapping[int, Sequence[Instruction]], observed: ObservedScenario,
          cpus: int, seconds: float = 0.0,
          emulator: tuple[int, int, int] | None = None) -> ScenarioResult:
    """Compare one scenario's expected and observed behaviour.

    ``emulator`` is the QEMU version when TCG ran the guest (None: KVM or
    unknown): stale probes that a known QEMU defect explains, after a
    sequence equal to the model's, are EMULATOR_LIMIT (check/emulator.py).
    """

    def result(verdict: Verdict, reason: str, sequence: SequenceCheck | None = None,
               probes: ProbeCheck | None = None) -> ScenarioResult:
        exp_all = [i for n in sorted(expected) for i in expected[n]]
        ran = sequence is not None
        return ScenarioResult(scenario=scenario, policy=policy, granule=granule,
                              inject=inject, verdict=verdict, reason=reason,
                              sequence=sequence, probes=probes,
                              expected_counts=counts(exp_all) if ran else {},
                              observed_counts=counts(observed.instructions) if ran else {},
                              seconds=seconds)

    if observed.skipped is not None:
        return result(Verdict.SKIP, f"skipped by the guest: {observed.skipped}")
    if observed.errors:
        return result(Verdict.FAIL,
                      "guest rejected the scenario: " + "; ".join(observed.errors))
    seq = check_sequence(expected, observed.steps)
    probes = check_probes(observed, steps=[n for n in expected if n > 0], cpus=cpus)
    ok = seq.ok and probes.ok
    reason = ""
    if not seq.ok and seq.divergence is not None:
        d = seq.divergence
        reason = f"sequence differs from the model at step {d.step}, instruction {d.index}"
    elif not probes.ok:
        reason = probes.problems[0]
    limit = (explain_probes(emulator, granule, observed.steps, observed)
             if seq.ok and not probes.ok else None)
    if limit is not None:  # QEMU, not the target, left the pages readable
        return result(Verdict.EMULATOR_LIMIT, limit.describe(), seq, probes)
    if inject == "none":
        verdict = Verdict.PASS if ok else Verdict.FAIL
    elif observed.injected == 0:
        # The injected path never ran: a failure here is a real one, not the bug's.
        verdict = Verdict.NOT_APPLICABLE if ok else Verdict.FAIL
        if ok:
            reason = f"the code path of {inject} never ran in this scenario"
    else:
        verdict = Verdict.PASS if ok else Verdict.CAUGHT
        if ok:
            reason = f"injection {inject} had no visible effect on this scenario"
            if observed.injected is not None:
                reason += f" (its code path ran {observed.injected} time(s))"
    return result(verdict, reason, seq, probes)


def run_verdict(results: Sequence[ScenarioResult], inject: str) -> Verdict:
    """The verdict of a run, first match wins.

    - FAIL if any scenario failed;
    - NOTHING_RAN if every scenario was skipped (or there were none);
    - with an injection: CAUGHT if any scenario caught it, else MISSED if any
      scenario ran the injected code path (or could not say) and passed;
    - EMULATOR_LIMIT if a scenario's probes hit a known QEMU defect;
    - with an injection: NOT_APPLICABLE (no scenario ran the injected path);
    - else PASS.
    """
    verdicts = {r.verdict for r in results}
    if Verdict.FAIL in verdicts:
        return Verdict.FAIL
    if verdicts <= {Verdict.SKIP}:
        return Verdict.NOTHING_RAN
    if inject != "none":
        if Verdict.CAUGHT in verdicts:
            return Verdict.CAUGHT
        if Verdict.PASS in verdicts:
            return Verdict.MISSED
    if Verdict.EMULATOR_LIMIT in verdicts:
        return Verdict.EMULATOR_LIMIT
    if inject != "none":
        return Verdict.NOT_APPLICABLE
    return Verdict.PASS
