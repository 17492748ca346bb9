"""The QEMU command line of a guest: a pure function of its definition.

No file is read, no environment consulted: the same definition and firmware
path always give the same argv, which the tests pin with golden lists and
the JSON result records verbatim.
"""

from __future__ import annotations

import os

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
    * ``-serial stdio``: the guest's first PL011 is our console;
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
