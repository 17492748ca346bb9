"""``shootdown run --trace``: the report must equal what the CPU executed.

A firmware that misreports is made by patching one word of the real ELF:
``op_dsb`` executes TLBI VMALLE1IS where it logs DSB ISHST. The probes still
hold (more was invalidated, not less) and the report still equals the golden
model, so only the trace can catch it -- and it must.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.guest

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "guests" / "scenarios" / "4k" / "gather-small.toml"
TLBI_VMALLE1IS = 0xD508831F


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shootdown.cli", "run", *args],
                          capture_output=True, text=True, timeout=120)


def test_trace_passes_on_the_real_firmware(qemu: str, firmware_elf: Path) -> None:
    out = run(str(SCENARIO), "--policy", "v4.20,v6.19", "--trace", "--guest", "virt-max")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 pass" in out.stdout


def test_misreporting_firmware_is_caught_only_by_the_trace(
        qemu: str, firmware_elf: Path, tmp_path: Path, make_guest: Callable[..., Path],
        patch_elf: Callable[..., Path]) -> None:
    bad = patch_elf(firmware_elf, tmp_path / "misreports.elf", "maint_dsb_ishst", "dsb", "ishst",
                    TLBI_VMALLE1IS)
    guest = make_guest(tmp_path / "guests", "liar", bad, cpu="max", idle=10, total=60)

    untraced = run(str(SCENARIO), "--policy", "v4.20", "--guest", str(guest))
    assert untraced.returncode == 0, untraced.stdout + untraced.stderr  # blind without it

    traced = run(str(SCENARIO), "--policy", "v4.20", "--guest", str(guest), "--trace",
                 "--logdir", str(tmp_path / "logs"))
    assert traced.returncode == 1, traced.stdout + traced.stderr
    assert "firmware misreports" in traced.stdout
    assert "reported DSB ishst" in traced.stdout and "executed TLBI vmalle1is" in traced.stdout
    assert "maint_dsb_ishst" in traced.stdout  # where the CPU really was
