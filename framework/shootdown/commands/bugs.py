"""``shootdown bugs``: the bug injections the firmware implements (``--kernel``: the
real-kernel ones of ``shootdown kernel run --inject``, :mod:`shootdown.kernel.inject`)."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--firmware", metavar="ELF",
                        help="firmware ELF to read (default: the default guest's 4k build)")
    parser.add_argument("--kernel", action="store_true",
                        help="the real-kernel injections of 'shootdown kernel run --inject': "
                             "what each patches in the booted copy of the Image, which check "
                             "must catch it")
    parser.add_argument("--json", action="store_true",
                        help="print a JSON list of {name, releases, description} objects "
                             "({name, patches, caught_by, applies} with --kernel)")


def _kernel(as_json: bool) -> int:
    from dataclasses import asdict

    from shootdown.kernel.inject import KERNEL_BUGS

    if as_json:
        print(json.dumps([asdict(b) for b in KERNEL_BUGS], indent=2))
        return 0
    width = max(len(b.name) for b in KERNEL_BUGS)
    for b in KERNEL_BUGS:
        print(f"{b.name:<{width}}  {b.applies}")
        print(f"{'':<{width}}  patches:   {b.patches}")
        print(f"{'':<{width}}  caught by: {b.caught_by}")
    return 0


def main(args: argparse.Namespace) -> int:
    from shootdown.bugs import read_bugs

    if args.kernel:
        return _kernel(args.json)

    path = args.firmware
    if path is None:
        from shootdown.guest.definition import DEFAULT_GUEST, find_guest

        path = find_guest(DEFAULT_GUEST).firmware_path("4k")
    bugs = read_bugs(path)
    if args.json:
        print(json.dumps([{"name": b.name, "releases": b.releases,
                            "description": b.description} for b in bugs], indent=2))
        return 0
    width = max(len(b.name) for b in bugs)
    rel = max(len(b.releases or "?") for b in bugs)
    for b in bugs:
        print(f"{b.name:<{width}}  {b.releases or '?':<{rel}}  {b.description}")
    return 0
