"""The model-free checks of a real kernel's teardown stream (check/kernel.py), on hand-written
streams: the kernel's own template passes, and each way of getting it wrong fails with a reason."""

from __future__ import annotations

from dataclasses import replace

import pytest

from shootdown.check.kernel import (
    StepFacts,
    check_coverage,
    check_kpti,
    check_walk_caches,
    decode_tlbi,
    run_checks,
)
from shootdown.kernel.observe import ObservedOp

PAGE = 4096
BASE = 0x1_0000_0000
ASID = 2


def dsb(option: str) -> ObservedOp:
    return ObservedOp("dsb", option, None, 0, 0xFFFF800008304920, "tlb_flush")


def tlbi(op: str, xt: int | None) -> ObservedOp:
    return ObservedOp("tlbi", op, xt, 0, 0xFFFF8000083049B0, "tlb_flush")


def by_va(va: int, asid: int = ASID, ttl: int = 0) -> int:
    """A by-VA operand: ASID[63:48], TTL[47:44], VA[55:12] in [43:0] (Arm ARM, TLBI VAE1IS)."""
    return asid << 48 | ttl << 44 | (va >> 12)


def by_range(va: int, num: int, scale: int, asid: int = ASID, tg: int = 1, ttl: int = 0,
             base_shift: int = 12) -> int:
    """A range operand: ASID, TG[47:46], SCALE[45:44], NUM[43:39], TTL[38:37], BaseADDR[36:0]."""
    return (asid << 48 | tg << 46 | scale << 44 | num << 39 | ttl << 37
            | (va >> base_shift))


def facts(pages: int, **kw: object) -> StepFacts:
    base = StepFacts(start=BASE, end=BASE + pages * PAGE, page_size=PAGE, asid=ASID, kpti=False)
    return replace(base, **kw)  # type: ignore[arg-type]


def template(*tlbis: ObservedOp) -> list[ObservedOp]:
    """``__flush_tlb_range``'s shape: DSB ISHST; TLBIs; DSB ISH."""
    return [dsb("ishst"), *tlbis, dsb("ish")]


# -- operand decoding --------------------------------------------------------------------------

def test_the_real_bookworm_range_operand_decodes_to_the_four_pages_unmapped() -> None:
    # Traced from Debian's 6.1 (bookworm) munmap of 4 pages at 4 GiB: TLBI RVALE1IS.
    inv = decode_tlbi("rvale1is", 0x000240E000100000, page_size=PAGE, lpa2=False)
    assert inv is not None
    assert (inv.asid, inv.start, inv.end, inv.level, inv.leaf_only) == (
        2, BASE, BASE + 4 * PAGE, 3, True)


def test_range_operand_fields() -> None:
    inv = decode_tlbi("rvae1is", by_range(BASE, num=7, scale=1), page_size=PAGE, lpa2=False)
    assert inv is not None and inv.end is not None and inv.start == BASE
    assert (inv.end - inv.start) // PAGE == (7 + 1) << (5 * 1 + 1)
    # LPA2: the base is in 64 KiB units
    lpa2 = decode_tlbi("rvae1is", by_range(BASE, 1, 0, base_shift=16), page_size=PAGE, lpa2=True)
    assert lpa2 is not None and lpa2.start == BASE


def test_unknown_tlbi_is_none_not_an_exception() -> None:
    assert decode_tlbi("sys_4_c3_5", 0, page_size=PAGE, lpa2=False) is None


# -- passing streams ---------------------------------------------------------------------------

def test_the_kernel_template_with_a_range_tlbi_passes() -> None:
    ops = template(tlbi("rvale1is", by_range(BASE, num=1, scale=0, ttl=3)))
    result = check_coverage(ops, facts(4))
    assert result.status == "pass", result.reason


def test_per_page_tlbis_pass() -> None:
    ops = template(*(tlbi("vale1is", by_va(BASE + i * PAGE, ttl=0b0111)) for i in range(3)))
    assert check_coverage(ops, facts(3)).status == "pass"


@pytest.mark.parametrize("wide", [tlbi("aside1is", ASID << 48), tlbi("vmalle1is", None)])
def test_asid_wide_and_global_invalidations_cover_everything(wide: ObservedOp) -> None:
    result = run_checks(template(wide), facts(512, tables_freed=True))
    assert [c.status for c in result] == ["pass", "pass", "skip"], result


def test_range_plus_one_page_covers_an_odd_count() -> None:
    ops = template(tlbi("rvale1is", by_range(BASE, 1, 0)), tlbi("vale1is", by_va(BASE + 4 * PAGE)))
    assert check_coverage(ops, facts(5)).status == "pass"


def test_kpti_user_copy_present_passes() -> None:
    ops = template(tlbi("vale1is", by_va(BASE)), tlbi("vale1is", by_va(BASE, asid=ASID | 1)))
    assert check_kpti(ops, facts(1, kpti=True)).status == "pass"


# -- streams that MUST fail --------------------------------------------------------------------

def test_missing_dsb_ish_fails() -> None:
    ops = [dsb("ishst"), tlbi("vale1is", by_va(BASE))]
    result = check_coverage(ops, facts(1))
    assert result.status == "fail"
    assert "no DSB ISH" in result.reason


def test_missing_dsb_ishst_fails() -> None:
    ops = [tlbi("vale1is", by_va(BASE)), dsb("ish")]
    result = check_coverage(ops, facts(1))
    assert result.status == "fail" and "no DSB ISHST" in result.reason


def test_a_local_dsb_does_not_complete_a_broadcast_tlbi() -> None:
    ops = [dsb("ishst"), tlbi("vale1is", by_va(BASE)), dsb("nsh")]
    assert check_coverage(ops, facts(1)).status == "fail"


def test_local_non_is_tlbi_fails() -> None:
    result = check_coverage(template(tlbi("vale1", by_va(BASE))), facts(1))
    assert result.status == "fail"
    assert "local" in result.reason


def test_wrong_asid_fails() -> None:
    result = check_coverage(template(tlbi("vale1is", by_va(BASE, asid=5))), facts(1))
    assert result.status == "fail"
    assert "ASID 5, not 2" in result.reason


def test_missing_kpti_copy_fails() -> None:
    result = check_kpti(template(tlbi("vale1is", by_va(BASE))), facts(1, kpti=True))
    assert result.status == "fail"
    assert "ASID 3" in result.reason


def test_kpti_check_is_skipped_with_kpti_off() -> None:
    assert check_kpti(template(tlbi("vale1is", by_va(BASE))), facts(1)).status == "skip"


def test_range_ending_one_page_short_fails() -> None:
    # 5 pages unmapped, the range covers 4 (NUM=1, SCALE=0): the last page survives.
    result = check_coverage(template(tlbi("rvale1is", by_range(BASE, 1, 0))), facts(5))
    assert result.status == "fail"
    assert f"page {BASE + 4 * PAGE:#x}" in result.reason


def test_range_with_the_wrong_granule_fails() -> None:
    ops = template(tlbi("rvale1is", by_range(BASE, 1, 0, tg=2)))
    result = check_coverage(ops, facts(4))
    assert result.status == "fail" and "granule" in result.reason


def test_ttl_naming_the_wrong_level_fails() -> None:
    ops = template(tlbi("vale1is", by_va(BASE, ttl=0b0110)))  # 4K granule, level 2
    result = check_coverage(ops, facts(1))
    assert result.status == "fail" and "TTL level 2" in result.reason


def test_table_freed_with_only_leaf_tlbis_fails_walk_caches() -> None:
    ops = template(tlbi("rvale1is", by_range(BASE, 7, 1)))
    f = facts(512, tables_freed=True)
    assert check_coverage(ops, f).status == "pass"
    result = check_walk_caches(ops, f)
    assert result.status == "fail" and "leaf-only" in result.reason


def test_walk_caches_need_the_kpti_copy_too() -> None:
    ops = template(tlbi("rvae1is", by_range(BASE, 7, 1)))
    result = check_walk_caches(ops, facts(512, tables_freed=True, kpti=True))
    assert result.status == "fail" and "ASID 3" in result.reason


def test_an_empty_stream_fails_every_applicable_check() -> None:
    result = run_checks([], facts(512, tables_freed=True, kpti=True))
    assert [c.status for c in result] == ["fail", "fail", "fail"]


def test_the_real_trixie_lpa2_operand_has_its_base_in_64k_units() -> None:
    # Traced from Debian's 6.12 (trixie) on -cpu max (LPA2): the same 4 pages at 4 GiB.
    inv = decode_tlbi("rvale1is", 0x000240E000010000, page_size=PAGE, lpa2=True)
    assert inv is not None and (inv.start, inv.end) == (BASE, BASE + 4 * PAGE)
    wrong = decode_tlbi("rvale1is", 0x000240E000010000, page_size=PAGE, lpa2=False)
    assert wrong is not None and wrong.start != BASE


# -- PMD blocks (THP) --------------------------------------------------------------------------

def test_pmd_blocks_are_covered_by_one_tlbi_each_as_5_10_issues_them() -> None:
    """Debian's 5.10 on a Cortex-A57 unmaps two THP blocks with one TLBI VAE1IS per 2 MiB
    (tlb_get_unmap_size: PMD_SIZE when only PMDs were cleared): each TLBI removes its
    block's entry, so every page of both blocks is covered."""
    block = 2 << 20
    ops = template(tlbi("vae1is", by_va(BASE)), tlbi("vae1is", by_va(BASE + block)))
    blocks = facts(2 * block // PAGE, leaf_level=2)
    got = check_coverage(ops, blocks)
    assert got.status == "pass", got.reason
    assert got.reason.startswith("2 2 MiB blocks of ASID 2")
    # the same stream over pages (leaf level 3) misses 511 of each block's pages
    assert check_coverage(ops, facts(2 * block // PAGE)).status == "fail"
    # and a block with no TLBI in it is still a miss
    one = template(tlbi("vae1is", by_va(BASE)))
    missed = check_coverage(one, blocks)
    assert missed.status == "fail" and f"{BASE + block:#x}" in missed.reason
