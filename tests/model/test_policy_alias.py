"""Release names that are not themselves policies resolve to the newest policy
not newer than them; anything else stays bad input (issue 13)."""

from __future__ import annotations

import pytest

from shootdown.errors import ConfigError
from shootdown.model.policy import get_policy, resolve_policy_name


@pytest.mark.parametrize(("name", "want"), [
    ("v5.10", "v5.9"), ("v6.1", "v5.14"), ("6.1", "v5.14"), ("v6.12", "v6.10"),
    ("v7.2", "v7.1"), ("v7.0", "v6.19"), ("v6.19", "v6.19"), ("v4.19", "v4.19"), ("v6.9", "v6.9")])
def test_release_resolves_to_newest_policy_not_newer(name: str, want: str) -> None:
    assert resolve_policy_name(name) == want


def test_alias_is_noted_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    assert get_policy("v6.1").name == "v5.14"
    assert capsys.readouterr().err == "v6.1 -> policy v5.14\n"
    get_policy("v6.19")
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("name", ["v4.18", "v3.10", "latest", "v6", "v6.1.2", ""])
def test_older_or_malformed_names_stay_bad_input(name: str) -> None:
    with pytest.raises(ConfigError):
        resolve_policy_name(name)
