"""What the CPU really executed: QEMU's execution log turned into maintenance records.

QEMU started with ``-d exec,nochain,cpu -D FILE -dfilter RANGES`` and one
instruction per translation block (``-singlestep`` before QEMU 8.1,
``-accel tcg,one-insn-per-tb=on`` since: :func:`trace_qemu_args` asks
:mod:`shootdown.guest.qemu` for the spelling) writes, for every translation
block it is about to run whose PC is inside RANGES (the same shape on 7.2
and 10.x)::

    Trace <cpu>: <host ptr> [<cs_base>/<pc>/<flags>/<cflags>] <symbol>
     PC=<pc> X00=<hex> X01=<hex>
    X02=<hex> ...
    X29=<hex> X30=<hex>  SP=<hex>
    PSTATE=<hex> <flags> EL<n><h|t>

One instruction per block makes every block one instruction; ``nochain`` makes QEMU
return to its main loop (and so log) before each block, even when it jumps
to the same block again; ``cpu`` adds the register dump, which is taken
*before* the block runs (``log_cpu_exec`` in ``accel/tcg/cpu-exec.c`` is
called ahead of the generated code), so for a TLBI the dump holds its Xt.
A line ``Stopped execution of TB chain before <ptr> [<pc>] <symbol>`` means
the block just logged did NOT run (an exit request arrived first); it is
dropped, or the trace would show a phantom, duplicated TLBI.  That line has
no CPU number, so with several vCPUs the reader drops the latest entry with
the same block pointer and PC.  Run traced guests with ``-accel
tcg,thread=single`` when they have more than one CPU: with multi-threaded
TCG two vCPUs' lines can interleave between a ``Trace`` line and its dump.

The reader is two steps, both pure:

* :func:`parse_log` -> :class:`Executed` entries per CPU, in order;
* :func:`decode_executed` -> :class:`MaintOp` records, decoding the
  instruction word read from the ELF at that PC (:mod:`shootdown.trace.decode`)
  and taking Xt from the dump.

:func:`maintenance_ranges` finds the ``-dfilter`` ranges: the addresses of
every TLBI/DSB/ISB in chosen functions of the ELF (or all of them).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import overload

from shootdown.elfsyms import ElfImage
from shootdown.errors import TraceError as TraceError  # re-exported for callers
from shootdown.guest.qemu import QemuVersion, with_one_insn_per_tb
from shootdown.trace.decode import Dsb, Isb, Tlbi, decode, is_tlbi_word

log = logging.getLogger(__name__)


_TRACE_RE = re.compile(
    r"^Trace (\d+): (0x[0-9a-f]+|\(nil\)) \[([0-9a-f]+)/([0-9a-f]+)/([0-9a-f]+)/([0-9a-f]+)\]")
_STOPPED_RE = re.compile(r"^Stopped execution of TB chain before (0x[0-9a-f]+|\(nil\)) "
                         r"\[([0-9a-f]+)\]")
_PC_RE = re.compile(r"\bPC=([0-9a-f]{16})")


class DumpRegisters(Sequence[int]):
    """X0..X30 of one ``-d cpu`` dump, each parsed only when asked for.

    A traced library logs hundreds of thousands of dumps and the trace needs
    one register of each (the TLBI's Xt): converting all 31 cost most of the
    parsing time.
    """

    __slots__ = ("_dump",)

    def __init__(self, dump: str) -> None:
        self._dump = dump

    def __len__(self) -> int:
        return 31

    @overload
    def __getitem__(self, index: int) -> int: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[int]: ...

    def __getitem__(self, index: int | slice) -> int | Sequence[int]:
        if isinstance(index, slice):
            return [self[i] for i in range(31)[index]]
        if not 0 <= index < 31:
            raise IndexError(index)
        m = re.search(rf"\bX{index:02d}=([0-9a-f]{{16}})", self._dump)
        if m is None:
            raise TraceError(f"no X{index:02d} in the register dump")
        return int(m.group(1), 16)


@dataclass(frozen=True)
class Executed:
    """One instruction QEMU executed inside the filtered ranges."""

    #: vCPU index (QEMU's ``cpu_index``: 0 is the boot CPU).
    cpu: int
    #: Guest virtual address of the instruction.
    pc: int
    #: X0..X30 before it ran (None if the log had no ``cpu`` dump).
    regs: Sequence[int] | None
    #: Line number of its ``Trace`` line in the log (1-based), for messages.
    line: int


@dataclass(frozen=True)
class MaintOp:
    """One TLB maintenance instruction, as executed or as reported.

    The same record serves both sides so that ``check/`` compares them with
    ``==``: the trace fills ``pc``; the guest's report leaves it None, and
    :meth:`key` is what must match.
    """

    #: ``TLBI``, ``DSB`` or ``ISB``.
    kind: str
    #: TLBI operation (``vale1is``) or DSB option (``ishst``); "" for ISB.
    op: str
    #: TLBI operand; None for ISB, DSB and the operand-less TLBIs.
    xt: int | None
    #: Where it ran (trace only).
    pc: int | None = None
    #: vCPU that ran it (trace only).
    cpu: int | None = None

    def key(self) -> tuple[str, str, int | None]:
        """What a report and a trace must agree on."""
        return (self.kind, self.op, self.xt)

    def __str__(self) -> str:
        text = f"{self.kind} {self.op}".strip()
        return text + (f" xt={self.xt:#018x}" if self.xt is not None else "")


def parse_log(lines: Iterable[str], path: str = "<log>",
              want_regs: Callable[[int], bool] | None = None) -> dict[int, list[Executed]]:
    """Executed instructions per CPU, in order, from QEMU's log lines.

    ``want_regs(pc)`` says whose register dump to keep (default: all); the
    others get ``regs=None``, which saves most of the parsing time when only
    TLBIs need their operand.

    Raises :class:`TraceError` on a ``Trace`` line that does not parse or a
    dump whose PC disagrees with its ``Trace`` line (an interleaved log).
    """
    return parse_text("\n".join(line.rstrip("\n") for line in lines) + "\n", path, want_regs)


#: The start of every entry: a ``Trace`` or ``Stopped`` line.
_HEAD_RE = re.compile(r"^(?:Trace |Stopped execution of TB chain)", re.M)
#: The same patterns as above, matched at an offset of the whole text.
_TRACE_AT = re.compile(_TRACE_RE.pattern[1:])
_STOPPED_AT = re.compile(_STOPPED_RE.pattern[1:])


def parse_text(text: str, path: str = "<log>",
               want_regs: Callable[[int], bool] | None = None) -> dict[int, list[Executed]]:
    """:func:`parse_log` of a whole log as one string.

    Works entry by entry (a ``Trace`` line and its register dump, or a
    ``Stopped`` line) with regular expressions over the text, not line by
    line: a traced scenario library logs hundreds of megabytes.
    """
    per_cpu: dict[int, list[Executed]] = {}
    order: list[tuple[int, str, int]] = []  # (cpu, block ptr, pc) of each entry, for "Stopped"
    heads = [m.start() for m in _HEAD_RE.finditer(text)]
    heads.append(len(text))
    number, counted = 1, 0  # line number of the entry at offset `counted`
    for k in range(len(heads) - 1):
        pos, end = heads[k], heads[k + 1]
        number += text.count("\n", counted, pos)
        counted = pos
        if text.startswith("Trace ", pos):
            m = _TRACE_AT.match(text, pos)
            if m is None:
                line = text[pos:min(end, pos + 100)].split("\n", 1)[0]
                raise TraceError(f"{path}:{number}: malformed Trace line: {line}")
            cpu, ptr, pc = int(m.group(1)), m.group(2), int(m.group(4), 16)
            values: Sequence[int] | None = None
            if want_regs is None or want_regs(pc):
                dump = text[m.end():end]
                found = _PC_RE.search(dump)
                if found is not None and int(found.group(1), 16) != pc:
                    raise TraceError(f"{path}:{number}: register dump PC "
                                     f"{int(found.group(1), 16):#x} does not match Trace PC "
                                     f"{pc:#x} (interleaved vCPUs? use -accel tcg,thread=single)")
                if "X30=" in dump:  # a whole dump (X30 is its last X register)
                    values = DumpRegisters(dump)
            per_cpu.setdefault(cpu, []).append(Executed(cpu, pc, values, number))
            order.append((cpu, ptr, pc))
            continue
        m = _STOPPED_AT.match(text, pos)
        if m is None:
            raise TraceError(f"{path}:{number}: malformed line: {text[pos:pos + 100]}")
        ptr, pc = m.group(1), int(m.group(2), 16)
        for i in range(len(order) - 1, -1, -1):
            cpu, p, q = order[i]
            if p == ptr and q == pc:
                dropped = per_cpu[cpu].pop(
                    max(j for j, e in enumerate(per_cpu[cpu]) if e.pc == pc))
                del order[i]
                log.debug("%s:%d: block at %#x did not run (cpu %d, line %d): dropped",
                          path, number, pc, cpu, dropped.line)
                break
    return per_cpu


def read_log(path: str, want_regs: Callable[[int], bool] | None = None
             ) -> dict[int, list[Executed]]:
    """:func:`parse_log` of a log file."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return parse_text(f.read(), path, want_regs)
    except OSError as exc:
        raise TraceError(f"{path}: cannot read the QEMU log: {exc}") from exc


def decode_executed(image: ElfImage, executed: Iterable[Executed]) -> Iterator[MaintOp]:
    """The maintenance instructions among ``executed``, with their operands.

    The word at each PC is read from the ELF (the code is not
    self-modifying); instructions that are not TLBI/DSB/ISB are skipped, so
    the filter may be wider than the maintenance instructions.
    """
    for e in executed:
        m = decode(image.word_at(e.pc))
        if isinstance(m, Tlbi):
            xt: int | None = None
            if m.has_operand and m.rt != 31:  # Rt = XZR: no operand (Tlbi(op, None))
                if e.regs is None:
                    raise TraceError(f"line {e.line}: TLBI {m.op} at {e.pc:#x} without a "
                                     "register dump (log with -d cpu)")
                xt = e.regs[m.rt]
            yield MaintOp("TLBI", m.op, xt, e.pc, e.cpu)
        elif isinstance(m, Dsb):
            yield MaintOp("DSB", m.option, None, e.pc, e.cpu)
        elif isinstance(m, Isb):
            yield MaintOp("ISB", "", None, e.pc, e.cpu)


def trace_ops(image: ElfImage, log_path: str) -> dict[int, list[MaintOp]]:
    """The executed maintenance sequence per CPU, from a log file and the ELF it ran."""
    tlbi_at: dict[int, bool] = {}

    def is_tlbi(pc: int) -> bool:
        if pc not in tlbi_at:
            tlbi_at[pc] = is_tlbi_word(image.word_at(pc))
        return tlbi_at[pc]

    return {cpu: list(decode_executed(image, entries))
            for cpu, entries in sorted(read_log(log_path, is_tlbi).items())}


@dataclass(frozen=True)
class Segment:
    """The maintenance executed between two step marks (see :func:`split_at_marks`)."""

    #: X0 and X1 at the mark (the firmware passes the scenario id and step number).
    mark: tuple[int, int]
    #: What ran after the mark, up to the next one.
    ops: tuple[MaintOp, ...]


def split_at_marks(image: ElfImage, executed: Iterable[Executed],
                   mark: int) -> tuple[tuple[MaintOp, ...], list[Segment]]:
    """Cut one CPU's executed sequence at the executions of the instruction at ``mark``.

    ``mark`` is the address of a marker function the firmware calls at the
    start of each step with (scenario id, step) in X0/X1; include it in the
    ``-dfilter`` ranges.  Returns what ran before the first mark, and one
    :class:`Segment` per mark, in order.
    """
    before: list[MaintOp] = []
    marks: list[tuple[int, int]] = []
    groups: list[list[MaintOp]] = []
    current = before
    for e in executed:
        if e.pc == mark:
            if e.regs is None:
                raise TraceError(f"line {e.line}: step mark without a register dump")
            marks.append((e.regs[0], e.regs[1]))
            current = []
            groups.append(current)
        else:
            current.extend(decode_executed(image, [e]))
    return tuple(before), [Segment(m, tuple(g)) for m, g in zip(marks, groups, strict=True)]


def maintenance_ranges(image: ElfImage, functions: Iterable[str] | None = None,
                       merge_gap: int = 0) -> list[tuple[int, int]]:
    """[start, end) address ranges of every TLBI/DSB/ISB in ``functions`` (default all).

    Ranges closer than ``merge_gap`` bytes are merged (fewer ranges for
    QEMU to test per block; more non-maintenance entries in the log).
    """
    chosen = (image.functions if functions is None
              else [image.get_function(name) for name in functions])
    addrs = sorted({fn.address + off for fn in chosen for off, word in image.iter_words(fn)
                    if decode(word) is not None})
    ranges: list[tuple[int, int]] = []
    for a in addrs:
        if ranges and a - ranges[-1][1] <= merge_gap:
            ranges[-1] = (ranges[-1][0], a + 4)
        else:
            ranges.append((a, a + 4))
    return ranges


def dfilter_arg(ranges: Iterable[tuple[int, int]]) -> str:
    """The ``-dfilter`` value for ``ranges`` (``0xSTART+0xLEN,...``)."""
    return ",".join(f"{start:#x}+{end - start:#x}" for start, end in ranges)


def trace_qemu_args(argv: Sequence[str], log_path: str, ranges: Iterable[tuple[int, int]],
                    version: QemuVersion) -> list[str]:
    """``argv`` (a guest's QEMU command line) made a traced, one-instruction-per-block run.

    ``version`` is the QEMU that runs it (:func:`shootdown.guest.qemu.version`):
    the single-stepping option differs (``-singlestep`` before 8.1, else
    ``one-insn-per-tb=on`` merged into the guest's own ``-accel``).
    ``-accel tcg,thread=single`` is left to the caller: it is needed only
    with more than one vCPU, and it replaces the guest's own ``-accel``.
    """
    return with_one_insn_per_tb(
        [*argv, "-d", "exec,nochain,cpu", "-D", log_path, "-dfilter", dfilter_arg(ranges)],
        version)


def expand_report(records: Iterable[tuple[str, dict[str, str]]]) -> list[MaintOp]:
    """The guest's TLBI/DSB/ISB records (tag, payload) as one :class:`MaintOp` per instruction.

    A TLBI record with ``n=`` is a run (docs/protocol.md): ``xt + i*inc``
    for i in 0..n-1, each followed by its KPTI copy ``| 1<<48`` when
    ``user=1``.  Other tags are ignored.
    """
    out: list[MaintOp] = []
    for tag, payload in records:
        if tag == "DSB":
            out.append(MaintOp("DSB", payload["opt"], None))
        elif tag == "ISB":
            out.append(MaintOp("ISB", "", None))
        elif tag == "TLBI":
            op = payload["op"]
            if "xt" not in payload:
                out.append(MaintOp("TLBI", op, None))
                continue
            xt = int(payload["xt"], 0)
            n = int(payload.get("n", "1"), 0)
            inc = int(payload.get("inc", "0"), 0)
            user = payload.get("user", "0") == "1"
            for i in range(n):
                value = (xt + i * inc) & (1 << 64) - 1
                out.append(MaintOp("TLBI", op, value))
                if user:
                    out.append(MaintOp("TLBI", op, value | 1 << 48))
    return out
