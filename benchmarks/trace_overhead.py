#!/usr/bin/env python3
"""Trace overhead: the same guest session with and without QEMU's execution trace.

One session = boot the firmware, wait for ``READY``, run a command, ``BYE``,
QEMU exits.  The commands are ``SMOKE`` and one scenario (a 64-page
``flush_tlb_range`` and a gather that frees a page table, KPTI on: ~150
maintenance instructions).  Variants, interleaved so that machine noise hits
all alike, ``--repeat`` times each, timed from fork to exit:

* ``untraced``: the guest's argv as ``shootdown run`` builds it;
* ``traced``: what ``shootdown run --trace`` uses (``session.traced``):
  ``-d exec,cpu -D LOG -dfilter`` on the firmware's maintenance stubs
  (firmware/src/maint.S), which sit on a page of their own so QEMU logs
  every entry into them without ``-d nochain`` or single-stepping;
* ``traced-singlestep``: the earlier way, ``-d exec,nochain,cpu`` with one
  instruction per block (``-singlestep`` before QEMU 8.1,
  ``-accel tcg,...,one-insn-per-tb=on`` since; ``shootdown.guest.qemu``
  picks it for ``--qemu``) on the same stubs, for comparison (slows every block);
* ``traced-all``: that, on every TLBI/DSB/ISB of the ELF (boot code, core,
  engine): a wider log.

Each traced scenario run is also checked: the executed sequence on CPU 0
must equal the guest's report.  Prints medians and the traced/untraced
ratio per command (target: at most 3x); ``--json`` for machines.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TARGET_RATIO = 3.0
SCENARIO = [
    "SCN id=1 policy=v5.4 granule={granule} va_bits=48 asid=5 kpti=1 ttl=0 tlbirange=0 "
    "inject=none",
    "MAP level=3 addr=0x400000 count=64",
    "STEP n=1 kind=flush_tlb_range start=0x400000 end={end:#x} stride={page:#x} last_level=1",
    "STEP n=2 kind=gather fullmm=0",
    "OP name=remove_pte addr=0x400000 count=8",
    "OP name=free_pte_table addr=0x400000",
    "GO",
]
_RECORD = re.compile(r"^SD1 \d+ ([A-Z]+)((?: \S+=\S+)*) \*[0-9a-f]{8}$")


def session(argv: list[str], command: bytes) -> tuple[float, list[str]]:
    """Run one guest session; (wall seconds, console lines)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    from shootdown.trace.console import encode_command

    pending = [command, encode_command("BYE")]
    lines: list[str] = []
    for raw in proc.stdout:  # the host speaks only after READY (docs/protocol.md)
        line = raw.decode(errors="replace").rstrip("\r\n")
        lines.append(line)
        if " READY " in line and pending:
            proc.stdin.write(pending.pop(0))
            proc.stdin.flush()
    code = proc.wait()
    elapsed = time.perf_counter() - start
    if code != 0 or not any(" END " in line and "status=ok" in line for line in lines):
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        sys.exit(f"trace_overhead: session failed ({code}):\n" + "\n".join(lines[-10:]) + err)
    return elapsed, lines


def reported(lines: list[str]) -> list[tuple[str, dict[str, str]]]:
    """The (tag, payload) of every record on the console."""
    out = []
    for line in lines:
        m = _RECORD.match(line)
        if m:
            out.append((m.group(1), dict(kv.split("=", 1) for kv in m.group(2).split())))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10, help="runs per variant (default 10)")
    parser.add_argument("--guest", default="virt-a72", help="guest definition (default virt-a72)")
    parser.add_argument("--granule", default="4k", choices=("4k", "16k", "64k"))
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--qemu", help="QEMU binary (default: $SHOOTDOWN_QEMU or "
                                       "qemu-system-aarch64)")
    args = parser.parse_args()

    from shootdown.elfsyms import ElfImage
    from shootdown.guest.argv import build_argv, default_qemu
    from shootdown.guest.definition import find_guest
    from shootdown.guest.qemu import version
    from shootdown.session import MAINTENANCE_STUBS, traced
    from shootdown.trace.console import encode_command
    from shootdown.trace.qemu_log import (
        expand_report,
        maintenance_ranges,
        trace_ops,
        trace_qemu_args,
    )

    guest = find_guest(args.guest)
    firmware = guest.firmware_path(args.granule)
    image = ElfImage(firmware)
    qemu = args.qemu or default_qemu()
    qemu_version = version(qemu)  # the single-stepping option depends on it
    base = build_argv(guest, firmware, qemu=qemu)
    page = {"4k": 0x1000, "16k": 0x4000, "64k": 0x10000}[args.granule]
    scenario = b"".join(encode_command(line.format(granule=args.granule, page=page,
                                                   end=0x400000 + 64 * page))
                        for line in SCENARIO)
    commands = {"smoke": encode_command("SMOKE"), "scenario": scenario}
    with tempfile.TemporaryDirectory(prefix="shootdown-trace-") as tmp:
        log = str(Path(tmp) / "exec.log")
        stubs = maintenance_ranges(image, [fn.name for fn in image.functions
                                           if fn.name.startswith(MAINTENANCE_STUBS)])
        variants = {
            "untraced": base,
            "traced": build_argv(traced(guest, args.granule, log), firmware, qemu=qemu),
            "traced-singlestep": trace_qemu_args(base, log, stubs, qemu_version),
            "traced-all": trace_qemu_args(base, log, maintenance_ranges(image), qemu_version),
        }
        samples: dict[tuple[str, str], list[float]] = {}
        log_bytes: dict[str, int] = {}
        for _ in range(args.repeat + 1):  # the first round warms caches and is dropped
            for cmd_name, command in commands.items():
                for name, argv in variants.items():
                    elapsed, lines = session(argv, command)
                    samples.setdefault((cmd_name, name), []).append(elapsed)
                    if name == "untraced" or cmd_name != "scenario":
                        continue
                    log_bytes[name] = Path(log).stat().st_size
                    if name != "traced-all":  # helpers only: must equal the report
                        trace = [op.key() for op in trace_ops(image, log).get(0, [])]
                        report = [op.key() for op in expand_report(reported(lines))]
                        if trace != report:
                            sys.exit(f"trace_overhead: {name}: trace ({len(trace)} ops) "
                                     f"differs from the report ({len(report)} ops)")
    median = {f"{c}/{n}": statistics.median(v[1:]) for (c, n), v in samples.items()}
    ratios = {f"{c}/{n}": round(median[f"{c}/{n}"] / median[f"{c}/untraced"], 2)
              for (c, n) in samples if n != "untraced"}
    figures = {
        "repeat": args.repeat, "guest": args.guest, "granule": args.granule,
        "median_s": {k: round(v, 4) for k, v in median.items()},
        "ratio_traced_over_untraced": ratios,
        "scenario_log_bytes": log_bytes,
        "dfilter_ranges_stubs": len(stubs),
        "target_ratio": TARGET_RATIO,
    }
    worst = max(v for k, v in ratios.items() if k.endswith("/traced"))
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"trace overhead, {args.repeat} runs each, guest {args.guest}, {args.granule}")
        for key, value in median.items():
            ratio = ratios.get(key)
            print(f"  {key:<26} {value * 1000:8.1f} ms" + (f"  {ratio:.2f}x" if ratio else ""))
        print(f"  scenario log size: {log_bytes}")
        verdict = "within" if worst <= TARGET_RATIO else "OVER"
        print(f"traced/untraced (shootdown run --trace), worst command: {worst:.2f}x "
              f"({verdict} the {TARGET_RATIO}x target)")
    return 0 if worst <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
