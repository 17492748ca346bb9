"""What the guest reported for one scenario, as typed records.

The firmware answers a scenario (``SCN`` .. ``GO``, docs/protocol.md) with
``SCN``/``SKIP``, then per step a ``STEP`` record followed by the
maintenance instructions it issued (``DSB``, ``TLBI``, ``ISB``, in program
order), ``PROBE``/``PROBEFAIL`` records, and ``SCNEND`` with its own totals.
:func:`read_scenario` turns those records into an :class:`ObservedScenario`:
TLBI runs (``n= inc= user=``) are expanded into single instructions, and the
guest's totals are checked against what it listed, so a report that
contradicts itself is a protocol error rather than a silent miscount.

This module reads records only: it never consults the golden model.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from shootdown.errors import ProtocolError
from shootdown.insn import USER_ASID_FLAG, Dsb, Instruction, Isb, Tlbi
from shootdown.trace.console import Record

#: Step number given to instructions reported before the first STEP record
#: (set-up); the checker expects none there.
SETUP_STEP = 0


@dataclass(frozen=True)
class ProbeSummary:
    """One ``PROBE`` record: a step's probes from one CPU."""

    #: scenario step (from 1)
    step: int
    #: CPU that probed
    cpu: int
    #: addresses the step unmapped, and how many of them faulted
    unmapped: int
    faulted: int
    #: pages still mapped, and how many still read their value
    mapped: int
    intact: int

    @property
    def ok(self) -> bool:
        return self.faulted == self.unmapped and self.intact == self.mapped


@dataclass(frozen=True)
class ProbeFailure:
    """One ``PROBEFAIL`` record: an address that did not behave."""

    step: int
    cpu: int
    addr: int
    #: "fault" (it was unmapped) or "value" (it is still mapped)
    expect: str
    #: "read" (a stale translation still works), "fault", or "wrong" (bad value)
    got: str

    def describe(self) -> str:
        if self.expect == "fault":
            what = "still readable after unmap: stale TLB entry (missed invalidation)"
        elif self.got == "fault":
            what = "faults although still mapped"
        else:
            what = "reads a wrong value"
        return f"step {self.step}, cpu {self.cpu}: {self.addr:#x} {what}"


@dataclass(frozen=True)
class ObservedScenario:
    """Everything the guest reported for one scenario."""

    #: the ``id`` the host gave the scenario
    scn_id: int
    #: why the guest skipped it (a missing CPU feature or granule), or None
    skipped: str | None
    #: step number -> instructions issued in that step, in program order
    steps: dict[int, tuple[Instruction, ...]] = field(default_factory=dict)
    probes: tuple[ProbeSummary, ...] = ()
    probe_failures: tuple[ProbeFailure, ...] = ()
    #: the guest's rejection of the scenario (``ERR`` records), if any
    errors: tuple[str, ...] = ()
    #: how often the injected bug's code path was taken (``SCNEND injected=``);
    #: None when the guest did not say (skipped, or firmware without the field)
    injected: int | None = None

    @property
    def instructions(self) -> list[Instruction]:
        """Every instruction of the scenario, in order."""
        return [i for n in sorted(self.steps) for i in self.steps[n]]


def _expand_tlbi(rec: Record) -> list[Instruction]:
    op = rec.text("op")
    if rec.get("xt") is None:
        return [Tlbi(op, None)]
    xt = rec.number("xt")
    if rec.get("n") is None:
        return [Tlbi(op, xt)]
    count, inc, user = rec.number("n"), rec.number("inc"), rec.number("user")
    out: list[Instruction] = []
    for i in range(count):
        value = xt + i * inc
        out.append(Tlbi(op, value))
        if user:
            out.append(Tlbi(op, value | USER_ASID_FLAG))
    return out


def read_scenario(records: Iterable[Record]) -> ObservedScenario:
    """Read the records of one scenario, from ``SCN``/``SKIP`` to ``SCNEND``.

    Records of other kinds (``READY``, ``ERR``) may be among them; ``ERR``
    records are kept as the guest's rejection of the scenario.
    """
    scn_id: int | None = None
    skipped: str | None = None
    steps: dict[int, list[Instruction]] = {}
    current = SETUP_STEP
    probes: list[ProbeSummary] = []
    failures: list[ProbeFailure] = []
    errors: list[str] = []
    end: Record | None = None
    for rec in records:
        tag = rec.tag
        if tag == "TLBI":
            steps.setdefault(current, []).extend(_expand_tlbi(rec))
        elif tag == "DSB":
            steps.setdefault(current, []).append(Dsb(rec.text("opt")))
        elif tag == "ISB":
            steps.setdefault(current, []).append(Isb())
        elif tag == "STEP":
            current = rec.number("n")
            steps.setdefault(current, [])
        elif tag == "PROBE":
            probes.append(ProbeSummary(
                step=rec.number("step"), cpu=rec.number("cpu"),
                unmapped=rec.number("unmapped"), faulted=rec.number("faulted"),
                mapped=rec.number("mapped"), intact=rec.number("intact")))
        elif tag == "PROBEFAIL":
            failures.append(ProbeFailure(
                step=rec.number("step"), cpu=rec.number("cpu"), addr=rec.number("addr"),
                expect=rec.text("expect"), got=rec.text("got")))
        elif tag == "SCN":
            scn_id = rec.number("id")
        elif tag == "SKIP":
            scn_id = rec.number("id")
            skipped = rec.text("why")
        elif tag == "ERR":
            errors.append(f"{rec.get('cmd', '?')}: {rec.get('why', '?')}")
        elif tag == "SCNEND":
            end = rec
    if scn_id is None:
        if errors:
            return ObservedScenario(scn_id=-1, skipped=None, errors=tuple(errors))
        raise ProtocolError("scenario answer without SCN or SKIP record")
    frozen = {n: tuple(v) for n, v in steps.items()}
    hits = end.number("injected") if end is not None and end.get("injected") is not None \
        else None
    observed = ObservedScenario(scn_id=scn_id, skipped=skipped, steps=frozen,
                                probes=tuple(probes), probe_failures=tuple(failures),
                                errors=tuple(errors), injected=hits)
    if skipped is None and not errors:
        if end is None:
            raise ProtocolError(f"scenario {scn_id}: no SCNEND record")
        _check_totals(observed, end)
    return observed


def _check_totals(observed: ObservedScenario, end: Record) -> None:
    """The guest's own totals must match the instructions it listed."""
    listed = observed.instructions
    counts = {
        "tlbi": sum(1 for i in listed if isinstance(i, Tlbi)),
        "dsb": sum(1 for i in listed if isinstance(i, Dsb)),
        "isb": sum(1 for i in listed if isinstance(i, Isb)),
    }
    for key, mine in counts.items():
        theirs = end.number(key)
        if theirs != mine:
            raise ProtocolError(f"scenario {observed.scn_id}: SCNEND says {key}={theirs} "
                                f"but {mine} were reported: {end.line!r}")
    # PROBEFAIL records are capped per step and CPU (docs/protocol.md); the
    # total counts every failing probe, so it can exceed the records, and the
    # PROBE summaries carry the exact counts.
    failed = sum(p.unmapped - p.faulted + p.mapped - p.intact for p in observed.probes)
    total = end.number("probefail")
    if not len(observed.probe_failures) <= total == failed:
        raise ProtocolError(f"scenario {observed.scn_id}: SCNEND says probefail={total}, "
                            f"{len(observed.probe_failures)} PROBEFAIL records and {failed} "
                            f"failures in the PROBE summaries: {end.line!r}")
