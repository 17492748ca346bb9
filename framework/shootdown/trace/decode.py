"""Decoding the TLB maintenance instructions from their 32-bit words.

The trace and the lint both need to know, for one instruction word, whether
it is a TLBI, a DSB or an ISB, and which one.  That is a handful of fixed
encodings (Arm ARM C6.2 "SYS", "DSB", "ISB"; the values are summarised in
``/work/shared/spec/mmu-gather-policy.md``), so this module decodes them with
bit masks instead of a disassembler:

* it is the hot path of trace decoding (one call per executed instruction in
  the filtered range), where capstone's per-call overhead would dominate;
* it names the operations the way the console protocol does (``vale1is``),
  so trace records compare with the guest's records without a mapping table;
* it is checked against capstone, an independent decoder, over every
  encoding it claims (``tests/trace/test_decode.py``): two readings of the
  architecture must agree.

Only the classification lives here; what the register operand holds at run
time is the trace's business (:mod:`shootdown.trace.qemu_log`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

#: ``SYS #op1, Cn, Cm, #op2, Xt``: bits 31:19 = 1101010100001, L (bit 21) = 0.
_SYS_MASK = 0xFFF80000
_SYS_BITS = 0xD5080000
#: DSB: 0xD503309F | CRm << 8.
_DSB_MASK = 0xFFFFF0FF
_DSB_BITS = 0xD503309F
#: DMB: 0xD50330BF | CRm << 8 (recognised so that it is never taken for a DSB).
_DMB_BITS = 0xD50330BF
#: ISB with the only defined option, SY.
ISB_WORD = 0xD5033FDF


class Domain(enum.IntEnum):
    """Shareability domain of a barrier or a TLBI, ordered by reach."""

    #: Non-shareable: this CPU only.
    NSH = 0
    #: Inner shareable: every CPU of the system (what Linux uses).
    ISH = 1
    #: Outer shareable.
    OSH = 2
    #: Full system.
    SY = 3


class Access(enum.Enum):
    """Which accesses a DSB waits for."""

    #: Loads and stores, and maintenance operations (the completing kind).
    ALL = "all"
    #: Stores only (ISHST and friends): orders stores before what follows.
    STORE = "store"
    #: Loads only.
    LOAD = "load"


#: DSB CRm -> (name, domain, access).  CRm 0 and 4 are SSBB/PSSBB (v8.5),
#: and CRm 8 and 12 are reserved: they are not barriers this module knows.
_DSB_OPTIONS: dict[int, tuple[str, Domain, Access]] = {
    0xF: ("sy", Domain.SY, Access.ALL),
    0xE: ("st", Domain.SY, Access.STORE),
    0xD: ("ld", Domain.SY, Access.LOAD),
    0xB: ("ish", Domain.ISH, Access.ALL),
    0xA: ("ishst", Domain.ISH, Access.STORE),
    0x9: ("ishld", Domain.ISH, Access.LOAD),
    0x7: ("nsh", Domain.NSH, Access.ALL),
    0x6: ("nshst", Domain.NSH, Access.STORE),
    0x5: ("nshld", Domain.NSH, Access.LOAD),
    0x3: ("osh", Domain.OSH, Access.ALL),
    0x2: ("oshst", Domain.OSH, Access.STORE),
    0x1: ("oshld", Domain.OSH, Access.LOAD),
}

#: op2 -> the by-VA / by-ASID / all operation at EL1 for the non-range CRms.
_EL1_OPS = {0: "vmalle1", 1: "vae1", 2: "aside1", 3: "vaae1", 5: "vale1", 7: "vaale1"}
#: op2 -> the range operation at EL1 (FEAT_TLBIRANGE).
_EL1_RANGE_OPS = {1: "rvae1", 3: "rvaae1", 5: "rvale1", 7: "rvaale1"}
#: The operations limited to last-level (leaf) entries.
_LAST_LEVEL_OPS = frozenset({"vale1", "vaale1", "rvale1", "rvaale1"})
#: CRm -> (suffix, domain, range form?) for the EL1 TLBIs (op1 = 0).
_EL1_CRM: dict[int, tuple[str, Domain, bool]] = {
    7: ("", Domain.NSH, False),
    3: ("is", Domain.ISH, False),
    1: ("os", Domain.OSH, False),     # FEAT_TLBIOS
    6: ("", Domain.NSH, True),
    2: ("is", Domain.ISH, True),
    5: ("os", Domain.OSH, True),
}


@dataclass(frozen=True)
class Tlbi:
    """A TLBI instruction (``SYS #op1, C8, Cm, #op2, Xt``)."""

    #: Lower-case operation as the console protocol prints it (``vale1is``);
    #: ``sys_<op1>_c<crm>_<op2>`` for encodings outside the EL1 set.
    op: str
    #: Register number of Xt (31 = XZR, the form without an operand).
    rt: int
    #: Shareability domain the invalidation is broadcast to.
    domain: Domain
    #: Whether the op takes an address/ASID operand (``vmalle1is`` does not).
    has_operand: bool
    #: Whether the op invalidates entries of every ASID (kernel/global
    #: mappings: ``vaae1is``, ``vaale1is``, ``vmalle1is`` and their range forms).
    asid_less: bool
    #: Whether the op is a range form (FEAT_TLBIRANGE).
    is_range: bool
    #: Whether the op is limited to last-level entries (leaves only).
    last_level: bool
    #: Exception level the op targets (1 for the set the policies use).
    el: int


@dataclass(frozen=True)
class Dsb:
    """A DSB instruction."""

    #: Option as the console protocol prints it (``ishst``).
    option: str
    #: Shareability domain it waits in.
    domain: Domain
    #: Which accesses it waits for.
    access: Access


@dataclass(frozen=True)
class Isb:
    """An ISB instruction."""


Maintenance = Tlbi | Dsb | Isb


def _sys_fields(word: int) -> tuple[int, int, int, int, int]:
    """(op1, CRn, CRm, op2, Rt) of a SYS-class word."""
    return ((word >> 16) & 7, (word >> 12) & 0xF, (word >> 8) & 0xF, (word >> 5) & 7, word & 31)


def is_tlbi_word(word: int) -> bool:
    """Whether ``word`` is a TLBI (SYS with CRn = 8, L = 0): the lint's fast scan."""
    return (word & _SYS_MASK) == _SYS_BITS and (word >> 12) & 0xF == 8


def decode_tlbi(word: int) -> Tlbi | None:
    """The TLBI ``word`` encodes, or None if it is not a TLBI."""
    if not is_tlbi_word(word):
        return None
    op1, _crn, crm, op2, rt = _sys_fields(word)
    if op1 == 0 and crm in _EL1_CRM:
        suffix, domain, is_range = _EL1_CRM[crm]
        base = (_EL1_RANGE_OPS if is_range else _EL1_OPS).get(op2)
        if base is not None:
            return Tlbi(op=base + suffix, rt=rt, domain=domain,
                        has_operand=base != "vmalle1",
                        asid_less=base in ("vmalle1", "vaae1", "vaale1", "rvaae1", "rvaale1"),
                        is_range=is_range, last_level=base in _LAST_LEVEL_OPS,
                        el=1)
    # An encoding this table does not name (EL2/EL3 ops, stage-2, reserved):
    # still a TLBI, conservatively broadcast and ASID-less for the lint.
    domain = Domain.NSH if crm in (7, 6, 4) else Domain.ISH
    return Tlbi(op=f"sys_{op1}_c{crm}_{op2}", rt=rt, domain=domain, has_operand=rt != 31,
                asid_less=True, is_range=False, last_level=False, el=2 if op1 == 4 else 3)


def decode_dsb(word: int) -> Dsb | None:
    """The DSB ``word`` encodes, or None (also for SSBB/PSSBB and reserved options)."""
    if (word & _DSB_MASK) != _DSB_BITS:
        return None
    option = _DSB_OPTIONS.get((word >> 8) & 0xF)
    if option is None:
        return None
    name, domain, access = option
    return Dsb(option=name, domain=domain, access=access)


def decode(word: int) -> Maintenance | None:
    """Classify one little-endian instruction word: a TLBI, DSB, ISB, or None."""
    if word == ISB_WORD:
        return Isb()
    if (word & _DSB_MASK) == _DSB_BITS:
        return decode_dsb(word)
    return decode_tlbi(word)


def encode_tlbi(op1: int, crm: int, op2: int, rt: int) -> int:
    """``SYS #op1, C8, Cm, #op2, Xt`` (for tests and for building filters)."""
    return _SYS_BITS | (op1 & 7) << 16 | 8 << 12 | (crm & 0xF) << 8 | (op2 & 7) << 5 | (rt & 31)


def encode_dsb(crm: int) -> int:
    """``DSB <option>`` for the 4-bit option field CRm."""
    return _DSB_BITS | (crm & 0xF) << 8


def encode_dmb(crm: int) -> int:
    """``DMB <option>`` (a DMB is not a DSB: tests check it is not taken for one)."""
    return _DMB_BITS | (crm & 0xF) << 8
