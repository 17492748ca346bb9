"""The newc cpio writer, checked against GNU cpio's own reading of it."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from shootdown.kernel.initramfs import (
    Entry,
    char_device,
    directory,
    regular,
    workload_initramfs,
    write_newc,
)


def _cpio() -> str:
    path = shutil.which("cpio")
    if path is None:
        pytest.skip("cpio not found: run scripts/setup (apt-get install cpio)")
    return path


def test_members_are_4_byte_aligned_and_end_with_the_trailer() -> None:
    data = write_newc([regular("a", b"x"), regular("bb", b"yyyyy")])
    assert data.startswith(b"070701")
    assert len(data) % 4 == 0
    offset = 0
    names = []
    while True:
        assert data[offset:offset + 6] == b"070701", offset
        fields = [int(data[offset + 6 + 8 * i: offset + 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize = fields[11], fields[6]
        name = data[offset + 110: offset + 110 + namesize - 1].decode()
        names.append(name)
        offset = (offset + 110 + namesize + 3) // 4 * 4
        offset = (offset + filesize + 3) // 4 * 4
        if name == "TRAILER!!!":
            break
    assert names == ["a", "bb", "TRAILER!!!"]
    assert offset == len(data)


def test_archives_are_reproducible() -> None:
    assert workload_initramfs(b"\x7fELF...") == workload_initramfs(b"\x7fELF...")


def test_a_field_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="out of 32-bit range"):
        write_newc([Entry("dev/big", stat.S_IFCHR | 0o600, rdev=(1 << 32, 0))])


def test_gnu_cpio_lists_what_was_written() -> None:
    cpio = _cpio()
    data = workload_initramfs(b"\x7fELF" + bytes(range(256)) * 3)
    listing = subprocess.run([cpio, "-itv", "--quiet"], input=data, capture_output=True,
                             check=True).stdout.decode().splitlines()
    by_name = {line.split()[-1]: line for line in listing}
    assert list(by_name) == ["dev", "dev/console", "proc", "sys", "init"]
    assert by_name["dev"].startswith("drwxr-xr-x")
    assert by_name["dev/console"].startswith("crw-------")
    assert by_name["dev/console"].split()[4:6] == ["5,", "1"]  # major, minor
    assert by_name["init"].startswith("-rwxr-xr-x")
    assert by_name["init"].split()[4] == str(4 + 768)  # size


def test_gnu_cpio_extracts_the_same_bytes(tmp_path: Path) -> None:
    cpio = _cpio()
    payload = bytes(range(256)) * 17 + b"tail"  # not a multiple of 4
    data = write_newc([directory("d"), regular("d/f", payload, 0o644), regular("g", b"")])
    subprocess.run([cpio, "-idm", "--quiet", "--no-absolute-filenames"], input=data,
                   cwd=tmp_path, check=True, capture_output=True)
    assert (tmp_path / "d" / "f").read_bytes() == payload
    assert stat.S_IMODE((tmp_path / "d" / "f").stat().st_mode) == 0o644
    assert (tmp_path / "g").read_bytes() == b""


def test_gnu_cpio_rejects_a_truncated_archive() -> None:
    cpio = _cpio()
    data = write_newc([regular("f", b"0123456789" * 10)])
    done = subprocess.run([cpio, "-it", "--quiet"], input=data[:150], capture_output=True,
                          check=False)
    assert done.returncode != 0


def test_char_device_mode() -> None:
    entry = char_device("dev/console", 5, 1)
    assert stat.S_ISCHR(entry.mode) and entry.rdev == (5, 1)
