"""Firmware ELF checks: the cheap struct reader and pyelftools agree, with readelf.

Corrupt and wrong inputs (not an ELF, truncated, x86-64, no build-id) must be
refused with a FirmwareError naming the file.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from shootdown.errors import FirmwareError
from shootdown.firmware import inspect, quick_check

ROOT = Path(__file__).resolve().parents[1]
CROSS_GCC = "aarch64-linux-gnu-gcc"

READELF = "aarch64-linux-gnu-readelf"


def readelf_build_id(path: Path) -> str:
    if shutil.which(READELF) is None:
        pytest.skip(f"{READELF} not found: run scripts/setup")
    out = subprocess.run([READELF, "-n", str(path)], capture_output=True, text=True,
                         check=True).stdout
    m = re.search(r"Build ID: ([0-9a-f]+)", out)
    assert m, out
    return m.group(1)


def test_minimal_elf_both_readers_agree_with_readelf(minimal_elf: Path) -> None:
    quick = quick_check(minimal_elf)
    full = inspect(minimal_elf)
    assert quick.build_id == full.build_id == readelf_build_id(minimal_elf)
    assert quick.entry == full.entry == 0x40080000 == full.symbol("_start")
    assert full.machine == "EM_AARCH64"
    assert ".note.gnu.build-id" in full.sections
    assert not any(name.startswith("$") for name in full.symbols)


def test_real_firmware(firmware_elf: Path) -> None:
    quick = quick_check(firmware_elf)
    full = inspect(firmware_elf)
    assert quick.build_id == full.build_id == readelf_build_id(firmware_elf)
    assert quick.entry == full.entry


def test_missing_file(tmp_path: Path) -> None:
    for reader in (quick_check, inspect):
        with pytest.raises(FirmwareError, match=r"nope\.elf: no such file .*make -C firmware"):
            reader(tmp_path / "nope.elf")


def test_not_an_elf(tmp_path: Path) -> None:
    path = tmp_path / "text.elf"
    path.write_bytes(b"#!/bin/sh\necho not an elf\n" * 4)
    for reader in (quick_check, inspect):
        with pytest.raises(FirmwareError, match=r"text\.elf: not"):
            reader(path)


def test_truncated_elf(tmp_path: Path, minimal_elf: Path) -> None:
    data = minimal_elf.read_bytes()
    for size in (10, 63, 200):
        path = tmp_path / f"cut{size}.elf"
        path.write_bytes(data[:size])
        for reader in (quick_check, inspect):
            with pytest.raises(FirmwareError, match=rf"cut{size}\.elf"):
                reader(path)


def test_host_elf_is_not_aarch64() -> None:
    host = Path(shutil.which("true") or "/bin/true")
    with pytest.raises(FirmwareError, match=r"not AArch64|not EM_AARCH64"):
        quick_check(host)
    with pytest.raises(FirmwareError, match="not EM_AARCH64"):
        inspect(host)


def test_no_build_id(tmp_path: Path) -> None:
    gcc = shutil.which(CROSS_GCC)
    if gcc is None:
        pytest.skip(f"{CROSS_GCC} not found: run scripts/setup")
    out = tmp_path / "noid.elf"
    subprocess.run([gcc, "-nostdlib", "-static", "-Wl,--build-id=none", "-Wl,-Ttext=0x40080000",
                    "-o", str(out), str(ROOT / "benchmarks" / "minimal.S")], check=True)
    for reader in (quick_check, inspect):
        with pytest.raises(FirmwareError, match="no GNU build-id note"):
            reader(out)


def test_missing_symbol(minimal_elf: Path) -> None:
    with pytest.raises(FirmwareError, match="no symbol 'nope'"):
        inspect(minimal_elf).symbol("nope")
