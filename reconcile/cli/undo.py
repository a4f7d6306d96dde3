"""`reconcile undo JOURNAL`: restore what a repair journal recorded, where nothing changed."""

from pathlib import Path
from typing import Annotated

import typer

from reconcile.cli import options as o
from reconcile.cli import render
from reconcile.cli.boundary import boundary, finish
from reconcile.cli.repair import decide
from reconcile.ops.undo import undo
from reconcile.plan import RepairOptions


def undo_command(
    journal: Annotated[Path, typer.Argument(help="A journal written by `reconcile repair`.")],
    dry_run: o.DryRunOption = False,
    yes: o.YesOption = False,
    batch_size: o.BatchOption = 1000,
    lock_timeout: o.LockTimeoutOption = 5.0,
    batch_deadline: o.DeadlineOption = 60.0,
    format: o.FormatOption = o.Format.table,
    output: o.OutputOption = None,
    quiet: o.QuietOption = False,
    log_format: o.LogFormatOption = o.LogFormat.text,
    metrics_file: o.MetricsFile = None,
    debug: o.Debug = False,
    database_url: o.DatabaseUrl = None,
    qdrant_url: o.QdrantUrl = None,
    qdrant_path: o.QdrantPath = None,
    qdrant_edge: o.QdrantEdge = None,
    qdrant_api_key: o.QdrantApiKey = None,
    collection: o.Collection = None,
    table: o.Table = None,
    point_column: o.PointColumn = None,
    person_column: o.PersonColumn = None,
    id_column: o.IdColumn = None,
    updated_column: o.UpdatedColumn = None,
    person_key: o.PersonKey = None,
    flag_key: o.FlagKey = None,
    retries: o.Retries = None,
    timeout: o.Timeout = None,
    page_size: o.PageSize = None,
    min_age: o.MinAge = None,
    config: o.ConfigFile = None,
    env_file: o.EnvFile = None,
) -> None:
    """Restore what a repair journal recorded, where nothing has changed since."""
    # locals() is exactly this command's parameters: the settings are picked from it by name.
    params = locals()
    with boundary("undo", debug=debug, metrics_file=metrics_file) as run:
        settings = run.settings(params)
        options = RepairOptions(
            batch_size=batch_size, lock_timeout=lock_timeout, batch_deadline=batch_deadline
        )
        ask = decide(dry_run, yes, "undo")

        def confirm(points: int) -> bool:
            return typer.confirm(f"Restore up to {points:,} points from {journal}?", err=True)

        with render.progress("undoing", enabled=not quiet) as progress:
            report = undo(
                settings,
                journal,
                dry_run=dry_run,
                options=options,
                progress=progress,
                confirm=confirm if ask else None,
            )
        render.show(report, render.render_undo, format, output)
        finish(report.exit_code)
