"""Progress on long commands: a bar on stderr when it is a terminal, never on a
pipe, and stdout unchanged (issue 11).  fuzz runs real guests here; the lint's
bar is tested in tests/lint/test_lint_speed.py."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

FUZZ = ["fuzz", "--seed", "3", "--count", "6", "--policy", "v6.19"]


def _tty_stderr(args: list[str]) -> tuple[int, bytes, bytes]:
    master, slave = pty.openpty()
    # a terminal that can draw (TERM=dumb, as under env -i or a bare chroot, gets no bar)
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL,
                            env={**os.environ, "TERM": "xterm"})
    os.close(slave)
    err = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        err += chunk
    assert proc.stdout is not None
    out = proc.stdout.read()
    proc.wait(timeout=300)
    os.close(master)
    return proc.returncode, out, err


def test_fuzz_counts_its_runs_on_a_terminal_only(tmp_path: Path) -> None:
    exe = str(Path(sys.executable).with_name("shootdown"))
    args = [exe, *FUZZ, "--out", str(tmp_path / "out")]
    piped = subprocess.run(args, capture_output=True, timeout=300, check=False)
    assert piped.returncode == 0, piped.stderr.decode()[-2000:]
    assert b"\x1b[" not in piped.stderr  # no bar on a pipe
    rc, out, err = _tty_stderr(args)
    assert rc == 0
    assert b"fuzz" in err and b"6/6" in err  # the bar, counting the runs
    strip = [ln for ln in out.splitlines() if not ln.startswith(b"fuzz: ")]  # timings differ
    assert strip == [ln for ln in piped.stdout.splitlines() if not ln.startswith(b"fuzz: ")]
