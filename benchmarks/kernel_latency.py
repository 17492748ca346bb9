#!/usr/bin/env python3
"""What tracing and checking a real kernel costs: ``kernel run`` against the same boot untraced.

Both variants boot the same kernel Image with the same initramfs (the
workload) on the same machine options, and run the same workload steps
(``SWITCH-MM``, then per unmap case of :data:`shootdown.kernel.run.DEFAULT_STEPS`:
``MMAP`` populated, ``PROBE``, ``MUNMAP``, ``PROBE``):

* ``untraced``: :class:`~shootdown.kernel.boot.KernelMachine` with no
  ``-dfilter``, no QMP, no handshake, no checks: the floor;
* ``traced``: :func:`shootdown.kernel.run.run_kernel`, the whole of
  ``shootdown kernel run`` but the printing: windows (single-stepping with
  the exec log over every maintenance site), reading the logs, separating,
  checking.

Interleaved ``--repeat`` times; medians of boot-to-READY, READY-to-verdict,
QEMU-start-to-verdict and steps per second after READY, and the ratios
traced/untraced.  ``--qemu`` (repeatable) measures under several QEMUs,
and ``--method`` (repeatable: ``plugin``, ``singlestep``) each tracing
method a QEMU can run (the plugin needs QEMU >= 9.0 and its header; a
method a QEMU cannot run is reported as skipped).  ``--workload`` runs
the scenario library (``guests/kernel``, ~46 steps in one boot) instead of
the built-in cases, in both variants.  Symbols and sites are cached before measuring (the
first ``kernel run`` of an Image boots once more to read kallsyms).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from shootdown.errors import ShootdownError
from shootdown.guest.qemu import format_version, version
from shootdown.kernel import plugin
from shootdown.kernel.boot import KernelMachine, MachineSpec
from shootdown.kernel.locate import locate
from shootdown.kernel.run import DEFAULT_STEPS, run_kernel, table_span
from shootdown.scenario.workload import Workload, load_workloads

LIBRARY = Path(__file__).resolve().parents[1] / "guests" / "kernel"


def untraced(kernel: str, spec: MachineSpec, qemu: str, log: str,
             counts: list[tuple[str, tuple[str, ...]]] | None = None) -> dict[str, float]:
    """``counts``: replay these workload commands (a traced run's) instead of the built-in cases."""
    files = locate(kernel)
    t0 = time.monotonic()
    with KernelMachine(files, log_path=log, spec=spec, qemu=qemu) as vm:
        assert vm.t_ready is not None and vm.boot_seconds is not None
        if counts is not None:
            for op, words in counts:
                vm.step(op, *words)
            after = time.monotonic() - vm.t_ready
            steps = vm.steps_run
            return {"boot_s": vm.boot_seconds, "after_boot_s": after,
                    "total_s": time.monotonic() - t0, "steps": steps,
                    "steps_per_s": steps / after}
        page = int(vm.ready.get("pagesize", "4096"))
        steps = 1
        vm.step("SWITCH-MM", 0, 0)
        for case in DEFAULT_STEPS:
            pages = case.pages if case.pages is not None else table_span(page) // page
            length = pages * page
            vm.step("MMAP", case.addr, length, "populate")
            vm.step("PROBE", case.addr, length)
            vm.step("MUNMAP", case.addr, length)
            vm.step("PROBE", case.addr, length)
            steps += 4
        after = time.monotonic() - vm.t_ready
        boot = vm.boot_seconds
    return {"boot_s": boot, "after_boot_s": after, "total_s": time.monotonic() - t0,
            "steps": steps, "steps_per_s": steps / after}


def traced(kernel: str, spec: MachineSpec, qemu: str, log: str, method: str,
           workloads: list[Workload] | None = None) -> dict[str, float]:
    files = locate(kernel)
    t0 = time.monotonic()
    run = run_kernel(files, spec=spec, log_path=log, qemu=qemu, trace_method=method,
                     workloads=workloads)
    return {"boot_s": run.boot_s, "after_boot_s": run.after_boot_s,
            "total_s": time.monotonic() - t0, "steps": run.workload_steps,
            "steps_per_s": run.workload_steps / run.after_boot_s,
            "asid_window_s": run.switch_s, "passed": float(str(run.verdict) == "pass"),
            **({f"{s.case}_window_s": s.seconds for s in run.steps} if workloads is None
               else {"checked_steps_per_s": len(run.steps) / run.after_boot_s})}


def replay(kernel: str, spec: MachineSpec, qemu: str,
           log: str) -> list[tuple[str, tuple[str, ...]]]:
    """The workload commands a traced scenario-library run sends, recorded to replay untraced."""
    sent: list[tuple[str, tuple[str, ...]]] = []
    real = KernelMachine.step

    def spy(vm: KernelMachine, op: str, *args: int | str, window: object = None
            ) -> object:
        sent.append((op, tuple(f"0x{a:x}" if isinstance(a, int) else a for a in args)))
        return real(vm, op, *args, window=window)  # type: ignore[arg-type]

    KernelMachine.step = spy  # type: ignore[method-assign,assignment]
    try:
        run_kernel(locate(kernel), spec=spec, log_path=log, qemu=qemu,
                   trace_method="singlestep", workloads=load_workloads(str(LIBRARY)))
    finally:
        KernelMachine.step = real  # type: ignore[method-assign]
    return sent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kernel", default="debian:bookworm")
    parser.add_argument("--qemu", action="append", default=[],
                        help="QEMU binary (repeatable; default qemu-system-aarch64)")
    parser.add_argument("--cpu", default="max,pauth-impdef=on")
    parser.add_argument("--kpti", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--method", action="append", default=[], choices=plugin.METHODS,
                        help="tracing method (repeatable; default: both)")
    parser.add_argument("--workload", action="store_true",
                        help="the scenario library (guests/kernel) instead of the built-in cases")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    spec = MachineSpec(cpu=args.cpu, append=("kpti=1",) if args.kpti else ())
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        log = str(Path(tmp) / "console.log")
        for qemu in args.qemu or ["qemu-system-aarch64"]:
            v = version(qemu)
            workloads = load_workloads(str(LIBRARY)) if args.workload else None
            counts = replay(args.kernel, spec, qemu, log) if args.workload else None
            for method in args.method or list(plugin.METHODS):
                try:
                    plugin.choose_method(v, method)
                    if method == "plugin":
                        plugin.build(v)
                except ShootdownError as e:
                    out.append({"qemu": format_version(v), "method": method, "skipped": str(e)})
                    continue
                # warm caches; a failure is the plugin's wrong-vCPU defect (kernel/plugin.py)
                with contextlib.suppress(ShootdownError):
                    run_kernel(locate(args.kernel), spec=spec, log_path=log, qemu=qemu,
                               trace_method=method)
                samples: dict[str, list[dict[str, float]]] = {"untraced": [], "traced": []}
                for _ in range(args.repeat):
                    samples["untraced"].append(untraced(args.kernel, spec, qemu, log, counts))
                    for _attempt in range(3):  # a boot the plugin's vCPU defect broke: again
                        try:
                            samples["traced"].append(traced(args.kernel, spec, qemu, log,
                                                            method, workloads))
                            break
                        except ShootdownError as e:
                            print(f"traced run failed ({e}); again", file=sys.stderr)
                med = {variant: {key: statistics.median(s[key] for s in runs)
                                 for key in runs[0]}
                       for variant, runs in samples.items()}
                ratio = {key: med["traced"][key] / med["untraced"][key]
                         for key in ("boot_s", "after_boot_s", "total_s")}
                out.append({"qemu": format_version(v), "method": method, "kernel": args.kernel,
                            "cpu": args.cpu, "kpti": args.kpti, "repeat": args.repeat,
                            "workload": "guests/kernel" if args.workload else "built-in cases",
                            "median": med, "ratio": ratio})
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    for r in out:
        if "skipped" in r:
            print(f"QEMU {r['qemu']}, method {r['method']}: skipped: {r['skipped']}")
            continue
        u, t = r["median"]["untraced"], r["median"]["traced"]
        print(f"QEMU {r['qemu']}, method {r['method']}, {r['kernel']}, -cpu {r['cpu']}, "
              f"kpti={r['kpti']}, {r['workload']}, median of {r['repeat']}:")
        print(f"  {'':10} {'boot':>7} {'after READY':>12} {'total':>7} {'steps/s':>8}")
        for name, m in (("untraced", u), ("traced", t)):
            print(f"  {name:10} {m['boot_s']:6.2f}s {m['after_boot_s']:11.2f}s "
                  f"{m['total_s']:6.2f}s {m['steps_per_s']:8.1f}")
        print(f"  ratio traced/untraced: after READY {r['ratio']['after_boot_s']:.1f}x, "
              f"QEMU start to verdict {r['ratio']['total_s']:.2f}x")
        print("  traced windows: " + ", ".join(f"{k[:-2]} {v:.2f}s" for k, v in t.items()
                                               if k.endswith("_window_s")))
        if "checked_steps_per_s" in t:
            print(f"  checked steps/s after READY: {t['checked_steps_per_s']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
