"""Repair: audit into a spilled plan, guard it, then apply it in locked, journaled batches."""

from __future__ import annotations

import dataclasses
import logging
import signal
import tempfile
import time
from collections.abc import Callable, Collection
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from reconcile import log
from reconcile.apply import Hooks, Repairer, Stop, Tallies, refuse_unlocked
from reconcile.diff import DRIFT_KINDS, REPAIRABLE, Drift, Kind, compared_keys
from reconcile.errors import ConfigError, ExitCode, GuardError
from reconcile.journal import JournalWriter, NullJournal, default_path
from reconcile.ops.audit import audit
from reconcile.ops.journals import prune_journals
from reconcile.orphans import OrphanPlanner, OrphanRemover, OrphanTallies, Sightings
from reconcile.plan import Plan, Planner, RepairOptions
from reconcile.report import KEY_PREFIX, SCHEMA_VERSION
from reconcile.scan import Progress
from reconcile.settings import Settings, grace_seconds
from reconcile.stores import Stores, using
from reconcile.targets import Targets


@dataclass(frozen=True)
class RepairReport:
    plan: Plan
    dry_run: bool
    tallies: Tallies
    journal: str | None
    duration_seconds: float
    interrupted: str | None = None  # the signal that stopped the run between batches
    timed_out: bool = False  # --max-duration stopped the audit or the batches early
    journals_deleted: int = 0  # older journals past --journal-retention, deleted after the run
    orphans: OrphanTallies = field(default_factory=OrphanTallies)  # --delete-orphans

    @property
    def complete(self) -> bool:
        return self.interrupted is None and not self.timed_out and self.plan.audit.complete

    @property
    def remaining(self) -> dict[str, int]:
        left = {k.value: self.tallies.remaining[k.value] for k in Kind if k is not Kind.IN_SYNC}
        # Orphans deleted, or found no longer orphaned by the recheck, are not left.
        left[Kind.ORPHAN_POINT] -= self.orphans.deleted + self.orphans.gone
        return left

    @property
    def remaining_keys(self) -> dict[str, int]:
        """Per compared key, the points still differing on it (every compared key)."""
        names = self.plan.keys or self.plan.audit.keys
        return {key: self.tallies.remaining_keys[key] for key in names}

    def failing(self, kinds: Collection[str] = DRIFT_KINDS) -> ExitCode:
        """The exit code when only drift of `kinds` left over counts as drift."""
        if self.interrupted is not None:
            return ExitCode.for_signal(signal.Signals[self.interrupted])
        if self.tallies.failed or self.orphans.failed:
            return ExitCode.STORE
        if not self.complete:
            return ExitCode.DRIFT
        left = any(
            self.tallies.remaining_keys[k.removeprefix(KEY_PREFIX)]
            if k.startswith(KEY_PREFIX)
            else self.remaining[k]
            for k in kinds
        )
        return ExitCode.DRIFT if left else ExitCode.OK

    @property
    def exit_code(self) -> ExitCode:
        return self.failing()

    def to_json(self) -> dict[str, Any]:
        t = self.tallies
        return {
            "schema_version": SCHEMA_VERSION,
            "dry_run": self.dry_run,
            "planned": self.plan.to_json(),
            # Either guard: a script that reads `guard` sees any refusal of the plan.
            "guard": self.plan.refusal,
            "applied": t.applied,
            "skipped_changed": t.skipped_changed,
            "skipped_locked": t.skipped_locked,
            "skipped_recent": t.skipped_recent,
            "vanished": t.vanished,
            "failed": t.failed,
            "verified": t.verified,
            "journal": self.journal,
            "complete": self.complete,
            "interrupted": self.interrupted,
            "remaining": self.remaining,
            "remaining_keys": self.remaining_keys,
            "orphans_marked": self.orphans.marked,
            "orphans_deleted": self.orphans.deleted,
            "orphans_rescued": self.orphans.rescued,
            "orphans_waiting": self.orphans.waiting,
            "orphans_failed": self.orphans.failed,
            "orphans_gone": self.orphans.gone,
            "orphans_skipped": self.orphans.skipped,
            "audit": self.plan.audit.to_json(),
            "journals_deleted": self.journals_deleted,
            "duration_seconds": round(self.duration_seconds, 3),
        }


def repair(
    settings: Settings,
    options: RepairOptions | None = None,
    *,
    stores: Stores | None = None,
    progress: Progress | None = None,
    confirm: Callable[[Plan], bool] | None = None,
    hooks: Hooks | None = None,
    targets: Targets | None = None,
    stop: Stop | None = None,
    max_duration: float | None = None,
    shard: tuple[int, int] = (1, 1),
    lock: Callable[[], AbstractContextManager[object]] | None = None,
) -> RepairReport:
    """Audit, plan, and (unless a dry run) apply the plan; see DESIGN.md for the protocol.

    `lock`, when given, is entered after the plan is confirmed and held while writing:
    a run that asks a person first holds no run lock while the question is open.
    Nothing is scanned again then: each batch rechecks its points under row locks.
    """
    options = options or RepairOptions()
    hooks = hooks or Hooks()
    started = time.monotonic()
    deadline = None if max_duration is None else started + max_duration
    with (
        using(settings, stores) as s,
        tempfile.TemporaryFile("w+", encoding="utf-8") as spill,
        tempfile.TemporaryFile("w+", encoding="utf-8") as orphan_spill,
        tempfile.TemporaryFile("w+", encoding="utf-8") as orphans_checked,
    ):
        # The spills hold which person is in which photo; TemporaryFile is mode
        # 0600 and has no name, so nothing is left behind even on kill -9.
        keys = compared_keys(settings, s.postgres.inspect().rules)
        refuse_unlocked(s)
        planner = Planner(spill, keys, options.top)
        sink: Callable[[Drift], None] = planner
        scanned, orphans = s, None
        if settings.delete_orphans:
            if targets is not None:
                raise ConfigError(ORPHANS_NEED_A_SCAN)
            if grace_seconds(settings.orphan_grace) == 0 and not options.dry_run:
                log.event(
                    "repair.unsafe_grace",
                    logging.WARNING,
                    message="--orphan-grace 0s deletes a point whose row is not yet "
                    "committed: for tests only, use 1h or more in production",
                )
            s.postgres.orphan_table()  # a view without --orphan-table: refused before the scan
            sightings = Sightings(s.qdrant)
            scanned = Stores(settings, s.postgres, sightings)
            orphans = OrphanPlanner(orphan_spill, orphans_checked, sightings, hooks.second_sighting)

            def sink(drift: Drift) -> None:
                planner(drift)
                orphans(drift)

        report = audit(
            settings,
            top=options.top,
            stores=scanned,
            progress=progress,
            sink=sink,
            targets=targets,
            deadline=deadline,
            shard=shard,
        )
        plan = planner.plan(report, options)
        if orphans is not None:
            plan = dataclasses.replace(
                plan, orphans=orphans.plan(report, settings, s.postgres, options.batch_size)
            )
        tallies = Tallies()
        for kind, n in report.counts.items():
            if kind != Kind.IN_SYNC and Kind(kind) not in REPAIRABLE:
                tallies.remaining[kind] += n
        waiting = 0 if plan.orphans is None else plan.orphans.waiting
        if not options.dry_run and plan.refusal is not None:
            raise GuardError(f"repair refused: {plan.refusal}")
        orphan_writes = 0 if plan.orphans is None else plan.orphans.writes
        if options.dry_run or plan.changes + orphan_writes == 0:
            for kind in REPAIRABLE:
                tallies.remaining[kind] += report.counts[kind]
            for key, subs in report.keys.items():
                tallies.remaining_keys[key] += sum(subs.values())
            done = RepairReport(
                plan,
                options.dry_run,
                tallies,
                None,
                time.monotonic() - started,
                orphans=OrphanTallies(waiting=waiting),
            )
            return _retire_journals(done, settings, options)
        if confirm is not None and not confirm(plan):
            raise ConfigError("repair not confirmed: nothing was written")
        with lock() if lock is not None else nullcontext():
            # A journal when something is written that undo can restore: payloads, deleted
            # points (marks and rescues are the tool's own key, which undo never restores).
            journaled = plan.changes > 0 or (plan.orphans is not None and plan.orphans.delete > 0)
            path = (options.journal or default_path()) if options.write_journal else None
            journal: JournalWriter | NullJournal = NullJournal()
            if path is not None and journaled:
                journal = JournalWriter(path, _header(report.table, settings))
            repairer = Repairer(settings, s, options, journal, hooks)
            repairer.tallies.remaining.update(tallies.remaining)
            remover = OrphanRemover(settings, s, options, journal, hooks)
            remover.tallies.waiting = waiting
            try:
                if stop is not None:
                    stop.applying = True
                    stop.written = lambda: (
                        f"{repairer.tallies.applied:,} points were written"
                        + (
                            f", {remover.tallies.deleted:,} orphan points deleted"
                            if orphans
                            else ""
                        )
                        + f" (journal: {journal.path})"
                    )
                finished = True
                if plan.changes:
                    if progress is not None:
                        progress.phase("writing", "points", plan.changes)
                    finished = repairer.run(spill, progress, stop, deadline)
                if finished and orphans is not None and orphan_writes:
                    if progress is not None:
                        progress.phase("orphans", "points", orphan_writes)
                    finished = remover.run(
                        orphans.actions(), plan.requests + 1, progress, stop, deadline
                    )
            finally:
                journal.close()
            journal_name = None if path is None or not journaled else str(path)
            done = RepairReport(
                plan,
                False,
                repairer.tallies,
                journal_name,
                time.monotonic() - started,
                interrupted=None if finished or stop is None or not stop.is_set() else stop.signal,
                timed_out=not finished and (stop is None or not stop.is_set()),
                orphans=remover.tallies,
            )
            return _retire_journals(done, settings, options)


ORPHANS_NEED_A_SCAN = (
    "--delete-orphans needs a scan of the whole id range (or a --shard of it): an orphan is "
    "a point no row names, which a targeted, --since or --incremental run cannot see; drop "
    "those options for this run (or, when a config file sets delete_orphans = true, add "
    "--no-delete-orphans)"
)


def _header(table: str, settings: Settings) -> dict[str, Any]:
    """The journal's header: what undo needs to find the table, collection and keys."""
    return {
        "tool": "reconcile",
        "tool_version": version("reconcile"),
        "table": table,
        "collection": settings.collection,
        "keys": {
            "person": settings.person_key,
            "flag": settings.flag_key,
            "map": {m.key: m.source for m in settings.map},
        },
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _retire_journals(
    report: RepairReport, settings: Settings, options: RepairOptions
) -> RepairReport:
    """After a run that succeeded (nothing failed, not stopped by a signal; drift may
    remain), delete the journals of this table and collection past the retention.

    A dry run writes nothing, so it deletes nothing either.
    """
    retention = options.journal_retention
    if report.dry_run or retention is None or not options.write_journal:
        return report
    if report.interrupted is not None or report.tallies.failed:
        return report
    deleted = prune_journals(
        (options.journal or default_path()).parent,
        table=report.plan.audit.table,
        collection=settings.collection,
        older_than=datetime.now(UTC) - retention,
        keep=None if report.journal is None else Path(report.journal),
    )
    return dataclasses.replace(report, journals_deleted=deleted)


__all__ = ["ORPHANS_NEED_A_SCAN", "RepairReport", "repair"]
