"""The QEMU command line of a guest: a pure function of its definition.

No file is read, no environment consulted: the same definition and firmware
path always give the same argv, which the tests pin with golden lists and
the JSON result records verbatim.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from shootdown.guest.definition import GuestDefinition

#: The QEMU binary used when neither ``--qemu`` nor ``SHOOTDOWN_QEMU`` names one.
DEFAULT_QEMU = "qemu-system-aarch64"


def default_qemu() -> str:
    """The QEMU binary to run: ``SHOOTDOWN_QEMU`` or :data:`DEFAULT_QEMU`."""
    return os.environ.get("SHOOTDOWN_QEMU") or DEFAULT_QEMU


def build_argv(guest: GuestDefinition, firmware: str | os.PathLike[str],
               qemu: str = DEFAULT_QEMU) -> list[str]:
    """The full QEMU argv that boots ``firmware`` on ``guest``.

    Why each fixed option is there:

    * ``-nographic -nodefaults``: no display, no default devices (no second
      serial port, no monitor multiplexed onto the console), so the console
      carries only what the guest prints;
    * ``-no-user-config``: a user's ``qemu.conf`` cannot change the machine;
    * ``-no-reboot``: a guest that resets (a crash path gone wrong) makes
      QEMU exit instead of booting again and looking alive;
    * ``-serial stdio``: the guest's first PL011 is our console, on QEMU's
      stdio, which every launcher can carry (a pty here or over SSH, plain
      pipes in a test); a launcher may move it with :func:`with_console`;
    * ``-kernel``: QEMU's loader jumps to the ELF's entry at EL1.
    """
    return [
        qemu,
        "-M", guest.machine,
        "-cpu", guest.cpu,
        "-smp", str(guest.smp),
        "-m", guest.memory,
        "-accel", guest.accel,
        "-nographic",
        "-nodefaults",
        "-no-user-config",
        "-no-reboot",
        "-serial", "stdio",
        "-kernel", os.fspath(firmware),
        *guest.extra_args,
    ]


def with_console(argv: Sequence[str], chardev: str) -> list[str] | None:
    """``argv`` with the guest's console moved from QEMU's stdio to ``chardev``.

    The first ``-serial`` option is the guest's first PL011, the console.
    A launcher that has a cheaper transport than QEMU's stdio (the local one
    uses a FIFO pair, ``pipe:<path>``) swaps it in here, at spawn time, so
    that :func:`build_argv` stays the same for every launcher.  ``None``
    when that option is not ``stdio`` (or there is none): the command line
    put the console elsewhere on purpose and is left as it is.
    """
    args = list(argv)
    for n in range(1, len(args) - 1):
        if args[n] == "-serial":
            if args[n + 1] != "stdio":
                return None
            args[n + 1] = chardev
            return args
    return None
