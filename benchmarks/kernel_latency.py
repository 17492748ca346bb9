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
traced/untraced.  ``--qemu`` (repeatable) measures under several QEMUs
(the tracing method is the same: single-stepping windows; the plugin route
does not exist yet).  Symbols and sites are cached before measuring (the
first ``kernel run`` of an Image boots once more to read kallsyms).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from shootdown.guest.qemu import format_version, version
from shootdown.kernel.boot import KernelMachine, MachineSpec
from shootdown.kernel.locate import locate
from shootdown.kernel.run import DEFAULT_STEPS, run_kernel, table_span


def untraced(kernel: str, spec: MachineSpec, qemu: str, log: str) -> dict[str, float]:
    files = locate(kernel)
    t0 = time.monotonic()
    with KernelMachine(files, log_path=log, spec=spec, qemu=qemu) as vm:
        assert vm.t_ready is not None and vm.boot_seconds is not None
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


def traced(kernel: str, spec: MachineSpec, qemu: str, log: str) -> dict[str, float]:
    files = locate(kernel)
    t0 = time.monotonic()
    run = run_kernel(files, spec=spec, log_path=log, qemu=qemu)
    if str(run.verdict) != "pass":
        raise SystemExit(f"kernel run did not pass: {run.verdict}")
    return {"boot_s": run.boot_s, "after_boot_s": run.after_boot_s,
            "total_s": time.monotonic() - t0, "steps": run.workload_steps,
            "steps_per_s": run.workload_steps / run.after_boot_s,
            "asid_window_s": run.switch_s,
            **{f"{s.case}_window_s": s.seconds for s in run.steps}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kernel", default="debian:bookworm")
    parser.add_argument("--qemu", action="append", default=[],
                        help="QEMU binary (repeatable; default qemu-system-aarch64)")
    parser.add_argument("--cpu", default="max,pauth-impdef=on")
    parser.add_argument("--kpti", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    spec = MachineSpec(cpu=args.cpu, append=("kpti=1",) if args.kpti else ())
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        log = str(Path(tmp) / "console.log")
        for qemu in args.qemu or ["qemu-system-aarch64"]:
            run_kernel(locate(args.kernel), spec=spec, log_path=log, qemu=qemu)  # warm caches
            samples: dict[str, list[dict[str, float]]] = {"untraced": [], "traced": []}
            for _ in range(args.repeat):
                samples["untraced"].append(untraced(args.kernel, spec, qemu, log))
                samples["traced"].append(traced(args.kernel, spec, qemu, log))
            med = {variant: {key: statistics.median(s[key] for s in runs) for key in runs[0]}
                   for variant, runs in samples.items()}
            ratio = {key: med["traced"][key] / med["untraced"][key]
                     for key in ("boot_s", "after_boot_s", "total_s")}
            out.append({"qemu": format_version(version(qemu)), "kernel": args.kernel,
                        "cpu": args.cpu, "kpti": args.kpti, "repeat": args.repeat,
                        "median": med, "ratio": ratio})
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    for r in out:
        u, t = r["median"]["untraced"], r["median"]["traced"]
        print(f"QEMU {r['qemu']}, {r['kernel']}, -cpu {r['cpu']}, kpti={r['kpti']}, "
              f"median of {r['repeat']}:")
        print(f"  {'':10} {'boot':>7} {'after READY':>12} {'total':>7} {'steps/s':>8}")
        for name, m in (("untraced", u), ("traced", t)):
            print(f"  {name:10} {m['boot_s']:6.2f}s {m['after_boot_s']:11.2f}s "
                  f"{m['total_s']:6.2f}s {m['steps_per_s']:8.1f}")
        print(f"  ratio traced/untraced: after READY {r['ratio']['after_boot_s']:.1f}x, "
              f"QEMU start to verdict {r['ratio']['total_s']:.2f}x")
        print("  traced windows: " + ", ".join(f"{k[:-2]} {v:.2f}s" for k, v in t.items()
                                               if k.endswith("_window_s")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
