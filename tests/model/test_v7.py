"""The v7.1 rules, each sequence written out by hand from Debian's
linux-source-7.2 (7.2.13-1), arch/arm64/include/asm/tlbflush.h:

* __do_flush_tlb_range (561-611): past the cut-off it calls flush_tlb_mm
  (376-386: DSB ISHST; TLBI ASIDE1IS (+ user copy); __tlbi_sync_s1ish = DSB
  ISH) and *returns* (571-574), skipping its own completion (605-610);
* __flush_tlb_range_limit_excess (529-542): with range ops pages >
  MAX_TLBI_RANGE_PAGES, without them only pages >= MAX_DVM_OPS strides;
* __flush_tlb_page (635-643): __do_flush_tlb_range(..., PAGE_SIZE, 3,
  TLBF_NOWALKCACHE): a single VALE1IS through __tlbi_level_asid, so level 3
  is a TTL hint under FEAT_TTL (v6.19's __flush_tlb_page_nosync gave none).

Not the model's output: the lists below are the source read by a person.
"""

from __future__ import annotations

import pytest

from .helpers import ISH, ISHST, T, raw, run, va

A42 = 42 << 48
USER = 1 << 48
TTL_L3_4K = (3 | 1 << 2) << 44      # TTL field 47:44: level 3, TG 1 (4K)
TTL_L1_4K = (1 | 1 << 2) << 44      # level 1, TG 1


def cutoff_range() -> str:
    # 512 pages at page stride: >= MAX_DVM_OPS (PTRS_PER_PTE) strides -> fallback
    return raw("flush_tlb_range", "start = 0x20000000\nend = 0x20200000\n"
                                  "stride = 0x1000\nlast_level = true")


def test_v7_1_whole_asid_fallback_completes_once() -> None:
    assert run(cutoff_range(), "v7.1") == [ISHST, T("aside1is", A42), ISH]


def test_v6_9_to_v6_19_fallback_completes_twice_and_v7_1_does_not_inherit_it() -> None:
    for name in ("v6.9", "v6.10", "v6.13", "v6.19"):
        assert run(cutoff_range(), name) == [ISHST, T("aside1is", A42), ISH, ISH], name


def test_v7_1_fallback_under_kpti_has_the_user_copy_and_still_one_completion() -> None:
    sc = cutoff_range().replace("kpti = false", "kpti = true")
    assert run(sc, "v7.1") == [ISHST, T("aside1is", A42), T("aside1is", A42 | USER), ISH]


def pud_stride_16g(features: str = "") -> str:
    # 16 GiB at PUD stride = 4 Mi pages (> 2^21) but only 16 strides (< 512)
    return raw("flush_tlb_range", "start = 0x4000000000\nend = 0x4400000000\n"
                                  "stride = 0x40000000\nlast_level = true\nlevel = 1",
               features=features)


def test_v7_1_without_range_ops_only_max_dvm_ops_strides_cut_off() -> None:
    want = [ISHST, *(T("vale1is", va(0x4000000000 + k * 0x40000000, 42)) for k in range(16)),
            ISH]
    assert run(pud_stride_16g(), "v7.1") == want
    # with FEAT_TTL the level-1 hint rides on each
    hinted = [ISHST, *(T("vale1is", va(0x4000000000 + k * 0x40000000, 42) | TTL_L1_4K)
                       for k in range(16)), ISH]
    assert run(pud_stride_16g("ttl"), "v7.1") == hinted


def test_v6_19_sends_the_same_16g_pud_range_to_the_whole_asid() -> None:
    assert run(pud_stride_16g(), "v6.19") == [ISHST, T("aside1is", A42), ISH, ISH]


def test_v7_1_with_range_ops_still_cuts_off_above_max_tlbi_range_pages() -> None:
    assert run(pud_stride_16g("tlbirange"), "v7.1") == [ISHST, T("aside1is", A42), ISH]


@pytest.mark.parametrize("kpti", [False, True])
def test_v7_1_flush_tlb_page_carries_a_level_3_hint_under_ttl(kpti: bool) -> None:
    sc = raw("flush_tlb_page", "addr = 0x400000", kpti=kpti, features="ttl")
    xt = va(0x400000, 42) | TTL_L3_4K
    want = [ISHST, T("vale1is", xt), *([T("vale1is", xt | USER)] if kpti else []), ISH]
    assert run(sc, "v7.1") == want
    # v6.19 on the same CPU: no hint
    plain = va(0x400000, 42)
    assert run(sc, "v6.19") == [ISHST, T("vale1is", plain),
                                *([T("vale1is", plain | USER)] if kpti else []), ISH]


def test_v7_1_flush_tlb_page_without_ttl_is_unchanged() -> None:
    sc = raw("flush_tlb_page", "addr = 0x400000", features="tlbirange")
    assert run(sc, "v7.1") == [ISHST, T("vale1is", va(0x400000, 42)), ISH]
