"""A ``--kernel`` argument: ``debian:SUITE[-16k]`` or the path of an Image.

A path may name a raw Image or a compressed one (``vmlinuz``, gzip, zstd or
EFI zboot); a compressed one is decompressed once into the cache, keyed by
its SHA256.  Its config is ``--config`` if given, else the first of
``config`` beside the Image, or ``.config`` at the top of a kernel build tree
(``arch/arm64/boot/Image`` -> ``../../../.config``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shootdown.errors import ConfigError
from shootdown.kernel.apt import cache_root, sha256_of
from shootdown.kernel.fetch import fetch, parse_spec
from shootdown.kernel.image import compression_of, decompress_image


@dataclass(frozen=True)
class KernelFiles:
    """A kernel ready to boot."""

    #: what the user named (``debian:bookworm`` or the path)
    label: str
    #: the raw Image
    image: Path
    #: its config, when known
    config: Path | None
    #: the Debian package version, for a debian: kernel
    package_version: str | None = None


def _config_beside(image: Path) -> Path | None:
    candidates = [image.parent / "config"]
    if len(image.parents) >= 3 and image.parent.name == "boot":
        candidates.append(image.parents[3] / ".config")
    return next((c for c in candidates if c.is_file()), None)


def locate(spec: str, config: str | None = None, *, refresh: bool = False) -> KernelFiles:
    """The Image and config ``spec`` names; a debian: kernel is fetched if not cached."""
    if spec.startswith("debian:"):
        if config is not None:
            raise ConfigError("--config: only with --kernel PATH (a debian: kernel brings its own)")
        cached, _ = fetch(parse_spec(spec), refresh=refresh)
        return KernelFiles(spec, cached.image, cached.config, cached.version)
    path = Path(spec)
    if not path.is_file():
        raise ConfigError(f"--kernel: {spec}: no such file (and not debian:SUITE[-16k])")
    config_path = Path(config) if config is not None else _config_beside(path)
    if config_path is not None and not config_path.is_file():
        raise ConfigError(f"--config: {config}: no such file")
    with open(path, "rb") as f:
        head = f.read(64)
    if compression_of(head) == "raw":
        return KernelFiles(spec, path, config_path)
    out = cache_root() / "kernels" / "local" / sha256_of(path)[:16] / "Image"
    if not out.is_file():
        raw, _ = decompress_image(path.read_bytes(), spec)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_bytes(raw)
        tmp.replace(out)
    return KernelFiles(spec, out, config_path)
