"""Honest run verdicts on real guests: not applicable, nothing ran, every skip reason,
several guests, and each bug's releases read from the firmware ELF."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_run import bug_releases, not_applicable_line, run, verdict_line
from shootdown import cli
from shootdown.bugs import Bug, read_bugs
from shootdown.check.scenario import judge, run_verdict
from shootdown.result import Verdict
from shootdown.trace.console import crc32_hex, parse_console
from shootdown.trace.scenario import read_scenario

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "guests" / "scenarios"
BASIC = str(ROOT / "docs" / "examples" / "basic.toml")



# ---- --inject on a release or scenario where the bug's code path does not exist ----

@pytest.mark.guest
@pytest.mark.parametrize(("scenario", "policy", "bug", "extra"), [
    # no rounding to undo before v5.2 (01d57485fcdb)
    (LIB / "4k" / "flush-tlb-range-pmd-stride.toml", "v4.20", "no_stride_round", ()),
    # no range operations without FEAT_TLBIRANGE
    (LIB / "4k" / "tlbirange-max-pages.toml", "v6.19", "range_num_overflow",
     ("--guest", "virt-max", "--cpu-features", "")),
    # the README's --gdb example: v4.20 flushes basic.toml's ranges as whole ASIDs
    (Path(BASIC), "v4.20", "end_off_by_one", ()),
])
def test_injection_without_its_code_path_is_not_applicable(
        firmware_elf: Path, qemu: str, capsys: pytest.CaptureFixture[str], scenario: Path,
        policy: str, bug: str, extra: tuple[str, ...]) -> None:
    line = not_applicable_line(*run(capsys, str(scenario), "--policy", policy, "--inject", bug,
                                    *extra))
    assert "blind" not in line
    releases = bug_releases(firmware_elf, bug)
    assert releases and f"exists in: {releases}" in line


@pytest.mark.guest
@pytest.mark.parametrize(("scenario", "policy", "bug", "extra"), [
    (LIB / "4k" / "flush-tlb-range-pmd-stride.toml", "v5.4", "no_stride_round", ()),
    (LIB / "4k" / "tlbirange-max-pages.toml", "v6.19", "range_num_overflow",
     ("--guest", "virt-max")),
    (LIB / "4k" / "flush-tlb-range-pages.toml", "v6.19", "end_off_by_one", ()),
    (Path(BASIC), "v4.20", "wrong_asid", ()),
])
def test_injection_where_it_applies_is_still_caught(
        firmware_elf: Path, qemu: str, capsys: pytest.CaptureFixture[str], scenario: Path,
        policy: str, bug: str, extra: tuple[str, ...]) -> None:
    code, out = run(capsys, str(scenario), "--policy", policy, "--inject", bug, *extra)
    assert code == cli.ExitCode.PASS, out
    assert verdict_line(out).startswith("verdict: CAUGHT"), out


@pytest.mark.guest
def test_the_guest_reports_how_often_the_injected_path_ran(
        firmware_elf: Path, qemu: str, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    """SCNEND injected= is 0 where the path is absent, positive where it ran."""
    code, out = run(capsys, str(LIB / "4k" / "flush-tlb-range-pmd-stride.toml"),
                    "--policy", "v4.20,v5.4", "--inject", "no_stride_round", "--json",
                    "--logdir", str(tmp_path))
    assert code == cli.ExitCode.PASS  # caught under v5.4; not applicable under v4.20
    data = json.loads(out)
    by_policy = {r["policy"]: r["verdict"] for r in data["results"]}
    assert by_policy == {"v4.20": "not-applicable", "v5.4": "caught"}
    logs = [Path(b["log"]).read_text() for b in data["boots"]]
    ends = [line for text in logs for line in text.splitlines() if " SCNEND " in line]
    hits = sorted(int(line.split("injected=")[1].split()[0]) for line in ends)
    assert hits[0] == 0 and hits[1] > 0, ends


# ---- the verdict logic on protocol records (pure) ----

def _records(*payloads: str) -> list:  # type: ignore[type-arg]
    lines = ["BEGIN proto=1 fw=shootdown build_id=00 granule=4k version=t", *payloads]
    out = []
    for seq, body in enumerate(lines):
        head = f"SD1 {seq} {body}"
        out.append(f"{head} *{crc32_hex(head.encode())}")
    return parse_console(("\n".join(out) + "\n").encode())[1:]


def _judged(injected: str, inject: str = "end_off_by_one") -> Verdict:
    records = _records("SCN id=1 status=start", "STEP n=1",
                       "PROBE step=1 cpu=0 unmapped=0 faulted=0 mapped=0 intact=0",
                       f"SCNEND id=1 tlbi=0 dsb=0 isb=0 probefail=0{injected}")
    return judge(scenario="s.toml", policy="v4.20", granule="4k", inject=inject,
                 expected={1: []}, observed=read_scenario(records), cpus=1).verdict


def test_a_scenario_that_never_ran_the_injected_path_is_not_applicable() -> None:
    assert _judged(" injected=0") is Verdict.NOT_APPLICABLE
    assert _judged(" injected=2") is Verdict.PASS  # ran, unnoticed: counts toward MISSED
    assert _judged("") is Verdict.PASS  # firmware that does not say: as before
    assert _judged(" injected=0", inject="none") is Verdict.PASS


def test_run_verdict_blames_the_checks_only_when_the_bug_ran() -> None:
    def results(*verdicts: Verdict) -> list:  # type: ignore[type-arg]
        from shootdown.check.scenario import ScenarioResult

        return [ScenarioResult(scenario="s", policy="v4.20", granule="4k", inject="b",
                               verdict=v, reason="", sequence=None, probes=None)
                for v in verdicts]

    na, ok, skip = Verdict.NOT_APPLICABLE, Verdict.PASS, Verdict.SKIP
    assert run_verdict(results(na, na, skip), "b") is Verdict.NOT_APPLICABLE
    assert run_verdict(results(na, ok), "b") is Verdict.MISSED
    assert run_verdict(results(na, ok, Verdict.CAUGHT), "b") is Verdict.CAUGHT
    assert run_verdict(results(skip, skip), "b") is Verdict.NOTHING_RAN
    assert run_verdict(results(skip, skip), "none") is Verdict.NOTHING_RAN
    assert run_verdict(results(), "none") is Verdict.NOTHING_RAN
    assert run_verdict(results(skip, ok), "none") is Verdict.PASS
    assert run_verdict(results(ok, Verdict.EMULATOR_LIMIT), "none") is Verdict.EMULATOR_LIMIT
    assert run_verdict(results(Verdict.FAIL, Verdict.CAUGHT), "b") is Verdict.FAIL


# ---- everything skipped; every skip reason ----

@pytest.mark.guest
def test_a_run_where_everything_is_skipped_is_nothing_ran(
        firmware_elf: Path, qemu: str, capsys: pytest.CaptureFixture[str]) -> None:
    # the A57 has no 16K granule and no FEAT_TTL: two different reasons
    code, out = run(capsys, str(LIB / "16k" / "gather-small.toml"),
                    str(LIB / "16k" / "pmd-blocks.toml"), str(LIB / "4k" / "ttl-gather.toml"),
                    "--guest", "virt-a57")
    assert code == cli.ExitCode.NOTHING_RAN and int(code) == 5, out
    assert verdict_line(out).startswith("verdict: NOTHING-RAN"), out
    skip_lines = [line.split(None, 2) for line in out.splitlines()
                  if line.startswith("  skip ")]
    assert [(n, "16k" in why, "ttl" in why) for _, n, why in skip_lines] == \
        [("2", True, False), ("1", False, True)], out


@pytest.mark.guest
def test_an_injection_on_a_run_where_everything_is_skipped_is_not_missed(
        firmware_elf: Path, qemu: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, str(LIB / "16k" / "gather-small.toml"), "--guest", "virt-a57",
                    "--inject", "end_off_by_one")
    assert code == cli.ExitCode.NOTHING_RAN, out
    assert "MISSED" not in out and "blind" not in out


@pytest.mark.guest
def test_every_skip_reason_is_printed_in_a_large_run(
        firmware_elf: Path, qemu: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Over SHOW_ALL_UP_TO jobs only the tally is listed: the reasons still all appear."""
    code, out = run(capsys, str(LIB / "4k"), str(LIB / "16k"), "--policy", "v6.19,v5.4",
                    "--guest", "virt-a57")
    assert code == cli.ExitCode.PASS, out
    reasons = "\n".join(line for line in out.splitlines() if line.startswith("  skip "))
    assert "16k granule" in reasons and "ttl" in reasons and "tlbirange" in reasons, out
    total = sum(int(line.split()[1]) for line in reasons.splitlines())
    assert f"{total} skip" in out.splitlines()[-1] or f"{total} skipped" in out


# ---- several guests ----

@pytest.mark.guest
def test_several_guests_run_every_job_each(firmware_elf: Path, qemu: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    files = [str(LIB / "16k" / "gather-small.toml"), str(LIB / "4k" / "ttl-gather.toml"),
             str(LIB / "4k" / "gather-small.toml")]
    code, out = run(capsys, *files, "--guest", "virt-a57,virt-max")
    assert code == cli.ExitCode.PASS, out
    assert "virt-a57: 3 job(s): 1 pass, 2 skip" in out, out
    assert "virt-max: 3 job(s): 3 pass" in out, out
    assert "on 2 guests" in out and "every job ran on at least one guest" in out
    code, out = run(capsys, *files, "--guest", "virt-a57,virt-max", "--json")
    data = json.loads(out)
    assert set(data["guests"]) == {"virt-a57", "virt-max"}
    assert data["guests"]["virt-a57"]["counts"] == {"pass": 1, "skip": 2}
    assert {(r["guest"], r["verdict"]) for r in data["results"]} >= {
        ("virt-max", "pass"), ("virt-a57", "skip")}


def test_guest_list_is_checked_before_anything_boots(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli.main(["run", BASIC, "--guest", "virt-a57,virt-a57"]) == cli.ExitCode.BAD_INPUT
    assert "named twice" in capsys.readouterr().err
    assert cli.main(["run", BASIC, "--guest", "virt-a57,nosuch"]) == cli.ExitCode.BAD_INPUT
    assert "unknown guest 'nosuch'" in capsys.readouterr().err
    assert cli.main(["run", "--guest", "virt-a57,virt-max"]) == cli.ExitCode.BAD_INPUT
    assert "need scenario files" in capsys.readouterr().err
    monkeypatch.setenv("SHOOTDOWN_GUEST", "virt-a57,,")  # the same syntax as --guest
    assert cli.main(["run", BASIC, "--guest", ","]) == cli.ExitCode.BAD_INPUT


@pytest.mark.guest
def test_shootdown_guest_takes_a_list_too(firmware_elf: Path, qemu: str,
                                          capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOOTDOWN_GUEST", "virt-a57,virt-max")
    code, out = run(capsys, str(LIB / "16k" / "gather-small.toml"))
    assert code == cli.ExitCode.PASS and "virt-max: 1 job(s): 1 pass" in out, out


# ---- shootdown bugs: releases from the ELF ----

def test_bugs_lists_releases_read_from_the_elf(firmware_elf: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    bugs = {b.name: b for b in read_bugs(firmware_elf)}
    assert bugs["no_stride_round"].releases == "v5.2+"
    assert bugs["table_free_no_tlbi"].releases == "v4.19"
    assert all(b.releases for b in bugs.values())
    assert cli.main(["bugs", "--firmware", str(firmware_elf)]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("range_num_overflow "))
    assert "v6.9+, tlbirange=1" in line
    assert cli.main(["bugs", "--firmware", str(firmware_elf), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"name": "no_stride_round", "releases": "v5.2+"}.items() <= data[4].items()


def test_read_bugs_still_reads_the_old_two_field_list(tmp_path: Path, firmware_elf: Path) -> None:
    """An ELF built before the releases field (name/description pairs, no marker)."""
    from elftools.elf.elffile import ELFFile

    raw = bytearray(firmware_elf.read_bytes())
    with firmware_elf.open("rb") as f:
        section = ELFFile(f).get_section_by_name(".shootdown.bugs")
        assert section is not None
        offset, size = section["sh_offset"], section["sh_size"]
    fields = bytes(raw[offset:offset + size]).rstrip(b"\0").split(b"\0")[1:]
    pairs = b"".join(fields[i] + b"\0" + fields[i + 2] + b"\0" for i in range(0, len(fields), 3))
    raw[offset:offset + size] = pairs.ljust(size, b"\0")
    old = tmp_path / "old.elf"
    old.write_bytes(bytes(raw))
    bugs = read_bugs(old)
    assert bugs[0] == Bug("skip_dsb_ishst", bugs[0].description)
    assert bugs[0].releases == "" and bugs[0].description.startswith("no DSB ISHST")


@pytest.mark.guest
def test_the_readme_main_command_runs_every_job_somewhere(
        firmware_elf: Path, qemu: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's main command: no job of the library is skipped on every guest."""
    import re
    import shlex

    readme = (ROOT / "README.md").read_text()
    command = re.search(r"scripts/setup && \.venv/bin/shootdown (run .*)", readme)
    assert command is not None
    argv = shlex.split(command.group(1))
    assert argv[0] == "run"
    argv = [str(ROOT / a) if a.startswith("guests/") else a for a in argv[1:]]
    code, out = run(capsys, *argv, "--json")
    assert code == cli.ExitCode.PASS, out
    data = json.loads(out)
    jobs: dict[tuple[str, str], set[str]] = {}
    for r in data["results"]:
        jobs.setdefault((r["scenario"], r["policy"]), set()).add(r["verdict"])
    assert len(jobs) >= 200
    nowhere = sorted(k for k, verdicts in jobs.items() if verdicts == {"skip"})
    assert not nowhere, nowhere
