"""The product's own paths under every QEMU the suite is given (``each_qemu``, see
tests/conftest.py): a boot with the smoke test, a scenario run, and ``run --trace``
(QEMU's execution log read back and compared with the guest's report).

Kept small on purpose: the rest of the suite runs under SHOOTDOWN_QEMU alone; these are
the parts whose behaviour depends on the QEMU release (its options, its log format,
its CPU models)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shootdown.firmware import quick_check
from shootdown.guest.definition import find_guest
from shootdown.guest.machine import Guest
from shootdown.guest.qemu import version_line

pytestmark = [pytest.mark.guest, pytest.mark.usefixtures("no_leftover_qemu")]

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "guests" / "scenarios" / "4k" / "gather-small.toml"


def test_boot_smoke_poweroff(each_qemu: str, firmware_elf: Path, tmp_path: Path) -> None:
    guest = Guest(find_guest("virt-max"), log_path=tmp_path / "console.log")
    with guest:
        assert guest.qemu == each_qemu and guest.qemu_version() == version_line(each_qemu)
        assert guest.begin is not None
        assert guest.begin.text("build_id") == quick_check(firmware_elf).build_id
        smoke = guest.command("SMOKE")
        assert [r.text("status") for r in smoke if r.tag == "SMOKE"] == ["pass"]
    assert guest.exit_status == 0


def test_scenario_run_with_trace(each_qemu: str, firmware_elf: Path, tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "shootdown.cli", "run", str(SCENARIO),
                          "--policy", "v4.20,v6.19", "--trace", "--guest", "virt-max",
                          "--json", "--logdir", str(tmp_path)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    import json

    result = json.loads(out.stdout)
    assert result["verdict"] == "pass"
    assert [r["verdict"] for r in result["results"]] == ["pass", "pass"]
    assert {r["trace_view"] for r in result["results"]} == {"matches"}
    assert all(b["qemu_argv"][0] == each_qemu for b in result["boots"])
