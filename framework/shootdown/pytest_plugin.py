"""The shootdown pytest plugin (entry point ``pytest11``; ``docs/pytest.md``).

Registered for every pytest run in an environment where shootdown is
installed, so it stays cheap to import: this module imports only pytest; the
guest machinery, the model and the checkers are imported when a fixture or a
collected scenario first needs them.

What it provides:

* options under one prefix, ``--shootdown-*`` (guest, policy, qemu, trace,
  logdir, guests-dir), its state in ``config.stash``;
* fixtures ``guest`` (a booted :class:`~shootdown.guest.machine.Guest`,
  parametrised by guest definition), ``run_scenario`` (run one scenario, get a
  :class:`ScenarioRun`), ``golden_model``;
* the capability marker ``shootdown_needs(smp=, features=, granule=)``,
  checked against the ID registers the booted guest reports (its ``CPU``
  record), never against its name: a test is skipped, with the reason, where
  the guest lacks what it needs;
* scenario files collected as test items (``pytest guests/scenarios/``),
  and matrix files as one item per job (``pytest guests/nightly.toml``; this
  is also how ``shootdown matrix`` runs them, under pytest-xdist);
* on failure, report sections with the diff and the console log, and the
  guest, policy, firmware build-id and QEMU version as JUnit properties.
"""

from __future__ import annotations

import argparse
import os
import re
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from shootdown.check.scenario import ScenarioResult
    from shootdown.guest.definition import GuestDefinition
    from shootdown.guest.machine import Guest
    from shootdown.scenario.types import Scenario
    from shootdown.trace.console import Record
    from shootdown.trace.scenario import ObservedScenario

#: the policy run when ``--shootdown-policy`` is not given
DEFAULT_POLICY = "v7.1"  # = shootdown.model.DEFAULT_POLICY (tests/test_plugin_defaults.py)


# --------------------------------------------------------------------------
# options, markers, state

def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("shootdown", "shootdown guest runs")
    group.addoption("--shootdown-guest", default=None, metavar="NAME[,NAME...]",
                    help="guest definition(s) to boot; several parametrise the 'guest' "
                         "fixture and scenario items (default: $SHOOTDOWN_GUEST or virt-a57)")
    group.addoption("--shootdown-guests-dir", default=None, metavar="DIR",
                    help="where guest names resolve (default: $SHOOTDOWN_GUESTS or guests/)")
    group.addoption("--shootdown-policy", default=None, metavar="RELEASE[,RELEASE...]",
                    help=f"policy (kernel release) for run_scenario and scenario items; "
                         f"several make one item per policy (default: {DEFAULT_POLICY})")
    group.addoption("--shootdown-qemu", default=None, metavar="PATH",
                    help="qemu-system-aarch64 binary to use")
    group.addoption("--shootdown-trace", action="store_true", default=False,
                    help="also check the guest's report against QEMU's execution log of "
                         "the maintenance helpers (one boot per scenario, single-threaded "
                         "TCG; a disagreement fails the scenario as 'firmware misreports')")
    group.addoption("--shootdown-logdir", default=None, metavar="DIR",
                    help="keep console logs here (default: a new directory under the "
                         "pytest temporary directory)")
    group.addoption("--shootdown-kernel", default=None, metavar="KERNEL[,KERNEL...]",
                    help="run workload files (target = \"kernel\", guests/kernel/) on these "
                         "real kernels: debian:SUITE[-16k] or an Image path; one item per "
                         "workload and kernel, one boot per kernel")
    group.addoption("--shootdown-kernel-cpu", default="max,pauth-impdef=on", metavar="CPU",
                    help="QEMU -cpu for --shootdown-kernel (default: max,pauth-impdef=on)")
    # Internal: how `shootdown matrix` hands its plan to the workers.
    group.addoption("--shootdown-matrix-plan", default=None, help=argparse.SUPPRESS)
    group.addoption("--shootdown-matrix-logdir", default=None, help=argparse.SUPPRESS)
    group.addoption("--shootdown-matrix-hosts", default=None, help=argparse.SUPPRESS)


@dataclass
class State:
    """The plugin's per-session state (``config.stash[STATE]``)."""

    guests: list[str]
    guests_dir: str | None
    policies: list[str]
    qemu: str | None
    logdir_option: str | None
    #: check each scenario against QEMU's execution log (--shootdown-trace)
    trace: bool = False
    #: guest name -> what its CPU reports (from a boot's CPU record)
    capabilities: dict[str, Capabilities] = field(default_factory=dict)
    #: (guest, granule) -> a live guest shared by scenario items and run_scenario
    pool: dict[tuple[str, str], Guest] = field(default_factory=dict)
    #: --shootdown-kernel: the kernels, their -cpu, and per kernel its run over every
    #: collected workload file (made by the first item that needs it)
    kernels: list[str] = field(default_factory=list)
    kernel_cpu: str = "max,pauth-impdef=on"
    workload_files: list[Path] = field(default_factory=list)
    kernel_runs: dict[str, Any] = field(default_factory=dict)
    _logdir: str | None = None
    _boots: int = 0

    def logdir(self, config: pytest.Config) -> str:
        if self._logdir is None:
            if self.logdir_option:
                self._logdir = self.logdir_option
            else:
                factory = config._tmp_path_factory  # type: ignore[attr-defined]
                self._logdir = str(factory.mktemp("shootdown-logs", numbered=True))
            os.makedirs(self._logdir, exist_ok=True)
        return self._logdir

    def new_log(self, config: pytest.Config, stem: str) -> str:
        self._boots += 1
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem)[-120:]
        worker = os.environ.get("PYTEST_XDIST_WORKER", "")
        return os.path.join(self.logdir(config),
                            f"{safe}-{worker}{'-' if worker else ''}{self._boots}.console.log")


STATE = pytest.StashKey[State]()
#: per item: the scenario runs and boots it made (for the failure report)
RUNS = pytest.StashKey[list["ScenarioRun"]]()
BOOTS = pytest.StashKey[list["Guest"]]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "guest: boots a real QEMU guest")
    config.addinivalue_line("markers", "slow: long guest matrices, excluded by default")
    config.addinivalue_line(
        "markers",
        "shootdown_needs(smp=None, features=(), granule=None): skip unless the booted guest "
        "reports at least smp CPUs, the CPU features (ttl, tlbirange) and the translation "
        "granule; the 'guest' fixture boots that granule")
    guests = _csv(config.getoption("shootdown_guest")
                  or os.environ.get("SHOOTDOWN_GUEST") or "virt-a57")
    policies = _csv(config.getoption("shootdown_policy") or DEFAULT_POLICY)
    config.stash[STATE] = State(
        guests=guests, guests_dir=config.getoption("shootdown_guests_dir"),
        policies=policies, qemu=config.getoption("shootdown_qemu"),
        logdir_option=config.getoption("shootdown_logdir"),
        trace=bool(config.getoption("shootdown_trace")),
        kernels=_csv(config.getoption("shootdown_kernel") or ""),
        kernel_cpu=config.getoption("shootdown_kernel_cpu"))


def pytest_sessionfinish(session: pytest.Session) -> None:
    state = session.config.stash.get(STATE, None)
    if state is None:
        return
    import contextlib

    for guest in state.pool.values():
        with contextlib.suppress(Exception):  # the session is over; the log has the story
            guest.shutdown()
    state.pool.clear()


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


# --------------------------------------------------------------------------
# capabilities: what the booted guest's CPU record says

#: granule -> (ID_AA64MMFR0_EL1 field shift, values that mean "supported")
_GRANULE_FIELDS = {"4k": (28, (0x0, 0x1)), "16k": (20, (0x1, 0x2)), "64k": (24, (0x0,))}


@dataclass(frozen=True)
class Capabilities:
    """A guest's CPU as its firmware read it from the ID registers."""

    guest: str
    smp: int
    granules: frozenset[str]
    #: the optional CPU features of docs/policies.md present (ttl, tlbirange)
    features: frozenset[str]
    midr: str
    mmfr0: int
    mmfr2: int
    isar0: int

    @classmethod
    def from_record(cls, guest: str, record: Record) -> Capabilities:
        mmfr0, mmfr2, isar0 = (record.number(k) for k in ("mmfr0", "mmfr2", "isar0"))
        granules = frozenset(g for g, (shift, ok) in _GRANULE_FIELDS.items()
                             if (mmfr0 >> shift) & 0xF in ok)
        features = set()
        if (isar0 >> 56) & 0xF >= 2:  # ID_AA64ISAR0_EL1.TLB: 0b0010 = TLBI range (and OS)
            features.add("tlbirange")
        if (mmfr2 >> 48) & 0xF >= 1:  # ID_AA64MMFR2_EL1.TTL
            features.add("ttl")
        return cls(guest=guest, smp=record.number("smp"), granules=granules,
                   features=frozenset(features), midr=record.text("midr"),
                   mmfr0=mmfr0, mmfr2=mmfr2, isar0=isar0)

    def lacks(self, *, smp: int | None = None, features: Iterable[str] = (),
              granule: str | None = None) -> list[str]:
        """Why this CPU cannot run what is asked (empty: it can)."""
        why = []
        if smp is not None and self.smp < smp:
            why.append(f"needs {smp} CPUs, the guest brought up {self.smp}")
        for f in sorted(set(features) - self.features):
            reg = ("ID_AA64ISAR0_EL1.TLB" if f == "tlbirange" else "ID_AA64MMFR2_EL1.TTL")
            why.append(f"needs CPU feature {f} ({reg} says no)")
        if granule is not None and granule not in self.granules:
            shift = _GRANULE_FIELDS.get(granule, (0, ()))[0]
            why.append(f"needs the {granule} granule (ID_AA64MMFR0_EL1 bits "
                       f"[{shift + 3}:{shift}] = {(self.mmfr0 >> shift) & 0xF:#x})")
        if why:
            why[0] = f"guest {self.guest} (MIDR {self.midr}) " + why[0]
        return why


def get_capabilities(config: pytest.Config, name: str) -> Capabilities:
    """What guest ``name``'s CPU reports: from a boot made earlier, or a 4K probe boot."""
    state = config.stash[STATE]
    if name not in state.capabilities:
        from shootdown.guest.machine import Guest

        definition = _definition(config, name)
        with Guest(definition, log_path=state.new_log(config, f"probe-{name}"), granule="4k",
                   qemu=state.qemu, launcher=_launcher(definition)) as probe:
            _note_capabilities(config, name, probe)
    return state.capabilities[name]


def _note_capabilities(config: pytest.Config, name: str, guest: Guest) -> None:
    if guest.cpu is not None:
        config.stash[STATE].capabilities.setdefault(
            name, Capabilities.from_record(name, guest.cpu))


def _definition(config: pytest.Config, name: str) -> GuestDefinition:
    from shootdown.guest.definition import find_guest

    return find_guest(name, config.stash[STATE].guests_dir)


def _launcher(definition: GuestDefinition) -> Any:
    from shootdown.remote import launcher_for

    return launcher_for(definition)


def _needs(node: pytest.Item) -> dict[str, Any]:
    """The merged keywords of every shootdown_needs marker on ``node``."""
    needs: dict[str, Any] = {"features": []}
    for mark in reversed(list(node.iter_markers("shootdown_needs"))):
        for k, v in mark.kwargs.items():
            if k not in ("smp", "features", "granule"):
                raise pytest.UsageError(f"{node.nodeid}: shootdown_needs: unknown keyword "
                                        f"{k!r} (known: smp, features, granule)")
            needs[k] = list(v) if k == "features" else v
    return needs


# --------------------------------------------------------------------------
# booting and running

def _boot(config: pytest.Config, name: str, granule: str, stem: str) -> Guest:
    """Launch guest ``name`` with the ``granule`` firmware (caller shuts it down)."""
    from shootdown.guest.machine import Guest

    state = config.stash[STATE]
    definition = _definition(config, name)
    guest = Guest(definition, log_path=state.new_log(config, f"{stem}-{name}-{granule}"),
                  granule=granule, qemu=state.qemu, launcher=_launcher(definition))
    guest.launch()
    _note_capabilities(config, name, guest)
    return guest


def _pooled(config: pytest.Config, name: str, granule: str) -> Guest:
    """A live guest shared across items (a failed one is replaced)."""
    state = config.stash[STATE]
    guest = state.pool.get((name, granule))
    # A guest's total time budget covers its whole boot: retire it at half of it.
    if guest is not None and (guest._error is not None or guest._shut_down
                              or time.monotonic() - (guest.t_launch or 0.0)
                              > guest.definition.timeouts.total / 2):
        if not guest._shut_down:
            guest.shutdown()
        state.pool.pop((name, granule))
        guest = None
    if guest is None:
        guest = _boot(config, name, granule, "pool")
        state.pool[(name, granule)] = guest
    return guest


@dataclass(frozen=True)
class ScenarioRun:
    """One scenario run on a guest: the verdict, both sequences, the probes."""

    #: the judged result (verdict, reason, detail, counts)
    result: ScenarioResult
    #: the golden model's instructions per step
    expected: dict[int, tuple[Any, ...]]
    #: what the guest reported (instructions per step, probes); None for a traced run,
    #: whose judged result holds the comparison
    observed: ObservedScenario | None
    guest: str
    #: console log of the boot it ran in
    log_path: str
    build_id: str
    qemu_version: str

    @property
    def verdict(self) -> Any:
        return self.result.verdict

    @property
    def probes(self) -> Any:
        return self.result.probes

    @property
    def ok(self) -> bool:
        """The guest did what the model says (PASS, or SKIP where it cannot run it).

        CAUGHT is not ok here: an injected run that is caught still differs
        from the model; test for ``run.verdict == "caught"`` instead. An
        injection whose code path never ran (NOT_APPLICABLE) matched the model.
        """
        return self.result.verdict.name in ("PASS", "SKIP", "NOT_APPLICABLE")

    def describe(self) -> list[str]:
        """Lines for a failure report: verdict, reason, diff, log."""
        r = self.result
        lines = [f"{r.scenario} on {self.guest} ({r.granule}, policy {r.policy}, inject "
                 f"{r.inject}): {r.verdict}" + (f": {r.reason}" if r.reason else "")]
        lines += r.detail
        lines.append(f"console log: {self.log_path}")
        return lines


def run_on(guest: Guest, scenario: Scenario, policy: str, inject: str = "none",
           scn_id: int = 0) -> ScenarioRun:
    """Run one scenario on a live guest and judge it (what session.run_boot does per job)."""
    import time

    from shootdown.check.scenario import judge
    from shootdown.guest.qemu import tcg_version
    from shootdown.scenario.lower import to_protocol_lines
    from shootdown.session import Job, expected_steps, send_scenario
    from shootdown.trace.scenario import read_scenario

    job = Job(scenario, policy, inject)
    lines = to_protocol_lines(scenario, scn_id=scn_id, policy=policy, inject=inject)
    t0 = time.monotonic()
    observed = read_scenario(send_scenario(guest, lines))
    cpus = guest.cpu.number("smp") if guest.cpu is not None else 1
    expected = expected_steps(job)
    result = judge(scenario=scenario.path, policy=policy, granule=scenario.granule,
                   inject=inject, expected=expected, observed=observed, cpus=cpus,
                   seconds=time.monotonic() - t0,
                   emulator=tcg_version(guest.definition.accel, guest.qemu_version()))
    return ScenarioRun(result=result, expected=expected, observed=observed,
                       guest=guest.definition.name, log_path=guest.log_path,
                       build_id=guest.begin.text("build_id") if guest.begin else "",
                       qemu_version=guest.qemu_version())


def run_traced(config: pytest.Config, name: str, scenario: Scenario, policy: str,
               inject: str = "none") -> ScenarioRun:
    """Run one scenario in its own boot with QEMU's execution log, and judge both.

    The trace needs QEMU started with its log switched on, so a traced run
    does not share a pooled guest (:func:`shootdown.session.run_boot` does it all).
    """
    from shootdown.guest.argv import default_qemu
    from shootdown.session import Job, expected_steps, run_boot

    state = config.stash[STATE]
    definition = _definition(config, name)
    launcher = _launcher(definition)
    log = state.new_log(config, f"trace-{name}-{scenario.granule}")
    job = Job(scenario, policy, inject)
    report = run_boot(definition, scenario.granule, [job], log_path=log, qemu=state.qemu,
                      launcher=launcher, trace_log=log.replace(".console.log", ".exec.log"))
    return ScenarioRun(result=report.results[0], expected=expected_steps(job), observed=None,
                       guest=name, log_path=log, build_id=report.build_id,
                       qemu_version=launcher.qemu_version(state.qemu or default_qemu()))


def _check_before_boot(config: pytest.Config, guest: str, scenario: Scenario) -> None:
    """As run and matrix do: a scenario outside the kernel's calling contract or over
    the firmware's limits (on this guest's RAM) is bad input, told before any boot,
    not a FAIL on every release or a hang."""
    from shootdown.scenario.limits import check_before_boot
    from shootdown.session import memory_bytes

    definition = _definition(config, guest)
    check_before_boot(scenario, definition.firmware_path(scenario.granule),
                      memory_bytes(definition.memory))


def _skip_unless_runnable(config: pytest.Config, guest: str, scenario: Scenario) -> None:
    caps = get_capabilities(config, guest)
    why = caps.lacks(features=scenario.cpu_features, granule=scenario.granule)
    if why:
        pytest.skip("; ".join(why))


def _record_properties(item: pytest.Item, run: ScenarioRun) -> None:
    props = dict(item.user_properties)
    for key, value in (("guest", run.guest), ("policy", run.result.policy),
                       ("granule", run.result.granule), ("inject", run.result.inject),
                       ("firmware_build_id", run.build_id), ("qemu_version", run.qemu_version),
                       ("console_log", run.log_path)):
        if props.get(key) != value:
            item.user_properties.append((key, value))


# --------------------------------------------------------------------------
# fixtures

def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "guest" not in metafunc.fixturenames:
        return
    if any("guest" in _argnames(m) for m in metafunc.definition.iter_markers("parametrize")):
        return
    # Only our own fixture: a conftest may define another fixture called "guest".
    defs = getattr(metafunc, "_arg2fixturedefs", {}).get("guest")
    if defs and getattr(defs[-1].func, "__module__", __name__) != __name__:
        return
    names = metafunc.config.stash[STATE].guests
    metafunc.parametrize("guest", names, indirect=True, ids=names)


def _argnames(mark: pytest.Mark) -> list[str]:
    names = mark.args[0] if mark.args else mark.kwargs.get("argnames", "")
    return [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)


@pytest.fixture
def guest(request: pytest.FixtureRequest) -> Iterator[Guest]:
    """A guest booted for this test (parametrised by ``--shootdown-guest``).

    The granule is ``shootdown_needs(granule=...)``'s, else 4k.  Capability
    needs are checked against the booted guest's CPU record; the test is
    skipped with the reason when it lacks them.
    """
    config = request.config
    name = getattr(request, "param", None) or config.stash[STATE].guests[0]
    needs = _needs(request.node)
    granule = needs.get("granule") or "4k"
    why = get_capabilities(config, name).lacks(**needs)
    if why:
        pytest.skip("; ".join(why))
    booted = _boot(config, name, granule, request.node.name)
    request.node.stash.setdefault(BOOTS, []).append(booted)
    request.node.user_properties += [
        ("guest", name), ("granule", granule),
        ("firmware_build_id", booted.begin.text("build_id") if booted.begin else ""),
        ("qemu_version", booted.qemu_version()), ("console_log", booted.log_path)]
    try:
        yield booted
    finally:
        booted.shutdown()


@pytest.fixture
def run_scenario(request: pytest.FixtureRequest) -> Callable[..., ScenarioRun]:
    """``run_scenario(path_or_scenario, policy=None, inject="none", **overrides)``.

    Runs the scenario on this test's ``guest`` when it has one of the right
    granule, else on a shared booted guest (the test's guest parameter, or
    the first ``--shootdown-guest``).  Returns a :class:`ScenarioRun`; skips
    when the guest lacks the scenario's granule or CPU features.
    """
    config = request.config
    state = config.stash[STATE]
    item = request.node
    own: Guest | None = request.getfixturevalue("guest") if "guest" in item.fixturenames \
        else None
    callspec = getattr(item, "callspec", None)
    name = callspec.params.get("guest", state.guests[0]) if callspec else state.guests[0]
    counter = iter(range(1, 1 << 30))

    def run(scenario: str | os.PathLike[str] | Scenario, policy: str | None = None,
            inject: str = "none", **overrides: Any) -> ScenarioRun:
        from shootdown.scenario.load import load_scenario

        if isinstance(scenario, str | os.PathLike):
            scenario = load_scenario(os.fspath(scenario), overrides or None)
        _check_before_boot(config, name, scenario)
        pol = policy or scenario.policy or state.policies[0]
        if state.trace:
            _skip_unless_runnable(config, name, scenario)
            done = run_traced(config, name, scenario, pol, inject)
        elif own is not None and own.granule == scenario.granule:
            done = run_on(own, scenario, pol, inject, scn_id=next(counter))
        else:
            _skip_unless_runnable(config, name, scenario)
            target = _pooled(config, name, scenario.granule)
            done = run_on(target, scenario, pol, inject, scn_id=next(counter))
        item.stash.setdefault(RUNS, []).append(done)
        _record_properties(item, done)
        return done

    return run


@dataclass(frozen=True)
class GoldenModel:
    """The golden model, for tests: pure, no guest."""

    def load(self, path: str | os.PathLike[str], **overrides: Any) -> Scenario:
        from shootdown.scenario.load import load_scenario

        return load_scenario(os.fspath(path), overrides or None)

    def expected(self, scenario: str | os.PathLike[str] | Scenario,
                 policy: str | None = None, **overrides: Any) -> list[Any]:
        """The model's per-step results (``shootdown.model.expected.expected_sequence``)."""
        from shootdown.model.expected import expected_sequence

        if isinstance(scenario, str | os.PathLike):
            scenario = self.load(scenario, **overrides)
        return list(expected_sequence(scenario, policy))

    @property
    def policies(self) -> list[str]:
        from shootdown.model.policy import POLICIES

        return list(POLICIES)


@pytest.fixture(scope="session")
def golden_model() -> GoldenModel:
    """The golden model (:class:`GoldenModel`)."""
    return GoldenModel()


# --------------------------------------------------------------------------
# failure reports

@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    exc = call.excinfo.value if call.excinfo is not None else None
    log_path = getattr(exc, "log_path", None)
    if report.failed and log_path and type(exc).__module__ == "shootdown.errors":
        # an infrastructure error (boot, hang, crash) in any phase: the log and its tail
        tail = [f"  | {t}" for t in getattr(exc, "tail", None) or []]
        report.sections.append((f"shootdown {report.when}: {type(exc).__name__}",
                                "\n".join([str(exc), *tail, f"console log: {log_path}"])))
    if report.when == "call" and report.failed:
        runs = item.stash.get(RUNS, [])
        bad = [r for r in runs if not r.ok] or runs[-1:]
        for r in bad:
            report.sections.append((f"shootdown: {Path(r.result.scenario).name}",
                                    "\n".join(r.describe())))
        logs = sorted({r.log_path for r in runs} | {g.log_path for g in item.stash.get(BOOTS, [])})
        if logs:
            report.sections.append(("shootdown logs", "\n".join(
                f"console log: {p}" for p in logs)))
    return report


# --------------------------------------------------------------------------
# collection: scenario files and matrix files

_STEP_TABLE = re.compile(r"^\s*\[\[\s*step\s*\]\]", re.MULTILINE)
_KERNEL_TARGET = re.compile(r"^\s*target\s*=\s*[\"']kernel[\"']", re.MULTILINE)
_SET_TABLE = re.compile(r"^\s*\[\[\s*set\s*\]\]", re.MULTILINE)


def _read_toml_text(path: Path, named: bool) -> str | None:
    """A .toml file's text; one that cannot be read (a FIFO, not UTF-8) is not
    collected, unless named on the command line: then it is a usage error."""
    from shootdown.errors import ShootdownError
    from shootdown.inputfile import read_text

    try:
        return read_text(path, "TOML file")
    except ShootdownError as exc:
        if named:
            raise pytest.UsageError(str(exc)) from None
        return None


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix != ".toml":
        return None
    session = parent.session
    plan = parent.config.getoption("shootdown_matrix_plan")
    named = session.isinitpath(file_path)
    if plan or named:
        text = _read_toml_text(file_path, named)
        if text is None:
            return None
        if _SET_TABLE.search(text):
            if named:
                from shootdown.matrix.engine import MatrixFile

                state = parent.config.stash[STATE]
                return MatrixFile.from_parent(parent, path=file_path,
                                              logdir=lambda: state.logdir(parent.config))
            return None
        if plan:
            return None
    if not (named or "scenarios" in file_path.parent.parts
            or (parent.config.getoption("shootdown_kernel")
                and "kernel" in file_path.parent.parts)
            or session.isinitpath(file_path.parent)):
        return None
    text = _read_toml_text(file_path, named)
    if text is None:
        return None
    if not _STEP_TABLE.search(text):
        return None  # guest definitions and other TOML files
    if _KERNEL_TARGET.search(text):
        return WorkloadFile.from_parent(parent, path=file_path)
    return ScenarioFile.from_parent(parent, path=file_path)


def _error_text(exc: BaseException) -> str:
    """A shootdown error for the failure report: the one line, the console's tail, the log."""
    lines = [f"{type(exc).__name__}: {exc}"]
    lines += [f"  | {t}" for t in getattr(exc, "tail", []) or []]
    if getattr(exc, "log_path", None):
        lines.append(f"console log: {exc.log_path}")  # type: ignore[attr-defined]
    return "\n".join(lines)


class ScenarioFile(pytest.File):
    """A scenario file: one item per guest and policy."""

    def collect(self) -> Iterable[pytest.Item]:
        state = self.config.stash[STATE]
        for guest_name in state.guests:
            for policy in state.policies:
                name = policy if len(state.guests) == 1 else f"{guest_name}-{policy}"
                yield ScenarioItem.from_parent(self, name=name, guest_name=guest_name,
                                               policy=policy)


class ScenarioFailed(Exception):
    """The scenario's verdict was FAIL."""


class ScenarioItem(pytest.Item):
    """Run one scenario file under one policy on one guest, and judge it."""

    def __init__(self, *, guest_name: str, policy: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.guest_name = guest_name
        self.policy = policy
        self.add_marker("guest")

    def runtest(self) -> None:
        from shootdown.scenario.load import load_scenario

        scenario = load_scenario(self.path)
        _check_before_boot(self.config, self.guest_name, scenario)
        _skip_unless_runnable(self.config, self.guest_name, scenario)
        if self.config.stash[STATE].trace:
            run = run_traced(self.config, self.guest_name, scenario, self.policy)
        else:
            guest = _pooled(self.config, self.guest_name, scenario.granule)
            run = run_on(guest, scenario, self.policy)
        self.stash.setdefault(RUNS, []).append(run)
        _record_properties(self, run)
        if run.result.verdict.name == "SKIP":
            pytest.skip(run.result.reason)
        if not run.ok:
            raise ScenarioFailed(run)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException],
                     style: Any = None) -> str:
        if isinstance(excinfo.value, ScenarioFailed):
            run: ScenarioRun = excinfo.value.args[0]
            return "\n".join(run.describe())
        from shootdown.errors import ShootdownError

        if isinstance(excinfo.value, ShootdownError):
            return _error_text(excinfo.value)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"{self.path.name} [{self.guest_name} {self.policy}]"


# --------------------------------------------------------------------------
# real kernels (--shootdown-kernel): workload files as items

class WorkloadFile(pytest.File):
    """A workload file (``target = "kernel"``): one item per ``--shootdown-kernel``."""

    def collect(self) -> Iterable[pytest.Item]:
        state = self.config.stash[STATE]
        state.workload_files.append(self.path)
        for kernel in state.kernels or ["(none)"]:
            yield WorkloadItem.from_parent(self, name=kernel, kernel=kernel)


class WorkloadFailed(Exception):
    """A step of the workload failed on the real kernel."""


class WorkloadItem(pytest.Item):
    """One workload file on one real kernel: its steps' verdicts from the kernel's run.

    Every workload file collected in the session runs in the first item's boot of
    that kernel (``kernel run``'s engine, :func:`shootdown.kernel.run.run_kernel`);
    the other items read their steps from it."""

    def __init__(self, *, kernel: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kernel = kernel
        self.add_marker("guest")

    def runtest(self) -> None:
        from shootdown.kernel.table import steps_by_workload
        from shootdown.scenario.workload import load_workload

        state = self.config.stash[STATE]
        if not state.kernels:
            pytest.skip("a workload for a real kernel: pass --shootdown-kernel "
                        "debian:bookworm (or an Image path)")
        workload = load_workload(self.path)
        run = _kernel_run(self.config, self.kernel)
        steps = steps_by_workload(run).get(workload.name, [])
        skipped = [why for path, why in run.skipped if Path(path) == self.path]
        if not steps and skipped:
            pytest.skip(skipped[0])
        self.user_properties += [("shootdown_kernel", run.kernel),
                                 ("shootdown_policy", run.policy or ""),
                                 ("shootdown_steps", len(steps))]
        failed = [st for st in steps if st.verdict.name != "PASS"]
        if failed or not steps:
            raise WorkloadFailed(run, steps, failed)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException],
                     style: Any = None) -> str:
        if isinstance(excinfo.value, WorkloadFailed):
            run, steps, failed = excinfo.value.args
            if not steps:
                return (f"{self.path.name}: no traced step of this workload in the run "
                        f"of {run.kernel}")
            from shootdown.kernel.table import failure_lines

            lines = [f"{self.path.name} on {run.kernel} (policy {run.policy}): "
                     f"{len(failed)} of {len(steps)} step(s) failed"]
            return "\n".join(lines + [f"  {line}" for line in failure_lines(run, failed)])
        from shootdown.errors import ShootdownError

        if isinstance(excinfo.value, ShootdownError):
            return _error_text(excinfo.value)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"{self.path.name} [{self.kernel}]"


def _kernel_run(config: pytest.Config, kernel: str) -> Any:
    """The session's run of ``kernel`` over every collected workload file (one boot)."""
    state = config.stash[STATE]
    if kernel in state.kernel_runs:
        run = state.kernel_runs[kernel]
        if isinstance(run, BaseException):
            raise run
        return run
    from shootdown.errors import ShootdownError
    from shootdown.kernel.boot import MachineSpec
    from shootdown.kernel.locate import locate
    from shootdown.kernel.run import run_kernel
    from shootdown.scenario.workload import load_workload

    try:
        files = locate(kernel)
        workloads = [load_workload(p) for p in state.workload_files]
        run = run_kernel(files, spec=MachineSpec(cpu=state.kernel_cpu, memory="1G"),
                         log_path=state.new_log(config, f"kernel-{kernel}"),
                         qemu=state.qemu, workloads=workloads)
    except ShootdownError as exc:
        state.kernel_runs[kernel] = exc
        raise
    state.kernel_runs[kernel] = run
    return run
