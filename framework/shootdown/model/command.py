"""``shootdown model``: print the golden model's maintenance sequence.

A thin shell: load the scenario (with the command line's overrides), run the
model, print one of the renderings.  Bad input raises ScenarioError or
ConfigError, which the CLI turns into one line and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from shootdown.errors import ConfigError
from shootdown.model import render
from shootdown.model.expected import check_features, expected_sequence, resolve_policy
from shootdown.model.policy import DEFAULT_POLICY, POLICIES
from shootdown.scenario.geometry import GRANULE_SHIFT
from shootdown.scenario.load import load_scenario
from shootdown.scenario.lower import to_protocol_lines
from shootdown.scenario.types import CPU_FEATURES

log = logging.getLogger(__name__)

FORMATS = ("text", "jsonl", "summary", "protocol")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenario", metavar="SCENARIO.toml", help="scenario file")
    parser.add_argument("--policy", metavar="NAME",
                        help=f"kernel release whose policy to model (default: the scenario's, "
                             f"else {DEFAULT_POLICY}); with --format summary or text a "
                             f"comma-separated list, or 'all'. Known: {', '.join(POLICIES)}")
    parser.add_argument("--granule", choices=tuple(GRANULE_SHIFT),
                        help="override the scenario's granule")
    parser.add_argument("--va-bits", type=int, metavar="N", help="override the scenario's va_bits")
    parser.add_argument("--asid", type=int, metavar="N", help="override the scenario's ASID")
    parser.add_argument("--kpti", action=argparse.BooleanOptionalAction, default=None,
                        help="issue the user-ASID copy of each ASID-tagged TLBI "
                             "(default: the scenario's kpti)")
    parser.add_argument("--cpu-features", metavar="LIST",
                        help=f"comma-separated optional CPU features ({', '.join(CPU_FEATURES)}); "
                             "'' for none. Default: the scenario's, else none (ARMv8.0)")
    parser.add_argument("--format", choices=FORMATS, default="text",
                        help="text (for people), jsonl (one instruction per line), summary "
                             "(Markdown row of counts per policy), protocol (the guest's "
                             "SCN..GO lines, without checksums)")


def _features(text: str | None) -> list[str] | None:
    if text is None:
        return None
    feats = [f.strip() for f in text.split(",") if f.strip() and f.strip() != "none"]
    check_features(feats)
    return feats


def main(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {"granule": args.granule, "va_bits": args.va_bits,
                                 "asid": args.asid, "kpti": args.kpti,
                                 "cpu_features": _features(args.cpu_features)}
    scenario = load_scenario(args.scenario, overrides)
    names = [n.strip() for n in (args.policy or "").split(",") if n.strip()]
    if names == ["all"]:
        names = list(POLICIES)
    if len(names) > 1 and args.format not in ("summary", "text"):
        raise ConfigError(f"--policy: a list of policies needs --format summary or text, "
                          f"not {args.format}")
    policies = [resolve_policy(n, scenario) for n in names] or [resolve_policy(None, scenario)]
    out: list[str]
    if args.format == "summary":
        out = render.summary_header()
        out += [render.summary_row(p.name, expected_sequence(scenario, p)) for p in policies]
    elif args.format == "protocol":
        out = to_protocol_lines(scenario, policy=policies[0].name)
    elif args.format == "jsonl":
        out = render.to_jsonl(expected_sequence(scenario, policies[0]))
    else:
        out = []
        feats = ",".join(sorted(scenario.cpu_features)) or "none"
        for pol in policies:  # one listing per policy, each under its own header
            header = (f"# {scenario.path}: policy {pol.name}, granule {scenario.granule}, "
                      f"va_bits {scenario.va_bits} ({scenario.geometry.levels} levels), "
                      f"asid {scenario.asid}, kpti {int(scenario.kpti)}, cpu features {feats}")
            out += render.to_text(expected_sequence(scenario, pol), header,
                                  lpa2="lpa2" in scenario.cpu_features)
    sys.stdout.write("".join(line + "\n" for line in out))
    return 0
