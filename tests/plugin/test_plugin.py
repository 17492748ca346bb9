"""The shootdown pytest plugin, driven through real pytest runs (pytester) on real guests."""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "matrix" / "data"
EXAMPLE = DATA / "munmap-2m.toml"

pytestmark = pytest.mark.guest
pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def _machine(firmware_elf: Path, qemu: str, no_leftover_qemu: None) -> None:
    """Real firmware and QEMU; no QEMU left behind by any inner run."""


def test_import_is_cheap() -> None:
    """Importing the plugin (every pytest run does) pulls in none of the machinery."""
    code = ("import sys, shootdown.pytest_plugin; "
            "heavy = [m for m in ('shootdown.guest.machine', 'shootdown.model.expected', "
            "'shootdown.session', 'pexpect', 'matplotlib', 'rich', 'elftools') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


def test_guest_fixture_run_scenario_and_golden_model(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(f"""
        def test_clean(guest, run_scenario, golden_model):
            assert guest.cpu is not None and guest.granule == "4k"
            run = run_scenario({str(EXAMPLE)!r}, policy="v4.20")
            assert run.ok and str(run.verdict) == "pass"
            assert run.observed.steps[1] and run.expected[1]
            assert run.probes is not None and run.probes.ok
            model = golden_model.expected({str(EXAMPLE)!r}, "v4.20")
            assert [r.instructions for r in model][0] == run.expected[1]

        def test_injected_is_caught(run_scenario):
            run = run_scenario({str(EXAMPLE)!r}, policy="v6.19", inject="skip_dsb_ish")
            assert str(run.verdict) == "caught"
    """)
    result = pytester.runpytest("-p", "no:cacheprovider", "--shootdown-guest", "virt-a72")
    result.assert_outcomes(passed=2)


def test_failure_shows_diff_and_log_path(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(f"""
        def test_expects_a_pass(run_scenario):
            run = run_scenario({str(EXAMPLE)!r}, policy="v6.19", inject="skip_dsb_ish")
            assert run.ok
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "shootdown: munmap-2m.toml" in out
    assert "caught: sequence differs from the model at step 1" in out
    assert "--- expected" in out or "+++ observed" in out or "expected" in out
    logs = [line.split("console log: ", 1)[1].strip() for line in out.splitlines()
            if "console log: " in line]
    assert logs and all(Path(p).is_file() for p in logs)


def test_a_hung_guest_reports_its_log(pytester: pytest.Pytester,
                                      make_guest: Callable[..., Path]) -> None:
    gdir = make_guest(pytester.path / "guests", "quick",
                      str(ROOT / "firmware" / "build" / "shootdown-{granule}.elf"), idle=1).parent
    pytester.makepyfile("""
        def test_hang(guest):
            guest.command("DEBUG hang")
    """)
    result = pytester.runpytest("-p", "no:cacheprovider", "--shootdown-guest", "quick",
                                f"--shootdown-guests-dir={gdir}")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "shootdown call: GuestTimeout" in out and "no console output for 1 s" in out
    assert re.search(r"console log: \S+\.console\.log", out)


def test_capability_marker_reads_the_guest(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.shootdown_needs(granule="16k")
        def test_16k(guest):
            assert guest.granule == "16k"

        @pytest.mark.shootdown_needs(features=["tlbirange", "ttl"], smp=2)
        def test_range(guest):
            pass

        @pytest.mark.shootdown_needs(smp=8)
        def test_eight_cpus(guest):
            pass
    """)
    result = pytester.runpytest("-p", "no:cacheprovider", "-rs",
                                "--shootdown-guest", "virt-a57,virt-max")
    result.assert_outcomes(passed=2, skipped=4)
    out = result.stdout.str()
    assert "guest virt-a57 (MIDR 0x411fd070) needs the 16k granule (ID_AA64MMFR0_EL1" in out
    assert "needs CPU feature tlbirange (ID_AA64ISAR0_EL1.TLB says no)" in out
    assert "needs 8 CPUs, the guest brought up 2" in out


def test_junit_properties(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(f"""
        def test_one(run_scenario):
            assert run_scenario({str(EXAMPLE)!r}).ok
    """)
    xml = pytester.path / "junit.xml"
    result = pytester.runpytest("-p", "no:cacheprovider", f"--junitxml={xml}",
                                "--shootdown-policy", "v5.4")
    result.assert_outcomes(passed=1)
    props = {p.get("name"): p.get("value") for p in ET.parse(xml).iter("property")}
    assert props["guest"] == "virt-a57" and props["policy"] == "v5.4"
    assert len(props["firmware_build_id"] or "") == 40
    assert (props["qemu_version"] or "").startswith("QEMU emulator version")
    assert Path(props["console_log"] or "/nonexistent").is_file()


def test_scenario_files_are_items(pytester: pytest.Pytester) -> None:
    """Scenario TOML under a scenarios/ folder: one item per policy; guest definitions not."""
    scen = pytester.mkdir("scenarios")
    (scen / "a.toml").write_text(EXAMPLE.read_text())
    (scen / "b.toml").write_text((DATA / "thp-kpti.toml").read_text())
    (scen / "virt-a57.toml").write_text((ROOT / "guests" / "virt-a57.toml").read_text())
    (scen / "notes.toml").write_text('title = "not a scenario"\n')
    result = pytester.runpytest("-p", "no:cacheprovider", "-v", "scenarios",
                                "--shootdown-policy", "v4.19,v6.19")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*a.toml::v4.19 PASSED*", "*b.toml::v6.19 PASSED*"])


def test_xdist_and_several_guests(pytester: pytest.Pytester) -> None:
    """`pytest -n 2` with two guests: the guest fixture is parametrised, items spread."""
    scen = pytester.mkdir("scenarios")
    (scen / "a.toml").write_text(EXAMPLE.read_text())
    pytester.makepyfile("""
        def test_boot(guest):
            assert guest.cpu.number("smp") == 2
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", "-v",
                                           "--shootdown-guest", "virt-a57,virt-max", ".",
                                           "scenarios")
    result.assert_outcomes(passed=4)
    for name in ("virt-a57", "virt-max"):
        result.stdout.fnmatch_lines([f"*PASSED*test_boot?{name}?*"])


def test_trace_checks_the_report_against_qemu(pytester: pytest.Pytester) -> None:
    """--shootdown-trace: each scenario in its own boot, QEMU's execution log compared."""
    scen = pytester.mkdir("scenarios")
    (scen / "a.toml").write_text(EXAMPLE.read_text())
    pytester.makepyfile(f"""
        def test_traced(run_scenario):
            run = run_scenario({str(EXAMPLE)!r}, policy="v4.20")
            assert run.ok and run.observed is None
            assert run.log_path.endswith(".console.log")
    """)
    logdir = pytester.path / "logs"
    result = pytester.runpytest("-p", "no:cacheprovider", "--shootdown-trace",
                                f"--shootdown-logdir={logdir}", ".", "scenarios")
    result.assert_outcomes(passed=2)
    logs = list(logdir.glob("trace-*.exec.log"))
    assert len(logs) == 2 and all(p.stat().st_size > 0 for p in logs)


def test_matrix_file_as_plain_tests(pytester: pytest.Pytester) -> None:
    """`pytest MATRIX.toml`: one item per job, logs in the plugin's log directory."""
    matrix = pytester.path / "m.toml"
    matrix.write_text(f"""
name = "m"
[[set]]
name = "a"
guests = ["virt-a57"]
granules = ["4k"]
policies = ["v4.19", "v6.19"]
scenarios = ["{DATA}"]
inject = ["none", "skip_dsb_ish"]
""")
    logdir = pytester.path / "logs"
    result = pytester.runpytest("-p", "no:cacheprovider", "-v", str(matrix),
                                f"--shootdown-logdir={logdir}")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*m.toml::a-virt-a57-4k-v6.19-skip_dsb_ish-* PASSED*"])
    assert len(list(logdir.glob("*.console.log"))) == 4
    assert not list(pytester.path.glob("*.console.log"))


def test_a_scenario_outside_the_contract_is_bad_input_not_a_miss(
        pytester: pytest.Pytester) -> None:
    """A stride no kernel caller passes: as `run` and `matrix` refuse it (exit 2), the
    plugin's items and run_scenario fail with that one line, before any guest boots,
    instead of reporting a missed invalidation on every release."""
    scen = pytester.mkdir("scenarios")
    text = ('granule = "4k"\n[[step]]\nkind = "flush_tlb_range"\nstart = 0x40000000\n'
            "end = 0x40800000\nstride = 0x10000\n")
    (scen / "odd.toml").write_text(text)
    pytester.makepyfile(f"""
        def test_fixture(run_scenario):
            run_scenario({str(scen / "odd.toml")!r}, policy="v6.19")
    """)
    result = pytester.runpytest("-p", "no:cacheprovider", "-v", "scenarios",
                                "test_a_scenario_outside_the_contract_is_bad_input_not_a_miss.py",
                                "--shootdown-policy", "v6.19")
    result.assert_outcomes(failed=2)
    out = result.stdout.str()
    assert out.count("step 1: stride: ") >= 2 and "__flush_tlb_range" in out
    assert "probe-" not in out and "console log" not in out  # nothing booted
