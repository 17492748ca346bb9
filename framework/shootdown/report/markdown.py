"""The Markdown summary: totals, the pass/fail grid, the detection table, surprises."""

from __future__ import annotations

from shootdown.matrix.spec import job_label
from shootdown.report.data import Cell, ReportData


def _mark(c: Cell) -> str:
    """❌ unexpected, ⛔ jobs not run, ⚠️ scenarios skipped, ✅ all checked and as expected."""
    if c.ok != c.total:
        return "❌"
    if c.missing:
        return "⛔"
    return "⚠️" if c.skipped else "✅"


def render_markdown(data: ReportData) -> str:
    """The summary as Markdown text."""
    from shootdown.matrix.engine import describe_record

    bad = data.unexpected
    lines = ["# shootdown matrix report", "",
             f"Results: `{data.source}`: {len(data.records)} jobs, "
             + ", ".join(f"{n} {k}" for k, n in data.outcome_counts.items())
             + f"; **{len(bad)} unexpected**, **{len(data.missing)} not run**"
             + f", {data.skipped_scenarios} scenarios skipped.", ""]
    if not data.planned:
        lines += ["(No job list `jobs.json` beside the results: jobs that never ran "
                  "cannot be counted.)", ""]
    lines += ["## Pass/fail grid", "",
              "Jobs as expected / jobs, per policy (clean jobs must pass, injected ones "
              "must be caught)." + (f" {data.auto_note}." if data.auto_note else ""), ""]
    lines.append("| set | guest | granule | " + " | ".join(data.policies) + " |")
    lines.append("|---|---|---|" + "---|" * len(data.policies))
    for (set_name, guest, granule), row in data.grid.items():
        cells = []
        for p in data.policies:
            c = row.get(p)
            cells.append("" if c is None else f"{_mark(c)} {c.label()}")
        lines.append(f"| {set_name} | {guest} | {granule} | " + " | ".join(cells) + " |")
    lines.append("")
    if data.detection:
        lines += ["## Bug catalogue: detection", "",
                  "Jobs that caught the injected bug / jobs that injected it.", ""]
        lines.append("| bug | " + " | ".join(data.policies) + " | what it breaks |")
        lines.append("|---|" + "---|" * len(data.policies) + "---|")
        for bug, row in data.detection.items():
            cells = []
            for p in data.policies:
                c = row.get(p)
                cells.append("" if c is None else
                             f"{'expected failure caught' if c.ok == c.total else '**MISSED**'} "
                             f"{c.ok}/{c.total}")
            desc = data.bug_descriptions.get(bug, "").replace("|", "\\|")
            lines.append(f"| `{bug}` | " + " | ".join(cells) + f" | {desc} |")
        lines.append("")
    if data.costs:
        lines += ["## Cost per teardown (executed)", "",
                  "TLBI / DSB ISH issued by one munmap of the size shown (clean runs).", ""]
        for granule, by_guest in data.costs.items():
            guest = sorted(by_guest)[0]
            series = by_guest[guest]
            sizes = sorted({pt[0] for pts in series.values() for pt in pts})
            from shootdown.report.data import human_size, policy_key

            lines.append(f"### {granule} ({guest})")
            lines.append("")
            lines.append("| policy | " + " | ".join(human_size(s) for s in sizes) + " |")
            lines.append("|---|" + "---|" * len(sizes))
            for pol in sorted(series, key=policy_key):
                by_size = {pt[0]: pt for pt in series[pol]}
                lines.append(f"| {pol} | " + " | ".join(
                    f"{by_size[s][1]} / {by_size[s][2]}" if s in by_size else ""
                    for s in sizes) + " |")
            lines.append("")
    if data.missing:
        lines += ["## Not run", "", "```"]
        lines += [f"not run: {job_label(j)} ({j['job_id']})" for j in data.missing]
        lines += ["```", ""]
    if bad:
        lines += ["## Unexpected", "", "```"]
        for r in bad:
            lines += describe_record(r)
        lines += ["```", ""]
    return "\n".join(lines)
