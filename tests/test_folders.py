"""Output folders a user names: one run at a time, and unusable paths refused (issue 11)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

SHOOTDOWN = [sys.executable, "-m", "shootdown.cli"]


def write_matrix(where: Path) -> Path:
    """A one-job matrix (never run by these tests: they stop before any job)."""
    (where / "scen").mkdir()
    data = Path(__file__).resolve().parent / "matrix" / "data" / "munmap-2m.toml"
    (where / "scen" / "a.toml").write_text(data.read_text())
    m = where / "m.toml"
    m.write_text('name = "t"\n[[set]]\nscenarios = ["scen"]\nguests = ["virt-a57"]\n'
                 'granules = ["4k"]\npolicies = ["v6.19"]\n')
    return m


def start_hanging_run(guests: Path, logdir: Path) -> subprocess.Popen[bytes]:
    """A real ``shootdown run`` whose guest hangs, holding ``logdir`` until interrupted."""
    proc = subprocess.Popen([*SHOOTDOWN, "run", "--guests-dir", str(guests), "--guest",
                             "patient", "--logdir", str(logdir), "--debug-command", "hang"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    log = logdir / "patient-4k.console.log"
    deadline = time.monotonic() + 20
    while not (log.exists() and "READY" in log.read_text()):
        assert time.monotonic() < deadline, "the guest never became ready"
        time.sleep(0.05)
    return proc


@pytest.mark.guest
@pytest.mark.usefixtures("no_leftover_qemu")
def test_two_runs_sharing_a_logdir(make_guest: Callable[..., Path], firmware_elf: Path,
                                   tmp_path: Path, qemu: str) -> None:
    guests = tmp_path / "g"
    make_guest(guests, "patient", firmware_elf, idle=60, total=120)
    logdir = tmp_path / "logs"
    first = start_hanging_run(guests, logdir)
    try:
        second = subprocess.run([*SHOOTDOWN, "run", "--guests-dir", str(guests), "--guest",
                                 "patient", "--logdir", str(logdir)],
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 3, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in second.stderr
        assert str(logdir) in lines[0] and f"pid {first.pid}" in lines[0]
        # the first run's log was left alone
        assert "READY" in (logdir / "patient-4k.console.log").read_text()
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=20)
    assert first.returncode == 130


def test_two_matrix_runs_on_one_output_folder(tmp_path: Path) -> None:
    """The second ``matrix`` run is refused before it touches the first one's results."""
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time\nfrom shootdown.folders import lock_folder\n"
                               "lock_folder(sys.argv[1], 'x')\nprint('held', flush=True)\n"
                               "time.sleep(60)\n", str(out)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        (out / "results.jsonl").write_text("{}\n")
        m = write_matrix(tmp_path)
        proc = subprocess.run([*SHOOTDOWN, "matrix", str(m), "--out", str(out)],
                              capture_output=True, text=True, timeout=60)
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 3, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert str(out) in lines[0] and f"pid {holder.pid}" in lines[0]
    assert (out / "results.jsonl").read_text() == "{}\n"


@pytest.mark.parametrize("kind", ["proc", "file"])
def test_unusable_logdir_is_one_line_exit_2(tmp_path: Path, kind: str) -> None:
    if kind == "proc":
        where, reason = "/proc/x", "No such file or directory"
    else:
        (tmp_path / "f").write_text("")
        where, reason = str(tmp_path / "f"), "Not a directory"
    proc = subprocess.run([*SHOOTDOWN, "run", "--logdir", where],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and where in lines[0] and reason in lines[0], proc.stderr


def test_unusable_matrix_output_folder_is_one_line_exit_2(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    m = write_matrix(tmp_path)
    proc = subprocess.run([*SHOOTDOWN, "matrix", str(m), "--out", str(tmp_path / "f" / "out")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(tmp_path / "f" / "out") in lines[0], proc.stderr
    assert "Not a directory" in lines[0]


def _file_size_limit(limit: int) -> Callable[[], None]:
    def apply() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.guest
@pytest.mark.parametrize("scenarios", [[], ["guests/scenarios/4k", "--policy", "v6.19"]],
                         ids=["smoke", "batch"])
def test_a_full_disk_mid_run_is_one_line_exit_3(tmp_path: Path, firmware_elf: Path, qemu: str,
                                               scenarios: list[str]) -> None:
    """Writes refused mid-run.  A small tmpfs needs mount rights the tests may not
    have, so the child gets RLIMIT_FSIZE (EFBIG, "File too large"), which goes
    through the same OSError paths as ENOSPC."""
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([*SHOOTDOWN, "run", *scenarios, "--logdir", str(tmp_path / "l")],
                          capture_output=True, text=True, timeout=120, cwd=root,
                          preexec_fn=_file_size_limit(300))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("shootdown: error:")]
    assert len(errors) == 1 and str(tmp_path / "l") in errors[0], proc.stderr
    assert errors[0].endswith("File too large"), proc.stderr


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs: a disk that really fills (ENOSPC).  Needs mount rights."""
    where = tmp_path / "small"
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip()}); "
                    "test_a_full_disk_mid_run_is_one_line_exit_3 covers the path with EFBIG")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False)


@pytest.mark.guest
def test_a_really_full_disk_mid_run_is_one_line_exit_3(full_disk: Path, firmware_elf: Path,
                                                      qemu: str) -> None:
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([*SHOOTDOWN, "run", "guests/scenarios/4k", "--policy", "v4.19,v6.19",
                           "--logdir", str(full_disk / "l")],
                          capture_output=True, text=True, timeout=120, cwd=root)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "No space left" in line]
    assert len(errors) == 1 and errors[0].startswith("shootdown: error: "), proc.stderr
    assert str(full_disk / "l") in errors[0]
