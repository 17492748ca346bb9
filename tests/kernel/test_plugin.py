"""The TCG-plugin tracing method (``kernel/plugin.py``, ``plugins/maint.c``).

Pure logic first (method choice, record parsing); then the real thing: the
bookworm kernel's workload library traced by both methods under a QEMU that
runs plugins (>= 9.0, its ``qemu-plugin.h`` from scripts/setup-qemu), each
step's teardown stream (kind, operation, Xt with its ASID, vCPU, PC,
function) compared op for op.  About 25 s once the kernel is cached.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from shootdown.errors import ConfigError, InfraError, TraceError
from shootdown.guest.qemu import private_qemus, version
from shootdown.kernel import plugin
from shootdown.kernel.boot import MachineSpec
from shootdown.kernel.locate import KernelFiles, locate
from shootdown.kernel.run import KernelRun, run_kernel
from shootdown.scenario.workload import load_workloads

#: the workload library ``kernel run`` runs by default
LIBRARY = Path(__file__).resolve().parents[2] / "guests" / "kernel"


def test_method_follows_the_qemu_version(monkeypatch: pytest.MonkeyPatch) -> None:
    assert plugin.choose_method((10, 0, 2), None, have_header=True) == (
        "plugin" if plugin.PLUGIN_BY_DEFAULT else "singlestep")
    monkeypatch.setattr(plugin, "PLUGIN_BY_DEFAULT", True)
    assert plugin.choose_method((7, 2, 0), None) == "singlestep"
    assert plugin.choose_method((8, 2, 2), None) == "singlestep"
    assert plugin.choose_method((9, 0, 0), None, have_header=True) == "plugin"
    assert plugin.choose_method((10, 0, 2), None, have_header=True) == "plugin"
    assert plugin.choose_method((10, 0, 2), None, have_header=False) == "singlestep"
    assert plugin.choose_method((10, 0, 2), "singlestep", have_header=True) == "singlestep"


def test_plugin_on_an_old_qemu_is_bad_input() -> None:
    with pytest.raises(ConfigError, match=r"--trace-method: plugin needs QEMU >= 9\.0\.0"):
        plugin.choose_method((7, 2, 0), "plugin")
    with pytest.raises(ConfigError, match="--trace-method: 'gdb'"):
        plugin.choose_method((10, 0, 2), "gdb")


def test_records_parse() -> None:
    data = b"1 ffff800008123450 d508873f 2a0000000001234\n0 ffff800008123454 d5033b9f -\n"
    r = plugin.parse_records(data, "w")
    assert [(x.cpu, x.pc, x.insn, x.xt, x.line) for x in r] == [
        (1, 0xffff800008123450, 0xd508873f, 0x2a0000000001234, 1),
        (0, 0xffff800008123454, 0xd5033b9f, None, 2)]
    assert all(x.cpu_from_guest for x in r)


def test_a_cpu_the_plugin_could_not_name_is_an_error_not_a_guess() -> None:
    # the separation rule works by CPU: a record whose CPU is QEMU's guess (1?) could
    # put another CPU's DSB into the teardown, so the window fails, naming the way out
    data = b"0 ffff800008123450 d5033b9f -\n1? ffff800008123454 d5033b9f -\n"
    with pytest.raises(TraceError, match=r"^w:2: 1 of 2 plugin records carry QEMU's "
                                         r"vcpu_index.*--trace-method singlestep"):
        plugin.parse_records(data, "w")


@pytest.mark.parametrize("data", [
    b"1 ffff800008123450 d508873f 2a00\n0 ffff8000",        # a record cut short
    b"1 ffff800008123450 d508873f ?\n",                     # Xt the plugin could not read
    b"Trace 0: 0x7f [00000000/ffff800008123450/0x0]\n",     # an exec log, not records
    b"?1 ffff800008123450 d5033b9f -\n",                    # the mark before the CPU
])
def test_records_that_do_not_parse_are_errors(data: bytes) -> None:
    with pytest.raises(TraceError, match=r"^w:\d+: not a plugin record"):
        plugin.parse_records(data, "w")


def _plugin_qemu() -> str:
    for binary in private_qemus():
        v = version(binary)
        if v >= plugin.PLUGIN_SINCE and (plugin.version_dir(v) / "include" /
                                          "qemu-plugin.h").is_file():
            return binary
    pytest.skip("no QEMU >= 9.0 with its qemu-plugin.h: run scripts/setup-qemu")


@pytest.fixture(scope="module")
def bookworm() -> KernelFiles:
    try:
        return locate("debian:bookworm")
    except InfraError as exc:
        pytest.skip(f"Debian's bookworm kernel is not cached and cannot be fetched: {exc}")


def _run(files: KernelFiles, qemu: str, method: str, tmp: Path) -> KernelRun:
    return run_kernel(files, spec=MachineSpec(cpu="max,pauth-impdef=on"),
                      log_path=str(tmp / f"{method}.console.log"), qemu=qemu,
                      workloads=load_workloads(str(LIBRARY)), trace_method=method)


@pytest.mark.guest
def test_plugin_stream_equals_single_stepping(bookworm: KernelFiles, tmp_path: Path) -> None:
    qemu = _plugin_qemu()
    by_plugin = _run(bookworm, qemu, "plugin", tmp_path)
    by_stepping = _run(bookworm, qemu, "singlestep", tmp_path)
    assert (by_plugin.trace_method, by_stepping.trace_method) == ("plugin", "singlestep")
    # The same verdict, step by step: whether the model agrees with the kernel is
    # test_run's question; this one asks whether the two methods saw the same thing.
    assert [(s.case, str(s.verdict)) for s in by_plugin.steps] == [
        (s.case, str(s.verdict)) for s in by_stepping.steps]
    assert str(by_plugin.verdict) == str(by_stepping.verdict)

    def teardown(run: KernelRun) -> list[tuple[str, list[tuple[object, ...]]]]:
        return [(s.case, [(op.kind, op.op, op.xt, op.asid(), op.cpu, op.pc, op.function)
                          for op in s.stream.ops]) for s in run.steps]

    assert teardown(by_plugin) == teardown(by_stepping)
    assert len(by_plugin.steps) >= 10
    tlbis = [op for s in by_plugin.steps for op in s.stream.ops if op.kind == "tlbi"]
    assert tlbis and all(op.xt is not None for op in tlbis)
    # the ASID read from the plugin's TTBR write records (SWITCH-MM) is the same
    assert by_plugin.asid == by_stepping.asid > 0
    assert by_plugin.asid in {op.asid() for op in tlbis}
