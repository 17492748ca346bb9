"""Console logs are capped: head and tail kept, a marker says how much was dropped (issue 11)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from shootdown.guest.argv import build_argv
from shootdown.guest.console_log import CONSOLE_LOG_LIMIT, HEAD_BYTES, TAIL_BYTES, ConsoleLog
from shootdown.guest.definition import find_guest
from shootdown.guest.launcher import LocalLauncher


@pytest.mark.guest
@pytest.mark.usefixtures("no_leftover_qemu")
def test_a_chatty_guest_leaves_a_capped_log(make_guest: Callable[..., Path], chatty_elf: Path,
                                            tmp_path: Path, qemu: str) -> None:
    """A real guest that prints for ever, read until it has printed well past the limit
    (however fast this machine runs it), then killed: the log is capped."""
    import pexpect

    definition = find_guest(str(make_guest(tmp_path / "g", "chatty", chatty_elf)))
    log = tmp_path / "chatty.console.log"
    proc = LocalLauncher().spawn(build_argv(definition, chatty_elf, qemu=qemu), str(log))
    seen = 0
    deadline = time.monotonic() + 120
    try:
        while seen < CONSOLE_LOG_LIMIT + 4 * 1024 * 1024:
            assert time.monotonic() < deadline, f"only {seen} console bytes in 120 s"
            try:
                seen += len(proc.console.read_nonblocking(65536, timeout=1))
            except pexpect.TIMEOUT:
                continue
    finally:
        proc.kill()  # closes the log: the tail is written then
    data = log.read_bytes()
    marker = b"\n[shootdown: "
    assert marker in data, f"no marker in {len(data)} bytes"
    head, rest = data.split(marker, 1)
    line, tail = rest.split(b"\n", 1)
    assert b"console bytes dropped here" in line
    assert int(line.split()[0]) >= seen - CONSOLE_LOG_LIMIT > 0
    assert len(head) == HEAD_BYTES and len(tail) == TAIL_BYTES
    assert len(data) < CONSOLE_LOG_LIMIT + 200
    assert head.startswith(b"chatter chatter") and b"chatter chatter" in tail[-200:]


def test_head_tail_and_marker() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.log"
        log = ConsoleLog(path, head=10, tail=10)
        for chunk in (b"0123456", b"789abcdef", b"ghij", b"klmnopqrstuvwxyz"):
            log.write(chunk)
        log.close()
        log.close()  # idempotent
        text = path.read_bytes()
    # 36 bytes seen: the first 10, the last 10, 16 dropped in between
    assert text == (b"0123456789\n[shootdown: 16 console bytes dropped here: the log keeps "
                    b"the first 10 and the last 10]\nqrstuvwxyz")


def test_a_short_console_is_kept_whole(tmp_path: Path) -> None:
    log = ConsoleLog(tmp_path / "x.log", head=10, tail=10)
    log.write(b"0123456789abc")
    log.close()
    assert (tmp_path / "x.log").read_bytes() == b"0123456789abc"


def test_a_full_disk_is_an_infra_error_naming_the_log(tmp_path: Path) -> None:
    """A write the file system refuses (here EFBIG from RLIMIT_FSIZE, in a child
    process: a small tmpfs needs mount rights the tests may lack) is one InfraError."""
    script = textwrap.dedent("""
        import resource, signal, sys
        from shootdown.errors import InfraError
        from shootdown.guest.console_log import ConsoleLog
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        log = ConsoleLog(sys.argv[1])
        try:
            for _ in range(100):
                log.write(b"x" * 1000)
                log.flush()
        except InfraError as exc:
            print(exc)
            sys.exit(3)
        sys.exit(0)
    """)
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "x.log")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert proc.stdout.strip() == (f"{tmp_path / 'x.log'}: cannot write the console log: "
                                   "File too large")
