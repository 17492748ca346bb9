"""Print the "Detection table" of docs/bugs.md: bug x policy x scenario x caught-by.

Runs the scenario library once per bug injection (under the release chosen in
``library.BUG_POLICY``) on virt-max, and says which scenarios caught it and
whether the sequence check, the probes, or both saw it.

    .venv/bin/python tests/library/detection_table.py [--logdir DIR]

The same runs are asserted by ``test_library.py::test_every_bug_is_caught``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# run as a script, ``library`` is library.py beside it; mypy sees the package tests/library
from library import (  # type: ignore[attr-defined]
    BUG_POLICY,
    DEFAULT_BUG_POLICY,
    detections,
    load_library,
    markdown_table,
)
from shootdown.bugs import read_bugs
from shootdown.commands.fuzz import run_jobs
from shootdown.guest.definition import find_guest
from shootdown.session import Job


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", help="console logs (default: a temporary folder)")
    parser.add_argument("--guest", default="virt-max")
    args = parser.parse_args()
    definition = find_guest(args.guest)
    bugs = [b.name for b in read_bugs(definition.firmware_path("4k"))]
    scenarios = load_library()
    jobs = [Job(sc, BUG_POLICY.get(b, DEFAULT_BUG_POLICY)[0], b) for b in bugs for sc in scenarios]
    with tempfile.TemporaryDirectory() as tmp:
        report = run_jobs(definition, jobs, logdir=args.logdir or tmp, chunk=400, workers=2)
    for line in markdown_table(detections(report.results), bugs):
        print(line)
    if report.errors:
        print(f"infrastructure errors: {report.errors}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
