"""``shootdown run SCENARIO.toml|DIR ...``: scenarios through guest and model.

The scenario half of ``shootdown run`` (the smoke half is in
:mod:`shootdown.commands.run`). Every scenario file is loaded and validated
before anything boots, so bad input costs no QEMU start; then one boot per
firmware granule and guest runs every (scenario, policy) job, and each result
is printed as it arrives. ``--guest a,b`` runs every job on each guest: results
and tallies per guest, one verdict over all; every skip reason is printed with
its count.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from shootdown.cli import printable
from shootdown.errors import ConfigError

if TYPE_CHECKING:
    from shootdown.check.scenario import ScenarioResult
    from shootdown.guest.definition import GuestDefinition
    from shootdown.scenario.types import Scenario
    from shootdown.session import BootReport, Job

#: Jobs per boot: bounds what one crash can take down and keeps each boot
#: inside its guest's total time budget.
JOBS_PER_BOOT = 1000
#: Runs up to this many jobs list every result (``-v`` lists them always).
SHOW_ALL_UP_TO = 40


def policies_from(text: str | None) -> list[str] | None:
    """``--policy``: a release, a comma-separated list, or ``all``; None: the scenario's own."""
    from shootdown.model.policy import POLICIES, get_policy

    if text is None:
        return None
    names = list(POLICIES) if text == "all" else [p.strip() for p in text.split(",") if p.strip()]
    unknown = [n for n in names if n not in POLICIES]
    if not names:
        raise ConfigError(f"--policy: unknown policy {text!r} "
                          f"(known: {', '.join(POLICIES)}, or all)")
    # a release that is not itself a policy resolves to one (issue 13)
    return [get_policy(n).name if n in unknown else n for n in names]


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if args.granule is not None:
        out["granule"] = args.granule
    if args.kpti is not None:
        out["kpti"] = args.kpti
    if args.cpu_features is not None:
        out["cpu_features"] = [f for f in args.cpu_features.split(",") if f]
    return out


def _line(r: ScenarioResult) -> str:
    label = str(r.verdict).upper()
    obs = r.observed_counts
    tail = r.reason or (f"{obs.get('tlbi', 0)} TLBI, {obs.get('dsb_ish', 0)} DSB ISH"
                        if obs else "")
    inject = f" inject={r.inject}" if r.inject != "none" else ""
    return printable(f"  {label:<7} {r.policy:<6} {r.granule:<4} {r.scenario}{inject}  {tail}")


def _count(results: list[ScenarioResult]) -> dict[str, int]:
    tally: dict[str, int] = {}
    for r in results:
        tally[str(r.verdict)] = tally.get(str(r.verdict), 0) + 1
    return tally


def _tally(results: list[ScenarioResult]) -> str:
    """``12 pass, 3 skip``: counts per verdict."""
    return ", ".join(f"{n} {v}" for v, n in sorted(_count(results).items())) or "no jobs"


def skip_reasons(results: list[ScenarioResult]) -> list[tuple[str, int]]:
    """Every skip reason with how many jobs it skipped, most first."""
    from collections import Counter

    from shootdown.result import Verdict

    counts = Counter(r.reason for r in results if r.verdict is Verdict.SKIP)
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def _skip_lines(results: list[ScenarioResult]) -> list[str]:
    return [printable(f"  skip {n:>4}  {reason}") for reason, n in skip_reasons(results)]


def _ran_nowhere(per_guest: dict[str, list[ScenarioResult]]) -> int:
    """How many jobs every guest skipped (a job: scenario, policy, granule)."""
    from shootdown.result import Verdict

    def key(r: ScenarioResult) -> tuple[str, str, str]:
        return (r.scenario, r.policy, r.granule)

    ran = {key(r) for rs in per_guest.values() for r in rs if r.verdict is not Verdict.SKIP}
    jobs = {key(r) for rs in per_guest.values() for r in rs}
    return len(jobs - ran)


def _noteworthy(r: ScenarioResult) -> bool:
    """A result a large run lists anyway: a failure, a catch, an emulator limit."""
    from shootdown.result import Verdict

    return r.verdict in (Verdict.FAIL, Verdict.CAUGHT, Verdict.EMULATOR_LIMIT)


def debug_under_gdb(job: Job, definition: GuestDefinition, logdir: str,
                    args: argparse.Namespace) -> int:
    """Find the failing step, then rerun the scenario halted under QEMU's gdbstub.

    The first run (no debugger) says which step diverges; the second starts
    QEMU with ``-S -gdb``, prints the gdb-multiarch command with a breakpoint
    where that step does its work, and waits without time limits while gdb
    holds the guest.
    """
    from shootdown.check.scenario import run_verdict
    from shootdown.cli import exit_code_for_verdict
    from shootdown.debug import plan_gdb
    from shootdown.guest.definition import Timeouts
    from shootdown.session import run_boot

    from .run import launcher_for

    granule = job.scenario.granule
    first = run_boot(definition, granule, [job], log_path=os.path.join(logdir, "probe.log"),
                     qemu=args.qemu, launcher=launcher_for(definition))
    result = first.results[0]
    step = None
    index = None
    if result.sequence is not None and result.sequence.divergence is not None:
        step = result.sequence.divergence.step
        index = result.sequence.divergence.index
    elif result.probes is not None and result.probes.failed_steps:
        step = result.probes.failed_steps[0]
    print(f"{_line(result)}")
    plan = plan_gdb(definition.firmware_path(granule),
                    step_kinds=[s.kind for s in job.scenario.steps], failing_step=step,
                    policy=job.policy, failing_index=index)
    week = 7 * 24 * 3600.0  # "no limit" for a person at gdb, still a valid poll() timeout
    unlimited = Timeouts(boot=week, idle=week, total=week)
    halted = definition._replace(timeouts=unlimited,
                                 extra_args=(*definition.extra_args, *plan.qemu_args))
    where = f"step {step}" if step is not None else "the scenario handler (no failing step)"
    print(f"QEMU is starting halted with its gdbstub on 127.0.0.1:{plan.port}; breakpoint at "
          f"{plan.breakpoint} ({where}). In another terminal:\n  {plan.gdb_command}",
          flush=True)
    second = run_boot(halted, granule, [job], log_path=os.path.join(logdir, "gdb.console.log"),
                      qemu=args.qemu, launcher=launcher_for(definition))
    print(_line(second.results[0]))
    return int(exit_code_for_verdict(run_verdict(second.results, job.inject)))


def load_checked(paths: Sequence[str], overrides: dict[str, Any],
                 definitions: Sequence[GuestDefinition], *,
                 show_progress: bool) -> list[Scenario]:
    """Load every scenario and refuse, before any boot, one that the kernel could not
    make (its calling contract) or that the firmware could not hold (its limits, on
    each guest's RAM); a bar on stderr for a large folder on a terminal."""
    from shootdown.progress import progress, wanted
    from shootdown.scenario.limits import check_before_boot
    from shootdown.scenario.load import load_scenario
    from shootdown.session import iter_scenario_files, memory_bytes

    files = list(iter_scenario_files(paths))
    out: list[Scenario] = []
    show = show_progress and len(files) > SHOW_ALL_UP_TO and wanted()
    with progress("validate", len(files), show=show) as update:
        for n, path in enumerate(files, start=1):
            scenario = load_scenario(path, overrides)
            for definition in definitions:
                check_before_boot(scenario, definition.firmware_path(scenario.granule),
                                  memory_bytes(definition.memory))
            out.append(scenario)
            update(n, len(files))
    return out


def main(args: argparse.Namespace, definitions: Sequence[GuestDefinition], logdir: str) -> int:
    """Run the scenarios named on the command line on every guest; exit code per the verdict.

    Each guest runs every job; results and tallies are per guest, the verdict
    is over all of them.
    """
    from shootdown.bugs import Bug, check_inject, read_bugs
    from shootdown.check.scenario import run_verdict
    from shootdown.cli import exit_code_for_verdict
    from shootdown.model.policy import DEFAULT_POLICY
    from shootdown.result import Verdict
    from shootdown.session import Job, group_by_granule, run_boot

    from .run import launcher_for

    scenarios = load_checked(args.scenarios, _overrides(args), definitions,
                             show_progress=not args.json)
    policies = policies_from(args.policy)
    inject = args.inject or "none"
    jobs = [Job(sc, pol, inject) for sc in scenarios
            for pol in (policies or [sc.policy or DEFAULT_POLICY])]
    groups = group_by_granule(jobs)
    if args.gdb:
        if len(jobs) != 1 or len(definitions) != 1:
            raise ConfigError(f"--gdb debugs one scenario under one policy on one guest; this "
                              f"run has {len(jobs)} jobs on {len(definitions)} guest(s) (name "
                              f"one file, one --policy and one --guest)")
        return debug_under_gdb(jobs[0], definitions[0], logdir, args)
    bug: Bug | None = None
    if inject != "none":
        for definition in definitions:
            for granule in groups:
                elf = definition.firmware_path(granule)
                bugs = read_bugs(elf)
                check_inject(inject, bugs, elf)
                bug = next(b for b in bugs if b.name == inject)
    launchers = [launcher_for(d) for d in definitions]

    results: list[ScenarioResult] = []
    per_guest: dict[str, list[ScenarioResult]] = {}
    boots: list[BootReport] = []
    quiet = args.json

    # Small runs list every result; large ones list what needs a look (FAIL,
    # CAUGHT) and a tally per granule, so the verdict stays readable.
    every = args.verbose > 0 or len(jobs) * len(definitions) <= SHOW_ALL_UP_TO

    t0 = time.monotonic()
    for definition, launcher in zip(definitions, launchers, strict=True):
        mine = per_guest.setdefault(definition.name, [])

        def show(r: ScenarioResult, mine: list[ScenarioResult] = mine) -> None:
            results.append(r)
            mine.append(r)
            if quiet:
                return
            if every or _noteworthy(r):
                print(_line(r), flush=True)
            if _noteworthy(r):
                for detail in r.detail:
                    print(printable(f"          {detail}"))

        for granule, group in groups.items():
            if not quiet:
                print(f"{definition.name} ({definition.cpu}, smp {definition.smp}), "
                      f"{granule} firmware: {len(group)} job(s)", flush=True)
            first = len(mine)
            for k in range(0, len(group), JOBS_PER_BOOT):
                chunk = group[k:k + JOBS_PER_BOOT]
                stem = os.path.join(logdir, f"{definition.name}-{granule}-{len(boots)}")
                boots.append(run_boot(definition, granule, chunk,
                                      log_path=f"{stem}.console.log", qemu=args.qemu,
                                      launcher=launcher, on_result=show,
                                      trace_log=f"{stem}.exec.log" if args.trace else None))
            if not quiet and not every:
                print(f"  {granule}: {_tally(mine[first:])}", flush=True)
        if not quiet:
            print(f"{definition.name}: {len(mine)} job(s): {_tally(mine)}")
            for line in _skip_lines(mine):
                print(line)
    elapsed = time.monotonic() - t0
    verdict = run_verdict(results, inject)

    if args.json:
        import json

        print(json.dumps({
            "verdict": str(verdict), "guest": ",".join(per_guest),
            "guests": {name: {"verdict": str(run_verdict(rs, inject)), "counts": _count(rs),
                              "skip_reasons": dict(skip_reasons(rs))}
                       for name, rs in per_guest.items()},
            "inject": inject, "elapsed_s": round(elapsed, 3),
            "boots": [{"guest": b.guest, "granule": b.granule, "log": b.log_path,
                       "cpus": b.cpus, "build_id": b.build_id, "qemu_argv": b.qemu_argv,
                       "boot_s": round(b.boot_s, 4), "total_s": round(b.total_s, 4)}
                      for b in boots],
            "results": [{"guest": name, **r.to_dict()}
                        for name, rs in per_guest.items() for r in rs],
        }, indent=2))
    else:
        tally = _count(results)
        rate = len(results) / elapsed if elapsed > 0 else 0.0
        where = f" on {len(definitions)} guests" if len(definitions) > 1 else ""
        booted = [b for b in boots if b.qemu_argv]  # a guest was launched
        print(f"{len(results)} scenario run(s){where} in {elapsed:.2f} s ({rate:.0f}/s, "
              f"{len(booted)} boot(s)): {_tally(results)}")
        releases = f" (its code path exists in: {bug.releases})" if bug and bug.releases else ""
        skipped = f" ({tally['skip']} skipped, reasons above)" if tally.get("skip") else ""
        if skipped and len(definitions) > 1:
            nowhere = _ran_nowhere(per_guest)
            skipped = (f" ({tally['skip']} skipped, reasons above; "
                       + (f"{nowhere} job(s) ran on no guest)" if nowhere
                          else "every job ran on at least one guest)"))
        meaning = {
            Verdict.PASS: "every scenario that ran matched the golden model and every probe "
                          "held" + skipped,
            Verdict.NOTHING_RAN: "every job was skipped (reasons above): nothing was checked",
            Verdict.FAIL: "the guest disagreed with the golden model or a probe failed",
            Verdict.CAUGHT: f"the injected bug {inject} was caught",
            Verdict.MISSED: f"the injected bug {inject} ran but was NOT caught: the checks are "
                            "blind to it on these scenarios",
            Verdict.NOT_APPLICABLE: f"not applicable: the injected bug {inject}'s code path "
                                    f"never ran in these scenarios and releases{releases}, so "
                                    "no check could have caught it",
            Verdict.EMULATOR_LIMIT: "a probe result is explained by a known emulator defect, "
                                    "not by the code under test",
        }[verdict]
        print(f"verdict: {str(verdict).upper()}: {meaning}")
        if not verdict.ok or args.keep:
            for b in booted:
                print(f"log: {b.log_path}")
    return int(exit_code_for_verdict(verdict))
