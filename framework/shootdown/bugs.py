"""The firmware's bug injections, read from the ELF it is about to boot.

The firmware keeps one X-macro list (firmware/include/inject.h) and emits it
into the non-loaded section ``.shootdown.bugs``: the marker
``shootdown-bugs/3``, then ``name\\0releases\\0description\\0`` triples
(firmware built before the releases field: ``name\\0description\\0`` pairs,
no marker). This module reads that section, so the host never keeps a copy of
its own that could drift from what the firmware really implements.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from shootdown.errors import FirmwareError

#: the ELF section holding the list
SECTION = ".shootdown.bugs"
#: first string of a list with a releases field (three strings per bug)
MARKER_V3 = b"shootdown-bugs/3"


@dataclass(frozen=True)
class Bug:
    """One injectable bug."""

    #: the name given to ``--inject`` and sent in ``SCN inject=``
    name: str
    #: what it breaks, and the kernel history it reproduces
    description: str
    #: where its code path exists (``v4.20+``, ``every release, kpti=1``);
    #: empty for firmware built before the list carried it
    releases: str = ""


def read_bugs(elf_path: str | os.PathLike[str]) -> list[Bug]:
    """The bug injections a firmware ELF implements, in the firmware's order."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    path = os.fspath(elf_path)
    try:
        with open(path, "rb") as f:
            section = ELFFile(f).get_section_by_name(SECTION)
            data = section.data() if section is not None else None
    except OSError as exc:
        raise FirmwareError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except ELFError as exc:
        raise FirmwareError(f"{path}: not an ELF file: {exc}") from exc
    if data is None:
        raise FirmwareError(f"{path}: no {SECTION} section (not a shootdown firmware, "
                            f"or built before bug injections existed)")
    fields = data.rstrip(b"\0").split(b"\0")
    try:
        if fields[0] == MARKER_V3:
            if (len(fields) - 1) % 3:
                raise FirmwareError(f"{path}: {SECTION}: the number of strings after the "
                                    f"marker is not a multiple of three (corrupt list)")
            return [Bug(fields[i].decode(), fields[i + 2].decode(), fields[i + 1].decode())
                    for i in range(1, len(fields), 3)]
        if len(fields) % 2:
            raise FirmwareError(f"{path}: {SECTION}: odd number of strings (corrupt list)")
        return [Bug(fields[i].decode(), fields[i + 1].decode())
                for i in range(0, len(fields), 2)]
    except UnicodeDecodeError as exc:
        raise FirmwareError(f"{path}: {SECTION}: not UTF-8 text ({exc.reason} at byte "
                            f"{exc.start})") from exc


def check_inject(name: str, bugs: list[Bug], source: str) -> str:
    """``name`` if the firmware knows it (or it is ``none``); else a ConfigError."""
    from shootdown.errors import ConfigError

    if name == "none" or any(b.name == name for b in bugs):
        return name
    known = ", ".join(b.name for b in bugs)
    raise ConfigError(f"--inject: unknown bug {name!r} in {source} (known: {known})")
