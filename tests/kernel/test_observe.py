"""Sites by disassembly, symbols, the window's log read into records, and the rule that
separates a step's teardown from the rest of its window (no guest needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shootdown.errors import ConfigError, TraceError
from shootdown.guest.qemu import ONE_INSN_PER_TB_SINCE
from shootdown.kernel.observe import ObservedOp, asid_from_switch, separate
from shootdown.kernel.sites import Site, find_sites, in_text
from shootdown.kernel.symbols import (
    entry_offset,
    from_pairs,
    parse_system_map,
    read_symbols,
    text_base,
)
from shootdown.kernel.tracer import KernelTracer
from shootdown.trace.decode import ISB_WORD, encode_dsb, encode_tlbi

NOP = 0xD503201F
MSR_TTBR1_X1 = 0xD5182021
SSBB = encode_dsb(0)  # DSB with CRm 0 is SSBB: not a barrier the checks know
BASE = 0xFFFF800008000000


def words(*ws: int) -> bytes:
    return b"".join(w.to_bytes(4, "little") for w in ws)


# -- sites ---------------------------------------------------------------------------------------

def test_sites_are_every_maintenance_instruction_at_its_offset() -> None:
    image = words(NOP, ISB_WORD, encode_dsb(0xB), encode_tlbi(0, 3, 5, 2), MSR_TTBR1_X1,
                  encode_dsb(0xA), SSBB, encode_tlbi(0, 7, 5, 9), NOP)
    sites = find_sites(image)
    assert [(s.offset, s.kind, s.op, s.rt) for s in sites] == [
        (4, "isb", "", 31), (8, "dsb", "ish", 31), (12, "tlbi", "vale1is", 2),
        (16, "msr", "ttbr1_el1", 1), (20, "dsb", "ishst", 31), (28, "tlbi", "vale1", 9)]
    assert sites[2].text == "tlbi vale1is, x2"  # capstone's reading, for people


def test_a_match_off_the_4_byte_grid_is_not_an_instruction() -> None:
    image = b"\x00\x00" + words(ISB_WORD) + b"\x00\x00"
    assert find_sites(image) == []


def test_sites_outside_the_text_are_dropped() -> None:
    sites = [Site(o, ISB_WORD, "isb", "", 31, "isb") for o in (0, 0x10000, 0x20000)]
    assert [s.offset for s in in_text(sites, 0x10000, 0x20000)] == [0x10000]


# -- symbols -------------------------------------------------------------------------------------

def test_debians_stub_system_map_is_refused_in_one_line(tmp_path: Path) -> None:
    stub = tmp_path / "System.map-6.1.0-50-arm64"
    stub.write_text("ffffffffffffffff B The real System.map is in the linux-image-<version>-dbg "
                    "package\n")
    with pytest.raises(ConfigError, match=r"stub System\.map"):
        read_symbols(stub)


def test_system_map_lookup_and_markers() -> None:
    lines = [f"{BASE + 0x10000 + i * 0x100:016x} t fn{i}" for i in range(200)]
    lines += [f"{BASE:016x} T _text", f"{BASE + 0x10000:016x} T _stext",
              f"{BASE + 0x30000:016x} T _etext", f"{BASE + 0x5000:016x} d some_data"]
    symbols = parse_system_map("\n".join(lines), "System.map")
    assert symbols.function_at(BASE + 0x10104) == ("fn1", 4)
    assert symbols.name_at(BASE + 0x10000) == "fn0"  # the function's name over _stext's
    assert symbols.marker("_text") == BASE
    assert text_base(symbols, b"") == BASE


def test_a_malformed_address_names_the_line() -> None:
    with pytest.raises(ConfigError, match=r"System.map:2: address"):
        parse_system_map("ffff800008000000 T a\nzzzz T b\n", "System.map")


def test_without_text_the_entry_branch_places_the_image() -> None:
    # The Image's second word is "b primary_entry" (arch/arm64/kernel/head.S).
    branch = 0x14000000 | ((0x1668D90 - 4) // 4)
    head = words(0xFA405A4D, branch)
    assert entry_offset(head) == 0x1668D90
    symbols = from_pairs([(BASE + 0x10000, "_stext"), (BASE + 0x1668D90, "primary_entry")], "k")
    assert text_base(symbols, head) == BASE
    wrong = from_pairs([(BASE + 0x10000, "_stext"), (BASE + 0x9668D90, "primary_entry")], "k")
    with pytest.raises(ConfigError, match="this kernel's symbols"):
        text_base(wrong, head)


# -- the window's log --------------------------------------------------------------------------

def dump(pc: int, **regs: int) -> str:
    values = " ".join(f"X{i:02d}={regs.get(f'x{i}', 0):016x}" for i in range(31))
    return f" PC={pc:016x} {values}  SP=0000000000000000\nPSTATE=600003c5 -Z-- EL1h\n"


def test_the_window_log_becomes_records_and_a_block_that_never_ran_is_dropped(
        tmp_path: Path) -> None:
    sites = [Site(0x100, encode_dsb(0xA), "dsb", "ishst", 31, "dsb ishst"),
             Site(0x104, encode_tlbi(0, 3, 5, 2), "tlbi", "vale1is", 2, "tlbi vale1is, x2"),
             Site(0x108, encode_dsb(0xB), "dsb", "ish", 31, "dsb ish")]
    symbols = from_pairs([(BASE, "_stext"), (BASE + 0x100, "tlb_flush"),
                          (BASE + 0x1000, "_etext")], "test")
    tracer = KernelTracer(sites, symbols, BASE, ONE_INSN_PER_TB_SINCE, tmp_path, merge_gap=0)
    assert tracer.ranges() == [(BASE + 0x100, BASE + 0x10C)]
    a, b, c = BASE + 0x100, BASE + 0x104, BASE + 0x108
    log = (f"Trace 0: 0x7f0000 [00000000/{a:016x}/00000000/00000000] \n{dump(a)}"
           f"Trace 0: 0x7f0040 [00000000/{b:016x}/00000000/00000000] \n{dump(b, x2=0x2000100000)}"
           f"Trace 0: 0x7f0080 [00000000/{c:016x}/00000000/00000000] \n{dump(c)}"
           f"Stopped execution of TB chain before 0x7f0080 [{c:016x}] \n"
           f"Trace 0: 0x7f0080 [00000000/{c:016x}/00000000/00000000] \n{dump(c)}")
    tracer._open = tmp_path / "window-1.log"  # as open() names it
    tracer._open.write_text(log)
    ops = tracer.read()
    assert [(o.kind, o.op, o.xt, o.function) for o in ops] == [
        ("dsb", "ishst", None, "tlb_flush"), ("tlbi", "vale1is", 0x2000100000, "tlb_flush"),
        ("dsb", "ish", None, "tlb_flush")]


# -- separating the step's teardown from the rest ----------------------------------------------

def op(kind: str, name: str, xt: int | None, function: str, cpu: int = 0) -> ObservedOp:
    return ObservedOp(kind, name, xt, cpu, 0, function)


def test_the_rule_keeps_the_unmap_path_and_sets_the_rest_aside_with_reasons() -> None:
    window = [
        op("isb", "", None, "arch_counter_get_cntvct"),            # timer interrupt
        op("dsb", "ishst", None, "tlb_flush"),
        op("tlbi", "rvale1is", 2 << 48 | 0x100000, "tlb_flush"),
        op("tlbi", "vale1is", 7 << 48 | 0x5, "flush_tlb_page_nosync"),  # another mm's ASID
        op("dsb", "ish", None, "tlb_flush"),
        op("dsb", "ish", None, "__switch_to", cpu=1),               # the other CPU
        op("msr", "ttbr1_el1", 2 << 48, "cpu_do_switch_mm"),
        op("dsb", "ish", None, "__switch_to"),                      # scheduling on cpu0
    ]
    own, rest = separate(window, cpu=0, asid=2, kpti=False)
    assert [o.op for o in own] == ["ishst", "rvale1is", "ish"]
    assert len(own) + len(rest) == len(window)  # nothing dropped
    reasons = [r.reason for r in rest]
    assert reasons[0].startswith("arch_counter_get_cntvct: not in the unmap path")
    assert reasons[1].startswith("ASID 7, not the workload's (2)")
    assert reasons[2].startswith("other CPU")
    assert reasons[3].startswith("a TTBR write")
    assert reasons[4].startswith("__switch_to: not in the unmap path")


def test_with_kpti_the_user_asid_is_the_workloads_too() -> None:
    window = [op("tlbi", "vale1is", 3 << 48, "tlb_flush")]
    assert separate(window, cpu=0, asid=2, kpti=True)[0] == tuple(window)
    assert separate(window, cpu=0, asid=2, kpti=False)[0] == ()


def test_an_asid_less_tlbi_counts_only_in_the_unmap_path() -> None:
    window = [op("tlbi", "vmalle1is", None, "flush_tlb_mm"),
              op("tlbi", "vmalle1is", None, "kvm_flush")]
    own, rest = separate(window, cpu=0, asid=2, kpti=False)
    assert [o.function for o in own] == ["flush_tlb_mm"]
    assert [r.op.function for r in rest] == ["kvm_flush"]


def test_the_asid_is_the_last_ttbr1_write_on_the_workloads_cpu() -> None:
    window = [op("msr", "ttbr1_el1", 4 << 48 | 0x41853001, "cpu_do_switch_mm"),
              op("msr", "ttbr0_el1", 0x4340B001, "cpu_do_switch_mm"),
              op("msr", "ttbr1_el1", 2 << 48 | 0x41853001, "cpu_do_switch_mm"),
              op("msr", "ttbr1_el1", 9 << 48, "cpu_do_switch_mm", cpu=1)]
    assert asid_from_switch(window, 0) == 2
    assert asid_from_switch(window[:2], 1) is None


def test_merged_ranges_log_instructions_between_sites_which_are_counted_and_skipped(
        tmp_path: Path) -> None:
    sites = [Site(0x100, encode_dsb(0xA), "dsb", "ishst", 31, "dsb ishst"),
             Site(0x140, encode_dsb(0xB), "dsb", "ish", 31, "dsb ish"),
             Site(0x400, ISB_WORD, "isb", "", 31, "isb")]
    symbols = from_pairs([(BASE, "_stext"), (BASE + 0x100, "tlb_flush"),
                          (BASE + 0x1000, "_etext"), (BASE + 0x800, "__idmap_text_start"),
                          (BASE + 0x900, "__idmap_text_end")], "test")
    idmap = Site(0x800, ISB_WORD, "isb", "", 31, "isb")  # runs at its physical address only
    tracer = KernelTracer([*sites, idmap], symbols, BASE, ONE_INSN_PER_TB_SINCE, tmp_path,
                          merge_gap=64)
    assert BASE + 0x800 not in tracer.sites
    assert tracer.ranges() == [(BASE + 0x100, BASE + 0x144), (BASE + 0x400, BASE + 0x404)]
    between = BASE + 0x120
    tracer._open = tmp_path / "window-1.log"
    tracer._open.write_text(
        f"Trace 0: 0x7f0000 [00000000/{BASE + 0x100:016x}/00000000/00000000] \n"
        f"{dump(BASE + 0x100)}"
        f"Trace 0: 0x7f0040 [00000000/{between:016x}/00000000/00000000] \n{dump(between)}"
        f"Trace 0: 0x7f0080 [00000000/{BASE + 0x140:016x}/00000000/00000000] \n"
        f"{dump(BASE + 0x140)}")
    assert [o.op for o in tracer.read()] == ["ishst", "ish"]
    assert tracer.non_sites == 1
    outside = BASE + 0x200
    tracer._open.write_text(
        f"Trace 0: 0x7f0040 [00000000/{outside:016x}/00000000/00000000] \n{dump(outside)}")
    with pytest.raises(TraceError, match="outside every -dfilter range"):
        tracer.read()


def test_unmap_path_names_match_compiler_clones() -> None:
    # sid's 7.2 runs the flush in "__flush_tlb_range.isra.0"
    window = [op("tlbi", "vmalle1is", None, "__flush_tlb_range.isra.0"),
              op("dsb", "ish", None, "flush_tlb_mm.constprop.0")]
    own, rest = separate(window, cpu=0, asid=2, kpti=False)
    assert len(own) == 2 and not rest


def test_the_workload_path_keeps_set_pgds_out_of_line_barrier() -> None:
    # sid's 7.2.13 (4K, five levels under LPA2): pgd_clear's set_pgd calls
    # queue_pte_barriers out of line; its DSB ISHST; ISB are the exit step's
    from shootdown.kernel.observe import UNMAP_PATH
    from shootdown.kernel.run import WORKLOAD_PATH

    window = [op("dsb", "ishst", None, "free_pgd_range"), op("isb", "", None, "free_pgd_range"),
              op("dsb", "ishst", None, "queue_pte_barriers"),
              op("isb", "", None, "queue_pte_barriers")]
    own, rest = separate(window, cpu=0, asid=2, kpti=False, unmap_path=WORKLOAD_PATH)
    assert own == tuple(window) and not rest
    # the unmap path alone sets them aside, with a reason (how the step failed before)
    own, rest = separate(window, cpu=0, asid=2, kpti=False,
                         unmap_path=UNMAP_PATH | {"free_pgd_range"})
    assert len(own) == 2 and len(rest) == 2
