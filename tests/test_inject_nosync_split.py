"""The second DSB ISH of v6.9..v6.19's whole-ASID range fallback, on real guests.

From v6.9 ``__flush_tlb_range`` is ``__flush_tlb_range_nosync`` plus its own
``dsb(ish)``; when the range is past the cut-off, ``_nosync`` calls
``flush_tlb_mm`` (``DSB ISHST; TLBI ASIDE1IS; DSB ISH``) and returns into the
caller, which issues the second ``DSB ISH``. The firmware must issue it
(6768c40), and the injection ``fallback_one_dsb_ish`` drops it.

The scenario's first step is a raw ``flush_tlb_range`` of 512 4K pages on a
CPU without FEAT_TLBIRANGE (virt-a57): ``pages >= PTRS_PER_PTE``, so the
fallback runs in every release from v5.0 on.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_run import bug_releases, not_applicable_line, run, verdict_line
from shootdown import cli
from shootdown.insn import Dsb, Instruction, Tlbi
from shootdown.trace.console import parse_console
from shootdown.trace.scenario import read_scenario

ROOT = Path(__file__).resolve().parents[1]
CUTOFF = str(ROOT / "guests" / "scenarios" / "4k" / "flush-tlb-range-cutoff.toml")
BUG = "fallback_one_dsb_ish"
#: the scenario's ASID (asid = 34) in a TLBI operand
ASIDE1IS = Tlbi("aside1is", 34 << 48)
#: written out from the kernel sources, not from the model: flush_tlb_mm alone
#: (v5.0..v6.8), and flush_tlb_mm followed by __flush_tlb_range's dsb(ish) (v6.9+)
ONE_DSB: list[Instruction] = [Dsb("ishst"), ASIDE1IS, Dsb("ish")]
TWO_DSB: list[Instruction] = [Dsb("ishst"), ASIDE1IS, Dsb("ish"), Dsb("ish")]



def guest_step_one(capsys: pytest.CaptureFixture[str], tmp_path: Path, policy: str,
                   inject: str = "none") -> list[Instruction]:
    """What the guest itself reported for step 1 (its console, not the check)."""
    code, out = run(capsys, CUTOFF, "--policy", policy, "--inject", inject, "--json",
                    "--logdir", str(tmp_path))
    assert code in (cli.ExitCode.PASS, cli.ExitCode.FAIL), out
    logs = [Path(b["log"]) for b in json.loads(out)["boots"]]
    assert len(logs) == 1, logs
    records = [r for r in parse_console(logs[0].read_bytes())
               if r.tag not in ("BEGIN", "CPU", "MMU", "READY", "END")]
    return list(read_scenario(records).steps[1])


@pytest.mark.guest
@pytest.mark.parametrize(("policy", "expected"), [
    ("v5.9", ONE_DSB), ("v6.8", ONE_DSB),
    ("v6.9", TWO_DSB), ("v6.10", TWO_DSB), ("v6.13", TWO_DSB), ("v6.19", TWO_DSB),
    ("v7.1", ONE_DSB),   # __do_flush_tlb_range returns after flush_tlb_mm (7.2 tlbflush.h:571-574)
])
def test_the_firmware_issues_the_callers_dsb_ish_after_the_fallback(
        firmware_elf: Path, qemu: str, capsys: pytest.CaptureFixture[str], tmp_path: Path,
        policy: str, expected: list[Instruction]) -> None:
    assert guest_step_one(capsys, tmp_path, policy) == expected


@pytest.mark.guest
def test_the_injection_drops_exactly_the_second_dsb_ish(
        firmware_elf: Path, qemu: str, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    assert guest_step_one(capsys, tmp_path, "v6.19", BUG) == ONE_DSB


@pytest.mark.guest
@pytest.mark.parametrize("policy", ["v6.9", "v6.19"])
def test_the_checks_catch_the_missing_second_dsb_ish(
        firmware_elf: Path, qemu: str, capsys: pytest.CaptureFixture[str],
        policy: str) -> None:
    code, out = run(capsys, CUTOFF, "--policy", policy)
    assert code == cli.ExitCode.PASS, out
    assert verdict_line(out).startswith("verdict: PASS"), out
    code, out = run(capsys, CUTOFF, "--policy", policy, "--inject", BUG)
    assert code == cli.ExitCode.PASS, out
    assert verdict_line(out).startswith("verdict: CAUGHT"), out
    assert "expected: dsb ish" in out and "issued:   (nothing more)" in out, out


@pytest.mark.guest
@pytest.mark.parametrize("policy", ["v4.19", "v5.4", "v5.9", "v6.8", "v7.1"])
def test_outside_the_nosync_split_it_is_not_applicable(
        firmware_elf: Path, qemu: str, capsys: pytest.CaptureFixture[str],
        policy: str) -> None:
    line = not_applicable_line(*run(capsys, CUTOFF, "--policy", policy, "--inject", BUG))
    assert "exists in: v6.9..v6.19" in line


def test_the_firmware_lists_it_for_v6_9_to_v6_19(firmware_elf: Path) -> None:
    assert bug_releases(firmware_elf, BUG) == "v6.9..v6.19"


#: v7.1's own injections about the same fallback and its cut-off
EXTRA = "fallback_extra_dsb_ish"
NO_RANGE_LIMIT = "cutoff_range_limit_no_range"
PUD_STRIDE = str(ROOT / "guests" / "scenarios" / "4k" / "flush-tlb-range-pud-stride.toml")


@pytest.mark.guest
def test_v7_1_extra_dsb_ish_is_issued_and_caught(
        firmware_elf: Path, qemu: str, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    assert guest_step_one(capsys, tmp_path, "v7.1", EXTRA) == TWO_DSB
    code, out = run(capsys, CUTOFF, "--policy", "v7.1", "--inject", EXTRA)
    assert code == cli.ExitCode.PASS and verdict_line(out).startswith("verdict: CAUGHT"), out
    code, out = run(capsys, CUTOFF, "--policy", "v6.19", "--inject", EXTRA)
    assert code == cli.ExitCode.NOT_APPLICABLE, out


@pytest.mark.guest
def test_v7_1_cutoff_without_range_ops_and_its_injection(
        firmware_elf: Path, qemu: str, capsys: pytest.CaptureFixture[str]) -> None:
    for policy in ("v6.19", "v7.1"):
        code, out = run(capsys, PUD_STRIDE, "--policy", policy, "--guest", "virt-a57")
        assert code == cli.ExitCode.PASS and verdict_line(out).startswith("verdict: PASS"), out
    assert "16 TLBI, 1 DSB ISH" in out      # v7.1: sixteen VALE1IS at PUD stride
    code, out = run(capsys, PUD_STRIDE, "--policy", "v7.1", "--guest", "virt-a57",
                    "--inject", NO_RANGE_LIMIT)
    assert code == cli.ExitCode.PASS and verdict_line(out).startswith("verdict: CAUGHT"), out
