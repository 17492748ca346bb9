"""``shootdown report RESULTS.jsonl``: JUnit XML, Markdown and HTML from matrix results."""

from __future__ import annotations

import argparse
import os
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``shootdown report``."""
    parser.add_argument("results", metavar="RESULTS.jsonl",
                        help="results file of shootdown matrix (OUT/results.jsonl)")
    parser.add_argument("--out", metavar="DIR",
                        help="where to write junit.xml, summary.md, report.html "
                             "(default: the results file's folder)")


def main(args: argparse.Namespace) -> int:
    """Write the reports; exit 1 when the results hold anything unexpected.

    Exit 3 (infrastructure) when the results are incomplete: no records at
    all, or jobs of the matrix's job list (``jobs.json``) without one.
    """
    from shootdown.cli import ExitCode
    from shootdown.matrix.results import latest
    from shootdown.report import write_reports
    from shootdown.report.data import load_job_list

    out = args.out or os.path.dirname(os.path.abspath(args.results))
    paths = write_reports(args.results, out)
    for kind, path in paths.items():
        print(f"{kind:<8} {path}")
    from shootdown.matrix.spec import job_label

    records = latest(args.results)
    plan = load_job_list(args.results)
    seen = {r["job_id"] for r in records}
    missing = [j for j in plan or [] if j["job_id"] not in seen]
    for j in missing:
        print(f"not run: {job_label(j)} ({j['job_id']})")
    unexpected = sum(1 for r in records if not r.get("ok"))
    skipped = sum(1 for r in records for s in r.get("results", []) if s.get("verdict") == "skip")
    total = len(plan) if plan is not None else len(records)
    print(f"{len(records)}/{total} jobs; {unexpected} unexpected, {len(missing)} not run, "
          f"{skipped} scenarios skipped")
    if plan is None:
        print(f"note: no job list (jobs.json) beside {args.results}: jobs that never ran "
              "cannot be counted", file=sys.stderr)
    if not records:
        print(f"{args.results}: no job results: nothing ran", file=sys.stderr)
        return int(ExitCode.INFRA)
    if unexpected:
        return int(ExitCode.FAIL)
    if missing:
        return int(ExitCode.INFRA)
    return int(ExitCode.PASS)
