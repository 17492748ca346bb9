"""``shootdown run --gdb``: the printed gdb command really stops at the failing step."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.guest

ROOT = Path(__file__).resolve().parents[2]


def test_gdb_stops_where_the_step_does_its_work(qemu: str, firmware_elf: Path,
                                                tmp_path: Path) -> None:
    gdb = shutil.which("gdb-multiarch")
    if gdb is None:
        pytest.skip("gdb-multiarch missing: run scripts/setup (apt-get install gdb-multiarch)")
    out = tmp_path / "run.txt"
    with out.open("w") as sink:
        run = subprocess.Popen(
            [sys.executable, "-m", "shootdown.cli", "run", str(ROOT / "docs/examples/basic.toml"),
             "--policy", "v4.20", "--inject", "wrong_asid", "--gdb", "--logdir",
             str(tmp_path / "logs")], stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while "gdb-multiarch" not in out.read_text():
            assert run.poll() is None, out.read_text()
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.1)
        line = next(x for x in out.read_text().splitlines() if "gdb-multiarch" in x)
        argv = shlex.split(line)
        assert "break tlb_finish_mmu" in argv  # step 1 of basic.toml is a gather
        argv.insert(1, "-batch")
        argv += ["-ex", "bt 1", "-ex", "delete", "-ex", "continue"]
        gdb_out = subprocess.run(argv, capture_output=True, text=True, timeout=60).stdout
        assert "hit Breakpoint 1, tlb_finish_mmu" in gdb_out, gdb_out
        assert run.wait(timeout=30) == 0  # CAUGHT, after gdb let it go
        assert out.read_text().count("CAUGHT") == 2  # the finding run and the debugged run
    finally:
        run.kill()
        run.wait()
