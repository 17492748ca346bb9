"""Kernel jobs of the matrix (a ``[[set]]`` with ``kernels``): the file, and real runs of
Debian bookworm's 6.1 kernel through ``shootdown matrix`` (a clean job passes, an injected
one is caught, a job that runs past its timeout is infra, never a pass) into the reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from shootdown.errors import ConfigError, InfraError
from shootdown.matrix.results import iter_records
from shootdown.matrix.spec import job_label, load_matrix
from shootdown.report.data import grid_guest

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "guests" / "kernel"


def write(tmp_path: Path, body: str, head: str = "job_timeout = 240\n") -> Path:
    path = tmp_path / "kernels.toml"
    path.write_text(f'name = "k"\n{head}\n[[set]]\nname = "kernels"\n'
                    f'scenarios = ["{LIBRARY}"]\n{body}\n')
    return path


# -- the file (nothing boots) --------------------------------------------------

def test_a_kernel_set_expands_per_kernel_cpu_kpti_and_injection(tmp_path: Path) -> None:
    m = write(tmp_path, 'kernels = ["debian:bookworm", "debian:sid-16k"]\n'
                        'guests = ["virt-a57", "virt-max"]\nkpti = [false, true]\n'
                        'exclude = [ { guest = "virt-a57", granule = "16k" } ]')
    jobs = load_matrix(m).jobs
    assert [(j.kernel, j.guest, j.kpti, j.granule) for j in jobs] == [
        ("debian:bookworm", "virt-a57", False, "4k"), ("debian:bookworm", "virt-a57", True, "4k"),
        ("debian:bookworm", "virt-max", False, "4k"), ("debian:bookworm", "virt-max", True, "4k"),
        ("debian:sid-16k", "virt-max", False, "16k"), ("debian:sid-16k", "virt-max", True, "16k")]
    assert {(j.policy, j.inject, j.expect) for j in jobs} == {("auto", "none", "pass")}
    # each job runs the workloads written for its kernel's page size, and only those
    four = {p.name for p in LIBRARY.glob("*.toml") if "16k" not in p.name}
    assert {Path(p).name for p in jobs[0].scenarios} == four
    assert {Path(p).name for p in jobs[-1].scenarios} == {
        p.name for p in LIBRARY.glob("*-16k.toml")}
    assert len({j.id for j in jobs}) == 6
    assert [j.id for j in load_matrix(m).jobs] == [j.id for j in jobs]  # stable
    assert job_label(jobs[1].params()) == "kernels debian:bookworm virt-a57 4k auto kpti=1 none"
    assert grid_guest(jobs[1].params()) == "debian:bookworm on virt-a57 kpti=1"


def test_injections_expect_caught_and_all_means_the_kernel_bugs(tmp_path: Path) -> None:
    m = write(tmp_path, 'kernels = ["debian:bookworm"]\nguests = ["virt-max"]\nkpti = true\n'
                        'inject = "all"\npolicies = ["v6.1.176", "v6.1"]')
    jobs = load_matrix(m).jobs
    bugs = ["kernel_no_dsb_ish", "kernel_local_tlbi", "kernel_no_kpti_copy"]
    # a stable release with backports is its own policy; v6.1 is modelled by v5.14's rules
    assert [(j.inject, j.expect, j.policy) for j in jobs] == [
        *((b, "caught", "v6.1.176") for b in bugs), *((b, "caught", "v5.14") for b in bugs)]


@pytest.mark.parametrize(("body", "message"), [
    ('kernels = ["debian:sid-16k"]\nguests = ["virt-a57"]',
     r"set 'kernels': debian:sid-16k on virt-a57: cortex-a57 has no 16K granule .*exclude it "
     r"\(exclude = \[ \{ guest = \"virt-a57\", granule = \"16k\" \} \]\)"),
    ('kernels = ["debian:bookworm"]\nguests = ["virt-a58"]',
     r"key 'guests': 'virt-a58' is not a CPU of the kernel table \(known: virt-a57, "),
    ('kernels = ["debian:hamm"]\nguests = ["virt-max"]', r"key 'kernels': .*unknown suite 'hamm'"),
    ('kernels = ["debian:bookworm-16k"]\nguests = ["virt-max"]',
     r"key 'kernels': .*Debian builds no arm64-16k kernel for bookworm"),
    ('kernels = ["no/such/Image"]\nguests = ["virt-max"]', r"key 'kernels': .*no such file"),
    ('kernels = ["debian:bookworm"]\nguests = ["virt-max"]\nkpti = "yes"', r"key 'kpti': expected"),
    ('kernels = ["debian:bookworm"]\nguests = ["virt-max"]\ninject = ["skip_dsb_ish"]',
     r"key 'inject': --inject: unknown real-kernel bug 'skip_dsb_ish'"),
    ('kernels = ["debian:bookworm"]\nguests = ["virt-max"]\ngranules = ["4k"]',
     r"key 'granules': unknown key in a set with 'kernels'"),
    ('kernels = ["debian:bookworm"]\nguests = ["virt-max"]\npolicies = ["v4.1"]',
     r"key 'policies': unknown policy 'v4.1' \(known: auto, a release"),
    ('kernels = ["debian:bookworm"]\nguests = ["virt-max"]\nexclude = [ { cpu = "x" } ]',
     r"key 'exclude': each entry is a table of granule, guest, inject, kernel, kpti"),
    ('kernels = ["debian:bookworm"]\nguests = ["virt-max"]\nexclude = [ { kpti = false } ]',
     r"expands to no jobs"),
    ('kernels = ["debian:bookworm"]\nguests = ["virt-max"]\njob_timeout = -1',
     r"key 'job_timeout': -1 is not a number of seconds"),
])
def test_bad_kernel_sets_name_the_file_and_the_key(tmp_path: Path, body: str,
                                                   message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_matrix(write(tmp_path, body))
    assert str(info.value).startswith(str(tmp_path / "kernels.toml"))


def test_a_kernel_of_a_page_size_without_workloads_is_bad_input(tmp_path: Path) -> None:
    m = write(tmp_path, 'kernels = ["debian:sid-16k"]\nguests = ["virt-max"]')
    m.write_text(m.read_text().replace(str(LIBRARY), str(LIBRARY / "few-pages.toml")))
    with pytest.raises(ConfigError, match=r"no workload for debian:sid-16k's 16k pages "
                                          r"\(workloads of: 4k\)"):
        load_matrix(m)


def test_a_bad_kernel_row_in_the_results_is_one_line(tmp_path: Path) -> None:
    record = {"job_id": "1", "set": "k", "guest": "virt-max", "granule": "4k", "policy": "auto",
              "inject": "none", "outcome": "pass", "ok": True, "kernel": "debian:bookworm",
              "kpti": False, "results": [{"scenario": "x", "verdict": "pass",
                                          "kernel_row": {"kernel": 1}}]}
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(record) + "\n")
    with pytest.raises(ConfigError, match=r"line 1: field 'results\[0\].kernel_row': "
                                          r"kernel: expected a string"):
        list(iter_records(path))
    record["kpti"] = "no"
    path.write_text(json.dumps(record) + "\n")
    with pytest.raises(ConfigError, match=r"line 1: field 'kpti': must be a bool"):
        list(iter_records(path))


# -- real runs ------------------------------------------------------------------

@pytest.fixture(scope="module")
def bookworm(qemu: str) -> None:
    from shootdown.kernel.locate import locate

    try:
        locate("debian:bookworm")
    except InfraError as exc:
        pytest.skip(f"Debian's bookworm kernel is not cached and cannot be fetched: {exc}")


@pytest.mark.guest
def test_kernel_jobs_run_into_records_and_reports(tmp_path: Path, bookworm: None) -> None:
    """One clean job and one injected job of bookworm 6.1 on virt-max, with kpti=1: the
    clean one passes with every workload step equal to the model, the injected one is
    caught; the report's grid, JUnit and real-kernel cost table show them."""
    m = tmp_path / "kernels.toml"
    m.write_text(f'name = "k"\njob_timeout = 240\n[[set]]\nname = "kernels"\n'
                 f'kernels = ["debian:bookworm"]\nguests = ["virt-max"]\nkpti = true\n'
                 f'scenarios = ["{LIBRARY / "few-pages.toml"}", '
                 f'"{LIBRARY / "whole-table.toml"}"]\ninject = ["none", "kernel_no_dsb_ish"]\n')
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "shootdown.cli", "matrix", str(m), "--out",
                           str(out), "--workers", "2", "--no-progress"],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2/2 jobs (1 caught, 1 pass); 0 unexpected" in done.stdout
    records = {r["inject"]: r for r in iter_records(out / "results.jsonl")}
    clean = records["none"]
    assert (clean["outcome"], clean["kernel"], clean["kpti"], clean["kpti_booted"]) == \
        ("pass", "debian:bookworm", True, True)
    assert clean["model_policy"].startswith("v6.1")
    assert [Path(s["scenario"]).name for s in clean["results"]] == ["few-pages.toml",
                                                                   "whole-table.toml"]
    for s in clean["results"]:
        row = s["kernel_row"]
        assert (s["verdict"], row["verdict"], row["cpu"], row["kpti"]) == \
            ("pass", "pass", "virt-max", True)
        assert row["steps"] > 0 and row["model"] == {"pass": row["steps"]}
        assert row["issued"] == row["modelled"] and row["issued"]["tlbi"] > 0
        assert s["observed_counts"] == row["issued"]
    injected = records["kernel_no_dsb_ish"]
    assert injected["outcome"] == "caught" and injected["ok"]
    assert any(s["verdict"] == "caught" and s["detail"] for s in injected["results"])

    report = subprocess.run([sys.executable, "-m", "shootdown.cli", "report",
                             str(out / "results.jsonl")],
                            capture_output=True, text=True, timeout=120, check=False)
    assert report.returncode == 0, report.stdout + report.stderr
    summary = (out / "summary.md").read_text()
    assert "| kernels | debian:bookworm on virt-max kpti=1 | 4k | ✅ 2/2 |" in summary
    assert "`kernel_no_dsb_ish` | expected failure caught 1/1" in summary
    assert "auto: a real kernel checked against the model of its own release" in summary
    html = (out / "report.html").read_text()
    assert "Real kernels: cost per workload" in html
    assert html.count("<td>debian:bookworm</td>") == 2  # the clean job's two workloads
    junit = (out / "junit.xml").read_text()
    assert 'classname="kernels.debian:bookworm_on_virt-max_kpti=1.4k.auto"' in junit


@pytest.mark.guest
def test_a_kernel_job_past_its_timeout_is_infra_and_retried(tmp_path: Path,
                                                           bookworm: None) -> None:
    """A job that cannot finish in its job_timeout (5 s: the boot alone takes ~2 s, the
    traced workloads longer) is killed, tried once more, and recorded as infra with both
    attempts and the console log: never a pass."""
    m = write(tmp_path, 'kernels = ["debian:bookworm"]\nguests = ["virt-a57"]\n'
                        'job_timeout = 5', head="")
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "shootdown.cli", "matrix", str(m), "--out",
                           str(out), "--workers", "0", "--no-progress"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 3, done.stdout + done.stderr
    (record,) = iter_records(out / "results.jsonl")
    assert (record["outcome"], record["ok"], record["attempts"]) == ("infra", False, 2)
    assert all("JobHung" in e and "job timeout of 5 s" in e for e in record["errors"])
    assert Path(record["log_path"]).is_file()
    assert "expected pass, got infra" in done.stdout


def test_the_nightly_runs_the_whole_kernel_table_and_every_kernel_injection() -> None:
    """guests/nightly.toml's kernel sets are the kernel table (every Debian kernel x CPU x
    KPTI that can boot) and every real-kernel injection on every Debian kernel;
    ``--no-kernels`` leaves exactly those out."""
    from shootdown.kernel.inject import KERNEL_BUGS
    from shootdown.kernel.table import CPUS, KERNELS

    matrix = load_matrix(ROOT / "guests" / "nightly.toml")
    table = {(j.kernel, j.guest, j.kpti) for j in matrix.jobs
             if j.kernel is not None and j.inject == "none"}
    assert table == {(k, c, kpti) for k in KERNELS for c in CPUS for kpti in (False, True)
                     if not (c == "virt-a57" and k.endswith("-16k"))}
    bugs = {(j.kernel, j.inject) for j in matrix.jobs if j.kernel and j.inject != "none"}
    assert bugs == {(k, b.name) for k in KERNELS for b in KERNEL_BUGS}
    firmware = matrix.select(kernels=False).jobs
    assert firmware and all(j.kernel is None for j in firmware)
    assert len(firmware) == len(matrix.jobs) - len(table) - len(bugs)
    done = subprocess.run([sys.executable, "-m", "shootdown.cli", "matrix",
                           str(ROOT / "guests" / "nightly.toml"), "--list", "--no-kernels"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and done.stdout.endswith(f"\n{len(firmware)} jobs\n")
    assert "workloads on" not in done.stdout


@pytest.mark.slow
@pytest.mark.guest
def test_the_whole_kernel_table_and_every_injection_as_the_nightly_runs_them(
        tmp_path: Path, bookworm: None) -> None:
    """The nightly's kernel sets (every Debian kernel x CPU x KPTI with the workload library,
    and every real-kernel injection on every kernel): all as expected (~25 min on 2 cores
    with QEMU 7.2's single-stepping)."""
    from shootdown.matrix.spec import load_matrix as load

    nightly = ROOT / "guests" / "nightly.toml"
    wanted = load(nightly).select(sets=["kernels", "kernel-bugs"]).jobs
    done = subprocess.run([sys.executable, "-m", "shootdown.cli", "matrix", str(nightly),
                           "--set", "kernels", "--set", "kernel-bugs", "--out",
                           str(tmp_path / "out"), "--workers", "2", "--no-progress"],
                          capture_output=True, text=True, timeout=5400, check=False)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert f"{len(wanted)}/{len(wanted)} jobs" in done.stdout
    assert "0 unexpected, 0 not run" in done.stdout
