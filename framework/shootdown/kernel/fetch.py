"""Debian's own arm64 kernels: resolve, download (verified), unpack, cache.

``debian:SUITE[-16k]`` names the newest kernel of Debian's ``linux-image-arm64``
(or ``linux-image-arm64-16k``) metapackage in that suite.  The metapackage
depends on the versioned image package (``linux-image-6.1.0-50-arm64``),
which up to 6.x holds ``/boot/vmlinuz-V`` and ``/boot/config-V``; from 7.x
(sid) that package is itself a metapackage and the image is in
``linux-binary-V`` (``/usr/lib/modules/V/vmlinuz``), the config in
``linux-base-V`` (``/usr/lib/modules/V/config``).  The resolver follows the
dependencies rather than knowing which release does what.

Downloads go through :class:`~shootdown.kernel.apt.PrivateApt` (verified by
apt against the signed Release file; the SHA256 is checked once more here and
recorded), are unpacked with ``dpkg-deb --fsys-tarfile`` and :mod:`tarfile`
(only the image and config members), and are deleted once unpacked.  The
cache holds, per kernel::

    $XDG_CACHE_HOME/shootdown/kernels/<suite>-<flavour>/<package version>/
        Image                    the raw arm64 Image (decompressed)
        config                   the kernel's build configuration
        package.deb-info.json    where they came from: packages, sizes, SHA256s
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from shootdown.errors import ConfigError, InfraError
from shootdown.kernel.apt import PrivateApt, cache_root, sha256_of
from shootdown.kernel.image import decompress_image

#: suite -> the flavours Debian builds there (arm64-16k from 6.12 on)
SUITES: dict[str, tuple[str, ...]] = {
    "bullseye": ("arm64",),
    "bookworm": ("arm64",),
    "trixie": ("arm64", "arm64-16k"),
    "sid": ("arm64", "arm64-16k"),
}

_IMAGE_MEMBER = re.compile(r"^(?:\./)?(?:boot/vmlinuz-[^/]+|usr/lib/modules/[^/]+/vmlinuz)$")
_CONFIG_MEMBER = re.compile(r"^(?:\./)?(?:boot/config-[^/]+|usr/lib/modules/[^/]+/config)$")


@dataclass(frozen=True)
class DebianKernel:
    """``debian:SUITE[-16k]``: one suite's kernel of one flavour."""

    #: bullseye, bookworm, trixie or sid
    suite: str
    #: arm64 or arm64-16k
    flavour: str

    @property
    def name(self) -> str:
        """The spec as written: ``debian:trixie-16k``."""
        tail = "-16k" if self.flavour == "arm64-16k" else ""
        return f"debian:{self.suite}{tail}"

    @property
    def cache_dir(self) -> Path:
        """Where this kernel's versions are cached."""
        return cache_root() / "kernels" / f"{self.suite}-{self.flavour}"


def parse_spec(spec: str) -> DebianKernel:
    """``debian:bookworm`` / ``debian:trixie-16k`` -> DebianKernel; ConfigError otherwise."""
    if not spec.startswith("debian:"):
        raise ConfigError(f"--kernel: {spec!r} is not debian:SUITE[-16k] "
                          f"(suites: {', '.join(SUITES)})")
    rest = spec[len("debian:"):]
    suite, flavour = (rest[:-4], "arm64-16k") if rest.endswith("-16k") else (rest, "arm64")
    if suite not in SUITES:
        raise ConfigError(f"--kernel: {spec}: unknown suite {suite!r} "
                          f"(known: {', '.join(SUITES)})")
    if flavour not in SUITES[suite]:
        raise ConfigError(f"--kernel: {spec}: Debian builds no {flavour} kernel for {suite} "
                          f"(flavours there: {', '.join(SUITES[suite])})")
    return DebianKernel(suite, flavour)


@dataclass(frozen=True)
class CachedKernel:
    """A fetched kernel in the cache."""

    #: the Debian kernel it is
    kernel: DebianKernel
    #: the package version (the cache directory's name)
    version: str
    #: the raw Image
    image: Path
    #: the build configuration
    config: Path
    #: package.deb-info.json, read
    info: dict[str, object]


def _depends(stanza: dict[str, str]) -> list[str]:
    """Package names in a stanza's Depends and Pre-Depends (first of each alternative)."""
    names = []
    for field in ("Pre-Depends", "Depends"):
        for clause in stanza.get(field, "").split(","):
            first = clause.split("|")[0].strip()
            if first:
                names.append(first.split()[0].split(":")[0])
    return names


def resolve(apt: PrivateApt, kernel: DebianKernel) -> dict[str, dict[str, str]]:
    """The packages holding the image and the config: {"image": stanza, "config": stanza}."""
    meta_name = f"linux-image-{kernel.flavour}"
    meta = apt.show(meta_name)[0]
    versioned = re.compile(rf"^linux-image-(\d\S*)-{re.escape(kernel.flavour)}$")
    targets = [n for n in _depends(meta) if versioned.match(n)]
    if len(targets) != 1:
        raise InfraError(f"debian:{kernel.suite}: {meta_name} {meta.get('Version')} depends on "
                         f"{len(targets)} versioned image packages ({', '.join(targets)}); "
                         "cannot tell which kernel it is")
    image_pkg = apt.show(targets[0])[0]
    deps = _depends(image_pkg)
    abi = versioned.match(targets[0]).group(1)  # type: ignore[union-attr]
    binary = f"linux-binary-{abi}-{kernel.flavour}"
    base = f"linux-base-{abi}-{kernel.flavour}"
    if binary in deps:  # 7.x: the image package is a metapackage
        return {"image": apt.show(binary)[0],
                "config": apt.show(base)[0] if base in deps else apt.show(binary)[0]}
    return {"image": image_pkg, "config": image_pkg}


def _extract(deb: Path, pattern: re.Pattern[str]) -> tuple[str, bytes] | None:
    """The first regular file of ``deb``'s data whose path matches ``pattern``."""
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None
    found: tuple[str, bytes] | None = None
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for member in tar:
                if member.isfile() and pattern.match(member.name):
                    data = tar.extractfile(member)
                    assert data is not None
                    found = (member.name.removeprefix("./"), data.read())
                    break
    except tarfile.TarError as exc:
        raise InfraError(f"{deb}: cannot read the package's data: {exc}") from exc
    finally:
        proc.stdout.close()
        proc.kill()
        proc.wait()
    return found


def cached_versions(kernel: DebianKernel) -> list[CachedKernel]:
    """Every complete cached version of ``kernel``, newest first."""
    from debian.debian_support import Version

    out = []
    if kernel.cache_dir.is_dir():
        for d in kernel.cache_dir.iterdir():
            info_path = d / "package.deb-info.json"
            if (d / "Image").is_file() and (d / "config").is_file() and info_path.is_file():
                try:
                    info = json.loads(info_path.read_text())
                except ValueError:
                    continue
                out.append(CachedKernel(kernel, d.name, d / "Image", d / "config", info))
    return sorted(out, key=lambda c: Version(c.version), reverse=True)


def fetch(kernel: DebianKernel, *, refresh: bool = True) -> tuple[CachedKernel, bool]:
    """The newest kernel of ``kernel``'s suite, downloading it if needed.

    With ``refresh`` the suite's indexes are updated first (network); without
    it a cached version is used as it is, and the network is only asked when
    nothing is cached.  Returns the kernel and whether it was downloaded now.
    """
    import fcntl

    try:
        kernel.cache_dir.mkdir(parents=True, exist_ok=True)
        lock = open(kernel.cache_dir / ".lock", "w")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise InfraError(f"{kernel.cache_dir}: cannot create the kernel cache: "
                         f"{exc.strerror or exc}") from exc
    with lock:
        # One fetch per kernel at a time (parallel test workers): apt's own
        # lock would make the second fail instead of wait.
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _fetch_locked(kernel, refresh)


def _fetch_locked(kernel: DebianKernel, refresh: bool) -> tuple[CachedKernel, bool]:
    if not refresh:
        cached = cached_versions(kernel)
        if cached:
            return cached[0], False
    apt = PrivateApt.for_suite(kernel.suite)
    apt.update()
    packages = resolve(apt, kernel)
    version = packages["image"]["Version"]
    target = kernel.cache_dir / version
    for hit in cached_versions(kernel):
        if hit.version == version:
            return hit, False
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix=".fetch-", dir=kernel.cache_dir))
    try:
        records: dict[str, dict[str, object]] = {}
        debs: dict[str, Path] = {}
        for role, stanza in packages.items():
            name = stanza["Package"]
            if name not in debs:
                deb = apt.download(name, stanza["Version"], work / "debs")
                digest = sha256_of(deb)
                if digest != stanza.get("SHA256"):
                    raise InfraError(f"{deb.name}: SHA256 {digest} differs from the signed "
                                     f"index's {stanza.get('SHA256')}")
                debs[name] = deb
            records[role] = {"package": name, "version": stanza["Version"],
                             "source": stanza.get("Source", name),
                             "filename": stanza.get("Filename"),
                             "size": int(stanza.get("Size", "0")),
                             "sha256": stanza.get("SHA256"), "sha256_verified": True}
        image = _extract(debs[packages["image"]["Package"]], _IMAGE_MEMBER)
        config = _extract(debs[packages["config"]["Package"]], _CONFIG_MEMBER)
        if image is None or config is None:
            missing = "image (vmlinuz)" if image is None else "config"
            raise InfraError(f"debian:{kernel.suite}: no {missing} found in "
                             f"{packages['image' if image is None else 'config']['Package']}")
        raw, packed = decompress_image(image[1], f"{records['image']['package']}:{image[0]}")
        (work / "Image").write_bytes(raw)
        (work / "config").write_bytes(config[1])
        records["image"]["member"] = image[0]
        records["image"]["compression"] = packed
        records["config"]["member"] = config[0]
        info = {"spec": kernel.name, "suite": kernel.suite, "flavour": kernel.flavour,
                "version": version, "mirror": apt.url, "keyring": apt.keyring,
                "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "fetch_seconds": round(time.monotonic() - t0, 1),
                "image_bytes": len(raw), "packages": records}
        (work / "package.deb-info.json").write_text(json.dumps(info, indent=2) + "\n")
        shutil.rmtree(work / "debs")
        if target.exists():
            shutil.rmtree(target)
        os.replace(work, target)
    except OSError as exc:
        raise InfraError(f"{kernel.cache_dir}: cannot write the kernel cache: "
                         f"{exc.strerror or exc}") from exc
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return _load(kernel, target), True


def _load(kernel: DebianKernel, target: Path) -> CachedKernel:
    info = json.loads((target / "package.deb-info.json").read_text())
    return CachedKernel(kernel, target.name, target / "Image", target / "config", info)
