"""One function's instructions, classified for the barrier analysis.

capstone decodes; this module reduces each instruction to what the
analysis needs: is it a store (and through which base register), a TLBI,
DSB or ISB (decoded by :mod:`shootdown.trace.decode`, the same decoder the
trace uses), a branch (and where to), a call, a return; and the few data
effects the analysis follows to prune impossible paths and to tell a
page-table store from a bookkeeping one: ``adrp``/``mov``/``add``/``sub``
with constants, loads from a known address, ``cmp`` with an immediate.
Everything else that writes a register makes that register unknown.
"""

from __future__ import annotations

import enum
import operator
import re
import struct
from dataclasses import dataclass, fields
from typing import Any

from shootdown.errors import FirmwareError
from shootdown.trace.decode import Maintenance, decode

#: Register index of SP / WSP (distinct from every general register).
SP = 31
#: Register index used for XZR / WZR: reads as zero, writes vanish.
ZR = 32

_REG_RE = re.compile(r"^([xw])(\d+)$")
_ALIASES = {"fp": 29, "lr": 30, "x29": 29, "x30": 30, "sp": SP, "wsp": SP,
            "xzr": ZR, "wzr": ZR}
_TARGET_RE = re.compile(r"#(-?0x[0-9a-f]+|-?\d+)$")

#: Mnemonic prefixes of the atomic read-modify-write instructions (they store).
_ATOMIC_PREFIXES = ("ldadd", "ldclr", "ldeor", "ldset", "ldsmax", "ldsmin", "ldumax",
                    "ldumin", "swp", "cas")
#: Flag-setting instructions other than ``cmp`` with an immediate.
_FLAG_SETTERS = ("cmp", "cmn", "tst", "ccmp", "ccmn", "fcmp", "fccmp", "adds", "subs", "ands",
                 "bics", "negs", "ngcs", "adcs", "sbcs", "setf", "rmif", "cfinv", "msr")
#: Calls clobber the argument and temporary registers (AAPCS64: x0..x18, x30).
CALL_CLOBBERED = frozenset([*range(19), 30])


class Kind(enum.Enum):
    """What an instruction does to control flow and to the barrier state."""

    OTHER = "other"
    STORE = "store"
    LOAD = "load"
    MAINT = "maint"       #: TLBI, DSB or ISB (``maint`` says which)
    BRANCH = "b"          #: unconditional direct branch (inside: jump; outside: tail call)
    COND = "cond"         #: b.cond, cbz/cbnz, tbz/tbnz
    CALL = "call"         #: bl
    ICALL = "icall"       #: blr (callee unknown)
    IJUMP = "ijump"       #: br (jump table or tail call through a register)
    RET = "ret"           #: ret, eret and friends
    STOP = "stop"         #: brk, hlt, udf, undecodable: the path ends


@dataclass(frozen=True, slots=True)
class Insn:
    """One decoded instruction of a function."""

    #: Byte offset from the start of the function.
    offset: int
    #: Address (section offset for relocatable objects).
    address: int
    #: The instruction word.
    word: int
    #: ``mnemonic operands`` as capstone prints it.
    text: str
    #: Control-flow / barrier class.
    kind: Kind
    #: TLBI/DSB/ISB for MAINT.
    maint: Maintenance | None = None
    #: Branch or call target address (direct forms).
    target: int | None = None
    #: The condition: ``("b", cond)``, ``("cbz"|"cbnz", reg)``, ``("tbz"|"tbnz", reg, bit)``.
    cond: tuple[str | int, ...] | None = None
    #: Base register and displacement of a store's or load's address.
    mem: tuple[int, int] | None = None
    #: Data effect the analysis follows (see :func:`_effect`), or None.
    effect: tuple[str | int, ...] | None = None
    #: General registers written (unknown afterwards unless ``effect`` says more).
    writes: frozenset[int] = frozenset()
    #: Whether it sets the flags (NZCV) in a way the analysis does not follow.
    sets_flags: bool = False
    #: Access width in bytes of a 32-bit ("w") destination (4) or 64-bit (8).
    width: int = 8


def reg_index(name: str) -> int | None:
    """x0..x30/w0..w30 -> 0..30, sp -> SP, xzr -> ZR, anything else None."""
    if name in _ALIASES:
        return _ALIASES[name]
    m = _REG_RE.match(name)
    return int(m.group(2)) if m else None


def _imm_operand(op: object) -> int:
    """An immediate operand with its optional ``lsl #n``."""
    value = int(op.imm)  # type: ignore[attr-defined]
    shift = op.shift  # type: ignore[attr-defined]
    if shift.type == 1 and shift.value:  # ARM64_SFT_LSL
        value <<= shift.value
    return value


#: The mnemonics :func:`_effect` follows.
_EFFECT_MNEMONICS = frozenset({"adrp", "mov", "movz", "add", "sub", "csel", "csinc", "cset",
                               "cmp"})


def _effect(cs_insn: object, mnemonic: str) -> tuple[Any, ...] | None:
    """The data effect of an instruction the analysis follows, or None."""
    if mnemonic not in _EFFECT_MNEMONICS:  # most instructions: skip the operand walk
        return None
    from capstone import arm64  # type: ignore[import-untyped]

    ops = list(cs_insn.operands)  # type: ignore[attr-defined]
    regs = [reg_index(cs_insn.reg_name(o.reg)) if o.type == arm64.ARM64_OP_REG else None  # type: ignore[attr-defined]
            for o in ops]
    kinds = [o.type for o in ops]
    if mnemonic == "adrp" and kinds == [arm64.ARM64_OP_REG, arm64.ARM64_OP_IMM]:
        return ("set", regs[0], _imm_operand(ops[1]))
    if mnemonic in ("mov", "movz") and len(ops) == 2 and regs[0] is not None:
        if kinds[1] == arm64.ARM64_OP_IMM:
            return ("set", regs[0], _imm_operand(ops[1]))
        if kinds[1] == arm64.ARM64_OP_REG and regs[1] is not None:
            return ("copy", regs[0], regs[1])
    if mnemonic in ("add", "sub") and len(ops) == 3 and regs[0] is not None \
            and regs[1] is not None:
        if kinds[2] == arm64.ARM64_OP_IMM:
            imm = _imm_operand(ops[2])
            return ("addi", regs[0], regs[1], imm if mnemonic == "add" else -imm)
        if kinds[2] == arm64.ARM64_OP_REG and mnemonic == "add":
            return ("derive", regs[0], regs[1], regs[2] if regs[2] is not None else -1)
    if mnemonic in ("csel", "csinc") and len(ops) == 3 and None not in regs:
        return ("csel", regs[0], regs[1], regs[2], mnemonic)
    if mnemonic in ("cset",) and regs and regs[0] is not None:
        return ("cset", regs[0])
    if mnemonic == "cmp" and len(ops) == 2 and regs[0] is not None \
            and kinds[1] == arm64.ARM64_OP_IMM:
        return ("cmpi", regs[0], _imm_operand(ops[1]))
    return None


def classify(cs_insn: object, offset: int) -> Insn:
    """Reduce one capstone instruction (detail on) to an :class:`Insn`."""
    from capstone import arm64

    mnemonic: str = cs_insn.mnemonic  # type: ignore[attr-defined]
    op_str: str = cs_insn.op_str  # type: ignore[attr-defined]
    address: int = cs_insn.address  # type: ignore[attr-defined]
    word = int.from_bytes(cs_insn.bytes, "little")  # type: ignore[attr-defined]
    text = f"{mnemonic} {op_str}".strip()
    ops = list(cs_insn.operands)  # type: ignore[attr-defined]
    first = op_str.split(",")[0].strip()
    width = 4 if first.startswith("w") else 8
    base = dict(offset=offset, address=address, word=word, text=text, width=width)

    maint = decode(word)
    if maint is not None:
        return Insn(kind=Kind.MAINT, maint=maint, **base)  # type: ignore[arg-type]

    def target() -> int | None:
        m = _TARGET_RE.search(op_str)
        return int(m.group(1), 0) if m else None

    if mnemonic == "b":
        return Insn(kind=Kind.BRANCH, target=target(), **base)  # type: ignore[arg-type]
    if mnemonic.startswith(("b.", "bc.")):
        cond = mnemonic.split(".", 1)[1]
        return Insn(kind=Kind.COND, target=target(), cond=("b", cond), **base)  # type: ignore[arg-type]
    if mnemonic in ("cbz", "cbnz"):
        reg = reg_index(first)
        return Insn(kind=Kind.COND, target=target(), cond=(mnemonic, -1 if reg is None else reg),
                    **base)  # type: ignore[arg-type]
    if mnemonic in ("tbz", "tbnz"):
        reg = reg_index(first)
        bit = int(ops[1].imm) if len(ops) > 1 else 0
        return Insn(kind=Kind.COND, target=target(),
                    cond=(mnemonic, -1 if reg is None else reg, bit), **base)  # type: ignore[arg-type]
    if mnemonic == "bl":
        return Insn(kind=Kind.CALL, target=target(), writes=CALL_CLOBBERED, **base)  # type: ignore[arg-type]
    if mnemonic.startswith("blr"):
        return Insn(kind=Kind.ICALL, writes=CALL_CLOBBERED, **base)  # type: ignore[arg-type]
    if mnemonic in ("brk", "hlt", "udf") or mnemonic.startswith("udf"):
        return Insn(kind=Kind.STOP, **base)  # type: ignore[arg-type]
    if mnemonic.startswith("br"):
        return Insn(kind=Kind.IJUMP, **base)  # type: ignore[arg-type]
    if mnemonic.startswith(("ret", "eret")):
        return Insn(kind=Kind.RET, **base)  # type: ignore[arg-type]

    mem: tuple[int, int] | None = None
    for op in ops:
        if op.type == arm64.ARM64_OP_MEM:
            reg = reg_index(cs_insn.reg_name(op.mem.base)) if op.mem.base else None  # type: ignore[attr-defined]
            mem = (-1 if reg is None else reg, int(op.mem.disp))
    is_store = ((mnemonic.startswith("st") and not mnemonic.startswith("stg"))
                or mnemonic.startswith(_ATOMIC_PREFIXES)
                or (mnemonic == "dc" and op_str.startswith("zva")))
    _read, written = cs_insn.regs_access()  # type: ignore[attr-defined]
    writes = frozenset(i for i in (reg_index(cs_insn.reg_name(r)) for r in written)  # type: ignore[attr-defined]
                       if i is not None and i != ZR)
    sets_flags = mnemonic.startswith(_FLAG_SETTERS) or bool(getattr(cs_insn, "update_flags", False))
    effect = _effect(cs_insn, mnemonic)
    if mnemonic in ("cmp", "cmn", "tst", "ccmp", "ccmn"):
        writes = frozenset()  # capstone lists the compared register as written
    if is_store:
        # A store writes only its base register, and only with writeback
        # (stxr-style status registers are the first operand).
        writes = frozenset(w for w in writes if mem is not None and w == mem[0]) | (
            frozenset([reg_index(first)]) - {None, ZR}  # type: ignore[operator]
            if mnemonic.startswith(("stxr", "stlxr", "stxp", "stlxp", *_ATOMIC_PREFIXES))
            else frozenset())
        return Insn(kind=Kind.STORE, mem=mem, writes=writes, **base)  # type: ignore[arg-type]
    if mem is not None and mnemonic.startswith("ld"):
        return Insn(kind=Kind.LOAD, mem=mem, writes=writes, sets_flags=sets_flags,
                    **base)  # type: ignore[arg-type]
    return Insn(kind=Kind.OTHER, effect=effect, writes=writes,
                sets_flags=sets_flags and (effect is None or effect[0] != "cmpi"),
                **base)  # type: ignore[arg-type]


def _pc_relative(word: int) -> bool:
    """Whether the word's decoding depends on its address (branch, call, compare
    and branch, test and branch, ADR/ADRP, load literal): those are never cached."""
    return (word & 0x7C000000 == 0x14000000      # B, BL
            or word & 0xFE000000 == 0x54000000   # B.cond, BC.cond
            or word & 0x7E000000 in (0x34000000, 0x36000000)  # CBZ/CBNZ, TBZ/TBNZ
            or word & 0x1F000000 == 0x10000000   # ADR, ADRP
            or word & 0x3B000000 == 0x18000000)  # LDR/LDRSW/PRFM (literal)


#: Classified instructions by word, for the words whose decoding does not
#: depend on their address: code repeats itself (prologues, moves, returns),
#: and capstone's detailed decoding is the lint's most expensive step.  Held
#: as the fields after offset and address, in order, for the constructor
#: (twice as fast as dataclasses.replace).
_BY_WORD: dict[int, tuple[Any, ...]] = {}
#: Bound on _BY_WORD (a kernel image has a few hundred thousand distinct words).
_BY_WORD_MAX = 1 << 20


#: The fields of an Insn in declaration order (not copied, unlike dataclasses.astuple).
astuple_shallow = operator.attrgetter(*(f.name for f in fields(Insn)))


def _stop(code: bytes, offset: int, address: int, text: str | None = None) -> Insn:
    word = int.from_bytes(code[offset:offset + 4], "little")
    return Insn(offset=offset, address=address + offset, word=word,
                text=text or f".inst {word:#010x}", kind=Kind.STOP)


def disassemble(code: bytes, address: int, data_ranges: tuple[tuple[int, int], ...] = (),
                where: str = "") -> list[Insn]:
    """Every 4-byte word of ``code`` (loaded at ``address``) as an :class:`Insn`.

    Words inside ``data_ranges`` (offsets of literal pools) and words capstone
    cannot decode become STOP instructions: a path that reaches data ends.
    Capstone decodes each run of code in one call (resuming after a word it
    cannot decode), and a word seen before at another address is not decoded
    again unless it is PC-relative.
    """
    try:
        import capstone
    except ImportError as exc:  # a dependency of the package: say how to fix it
        raise FirmwareError(f"{where}: capstone is not installed (pip install capstone)") \
            from exc
    md = capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)
    md.detail = True
    size = len(code) & ~3
    words = struct.unpack_from(f"<{size // 4}I", code)
    data = sorted((max(0, a - a % 4), b) for a, b in data_ranges if b > a)
    out: list[Insn] = []
    offset = 0
    k = 0  # next data range that may start at or after offset
    while offset < size:
        while k < len(data) and data[k][1] <= offset:
            k += 1
        if k < len(data) and data[k][0] <= offset:
            out.append(_stop(code, offset, address, ".word (data)"))
            offset += 4
            continue
        run_end = min(size, data[k][0]) if k < len(data) else size
        offset = _decode_run(md, code, words, offset, run_end, address, out)
    return out


def _decode_run(md: Any, code: bytes, words: tuple[int, ...], offset: int, end: int,
                address: int, out: list[Insn]) -> int:
    """Decode [offset, end) into ``out``; returns where it stopped (``end``).

    Cached words are taken from _BY_WORD; the others go to capstone in
    batches of consecutive uncached words."""
    while offset < end:
        hit = _BY_WORD.get(words[offset >> 2])
        if hit is not None:
            out.append(Insn(offset, address + offset, *hit))
            offset += 4
            continue
        stop = offset + 4  # the batch: up to the next cached word
        while stop < end and words[stop >> 2] not in _BY_WORD:
            stop += 4
        pos = offset
        for cs_insn in md.disasm(code[offset:stop], address + offset):
            insn = classify(cs_insn, pos)
            out.append(insn)
            if not _pc_relative(insn.word) and len(_BY_WORD) < _BY_WORD_MAX:
                _BY_WORD[insn.word] = astuple_shallow(insn)[2:]
            pos += 4
        if pos < stop:  # capstone stopped at a word it cannot decode
            out.append(_stop(code, pos, address))
            pos += 4
        offset = pos
    return offset
