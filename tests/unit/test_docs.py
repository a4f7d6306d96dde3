"""The README documents every command, every flag and every exit code (sqlite-utils' habit)."""

from __future__ import annotations

import re

import pytest

from reconcile.cli import app
from reconcile.errors import ExitCode
from tests.helpers import ROOT

README = (ROOT / "README.md").read_text()


def commands() -> list[str]:
    return [c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands]


@pytest.mark.parametrize("name", commands())
def test_command_documented(name: str) -> None:
    assert f"### `reconcile {name}" in README


def test_every_flag_documented() -> None:
    import typer.main

    group = typer.main.get_command(app)
    flags = {
        opt
        for command in group.commands.values()  # type: ignore[attr-defined]
        for param in command.params
        for opt in param.opts
        if opt.startswith("--") and opt != "--help"
    }
    missing = sorted(f for f in flags if f"`{f}" not in README)
    assert not missing


@pytest.mark.parametrize("code", [int(c) for c in ExitCode])
def test_exit_code_documented(code: int) -> None:
    assert re.search(rf"^\| {code} \|", README, re.MULTILINE)
