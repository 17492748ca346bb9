"""``shootdown run``: boot a guest, run the smoke scenario, print a verdict.

Start-up time is a product feature: this module imports only :mod:`argparse`
at load time; everything else is imported in :func:`main`, and nothing is
done before QEMU starts but loading the guest definition and reading the
firmware's ELF header and build-id note.  The QEMU version for the result is
asked after the run (and cached by the launcher).

Test hook: ``--debug-command hang|crash`` sends ``DEBUG hang`` or ``DEBUG
crash`` instead of ``SMOKE``, to show end to end that a hang and a crash are
reported as such (exit code 3) and leave no QEMU behind.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shootdown.guest.definition import GuestDefinition
    from shootdown.guest.launcher import Launcher
    from shootdown.guest.machine import Guest
    from shootdown.result import CheckResult, RunResult
    from shootdown.trace.console import Record


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``shootdown run``."""
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                        help="scenario files or folders of them (default: the smoke scenario)")
    parser.add_argument("--policy", metavar="P",
                        help="kernel release(s) to validate: vX.Y, a comma-separated list, or "
                             "'all' (default: the scenario's own, else the newest)")
    parser.add_argument("--inject", metavar="BUG",
                        help="inject a firmware bug (see 'shootdown bugs'); the run passes "
                             "only if some scenario catches it")
    parser.add_argument("--trace", action="store_true",
                        help="also log what the CPU executed (QEMU -d exec,cpu on the "
                             "firmware's maintenance helpers) and require it to equal the "
                             "guest's report (TCG only)")
    parser.add_argument("--gdb", action="store_true",
                        help="debug one scenario: find its failing step, then rerun it halted "
                             "under QEMU's gdbstub and print the gdb-multiarch command with a "
                             "breakpoint there")
    parser.add_argument("--kpti", action=argparse.BooleanOptionalAction, default=None,
                        help="override the scenarios' kpti field")
    parser.add_argument("--cpu-features", metavar="LIST",
                        help="override the scenarios' cpu_features (comma-separated: ttl,"
                             "tlbirange; empty for none)")
    parser.add_argument("--guest", metavar="NAME[,NAME...]",
                        help="guest definition name in the guests directory, or a .toml path; "
                             "a comma-separated list runs every scenario job on each guest "
                             "(default: $SHOOTDOWN_GUEST, same syntax, or virt-a57)")
    parser.add_argument("--guests-dir", metavar="DIR",
                        help="where guest names resolve (default: $SHOOTDOWN_GUESTS or the "
                             "source tree's guests/)")
    parser.add_argument("--granule", choices=("4k", "16k", "64k"),
                        help="translation granule: the smoke firmware's (default: 4k), or an "
                             "override of the scenarios' own")
    parser.add_argument("--qemu", metavar="BINARY",
                        help="QEMU binary (default: $SHOOTDOWN_QEMU or qemu-system-aarch64)")
    parser.add_argument("--logdir", metavar="DIR",
                        help="directory for the console log (default: a new temporary "
                             "directory, removed after a pass unless --keep)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the log directory even when the run passes")
    parser.add_argument("--json", action="store_true",
                        help="print the full result as JSON (argv, build-id, QEMU version, "
                             "timings, records)")
    parser.add_argument("--debug-command", choices=("hang", "crash"),
                        help="for testing the host: send 'DEBUG hang' or 'DEBUG crash' "
                             "instead of SMOKE (expect exit code 3)")


def main(args: argparse.Namespace) -> int:
    """Run and report; exceptions go up to the CLI, which maps them to exit codes.

    The garbage collector is off while one guest boots and answers (that
    allocates little, and collecting over the heap of freshly imported
    modules only costs time), and the heap is frozen at the end: the process
    ends right after the verdict, and the interpreter's final collections
    would otherwise take longer than the rest of its shutdown.  Together
    about 10 ms of a 100 ms run.  Scenario runs, which can be long, collect
    as usual.
    """
    import gc

    gc.disable()
    try:
        return _main(args)
    finally:
        from shootdown.folders import release_folders

        release_folders()
        gc.freeze()
        gc.enable()


def _main(args: argparse.Namespace) -> int:
    from shootdown.guest.definition import DEFAULT_GUEST, find_guest

    names = guest_names(args.guest or os.environ.get("SHOOTDOWN_GUEST") or DEFAULT_GUEST)
    definitions = [find_guest(name, args.guests_dir) for name in names]
    if len(definitions) > 1 and not args.scenarios:
        from shootdown.errors import ConfigError

        raise ConfigError(f"--guest: several guests ({', '.join(names)}) need scenario files; "
                          f"the built-in smoke scenario runs on one guest")
    definition = definitions[0]
    launcher = launcher_for(definition)
    if args.logdir:
        logdir, temporary = args.logdir, False
        from shootdown.folders import lock_folder

        lock_folder(logdir, "--logdir")  # one run at a time writes there
    else:
        logdir, temporary = new_logdir(), True
    if args.scenarios:
        import gc

        gc.enable()
        from shootdown.commands import run_scenarios

        try:
            code = run_scenarios.main(args, definitions, logdir)
        except BaseException:
            from shootdown.folders import LOCK_NAME

            if set(os.listdir(logdir)) - {LOCK_NAME}:  # a guest ran: its logs explain it
                print(f"logs: {logdir}", file=sys.stderr)
            elif temporary:
                os.rmdir(logdir)
            raise
        if code == 0 and temporary and not args.keep:
            import shutil

            shutil.rmtree(logdir, ignore_errors=True)
        return code
    if (args.policy or args.inject or args.trace or args.gdb or args.kpti is not None
            or args.cpu_features is not None):
        from shootdown.errors import ConfigError

        raise ConfigError("--policy, --inject, --trace, --gdb, --kpti and --cpu-features need "
                          "scenario files (shootdown run SCENARIO.toml|DIR ...)")
    args.granule = args.granule or "4k"
    log_path = os.path.join(logdir, f"{definition.name}-{args.granule}.console.log")

    from shootdown.guest.machine import Guest

    guest = Guest(definition, log_path=log_path, granule=args.granule, qemu=args.qemu,
                  launcher=launcher, while_booting=_while_booting)
    try:
        result = run_smoke(guest, debug_command=args.debug_command)
    except BaseException as exc:
        if temporary and not os.path.exists(log_path):  # nothing to keep: QEMU never started
            remove_logdir(logdir, log_path)
        elif isinstance(exc, KeyboardInterrupt):  # errors name their log; an interrupt too
            print(f"log: {log_path}", file=sys.stderr)
        raise

    if args.json:
        import json

        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(format_result(result))
    if result.verdict.ok and temporary and not args.keep:
        remove_logdir(logdir, log_path)
    elif not args.json:
        print(f"log: {log_path}")
    else:
        print(f"log: {log_path}", file=sys.stderr)
    from shootdown.cli import exit_code_for_verdict

    return int(exit_code_for_verdict(result.verdict))


def guest_names(text: str) -> list[str]:
    """``--guest``/``$SHOOTDOWN_GUEST``: one name or path, or a comma-separated list."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        from shootdown.errors import ConfigError

        raise ConfigError(f"--guest: no guest named in {text!r}")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        from shootdown.errors import ConfigError

        raise ConfigError(f"--guest: {', '.join(twice)} named twice")
    return names


def _while_booting(guest: Guest) -> None:
    """What the verdict needs, done while QEMU boots instead of after it exits.

    The imports, and the QEMU version (the launcher caches it; on a cache
    miss this runs ``qemu --version`` alongside the guest).  ``json`` is only
    imported for ``--json``.
    """
    import shootdown.result
    import shootdown.trace.console  # noqa: F401

    guest.qemu_version()
    if guest.firmware is not None:
        newer = newer_firmware_source(guest.firmware.path)
        if newer:
            print(f"shootdown: warning: {_short(newer)} is newer than "
                  f"{_short(guest.firmware.path)}: the firmware may be stale "
                  "(make -C firmware)", file=sys.stderr)


def newer_firmware_source(elf: str) -> str | None:
    """A firmware source file newer than ``elf``, if ``elf`` was built in a source tree.

    Only for an ELF in a ``build/`` directory next to a ``Makefile``: the
    layout of ``firmware/``.  The build-id check at boot catches a mismatch
    between the ELF and what runs; this catches an ELF older than its sources.
    """
    build = os.path.dirname(os.path.abspath(elf))
    tree = os.path.dirname(build)
    if os.path.basename(build) != "build" or not os.path.isfile(os.path.join(tree, "Makefile")):
        return None
    try:
        built = os.stat(elf).st_mtime_ns
    except OSError:
        return None
    for sub in ("src", "include", "."):
        for root, dirs, files in os.walk(os.path.join(tree, sub)):
            dirs[:] = [d for d in dirs if d != "build" and not d.startswith(".")] \
                if sub != "." else []
            for name in files:
                if name.endswith((".c", ".h", ".S", ".ld")) or name == "Makefile":
                    path = os.path.join(root, name)
                    try:
                        if os.stat(path).st_mtime_ns > built:
                            return path
                    except OSError:
                        continue
    return None


def new_logdir() -> str:
    """A new private directory ``$TMPDIR/shootdown-<16 random hex digits>`` for the logs.

    Mode 0700 and an unpredictable name, so another local user cannot create
    it first (a name from the time and pid could be taken in advance and stop
    the run, or be a planted link); ``os.mkdir`` fails rather than reuse a
    name.  What :func:`tempfile.mkdtemp` does, without its import (start-up
    time: tests/test_run.py keeps it out of the path to QEMU's start).
    """
    base = os.environ.get("TMPDIR") or "/tmp"
    while True:
        path = os.path.join(base, f"shootdown-{os.urandom(8).hex()}")
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:  # pragma: no cover - 2**64 names
            continue
        except OSError as exc:
            from shootdown.errors import InfraError

            raise InfraError(f"{base}: cannot make a log folder there ($TMPDIR): "
                             f"{exc.strerror or exc}") from exc
        return path


def remove_logdir(logdir: str, log_path: str) -> None:
    """Remove a temporary log directory holding (at most) the console log.

    Anything else found in it is left alone, and so is the directory.
    """
    for path, remove in ((log_path, os.remove), (logdir, os.rmdir)):
        try:
            remove(path)
        except FileNotFoundError:
            pass
        except OSError:
            return


def launcher_for(definition: GuestDefinition) -> Launcher:
    """The launcher for a guest: local, or SSH for a definition with ``host``."""
    if definition.host is None:
        from shootdown.guest.launcher import LocalLauncher

        return LocalLauncher()
    from shootdown.errors import ConfigError

    try:
        from shootdown.remote import launcher_for as remote_launcher_for
    except ImportError as exc:  # paramiko missing
        raise ConfigError(f"{definition.source}: key 'host': remote hosts need the SSH "
                          f"support ({exc})") from exc
    return remote_launcher_for(definition)


def run_smoke(guest: Guest, *, debug_command: str | None = None) -> RunResult:
    """Boot ``guest``, run SMOKE, power off; the result (exceptions for infra failures)."""
    with guest:
        t0 = time.monotonic()
        if debug_command:
            guest.command(f"DEBUG {debug_command}")
        records = guest.command("SMOKE")
        scenario_s = time.monotonic() - t0
    return make_result(guest, [check_smoke(records)], scenario_s)


def check_smoke(records: list[Record]) -> CheckResult:
    """The verdict of the built-in smoke scenario from its SMOKE record."""
    from shootdown.errors import ProtocolError
    from shootdown.result import CheckResult, Verdict

    smoke = [r for r in records if r.tag == "SMOKE"]
    if len(smoke) != 1:
        raise ProtocolError(f"expected one SMOKE record in the answer to SMOKE, got "
                            f"{len(smoke)}")
    record = smoke[0]
    status = record.text("status")
    detail = " ".join(f"{k}={v}" for k, v in record.fields.items() if k != "status")
    if status == "pass":
        verdict = Verdict.PASS
    elif status == "fail":
        verdict = Verdict.FAIL
    else:
        raise ProtocolError(f"SMOKE status '{status}' is neither pass nor fail: {record.line}")
    return CheckResult(name="smoke", verdict=verdict, detail=detail or status,
                       records=tuple(records))


def make_result(guest: Guest, checks: list[CheckResult], scenario_s: float) -> RunResult:
    """Assemble the frozen result of a finished guest."""
    from shootdown.result import GuestRun, RunResult, Timings, overall

    assert guest.begin is not None and guest.firmware is not None
    assert guest.t_launch is not None and guest.t_ready is not None
    d = guest.definition
    t_exit = guest.t_exit if guest.t_exit is not None else time.monotonic()
    run = GuestRun(
        guest=d.name, machine=d.machine, cpu=d.cpu, smp=d.smp,
        launcher=guest.launcher.describe(), qemu_argv=tuple(guest.argv),
        qemu_version=guest.qemu_version(), firmware=guest.firmware.path,
        build_id=guest.firmware.build_id, granule=guest.granule,
        firmware_version=guest.begin.text("version"),
        midr=guest.cpu.get("midr") if guest.cpu is not None else None,
        log_path=guest.log_path, exit_status=guest.exit_status,
    )
    timings = Timings(boot_s=round(guest.t_ready - guest.t_launch, 4),
                      scenario_s=round(scenario_s, 4),
                      total_s=round(t_exit - guest.t_launch, 4))
    return RunResult(guest=run, checks=tuple(checks),
                     verdict=overall([c.verdict for c in checks]), timings=timings,
                     records=tuple(guest.records))


def format_result(result: RunResult) -> str:
    """The verdict for people: guest, firmware, each check, timings, verdict."""
    from shootdown.cli import printable

    g, t = result.guest, result.timings
    lines = [
        f"guest     {g.guest} ({g.machine}, cpu {g.cpu}, {g.smp} CPUs"
        + (f", MIDR {g.midr}" if g.midr else "") + f", {g.launcher})",
        f"firmware  {_short(g.firmware)} {g.firmware_version} granule {g.granule} "
        f"build-id {g.build_id[:16]}",
        f"qemu      {g.qemu_version}",
    ]
    for check in result.checks:
        lines.append(printable(f"{check.name:<9} {check.verdict.name:<6} {check.detail}"))
    lines.append(f"timings   boot {t.boot_s * 1000:.0f} ms, scenario {t.scenario_s * 1000:.0f} "
                 f"ms, total {t.total_s * 1000:.0f} ms")
    lines.append(result.verdict.name)
    return "\n".join(lines)


def _short(path: str) -> str:
    """``path`` relative to the working directory when it is inside it."""
    p = os.path.abspath(path)
    cwd = os.getcwd()
    return os.path.relpath(p, cwd) if p.startswith(cwd + os.sep) else p
