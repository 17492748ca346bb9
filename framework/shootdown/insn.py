"""The maintenance instructions (TLBI, DSB, ISB) and their encodings.

The one vocabulary of the project: the model emits these, the tracers and the
firmware's protocol are read into these, the checks compare these.  It
imports nothing of the project, so observation never depends on the model.

An instruction is a frozen record compared on what the CPU would execute
(kind, TLBI operation or DSB domain, and the 64-bit TLBI operand) and nothing
else: the ``why`` field (which step, which kernel function, what mmu_gather
state) is carried for people and for diffs, never for equality.

The encodings are those of the Arm ARM: ``TLBI op, Xt`` is ``SYS #op1, C8,
CRm, #op2, Xt``; DSB has its option in CRm; ISB is one fixed word.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

#: TLBI operation -> (op1, CRm, op2), EL1 inner-shareable forms
TLBI_OPS: dict[str, tuple[int, int, int]] = {
    "vmalle1is": (0, 3, 0),
    "vae1is": (0, 3, 1),
    "aside1is": (0, 3, 2),
    "vaae1is": (0, 3, 3),
    "vale1is": (0, 3, 5),
    "vaale1is": (0, 3, 7),
    "rvae1is": (0, 2, 1),
    "rvaae1is": (0, 2, 3),
    "rvale1is": (0, 2, 5),
    "rvaale1is": (0, 2, 7),
}
#: TLBIs that take no operand register
NO_OPERAND: frozenset[str] = frozenset({"vmalle1is"})
#: DSB option -> CRm
DSB_DOMAINS: dict[str, int] = {"ish": 0xB, "ishst": 0xA, "nsh": 0x7, "nshst": 0x6, "sy": 0xF}
ISB_WORD = 0xD5033FDF

#: bit 48 of an ASID-tagged operand: the KPTI user ASID
USER_ASID_FLAG = 1 << 48


@dataclass(frozen=True)
class GatherSnapshot:
    """The mmu_gather state a flush was computed from (for the text output)."""

    #: gathered range [start, end)
    start: int
    end: int
    fullmm: bool
    #: None in policies without the flags (v4.19)
    freed_tables: bool | None
    #: the cleared_* flags that were set, lowest level first ("ptes", "pmds", ...)
    cleared: tuple[str, ...]
    #: tlb_get_unmap_size(); PAGE_SIZE in v4.19
    stride: int
    last_level: bool
    #: TTL level from tlb_get_level(); None when not applicable or unknown
    level: int | None


@dataclass(frozen=True)
class Why:
    """Provenance of an instruction: not part of its identity."""

    #: step number, from 1
    step: int
    #: the kernel path that issued it, e.g. "tlb_finish_mmu > tlb_flush"
    source: str
    #: the gather state, for flushes of an mmu_gather
    gather: GatherSnapshot | None = None


@dataclass(frozen=True, slots=True)
class Dsb:
    """DSB <domain>."""

    domain: str
    why: Why | None = field(default=None, compare=False, hash=False, repr=False)

    kind = "dsb"

    def encode(self) -> int:
        return 0xD503309F | DSB_DOMAINS[self.domain] << 8


@dataclass(frozen=True, slots=True)
class Tlbi:
    """TLBI <op>[, Xt]; ``xt`` is None for operand-less operations."""

    op: str
    xt: int | None
    why: Why | None = field(default=None, compare=False, hash=False, repr=False)

    kind = "tlbi"

    def encode(self, rt: int = 0) -> int:
        """The SYS instruction word; ``rt`` is the register (31 when no operand)."""
        op1, crm, op2 = TLBI_OPS[self.op]
        reg = 31 if self.xt is None else rt
        return 0xD5080000 | op1 << 16 | 8 << 12 | crm << 8 | op2 << 5 | reg


@dataclass(frozen=True, slots=True)
class Isb:
    """ISB."""

    why: Why | None = field(default=None, compare=False, hash=False, repr=False)

    kind = "isb"

    def encode(self) -> int:
        return ISB_WORD


Instruction = Dsb | Tlbi | Isb

_TG_SHIFT = {1: 12, 2: 14, 3: 16}


#: The kinds every instruction count of the project is keyed by, in this order: the
#: model's listings, the firmware's and the kernels' records, ``--json``, the reports.
COUNT_KINDS: tuple[str, ...] = ("tlbi", "dsb_ishst", "dsb_ish", "isb")


def count_kind(kind: str, option: str = "") -> str | None:
    """The :data:`COUNT_KINDS` key of an instruction of ``kind`` (tlbi, dsb, isb) with
    ``option`` (a DSB's domain); None for one that is not counted (another DSB domain)."""
    key = f"dsb_{option}" if kind == "dsb" else kind
    return key if key in COUNT_KINDS else None


def counts(instructions: Iterable[Instruction]) -> dict[str, int]:
    """TLBI, DSB ISHST, DSB ISH and ISB counts of a sequence, keyed by :data:`COUNT_KINDS`."""
    out = dict.fromkeys(COUNT_KINDS, 0)
    for ins in instructions:
        key = count_kind(ins.kind, ins.domain if isinstance(ins, Dsb) else "")
        if key is not None:
            out[key] += 1
    return out


def decode_operand(op: str, xt: int, *, lpa2: bool = False) -> dict[str, int]:
    """The fields of a TLBI operand, for people (VA, ASID, TTL, range).

    ``lpa2``: the CPU runs with LPA2 (TCR_EL1.DS), so a range operand's BADDR
    is VA[52:16] rather than a page number."""
    fields: dict[str, int] = {"asid": xt >> 48}
    if op.startswith("r"):
        tg = (xt >> 46) & 3
        shift = 16 if lpa2 else _TG_SHIFT.get(tg, 12)
        scale = (xt >> 44) & 3
        num = (xt >> 39) & 31
        fields.update(tg=tg, scale=scale, num=num, ttl=(xt >> 37) & 3,
                      va=(xt & ((1 << 37) - 1)) << shift,
                      pages=(num + 1) << (5 * scale + 1))
    else:
        va = (xt & ((1 << 44) - 1)) << 12
        if va >> 55 & 1:  # VA[55] selects TTBR1: sign-extend to a kernel address
            va |= 0xFF00_0000_0000_0000
        fields.update(va=va, ttl=(xt >> 44) & 0xF)
    return fields
