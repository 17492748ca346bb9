"""``shootdown matrix MATRIX.toml``: run a validation matrix in parallel.

Jobs (one boot each) run as pytest items spread over local cores by
pytest-xdist; records go to ``OUT/results.jsonl`` as jobs finish, so an
interrupted run keeps them and ``--resume`` runs only the rest.  The exit
code says whether anything unexpected happened (``docs/matrix.md``).
"""

from __future__ import annotations

import argparse
import os

from shootdown.commands.argtypes import int_in


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``shootdown matrix``."""
    parser.add_argument("matrix", metavar="MATRIX.toml", help="matrix file (guests/nightly.toml)")
    parser.add_argument("--workers", "-n", type=int_in(0, 256), default=os.cpu_count() or 1,
                        metavar="N",
                        help="parallel workers (pytest-xdist processes; 0 runs in this "
                             "process; default: the number of CPUs)")
    parser.add_argument("--out", metavar="DIR",
                        help="results directory (default: ./results)")
    parser.add_argument("--resume", action="store_true",
                        help="keep OUT/results.jsonl and run only the jobs it does not finish")
    parser.add_argument("--qemu", metavar="BINARY", help="QEMU binary")
    parser.add_argument("--hosts", metavar="POOL.toml", default=os.environ.get("SHOOTDOWN_HOSTS"),
                        help="host pool (docs/remote.md): each job boots on a seat of it, "
                             "bounding guests per host across workers "
                             "(default: $SHOOTDOWN_HOSTS; none: one guest per worker, here)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME", dest="sets",
                        help="run only this set's jobs (repeatable; default: every set)")
    parser.add_argument("--no-kernels", action="store_true",
                        help="leave out the real-kernel jobs (sets with 'kernels')")
    parser.add_argument("--list", action="store_true",
                        help="print the jobs the matrix expands to and exit")
    parser.add_argument("--no-progress", action="store_true",
                        help="one line per finished job instead of a progress bar")


def main(args: argparse.Namespace) -> int:
    """Run the matrix; print a summary."""
    from shootdown.matrix.engine import describe_record, run_matrix
    from shootdown.matrix.spec import load_matrix

    matrix = load_matrix(args.matrix).select(sets=args.sets, kernels=not args.no_kernels)
    if args.hosts:  # checked now, so that --list (and a typo) is told before any job
        from shootdown.remote.pool import HostPool

        HostPool.load(args.hosts)
    if args.list:
        for j in matrix.jobs:
            if j.kernel is not None:
                print(f"{j.id}  {j.set:<12} {j.guest:<10} {j.granule:<4} {j.policy:<6} "
                      f"{j.inject:<28} expect {j.expect:<6} {len(j.scenarios)} workloads "
                      f"on {j.kernel}{' kpti=1' if j.kpti else ''}")
                continue
            print(f"{j.id}  {j.set:<12} {j.guest:<10} {j.granule:<4} {j.policy:<6} "
                  f"{j.inject:<28} expect {j.expect:<6} {len(j.scenarios)} scenarios")
        print(f"{len(matrix.jobs)} jobs")
        return 0
    out = args.out or "results"
    summary = run_matrix(args.matrix, out, workers=args.workers, resume=args.resume,
                         qemu=args.qemu, progress=False if args.no_progress else None,
                         hosts=args.hosts, kernels=not args.no_kernels, sets=args.sets)
    for record in summary.unexpected:
        for line in describe_record(record):
            print(line)
    for job in summary.missing:
        print(f"not run: {job.label} ({job.id})")
    counts = ", ".join(f"{n} {k}" for k, n in sorted(summary.outcomes.items()))
    print(f"{summary.finished}/{summary.total} jobs ({counts}); "
          f"{len(summary.unexpected)} unexpected, {len(summary.missing)} not run; "
          f"{summary.wall_s:.1f} s")
    print(f"results: {summary.results}")
    return summary.exit_code
