"""The REPEAT_TLBI erratum workaround (cpu feature ``repeat_tlbi``), both forms,
each sequence written out by hand from the kernel sources:

* before the rework (mainline up to v6.19; arch/arm64/include/asm/tlbflush.h
  __TLBI_0/__TLBI_1): each TLBI carries an ALTERNATIVE ``dsb ish; tlbi <op>, <arg>``:
  every TLBI, KPTI copies too, is followed by DSB ISH and the same TLBI;
* after it (Debian's linux-source-7.2 7.2.13: tlbflush.h 237-254; backported to
  Debian's 6.1.176: 153-168 and 6.12.117: 176-191): __tlbi_sync_s1ish() is
  ``dsb(ish); __repeat_tlbi_sync(vale1is, 0)``: every completing DSB ISH is followed
  by TLBI VALE1IS, XZR (no operand register) and DSB ISH.

Not the model's output: the lists are the source read by a person.
"""

from __future__ import annotations

from shootdown.model.policy import get_policy, stable_policy

from .helpers import ISB, ISH, ISHST, T, raw, run, va

A42 = 42 << 48
USER = 1 << 48
XZR = T("vale1is", None)   # TLBI VALE1IS, XZR: Rt = 31, no operand register


def page(kpti: bool = False) -> str:
    return raw("flush_tlb_page", "addr = 0x400000", kpti=kpti, features="repeat_tlbi")


def test_old_form_repeats_every_tlbi_after_a_dsb_ish() -> None:
    x = va(0x400000, 42)
    assert run(page(), "v6.19") == [ISHST, T("vale1is", x), ISH, T("vale1is", x), ISH]
    # under KPTI the user copy is a TLBI of its own, repeated too
    assert run(page(kpti=True), "v6.19") == [
        ISHST, T("vale1is", x), ISH, T("vale1is", x),
        T("vale1is", x | USER), ISH, T("vale1is", x | USER), ISH]


def test_new_form_follows_each_completion_with_tlbi_vale1is_xzr() -> None:
    x = va(0x400000, 42)
    assert run(page(), "v7.1") == [ISHST, T("vale1is", x), ISH, XZR, ISH]
    assert run(page(kpti=True), "v7.1") == [
        ISHST, T("vale1is", x), T("vale1is", x | USER), ISH, XZR, ISH]


def test_new_form_in_the_range_fallback_of_each_release() -> None:
    cutoff = raw("flush_tlb_range", "start = 0x20000000\nend = 0x20200000\nstride = 0x1000\n"
                                    "last_level = true", features="repeat_tlbi")
    # v7.1: flush_tlb_mm's own completion only
    assert run(cutoff, "v7.1") == [ISHST, T("aside1is", A42), ISH, XZR, ISH]
    # Debian's 6.12.117 (v6.10 + the backport): flush_tlb_mm's, then __flush_tlb_range's
    pol = stable_policy((6, 12, 117))
    assert pol is not None and pol.name == "v6.12.117"
    assert run(cutoff, pol) == [ISHST, T("aside1is", A42), ISH, XZR, ISH, ISH, XZR, ISH]


def test_kernel_flushes_repeat_after_their_completion_before_the_isb() -> None:
    sc = raw("flush_tlb_kernel_pgtable", "addr = 0xffff000008000000", features="repeat_tlbi")
    kva = (0xFFFF000008000000 >> 12) & ((1 << 44) - 1)
    assert run(sc, "v7.1") == [ISHST, T("vaae1is", kva), ISH, XZR, ISH, ISB]
    assert run(sc, "v6.19") == [ISHST, T("vaae1is", kva), ISH, T("vaae1is", kva), ISH, ISB]


def test_without_the_feature_nothing_changes() -> None:
    plain = raw("flush_tlb_page", "addr = 0x400000")
    assert run(plain, "v7.1") == [ISHST, T("vale1is", va(0x400000, 42)), ISH]


def test_the_stable_series_that_carry_the_rework() -> None:
    assert get_policy("v6.1.176").repeat_tlbi_sync
    assert get_policy("v6.12.117").repeat_tlbi_sync
    assert not get_policy("v6.1").repeat_tlbi_sync and not get_policy("v6.19").repeat_tlbi_sync
