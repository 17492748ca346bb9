"""`shootdown lint` on real aarch64 ELF files built at test time.

helpers.S holds one function per case (kernel barrier templates that must be
clean, and one broken rule per bad_* function); policy.c is shaped like the
firmware's teardown engine (out-of-line issue-and-log helpers, a run-time
DSB option, bug injections tested at the line they change).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from shootdown import cli
from shootdown.errors import ConfigError, FirmwareError
from shootdown.lint import lint_elf
from shootdown.lint.config import load

DATA = Path(__file__).parent / "data"
GCC = "aarch64-linux-gnu-gcc"

#: bad_* function -> the rules it must be reported with.
EXPECTED = {
    "bad_no_ishst": {"dsb-before-tlbi"},
    "bad_entry_no_ishst": {"dsb-before-tlbi"},
    "bad_dmb": {"dsb-before-tlbi"},
    "bad_no_ish": {"dsb-after-tlbi"},
    "bad_ishst_after": {"dsb-after-tlbi"},
    "bad_no_isb": {"isb-after-kernel-tlbi"},
    "bad_isb_early": {"isb-after-kernel-tlbi"},
    "bad_branch_skips_dsb": {"dsb-after-tlbi"},
    "bad_branch_skips_ishst": {"dsb-before-tlbi"},
    "bad_via_helpers": {"dsb-before-tlbi"},
    "bad_nsh_for_broadcast": {"dsb-before-tlbi"},
    # h_tlbi is called by the two *_via_helpers functions; its rule-1 finding
    # is judged in each caller's context (clean in good_via_helpers), but
    # its own entry path is checked standalone too, since it is a TLBI function
    # whose caller context is known: only bad_via_helpers must carry it.
}


def build(tmp_path: Path, source: str, *flags: str) -> Path:
    gcc = shutil.which(GCC)
    if gcc is None:
        pytest.skip(f"{GCC} not found: run scripts/setup (apt-get install gcc-aarch64-linux-gnu)")
    out = tmp_path / (Path(source).stem + ".elf")
    subprocess.run([gcc, "-nostdlib", "-static", "-ffreestanding", "-fno-pic", "-no-pie",
                    *flags, "-o", str(out), str(DATA / source)], check=True)
    return out


@pytest.fixture(scope="module")
def helpers_elf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("lint"), "helpers.S", "-Wl,-e,_start")


@pytest.fixture(scope="module")
def policy_elf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("lint"), "policy.c", "-O2")


def test_each_broken_rule_is_caught_and_good_templates_are_clean(helpers_elf: Path) -> None:
    report = lint_elf(helpers_elf)
    got: dict[str, set[str]] = {}
    for f in report.findings:
        got.setdefault(f.function, set()).add(f.rule)
    assert got == EXPECTED
    good = {fn for fn in report.tlbi_functions if fn.startswith("good_")}
    assert good == {"good_page", "good_range", "good_kernel", "good_frame", "good_dead_path",
                    "good_local"}
    assert not any(f.function.startswith("good_") for f in report.findings)


def test_finding_shows_site_context_and_origin(helpers_elf: Path) -> None:
    report = lint_elf(helpers_elf)
    (f,) = [f for f in report.findings if f.function == "bad_branch_skips_ishst"]
    assert f.instruction == "tlbi vae1is, x1"
    assert f.offset == 0xC
    assert any(line.startswith(">") and "tlbi vae1is" in line for line in f.context)
    assert f.origins == ("bad_branch_skips_ishst+0x0: store str xzr, [x0]",)
    (via,) = [f for f in report.findings if f.function == "bad_via_helpers"]
    assert via.via and via.via[0].startswith("h_tlbi+0x0")


def test_policy_era_419_accepts_helpers_relying_on_the_caller(helpers_elf: Path) -> None:
    report = lint_elf(helpers_elf, entry_ordered=True)
    assert not any(f.function == "bad_entry_no_ishst" for f in report.findings)
    assert any(f.function == "bad_no_ishst" for f in report.findings)


def test_engine_shape_clean_with_its_configuration(policy_elf: Path) -> None:
    config = load(DATA / "policy.toml")
    report = lint_elf(policy_elf, config)
    assert report.active == ()
    (suppressed,) = report.findings
    assert suppressed.function == "flush_page_nsh" and suppressed.suppressed


def test_engine_shape_without_configuration_flags_the_log_stores(policy_elf: Path) -> None:
    report = lint_elf(policy_elf)
    assert any("(to oplog)" in o for f in report.findings for o in f.origins)


@pytest.mark.parametrize(("bug", "rule", "function"), [
    (1, "dsb-before-tlbi", "flush_page"),
    (2, "dsb-after-tlbi", "flush_page"),
    (3, "isb-after-kernel-tlbi", "flush_kernel_range"),
])
def test_each_injection_path_is_caught(policy_elf: Path, bug: int, rule: str,
                                       function: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["lint", str(policy_elf), "--suppressions", str(DATA / "policy.toml"),
                     "--assume", f"inject_current={bug}", "--json"])
    assert code == cli.ExitCode.FAIL
    data = json.loads(capsys.readouterr().out)
    active = [(f["function"], f["rule"]) for f in data["findings"] if f["suppressed"] is None]
    assert active == [(function, rule)]


def test_cli_exit_codes(policy_elf: Path, helpers_elf: Path, tmp_path: Path,
                        capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["lint", str(policy_elf), "--suppressions", str(DATA / "policy.toml")]) == 0
    assert cli.main(["lint", str(helpers_elf)]) == 1
    out = capsys.readouterr().out
    assert "bad_no_isb+0xc [isb-after-kernel-tlbi]" in out
    text = tmp_path / "not.elf"
    text.write_text("hello\n")
    assert cli.main(["lint", str(text)]) == 2
    assert cli.main(["lint", str(tmp_path / "missing.elf")]) == 2
    stripped = tmp_path / "stripped.elf"
    subprocess.run(["aarch64-linux-gnu-strip", "-o", str(stripped), str(helpers_elf)], check=True)
    assert cli.main(["lint", str(stripped)]) == 2
    err = capsys.readouterr().err
    assert "not an ELF file" in err and "no function symbols" in err


def test_foreign_machine_is_bad_input(tmp_path: Path) -> None:
    host = shutil.which("true")
    assert host is not None
    with pytest.raises(FirmwareError, match="not EM_AARCH64"):
        lint_elf(host)


def test_relocatable_object(tmp_path: Path) -> None:
    gcc = shutil.which(GCC)
    if gcc is None:
        pytest.skip(f"{GCC} not found")
    obj = tmp_path / "helpers.o"
    subprocess.run([gcc, "-c", "-o", str(obj), str(DATA / "helpers.S")], check=True)
    report = lint_elf(obj)
    assert {f.function for f in report.findings} >= set(EXPECTED) - {"bad_via_helpers"}


@pytest.mark.parametrize(("text", "message"), [
    ('[[suppress]]\nfunction = "f"\nrule = "dsb-before-tlbi"\n', "suppress[0].reason"),
    ('[[suppress]]\nfunction = "f"\nrule = "nope"\nreason = "x"\n', "suppress[0].rule"),
    ('[[assume]]\nobject = "x"\nreason = "r"\n', "assume[0].value"),
    ('[[bookkeeping]]\nobjects = ["a"]\n', "bookkeeping[0].reason"),
    ("[other]\n", "other: unknown table"),
    ("not toml [", "not valid TOML"),
])
def test_bad_suppressions_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load(path)
