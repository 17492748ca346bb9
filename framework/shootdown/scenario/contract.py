"""The kernel's calling contract for the raw calls a scenario makes.

The loader (:mod:`shootdown.scenario.load`) checks that a scenario is well
formed: aligned addresses inside the VA size, ``start < end``, a stride that
is a power of two.  This module checks the stronger rule that matters when
the guest runs it: that each raw call is one the kernel could make.  A call
the kernel never makes (a ``__flush_tlb_range`` at a 8 KiB stride, a TTL hint
of level 2 on a page-stride flush) is not a test of any release: each release
then "misses" entries it was never asked to invalidate, and the run reports a
validation failure that says nothing about the kernel.  Such a scenario is bad
input, refused before anything boots.

Only ``flush_tlb_range`` steps take caller-chosen arguments beyond addresses;
gather and munmap steps get their stride and level from the model of
``tlb_flush`` itself, and the other raw flushes take addresses the loader
already checks.

Kernel facts (arch/arm64, v4.20 to v7.2; v7.1 renamed last_level into the TLBF_NOWALKCACHE flag):

* ``__flush_tlb_range(vma, start, end, stride, last_level, tlb_level)``
  (``arch/arm64/include/asm/tlbflush.h``) is called with ``stride`` one of
  PAGE_SIZE, PMD_SIZE, PUD_SIZE, and nothing else:

  - ``flush_tlb_range()``: PAGE_SIZE, TLBI_TTL_UNKNOWN;
  - ``tlb_flush()`` (``arch/arm64/include/asm/tlb.h``): ``tlb_get_unmap_size()``
    (``include/asm-generic/tlb.h``: PAGE_SIZE, PMD_SIZE, PUD_SIZE, or P4D_SIZE,
    which is the folded PGDIR on arm64 and never cleared for user space) with
    ``tlb_get_level()``: 3, 2 or 1 for exactly that stride, else unknown;
  - ``flush_pmd_tlb_range()`` / ``flush_pud_tlb_range()``: PMD_SIZE with level
    2, PUD_SIZE with level 1;
  - ``flush_hugetlb_tlb_range()`` (``arch/arm64/include/asm/hugetlb.h``): the
    huge page size mapped to PUD_SIZE (level 1), PMD_SIZE for PMD and
    CONT_PMD pages (level 2), PAGE_SIZE for CONT_PTE pages (level 3), PAGE_SIZE
    with an unknown level otherwise: a CONT size is never passed as a stride.

* A TTL hint, when given, is the level of the entries the stride walks:
  3 for PAGE_SIZE, 2 for PMD_SIZE, 1 for PUD_SIZE (every caller above).

Not part of the contract: a range that is not aligned to the stride.
``tlb_flush()`` itself passes one (``pte_free_tlb`` adds
``[addr, addr + PAGE_SIZE)`` to a PMD-stride gather), which is why v5.2 made
``__flush_tlb_range`` round ``start`` down and ``end`` up to the stride; the
library tests that rounding on purpose.
"""

from __future__ import annotations

from shootdown.errors import ScenarioError
from shootdown.scenario.types import FlushTlbRangeStep, Scenario

#: where the rules come from, for the error messages
_WHERE = "arch/arm64/include/asm/tlbflush.h __flush_tlb_range"


def strides(scenario: Scenario) -> dict[int, int]:
    """Each stride the kernel passes to ``__flush_tlb_range``, with its TTL level."""
    geo = scenario.geometry
    # Folded levels share a size: the lower level (the later key) wins.
    return {geo.pud_size: 1, geo.pmd_size: 2, geo.page_size: 3}


def check_contract(scenario: Scenario) -> None:
    """Raise :class:`ScenarioError` for the first raw call the kernel never makes.

    The message names the step, the field, the rule and the kernel function
    whose contract the call breaks.
    """
    allowed = strides(scenario)
    names = {scenario.geometry.page_size: "PAGE_SIZE", scenario.geometry.pmd_size: "PMD_SIZE",
             scenario.geometry.pud_size: "PUD_SIZE"}
    for i, step in enumerate(scenario.steps, start=1):
        if not isinstance(step, FlushTlbRangeStep):
            continue
        if step.stride not in allowed:
            listed = ", ".join(f"{names[s]} {s:#x}" for s in sorted(allowed))
            raise ScenarioError(
                scenario.path, f"stride {step.stride:#x} is outside the kernel's contract: "
                f"{_WHERE}() is only called with {listed} on the {scenario.granule} granule "
                "(flush_tlb_range, tlb_flush, flush_pmd/pud_tlb_range, flush_hugetlb_tlb_range)",
                step=i, field="stride")
        if step.level is not None and step.level != allowed[step.stride]:
            want = allowed[step.stride]
            raise ScenarioError(
                scenario.path, f"level {step.level} does not match stride {step.stride:#x} "
                f"({names[step.stride]}): {_WHERE}() gets TTL level {want} with that stride "
                "(tlb_get_level, flush_pmd/pud_tlb_range) or none; omit level for unknown",
                step=i, field="level")
