"""`reconcile journals`: the undo journals on disk, what each was for, whether it was undone."""

from pathlib import Path
from typing import Annotated

import typer

from reconcile.cli import options as o
from reconcile.cli import render
from reconcile.cli.boundary import boundary, finish
from reconcile.ops.journals import list_journals


def journals_command(
    dir: Annotated[
        Path | None,
        typer.Option(
            "--dir",
            help="Where the journals are (default: $XDG_STATE_HOME/reconcile "
            "or ~/.local/state/reconcile).",
        ),
    ] = None,
    format: o.FormatOption = o.Format.table,
    output: o.OutputOption = None,
    debug: o.Debug = False,
) -> None:
    """List the repair journals: time, table, collection, points, and whether undone."""
    with boundary("journals", {"debug": debug}):
        report = list_journals(dir)
        render.show(report, render.render_journals, format, output)
        finish(report.exit_code)
