"""``shootdown doctor``: what the chosen QEMU is, and which known defects it has.

Prints the QEMU's version, how it is told to run one instruction per block,
which named Armv9 cores it has, then runs the demonstration of every known
emulator defect (``guests/emulator/``, check/emulator.py) on a TCG guest and
says, per defect, whether this QEMU shows it, next to what the version table
says.  Exit 0 whatever it finds (a QEMU that cannot start is exit 3).
"""

from __future__ import annotations

import argparse
import os

#: Named cores QEMU 8.2+ has with FEAT_TTL and FEAT_TLBIRANGE.
NAMED_CORES = ("neoverse-n2", "cortex-a710")
#: How often each demonstration runs in its boot (the first run after boot is
#: not telling: see check.emulator.judge_demonstration).
RUNS = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``shootdown doctor``."""
    parser.add_argument("--qemu", help="QEMU binary (default: $SHOOTDOWN_QEMU or "
                                       "qemu-system-aarch64)")
    parser.add_argument("--guest", default="virt-max",
                        help="TCG guest the demonstrations run on (default virt-max: "
                             "FEAT_TLBIRANGE, every granule)")
    parser.add_argument("--guests-dir", metavar="DIR",
                        help="guests directory (default: $SHOOTDOWN_GUESTS or the source "
                             "tree's guests/)")
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")


def demo_dir(guests: str) -> str:
    """Where the demonstration scenarios are: ``<guests>/emulator``."""
    return os.path.join(guests, "emulator")


def main(args: argparse.Namespace) -> int:
    """Run the demonstrations against the chosen QEMU and print what it has."""
    import json
    import shutil
    import tempfile

    from shootdown.check.emulator import DEFECTS, judge_demonstration
    from shootdown.check.scenario import ScenarioResult
    from shootdown.errors import ConfigError
    from shootdown.guest.argv import default_qemu
    from shootdown.guest.definition import find_guest, guests_dir
    from shootdown.guest.qemu import (
        format_version,
        hmp_one_insn_per_tb,
        missing_cpu,
        version,
        version_line,
        with_one_insn_per_tb,
    )
    from shootdown.scenario.load import load_scenario
    from shootdown.session import Job, run_boot

    qemu = args.qemu or default_qemu()
    line = version_line(qemu)
    v = version(qemu)
    guests = guests_dir(args.guests_dir)
    guest = find_guest(args.guest, guests)
    if guest.accel.split(",")[0] != "tcg" or guest.host:
        raise ConfigError(f"{guest.source or guest.name}: key 'accel': shootdown doctor needs "
                          f"a local TCG guest, not accel={guest.accel}"
                          + (f" on {guest.host}" if guest.host else ""))
    singlestep = " ".join(with_one_insn_per_tb(["-accel", "tcg"], v)[:2]
                          if v >= (8, 1, 0) else ["-singlestep"])
    cores = {core: missing_cpu(qemu, core) is None for core in NAMED_CORES}

    # One boot per granule: each demonstration RUNS times, then its control.
    where = demo_dir(guests)
    plan: dict[str, list[tuple[str, Job]]] = {}
    for d in DEFECTS:
        for role, name in [("demo", d.demo)] * RUNS + ([("control", d.control)] * RUNS
                                                      if d.control else []):
            scenario = load_scenario(os.path.join(where, name))
            plan.setdefault(scenario.granule, []).append(
                (f"{d.key}:{role}", Job(scenario, d.demo_policy, d.demo_inject)))
    logdir = tempfile.mkdtemp(prefix="shootdown-doctor-")
    results: dict[str, list[ScenarioResult]] = {}
    for granule, jobs in plan.items():
        report = run_boot(guest, granule, [job for _, job in jobs],
                          log_path=os.path.join(logdir, f"{guest.name}-{granule}.console.log"),
                          qemu=qemu)
        for (tag, _), result in zip(jobs, report.results, strict=True):
            results.setdefault(tag, []).append(result)
    findings = []
    for d in DEFECTS:
        shown = judge_demonstration(d, results.get(f"{d.key}:demo", []),
                                    results.get(f"{d.key}:control", []))
        findings.append((d, shown))
    shutil.rmtree(logdir, ignore_errors=True)

    if args.json:
        print(json.dumps({
            "qemu": qemu, "version_line": line, "version": format_version(v),
            "one_insn_per_tb": singlestep, "hmp": hmp_one_insn_per_tb(v),
            "named_cores": cores,
            "defects": [{"key": d.key, "title": d.title, "effect": d.effect,
                         "table_says": d.affects(v), "present": s.present,
                         "evidence": s.evidence, "demo": f"guests/emulator/{d.demo}"}
                        for d, s in findings]}, indent=2))
        return 0
    print(f"qemu        {qemu}: {line}")
    print(f"single-step {singlestep} (HMP: {hmp_one_insn_per_tb(v)})")
    print("named cores " + ", ".join(f"{c} {'yes' if ok else 'no'}" for c, ok in cores.items())
          + ("" if all(cores.values()) else "  (QEMU 8.2+ has them; 'max' has the features)"))
    print(f"known defects, demonstrated on {guest.name} (guests/emulator/):")
    width = max(len(d.key) for d, _ in findings)
    for d, s in findings:
        state = {True: "PRESENT", False: "absent", None: "unknown"}[s.present]
        table = "as the table says" if s.present is None or s.present == d.affects(v) \
            else f"the table says {'present' if d.affects(v) else 'absent'}: update it"
        print(f"  {d.key:<{width}}  {state:<8} {d.title}")
        print(f"  {'':<{width}}           {s.evidence} ({table})")
    return 0
