"""`reconcile audit`: the full or targeted audit, `--sample N` and `--counts`."""

import time
from pathlib import Path
from typing import Annotated

import typer

from reconcile import log
from reconcile.cli import options as o
from reconcile.cli import render
from reconcile.cli.boundary import Run, boundary, finish, run_lock
from reconcile.cli.scope import Scope, positive
from reconcile.errors import ConfigError
from reconcile.ops.audit import audit
from reconcile.ops.counts import compare_counts
from reconcile.ops.sample import sample_audit, sample_fail_on
from reconcile.settings import Settings


def audit_command(
    ctx: typer.Context,
    format: o.FormatOption = o.Format.table,
    output: o.OutputOption = None,
    details: Annotated[
        Path | None,
        typer.Option(
            help="Write one JSON line per drifted point to this file (mode 0600).",
            rich_help_panel="Output",
        ),
    ] = None,
    top: o.TopOption = 10,
    counts: Annotated[
        bool,
        typer.Option(
            "--counts",
            help="Only compare face counts per person (no scan).",
            rich_help_panel="Scope",
            metavar="",
        ),
    ] = False,
    quiet: o.QuietOption = False,
    lock: Annotated[
        bool,
        typer.Option(
            "--lock",
            help="Take the run lock, as repair does (exit 5 if held).",
            rich_help_panel="Cron",
            metavar="",
        ),
    ] = False,
    max_duration: o.MaxDurationOption = None,
    fail_on: o.FailOnOption = None,
    workers: Annotated[
        int, typer.Option(help="Scan this many slices at once.", rich_help_panel="Scope")
    ] = 1,
    sample: Annotated[
        int | None,
        typer.Option(
            help="Check N random faces and N random points; estimate drift.",
            rich_help_panel="Scope",
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(help="Seed of --sample, to repeat a sample.", rich_help_panel="Scope"),
    ] = None,
) -> None:
    """Stream both stores, merge-join them by point id, and report drift (exit 1 on drift)."""
    params = o.shared(ctx)
    with boundary("audit", params) as run:
        settings, scope, failing = run.scanning(params, quiet=quiet, fail_on=fail_on)
        if seed is not None and sample is None:
            raise ConfigError("--seed goes with --sample N")
        if sample is not None:
            _not_given(ctx, "--sample estimates the whole stores by random draws", _SAMPLE_IGNORES)
            _sampled(settings, sample, seed, failing, format, output)
        if counts:
            _not_given(ctx, "--counts compares whole stores by counts, no scan", _COUNTS_IGNORES)
            _counted(settings, format, output)
        if details is not None and str(details) == "-" and render.file_or_stdout(output) is None:
            # Two streams on one stdout could not be told apart by whoever reads it.
            raise ConfigError(
                "--details - and the report would both go to stdout: "
                "add --output FILE for the report, or give --details a file"
            )
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


# The audit's flags that only a scan (or a targeted lookup) honours: --sample and
# --counts would silently ignore them, so they refuse them instead.
_SCAN_ONLY = (
    "details",
    "top",
    "lock",
    "max_duration",
    "workers",
    "face_id",
    "point_id",
    "ids_from",
    "since",
    "incremental",
    "shard",
)
_SAMPLE_IGNORES = ("counts", *_SCAN_ONLY)
# --counts has no drift kinds, so it cannot fail on some of them either.
_COUNTS_IGNORES = ("fail_on", *_SCAN_ONLY)


def _not_given(ctx: typer.Context, mode: str, ignored: tuple[str, ...]) -> None:
    """Refuse the flags a mode does not honour, naming them, rather than ignore them."""
    flags = {param.name: param.opts[0] for param in ctx.command.params}
    given = [
        flags.get(name, name)
        for name in ignored
        # Only what the user typed (or set in the environment) counts, not a default.
        if getattr(ctx.get_parameter_source(name), "name", "DEFAULT")
        in {"COMMANDLINE", "ENVIRONMENT"}
    ]
    if given:
        raise ConfigError(f"{mode}: it does not take {', '.join(given)}; drop them")


def _sampled(
    settings: Settings,
    sample: int,
    seed: int | None,
    failing: frozenset[str],
    format: o.Format,
    output: Path | None,
) -> None:
    """`--sample N`: estimate drift from N random faces and N random points."""
    sample_fail_on(failing)  # before the draws: a bad flag must not cost a sample
    estimated = sample_audit(settings, sample, seed=seed)
    render.show(estimated, render.render_sample, format, output)
    log.event(
        "audit.sample.finished",
        faces=estimated.faces.sampled,
        points=estimated.points.sampled,
        drift_seen=estimated.drift_seen,
        seed=estimated.seed,
        seconds=round(estimated.duration_seconds, 3),
    )
    finish(estimated.failing(failing))


def _counted(settings: Settings, format: o.Format, output: Path | None) -> None:
    """`--counts`: faces per person on both sides, one query each, no scan."""
    counted = compare_counts(settings)
    render.show(counted, render.render_counts, format, output)
    log.event(
        "audit.counts.finished",
        persons=counted.persons,
        differing=len(counted.differing),
        seconds=round(counted.duration_seconds, 3),
    )
    finish(counted.exit_code)


def _scan(
    run: Run,
    settings: Settings,
    scope: Scope,
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
    deadline = None if max_duration is None else time.monotonic() + positive(max_duration)
    with (
        run_lock(settings, scope.shard_label if lock else None) as stores,
        render.progress("auditing", enabled=not quiet) as progress,
    ):
        to_stdout = details is not None and render.file_or_stdout(details) is None
        report = audit(
            settings,
            top=top,
            details=None if to_stdout else details,
            sink=render.details_line if to_stdout else None,
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
