"""The local launcher: the console over a FIFO pair, a pty as QEMU's terminal, nothing left over."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pexpect
import pytest

from shootdown.guest.argv import build_argv
from shootdown.guest.definition import find_guest
from shootdown.guest.launcher import LocalLauncher, LocalProcess
from shootdown.guest.machine import Guest

pytestmark = pytest.mark.usefixtures("no_leftover_qemu")


@pytest.mark.guest
def test_console_runs_over_a_fifo_pair_removed_at_the_end(
        guests_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        check_gone: Callable[[int], None]) -> None:
    tmp = tmp_path / "run"
    tmp.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp))
    guest = Guest(find_guest("quick", guests_dir), log_path=tmp_path / "c.log")
    with guest:
        process = guest.process
        assert isinstance(process, LocalProcess)
        (private,) = tmp.iterdir()
        assert private.stat().st_mode & 0o777 == 0o700
        assert sorted(p.name for p in private.iterdir()) == ["console.in", "console.out"]
        argv = Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")
        assert f"pipe:{private}/console".encode() in argv
        assert "-serial" in guest.argv and "stdio" in guest.argv  # as recorded
        fds = {n: os.readlink(f"/proc/{process.pid}/fd/{n}") for n in (0, 1, 2)}
        assert fds[0].startswith("/dev/pts/") and fds[1] == fds[0]  # the controlling tty
        assert fds[2] == str(private / "console.out")  # QEMU's messages join the console
        assert [r.tag for r in guest.command("PING")] == ["PONG"]
    assert guest.exit_status == 0
    assert list(tmp.iterdir()) == []
    assert "PONG" in (tmp_path / "c.log").read_text()
    check_gone(process.pid)


@pytest.mark.guest
def test_sending_to_a_dead_qemu_does_not_block(firmware_elf: Path, qemu: str,
                                               tmp_path: Path) -> None:
    """The host holds console.in read-write, so no EPIPE tells it QEMU has gone."""
    process = LocalLauncher().spawn(build_argv(find_guest("virt-a57"), firmware_elf),
                                    str(tmp_path / "c.log"))
    try:
        process.console.expect(b" READY ", timeout=10)
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(5.0) == -signal.SIGKILL
        start = time.monotonic()
        data = b"PING\n" * 100_000  # several times a FIFO's buffer
        assert process.console.send(data) == len(data)
        assert time.monotonic() - start < 2
        with pytest.raises(pexpect.EOF):
            while True:
                process.console.read_nonblocking(65536, timeout=5)
    finally:
        process.kill()


def test_a_command_line_without_a_stdio_console_keeps_the_pty(tmp_path: Path) -> None:
    process = LocalLauncher().spawn(["sh", "-c", "read x; echo got $x; echo err >&2"],
                                    str(tmp_path / "c.log"))
    try:
        process.console.send(b"it\n")
        process.console.expect(b"got it", timeout=10)
        process.console.expect(b"err", timeout=10)
        assert process.wait(10.0) == 0
    finally:
        process.kill()
    assert "got it" in (tmp_path / "c.log").read_text()


SPAWN_PROBE = """
import sys
from shootdown.guest.launcher import LocalLauncher
process = LocalLauncher().spawn(["sh", "-c", "exit 0", "-serial", "stdio"], sys.argv[1])
print(" ".join(sorted(sys.modules)))
process.kill()
"""


def test_spawning_imports_nothing_heavy(tmp_path: Path) -> None:
    """The FIFO path (which logs the argv it runs) must not import logging to do so."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", SPAWN_PROBE, str(tmp_path / "c.log")],
                         capture_output=True, text=True, timeout=60, check=True)
    assert not {"logging", "pexpect", "tempfile", "subprocess"} & set(out.stdout.split())
