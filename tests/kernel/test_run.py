"""``shootdown kernel run`` on Debian bookworm's real 6.1 kernel: munmap steps are traced and pass
the model-free checks, with and without KPTI (about 6 s a run once the kernel is cached)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from shootdown.check.kernel import StepFacts, run_checks
from shootdown.errors import InfraError
from shootdown.kernel.locate import KernelFiles, locate
from shootdown.kernel.observe import ObservedOp

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


@pytest.fixture(scope="module", params=[False, True], ids=["kpti-off", "kpti-on"])
def traced(request: pytest.FixtureRequest, bookworm: KernelFiles,
           tmp_path_factory: pytest.TempPathFactory) -> tuple[bool, int, dict[str, Any]]:
    kpti: bool = request.param
    code, run = kernel_run(tmp_path_factory.mktemp("run"), *(["--kpti"] if kpti else []))
    return kpti, code, run


def test_munmap_is_traced_and_passes_the_checks(traced: tuple[bool, int, dict[str, Any]]
                                                ) -> None:
    kpti, code, run = traced
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
        # every TLBI of the teardown carries the step's ASID (or its KPTI user copy): the
        # workload's own, or for an exit the child's, which is never the parent's
        own = step["facts"]["asid"]
        assert own == asid if step["op"] != "EXIT-CHILD" else own not in {asid, asid | 1}
        assert tlbis and all(op["xt"] >> 48 in {own, own | 1} for op in tlbis)
        assert {op["function"] for op in teardown} <= {"tlb_flush", "tlb_flush_mmu",
                                                        "tlb_finish_mmu", "flush_tlb_mm",
                                                        "free_pgd_range"}
        # every step of the library is predicted by the model, instruction for instruction
        assert step["model"] is not None and step["model"]["status"] == "pass", step["model"]
        assert step["counts"]["dsb_ishst"] >= 1 and step["counts"]["dsb_ish"] >= 1
        # the rest of the window is shown, each with its reason, not dropped
        assert step["rest"] and all(r["reason"] for r in step["rest"])
        assert step["stale_pages"] == 0
    whole = next(s for s in run["steps"] if s["case"].startswith("whole-table#"))
    assert {c["name"]: c["status"] for c in whole["checks"]}["walk-caches"] == "pass"
    # the time is reported (its figures are benchmarks/kernel_latency.py's, not a test's)
    timings = run["timings"]
    assert 0 < timings["ready_to_verdict_s"] < timings["total_s"]


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


def ops_of(step: dict[str, Any]) -> list[ObservedOp]:
    keys = ("kind", "op", "xt", "cpu", "pc", "function", "line")
    return [ObservedOp(**{k: op[k] for k in keys}) for op in step["teardown"]]


def test_the_real_stream_with_one_instruction_broken_fails(
        traced: tuple[bool, int, dict[str, Any]]) -> None:
    """The checks are not blind on real data: the traced stream passes, and the same stream
    with its completing DSB ISH gone, its TLBIs made local, another ASID, or (KPTI) the
    user-ASID copies gone, fails."""
    kpti, _, run = traced
    step = next(s for s in run["steps"] if s["case"].startswith("few-pages#"))
    facts = StepFacts(**step["facts"])
    ops = ops_of(step)
    assert all(c.passed for c in run_checks(ops, facts))

    def fails(broken: list[ObservedOp], name: str) -> str:
        result = {c.name: c for c in run_checks(broken, facts)}[name]
        assert result.status == "fail", result
        return result.reason

    no_ish = [o for o in ops if (o.kind, o.op) != ("dsb", "ish")]
    assert "no DSB ISH" in fails(no_ish, "coverage")
    local = [replace(o, op=o.op[:-2]) if o.kind == "tlbi" else o for o in ops]
    assert "local" in fails(local, "coverage")
    other = [replace(o, xt=(o.xt or 0) ^ 0x40 << 48) if o.kind == "tlbi" else o for o in ops]
    assert "ASID" in fails(other, "coverage")
    if kpti:
        kernel_only = [o for o in ops if not (o.kind == "tlbi" and (o.xt or 0) >> 48 & 1)]
        assert fails(kernel_only, "kpti")


def test_kallsyms_with_protocol_words_in_symbol_names(qemu: str, tmp_path: Path) -> None:
    """sid's 7.x has Rust helpers named ``rust_helper_IS_ERR``: a symbol line is not the
    workload's ERR answer."""
    from shootdown.kernel.boot import KernelMachine

    try:
        sid = locate("debian:sid")
    except InfraError as exc:
        pytest.skip(f"Debian's sid kernel is not cached and cannot be fetched: {exc}")
    with KernelMachine(sid, log_path=tmp_path / "console.log", boot_timeout=60) as vm:
        names = {name for _, name in vm.kallsyms()}
    assert "rust_helper_IS_ERR" in names
    assert {"_stext", "_etext", "primary_entry"} <= names
