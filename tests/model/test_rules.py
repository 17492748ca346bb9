"""One test per modelled rule, each with its sequence worked out by hand.

The expected lists are written from the kernel sources of the release named
in each test (docs/policies.md), not produced by the model.
"""

from __future__ import annotations

import pytest

from shootdown.insn import decode_operand
from shootdown.model import POLICIES, Dsb, Instruction, Isb, Tlbi

from .helpers import ISB, ISH, ISHST, T, gather, raw, run, va

A42 = 42 << 48
USER = 1 << 48
KBASE = 0xFFFF000008000000
KVA = (KBASE >> 12) & ((1 << 44) - 1)  # __TLBI_VADDR(kaddr, 0) keeps VA[55:12]


def pte_run(addr: int, count: int) -> str:
    return f'{{ op = "remove_pte", addr = {addr:#x}, count = {count} }}'


def op(name: str, addr: int) -> str:
    return f'{{ op = "{name}", addr = {addr:#x} }}'


# --- v4.19: synchronous invalidation of freed tables ------------------------

def test_v4_19_free_pte_table_is_invalidated_at_once_behind_pmd_clears_barrier() -> None:
    got = run(gather(op("free_pte_table", 0x400000), kpti=True), "v4.19")
    assert got == [
        ISHST,                                               # pmd_clear -> set_pmd
        T("vae1is", va(0x400000, 42)), T("vae1is", va(0x400000, 42) | USER),
        ISH,                                                 # __flush_tlb_pgtable
        ISHST,                                               # tlb_finish_mmu: page stride,
        T("vale1is", va(0x400000, 42)), T("vale1is", va(0x400000, 42) | USER),  # last level
        ISH,
    ]


def test_v4_19_range_flush_is_last_level_page_stride_with_1024_page_cutoff() -> None:
    got = run(gather(pte_run(0x400000, 1024)), "v4.19")
    assert got[0] == ISHST and got[-1] == ISH
    assert got[1:-1] == [T("vale1is", va(0x400000, 42) + i) for i in range(1024)]
    assert run(gather(pte_run(0x400000, 1025)), "v4.19") == [ISHST, T("aside1is", A42), ISH]


def test_v4_19_fullmm_flushes_nothing_but_tables_still_go_synchronously() -> None:
    assert run(gather(pte_run(0x400000, 3), fullmm=True), "v4.19") == []
    got = run(gather(op("free_pte_table", 0x400000), fullmm=True), "v4.19")
    assert got == [ISHST, T("vae1is", va(0x400000, 42)), ISH]


# --- v4.20: the series -------------------------------------------------------

def test_v4_20_pmd_clear_has_no_barrier_and_freed_tables_flush_non_leaf_at_pmd_stride() -> None:
    got = run(gather(op("free_pte_table", 0x400000)), "v4.20")
    assert got == [ISHST, T("vae1is", va(0x400000, 42)), ISH]


def test_v4_20_cutoff_is_more_than_1024_times_the_stride() -> None:
    got = run(gather(pte_run(0x400000, 1024)), "v4.20")
    assert len(got) == 1026 and got[1] == T("vale1is", va(0x400000, 42))
    assert run(gather(pte_run(0x400000, 1025)), "v4.20") == [ISHST, T("aside1is", A42), ISH]


def test_v4_20_fullmm_flushes_the_asid_only_when_tables_were_freed() -> None:
    assert run(gather(pte_run(0x400000, 3), fullmm=True), "v4.20") == []
    got = run(gather(op("free_pte_table", 0x400000), fullmm=True), "v4.20")
    assert got == [ISHST, T("aside1is", A42), ISH]


def test_v4_20_filling_the_table_batch_flushes_the_gathered_range() -> None:
    base = 0x40000000
    ops = ", ".join(op("free_pte_table", base + k * 0x200000) for k in range(510))
    got = run(gather(ops), "v4.20")
    # 509 tables fill the 4K batch: flush [base, base + 508*2M + 4K) at 2M stride
    first = [ISHST] + [T("vae1is", va(base + k * 0x200000, 42)) for k in range(509)] + [ISH]
    last = [ISHST, T("vae1is", va(base + 509 * 0x200000, 42)), ISH]
    assert got == first + last
    # v4.19 invalidated each table already: the batch flush adds nothing
    old = run(gather(ops), "v4.19")
    assert old.count(ISH) == 510 + 1 and old[-3:] == [ISHST, T("aside1is", A42), ISH]


def test_a_mid_gather_flush_resets_the_range() -> None:
    ops = f'{pte_run(0x400000, 1)}, {{ op = "flush" }}, {pte_run(0x800000, 1)}'
    got = run(gather(ops), "v4.20")
    assert got == [ISHST, T("vale1is", va(0x400000, 42)), ISH,
                   ISHST, T("vale1is", va(0x800000, 42)), ISH]
    assert run(gather('{ op = "flush" }'), "v4.20") == []   # end == 0: skipped
    assert run(gather('{ op = "flush" }'), "v6.19") == []   # no flag set: skipped


@pytest.mark.parametrize(("policy", "granule", "capacity"), [
    ("v4.20", "4k", 8 + 19 * 510), ("v6.8", "4k", 8 + 19 * 510), ("v6.9", "4k", 7 + 19 * 509),
    ("v4.20", "16k", 8 + 4 * 2046), ("v6.19", "16k", 7 + 4 * 2045),
    ("v4.20", "64k", 8 + 1 * 8190), ("v6.19", "64k", 7 + 1 * 8189),
])
def test_a_full_page_batch_forces_a_flush_after_the_page_that_filled_it(
        policy: str, granule: str, capacity: int) -> None:
    base = 0x40000000
    page = {"4k": 0x1000, "16k": 0x4000, "64k": 0x10000}[granule]
    asid_flush = [ISHST, T("aside1is", A42), ISH]
    if POLICIES[policy].range_nosync_split:  # tlb_flush -> __flush_tlb_range (v6.9+)
        asid_flush.append(ISH)
    assert run(gather(pte_run(base, capacity), granule=granule), policy) == asid_flush
    after = base + capacity * page
    assert run(gather(pte_run(base, capacity + 1), granule=granule), policy) == \
        [*asid_flush, ISHST, T("vale1is", va(after, 42)), ISH]
    # a THP takes one slot too
    ops = f'{pte_run(base, capacity - 1)}, {op("remove_pmd", 0x80000000)}, ' \
          f'{pte_run(after, 1)}'
    assert run(gather(ops, granule=granule), policy) == \
        [*asid_flush, ISHST, T("vale1is", va(after, 42)), ISH]


# --- v5.0 and v5.2: cut-off and rounding -------------------------------------

@pytest.mark.parametrize(("granule", "ptrs", "page"), [("4k", 512, 0x1000),
                                                       ("16k", 2048, 0x4000),
                                                       ("64k", 8192, 0x10000)])
def test_v5_0_cutoff_is_ptrs_per_pte_times_the_stride_inclusive(granule: str, ptrs: int,
                                                                page: int) -> None:
    base = 0x40000000
    below = run(gather(pte_run(base, ptrs - 1), granule=granule), "v5.0")
    assert len(below) == ptrs - 1 + 2
    assert below[1] == T("vale1is", va(base, 42))
    assert below[2] == T("vale1is", va(base + page, 42))   # stride is one page, in 4K units
    at = run(gather(pte_run(base, ptrs), granule=granule), "v5.0")
    assert at == [ISHST, T("aside1is", A42), ISH]


def test_v5_2_rounds_the_range_to_the_stride_before_the_cutoff() -> None:
    ops = f'{op("remove_pmd", 0x40000000)}, {op("free_pte_table", 0x7FE00000)}'
    # [0x40000000, 0x7fe01000) at 2M stride: under the v5.0 cut-off of 512 * 2M ...
    v50 = run(gather(ops), "v5.0")
    assert v50[1:-1] == [T("vae1is", va(0x40000000 + k * 0x200000, 42)) for k in range(512)]
    # ... but rounded up to 0x80000000 it is exactly 1 GiB: the whole ASID
    assert run(gather(ops), "v5.2") == [ISHST, T("aside1is", A42), ISH]


# --- v5.4: ISBs ---------------------------------------------------------------

@pytest.mark.parametrize(("policy", "expected"), [
    # pmd_free_pte_page: pmd_clear (v4.19: DSB ISHST) then __flush_tlb_kernel_pgtable,
    # which in v4.19 has no DSB ISHST of its own
    ("v4.19", [ISHST, T("vaae1is", KVA), ISH]),
    ("v4.20", [ISHST, T("vaae1is", KVA), ISH]),
    ("v5.4", [ISHST, T("vaae1is", KVA), ISH, ISB]),
    ("v6.19", [ISHST, T("vaae1is", KVA), ISH, ISB]),
])
def test_flush_tlb_kernel_pgtable_barriers_per_release(policy: str,
                                                      expected: list[Instruction]) -> None:
    assert run(raw("flush_tlb_kernel_pgtable", f"addr = {KBASE:#x}"), policy) == expected


def test_freeing_a_pud_table_clears_a_pgd_entry_whose_barrier_gains_an_isb_in_v5_4() -> None:
    sc = gather(f'{op("free_pud_table", 0)}, {op("free_p4d_table", 0)}')
    # 4 levels up to v5.4: p4d_clear and then pgd_clear are both set_pgd
    assert run(sc, "v4.20") == [ISHST, ISHST, ISHST, T("vae1is", va(0, 42)), ISH]
    assert run(sc, "v5.4") == [ISHST, ISB, ISHST, ISB, ISHST, T("vae1is", va(0, 42)), ISH]
    # v5.9: set_p4d once; the range [0, 512G) rounded at P4D stride is 2^27 pages: the ASID
    assert run(sc, "v5.9") == [ISHST, ISB, ISHST, T("aside1is", A42), ISH]


def test_folded_levels_have_no_clear_and_no_table_but_keep_the_generic_range() -> None:
    # 64K, 42 bits: 2 levels, the PMD level is folded
    sc = gather(op("free_pmd_table", 0), granule="64k", va_bits=42)
    assert run(sc, "v4.19") == [ISHST, T("vale1is", va(0, 42)), ISH]
    # 64K, 48 bits: 3 levels, a real PMD table behind a real pud_clear
    sc3 = gather(op("free_pmd_table", 0), granule="64k", va_bits=48)
    assert run(sc3, "v4.19") == [ISHST, T("vae1is", va(0, 42)), ISH,
                                 ISHST, T("vale1is", va(0, 42)), ISH]
    # 4K, 39 bits: the PUD level is folded; v4.20 still flushes at P4D (1G) stride
    sc4 = gather(f'{op("free_pud_table", 0)}, {op("free_p4d_table", 0)}', va_bits=39)
    assert run(sc4, "v4.20") == [ISHST, T("vae1is", va(0, 42)), ISH]


# --- kernel ranges ------------------------------------------------------------

def test_kernel_range_op_is_vaae1is_in_v4_19_and_vaale1is_from_v4_20() -> None:
    sc = raw("flush_tlb_kernel_range", f"start = {KBASE:#x}\nend = {KBASE + 0x2000:#x}",
             kpti=True)
    assert run(sc, "v4.19") == [ISHST, T("vaae1is", KVA), T("vaae1is", KVA + 1), ISH, ISB]
    assert run(sc, "v4.20") == [ISHST, T("vaale1is", KVA), T("vaale1is", KVA + 1), ISH, ISB]


def kernel_pages(n: int) -> str:
    return raw("flush_tlb_kernel_range", f"start = {KBASE:#x}\nend = {KBASE + n * 0x1000:#x}")


ALL = [ISHST, T("vmalle1is"), ISH, ISB]


def test_kernel_range_cutoffs_per_release() -> None:
    assert len(run(kernel_pages(1024), "v4.20")) == 1024 + 3
    assert run(kernel_pages(1025), "v4.20") == ALL
    assert len(run(kernel_pages(512), "v5.0")) == 512 + 3     # > PTRS_PER_PTE
    assert run(kernel_pages(513), "v5.0") == ALL
    assert run(kernel_pages(512), "v6.13") == ALL             # >= PTRS_PER_PTE from v6.13
    assert len(run(kernel_pages(511), "v6.13")) == 511 + 3


def test_v6_13_kernel_range_uses_range_tlbis() -> None:
    got = run(kernel_pages(512), "v6.13", cpu_features={"tlbirange"})
    # 512 pages: scale 1, num 7 (8 * 64); ASID 0, TG 1 (4K), no TTL
    xt = ((KBASE >> 12) & ((1 << 37) - 1)) | 7 << 39 | 1 << 44 | 1 << 46
    assert got == [ISHST, T("rvaale1is", xt), ISH, ISB]
    assert run(kernel_pages(512), "v6.10", cpu_features={"tlbirange"}) != got


# --- KPTI -----------------------------------------------------------------------

def test_kpti_copies_asid_tagged_tlbis_with_bit_48_and_only_those() -> None:
    assert run(raw("flush_tlb_mm", "", kpti=True), "v6.19") == [
        ISHST, T("aside1is", A42), T("aside1is", A42 | USER), ISH]
    assert run(raw("flush_tlb_page", "addr = 0x400000", kpti=True), "v6.19") == [
        ISHST, T("vale1is", va(0x400000, 42)), T("vale1is", va(0x400000, 42) | USER), ISH]
    assert run(kernel_pages(1).replace("kpti = false", "kpti = true"), "v6.19") == [
        ISHST, T("vaale1is", KVA), ISH, ISB]


# --- v5.9 / v5.14: TTL -------------------------------------------------------------

def test_v5_9_ttl_hint_is_the_only_cleared_level_with_the_granule() -> None:
    got = run(gather(pte_run(0x400000, 2), features="ttl"), "v5.9")
    hint = (3 | 1 << 2) << 44        # level 3, TG 1 (4K)
    assert got == [ISHST, T("vale1is", va(0x400000, 42) | hint),
                   T("vale1is", va(0x401000, 42) | hint), ISH]
    # a release that predates FEAT_TTL ignores the feature
    assert run(gather(pte_run(0x400000, 2), features="ttl"), "v5.4")[1] == \
        T("vale1is", va(0x400000, 42))
    # 16K: TG 2
    got16 = run(gather(pte_run(0x400000, 1), granule="16k", features="ttl"), "v5.9")
    assert got16[1] == T("vale1is", va(0x400000, 42) | (3 | 2 << 2) << 44)


def test_v5_9_hints_level_2_after_freeing_a_table_and_v5_14_drops_the_hint() -> None:
    sc = gather(op("free_pte_table", 0x400000), features="ttl")
    assert run(sc, "v5.9") == [ISHST, T("vae1is", va(0x400000, 42) | (2 | 1 << 2) << 44), ISH]
    assert run(sc, "v5.14") == [ISHST, T("vae1is", va(0x400000, 42)), ISH]
    assert run(sc, "v6.19") == [ISHST, T("vae1is", va(0x400000, 42)), ISH]


# --- range TLBIs -------------------------------------------------------------------

def rng(op_: str, baddr: int, num: int, scale: int, ttl: int, asid: int = 42,
        tg: int = 1) -> Tlbi:
    return T(op_, baddr | ttl << 37 | num << 39 | scale << 44 | tg << 46 | asid << 48)


def test_v5_9_range_loop_odd_page_first_then_scale_upwards() -> None:
    got = run(gather(pte_run(0x400000, 3), features="tlbirange"), "v5.9")
    # range operand carries TTL (level 3) even without FEAT_TTL
    assert got == [ISHST, T("vale1is", va(0x400000, 42)),
                   rng("rvale1is", 0x401, 0, 0, 3), ISH]


def test_v6_8_range_loop_scale_downwards_and_odd_page_last() -> None:
    got = run(gather(pte_run(0x400000, 3), features="tlbirange"), "v6.8")
    assert got == [ISHST, rng("rvale1is", 0x400, 0, 0, 3), T("vale1is", va(0x402000, 42)), ISH]
    # 8192 pages (32 MiB): one op, num 3, scale 2
    big = run(gather(pte_run(0x40000000, 8192), features="tlbirange"), "v6.19")
    assert big == [ISHST, rng("rvale1is", 0x40000, 3, 2, 3), ISH]


def test_v6_10_flushes_max_tlbi_range_pages_with_one_num_31_op() -> None:
    sc = raw("flush_tlb_range", "start = 0\nend = 0x200000000\nstride = 0x1000\n"
             "last_level = true", features="tlbirange")
    # pages >= 2^21: flush_tlb_mm inside _nosync, then __flush_tlb_range's DSB ISH
    assert run(sc, "v6.9") == [ISHST, T("aside1is", A42), ISH, ISH]
    assert run(sc, "v6.10") == [ISHST, rng("rvale1is", 0, 31, 3, 0), ISH]


def test_whole_asid_fallback_gets_a_second_dsb_ish_from_v6_9() -> None:
    # v6.9 split __flush_tlb_range into _nosync (whose cut-off calls flush_tlb_mm,
    # DSB ISHST; TLBI ASIDE1IS; DSB ISH, and returns) plus the caller's dsb(ish)
    sc = raw("flush_tlb_range", "start = 0\nend = 0x400000000\nstride = 0x1000\n"
             "last_level = true")
    for name in ("v5.9", "v5.14", "v6.8"):
        assert run(sc, name) == [ISHST, T("aside1is", A42), ISH], name
    for name in ("v6.9", "v6.10", "v6.13", "v6.19"):
        assert run(sc, name) == [ISHST, T("aside1is", A42), ISH, ISH], name


def test_raw_flush_tlb_range_passes_its_level_and_stride() -> None:
    sc = raw("flush_tlb_range", "start = 0x200000\nend = 0x600000\nstride = 0x200000\n"
             "last_level = true\nlevel = 2", features="ttl")
    hint = (2 | 1 << 2) << 44
    assert run(sc, "v6.19") == [ISHST, T("vale1is", va(0x200000, 42) | hint),
                                T("vale1is", va(0x400000, 42) | hint), ISH]
    assert run(sc, "v4.20") == [ISHST, T("vale1is", va(0x200000, 42)),
                                T("vale1is", va(0x400000, 42)), ISH]


# --- instructions ---------------------------------------------------------------------

def test_encodings_follow_the_arm_arm() -> None:
    assert T("vale1is", 0).encode(rt=0) == 0xD50883A0
    assert T("vmalle1is").encode() == 0xD508831F
    assert T("rvae1is", 0).encode(rt=1) == 0xD5088221
    assert Dsb("ish").encode() == 0xD5033B9F
    assert Dsb("ishst").encode() == 0xD5033A9F
    assert Isb().encode() == 0xD5033FDF


def test_equality_ignores_provenance() -> None:
    from shootdown.model import Why

    assert Tlbi("vae1is", 5, Why(1, "a")) == Tlbi("vae1is", 5, Why(2, "b"))
    different: list[object] = [Dsb("ishst"), Isb()]
    assert all(Dsb("ish") != other for other in different)
    assert len({Tlbi("vae1is", 5, Why(1, "a")), Tlbi("vae1is", 5)}) == 1


def test_decode_operand() -> None:
    f = decode_operand("vale1is", va(0x400000, 42) | 7 << 44)
    assert f == {"asid": 42, "va": 0x400000, "ttl": 7}
    assert decode_operand("vaale1is", KVA)["va"] == KBASE
    r = decode_operand("rvale1is", rng("rvale1is", 0x40000, 3, 3, 3).xt or 0)
    assert r["pages"] == 262144 and r["va"] == 0x40000000


def test_every_policy_is_named_vX_Y_and_in_release_order() -> None:
    versions = [p.version for p in POLICIES.values()]
    assert versions == sorted(versions)
    assert {"v4.19", "v4.20", "v6.19"} <= set(POLICIES)


def test_a_pud_block_takes_a_page_batch_slot_only_in_v6_19() -> None:
    base, cap = 0x40000000, 7 + 19 * 509
    ops = f'{pte_run(base, cap - 1)}, {op("remove_pud", 0x80000000)}'
    # v6.13: no slot; one flush at the end over pages and block (PTE stride: ASID)
    # (v6.9+: the whole-ASID fallback ends in two DSB ISH, see _nosync)
    assert run(gather(ops), "v6.13") == [ISHST, T("aside1is", A42), ISH, ISH]
    ops += f', {pte_run(0xC0000000, 1)}'
    assert run(gather(ops), "v6.13") == [ISHST, T("aside1is", A42), ISH, ISH]
    # v6.19: the block fills the batch: flush, then the last page alone
    assert run(gather(ops), "v6.19") == [ISHST, T("aside1is", A42), ISH, ISH,
                                         ISHST, T("vale1is", va(0xC0000000, 42)), ISH]


def test_level_0_is_no_ttl_hint_before_v6_8() -> None:
    # v5.9..v6.7 __tlbi_level: "if (level)" guards the hint, 0 means unknown
    sc = raw("flush_tlb_range", "start = 0x200000\nend = 0x202000\nstride = 0x1000\n"
             "last_level = true\nlevel = 0", features="ttl")
    for name in ("v5.9", "v5.14"):
        assert run(sc, name) == [ISHST, T("vale1is", va(0x200000, 42)),
                                 T("vale1is", va(0x201000, 42)), ISH], name
