"""``shootdown run`` in the test's own process, for the top-level tests that read
its output (tests/ is on sys.path: conftest.py lives here, without __init__.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shootdown import cli
from shootdown.bugs import read_bugs


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """``shootdown run ARGS`` in this process, on real guests: exit code and stdout."""
    code = cli.main(["run", *args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out


def verdict_line(out: str) -> str:
    """The run's ``verdict: ...`` line."""
    return next(line for line in out.splitlines() if line.startswith("verdict: "))


def not_applicable_line(code: int, out: str) -> str:
    """The verdict line of a run that must be NOT-APPLICABLE (exit 6), never MISSED."""
    assert code == cli.ExitCode.NOT_APPLICABLE and int(code) == 6, out
    line = verdict_line(out)
    assert line.startswith("verdict: NOT-APPLICABLE") and "MISSED" not in out, out
    return line


def bug_releases(elf: Path, name: str) -> str:
    """Where the firmware ``elf`` says the injection ``name`` applies."""
    return next(b.releases for b in read_bugs(elf) if b.name == name)
