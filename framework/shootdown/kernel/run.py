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
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from shootdown.check.kernel import (
    KernelCheck,
    StepFacts,
    check_coverage,
    check_kpti,
    check_walk_caches,
    run_checks,
)
from shootdown.errors import ConfigError, TraceError
from shootdown.guest.argv import default_qemu
from shootdown.guest.qemu import version as qemu_version
from shootdown.insn import Dsb, Instruction, Isb, Tlbi
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
from shootdown.kernel.observe import (
    UNMAP_PATH,
    ObservedOp,
    StepStream,
    asid_from_switch,
    separate,
)
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
from shootdown.scenario.types import FlushTlbRangeStep
from shootdown.scenario.workload import (
    Expansion,
    Workload,
    WorkStep,
    elf_vmas,
    expand,
    expected_for,
)

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
    #: the comparison with the golden model (workload scenarios only; None for the built-in cases)
    model: ModelCheck | None = None

    @property
    def verdict(self) -> Verdict:
        """FAIL on any failed check or problem, a model divergence or a documented model gap
        (a gap is not a pass); a step the model cannot express is judged by the checks."""
        failed = self.problems or any(not c.passed for c in self.checks)
        if self.model is not None and self.model.status in ("fail", "model-gap"):
            failed = True
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
    #: workload scenarios: the policy the model used, the CPU features from the boot log,
    #: and the workloads not run here with the reason (another page size)
    policy: str | None = None
    features: tuple[str, ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()
    #: how the windows were traced: ``plugin`` or ``singlestep`` (:mod:`.plugin`)
    trace_method: str = "singlestep"
    #: the workload's VMAs before its first step (/proc/self/maps): (start, end, rest)
    vmas: tuple[tuple[int, int, str], ...] = ()
    #: the kernel's THP mode (``never`` below 512 MiB of RAM: thp workloads map pages)
    thp_mode: str = ""

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
        if not self.steps:
            return Verdict.NOTHING_RAN
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
               inject: str | None = None, workloads: Sequence[Workload] | None = None,
               policy: str | None = None, trace_method: str | None = None) -> KernelRun:
    """Boot, trace and check the unmap cases; the run's records.

    ``trace_method``: ``plugin`` or ``singlestep``; None: the plugin on QEMU >= 9.0.

    ``inject``: boot a patched private copy of the Image instead (:func:`.inject.prepare`).
    ``workloads``: run these workload scenarios instead of ``cases``, each traced step
    also compared with the golden model under ``policy`` (default: the one chosen for
    the kernel's release, :func:`.info.choose_policy`).
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
        if inject is not None and trace_method == "plugin":
            raise ConfigError("--inject with --trace-method plugin: the plugin instruments "
                              "maintenance instructions only and cannot see the NOPs an "
                              "injection puts in their place; use singlestep")
        if inject is not None and trace_method is None:
            # the plugin instruments maintenance instructions only: the NOPs an
            # injection puts in their place would never be seen executing
            trace_method = "singlestep"
        tracer = KernelTracer(sites, symbols, base, qemu_version(qemu or default_qemu()),
                              workdir, method=trace_method)
        traced = MachineSpec(spec.machine, spec.cpu, spec.smp, spec.memory, spec.accel,
                             spec.append, (*spec.extra, *tracer.qemu_args()))
        prepare_s = time.monotonic() - t0
        with KernelMachine(booted, log_path=log_path, spec=traced, qemu=qemu,
                           boot_timeout=boot_timeout) as vm:
            tracer.attach()
            try:
                if injection is not None:
                    verify_in_guest(tracer.monitor, injection, spec.smp)
                if workloads is not None:
                    run = run_workload_steps(vm, tracer, files, info, symbols, workloads,
                                             policy, prepare_s)
                else:
                    run = _steps(vm, tracer, files, info, symbols, cases, prepare_s)
                return replace(run, injection=injection, trace_method=tracer.method)
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


# --------------------------------------------------------------------------
# workload scenarios: every traced step also against the golden model

#: Boot-log lines of the CPU features the kernel turned on (arch/arm64/kernel/cpufeature.c,
#: ``arm64_features[].desc``): the model's ``ttl`` and ``tlbirange``.
FEATURE_LINES: dict[str, tuple[str, ...]] = {
    "ttl": ("ARMv8.4 Translation Table Level",),
    "tlbirange": ("TLB range maintenance instructions",),
    # ARM64_WORKAROUND_REPEAT_TLBI's description: since the REPEAT_TLBI rework
    # (7.x, and Debian's 6.1.176/6.12.117), and before it (cpu_errata.c)
    "repeat_tlbi": ("Broken broadcast TLBI completion", "ARM erratum 1286807",
                    "Qualcomm erratum 1009"),
}
#: workload step kind -> the workload program's command
COMMANDS = {"mmap": "MMAP", "munmap": "MUNMAP", "madvise_dontneed": "DONTNEED",
            "mprotect": "MPROTECT", "exit": "EXIT-CHILD"}


@dataclass(frozen=True)
class ModelGap:
    """A known difference between a real kernel and the model, documented in docs/kernel.md."""

    #: the workload step kind and the policies it applies to
    kind: str
    policies: frozenset[str]
    #: what differs, with the kernel source line that shows it
    reason: str


#: The documented model gaps (docs/kernel.md, "Known model gaps"): a step whose stream
#: differs from the model's in exactly this way gets the status "model-gap", never "pass".
KNOWN_GAPS: tuple[ModelGap, ...] = ()


@dataclass(frozen=True)
class ModelCheck:
    """One traced step against the golden model."""

    #: "pass", "fail", "model-gap" (a documented gap, not a pass) or "not-modelled"
    status: str
    #: the policy the model ran
    policy: str
    #: one line: what matched, the first divergence, or why the step is not modelled
    reason: str
    #: the model's instructions (assembly text) and counts
    expected: tuple[str, ...] = ()
    expected_counts: dict[str, int] = field(default_factory=dict)
    #: the first divergence and the unified diff (fail, model-gap)
    divergence: str = ""
    diff: tuple[str, ...] = ()
    #: the kernel calls the step was expanded into, for people
    calls: tuple[str, ...] = ()


def as_instruction(op: ObservedOp) -> Instruction:
    """A traced maintenance instruction in the model's vocabulary, for the sequence check."""
    if op.kind == "tlbi":
        return Tlbi(op.op, op.xt)
    if op.kind == "dsb":
        return Dsb(op.op)
    return Isb()


def _describe_calls(exp: Expansion) -> tuple[str, ...]:
    out = []
    for call in exp.calls:
        if isinstance(call, FlushTlbRangeStep):
            out.append(f"flush_tlb_range [{call.start:#x}, {call.end:#x}) stride "
                       f"{call.stride:#x} last_level={int(call.last_level)}")
            continue
        ops = " ".join(op.op if op.op == "flush" else
                       f"{op.op}({op.addr:#x}{f' x{op.count}' if op.count > 1 else ''})"
                       for op in call.ops)
        out.append(f"gather fullmm={int(call.fullmm)}: {ops}")
    if exp.floor or exp.ceiling:
        out.append(f"free_pgtables floor={exp.floor:#x} ceiling={exp.ceiling:#x}")
    return tuple(out)


def compare_with_model(exp: Expansion, own: Sequence[ObservedOp], *, policy: str,
                       granule: str, va_bits: int, asid: int, kpti: bool,
                       features: frozenset[str], unsupported: str | None) -> ModelCheck:
    """The step's teardown stream against the model's, instruction by instruction."""
    from shootdown.check.sequence import check_sequence, render
    from shootdown.insn import counts

    calls = _describe_calls(exp)
    why_not = exp.not_modelled or unsupported
    if why_not is not None:
        return ModelCheck("not-modelled", policy, why_not, calls=calls)
    expected = expected_for(exp, granule=granule, va_bits=va_bits, asid=asid, kpti=kpti,
                            features=features, policy=policy)
    result = check_sequence({1: expected}, {1: [as_instruction(op) for op in own]})
    shown = tuple(render(i) for i in expected)
    if result.ok:
        return ModelCheck("pass", policy, f"{len(expected)} instructions, equal to the model's",
                          shown, counts(expected), calls=calls)
    assert result.divergence is not None
    gap = next((g for g in KNOWN_GAPS if g.kind == exp.step.kind and policy in g.policies),
               None)
    status, reason = ("model-gap", f"documented model gap: {gap.reason}") if gap else (
        "fail", f"differs from the model at instruction {result.divergence.index}")
    return ModelCheck(status, policy, reason, shown, counts(expected),
                      result.divergence.describe(), result.diff, calls)


#: The unmap path of :func:`.observe.separate` and the rest of the steps' kernel paths,
#: by base name, where a barrier may execute out of line: mm/memory.c's table walk
#: (free_pgd_range: set_p4d()'s DSB ISHST; ISB when exit_mmap clears a top-level entry,
#: arch/arm64/include/asm/pgtable.h, v6.1) and zap/mprotect walkers; and, from the
#: lazy-MMU rework (7.x pgtable.h: set_p4d/set_pgd end in queue_pte_barriers(), which
#: calls emit_pte_barriers()), those two helpers when the compiler keeps them out of
#: line: Debian's 7.2.13 calls queue_pte_barriers for pgd_clear in free_pgd_range.
WORKLOAD_PATH = UNMAP_PATH | frozenset({
    "free_pgd_range", "free_p4d_range", "free_pud_range", "free_pmd_range", "free_pte_range",
    "queue_pte_barriers", "emit_pte_barriers",
    "unmap_single_vma", "zap_pte_range", "zap_pmd_range", "zap_pud_range", "zap_huge_pmd",
    "change_protection_range", "change_pte_range", "change_pmd_range", "change_huge_pmd",
    "do_mprotect_pkey", "madvise_dontneed_single_vma", "zap_page_range",
})


def model_free_checks(own: Sequence[ObservedOp], exp: Expansion,
                      facts: StepFacts) -> tuple[KernelCheck, ...]:
    """The checks of :mod:`shootdown.check.kernel` on what the step really invalidates.

    Coverage and KPTI per run of populated entries (an unpopulated page has no
    translation to invalidate: a hole already unmapped, pages DONTNEED dropped);
    the walk-cache check over the freed tables' addresses (their flush names the
    table's VA, which need not be a populated page's).
    """
    runs = exp.runs(facts.page_size)
    if not runs:
        return (KernelCheck("coverage", "skip", "no populated page in the range: nothing to "
                            "invalidate"),)
    out = []
    for name, check in (("coverage", check_coverage), ("kpti", check_kpti)):
        results = [check(own, replace(facts, start=lo, end=hi, tables_freed=False))
                   for lo, hi in runs]
        failed = next((r for r in results if r.status == "fail"), None)
        if failed is not None or results[0].status == "skip" or len(results) == 1:
            out.append(failed or results[0])
        else:
            out.append(KernelCheck(name, "pass", f"{len(runs)} runs of populated entries: " +
                                   "; ".join(r.reason for r in results)))
    lo, hi = exp.freed
    walk = replace(facts, start=lo, end=hi, tables_freed=hi > lo)
    out.insert(1, check_walk_caches(own, walk))
    return tuple(out)


def _workload_command(step: WorkStep) -> tuple[str, ...]:
    if step.kind == "mmap":
        return (*(("populate",) if step.populate else ()), "thp" if step.thp else "nothp")
    if step.kind == "mprotect":
        return (step.prot,)
    if step.kind == "exit" and step.thp:
        return ("thp",)
    return ()


def _child_asid(window: Sequence[ObservedOp], cpu: int, asid: int) -> int | None:
    """The exiting child's ASID: a TTBR1 write on the workload's CPU with another ASID."""
    for op in window:
        if (op.kind == "msr" and op.op == "ttbr1_el1" and op.cpu == cpu and op.xt is not None
                and op.xt >> 48 not in (asid, asid | 1)):
            return op.xt >> 48
    return None


def run_workload_steps(vm: KernelMachine, tracer: KernelTracer, files: KernelFiles,
                       info: KernelInfo, symbols: Symbols, workloads: Sequence[Workload],
                       policy: str | None, prepare_s: float) -> KernelRun:
    """The workload scenarios in this boot: every teardown step traced, checked, modelled."""
    from shootdown.kernel.info import kernel_policy
    from shootdown.kernel.workload import build
    from shootdown.model.policy import get_policy
    from shootdown.scenario.geometry import GRANULE_SHIFT, valid_geometry

    assert vm.t_ready is not None and vm.boot_seconds is not None
    window = _Window(tracer)
    boot_log = list(vm.lines)
    kpti = any(KPTI_LINE in line for line in boot_log)
    lpa2 = any(LPA2_LINE in line for line in boot_log)
    features = frozenset(f for f, texts in FEATURE_LINES.items()
                         if any(t in line for line in boot_log for t in texts))
    page_size = int(vm.ready.get("pagesize", "4096"))
    cpu = int(vm.ready.get("cpu", "0"))
    granule = {4096: "4k", 16384: "16k", 65536: "64k"}[page_size]
    pol = get_policy(policy).name if policy else kernel_policy(info)[0]
    # A 52-bit 4K/16K kernel on a CPU without FEAT_LPA2 falls back to 48 bits at boot.
    va_bits = 48 if info.va_bits is None or (info.va_bits == 52 and not lpa2) else info.va_bits
    unsupported = None
    if lpa2:  # the model's "lpa2" CPU feature: range bases in 64 KiB units, 5 levels on 4K
        features |= {"lpa2"}
        if not get_policy(pol).lpa2_ranges:
            unsupported = f"{pol} has no LPA2 (CONFIG_ARM64_LPA2 came in v6.9)"
    if not valid_geometry(granule, va_bits, lpa2=lpa2):
        unsupported = f"the model has no {granule} granule with {va_bits}-bit VA" + (
            " under LPA2" if lpa2 else "")
    runnable = [w for w in workloads if 1 << GRANULE_SHIFT[w.granule] == page_size]
    skipped = tuple((w.path, f"written for the {w.granule} granule; this kernel's pages are "
                     f"{page_size // 1024}K") for w in workloads if w not in runnable)
    thp = vm.thp_mode()
    expansions = expand(runnable, page_size=page_size, va_bits=va_bits,
                        release=info.version, image=elf_vmas(build(), page_size),
                        thp=thp not in ("never", "none"))
    vmas = tuple(vm.maps())
    vm.set_handshake(True)
    t_switch = time.monotonic()
    vm.step("SWITCH-MM", 0, 0, window=window)
    switch = tracer.read()
    switch_s = time.monotonic() - t_switch
    asid = asid_from_switch(switch, cpu)
    if asid is None:
        raise TraceError("no TTBR1 write on the workload's CPU in the SWITCH-MM window: cannot "
                         "tell the workload's ASID (is cpu_do_switch_mm in the traced text?)")
    steps: list[CheckedStep] = []
    for ew in expansions:
        for i, exp in enumerate(ew.steps, start=1):
            steps += _run_step(vm, tracer, window, ew.workload, i, exp, cpu=cpu, asid=asid,
                               kpti=kpti, lpa2=lpa2, page_size=page_size, policy=pol,
                               granule=granule, va_bits=va_bits, features=features,
                               unsupported=unsupported)
        for extra in ew.cleanup:  # what the workload left mapped goes, untraced, as expanded
            vm.step("MUNMAP", extra.addr, extra.length)
    after_boot = time.monotonic() - vm.t_ready
    return KernelRun(kernel=files.label, info=info, argv=tuple(vm.argv), symbols=symbols.where,
                     asid=asid, kpti=kpti, lpa2=lpa2, steps=tuple(steps),
                     switch_window=tuple(switch), switch_s=switch_s, boot_s=vm.boot_seconds,
                     after_boot_s=after_boot, prepare_s=prepare_s,
                     workload_steps=vm.steps_run, policy=pol, features=tuple(sorted(features)),
                     skipped=skipped, vmas=vmas, thp_mode=thp)


def _run_step(vm: KernelMachine, tracer: KernelTracer, window: _Window, wl: Workload, i: int,
              exp: Expansion, *, cpu: int, asid: int, kpti: bool, lpa2: bool, page_size: int,
              policy: str, granule: str, va_bits: int, features: frozenset[str],
              unsupported: str | None) -> list[CheckedStep]:
    step = exp.step
    command = COMMANDS[step.kind]
    args = _workload_command(step)
    if step.kind == "mmap":
        answer = vm.step(command, step.addr, step.length, *args)
        if answer.rc != 0 or answer.fields.get("addr") not in (None, f"0x{step.addr:x}"):
            raise TraceError(f"{wl.path}: step {i} mmap: the workload could not map "
                             f"[{step.addr:#x}, {step.end:#x}): rc={answer.rc} "
                             f"addr={answer.fields.get('addr')}")
        return []
    problems: list[str] = []
    # the other CPU loads the populated pages first (fills its TLB); never an unpopulated
    # page: its load would map the zero page and change the layout the model was given
    runs = exp.runs(page_size)
    if step.kind == "munmap":
        for lo, hi in exp.runs(page_size, readable=True):
            warm = vm.step("PROBE", lo, hi - lo)
            if warm.number_field("segv"):
                problems.append(f"PROBE before [{lo:#x}, {hi:#x}): {warm.fields['segv']} "
                                "mapped pages faulted on the other CPU")
    t_step = time.monotonic()
    answer = vm.step(command, step.addr, step.length, *args, window=window)
    seconds = time.monotonic() - t_step
    observed = tracer.read()
    non_sites = tracer.non_sites
    if answer.rc != 0:  # EXIT-CHILD: -1 when the child could not map its region
        problems.append(f"{command}: rc={answer.rc}")
    stale = 0
    if step.kind == "munmap" or (step.kind == "mprotect" and step.prot == "none"):
        for lo, hi in runs:
            after = vm.step("PROBE", lo, hi - lo)
            loaded = after.number_field("loaded")
            stale += loaded
            if loaded:
                problems.append(f"PROBE after [{lo:#x}, {hi:#x}): {loaded} pages still loaded "
                                f"on cpu {after.fields.get('cpu')}: stale TLB entries")
    owner = asid
    if step.kind == "exit":
        child = _child_asid(observed, cpu, asid)
        if child is None:
            problems.append("no TTBR1 write with the child's ASID in the window: cannot tell "
                            "whose teardown it is")
        else:
            owner = child
    own, rest = separate(observed, cpu=cpu, asid=owner, kpti=kpti, unmap_path=WORKLOAD_PATH)
    stream = StepStream(answer.number, command, step.addr, step.end, own, rest)
    facts = StepFacts(exp.start, exp.end, page_size, owner, kpti, lpa2,
                      tables_freed=exp.tables_freed, leaf_level=exp.leaf_level)
    checks = model_free_checks(own, exp, facts)
    model = compare_with_model(exp, own, policy=policy, granule=granule, va_bits=va_bits,
                               asid=owner, kpti=kpti, features=features,
                               unsupported=unsupported)
    name = f"{wl.name}#{i} {step.kind}"
    return [CheckedStep(name, answer, stream, facts, checks, stale, seconds, tuple(problems),
                        non_sites, model)]
