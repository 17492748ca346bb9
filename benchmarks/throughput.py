"""Scenarios checked per second: one boot per scenario against many per boot.

Every scenario is a small one of the kind the issue names: a gather of up to
512 PTEs on 4K pages with a mid-gather flush and a PTE-table free, checked
against the golden model (sequence and probes, both CPUs).  The policies
rotate through every release.  Modes:

* ``one-per-boot``: a fresh guest per scenario (boot, run, power off);
* ``many-per-boot``: one guest runs all of them (``session.run_boot``),
  each scenario's lines sent over the PL011 console (``batch=False``);
* ``batch``: one guest, all the scenarios in one loader blob and one
  ``BATCH`` command (``batch=True``, run_boot's default for several jobs);
* each with 1 process and with 2 processes running halves concurrently (the
  machine has 2 cores: that is the "per second on 2 cores" figure), and
  many-per-boot and batch with 4 processes too (over the console the guests
  mostly wait for input, so more guests than cores still add throughput);
* ``shootdown run DIR``: the CLI on a folder of the same scenarios, as a user
  runs it (one process; batch, its default).

Then a breakdown of one many-per-boot and one batch run: where the host's
time goes (lowering, the golden model, parsing and judging) and how long it
waits for the guest.

    .venv/bin/python benchmarks/throughput.py [--count 1000] [--boots 40]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TARGET = 300.0  # small scenarios checked per second on 2 cores


def small_scenario(i: int) -> str:
    """Scenario ``i``: up to 512 PTEs in two halves around a flush, then the PTE table freed."""
    rng = random.Random(i)
    base = 0x40000000 + rng.randrange(4096) * 0x200000
    total = rng.randint(2, 512)
    first = rng.randint(1, total - 1)
    return (f"# throughput benchmark scenario {i}\n"
            f'granule = "4k"\nva_bits = 48\nasid = {1 + i % 255}\n\n'
            f'[[step]]\nkind = "gather"\nops = [\n'
            f'  {{ op = "remove_pte", addr = {base:#x}, count = {first} }},\n'
            f'  {{ op = "flush" }},\n'
            f'  {{ op = "remove_pte", addr = {base + first * 0x1000:#x}, '
            f"count = {total - first} }},\n"
            f'  {{ op = "free_pte_table", addr = {base:#x} }},\n]\n')


def _jobs(indices: list[int]) -> list[Any]:
    from shootdown.model.policy import POLICIES
    from shootdown.scenario.load import load_scenario_text
    from shootdown.session import Job

    names = list(POLICIES)
    return [Job(load_scenario_text(small_scenario(i), f"small-{i}"), names[i % len(names)])
            for i in indices]


MODES = ("one-per-boot", "many-per-boot", "batch")


def _run(indices: list[int], mode: str, logdir: str) -> tuple[int, int, int]:
    """Run the scenarios; (checked, passed, boots)."""
    from shootdown.guest.definition import find_guest
    from shootdown.session import run_boot

    definition = find_guest("virt-max")
    jobs = _jobs(indices)
    groups = [[j] for j in jobs] if mode == "one-per-boot" else [jobs]
    passed = 0
    for n, group in enumerate(groups):
        log = os.path.join(logdir, f"{os.getpid()}-{n}.log")
        report = run_boot(definition, "4k", group, log_path=log, batch=mode == "batch")
        passed += sum(1 for r in report.results if r.verdict.name == "PASS")
    return len(jobs), passed, len(groups)


def measure(count: int, mode: str, procs: int, logdir: str) -> dict[str, Any]:
    """Wall time of ``count`` scenarios split over ``procs`` processes."""
    halves = [list(range(k, count, procs)) for k in range(procs)]
    t0 = time.monotonic()
    if procs == 1:
        outs = [_run(halves[0], mode, logdir)]
    else:
        with mp.get_context("fork").Pool(procs) as pool:
            outs = pool.starmap(_run, [(h, mode, logdir) for h in halves])
    secs = time.monotonic() - t0
    checked = sum(o[0] for o in outs)
    return {"mode": mode, "procs": procs,
            "checked": checked, "passed": sum(o[1] for o in outs),
            "boots": sum(o[2] for o in outs), "seconds": secs, "rate": checked / secs}


def measure_cli(count: int, tmp: str) -> dict[str, Any]:
    """``shootdown run DIR --guest virt-max --policy v6.19`` on ``count`` files."""
    folder = Path(tmp) / "small"
    folder.mkdir(exist_ok=True)
    for i in range(count):
        (folder / f"small-{i:05d}.toml").write_text(small_scenario(i), encoding="utf-8")
    exe = Path(sys.executable).with_name("shootdown")
    t0 = time.monotonic()
    proc = subprocess.run([str(exe), "run", str(folder), "--guest", "virt-max", "--policy",
                           "v6.19", "--logdir", os.path.join(tmp, "cli")],
                          capture_output=True, text=True, check=False)
    secs = time.monotonic() - t0
    return {"mode": "shootdown run DIR", "procs": 1, "checked": count,
            "passed": count if proc.returncode == 0 else -1, "boots": 1, "seconds": secs,
            "rate": count / secs}


def breakdown(count: int, logdir: str, batch: bool) -> list[tuple[str, float]]:
    """Host time per stage of one many-per-boot or batch run (wrapping the session's calls)."""
    import shootdown.session as session
    from shootdown.guest.machine import Guest

    spent: dict[str, float] = defaultdict(float)

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[name] += time.perf_counter() - t
        return wrapper

    saved = {n: getattr(session, n) for n in
             ("to_protocol_lines", "prepare_batch", "split_batch", "read_scenario",
              "expected_steps", "judge")}
    labels = {"to_protocol_lines": "lowering to protocol lines",
              "prepare_batch": "lowering + framing + writing the blob",
              "split_batch": "cutting the batch's records per scenario",
              "read_scenario": "reading the records into steps",
              "expected_steps": "golden model",
              "judge": "sequence + probe checks"}
    for n, fn in saved.items():
        setattr(session, n, timed(labels[n], fn))
    command = Guest.command
    Guest.command = timed("send + wait for the guest + parse records", command)  # type: ignore[method-assign]
    try:
        jobs = _jobs(list(range(count)))
        cpu0, t0 = time.process_time(), time.monotonic()
        from shootdown.guest.definition import find_guest
        report = session.run_boot(find_guest("virt-max"), "4k", jobs, batch=batch,
                                  log_path=os.path.join(logdir, "breakdown.log"))
        wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
    finally:
        for n, fn in saved.items():
            setattr(session, n, fn)
        Guest.command = command  # type: ignore[method-assign]
    rows = sorted(spent.items(), key=lambda kv: -kv[1])
    rows += [("boot (to READY)", report.boot_s), ("host Python CPU, total", cpu),
             ("wall, total", wall)]
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000,
                        help="scenarios for the many-per-boot runs (default: 1000)")
    parser.add_argument("--boots", type=int, default=40,
                        help="scenarios for the one-per-boot runs (default: 40)")
    parser.add_argument("--procs", default="1,2,4",
                        help="process counts for the many-per-boot rows (default: 1,2,4: "
                             "the guests mostly wait on console input, so more than 2 "
                             "can still help on 2 cores)")
    parser.add_argument("--no-cli", action="store_true", help="skip the shootdown run DIR row")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="shootdown-throughput-") as tmp:
        rows = [measure(args.boots, "one-per-boot", 1, tmp),
                measure(args.boots, "one-per-boot", 2, tmp)]
        for mode in ("many-per-boot", "batch"):
            rows += [measure(args.count, mode, int(p), tmp) for p in args.procs.split(",")]
        if not args.no_cli:
            rows.append(measure_cli(args.count, tmp))
        print(f"{'mode':<20} {'procs':>5} {'checked':>8} {'passed':>7} {'boots':>6} "
              f"{'seconds':>8} {'per s':>8}")
        for r in rows:
            print(f"{r['mode']:<20} {r['procs']:>5} {r['checked']:>8} {r['passed']:>7} "
                  f"{r['boots']:>6} {r['seconds']:>8.2f} {r['rate']:>8.1f}")
        rate = {m: {r["procs"]: r["rate"] for r in rows if r["mode"] == m} for m in MODES}
        for p in sorted(rate["one-per-boot"]):
            one = rate["one-per-boot"][p]
            print(f"ratio many/one per boot, {p} process(es): "
                  f"{rate['many-per-boot'][p] / one:.1f}x; batch/one: "
                  f"{rate['batch'][p] / one:.1f}x")
        for p in sorted(rate["batch"]):
            print(f"ratio batch/many-per-boot, {p} process(es): "
                  f"{rate['batch'][p] / rate['many-per-boot'][p]:.1f}x")
        best = max(r["rate"] for r in rows)
        verdict = "met" if best >= TARGET else "MISSED"
        print(f"target >= {TARGET:.0f} small scenarios/s on 2 cores: {best:.0f}/s, {verdict}")
        for batch in (False, True):
            print(f"\nwhere the time goes (one process, {'batch' if batch else 'many per boot'},"
                  f" {min(args.count, 500)} scenarios):")
            for name, secs in breakdown(min(args.count, 500), tmp, batch):
                print(f"  {name:<45} {secs:8.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
