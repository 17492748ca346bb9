"""The console log file: every console byte, up to a limit that keeps its head and tail.

A guest that prints without end (a runaway loop, a chatty payload) wrote
118 MB in 10 s.  The log keeps the first :data:`HEAD_BYTES` bytes (the boot,
the first records) on disk as they come, and the last :data:`TAIL_BYTES`
bytes (where a hang or crash shows) in memory, written after a marker line
when the log is closed::

    [shootdown: 101711872 console bytes dropped here: the log keeps the first
    8388608 and the last 8388608]

(one line in the file).

So a log never exceeds :data:`CONSOLE_LOG_LIMIT` plus that line.  The tail
reaches the file when the guest is shut down or killed (always, unless the
host process itself is SIGKILLed; the head is on disk regardless).

A write that fails (a full disk, a file size limit) is an
:class:`~shootdown.errors.InfraError` naming the file (exit 3), not a
traceback.
"""

from __future__ import annotations

import collections
import contextlib
import os

from shootdown.errors import InfraError

#: The most console bytes one log keeps (16 MiB: far above any real run's
#: few hundred KiB, small enough that a runaway guest cannot fill a disk).
CONSOLE_LOG_LIMIT = 16 * 1024 * 1024
#: Bytes kept from the start of the console.
HEAD_BYTES = CONSOLE_LOG_LIMIT // 2
#: Bytes kept from the end of the console.
TAIL_BYTES = CONSOLE_LOG_LIMIT - HEAD_BYTES


class ConsoleLog:
    """A binary log file that keeps its first ``head`` and last ``tail`` bytes.

    Used as pexpect's ``logfile_read``: ``write``, ``flush`` and ``close``.
    """

    def __init__(self, path: str | os.PathLike[str], *, head: int = HEAD_BYTES,
                 tail: int = TAIL_BYTES) -> None:
        self.path = os.fspath(path)
        self._file = open(self.path, "wb")  # noqa: SIM115 - closed by close()
        self._head_left = head
        self._head = head
        self._tail_max = tail
        self._tail: collections.deque[bytes] = collections.deque()
        self._tail_len = 0
        #: console bytes seen in all
        self.seen = 0
        self.closed = False
        #: a write failed (and raised): the log is incomplete
        self.failed = False

    @property
    def dropped(self) -> int:
        """Bytes of the console that the log does not keep (so far)."""
        return max(0, self.seen - self._head - self._tail_max)

    def write(self, data: bytes) -> int:
        """Keep ``data`` (head on disk, or the in-memory tail); its length."""
        n = len(data)
        self.seen += n
        if self._head_left > 0:
            part = data[:self._head_left]
            self._put(part)
            self._head_left -= len(part)
            data = data[len(part):]
        if data:
            self._tail.append(bytes(data))
            self._tail_len += len(data)
            # Whole chunks fall off the front; the partial one is cut at close.
            while self._tail and self._tail_len - len(self._tail[0]) >= self._tail_max:
                self._tail_len -= len(self._tail.popleft())
        return n

    def flush(self) -> None:
        """Flush the head to the file (the tail waits for :meth:`close`)."""
        try:
            self._file.flush()
        except OSError as exc:
            raise self._error(exc) from exc

    def close(self) -> None:
        """Write the marker and the tail, and close the file (idempotent)."""
        if self.closed:
            return
        self.closed = True
        try:
            if self._tail and not self.failed:  # after a failed write: already reported
                tail = b"".join(self._tail)[-self._tail_max:]
                self._tail.clear()
                if self.dropped:
                    self._put(f"\n[shootdown: {self.dropped} console bytes dropped here: the "
                              f"log keeps the first {self._head} and the last "
                              f"{self._tail_max}]\n".encode())
                self._put(tail)
            if not self.failed:
                self._file.flush()
        except OSError as exc:
            raise self._error(exc) from exc
        finally:
            with contextlib.suppress(OSError):
                self._file.close()

    def _put(self, data: bytes) -> None:
        try:
            self._file.write(data)
        except OSError as exc:
            raise self._error(exc) from exc

    def _error(self, exc: OSError) -> InfraError:
        self.failed = True
        return InfraError(f"{self.path}: cannot write the console log: {exc.strerror or exc}")
