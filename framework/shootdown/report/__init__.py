"""Reports from matrix results: JUnit XML, a Markdown summary, a self-contained HTML page.

Everything here reads the results file (JSON lines, the last record per job)
and nothing else: the report describes what ran, from executed counts, not
from the model.

* :mod:`~shootdown.report.data`: records -> the tables (grid, detection, cost);
* :mod:`~shootdown.report.junit`, :mod:`~shootdown.report.markdown`,
  :mod:`~shootdown.report.html`: the three renderings;
* :mod:`~shootdown.report.plots`: matplotlib (Agg) cost plots as PNG bytes.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_reports(results: str | os.PathLike[str], out: str | os.PathLike[str]) -> dict[str, Path]:
    """Write junit.xml, summary.md and report.html for ``results`` into ``out``.

    Jobs the matrix planned (``jobs.json`` beside the results) without a
    record are shown as "not run"; a real-kernel table (``kernel-table.json``
    beside them) adds the real kernels' costs.
    """
    from shootdown.matrix.results import latest
    from shootdown.report.data import ReportData, load_job_list, load_kernel_table
    from shootdown.report.html import render_html
    from shootdown.report.junit import render_junit
    from shootdown.report.markdown import render_markdown

    data = ReportData.from_records(latest(results), source=os.fspath(results),
                                   plan=load_job_list(results))
    data.kernels += load_kernel_table(results)
    outdir = Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = {"junit": outdir / "junit.xml", "markdown": outdir / "summary.md",
             "html": outdir / "report.html"}
    paths["junit"].write_bytes(render_junit(data))
    paths["markdown"].write_text(render_markdown(data), encoding="utf-8")
    paths["html"].write_text(render_html(data), encoding="utf-8")
    return paths
