"""What ``shootdown run --gdb`` needs: QEMU's gdbstub and the exact gdb command line.

The guest is started halted (``-S``) with the gdbstub on a free local TCP
port (``-gdb tcp:127.0.0.1:PORT``); the user attaches with the printed
``gdb-multiarch`` command, which loads the firmware ELF's symbols, connects,
sets a breakpoint at the function that runs the failing step and continues.

Breakpoints under TCG are on virtual addresses, so a breakpoint at a symbol
of the firmware (linked at its high kernel VAs) is hit once the MMU is on,
without gdb writing into guest memory.

Where: before the diverging instruction executes. With the index of the
first diverging instruction in its step (the sequence check's divergence),
the breakpoints are on the functions that issue every maintenance
instruction (``op_tlbi``, ``op_dsb``, ``op_isb``; ``oplog_report`` when the
guest stopped short), on the condition ``scn_step_now == STEP && oplog_len
== INDEX``: the firmware sets ``scn_step_now`` to the running step and
``oplog_len`` counts the step's instructions issued so far, so the stop is at
the entry of the call that is about to issue the diverging one (a step's
instruction can be issued before its entry function, by a mid-gather flush).

Without an index (a probe failure), or with a firmware built before
``scn_step_now``: the step's entry point in the firmware (``tlb_finish_mmu``
for a gather or munmap; the policy's own ``flush_range_vX_Y`` /
``kernel_range_vX_Y`` / ``kernel_pgtable_vX_Y`` for the raw flushes, the
newest one not later than the policy, as they are named in
firmware/src/policy.c), read from the ELF's symbol table, never assumed.
Earlier steps of the same kind are skipped with gdb's ``ignore``.

Caller's duties (the run command): a halted guest prints nothing, so the
boot and idle timeouts must be lifted while gdb holds it; send the
scenario as usual once ``READY`` arrives.
"""

from __future__ import annotations

import os
import shlex
import socket
from dataclasses import dataclass

#: step kind -> symbol (exact) or prefix of per-release symbols ("...v" + X_Y)
_STEP_SYMBOLS = {
    "gather": "tlb_finish_mmu",
    "munmap": "tlb_finish_mmu",
    "flush_tlb_mm": "flush_tlb_mm_all",
    "flush_tlb_page": "flush_tlb_page_all",
    "flush_tlb_range": "flush_range_v",
    "flush_tlb_kernel_range": "kernel_range_v",
    "flush_tlb_kernel_pgtable": "kernel_pgtable_v",
}
#: where to stop when nothing better is known: the scenario command handler
FALLBACK_SYMBOL = "scenario_handle_line"
#: the firmware functions that issue (or, last, report) a step's maintenance
#: instructions, each entered before its instruction executes
ISSUERS = ("op_tlbi", "op_dsb", "op_isb", "oplog_report")
#: the firmware's "step running now" and "instructions of the step so far"
STEP_VARIABLE, COUNT_VARIABLE = "scn_step_now", "oplog_len"


@dataclass(frozen=True)
class GdbPlan:
    """The QEMU argv additions and the gdb command for one debugging run."""

    port: int
    #: append to QEMU's argv
    qemu_args: tuple[str, ...]
    #: the gdb-multiarch argv to print
    gdb_argv: tuple[str, ...]
    #: the symbol the breakpoint is on, and how many earlier hits it skips
    breakpoint: str
    ignore: int

    @property
    def gdb_command(self) -> str:
        """The command line for people to paste."""
        return shlex.join(self.gdb_argv)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (QEMU binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def elf_functions(elf: str | os.PathLike[str]) -> set[str]:
    """Names of the function symbols in the firmware ELF."""
    return elf_symbols(elf, "STT_FUNC")


def elf_symbols(elf: str | os.PathLike[str], kind: str) -> set[str]:
    """Names of the symbols of type ``kind`` (``STT_FUNC``, ``STT_OBJECT``) in the ELF."""
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import SymbolTableSection

    from shootdown.errors import FirmwareError

    try:
        with open(elf, "rb") as f:
            out = set()
            for section in ELFFile(f).iter_sections():
                if isinstance(section, SymbolTableSection):
                    out |= {s.name for s in section.iter_symbols()
                            if s["st_info"]["type"] == kind and s.name}
            return out
    except OSError as exc:
        raise FirmwareError(f"{elf}: cannot read: {exc.strerror or exc}") from exc


def _release(name: str) -> tuple[int, ...]:
    return tuple(int(x) for x in name.lstrip("v").replace("_", ".").split("."))


def step_symbol(functions: set[str], kind: str, policy: str | None) -> str:
    """The firmware function where a step of ``kind`` under ``policy`` does its work."""
    want = _STEP_SYMBOLS.get(kind)
    if want is None:
        return FALLBACK_SYMBOL
    if not want.endswith("_v"):
        return want if want in functions else FALLBACK_SYMBOL
    versions = []
    for fn in functions:
        if fn.startswith(want):
            try:
                versions.append((_release(fn[len(want):]), fn))
            except ValueError:
                continue
    if not versions:
        return FALLBACK_SYMBOL
    if policy is None:
        return max(versions)[1]
    limit = _release(policy)
    older = [v for v in versions if v[0] <= limit]
    return max(older)[1] if older else min(versions)[1]


def plan_gdb(elf: str | os.PathLike[str], *, step_kinds: list[str] | None = None,
             failing_step: int | None = None, policy: str | None = None,
             failing_index: int | None = None,
             port: int | None = None, gdb: str = "gdb-multiarch") -> GdbPlan:
    """The plan for a run stopped at ``failing_step`` (1-based) of a scenario.

    ``step_kinds`` are the scenario's step kinds in order (``scenario.steps[i].kind``).
    With ``failing_index`` (the diverging instruction's index in its step) the
    stop is right before that instruction; else at the step's entry point;
    without a failing step, at the scenario command handler.
    """
    port = port or free_port()
    elf_path = os.path.abspath(elf)
    argv = [gdb, "-q", elf_path, "-ex", "set pagination off",
            "-ex", f"target remote 127.0.0.1:{port}"]
    qemu_args = ("-S", "-gdb", f"tcp:127.0.0.1:{port}")
    if failing_step is not None and failing_index is not None and failing_step >= 1 \
            and set(ISSUERS) <= elf_functions(elf) \
            and {STEP_VARIABLE, COUNT_VARIABLE} <= elf_symbols(elf, "STT_OBJECT"):
        condition = (f"{STEP_VARIABLE} == {failing_step} && "
                     f"{COUNT_VARIABLE} == {failing_index}")
        for fn in ISSUERS:
            argv += ["-ex", f"break {fn} if {condition}"]
        argv += ["-ex", "continue"]
        return GdbPlan(port=port, qemu_args=qemu_args, gdb_argv=tuple(argv),
                       breakpoint=f"{'/'.join(ISSUERS)} if {condition}", ignore=0)
    symbol, ignore = FALLBACK_SYMBOL, 0
    if step_kinds and failing_step is not None and 1 <= failing_step <= len(step_kinds):
        functions = elf_functions(elf)
        kind = step_kinds[failing_step - 1]
        symbol = step_symbol(functions, kind, policy)
        if symbol != FALLBACK_SYMBOL:
            ignore = sum(1 for k in step_kinds[:failing_step - 1]
                         if step_symbol(functions, k, policy) == symbol)
    argv += ["-ex", f"break {symbol}"]
    if ignore:
        argv += ["-ex", f"ignore 1 {ignore}"]
    argv += ["-ex", "continue"]
    return GdbPlan(port=port, qemu_args=qemu_args, gdb_argv=tuple(argv), breakpoint=symbol,
                   ignore=ignore)
