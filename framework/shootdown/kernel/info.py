"""What shootdown knows about a kernel, read from the kernel itself.

The release comes from the Image's ``linux_banner``; page size from the
config's page-size choice, cross-checked with the Image header's flags
(bits 1-2); VA bits, KPTI, LPA2 and range TLBI from the config (see
:mod:`shootdown.kernel.config`).  FEAT_TTL hints are not a config option:
``__tlbi_level`` uses them from v5.9 on whenever the CPU has the feature
(``arch/arm64/include/asm/tlbflush.h``), so they follow from the release.

The policy a kernel is checked against is the newest modelled release not
newer than the kernel's major.minor (:func:`choose_policy`).  A stable
release (6.1.176) carries backports its major.minor's policy may lack; the
choice says which release it took so that a reader can judge.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from shootdown.errors import ConfigError
from shootdown.kernel.config import KernelConfig, read_config
from shootdown.kernel.image import Banner, ImageHeader, find_banner, parse_header

#: The first release whose tlbflush.h uses FEAT_TTL hints and range TLBIs.
TTL_RANGE_RELEASE = (5, 9)


@dataclass(frozen=True)
class KernelInfo:
    """A kernel's facts, as ``shootdown kernel info`` prints them."""

    #: the Image file these facts were read from
    image: str
    #: its configuration file (None: none given or found)
    config: str | None
    #: the ``Linux version ...`` banner line
    banner: str
    #: ``uname -r``
    release: str
    #: (major, minor) of the release
    version: tuple[int, int]
    #: the upstream stable release (from Debian's banner or the config header)
    upstream: str | None
    #: page size in KiB (config; else the Image header)
    page_size_kib: int | None
    #: page size the Image header declares (None: unspecified)
    header_page_size_kib: int | None
    #: CONFIG_ARM64_VA_BITS (None without a config)
    va_bits: int | None
    #: CONFIG_UNMAP_KERNEL_AT_EL0
    kpti: bool | None
    #: CONFIG_ARM64_LPA2
    lpa2: bool | None
    #: range TLBIs compiled in (release >= 5.9 and CONFIG_ARM64_TLB_RANGE)
    tlb_range: bool | None
    #: FEAT_TTL hints used when the CPU has them (release >= 5.9)
    ttl: bool

    def as_dict(self) -> dict[str, object]:
        """JSON-ready."""
        return asdict(self)


def read_info(image_path: Path, config_path: Path | None) -> KernelInfo:
    """The facts of a raw Image and (optionally) its config; ConfigError naming the file."""
    try:
        image = image_path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{image_path}: cannot read: {exc.strerror or exc}") from exc
    header: ImageHeader = parse_header(image, str(image_path))
    banner: Banner = find_banner(image, str(image_path))
    config: KernelConfig | None = None
    if config_path is not None:
        try:
            text = config_path.read_text(errors="replace")
        except OSError as exc:
            raise ConfigError(f"{config_path}: cannot read: {exc.strerror or exc}") from exc
        config = read_config(text, str(config_path))
        if header.page_size_kib not in (None, config.page_size_kib):
            raise ConfigError(f"{config_path}: CONFIG_ARM64_{config.page_size_kib}K_PAGES: the "
                              f"Image header ({image_path}) says {header.page_size_kib}K pages; "
                              "config and Image are not from one build")
    new_enough = banner.version >= TTL_RANGE_RELEASE
    return KernelInfo(
        image=str(image_path),
        config=str(config_path) if config_path else None,
        banner=banner.text,
        release=banner.release,
        version=banner.version,
        upstream=banner.upstream or (config.version if config else None),
        page_size_kib=config.page_size_kib if config else header.page_size_kib,
        header_page_size_kib=header.page_size_kib,
        va_bits=config.va_bits if config else None,
        kpti=config.kpti if config else None,
        lpa2=config.lpa2 if config else None,
        tlb_range=(new_enough and config.tlb_range) if config else None,
        ttl=new_enough,
    )


def choose_policy(version: tuple[int, int], releases: Iterable[str]) -> str:
    """The newest release name (``vX.Y``) in ``releases`` not newer than ``version``.

    ConfigError when the kernel is older than every modelled release.
    """
    known = sorted((tuple(int(p) for p in name[1:].split(".")), name) for name in releases)
    fitting = [name for number, name in known if number <= version]
    if not fitting:
        raise ConfigError(f"kernel {version[0]}.{version[1]} is older than every modelled "
                          f"release ({known[0][1] if known else 'none'}); give --policy")
    return fitting[-1]


def kernel_policy(info: KernelInfo) -> tuple[str, str]:
    """The policy to check a kernel against, and why: its stable release's policy when
    backports make that differ (:func:`shootdown.model.policy.stable_policy`), else the
    newest modelled release not newer than its major.minor."""
    import re

    from shootdown.model.policy import POLICIES, stable_policy

    base = choose_policy(info.version, POLICIES)
    m = re.match(r"(\d+)\.(\d+)\.(\d+)", info.upstream or "")
    if m:
        stable = stable_policy((int(m.group(1)), int(m.group(2)), int(m.group(3))))
        if stable is not None:
            return stable.name, (f"{base} with the fixes stable {info.upstream} carries "
                                 "(model/policy.py STABLE_BACKPORTS)")
    return base, f"the newest modelled release not newer than {info.version[0]}.{info.version[1]}"

