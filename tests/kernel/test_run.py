"""``shootdown kernel run`` on Debian bookworm's real 6.1 kernel: munmap steps are traced and pass
the model-free checks, with and without KPTI (about 6 s a run once the kernel is cached)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shootdown.errors import InfraError
from shootdown.kernel.locate import KernelFiles, locate

pytestmark = pytest.mark.guest


@pytest.fixture(scope="module")
def bookworm(qemu: str) -> KernelFiles:
    try:
        return locate("debian:bookworm")
    except InfraError as exc:
        pytest.skip(f"Debian's bookworm kernel is not cached and cannot be fetched: {exc}")


def kernel_run(tmp_path: Path, *args: str) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "shootdown.cli", "kernel", "run", "--json",
         "--log", str(tmp_path / "console.log"), *args],
        capture_output=True, text=True, timeout=240, check=False)
    assert done.stdout.strip(), done.stderr
    return done.returncode, json.loads(done.stdout)


@pytest.mark.parametrize("kpti", [False, True], ids=["kpti-off", "kpti-on"])
def test_munmap_is_traced_and_passes_the_checks(bookworm: KernelFiles, tmp_path: Path,
                                                kpti: bool) -> None:
    code, run = kernel_run(tmp_path, *(["--kpti"] if kpti else []))
    assert (code, run["verdict"]) == (0, "pass"), json.dumps(run["steps"], indent=1)[:4000]
    assert run["kpti"] is kpti
    asid = run["asid"]
    assert asid > 0
    for step in run["steps"]:
        statuses = {c["name"]: c["status"] for c in step["checks"]}
        assert statuses["coverage"] == "pass"
        assert statuses["kpti"] == ("pass" if kpti else "skip")
        teardown = step["teardown"]
        tlbis = [op for op in teardown if op["kind"] == "tlbi"]
        # every TLBI of the teardown carries the workload's ASID (or its KPTI user copy)
        assert tlbis and all(op["xt"] >> 48 in {asid, asid | 1} for op in tlbis)
        assert {op["function"] for op in teardown} <= {"tlb_flush", "tlb_flush_mmu",
                                                        "tlb_finish_mmu", "flush_tlb_mm"}
        assert step["counts"]["dsb ishst"] >= 1 and step["counts"]["dsb ish"] >= 1
        # the rest of the window is shown, each with its reason, not dropped
        assert step["rest"] and all(r["reason"] for r in step["rest"])
        assert step["stale_pages"] == 0
    whole = next(s for s in run["steps"] if s["case"] == "whole-table")
    assert {c["name"]: c["status"] for c in whole["checks"]}["walk-caches"] == "pass"
    timings = run["timings"]
    assert timings["ready_to_verdict_s"] < 30


def test_a_stub_system_map_is_bad_input(bookworm: KernelFiles, tmp_path: Path) -> None:
    stub = tmp_path / "System.map"
    stub.write_text("ffffffffffffffff B The real System.map is in the linux-image-6.1-dbg "
                    "package\n")
    done = subprocess.run(
        [sys.executable, "-m", "shootdown.cli", "kernel", "run", "--symbols", str(stub),
         "--log", str(tmp_path / "console.log")],
        capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and str(stub) in lines[0] and "stub" in lines[0]
