"""QEMU 8.2+'s named Armv9 cores with FEAT_TTL and FEAT_TLBIRANGE (guests/virt-n2.toml,
guests/virt-a710.toml): they run the TTL and range scenarios where the QEMU has them, and
are skipped with a one-line reason naming the QEMU where it does not (not a QEMU error)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shootdown.guest.qemu import version

pytestmark = pytest.mark.guest

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = [str(ROOT / "guests" / "scenarios" / "4k" / name)
             for name in ("ttl-tlbirange-munmap.toml", "tlbirange-gather.toml")]


@pytest.mark.parametrize(("guest", "cpu"), [("virt-n2", "neoverse-n2"),
                                            ("virt-a710", "cortex-a710")])
def test_named_core_runs_or_is_skipped_with_the_reason(each_qemu: str, firmware_elf: Path,
                                                       guest: str, cpu: str) -> None:
    out = subprocess.run([sys.executable, "-m", "shootdown.cli", "run", *SCENARIOS,
                          "--guest", guest, "--policy", "v6.19"],
                         capture_output=True, text=True, timeout=120, check=False)
    jobs = [line.split() for line in out.stdout.splitlines() if "v6.19" in line and "4k" in line]
    assert len(jobs) == 2, out.stdout + out.stderr
    if version(each_qemu) >= (8, 2, 0):
        # PASS, not SKIP: the firmware found FEAT_TTL and FEAT_TLBIRANGE in the ID registers.
        assert out.returncode == 0, out.stdout + out.stderr
        assert [j[0] for j in jobs] == ["PASS", "PASS"]
    else:
        assert out.returncode == 5, out.stdout + out.stderr  # nothing ran
        assert [j[0] for j in jobs] == ["SKIP", "SKIP"]
        assert f"which has no CPU model '{cpu}'" in out.stdout
        assert "Traceback" not in out.stderr
