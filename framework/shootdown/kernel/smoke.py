"""The built-in smoke workload: map, warm the other CPU's TLB, unmap, probe.

It is what ``shootdown kernel boot`` runs and what the default test run
checks on a real kernel, before scenarios of the workload kind exist:

1. ``MMAP`` ``pages`` pages at ``addr``, populated (one write per page);
2. ``PROBE`` from the probe thread on the other CPU: every page must load
   (this also puts the translations into that CPU's TLB);
3. ``MUNMAP`` them;
4. ``PROBE`` again: every load must take SIGSEGV.  A load that succeeds is
   a stale translation on the other CPU: the kernel's shootdown missed it.

The expectation needs no model: after munmap returns, nothing of the range
may be reachable from any CPU (``mm/mmap.c``, ``do_vmi_munmap``, any release).
"""

from __future__ import annotations

from dataclasses import dataclass

from shootdown.kernel.boot import KernelMachine, StepResult

#: Where the smoke workload maps (4 GiB: clear of the workload's own image
#: at 4 MiB and of the stack, valid for 39-, 48- and 52-bit VA layouts).
DEFAULT_ADDR = 0x1_0000_0000


@dataclass(frozen=True)
class SmokeResult:
    """The smoke workload's steps and what its probes found."""

    #: every step's answer, in order
    steps: tuple[StepResult, ...]
    #: pages probed
    pages: int
    #: pages the other CPU could not load while mapped (should be 0)
    unreadable_while_mapped: int
    #: pages the other CPU still loaded after munmap: stale translations (must be 0)
    stale_after_unmap: int
    #: the CPU the probe ran on (the READY line's probe_cpu)
    probe_cpu: int
    #: problems, one line each; empty when the workload passed
    problems: tuple[str, ...]

    @property
    def passed(self) -> bool:
        """No problem found."""
        return not self.problems


def run_smoke(vm: KernelMachine, *, pages: int = 4, addr: int = DEFAULT_ADDR) -> SmokeResult:
    """Run the smoke workload on a booted machine and judge it (:func:`judge_smoke`)."""
    length = pages * int(vm.ready.get("pagesize", "4096"))
    steps = (vm.step("MMAP", addr, length, "populate"), vm.step("PROBE", addr, length),
             vm.step("MUNMAP", addr, length), vm.step("PROBE", addr, length))
    return judge_smoke(steps, pages=pages, addr=addr, main_cpu=vm.ready.get("cpu"),
                       smp=vm.spec.smp)


def judge_smoke(steps: tuple[StepResult, ...], *, pages: int, addr: int,
                main_cpu: str | None, smp: int) -> SmokeResult:
    """The smoke workload's verdict from its four answers (MMAP, PROBE, MUNMAP, PROBE)."""
    mapped, warm, unmapped, probe = steps
    problems = []
    for result in (mapped, unmapped):
        if result.rc != 0:
            problems.append(f"step {result.number} {result.op}: rc={result.rc}")
    if mapped.fields.get("addr") and int(mapped.fields["addr"], 0) != addr:
        problems.append(f"step {mapped.number} MMAP: mapped at {mapped.fields['addr']}, "
                        f"asked for 0x{addr:x}")
    unreadable = warm.number_field("segv")
    stale = probe.number_field("loaded")
    if unreadable:
        problems.append(f"step {warm.number} PROBE: {unreadable} of {pages} mapped pages "
                        "faulted on the other CPU")
    if stale:
        problems.append(f"step {probe.number} PROBE: {stale} of {pages} unmapped pages still "
                        f"loaded on cpu {probe.fields.get('cpu')}: stale TLB entries")
    if probe.number_field("segv") != pages:
        problems.append(f"step {probe.number} PROBE: {probe.fields.get('segv')} SIGSEGVs for "
                        f"{pages} unmapped pages")
    cpu = probe.number_field("cpu")
    if smp > 1 and str(cpu) == main_cpu:
        problems.append(f"step {probe.number} PROBE: ran on cpu {cpu}, the unmapping CPU")
    return SmokeResult(steps=steps, pages=pages, unreadable_while_mapped=unreadable,
                       stale_after_unmap=stale, probe_cpu=cpu, problems=tuple(problems))
