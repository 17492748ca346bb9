"""The matrix file, validated and expanded into jobs.

A matrix file lists *sets*; each set is a cross product::

    name = "nightly"
    job_timeout = 120                      # seconds one job (one boot) may take

    [[set]]
    name = "sizes"
    guests = ["virt-a57", "virt-max"]
    granules = ["4k", "16k", "64k"]
    policies = ["v4.19", "v4.20", "v6.19", "v7.1"]
    scenarios = ["sizes/{granule}"]   # relative to this file
    inject = ["none"]                           # or names, or "all"
    exclude = [ { guest = "virt-a57", granule = "16k" } ]

Every (guest, granule, policy, inject) left after ``exclude`` is one job that
boots once and runs, in file order, every scenario of the set whose granule is
the job's.

A set with ``kernels`` boots real kernels instead of the firmware
(:mod:`shootdown.matrix.kernel_job`)::

    [[set]]
    name = "kernels"
    kernels = ["debian:bookworm", "debian:sid-16k"]   # or a path to an Image
    guests = ["virt-a57", "virt-max"]                 # the kernel table's CPUs
    kpti = [false, true]
    scenarios = ["kernel"]                            # workload files (guests/kernel/)
    exclude = [ { guest = "virt-a57", granule = "16k" } ]

Every (kernel, guest, kpti, inject) left is one job: one boot of that kernel
running every workload, each step traced and checked against the model of
the kernel's own release (``policies`` may name one instead).  Its granule is
the kernel's page size; a CPU that has no such granule is bad input unless
excluded.  The expected outcome follows from the injection: a clean job must
PASS, an injected one must be CAUGHT (``expect`` overrides it for a set).

A job's id is a hash of everything that decides its result: its parameters,
the bytes of its scenario files and of its guest definition.  ``--resume``
skips ids already in the results file, so editing a scenario re-runs exactly
the jobs that use it.

Loading is strict (unknown keys, wrong types, unknown guests, policies or
injections, scenario files that do not validate): a :class:`ConfigError`
naming the file and the field, before anything boots.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from shootdown.errors import ConfigError
from shootdown.inputfile import read_bytes, read_toml

logger = logging.getLogger(__name__)

#: outcomes a set may expect
EXPECTS = ("pass", "caught")
#: test hooks: make every job of a set hang, crash its guest, or kill its worker
DEBUG_HOOKS = ("hang", "crash", "kill-worker")
#: default seconds a job may run before the worker abandons it as hung
DEFAULT_JOB_TIMEOUT = 300.0
#: The longest job_timeout taken: a day (a job is one boot; more is a typo, and
#: inf or 1e300 would overflow the timers that enforce it).
MAX_JOB_TIMEOUT = 86400.0
#: Matrix and set names: they name output files and report sections, so no path
#: separators, no leading dot, nothing a terminal would interpret.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")

_TOP_KEYS = {"name", "description", "job_timeout", "guests_dir", "set"}
_SET_KEYS = {"name", "description", "guests", "granules", "policies", "scenarios", "inject",
             "exclude", "expect", "overrides", "debug", "trace", "job_timeout"}
KERNEL_SET_KEYS = {"name", "description", "kernels", "guests", "kpti", "policies",
                    "scenarios", "inject", "exclude", "expect", "job_timeout"}
_EXCLUDE_KEYS = {"guest", "granule", "policy", "inject"}
KERNEL_EXCLUDE_KEYS = {"kernel", "guest", "granule", "kpti", "inject"}
#: the policy of a kernel job that is checked against its own release's model
AUTO_POLICY = "auto"


@dataclass(frozen=True)
class MatrixJob:
    """One boot: a guest, a firmware granule, a policy, an injection, some scenarios."""

    #: stable hash of everything that decides the result (16 hex digits)
    id: str
    #: the set it came from
    set: str
    guest: str
    granule: str
    policy: str
    #: bug injection name, or "none"
    inject: str
    #: "pass" (clean) or "caught" (injected): what a good run looks like
    expect: str
    #: scenario files, absolute, in run order
    scenarios: tuple[str, ...]
    #: scenario field overrides (load_scenario's), as sorted pairs
    overrides: tuple[tuple[str, Any], ...] = ()
    #: test hook (DEBUG_HOOKS) or None
    debug: str | None = None
    #: directory guest names resolve in (None: the default)
    guests_dir: str | None = None
    #: seconds before the job counts as hung
    timeout: float = DEFAULT_JOB_TIMEOUT
    #: also compare the guest's report with QEMU's execution log (slower: single-threaded TCG)
    trace: bool = False
    #: a real kernel to boot instead of the firmware (``debian:SUITE[-16k]`` or a path to an
    #: Image; ``guest`` is then a CPU of the kernel table), and whether with ``kpti=1``
    kernel: str | None = None
    kpti: bool = False

    def params(self) -> dict[str, Any]:
        """The job's parameters as plain JSON values (what a result record repeats)."""
        params: dict[str, Any] = {
            "job_id": self.id, "set": self.set, "guest": self.guest, "granule": self.granule,
            "policy": self.policy, "inject": self.inject, "expect": self.expect,
            "scenario_files": list(self.scenarios)}
        if self.kernel is not None:
            params.update(kernel=self.kernel, kpti=self.kpti)
        return params

    @property
    def label(self) -> str:
        """The job in a few words: set, (kernel,) guest, granule, policy, (kpti,) injection."""
        return job_label(self.params())


def job_label(params: dict[str, Any]) -> str:
    """A job (or its record) in a few words, for progress lines and reports."""
    words = [str(params.get("set")), str(params.get("guest")), str(params.get("granule")),
             str(params.get("policy"))]
    if params.get("kernel"):
        words[1:1] = [str(params["kernel"])]
        words.append("kpti=1" if params.get("kpti") else "kpti=0")
    return " ".join([*words, str(params.get("inject"))])


@dataclass(frozen=True)
class Matrix:
    """A validated matrix file and its jobs."""

    path: str
    name: str
    description: str
    job_timeout: float
    jobs: tuple[MatrixJob, ...] = field(default=())

    def select(self, *, sets: Sequence[str] = (), kernels: bool = True) -> Matrix:
        """The matrix with only the jobs of ``sets`` (all if empty; ``shootdown matrix
        --set``) and, unless ``kernels``, without the kernel jobs (``--no-kernels``)."""
        known = list(dict.fromkeys(j.set for j in self.jobs))
        for name in sets:
            if name not in known:
                raise ConfigError(f"--set: {self.path} has no set '{name}' (its sets: "
                                  f"{', '.join(known)})")
        return replace(self, jobs=tuple(j for j in self.jobs if (not sets or j.set in sets)
                                        and (kernels or j.kernel is None)))

    def job(self, job_id: str) -> MatrixJob:
        """The job with this id (KeyError if none)."""
        for j in self.jobs:
            if j.id == job_id:
                return j
        raise KeyError(job_id)


def load_matrix(path: str | os.PathLike[str]) -> Matrix:
    """Read, validate and expand a matrix file."""
    spath = os.fspath(path)
    data = read_toml(spath, "matrix file")
    return matrix_from_dict(data, spath)


def matrix_from_dict(data: dict[str, Any], source: str) -> Matrix:
    """Validate a parsed matrix; paths in it are relative to ``source``'s folder."""
    where = source
    for key in data:
        if key not in _TOP_KEYS:
            raise ConfigError(f"{where}: key '{key}': unknown key (known: "
                              f"{', '.join(sorted(_TOP_KEYS))})")
    name = plain_name(get_key(data, "name", str, where, default=None), where, Path(source).stem)
    description = get_key(data, "description", str, where, default="")
    timeout = set_timeout(data, where, DEFAULT_JOB_TIMEOUT)
    base = Path(source).resolve().parent
    gdir = get_key(data, "guests_dir", str, where, default=None)
    guests_dir = str((base / gdir).resolve()) if gdir else None
    sets = get_key(data, "set", list, where, default=None)
    if not sets:
        raise ConfigError(f"{where}: key 'set': missing (a matrix needs at least one [[set]])")
    jobs: list[MatrixJob] = []
    seen_sets: set[str] = set()
    for n, table in enumerate(sets, 1):
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: set {n}: expected a table")
        if "kernels" in table:
            from shootdown.matrix.kernel_job import expand_kernel_set

            new = expand_kernel_set(table, n, where, base, timeout)
        else:
            new = _expand_set(table, n, where, base, guests_dir, timeout)
        set_name = new[0].set if new else ""
        if set_name in seen_sets:
            raise ConfigError(f"{where}: set {n}: key 'name': '{set_name}' used twice")
        seen_sets.add(set_name)
        jobs += new
    ids = [j.id for j in jobs]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{where}: two sets expand to the same job (same guest, granule, "
                          "policy, injection, kernel and scenarios)")
    return Matrix(path=source, name=name, description=description, job_timeout=timeout,
                  jobs=tuple(jobs))


def _expand_set(table: dict[str, Any], n: int, source: str, base: Path,
                guests_dir: str | None, timeout: float) -> list[MatrixJob]:
    from shootdown.guest.definition import GRANULES, find_guest
    from shootdown.model.policy import POLICIES, resolve_policy_name

    name, where, timeout = set_header(table, n, source, _SET_KEYS, "", timeout)
    guests = str_list(table, "guests", where)
    granules = str_list(table, "granules", where)
    policies = str_list(table, "policies", where)
    patterns = str_list(table, "scenarios", where)
    for g in granules:
        if g not in GRANULES:
            raise ConfigError(f"{where}: key 'granules': '{g}' (known: {', '.join(GRANULES)})")
    for i, p in enumerate(policies):
        if p not in POLICIES:
            try:  # a release that is not itself a policy resolves to one (issue 13)
                policies[i] = resolve_policy_name(p)
            except ConfigError:
                raise ConfigError(f"{where}: key 'policies': unknown policy '{p}' (known: "
                                  f"{', '.join(POLICIES)})") from None
    definitions = {}
    for g in guests:
        try:
            definitions[g] = find_guest(g, guests_dir)
        except ConfigError as exc:
            raise ConfigError(f"{where}: key 'guests': {exc}") from None
    expect_override = set_expect(table, where)
    trace = table.get("trace", False)
    if not isinstance(trace, bool):
        raise ConfigError(f"{where}: key 'trace': expected true or false")
    debug = get_key(table, "debug", str, where, default=None)
    if debug is not None and debug not in DEBUG_HOOKS:
        raise ConfigError(f"{where}: key 'debug': '{debug}' (known: {', '.join(DEBUG_HOOKS)})")
    overrides = get_key(table, "overrides", dict, where, default={})
    raw_inject = table.get("inject", ["none"])
    excludes = check_excludes(get_key(table, "exclude", list, where, default=[]),
                              _EXCLUDE_KEYS, where)

    guest_digest = {g: digest_file(d.source) if d.source else "" for g, d in
                    definitions.items()}
    jobs: list[MatrixJob] = []
    for granule in granules:
        files = scenario_files(patterns, granule, base, where)
        scenarios = _load_for_granule(files, granule, overrides, where,
                                      [definitions[g] for g in guests])
        if not scenarios:
            logger.debug("%s: no %s scenarios; no jobs for that granule", where, granule)
            continue
        digests = [(os.path.relpath(p, base), digest_file(p)) for p in scenarios]
        injects = _injections(raw_inject, definitions, granule, where)
        for guest in guests:
            for policy in policies:
                for inject in injects:
                    params = {"guest": guest, "granule": granule, "policy": policy,
                              "inject": inject}
                    if any(all(params[k] == v for k, v in e.items()) for e in excludes):
                        continue
                    expect = expect_override or ("pass" if inject == "none" else "caught")
                    ident = _job_id(name, params, expect, overrides, debug, digests,
                                    guest_digest[guest], trace)
                    jobs.append(MatrixJob(
                        id=ident, set=name, guest=guest, granule=granule, policy=policy,
                        inject=inject, expect=expect, scenarios=tuple(scenarios),
                        overrides=tuple(sorted(overrides.items())), debug=debug,
                        guests_dir=guests_dir, timeout=timeout, trace=trace))
    if not jobs:
        raise ConfigError(f"{where}: expands to no jobs (no scenario files of its granules, "
                          "or everything excluded)")
    return jobs


def set_header(table: dict[str, Any], n: int, source: str, keys: set[str], kind: str,
               timeout: float) -> tuple[str, str, float]:
    """Set ``n``'s keys checked against ``keys``; its name, the prefix of its errors and
    its job timeout.  ``kind`` says which sets know those keys (" in a set with ...")."""
    where = f"{source}: set {n}"
    for key in table:
        if key not in keys:
            raise ConfigError(f"{where}: key '{key}': unknown key{kind} (known: "
                              f"{', '.join(sorted(keys))})")
    name = plain_name(get_key(table, "name", str, where, default=None), where, f"set{n}")
    where = f"{source}: set '{name}'"
    return name, where, set_timeout(table, where, timeout)


def set_expect(table: dict[str, Any], where: str) -> str | None:
    """A set's ``expect`` (None: from each job's injection)."""
    expect: str | None = get_key(table, "expect", str, where, default=None)
    if expect is not None and expect not in EXPECTS:
        raise ConfigError(f"{where}: key 'expect': '{expect}' (known: {', '.join(EXPECTS)})")
    return expect


def set_timeout(table: dict[str, Any], where: str, default: float) -> float:
    """A set's own ``job_timeout`` (seconds), else the matrix's."""
    value = float(get_key(table, "job_timeout", (int, float), where, default=default))
    if not 0 < value <= MAX_JOB_TIMEOUT:  # also false for nan
        raise ConfigError(f"{where}: key 'job_timeout': {value:g} is not a number of "
                          f"seconds in (0, {MAX_JOB_TIMEOUT:g}]")
    return value


def check_excludes(excludes: Any, keys: set[str], where: str) -> list[dict[str, Any]]:
    """A set's ``exclude``: a list of tables of ``keys``."""
    if not isinstance(excludes, list) or not all(
            isinstance(e, dict) and e and set(e) <= keys for e in excludes):
        raise ConfigError(f"{where}: key 'exclude': each entry is a table of "
                          f"{', '.join(sorted(keys))}")
    return excludes


def _injections(raw: Any, definitions: dict[str, Any], granule: str, where: str) -> list[str]:
    """The set's injection names, checked against the firmware it boots."""
    from shootdown.bugs import check_inject, read_bugs

    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw) or not raw:
        raise ConfigError(f"{where}: key 'inject': expected a list of bug names, or \"all\"")
    elves = {d.firmware_path(granule) for d in definitions.values() if d.host is None}
    bugs = read_bugs(next(iter(sorted(elves)))) if elves else []
    if raw == ["all"]:
        return [b.name for b in bugs]
    for name in raw:
        try:
            check_inject(name, bugs, f"{granule} firmware")
        except ConfigError as exc:
            raise ConfigError(f"{where}: key 'inject': {exc}") from None
    return list(raw)


def scenario_files(patterns: list[str], granule: str, base: Path, where: str) -> list[str]:
    """The scenario files the patterns name for ``granule``, in order, without repeats."""
    out: list[str] = []
    for pattern in patterns:
        p = Path(pattern.replace("{granule}", granule))
        p = p if p.is_absolute() else base / p
        if p.is_dir():
            found = sorted(str(f.resolve()) for f in p.rglob("*.toml"))
        elif p.is_file():
            found = [str(p.resolve())]
        elif "{granule}" in pattern:
            found = []  # no scenarios for this granule (yet)
        else:
            raise ConfigError(f"{where}: key 'scenarios': {pattern}: no such file or folder")
        out += [f for f in found if f not in out]
    return out


def _load_for_granule(files: list[str], granule: str, overrides: dict[str, Any],
                      where: str, targets: list[Any]) -> list[str]:
    """Files whose scenario (validated now, with the overrides, against the kernel's
    contract and the firmware limits of each of ``targets``) is for ``granule``."""
    from shootdown.scenario.limits import check_before_boot
    from shootdown.scenario.load import load_scenario
    from shootdown.session import memory_bytes

    keep = []
    for f in files:
        try:
            scenario = load_scenario(f, overrides or None)
            if scenario.granule == granule:
                for d in targets:
                    check_before_boot(scenario, d.firmware_path(granule), memory_bytes(d.memory))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if scenario.granule == granule:
            keep.append(f)
    return keep


def job_id(blob: dict[str, Any]) -> str:
    """16 hex digits of the SHA-256 of ``blob`` as canonical JSON."""
    text = json.dumps(blob, sort_keys=True, default=sorted)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _job_id(set_name: str, params: dict[str, str], expect: str, overrides: dict[str, Any],
            debug: str | None, digests: list[tuple[str, str]], guest_digest: str,
            trace: bool) -> str:
    return job_id({"set": set_name, **params, "expect": expect, "trace": trace,
                   "overrides": overrides, "debug": debug, "guest_file": guest_digest,
                   "scenarios": digests})


def plain_name(value: str | None, where: str, default: str) -> str:
    """A matrix or set name: ``default`` when absent; bad input unless it is a
    plain file-name-safe word (it ends up in output paths and reports)."""
    if value is None:
        return default if _NAME_RE.fullmatch(default) else "matrix"
    if not _NAME_RE.fullmatch(value) or ".." in value:
        raise ConfigError(f"{where}: key 'name': {value!r} is not a plain name (letters, "
                          "digits, . _ + -; no path separators; at most 64)")
    return value


def digest_file(path: str) -> str:
    return hashlib.sha256(read_bytes(path)).hexdigest()


def get_key(table: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, *,
         default: Any) -> Any:
    if key not in table:
        return default
    value = table[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ConfigError(f"{where}: key '{key}': wrong type ({type(value).__name__})")
    return value


def str_list(table: dict[str, Any], key: str, where: str) -> list[str]:
    value = table.get(key)
    if value is None:
        raise ConfigError(f"{where}: key '{key}': missing")
    if not isinstance(value, list) or not value or not all(isinstance(x, str) for x in value):
        raise ConfigError(f"{where}: key '{key}': expected a non-empty list of strings")
    return list(value)
