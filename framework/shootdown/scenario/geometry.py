"""Address-space geometry of one arm64 configuration (granule and VA size).

The kernel derives every shift from ``PAGE_SHIFT`` and ``VA_BITS``; so do we.
Folded levels follow the kernel's ``asm-generic/pgtable-nop*.h``: when a level
does not exist in hardware, its SHIFT collapses onto the level above, so for
example ``PUD_SHIFT == PGDIR_SHIFT`` on a 3-level configuration.  Both the
scenario validator and the model use this, so it lives on the scenario side of
the data flow (the model imports it, never the reverse).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

#: granule name -> PAGE_SHIFT
GRANULE_SHIFT: dict[str, int] = {"4k": 12, "16k": 14, "64k": 16}

#: granule name -> the VA sizes Linux offers for it (Kconfig ARM64_VA_BITS_*)
#: without LPA2 (64K's 52 bits are FEAT_LVA, no LPA2 needed).
GRANULE_VA_BITS: dict[str, tuple[int, ...]] = {
    "4k": (39, 48),
    "16k": (36, 47, 48),
    "64k": (42, 48, 52),
}

#: granule name -> the VA sizes that exist only with LPA2 (CONFIG_ARM64_LPA2,
#: v6.9; the CPU runs them with FEAT_LPA2 and TCR_EL1.DS): 52 bits on 4K
#: (five levels) and 16K (four).  A scenario names them with the ``lpa2``
#: CPU feature.
LPA2_VA_BITS: dict[str, tuple[int, ...]] = {"4k": (52,), "16k": (52,)}

#: TLBI operand TG field (translation granule) for TTL hints and range ops.
GRANULE_TG: dict[str, int] = {"4k": 1, "16k": 2, "64k": 3}

MASK64 = (1 << 64) - 1


@dataclass(frozen=True)
class Geometry:
    """Shifts and sizes of one (granule, VA bits) configuration."""

    #: "4k", "16k" or "64k"
    granule: str
    #: virtual address bits of TTBR0 (user) and TTBR1 (kernel) ranges
    va_bits: int

    @cached_property
    def page_shift(self) -> int:
        return GRANULE_SHIFT[self.granule]

    @cached_property
    def page_size(self) -> int:
        return 1 << self.page_shift

    @cached_property
    def ptrs_per_pte(self) -> int:
        """Entries per table, 2^(PAGE_SHIFT-3): also the v5.0+ TLBI cut-off."""
        return 1 << (self.page_shift - 3)

    @cached_property
    def levels(self) -> int:
        """CONFIG_PGTABLE_LEVELS: ARM64_HW_PGTABLE_LEVELS(VA_BITS)."""
        return (self.va_bits - 4) // (self.page_shift - 3)

    def level_shift(self, n: int) -> int:
        """ARM64_HW_PGTABLE_LEVEL_SHIFT(n): VA bits mapped by one level-n entry."""
        return (self.page_shift - 3) * (4 - n) + 3

    @cached_property
    def pmd_shift(self) -> int:
        # Folded (2 levels) it equals PGDIR_SHIFT, which is level 2's shift too.
        return self.level_shift(2)

    @cached_property
    def pud_shift(self) -> int:
        return self.level_shift(1) if self.levels >= 3 else self.pgdir_shift

    @cached_property
    def pgdir_shift(self) -> int:
        return self.level_shift(4 - self.levels)

    @property
    def p4d_shift(self) -> int:
        """A real level only with five levels (4K, 52-bit, LPA2); else folded
        onto the PGD (pgtable-nop4d.h)."""
        return self.level_shift(0) if self.levels == 5 else self.pgdir_shift

    @cached_property
    def pmd_size(self) -> int:
        return 1 << self.pmd_shift

    @cached_property
    def pud_size(self) -> int:
        return 1 << self.pud_shift

    @cached_property
    def pgdir_size(self) -> int:
        return 1 << self.pgdir_shift

    @cached_property
    def task_size(self) -> int:
        """TASK_SIZE: the end of the user (TTBR0) range."""
        return 1 << self.va_bits

    @cached_property
    def map_window(self) -> int:
        """DEFAULT_MAP_WINDOW_64 = 1 << VA_BITS_MIN: where user space ends unless
        mmap is asked for more, and so STACK_TOP (arch/arm64/include/asm/processor.h,
        memory.h; without CONFIG_ARM64_FORCE_52BIT): above 48 bits, 47 on 16K and
        48 otherwise."""
        if self.va_bits > 48:
            return 1 << (47 if self.granule == "16k" else 48)
        return 1 << self.va_bits

    @cached_property
    def kernel_start(self) -> int:
        """The start of the kernel (TTBR1) range."""
        return MASK64 + 1 - (1 << self.va_bits)

    @cached_property
    def tg(self) -> int:
        return GRANULE_TG[self.granule]

    @cached_property
    def max_table_batch(self) -> int:
        """MAX_TABLE_BATCH: (PAGE_SIZE - sizeof(struct mmu_table_batch)) / 8.

        The batch header is an rcu_head (16 bytes) and an unsigned int padded
        to 8, so 24 bytes: 509, 2045 and 8189 tables.
        """
        return (self.page_size - 24) // 8

    @cached_property
    def pud_blocks(self) -> bool:
        """pud_sect_supported(): level-1 blocks exist only with 4K pages."""
        return self.granule == "4k"

    def block_size(self, level: int) -> int:
        """Size mapped by one leaf entry at ``level`` (3 page, 2 PMD block, 1 PUD block)."""
        return 1 << self.level_shift(level)


def valid_geometry(granule: str, va_bits: int, *, lpa2: bool = False) -> bool:
    """Whether Linux offers this (granule, VA bits) combination (with LPA2: the
    52-bit 4K/16K ones, and only those)."""
    if lpa2:
        return va_bits in LPA2_VA_BITS.get(granule, ())
    return va_bits in GRANULE_VA_BITS.get(granule, ())
