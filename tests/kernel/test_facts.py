"""Reading a kernel's facts: Image header, compression, banner, config, policy choice."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import pytest

from shootdown.errors import ConfigError
from shootdown.kernel.config import parse_config, read_config
from shootdown.kernel.image import (
    IMAGE_MAGIC,
    compression_of,
    decompress_image,
    find_banner,
    parse_header,
)
from shootdown.kernel.info import choose_policy, read_info
from shootdown.model.policy import POLICIES

BANNER = (b"Linux version 6.1.0-50-arm64 (debian-kernel@lists.debian.org) (gcc-12 (Debian "
          b"12.2.0-14+deb12u1) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP "
          b"PREEMPT_DYNAMIC Debian 6.1.176-1 (2026-07-02)\n")


def make_image(page_bits: int = 1, banner: bytes = BANNER) -> bytes:
    """A synthetic raw arm64 Image: header (flags bits 1-2 = page_bits), then the banner."""
    flags = (page_bits << 1) | (1 << 3)
    header = struct.pack("<IIQQQQQQII", 0x91005A4D, 0x14000000, 0, 0x2000000, flags,
                         0, 0, 0, IMAGE_MAGIC, 0x40)
    return header + b"\x00" * 64 + b"%s version %s\x00" + banner + b"\x00" * 16


CONFIG = """\
#
# Automatically generated file; DO NOT EDIT.
# Linux/arm64 6.1.176 Kernel Configuration
#
CONFIG_ARM64=y
CONFIG_ARM64_4K_PAGES=y
# CONFIG_ARM64_16K_PAGES is not set
# CONFIG_ARM64_64K_PAGES is not set
CONFIG_ARM64_VA_BITS_48=y
CONFIG_ARM64_VA_BITS=48
CONFIG_UNMAP_KERNEL_AT_EL0=y
CONFIG_ARM64_TLB_RANGE=y
CONFIG_LOCALVERSION=""
"""


def test_header_page_size_from_flags_bits_1_and_2() -> None:
    assert [parse_header(make_image(bits)).page_size_kib for bits in range(4)] == \
        [None, 4, 16, 64]
    assert not parse_header(make_image()).big_endian


def test_header_rejects_what_is_not_an_image() -> None:
    with pytest.raises(ConfigError, match=r"^k: magic: not an arm64 Image"):
        parse_header(b"\x00" * 64, "k")
    with pytest.raises(ConfigError, match=r"^k: too short"):
        parse_header(b"MZ", "k")


def test_compressions_are_recognised_and_undone() -> None:
    raw = make_image()
    assert compression_of(raw) == "raw"
    packed = gzip.compress(raw) + b"\x00" * 100  # Debian pads vmlinuz
    assert compression_of(packed) == "gzip"
    assert decompress_image(packed, "vmlinuz") == (raw, "gzip")
    payload = gzip.compress(raw)
    zboot = (b"MZ\x00\x00zimg" + struct.pack("<II", 64, len(payload)) + b"\x00" * 8
             + b"gzip\x00".ljust(40, b"\x00"))
    assert compression_of(zboot + payload) == "zboot-gzip"
    assert decompress_image(zboot + payload, "vmlinuz.efi") == (raw, "zboot-gzip")


def test_corrupt_compressed_kernels_are_bad_input() -> None:
    with pytest.raises(ConfigError, match=r"^vmlinuz: corrupt gzip stream"):
        decompress_image(b"\x1f\x8b\x08\x00garbage-garbage", "vmlinuz")
    with pytest.raises(ConfigError, match=r"^x: not an arm64 Image, gzip, zstd or EFI zboot"):
        decompress_image(b"\x7fELF" + b"\x00" * 100, "x")
    with pytest.raises(ConfigError, match=r"^g: magic: not an arm64 Image"):
        decompress_image(gzip.compress(b"\x00" * 200), "g")


def test_banner_release_and_upstream() -> None:
    banner = find_banner(make_image())
    assert banner.release == "6.1.0-50-arm64"
    assert banner.version == (6, 1)
    assert banner.upstream == "6.1.176"
    assert banner.text == BANNER.decode().strip()


def test_the_printk_format_string_is_not_taken_for_the_banner() -> None:
    # "%s version %s" (linux_proc_banner) precedes linux_banner in make_image
    assert find_banner(make_image()).release != "%s"
    with pytest.raises(ConfigError, match=r"^Image: no 'Linux version' banner"):
        find_banner(make_image(banner=b"nothing here"))


def test_config_facts() -> None:
    config = read_config(CONFIG)
    assert (config.arch, config.version) == ("arm64", "6.1.176")
    assert (config.page_size_kib, config.va_bits) == (4, 48)
    assert (config.kpti, config.lpa2, config.tlb_range) == (True, False, True)
    assert config.values["CONFIG_LOCALVERSION"] == '""'
    assert config.values["CONFIG_ARM64_16K_PAGES"] == "n"


@pytest.mark.parametrize(("edit", "message"), [
    (lambda t: t.replace("CONFIG_ARM64_VA_BITS=48\n", ""), r"^c: CONFIG_ARM64_VA_BITS: missing"),
    (lambda t: t.replace("# CONFIG_ARM64_16K_PAGES is not set", "CONFIG_ARM64_16K_PAGES=y"),
     r"^c: CONFIG_ARM64_\{4K,16K,64K\}_PAGES: expected exactly one set, found 2"),
    (lambda t: t.replace("Linux/arm64", "Linux/x86"), r"^c: header: a Linux/x86 config"),
    (lambda t: t.replace("CONFIG_ARM64=y", "CONFIG_X86=y"), r"^c: CONFIG_ARM64: not set"),
    (lambda t: t + "garbage line\n", r"^c: line 14: not a kernel config line"),
])
def test_bad_configs_name_the_file_and_field(edit: object, message: str) -> None:
    assert callable(edit)
    with pytest.raises(ConfigError, match=message):
        read_config(edit(CONFIG), "c")


def test_parse_config_ignores_comments_and_blank_lines() -> None:
    assert parse_config("\n# hello\nCONFIG_A=1\n") == {"CONFIG_A": "1"}


@pytest.mark.parametrize(("version", "policy"), [
    ((5, 10), "v5.9"), ((6, 1), "v5.14"), ((6, 12), "v6.10"), ((6, 13), "v6.13"),
    ((7, 2), "v7.1"), ((7, 0), "v6.19"), ((4, 19), "v4.19"), ((5, 3), "v5.2"),
])
def test_policy_is_the_newest_modelled_release_not_newer(version: tuple[int, int],
                                                         policy: str) -> None:
    assert choose_policy(version, POLICIES) == policy


def test_a_kernel_older_than_every_policy_is_bad_input() -> None:
    with pytest.raises(ConfigError, match=r"kernel 4\.14 is older than every modelled release"):
        choose_policy((4, 14), POLICIES)


def test_info_cross_checks_config_against_the_image_header(tmp_path: Path) -> None:
    image = tmp_path / "Image"
    config = tmp_path / "config"
    image.write_bytes(make_image(page_bits=2))  # the header says 16K
    config.write_text(CONFIG)  # the config says 4K
    with pytest.raises(ConfigError, match=r"config: CONFIG_ARM64_4K_PAGES: the Image header"):
        read_info(image, config)
    image.write_bytes(make_image(page_bits=1))
    info = read_info(image, config)
    assert (info.release, info.page_size_kib, info.va_bits, info.kpti) == \
        ("6.1.0-50-arm64", 4, 48, True)
    assert info.tlb_range and info.ttl


def test_info_without_a_config_says_unknown(tmp_path: Path) -> None:
    image = tmp_path / "Image"
    image.write_bytes(make_image(page_bits=2))
    info = read_info(image, None)
    assert (info.page_size_kib, info.va_bits, info.kpti, info.tlb_range) == (16, None, None, None)


def test_own_kernel_compressed_is_decompressed_into_the_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shootdown.kernel.locate import locate

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "vmlinuz").write_bytes(gzip.compress(make_image()))
    (tmp_path / "config").write_text(CONFIG)
    files = locate(str(tmp_path / "vmlinuz"))
    assert files.image.is_relative_to(tmp_path / "cache" / "shootdown" / "kernels" / "local")
    assert files.image.read_bytes() == make_image()
    assert files.config == tmp_path / "config"


def test_own_kernel_in_a_build_tree_finds_its_dot_config(tmp_path: Path) -> None:
    from shootdown.kernel.locate import locate

    boot = tmp_path / "linux" / "arch" / "arm64" / "boot"
    boot.mkdir(parents=True)
    (boot / "Image").write_bytes(make_image())
    (tmp_path / "linux" / ".config").write_text(CONFIG)
    files = locate(str(boot / "Image"))
    assert (files.image, files.config) == (boot / "Image", tmp_path / "linux" / ".config")
    with pytest.raises(ConfigError, match=r"^--config: .*nope: no such file"):
        locate(str(boot / "Image"), str(tmp_path / "nope"))
