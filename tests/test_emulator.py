"""Known QEMU defects (check/emulator.py): a probe failure that QEMU's own bug explains
is "emulator-limit", never FAIL; the sequence check still catches a wrong policy; and
``shootdown doctor`` shows the defects of each QEMU under test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shootdown.check.emulator import (
    ASID_IGNORED,
    LARGE_PAGE_FLUSH,
    RANGE_LENGTH_32BIT,
    blind_spots,
    explain_probes,
    range_lengths,
)
from shootdown.check.scenario import judge
from shootdown.insn import Dsb, Tlbi
from shootdown.result import Verdict
from shootdown.trace.scenario import ObservedScenario, ProbeFailure, ProbeSummary

ROOT = Path(__file__).resolve().parents[1]
EMULATOR = ROOT / "guests" / "emulator"
Q72, Q10 = (7, 2, 22), (10, 0, 2)


def rvale1is(base: int, num: int, scale: int, tg: int = 1, asid: int = 60) -> Tlbi:
    shift = {1: 12, 2: 14, 3: 16}[tg]
    return Tlbi("rvale1is", asid << 48 | tg << 46 | scale << 44 | num << 39 | base >> shift)


FOUR_G = rvale1is(0x100000000, 15, 3)    # 16 << 28 bytes
TWO_G = rvale1is(0x100000000, 7, 3)      # 8 << 28 bytes


def test_range_lengths_as_qemu_computes_them() -> None:
    assert range_lengths(FOUR_G.xt or 0, "4k") == (0x100000000, 1 << 32, 0)
    assert range_lengths(rvale1is(0x200000000, 31, 3).xt or 0, "4k") == (0x200000000, 1 << 33, 0)
    assert range_lengths(TWO_G.xt or 0, "4k") == (0x100000000, 1 << 31, 1 << 31)
    assert range_lengths(FOUR_G.xt or 0, "16k") is None  # TG says 4K: not this granule


def observed(addr: int = 0x1ffff8000, *, lost: bool = False,
             ins: tuple[Tlbi | Dsb, ...] = (Dsb("ishst"), FOUR_G, Dsb("ish"))) -> ObservedScenario:
    return ObservedScenario(
        scn_id=1, skipped=None, steps={1: ins},
        probes=(ProbeSummary(1, 0, 32, 31, 4 if lost else 0, 3 if lost else 0),
                ProbeSummary(1, 1, 32, 32, 0, 0)),
        probe_failures=(ProbeFailure(1, 0, addr, "fault", "read"),))


def test_stale_probe_inside_the_wrapped_range_is_explained() -> None:
    o = observed()
    why = explain_probes(Q72, "4k", o.steps, o)
    assert why is not None and why.defect is RANGE_LENGTH_32BIT and why.steps == (1,)
    assert "QEMU 7.2.22" in why.describe() and "4 GiB" in why.describe()


@pytest.mark.parametrize("case", ["outside the range", "no wrapping range TLBI",
                                  "mapped page lost", "KVM", "before 7.0", "16k"])
def test_what_the_defect_does_not_explain(case: str) -> None:
    o = {"outside the range": observed(addr=0x200001000),
         "no wrapping range TLBI": observed(ins=(Dsb("ishst"), TWO_G, Dsb("ish"))),
         "mapped page lost": observed(lost=True)}.get(case, observed())
    version = {"KVM": None, "before 7.0": (6, 2, 0)}.get(case, Q72)
    granule = "16k" if case == "16k" else "4k"
    assert explain_probes(version, granule, o.steps, o) is None


def test_judge_says_emulator_limit_only_when_the_sequence_is_right() -> None:
    o = observed()
    expected = {1: [Dsb("ishst"), FOUR_G, Dsb("ish")]}
    common = {"scenario": "s.toml", "policy": "v6.19", "granule": "4k", "expected": expected,
              "observed": o, "cpus": 2}
    r = judge(inject="none", emulator=Q10, **common)  # type: ignore[arg-type]
    assert r.verdict is Verdict.EMULATOR_LIMIT and "tlbi-range-length-32bit" in r.reason
    assert r.probes is not None and not r.probes.ok  # the probes are reported, not hidden
    assert judge(inject="none", emulator=None, **common).verdict is Verdict.FAIL  # type: ignore[arg-type]
    # A policy that issues something else (here: a 2 GiB range) is the target's failure.
    wrong = {**common, "expected": {1: [Dsb("ishst"), TWO_G, Dsb("ish")]}}
    assert judge(inject="none", emulator=Q10, **wrong).verdict is Verdict.FAIL  # type: ignore[arg-type]


def test_blind_spots() -> None:
    assert blind_spots(Q72, "16k") == [LARGE_PAGE_FLUSH, ASID_IGNORED]
    assert blind_spots(Q72, "4k") == [ASID_IGNORED]
    assert blind_spots(None, "16k") == []


def shootdown(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shootdown.cli", *args], capture_output=True,
                          text=True, timeout=120, check=False)


RANGES = [str(EMULATOR / f"tlbirange-{size}.toml") for size in ("2g", "4g", "8g")]


@pytest.mark.guest
def test_4g_and_8g_ranges_are_emulator_limits(each_qemu: str, firmware_elf: Path) -> None:
    """The demonstrations: 2 GiB passes, 4 and 8 GiB are QEMU's fault (exit 7), not FAIL."""
    out = shootdown("run", *RANGES, "--policy", "v6.19", "--guest", "virt-max")
    lines = {Path(line.split()[3]).stem: line.split()[0]
             for line in out.stdout.splitlines() if "tlbirange-" in line and "v6.19" in line}
    assert lines == {"tlbirange-2g": "PASS", "tlbirange-4g": "EMULATOR-LIMIT",
                     "tlbirange-8g": "EMULATOR-LIMIT"}, out.stdout + out.stderr
    assert out.returncode == 7, out.stdout + out.stderr
    assert "emulator limitation" in out.stdout


@pytest.mark.guest
def test_a_wrong_policy_on_the_4g_range_is_still_caught(qemu: str, firmware_elf: Path) -> None:
    out = shootdown("run", *RANGES, "--policy", "v6.19", "--guest", "virt-max",
                    "--inject", "end_off_by_one")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "EMULATOR-LIMIT" not in out.stdout
    assert sum(1 for line in out.stdout.splitlines() if line.lstrip().startswith("CAUGHT")) == 3


@pytest.mark.guest
def test_doctor_shows_the_known_defects(each_qemu: str, firmware_elf: Path) -> None:
    out = shootdown("doctor")
    assert out.returncode == 0, out.stdout + out.stderr
    from shootdown.guest.qemu import version_line

    assert version_line(each_qemu) in out.stdout
    for key in ("tlbi-range-length-32bit", "large-page-whole-flush", "asid-ignored"):
        line = next(line for line in out.stdout.splitlines() if line.strip().startswith(key))
        assert "PRESENT" in line, out.stdout
    assert "update it" not in out.stdout  # the table agrees with what this QEMU does
