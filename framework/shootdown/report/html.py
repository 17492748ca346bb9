"""The HTML report: one self-contained file (inline CSS, plots as base64 PNG).

No scripts, no external resources: it opens from a CI artefact store or a
mail attachment as it is, and a headless browser renders it without network
(tests/report checks that with Chromium).
"""

from __future__ import annotations

import base64
import html
import time
from typing import Any

from shootdown.matrix.spec import job_label
from shootdown.report.data import ReportData, human_size, policy_key

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .5em 0; font-size: .9em; }
th, td { border: 1px solid #bbb; padding: .25em .6em; text-align: left; }
th { background: #eee; }
td.ok { background: #c8f0c8; } td.bad { background: #f6b8b8; font-weight: bold; }
td.skips { background: #f3e6a6; } td.missing { background: #d0d0d0; font-weight: bold; }
td.none { background: #f4f4f4; }
.summary { font-size: 1.1em; padding: .5em 1em; border-radius: 4px; display: inline-block; }
.summary.ok { background: #c8f0c8; } .summary.bad { background: #f6b8b8; }
pre { background: #f6f6f6; padding: .6em; overflow-x: auto; font-size: .85em; }
figure { margin: 1em 0; } figcaption { font-size: .9em; color: #555; }
img.plot { max-width: 100%; border: 1px solid #ddd; }
"""


def _e(text: object) -> str:
    return html.escape(str(text))


def render_html(data: ReportData) -> str:
    """The page as text."""
    from shootdown.matrix.engine import describe_record
    from shootdown.report.plots import cost_figures

    bad = data.unexpected
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             "<title>shootdown matrix report</title>", f"<style>{_CSS}</style></head><body>",
             "<h1>shootdown matrix report</h1>",
             f"<p>Results <code>{_e(data.source)}</code>, rendered "
             f"{_e(time.strftime('%Y-%m-%d %H:%M:%S %Z'))}.</p>",
             f'<p class="summary {"bad" if bad or data.missing else "ok"}">'
             f"{len(data.records)} jobs: "
             + _e(", ".join(f"{n} {k}" for k, n in data.outcome_counts.items()))
             + f"; <b>{len(bad)} unexpected</b>, <b>{len(data.missing)} not run</b>, "
             + f"{data.skipped_scenarios} scenarios skipped</p>"]
    if data.missing:
        parts.append("<h2>Not run</h2><ul>" + "".join(
            f"<li>{_e(job_label(j))} ({_e(j['job_id'])})</li>" for j in data.missing) + "</ul>")

    parts.append("<h2>Pass/fail grid</h2><p>Jobs as expected / jobs, per policy: clean jobs "
                 "must pass, injected ones must be caught."
                 + (f" {_e(data.auto_note)}." if data.auto_note else "")
                 + "</p><table><tr><th>set</th>"
                 "<th>guest</th><th>granule</th>"
                 + "".join(f"<th>{_e(p)}</th>" for p in data.policies) + "</tr>")
    for (set_name, guest, granule), row in data.grid.items():
        cells = []
        for p in data.policies:
            c = row.get(p)
            if c is None:
                cells.append('<td class="none"></td>')
            else:
                cls = ("bad" if c.ok != c.total else "missing" if c.missing
                       else "skips" if c.skipped else "ok")
                title = "; ".join(f"{r['inject']}: {r['outcome']}" for r in c.bad)
                cells.append(f'<td class="{cls}" title="{_e(title)}">{_e(c.label())}</td>')
        parts.append(f"<tr><td>{_e(set_name)}</td><td>{_e(guest)}</td><td>{_e(granule)}</td>"
                     + "".join(cells) + "</tr>")
    parts.append("</table>")

    if data.detection:
        parts.append("<h2>Bug catalogue: detection</h2><p>Jobs that caught the injected bug "
                     "/ jobs that injected it.</p><table><tr><th>bug</th>"
                     + "".join(f"<th>{_e(p)}</th>" for p in data.policies)
                     + "<th>what it breaks</th></tr>")
        for bug, row in data.detection.items():
            cells = []
            for p in data.policies:
                c = row.get(p)
                if c is None:
                    cells.append('<td class="none"></td>')
                else:
                    ok = c.ok == c.total
                    cells.append(f'<td class="{"ok" if ok else "bad"}">'
                                 f'{"expected failure caught" if ok else "MISSED"} '
                                 f'{c.ok}/{c.total}</td>')
            parts.append(f"<tr><td><code>{_e(bug)}</code></td>" + "".join(cells)
                         + f"<td>{_e(data.bug_descriptions.get(bug, ''))}</td></tr>")
        parts.append("</table>")

    figures = cost_figures(data)
    if figures:
        parts.append("<h2>Cost per teardown (executed counts)</h2><p>TLBI instructions and "
                     "DSB ISH issued by one munmap of the region size shown, as the guest "
                     "reported them (clean runs), per policy.</p>")
        for caption, png in figures:
            b64 = base64.b64encode(png).decode("ascii")
            parts.append(f'<figure><img class="plot" alt="{_e(caption)}" '
                         f'src="data:image/png;base64,{b64}"><figcaption>{_e(caption)}'
                         "</figcaption></figure>")
        for granule, by_guest in data.costs.items():
            guest = sorted(by_guest)[0]
            series = by_guest[guest]
            sizes = sorted({pt[0] for pts in series.values() for pt in pts})
            parts.append(f"<table><tr><th>{_e(granule)} ({_e(guest)}): TLBI / DSB ISH</th>"
                         + "".join(f"<th>{human_size(s)}</th>" for s in sizes) + "</tr>")
            for pol in sorted(series, key=policy_key):
                by_size = {pt[0]: pt for pt in series[pol]}
                parts.append(f"<tr><td>{_e(pol)}</td>" + "".join(
                    f"<td>{by_size[s][1]} / {by_size[s][2]}</td>" if s in by_size
                    else "<td></td>" for s in sizes) + "</tr>")
            parts.append("</table>")

    if data.kernels:
        parts.append(kernel_cost_html(data.kernels))

    if bad:
        parts.append("<h2>Unexpected</h2>")
        for r in bad:
            parts.append(f"<pre>{_e(chr(10).join(describe_record(r)))}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def kernel_cost_html(rows: list[dict[str, Any]]) -> str:
    """The real kernels' cost per workload beside the model's (kernel jobs of the matrix,
    ``kernel-table.json``):
    TLBI / DSB ISHST / DSB ISH / ISB issued in the workload's traced teardowns, and what
    the modelled release (the row's policy) expects for the steps it answered."""
    from shootdown.insn import COUNT_KINDS as kinds

    out = ["<h2>Real kernels: cost per workload</h2><p>Instructions each Debian kernel "
           "issued in a workload's traced teardown steps (the matrix's kernel jobs, "
           "<code>shootdown kernel table</code>; docs/kernel.md), beside what the modelled "
           "release expects for them "
           "(TLBI / DSB ISHST / DSB ISH / ISB).</p>",
           "<table><tr><th>kernel</th><th>release</th><th>CPU</th><th>kpti</th>"
           "<th>workload</th><th>policy</th><th>issued</th><th>modelled</th>"
           "<th>verdict</th></tr>"]
    for r in rows:
        if r.get("verdict") not in ("pass", "fail"):
            continue
        issued = " / ".join(str(r.get("issued", {}).get(k, 0)) for k in kinds)
        modelled = r.get("modelled") or {}
        model = " / ".join(str(modelled.get(k, 0)) for k in kinds) if any(
            modelled.values()) else "-"
        cls = "ok" if r["verdict"] == "pass" else "bad"
        out.append(f"<tr><td>{_e(r['kernel'])}</td><td>{_e(r['release'])}</td>"
                   f"<td>{_e(r['cpu'])}</td><td>{'on' if r['kpti'] else 'off'}</td>"
                   f"<td>{_e(r['workload'])}</td><td>{_e(r['policy'])}</td>"
                   f"<td>{issued}</td><td>{model}</td>"
                   f'<td class="{cls}">{_e(r["verdict"])}</td></tr>')
    out.append("</table>")
    return "\n".join(out)
