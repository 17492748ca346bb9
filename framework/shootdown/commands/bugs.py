"""``shootdown bugs``: the bug injections the firmware implements."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--firmware", metavar="ELF",
                        help="firmware ELF to read (default: the default guest's 4k build)")
    parser.add_argument("--json", action="store_true",
                        help="print a JSON list of {name, releases, description} objects")


def main(args: argparse.Namespace) -> int:
    from shootdown.bugs import read_bugs

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
