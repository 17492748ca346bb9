#!/usr/bin/env python3
"""Matrix throughput on 1 against 2 workers (target: a ratio of at least 1.8 on 2 cores).

A fixed matrix (one guest, the 4K scenario library and size sweep, every
policy, clean and with one injection: ``--jobs`` jobs) runs as whole
``shootdown matrix`` processes, alternately with ``--workers 1`` and
``--workers 2``, ``--repeat`` times each, so machine noise hits both alike.

Two figures per run:

* *throughput*: jobs per second between the first job's start and the last
  job's end, from the records' own ``started``/``finished`` times: the
  parallel part, which is what the number of workers changes;
* *wall*: the whole command, pytest and xdist start-up included (what a
  user waits for; the fixed start-up weighs more on small matrices).

The scaling ratio is of the medians.  The CPU time of each run (all its
processes) and the cores it kept busy are printed too, with the load
average: on a shared machine other processes take cores from the 2-worker
run first, and equal CPU per job at 1 and 2 workers says the engine adds no
work of its own as it scales.
``--json`` for machines.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POLICIES = ["v4.19", "v4.20", "v5.0", "v5.2", "v5.4", "v5.9", "v5.14", "v6.8", "v6.9",
            "v6.10", "v6.13", "v6.19"]


def write_matrix(where: Path, jobs: int, guest: str, guests_dir: str | None = None) -> Path:
    policies = (POLICIES * ((jobs + 23) // 24))[: max(1, (jobs + 1) // 2)]
    sets = []
    # repeated policies need distinct sets (a job id must be unique)
    for n in range(0, len(policies), len(POLICIES)):
        chunk = policies[n:n + len(POLICIES)]
        sets.append(f"""
[[set]]
name = "s{n // len(POLICIES)}"
guests = ["{guest}"]
granules = ["4k"]
policies = {json.dumps(chunk)}
scenarios = ["{ROOT}/guests/scenarios/4k", "{ROOT}/guests/sizes/4k"]
inject = ["none", "skip_dsb_ish"]
""")
    path = where / "scaling.toml"
    head = 'name = "scaling"\njob_timeout = 300\n'
    if guests_dir:
        head += f'guests_dir = "{Path(guests_dir).resolve()}"\n'
    path.write_text(head + "".join(sets))
    return path


def run_once(matrix: Path, workers: int, out: Path) -> dict[str, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "shootdown.cli", "matrix", str(matrix),
                           "--workers", str(workers), "--out", str(out), "--no-progress"],
                          capture_output=True, text=True, check=False)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"matrix run failed ({proc.returncode}):\n{proc.stdout[-3000:]}")
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    span = max(r["finished"] for r in records) - min(r["started"] for r in records)
    return {"jobs": len(records), "wall_s": wall, "span_s": span,
            "throughput": len(records) / span, "cpu_s": cpu, "cores_used": cpu / wall}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=48, help="jobs in the matrix (default 48)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per worker count")
    parser.add_argument("--guest", default="virt-a57")
    parser.add_argument("--guests-dir", help="where --guest resolves (default: guests/)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    subprocess.run(["make", "-s", "-C", str(ROOT / "firmware")], check=True)
    runs: dict[int, list[dict[str, float]]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory(prefix="matrix-scaling-") as tmp:
        matrix = write_matrix(Path(tmp), args.jobs, args.guest, args.guests_dir)
        for i in range(args.repeat):
            for workers in (1, 2):
                r = run_once(matrix, workers, Path(tmp) / f"out-{workers}-{i}")
                runs[workers].append(r)
                if not args.json:
                    print(f"workers={workers} run {i + 1}: {r['jobs']} jobs, "
                          f"{r['throughput']:.2f} jobs/s, span {r['span_s']:.1f} s, "
                          f"wall {r['wall_s']:.1f} s, {r['cpu_s']:.1f} CPU-s "
                          f"({r['cores_used']:.2f} cores)", flush=True)
    med = {w: {k: statistics.median(r[k] for r in rs)
               for k in ("throughput", "wall_s", "cpu_s", "cores_used")}
           for w, rs in runs.items()}
    result = {
        "jobs": runs[1][0]["jobs"], "repeat": args.repeat, "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "throughput_1": med[1]["throughput"], "throughput_2": med[2]["throughput"],
        "scaling": med[2]["throughput"] / med[1]["throughput"],
        "wall_1_s": med[1]["wall_s"], "wall_2_s": med[2]["wall_s"],
        "wall_scaling": med[1]["wall_s"] / med[2]["wall_s"],
        "cpu_s_1": med[1]["cpu_s"], "cpu_s_2": med[2]["cpu_s"],
        "cores_used_1": med[1]["cores_used"], "cores_used_2": med[2]["cores_used"],
    }
    # scaling per core actually obtained: 1.0 means the engine wastes nothing as it
    # scales and only the cores the machine could give were missing
    result["efficiency"] = result["scaling"] / (result["cores_used_2"] / result["cores_used_1"])
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"throughput: {result['throughput_1']:.2f} -> {result['throughput_2']:.2f} jobs/s, "
              f"scaling {result['scaling']:.2f}x (target >= 1.8)")
        print(f"wall: {result['wall_1_s']:.1f} s -> {result['wall_2_s']:.1f} s, "
              f"{result['wall_scaling']:.2f}x; load average "
              + " ".join(f"{x:.2f}" for x in result["loadavg"]))
        print(f"CPU: {result['cpu_s_1']:.1f} -> {result['cpu_s_2']:.1f} CPU-s for the same jobs; "
              f"cores used {result['cores_used_1']:.2f} -> {result['cores_used_2']:.2f} "
              "(below 2 with two workers: the rest of the machine's load had them); "
              f"scaling per core obtained {result['efficiency']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
