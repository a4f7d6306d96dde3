"""The repair plan: repairable drift spilled to a private temporary file, counted, guarded.

The audit's drift stream goes through `Planner` into an anonymous spill file
(memory O(batch), disk O(drift)); `Plan` holds its counts and the per-person
breakdown, and `guard` says why a plan must not run.
"""

from __future__ import annotations

import heapq
import json
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

from reconcile.diff import REPAIRABLE, Drift, Keys, Kind, batched
from reconcile.errors import ConfigError
from reconcile.report import AuditReport, ScopeKind, SpaceSaving, person_capacity
from reconcile.settings import points_limit
from reconcile.stores.base import PointId
from reconcile.targets import parse_duration

NO_PERSON = "(no person)"


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
    # After a run that succeeded, older journals of the same table and collection in
    # the journal's directory are deleted (they hold personal data); None keeps them.
    journal_retention: timedelta | None = timedelta(days=90)

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= 10_000:
            raise ConfigError(f"--batch-size {self.batch_size} is out of range: use 1 to 10000")
        if self.journal_retention is not None and self.journal_retention <= timedelta(0):
            raise ConfigError(_RETENTION_HINT.format(spec=str(self.journal_retention)))
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


_RETENTION_HINT = (
    "--journal-retention {spec!r} is not a positive duration: "
    "use e.g. 30d, 12h or 2w, or off to keep journals forever"
)


def parse_retention(spec: str) -> timedelta | None:
    """`--journal-retention`: a duration (`30d`, `12h`), or `off` (None: keep forever).

    `0` is refused rather than read as "off" or "delete all": either reading would
    surprise half the people who type it.
    """
    if spec.strip().lower() == "off":
        return None
    retention = parse_duration(spec)
    if retention is None or retention <= timedelta(0):
        raise ConfigError(_RETENTION_HINT.format(spec=spec))
    return retention


def max_changes_limit(spec: str, points: int) -> int:
    """`500` is a number of points; `10%` a share of the collection's points."""
    return points_limit("--max-changes", spec, points, "10%")


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
    set_payload: int = 0  # points whose person and flag agree but another mapped key not
    # Per compared key, the points where it is written (`set`) or deleted (`clear`).
    keys: dict[str, dict[str, int]] = field(default_factory=dict)
    orphans: OrphanPlan | None = None  # with --delete-orphans

    @property
    def changes(self) -> int:
        return self.set_person + self.clear_person + self.set_flag + self.set_payload

    @property
    def refusal(self) -> str | None:
        """Why the plan must not run: the payload guard's reason, else the orphans'."""
        return self.guard or (None if self.orphans is None else self.orphans.guard)

    def to_json(self) -> dict[str, Any]:
        return {
            "set_person": self.set_person,
            "clear_person": self.clear_person,
            "set_flag": self.set_flag,
            "set_payload": self.set_payload,
            "keys": self.keys,
            "orphans": None if self.orphans is None else self.orphans.to_json(),
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


class Planner:
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
        self.keys_plan: dict[str, Counter[str]] = {name: Counter() for name in keys.names}

    def __call__(self, drift: Drift) -> None:
        if drift.kind not in REPAIRABLE:
            return
        self.kinds[drift.kind] += 1
        self.spill.write(json.dumps(drift.record(), separators=(",", ":")) + "\n")
        for key, sub in drift.keys.items():
            self.keys_plan.setdefault(key, Counter())["clear" if sub == "stale" else "set"] += 1
        if drift.kind is Kind.PAYLOAD_MISMATCH:
            return  # neither the person nor the flag changes
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
            set_payload=self.kinds[Kind.PAYLOAD_MISMATCH],
            keys={k: {"set": c["set"], "clear": c["clear"]} for k, c in self.keys_plan.items()},
            persons=len(self.persons.keys() - {NO_PERSON}),
            requests=math.ceil(changes / options.batch_size),
            by_person=by_person,
            guard=guard(report, changes, options.max_changes),
            persons_exact=self.counters.exact,
        )


def guard(report: AuditReport, changes: int, max_changes: str) -> str | None:
    """Why this plan must not run, or None: a plan this large is a misconfiguration, not drift.

    A targeted run saw only the faces it was given, so neither an empty side nor a
    share of the collection means anything there: only an absolute limit applies.
    """
    if not report.scope_kind.scanned:
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
    if report.scope_kind is ScopeKind.FULL and (rows == 0) != (report.points == 0):
        return (
            f"the full scan found {rows:,} rows with a point in {report.table} and "
            f"{report.points:,} points in {report.collection}: one store is empty, which "
            "looks like the wrong database, table or collection, not drift; no flag "
            "overrides this: check --database-url, --table and --collection (reconcile "
            "check shows what they name), or, if the store is empty on purpose, rebuild "
            "it rather than repair it"
        )
    limit = max_changes_limit(max_changes, report.points)
    if changes > limit:
        return (
            f"the plan changes {changes:,} points, more than --max-changes {max_changes} "
            f"({limit:,} of {report.points:,} points); check the settings, then raise "
            "--max-changes if this is expected"
        )
    return None


@dataclass(frozen=True)
class OrphanPlan:
    """What `--delete-orphans` will do: counts per action, a few ids, and the guard."""

    mark: int
    delete: int
    rescue: int
    waiting: int
    grace_seconds: int
    max_deletes: int  # the limit on marks and deletes together, in points
    examples: dict[str, list[PointId]]
    guard: str | None

    @property
    def writes(self) -> int:
        return self.mark + self.delete + self.rescue

    def to_json(self) -> dict[str, Any]:
        return {
            "mark": self.mark,
            "delete": self.delete,
            "rescue": self.rescue,
            "waiting": self.waiting,
            "grace_seconds": self.grace_seconds,
            "max_deletes": self.max_deletes,
            "examples": self.examples,
        }


def orphan_guard(report: AuditReport, mark: int, delete: int, spec: str, limit: int) -> str | None:
    """Why the orphans must not be touched, or None: too many, or no rows to judge by."""
    if not mark + delete:
        return None
    rows = report.rows - report.rows_without_point
    if rows == 0:
        return (
            f"the scan found no rows with a point in {report.table}, so every point looks "
            "orphaned: --delete-orphans never marks or deletes against an empty table; "
            "check --database-url and --table"
        )
    if mark + delete > limit:
        return (
            f"--delete-orphans would mark {mark:,} and delete {delete:,} points, more than "
            f"--max-deletes {spec} ({limit:,} of {report.points:,} points); check --table "
            "and --orphan-table, then raise --max-deletes if this is expected"
        )
    return None


def spilled_batches(spill: IO[str], size: int) -> Iterator[list[dict[str, Any]]]:
    spill.seek(0)
    return batched((json.loads(line) for line in spill), size)


__all__ = [
    "NO_PERSON",
    "OrphanPlan",
    "PersonPlan",
    "Plan",
    "Planner",
    "RepairOptions",
    "guard",
    "max_changes_limit",
    "orphan_guard",
    "spilled_batches",
]
