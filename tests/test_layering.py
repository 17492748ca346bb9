"""The package's boundaries, checked on what a fresh interpreter really imports.

- Observation (the trace readers, the guest and kernel machinery that runs and
  watches a target) never imports the model: what was seen is never shaped by
  what was predicted.
- The model never imports observation, the checks or the shells: it never sees
  what was observed.
- Engines never import a shell (the CLI, the pytest plugin).

The instruction vocabulary both sides use is :mod:`shootdown.insn`, which
imports nothing of the project.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

OBSERVATION = ("shootdown.insn", "shootdown.trace.scenario", "shootdown.trace.qemu_log",
               "shootdown.trace.decode", "shootdown.trace.console", "shootdown.guest.machine",
               "shootdown.guest.launcher", "shootdown.kernel.observe", "shootdown.kernel.tracer",
               "shootdown.kernel.boot", "shootdown.kernel.sites", "shootdown.kernel.symbols")
MODEL = ("shootdown.model", "shootdown.model.expected", "shootdown.model.render",
         "shootdown.model.policy")
ENGINES = ("shootdown.matrix.engine", "shootdown.session", "shootdown.kernel.run",
           "shootdown.check.sequence", "shootdown.report")
SHELLS = ("shootdown.cli", "shootdown.pytest_plugin", "shootdown.commands")


def imported_by(module: str) -> set[str]:
    """Every shootdown module a fresh interpreter holds after ``import module``."""
    code = ("import importlib, json, sys; importlib.import_module(sys.argv[1]); "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('shootdown'))))")
    done = subprocess.run([sys.executable, "-c", code, module], capture_output=True,
                          text=True, timeout=60, check=True)
    return set(json.loads(done.stdout))


def under(modules: set[str], packages: tuple[str, ...]) -> set[str]:
    return {m for m in modules for p in packages if m == p or m.startswith(p + ".")}


@pytest.mark.parametrize("module", OBSERVATION)
def test_observation_never_imports_the_model(module: str) -> None:
    assert under(imported_by(module), ("shootdown.model", "shootdown.check")) == set()


@pytest.mark.parametrize("module", MODEL)
def test_the_model_never_sees_observation(module: str) -> None:
    seen = under(imported_by(module), ("shootdown.trace", "shootdown.guest", "shootdown.kernel",
                                       "shootdown.check", "shootdown.remote", *SHELLS))
    assert seen == set()


@pytest.mark.parametrize("module", ENGINES)
def test_engines_never_import_a_shell(module: str) -> None:
    assert under(imported_by(module), SHELLS) == set()


def test_the_vocabulary_imports_nothing_of_the_project() -> None:
    assert imported_by("shootdown.insn") == {"shootdown", "shootdown.insn"}
