"""``shootdown kernel run``: the workload's unmap steps on a real kernel, traced and checked.

One boot:

1. the kernel's maintenance sites (:mod:`.sites`, cached per Image) and
   text symbols (``--symbols``, else the guest's kallsyms cached per Image;
   the first run of an Image boots once more, untraced, to read them);
2. boot with the tracer's ``-dfilter`` and QMP socket, READY, handshake on;
3. ``SWITCH-MM`` in a window: the workload's ASID (its TTBR1 write);
4. the unmap steps (:data:`DEFAULT_STEPS`): map and populate, probe from
   the other CPU, ``MUNMAP`` in a window, probe again; the window's stream
   separated (:func:`.observe.separate`) and checked
   (:func:`shootdown.check.kernel.run_checks`).

The verdict is per step and then for the run (:func:`judge`); this module
runs things and collects records, the checks decide.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from shootdown.check.kernel import KernelCheck, StepFacts, run_checks
from shootdown.errors import TraceError
from shootdown.guest.argv import default_qemu
from shootdown.guest.qemu import version as qemu_version
from shootdown.kernel.boot import KernelMachine, MachineSpec, StepResult
from shootdown.kernel.info import KernelInfo, read_info
from shootdown.kernel.inject import (
    Injection,
    executed_in,
    injection_verdict,
    prepare,
    step_verdict,
    verify_in_guest,
)
from shootdown.kernel.locate import KernelFiles
from shootdown.kernel.observe import ObservedOp, StepStream, asid_from_switch, separate
from shootdown.kernel.sites import cached_sites
from shootdown.kernel.symbols import (
    Symbols,
    cached_kallsyms,
    read_symbols,
    store_kallsyms,
    text_base,
)
from shootdown.kernel.tracer import KernelTracer
from shootdown.result import Verdict

#: Where the workload maps: 4 GiB (clear of its image and stack) for the
#: few-pages step, 5 GiB (aligned for a 16K kernel's 32 MiB table span too)
#: for the step that unmaps a whole page table.
SMALL_ADDR = 0x1_0000_0000
TABLE_ADDR = 0x1_4000_0000
#: Boot-log lines that say what the CPU and kernel turned on (arch/arm64/kernel/cpufeature.c).
KPTI_LINE = "Kernel page table isolation (KPTI)"
LPA2_LINE = "52-bit Virtual Addressing (LPA2)"


@dataclass(frozen=True)
class UnmapCase:
    """One checked unmap of the built-in workload."""

    #: a name for people
    name: str
    #: where, and how many pages (None: one whole page table's span)
    addr: int
    pages: int | None


DEFAULT_STEPS = (UnmapCase("few-pages", SMALL_ADDR, 4), UnmapCase("whole-table", TABLE_ADDR, None))


@dataclass(frozen=True)
class CheckedStep:
    """One traced, checked unmap step."""

    #: the case it ran
    case: str
    #: the workload's answer
    result: StepResult
    #: the window, separated
    stream: StepStream
    #: the facts the checks used
    facts: StepFacts
    #: the model-free checks' results
    checks: tuple[KernelCheck, ...]
    #: pages the other CPU still loaded after the unmap (the probe: must be 0)
    stale: int
    #: wall-clock seconds of the step with its window (host side)
    seconds: float
    #: problems beyond the checks (rc, probe), one line each
    problems: tuple[str, ...] = field(default=())
    #: instructions the window logged between merged sites (not maintenance; skipped)
    non_sites: int = 0

    @property
    def verdict(self) -> Verdict:
        """FAIL on any failed check or problem."""
        failed = self.problems or any(not c.passed for c in self.checks)
        return Verdict.FAIL if failed else Verdict.PASS


@dataclass(frozen=True)
class KernelRun:
    """A whole ``kernel run``."""

    #: the kernel and its facts
    kernel: str
    info: KernelInfo
    #: the QEMU command line
    argv: tuple[str, ...]
    #: where the symbols came from
    symbols: str
    #: the workload's ASID and the boot's KPTI/LPA2 state (from its boot log)
    asid: int
    kpti: bool
    lpa2: bool
    #: the checked steps
    steps: tuple[CheckedStep, ...]
    #: the ASID window (SWITCH-MM) as observed, for --json, and its wall-clock seconds
    switch_window: tuple[ObservedOp, ...]
    switch_s: float
    #: timings, seconds: QEMU start to READY; READY to verdict; symbols/site preparation
    boot_s: float
    after_boot_s: float
    prepare_s: float
    #: steps the workload ran after READY (traced or not)
    workload_steps: int
    #: the real-kernel bug the booted copy carried (``--inject``; :mod:`.inject`), else None
    injection: Injection | None = None

    def step_verdict(self, step: CheckedStep) -> Verdict:
        """A step's verdict; under an injection caught/missed/not-applicable (by whether a
        patched site executed in its window) or fail."""
        if self.injection is None:
            return step.verdict
        pcs = [op.pc for op in step.stream.ops] + [r.op.pc for r in step.stream.rest]
        return step_verdict(executed_in(self.injection.addresses, pcs),
                            step.verdict is Verdict.FAIL)

    @property
    def verdict(self) -> Verdict:
        """FAIL if any step failed, else PASS; under an injection as the firmware's."""
        if self.injection is not None:
            return injection_verdict([self.step_verdict(s) for s in self.steps])
        return Verdict.FAIL if any(s.verdict is Verdict.FAIL for s in self.steps) else Verdict.PASS


def load_symbols(files: KernelFiles, digest: str, spec: MachineSpec, symbols_path: Path | None,
                 log_path: str) -> Symbols:
    """``--symbols``, else the cached guest kallsyms, else one untraced boot to read them."""
    if symbols_path is not None:
        return read_symbols(symbols_path)
    cached = cached_kallsyms(digest)
    if cached is not None:
        return cached
    plain = MachineSpec(spec.machine, spec.cpu, spec.smp, spec.memory, spec.accel, spec.append)
    with KernelMachine(files, log_path=log_path + ".kallsyms", spec=plain) as vm:
        return store_kallsyms(digest, vm.kallsyms())


class _Window:
    def __init__(self, tracer: KernelTracer) -> None:
        self.tracer = tracer

    def open(self) -> None:
        self.tracer.open()

    def close(self) -> None:
        self.tracer.close()


def table_span(page_size: int) -> int:
    """The VA span one last-level table maps: page_size / 8 entries of page_size."""
    return page_size // 8 * page_size


def run_kernel(files: KernelFiles, *, spec: MachineSpec, log_path: str,
               symbols_path: Path | None = None, cases: tuple[UnmapCase, ...] = DEFAULT_STEPS,
               qemu: str | None = None, boot_timeout: float = 120.0,
               inject: str | None = None) -> KernelRun:
    """Boot, trace and check the unmap cases; the run's records.

    ``inject``: boot a patched private copy of the Image instead (:func:`.inject.prepare`).
    """
    t0 = time.monotonic()
    info = read_info(files.image, files.config)
    digest, sites = cached_sites(files.image)
    symbols = load_symbols(files, digest, spec, symbols_path, log_path)
    with open(files.image, "rb") as f:
        base = text_base(symbols, f.read(64))
    workdir = tempfile.mkdtemp(prefix="shootdown-ktrace-")
    try:
        booted, injection = files, None
        if inject is not None:
            booted, sites, injection = prepare(inject, files, sites, symbols, base, Path(workdir))
        tracer = KernelTracer(sites, symbols, base, qemu_version(qemu or default_qemu()),
                              workdir)
        traced = MachineSpec(spec.machine, spec.cpu, spec.smp, spec.memory, spec.accel,
                             spec.append, (*spec.extra, *tracer.qemu_args()))
        prepare_s = time.monotonic() - t0
        with KernelMachine(booted, log_path=log_path, spec=traced, qemu=qemu,
                           boot_timeout=boot_timeout) as vm:
            tracer.attach()
            try:
                if injection is not None:
                    verify_in_guest(tracer.monitor, injection)
                run = _steps(vm, tracer, files, info, symbols, cases, prepare_s)
                return replace(run, injection=injection)
            finally:
                tracer.detach()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _steps(vm: KernelMachine, tracer: KernelTracer, files: KernelFiles, info: KernelInfo,
           symbols: Symbols, cases: tuple[UnmapCase, ...], prepare_s: float) -> KernelRun:
    assert vm.t_ready is not None and vm.boot_seconds is not None
    window = _Window(tracer)
    boot_log = list(vm.lines)
    kpti = any(KPTI_LINE in line for line in boot_log)
    lpa2 = any(LPA2_LINE in line for line in boot_log)
    page_size = int(vm.ready.get("pagesize", "4096"))
    cpu = int(vm.ready.get("cpu", "0"))
    vm.set_handshake(True)
    t_switch = time.monotonic()
    vm.step("SWITCH-MM", 0, 0, window=window)
    switch = tracer.read()
    switch_s = time.monotonic() - t_switch
    asid = asid_from_switch(switch, cpu)
    if asid is None:
        raise TraceError("no TTBR1 write on the workload's CPU in the SWITCH-MM window: cannot "
                         "tell the workload's ASID (is cpu_do_switch_mm in the traced text?)")
    steps = []
    count = 1
    for case in cases:
        pages = case.pages if case.pages is not None else table_span(page_size) // page_size
        length = pages * page_size
        problems = []
        mapped = vm.step("MMAP", case.addr, length, "populate")
        warm = vm.step("PROBE", case.addr, length)
        t_step = time.monotonic()
        unmapped = vm.step("MUNMAP", case.addr, length, window=window)
        seconds = time.monotonic() - t_step
        observed = tracer.read()
        non_sites = tracer.non_sites
        after = vm.step("PROBE", case.addr, length)
        count += 4
        for answer in (mapped, unmapped):
            if answer.rc != 0:
                problems.append(f"step {answer.number} {answer.op}: rc={answer.rc}")
        if warm.number_field("segv"):
            problems.append(f"step {warm.number} PROBE: {warm.fields['segv']} mapped pages "
                            "faulted on the other CPU")
        stale = after.number_field("loaded")
        if stale:
            problems.append(f"step {after.number} PROBE: {stale} unmapped pages still loaded on "
                            f"cpu {after.fields.get('cpu')}: stale TLB entries")
        own, rest = separate(observed, cpu=cpu, asid=asid, kpti=kpti)
        stream = StepStream(unmapped.number, "MUNMAP", case.addr, case.addr + length, own, rest)
        span = table_span(page_size)
        whole_table = (-case.addr % span) + span <= length
        facts = StepFacts(case.addr, case.addr + length, page_size, asid, kpti, lpa2,
                          tables_freed=whole_table)
        steps.append(CheckedStep(case.name, unmapped, stream, facts, run_checks(own, facts),
                                 stale, seconds, tuple(problems), non_sites))
    after_boot = time.monotonic() - vm.t_ready
    return KernelRun(kernel=files.label, info=info, argv=tuple(vm.argv), symbols=symbols.where,
                     asid=asid, kpti=kpti, lpa2=lpa2, steps=tuple(steps),
                     switch_window=tuple(switch), switch_s=switch_s, boot_s=vm.boot_seconds,
                     after_boot_s=after_boot, prepare_s=prepare_s, workload_steps=count)
