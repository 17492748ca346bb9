"""The trace on the real firmware: it equals the guest's report on a clean build,
and it catches a firmware that misreports (a copy of the ELF patched in one word:
a reported TLBI that never runs, or a TLBI that runs where a DSB is reported)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from shootdown.elfsyms import ElfImage
from shootdown.guest.argv import build_argv
from shootdown.guest.definition import find_guest
from shootdown.guest.qemu import version
from shootdown.trace.console import encode_command
from shootdown.trace.qemu_log import (
    MaintOp,
    expand_report,
    maintenance_ranges,
    trace_ops,
    trace_qemu_args,
)

pytestmark = pytest.mark.guest

#: the firmware's maintenance stubs (firmware/src/maint.S), one instruction each
STUB_PREFIX = "maint_"
SCENARIO = [
    "SCN id=1 policy=v5.4 granule=4k va_bits=48 asid=6 kpti=1 ttl=0 tlbirange=0 inject=none",
    "MAP level=3 addr=0x400000 count=16",
    "STEP n=1 kind=flush_tlb_range start=0x400000 end=0x410000 stride=0x1000 last_level=1",
    "GO",
]
NOP = 0xD503201F
TLBI_VMALLE1IS = 0xD508831F
_RECORD = re.compile(r"^SD1 \d+ ([A-Z]+)((?: \S+=\S+)*) \*[0-9a-f]{8}$")


def traced_session(elf: Path, log: Path, qemu: str) -> tuple[list[MaintOp], list[MaintOp]]:
    """Boot ``elf`` traced under ``qemu``, run SCENARIO, power off:
    (reported ops, executed ops on CPU 0)."""
    guest = find_guest("virt-a72")
    argv = build_argv(guest, elf, qemu=qemu)
    accel = argv.index("-accel")
    argv[accel + 1] = "tcg,thread=single"
    image = ElfImage(elf)
    stubs = [fn.name for fn in image.functions if fn.name.startswith(STUB_PREFIX)]
    argv = trace_qemu_args(argv, str(log), maintenance_ranges(image, stubs), version(argv[0]))
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    pending = [b"".join(encode_command(line) for line in SCENARIO), encode_command("BYE")]
    lines = []
    try:
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\r\n")
            lines.append(line)
            if " READY " in line and pending:
                proc.stdin.write(pending.pop(0))
                proc.stdin.flush()
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()
    records = []
    for line in lines:
        m = _RECORD.match(line)
        if m:
            records.append((m.group(1), dict(kv.split("=", 1) for kv in m.group(2).split())))
    assert any(tag == "SCNEND" for tag, _ in records), "\n".join(lines[-10:])
    executed = trace_ops(ElfImage(elf), str(log)).get(0, [])
    return expand_report(records), executed


def keys(ops: list[MaintOp]) -> list[tuple[str, str, int | None]]:
    return [op.key() for op in ops]


def test_trace_equals_report(firmware_elf: Path, each_qemu: str, tmp_path: Path) -> None:
    report, executed = traced_session(firmware_elf, tmp_path / "exec.log", each_qemu)
    assert len(report) == 2 + 2 * 16  # DSB ISHST, 16 x (TLBI + KPTI copy), DSB ISH
    assert keys(executed) == keys(report)


def test_reported_but_not_executed(firmware_elf: Path, qemu: str, tmp_path: Path,
                                   patch_elf: Callable[..., Path]) -> None:
    """op_tlbi logs a VALE1IS its stub no longer issues: the trace tells."""
    bad = patch_elf(firmware_elf, tmp_path / "nop.elf", "maint_tlbi_vale1is", "tlbi", "vale1is",
                    NOP)
    report, executed = traced_session(bad, tmp_path / "exec.log", qemu)
    assert sum(1 for op in report if op.op == "vale1is") == 32
    assert not any(op.op == "vale1is" for op in executed)
    assert keys(executed) != keys(report)


def test_executed_but_not_reported(firmware_elf: Path, qemu: str, tmp_path: Path,
                                   patch_elf: Callable[..., Path]) -> None:
    """op_dsb issues a TLBI VMALLE1IS where it logs DSB ISHST: the trace shows it."""
    bad = patch_elf(firmware_elf, tmp_path / "swap.elf", "maint_dsb_ishst", "dsb", "ishst",
                    TLBI_VMALLE1IS)
    report, executed = traced_session(bad, tmp_path / "exec.log", qemu)
    assert keys(report)[0] == ("DSB", "ishst", None)
    assert keys(executed)[0] == ("TLBI", "vmalle1is", None)
    assert keys(executed)[1:] == keys(report)[1:]
