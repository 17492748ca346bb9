"""The arm64 kernel ``Image``: its header, its compression, its banner.

The header is the one ``Documentation/arch/arm64/booting.rst`` defines (64
bytes, little-endian)::

    u32 code0              executable code
    u32 code1              executable code
    u64 text_offset        image load offset
    u64 image_size         effective image size
    u64 flags              bit 0: big-endian; bits 1-2: page size
                           (0 unspecified, 1 4K, 2 16K, 3 64K);
                           bit 3: may be placed anywhere in physical memory
    u64 res2, res3, res4
    u32 magic              0x644d5241 ("ARM\\x64")
    u32 res5               offset of the PE header (EFI stub)

Distributions ship it compressed (``vmlinuz``: gzip for Debian's arm64
packages up to 6.x) or raw; an EFI "zboot" image (``CONFIG_EFI_ZBOOT``,
``drivers/firmware/efi/libstub/zboot-header.S``) is a PE file whose header
names the compression (``"zimg"`` at offset 4, payload offset and size at 8
and 12, the compression's name at 24).  :func:`decompress_image` turns any of
these into the raw Image QEMU's ``-kernel`` boots most directly.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from shootdown.errors import ConfigError

#: "ARM\x64" at offset 56 of a raw arm64 Image.
IMAGE_MAGIC = 0x644D5241
#: flags bits 1-2 -> page size in KiB (0: the header does not say).
_PAGE_SIZES = {0: None, 1: 4, 2: 16, 3: 64}
_GZIP = b"\x1f\x8b"
_ZSTD = b"\x28\xb5\x2f\xfd"

#: ``linux_banner`` (init/version-timestamp.c): "Linux version RELEASE (BUILDER) (TOOLCHAIN) #..."
_BANNER = re.compile(rb"Linux version (\d+\.\d+[^\s\x00]*) \([^\n\x00]{0,512}")


@dataclass(frozen=True)
class ImageHeader:
    """The fields of the arm64 Image header that shootdown uses."""

    #: load offset from a 2 MiB aligned base
    text_offset: int
    #: bytes the kernel occupies once running (0 in very old kernels)
    image_size: int
    #: the raw flags field
    flags: int

    @property
    def big_endian(self) -> bool:
        """flags bit 0."""
        return bool(self.flags & 1)

    @property
    def page_size_kib(self) -> int | None:
        """flags bits 1-2: 4, 16, 64, or None when the header leaves it unspecified."""
        return _PAGE_SIZES[(self.flags >> 1) & 3]


def parse_header(image: bytes, where: str = "Image") -> ImageHeader:
    """The header of a raw arm64 Image; ConfigError naming ``where`` if it is not one."""
    if len(image) < 64:
        raise ConfigError(f"{where}: too short for an arm64 Image header ({len(image)} bytes)")
    (_code0, _code1, text_offset, image_size, flags, _r2, _r3, _r4, magic,
     _r5) = struct.unpack_from("<IIQQQQQQII", image, 0)
    if magic != IMAGE_MAGIC:
        raise ConfigError(f"{where}: magic: not an arm64 Image (0x{magic:08x} at offset 56, "
                          f"expected 0x{IMAGE_MAGIC:08x})")
    return ImageHeader(text_offset=text_offset, image_size=image_size, flags=flags)


def compression_of(data: bytes) -> str:
    """``raw``, ``gzip``, ``zstd``, ``zboot-<name>``, or ``unknown``."""
    if data[:2] == _GZIP:
        return "gzip"
    if data[:4] == _ZSTD:
        return "zstd"
    if data[:2] == b"MZ" and data[4:8] == b"zimg":
        name = data[24:56].split(b"\x00", 1)[0].decode("ascii", "replace")
        return f"zboot-{name}"
    if len(data) >= 64 and struct.unpack_from("<I", data, 56)[0] == IMAGE_MAGIC:
        return "raw"
    return "unknown"


def _decompress(kind: str, payload: bytes, where: str) -> bytes:
    import zlib

    if kind == "gzip":
        try:
            # A gzip member followed by padding: take the first member only.
            return zlib.decompressobj(wbits=31).decompress(payload)
        except zlib.error as exc:
            raise ConfigError(f"{where}: corrupt gzip stream: {exc}") from exc
    if kind == "zstd":
        try:
            import zstandard  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            raise ConfigError(f"{where}: zstd-compressed kernel; install the 'zstandard' "
                              "Python package or pass a decompressed Image") from None
        try:
            out: bytes = zstandard.ZstdDecompressor().decompressobj().decompress(payload)
        except zstandard.ZstdError as exc:
            raise ConfigError(f"{where}: corrupt zstd stream: {exc}") from exc
        return out
    raise ConfigError(f"{where}: compression {kind!r} not supported (gzip, zstd, raw)")


def decompress_image(data: bytes, where: str = "Image") -> tuple[bytes, str]:
    """The raw Image inside ``data`` and how it was packed (see :func:`compression_of`).

    ConfigError (naming ``where``) if the result is not an arm64 Image.
    """
    kind = compression_of(data)
    if kind == "raw":
        image = data
    elif kind in ("gzip", "zstd"):
        image = _decompress(kind, data, where)
    elif kind.startswith("zboot-"):
        offset, size = struct.unpack_from("<II", data, 8)
        image = _decompress(kind[len("zboot-"):], data[offset:offset + size], where)
    else:
        raise ConfigError(f"{where}: not an arm64 Image, gzip, zstd or EFI zboot file "
                          f"(starts with {data[:8].hex()})")
    parse_header(image, where)
    return image, kind


@dataclass(frozen=True)
class Banner:
    """The kernel's ``linux_banner``, as ``/proc/version`` shows it."""

    #: the whole line
    text: str
    #: ``uname -r``, e.g. ``6.1.0-50-arm64``
    release: str

    @property
    def version(self) -> tuple[int, int]:
        """(major, minor) of :attr:`release`."""
        major, minor = re.match(r"(\d+)\.(\d+)", self.release).groups()  # type: ignore[union-attr]
        return int(major), int(minor)

    @property
    def upstream(self) -> str | None:
        """The stable release a distribution names after its build number, if any.

        Debian's banner ends ``#1 SMP PREEMPT_DYNAMIC Debian 6.1.176-1 (date)``;
        ``6.1.176`` is the upstream stable release its ``6.1.0-50`` packages.
        """
        found = re.search(r" Debian (\d+\.\d+(?:\.\d+)?)", self.text)
        return found.group(1) if found else None


def find_banner(image: bytes, where: str = "Image") -> Banner:
    """The first ``Linux version ...`` line in a raw Image; ConfigError if none."""
    found = _BANNER.search(image)
    if found is None:
        raise ConfigError(f"{where}: no 'Linux version' banner (not a Linux kernel Image, "
                          "or still compressed)")
    return Banner(text=found.group(0).decode("utf-8", "replace").strip(),
                  release=found.group(1).decode("ascii", "replace"))
