"""Everything shootdown knows about the QEMU binary it runs.

One place answers "which QEMU is this?" and "how do I say X to it?", so that
no caller compares version numbers itself:

* :func:`version_line` / :func:`version`: the first line of ``qemu
  --version`` and that line as a tuple, asked once per binary (cached by its
  real path, size and mtime in the user's cache directory).  The query runs
  in a process group of its own with a timeout; a binary that hangs is
  killed with everything it started.
* :func:`cpu_models`: the ``-cpu help`` names (named cores differ by
  version: ``cortex-a710`` and ``neoverse-n2`` arrived in 8.2), cached
  the same way.
* Option builders for what changed between versions:

  ======================  =========================  ==============================
  what                    QEMU < 8.1                 QEMU >= 8.1
  ======================  =========================  ==============================
  one instruction per TB  ``-singlestep``            ``-accel tcg,one-insn-per-tb=on``
  (command line)          (removed in 9.0)           (merged into the guest's -accel)
  the same, from HMP      ``singlestep on``          ``one-insn-per-tb on``
  ======================  =========================  ==============================

  QEMU 8.1 added the TCG property ``one-insn-per-tb`` and the HMP command of
  that name, deprecating ``-singlestep`` (QEMU commits 3cfb0456 and
  12fd0f41); 9.0 removed the option (``cli: Remove deprecated
  '-singlestep' command line option``).  QEMU 7.2 rejects the property.
  The property must go into the guest's *existing* ``-accel tcg,...``
  option: QEMU treats several ``-accel`` options as a fallback list and
  uses the first that works, so a second ``-accel tcg,one-insn-per-tb=on``
  would be silently ignored.

  The execution log (``-d exec,cpu``) kept the same shape from 7.2 to 10.x
  as far as :mod:`shootdown.trace.qemu_log` reads it (``Trace`` lines with
  ``[cs_base/pc/flags/cflags]``, the ``X00=`` .. ``X30=`` dump, ``Stopped
  execution of TB chain``); its tests run under every QEMU the suite is
  given.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Sequence

from shootdown.errors import ConfigError, LaunchError

#: (major, minor, micro) of a QEMU release.
QemuVersion = tuple[int, int, int]

#: How long ``qemu --version`` or ``-cpu help`` may take before the binary
#: counts as hung (a cold start from a slow disk takes about a second).
QUERY_TIMEOUT_S = 30.0

#: First release with the TCG property and HMP command ``one-insn-per-tb``.
ONE_INSN_PER_TB_SINCE: QemuVersion = (8, 1, 0)

_VERSION_RE = re.compile(r"\bversion (\d+)\.(\d+)(?:\.(\d+))?")


def parse_version(line: str) -> QemuVersion | None:
    """``(10, 0, 2)`` from ``QEMU emulator version 10.0.2 (Debian ...)``; None if absent."""
    m = _VERSION_RE.search(line)
    if m is None:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def format_version(version: QemuVersion) -> str:
    """``10.0.2``."""
    return ".".join(str(n) for n in version)


def which(binary: str) -> str | None:
    """The path of ``binary`` (a name looked up in PATH, or a path), if executable."""
    if os.sep in binary:
        return binary if os.access(binary, os.X_OK) and os.path.isfile(binary) else None
    for directory in os.environ.get("PATH", os.defpath).split(os.pathsep):
        path = os.path.join(directory or ".", binary)
        if os.access(path, os.X_OK) and os.path.isfile(path):
            return path
    return None


def cache_dir() -> str:
    """``$XDG_CACHE_HOME/shootdown`` (or ``~/.cache/shootdown``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "shootdown")


def _identity(binary: str) -> tuple[str, str]:
    """(path to run, cache key: real path, size and mtime) of ``binary``."""
    path = which(binary)
    if path is None:
        raise LaunchError(f"{binary}: QEMU binary not found or not executable "
                          "(install qemu-system-arm, or set --qemu / SHOOTDOWN_QEMU)")
    real = os.path.realpath(path)
    st = os.stat(real)
    return path, f"{real}:{st.st_size}:{st.st_mtime_ns}"


def run_query(argv: Sequence[str], timeout: float | None = None) -> tuple[int, str]:
    """(exit status, stdout or else stderr) of a short query such as ``qemu --version``.

    The command runs in a new session (its own process group) so that, when
    it is still running after ``timeout`` seconds, the whole group is killed:
    a wrapper script that started a child and hung leaves nothing behind.
    """
    import subprocess

    if timeout is None:
        timeout = QUERY_TIMEOUT_S
    try:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, errors="replace",
                                start_new_session=True)
    except OSError as exc:
        raise LaunchError(f"{' '.join(argv)}: cannot start: {exc.strerror or exc}") from exc
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        _kill_group(proc.pid)
        proc.communicate()  # reap it; the pipes close once the group is gone
        raise LaunchError(f"{' '.join(argv)}: no answer after {timeout:g} s "
                          "(killed with its process group)") from exc
    except BaseException:  # KeyboardInterrupt included: leave nothing running
        _kill_group(proc.pid)
        proc.communicate()
        raise
    # The leader answered; children it left running in its group go too.
    _kill_group(proc.pid, leader_gone=True)
    return proc.returncode, out if out.strip() else err


def _kill_group(pgid: int, leader_gone: bool = False) -> None:
    """SIGKILL process group ``pgid`` (its leader too, unless already reaped)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    except PermissionError:  # a setuid wrapper: at least its leader
        if not leader_gone:
            os.kill(pgid, signal.SIGKILL)


def _cached(kind: str, binary: str, ask: Sequence[str]) -> str:
    """``binary ask...``'s answer, cached per binary identity in ``qemu-<kind>.json``."""
    import json

    path, key = _identity(binary)
    cache = os.path.join(cache_dir(), f"qemu-{kind}.json")
    entries: dict[str, str] = {}
    try:
        with open(cache, encoding="utf-8") as f:
            loaded = json.load(f)
        if isinstance(loaded, dict):
            entries = {k: v for k, v in loaded.items() if isinstance(v, str)}
            if key in entries:
                return entries[key]
    except (OSError, ValueError):
        pass
    status, text = run_query([path, *ask])
    answer = text.strip()
    if kind == "version":
        lines = answer.splitlines()
        answer = lines[0] if lines else f"unknown (exit status {status})"
    elif status != 0:
        raise LaunchError(f"{binary} {' '.join(ask)}: exit status {status}: "
                          f"{answer.splitlines()[-1] if answer else 'no output'}")
    entries[key] = answer
    try:
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        tmp = f"{cache}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(entries, f, indent=1)
        os.replace(tmp, cache)
    except OSError as exc:  # a read-only home is no reason to fail a run
        import logging

        logging.getLogger(__name__).debug("cannot cache %s in %s: %s", kind, cache, exc)
    return answer


def version_line(binary: str) -> str:
    """The first line of ``binary --version`` (cached until the binary changes)."""
    return _cached("version", binary, ["--version"])


def version(binary: str) -> QemuVersion:
    """``binary``'s version as a tuple; :class:`LaunchError` if it does not say one."""
    line = version_line(binary)
    parsed = parse_version(line)
    if parsed is None:
        raise LaunchError(f"{binary} --version: no version number in {line!r}")
    return parsed


def cpu_models(binary: str) -> frozenset[str]:
    """The CPU model names ``binary -cpu help`` lists (cached until the binary changes)."""
    text = _cached("cpus", binary, ["-M", "virt", "-cpu", "help"])
    names = set()
    for line in text.splitlines():
        if line.startswith(" ") and line.strip():
            names.add(line.split()[0])
    return frozenset(names)


def missing_cpu(binary: str, cpu: str) -> str | None:
    """Why ``binary`` cannot run CPU model ``cpu`` (one line), or None if it can."""
    if cpu in ("host", "max"):  # always there (host needs KVM, which fails on its own)
        return None
    if cpu in cpu_models(binary):
        return None
    line = version_line(binary)
    parsed = parse_version(line)
    what = f"QEMU {format_version(parsed)}" if parsed is not None else line
    return (f"{binary} is {what}, which has no CPU model {cpu!r} (cortex-a710 and "
            "neoverse-n2 arrived in QEMU 8.2; scripts/setup-qemu installs 10.x)")


def _accel_index(argv: Sequence[str]) -> int | None:
    """Index of the value of the first ``-accel`` option in ``argv`` (QEMU uses the first)."""
    for n in range(len(argv) - 1):
        if argv[n] in ("-accel", "--accel"):
            return n + 1
    return None


def with_one_insn_per_tb(argv: Sequence[str], version: QemuVersion) -> list[str]:
    """``argv`` with TCG translating one guest instruction per block.

    QEMU < 8.1: ``-singlestep`` appended.  Newer: ``one-insn-per-tb=on``
    merged into the first ``-accel`` option (which must be TCG), or a new
    ``-accel tcg,one-insn-per-tb=on`` when there is none.
    """
    args = list(argv)
    if version < ONE_INSN_PER_TB_SINCE:
        return [*args, "-singlestep"]
    at = _accel_index(args)
    if at is None:
        return [*args, "-accel", "tcg,one-insn-per-tb=on"]
    if args[at].split(",")[0] != "tcg":
        raise ConfigError(f"-accel {args[at]}: one instruction per block needs TCG")
    if "one-insn-per-tb=" not in args[at]:
        args[at] += ",one-insn-per-tb=on"
    return args


def hmp_one_insn_per_tb(version: QemuVersion, on: bool = True) -> str:
    """The HMP (monitor) command that switches one instruction per block on or off."""
    command = "one-insn-per-tb" if version >= ONE_INSN_PER_TB_SINCE else "singlestep"
    return f"{command} {'on' if on else 'off'}"


#: Where ``scripts/setup-qemu`` unpacks other QEMU releases: one folder per
#: series under the cache directory.  A release built for this system is a
#: Debian package tree (``usr/bin``); one built for a newer system (sid's 11.x)
#: is a private root with its own libraries, run through the wrapper in ``bin``
#: (``root/usr/bin`` holds the real binary, which needs that wrapper).
PRIVATE_QEMU_GLOBS = (os.path.join("qemu", "*", "usr", "bin", "qemu-system-aarch64"),
                      os.path.join("qemu", "*", "bin", "qemu-system-aarch64"))


def private_qemus() -> list[str]:
    """The QEMU binaries ``scripts/setup-qemu`` installed for this user, oldest series first."""
    import glob

    found = {p for pattern in PRIVATE_QEMU_GLOBS
             for p in glob.glob(os.path.join(cache_dir(), pattern))}

    def series(path: str) -> QemuVersion:  # .../qemu/<series>/[usr/]bin/qemu-system-aarch64
        rel = os.path.relpath(path, os.path.join(cache_dir(), "qemu"))
        return parse_version("version " + rel.split(os.sep)[0]) or (0, 0, 0)

    return sorted((p for p in found if os.access(p, os.X_OK)), key=lambda p: (series(p), p))


def tcg_version(accel: str, version_line: str) -> QemuVersion | None:
    """QEMU's version when it emulates the CPU (``accel`` TCG), else None.

    Under KVM (or HVF) the TLB is the real CPU's: QEMU's TCG defects do not
    apply.  ``version_line`` is what :func:`version_line` (or a remote
    launcher) answered; None when it names no version.
    """
    if accel.split(",")[0] != "tcg":
        return None
    return parse_version(version_line)
