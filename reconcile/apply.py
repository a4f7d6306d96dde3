"""Applying a plan: lock, recheck, journal, write and verify, batch by batch.

The same protocol serves repair and undo (`lock_points`, `same`), and the sync
helper (with `Hooks(lock=LockMode.WAIT)`); see DESIGN.md.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import IO, Any

from reconcile.diff import Keys, Kind, Tallied, classify, compared_keys
from reconcile.errors import ConfigError, StoreError
from reconcile.journal import JournalWriter, NullJournal
from reconcile.plan import RepairOptions, spilled_batches
from reconcile.scan import Progress
from reconcile.settings import Settings
from reconcile.stores import Stores
from reconcile.stores.base import DeleteKeys, PayloadOp, PointId, Row, SetKeys
from reconcile.stores.postgres import Connection, LockMode

MAX_FAILED_BATCHES = 3


@dataclass
class Tallies(Tallied):
    """What happened to each planned point; `remaining` is audit-style, by kind, and
    `remaining_keys` counts, per compared key, the points still differing on it."""

    applied: int = 0
    skipped_changed: int = 0
    skipped_locked: int = 0
    skipped_recent: int = 0
    vanished: int = 0
    failed: int = 0
    verified: int = 0
    remaining: Counter[str] = field(default_factory=Counter)
    remaining_keys: Counter[str] = field(default_factory=Counter)

    def leave(self, records: Iterable[dict[str, Any]]) -> None:
        """Count planned points (spill records) as left undone, by kind and by key."""
        for record in records:
            self.remaining[record["kind"]] += 1
            # The record's `keys` maps each differing key to how it differs: count keys.
            self.remaining_keys.update(record.get("keys", {}).keys())


@dataclass
class Hooks:
    """Test seams in the apply loop; the product never sets them."""

    before_write: Callable[[list[PointId]], None] | None = None
    # NONE only to prove, in a test, that the lock is what keeps us safe; WAIT for
    # the sync helper, which waits for a held row instead of skipping it.
    lock: LockMode = LockMode.SKIP_LOCKED
    clock: Callable[[], float] = time.monotonic
    # --delete-orphans: called with a batch's orphan points right before their recheck;
    # and the second-sighting rule, switched off only to show what it protects.
    before_recheck: Callable[[list[PointId]], None] | None = None
    second_sighting: bool = True

    def checkpoint(self, batch: int, phase: str) -> None:
        """Reached at "before-write" (journaled, not written) and "after-write" (written,
        not committed) of each batch, and at "before-delete" and "after-delete" of each
        batch of orphan points. Does nothing: the crash tests replace it, in the
        CLI process they start, to kill the run at exactly that point
        (`tests/crashing.py`)."""


class Stop(threading.Event):
    """Set by a signal handler: the repair finishes its batch in flight, then stops."""

    signal: str = "SIGTERM"
    applying: bool = False  # before the apply phase nothing is written: stop at once
    # While applying: what has been written so far and where the journal is, for
    # the message of a second signal, which stops at once.
    written: Callable[[], str] | None = None

    def request(self, signum: int) -> None:
        self.signal = signal.Signals(signum).name
        self.set()


def target(row: Row, payload: dict[str, Any], keys: Keys) -> tuple[dict[str, Any], tuple[str, ...]]:
    """What to write so that the payload agrees with the row just read: the values to
    set and the keys to delete, exactly the compared keys that differ, nothing else."""
    expected = keys.expected(row)
    differing = keys.differing(row, payload)
    values = {key: expected[key] for key in differing if expected[key] is not None}
    return values, tuple(key for key in differing if expected[key] is None)


def group_writes(writes: list[_Write]) -> list[PayloadOp]:
    """One SetKeys per distinct set of values to write, one DeleteKeys per distinct set of
    keys to clear: a batch of one person's faces is one operation, whatever its size."""
    sets: dict[str, tuple[dict[str, Any], list[PointId]]] = {}
    clears: dict[tuple[str, ...], list[PointId]] = {}
    for w in writes:
        if w.delete:
            clears.setdefault(w.delete, []).append(w.point_id)
        if w.values:
            key = json.dumps(w.values, sort_keys=True)
            sets.setdefault(key, (w.values, []))[1].append(w.point_id)
    ops: list[PayloadOp] = [SetKeys(values, points) for values, points in sets.values()]
    ops += [DeleteKeys(list(keys), points) for keys, points in clears.items()]
    return ops


@dataclass(frozen=True)
class _Write:
    """One point to write: the row just read, the payload just read, and what to change."""

    row: Row
    point_id: PointId
    before: dict[str, Any]  # the configured keys present before (absent keys left out)
    after: dict[str, Any]  # the same keys as they will be
    values: dict[str, Any]  # to set
    delete: tuple[str, ...]  # keys to delete


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Payload equality that tells 1 from true and 1.0 from 1, as JSON does."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def refuse_unlocked(stores: Stores, doing: str = "repair") -> None:
    """Refuse to write through a view whose row locks would not cover every compared
    value: the protocol's recheck would then read a value no lock holds still."""
    problems = stores.postgres.lock_problems()
    if problems:
        raise ConfigError(f"{doing} refused: {'; '.join(problems)}")


class Held(Enum):
    """Why a point's row could not be locked for the write."""

    VANISHED = "vanished"  # no row names the point any more
    DUPLICATE = "duplicate"  # several rows name it now
    LOCKED = "locked"  # another transaction holds its row


LockStatus = Row | Held  # the one row now naming the point, locked by us, or why not


def lock_points(
    stores: Stores, conn: Connection, point_ids: list[PointId], hooks: Hooks
) -> Iterator[tuple[PointId, LockStatus]]:
    """Lock the rows naming these points FOR SHARE SKIP LOCKED and say what became of each.

    An unlocked count of the rows then tells a row held by another transaction
    (still there, not locked by us) from a deleted one, and finds points that
    several rows name now.
    """
    locked: dict[PointId, list[Row]] = {}
    for row in stores.postgres.select_rows(conn, point_ids, hooks.lock):
        assert row.point_id is not None
        locked.setdefault(row.point_id, []).append(row)
    named = stores.postgres.rows_per_point(conn, point_ids)
    for point_id in point_ids:
        rows = locked.get(point_id, [])
        n = named.get(point_id, 0)
        if n == 0:
            yield point_id, Held.VANISHED
        elif n > 1:
            yield point_id, Held.DUPLICATE
        elif not rows:
            yield point_id, Held.LOCKED
        else:
            yield point_id, rows[0]


class Repairer:
    """The lock-recheck-write loop over a plan's spill."""

    def __init__(
        self,
        settings: Settings,
        stores: Stores,
        options: RepairOptions,
        journal: JournalWriter | NullJournal,
        hooks: Hooks,
    ) -> None:
        self.keys = compared_keys(settings, stores.postgres.inspect().rules)
        self.timeout = settings.timeout
        self.stores = stores
        self.options = options
        self.journal = journal
        self.hooks = hooks
        self.tallies = Tallies()
        self.last_error = ""

    def run(
        self,
        spill: IO[str],
        progress: Progress | None,
        stop: threading.Event | None = None,
        deadline: float | None = None,
    ) -> bool:
        """Apply every batch; False when `stop` or `deadline` left the rest undone.

        `--rate` sleeps between batches (never inside one, where locks are held).
        """
        done = failures_in_a_row = 0
        started = self.hooks.clock()
        batches = spilled_batches(spill, self.options.batch_size)
        for number, batch in enumerate(batches, start=1):
            if self.options.rate:
                ahead = self.tallies.applied / self.options.rate - (self.hooks.clock() - started)
                if ahead > 0:
                    time.sleep(ahead)
            late = deadline is not None and self.hooks.clock() > deadline
            if late or (stop is not None and stop.is_set()):
                # Between batches nothing is locked or half-written: stop here.
                self.tallies.leave(batch)
                for rest in batches:
                    self.tallies.leave(rest)
                return False
            if self._batch(number, batch):
                failures_in_a_row = 0
            else:
                failures_in_a_row += 1
            done += len(batch)
            if progress is not None:
                progress(done)
            if failures_in_a_row == MAX_FAILED_BATCHES:
                # A store that failed this many batches in a row is down, not flaky:
                # stop, and report the rest of the plan as not done.
                for rest in batches:
                    self.tallies.leave(rest)
                raise StoreError(
                    f"{MAX_FAILED_BATCHES} batches in a row failed ({self.last_error}); "
                    f"stopped after {done:,} of the planned points; the journal "
                    f"{self.journal.path} records what was written"
                )
        return True

    def _batch(self, number: int, batch: list[dict[str, Any]]) -> bool:
        """One batch in one short transaction; False when it failed (already counted)."""
        planned = {record["point_id"]: record for record in batch}
        t = Tallies()
        deadline = self.hooks.clock() + self.options.batch_deadline
        # The server ends the session, and so frees our row locks, if we hold them
        # idle longer than the deadline plus the last write and its re-read.
        hold_limit = self.options.batch_deadline + 2 * self.timeout + 5
        try:
            with self.stores.postgres.transaction(self.options.lock_timeout, hold_limit) as conn:
                writes = self._recheck(conn, planned, t)
                if self.hooks.before_write is not None:
                    self.hooks.before_write([w.point_id for w in writes])
                if writes:
                    self._write(conn, number, writes, deadline, t)
        except StoreError as exc:
            # The batch's outcome is unknown: none of it counts as done. The
            # journal's change lines (if written) stay, with an outcome saying so.
            self.last_error = str(exc)
            self.tallies.failed += len(planned)
            self.tallies.leave(planned.values())
            with contextlib.suppress(OSError):
                self.journal.outcome(number, applied=0, failed=len(planned), error=str(exc))
            return False
        self.tallies.merge(t)
        return t.failed == 0

    def _recheck(
        self, conn: Connection, planned: dict[PointId, dict[str, Any]], t: Tallies
    ) -> list[_Write]:
        """Lock the rows, re-read rows and payloads, and keep what is still drifted."""
        candidates: list[Row] = []
        gone: list[PointId] = []
        for point_id, status in lock_points(self.stores, conn, list(planned), self.hooks):
            if isinstance(status, Row) and status.recent:
                t.skipped_recent += 1  # changed since the audit, inside the grace window
            elif isinstance(status, Row):
                candidates.append(status)
            elif status is Held.VANISHED:
                gone.append(point_id)
            elif status is Held.DUPLICATE:
                t.skipped_changed += 1  # several rows name it now: left alone
                t.remaining[Kind.DUPLICATE_POINT] += 1
            else:
                t.skipped_locked += 1  # an application transaction holds it
                t.leave([planned[point_id]])
        ids = [row.point_id for row in candidates if row.point_id is not None]
        payloads = self.stores.qdrant.retrieve(ids + gone)
        for point_id in gone:
            t.vanished += 1  # the face row is gone; an orphan if its point is still there
            if point_id in payloads:
                t.remaining[Kind.ORPHAN_POINT] += 1
        writes: list[_Write] = []
        for row in candidates:
            assert row.point_id is not None
            payload = payloads.get(row.point_id)
            if payload is None:
                t.vanished += 1
                t.remaining[Kind.MISSING_POINT] += 1
                continue
            if classify(row, payload, self.keys) is Kind.IN_SYNC:
                t.skipped_changed += 1
                continue
            before = self.keys.actual(payload)
            values, delete = target(row, payload, self.keys)
            after = {k: v for k, v in before.items() if k not in delete}
            after.update(values)
            writes.append(_Write(row, row.point_id, before, after, values, delete))
        return writes

    def _write(
        self, conn: Connection, number: int, writes: list[_Write], deadline: float, t: Tallies
    ) -> None:
        """Journal, write, and verify, all under the batch's lock."""
        qd = self.stores.qdrant
        self.journal.changes(
            number,
            [
                {
                    "point_id": w.point_id,
                    "face_id": w.row.face_id,
                    "before": w.before,
                    "after": w.after,
                }
                for w in writes
            ],
        )
        self.hooks.checkpoint(number, "before-write")
        error: str | None = None
        pending = writes
        for _attempt in range(2):
            # A session the server ended (failover, a cut, idle timeout) has lost
            # our row locks: one round trip right before each write makes sure we
            # still hold them, narrowing that window to the write itself.
            self.stores.postgres.ping(conn)
            if self.hooks.clock() >= deadline:
                # Past the deadline the locks may not outlive a write: leave the
                # rest for the next run rather than risk overwriting a newer value.
                error = error or "batch deadline passed before the write"
                break
            try:
                qd.apply(group_writes(pending))
                break
            except StoreError as exc:
                # The outcome is unknown (a timeout may have applied it): the rows
                # are still locked, so re-reading tells what landed; the points
                # that still exist and were not written get one more try.
                error = str(exc)
                current = qd.retrieve([w.point_id for w in pending])
                pending = [
                    w
                    for w in pending
                    if w.point_id in current
                    and not same(self.keys.actual(current[w.point_id]), w.after)
                ]
                if not pending:
                    break
        current = qd.retrieve([w.point_id for w in writes])
        applied = failed = 0
        for w in writes:
            payload = current.get(w.point_id)
            if payload is None:
                t.vanished += 1
                t.remaining[Kind.MISSING_POINT] += 1
                continue
            if same(self.keys.actual(payload), w.after):
                applied += 1
            else:
                failed += 1
            differing = self.keys.differing(w.row, payload)
            if not differing:
                t.verified += 1
            else:
                t.remaining[self.keys.kind(differing)] += 1
                t.remaining_keys.update(differing.keys())
        self.hooks.checkpoint(number, "after-write")
        t.applied += applied
        t.failed += failed
        if failed:
            self.last_error = error or "the payloads did not change"
        self.journal.outcome(number, applied=applied, failed=failed, error=error)


__all__ = [
    "Held",
    "Hooks",
    "LockStatus",
    "Repairer",
    "Stop",
    "Tallies",
    "group_writes",
    "lock_points",
    "refuse_unlocked",
    "same",
    "target",
]
