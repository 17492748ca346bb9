"""``shootdown report RESULTS.jsonl``: JUnit XML, Markdown and HTML from matrix results."""

from __future__ import annotations

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``shootdown report``."""
    parser.add_argument("results", metavar="RESULTS.jsonl",
                        help="results file of shootdown matrix (OUT/results.jsonl)")
    parser.add_argument("--out", metavar="DIR",
                        help="where to write junit.xml, summary.md, report.html "
                             "(default: the results file's folder)")


def main(args: argparse.Namespace) -> int:
    """Write the reports; exit 1 when the results hold anything unexpected."""
    from shootdown.matrix.results import latest
    from shootdown.report import write_reports

    out = args.out or os.path.dirname(os.path.abspath(args.results))
    paths = write_reports(args.results, out)
    for kind, path in paths.items():
        print(f"{kind:<8} {path}")
    unexpected = sum(1 for r in latest(args.results) if not r.get("ok"))
    print(f"{unexpected} unexpected")
    return 1 if unexpected else 0
