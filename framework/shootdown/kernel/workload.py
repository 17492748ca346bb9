"""The guest workload program (``workload/`` in the source tree), built with make.

The source is the project's own C (``workload/init.c``, ``start.S``,
``sys.h``): a static, freestanding aarch64 ELF that becomes ``/init``.
``make`` runs every time it is asked for (it is a no-op when up to date), so
a stale binary is never booted.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from shootdown.errors import InfraError


def source_dir() -> Path:
    """``$SHOOTDOWN_WORKLOAD_DIR`` or the source tree's ``workload/``."""
    override = os.environ.get("SHOOTDOWN_WORKLOAD_DIR")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[3] / "workload"


def build() -> Path:
    """Build (or bring up to date) the workload; the path of the ELF."""
    src = source_dir()
    if not (src / "Makefile").is_file():
        raise InfraError(f"{src}: no workload Makefile (a source checkout is needed; "
                         "or set SHOOTDOWN_WORKLOAD_DIR)")
    try:
        done = subprocess.run(["make", "-s", "-C", str(src)], capture_output=True, text=True,
                              timeout=300, check=False)
    except FileNotFoundError as exc:
        raise InfraError("make: not found (run scripts/setup)") from exc
    except subprocess.TimeoutExpired as exc:
        raise InfraError(f"make -C {src}: did not finish within 300 s") from exc
    elf = src / "build" / "init"
    if done.returncode != 0 or not elf.is_file():
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise InfraError(f"make -C {src} failed ({done.returncode}): "
                         f"{lines[-1] if lines else 'no output'} (run scripts/setup for "
                         "gcc-aarch64-linux-gnu)")
    return elf
