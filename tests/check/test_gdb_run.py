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


def test_gdb_stops_before_the_diverging_instruction(qemu: str, firmware_elf: Path,
                                                    tmp_path: Path) -> None:
    """The stop comes before the diverging TLBI executes, not at the step's entry.

    basic.toml's step 1 is a gather with a mid-gather flush: under wrong_asid its
    instruction 1 (TLBI ASIDE1IS with the wrong ASID) is issued by
    tlb_flush_mmu, before tlb_finish_mmu is even entered, so a breakpoint there
    stops after the divergence. At the stop, the step must have issued exactly
    ``index`` instructions, and the next maintenance instruction the CPU
    executes must be the diverging one.
    """
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
        text = out.read_text()
        assert "step 1, instruction 1" in text
        line = next(x for x in text.splitlines() if "gdb-multiarch" in x)
        argv = shlex.split(line)
        argv.insert(1, "-batch")
        argv += ["-ex", "printf \"STOP step=%d issued=%d\\n\", scn_step_now, oplog_len",
                 "-ex", "bt 6",
                 "-ex", "delete",
                 # the next maintenance instruction the CPU executes
                 "-ex", "rbreak ^maint_",
                 "-ex", "continue",
                 "-ex", "printf \"NEXT x0=%#lx\\n\", $x0",
                 "-ex", "x/i $pc",
                 "-ex", "delete", "-ex", "continue"]
        gdb_out = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, timeout=60).stdout
        assert "STOP step=1 issued=1" in gdb_out, gdb_out  # DSB ISHST done, the TLBI not yet
        assert "op_tlbi" in gdb_out and "tlb_flush_mmu_tlbonly" in gdb_out, gdb_out
        assert "tlb_finish_mmu" not in gdb_out.split("NEXT")[0], gdb_out
        # the diverging instruction is still to come: TLBI ASIDE1IS with ASID 42 ^ 0x80
        assert "NEXT x0=0xaa000000000000" in gdb_out, gdb_out
        assert "tlbi\taside1is, x0" in gdb_out or "tlbi aside1is, x0" in gdb_out, gdb_out
        assert run.wait(timeout=30) == 0  # CAUGHT, after gdb let it go
        assert out.read_text().count("CAUGHT") == 2  # the finding run and the debugged run
    finally:
        run.kill()
        run.wait()


def test_plan_without_an_index_stops_at_the_step_entry(firmware_elf: Path) -> None:
    """A probe failure has no instruction index: the step's entry function, as before."""
    from shootdown.debug import plan_gdb

    plan = plan_gdb(firmware_elf, step_kinds=["gather", "gather"], failing_step=2,
                    policy="v4.20", port=1234)
    assert plan.breakpoint == "tlb_finish_mmu" and plan.ignore == 1
    exact = plan_gdb(firmware_elf, step_kinds=["gather"], failing_step=1, failing_index=5,
                     policy="v4.20", port=1234)
    assert "break op_tlbi if scn_step_now == 1 && oplog_len == 5" in exact.gdb_argv
