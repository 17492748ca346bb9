"""The shootdown pytest plugin (entry point ``pytest11``).

Registered for every pytest run in an environment where shootdown is
installed, so it must stay cheap to import: options and markers only here;
fixtures import the guest machinery when a test asks for them.
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("shootdown", "shootdown guest runs")
    group.addoption("--shootdown-guest", default=None, metavar="NAME",
                    help="guest definition to boot (default: the project's default guest)")
    group.addoption("--shootdown-qemu", default=None, metavar="PATH",
                    help="qemu-system-aarch64 binary to use")
    group.addoption("--shootdown-logdir", default=None, metavar="DIR",
                    help="keep console and QEMU logs here")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "guest: boots a real QEMU guest")
    config.addinivalue_line("markers", "slow: long guest matrices, excluded by default")
