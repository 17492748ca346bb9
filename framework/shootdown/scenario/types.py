"""The scenario dataclass tree: what a scenario file says, validated.

These records are the contract between the loader, the lowering (munmap ->
gather calls, mapping layout, protocol lines), the golden model and the
guest runner.  They are frozen and hold plain ints and strings, so they can be
hashed, compared and printed as they are.

Steps are numbered from 1, in file order, everywhere: in errors, in the
model's output and in the protocol's ``STEP n=``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from shootdown.scenario.geometry import Geometry

#: the gather operations a ``gather`` step may list, in the kernel's words
GATHER_OPS: tuple[str, ...] = (
    "remove_pte",      # tlb_remove_tlb_entry, count times, consecutive pages
    "remove_pmd",      # tlb_remove_pmd_tlb_entry: a PMD block entry
    "remove_pud",      # tlb_remove_pud_tlb_entry: a PUD block entry (4K only)
    "free_pte_table",  # pmd_clear + pte_free_tlb
    "free_pmd_table",  # pud_clear + pmd_free_tlb
    "free_pud_table",  # p4d_clear + pud_free_tlb
    "free_p4d_table",  # pgd_clear + p4d_free_tlb (the folded p4d level)
    "flush",           # tlb_flush_mmu in the middle of the gather
)

#: the optional CPU features a scenario or the CLI may name: FEAT_TTL, FEAT_TLBIRANGE,
#: LPA2 in use (FEAT_LPA2 with a 52-bit 4K/16K kernel: TCR_EL1.DS set), and a CPU
#: with the erratum behind ARM64_WORKAROUND_REPEAT_TLBI (e.g. Cortex-A76 1286807)
CPU_FEATURES: tuple[str, ...] = ("ttl", "tlbirange", "lpa2", "repeat_tlbi")


@dataclass(frozen=True)
class GatherOp:
    """One call made between tlb_gather_mmu and tlb_finish_mmu."""

    #: one of GATHER_OPS
    op: str
    #: the address passed to the call (0 for ``flush``)
    addr: int = 0
    #: pages removed, for ``remove_pte`` only (1 otherwise)
    count: int = 1


@dataclass(frozen=True)
class Mapping:
    """User mappings (TTBR0, non-global, tagged with the scenario's ASID)."""

    #: 3: pages, 2: PMD blocks, 1: PUD blocks
    level: int
    #: first virtual address, aligned to the entry size
    addr: int
    #: number of consecutive entries
    count: int


@dataclass(frozen=True)
class KernelMapping:
    """Kernel pages (TTBR1, global)."""

    addr: int
    count: int


@dataclass(frozen=True)
class GatherStep:
    """``kind = "gather"``: one tlb_gather_mmu() .. tlb_finish_mmu()."""

    fullmm: bool
    ops: tuple[GatherOp, ...]
    kind: Literal["gather"] = "gather"


@dataclass(frozen=True)
class MunmapStep:
    """``kind = "munmap"``: the kernel's unmap_region() on one VMA [start, end).

    Lowered into a gather step: the zap calls for ``layout``, tlb_end_vma's
    flush, then free_pgtables(floor, ceiling).
    """

    start: int
    end: int
    #: the mappings inside [start, end) that the unmap tears down
    layout: tuple[Mapping, ...]
    #: end of the previous VMA (0: none)
    floor: int
    #: start of the next VMA (0: none, i.e. USER_PGTABLES_CEILING)
    ceiling: int
    kind: Literal["munmap"] = "munmap"


@dataclass(frozen=True)
class FlushTlbMmStep:
    """``kind = "flush_tlb_mm"``: invalidate the whole ASID."""

    kind: Literal["flush_tlb_mm"] = "flush_tlb_mm"


@dataclass(frozen=True)
class FlushTlbPageStep:
    """``kind = "flush_tlb_page"``: one user page, last level."""

    addr: int
    kind: Literal["flush_tlb_page"] = "flush_tlb_page"


@dataclass(frozen=True)
class FlushTlbRangeStep:
    """``kind = "flush_tlb_range"``: __flush_tlb_range(start, end, stride, last_level)."""

    start: int
    end: int
    stride: int
    last_level: bool
    #: TTL level hint passed by the caller (v5.9+); None: the caller does not know
    level: int | None = None
    kind: Literal["flush_tlb_range"] = "flush_tlb_range"


@dataclass(frozen=True)
class FlushTlbKernelRangeStep:
    """``kind = "flush_tlb_kernel_range"``: kernel pages [start, end)."""

    start: int
    end: int
    kind: Literal["flush_tlb_kernel_range"] = "flush_tlb_kernel_range"


@dataclass(frozen=True)
class FlushTlbKernelPgtableStep:
    """``kind = "flush_tlb_kernel_pgtable"``: __flush_tlb_kernel_pgtable(addr)."""

    addr: int
    kind: Literal["flush_tlb_kernel_pgtable"] = "flush_tlb_kernel_pgtable"


RawFlushStep = (FlushTlbMmStep | FlushTlbPageStep | FlushTlbRangeStep
                | FlushTlbKernelRangeStep | FlushTlbKernelPgtableStep)
Step = GatherStep | MunmapStep | RawFlushStep

STEP_KINDS: tuple[str, ...] = (
    "gather", "munmap", "flush_tlb_mm", "flush_tlb_page", "flush_tlb_range",
    "flush_tlb_kernel_range", "flush_tlb_kernel_pgtable",
)


@dataclass(frozen=True)
class Scenario:
    """A validated scenario file."""

    #: where it came from (used in error messages)
    path: str
    granule: str
    va_bits: int
    asid: int
    kpti: bool
    #: optional CPU features present (subset of CPU_FEATURES)
    cpu_features: frozenset[str]
    #: the policy the file asks for, if any (the CLI may override it)
    policy: str | None
    steps: tuple[Step, ...]
    #: extra user mappings to build (beyond what the steps imply)
    maps: tuple[Mapping, ...] = ()
    #: extra kernel pages to build
    kmaps: tuple[KernelMapping, ...] = ()
    description: str = ""
    geometry: Geometry = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "geometry", Geometry(self.granule, self.va_bits))
