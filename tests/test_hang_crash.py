"""Hangs, crashes and launch failures are reported as such, in time, with nothing left running.

These boot the real firmware under QEMU and ask it to misbehave
(``DEBUG hang``, ``DEBUG crash``), or start QEMU so that it cannot work.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from shootdown.errors import GuestCrash, GuestTimeout, InfraError, LaunchError
from shootdown.guest.definition import find_guest
from shootdown.guest.launcher import LocalProcess
from shootdown.guest.machine import Guest

pytestmark = [pytest.mark.guest, pytest.mark.usefixtures("no_leftover_qemu")]

def pid_of(guest: Guest) -> int:
    process = guest.process
    assert isinstance(process, LocalProcess)
    return process.pid


def test_hang_is_a_timeout_within_the_idle_limit(
        guests_dir: Path, tmp_path: Path, check_gone: Callable[[int], None]) -> None:
    definition = find_guest("quick", guests_dir)
    idle = definition.timeouts.idle
    guest = Guest(definition, log_path=tmp_path / "hang.log")
    guest.launch()
    start = time.monotonic()
    with pytest.raises(GuestTimeout) as info:
        guest.command("DEBUG hang")
    elapsed = time.monotonic() - start
    assert idle <= elapsed < idle + 1.5
    assert f"no console output for {idle:g} s" in str(info.value)
    assert info.value.log_path == str(tmp_path / "hang.log")
    assert any("READY" in line for line in info.value.tail)
    assert "BEGIN" in (tmp_path / "hang.log").read_text()
    check_gone(pid_of(guest))
    # A guest that failed stays failed, with the first cause.
    with pytest.raises(GuestTimeout) as again:
        guest.command("PING")
    assert again.value is info.value
    guest.shutdown()
    guest.shutdown()


def test_crash_reports_esr_elr_far(guests_dir: Path, tmp_path: Path,
                                   check_gone: Callable[[int], None]) -> None:
    guest = Guest(find_guest("quick", guests_dir), log_path=tmp_path / "crash.log")
    start = time.monotonic()
    with pytest.raises(GuestCrash) as info, guest:
        guest.command("DEBUG crash")
    assert time.monotonic() - start < 5
    message = str(info.value)
    for key in ("esr=0x", "elr=0x", "far=0x", "EC 0x"):
        assert key in message
    assert info.value.log_path == str(tmp_path / "crash.log")
    assert any("FAULT" in line for line in info.value.tail)
    check_gone(pid_of(guest))


def test_silent_guest_times_out_at_boot(make_guest: Callable[..., Path], firmware_elf: Path,
                                        tmp_path: Path, qemu: str,
                                        check_gone: Callable[[int], None]) -> None:
    # -S: QEMU starts with its CPUs stopped, so the guest never says a word.
    path = make_guest(tmp_path / "g", "silent", firmware_elf, boot=1, idle=5, total=10,
                      extra='extra_args = ["-S"]')
    guest = Guest(find_guest(str(path)), log_path=tmp_path / "silent.log")
    start = time.monotonic()
    with pytest.raises(GuestTimeout, match="did not answer within 1 s"):
        guest.launch()
    assert time.monotonic() - start < 2.5
    check_gone(pid_of(guest))


def test_total_budget(make_guest: Callable[..., Path], firmware_elf: Path, tmp_path: Path,
                      qemu: str) -> None:
    path = make_guest(tmp_path / "g", "budget", firmware_elf, boot=1, idle=5, total=1.5)
    guest = Guest(find_guest(str(path)), log_path=tmp_path / "budget.log")
    guest.launch()
    with pytest.raises(GuestTimeout, match=r"total budget of 1\.5 s"):
        guest.command("DEBUG hang")


def test_missing_qemu_binary(guests_dir: Path, tmp_path: Path) -> None:
    guest = Guest(find_guest("quick", guests_dir), log_path=tmp_path / "x.log",
                  qemu=str(tmp_path / "no-such-qemu"))
    with pytest.raises(LaunchError) as info:
        guest.launch()
    assert "no-such-qemu: QEMU binary not found" in str(info.value)
    assert "\n" not in str(info.value)
    guest.shutdown()  # safe after a failed launch, and twice
    guest.shutdown()


def test_qemu_refusing_its_command_line(make_guest: Callable[..., Path], firmware_elf: Path,
                                        tmp_path: Path, qemu: str) -> None:
    path = make_guest(tmp_path / "g", "badcpu", firmware_elf, cpu="no-such-cpu")
    guest = Guest(find_guest(str(path)), log_path=tmp_path / "bad.log")
    with pytest.raises(LaunchError) as info:
        guest.launch()
    message = str(info.value)
    assert "exited with status 1 before the guest started" in message
    assert "no-such-cpu" in message  # QEMU's own first line names the cause
    assert "\n" not in message


def test_payload_that_is_not_shootdown(make_guest: Callable[..., Path], minimal_elf: Path,
                                       tmp_path: Path, qemu: str) -> None:
    # Prints a line and powers off without a single record.
    path = make_guest(tmp_path / "g", "minimal", minimal_elf)
    guest = Guest(find_guest(str(path)), log_path=tmp_path / "min.log")
    with pytest.raises(LaunchError, match="before the guest started: minimal payload: up"):
        guest.launch()


def test_errors_are_infra_errors() -> None:
    for cls in (GuestCrash, GuestTimeout, LaunchError):
        assert issubclass(cls, InfraError)


def test_ctrl_c_leaves_no_qemu(guests_dir: Path, tmp_path: Path) -> None:
    """An interrupted ``shootdown run`` still kills its QEMU (the finally path)."""
    log = tmp_path / "quick-4k.console.log"
    proc = subprocess.Popen([sys.executable, "-m", "shootdown.cli", "run", "--guests-dir",
                             str(guests_dir), "--guest", "quick", "--logdir", str(tmp_path),
                             "--debug-command", "hang"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while not (log.exists() and "READY" in log.read_text()):
        assert time.monotonic() < deadline, "the guest never became ready"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130
    assert b"interrupted" in err and b"Traceback" not in err
    # no_leftover_qemu (autouse for this module) checks that QEMU is gone.


def test_qemu_does_not_outlive_a_killed_host(make_guest: Callable[..., Path], firmware_elf: Path,
                                             tmp_path: Path, qemu: str,
                                             own_qemus: Callable[[], list[int]],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL the host (no cleanup runs): the pty is QEMU's controlling terminal, so
    the kernel hangs it up and QEMU quits instead of spinning on, orphaned."""
    # The dead host cannot remove its console FIFOs: let them land in tmp_path.
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    make_guest(tmp_path / "g", "patient", firmware_elf, idle=60, total=120)
    log = tmp_path / "patient-4k.console.log"
    proc = subprocess.Popen([sys.executable, "-m", "shootdown.cli", "run", "--guests-dir",
                             str(tmp_path / "g"), "--guest", "patient", "--logdir",
                             str(tmp_path), "--debug-command", "hang"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not (log.exists() and "READY" in log.read_text()):
        assert time.monotonic() < deadline, "the guest never became ready"
        time.sleep(0.05)
    assert own_qemus(), "QEMU should be running (hanging) before its host dies"
    proc.kill()
    proc.wait(timeout=10)
    deadline = time.monotonic() + 5
    while own_qemus():
        assert time.monotonic() < deadline, f"QEMU outlived its host: {own_qemus()}"
        time.sleep(0.05)


def test_qemu_dying_mid_run_is_a_crash_with_its_message(
        guests_dir: Path, tmp_path: Path, check_gone: Callable[[int], None]) -> None:
    guest = Guest(find_guest("quick", guests_dir), log_path=tmp_path / "term.log")
    guest.launch()
    os.kill(pid_of(guest), signal.SIGTERM)  # QEMU says why it stops, then exits
    with pytest.raises(GuestCrash) as info:
        guest.command("DEBUG hang")
    assert "terminating on signal 15" in str(info.value)
    assert "last record: SD1" in str(info.value)
    check_gone(pid_of(guest))
