"""A minimal synchronous QMP client: enough to send HMP commands to a running QEMU.

QEMU is started with ``-qmp unix:PATH,server=on,wait=off``; the client
connects, reads the greeting, negotiates (``qmp_capabilities``) and then
sends ``human-monitor-command`` (the monitor's own commands, such as ``log``
and ``one-insn-per-tb``, which have no QMP equivalent in QEMU 7.2).  Events
QEMU sends in between are skipped.  Every failure is an
:class:`~shootdown.errors.InfraError` naming the command.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

from shootdown.errors import InfraError


class Qmp:
    """One QMP connection over a unix socket."""

    def __init__(self, path: str, *, timeout: float = 30.0) -> None:
        self.path = path
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buffer = b""

    def connect(self) -> None:
        """Connect (retrying while QEMU creates the socket) and negotiate."""
        deadline = time.monotonic() + self.timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(self.path)
                break
            except OSError as exc:
                sock.close()
                if time.monotonic() > deadline:
                    raise InfraError(f"QMP {self.path}: cannot connect: {exc}") from exc
                time.sleep(0.05)
        self._sock = sock
        greeting = self._read()
        if "QMP" not in greeting:
            raise InfraError(f"QMP {self.path}: no greeting (got {greeting!r})")
        self.execute("qmp_capabilities")

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """Run a QMP command; its ``return`` value."""
        if self._sock is None:
            raise InfraError(f"QMP {self.path}: not connected")
        message: dict[str, Any] = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        try:
            self._sock.sendall(json.dumps(message).encode() + b"\n")
        except OSError as exc:
            raise InfraError(f"QMP {command}: {exc}") from exc
        while True:
            answer = self._read()
            if "event" in answer:
                continue
            if "error" in answer:
                raise InfraError(f"QMP {command}: {answer['error'].get('desc', answer)}")
            return answer.get("return")

    def hmp(self, command_line: str) -> str:
        """A monitor command; its output.  Output at all means the monitor refused it."""
        said = self.execute("human-monitor-command", {"command-line": command_line})
        text = said if isinstance(said, str) else ""
        if text.strip():
            raise InfraError(f"QEMU monitor refused {command_line!r}: {text.strip()}")
        return text

    def _read(self) -> dict[str, Any]:
        assert self._sock is not None
        while b"\n" not in self._buffer:
            try:
                chunk = self._sock.recv(65536)
            except OSError as exc:
                raise InfraError(f"QMP {self.path}: {exc}") from exc
            if not chunk:
                raise InfraError(f"QMP {self.path}: QEMU closed the connection")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            value = json.loads(line)
        except ValueError as exc:
            raise InfraError(f"QMP {self.path}: not JSON: {line[:100]!r}") from exc
        if not isinstance(value, dict):
            raise InfraError(f"QMP {self.path}: not an object: {line[:100]!r}")
        return value
