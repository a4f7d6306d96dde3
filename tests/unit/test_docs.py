"""The README documents every command, every flag and every exit code (sqlite-utils' habit)."""

from __future__ import annotations

import re

import pytest

from reconcile.cli import COMMANDS, load
from reconcile.errors import ExitCode
from tests.helpers import ROOT

README = (ROOT / "README.md").read_text()


@pytest.mark.parametrize("name", list(COMMANDS))
def test_command_documented(name: str) -> None:
    assert f"### `reconcile {name}" in README


def test_every_flag_documented() -> None:
    commands = [load(name) for name in COMMANDS]
    # A group's subcommands too (`config show`).
    commands += [sub for group in commands for sub in getattr(group, "commands", {}).values()]
    flags = {
        opt
        for command in commands
        for param in command.params
        for opt in param.opts
        if opt.startswith("--") and opt != "--help"
    }
    missing = sorted(f for f in flags if f"`{f}" not in README)
    assert not missing


@pytest.mark.parametrize("code", [int(c) for c in ExitCode])
def test_exit_code_documented(code: int) -> None:
    assert re.search(rf"^\| {code} \|", README, re.MULTILINE)
