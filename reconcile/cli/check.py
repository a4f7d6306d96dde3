"""`reconcile check`: validate the mapping on both stores (exit 2 on problems)."""

import typer

from reconcile import log
from reconcile.cli import options as o
from reconcile.cli import render
from reconcile.cli.boundary import boundary, finish
from reconcile.ops.check import check


def check_command(
    ctx: typer.Context,
    format: o.FormatOption = o.Format.table,
) -> None:
    """Validate the mapping on both stores and print row and point counts (exit 2 on problems)."""
    params = o.shared(ctx)
    with boundary("check", params) as run:
        report = check(run.settings(params))
        render.show(report, render.render_check, format, None)
        log.event(
            "check.finished", problems=len(report.problems), rows=report.rows, points=report.points
        )
        finish(report.exit_code)
