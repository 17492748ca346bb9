"""The pytest plugin keeps its own copy of the default policy (importing the
model package at plugin load would slow every pytest start); it must name
the model's."""

from shootdown import pytest_plugin
from shootdown.model import DEFAULT_POLICY, POLICIES


def test_plugin_default_policy_is_the_models() -> None:
    assert pytest_plugin.DEFAULT_POLICY == DEFAULT_POLICY


def test_default_policy_is_the_newest_release() -> None:
    assert list(POLICIES)[-1] == DEFAULT_POLICY
