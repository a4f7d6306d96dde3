"""`--help` a person can scan: options in panels, no <bool> placeholders, -h, --version."""

from __future__ import annotations

from importlib.metadata import version

import pytest

from tests.helpers import run_cli

READING = ("Connection", "Mapping", "Scope", "Output", "Cron")


@pytest.mark.parametrize(
    ("command", "panels"), [("audit", READING), ("repair", (*READING, "Safety"))]
)
def test_options_are_grouped_in_panels_without_bool_placeholders(
    command: str, panels: tuple[str, ...]
) -> None:
    shown = run_cli(command, "-h", env={"COLUMNS": "120"})
    assert shown.returncode == 0, shown.stderr
    for panel in panels:
        assert f"─ {panel} ─" in shown.stdout, panel
    flags = [line for line in shown.stdout.splitlines() if "<bool>" in line]
    assert all("--help" in line for line in flags), flags  # only Typer's own --help


def test_commands_without_stores_do_not_list_the_connection_settings() -> None:
    shown = run_cli("demo", "--help", env={"COLUMNS": "120"})
    assert shown.returncode == 0 and "--database-url" not in shown.stdout


def test_version_and_completion() -> None:
    shown = run_cli("--version")
    assert shown.returncode == 0 and shown.stdout == f"reconcile {version('reconcile')}\n"
    root = run_cli("-h", env={"COLUMNS": "120"})
    assert "--install-completion" in root.stdout and "--show-completion" in root.stdout
