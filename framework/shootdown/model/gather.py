"""The generic mmu_gather (include/asm-generic/tlb.h, mm/mmu_gather.c).

State: the range [start, end), ``fullmm``, ``need_flush_all`` (never set on
arm64), and from v4.20 ``freed_tables`` and ``cleared_ptes/pmds/puds/p4ds``.
Every call adjusts the range and sets its flags *before* the arm64 hook it
leads to, as the kernel's macros do; a flush hands the state to
:meth:`Arm64.tlb_flush` and resets it.

The table batch is counted too: ``tlb_remove_table`` queues freed tables, and
the one that fills the batch (``MAX_TABLE_BATCH``) flushes the gathered range
(v4.20+, which invalidate before freeing; in v4.19 the tables were already
invalidated one by one and the batch flush issues nothing).

So is the page batch: the zap path queues each unmapped page (a PTE page, or
a PMD block's THP page; not a PUD block, which is DAX) with
``tlb_remove_page``; when the page that fills the last batch it may allocate
goes in, the kernel forces ``tlb_flush_mmu`` right after that entry (see
:func:`page_batch_capacity`).
"""

from __future__ import annotations

from shootdown.model.arm64 import Arm64
from shootdown.model.instructions import GatherSnapshot, Why
from shootdown.model.policy import Policy
from shootdown.scenario.geometry import MASK64, Geometry

#: The most page-batch flushes one remove_pte may force.  Each is a full
#: flush of the gathered range, so the expected sequence grows with the count:
#: a remove_pte over a whole 48-bit VA (2^36 pages, 7 million flushes) is
#: refused up front rather than enumerated.  4096 flushes are ~40 million 4K pages,
#: far beyond what the firmware maps (SCN_MAX_COUNT).
MAX_BATCH_FLUSHES = 1 << 12


class ModelLimitError(ValueError):
    """The scenario needs more enumerated output than the model's limits allow."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        #: the scenario field at fault, when the caller knows it
        self.field = field


def page_batch_capacity(geo: Geometry, policy: Policy) -> int:
    """Pages the gather holds before a forced flush.

    The on-stack bundle has MMU_GATHER_BUNDLE (8) slots, and at most
    MAX_GATHER_BATCH_COUNT = 10000 / MAX_GATHER_BATCH more batches of
    MAX_GATHER_BATCH = (PAGE_SIZE - 16) / 8 slots each may be allocated.
    Up to v6.8 a batch is left when full; from v6.9 when one slot is left
    (room for a folio's page + count pair), i.e. one page fewer per batch.
    4K: 9698 (9678 from v6.9), 16K: 8192 (8187), 64K: 8198 (8196).
    """
    per_batch = (geo.page_size - 16) // 8
    batches = 10000 // per_batch
    if policy.page_batch_keep_one_free:
        return 7 + batches * (per_batch - 1)
    return 8 + batches * per_batch


class MmuGather:
    """One tlb_gather_mmu() .. tlb_finish_mmu() on one Arm64 configuration."""

    __slots__ = (
        "arm",
        "batch",
        "cleared_p4ds",
        "cleared_pmds",
        "cleared_ptes",
        "cleared_puds",
        "end",
        "freed_tables",
        "fullmm",
        "geo",
        "need_flush_all",
        "p",
        "page_cap",
        "pages",
        "start",
        "step",
    )

    def __init__(self, arm: Arm64, fullmm: bool, step: int) -> None:
        """tlb_gather_mmu(): fullmm for exit/execve (the range 0..~0)."""
        self.arm = arm
        self.p = arm.p
        self.geo = arm.geo
        self.step = step
        self.fullmm = fullmm
        self.need_flush_all = False
        self.batch = 0  # tables queued in the table batch
        self.pages = 0  # pages queued in the page batches
        self.page_cap = page_batch_capacity(self.geo, self.p)
        self.reset_range()

    # -- range bookkeeping ---------------------------------------------------
    def reset_range(self) -> None:
        """__tlb_reset_range(): empty range, flags cleared."""
        if self.fullmm:
            self.start = self.end = MASK64
        else:
            self.start = self.geo.task_size
            self.end = 0
        self.freed_tables = False
        self.cleared_ptes = self.cleared_pmds = self.cleared_puds = self.cleared_p4ds = False

    def adjust(self, addr: int, size: int) -> None:
        """__tlb_adjust_range()."""
        if addr < self.start:
            self.start = addr
        if addr + size > self.end:
            self.end = addr + size

    def unmap_shift(self) -> int:
        """tlb_get_unmap_shift(): the lowest level cleared decides the stride."""
        if self.cleared_ptes:
            return self.geo.page_shift
        if self.cleared_pmds:
            return self.geo.pmd_shift
        if self.cleared_puds:
            return self.geo.pud_shift
        if self.cleared_p4ds:
            return self.geo.p4d_shift
        return self.geo.page_shift

    def snapshot(self, stride: int, last_level: bool, level: int | None) -> GatherSnapshot:
        flags = self.p.gather_flags
        cleared = tuple(name for name, on in (("ptes", self.cleared_ptes),
                                              ("pmds", self.cleared_pmds),
                                              ("puds", self.cleared_puds),
                                              ("p4ds", self.cleared_p4ds)) if on and flags)
        return GatherSnapshot(self.start, self.end, self.fullmm,
                              self.freed_tables if flags else None, cleared, stride,
                              last_level, level)

    def _why(self, source: str) -> None:
        self.arm.why = Why(self.step, source)

    # -- removing entries ----------------------------------------------------
    def remove_pte(self, addr: int, count: int = 1) -> None:
        """zap_pte_range() on ``count`` consecutive pages: tlb_remove_tlb_entry()
        and tlb_remove_page() each; a full page batch forces a flush after
        the page that filled it."""
        shift = self.geo.page_shift
        if (self.pages + count) // self.page_cap > MAX_BATCH_FLUSHES:
            raise ModelLimitError(
                f"remove_pte of {count} pages forces more than {MAX_BATCH_FLUSHES} page-batch "
                f"flushes of {self.page_cap} pages each (the limit MAX_BATCH_FLUSHES): "
                "remove fewer pages")
        while count > 0:
            n = min(count, self.page_cap - self.pages)
            self.adjust(addr, n << shift)
            self.cleared_ptes = True
            self.pages += n
            addr += n << shift
            count -= n
            if self.pages == self.page_cap:
                self.flush("zap_pte_range: page batch full > tlb_flush_mmu")

    def remove_pmd(self, addr: int) -> None:
        """zap_huge_pmd(): tlb_remove_pmd_tlb_entry() (HPAGE_PMD_SIZE), then the
        THP page goes to the page batch (one slot)."""
        self.adjust(addr, self.geo.pmd_size)
        self.cleared_pmds = True
        self.pages += 1
        if self.pages == self.page_cap:
            self.flush("zap_huge_pmd: page batch full > tlb_flush_mmu")

    def remove_pud(self, addr: int) -> None:
        """zap_huge_pud(): tlb_remove_pud_tlb_entry() (HPAGE_PUD_SIZE).

        A user PUD mapping is DAX: up to v6.13 no page goes to the batch; the
        v6.19 source queues the DAX page (one slot) like a THP.
        """
        self.adjust(addr, self.geo.pud_size)
        self.cleared_puds = True
        if self.p.pud_page_batched:
            self.pages += 1
            if self.pages == self.page_cap:
                self.flush("zap_huge_pud: page batch full > tlb_flush_mmu")

    # -- freeing tables (free_p?d_range) -------------------------------------
    def free_pte_table(self, addr: int) -> None:
        """free_pte_range(): pmd_clear(), then pte_free_tlb()."""
        self._why(f"free_pte_table {addr:#x}: pmd_clear")
        self.arm.pmd_clear()
        self.adjust(addr, self.geo.page_size)
        self.freed_tables = self.cleared_pmds = True
        self._free_table(addr, "pte_free_tlb")

    def free_pmd_table(self, addr: int) -> None:
        """free_pmd_range() tail: pud_clear(), then pmd_free_tlb().

        With 2 levels the PMD level is folded: pud_clear and __pmd_free_tlb
        are empty, only the generic range and flags remain.
        """
        real = self.geo.levels >= 3
        if real:
            self._why(f"free_pmd_table {addr:#x}: pud_clear")
            self.arm.pud_clear()
        self.adjust(addr, self.geo.page_size)
        self.freed_tables = self.cleared_puds = True
        if real:
            self._free_table(addr, "pmd_free_tlb")

    def free_pud_table(self, addr: int) -> None:
        """free_pud_range() tail: p4d_clear(), then pud_free_tlb().

        Only with 4 or 5 levels is there a PUD table; p4d_clear is then set_pgd
        (up to v5.4, 5level-fixup.h) or set_p4d (v5.8+): a barrier either way.
        """
        real = self.geo.levels >= 4
        if real:
            self._why(f"free_pud_table {addr:#x}: p4d_clear")
            self.arm.pgd_clear()
        self.adjust(addr, self.geo.page_size)
        self.freed_tables = self.cleared_p4ds = True
        if real:
            self._free_table(addr, "pud_free_tlb")

    def free_p4d_table(self, addr: int) -> None:
        """free_p4d_range() tail: pgd_clear(), then p4d_free_tlb() (p4d folded but
        with five levels).

        Up to v5.4 (5level-fixup.h) with 4 levels, pgd_clear is the real
        set_pgd (a second barrier on the same entry) and p4d_free_tlb is
        empty; from v5.8 (pgtable-nop4d.h) pgd_clear is empty and the generic
        p4d_free_tlb adjusts the range and sets freed_tables.
        """
        if self.p.p4d_hack:
            if self.geo.levels == 4:
                self._why(f"free_p4d_table {addr:#x}: pgd_clear")
                self.arm.pgd_clear()
            return
        real = self.geo.levels == 5  # 4K, 52-bit, LPA2 (v6.9+): pgtable_l5_enabled()
        if real:  # pgd_clear is set_pgd: its barrier; __p4d_free_tlb queues the table
            self._why(f"free_p4d_table {addr:#x}: pgd_clear")
            self.arm.pgd_clear()
        self.adjust(addr, self.geo.page_size)
        self.freed_tables = True
        if real:
            self._free_table(addr, "p4d_free_tlb")

    def _free_table(self, addr: int, fn: str) -> None:
        """The arm64 __p?d_free_tlb(): v4.19 invalidates now; then tlb_remove_table()."""
        if self.p.sync_table_flush:
            self._why(f"{fn} {addr:#x} > __flush_tlb_pgtable")
            self.arm.flush_tlb_pgtable(addr)
        self.batch += 1
        if self.batch == self.geo.max_table_batch:
            self.table_flush("tlb_remove_table: table batch full > tlb_table_flush")

    # -- flushing ------------------------------------------------------------
    def table_flush(self, reason: str) -> None:
        """tlb_table_flush(): invalidate (v4.20+) before the batch is freed."""
        if self.batch:
            if self.p.table_batch_invalidate:
                self.flush_tlbonly(reason)
            self.batch = 0

    def flush_tlbonly(self, reason: str) -> None:
        """tlb_flush_mmu_tlbonly(): flush and reset, unless there is nothing.

        Up to v5.4 "nothing" is end == 0; v5.9 tests the flags instead.
        """
        if self.p.skip_without_flags:
            if not (self.freed_tables or self.cleared_ptes or self.cleared_pmds
                    or self.cleared_puds or self.cleared_p4ds):
                return
        elif not self.end:
            return
        self.arm.tlb_flush(self, reason, self.step)
        self.reset_range()

    def flush(self, reason: str = "tlb_flush_mmu") -> None:
        """tlb_flush_mmu(): the TLB, then the batches (whose flush finds nothing left)."""
        self.flush_tlbonly(reason)
        self.table_flush(reason)
        self.pages = 0

    def finish(self) -> None:
        """tlb_finish_mmu()."""
        self.flush("tlb_finish_mmu")
