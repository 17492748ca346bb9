"""``shootdown guests``: list the guest definitions and whether their firmware is built."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``shootdown guests``."""
    parser.add_argument("--guests-dir", metavar="DIR",
                        help="guests directory (default: $SHOOTDOWN_GUESTS or the source "
                             "tree's guests/)")
    parser.add_argument("--granule", default="4k", choices=("4k", "16k", "64k"),
                        help="granule whose firmware ELF is checked (default: 4k)")
    parser.add_argument("--json", action="store_true", help="print the definitions as JSON")


def main(args: argparse.Namespace) -> int:
    """Print one line per guest (or JSON); a broken definition is an error (exit 2)."""
    import json
    import os

    from shootdown.guest.definition import (
        DEFAULT_GUEST,
        find_guest,
        guests_dir,
        list_guest_names,
    )

    where = guests_dir(args.guests_dir)
    definitions = [find_guest(name, where) for name in list_guest_names(where)]
    if args.json:
        out = []
        for d in definitions:
            entry = d._asdict()
            entry["timeouts"] = d.timeouts._asdict()
            entry["firmware_built"] = os.path.isfile(d.firmware_path(args.granule))
            out.append(entry)
        print(json.dumps(out, indent=2))
        return 0
    if not definitions:
        print(f"no guest definitions in {where}")
        return 0
    width = max(len(d.name) for d in definitions)
    for d in definitions:
        mark = "*" if d.name == DEFAULT_GUEST else " "
        built = "" if os.path.isfile(d.firmware_path(args.granule)) else "  [firmware not built]"
        where_runs = f" on {d.host}" if d.host else ""
        print(f"{mark} {d.name:<{width}}  {d.machine}/{d.cpu} x{d.smp} {d.memory}"
              f"{where_runs}  {d.description}{built}")
    print(f"(* default guest; definitions in {where})")
    return 0
