"""LPA2 (v6.9+), each sequence written out by hand from Debian's linux-source-7.2
(7.2.13-1), arch/arm64/include/asm:

* tlbflush.h __flush_tlb_range_op (490-521): with range ops, a single op while
  ``lpa2 && !IS_ALIGNED(addr, SZ_64K)``; __tlbi_range (474-488): BADDR is
  ``addr >> 16`` under LPA2, else the page number;
* pgtable.h: a 4K kernel with 52-bit VA has five levels; p4d_clear (982) and
  pgd_clear (1110) are set_p4d/set_pgd, each DSB ISHST; ISB (emit_pte_barriers);
  tlb.h __p4d_free_tlb (108-117) queues the p4d table when pgtable_l5_enabled();
* processor.h/memory.h: user space (and the stack) ends at DEFAULT_MAP_WINDOW_64
  = 1 << VA_BITS_MIN: 2^48, 2^47 on 16K.

Not the model's output: the lists are the source read by a person.
"""

from __future__ import annotations

import pytest

from shootdown.errors import ConfigError, ScenarioError
from shootdown.scenario import load_scenario_text
from shootdown.scenario.geometry import Geometry

from .helpers import ISB, ISH, ISHST, T, raw, run, va


def rng(base: int, scale: int, num: int, asid: int, tg: int = 1, ttl: int = 0) -> int:
    """A range operand written out field by field (ASID, TG, SCALE, NUM, TTL, BADDR)."""
    return asid << 48 | tg << 46 | scale << 44 | num << 39 | ttl << 37 | base


def range_100_pages(features: str, va_bits: int) -> str:
    return raw("flush_tlb_range", "start = 0x40003000\nend = 0x40067000\nstride = 0x1000\n"
                                  "last_level = true", va_bits=va_bits, features=features)


def test_lpa2_range_ops_start_64k_aligned_with_the_base_in_64k_units() -> None:
    got = run(range_100_pages("lpa2,tlbirange", 52), "v7.1")
    singles = [T("vale1is", va(0x40003000 + k * 0x1000, 42)) for k in range(13)]
    assert got == [ISHST, *singles,                          # 0x40003000 .. 0x4000f000
                   T("rvale1is", rng(0x4001, 1, 0, 42)),     # 64 pages from 0x40010000
                   T("rvale1is", rng(0x4005, 0, 10, 42)),    # 22 pages from 0x40050000
                   T("vale1is", va(0x40066000, 42)),         # the last page
                   ISH]


def test_without_lpa2_the_same_range_starts_at_once_in_page_units() -> None:
    got = run(range_100_pages("tlbirange", 48), "v7.1")
    assert got == [ISHST, T("rvale1is", rng(0x40003, 1, 0, 42)),     # 64 pages
                   T("rvale1is", rng(0x40043, 0, 17, 42)), ISH]      # 36 pages


def test_lpa2_without_range_ops_changes_nothing() -> None:
    assert run(range_100_pages("lpa2", 52), "v7.1") == run(range_100_pages("", 48), "v7.1")


def test_five_levels_free_the_pud_and_p4d_tables_behind_their_own_barriers() -> None:
    sc = ('granule = "4k"\nva_bits = 52\nasid = 8\ncpu_features = ["lpa2"]\n'
          '[[step]]\nkind = "munmap"\nstart = 0x1000000000000\nend = 0x1000000001000\n'
          'layout = [ { level = 3, addr = 0x1000000000000, count = 1 } ]\n'
          'floor = 0x1000\nceiling = 0\n')
    x = va(1 << 48, 8)
    assert run(sc, "v7.1") == [
        ISHST, T("vale1is", x), ISH,       # the zapped page (tlb_flush_mmu, last level)
        ISHST, ISB,                        # free_pud_range: p4d_clear -> set_p4d
        ISHST, ISB,                        # free_p4d_range: pgd_clear -> set_pgd
        ISHST, T("vae1is", x), ISH,        # tlb_finish_mmu: tables freed, PMD stride
    ]


def test_geometry_of_the_lpa2_configurations() -> None:
    g4, g16 = Geometry("4k", 52), Geometry("16k", 52)
    assert (g4.levels, g4.pgdir_shift, g4.p4d_shift, g4.pud_shift) == (5, 48, 39, 30)
    assert (g16.levels, g16.pgdir_shift, g16.p4d_shift) == (4, 47, 47)
    assert (g4.map_window, g16.map_window) == (1 << 48, 1 << 47)
    assert Geometry("4k", 48).map_window == 1 << 48


def test_lpa2_needs_a_52_bit_4k_or_16k_geometry_and_back() -> None:
    with pytest.raises(ScenarioError, match="va_bits = 52"):
        load_scenario_text(range_100_pages("lpa2", 48))
    with pytest.raises(ScenarioError, match="needs LPA2"):
        load_scenario_text(range_100_pages("", 52))


@pytest.mark.parametrize("policy", ["v4.19", "v5.9", "v6.8"])
def test_releases_before_v6_9_have_no_lpa2(policy: str) -> None:
    with pytest.raises(ConfigError, match="has no LPA2"):
        run(range_100_pages("lpa2,tlbirange", 52), policy)
