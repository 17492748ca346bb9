"""Real-kernel bug injections (kernel/inject.py): the encodings and patching on words, and each
injection CAUGHT on Debian bookworm's 6.1 (four traced boots, about 30-40 s once cached)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shootdown.errors import ConfigError, InfraError, TraceError
from shootdown.kernel import inject
from shootdown.kernel.inject import (
    DSB_ISH,
    NOP,
    Patch,
    capstone_text,
    injection_verdict,
    kpti_copy_offsets,
    local_form,
    step_verdict,
)
from shootdown.kernel.locate import KernelFiles, locate
from shootdown.kernel.sites import Site
from shootdown.result import Verdict

# -- words (Arm ARM C6.2; TLBI = SYS #0, C8, Cm, #op2, Xt = 0xd5080000 | CRm << 8 | op2 << 5 | Rt)

#: (broadcast word, capstone text, local word, capstone text), computed by hand
TLBI_PAIRS = [
    (0xD508831F, "tlbi vmalle1is", 0xD508871F, "tlbi vmalle1"),        # CRm 3 -> 7, op2 0
    (0xD50883A5, "tlbi vale1is, x5", 0xD50887A5, "tlbi vale1, x5"),    # op2 5, Rt 5
    (0xD5088340, "tlbi aside1is, x0", 0xD5088740, "tlbi aside1, x0"),  # op2 2
    (0xD5088321, "tlbi vae1is, x1", 0xD5088721, "tlbi vae1, x1"),      # op2 1
    (0xD50882A8, "tlbi rvale1is, x8", 0xD50886A8, "tlbi rvale1, x8"),  # range: CRm 2 -> 6
    (0xD5088227, "tlbi rvae1is, x7", 0xD5088627, "tlbi rvae1, x7"),
    (0xD508812A, "tlbi vae1os, x10", 0xD508872A, "tlbi vae1, x10"),    # outer: CRm 1 -> 7
]


def test_nop_and_dsb_ish_are_the_architecture_s_words() -> None:
    assert NOP == 0xD503201F and capstone_text(NOP) == "nop"
    assert DSB_ISH == 0xD5033B9F and capstone_text(DSB_ISH) == "dsb ish"


@pytest.mark.parametrize(("word", "text", "local", "local_text"), TLBI_PAIRS)
def test_local_form_keeps_the_operation_and_register(word: int, text: str, local: int,
                                                     local_text: str) -> None:
    assert capstone_text(word) == text  # the hand-written words are what we think
    assert local_form(word) == local
    assert capstone_text(local) == local_text


@pytest.mark.parametrize("word", [NOP, DSB_ISH, 0xD50887A5, 0xD50886A8, 0xD50C83A5])
def test_local_form_refuses_what_is_not_a_broadcast_el1_tlbi(word: int) -> None:
    with pytest.raises(ValueError):
        local_form(word)


def _patch(offset: int, old: int, new: int) -> Patch:
    return Patch(offset, 0xFFFF800008000000 + offset, "tlb_flush", old, new,
                 capstone_text(old), capstone_text(new))


def test_apply_writes_the_new_words_and_leaves_the_input_alone() -> None:
    image = bytes(8) + DSB_ISH.to_bytes(4, "little") + (0xD50883A5).to_bytes(4, "little")
    patches = [_patch(8, DSB_ISH, NOP), _patch(12, 0xD50883A5, 0xD50887A5)]
    out = inject.apply(image, patches)
    assert out[8:12] == NOP.to_bytes(4, "little")
    assert out[12:16] == (0xD50887A5).to_bytes(4, "little")
    assert out[:8] == bytes(8) and image[8:12] == DSB_ISH.to_bytes(4, "little")


def test_apply_refuses_a_word_that_is_not_the_expected_one() -> None:
    with pytest.raises(ConfigError, match="holds 0x00000000, not 0xd5033b9f"):
        inject.apply(bytes(16), [_patch(8, DSB_ISH, NOP)])


def test_patched_sites_say_what_the_patched_words_now_are() -> None:
    sites = [Site(8, DSB_ISH, "dsb", "ish", 31, "dsb ish"),
             Site(12, 0xD50883A5, "tlbi", "vale1is", 5, "tlbi vale1is, x5"),
             Site(16, DSB_ISH, "dsb", "ish", 31, "dsb ish")]
    out = inject.patched_sites(sites, [_patch(8, DSB_ISH, NOP), _patch(12, 0xD50883A5,
                                                                         0xD50887A5)])
    assert [(s.offset, s.kind, s.op, s.rt) for s in out] == [
        (8, "nop", "", 31), (12, "tlbi", "vale1", 5), (16, "dsb", "ish", 31)]


def _code(*words: int) -> bytes:
    return b"".join(w.to_bytes(4, "little") for w in words)


#: __tlbi_user's shape: the kernel-ASID TLBI, a KPTI test, then the copy with bit 48 ORed in
KPTI_FUNCTION = [
    (0xD3503C00, "lsl x0, x0, #0x30"),             # 0x00 asid << 48
    (0xD5088340, "tlbi aside1is, x0"),             # 0x04 the kernel ASID's
    (0xB6A00061, "tbz x1, #0x34, #0xc"),           # 0x08 no KPTI: skip the copy (+12: 0x14)
    (0xB2500000, "orr x0, x0, #0x1000000000000"),  # 0x0c | USER_ASID_FLAG
    (0xD5088340, "tlbi aside1is, x0"),             # 0x10 the copy
    (0xD2C80008, "mov x8, #0x400000000000"),       # 0x14 (branch target: merge)
    (0xF2E00028, "movk x8, #1, lsl #48"),          # 0x18 a range operand's TG | USER_ASID_FLAG
    (0xAA0800E7, "orr x7, x7, x8"),                # 0x1c
    (0xD5088227, "tlbi rvae1is, x7"),              # 0x20 the range copy
    (0xD3503CE7, "lsl x7, x7, #0x30"),             # 0x24 x7 overwritten: no flag
    (0xD5088227, "tlbi rvae1is, x7"),              # 0x28 not a copy
    (DSB_ISH, "dsb ish"),                          # 0x2c
    (0xD65F03C0, "ret"),                           # 0x30
]


def test_kpti_copies_are_found_by_data_flow() -> None:
    for word, text in KPTI_FUNCTION:
        assert capstone_text(word) == text, hex(word)
    code = _code(*(w for w, _ in KPTI_FUNCTION))
    assert kpti_copy_offsets(code, 0x1000) == {0x1010, 0x1020}


#: v6.12's shape: the copies sit behind a NOP the kernel turns into a branch at boot
#: (alternative_has_cap_unlikely), with USER_ASID_FLAG hoisted into a register
PATCHED_BRANCH_FUNCTION = [
    (0xD2C80012, "mov x18, #0x400000000000"),      # 0x00 TG | USER_ASID_FLAG, hoisted
    (0xF2E00032, "movk x18, #1, lsl #48"),         # 0x04
    (0xD50882A5, "tlbi rvale1is, x5"),             # 0x08 the kernel ASID's
    (NOP, "nop"),                                  # 0x0c b 0x14 once KPTI is detected
    (0xD65F03C0, "ret"),                           # 0x10
    (0xAA1200A5, "orr x5, x5, x18"),               # 0x14 no branch of the Image gets here
    (0xD50882A5, "tlbi rvale1is, x5"),             # 0x18 the copy
    (0xB2500084, "orr x4, x4, #0x1000000000000"),  # 0x1c
    (0xD5088324, "tlbi vae1is, x4"),               # 0x20 the copy
    (0xD65F03C0, "ret"),                           # 0x24
    (0xAA0400E6, "orr x6, x7, x4"),                # 0x28 unreached again: x4's flag is not
    (0xD5088326, "tlbi vae1is, x6"),               # 0x2c carried here: not a copy
    (0xD65F03C0, "ret"),                           # 0x30
]


def test_kpti_copies_behind_a_boot_patched_branch_are_found() -> None:
    for word, text in PATCHED_BRANCH_FUNCTION:
        assert capstone_text(word) == text, hex(word)
    code = _code(*(w for w, _ in PATCHED_BRANCH_FUNCTION))
    assert kpti_copy_offsets(code, 0) == {0x18, 0x20}


def test_verdicts_are_the_firmware_s() -> None:
    assert step_verdict(True, True) is Verdict.CAUGHT
    assert step_verdict(True, False) is Verdict.MISSED
    assert step_verdict(False, False) is Verdict.NOT_APPLICABLE
    assert step_verdict(False, True) is Verdict.FAIL
    assert injection_verdict([Verdict.MISSED, Verdict.CAUGHT]) is Verdict.CAUGHT
    assert injection_verdict([Verdict.NOT_APPLICABLE, Verdict.MISSED]) is Verdict.MISSED
    assert injection_verdict([Verdict.NOT_APPLICABLE] * 2) is Verdict.NOT_APPLICABLE
    assert injection_verdict([Verdict.CAUGHT, Verdict.FAIL]) is Verdict.FAIL
    assert injection_verdict([]) is Verdict.NOT_APPLICABLE


def test_the_read_back_asks_another_vcpu_when_one_cannot_see_the_kernel() -> None:
    """The monitor translates through one vCPU with its permissions: a vCPU at EL0 (the
    workload, or KPTI's trampoline TTBR1) answers 'Cannot access memory' (CI saw it on cpu 0
    under load); the word is read through the vCPU that can, and a word nobody can read is
    a TraceError naming the address, not a wait forever."""
    address = 0xFFFF80000803CF84
    asked: list[int | None] = []

    def monitor(command: str, cpu: int | None) -> str:
        asked.append(cpu)
        assert command == f"x /1wx {address:#x}"
        if cpu == 0:
            return f"{address:x}: Cannot access memory\r\n"
        return f"{address:016x}: 0xd503201f\r\n"

    assert inject.read_word(monitor, address, cpus=2) == 0xD503201F
    assert asked == [0, 1]

    def blind(command: str, cpu: int | None) -> str:
        return f"{address:x}: Cannot access memory\r\n"

    with pytest.raises(TraceError, match=f"{address:#x}.*any of 2 vCPUs"):
        inject.read_word(blind, address, cpus=2, deadline_s=0.1)


def test_an_unknown_bug_is_bad_input_before_any_boot(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "shootdown.cli", "kernel", "run", "--inject",
                           "no_such_bug", "--log", str(tmp_path / "log")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "unknown real-kernel bug 'no_such_bug'" in done.stderr
    assert not (tmp_path / "log").exists()


def test_bugs_kernel_lists_every_injection() -> None:
    done = subprocess.run([sys.executable, "-m", "shootdown.cli", "bugs", "--kernel", "--json"],
                          capture_output=True, text=True, timeout=60, check=True)
    listed = json.loads(done.stdout)
    assert [b["name"] for b in listed] == [b.name for b in inject.KERNEL_BUGS]
    assert all(b["patches"] and b["caught_by"] for b in listed)


# -- on the real kernel ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bookworm(qemu: str) -> KernelFiles:
    try:
        return locate("debian:bookworm")
    except InfraError as exc:
        pytest.skip(f"Debian's bookworm kernel is not cached and cannot be fetched: {exc}")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def runs(bookworm: KernelFiles, tmp_path_factory: pytest.TempPathFactory
         ) -> dict[str, tuple[int, dict[str, Any]]]:
    """One traced boot per (bug, kpti); the cached Image must be the same after all of them."""
    before = _sha256(bookworm.image)
    out = {}
    for key, args in {"no_dsb_ish": ["--inject", "kernel_no_dsb_ish"],
                      "local_tlbi+kpti": ["--kpti", "--inject", "kernel_local_tlbi"],
                      "no_kpti_copy+kpti": ["--kpti", "--inject", "kernel_no_kpti_copy"],
                      "no_kpti_copy": ["--inject", "kernel_no_kpti_copy"]}.items():
        tmp = tmp_path_factory.mktemp("inject")
        done = subprocess.run(
            [sys.executable, "-m", "shootdown.cli", "kernel", "run", "--json",
             "--log", str(tmp / "console.log"), *args],
            capture_output=True, text=True, timeout=240, check=False)
        assert done.stdout.strip(), done.stderr
        out[key] = (done.returncode, json.loads(done.stdout))
    assert _sha256(bookworm.image) == before
    return out


def _patched(run: dict[str, Any]) -> set[int]:
    return {p["address"] for p in run["inject"]["patches"]}


def _checks(step: dict[str, Any]) -> dict[str, str]:
    return {c["name"]: c["status"] for c in step["checks"]}


@pytest.mark.guest
def test_no_dsb_ish_is_caught_and_the_trace_shows_the_nop(
        bookworm: KernelFiles, runs: dict[str, tuple[int, dict[str, Any]]]) -> None:
    code, run = runs["no_dsb_ish"]
    assert (code, run["verdict"]) == (0, "caught")
    booted = run["argv"][run["argv"].index("-kernel") + 1]
    assert booted == run["inject"]["image"] != str(bookworm.image)
    assert not Path(booted).exists()  # the private copy went with the run
    for step in run["steps"]:
        ops = [(o["kind"], o["op"]) for o in step["teardown"]]
        assert ("dsb", "ish") not in ops
        assert any(o["kind"] == "nop" and o["pc"] in _patched(run) for o in step["teardown"])
        assert step["verdict"] == "caught" and _checks(step)["coverage"] == "fail"


@pytest.mark.guest
def test_local_tlbi_is_caught_and_every_traced_tlbi_is_local(
        runs: dict[str, tuple[int, dict[str, Any]]]) -> None:
    code, run = runs["local_tlbi+kpti"]
    assert (code, run["verdict"], run["kpti"]) == (0, "caught", True)
    for step in run["steps"]:
        tlbis = [o for o in step["teardown"] if o["kind"] == "tlbi"]
        assert tlbis and all(not o["op"].endswith("is") and o["pc"] in _patched(run)
                             for o in tlbis)
        assert _checks(step)["coverage"] == "fail" and _checks(step)["kpti"] == "fail"


@pytest.mark.guest
def test_the_kpti_copies_found_statically_are_the_traced_user_asid_tlbis(
        bookworm: KernelFiles, runs: dict[str, tuple[int, dict[str, Any]]]) -> None:
    """Cross-check of the data-flow pass against the trace: in the local-TLBI run the copies
    still run (locally), each with the user ASID (odd) and nothing else at those sites."""
    _, run = runs["local_tlbi+kpti"]
    _, copy_run = runs["no_kpti_copy+kpti"]
    copies = _patched(copy_run)
    traced = [o for s in run["steps"] for o in s["teardown"] if o["kind"] == "tlbi"]
    user = {o["pc"] for o in traced if (o["xt"] >> 48) & 1}
    kernel = {o["pc"] for o in traced if not (o["xt"] >> 48) & 1}
    assert user and kernel
    assert user <= copies and not kernel & copies


@pytest.mark.guest
def test_no_kpti_copy_is_caught_by_the_kpti_check(
        runs: dict[str, tuple[int, dict[str, Any]]]) -> None:
    code, run = runs["no_kpti_copy+kpti"]
    assert (code, run["verdict"]) == (0, "caught")
    for step in run["steps"]:
        assert _checks(step)["coverage"] == "pass" and _checks(step)["kpti"] == "fail"
        assert not any(o["kind"] == "tlbi" and (o["xt"] >> 48) & 1 for o in step["teardown"])
        assert any(o["kind"] == "nop" and o["pc"] in _patched(run) for o in step["teardown"])


@pytest.mark.guest
def test_no_kpti_copy_without_kpti_is_not_applicable(
        runs: dict[str, tuple[int, dict[str, Any]]]) -> None:
    code, run = runs["no_kpti_copy"]
    assert (code, run["verdict"], run["kpti"]) == (6, "not-applicable", False)
    assert {s["verdict"] for s in run["steps"]} == {"not-applicable"}


def test_an_injection_cannot_be_traced_by_the_plugin(bookworm: KernelFiles,
                                                     tmp_path: Path) -> None:
    """The plugin instruments maintenance instructions only: it would never see the
    NOPs an injection writes, so every step would read FAIL instead of CAUGHT.
    Without a method an injection run single-steps; asking for the plugin is bad input."""
    from shootdown.errors import ConfigError
    from shootdown.kernel.boot import MachineSpec
    from shootdown.kernel.run import run_kernel

    with pytest.raises(ConfigError, match="--inject with --trace-method plugin"):
        run_kernel(bookworm, spec=MachineSpec(), log_path=str(tmp_path / "c.log"),
                   inject="kernel_no_dsb_ish", trace_method="plugin")
