"""The command line: a thin layer over the library, one module per command.

`options` declares every option once; `boundary` turns errors into exit codes
and writes a run's metrics; `render` is all the output (and the only Rich
import). Each command module parses, calls one library operation, renders its
report and exits with the report's code.
"""

import sys
from importlib.metadata import version
from typing import Annotated

import typer
from typer.exceptions import TyperException

from reconcile.cli import audit, check, config, demo, journals, repair, undo
from reconcile.cli import options as o
from reconcile.cli.boundary import usage_error
from reconcile.errors import ExitCode

app = typer.Typer(
    name="reconcile",
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
        print(f"reconcile {version('reconcile')}")
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


# The option groups each command takes besides its own (declared in cli/options.py).
_STORES = o.command_class(o.run_options, o.settings_options)
_SCANS = o.command_class(o.scope_options, o.run_options, o.settings_options)

app.command("check", cls=_STORES)(check.check_command)
app.command("audit", cls=_SCANS)(audit.audit_command)
app.command("repair", cls=_SCANS)(repair.repair_command)
app.command("undo", cls=_STORES)(undo.undo_command)
app.command("journals")(journals.journals_command)

config_app = typer.Typer(help="Show the effective settings.", no_args_is_help=True)
config_app.command("show", cls=o.command_class(o.settings_options))(config.config_show_command)
app.add_typer(config_app, name="config")

app.command("demo")(demo.demo_command)


def main() -> None:
    """Run the app; a usage error is one line, as every other error (boundary.usage_error).

    Typer runs in non-standalone mode so that its usage errors reach us instead of
    its box; a bare group (`reconcile`, `reconcile config`) asks for help, which
    Typer has shown by the time it raises: that exits 2, as always.
    """
    try:
        code = app(standalone_mode=False, prog_name="reconcile")
    except TyperException as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":
            sys.exit(ExitCode.USAGE)
        usage_error(exc, sys.argv[1:])
    except typer.Abort:  # end of input at a question
        print("Aborted!", file=sys.stderr)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


__all__ = ["app", "main"]
