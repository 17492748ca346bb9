"""``shootdown run`` in the test's own process, for the top-level tests that read
its output (tests/ is on sys.path: conftest.py lives here, without __init__.py)."""

from __future__ import annotations

import pytest

from shootdown import cli


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """``shootdown run ARGS`` in this process, on real guests: exit code and stdout."""
    code = cli.main(["run", *args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out


def verdict_line(out: str) -> str:
    """The run's ``verdict: ...`` line."""
    return next(line for line in out.splitlines() if line.startswith("verdict: "))
