#!/usr/bin/env python3
"""Send scenario blocks to a shootdown firmware in QEMU and show the records.

A throwaway developer tool for the scenario interpreter (the real host side
is ``shootdown run``). The input file holds command lines; a blank line ends
a block; each block (e.g. SCN .. GO) is sent after a READY, every line with
its `` *<crc32>`` suffix. Records are checked (CRC, sequence) and printed.

    tools/scndrive.py build/shootdown-4k.elf scn.txt
    tools/scndrive.py --cpu max --quiet build/shootdown-16k.elf scn.txt
"""

from __future__ import annotations

import argparse
import os
import select
import subprocess
import sys
import time
import zlib


def blocks_of(path: str) -> list[list[str]]:
    """The file's command blocks, comments (#) and blank-line separators dropped."""
    blocks: list[list[str]] = [[]]
    with open(path) as f:
        for raw in f:
            line = raw.split("#", 1)[0].strip()
            if not line:
                if blocks[-1]:
                    blocks.append([])
                continue
            blocks[-1].append(line)
    return [b for b in blocks if b]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("elf")
    ap.add_argument("script")
    ap.add_argument("--cpu", default="max")
    ap.add_argument("--smp", type=int, default=2)
    ap.add_argument("--mem", default="1G")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--quiet", action="store_true", help="only SKIP/ERR/PROBEFAIL/SCNEND/END")
    ap.add_argument("--repeat", type=int, default=1, help="send the blocks this many times")
    ap.add_argument("--window", type=int, default=1,
                    help="blocks in flight: send the next one before READY (pipelining)")
    args = ap.parse_args()

    blocks = blocks_of(args.script) * args.repeat
    blocks.append(["BYE"])
    argv = ["qemu-system-aarch64", "-M", "virt", "-cpu", args.cpu, "-smp", str(args.smp),
            "-m", args.mem, "-nographic", "-monitor", "none", "-serial", "stdio",
            "-kernel", args.elf]
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    assert proc.stdin and proc.stdout
    fd = proc.stdout.fileno()
    buf, seq, bad, nblk, status = b"", 0, 0, 0, None
    t_first = None
    counts: dict[str, int] = {}
    while time.monotonic() < t0 + args.timeout and status is None:
        r, _, _ = select.select([fd], [], [], 0.5)
        if not r:
            if proc.poll() is not None:
                break
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buf += chunk
        while b"\n" in buf:
            raw, buf = buf.split(b"\n", 1)
            line = raw.decode(errors="replace").rstrip("\r")
            if not line.startswith("SD1 "):
                if line.strip():
                    print(f"  [console] {line}")
                continue
            body, _, crc = line.rpartition(" *")
            parts = body.split()
            if f"{zlib.crc32(body.encode()):08x}" != crc or int(parts[1]) != seq:
                print(f"BAD RECORD (seq {seq}): {line}")
                bad += 1
            seq = int(parts[1]) + 1
            tag = parts[2]
            counts[tag] = counts.get(tag, 0) + 1
            if not args.quiet or tag in ("SKIP", "ERR", "PROBEFAIL", "SCNEND", "END", "FAULT"):
                print(body)
            if tag == "READY":
                if t_first is None:
                    t_first = time.monotonic()
                    want = args.window
                else:
                    want = 1
                for _ in range(want):
                    if nblk < len(blocks):
                        data = "".join(f"{c} *{zlib.crc32(c.encode()):08x}\n"
                                       for c in blocks[nblk])
                        proc.stdin.write(data.encode())
                        nblk += 1
                proc.stdin.flush()
            if tag == "END":
                status = body
    t_end = time.monotonic()
    proc.kill()
    proc.wait()
    nscn = counts.get("SCNEND", 0)
    span = t_end - (t_first or t0)
    print(f"# {nscn} scenarios, {counts.get('SKIP', 0)} skipped, "
          f"{counts.get('PROBEFAIL', 0)} probefail records, {bad} bad records, "
          f"{span:.2f}s after first READY ({nscn / span if span else 0:.0f}/s)")
    return 0 if status and "status=ok" in status and not bad else 1


if __name__ == "__main__":
    sys.exit(main())
