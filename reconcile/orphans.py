"""Orphan points (`repair --delete-orphans`): seen twice a grace apart, rechecked right
before the delete, journaled whole, then deleted.

A run that finds an orphan (a point no row names) for the first time only marks it:
the payload key `reconcile_orphan_since` (`ORPHAN_KEY`) gets the database's clock.
A later run that finds it orphaned again, at least a grace after the mark, deletes
it, after rechecking in its own read that no committed row of the base table names
it and after journaling the whole point (every vector, the payload without the
mark) so that `undo` can re-create it. A point seen with a mark that a row names
again is rescued: the mark is deleted. A mark older than `RESTART` graces without a
second sighting (a point whose row came and went, a run long ago) restarts the count.

Why on the point: a Kubernetes CronJob has no disk between runs, shards run on
different hosts, and hosts' clocks differ; a payload key on the point needs none of
them, goes away with the point, and is read by the same scroll that finds it.

Why the mark holds the time it is written, not the scan's start: the grace must
separate the moment the point was last seen without a row from the recheck before
the delete. The mark's read starts after the scan saw the point, so the recorded
time is never earlier than the sighting; the recheck's `now()` is never later than
the snapshot it reads rows in. So the rule protects a point exactly when the grace
is longer than the application's gap between writing a point and committing its row.

A little over 420 lines on purpose: the rule, the planner and the batches share the
mark's format and the recheck's reasoning, which is clearer in one place.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import IO, Any

from reconcile.apply import MAX_FAILED_BATCHES, Hooks, Stop
from reconcile.diff import Drift, Kind, Tallied, batched
from reconcile.errors import StoreError
from reconcile.journal import JournalWriter, NullJournal
from reconcile.plan import OrphanPlan, RepairOptions, orphan_guard
from reconcile.report import AuditReport
from reconcile.scan import Progress
from reconcile.settings import ORPHAN_KEY, Settings, deletes_limit, grace_seconds
from reconcile.stores import Stores
from reconcile.stores.base import (
    DeleteKeys,
    KeyRange,
    Page,
    PayloadOp,
    PointId,
    PointStore,
    SetKeys,
    WholePoint,
)
from reconcile.stores.base import point_id as canonical
from reconcile.stores.postgres import Postgres

# A mark older than RESTART graces, and at least RESTART_AFTER, restarts the count: the
# floor keeps a daily run with an hour's grace deleting (ten graces alone would restart
# every mark a day-apart run finds).
RESTART = 10
RESTART_AFTER = timedelta(days=30)
EXAMPLES = 5  # point ids per action in the plan, for a person to look at


class Action(StrEnum):
    MARK = "mark"  # first sighting: record it on the point
    WAIT = "wait"  # marked, the grace not yet passed
    DELETE = "delete"  # marked at least a grace ago, orphaned still
    RESCUE = "rescue"  # marked, but a row names the point now: clear the mark


def marked_at(raw: Any) -> datetime | None:
    """The time a mark holds; None for no mark, or one that is not an ISO instant."""
    if not isinstance(raw, str):
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def stamp(moment: datetime) -> str:
    """A mark's value: the instant in UTC, ISO 8601 (what `marked_at` reads back)."""
    return moment.astimezone(UTC).isoformat()


def sighting(raw: Any, now: datetime, grace: timedelta, second: bool = True) -> Action:
    """What to do with an orphan holding the mark `raw` (None: none), seen at `now`.

    A mark that cannot be read, from the future by more than a grace (a clock set
    back), or older than RESTART graces and RESTART_AFTER starts the count again. `second=False`
    switches the second-sighting rule off, only so that a test can show what it
    protects.
    """
    if not second:
        return Action.DELETE
    since = marked_at(raw)
    if since is None:
        return Action.MARK
    age = now - since
    if age < -grace or age > max(RESTART * grace, RESTART_AFTER):
        return Action.MARK
    return Action.DELETE if age >= grace else Action.WAIT


class Sightings:
    """The point store as the scan reads it, noting which points carry a mark.

    Points are passed on untouched; the marks of those the scan then finds
    orphaned are taken out by `OrphanPlanner`, so what is left at the end are
    points a row names (rescues) and memory holds only those; and points read
    ahead of a time-boxed scan that stopped before judging them, which is why an
    incomplete scan rescues nothing (`OrphanPlanner.plan`).
    """

    def __init__(self, inner: PointStore) -> None:
        self._inner = inner
        self.marks: dict[PointId, Any] = {}
        inner.also_read([ORPHAN_KEY])

    def pages(self, key_range: KeyRange | None = None) -> Iterator[Page]:
        marks = self.marks
        for page in self._inner.pages(key_range):
            for raw, payload in zip(page.ids, page.payloads, strict=True):
                if ORPHAN_KEY in payload:
                    marks[canonical(raw)] = payload[ORPHAN_KEY]
            yield page

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class OrphanPlanner:
    """The audit's orphans, spilled with their marks; planned once the scan is done."""

    def __init__(
        self, spill: IO[str], checked: IO[str], sightings: Sightings, second: bool = True
    ) -> None:
        self.spill = spill  # every orphan the scan found, with its mark
        self.checked = checked  # those no committed row of the base table names
        self.sightings = sightings
        self.second = second
        self.now = datetime.now(UTC)  # replaced by the database's clock in plan()
        self.grace = timedelta(0)
        self.rescues: list[PointId] = []

    def __call__(self, drift: Drift) -> None:
        if drift.kind is Kind.ORPHAN_POINT:
            raw = self.sightings.marks.pop(drift.point_id, None)
            self.spill.write(json.dumps([drift.point_id, raw], separators=(",", ":")) + "\n")

    def plan(
        self, report: AuditReport, settings: Settings, postgres: Postgres, batch: int
    ) -> OrphanPlan:
        """Check the orphans against the base table, then count the actions as of the
        database's clock after the scan.

        A point a row of the base table names is no orphan, whatever the scan saw: a
        view as --table hides faces, and a row may have been committed since. Such a
        point is rescued if marked, and neither marked nor counted against the limit.
        """
        self.grace = timedelta(seconds=grace_seconds(settings.orphan_grace))
        # Points read ahead of a scan cut short were never judged: rescue nothing then.
        self.rescues = list(self.sightings.marks) if report.complete else []
        self.spill.seek(0)
        with postgres.reading("checking orphan points against the base table") as conn:
            self.now = postgres.now(conn)
            for lines in batched(self.spill, batch):
                found = [json.loads(line) for line in lines]
                named = postgres.named_points(conn, [point_id for point_id, _ in found])
                for (point_id, raw), line in zip(found, lines, strict=True):
                    if point_id not in named:
                        self.checked.write(line)
                    elif raw is not None:
                        self.rescues.append(point_id)
        counts = dict.fromkeys(Action, 0)
        examples: dict[str, list[PointId]] = {Action.MARK: [], Action.DELETE: []}
        for action, point_id, _raw in self._sighted():
            counts[action] += 1
            shown = examples.get(action)
            if shown is not None and len(shown) < EXAMPLES:
                shown.append(point_id)
        mark, delete = counts[Action.MARK], counts[Action.DELETE]
        limit = deletes_limit(settings.max_deletes, report.points)
        return OrphanPlan(
            mark=mark,
            delete=delete,
            rescue=len(self.rescues),
            waiting=counts[Action.WAIT],
            grace_seconds=int(self.grace.total_seconds()),
            max_deletes=limit,
            examples={str(k): v for k, v in examples.items()},
            guard=orphan_guard(report, mark, delete, settings.max_deletes, limit),
        )

    def _sighted(self) -> Iterator[tuple[Action, PointId, Any]]:
        self.checked.seek(0)
        for line in self.checked:
            point_id, raw = json.loads(line)
            yield sighting(raw, self.now, self.grace, self.second), point_id, raw

    def actions(self) -> Iterator[tuple[Action, PointId, Any]]:
        """Every write, in scan order (rescues last): the same judgement as `plan`."""
        for action, point_id, raw in self._sighted():
            if action is not Action.WAIT:
                yield action, point_id, raw
        for point_id in self.rescues:
            yield Action.RESCUE, point_id, None


@dataclass
class OrphanTallies(Tallied):
    marked: int = 0
    deleted: int = 0
    rescued: int = 0  # marks cleared: a row names the point again
    waiting: int = 0  # marked, grace not yet passed (the plan's count)
    gone: int = 0  # no longer an orphan when rechecked: a row appeared, or the point went
    skipped: int = 0  # its mark changed since the scan (another run): left for the next
    failed: int = 0
    failed_ids: list[PointId] = field(default_factory=list)  # the first few, for the message

    def counts(self) -> dict[str, int]:
        """The counts every report shows (metrics.ORPHAN_ACTIONS)."""
        return {
            "marked": self.marked,
            "deleted": self.deleted,
            "rescued": self.rescued,
            "waiting": self.waiting,
            "failed": self.failed,
        }


class OrphanRemover:
    """Marks, rescues and deletes, batch by batch; deletes rechecked and journaled."""

    def __init__(
        self,
        settings: Settings,
        stores: Stores,
        options: RepairOptions,
        journal: JournalWriter | NullJournal,
        hooks: Hooks,
    ) -> None:
        self.stores = stores
        self.options = options
        self.journal = journal
        self.hooks = hooks
        self.grace = timedelta(seconds=grace_seconds(settings.orphan_grace))
        self.second = hooks.second_sighting
        self.tallies = OrphanTallies()
        self.last_error = ""

    def run(
        self,
        actions: Iterator[tuple[Action, PointId, Any]],
        first_batch: int,
        progress: Progress | None,
        stop: Stop | None = None,
        deadline: float | None = None,
    ) -> bool:
        """Apply every action; False when `stop` or `deadline` left the rest undone."""
        done = failures_in_a_row = 0
        for number, batch in enumerate(batched(actions, self.options.batch_size), first_batch):
            late = deadline is not None and self.hooks.clock() > deadline
            if late or (stop is not None and stop.is_set()):
                return False
            if self._batch(number, batch):
                failures_in_a_row = 0
            else:
                failures_in_a_row += 1
                if failures_in_a_row == MAX_FAILED_BATCHES:
                    raise StoreError(
                        f"{MAX_FAILED_BATCHES} batches of orphan points in a row failed "
                        f"({self.last_error}); stopped; the journal {self.journal.path} "
                        "records what was deleted"
                    )
            done += len(batch)
            if progress is not None:
                progress(done)
        return True

    def _batch(self, number: int, batch: list[tuple[Action, PointId, Any]]) -> bool:
        """Marks, deletes, then rescues; False when a part failed (its points counted)."""
        marks = [point_id for action, point_id, _ in batch if action is Action.MARK]
        rescues = [point_id for action, point_id, _ in batch if action is Action.RESCUE]
        deletes = {point_id: raw for action, point_id, raw in batch if action is Action.DELETE}
        ok = True
        if marks:
            ok &= self._part(marks, lambda: self._mark(marks))
        if deletes:
            ok &= self._part(list(deletes), lambda: rescues.extend(self._delete(number, deletes)))
        if rescues:
            ok &= self._part(rescues, lambda: self._rescue(rescues))
        return ok

    def _part(self, point_ids: list[PointId], do: Callable[[], None]) -> bool:
        """Run one part of a batch; a store error counts its points as failed."""
        try:
            do()
        except StoreError as exc:
            self.last_error = str(exc)
            self.tallies.failed += len(point_ids)
            return False
        return True

    def _mark(self, point_ids: list[PointId]) -> None:
        now = self.stores.postgres.now()  # read after the scan saw them: see the module
        self.tallies.marked += len(self._to_existing(SetKeys, {ORPHAN_KEY: stamp(now)}, point_ids))

    def _rescue(self, point_ids: list[PointId]) -> None:
        self.tallies.rescued += len(self._to_existing(DeleteKeys, [ORPHAN_KEY], point_ids))

    def _to_existing(self, op: Any, arg: Any, point_ids: list[PointId]) -> list[PointId]:
        """Write `op(arg, ids)` to the points; those gone meanwhile are left out.

        Qdrant refuses a payload write naming a point that does not exist, so on a
        failure the points are read again and the write retried once without the
        missing ones. Returns the points written.
        """
        qdrant = self.stores.qdrant
        ops: list[PayloadOp] = [op(arg, point_ids)]
        try:
            qdrant.apply(ops)
            return point_ids
        except StoreError:
            present = qdrant.retrieve(point_ids)
            left = [p for p in point_ids if p in present]
            if left:
                qdrant.apply([op(arg, left)])
            return left

    def _delete(self, number: int, planned: dict[PointId, Any]) -> list[PointId]:
        """Recheck, journal, delete and verify one batch; returns the points to rescue."""
        s, ids = self.stores, list(planned)
        if self.hooks.before_recheck is not None:
            self.hooks.before_recheck(ids)
        with s.postgres.reading("rechecking orphan points") as conn:
            # now() is the transaction's start; the select after it reads the rows
            # committed when it starts, later: the age is never overstated.
            now = s.postgres.now(conn)
            named = s.postgres.named_points(conn, ids)
        current = s.qdrant.whole(ids)
        rescue: list[PointId] = []
        doomed: list[WholePoint] = []
        gone = skipped = 0
        for point_id in ids:
            point = current.get(point_id)
            raw = None if point is None else point.payload.get(ORPHAN_KEY)
            if point is None or point_id in named:
                gone += 1
                if point is not None and raw is not None:
                    rescue.append(point_id)
            elif raw != planned[point_id] or sighting(raw, now, self.grace, self.second) is not (
                Action.DELETE
            ):
                skipped += 1
            else:
                doomed.append(point)
        if doomed:
            self._journaled_delete(number, doomed)
        self.tallies.gone += gone
        self.tallies.skipped += skipped
        return rescue

    def _journaled_delete(self, number: int, doomed: list[WholePoint]) -> None:
        """Journal the whole points, delete those still holding the mark planned, verify."""
        qdrant = self.stores.qdrant
        self.journal.changes(
            number,
            [
                {"op": "delete", "point_id": p.point_id, "point": p.without(ORPHAN_KEY).to_json()}
                for p in doomed
            ],
        )
        self.hooks.checkpoint(number, "before-delete")
        error: str | None = None
        # One delete per mark value (a batch's marks were written together, so few):
        # the engine deletes a point only while it holds the mark rechecked, so one the
        # application wrote again since (which drops the mark) is kept.
        by_mark: dict[Any, list[PointId]] = {}
        for p in doomed:
            by_mark.setdefault(p.payload.get(ORPHAN_KEY), []).append(p.point_id)
        try:
            for mark, point_ids in by_mark.items():
                qdrant.delete(point_ids, None if mark is None else (ORPHAN_KEY, mark))
        except StoreError as exc:
            error = str(exc)  # the outcome is unknown: the re-read below tells
        doomed_ids = [p.point_id for p in doomed]
        try:
            left = qdrant.retrieve(doomed_ids)
        except StoreError as exc:
            with contextlib.suppress(OSError):
                self.journal.outcome(number, deleted=None, failed=len(doomed), error=str(exc))
            raise
        self.hooks.checkpoint(number, "after-delete")
        kept = [p for p in doomed_ids if p in left]
        deleted = len(doomed_ids) - len(kept)
        self.tallies.deleted += deleted
        if error is None:
            self.tallies.skipped += len(kept)  # written again since the recheck: kept
        else:
            self.tallies.failed += len(kept)
            self.tallies.failed_ids += kept[: EXAMPLES - len(self.tallies.failed_ids)]
            self.last_error = error
        failed = len(kept) if error is not None else 0
        self.journal.outcome(number, deleted=deleted, failed=failed, error=error)


__all__ = [
    "EXAMPLES",
    "RESTART",
    "RESTART_AFTER",
    "Action",
    "OrphanPlanner",
    "OrphanRemover",
    "OrphanTallies",
    "Sightings",
    "marked_at",
    "sighting",
    "stamp",
]
