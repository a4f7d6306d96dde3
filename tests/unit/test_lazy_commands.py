"""Commands are imported only when they run: `--help` and `--version` import no store,
and the app's command list says what each command's own help says."""

from __future__ import annotations

import subprocess
import sys

import pytest

from reconcile.cli import COMMANDS, invoked, load

# What a command that reaches the stores imports, and `--help` must not.
HEAVY = ("psycopg", "qdrant_client", "qdrant_edge", "prometheus_client")


@pytest.mark.parametrize("name", list(COMMANDS))
def test_the_listed_help_is_the_commands_own(name: str) -> None:
    assert load(name).help == COMMANDS[name].help


def packages_after(script: str) -> set[str]:
    """The top-level packages a fresh Python process imported running `script`."""
    report = (
        "\nimport sys\nprint(' '.join({m.split('.')[0] for m in sys.modules}), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script + report],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return set(done.stderr.split())


def imported_by(*argv: str) -> set[str]:
    """The top-level packages a fresh `reconcile ARGV` process imported."""
    return packages_after(
        "import sys\n"
        f"sys.argv = ['reconcile', *{list(argv)!r}]\n"
        "from reconcile.cli import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
    )


@pytest.mark.parametrize("argv", [["--version"], ["--help"], []])
def test_help_and_version_import_no_store(argv: list[str]) -> None:
    assert not imported_by(*argv) & set(HEAVY)


def test_a_commands_help_imports_what_that_command_needs() -> None:
    # The control for the test above: a real command's module does import them.
    assert "psycopg" in imported_by("audit", "--help")


def test_no_module_imports_sqlalchemy_or_prometheus_client() -> None:
    # The store speaks psycopg alone: SQLAlchemy cost a fifth of a second per start
    # (it stays in the dev extra for bench/readers.py, so a stray import would succeed).
    # prometheus_client is imported only when a metric is written or read.
    imported = packages_after(
        "import importlib, pkgutil, reconcile\n"
        "for m in pkgutil.walk_packages(reconcile.__path__, 'reconcile.'):\n"
        "    if not m.name.endswith('__main__'):  # that one runs the CLI\n"
        "        importlib.import_module(m.name)\n"
    )
    assert {"psycopg", "qdrant_client", "typer", "rich"} <= imported  # every module was
    assert not imported & {"sqlalchemy", "prometheus_client"}


def test_the_invoked_command_is_the_first_word() -> None:
    assert invoked(["--debug", "audit", "--format", "json"]) == {"audit"}
    assert invoked(["--help"]) == frozenset()
    assert invoked(["config", "show"]) == {"config"}
