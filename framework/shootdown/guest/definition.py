"""Guest definitions: the TOML files in ``guests/``.

A guest definition says which QEMU machine to start and which firmware to
boot on it; ``docs/guests.md`` describes the keys.  Loading is strict: an
unknown key, a value of the wrong type, or a missing file is a
:class:`~shootdown.errors.ConfigError` whose one-line message names the file
and the key, because a silently ignored typo in a validation setup is a test
that does not run what its author thinks.

Guest names resolve to ``<guests dir>/<name>.toml``.  The guests directory is,
in order: the ``guests_dir`` argument (``--guests-dir``), the
``SHOOTDOWN_GUESTS`` environment variable, the ``guests/`` directory of the
source tree this package runs from.

Paths are plain strings here: this module is on the path to QEMU's start,
where even importing :mod:`pathlib` shows in the boot-to-verdict time.
"""

from __future__ import annotations

import os
import re
from typing import Any, NamedTuple

from shootdown import inputfile
from shootdown.errors import ConfigError
from shootdown.inputfile import ErrorFactory, regular_file

#: The guest ``shootdown run`` boots when none is named.
DEFAULT_GUEST = "virt-a57"
#: Translation granules the firmware is built for (``{granule}`` in ``firmware``).
GRANULES = ("4k", "16k", "64k")
#: The granule booted when none is asked for.
DEFAULT_GRANULE = "4k"

_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]*")
_MEMORY_RE = re.compile(r"[1-9][0-9]*[MG]?")
_WORD_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.,=-]*")


class Timeouts(NamedTuple):
    """How long a guest may take, in seconds; exceeding one is a hang."""

    #: From starting QEMU to the guest's first ``READY``.
    boot: float = 10.0
    #: Longest silence on the console while the guest is expected to talk.
    idle: float = 5.0
    #: Whole run, from starting QEMU to its exit.
    total: float = 60.0


class GuestDefinition(NamedTuple):
    """One guest: a QEMU machine and the firmware to boot on it.

    Immutable.  A :class:`~typing.NamedTuple` rather than a frozen dataclass
    because it is built on the path to QEMU's start, and importing
    :mod:`dataclasses` (which imports :mod:`inspect`) costs more than the
    rest of that path; ``_replace`` and ``_asdict`` do what
    ``dataclasses.replace`` and ``asdict`` would.
    """

    #: Name, equal to the TOML file's stem (``virt-a57``).
    name: str
    #: One line for people.
    description: str
    #: QEMU machine type (``-M``).
    machine: str
    #: QEMU CPU model (``-cpu``).
    cpu: str
    #: Number of CPUs (``-smp``).
    smp: int
    #: Guest RAM in QEMU's syntax (``-m``), e.g. ``128M``.
    memory: str
    #: QEMU accelerator (``-accel``): ``tcg``, the only one whose TLB we model.
    accel: str
    #: Firmware ELF path, absolute, possibly with a ``{granule}`` placeholder.
    firmware: str
    #: Extra QEMU arguments appended after the generated ones.
    extra_args: tuple[str, ...]
    #: Time limits.
    timeouts: Timeouts
    #: Remote host that runs QEMU (``user@host``); ``None`` runs it here.
    host: str | None
    #: The TOML file it was read from (``None`` for one built in code).
    source: str | None = None

    def firmware_path(self, granule: str = DEFAULT_GRANULE) -> str:
        """The firmware ELF for ``granule``, ``{granule}`` filled in."""
        if granule not in GRANULES:
            raise ConfigError(f"granule '{granule}': expected one of {', '.join(GRANULES)}")
        return self.firmware.replace("{granule}", granule)


_KEYS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "name": (str, "a string"),
    "description": (str, "a string"),
    "machine": (str, "a string"),
    "cpu": (str, "a string"),
    "smp": (int, "an integer"),
    "memory": (str, "a string like '128M'"),
    "accel": (str, "a string"),
    "firmware": (str, "a string (a path)"),
    "extra_args": (list, "a list of strings"),
    "timeouts": (dict, "a table"),
    "host": (str, "a string (user@host)"),
}
_REQUIRED = ("name", "machine", "cpu", "firmware")
#: The top-level key that marks a matrix file kept among the guests.
MATRIX_KEY = "set"
_TIMEOUT_KEYS = ("boot", "idle", "total")


def load_definition(path: str | os.PathLike[str]) -> GuestDefinition:
    """Read and check one guest definition file."""
    path = os.fspath(path)
    where = _display(path)
    data = read_toml(path, lambda reason: ConfigError(f"{where}: {reason}"))
    return definition_from_dict(data, source=path)


#: Parsed TOML files, keyed by path, size and modification time (see read_toml).
_TOML_CACHE = "parsed-toml.marshal"
_TOML_CACHE_ENTRIES = 64


def read_toml(path: str, error: ErrorFactory | None = None) -> dict[str, Any]:
    """Parse a TOML file, through a cache of parsed files.

    Importing :mod:`tomllib` costs about as much as the rest of the path to
    QEMU's start together, so the parsed contents of a file are kept (with
    :mod:`marshal`) in the user's cache directory, keyed by the file's real
    path, size and modification time in nanoseconds, as Python keeps its
    bytecode.  Only the parsing is cached: the contents are checked again on
    every load.  A cache that cannot be read or written is simply not used.
    """
    import marshal

    real = os.path.realpath(path)
    st = os.stat(regular_file(real, "guest definition file", error=error))
    key = f"{real}\0{st.st_size}\0{st.st_mtime_ns}"
    cache = os.path.join(_cache_dir(), _TOML_CACHE)
    entries: dict[str, Any] = {}
    try:
        with open(cache, "rb") as f:
            loaded = marshal.load(f)
        if isinstance(loaded, dict):
            entries = loaded
            hit = entries.get(key)
            if isinstance(hit, dict):
                return hit
    except (OSError, EOFError, ValueError, TypeError):
        pass
    data = inputfile.read_toml(real, "guest definition file", error=error)
    entries = {k: v for k, v in entries.items() if not k.startswith(real + "\0")}
    entries[key] = data
    while len(entries) > _TOML_CACHE_ENTRIES:
        del entries[next(iter(entries))]
    try:
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        tmp = f"{cache}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            marshal.dump(entries, f)
        os.replace(tmp, cache)
    except (OSError, ValueError):  # read-only home; a value marshal cannot keep
        pass
    return data


def _cache_dir() -> str:
    """``$XDG_CACHE_HOME/shootdown`` (default ``~/.cache/shootdown``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "shootdown")


def definition_from_dict(data: dict[str, Any], source: str) -> GuestDefinition:
    """Check a parsed definition; ``source`` names it in errors and anchors paths."""
    where = _display(source)

    def bad(key: str, why: str) -> ConfigError:
        return ConfigError(f"{where}: key '{key}': {why}")

    if MATRIX_KEY in data:
        raise ConfigError(f"{where}: a matrix file (docs/matrix.md), not a guest definition")
    for key, value in data.items():
        if key not in _KEYS:
            raise bad(key, f"unknown key (known: {', '.join(_KEYS)})")
        kind, wanted = _KEYS[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise bad(key, f"expected {wanted}, got {_toml_type(value)}")
    for key in _REQUIRED:
        if key not in data:
            raise bad(key, "missing")

    name = data["name"]
    if not _NAME_RE.fullmatch(name):
        raise bad("name", f"'{name}' is not a valid guest name (lower case, digits, -._)")
    filename = os.path.basename(source)
    if name != os.path.splitext(filename)[0]:
        raise bad("name", f"'{name}' differs from the file name '{filename}'")
    for key in ("machine", "cpu", "accel"):
        if key in data and not _WORD_RE.fullmatch(data[key]):
            raise bad(key, f"'{data[key]}' is not a single QEMU option value")
    smp = data.get("smp", 2)
    if not 1 <= smp <= 8:
        raise bad("smp", f"expected 1 to 8 CPUs, got {smp}")
    memory = data.get("memory", "128M")
    if not _MEMORY_RE.fullmatch(memory):
        raise bad("memory", f"expected a size like '128M' or '1G', got '{memory}'")
    extra = data.get("extra_args", [])
    for i, arg in enumerate(extra):
        if not isinstance(arg, str):
            raise bad("extra_args", f"item {i}: expected a string, got {_toml_type(arg)}")
    firmware = data["firmware"]
    if not firmware:
        raise bad("firmware", "empty path")
    unknown = set(re.findall(r"\{([^}]*)\}", firmware)) - {"granule"}
    if unknown:
        raise bad("firmware", f"unknown placeholder {{{sorted(unknown)[0]}}} (only {{granule}})")
    firmware_path = firmware if os.path.isabs(firmware) else \
        os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(source)), firmware))
    host = data.get("host")
    if host is not None and not host.strip():
        raise bad("host", "empty host name")
    return GuestDefinition(
        name=name,
        description=data.get("description", ""),
        machine=data["machine"],
        cpu=data["cpu"],
        smp=smp,
        memory=memory,
        accel=data.get("accel", "tcg"),
        firmware=firmware_path,
        extra_args=tuple(extra),
        timeouts=_timeouts(data.get("timeouts", {}), bad),
        host=host,
        source=source,
    )


#: The longest timeout a guest definition may set: a day (one boot runs a whole library
#: in minutes; a larger value is a typo, and inf never ends).
MAX_TIMEOUT_S = 86400.0


def _timeouts(table: dict[str, Any], bad: Any) -> Timeouts:
    values: dict[str, float] = {}
    for key, value in table.items():
        if key not in _TIMEOUT_KEYS:
            raise bad(f"timeouts.{key}", f"unknown key (known: {', '.join(_TIMEOUT_KEYS)})")
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise bad(f"timeouts.{key}", f"expected a number of seconds, got {_toml_type(value)}")
        if not 0 < value <= MAX_TIMEOUT_S:  # false for nan; inf would overflow the timers
            raise bad(f"timeouts.{key}", f"expected a number of seconds in (0, "
                      f"{MAX_TIMEOUT_S:g}], got {value}")
        values[key] = float(value)
    timeouts = Timeouts(**values)
    if timeouts.total < timeouts.boot:
        raise bad("timeouts.total", f"{timeouts.total} s is shorter than timeouts.boot "
                  f"({timeouts.boot} s)")
    return timeouts


def _toml_type(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string",
             list: "an array", dict: "a table"}
    return names.get(type(value), type(value).__name__)


def _display(path: str) -> str:
    """``path`` as the user would write it: relative to the working directory if inside it."""
    full = os.path.abspath(path)
    cwd = os.getcwd()
    return os.path.relpath(full, cwd) if full.startswith(cwd + os.sep) else path


def guests_dir(override: str | os.PathLike[str] | None = None) -> str:
    """The directory guest names resolve in (see the module docstring)."""
    if override:
        return os.fspath(override)
    env = os.environ.get("SHOOTDOWN_GUESTS")
    if env:
        return env
    # framework/shootdown/guest/definition.py -> the source tree's guests/
    here = os.path.dirname(os.path.realpath(__file__))
    return os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(here))), "guests")


def find_guest(name: str, directory: str | os.PathLike[str] | None = None) -> GuestDefinition:
    """Load the guest called ``name`` (or a path to a ``.toml`` file)."""
    if name.endswith(".toml") or os.sep in name:
        return load_definition(name)
    where = guests_dir(directory)
    path = os.path.join(where, f"{name}.toml")
    if not _NAME_RE.fullmatch(name) or not os.path.isfile(path):
        known = ", ".join(list_guest_names(where)) or "none"
        raise ConfigError(f"unknown guest '{name}' (known in {_display(where)}: {known})")
    return load_definition(path)


def list_guest_names(directory: str | os.PathLike[str] | None = None) -> list[str]:
    """Names of the guest definitions in the guests directory, sorted.

    Matrix files live beside the guests (``guests/nightly.toml``,
    docs/matrix.md); they are recognised by their ``[[set]]`` tables and left
    out.  Every other ``.toml`` file is a guest definition, checked strictly
    when it is loaded.
    """
    where = guests_dir(directory)
    try:
        entries = os.listdir(where)
    except OSError:
        return []
    return sorted(e[:-5] for e in entries
                  if e.endswith(".toml") and os.path.isfile(os.path.join(where, e))
                  and not _is_matrix_file(os.path.join(where, e)))


def _is_matrix_file(path: str) -> bool:
    """Whether ``path`` is a matrix file (top-level ``[[set]]``), not a guest."""
    try:
        return MATRIX_KEY in inputfile.read_toml(path)
    except ConfigError:
        return False  # not a matrix; loading it as a guest reports the problem
