"""A real Debian kernel (bookworm's 6.1) boots with the workload as /init.

The kernel is fetched once (verified, ~60 MB) and cached; when Debian's
archive cannot be reached and nothing is cached the tests are skipped with
the reason.  Each boot takes about 2 s under TCG.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shootdown.errors import GuestCrash, GuestTimeout, InfraError, ProtocolError
from shootdown.kernel.boot import KernelMachine, MachineSpec, StepResult, kernel_argv
from shootdown.kernel.locate import KernelFiles, locate
from shootdown.kernel.smoke import DEFAULT_ADDR, judge_smoke, run_smoke

pytestmark = pytest.mark.guest

A = DEFAULT_ADDR


@pytest.fixture(scope="session")
def bookworm(qemu: str) -> KernelFiles:
    """Debian bookworm's arm64 kernel, from the cache or fetched now."""
    try:
        return locate("debian:bookworm")
    except InfraError as exc:
        pytest.skip(f"Debian's bookworm kernel is not cached and cannot be fetched: {exc}")


@pytest.fixture
def vm(bookworm: KernelFiles, tmp_path: Path) -> Iterator[KernelMachine]:
    with KernelMachine(bookworm, log_path=tmp_path / "console.log", boot_timeout=60) as machine:
        yield machine


def test_argv_is_a_pure_function() -> None:
    argv = kernel_argv("qemu-system-aarch64", MachineSpec(append=("kpti=1",)), "Image", "i.cpio")
    assert argv == [
        "qemu-system-aarch64", "-M", "virt", "-cpu", "max,pauth-impdef=on", "-smp", "2",
        "-m", "512M", "-accel", "tcg,thread=single", "-nographic", "-nodefaults",
        "-no-user-config", "-no-reboot", "-serial", "stdio", "-kernel", "Image",
        "-initrd", "i.cpio", "-append", "console=ttyAMA0 nokaslr panic=-1 rdinit=/init kpti=1"]


def test_munmap_then_the_other_cpu_takes_sigsegv(vm: KernelMachine) -> None:
    assert vm.ready["pagesize"] == "4096"
    assert vm.ready["probe_cpu"] != vm.ready["cpu"]
    assert vm.boot_seconds is not None and vm.boot_seconds < 60
    result = run_smoke(vm, pages=4)
    assert result.passed, result.problems
    warm, probe = result.steps[1], result.steps[3]
    assert (warm.number_field("loaded"), warm.number_field("segv")) == (4, 0)
    assert (probe.number_field("loaded"), probe.number_field("segv")) == (0, 4)
    assert probe.number_field("efault") == 4
    assert probe.fields["si_code"] == "1"  # SEGV_MAPERR: no VMA there any more
    assert probe.fields["cpu"] == vm.ready["probe_cpu"]


def test_the_other_steps(vm: KernelMachine) -> None:
    # PROT_NONE on the first page: the probe's load faults there (an access error)
    assert vm.step("MMAP", A, 0x4000, "populate").rc == 0
    assert vm.step("MPROTECT", A, 0x1000, "none").rc == 0
    probe = vm.step("PROBE", A, 0x4000)
    assert (probe.number_field("segv"), probe.number_field("loaded")) == (1, 3)
    assert probe.fields["si_code"] == "2"  # SEGV_ACCERR: mapped, not readable
    assert vm.step("DONTNEED", A + 0x1000, 0x3000).rc == 0
    probe = vm.step("PROBE", A + 0x1000, 0x3000, "local")
    assert probe.number_field("loaded") == 3  # zero pages again, still mapped
    assert probe.fields["cpu"] == vm.ready["cpu"]
    assert vm.step("MUNMAP", A, 0x4000).rc == 0
    child = vm.step("EXIT-CHILD", A, 0x200000)
    assert (child.rc, child.fields["status"]) == (0, "0")
    # the child's mapping was its own: the parent's address space has nothing there
    assert vm.step("PROBE", A, 0x4000).number_field("segv") == 4
    assert vm.step("MMAP", A, 0x1000).rc == 0
    assert vm.step("MMAP", A, 0x1000).rc == -17  # MAP_FIXED_NOREPLACE: EEXIST


def test_the_probe_sees_a_live_translation_as_loaded() -> None:
    """The verdict is not blind: a PROBE that loads after "munmap" fails the smoke check."""
    def step(n: int, op: str, **fields: str) -> StepResult:
        return StepResult(n, op, 0, 1000, dict(rc="0", ns="1000", **fields))

    stale = (step(1, "MMAP", addr=hex(A)), step(2, "PROBE", cpu="1", loaded="4", segv="0"),
             step(3, "MUNMAP"), step(4, "PROBE", cpu="1", loaded="1", segv="3"))
    result = judge_smoke(stale, pages=4, addr=A, main_cpu="0", smp=2)
    assert not result.passed
    assert result.stale_after_unmap == 1
    assert any("stale TLB entries" in p for p in result.problems)
    same_cpu = (*stale[:3], step(4, "PROBE", cpu="0", loaded="0", segv="4"))
    assert "the unmapping CPU" in judge_smoke(same_cpu, pages=4, addr=A, main_cpu="0",
                                              smp=2).problems[0]


def test_an_unknown_step_is_a_protocol_error(vm: KernelMachine) -> None:
    with pytest.raises(ProtocolError, match="workload refused a command: ERR unknown step: FLY"):
        vm.step("FLY", A, 0x1000)
    with pytest.raises(ProtocolError):  # a failed machine stays failed
        vm.ping()


def test_no_init_is_a_crash_with_the_panic_line(bookworm: KernelFiles, tmp_path: Path) -> None:
    spec = MachineSpec(append=("rdinit=/nonexistent", "init=/nonexistent"))
    machine = KernelMachine(bookworm, log_path=tmp_path / "c.log", spec=spec, boot_timeout=60)
    with pytest.raises(GuestCrash, match="kernel panic: Kernel panic - not syncing") as info:
        machine.launch()
    assert info.value.tail and info.value.log_path == str(tmp_path / "c.log")
    assert machine.process is not None and not machine.process.is_alive()


def test_a_hung_boot_times_out_and_qemu_is_killed(bookworm: KernelFiles,
                                                  tmp_path: Path) -> None:
    machine = KernelMachine(bookworm, log_path=tmp_path / "c.log", boot_timeout=0.5)
    with pytest.raises(GuestTimeout, match="no READY from the kernel guest"):
        machine.launch()
    assert machine.process is not None and not machine.process.is_alive()


def test_cli_boot_json(bookworm: KernelFiles, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "shootdown.cli", "kernel", "boot",
                           "debian:bookworm", "--json", "--log", str(tmp_path / "c.log")],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["passed"] and result["problems"] == []
    assert [s["op"] for s in result["steps"]] == ["MMAP", "PROBE", "MUNMAP", "PROBE"]
    assert 0 < result["boot_to_ready_s"] < result["total_s"]


def test_info_of_the_real_kernel(bookworm: KernelFiles) -> None:
    done = subprocess.run([sys.executable, "-m", "shootdown.cli", "kernel", "info",
                           "debian:bookworm", "--json"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["release"].startswith("6.1.") and info["version"] == [6, 1]
    assert (info["page_size_kib"], info["header_page_size_kib"], info["va_bits"]) == (4, 4, 48)
    assert (info["kpti"], info["lpa2"], info["tlb_range"]) == (True, False, True)
    # 6.1.176 carries the REPEAT_TLBI rework (docs/policies.md, "Stable kernels")
    assert (info["policy"], info["policy_chosen"]) == ("v6.1.176", True)
