"""The QEMU execution-log reader, on a real QEMU run of a known program."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from shootdown.elfsyms import ElfImage
from shootdown.guest.qemu import version
from shootdown.trace.qemu_log import (
    MaintOp,
    TraceError,
    dfilter_arg,
    expand_report,
    maintenance_ranges,
    parse_log,
    trace_ops,
    trace_qemu_args,
)

DATA = Path(__file__).parent / "data"

#: What maint.S executes, in order (its comments say why).
EXPECTED = [
    ("DSB", "ishst", None),
    ("TLBI", "vale1is", 0x1000),
    ("TLBI", "vale1is", 0x1001),
    ("TLBI", "vale1is", 0x1002),
    ("DSB", "ish", None),
    ("DSB", "ishst", None),
    ("TLBI", "vaale1is", 0xFFFF00000000BEEF),
    ("TLBI", "vmalle1is", None),
    ("DSB", "ish", None),
    ("ISB", "", None),
]


@pytest.fixture(scope="module")
def maint_elf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gcc = shutil.which("aarch64-linux-gnu-gcc")
    if gcc is None:
        pytest.skip("aarch64-linux-gnu-gcc not found: run scripts/setup")
    out = tmp_path_factory.mktemp("trace") / "maint.elf"
    subprocess.run([gcc, "-nostdlib", "-static", "-Wl,-Ttext=0x40080000", "-Wl,-e,_start",
                    "-o", str(out), str(DATA / "maint.S")], check=True)
    return out


def run_traced(qemu: str, elf: Path, log: Path, ranges: list[tuple[int, int]]) -> None:
    # -nodefaults: no default NIC, whose option ROM (ipxe-qemu) scripts/setup
    # does not install; this test needs no device at all.  The guest's own
    # -accel is where QEMU >= 8.1 takes one-insn-per-tb=on.
    argv = [qemu, "-M", "virt", "-cpu", "cortex-a72", "-m", "128M", "-accel", "tcg",
            "-display", "none", "-nodefaults", "-serial", "none", "-monitor", "none",
            "-kernel", str(elf)]
    subprocess.run(trace_qemu_args(argv, str(log), ranges, version(qemu)),
                   check=True, timeout=60)


def test_real_qemu_trace_matches_the_program(maint_elf: Path, tmp_path: Path,
                                              each_qemu: str) -> None:
    image = ElfImage(maint_elf)
    ranges = maintenance_ranges(image)
    log = tmp_path / "exec.log"
    run_traced(each_qemu, maint_elf, log, ranges)
    ops = trace_ops(image, str(log))
    assert list(ops) == [0]
    assert [op.key() for op in ops[0]] == EXPECTED
    assert all(op.cpu == 0 and op.pc is not None for op in ops[0])


def test_wide_filter_skips_other_instructions(maint_elf: Path, tmp_path: Path,
                                              qemu: str) -> None:
    image = ElfImage(maint_elf)
    log = tmp_path / "wide.log"
    fn = image.get_function("_start")
    run_traced(qemu, maint_elf, log, [(fn.address, fn.address + 0x100)])
    assert [op.key() for op in trace_ops(image, str(log))[0]] == EXPECTED


def test_ranges_for_chosen_functions(maint_elf: Path) -> None:
    image = ElfImage(maint_elf)
    start = image.get_function("kernel_flush").address
    ranges = maintenance_ranges(image, ["kernel_flush"])
    assert ranges == [(start + 8, start + 28)]
    assert dfilter_arg(ranges) == f"{start + 8:#x}+0x14"


DUMP = """ PC={pc:016x} X00=0000000000000000 X01={x1:016x}
X02=0000000000000000 X03=0000000000000000 X04=0000000000000000
X05=0000000000000000 X06=0000000000000000 X07=0000000000000000
X08=0000000000000000 X09=0000000000000000 X10=0000000000000000
X11=0000000000000000 X12=0000000000000000 X13=0000000000000000
X14=0000000000000000 X15=0000000000000000 X16=0000000000000000
X17=0000000000000000 X18=0000000000000000 X19=0000000000000000
X20=0000000000000000 X21=0000000000000000 X22=0000000000000000
X23=0000000000000000 X24=0000000000000000 X25=0000000000000000
X26=0000000000000000 X27=0000000000000000 X28=0000000000000000
X29=0000000000000000 X30=0000000000000000  SP=0000000000000000
PSTATE=400003c5 -Z-- EL1h
"""


def entry(cpu: int, ptr: str, pc: int, x1: int) -> str:
    return (f"Trace {cpu}: {ptr} [0000000000004000/{pc:016x}/00000121/ff000201] f\n"
            + DUMP.format(pc=pc, x1=x1))


def test_stopped_block_is_dropped() -> None:
    text = (entry(0, "0x7f0000000100", 0x1000, 1)
            + entry(1, "0x7f0000000200", 0x2000, 2)
            + "Stopped execution of TB chain before 0x7f0000000200 [0000000000002000] f\n"
            + entry(1, "0x7f0000000200", 0x2000, 3))
    per_cpu = parse_log(text.splitlines(keepends=True))
    assert [(e.pc, e.regs[1]) for e in per_cpu[0]] == [(0x1000, 1)]  # type: ignore[index]
    assert [(e.pc, e.regs[1]) for e in per_cpu[1]] == [(0x2000, 3)]  # type: ignore[index]


def test_interleaved_dump_is_refused() -> None:
    text = entry(0, "0x7f00", 0x1000, 1).replace(" PC=0000000000001000", " PC=0000000000001004")
    with pytest.raises(TraceError, match="thread=single"):
        parse_log(text.splitlines())


def test_malformed_trace_line() -> None:
    with pytest.raises(TraceError, match="log:1: malformed"):
        parse_log(["Trace x: nonsense\n"], "log")


def test_expand_report_runs_and_kpti_copies() -> None:
    records = [("DSB", {"opt": "ishst"}),
               ("TLBI", {"op": "vale1is", "xt": "0x0002000000000010", "n": "2", "inc": "0x1",
                         "user": "1"}),
               ("TLBI", {"op": "vmalle1is"}),
               ("DSB", {"opt": "ish"}), ("ISB", {}), ("STEP", {"n": "1"})]
    assert expand_report(records) == [
        MaintOp("DSB", "ishst", None),
        MaintOp("TLBI", "vale1is", 0x0002000000000010),
        MaintOp("TLBI", "vale1is", 0x0002000000000010 | 1 << 48),
        MaintOp("TLBI", "vale1is", 0x0002000000000011),
        MaintOp("TLBI", "vale1is", 0x0002000000000011 | 1 << 48),
        MaintOp("TLBI", "vmalle1is", None),
        MaintOp("DSB", "ish", None),
        MaintOp("ISB", "", None),
    ]


def test_split_at_marks(maint_elf: Path) -> None:
    image = ElfImage(maint_elf)
    start = image.get_function("_start").address
    kernel = image.get_function("kernel_flush").address
    from shootdown.trace.qemu_log import Executed, split_at_marks

    regs = tuple(range(31))
    executed = [Executed(0, start + 8, regs, 1),           # dsb ishst
                Executed(0, kernel, (7, 1, *regs[2:]), 2),   # the mark: scenario 7, step 1
                Executed(0, kernel + 8, regs, 3),            # dsb ishst
                Executed(0, kernel + 12, regs, 4)]           # tlbi vaale1is, x3
    before, segments = split_at_marks(image, executed, kernel)
    assert [op.key() for op in before] == [("DSB", "ishst", None)]
    assert [s.mark for s in segments] == [(7, 1)]
    assert [op.key() for op in segments[0].ops] == [("DSB", "ishst", None),
                                                    ("TLBI", "vaale1is", 3)]
