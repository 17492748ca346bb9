"""debian:SUITE[-16k]: spec parsing, package resolution, apt's private configuration,
and a missing archive (real apt, an address nothing listens on)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shootdown.errors import ConfigError, InfraError
from shootdown.kernel.apt import PrivateApt
from shootdown.kernel.fetch import DebianKernel, parse_spec, resolve


@pytest.mark.parametrize(("spec", "suite", "flavour"), [
    ("debian:bullseye", "bullseye", "arm64"), ("debian:bookworm", "bookworm", "arm64"),
    ("debian:trixie-16k", "trixie", "arm64-16k"), ("debian:sid-16k", "sid", "arm64-16k"),
])
def test_specs(spec: str, suite: str, flavour: str) -> None:
    kernel = parse_spec(spec)
    assert (kernel.suite, kernel.flavour, kernel.name) == (suite, flavour, spec)


@pytest.mark.parametrize(("spec", "message"), [
    ("debian:jessie", r"unknown suite 'jessie'"),
    ("debian:bookworm-16k", r"Debian builds no arm64-16k kernel for bookworm"),
    ("ubuntu:noble", r"is not debian:SUITE\[-16k\]"),
])
def test_bad_specs_are_bad_input(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"^--kernel: .*{message}"):
        parse_spec(spec)


class IndexOf:
    """An apt whose ``show`` answers from fixed stanzas (resolution is pure logic)."""

    def __init__(self, stanzas: list[dict[str, str]]) -> None:
        self.stanzas = {s["Package"]: s for s in stanzas}

    def show(self, package: str) -> list[dict[str, str]]:
        return [self.stanzas[package]]


def test_resolve_6x_one_package_holds_image_and_config() -> None:
    apt = IndexOf([
        {"Package": "linux-image-arm64", "Version": "6.1.176-1",
         "Depends": "linux-image-6.1.0-50-arm64 (= 6.1.176-1)"},
        {"Package": "linux-image-6.1.0-50-arm64", "Version": "6.1.176-1",
         "Depends": "kmod, linux-base (>= 4.3~), initramfs-tools (>= 0.120+deb8u2) | "
                    "linux-initramfs-tool"},
    ])
    found = resolve(apt, DebianKernel("bookworm", "arm64"))  # type: ignore[arg-type]
    assert found["image"]["Package"] == found["config"]["Package"] == \
        "linux-image-6.1.0-50-arm64"


def test_resolve_7x_image_in_linux_binary_config_in_linux_base() -> None:
    apt = IndexOf([
        {"Package": "linux-image-arm64-16k", "Version": "7.2.13-1",
         "Depends": "linux-base-arm64-16k (= 7.2.13-1), "
                    "linux-image-7.2.13+deb14-arm64-16k (= 7.2.13-1)"},
        {"Package": "linux-image-7.2.13+deb14-arm64-16k", "Version": "7.2.13-1",
         "Pre-Depends": "linux-base",
         "Depends": "dracut | initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool, "
                    "linux-base-7.2.13+deb14-arm64-16k (= 7.2.13-1), "
                    "linux-binary-7.2.13+deb14-arm64-16k (= 7.2.13-1), "
                    "linux-modules-7.2.13+deb14-arm64-16k (= 7.2.13-1)"},
        {"Package": "linux-binary-7.2.13+deb14-arm64-16k", "Version": "7.2.13-1"},
        {"Package": "linux-base-7.2.13+deb14-arm64-16k", "Version": "7.2.13-1"},
    ])
    found = resolve(apt, DebianKernel("sid", "arm64-16k"))  # type: ignore[arg-type]
    assert found["image"]["Package"] == "linux-binary-7.2.13+deb14-arm64-16k"
    assert found["config"]["Package"] == "linux-base-7.2.13+deb14-arm64-16k"


def test_resolve_refuses_an_ambiguous_metapackage() -> None:
    apt = IndexOf([{"Package": "linux-image-arm64", "Version": "1",
                    "Depends": "linux-image-6.1.0-1-arm64, linux-image-6.1.0-2-arm64"}])
    with pytest.raises(InfraError, match="depends on 2 versioned image packages"):
        resolve(apt, DebianKernel("bookworm", "arm64"))  # type: ignore[arg-type]


def test_private_apt_reads_and_writes_only_its_own_directory(tmp_path: Path) -> None:
    apt = PrivateApt("bookworm", tmp_path / "apt", url="http://archive.invalid/debian")
    options = apt.options()
    values = dict(o.split("=", 1) for o in options[1::2])
    for key in ("Dir::Etc::sourcelist", "Dir::Etc::sourceparts", "Dir::Etc::preferences",
                "Dir::Etc::preferencesparts", "Dir::State", "Dir::State::Lists",
                "Dir::State::status", "Dir::Cache"):
        assert values[key].startswith(str(tmp_path / "apt")), key
    assert values["APT::Architecture"] == "arm64"
    apt.prepare()
    line = (tmp_path / "apt" / "sources.list").read_text()
    assert line == ("deb [arch=arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
                    "http://archive.invalid/debian bookworm main\n")


def test_an_expired_release_file_is_refused_unless_allowed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Valid-Until is apt's replay protection: kept by default, given up only on request
    (the signature and the SHA256 sums are checked either way)."""
    from shootdown.kernel.apt import failure_line

    apt = PrivateApt("sid", tmp_path / "apt")
    monkeypatch.delenv("SHOOTDOWN_APT_ALLOW_EXPIRED", raising=False)
    assert "Acquire::Check-Valid-Until=false" not in apt.options()
    monkeypatch.setenv("SHOOTDOWN_APT_ALLOW_EXPIRED", "yes")  # only "1" means yes
    assert "Acquire::Check-Valid-Until=false" not in apt.options()
    monkeypatch.setenv("SHOOTDOWN_APT_ALLOW_EXPIRED", "1")
    assert "Acquire::Check-Valid-Until=false" in apt.options()
    expired = ("E: Release file for http://deb.debian.org/debian/dists/sid/InRelease is "
               "expired (invalid since 27d 23h 29min 12s). Updates for this repository "
               "will not be applied.")
    line = failure_line("apt-get", "update", "sid", "http://deb.debian.org/debian", expired)
    assert line.startswith("apt-get update (sid, http://deb.debian.org/debian) failed: E: ")
    assert line.endswith("SHOOTDOWN_APT_ALLOW_EXPIRED=1 accepts it, signatures and SHA256 "
                         "sums still checked]")
    assert "\n" not in line
    other = failure_line("apt-get", "update", "sid", "u", "E: Failed to fetch")
    assert other == "apt-get update (sid, u) failed: E: Failed to fetch"


def test_an_unreachable_archive_is_one_line_and_exit_3(tmp_path: Path) -> None:
    if not os.path.isfile("/usr/share/keyrings/debian-archive-keyring.gpg"):
        pytest.skip("debian-archive-keyring not installed: run scripts/setup")
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path),
               SHOOTDOWN_DEBIAN_MIRROR="http://127.0.0.1:9/debian")
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "shootdown.cli", "kernel", "fetch",
                           "debian:bookworm"], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 3, done.stderr
    assert time.monotonic() - t0 < 60
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("shootdown: error: apt-get update (bookworm, "
                               "http://127.0.0.1:9/debian) failed:"), lines[0]
    assert done.stdout == ""

    assert not list((tmp_path / "shootdown" / "kernels").glob("*/*/Image"))


@pytest.mark.parametrize("spelling", [[], ["--kernel"]])
def test_a_missing_image_path_is_bad_input(tmp_path: Path, spelling: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "shootdown.cli", "kernel", "info", *spelling,
                           str(tmp_path / "nope")], capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"shootdown: error: --kernel: {tmp_path / 'nope'}: no such "
                                   "file (and not debian:SUITE[-16k])")
