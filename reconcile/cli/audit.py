"""`reconcile audit`: the full or targeted audit, `--sample N` and `--counts`."""

import time
from pathlib import Path
from typing import Annotated

import typer

from reconcile import log
from reconcile.cli import options as o
from reconcile.cli import render
from reconcile.cli.boundary import Run, boundary, finish, run_lock
from reconcile.errors import ConfigError
from reconcile.ops.audit import audit
from reconcile.ops.counts import compare_counts
from reconcile.ops.sample import sample_audit
from reconcile.settings import Settings


def audit_command(
    ctx: typer.Context,
    format: o.FormatOption = o.Format.table,
    output: o.OutputOption = None,
    details: Annotated[
        Path | None,
        typer.Option(help="Write one JSON line per drifted point to this file (mode 0600)."),
    ] = None,
    top: o.TopOption = 10,
    counts: Annotated[
        bool, typer.Option("--counts", help="Only compare face counts per person (no scan).")
    ] = False,
    quiet: o.QuietOption = False,
    lock: Annotated[
        bool, typer.Option("--lock", help="Take the run lock, as repair does (exit 5 if held).")
    ] = False,
    max_duration: o.MaxDurationOption = None,
    fail_on: o.FailOnOption = None,
    workers: Annotated[int, typer.Option(help="Scan this many slices at once.")] = 1,
    sample: Annotated[
        int | None, typer.Option(help="Check N random faces and N random points; estimate drift.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of --sample, to repeat a sample.")] = None,
) -> None:
    """Stream both stores, merge-join them by point id, and report drift (exit 1 on drift)."""
    params = o.shared(ctx)
    with boundary("audit", params) as run:
        settings, scope, failing = run.scanning(params, quiet=quiet, fail_on=fail_on)
        if seed is not None and sample is None:
            raise ConfigError("--seed goes with --sample N")
        if sample is not None:
            conflicts = counts or details or workers != 1 or not scope.everything
            _sampled(settings, sample, seed, failing, format, output, conflicts=bool(conflicts))
        if counts:
            _counted(settings, scope, format, output)
        _scan(
            run,
            settings,
            scope,
            failing,
            format=format,
            output=output,
            details=details,
            top=top,
            quiet=quiet,
            lock=lock,
            max_duration=max_duration,
            workers=workers,
        )


def _sampled(
    settings: Settings,
    sample: int,
    seed: int | None,
    failing: frozenset[str],
    format: o.Format,
    output: Path | None,
    *,
    conflicts: bool,
) -> None:
    """`--sample N`: estimate drift from N random faces and N random points."""
    if conflicts:
        raise ConfigError(
            "--sample estimates the whole stores: drop --counts, --details, --workers, "
            "ids, --since, --incremental, --shard"
        )
    estimated = sample_audit(settings, sample, seed=seed)
    render.show(estimated, render.render_sample, format, output)
    finish(estimated.failing(failing))


def _counted(settings: Settings, scope: o.Scope, format: o.Format, output: Path | None) -> None:
    """`--counts`: faces per person on both sides, one query each, no scan."""
    if scope.targets(settings) is not None:
        raise ConfigError("--counts compares whole stores: drop the ids, --since, --incremental")
    counted = compare_counts(settings)
    render.show(counted, render.render_counts, format, output)
    finish(counted.exit_code)


def _scan(
    run: Run,
    settings: Settings,
    scope: o.Scope,
    failing: frozenset[str],
    *,
    format: o.Format,
    output: Path | None,
    details: Path | None,
    top: int,
    quiet: bool,
    lock: bool,
    max_duration: float | None,
    workers: int,
) -> None:
    """The audit proper: a scan of the stores, or a lookup of the targeted faces."""
    targets = scope.targets(settings)
    deadline = None if max_duration is None else time.monotonic() + o.positive(max_duration)
    with (
        run_lock(settings, scope.shard_label if lock else None) as stores,
        render.progress("auditing", enabled=not quiet) as progress,
    ):
        report = audit(
            settings,
            top=top,
            details=details,
            progress=progress,
            targets=targets,
            stores=stores,
            deadline=deadline,
            shard=scope.shard,
            workers=workers,
        )
    run.audit = report
    render.show(report, render.render_audit, format, output)
    scope.succeeded(settings, report.started_at)
    log.event(
        "audit.finished",
        drifted=report.drifted,
        repairable=report.repairable,
        rows=report.rows,
        points=report.points,
        complete=report.complete,
        seconds=round(report.duration_seconds, 3),
    )
    finish(report.failing(failing))
