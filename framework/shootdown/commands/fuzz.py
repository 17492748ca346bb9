"""``shootdown fuzz``: random scenarios through the guest and the golden model.

Scenarios come from :mod:`shootdown.generate` (seeded; scenario ``i`` of seed
``S`` is the same on every machine), are grouped per firmware granule, and run
in chunks of ``--chunk`` per boot, ``--jobs`` boots at a time.  Each failure is
written to ``--out`` as a scenario file that ``shootdown run`` reproduces (the
policy is filled in, the seed, the reason and the first divergence are in its
header comment).

:func:`run_jobs` (chunked, concurrent boots) is also what the library tests
and the throughput benchmark use.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shootdown.check.scenario import ScenarioResult
    from shootdown.guest.definition import GuestDefinition
    from shootdown.session import Job

#: scenarios per boot: small enough for a guest's whole-run budget on a loaded machine
#: (~10 scenarios/s at worst), large enough that the ~0.1 s boot does not matter
DEFAULT_CHUNK = 200


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``shootdown fuzz``."""
    parser.add_argument("--seed", type=int, default=1, help="run seed (default: 1)")
    parser.add_argument("--count", type=int, default=500,
                        help="number of scenarios to generate (default: 500)")
    parser.add_argument("--start", type=int, default=0,
                        help="index of the first scenario (to resume or reproduce one)")
    parser.add_argument("--guest", default="virt-max",
                        help="guest definition name or .toml path (default: virt-max)")
    parser.add_argument("--guests-dir", metavar="DIR", help="where guest names resolve")
    parser.add_argument("--policy", default="random",
                        help="a release (v6.19), 'all' (every scenario under every "
                             "release) or 'random' (one seeded release per scenario; default)")
    parser.add_argument("--inject", default="none",
                        help="bug injection to run with (see `shootdown bugs`)")
    parser.add_argument("--granule", action="append", choices=("4k", "16k", "64k"),
                        help="only these granules (repeatable; default: all three)")
    parser.add_argument("--no-features", action="store_true",
                        help="no cpu_features (ttl/tlbirange) in the scenarios")
    parser.add_argument("--features", metavar="LIST",
                        help="the CPU features to combine (comma-separated, from ttl, "
                             "tlbirange, lpa2, repeat_tlbi; default: all but lpa2, what "
                             "the firmware "
                             "runs: LPA2 scenarios are skipped there): every combination "
                             "is drawn")
    # Levels are always drawn now (every level of the contract, and none); the
    # option stays so that older command lines still run.
    parser.add_argument("--with-level", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--chunk", type=int, default=DEFAULT_CHUNK,
                        help=f"scenarios per boot (default: {DEFAULT_CHUNK})")
    parser.add_argument("--jobs", type=int, default=2, help="concurrent boots (default: 2)")
    parser.add_argument("--out", default="fuzz-failures",
                        help="folder for failing scenarios (default: ./fuzz-failures)")
    parser.add_argument("--logdir", help="console logs (default: <out>/logs)")
    parser.add_argument("--max-failures", type=int, default=50,
                        help="write at most this many failing scenarios (default: 50)")


@dataclass
class RunReport:
    """What :func:`run_jobs` did."""

    #: one result per job that ran (SKIP included), in completion order
    results: list[ScenarioResult] = field(default_factory=list)
    #: (job index, message) for jobs that did not get a result: the infrastructure
    #: failed (hang, crash, timeout) while running them, or their boot could not start
    errors: list[tuple[int, str]] = field(default_factory=list)
    #: job index of each result (parallel to ``results``)
    indices: list[int] = field(default_factory=list)
    boots: int = 0
    seconds: float = 0.0


def _skip_result(job: Job, granule: str, why: str) -> ScenarioResult:
    from shootdown.check.scenario import ScenarioResult
    from shootdown.result import Verdict

    return ScenarioResult(scenario=job.scenario.path, policy=job.policy, granule=granule,
                          inject=job.inject, verdict=Verdict.SKIP, reason=why,
                          sequence=None, probes=None)


def run_jobs(definition: GuestDefinition, jobs: Sequence[Job], *, logdir: str,
             chunk: int = DEFAULT_CHUNK, workers: int = 2,
             on_result: Callable[[int, ScenarioResult], None] | None = None) -> RunReport:
    """Run ``jobs`` on ``definition``: per granule, ``chunk`` per boot, ``workers`` boots at once.

    A granule the guest's CPU lacks turns its jobs into SKIPs (the firmware
    refuses to boot; the reason is the guest's).  An infrastructure failure
    in one boot (hang, crash, timeout) costs that chunk only: the job it was
    running is recorded in ``errors`` and the rest of the chunk is retried on
    a fresh boot.
    """
    from shootdown.errors import ConfigError, InfraError
    from shootdown.session import run_boot

    os.makedirs(logdir, exist_ok=True)
    report = RunReport()
    lock = threading.Lock()
    t0 = time.monotonic()
    by_granule: dict[str, list[int]] = {}
    for i, job in enumerate(jobs):
        by_granule.setdefault(job.scenario.granule, []).append(i)
    chunks = [(g, idx[k:k + chunk]) for g, idx in by_granule.items()
              for k in range(0, len(idx), max(1, chunk))]
    unsupported: dict[str, str] = {}

    def record(i: int, result: ScenarioResult) -> None:
        with lock:
            report.results.append(result)
            report.indices.append(i)
        if on_result is not None:
            on_result(i, result)

    def run_chunk(n: int, granule: str, idx: list[int]) -> None:
        attempt = 0
        while idx:
            if granule in unsupported:
                for i in idx:
                    record(i, _skip_result(jobs[i], granule, unsupported[granule]))
                return
            done = 0

            def counted(result: ScenarioResult, idx: list[int] = idx) -> None:
                nonlocal done
                record(idx[done], result)
                done += 1

            retry = f"-{attempt}" if attempt else ""
            log_path = os.path.join(logdir, f"{definition.name}-{granule}-{n:04d}{retry}"
                                    ".console.log")
            with lock:
                report.boots += 1
            try:
                run_boot(definition, granule, [jobs[i] for i in idx], log_path=log_path,
                         on_result=counted)
                return
            except ConfigError as exc:
                if "granule_unsupported" not in str(exc):
                    raise
                unsupported[granule] = f"skipped by the guest: {exc}"
                idx = idx[done:]
            except InfraError as exc:
                with lock:
                    report.errors.append((idx[done], f"{exc} (log: {log_path})"))
                idx = idx[done + 1:]
                attempt += 1

    with ThreadPoolExecutor(max(1, workers)) as pool:
        futures = [pool.submit(run_chunk, n, g, idx) for n, (g, idx) in enumerate(chunks)]
        for f in futures:
            f.result()
    report.seconds = time.monotonic() - t0
    return report


def _policies(choice: str) -> list[str]:
    from shootdown.errors import ConfigError
    from shootdown.model.policy import POLICIES, get_policy

    if choice in ("all", "random"):
        return list(POLICIES)
    try:
        return [get_policy(choice).name]  # a release resolves to its policy
    except ConfigError:
        raise ConfigError(f"--policy: unknown release {choice!r} (known: "
                          f"{', '.join(POLICIES)}, all, random)") from None


def describe_policies(choice: str, policies: Sequence[str]) -> str:
    """The header's words for the policies actually used (``policy v5.14 (v6.1 -> v5.14)``)."""
    if choice in ("all", "random"):
        span = f"{policies[0]}..{policies[-1]}" if len(policies) > 1 else policies[0]
        each = "one" if choice == "random" else "each"
        return f"policy {choice} ({each} of {len(policies)}: {span})"
    used = policies[0]
    return f"policy {used}" + (f" ({choice} -> {used})" if used != choice else "")


#: the CPU features the firmware runs (the default pool): not LPA2 (no such regime)
FIRMWARE_FEATURES = ("ttl", "tlbirange", "repeat_tlbi")


def _features(args: argparse.Namespace) -> bool | list[str]:
    from shootdown.errors import ConfigError
    from shootdown.scenario.types import CPU_FEATURES

    if args.no_features:
        return False
    if args.features is None:  # what the firmware can run: LPA2 scenarios would all skip
        return [f for f in CPU_FEATURES if f in FIRMWARE_FEATURES]
    names = [f.strip() for f in args.features.split(",") if f.strip()]
    unknown = [f for f in names if f not in CPU_FEATURES]
    if unknown:
        raise ConfigError(f"--features: unknown CPU feature {unknown[0]!r} "
                          f"(known: {', '.join(CPU_FEATURES)})")
    return names


def main(args: argparse.Namespace) -> int:
    """Generate, run, report; exit 0 when nothing failed (or, with --inject, it was caught)."""
    import random

    from shootdown.bugs import check_inject, read_bugs
    from shootdown.errors import ConfigError
    from shootdown.generate import generate
    from shootdown.guest.definition import find_guest
    from shootdown.result import Verdict
    from shootdown.session import Job

    if args.count < 1 or args.chunk < 1 or args.jobs < 1:
        raise ConfigError("--count, --chunk and --jobs must be at least 1")
    definition = find_guest(args.guest, args.guests_dir)
    if args.inject != "none":
        elf = definition.firmware_path("4k")
        check_inject(args.inject, read_bugs(elf), elf)
    policies = _policies(args.policy)
    features = _features(args)
    pick = random.Random(f"shootdown-fuzz-policy:{args.seed}")
    t0 = time.monotonic()
    from shootdown.progress import progress, wanted

    generated = []
    with progress("generate", args.count, show=wanted()) as update:
        for g in generate(args.seed, args.count, start=args.start, granules=args.granule,
                          features=features):
            generated.append(g)
            update(len(generated), args.count)
    gen_s = time.monotonic() - t0
    jobs: list[Job] = []
    origin: list[int] = []  # job -> generated index
    for k, g in enumerate(generated):
        chosen = policies if args.policy == "all" else \
            [pick.choice(policies)] if args.policy == "random" else policies
        for p in chosen:
            jobs.append(Job(g.scenario, p, args.inject))
            origin.append(k)
    logdir = args.logdir or os.path.join(args.out, "logs")
    print(f"fuzz: seed {args.seed}, scenarios {args.start}..{args.start + args.count - 1} "
          f"({len(jobs)} runs, {describe_policies(args.policy, policies)}, "
          f"inject {args.inject}) on "
          f"{definition.name}; generated in {gen_s:.1f} s", flush=True)

    with progress("fuzz", len(jobs), show=wanted()) as update:
        done = itertools.count(1)
        report = run_jobs(definition, jobs, logdir=logdir, chunk=args.chunk, workers=args.jobs,
                          on_result=lambda _i, _r: update(next(done), len(jobs)))
    counts: dict[str, int] = {}
    written = 0
    for i, result in sorted(zip(report.indices, report.results, strict=True),
                            key=lambda t: t[0]):
        counts[result.verdict.name] = counts.get(result.verdict.name, 0) + 1
        bad = result.verdict is Verdict.FAIL or (
            args.inject != "none" and result.verdict is Verdict.CAUGHT and written < 5)
        if not bad:
            continue
        g = generated[origin[i]]
        if written < args.max_failures:
            path = save_failure(args.out, g.seed, g.index, g.text, result)
            written += 1
        else:
            path = "(not written: --max-failures)"
        print(f"{result.verdict.name}: seed {g.seed} #{g.index} {result.policy} "
              f"{result.granule}: {result.reason}\n  -> {path}")
    for i, message in report.errors:
        g = generated[origin[i]]
        path = save_failure(args.out, g.seed, g.index, g.text, None, policy=jobs[i].policy,
                            inject=args.inject, note=message)
        print(f"ERROR: seed {g.seed} #{g.index} {jobs[i].policy}: {message}\n  -> {path}")
    rate = len(report.results) / report.seconds if report.seconds else 0.0
    summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    print(f"fuzz: {len(report.results)} runs in {report.seconds:.1f} s ({rate:.0f}/s, "
          f"{report.boots} boots): {summary or 'nothing ran'}; infrastructure errors "
          f"{len(report.errors)}")
    if args.inject != "none":
        caught = counts.get("CAUGHT", 0)
        print("CAUGHT" if caught else f"MISSED: no scenario caught {args.inject}")
        return 0 if caught and not report.errors else 1
    failed = counts.get("FAIL", 0) + len(report.errors)
    print("PASS" if not failed else f"FAIL: {failed} failing runs (scenarios in {args.out})")
    return 0 if not failed else 1


def save_failure(out: str, seed: int, index: int, text: str, result: ScenarioResult | None,
                 *, policy: str | None = None, inject: str | None = None,
                 note: str = "") -> str:
    """Write a failing scenario with its policy filled in; the path."""
    from shootdown.model.policy import DEFAULT_POLICY
    os.makedirs(out, exist_ok=True)
    policy = policy or (result.policy if result else DEFAULT_POLICY)
    inject = inject or (result.inject if result else "none")
    stem = f"seed{seed}-{index:06d}-{policy}" + (f"-{inject}" if inject != "none" else "")
    path = os.path.join(out, stem + ".toml")
    lines = [f"# reproduce: shootdown fuzz --seed {seed} --start {index} --count 1 "
             f"--policy {policy}" + (f" --inject {inject}" if inject != "none" else ""),
             f"#        or: shootdown run {path}"
             + (f" --inject {inject}" if inject != "none" else "")]
    if result is not None:
        lines.append(f"# {result.verdict.name}: {result.reason}")
        lines += [f"#   {d}" for d in result.detail[:40]]
    if note:
        lines.append(f"# {note}")
    body = text.splitlines()
    # The generator's header comment first, then the policy, then the rest.
    head = [ln for ln in body if ln.startswith("#")]
    rest = [ln for ln in body if not ln.startswith("#")]
    content = "\n".join(lines + head + [f'policy = "{policy}"'] + rest) + "\n"
    with open(path, "w", encoding="utf-8") as f:
        f.write(content)
    return path


if __name__ == "__main__":  # pragma: no cover
    from shootdown.cli import main as cli_main

    sys.exit(cli_main(["fuzz", *sys.argv[1:]]))
