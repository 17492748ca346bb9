"""The ``shootdown`` command: a thin shell over the package.

Each subcommand lives in its own module, imported only when it is chosen, so
``shootdown run`` does not pay for the model, capstone or rich at start-up.
A subcommand module provides ``add_arguments(parser)`` and ``main(args) -> int``.

Exceptions are mapped to exit codes here and nowhere else.
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import importlib
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shootdown.result import Verdict


class ExitCode(enum.IntEnum):
    """Exit codes of every ``shootdown`` subcommand."""

    #: Everything checked passed (or, for injected bugs, every bug was caught).
    PASS = 0
    #: Validation failure: the guest's behaviour disagrees with the golden
    #: model, a probe failed, lint found a barrier bug, or an injected bug
    #: was missed.
    FAIL = 1
    #: Bad input: unknown guest or policy, invalid guest definition or
    #: scenario, missing or mismatched firmware ELF.
    BAD_INPUT = 2
    #: Infrastructure failure: QEMU missing or refused to start, guest hang
    #: or crash, console protocol corrupted, remote host unreachable.
    INFRA = 3
    #: Internal error: an unexpected exception, a bug in shootdown itself
    #: (one line on stderr, the traceback in a file it names).
    INTERNAL = 4
    #: Nothing ran: every job was skipped (the guest lacks every feature the
    #: scenarios need), so nothing was checked.
    NOTHING_RAN = 5
    #: Not applicable: the injected bug's code path does not exist under the
    #: chosen release or scenarios, so no check could have caught it.
    NOT_APPLICABLE = 6
    #: Emulator limitation: a probe disagreed in a way a known QEMU defect
    #: explains; neither a pass nor a validation failure.
    EMULATOR_LIMIT = 7


#: subcommand name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("shootdown.commands.run", "boot a guest, run scenarios, check them"),
    "model": ("shootdown.model.command", "print the golden model's TLB maintenance sequence"),
    "guests": ("shootdown.commands.guests", "list the guest definitions"),
    "bugs": ("shootdown.commands.bugs", "list the firmware's bug injections"),
    "lint": ("shootdown.commands.lint", "check the barrier rules in an aarch64 ELF"),
    "hosts": ("shootdown.remote.command", "check that remote hosts can run guests"),
    "fuzz": ("shootdown.commands.fuzz", "random scenarios through guest and model"),
    "matrix": ("shootdown.commands.matrix", "run a validation matrix in parallel (JSON lines)"),
    "report": ("shootdown.commands.report", "JUnit XML, Markdown and HTML from matrix results"),
    "kernel": ("shootdown.commands.kernel", "real arm64 kernels: fetch, info, boot"),
    "doctor": ("shootdown.commands.doctor", "the QEMU in use: version, options, known defects"),
}


#: The exit codes for ``shootdown --help`` (the README has the same table).
EPILOG = """exit codes:
  0 pass: everything checked passed, or the injected bug was caught
  1 validation failure: a check failed, or an injected bug was missed
  2 bad input: unknown guest/policy/bug, invalid file, mismatched firmware
  3 infrastructure: QEMU failed, guest hang or crash, remote host unreachable
  4 internal error: a bug in shootdown (the traceback file is named)
  5 nothing ran: every job was skipped (the guest lacks the features)
  6 not applicable: the injected bug's code path does not exist in this run
  7 emulator limitation: a probe result a known QEMU defect explains"""


def exit_code_for(exc: BaseException) -> ExitCode:
    """Map an exception to the exit code the CLI reports for it."""
    from shootdown import errors

    if isinstance(exc, errors.ConfigError | errors.FirmwareError):
        return ExitCode.BAD_INPUT
    if isinstance(exc, errors.ShootdownError):
        return ExitCode.INFRA
    return ExitCode.INTERNAL


def exit_code_for_verdict(verdict: Verdict) -> ExitCode:
    """Map a run's verdict to the exit code the CLI reports for it."""
    from shootdown.result import Verdict

    return {
        Verdict.PASS: ExitCode.PASS,
        Verdict.CAUGHT: ExitCode.PASS,
        Verdict.SKIP: ExitCode.PASS,
        Verdict.FAIL: ExitCode.FAIL,
        Verdict.MISSED: ExitCode.FAIL,
        Verdict.NOTHING_RAN: ExitCode.NOTHING_RAN,
        Verdict.NOT_APPLICABLE: ExitCode.NOT_APPLICABLE,
        Verdict.EMULATOR_LIMIT: ExitCode.EMULATOR_LIMIT,
    }[verdict]


def _build_parser(argv: Sequence[str]) -> tuple[argparse.ArgumentParser, str]:
    parser = argparse.ArgumentParser(
        prog="shootdown",
        description="QEMU-backed validation of arm64 page-table teardown.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more (-v info, -vv debug with the QEMU command line)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Only the chosen subcommand's module is imported and its parser built
    # (each stub parser costs argparse time on every run); the top-level
    # --help gets a stub for every subcommand so that it lists them all.
    chosen = next((a for a in argv if a in SUBCOMMANDS), "run")
    top_help = any(a in ("-h", "--help") for a in argv[:list(argv).index(chosen)]) \
        if chosen in argv else True
    for name, (module, help_text) in SUBCOMMANDS.items():
        if name == chosen:
            p = sub.add_parser(name, help=help_text, description=help_text)
            importlib.import_module(module).add_arguments(p)
        elif top_help:
            sub.add_parser(name, help=help_text, description=help_text)
    return parser, chosen


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``shootdown`` console script."""
    import gc

    # Parsing allocates little: the collector's passes over the freshly
    # imported modules only cost start-up time. `run` manages it from here
    # (see shootdown.commands.run.main); every other command collects as usual.
    gc.disable()
    from shootdown import errors

    argv = list(sys.argv[1:] if argv is None else argv)
    from shootdown import signals

    signals.install()  # SIGTERM/SIGHUP clean up as Ctrl-C does
    try:
        return _dispatch(argv)
    except errors.ShootdownError as exc:
        code = exit_code_for(exc)
        print(f"shootdown: error: {printable(str(exc))}", file=sys.stderr)
        log_path = getattr(exc, "log_path", None)
        tail = getattr(exc, "tail", None)
        if tail:
            print("last console lines:", file=sys.stderr)
            for line in tail:
                print(f"  | {printable(str(line))}", file=sys.stderr)
        if log_path:
            print(f"log: {printable(str(log_path))}", file=sys.stderr)
        return code
    except BrokenPipeError:
        return ExitCode.PASS
    except KeyboardInterrupt as exc:
        # The guests were cleaned up on the way out (finally blocks); a
        # person who pressed Ctrl-C wants a line, not a traceback.
        print("shootdown: interrupted", file=sys.stderr)
        return signals.exit_code(exc)
    except Exception as exc:  # a bug in shootdown: never a traceback, never a verdict
        where = save_traceback(exc)
        print(f"shootdown: internal error: {type(exc).__name__}: {printable(str(exc))} "
              f"(traceback: {where})", file=sys.stderr)
        return exit_code_for(exc)


def _dispatch(argv: list[str]) -> int:
    """Parse ``argv`` and run the chosen subcommand; its exit code."""
    import gc

    if not any(a in SUBCOMMANDS for a in argv) and not any(a in ("-h", "--help") for a in argv):
        argv.insert(0, "run")  # `shootdown` alone is `shootdown run`
    parser, chosen = _build_parser(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: bad usage is bad input
        return ExitCode.BAD_INPUT if exc.code not in (0, None) else ExitCode.PASS
    if args.command is None:
        parser.print_help()
        return ExitCode.PASS
    if args.verbose:
        import logging

        logging.basicConfig(level=logging.DEBUG if args.verbose > 1 else logging.INFO,
                            format="%(levelname)s %(name)s: %(message)s")
    if chosen != "run":
        gc.enable()
    return int(importlib.import_module(SUBCOMMANDS[chosen][0]).main(args))


def printable(text: str) -> str:
    """``text`` with control characters shown escaped (``\\x1b``), safe for a terminal.

    Guest consoles and files can hold terminal escape sequences; an error
    message or a console tail must show them, never let the terminal run
    them. Printable characters (including non-ASCII letters) stay as they are.
    """
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) < 0x10000 else f"\\U{ord(ch):08x}")
    return "".join(out)


def save_traceback(exc: BaseException) -> str:
    """Write ``exc``'s traceback to a new private file; its path.

    The file is made by :func:`tempfile.mkstemp` (mode 0600, a name nobody
    can predict) under ``$XDG_CACHE_HOME/shootdown`` (``~/.cache/shootdown``),
    else in the temporary directory.
    """
    import tempfile
    import traceback

    text = "".join(traceback.format_exception(exc))
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    for folder in (os.path.join(cache, "shootdown"), None):
        try:
            if folder is not None:
                os.makedirs(folder, mode=0o700, exist_ok=True)
            fd, path = tempfile.mkstemp(prefix="traceback-", suffix=".txt", dir=folder)
        except OSError:
            continue
        try:
            with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as f:
                f.write(text)
        except OSError as err:  # a full disk must not turn one error into two
            with contextlib.suppress(OSError):
                os.unlink(path)
            return f"not saved: {path}: {err.strerror or err}"
        return path
    return "not saved: no writable cache or temporary directory"

if __name__ == "__main__":
    sys.exit(main())
