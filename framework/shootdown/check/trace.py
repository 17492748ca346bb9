"""Report against trace: did the firmware issue what it says it issued?

The guest reports each maintenance instruction it meant to issue; QEMU's
execution log says what the CPU really executed in the firmware's
maintenance helpers. Both are lists of
:class:`~shootdown.trace.qemu_log.MaintOp`; they must be equal. A difference
is its own failure kind, "firmware misreports": the device under test cannot
be trusted to report on itself, whatever the golden model says.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from shootdown.check.sequence import instruction_key
from shootdown.insn import Instruction
from shootdown.trace.qemu_log import MaintOp

#: the failure kind named in results
MISREPORTS = "firmware misreports"


@dataclass(frozen=True)
class TraceCheck:
    """The outcome of comparing the guest's report with the execution trace."""

    ok: bool
    #: index of the scenario (in boot order) holding the first divergence, or None
    scenario: int | None
    #: one line naming the first divergence, for people
    reason: str
    #: maintenance instructions reported and executed (all scenarios, CPU 0)
    reported: int
    executed: int


def _show(op: MaintOp | None, symbolize: object) -> str:
    if op is None:
        return "(nothing)"
    where = ""
    if op.pc is not None and callable(symbolize):
        where = f" at {symbolize(op.pc)}"
    return f"{op}{where}"


def check_trace(reported: Sequence[Sequence[MaintOp]],
                executed: Mapping[int, Sequence[MaintOp]],
                symbolize: object = None) -> TraceCheck:
    """Compare per-scenario reports (boot order) with the per-CPU executed ops.

    The teardown engine runs on CPU 0 only, so maintenance executed by the
    helpers on any other CPU is a divergence too.
    """
    flat = [op for ops in reported for op in ops]
    ran = list(executed.get(0, ()))
    for cpu, ops in executed.items():
        if cpu != 0 and ops:
            return TraceCheck(False, None, f"{MISREPORTS}: cpu {cpu} executed "
                              f"{_show(ops[0], symbolize)}, which no report lists",
                              len(flat), len(ran))
    if [op.key() for op in flat] == [op.key() for op in ran]:
        return TraceCheck(True, None, "", len(flat), len(ran))
    index = next((i for i, (a, b) in enumerate(zip(flat, ran, strict=False))
                  if a.key() != b.key()), min(len(flat), len(ran)))
    # Which scenario's report holds that index (the last one if the trace ran on).
    scenario, start = len(reported) - 1, 0
    for n, ops in enumerate(reported):
        if index < start + len(ops):
            scenario = n
            break
        start += len(ops)
    rep = flat[index] if index < len(flat) else None
    exe = ran[index] if index < len(ran) else None
    reason = (f"{MISREPORTS}: maintenance instruction {index - start} of the scenario: "
              f"reported {_show(rep, symbolize)}, executed {_show(exe, symbolize)}")
    return TraceCheck(False, scenario, reason, len(flat), len(ran))


def trace_matches(expected: Mapping[int, Sequence[Instruction]],
                  executed: Sequence[MaintOp]) -> bool:
    """Whether one scenario's executed maintenance equals the golden model's, in order."""
    want = [instruction_key(i) for n in sorted(expected) for i in expected[n]]
    return want == [op.key() for op in executed]
