"""The kernel's build configuration (``.config``, ``/boot/config-*``).

Only what the teardown depends on is read, each fact from the symbol that
decides it in ``arch/arm64/Kconfig``:

* page size: ``CONFIG_ARM64_4K_PAGES`` / ``_16K_`` / ``_64K_`` (choice);
* virtual address bits: ``CONFIG_ARM64_VA_BITS`` (48, or 52 with LPA2 on
  4K/16K since v6.9);
* KPTI compiled in: ``CONFIG_UNMAP_KERNEL_AT_EL0`` (v4.16); on at run time
  only on CPUs that need it or with ``kpti=1``;
* LPA2: ``CONFIG_ARM64_LPA2`` (v6.9; 52-bit VA and PA on 4K/16K pages);
* range TLBI: ``CONFIG_ARM64_TLB_RANGE`` (v5.9, "Enable support for tlbi
  range feature of ARMv8.4"), used only on CPUs with FEAT_TLBIRANGE.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from shootdown.errors import ConfigError

#: ``# Linux/arm64 6.1.176 Kernel Configuration`` (scripts/kconfig/confdata.c)
_HEADER = re.compile(r"^# Linux/(\S+) (\S+) Kernel Configuration", re.M)
_SETTING = re.compile(r"^(CONFIG_\w+)=(.*)$")
_UNSET = re.compile(r"^# (CONFIG_\w+) is not set$")


def parse_config(text: str, where: str = "config") -> dict[str, str]:
    """Every ``CONFIG_X=value`` line; ``is not set`` lines map to ``"n"``.

    Quotes stay on string values.  ConfigError (naming ``where`` and the
    line) for a line that is neither a comment, blank, nor a setting.
    """
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        unset = _UNSET.match(line)
        if unset:
            values[unset.group(1)] = "n"
            continue
        if line.startswith("#"):
            continue
        setting = _SETTING.match(line)
        if setting is None:
            raise ConfigError(f"{where}: line {number}: not a kernel config line: {line[:60]!r}")
        values[setting.group(1)] = setting.group(2)
    return values


@dataclass(frozen=True)
class KernelConfig:
    """The facts of a kernel build that its teardown depends on."""

    #: architecture and version from the file's header, e.g. ("arm64", "6.1.176")
    arch: str | None
    version: str | None
    #: translation granule in KiB (4, 16, 64)
    page_size_kib: int
    #: CONFIG_ARM64_VA_BITS
    va_bits: int
    #: CONFIG_UNMAP_KERNEL_AT_EL0: KPTI is compiled in
    kpti: bool
    #: CONFIG_ARM64_LPA2
    lpa2: bool
    #: CONFIG_ARM64_TLB_RANGE
    tlb_range: bool
    #: every setting, for anyone who needs more
    values: dict[str, str]


def _enabled(values: dict[str, str], name: str) -> bool:
    return values.get(name, "n") == "y"


def read_config(text: str, where: str = "config") -> KernelConfig:
    """The facts of an arm64 kernel config; ConfigError naming the missing field."""
    values = parse_config(text, where)
    header = _HEADER.search(text)
    arch = header.group(1) if header else None
    if arch is not None and arch != "arm64":
        raise ConfigError(f"{where}: header: a Linux/{arch} config, not arm64")
    if not _enabled(values, "CONFIG_ARM64"):
        raise ConfigError(f"{where}: CONFIG_ARM64: not set (not an arm64 kernel config)")
    pages = [size for size in (4, 16, 64) if _enabled(values, f"CONFIG_ARM64_{size}K_PAGES")]
    if len(pages) != 1:
        raise ConfigError(f"{where}: CONFIG_ARM64_{{4K,16K,64K}}_PAGES: expected exactly one "
                          f"set, found {len(pages)}")
    try:
        va_bits = int(values["CONFIG_ARM64_VA_BITS"])
    except (KeyError, ValueError):
        raise ConfigError(f"{where}: CONFIG_ARM64_VA_BITS: missing or not a number") from None
    return KernelConfig(
        arch=arch,
        version=header.group(2) if header else None,
        page_size_kib=pages[0],
        va_bits=va_bits,
        kpti=_enabled(values, "CONFIG_UNMAP_KERNEL_AT_EL0"),
        lpa2=_enabled(values, "CONFIG_ARM64_LPA2"),
        tlb_range=_enabled(values, "CONFIG_ARM64_TLB_RANGE"),
        values=values,
    )
