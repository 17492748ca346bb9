"""Reports from a real matrix run: JUnit XML, Markdown, HTML rendered by headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from shootdown.matrix.engine import run_matrix
from shootdown.report import write_reports

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "matrix" / "data"

pytestmark = pytest.mark.guest

MATRIX = f"""
name = "report-test"
job_timeout = 60

[[set]]
name = "clean"
guests = ["virt-a57"]
granules = ["4k", "64k"]
policies = ["v4.19", "v4.20", "v6.19"]
scenarios = ["{ROOT}/guests/sizes/{{granule}}"]

[[set]]
name = "bugs"
guests = ["virt-a57"]
granules = ["4k"]
policies = ["v4.20", "v6.19"]
scenarios = ["{ROOT}/guests/sizes/{{granule}}", "{DATA}/thp-kpti.toml"]
inject = ["skip_dsb_ish", "kpti_copy_missing"]

[[set]]
name = "surprise"            # expects a pass from an injected run: one unexpected result
guests = ["virt-a57"]
granules = ["4k"]
policies = ["v6.19"]
scenarios = ["{DATA}/munmap-2m.toml"]
inject = ["skip_dsb_ishst"]
expect = "pass"
"""


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory, firmware_elf: Path,
            qemu: str) -> dict[str, Path]:
    where = tmp_path_factory.mktemp("report")
    matrix = where / "matrix.toml"
    matrix.write_text(MATRIX)
    summary = run_matrix(matrix, where / "out", workers=2, progress=False)
    assert summary.total == 11 and summary.finished == 11
    paths = write_reports(summary.results, where / "report")
    paths["results"] = summary.results
    return paths


def test_junit(reports: dict[str, Path]) -> None:
    root = ET.parse(reports["junit"]).getroot()
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("11", "1", "0")
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert set(suites) == {"clean", "bugs", "surprise"}
    case = suites["surprise"].find("testcase")
    assert case is not None
    failure = case.find("failure")
    assert failure is not None and "expected pass, got caught" in failure.get("message", "")
    assert "console log:" in (failure.text or "")
    caught = next(c for c in suites["bugs"].iter("testcase"))
    assert (caught.findtext("system-out") or "").startswith("expected failure caught: ")
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert props["guest"] == "virt-a57" and props["policy"] == "v6.19"
    assert len(props["build_id"] or "") == 40
    assert (props["qemu_version"] or "").startswith("QEMU")


def test_markdown(reports: dict[str, Path]) -> None:
    md = reports["markdown"].read_text()
    assert "11 jobs" in md and "**1 unexpected**" in md
    assert re.search(r"\| clean \| virt-a57 \| 64k \| ✅ 1/1 \| ✅ 1/1 \| ✅ 1/1 \|", md)
    assert re.search(r"\| `kpti_copy_missing` \|  \| expected failure caught 1/1 \| "
                     r"expected failure caught 1/1 \| no second TLBI", md)
    # the executed counts of the size sweep, one column per region size
    assert "### 64k (virt-a57)" in md and "| policy | 64K | 256K |" in md


def test_html_is_self_contained(reports: dict[str, Path]) -> None:
    html = reports["html"].read_text()
    assert html.count('src="data:image/png;base64,') == 2  # 4k and 64k plots
    assert "<script" not in html
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", html)


def test_report_cli_exit_code(reports: dict[str, Path], tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "shootdown.cli", "report",
                           str(reports["results"]), "--out", str(tmp_path)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 1, proc.stderr  # one unexpected result
    assert "1 unexpected" in proc.stdout
    assert {p.name for p in tmp_path.iterdir()} == {"junit.xml", "summary.md", "report.html"}


# -- headless Chromium -------------------------------------------------------

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                  "--enable-logging=stderr", "--v=0", "--window-size=1200,2400"]


def render(html: Path, tmp: Path) -> tuple[Path, list[str]]:
    """Screenshot ``html`` in headless Chromium; (PNG, console messages)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium not found: run scripts/setup (apt-get install chromium)")
    shot = tmp / f"{html.stem}.png"
    proc = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'profile'}",
                           f"--screenshot={shot}", html.resolve().as_uri()],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    # Chromium logs every console message (errors included) as INFO:CONSOLE lines.
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return shot, console


def colour_share(png: Path, rgb: tuple[int, int, int]) -> float:
    """Fraction of pixels within a small distance of ``rgb``."""
    import matplotlib.image
    import numpy as np

    img = (matplotlib.image.imread(png)[..., :3] * 255).astype(int)
    near = (abs(img - np.array(rgb)).sum(axis=-1) < 40)
    return float(near.mean())


def test_html_renders_in_chromium(reports: dict[str, Path], tmp_path: Path) -> None:
    import matplotlib.image

    shot, console = render(reports["html"], tmp_path)
    assert console == []
    img = matplotlib.image.imread(shot)
    assert img.shape[0] >= 2000 and img.std() > 0.05  # not blank
    # the plot lines drawn in the policies' colours, and the green grid cells
    assert colour_share(shot, (0x1F, 0x77, 0xB4)) > 0.0001  # v4.19's blue
    assert colour_share(shot, (0xD6, 0x27, 0x28)) > 0.0001  # v4.20's red
    assert colour_share(shot, (0xC8, 0xF0, 0xC8)) > 0.005


def test_chromium_check_sees_console_errors(tmp_path: Path) -> None:
    """The console check is not vacuous: a page that logs an error is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text('<html><body>x<script>console.error("boom")</script></body></html>')
    _, console = render(bad, tmp_path)
    assert any('"boom"' in line for line in console)
