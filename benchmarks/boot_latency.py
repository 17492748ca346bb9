#!/usr/bin/env python3
"""Boot-to-verdict latency: ``shootdown run`` against raw QEMU, in one run.

Measured, interleaved so that machine noise hits every variant alike, each
``--repeat`` times, as whole processes from fork to exit:

* ``raw-minimal``: ``qemu-system-aarch64 ... -kernel minimal.elf`` where
  ``benchmarks/minimal.S`` prints one line and powers off: the floor, what
  any QEMU-based tool pays.  The target is ``shootdown run`` within 2.5x of it.
* ``raw-firmware``: the same QEMU command on the shootdown firmware, its
  commands (``SMOKE``, ``BYE``) piped into stdin: the same guest work without
  the host side.
* ``shootdown-run``: the ``shootdown run`` command, Python start-up, guest
  definition, ELF check, QEMU, smoke, verdict.
* ``python``: ``python -c pass``, for reference.

The ratio is of medians; the ratio of minima (best case) and the load average
are printed too, because on a shared machine the medians move with the load
(``shootdown run`` uses two cores: Python overlaps its imports with QEMU's boot).

All QEMU command lines come from the same argv builder as ``shootdown run``
(default guest), so the machines compared are identical.  Prints medians,
minima and the ratios; ``--json`` for machines.

The package's bytecode is compiled first, as an installed package's is: with
``PYTHONDONTWRITEBYTECODE`` set (CI images often set it) an editable install
would otherwise recompile every module on every run and measure the compiler.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TARGET_RATIO = 2.5


def build_minimal(out: Path) -> Path:
    """Assemble benchmarks/minimal.S into ``out`` (an ELF linked at 0x40080000)."""
    gcc = shutil.which("aarch64-linux-gnu-gcc")
    if gcc is None:
        sys.exit("boot_latency: aarch64-linux-gnu-gcc not found (run scripts/setup)")
    subprocess.run([gcc, "-nostdlib", "-static", "-Wl,--build-id", "-Wl,-Ttext=0x40080000",
                    "-o", str(out), str(HERE / "minimal.S")], check=True)
    return out


def shootdown_command() -> list[str]:
    """The ``shootdown`` console script next to this Python, else ``python -m``."""
    script = Path(sys.executable).parent / "shootdown"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "shootdown.cli"]


def timed(argv: list[str], stdin: bytes | None = None, ok: int = 0) -> float:
    """Wall time of one process, fork to exit; its exit status must be ``ok``."""
    start = time.perf_counter()
    proc = subprocess.run(argv, input=stdin if stdin is not None else b"",
                          capture_output=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != ok:
        sys.exit(f"boot_latency: {' '.join(argv[:3])}... exited {proc.returncode}:\n"
                 f"{proc.stdout.decode(errors='replace')[-800:]}"
                 f"{proc.stderr.decode(errors='replace')[-800:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="runs per variant (default 20)")
    parser.add_argument("--guest", default="virt-a57", help="guest definition (default virt-a57)")
    parser.add_argument("--guests-dir", help="guests directory (default: the source tree's)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    import compileall

    import shootdown
    from shootdown.firmware import quick_check
    from shootdown.guest.argv import build_argv, default_qemu
    from shootdown.guest.definition import find_guest
    from shootdown.trace.console import encode_command

    compileall.compile_dir(os.path.dirname(shootdown.__file__), quiet=1)
    guest = find_guest(args.guest, args.guests_dir)
    firmware = guest.firmware_path()
    quick_check(firmware)  # fail early and clearly if it is not built
    qemu = default_qemu()
    with tempfile.TemporaryDirectory(prefix="shootdown-bench-") as tmp:
        minimal = build_minimal(Path(tmp) / "minimal.elf")
        variants: dict[str, tuple[list[str], bytes | None]] = {
            "raw-minimal": (build_argv(guest, minimal, qemu=qemu), None),
            "raw-firmware": (build_argv(guest, firmware, qemu=qemu),
                             encode_command("SMOKE") + encode_command("BYE")),
            "shootdown-run": (shootdown_command() + ["run", "--guest", args.guest]
                              + (["--guests-dir", args.guests_dir] if args.guests_dir else []),
                              None),
            "python": ([sys.executable, "-c", "pass"], None),
        }
        env_note = os.environ.get("SHOOTDOWN_QEMU", "")
        for argv, stdin in variants.values():  # warm caches (page cache, QEMU version)
            timed(argv, stdin)
        samples: dict[str, list[float]] = {name: [] for name in variants}
        load_before = os.getloadavg()
        for _ in range(args.repeat):
            for name, (argv, stdin) in variants.items():
                samples[name].append(timed(argv, stdin))

    median = {name: statistics.median(v) for name, v in samples.items()}
    figures = {
        "repeat": args.repeat,
        "guest": args.guest,
        "qemu": qemu + (" (SHOOTDOWN_QEMU)" if env_note else ""),
        "median_s": {k: round(v, 4) for k, v in median.items()},
        "min_s": {k: round(min(v), 4) for k, v in samples.items()},
        "ratio_vs_raw_minimal": round(median["shootdown-run"] / median["raw-minimal"], 2),
        "ratio_vs_raw_firmware": round(median["shootdown-run"] / median["raw-firmware"], 2),
        "ratio_of_minima_vs_raw_minimal": round(min(samples["shootdown-run"])
                                                / min(samples["raw-minimal"]), 2),
        "load_average": [round(x, 2) for x in (load_before[0], os.getloadavg()[0])],
        "target_ratio": TARGET_RATIO,
    }
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"boot-to-verdict latency, {args.repeat} runs each, guest {args.guest}, "
              f"load average {figures['load_average'][0]} -> {figures['load_average'][1]}")
        print(f"{'variant':<15} {'median':>9} {'min':>9}")
        for name in variants:
            print(f"{name:<15} {median[name] * 1000:7.1f}ms {min(samples[name]) * 1000:7.1f}ms")
        ratio = figures["ratio_vs_raw_minimal"]
        verdict = "within" if ratio <= TARGET_RATIO else "OVER"
        print(f"shootdown run / raw minimal boot: {ratio:.2f}x ({verdict} the "
              f"{TARGET_RATIO}x target)")
        print(f"shootdown run / raw firmware boot: {figures['ratio_vs_raw_firmware']:.2f}x")
        print(f"best case (ratio of minima): "
              f"{figures['ratio_of_minima_vs_raw_minimal']:.2f}x")
    return 0 if figures["ratio_vs_raw_minimal"] <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
