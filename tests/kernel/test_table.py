"""The kernel table: rows to Markdown, the doc's generated block, the table's verdict
(pure logic), and one real cell (slow)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shootdown.kernel.table import BEGIN, END, Row, not_run, render, table_verdict, update_doc
from shootdown.result import Verdict


def row(workload: str = "few-pages", verdict: str = "pass", **kw: object) -> Row:
    base: dict[str, object] = dict(kernel="debian:bookworm", release="6.1.0-40-arm64",
                                   cpu="virt-max", kpti=False, workload=workload,
                                   policy="v5.14", steps=1, model={"pass": 1},
                                   verdict=verdict)
    base.update(kw)
    return Row(**base)  # type: ignore[arg-type]


def test_render_numbers_each_distinct_note_once() -> None:
    lpa2 = "the model has no LPA2 operand form"
    text = render([row(), row("thp", model={"not-modelled": 2}, steps=2, note=lpa2),
                   row("exit", model={"not-modelled": 1}, note=lpa2),
                   row("-", verdict="not run", steps=0, model={}, note="not run: no archive")])
    lines = text.splitlines()
    assert lines[0].startswith("| kernel | release | CPU | kpti | workload |")
    assert "| few-pages | v5.14 | 1 | 1 pass | 0 | 0 | pass |  |" in lines[2]
    assert lines[3].endswith("| 2 not-modelled | 0 | 0 | pass | [1] |")
    assert lines[4].endswith("| pass | [1] |")
    assert lines[5].endswith("| - | 0 | 0 | not run | [2] |")
    assert f"1. {lpa2}" in lines and "2. not run: no archive" in lines


def test_update_doc_replaces_only_the_generated_block(tmp_path: Path) -> None:
    doc = tmp_path / "kernel.md"
    doc.write_text(f"# Kernels\n\nbefore\n\n{BEGIN}\nold table\n{END}\n\nafter\n")
    update_doc(doc, "| new |\n", "Generated today.")
    text = doc.read_text()
    assert text.startswith("# Kernels\n\nbefore\n\n") and text.endswith("\n\nafter\n")
    assert "old table" not in text and f"{BEGIN}\nGenerated today.\n\n| new |\n{END}" in text
    bare = tmp_path / "other.md"
    bare.write_text("# Other\n")
    update_doc(bare, "| t |\n", "h")
    assert bare.read_text() == f"# Other\n\n{BEGIN}\nh\n\n| t |\n{END}\n"


def test_the_table_verdict() -> None:
    assert table_verdict([row(), row(verdict="skip")]) is Verdict.PASS
    assert table_verdict([row(), row(verdict="fail")]) is Verdict.FAIL
    assert table_verdict([row(verdict="skip")]) is Verdict.NOTHING_RAN
    broken = row("-", verdict="error", steps=0, note="GuestTimeout: no READY")
    assert table_verdict([row(), broken]) is Verdict.PASS and not_run([row(), broken]) == [broken]


@pytest.mark.slow
def test_one_real_cell(tmp_path: Path) -> None:
    """bookworm 6.1 on virt-max without kpti: every workload passes, the model on every step."""
    doc = tmp_path / "kernel.md"
    done = subprocess.run(
        [sys.executable, "-m", "shootdown.cli", "kernel", "table", "--kernel", "debian:bookworm",
         "--cpu", "virt-max", "--kpti", "off", "--write", str(doc), "--logdir",
         str(tmp_path / "logs")], capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines()
            if line.startswith("| debian:bookworm")]
    assert rows and all("| pass |" in r or "| skip |" in r for r in rows)
    assert any("pass |" in r and "not-modelled" not in r and "fail" not in r for r in rows)
    assert BEGIN in doc.read_text()


def test_costs_add_up_by_the_one_spelling_of_the_counts() -> None:
    """The traced stream and the model count with the same keys (shootdown.insn)."""
    from shootdown.insn import COUNT_KINDS, Dsb, Isb, Tlbi, counts
    from shootdown.kernel.observe import ObservedOp, StepStream
    from shootdown.kernel.table import _sum

    model = counts([Dsb("ishst"), Tlbi("vale1is", 1), Dsb("ish"), Isb(), Dsb("sy")])
    assert tuple(model) == COUNT_KINDS == ("tlbi", "dsb_ishst", "dsb_ish", "isb")
    ops = tuple(ObservedOp(pc=0, cpu=0, kind=k, op=o, xt=None, function="tlb_flush")
                for k, o in (("dsb", "ishst"), ("tlbi", "vale1is"), ("dsb", "ish")))
    traced = StepStream(number=1, step="MUNMAP", start=0, end=0, ops=ops).counts()
    assert traced == {"tlbi": 1, "dsb_ishst": 1, "dsb_ish": 1, "isb": 0}
    assert _sum([model, traced, {"total": 9}]) == {"tlbi": 2, "dsb_ishst": 2, "dsb_ish": 2,
                                                    "isb": 1}


def test_failure_lines_say_each_failed_step_with_its_checks_and_the_models_answer() -> None:
    """What the matrix record's detail and the pytest item's failure report show."""
    from types import SimpleNamespace
    from typing import Any

    from shootdown.check.kernel import KernelCheck
    from shootdown.kernel.table import failure_lines
    from shootdown.result import Verdict

    def step(case: str, verdict: Verdict, **kw: Any) -> Any:
        return SimpleNamespace(case=case, verdict=verdict, problems=kw.get("problems", ()),
                               checks=kw.get("checks", ()), model=kw.get("model"))

    model = SimpleNamespace(status="fail", policy="v6.1.176", reason="step 1 differs",
                            divergence="first divergence at 2\nexpected: dsb ish\n"
                                       "issued:   (nothing more)")
    steps = [step("few-pages#1", Verdict.PASS),
             step("few-pages#2", Verdict.FAIL, problems=("rc 1",), model=model,
                  checks=(KernelCheck("coverage", "fail", "no DSB ISH after it"),
                          KernelCheck("kpti", "skip", "KPTI off")))]
    run: Any = SimpleNamespace(step_verdict=lambda s: s.verdict)
    assert failure_lines(run, steps) == [
        "few-pages#2: fail", "  rc 1", "  check coverage: no DSB ISH after it",
        "  model v6.1.176: fail: step 1 differs", "    first divergence at 2",
        "    expected: dsb ish", "    issued:   (nothing more)"]
    assert failure_lines(run, steps, divergence_lines=1)[-1] == "    first divergence at 2"
    assert failure_lines(run, steps[:1]) == []
