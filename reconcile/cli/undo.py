"""`reconcile undo JOURNAL`: restore what a repair journal recorded, where nothing changed."""

from pathlib import Path
from typing import Annotated

import typer

from reconcile import log
from reconcile.cli import options as o
from reconcile.cli import render
from reconcile.cli.boundary import boundary, finish
from reconcile.cli.repair import decide
from reconcile.ops.undo import undo
from reconcile.plan import RepairOptions


def undo_command(
    ctx: typer.Context,
    journal: Annotated[
        Path,
        typer.Argument(
            help="A journal written by `reconcile repair`; its table, collection and keys are used."
        ),
    ],
    dry_run: o.DryRunOption = False,
    yes: o.YesOption = False,
    batch_size: o.BatchOption = 1000,
    lock_timeout: o.LockTimeoutOption = 5.0,
    batch_deadline: o.DeadlineOption = 60.0,
    format: o.FormatOption = o.Format.table,
    output: o.OutputOption = None,
    quiet: o.QuietOption = False,
) -> None:
    """Restore what a repair journal recorded, where nothing has changed since."""
    params = o.shared(ctx)
    with boundary("undo", params) as run:
        settings = run.settings(params)
        options = RepairOptions(
            batch_size=batch_size, lock_timeout=lock_timeout, batch_deadline=batch_deadline
        )
        ask = decide(dry_run, yes, "undo")

        with render.progress("undoing", enabled=not quiet) as progress:

            def confirm(points: int) -> bool:
                progress.stop()  # no spinner may overwrite the question
                return typer.confirm(f"Restore up to {points:,} points from {journal}?", err=True)

            report = undo(
                settings,
                journal,
                dry_run=dry_run,
                options=options,
                progress=progress,
                confirm=confirm if ask else None,
                sources=run.sources,
            )
        run.table, run.collection = report.table, report.collection
        render.show(report, render.render_undo, format, output)
        log.event(
            "undo.finished",
            dry_run=report.dry_run,
            restored=report.restored,
            conflicts=report.conflicts,
            failed=report.failed,
            seconds=round(report.duration_seconds, 3),
        )
        finish(report.exit_code)
