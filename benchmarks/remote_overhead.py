#!/usr/bin/env python3
"""What running a guest "remotely" costs: SSH over loopback against local.

A throwaway sshd is started on 127.0.0.1 (:mod:`shootdown.remote.loopback`)
and the same SMOKE run is timed, interleaved so that machine noise hits
every variant alike, ``--repeat`` times each:

* ``cli-local`` / ``cli-remote``: the whole ``shootdown run`` process, fork
  to exit, for the default guest and for the same guest with
  ``host = "sd-loop"``.  The remote run pays a fresh SSH connection (key
  exchange, authentication), a ``command -v`` for the QEMU binary, a
  ``sha256sum`` of the firmware (the upload itself is skipped after the first
  run) and the console over an SSH channel.
* ``set-local`` / ``set-remote``: ``shootdown run docs/examples/*.toml``,
  the example scenario set (several boots, one command exchange per
  scenario over the console): what the per-message latency adds.
* ``batch-local`` / ``batch-remote``: the 4K scenarios of that set in one
  boot in a long-lived process, handed over as the session's loader batch on
  both sides (``run_boot(batch=True)``; the CLI batches only local guests,
  so ``set-remote`` feeds the console line by line).
* ``warm-local`` / ``warm-remote``: one boot-to-verdict in a long-lived
  process (:class:`~shootdown.guest.machine.Guest` + SMOKE), the remote one
  reusing one open connection: what a matrix worker that holds a seat on a
  host pays per guest.

Loopback has no network latency, so this measures the SSH machinery itself;
on a real link add a few round trips per run (about five on a warm
connection: session open, exec, pid marker, kill check, close).  Prints
medians, minima and the overhead; ``--json`` for machines.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "framework"))

from shootdown.commands.run import run_smoke  # noqa: E402
from shootdown.guest.definition import DEFAULT_GUEST, find_guest, load_definition  # noqa: E402
from shootdown.guest.launcher import LocalLauncher  # noqa: E402
from shootdown.guest.machine import Guest  # noqa: E402
from shootdown.remote.launcher import SshLauncher  # noqa: E402
from shootdown.remote.loopback import ALIAS, sshd_missing, start_loopback_sshd  # noqa: E402


def shootdown_command() -> list[str]:
    """The ``shootdown`` console script next to this Python, else ``python -m``."""
    script = Path(sys.executable).parent / "shootdown"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "shootdown.cli"]


def write_guests(directory: Path) -> tuple[Path, Path]:
    """The default guest, and the same guest on the loopback host."""
    base = find_guest(DEFAULT_GUEST)
    assert base.source is not None
    text = Path(base.source).read_text()
    fw = base.firmware  # absolute after loading
    text = "\n".join(f'firmware = "{fw}"' if line.startswith("firmware") else line
                     for line in text.splitlines()) + "\n"
    local = directory / "bench-local.toml"
    remote = directory / "bench-remote.toml"
    local.write_text(text.replace(f'name = "{base.name}"', 'name = "bench-local"'))
    remote.write_text(text.replace(f'name = "{base.name}"', 'name = "bench-remote"')
                      .replace("[timeouts]", f'host = "{ALIAS}"\n\n[timeouts]'))
    return local, remote


SCENARIO_SET = sorted(str(p) for p in (ROOT / "docs" / "examples").glob("*.toml"))


def timed_cli(guest: Path, env: dict[str, str], scenarios: list[str] | None = None) -> float:
    """Wall time of one ``shootdown run``, fork to exit; it must pass."""
    start = time.perf_counter()
    proc = subprocess.run([*shootdown_command(), "run", "--guest", str(guest),
                           *(scenarios or [])], env=env,
                          capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"remote_overhead: shootdown run --guest {guest.name} failed "
                 f"({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return elapsed


def timed_warm(guest_path: Path, launcher: LocalLauncher | SshLauncher, logdir: Path) -> float:
    """One boot-to-verdict in this process with ``launcher``; it must pass."""
    definition = load_definition(guest_path)
    start = time.perf_counter()
    guest = Guest(definition, log_path=logdir / f"{definition.name}.log", launcher=launcher)
    result = run_smoke(guest)
    elapsed = time.perf_counter() - start
    if not result.verdict.ok:
        sys.exit(f"remote_overhead: {definition.name}: SMOKE verdict {result.verdict}")
    return elapsed


def timed_batch(guest_path: Path, launcher: LocalLauncher | SshLauncher, logdir: Path) -> float:
    """The 4K example scenarios in one boot, as a loader batch; they must pass."""
    from shootdown.scenario.load import load_scenario
    from shootdown.session import Job, run_boot

    definition = load_definition(guest_path)
    scenarios = [load_scenario(p) for p in SCENARIO_SET]
    jobs = [Job(s, "v6.19") for s in scenarios if s.granule in (None, "4k")]
    start = time.perf_counter()
    report = run_boot(definition, "4k", jobs, log_path=str(logdir / "batch.log"),
                      launcher=launcher, batch=True)
    elapsed = time.perf_counter() - start
    if not all(r.verdict.ok for r in report.results):
        sys.exit(f"remote_overhead: {definition.name}: a batched scenario failed")
    return elapsed


def summary(samples: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    return {name: {"median_ms": round(statistics.median(v) * 1000, 1),
                   "min_ms": round(min(v) * 1000, 1), "n": len(v)}
            for name, v in samples.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=10, help="runs per variant (default 10)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    why = sshd_missing()
    if why:
        sys.exit(f"remote_overhead: {why}")
    with tempfile.TemporaryDirectory(prefix="sd-remote-bench-") as tmp:
        d = Path(tmp)
        local, remote = write_guests(d)
        with start_loopback_sshd(d / "sshd") as sshd:
            env = {**os.environ, "SHOOTDOWN_SSH_CONFIG": str(sshd.ssh_config),
                   "SHOOTDOWN_REMOTE_CACHE_DIR": str(d / "remote-cache")}
            os.environ.update({k: env[k] for k in ("SHOOTDOWN_SSH_CONFIG",
                                                   "SHOOTDOWN_REMOTE_CACHE_DIR")})
            # Warm-up: QEMU version cache, page cache, the first (real) upload.
            first_upload = timed_cli(remote, env)
            timed_cli(local, env)
            samples: dict[str, list[float]] = {k: [] for k in (
                "cli-local", "cli-remote", "set-local", "set-remote",
                "batch-local", "batch-remote", "warm-local", "warm-remote")}
            with SshLauncher(ALIAS) as ssh:
                timed_warm(remote, ssh, d)
                loc = LocalLauncher()
                for _ in range(args.repeat):
                    samples["cli-local"].append(timed_cli(local, env))
                    samples["cli-remote"].append(timed_cli(remote, env))
                    if SCENARIO_SET:
                        samples["set-local"].append(timed_cli(local, env, SCENARIO_SET))
                        samples["set-remote"].append(timed_cli(remote, env, SCENARIO_SET))
                    if SCENARIO_SET:
                        samples["batch-local"].append(timed_batch(local, loc, d))
                        samples["batch-remote"].append(timed_batch(remote, ssh, d))
                    samples["warm-local"].append(timed_warm(local, loc, d))
                    samples["warm-remote"].append(timed_warm(remote, ssh, d))
    figures = summary({k: v for k, v in samples.items() if v})
    overhead = {
        kind: round(figures[f"{kind}-remote"]["median_ms"] - figures[f"{kind}-local"]["median_ms"],
                    1)
        for kind in ("cli", "set", "batch", "warm") if f"{kind}-local" in figures}
    load = [round(x, 2) for x in os.getloadavg()]
    out = {"figures": figures, "overhead_ms": overhead,
           "first_remote_run_with_upload_ms": round(first_upload * 1000, 1),
           "load_average": load}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    for name, f in figures.items():
        print(f"{name:<12} median {f['median_ms']:7.1f} ms   min {f['min_ms']:7.1f} ms   "
              f"(n={f['n']})")
    for kind, ms in overhead.items():
        ratio = figures[f"{kind}-remote"]["median_ms"] / figures[f"{kind}-local"]["median_ms"]
        print(f"overhead {kind:<5} +{ms:.1f} ms per run ({ratio:.2f}x)")
    print(f"first remote run (with the firmware upload): {out['first_remote_run_with_upload_ms']}"
          " ms")
    print(f"load average at the end: {' '.join(map(str, load))} "
          f"({os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
