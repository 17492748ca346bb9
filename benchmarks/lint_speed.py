#!/usr/bin/env python3
"""Lint speed: ``shootdown lint`` on a large generated ELF against ``objdump -d``.

The ELF is the one tests/lint/test_lint_speed.py builds: 2000 functions
(~1 MB of text) with a TLBI sequence each and a body that repeats itself
the way kernel text does.  Variants, interleaved ``--repeat`` times, CPU
seconds of a child process each:

* ``objdump``: ``aarch64-linux-gnu-objdump -d`` of the ELF (decoding only,
  output to /dev/null): the floor a disassembler sets;
* ``lint``: ``shootdown lint --json`` of the same ELF (decoding, control
  flow per function, barrier rules).

Prints medians, MB of text per second and the ratio lint/objdump; ``--json``
for machines.  The test of the same ELF checks the work done (each distinct
word decoded once), not the time.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "lint"))

# the test's own generator (tests/lint is on sys.path; mypy does not see it there)
from test_lint_speed import GCC, _function  # type: ignore[import-not-found, unused-ignore]  # noqa: E402


def build(tmp: Path, functions: int) -> Path:
    rng = random.Random(11)
    src = tmp / "large.S"
    src.write_text("\n".join([".text", *(line for n in range(functions)
                                         for line in _function(n, rng))]) + "\n")
    out = tmp / "large.o"
    subprocess.run([GCC, "-nostdlib", "-c", str(src), "-o", str(out)], check=True)
    return out


def cpu_of(argv: list[str]) -> float:
    """CPU seconds (user + system) of one child running ``argv``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(argv, stdout=subprocess.DEVNULL, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--functions", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    objdump = shutil.which("aarch64-linux-gnu-objdump")
    if objdump is None or shutil.which(GCC) is None:
        print("lint_speed: binutils/gcc for aarch64 not found: run scripts/setup", file=sys.stderr)
        return 2
    shootdown = str(Path(sys.executable).with_name("shootdown"))
    with tempfile.TemporaryDirectory() as tmp:
        elf = build(Path(tmp), args.functions)
        text = int(subprocess.run(["aarch64-linux-gnu-size", "-A", str(elf)], check=True,
                                  capture_output=True, text=True).stdout.split(".text")[1]
                   .split()[0])
        times: dict[str, list[float]] = {"objdump": [], "lint": []}
        for _ in range(args.repeat):
            times["objdump"].append(cpu_of([objdump, "-d", str(elf)]))
            times["lint"].append(cpu_of([shootdown, "lint", "--json", str(elf)]))
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {"functions": args.functions, "text_bytes": text, "repeat": args.repeat,
           "median_cpu_s": med, "lint_mb_per_s": text / 1e6 / med["lint"],
           "ratio_lint_over_objdump": med["lint"] / med["objdump"]}
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        print(f"{args.functions} functions, {text / 1e6:.2f} MB of text, {args.repeat} runs each")
        for name, value in med.items():
            print(f"  {name:8s} {value:6.2f} s CPU (median)")
        print(f"  lint: {out['lint_mb_per_s']:.2f} MB/s, "
              f"{out['ratio_lint_over_objdump']:.1f}x objdump -d")
    return 0


if __name__ == "__main__":
    sys.exit(main())
