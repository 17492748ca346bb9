"""SIGTERM and SIGHUP clean up as Ctrl-C does (issue 11).

A real ``shootdown run`` whose guest hangs is sent each signal mid-run: it
must exit 128+signum, kill its QEMU, remove its console FIFO folder and print
where the console log is.
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

pytestmark = [pytest.mark.guest, pytest.mark.usefixtures("no_leftover_qemu")]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT],
                         ids=lambda s: signal.Signals(s).name)
def test_signal_mid_run_cleans_up_and_prints_the_log(
        make_guest: Callable[..., Path], firmware_elf: Path, tmp_path: Path, qemu: str,
        own_qemus: Callable[[], list[int]], signum: int) -> None:
    make_guest(tmp_path / "g", "patient", firmware_elf, idle=60, total=120)
    runtime, tmp = tmp_path / "runtime", tmp_path / "tmp"
    runtime.mkdir(mode=0o700)
    tmp.mkdir()
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime), TMPDIR=str(tmp))
    proc = subprocess.Popen([sys.executable, "-m", "shootdown.cli", "run", "--guests-dir",
                             str(tmp_path / "g"), "--guest", "patient",
                             "--debug-command", "hang"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 20
    while not any("READY" in p.read_text() for p in tmp.glob("shootdown-*/*.console.log")):
        assert time.monotonic() < deadline, "the guest never became ready"
        time.sleep(0.05)
    assert own_qemus() and any(runtime.glob("shootdown-console-*"))
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err and "interrupted" in err
    (log,) = tmp.glob("shootdown-*/patient-4k.console.log")
    assert f"log: {log}" in err
    assert not list(runtime.glob("shootdown-console-*")), "the console FIFO folder was left"
    # no_leftover_qemu checks (in /proc) that the QEMU is gone.
