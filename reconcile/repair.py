"""Repair: plan from a spilled audit, then lock, recheck, journal and write, batch by batch."""

from __future__ import annotations

import contextlib
import heapq
import json
import math
import os
import re
import signal
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa

from reconcile.audit import Progress, Stores, audit, using
from reconcile.diff import REPAIRABLE, Drift, Keys, Kind, PointId, Row, batched, classify
from reconcile.errors import ConfigError, GuardError, StoreError
from reconcile.journal import JournalWriter, NullJournal, default_path
from reconcile.postgres import LockMode
from reconcile.qdrant import DeleteKeys, PayloadOp, SetKeys
from reconcile.report import AuditReport, SpaceSaving, person_capacity
from reconcile.settings import Settings
from reconcile.targets import Targets

NO_PERSON = "(no person)"
MAX_FAILED_BATCHES = 3


@dataclass(frozen=True)
class RepairOptions:
    """How a repair runs; validated here so the library and the CLI reject the same things."""

    dry_run: bool = False
    batch_size: int = 1000
    max_changes: str = "10%"
    journal: Path | None = None
    lock_timeout: float = 5.0
    batch_deadline: float = 60.0
    top: int = 10
    write_journal: bool = True  # the sync helper, called per request, keeps none
    rate: float | None = None  # points written per second at most

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= 10_000:
            raise ConfigError(f"--batch-size {self.batch_size} is out of range: use 1 to 10000")
        max_changes_limit(self.max_changes, 0)
        if self.rate is not None and not 0 < self.rate <= 1_000_000:
            raise ConfigError(
                f"--rate {self.rate} is out of range: use more than 0, at most 1000000"
            )
        if not 0 < self.lock_timeout <= 600:
            raise ConfigError(f"--lock-timeout {self.lock_timeout} is out of range: use (0, 600]")
        if not self.lock_timeout < self.batch_deadline <= 3600:
            raise ConfigError(
                f"--batch-deadline {self.batch_deadline} is out of range: "
                "use more than --lock-timeout and at most 3600"
            )


def max_changes_limit(spec: str, points: int) -> int:
    """`500` is a number of points; `10%` a share of the collection's points."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(%?)\s*", spec)
    if match is None:
        raise ConfigError(f"--max-changes {spec!r} is not a number or a percentage: use 500 or 10%")
    value, percent = float(match.group(1)), bool(match.group(2))
    if percent:
        if value > 100:
            raise ConfigError(f"--max-changes {spec!r} is over 100%")
        return math.floor(points * value / 100)
    if not value.is_integer():
        raise ConfigError(f"--max-changes {spec!r} must be a whole number of points")
    return int(value)


@dataclass
class PersonPlan:
    """What a repair does for one person: faces gaining it, losing it, flags fixed."""

    set: int = 0
    cleared: int = 0
    flags: int = 0
    # Changes counted before this person took over a replaced counter (kind unknown):
    # the true total lies in [total - error, total]. 0 while the plan is exact.
    error: int = 0

    @property
    def total(self) -> int:
        return self.set + self.cleared + self.flags + self.error


@dataclass(frozen=True)
class Plan:
    audit: AuditReport
    set_person: int
    clear_person: int
    set_flag: int
    persons: int  # persons with a planned change; a lower bound unless persons_exact
    requests: int
    by_person: list[tuple[str, PersonPlan]]
    guard: str | None
    persons_exact: bool = True

    @property
    def changes(self) -> int:
        return self.set_person + self.clear_person + self.set_flag

    def to_json(self) -> dict[str, Any]:
        return {
            "set_person": self.set_person,
            "clear_person": self.clear_person,
            "set_flag": self.set_flag,
            "persons": self.persons,
            "persons_exact": self.persons_exact,
            "requests": self.requests,
            "top_persons": [
                {
                    "person_id": p,
                    "set": pp.set,
                    "cleared": pp.cleared,
                    "flags": pp.flags,
                    "error": pp.error,
                }
                for p, pp in self.by_person
            ],
        }


@dataclass
class Tallies:
    """What happened to each planned point; `remaining` is audit-style, by kind."""

    applied: int = 0
    skipped_changed: int = 0
    skipped_locked: int = 0
    skipped_recent: int = 0
    vanished: int = 0
    failed: int = 0
    verified: int = 0
    remaining: Counter[str] = field(default_factory=Counter)

    def merge(self, other: Tallies) -> None:
        self.applied += other.applied
        self.skipped_changed += other.skipped_changed
        self.skipped_locked += other.skipped_locked
        self.skipped_recent += other.skipped_recent
        self.vanished += other.vanished
        self.failed += other.failed
        self.verified += other.verified
        self.remaining.update(other.remaining)


@dataclass(frozen=True)
class RepairReport:
    plan: Plan
    dry_run: bool
    tallies: Tallies
    journal: str | None
    duration_seconds: float
    interrupted: str | None = None  # the signal that stopped the run between batches
    timed_out: bool = False  # --max-duration stopped the audit or the batches early

    @property
    def complete(self) -> bool:
        return self.interrupted is None and not self.timed_out and self.plan.audit.complete

    @property
    def remaining(self) -> dict[str, int]:
        return {k.value: self.tallies.remaining[k.value] for k in Kind if k is not Kind.IN_SYNC}

    @property
    def exit_code(self) -> int:
        if self.interrupted is not None:
            return 128 + signal.Signals[self.interrupted].value  # 130 SIGINT, 143 SIGTERM
        if self.tallies.failed:
            return 3
        return 1 if any(self.remaining.values()) or not self.complete else 0

    def to_json(self) -> dict[str, Any]:
        t = self.tallies
        return {
            "schema_version": 1,
            "dry_run": self.dry_run,
            "planned": self.plan.to_json(),
            "guard": self.plan.guard,
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
            "audit": self.plan.audit.to_json(),
            "duration_seconds": round(self.duration_seconds, 3),
        }


@dataclass
class Hooks:
    """Test seams in the apply loop; the product never sets them."""

    before_write: Callable[[list[PointId]], None] | None = None
    # NONE only to prove, in a test, that the lock is what keeps us safe; WAIT for
    # the sync helper, which waits for a held row instead of skipping it.
    lock: LockMode = LockMode.SKIP_LOCKED
    clock: Callable[[], float] = time.monotonic
    # The crash tests run the CLI in a subprocess and signal it at a fixed point:
    # "N:before-write[=SIGNAL]" (journaled, not written) or "N:after-write[=SIGNAL]"
    # (written, not committed) of batch N; SIGKILL unless a signal is named. The
    # variable is read only here, so a repeatable crash needs no timing luck.
    kill_at: str | None = field(default_factory=lambda: os.environ.get("RECONCILE_TEST_KILL_AT"))

    def maybe_die(self, batch: int, phase: str) -> None:
        if self.kill_at is None:
            return
        where, _, name = self.kill_at.partition("=")
        if where == f"{batch}:{phase}":
            os.kill(os.getpid(), signal.Signals[name or "SIGKILL"])


class Stop(threading.Event):
    """Set by a signal handler: the repair finishes its batch in flight, then stops."""

    signal: str = "SIGTERM"
    applying: bool = False  # before the apply phase nothing is written: stop at once

    def request(self, signum: int) -> None:
        self.signal = signal.Signals(signum).name
        self.set()


class _Planner:
    """Spills repairable drift to an anonymous temporary file and counts the plan.

    The per-person breakdown is kept only for the persons the bounded counters
    hold (the audit's Space-Saving rule), so a plan for a million persons needs
    no more memory than one for a thousand.
    """

    def __init__(self, spill: IO[str], keys: Keys, top: int) -> None:
        self.spill = spill
        self.keys = keys
        self.kinds: Counter[Kind] = Counter()
        self.counters = SpaceSaving(person_capacity(top))
        self.persons: dict[str, PersonPlan] = {}

    def __call__(self, drift: Drift) -> None:
        if drift.kind not in REPAIRABLE:
            return
        self.kinds[drift.kind] += 1
        self.spill.write(json.dumps(drift.record(), separators=(",", ":")) + "\n")
        if drift.kind is Kind.STALE_PERSON:
            self._person(drift.person).cleared += 1
        elif drift.kind is Kind.FLAG_MISMATCH:
            self._person(drift.person).flags += 1
        else:
            assert drift.expected is not None
            target = drift.expected[self.keys.person]
            self._person(target if isinstance(target, str) else repr(target)).set += 1

    def _person(self, person: str | None) -> PersonPlan:
        key = person or NO_PERSON
        victim = self.counters.add(key)
        if victim is not None:
            del self.persons[victim]
        plan = self.persons.get(key)
        if plan is None:
            plan = self.persons[key] = PersonPlan(error=self.counters.error(key))
        return plan

    def plan(self, report: AuditReport, options: RepairOptions) -> Plan:
        changes = sum(self.kinds.values())
        by_person = heapq.nsmallest(
            options.top, self.persons.items(), key=lambda item: (-item[1].total, item[0])
        )
        return Plan(
            audit=report,
            set_person=self.kinds[Kind.MISSING_PERSON] + self.kinds[Kind.WRONG_PERSON],
            clear_person=self.kinds[Kind.STALE_PERSON],
            set_flag=self.kinds[Kind.FLAG_MISMATCH],
            persons=len(self.persons.keys() - {NO_PERSON}),
            requests=math.ceil(changes / options.batch_size),
            by_person=by_person,
            guard=_guard(report, changes, options.max_changes, report.scope),
            persons_exact=self.counters.exact,
        )


def _guard(report: AuditReport, changes: int, max_changes: str, scope: str) -> str | None:
    """Why this plan must not run, or None: a plan this large is a misconfiguration, not drift.

    A targeted run saw only the faces it was given, so neither an empty side nor a
    share of the collection means anything there: only an absolute limit applies.
    """
    targeted = scope != "full" and not scope.startswith("shard")
    if targeted:
        if max_changes.strip().endswith("%"):
            return None
        limit = max_changes_limit(max_changes, 0)
        if changes > limit:
            return (
                f"the plan changes {changes:,} points, more than --max-changes {limit:,}; "
                "raise --max-changes if this is expected"
            )
        return None
    rows = report.rows - report.rows_without_point
    # One slice of the ids may well be empty on one side; only a full scan tells.
    if scope == "full" and (rows == 0) != (report.points == 0):
        return (
            f"the full scan found {rows:,} rows with a point in {report.table} and "
            f"{report.points:,} points in {report.collection}: one store is empty, which "
            "looks like the wrong database, table or collection, not drift"
        )
    limit = max_changes_limit(max_changes, report.points)
    if changes > limit:
        return (
            f"the plan changes {changes:,} points, more than --max-changes {max_changes} "
            f"({limit:,} of {report.points:,} points); check the settings, then raise "
            "--max-changes if this is expected"
        )
    return None


def _batches(spill: IO[str], size: int) -> Iterator[list[dict[str, Any]]]:
    spill.seek(0)
    return batched((json.loads(line) for line in spill), size)


def target(row: Row, before: dict[str, Any], keys: Keys) -> tuple[dict[str, Any], bool]:
    """The values to set and whether to delete the person key, from the row just read."""
    if row.person_id is not None:
        return keys.expected(row.person_id), False
    delete = before.get(keys.person) is not None
    return ({keys.flag: False} if keys.flag else {}), delete


def group_writes(writes: list[_Write], person_key: str) -> list[PayloadOp]:
    """One SetKeys per distinct target value (one per person), one DeleteKeys for the cleared."""
    sets: dict[str, tuple[dict[str, Any], list[PointId]]] = {}
    cleared: list[PointId] = []
    for w in writes:
        if w.delete:
            cleared.append(w.point_id)
        if w.values:
            key = json.dumps(w.values, sort_keys=True)
            sets.setdefault(key, (w.values, []))[1].append(w.point_id)
    ops: list[PayloadOp] = [SetKeys(values, points) for values, points in sets.values()]
    if cleared:
        ops.append(DeleteKeys([person_key], cleared))
    return ops


@dataclass(frozen=True)
class _Write:
    """One point to write: the row just read, the payload just read, and what to change."""

    row: Row
    point_id: PointId
    before: dict[str, Any]  # the configured keys present before (absent keys left out)
    after: dict[str, Any]  # the same keys as they will be
    values: dict[str, Any]  # to set
    delete: bool  # whether to delete the person key


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Payload equality that tells 1 from true and 1.0 from 1, as JSON does."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


LockStatus = Row | str  # the one row now naming the point, or vanished / duplicate / locked


def lock_points(
    stores: Stores, conn: sa.Connection, point_ids: list[PointId], hooks: Hooks
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
            yield point_id, "vanished"
        elif n > 1:
            yield point_id, "duplicate"
        elif not rows:
            yield point_id, "locked"
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
        self.keys = Keys(settings.person_key, settings.flag_key)
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
        batches = _batches(spill, self.options.batch_size)
        for number, batch in enumerate(batches, start=1):
            if self.options.rate:
                ahead = self.tallies.applied / self.options.rate - (self.hooks.clock() - started)
                if ahead > 0:
                    time.sleep(ahead)
            late = deadline is not None and self.hooks.clock() > deadline
            if late or (stop is not None and stop.is_set()):
                # Between batches nothing is locked or half-written: stop here.
                self.tallies.remaining.update(record["kind"] for record in batch)
                for rest in batches:
                    self.tallies.remaining.update(record["kind"] for record in rest)
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
                    self.tallies.remaining.update(record["kind"] for record in rest)
                raise StoreError(
                    f"{MAX_FAILED_BATCHES} batches in a row failed ({self.last_error}); "
                    f"stopped after {done:,} of the planned points; the journal "
                    f"{self.journal.path} records what was written"
                )
        return True

    def _batch(self, number: int, batch: list[dict[str, Any]]) -> bool:
        """One batch in one short transaction; False when it failed (already counted)."""
        planned = {record["point_id"]: record["kind"] for record in batch}
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
            self.tallies.remaining.update(planned.values())
            with contextlib.suppress(OSError):
                self.journal.outcome(number, applied=0, failed=len(planned), error=str(exc))
            return False
        self.tallies.merge(t)
        return t.failed == 0

    def _recheck(
        self, conn: sa.Connection, planned: dict[PointId, str], t: Tallies
    ) -> list[_Write]:
        """Lock the rows, re-read rows and payloads, and keep what is still drifted."""
        candidates: list[Row] = []
        gone: list[PointId] = []
        for point_id, status in lock_points(self.stores, conn, list(planned), self.hooks):
            if isinstance(status, Row) and status.recent:
                t.skipped_recent += 1  # changed since the audit, inside the grace window
            elif isinstance(status, Row):
                candidates.append(status)
            elif status == "vanished":
                gone.append(point_id)
            elif status == "duplicate":
                t.skipped_changed += 1  # several rows name it now: left alone
                t.remaining[Kind.DUPLICATE_POINT] += 1
            else:
                t.skipped_locked += 1  # an application transaction holds it
                t.remaining[planned[point_id]] += 1
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
            values, delete = target(row, before, self.keys)
            after = {k: v for k, v in before.items() if not (delete and k == self.keys.person)}
            after.update(values)
            writes.append(_Write(row, row.point_id, before, after, values, delete))
        return writes

    def _write(
        self, conn: sa.Connection, number: int, writes: list[_Write], deadline: float, t: Tallies
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
        self.hooks.maybe_die(number, "before-write")
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
                qd.apply(group_writes(pending, self.keys.person))
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
            kind = classify(w.row, payload, self.keys)
            if kind is Kind.IN_SYNC:
                t.verified += 1
            else:
                t.remaining[kind] += 1
        self.hooks.maybe_die(number, "after-write")
        t.applied += applied
        t.failed += failed
        if failed:
            self.last_error = error or "the payloads did not change"
        self.journal.outcome(number, applied=applied, failed=failed, error=error)


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
) -> RepairReport:
    """Audit, plan, and (unless a dry run) apply the plan; see DESIGN.md for the protocol."""
    options = options or RepairOptions()
    started = time.monotonic()
    deadline = None if max_duration is None else started + max_duration
    keys = Keys(settings.person_key, settings.flag_key)
    with using(settings, stores) as s, tempfile.TemporaryFile("w+", encoding="utf-8") as spill:
        # The spill holds which person is in which photo; TemporaryFile is mode
        # 0600 and has no name, so nothing is left behind even on kill -9.
        planner = _Planner(spill, keys, options.top)
        report = audit(
            settings,
            top=options.top,
            stores=s,
            progress=progress,
            sink=planner,
            targets=targets,
            deadline=deadline,
            shard=shard,
        )
        plan = planner.plan(report, options)
        tallies = Tallies()
        for kind, n in report.counts.items():
            if kind != Kind.IN_SYNC and Kind(kind) not in REPAIRABLE:
                tallies.remaining[kind] += n
        if not options.dry_run and plan.guard is not None:
            raise GuardError(f"repair refused: {plan.guard}")
        if options.dry_run or plan.changes == 0:
            for kind in REPAIRABLE:
                tallies.remaining[kind] += report.counts[kind]
            return RepairReport(plan, options.dry_run, tallies, None, time.monotonic() - started)
        if confirm is not None and not confirm(plan):
            raise ConfigError("repair not confirmed: nothing was written")
        path = (options.journal or default_path()) if options.write_journal else None
        journal: JournalWriter | NullJournal = NullJournal()
        if path is not None:
            journal = JournalWriter(
                path,
                {
                    "tool": "reconcile",
                    "tool_version": version("reconcile"),
                    "table": report.table,
                    "collection": settings.collection,
                    "keys": {"person": settings.person_key, "flag": settings.flag_key},
                    "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                },
            )
        try:
            repairer = Repairer(settings, s, options, journal, hooks or Hooks())
            repairer.tallies.remaining.update(tallies.remaining)
            if stop is not None:
                stop.applying = True
            finished = repairer.run(spill, progress, stop, deadline)
        finally:
            journal.close()
        journal_name = None if path is None else str(path)
        return RepairReport(
            plan,
            False,
            repairer.tallies,
            journal_name,
            time.monotonic() - started,
            interrupted=None if finished or stop is None or not stop.is_set() else stop.signal,
            timed_out=not finished and (stop is None or not stop.is_set()),
        )
