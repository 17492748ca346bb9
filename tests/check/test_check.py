"""The checkers on hand-made inputs: each must catch the fault it exists for."""

from __future__ import annotations

import pytest

from shootdown.check.scenario import ScenarioResult, judge, run_verdict
from shootdown.check.sequence import check_sequence, render
from shootdown.errors import ProtocolError
from shootdown.insn import Dsb, Instruction, Isb, Tlbi
from shootdown.result import Verdict
from shootdown.trace.console import Record, crc32_hex, parse_console
from shootdown.trace.scenario import read_scenario

ASID = 42 << 48


def _records(*payloads: str) -> list[Record]:
    """Real protocol records (with seq and CRC) around the given payloads."""
    lines = ["BEGIN proto=1 fw=shootdown build_id=00 granule=4k version=t", *payloads]
    out = []
    for seq, body in enumerate(lines):
        head = f"SD1 {seq} {body}"
        out.append(f"{head} *{crc32_hex(head.encode())}")
    return parse_console(("\n".join(out) + "\n").encode())[1:]


def _flush(*xts: int) -> list[Instruction]:
    return [Dsb("ishst"), *[Tlbi("vale1is", ASID | x) for x in xts], Dsb("ish")]


def test_equal_sequences_pass() -> None:
    assert check_sequence({1: _flush(0x400)}, {1: _flush(0x400)}).ok


@pytest.mark.parametrize("observed, index", [
    ([Tlbi("vale1is", ASID | 0x400), Dsb("ish")], 0),              # DSB ISHST missing
    ([Dsb("ishst"), Tlbi("vale1is", ASID | 0x400)], 2),            # DSB ISH missing
    ([Dsb("ishst"), Tlbi("vae1is", ASID | 0x400), Dsb("ish")], 1),  # leaf vs non-leaf
    ([Dsb("ishst"), Tlbi("vale1is", 7 << 48 | 0x400), Dsb("ish")], 1),  # wrong ASID
    ([*_flush(0x400), Isb()], 3),                                  # extra ISB
])
def test_each_difference_is_a_divergence(observed: list[Instruction], index: int) -> None:
    result = check_sequence({1: _flush(0x400)}, {1: observed})
    assert not result.ok
    assert result.divergence is not None and result.divergence.index == index
    assert result.diff  # a diff for people


def test_render() -> None:
    assert render(Tlbi("vale1is", 0x002A000000000400)) == "tlbi vale1is, 0x002a000000000400"
    assert render(Tlbi("vmalle1is", None)) == "tlbi vmalle1is"
    assert render(Dsb("ishst")) == "dsb ishst"


def test_runs_are_expanded_with_kpti_copies() -> None:
    obs = read_scenario(_records(
        "SCN id=1 status=start", "STEP n=1", "DSB opt=ishst",
        f"TLBI op=vale1is xt={ASID | 0x400:#018x} n=2 inc=0x1 user=1", "DSB opt=ish",
        "PROBE step=1 cpu=0 unmapped=2 faulted=2 mapped=0 intact=0",
        "SCNEND id=1 tlbi=4 dsb=2 isb=0 probefail=0"))
    xts = [i.xt for i in obs.steps[1] if isinstance(i, Tlbi)]
    assert xts == [ASID | 0x400, ASID | 0x400 | 1 << 48, ASID | 0x401, ASID | 0x401 | 1 << 48]


def test_totals_that_contradict_the_listing_are_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="SCNEND says tlbi=3"):
        read_scenario(_records("SCN id=1 status=start", "STEP n=1",
                               f"TLBI op=vale1is xt={ASID:#018x}",
                               "SCNEND id=1 tlbi=3 dsb=0 isb=0 probefail=0"))


def _judge(records: list[Record], inject: str = "none", cpus: int = 1) -> ScenarioResult:
    return judge(scenario="s.toml", policy="v4.20", granule="4k", inject=inject,
                 expected={1: _flush(0x400)}, observed=read_scenario(records), cpus=cpus)


GOOD = ("SCN id=1 status=start", "STEP n=1", "DSB opt=ishst",
        f"TLBI op=vale1is xt={ASID | 0x400:#018x}", "DSB opt=ish",
        "PROBE step=1 cpu=0 unmapped=1 faulted=1 mapped=3 intact=3",
        "SCNEND id=1 tlbi=1 dsb=2 isb=0 probefail=0")


def test_judge_pass_and_injection_verdicts() -> None:
    assert _judge(_records(*GOOD)).verdict is Verdict.PASS
    passed = _judge(_records(*GOOD), inject="wrong_asid")
    assert passed.verdict is Verdict.PASS
    assert run_verdict([passed], "wrong_asid") is Verdict.MISSED


def test_stale_translation_is_a_probe_failure() -> None:
    stale = [g.replace("faulted=1", "faulted=0") for g in GOOD]
    stale.insert(-1, "PROBEFAIL step=1 cpu=0 addr=0x400000 expect=fault got=read")
    stale[-1] = stale[-1].replace("probefail=0", "probefail=1")
    result = _judge(_records(*stale))
    assert result.verdict is Verdict.FAIL
    assert any("stale" in line for line in result.detail)
    caught = _judge(_records(*stale), inject="skip_dsb_ish")
    assert caught.verdict is Verdict.CAUGHT
    assert run_verdict([caught], "skip_dsb_ish") is Verdict.CAUGHT


def test_a_cpu_that_did_not_probe_fails() -> None:
    result = _judge(_records(*GOOD), cpus=2)
    assert result.verdict is Verdict.FAIL
    assert "no probe from cpu 1" in result.reason


def test_skip_is_not_a_pass() -> None:
    result = _judge(_records("SKIP id=1 why=granule16k"))
    assert result.verdict is Verdict.SKIP
    assert run_verdict([result], "none") is Verdict.NOTHING_RAN
