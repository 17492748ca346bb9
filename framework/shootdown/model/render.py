"""Text renderings of the model's output (pure: strings in, strings out).

``jsonl`` is the machine format of ``shootdown model`` (one object per
instruction, exactly the keys ``op``, ``arg``, ``xt``); ``text`` is for people:
aligned, with decoded operands and the mmu_gather state behind each flush;
``summary`` counts instructions, one Markdown table row per policy.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from shootdown.insn import counts as insn_counts
from shootdown.model.expected import StepResult
from shootdown.model.instructions import Dsb, GatherSnapshot, Instruction, Tlbi, Why, decode_operand


def instruction_json(ins: Instruction) -> dict[str, str]:
    """The jsonl object of one instruction."""
    if isinstance(ins, Dsb):
        return {"op": "dsb", "arg": ins.domain}
    if isinstance(ins, Tlbi):
        obj = {"op": "tlbi", "arg": ins.op}
        if ins.xt is not None:
            obj["xt"] = f"{ins.xt:#018x}"
        return obj
    return {"op": "isb"}


def to_jsonl(results: Iterable[StepResult]) -> list[str]:
    return [json.dumps(instruction_json(ins)) for r in results for ins in r.instructions]


def _snapshot_text(s: GatherSnapshot) -> str:
    parts = [f"range=[{s.start:#x}, {s.end:#x})"]
    if s.fullmm:
        parts.append("fullmm")
    if s.freed_tables is not None:
        parts.append(f"freed_tables={int(s.freed_tables)}")
        parts.append(f"cleared={','.join(s.cleared) or '-'}")
    parts.append(f"stride={s.stride:#x}")
    parts.append(f"last_level={int(s.last_level)}")
    if s.level is not None:
        parts.append(f"ttl_level={s.level}")
    return " ".join(parts)


def _decoded(ins: Tlbi, lpa2: bool) -> str:
    if ins.xt is None:
        return ""
    f = decode_operand(ins.op, ins.xt, lpa2=lpa2)
    text = f"va={f['va']:#x} asid={f['asid']}"
    if ins.op.startswith("r"):
        text += f" pages={f['pages']} (num={f['num']} scale={f['scale']}) tg={f['tg']}"
        if f["ttl"]:
            text += f" ttl={f['ttl']}"
    elif f["ttl"]:
        text += f" ttl=tg{f['ttl'] >> 2}/level{f['ttl'] & 3}"
    return text


def _line(ins: Instruction, lpa2: bool = False) -> str:
    if isinstance(ins, Dsb):
        return f"    dsb   {ins.domain}"
    if isinstance(ins, Tlbi):
        if ins.xt is None:
            return f"    tlbi  {ins.op}"
        return f"    tlbi  {ins.op:<10} {ins.xt:#018x}  {_decoded(ins, lpa2)}"
    return "    isb"


def counts(instructions: Iterable[Instruction]) -> dict[str, int]:
    """Instruction counts by kind (:data:`shootdown.insn.COUNT_KINDS`) and their total."""
    c = insn_counts(instructions)
    return {**c, "total": sum(c.values())}


def to_text(results: Sequence[StepResult], header: str, *, lpa2: bool = False) -> list[str]:
    """The aligned, decoded listing for people (``lpa2``: range bases in 64 KiB units)."""
    lines = [header]
    for r in results:
        lines.append(f"step {r.index}  {r.kind}")
        last: Why | None = None
        for ins in r.instructions:
            why = ins.why
            if why is not None and why is not last:
                text = f"  {why.source}"
                if why.gather is not None:
                    text += f"   {_snapshot_text(why.gather)}"
                lines.append(text)
                last = why
            lines.append(_line(ins, lpa2))
        c = counts(r.instructions)
        if not r.instructions:
            lines.append("    (nothing)")
        lines.append(f"  = {c['tlbi']} tlbi, {c['dsb_ishst']} dsb ishst, {c['dsb_ish']} dsb ish, "
                     f"{c['isb']} isb")
    return lines


def summary_header() -> list[str]:
    return ["| policy | TLBI | DSB ISHST | DSB ISH | ISB | total |",
            "| --- | ---: | ---: | ---: | ---: | ---: |"]


def summary_row(policy: str, results: Iterable[StepResult]) -> str:
    c = counts(ins for r in results for ins in r.instructions)
    return (f"| `{policy}` | {c['tlbi']} | {c['dsb_ishst']} | {c['dsb_ish']} | {c['isb']} | "
            f"{c['total']} |")
