"""`reconcile repair`: audit, plan, ask, then write payloads in locked, journaled batches."""

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from reconcile import log
from reconcile.apply import Stop
from reconcile.cli import options as o
from reconcile.cli import render
from reconcile.cli.boundary import boundary, finish, held, run_lock
from reconcile.cli.scope import positive
from reconcile.errors import ConfigError, Interrupted
from reconcile.ops.repair import ORPHANS_NEED_A_SCAN, repair
from reconcile.plan import Plan, RepairOptions, parse_retention


def repair_command(
    ctx: typer.Context,
    dry_run: o.DryRunOption = False,
    yes: o.YesOption = False,
    batch_size: o.BatchOption = 1000,
    max_changes: Annotated[
        str,
        typer.Option(
            help="Refuse plans changing more points: a number, or a % of the points.",
            rich_help_panel="Safety",
        ),
    ] = "10%",
    journal: Annotated[
        Path | None,
        typer.Option(
            help="Journal file (default: ~/.local/state/reconcile/repair-TIME.jsonl).",
            rich_help_panel="Safety",
        ),
    ] = None,
    journal_retention: Annotated[
        str,
        typer.Option(
            help="After a successful run, delete this table's and collection's journals "
            "older than this (30d, 12h) in the journal's directory; off keeps them.",
            rich_help_panel="Safety",
            metavar="DURATION",
        ),
    ] = "90d",
    lock_timeout: o.LockTimeoutOption = 5.0,
    batch_deadline: o.DeadlineOption = 60.0,
    format: o.FormatOption = o.Format.table,
    output: o.OutputOption = None,
    top: Annotated[
        int, typer.Option(help="How many persons to list in the plan.", rich_help_panel="Output")
    ] = 10,
    quiet: o.QuietOption = False,
    max_duration: o.MaxDurationOption = None,
    rate: Annotated[
        float | None,
        typer.Option(help="Write at most this many points per second.", rich_help_panel="Safety"),
    ] = None,
    fail_on: o.FailOnOption = None,
) -> None:
    """Audit, then set payloads to what PostgreSQL says, in locked, journaled batches."""
    params = o.shared(ctx)
    with boundary("repair", params) as run:
        settings, scope, failing = run.scanning(params, quiet=quiet, fail_on=fail_on)
        options = RepairOptions(
            dry_run=dry_run,
            batch_size=batch_size,
            max_changes=max_changes,
            journal=journal,
            lock_timeout=lock_timeout,
            batch_deadline=batch_deadline,
            top=top,
            rate=rate,
            journal_retention=parse_retention(journal_retention),
        )
        ask = decide(dry_run, yes, "repair")
        if settings.delete_orphans and scope.incremental is not None:
            # Even its first run, a full scan, is refused: the cron line is the same.
            raise ConfigError(ORPHANS_NEED_A_SCAN)
        targets = scope.targets(settings)
        stop = Stop()
        # Targeted repairs rely on row locks alone; a dry run writes nothing.
        lock = None if dry_run or targets is not None else scope.shard_label
        # An open question holds no run lock, however long a person looks at the plan:
        # the lock is taken after `y` (exit 5 at once if another run took it meanwhile).
        # With --yes it is taken before the audit, so two cron runs never scan twice.
        late = lock if ask else None
        with (
            graceful(stop),
            run_lock(settings, None if late else lock) as stores,
            render.progress("repairing", enabled=not quiet) as display,
        ):

            def confirm(plan: Plan) -> bool:
                display.stop()  # no spinner may overwrite the question
                render.render_plan(plan, render.stderr())
                return typer.confirm("Apply this plan?", err=True)

            report = repair(
                settings,
                options,
                stores=stores,
                progress=display,
                confirm=confirm if ask else None,
                targets=targets,
                stop=stop,
                max_duration=None if max_duration is None else positive(max_duration),
                shard=scope.shard,
                lock=None if late is None else lambda: held(settings, late),
            )
        render.show(report, render.render_repair, format, output)
        t = report.tallies
        run.audit, run.repaired, run.failed = report.plan.audit, t.applied, t.failed
        if report.plan.orphans is not None:
            run.orphans = report.orphans.counts()
            run.failed += report.orphans.failed
        if t.failed == 0 and report.orphans.failed == 0:
            scope.succeeded(settings, report.plan.audit.started_at)
        log.event(
            "repair.finished",
            dry_run=report.dry_run,
            applied=t.applied,
            failed=t.failed,
            skipped=t.skipped_changed + t.skipped_locked + t.skipped_recent,
            vanished=t.vanished,
            remaining=sum(report.remaining.values()),
            orphans_marked=report.orphans.marked,
            orphans_deleted=report.orphans.deleted,
            orphans_rescued=report.orphans.rescued,
            orphans_waiting=report.orphans.waiting,
            orphans_failed=report.orphans.failed,
            complete=report.complete,
            seconds=round(report.duration_seconds, 3),
        )
        finish(report.failing(failing))


@contextmanager
def graceful(stop: Stop) -> Iterator[None]:
    """SIGINT/SIGTERM while writing: finish the batch in flight, then stop and report.

    Before the writing starts, or on a second signal, stop at once: a batch cut
    short rolls its transaction back, and the journal holds only whole lines.
    """

    def handler(signum: int, frame: object) -> None:
        if stop.applying and not stop.is_set():
            stop.request(signum)
            render.tell(
                "reconcile: finishing the batch in flight, then stopping "
                "(signal again to stop at once)"
            )
            return
        raise Interrupted(signum, None if stop.written is None else stop.written())

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def decide(dry_run: bool, yes: bool, what: str) -> bool:
    """Whether to ask; refuses outright when nobody is there to answer (cron)."""
    if dry_run or yes:
        return False
    if not sys.stdin.isatty():
        raise ConfigError(
            f"{what} writes to Qdrant and no terminal can confirm it: "
            "add --yes to apply, or --dry-run to only see the plan"
        )
    return True
