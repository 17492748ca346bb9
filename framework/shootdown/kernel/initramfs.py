"""A newc ("SVR4 with no CRC") cpio archive, the format the kernel unpacks as initramfs.

``Documentation/driver-api/early-userspace/buffer-format.rst``: each member
is a 110-byte ASCII header, the NUL-terminated name, padding to a multiple
of 4, the data, padding to a multiple of 4; a member named ``TRAILER!!!``
ends the archive.  The header is the magic ``070701`` and thirteen 8-digit
hexadecimal fields::

    ino mode uid gid nlink mtime filesize devmajor devminor
    rdevmajor rdevminor namesize check

Archives written here are reproducible: uid/gid 0, mtime 0, inode numbers
counted from 1, no CRC.  The kernel accepts them uncompressed (``-initrd``).
"""

from __future__ import annotations

import stat
from collections.abc import Iterable
from dataclasses import dataclass

MAGIC = b"070701"
TRAILER = "TRAILER!!!"
#: the console device node (major 5, minor 1: ``/dev/console``, devices.txt)
CONSOLE_DEVICE = (5, 1)


@dataclass(frozen=True)
class Entry:
    """One archive member."""

    #: path inside the archive, without a leading slash (``dev/console``)
    name: str
    #: st_mode: file type and permission bits
    mode: int
    #: a regular file's contents (empty for directories and devices)
    data: bytes = b""
    #: (major, minor) of a device node
    rdev: tuple[int, int] = (0, 0)


def directory(name: str, perm: int = 0o755) -> Entry:
    """A directory member."""
    return Entry(name, stat.S_IFDIR | perm)


def regular(name: str, data: bytes, perm: int = 0o755) -> Entry:
    """A regular file member."""
    return Entry(name, stat.S_IFREG | perm, data)


def char_device(name: str, major: int, minor: int, perm: int = 0o600) -> Entry:
    """A character device node member."""
    return Entry(name, stat.S_IFCHR | perm, rdev=(major, minor))


def _pad4(n: int) -> bytes:
    return b"\x00" * (-n % 4)


def _member(ino: int, entry: Entry) -> bytes:
    name = entry.name.lstrip("/").encode() + b"\x00"
    nlink = 2 if stat.S_ISDIR(entry.mode) else 1
    fields = (ino, entry.mode, 0, 0, nlink, 0, len(entry.data), 0, 0,
              entry.rdev[0], entry.rdev[1], len(name), 0)
    for value in fields:
        if not 0 <= value <= 0xFFFFFFFF:
            raise ValueError(f"{entry.name}: cpio field {value} out of 32-bit range")
    header = MAGIC + b"".join(b"%08X" % v for v in fields)
    head = header + name
    return head + _pad4(len(head)) + entry.data + _pad4(len(entry.data))


def write_newc(entries: Iterable[Entry]) -> bytes:
    """The archive of ``entries`` (in the given order), with its trailer."""
    parts = [_member(ino, e) for ino, e in enumerate(entries, 1)]
    parts.append(_member(0, Entry(TRAILER, 0)))
    return b"".join(parts)


def workload_initramfs(init: bytes) -> bytes:
    """The initramfs that runs ``init`` (a static ELF) as ``/init`` on the console.

    ``/dev/console`` is there so that the kernel can open the console as the
    init's stdin, stdout and stderr before it runs ``/init``
    (``console_on_rootfs``); nothing is mounted.
    """
    return write_newc([
        directory("dev"),
        char_device("dev/console", *CONSOLE_DEVICE),
        directory("proc"),
        directory("sys"),
        regular("init", init, 0o755),
    ])
