"""``shootdown kernel``: real Linux kernels as targets (fetch, info, boot).

    shootdown kernel fetch debian:bookworm debian:trixie-16k   # download, verify, cache
    shootdown kernel info debian:sid | PATH/Image [--config F] # release, page size, VA bits...
    shootdown kernel boot [debian:bookworm | PATH/Image]       # boot, smoke workload, probe
    shootdown kernel run [--kernel debian:bookworm|PATH] [--kpti] [--json]  # traced, checked

A thin shell over :mod:`shootdown.kernel`; the smoke workload's verdict is
:func:`shootdown.kernel.smoke.run_smoke`'s.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from shootdown.commands.argtypes import int_in, seconds

#: vCPUs: QEMU's virt machine takes at most 512.
MAX_SMP = 512
#: Pages the smoke workload maps: 16 MiB at 4K, 256 MiB at 64K (the guest has 512M-1G).
MAX_SMOKE_PAGES = 4096

if TYPE_CHECKING:
    from shootdown.kernel.info import KernelInfo
    from shootdown.kernel.locate import KernelFiles
    from shootdown.kernel.run import KernelRun
    from shootdown.scenario.workload import Workload

DEFAULT_KERNEL = "debian:bookworm"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``shootdown kernel``."""
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    fetch = sub.add_parser("fetch", help="download Debian kernels (verified) into the cache")
    fetch.add_argument("specs", nargs="+", metavar="debian:SUITE[-16k]",
                       help="bullseye, bookworm, trixie[-16k], sid[-16k]")
    fetch.add_argument("--json", action="store_true", help="print the cache records as JSON")

    info = sub.add_parser("info", help="what a kernel is: release, page size, VA bits, KPTI...")
    _kernel_args(info)
    info.add_argument("--policy", help="check against this release instead of the chosen one")
    info.add_argument("--json", action="store_true", help="print as JSON")

    boot = sub.add_parser("boot", help="boot a kernel with the workload and run the smoke steps")
    _kernel_args(boot)
    boot.add_argument("--cpu", default="max,pauth-impdef=on",
                      help="QEMU -cpu (default: max,pauth-impdef=on)")
    boot.add_argument("--smp", type=int_in(1, MAX_SMP), default=2, help="vCPUs (default: 2)")
    boot.add_argument("--memory", default="512M", help="guest RAM (default: 512M)")
    boot.add_argument("--kpti", action="store_true", help="kpti=1 on the kernel command line")
    boot.add_argument("--append", action="append", default=[], metavar="WORD",
                      help="more kernel command line (repeatable)")
    boot.add_argument("--pages", type=int_in(1, MAX_SMOKE_PAGES), default=4,
                      help=f"pages the smoke workload maps (1..{MAX_SMOKE_PAGES})")
    boot.add_argument("--timeout", type=seconds, default=120.0,
                      help="seconds to READY before the boot counts as hung (default: 120)")
    boot.add_argument("--log", default="kernel.console.log",
                      help="console log file (default: kernel.console.log)")
    boot.add_argument("--json", action="store_true", help="print the result as JSON")

    run = sub.add_parser("run", help="run workload scenarios on a real kernel, its TLBI/DSB/ISB "
                                     "traced per step, checked against the golden model and "
                                     "by the model-free checks")
    run.add_argument("scenarios", nargs="*", metavar="SCENARIO|DIR",
                     help="workload scenarios (target = \"kernel\"; docs/scenarios.md) or "
                          "folders of them (default: the library guests/kernel/); a "
                          "debian:SUITE word is taken as --kernel")
    run.add_argument("--kernel", dest="kernel_option", metavar="debian:SUITE[-16k]|PATH",
                     help=f"the kernel: a Debian kernel or an Image file (default: "
                          f"{DEFAULT_KERNEL})")
    run.add_argument("--config", metavar="FILE",
                     help="the kernel's .config (with a PATH; default: beside the Image)")
    run.add_argument("--policy", metavar="NAME",
                     help="the modelled release to compare with (default: the newest not newer "
                          "than the kernel's release)")
    _machine_args(run)
    run.add_argument("--symbols", metavar="vmlinux|System.map",
                     help="the kernel's symbols (default: the guest's /proc/kallsyms, read once "
                          "per Image and cached)")
    run.add_argument("--log", default="kernel.console.log",
                     help="console log file (default: kernel.console.log)")
    run.add_argument("--inject", metavar="BUG",
                     help="boot a patched copy of the Image carrying a real-kernel bug ("
                          "'shootdown bugs --kernel'); the run passes only if a check catches it")
    run.add_argument("--trace-method", choices=("plugin", "singlestep"),
                     help="how windows are traced: the TCG plugin (opt-in; QEMU >= 9.0) or "
                          "single-stepping with the exec log (the default)")
    run.add_argument("--json", action="store_true",
                     help="print every step's teardown stream, the rest of its window (with "
                          "the reason each was set aside), the checks and the timings as JSON")
    _table_args(sub)


def _table_args(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from shootdown.kernel.table import CPUS, KERNELS

    table = sub.add_parser("table", help="kernel x CPU x kpti x workload: every cell a whole "
                                         "`kernel run` of the library, as one Markdown table")
    table.add_argument("--kernel", action="append", metavar="debian:SUITE[-16k]|PATH",
                       help=f"kernels (repeatable; default: {' '.join(KERNELS)})")
    table.add_argument("--cpu", action="append", choices=tuple(CPUS),
                       help=f"CPUs (repeatable; default: {' '.join(CPUS)})")
    table.add_argument("--kpti", choices=("off", "on", "both"), default="both",
                       help="kpti=1 on the command line: off, on or both (default)")
    table.add_argument("--write", metavar="DOC.md",
                       help="put the table between the kernel-table markers of DOC.md "
                            "(docs/kernel.md)")
    table.add_argument("--json", metavar="FILE", dest="json_out",
                       help="also write the rows, with each workload's issued and modelled "
                            "instruction counts, as JSON (shootdown report shows them when "
                            "the file is kernel-table.json beside the results)")
    table.add_argument("--logdir", default="kernel-table-logs",
                       help="console logs, one per cell (default: ./kernel-table-logs)")
    table.add_argument("--timeout", type=seconds, default=180.0,
                       help="seconds to READY per boot (default: 180)")
    table.add_argument("scenarios", nargs="*", metavar="SCENARIO|DIR",
                       help="workloads (default: the library guests/kernel/)")


def _machine_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cpu", default="max,pauth-impdef=on",
                        help="QEMU -cpu (default: max,pauth-impdef=on)")
    parser.add_argument("--smp", type=int_in(1, MAX_SMP), default=2, help="vCPUs (default: 2)")
    parser.add_argument("--memory", default="1G",
                        help="guest RAM (default: 1G; below 512 MiB of usable RAM the kernel "
                             "turns THP off, mm/huge_memory.c hugepage_init)")
    parser.add_argument("--kpti", action="store_true", help="kpti=1 on the kernel command line")
    parser.add_argument("--append", action="append", default=[], metavar="WORD",
                        help="more kernel command line (repeatable)")
    parser.add_argument("--timeout", type=seconds, default=120.0,
                        help="seconds to READY before the boot counts as hung (default: 120)")


def _kernel_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kernel", nargs="?", default=DEFAULT_KERNEL,
                        metavar="debian:SUITE[-16k]|PATH",
                        help=f"a Debian kernel or an Image file (default: {DEFAULT_KERNEL})")
    parser.add_argument("--kernel", dest="kernel_option", metavar="debian:SUITE[-16k]|PATH",
                        help="the same as the positional KERNEL (the spelling of the other "
                             "commands)")
    parser.add_argument("--config", metavar="FILE",
                        help="the kernel's .config (with a PATH; default: beside the Image)")


def main(args: argparse.Namespace) -> int:
    """Run the chosen action."""
    if args.action == "fetch":
        return _fetch(args)
    if args.action == "info":
        return _info(args)
    if args.action == "run":
        return _run(args)
    if args.action == "table":
        return _table(args)
    return _boot(args)


def _table(args: argparse.Namespace) -> int:
    import datetime
    import sys

    from shootdown.cli import ExitCode, exit_code_for_verdict
    from shootdown.guest.argv import default_qemu
    from shootdown.guest.qemu import format_version, version
    from shootdown.kernel import table as kt

    args.kernel_option = None
    workloads = _workloads(args)
    kernels = args.kernel or list(kt.KERNELS)
    cpus = args.cpu or list(kt.CPUS)
    kptis = {"off": [False], "on": [True], "both": [False, True]}[args.kpti]

    def show(cell: list[kt.Row]) -> None:
        r = cell[0]
        print(f"{r.kernel} {r.cpu} kpti={'on' if r.kpti else 'off'}: "
              f"{', '.join(f'{x.workload} {x.verdict}' for x in cell)}", file=sys.stderr)

    rows = kt.run_table(kernels, cpus, kptis, workloads, log_dir=Path(args.logdir),
                        on_cell=show, boot_timeout=args.timeout)
    text = kt.render(rows)
    print(text, end="")
    if args.json_out:
        import json

        try:
            Path(args.json_out).write_text(json.dumps(kt.rows_json(rows), indent=1) + "\n")
        except OSError as exc:
            from shootdown.errors import InfraError

            raise InfraError(f"{args.json_out}: cannot write: {exc.strerror or exc}") from exc
    if args.write:
        stamp = datetime.date.today().isoformat()
        qemu = format_version(version(default_qemu()))
        header = (f"Generated {stamp} by `shootdown kernel table` (QEMU {qemu}, TCG, 2 vCPUs, "
                  f"1G; {len(workloads)} workloads of guests/kernel/).")
        kt.update_doc(Path(args.write), text, header)
        print(f"written: {args.write}", file=sys.stderr)
    verdict = kt.table_verdict(rows)
    missing = kt.not_run(rows)
    for r in missing:
        print(f"not run: {r.kernel} {r.cpu} kpti={'on' if r.kpti else 'off'}: {r.note}",
              file=sys.stderr)
    if verdict.name != "FAIL" and missing:
        return int(ExitCode.INFRA)
    return int(exit_code_for_verdict(verdict))


def _fetch(args: argparse.Namespace) -> int:
    from shootdown.kernel.fetch import fetch, parse_spec

    kernels = [parse_spec(spec) for spec in args.specs]  # all bad input first, exit 2
    records = []
    for kernel in kernels:
        t0 = time.monotonic()
        cached, downloaded = fetch(kernel, refresh=True)
        record = dict(cached.info, image=str(cached.image), config=str(cached.config),
                      downloaded=downloaded, seconds=round(time.monotonic() - t0, 1))
        records.append(record)
        if not args.json:
            packages = record["packages"]
            assert isinstance(packages, dict)
            names = sorted({p["package"] for p in packages.values()})
            size = sum(p["size"] for p in {p["package"]: p for p in packages.values()}.values())
            how = (f"downloaded and unpacked in {record['seconds']} s" if downloaded else
                   f"already cached (archive checked in {record['seconds']} s)")
            print(f"{kernel.name}: {cached.version} ({', '.join(names)}, "
                  f"{size / 1e6:.1f} MB, SHA256 verified) {how}")
            print(f"  Image  {cached.image} ({cached.image.stat().st_size / 1e6:.1f} MB)")
            print(f"  config {cached.config}")
    if args.json:
        print(json.dumps(records, indent=2))
    return 0


def _describe(info: KernelInfo, policy: str, chosen: bool) -> list[str]:
    def yes(flag: bool | None) -> str:
        return "unknown (no config)" if flag is None else ("yes" if flag else "no")

    from shootdown.kernel.info import kernel_policy

    why = kernel_policy(info)[1] if chosen else "given with --policy"
    return [
        f"banner:     {info.banner}",
        f"release:    {info.release} (upstream {info.upstream or 'unknown'})",
        f"page size:  {info.page_size_kib}K (Image header: "
        f"{f'{info.header_page_size_kib}K' if info.header_page_size_kib else 'unspecified'})",
        f"VA bits:    {info.va_bits if info.va_bits is not None else 'unknown (no config)'}",
        f"KPTI:       {yes(info.kpti)} (CONFIG_UNMAP_KERNEL_AT_EL0)",
        f"LPA2:       {yes(info.lpa2)} (CONFIG_ARM64_LPA2)",
        f"range TLBI: {yes(info.tlb_range)} (CONFIG_ARM64_TLB_RANGE, on CPUs with FEAT_TLBIRANGE)",
        f"TTL hints:  {yes(info.ttl)} (v5.9+, on CPUs with FEAT_TTL)",
        f"policy:     {policy} ({why})",
    ]


def _locate(args: argparse.Namespace) -> KernelFiles:
    from shootdown.kernel.locate import locate

    return locate(args.kernel_option or getattr(args, "kernel", None) or DEFAULT_KERNEL,
                  args.config)


def _info(args: argparse.Namespace) -> int:
    from shootdown.kernel.info import kernel_policy, read_info
    from shootdown.model.policy import get_policy

    files = _locate(args)
    info = read_info(files.image, files.config)
    if args.policy:
        policy, chosen = get_policy(args.policy).name, False
    else:
        policy, chosen = kernel_policy(info)[0], True
    if args.json:
        print(json.dumps(dict(info.as_dict(), kernel=files.label, policy=policy,
                              policy_chosen=chosen, package_version=files.package_version),
                         indent=2))
        return 0
    print(f"{files.label}" + (f" ({files.package_version})" if files.package_version else ""))
    for line in _describe(info, policy, chosen):
        print(f"  {line}")
    return 0


def _boot(args: argparse.Namespace) -> int:
    from shootdown.kernel.boot import KernelMachine, MachineSpec
    from shootdown.kernel.smoke import run_smoke

    files = _locate(args)
    spec = MachineSpec(cpu=args.cpu, smp=args.smp, memory=args.memory,
                       append=(*(("kpti=1",) if args.kpti else ()), *args.append))
    t0 = time.monotonic()
    with KernelMachine(files, log_path=args.log, spec=spec, boot_timeout=args.timeout) as vm:
        result = run_smoke(vm, pages=args.pages)
        boot_s = vm.boot_seconds
    total = time.monotonic() - t0
    if args.json:
        print(json.dumps({
            "kernel": files.label, "image": str(files.image), "argv": vm.argv,
            "boot_to_ready_s": boot_s, "total_s": total, "ready": vm.ready,
            "passed": result.passed, "problems": list(result.problems),
            "steps": [{"number": s.number, "op": s.op, "rc": s.rc, "ns": s.ns,
                       "fields": s.fields, "between": list(s.between)} for s in result.steps],
        }, indent=2))
    else:
        print(f"{files.label}: READY after {boot_s:.2f} s "
              f"(pagesize {vm.ready.get('pagesize')}, probe on cpu {vm.ready.get('probe_cpu')})")
        for s in result.steps:
            extra = " ".join(f"{k}={v}" for k, v in s.fields.items() if k not in ("rc", "ns"))
            print(f"  step {s.number} {s.op:<6} rc={s.rc} {s.ns / 1e6:7.2f} ms  {extra}")
        for problem in result.problems:
            print(f"  FAIL: {problem}")
        print(f"{'PASS' if result.passed else 'FAIL'}: {result.pages} pages unmapped, "
              f"{result.stale_after_unmap} stale on the other CPU; {total:.2f} s in all "
              f"(log: {args.log})")
    return 0 if result.passed else 1


#: the workload library ``kernel run`` runs without SCENARIO
LIBRARY = Path(__file__).resolve().parents[3] / "guests" / "kernel"


def _workloads(args: argparse.Namespace) -> list[Workload]:
    """The workload scenarios named (``debian:`` words become the kernel), all validated."""
    from shootdown.errors import ConfigError
    from shootdown.scenario.workload import load_workloads

    paths = []
    for word in args.scenarios:
        if word.startswith("debian:"):
            if args.kernel_option and args.kernel_option != word:
                raise ConfigError(f"{word}: a second kernel (--kernel {args.kernel_option})")
            args.kernel_option = word
        else:
            paths.append(word)
    out: list[Workload] = []
    for path in paths or [str(LIBRARY)]:
        out += load_workloads(path)
    return out


def _run(args: argparse.Namespace) -> int:
    from dataclasses import asdict
    from pathlib import Path

    from shootdown.cli import ExitCode, exit_code_for_verdict
    from shootdown.errors import ConfigError
    from shootdown.kernel.boot import MachineSpec
    from shootdown.kernel.run import run_kernel

    if args.smp < 2:
        raise ConfigError("--smp: at least 2 (the probe runs on another CPU)")
    if args.inject is not None:
        from shootdown.kernel.inject import get_bug

        get_bug(args.inject)  # an unknown name is bad input before anything is fetched
    workloads = _workloads(args)  # every file validated before anything is fetched or booted
    if args.policy:
        from shootdown.model.policy import get_policy

        get_policy(args.policy)
    if args.symbols:  # a FIFO or folder is told before anything is fetched
        from shootdown.inputfile import regular_file

        regular_file(args.symbols, "vmlinux or System.map",
                     error=lambda reason: ConfigError(f"--symbols: {args.symbols}: {reason}"))
    files = _locate(args)
    spec = MachineSpec(cpu=args.cpu, smp=args.smp, memory=args.memory,
                       append=(*(("kpti=1",) if args.kpti else ()), *args.append))
    t0 = time.monotonic()
    run = run_kernel(files, spec=spec, log_path=args.log, boot_timeout=args.timeout,
                     symbols_path=Path(args.symbols) if args.symbols else None,
                     inject=args.inject, workloads=workloads, policy=args.policy,
                     trace_method=args.trace_method)
    total = time.monotonic() - t0
    verdict = run.verdict
    if args.json:
        print(json.dumps({
            "kernel": run.kernel, "release": run.info.release, "argv": list(run.argv),
            "symbols": run.symbols, "asid": run.asid, "kpti": run.kpti, "lpa2": run.lpa2,
            "policy": run.policy, "cpu_features": list(run.features),
            "skipped": [{"path": p, "reason": r} for p, r in run.skipped],
            "verdict": str(verdict), "inject": _injection_json(run),
            "trace_method": run.trace_method,
            "timings": {"prepare_s": run.prepare_s, "boot_to_ready_s": run.boot_s,
                        "ready_to_verdict_s": run.after_boot_s, "total_s": total,
                        "asid_window_s": run.switch_s,
                        "workload_steps": run.workload_steps,
                        "steps_per_s_after_boot": run.workload_steps / run.after_boot_s},
            "switch_window": [asdict(op) for op in run.switch_window],
            "vmas": [{"start": f"{lo:#x}", "end": f"{hi:#x}", "what": what}
                     for lo, hi, what in run.vmas],
            "thp_mode": run.thp_mode,
            "steps": [{
                "case": s.case, "number": s.result.number, "op": s.stream.step,
                "start": s.stream.start, "end": s.stream.end, "rc": s.result.rc,
                "guest_ns": s.result.ns, "seconds": s.seconds,
                "verdict": str(run.step_verdict(s)),
                "counts": s.stream.counts(), "facts": asdict(s.facts),
                "checks": [asdict(c) for c in s.checks], "problems": list(s.problems),
                "model": asdict(s.model) if s.model is not None else None,
                "stale_pages": s.stale, "logged_non_sites": s.non_sites,
                "teardown": [asdict(op) for op in s.stream.ops],
                "rest": [dict(asdict(r.op), reason=r.reason) for r in s.stream.rest],
            } for s in run.steps],
        }, indent=2))
        return exit_code_for_verdict(verdict)
    print(f"{run.kernel}: {run.info.release}, READY after {run.boot_s:.2f} s; ASID {run.asid}, "
          f"KPTI {'on' if run.kpti else 'off'}, symbols from {run.symbols}, "
          f"traced by {run.trace_method}")
    if run.policy is not None:
        from shootdown.kernel.info import kernel_policy

        why = "given with --policy" if args.policy else kernel_policy(run.info)[1]
        print(f"  model: policy {run.policy} ({why}), CPU features from the boot log: "
              f"{', '.join(run.features) or 'none'}")
    for path, reason in run.skipped:
        print(f"  SKIP {path}: {reason}")
    if run.injection is not None:
        bug = run.injection.bug
        print(f"  inject {bug.name}: {len(run.injection.patches)} words patched in a private "
              f"copy ({bug.patches}); must be caught by {bug.caught_by}")
    for s in run.steps:
        counts = ", ".join(f"{v} {k.replace('_', ' ').upper()}"
                           for k, v in s.stream.counts().items())
        print(f"  step {s.result.number} {s.stream.step} {s.case} [{s.stream.start:#x}, "
              f"{s.stream.end:#x})"
              f": {str(run.step_verdict(s)).upper()} ({counts}; {len(s.stream.rest)} other "
              f"instructions in the window; {s.seconds:.2f} s)")
        for op in s.stream.ops:
            print(f"      {op}")
        for c in s.checks:
            print(f"    {c.status.upper():<4} {c.name}: {c.reason}")
        if s.model is not None:
            print(f"    {s.model.status.upper():<4} model ({s.model.policy}): {s.model.reason}")
            for line in s.model.calls if s.model.status != "pass" else ():
                print(f"      {line}")
            for line in (*s.model.divergence.splitlines(), *s.model.diff):
                print(f"      {line}")
        for problem in s.problems:
            print(f"    FAIL {problem}")
    if run.injection is not None:
        print(f"{str(verdict).upper()}: {_INJECTED[verdict].format(run.injection.bug.name)}")
    statuses = [s.model.status for s in run.steps if s.model is not None]
    if statuses:
        print("  model: " + ", ".join(f"{statuses.count(k)} {k}" for k in
                                      ("pass", "fail", "model-gap", "not-modelled")))
    print(f"{str(verdict).upper()}: {len(run.steps)} steps traced and checked; "
          f"{run.workload_steps} workload steps in {run.after_boot_s:.2f} s after READY "
          f"({run.workload_steps / run.after_boot_s:.1f} steps/s); {total:.2f} s in all "
          f"(log: {args.log})")
    return int(exit_code_for_verdict(verdict)) if verdict is not None else int(ExitCode.INTERNAL)


#: What a run's verdict under ``--inject`` means (the firmware's words).
_INJECTED = {
    "caught": "the injected bug {} was caught",
    "missed": "the injected bug {} ran in a checked step and no check noticed: the checks "
              "are blind to it",
    "not-applicable": "no patched site of {} executed in a checked step (with --kpti for the "
                      "KPTI copy): nothing could have caught it",
    "fail": "a step failed without {} running in it",
}


def _injection_json(run: KernelRun) -> dict[str, object] | None:
    if run.injection is None:
        return None
    from dataclasses import asdict

    return {"bug": asdict(run.injection.bug), "image": str(run.injection.image),
            "patches": [asdict(p) for p in run.injection.patches]}
