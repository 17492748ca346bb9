"""The CLI's error boundary: internal errors, escaped control characters, exit codes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from shootdown import cli
from shootdown.errors import GuestCrash
from shootdown.result import Verdict


def test_internal_error_is_one_line_with_a_private_traceback(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A bug inside a subcommand: one line, its own exit code, the traceback in a file."""
    import shootdown.bugs

    def broken(path: object) -> None:
        raise RuntimeError("section table exploded")

    monkeypatch.setattr(shootdown.bugs, "read_bugs", broken)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    code = cli.main(["bugs", "--firmware", "whatever.elf"])
    out, err = capsys.readouterr()
    assert code == cli.ExitCode.INTERNAL and int(code) == 4
    assert code not in (cli.ExitCode.FAIL, cli.ExitCode.INFRA)
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("shootdown: internal error: RuntimeError: section table "
                               "exploded (traceback: ")
    assert "Traceback" not in err and out == ""
    path = Path(lines[0].rsplit("(traceback: ", 1)[1].rstrip(")"))
    assert path.parent == tmp_path / "cache" / "shootdown"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert "Traceback" in text and "section table exploded" in text and "broken" in text


def test_internal_error_without_a_cache_dir_falls_back_to_tmp(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    import shootdown.bugs

    def broken(path: object) -> None:
        raise KeyError("x")

    blocked = tmp_path / "file"
    blocked.write_text("")  # a file where the cache folder would go
    monkeypatch.setattr(shootdown.bugs, "read_bugs", broken)
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    assert cli.main(["bugs", "--firmware", "x.elf"]) == cli.ExitCode.INTERNAL
    err = capsys.readouterr().err
    path = Path(err.rsplit("(traceback: ", 1)[1].strip().rstrip(")"))
    assert path.parent == tmp_path and "KeyError" in path.read_text()


def test_keyboard_interrupt_stays_130(monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    import shootdown.bugs

    def interrupted(path: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(shootdown.bugs, "read_bugs", interrupted)
    assert cli.main(["bugs", "--firmware", "x.elf"]) == 130
    assert capsys.readouterr().err == "shootdown: interrupted\n"


def test_escape_sequences_in_errors_and_tails_are_shown_escaped(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A guest console that prints ESC sequences must not drive the user's terminal."""
    import shootdown.bugs

    def crash(path: object) -> None:
        raise GuestCrash("guest said \x1b[2J\x1b]0;owned\x07", log_path="/tmp/c\x1b.log",
                         tail=["READY", "\x1b[31mred\x1b[0m \u202eevil\r", "caf\u00e9"])

    monkeypatch.setattr(shootdown.bugs, "read_bugs", crash)
    assert cli.main(["bugs", "--firmware", "x.elf"]) == cli.ExitCode.INFRA
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err and "\r" not in err and "\u202e" not in err
    assert "guest said \\x1b[2J\\x1b]0;owned\\x07" in err
    assert "  | \\x1b[31mred\\x1b[0m \\u202eevil\\x0d\n" in err
    assert "  | café\n" in err  # printable non-ASCII stays readable
    assert "log: /tmp/c\\x1b.log" in err


def test_escape_sequences_in_a_bad_file_name(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A real bad-input error naming a file whose name holds ESC."""
    name = str(tmp_path / "evil\x1b[2Jname.toml")
    assert cli.main(["run", name]) == cli.ExitCode.BAD_INPUT
    err = capsys.readouterr().err
    assert "\x1b" not in err and "evil\\x1b[2Jname" in err


def test_exit_codes_are_distinct_and_every_verdict_has_one() -> None:
    codes = [c.value for c in cli.ExitCode]
    assert len(set(codes)) == len(codes)
    assert {cli.exit_code_for_verdict(v) for v in Verdict} <= set(cli.ExitCode)
    assert cli.exit_code_for_verdict(Verdict.NOTHING_RAN) == cli.ExitCode.NOTHING_RAN
    assert cli.exit_code_for_verdict(Verdict.NOT_APPLICABLE) == cli.ExitCode.NOT_APPLICABLE
    assert cli.exit_code_for_verdict(Verdict.EMULATOR_LIMIT) == cli.ExitCode.EMULATOR_LIMIT
    assert cli.exit_code_for_verdict(Verdict.MISSED) == cli.ExitCode.FAIL
    assert cli.exit_code_for(ValueError()) == cli.ExitCode.INTERNAL


def test_epilog_lists_every_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for code in cli.ExitCode:
        assert f" {code.value} " in out, code
    for word in ("pass", "caught", "missed", "not applicable", "nothing ran",
                 "emulator limitation", "bad input", "infrastructure", "internal error"):
        assert word in out, word


@pytest.mark.guest
def test_internal_error_inside_run_is_not_a_validation_failure(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], qemu: str, firmware_elf: Path) -> None:
    """`run` on a real guest, with the checker made to crash: exit 4, never 1 or 3."""
    import shootdown.check.scenario

    def broken(*args: object, **kwargs: object) -> None:
        raise AttributeError("'NoneType' object has no attribute 'step'")

    monkeypatch.setattr(shootdown.check.scenario, "run_verdict", broken)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    example = Path(__file__).resolve().parents[1] / "docs" / "examples" / "basic.toml"
    code = cli.main(["run", str(example), "--logdir", str(tmp_path / "logs")])
    err = capsys.readouterr().err
    assert code == cli.ExitCode.INTERNAL, err
    line = next(x for x in err.splitlines() if x.startswith("shootdown: internal error: "))
    assert "AttributeError: 'NoneType' object has no attribute 'step' (traceback: " in line
    assert "Traceback" not in err
    saved = Path(line.rsplit("(traceback: ", 1)[1].rstrip(")"))
    assert "run_verdict" in saved.read_text() or "broken" in saved.read_text()


def test_a_traceback_that_cannot_be_saved_is_named_not_raised(tmp_path: Path) -> None:
    """save_traceback on a full disk (RLIMIT_FSIZE stands in: EFBIG on the same
    OSError path as ENOSPC) answers "not saved: PATH: reason" and leaves no
    half-written file: the internal-error line must still be printed."""
    import resource
    import subprocess
    import sys

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (16, 16))

    code = ("from shootdown.cli import save_traceback\n"
            "try:\n    raise RuntimeError('x' * 4096)\n"
            "except RuntimeError as e:\n    print(save_traceback(e))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, preexec_fn=limit,
                          env={**os.environ, "XDG_CACHE_HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("not saved: "), proc.stdout
    assert proc.stdout.rstrip().endswith("File too large"), proc.stdout
    assert not list((tmp_path / "shootdown").glob("traceback-*"))
