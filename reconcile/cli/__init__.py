"""The command line: a thin layer over the library, one module per command.

`options` declares every option once; `boundary` turns errors into exit codes
and writes a run's metrics; `render` is all the output (and the only Rich
import). Each command module parses, calls one library operation, renders its
report and exits with the report's code.

Commands are registered lazily: a command's module (and with it psycopg,
qdrant-client and Rich) is imported only when that command runs or
shows its help. `reconcile --help` lists every command from the short help kept
here (a test checks it against each command's own), and `reconcile --version`
imports nothing but Typer: cron pays for what it runs, not for every command.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup
from typer.exceptions import TyperException

from reconcile.errors import ExitCode


@dataclass(frozen=True)
class Entry:
    """A command: where its function is, which option groups it takes, its short help."""

    module: str
    function: str
    help: str
    groups: tuple[str, ...] = ()  # names of the group declarations in cli/options.py


# In the order `reconcile --help` lists them.
COMMANDS: dict[str, Entry] = {
    "check": Entry(
        "reconcile.cli.check",
        "check_command",
        "Validate the mapping on both stores and print row and point counts (exit 2 on "
        "problems);\nor, with --suggest-map, print the map table that the payloads need.",
        ("run_options", "settings_options"),
    ),
    "audit": Entry(
        "reconcile.cli.audit",
        "audit_command",
        "Stream both stores, merge-join them by point id, and report drift (exit 1 on drift).",
        ("scope_options", "run_options", "settings_options"),
    ),
    "repair": Entry(
        "reconcile.cli.repair",
        "repair_command",
        "Audit, then set payloads to what PostgreSQL says, in locked, journaled batches.",
        ("scope_options", "orphan_options", "run_options", "settings_options"),
    ),
    "undo": Entry(
        "reconcile.cli.undo",
        "undo_command",
        "Restore what a repair journal recorded, where nothing has changed since.",
        ("run_options", "settings_options"),
    ),
    "journals": Entry(
        "reconcile.cli.journals",
        "journals_command",
        "List the repair journals: time, table, collection, points, and whether undone.",
    ),
    "demo": Entry(
        "reconcile.cli.demo",
        "demo_command",
        "Build a world with drift of every kind, audit it, and show what to try next.",
    ),
    "config": Entry(
        "reconcile.cli.config",
        "config_app",
        "Show the effective settings.",
    ),
}
# Shell completion asks for every command's options: it gets the real commands.
_COMPLETING = "_RECONCILE_COMPLETE"


# Typer 0.29 vendors Click (typer._click); its command type is reached through Typer's.
Command = Any


def load(name: str) -> Command:
    """The real command `name`, its module imported now."""
    from reconcile.cli import options as o

    entry = COMMANDS[name]
    found = getattr(importlib.import_module(entry.module), entry.function)
    if isinstance(found, typer.Typer):  # a group of subcommands (`config show`)
        group = typer.main.get_group(found)
        group.name = name
        return group
    one = typer.Typer(add_completion=False)  # completion is the app's option, not each command's
    groups = [getattr(o, group) for group in entry.groups]
    one.command(name, cls=o.command_class(*groups) if groups else None)(found)
    return typer.main.get_command(one)


class Commands(TyperGroup):
    """The app's commands, each imported only when needed (`only`: None means all)."""

    only: frozenset[str] | None = None

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Command | None:
        if cmd_name not in COMMANDS:
            return None
        if self.only is None or cmd_name in self.only:
            return load(cmd_name)
        # Listed in the app's help only, never run: its short help is all that shows.
        return TyperCommand(cmd_name, help=COMMANDS[cmd_name].help)


app = typer.Typer(
    name="reconcile",
    cls=Commands,
    help="Find and repair drift between PostgreSQL and a Qdrant collection.",
    no_args_is_help=True,
    # --install-completion / --show-completion for bash, zsh, fish and PowerShell.
    add_completion=True,
    # Every command's context inherits these from the app's.
    context_settings={"help_option_names": ["-h", "--help"]},
    # Rich tracebacks print local variables, and those hold the database URL.
    pretty_exceptions_enable=False,
)


def _version(shown: bool) -> None:
    if shown:
        from reconcile import __version__

        print(f"reconcile {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version,
            is_eager=True,
            metavar="",
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Find and repair drift between PostgreSQL and a Qdrant collection."""


def invoked(argv: list[str]) -> frozenset[str] | None:
    """The command `argv` runs (the first word that is not an option), as `Commands.only`;
    None (every command real) while a shell asks for completions."""
    if os.environ.get(_COMPLETING):
        return None
    words = [arg for arg in argv if not arg.startswith("-")]
    return frozenset(words[:1])


def main() -> None:
    """Run the app; a usage error is one line, as every other error (boundary.usage_error).

    Typer runs in non-standalone mode so that its usage errors reach us instead of
    its box; a bare group (`reconcile`, `reconcile config`) asks for help, which
    Typer has shown by the time it raises: that exits 2, as always.
    """
    command: Callable[..., Any] = typer.main.get_command(app)
    assert isinstance(command, Commands)
    command.only = invoked(sys.argv[1:])
    try:
        code = command.main(args=sys.argv[1:], prog_name="reconcile", standalone_mode=False)
    except TyperException as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":
            sys.exit(ExitCode.USAGE)
        from reconcile.cli.boundary import usage_error

        usage_error(exc, sys.argv[1:])
    except typer.Abort:  # end of input at a question
        print("Aborted!", file=sys.stderr)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


__all__ = ["COMMANDS", "app", "main"]
