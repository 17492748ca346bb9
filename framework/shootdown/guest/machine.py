"""A running guest: launch, talk over the console, always clean up.

:class:`Guest` follows the shape of QEMU's own ``QEMUMachine`` (named phases
``_pre_launch``, ``_launch``, ``_post_launch``, ``_soft_shutdown``,
``_hard_shutdown``, ``_post_shutdown`` in a ``finally``; ``shutdown()`` safe
to call twice and after a failed launch) without its god-class: the argv
comes from :mod:`shootdown.guest.argv`, the process from a
:class:`~shootdown.guest.launcher.Launcher`, the records from
:mod:`shootdown.trace.console`.

Lifecycle::

    with Guest(definition, log_path=...) as guest:   # launch(): boot to READY
        records = guest.command("SMOKE")             # one command, records to READY
    # shutdown(): BYE, END, QEMU exits; or kill the process group

Failure handling, all converted once, here, into the package's exceptions:

* no output for ``timeouts.idle`` s, no ``READY`` within ``timeouts.boot``,
  or the run past ``timeouts.total`` -> :class:`~shootdown.errors.GuestTimeout`
  (a hang; QEMU's process group is killed);
* a ``FAULT`` record -> :class:`~shootdown.errors.GuestCrash` with ESR, ELR
  and FAR in the message;
* QEMU ending before ``BEGIN`` -> :class:`~shootdown.errors.LaunchError`
  with the first line QEMU printed (its error message);
  QEMU ending later -> :class:`~shootdown.errors.GuestCrash`;
* bad records -> :class:`~shootdown.errors.ProtocolError`;
* the firmware refusing the guest at boot (``ERR cmd=boot``, e.g. a
  granule the CPU lacks) -> :class:`~shootdown.errors.ConfigError`;
* ``BEGIN`` naming another build-id or granule than the ELF booted ->
  :class:`~shootdown.errors.FirmwareError` (stale or mismatched firmware).

A guest that failed once stays failed: later calls re-raise the first error
rather than cascading into confusing follow-ups.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING

from shootdown.errors import (
    FirmwareError,
    GuestCrash,
    GuestTimeout,
    GuestUnsupported,
    InfraError,
    LaunchError,
    ProtocolError,
    ShootdownError,
)
from shootdown.firmware import FirmwareInfo, quick_check
from shootdown.guest.argv import build_argv, default_qemu
from shootdown.guest.definition import DEFAULT_GRANULE, GuestDefinition
from shootdown.guest.launcher import ConsoleProcess, Launcher, LocalLauncher

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from types import TracebackType

    from shootdown.trace.console import Record, RecordParser



def _debug(message: str, *args: object) -> None:
    """Log at DEBUG level through this module's logger, if logging is in use.

    When nothing has imported :mod:`logging`, nothing has configured it and
    a DEBUG message would be dropped anyway; not importing it keeps its cost
    off the guest's boot (start-up time is a product feature).  The CLI's
    ``-v`` and pytest both import and configure it, and then every message
    goes out.
    """
    logging = sys.modules.get("logging")
    if logging is not None:
        logging.getLogger(__name__).debug(message, *args)


#: How long a faulting guest gets to print its END record and power off.
CRASH_GRACE_S = 2.0
#: How long a guest gets to power off after END.
POWEROFF_GRACE_S = 5.0
#: A pause between reads of a long answer (``command(gather=)``): a matrix
#: job's ~25 KB of records then come in ~80 reads instead of ~1,500, and the
#: host's reading costs half the CPU, for at most 1 ms more per command.
GATHER_S = 0.001
#: Reads at least this long are not followed by a pause (the pipe is busy).
GATHER_BELOW = 4096

#: Exception classes (ESR_EL1.EC) worth naming in a crash report.
_EC_NAMES = {
    0x00: "unknown reason",
    0x01: "WFI/WFE",
    0x0E: "illegal execution state",
    0x15: "SVC",
    0x16: "HVC",
    0x17: "SMC",
    0x18: "system register access",
    0x20: "instruction abort from a lower EL",
    0x21: "instruction abort, same EL",
    0x22: "PC alignment fault",
    0x24: "data abort from a lower EL",
    0x25: "data abort, same EL",
    0x26: "SP alignment fault",
    0x2F: "SError",
    0x3C: "BRK",
}


def describe_fault(record: Record) -> str:
    """One line naming a FAULT record's exception class and registers."""
    esr = record.number("esr")
    ec = (esr >> 26) & 0x3F
    what = _EC_NAMES.get(ec, "exception class")
    return (f"unexpected exception on cpu {record.text('cpu')}: {what} (EC 0x{ec:02x}), "
            f"vector={record.text('vector')} esr={record.text('esr')} "
            f"elr={record.text('elr')} far={record.text('far')}")


class Guest:
    """One boot of one guest definition under QEMU."""

    def __init__(self, definition: GuestDefinition, *, log_path: str | os.PathLike[str],
                 granule: str = DEFAULT_GRANULE, qemu: str | None = None,
                 launcher: Launcher | None = None,
                 firmware: FirmwareInfo | None = None,
                 while_booting: Callable[[Guest], object] | None = None) -> None:
        self.definition = definition
        #: Called with this guest once QEMU has started, before waiting for the
        #: guest: host-side work (imports, look-ups) that can overlap the boot.
        self.while_booting = while_booting
        self.granule = granule
        #: The console log file (every byte QEMU printed).
        self.log_path = os.fspath(log_path)
        self.qemu = qemu or default_qemu()
        self.launcher: Launcher = launcher or LocalLauncher()
        #: The firmware checked before boot (read in ``_pre_launch`` if not given).
        self.firmware = firmware
        #: The exact QEMU command line (set in ``_pre_launch``).
        self.argv: list[str] = []
        self._parser: RecordParser | None = None
        #: The BEGIN and CPU records of this boot.
        self.begin: Record | None = None
        self.cpu: Record | None = None
        #: monotonic() times: QEMU started, first READY, QEMU gone.
        self.t_launch: float | None = None
        self.t_ready: float | None = None
        self.t_exit: float | None = None
        self._proc: ConsoleProcess | None = None
        self._ready = False
        self._error: ShootdownError | None = None
        self._shut_down = False
        self._exit_status: int | None = None
        self._last_output = 0.0
        self._qemu_version: str | None = None

    # -- public API ------------------------------------------------------

    @property
    def parser(self) -> RecordParser:
        """The console record parser of this boot.

        Created (and :mod:`shootdown.trace.console` imported) on first use,
        which is after QEMU has started: imports overlap the guest's boot.
        """
        if self._parser is None:
            from shootdown.trace.console import RecordParser

            self._parser = RecordParser()
        return self._parser

    @property
    def records(self) -> list[Record]:
        """Every record of this boot so far."""
        return self.parser.records

    @property
    def process(self) -> ConsoleProcess | None:
        """The QEMU process once launched (kept after shutdown, for its exit status)."""
        return self._proc

    @property
    def exit_status(self) -> int | None:
        """QEMU's exit status once it has ended."""
        return self._exit_status

    def qemu_version(self) -> str:
        """First line of ``qemu --version`` where this guest runs (asked once)."""
        if self._qemu_version is None:
            try:
                self._qemu_version = self.launcher.qemu_version(self.qemu)
            except ShootdownError as exc:
                self._qemu_version = f"unknown ({exc})"
        return self._qemu_version

    def launch(self) -> None:
        """Start QEMU and wait for the guest's first ``READY``."""
        if self._proc is not None or self._shut_down:
            raise InfraError(f"guest {self.definition.name} was already launched")
        try:
            self._pre_launch()
            self._launch()
            self._post_launch()
        except ShootdownError as exc:
            self._fail(exc)
            raise
        except BaseException:
            self.shutdown()
            raise

    def command(self, line: str, *, allow_err: bool = False,
                before: Sequence[str] = (), gather: float = 0.0) -> list[Record]:
        """Send one command; return the records it produced, up to (excluding) ``READY``.

        ``before`` are lines sent ahead of ``line`` in the same write, for
        commands that span several lines (a scenario's ``SCN`` .. ``GO``: the
        guest buffers them silently and answers after the last).

        An ``ERR`` answer is a protocol error unless ``allow_err``: the host
        only sends commands it believes valid, so a rejection means the
        console garbled one or the two sides disagree on the protocol.

        ``gather`` (seconds) lets a long answer pile up between reads: the
        PL011 hands QEMU one byte at a time, so a streaming answer otherwise
        comes in reads of ~15 bytes, each a poll, a read and a log write on
        the host (see :data:`GATHER_S`).  It delays seeing the end of the
        answer by at most that long.
        """
        self._check_usable()
        if not self._ready:
            raise ProtocolError(f"guest {self.definition.name} is not waiting for a command")
        assert self._proc is not None
        from shootdown.trace.console import encode_command

        word = line.split()[0] if line.split() else line
        try:
            for text in (*before, line):
                _debug("-> %s", text)
            self._proc.console.send(b"".join(encode_command(text) for text in (*before, line)))
            self._ready = False
            out = self._read_until(lambda r: r.tag == "READY", f"the answer to {word}",
                                   deadline=None, gather=gather)
            self._ready = True
            answer = out[:-1]
            if not allow_err:
                for record in answer:
                    if record.tag == "ERR":
                        raise ProtocolError(f"guest rejected command {word!r}: {record.line}",
                                            log_path=self.log_path, tail=self._tail())
            return answer
        except ShootdownError as exc:
            self._fail(exc)
            raise
        except BaseException:
            self.shutdown()
            raise

    def shutdown(self) -> None:
        """Power the guest off (``BYE``) or kill it; idempotent, never leaves QEMU running.

        Raises the error of a soft shutdown that went wrong (no ``END``, QEMU
        not exiting) once, after cleaning up.
        """
        if self._shut_down:
            return
        self._shut_down = True
        soft_error: ShootdownError | None = None
        try:
            if self._proc is not None and self._error is None and self._ready:
                try:
                    self._soft_shutdown()
                except ShootdownError as exc:
                    soft_error = exc
                    self._error = exc
        finally:
            self._hard_shutdown()
            self._post_shutdown()
        if soft_error is not None:
            raise soft_error

    def abort(self, error: ShootdownError) -> None:
        """Kill QEMU now, from any thread, making ``error`` the guest's error.

        For a limit enforced outside the guest (a job's ``job_timeout``) while
        another thread waits on the console: that thread then sees the end of
        the console at once instead of waiting for the guest's own limits.
        ``error`` gets the log path and the console tail.
        """
        self._fail(error)

    def __enter__(self) -> Guest:
        self.launch()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is None:
            self.shutdown()
            return
        try:
            self.shutdown()
        except ShootdownError as late:  # the first error is the one to report
            _debug("error while shutting down after %r: %s", exc, late)

    # -- phases ----------------------------------------------------------

    def _pre_launch(self) -> None:
        firmware = self.definition.firmware_path(self.granule)
        if self.firmware is None:
            self.firmware = quick_check(firmware)
        self.argv = build_argv(self.definition, firmware, qemu=self.qemu)
        os.makedirs(os.path.dirname(os.path.abspath(self.log_path)), exist_ok=True)

    def _launch(self) -> None:
        self.t_launch = self._last_output = time.monotonic()
        self._proc = self.launcher.spawn(self.argv, self.log_path)
        _debug("QEMU command line: %s", " ".join(self.argv))
        if self.while_booting is not None:
            self.while_booting(self)
        # Silence is measured from when the guest could first talk: starting
        # QEMU over SSH and the work above must not count as a hang.
        self._last_output = time.monotonic()

    def _post_launch(self) -> None:
        """The boot phase: records up to the first ``READY``, BEGIN checked."""
        assert self.t_launch is not None
        boot_deadline = self.t_launch + self.definition.timeouts.boot
        self._read_until(lambda r: r.tag == "READY", "the guest to boot (first READY)",
                         deadline=boot_deadline)
        self.t_ready = time.monotonic()
        self._ready = True

    def _check_begin(self, begin: Record) -> None:
        """Check BEGIN as soon as it arrives: protocol, firmware, build-id, granule."""
        self.begin = begin
        assert self.firmware is not None
        fw = begin.text("fw")
        if fw != "shootdown":
            raise FirmwareError(f"{self.firmware.path}: the guest reports firmware '{fw}', "
                                "not 'shootdown'")
        reported = begin.text("build_id").lower()
        if reported != self.firmware.build_id:
            raise FirmwareError(
                f"{self.firmware.path}: stale or mismatched firmware: the ELF's build-id is "
                f"{self.firmware.build_id} but the guest reports {reported} "
                "(rebuild with make -C firmware)")
        granule = begin.text("granule")
        if granule != self.granule:
            raise FirmwareError(f"{self.firmware.path}: the guest reports granule {granule}, "
                                f"expected {self.granule}")

    def _soft_shutdown(self) -> None:
        assert self._proc is not None
        from shootdown.trace.console import encode_command

        _debug("-> BYE")
        self._proc.console.send(encode_command("BYE"))
        self._ready = False
        end = self._read_until(lambda r: r.tag == "END", "END after BYE", deadline=None,
                               eof_ok=True)
        if not end or end[-1].tag != "END":
            raise GuestCrash(f"{self.definition.name}: QEMU exited without an END record",
                             log_path=self.log_path, tail=self._tail())
        status = self._proc.wait(POWEROFF_GRACE_S)
        if status is None:
            raise GuestTimeout(f"{self.definition.name}: QEMU still running "
                               f"{POWEROFF_GRACE_S:g} s after END (PSCI SYSTEM_OFF ignored?)",
                               log_path=self.log_path, tail=self._tail())

    def _hard_shutdown(self) -> None:
        if self._proc is not None:
            self._proc.kill()

    def _post_shutdown(self) -> None:
        if self._proc is not None:
            self._exit_status = self._proc.exitstatus
            if self.t_exit is None:
                self.t_exit = time.monotonic()
        self._ready = False

    # -- console ---------------------------------------------------------

    def _read_until(self, stop: Callable[[Record], bool], what: str, *,
                    deadline: float | None, eof_ok: bool = False,
                    gather: float = 0.0) -> list[Record]:
        """Read the console until a record satisfies ``stop``; return the records read.

        ``deadline`` (monotonic) bounds this phase on top of the idle and
        total limits.  A FAULT record turns into :class:`GuestCrash` once the
        guest has had :data:`CRASH_GRACE_S` to finish its report.  ``gather``:
        after a short read that did not end the phase, wait that long before
        the next one (:meth:`command`).
        """
        import pexpect

        assert self._proc is not None and self.t_launch is not None
        limits = self.definition.timeouts
        total_deadline = self.t_launch + limits.total
        out: list[Record] = []
        fault: Record | None = None
        fault_deadline = total_deadline
        while True:
            now = time.monotonic()
            if fault is not None and (now >= fault_deadline or self.parser.ended):
                raise self._crash(fault)
            if now >= total_deadline:
                raise self._timeout(f"exceeded its total budget of {limits.total:g} s "
                                    f"while waiting for {what}")
            if deadline is not None and now >= deadline:
                raise self._timeout(f"did not answer within {deadline - self.t_launch:g} s "
                                    f"while waiting for {what}")
            idle_deadline = self._last_output + limits.idle
            if now >= idle_deadline:
                raise self._timeout(f"no console output for {limits.idle:g} s while waiting "
                                    f"for {what} (hang)")
            wait = min(idle_deadline, total_deadline,
                       deadline if deadline is not None else total_deadline,
                       fault_deadline) - now
            try:
                data = self._proc.console.read_nonblocking(65536, timeout=max(wait, 0.001))
            except pexpect.TIMEOUT:
                continue
            except pexpect.EOF:
                return self._on_eof(out, what, fault, eof_ok)
            self._last_output = time.monotonic()
            for record in self.parser.feed(data):
                _debug("<- %s", record.line)
                out.append(record)
                if record.tag == "BEGIN":
                    self._check_begin(record)
                elif record.tag == "CPU" and self.cpu is None:
                    self.cpu = record
                if record.tag == "FAULT" and fault is None:
                    fault = record
                    fault_deadline = time.monotonic() + CRASH_GRACE_S
                elif fault is None and stop(record):
                    return out
            if gather and len(data) < GATHER_BELOW:
                time.sleep(gather)

    def _on_eof(self, out: list[Record], what: str, fault: Record | None,
                eof_ok: bool) -> list[Record]:
        """QEMU closed the console: it exited.  Decide what that means."""
        assert self._proc is not None
        status = self._proc.wait(POWEROFF_GRACE_S)
        self._exit_status = status
        self.t_exit = time.monotonic()
        self.parser.finish()
        if fault is not None:
            raise self._crash(fault)
        if not self.records:
            raise LaunchError(f"{self.qemu} exited with status {status} before the guest "
                              f"started: {self._qemu_said() or 'no output'}",
                              log_path=self.log_path, tail=self._tail())
        if eof_ok and self.parser.ended:
            return out
        name = self.definition.name
        refusal = next((r for r in self.records if r.tag == "ERR" and r.get("cmd") == "boot"),
                       None)
        if refusal is not None:  # e.g. a granule the CPU does not implement
            raise GuestUnsupported(f"{name}: the firmware cannot run on this guest: "
                                   f"{refusal.get('why')} (cpu {self.definition.cpu}, "
                                   f"granule {self.granule})", why=str(refusal.get("why")))
        if self.parser.ended:
            raise GuestCrash(f"{name}: the guest powered off (END status="
                             f"{self.records[-1].get('status')}) while waiting for {what}",
                             log_path=self.log_path, tail=self._tail())
        said = self._qemu_said()
        raise GuestCrash(f"{name}: QEMU exited with status {status} while waiting for {what}"
                         + (f": {said}" if said else "")
                         + f" (last record: {self.records[-1].line})",
                         log_path=self.log_path, tail=self._tail())

    def _qemu_said(self) -> str | None:
        """QEMU's own message: the first line after the last record, warnings last.

        QEMU's stderr shares the console, so what it printed as it died (a
        rejected option, ``qemu: fatal: ...``) is there, after the records.
        """
        lines: list[str] = []
        for line in self.parser.tail:
            if line.startswith("SD1 "):
                lines = []
            elif line.strip():
                lines.append(line.strip())
        errors = [line for line in lines if ": warning:" not in line] or lines
        return errors[0] if errors else None

    # -- failure ---------------------------------------------------------

    def _tail(self) -> list[str]:
        return list(self.parser.tail)[-10:]

    def _timeout(self, why: str) -> GuestTimeout:
        return GuestTimeout(f"{self.definition.name}: {why}", log_path=self.log_path,
                            tail=self._tail())

    def _crash(self, fault: Record) -> GuestCrash:
        return GuestCrash(f"{self.definition.name}: {describe_fault(fault)}",
                          log_path=self.log_path, tail=self._tail())

    def _fail(self, exc: ShootdownError) -> None:
        """Remember the first error, give it the log path, and kill QEMU now."""
        if isinstance(exc, InfraError) and exc.log_path is None and self._proc is not None:
            exc.log_path = self.log_path
            exc.tail = exc.tail or self._tail()
        if self._error is None:
            self._error = exc
        self.shutdown()

    def _check_usable(self) -> None:
        if self._error is not None:
            raise self._error
        if self._shut_down:
            raise InfraError(f"guest {self.definition.name} is shut down")
