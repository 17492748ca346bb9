"""The exception tree of shootdown.

Every error the package raises on purpose derives from one root::

    ShootdownError
     +-- ConfigError            bad input: guest definition, scenario, CLI value  (exit 2)
     |    +-- ScenarioError     an invalid scenario file                          (exit 2)
     |    +-- GuestUnsupported  the guest's CPU lacks what the firmware needs      (exit 2)
     +-- FirmwareError          firmware ELF missing, not aarch64, stale build    (exit 2)
     +-- InfraError             the machinery failed, not the thing under test    (exit 3)
          +-- LaunchError       QEMU missing or refused its command line
          +-- GuestTimeout      the guest went silent or ran out of budget (hang)
          +-- GuestCrash        QEMU died, or the guest took an unexpected exception
          +-- ProtocolError     console records lost, corrupted or out of order
          +-- RemoteError       SSH connection, host key or remote command failed
          +-- TraceError        QEMU's execution log cannot be read as a trace

A validation failure (the guest did the wrong thing) is never an exception:
it is a result with a FAIL verdict.  The CLI maps exceptions to exit codes in
exactly one place, :func:`shootdown.cli.exit_code_for`.
"""

from __future__ import annotations


class ShootdownError(Exception):
    """Root of every error shootdown raises on purpose."""


class ConfigError(ShootdownError):
    """Bad input: a file or value the user gave us is invalid.

    The message is one line and names the file and the field.
    """


class ScenarioError(ConfigError):
    """An invalid scenario: names the file, the step number and the field."""

    def __init__(self, path: str, message: str, step: int | None = None,
                 field: str | None = None) -> None:
        where = path
        if step is not None:
            where += f": step {step}"
        if field is not None:
            where += f": {field}"
        super().__init__(f"{where}: {message}")
        self.path = path
        self.step = step
        self.field = field


class GuestUnsupported(ConfigError):
    """The firmware refused to run on this guest's CPU (read from its ID registers).

    ``why`` is the firmware's reason (``granule_unsupported``). A scenario run
    turns this into SKIP results for the scenarios of that firmware.
    """

    def __init__(self, message: str, why: str) -> None:
        super().__init__(message)
        self.why = why


class FirmwareError(ShootdownError):
    """The firmware ELF is missing, malformed, not aarch64, or stale."""


class InfraError(ShootdownError):
    """The machinery failed (QEMU, console, host), not the thing under test.

    ``log_path`` points at the console/QEMU log when there is one, and
    ``tail`` holds the last console lines for the report.
    """

    def __init__(self, message: str, *, log_path: str | None = None,
                 tail: list[str] | None = None) -> None:
        super().__init__(message)
        self.log_path = log_path
        self.tail = tail or []


class LaunchError(InfraError):
    """QEMU could not be started (missing binary, bad option)."""


class GuestTimeout(InfraError):
    """The guest printed nothing for too long or exceeded its total budget."""


class GuestCrash(InfraError):
    """QEMU exited unexpectedly, or the guest reported an unexpected exception."""


class ProtocolError(InfraError):
    """A console record was lost, corrupted, truncated or out of order."""


class RemoteError(InfraError):
    """An SSH connection, host-key check or remote command failed."""


class TraceError(InfraError):
    """QEMU's execution log cannot be read as an execution trace (a malformed line)."""
