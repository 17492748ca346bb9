"""SIGTERM and SIGHUP take the path Ctrl-C takes.

Python turns SIGINT into :class:`KeyboardInterrupt`, so the ``finally``
blocks run: QEMU is killed, the console FIFO folder removed, the log folder
printed.  SIGTERM (``kill``, a CI timeout, systemd) and SIGHUP (a closed
terminal or SSH session) would kill the process outright and skip all of
that.  :func:`install` makes them raise :class:`Terminated`, a
``KeyboardInterrupt``, so every cleanup written for Ctrl-C applies; the CLI
then exits ``128 + signum`` as a shell reports a death by that signal.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

#: The signals handled like Ctrl-C.
SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """The process got SIGTERM or SIGHUP (``signum``)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def install() -> None:
    """Raise :class:`Terminated` on SIGTERM/SIGHUP (a signal set to be ignored stays so)."""
    if threading.current_thread() is not threading.main_thread():
        return  # only the main thread may set handlers (and gets the signals)
    for signum in SIGNALS:
        if signal.getsignal(signum) is signal.SIG_DFL:
            signal.signal(signum, _raise)


def exit_code(exc: KeyboardInterrupt) -> int:
    """``128 + signum``: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP."""
    return 128 + (exc.signum if isinstance(exc, Terminated) else signal.SIGINT)


#: The SIGTERM/SIGHUP this process got, if any: for code that catches the
#: interrupt on the way (pytest, running a matrix) and raises its own.
received: int | None = None


def interrupt() -> KeyboardInterrupt:
    """The interrupt to raise again: :class:`Terminated` after SIGTERM/SIGHUP, else Ctrl-C's."""
    return Terminated(received) if received is not None else KeyboardInterrupt()


def _raise(signum: int, frame: FrameType | None) -> None:
    global received
    received = signum
    # One exception per run: a second signal while the first one's cleanup
    # runs must not cut that cleanup short (SIGKILL still ends everything).
    for other in SIGNALS:
        signal.signal(other, signal.SIG_IGN)
    raise Terminated(signum)
