"""The temporary log folder: private and unpredictable (issue 11)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from shootdown.commands.run import new_logdir


def test_new_logdir_is_private_and_unpredictable(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    a, b = new_logdir(), new_logdir()
    assert a != b
    for d in (a, b):
        name = os.path.basename(d)
        assert name.startswith("shootdown-") and os.path.dirname(d) == str(tmp_path)
        # Nothing another user could guess in advance: no pid, no time stamp.
        assert str(os.getpid()) not in name and time.strftime("%Y%m%d") not in name
        st = os.lstat(d)
        assert st.st_mode & 0o777 == 0o700 and st.st_uid == os.getuid()


def test_an_unusable_tmpdir_is_one_line_exit_3(tmp_path: Path) -> None:
    import subprocess
    import sys

    env = {**os.environ, "TMPDIR": str(tmp_path / "missing")}
    proc = subprocess.run([sys.executable, "-m", "shootdown.cli", "run"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.strip() == (f"shootdown: error: {tmp_path / 'missing'}: cannot make a "
                                   "log folder there ($TMPDIR): No such file or directory")
