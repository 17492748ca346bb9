#!/usr/bin/env python3
"""Boot a shootdown firmware ELF in QEMU, send commands, check every record.

A developer's tool for the firmware alone (the real host side is the
shootdown package). Each command is sent after the next READY; every SD1
line is checked for its CRC-32 and sequence number; the output shows the
records and the time from QEMU start to each of them.

    tools/fwtalk.py build/shootdown-4k.elf PING SMOKE BYE
    tools/fwtalk.py --cpu max --smp 4 build/shootdown-64k.elf SMOKE BYE
"""

from __future__ import annotations

import argparse
import os
import select
import subprocess
import sys
import time
import zlib


def check_record(line: str, expect_seq: int) -> str | None:
    """Return why the record is bad, or None if its CRC and seq are right."""
    body, sep, crc = line.rpartition(" *")
    if not sep or len(crc) != 8:
        return "no crc"
    if f"{zlib.crc32(body.encode()):08x}" != crc:
        return "crc mismatch"
    seq = int(body.split()[1])
    if seq != expect_seq:
        return f"seq {seq}, expected {expect_seq}"
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("elf")
    ap.add_argument("commands", nargs="*", help="command lines to send after READY")
    ap.add_argument("--cpu", default="cortex-a57")
    ap.add_argument("--smp", type=int, default=2)
    ap.add_argument("--mem", default="1G")
    ap.add_argument("--timeout", type=float, default=20.0)
    ap.add_argument("--raw", action="append", default=[],
                    help="send this line verbatim (no crc added) as the next command")
    args = ap.parse_args()

    argv = ["qemu-system-aarch64", "-M", "virt", "-cpu", args.cpu, "-smp", str(args.smp),
            "-m", args.mem, "-nographic", "-monitor", "none", "-serial", "stdio",
            "-kernel", args.elf]
    cmds = [f"{c} *{zlib.crc32(c.encode()):08x}" for c in args.commands] + args.raw
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    assert proc.stdin and proc.stdout
    fd = proc.stdout.fileno()
    buf, seq, bad, status = b"", 0, 0, None
    deadline = t0 + args.timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if not ready:
            if proc.poll() is not None:
                break
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
        while b"\n" in buf:
            raw, buf = buf.split(b"\n", 1)
            line = raw.decode(errors="replace").rstrip("\r")
            ms = (time.monotonic() - t0) * 1000
            if not line.startswith("SD1 "):
                print(f"{ms:8.1f}  (text) {line}")
                continue
            why = check_record(line, seq)
            bad += why is not None
            seq += 1
            print(f"{ms:8.1f}  {line}" + (f"   <-- BAD: {why}" if why else ""))
            tag = line.split()[2]
            if tag == "READY" and cmds:
                c = cmds.pop(0)
                print(f"{ms:8.1f}  >>> {c}")
                proc.stdin.write(c.encode() + b"\n")
                proc.stdin.flush()
            if tag == "END":
                status = line.split("status=")[1].split()[0]
    try:
        rc = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = proc.wait()
        print("TIMEOUT: killed QEMU")
    print(f"qemu rc={rc} after {(time.monotonic() - t0) * 1000:.1f} ms; "
          f"records={seq} bad={bad} status={status}")
    return 0 if bad == 0 and status == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
