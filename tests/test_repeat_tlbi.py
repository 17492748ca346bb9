"""ARM64_WORKAROUND_REPEAT_TLBI on real guests: the firmware issues the erratum's sequences.

On CPUs with the erratum (Cortex-A76 1286807, Falkor E1009, ...) Linux repeats
TLB maintenance. Up to v7.0 the ``__TLBI_0``/``__TLBI_1`` ALTERNATIVE of
``arch/arm64/include/asm/tlbflush.h`` follows every TLBI with ``DSB ISH`` and
the same TLBI again; from v7.1 ("arm64: tlb: Optimize
ARM64_WORKAROUND_REPEAT_TLBI") each completing ``DSB ISH`` is followed by
``TLBI VALE1IS, XZR`` and another ``DSB ISH`` (``__tlbi_sync_s1ish``).

The scenario is the library's cut-off one (4K, ASID 34): step 1 is a raw
``flush_tlb_range`` of 512 pages (past the cut-off from v5.0: ``flush_tlb_mm``),
step 2 one of 1025 pages (past it in every release). The expected streams are
written out here from the kernel's rules, not produced by the model; the guest's
own report (its console) must equal them, and the full checks must pass.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_run import bug_releases, not_applicable_line, run, verdict_line
from shootdown import cli
from shootdown.elfsyms import ElfImage
from shootdown.insn import USER_ASID_FLAG, Dsb, Instruction, Tlbi
from shootdown.trace.console import parse_console
from shootdown.trace.decode import encode_tlbi
from shootdown.trace.qemu_log import Executed, MaintOp, decode_executed, expand_report
from shootdown.trace.scenario import read_scenario

ROOT = Path(__file__).resolve().parents[1]
CUTOFF = str(ROOT / "guests" / "scenarios" / "4k" / "flush-tlb-range-cutoff.toml")
LIBRARY_SCENARIO = str(ROOT / "guests" / "scenarios" / "4k" / "repeat-tlbi.toml")
BUG = "repeat_tlbi_missing"

#: TLBI ASIDE1IS for the scenario's ASID 34, and its KPTI copy (user ASID 35)
ASIDE1IS = Tlbi("aside1is", 34 << 48)
ASIDE1IS_USER = Tlbi("aside1is", 34 << 48 | USER_ASID_FLAG)
#: TLBI VALE1IS, XZR: the v7.1 erratum sync (no operand register)
VALE1IS_XZR = Tlbi("vale1is", None)
ISHST, ISH = Dsb("ishst"), Dsb("ish")

#: v6.19 (old form): flush_tlb_mm's TLBI repeated after a DSB ISH, its DSB ISH,
#: then __flush_tlb_range's own DSB ISH after _nosync (v6.9..v6.19)
V6_19_FALLBACK: list[Instruction] = [ISHST, ASIDE1IS, ISH, ASIDE1IS, ISH, ISH]
#: v6.19 under KPTI: the user copy is a TLBI of its own, repeated too
V6_19_FALLBACK_KPTI: list[Instruction] = [ISHST, ASIDE1IS, ISH, ASIDE1IS,
                                          ASIDE1IS_USER, ISH, ASIDE1IS_USER, ISH, ISH]
#: v4.19 (old form), step 2 (1025 pages > 1024): flush_tlb_mm alone
V4_19_FALLBACK: list[Instruction] = [ISHST, ASIDE1IS, ISH, ASIDE1IS, ISH]
#: v7.1 (new form): flush_tlb_mm's completion followed by TLBI VALE1IS, XZR; DSB ISH,
#: and __do_flush_tlb_range returns (no second completion)
V7_1_FALLBACK: list[Instruction] = [ISHST, ASIDE1IS, ISH, VALE1IS_XZR, ISH]
#: without the erratum (any release from v7.1; v6.19 has one more DSB ISH)
PLAIN_V7_1: list[Instruction] = [ISHST, ASIDE1IS, ISH]



def guest_steps(capsys: pytest.CaptureFixture[str], tmp_path: Path, policy: str,
                *extra: str) -> dict[int, list[Instruction]]:
    """What the guest itself reported per step (its console, not the check)."""
    code, out = run(capsys, CUTOFF, "--policy", policy, "--json", "--logdir", str(tmp_path),
                    *extra)
    assert code in (cli.ExitCode.PASS, cli.ExitCode.FAIL), out
    logs = [Path(b["log"]) for b in json.loads(out)["boots"]]
    assert len(logs) == 1, logs
    records = [r for r in parse_console(logs[0].read_bytes())
               if r.tag not in ("BEGIN", "CPU", "MMU", "READY", "END")]
    return {n: list(ops) for n, ops in read_scenario(records).steps.items()}


@pytest.mark.guest
@pytest.mark.parametrize(("policy", "step", "expected"), [
    ("v4.19", 2, V4_19_FALLBACK),
    ("v6.19", 1, V6_19_FALLBACK),
    ("v6.19", 2, V6_19_FALLBACK),
    ("v7.1", 1, V7_1_FALLBACK),
    ("v7.1", 2, V7_1_FALLBACK),
])
def test_the_guest_issues_the_erratum_sequence_of_its_release(
        firmware_elf: Path, qemu: str, capsys: pytest.CaptureFixture[str], tmp_path: Path,
        policy: str, step: int, expected: list[Instruction]) -> None:
    steps = guest_steps(capsys, tmp_path, policy, "--cpu-features", "repeat_tlbi")
    assert steps[step] == expected


@pytest.mark.guest
def test_the_kpti_copy_is_repeated_too_before_v7_1(
        firmware_elf: Path, qemu: str, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    steps = guest_steps(capsys, tmp_path, "v6.19", "--cpu-features", "repeat_tlbi",
                        "--kpti")
    assert steps[1] == V6_19_FALLBACK_KPTI


@pytest.mark.guest
def test_without_the_feature_nothing_is_repeated(
        firmware_elf: Path, qemu: str, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    assert guest_steps(capsys, tmp_path, "v7.1")[1] == PLAIN_V7_1


@pytest.mark.guest
def test_the_injection_drops_the_repeat(
        firmware_elf: Path, qemu: str, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    steps = guest_steps(capsys, tmp_path, "v7.1", "--cpu-features", "repeat_tlbi",
                        "--inject", BUG)
    assert steps[1] == PLAIN_V7_1


@pytest.mark.guest
@pytest.mark.parametrize("scenario", [CUTOFF, LIBRARY_SCENARIO])
def test_the_runs_pass_against_the_model_and_the_trace(
        firmware_elf: Path, qemu: str, capsys: pytest.CaptureFixture[str],
        scenario: str) -> None:
    code, out = run(capsys, scenario, "--policy", "v4.19,v6.19,v7.1",
                    "--cpu-features", "repeat_tlbi", "--trace")
    assert code == cli.ExitCode.PASS, out
    assert verdict_line(out).startswith("verdict: PASS"), out


@pytest.mark.guest
@pytest.mark.parametrize("policy", ["v6.19", "v7.1"])
def test_the_checks_catch_the_missing_repeat(
        firmware_elf: Path, qemu: str, capsys: pytest.CaptureFixture[str],
        policy: str) -> None:
    code, out = run(capsys, CUTOFF, "--policy", policy, "--cpu-features", "repeat_tlbi",
                    "--inject", BUG)
    assert code == cli.ExitCode.PASS, out
    assert verdict_line(out).startswith("verdict: CAUGHT"), out


@pytest.mark.guest
def test_without_the_feature_the_injection_is_not_applicable(
        firmware_elf: Path, qemu: str, capsys: pytest.CaptureFixture[str]) -> None:
    line = not_applicable_line(*run(capsys, CUTOFF, "--policy", "v6.19,v7.1", "--inject", BUG))
    assert "exists in: every release, repeat_tlbi=1" in line


def test_the_firmware_lists_the_injection(firmware_elf: Path) -> None:
    assert bug_releases(firmware_elf, BUG) == "every release, repeat_tlbi=1"


def test_the_trace_reads_tlbi_xzr_as_no_operand(firmware_elf: Path) -> None:
    """The execution trace and the report agree on ``TLBI VALE1IS, XZR``: no operand."""
    image = ElfImage(firmware_elf)
    stub = image.get_function("maint_tlbi_vale1is_xzr")
    assert image.word_at(stub.address) == encode_tlbi(0, 3, 5, 31)
    executed = Executed(cpu=0, pc=stub.address, regs=[0x1234] * 31, line=1)
    traced = list(decode_executed(image, [executed]))
    reported = expand_report([("TLBI", {"op": "vale1is"})])
    assert [op.key() for op in traced] == [op.key() for op in reported] == [
        MaintOp("TLBI", "vale1is", None).key()]
