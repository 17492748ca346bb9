"""What a real kernel executed in one step's tracing window, and which of it is the step's own.

Records (frozen, JSON-ready with :func:`dataclasses.asdict`):

* :class:`ObservedOp`: one executed TLBI (with its operand ``xt``), DSB
  (with its option), ISB or TTBR write, with its CPU, PC and the kernel
  function it executed in;
* :class:`StepStream`: one step's window: the step (op, range), the
  teardown stream, the rest, and why each of the rest was set aside.

The teardown stream is the seam the later model comparison uses: its
``ops`` are in execution order and carry the same (kind, op, xt) the
model's instructions do (``key()``).

The rule that separates the step's own teardown from the rest of a window
(timer interrupts, scheduling, the workload's tty read of "GO", the probe
CPU's idle loop), :func:`separate`, is documented in docs/kernel.md
("Which instructions are the step's"):

1. Only the workload's CPU (the READY line's ``cpu``: the main thread is
   pinned there) runs the step's system call; everything on other CPUs is
   the rest ("other CPU").
2. A TLBI with an ASID field (by VA, by range, by ASID) is the step's when
   its ASID is the workload's (``asid``, read from the TTBR1 write of a
   ``SWITCH-MM`` step), or, with KPTI on, the user ASID ``asid | 1``
   (``arch/arm64/include/asm/tlbflush.h``, ``__tlbi_user``, v4.16+).  Any
   other ASID is the rest ("ASID n, not the workload's").
3. A TLBI without an ASID (``vmalle1is``, the ``vaa*`` forms) is the
   step's when it executed in a function that also issued one of rule 2's
   TLBIs in this window, or in one of :data:`UNMAP_PATH`; else the rest.
4. A DSB or ISB is the step's when it executed in a function that issued a
   TLBI of the step's (rules 2-3) in this window, or in :data:`UNMAP_PATH`
   (on the workload's CPU); else the rest ("not in the unmap path").
   Names are compared without the compiler's clone suffixes
   (``__flush_tlb_range.isra.0`` is ``__flush_tlb_range``).
5. TTBR writes are never the teardown; they are kept in ``rest`` (the ASID
   step reads them).

Nothing is dropped: every executed site is in ``ops`` or in ``rest``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from shootdown.insn import COUNT_KINDS, count_kind

#: Functions of the unmap/teardown path as the symbol a barrier or an
#: ASID-less TLBI executed in may be called (most of tlbflush.h is inlined
#: into them): mm/mmu_gather.c (tlb_flush_mmu, tlb_finish_mmu, ...),
#: mm/mmap.c (unmap_region, exit_mmap), arch/arm64/include/asm/tlbflush.h
#: and tlb.h when not inlined (flush_tlb_mm, __flush_tlb_range, tlb_flush).
UNMAP_PATH: frozenset[str] = frozenset({
    "tlb_flush_mmu", "tlb_flush_mmu_tlbonly", "tlb_finish_mmu", "tlb_gather_mmu",
    "__tlb_remove_page_size", "tlb_remove_table", "tlb_table_flush", "tlb_flush",
    "flush_tlb_mm", "flush_tlb_range", "__flush_tlb_range", "flush_tlb_page",
    "unmap_region", "unmap_vmas", "free_pgtables", "exit_mmap", "zap_page_range",
    "zap_page_range_single", "do_vmi_munmap", "do_vmi_align_munmap", "do_mas_munmap",
    "do_mas_align_munmap", "__do_munmap", "__vm_munmap", "change_protection",
    "mprotect_fixup", "madvise_dontneed_free", "unmap_page_range",
})


@dataclass(frozen=True)
class ObservedOp:
    """One maintenance instruction the kernel executed in a window."""

    #: ``tlbi``, ``dsb``, ``isb`` or ``msr`` (a TTBR write)
    kind: str
    #: TLBI operation (``vale1is``), DSB option (``ish``), ``ttbr1_el1``; "" for ISB
    op: str
    #: the TLBI's (or MSR's) operand register; None for DSB, ISB, operand-less TLBIs
    xt: int | None
    #: the vCPU that executed it
    cpu: int
    #: its address
    pc: int
    #: the kernel function it executed in ("?" when below every symbol)
    function: str
    #: its line in the window's QEMU log (the log's order is execution order
    #: under ``-accel tcg,thread=single``)
    line: int = 0

    def key(self) -> tuple[str, str, int | None]:
        """What a model instruction must agree on: (kind, op, xt)."""
        return (self.kind, self.op, self.xt)

    def asid(self) -> int | None:
        """The operand's ASID field (bits 63:48), or None for a form without one."""
        if self.kind != "tlbi" or self.xt is None or self.op.startswith(("vaa", "rvaa")):
            return None
        return self.xt >> 48

    def __str__(self) -> str:
        text = f"{self.kind.upper()} {self.op}".strip()
        if self.xt is not None:
            text += f" {self.xt:#018x}"
        return f"{text} cpu{self.cpu} {self.pc:#x} <{self.function}>"


@dataclass(frozen=True)
class SetAside:
    """An instruction of the window that is not the step's, and why."""

    #: the instruction
    op: ObservedOp
    #: the rule that set it aside, one line
    reason: str


@dataclass(frozen=True)
class StepStream:
    """One step's tracing window, separated (see :func:`separate`)."""

    #: the step's number and operation (MUNMAP, DONTNEED, ...)
    number: int
    step: str
    #: the range the step worked on, [start, end)
    start: int
    end: int
    #: the step's own maintenance, in execution order
    ops: tuple[ObservedOp, ...]
    #: everything else the window saw, in execution order, with reasons
    rest: tuple[SetAside, ...] = field(default=())

    def counts(self) -> dict[str, int]:
        """TLBI, DSB ISHST, DSB ISH and ISB counts of the teardown stream."""
        out = dict.fromkeys(COUNT_KINDS, 0)
        for op in self.ops:
            key = count_kind(op.kind, op.op)
            if key is not None:
                out[key] += 1
        return out


def base_name(function: str) -> str:
    """A function's name without the compiler's clone suffixes (``__flush_tlb_range.isra.0``)."""
    return function.split(".", 1)[0]


def separate(window: Sequence[ObservedOp], *, cpu: int, asid: int, kpti: bool,
             unmap_path: Iterable[str] = UNMAP_PATH
             ) -> tuple[tuple[ObservedOp, ...], tuple[SetAside, ...]]:
    """(the step's own ops, the rest with reasons) of one window, by the module's rule (pure)."""
    path = frozenset(unmap_path)
    asids = {asid, asid | 1} if kpti else {asid}
    verdict: dict[int, str | None] = {}  # index -> None (the step's) or the reason it is not
    functions: set[str] = set()
    for i, op in enumerate(window):
        if op.cpu != cpu:
            verdict[i] = f"other CPU (cpu{op.cpu}; the workload runs on cpu{cpu})"
        elif op.kind == "msr":
            verdict[i] = "a TTBR write (context switch), not maintenance"
        elif op.kind == "tlbi" and op.asid() is not None:
            own = op.asid()
            if own in asids:
                verdict[i] = None
                functions.add(op.function)
            else:
                verdict[i] = (f"ASID {own}, not the workload's ({asid}"
                              f"{' or its KPTI user ASID ' + str(asid | 1) if kpti else ''})")
    for i, op in enumerate(window):
        if i in verdict:
            continue
        if op.function in functions or base_name(op.function) in path:
            verdict[i] = None
            if op.kind == "tlbi":
                functions.add(op.function)
        else:
            verdict[i] = (f"{op.function}: not in the unmap path (no TLBI of the workload's "
                          "ASID in it)")
    own_ops = tuple(op for i, op in enumerate(window) if verdict[i] is None)
    rest = tuple(SetAside(op, reason) for i, op in enumerate(window)
                 if (reason := verdict[i]) is not None)
    return own_ops, rest


def asid_from_switch(window: Sequence[ObservedOp], cpu: int) -> int | None:
    """The workload's ASID: the last TTBR1 write on its CPU in a ``SWITCH-MM`` window.

    ``cpu_do_switch_mm`` (arch/arm64/mm/context.c, v4.15+) writes the
    ASID into TTBR1_EL1[63:48]; switching back from the child is the last
    switch of the window.  With KPTI on, this is the kernel ASID (even).
    """
    writes = [op for op in window if op.kind == "msr" and op.op == "ttbr1_el1"
              and op.cpu == cpu and op.xt is not None]
    if not writes:
        return None
    return writes[-1].xt >> 48 if writes[-1].xt is not None else None
