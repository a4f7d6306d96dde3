"""A usage error (an unknown flag, a bad value, a missing argument) is one line, like every
other error, and a JSON event under --log-format json; a bare group still shows its help."""

from __future__ import annotations

import json

import pytest

from tests.helpers import run_cli


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["audit", "--bogus"], "No such option: --bogus"),
        (["audit", "--format", "xml"], "Invalid value for '--format'"),
        (["undo"], "Missing argument 'journal'"),
        (["nosuch"], "No such command 'nosuch'"),
    ],
)
def test_a_usage_error_is_one_line_naming_the_help(args: list[str], says: str) -> None:
    done = run_cli(*args)
    assert done.returncode == 2
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"reconcile: error: {says}") and "--help'" in line


def test_a_usage_error_is_a_json_event_with_json_logs() -> None:
    done = run_cli("audit", "--log-format", "json", "--bogus")
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    event = json.loads(line)
    assert event["event"] == "error" and event["exit_code"] == 2
    assert "--bogus" in event["message"]


@pytest.mark.parametrize("args", [[], ["config"]])
def test_a_bare_group_still_shows_its_help(args: list[str]) -> None:
    done = run_cli(*args)
    assert done.returncode == 2 and "Usage: reconcile" in done.stdout and done.stderr == ""
