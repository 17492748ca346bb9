"""The report knows what was planned: missing jobs, empty files and skipped scenarios show.

Runs the README's pair of commands as written (issue 11), in a fresh folder,
on a real two-job matrix whose jobs each skip one scenario on the A57.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README_PAIR = "shootdown matrix guests/nightly.toml && shootdown report results/results.jsonl"

# one scenario the A57 runs, one it skips (no FEAT_TTL): every job passes with a skip
MATRIX = f"""
name = "readme-pair"
job_timeout = 60

[[set]]
name = "clean"
guests = ["virt-a57"]
granules = ["4k"]
policies = ["v4.19", "v6.19"]
scenarios = ["{ROOT}/guests/scenarios/4k/flush-tlb-page.toml",
             "{ROOT}/guests/scenarios/4k/ttl-gather.toml"]
"""


def _env() -> dict[str, str]:
    bindir = os.path.dirname(sys.executable)
    return {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}


def _report(results: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shootdown.cli", "report", str(results)],
                          cwd=cwd, capture_output=True, text=True, check=False, timeout=120)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, firmware_elf: Path,
         qemu: str) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """The README's command line, run as written in a fresh folder."""
    cwd = tmp_path_factory.mktemp("pair")
    (cwd / "guests").mkdir()
    (cwd / "guests" / "nightly.toml").write_text(MATRIX)
    proc = subprocess.run(["bash", "-c", README_PAIR], cwd=cwd, env=_env(),
                          capture_output=True, text=True, check=False, timeout=600)
    return cwd, proc


def test_readme_writes_the_pair() -> None:
    assert README_PAIR in (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.guest
def test_readme_pair_works_as_written(
        pair: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    cwd, proc = pair
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = cwd / "results"
    assert {"results.jsonl", "jobs.json", "junit.xml", "summary.md",
            "report.html"} <= {p.name for p in out.iterdir()}
    assert "2/2 jobs; 0 unexpected, 0 not run, 2 scenarios skipped" in proc.stdout


@pytest.mark.guest
def test_grid_shows_skips(pair: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out = pair[0] / "results"
    md = (out / "summary.md").read_text(encoding="utf-8")
    assert "1/1 (+1 skip)" in md and "✅ 1/1" not in md
    html = (out / "report.html").read_text(encoding="utf-8")
    assert '<td class="skips"' in html and ">1/1 (+1 skip)</td>" in html
    root = ET.parse(out / "junit.xml").getroot()
    skipped = root.findall(".//testcase/skipped")
    assert len(skipped) == 2 and root.get("skipped") == "2"
    assert all("ttl" in (s.get("message") or "").lower() for s in skipped), \
        [s.get("message") for s in skipped]


@pytest.mark.guest
def test_partial_results_name_the_missing_job(
        pair: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path) -> None:
    out = pair[0] / "results"
    lines = (out / "results.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    (tmp_path / "jobs.json").write_bytes((out / "jobs.json").read_bytes())
    (tmp_path / "results.jsonl").write_text(lines[0] + "\n")  # the run stopped after one job
    gone = json.loads(lines[1])["job_id"]
    proc = _report(tmp_path / "results.jsonl", tmp_path)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "not run: clean virt-a57 4k" in proc.stdout and f"({gone})" in proc.stdout
    assert "1/2 jobs; 0 unexpected, 1 not run" in proc.stdout
    md = (tmp_path / "summary.md").read_text(encoding="utf-8")
    assert "**1 not run**" in md and "## Not run" in md and "(1 not run)" in md
    root = ET.parse(tmp_path / "junit.xml").getroot()
    assert [e.get("message") for e in root.findall(".//testcase/error")] == ["not run"]
    assert '<td class="missing"' in (tmp_path / "report.html").read_text(encoding="utf-8")


@pytest.mark.guest
def test_empty_results_are_not_green(
        pair: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path) -> None:
    (tmp_path / "jobs.json").write_bytes((pair[0] / "results" / "jobs.json").read_bytes())
    (tmp_path / "results.jsonl").write_text("")
    proc = _report(tmp_path / "results.jsonl", tmp_path)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert proc.stdout.count("not run: ") == 2 and "nothing ran" in proc.stderr


def test_empty_results_without_job_list(tmp_path: Path) -> None:
    (tmp_path / "results.jsonl").write_text("")
    proc = _report(tmp_path / "results.jsonl", tmp_path)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "nothing ran" in proc.stderr and "no job list" in proc.stderr


def test_bad_job_list_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "results.jsonl").write_text("")
    (tmp_path / "jobs.json").write_text("[1, 2]")
    proc = _report(tmp_path / "results.jsonl", tmp_path)
    assert proc.returncode == 2
    assert "jobs.json" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def _kernel_rows() -> list[dict[str, object]]:
    from shootdown.kernel.table import Row, rows_json

    return rows_json([
        Row("debian:sid", "7.2.13+deb14-arm64", "virt-a76", False, "over-cutoff", "v7.1",
            steps=1, model={"pass": 1}, verdict="pass",
            # a table written before the counts had one spelling ("dsb_ish"): still read
            issued={"tlbi": 3, "dsb ishst": 2, "dsb ish": 4, "isb": 0},
            modelled={"tlbi": 3, "dsb ishst": 2, "dsb ish": 4, "isb": 0}),
        Row("debian:bookworm", "6.1.0-44-arm64", "virt-a57", True, "few-pages-16k", "v5.14",
            note="written for the 16k granule", verdict="skip")])


@pytest.mark.guest
def test_the_report_shows_the_real_kernels_costs(
        pair: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path) -> None:
    cwd, _ = pair
    results = next(cwd.rglob("results.jsonl"))
    (tmp_path / "results.jsonl").write_bytes(results.read_bytes())
    (tmp_path / "kernel-table.json").write_text(json.dumps(_kernel_rows()))
    proc = _report(tmp_path / "results.jsonl", tmp_path)
    assert proc.returncode in (0, 3), proc.stdout + proc.stderr
    html = (tmp_path / "report.html").read_text()
    assert "Real kernels: cost per workload" in html
    assert "<td>virt-a76</td>" in html and "<td>3 / 2 / 4 / 0</td>" in html
    assert "few-pages-16k" not in html          # skipped rows have no cost


def test_a_bad_kernel_table_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "results.jsonl").write_text("")
    (tmp_path / "kernel-table.json").write_text('[{"kernel": 1}]')
    proc = _report(tmp_path / "results.jsonl", tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "kernel-table.json" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
