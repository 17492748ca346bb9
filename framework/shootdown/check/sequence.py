"""Expected against issued: the maintenance sequence check.

The golden model says, per scenario step, which DSB/TLBI/ISB instructions
the policy must issue, in order; the guest (or a trace of what the CPU
executed) says what was issued. They must be equal, instruction by
instruction: the operation, the DSB domain and the exact 64-bit TLBI operand.
A mismatch is a result (:class:`SequenceCheck` with a :class:`Divergence`),
never an exception.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from shootdown.insn import Dsb, Instruction, Tlbi, decode_operand

#: Instructions of context shown on each side of the first divergence.
CONTEXT = 3


def render(insn: Instruction) -> str:
    """One instruction as assembly text: ``tlbi vale1is, 0x002a000000000400``."""
    if isinstance(insn, Tlbi):
        return f"tlbi {insn.op}" if insn.xt is None else f"tlbi {insn.op}, {insn.xt:#018x}"
    if isinstance(insn, Dsb):
        return f"dsb {insn.domain}"
    return "isb"


def explain(insn: Instruction) -> str:
    """The instruction with its operand decoded (VA, ASID, TTL, range) for people."""
    text = render(insn)
    if isinstance(insn, Tlbi) and insn.xt is not None:
        fields = decode_operand(insn.op, insn.xt)
        text += "  (" + " ".join(f"{k}={v:#x}" if k == "va" else f"{k}={v}"
                                 for k, v in fields.items()) + ")"
    return text


def instruction_key(insn: Instruction) -> tuple[str, str, int | None]:
    """What two instructions must agree on: kind, operation or domain, operand.

    The same shape as :meth:`shootdown.trace.qemu_log.MaintOp.key`, so model
    instructions compare with traced ones too.
    """
    if isinstance(insn, Tlbi):
        return ("TLBI", insn.op, insn.xt)
    if isinstance(insn, Dsb):
        return ("DSB", insn.domain, None)
    return ("ISB", "", None)


@dataclass(frozen=True)
class Divergence:
    """The first place where the issued sequence leaves the expected one."""

    #: scenario step (from 1; 0 is the guest's set-up, where nothing is expected)
    step: int
    #: index of the instruction within the step
    index: int
    #: what the model expected there (None: the guest issued extra instructions)
    expected: Instruction | None
    #: what the guest issued there (None: the guest stopped short)
    observed: Instruction | None
    #: the model's explanation of the expected instruction (kernel path, gather state)
    why: str

    def describe(self) -> str:
        exp = explain(self.expected) if self.expected is not None else "(nothing more)"
        obs = explain(self.observed) if self.observed is not None else "(nothing more)"
        lines = [f"first divergence: step {self.step}, instruction {self.index}",
                 f"  expected: {exp}", f"  issued:   {obs}"]
        if self.why:
            lines.append(f"  model:    {self.why}")
        return "\n".join(lines)


@dataclass(frozen=True)
class SequenceCheck:
    """The outcome of comparing expected and issued sequences."""

    #: whether every step's sequence matched exactly
    ok: bool
    #: the first divergence, when not ok
    divergence: Divergence | None
    #: a unified diff of the first diverging step, for people
    diff: tuple[str, ...]
    #: instructions expected and issued, over all steps
    expected_count: int
    observed_count: int


def _why(insn: Instruction | None) -> str:
    why = getattr(insn, "why", None) if insn is not None else None
    if why is None:
        return ""
    text = f"{why.source}"
    g = why.gather
    if g is not None:
        flags = ",".join(g.cleared) or "-"
        text += (f" [gather start={g.start:#x} end={g.end:#x} fullmm={int(g.fullmm)} "
                 f"freed_tables={g.freed_tables} cleared={flags} stride={g.stride:#x} "
                 f"last_level={int(g.last_level)}]")
    return text


def check_sequence(expected: Mapping[int, Sequence[Instruction]],
                   observed: Mapping[int, Sequence[Instruction]]) -> SequenceCheck:
    """Compare per-step sequences; report the first divergence and its diff."""
    steps = sorted(set(expected) | set(observed))
    n_exp = sum(len(v) for v in expected.values())
    n_obs = sum(len(v) for v in observed.values())
    for step in steps:
        exp = list(expected.get(step, ()))
        obs = list(observed.get(step, ()))
        exp_keys = [instruction_key(i) for i in exp]
        obs_keys = [instruction_key(i) for i in obs]
        if exp_keys == obs_keys:
            continue
        index = next((k for k, (a, b) in enumerate(zip(exp_keys, obs_keys, strict=False))
                      if a != b), min(len(exp_keys), len(obs_keys)))
        e = exp[index] if index < len(exp) else None
        o = obs[index] if index < len(obs) else None
        # The model's reason: the diverging instruction's, else the last one before it.
        anchor = e if e is not None else (exp[index - 1] if 0 < index <= len(exp) else None)
        div = Divergence(step=step, index=index, expected=e, observed=o, why=_why(anchor))
        lo = max(0, index - CONTEXT)
        diff = tuple(difflib.unified_diff(
            [render(i) for i in exp[lo:index + 4 * CONTEXT]],
            [render(i) for i in obs[lo:index + 4 * CONTEXT]],
            fromfile=f"model (step {step})", tofile=f"guest (step {step})",
            lineterm="", n=CONTEXT))
        return SequenceCheck(ok=False, divergence=div, diff=diff,
                             expected_count=n_exp, observed_count=n_obs)
    return SequenceCheck(ok=True, divergence=None, diff=(), expected_count=n_exp,
                         observed_count=n_obs)


