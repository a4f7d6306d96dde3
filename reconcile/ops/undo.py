"""Undo: restore what a repair journal says each point held, where nothing changed since."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconcile.apply import Held, Hooks, lock_points, same
from reconcile.diff import Keys, batched
from reconcile.errors import ConfigError, ExitCode, StoreError
from reconcile.journal import JournalReader
from reconcile.plan import RepairOptions
from reconcile.report import SCHEMA_VERSION
from reconcile.scan import Progress
from reconcile.settings import Settings
from reconcile.stores import Stores, using
from reconcile.stores.base import DeleteKeys, PayloadOp, PointId, Row, SetKeys


@dataclass
class UndoReport:
    journal: str
    dry_run: bool
    points: int = 0  # change records read
    restored: int = 0
    already_restored: int = 0
    conflicts: int = 0
    skipped_locked: int = 0
    vanished: int = 0
    failed: int = 0
    torn_last_line: bool = False
    duration_seconds: float = 0.0
    conflict_ids: list[PointId] = field(default_factory=list)  # the first few, for the message

    @property
    def exit_code(self) -> ExitCode:
        if self.failed:
            return ExitCode.STORE
        drift = self.conflicts or self.skipped_locked or self.vanished
        return ExitCode.DRIFT if drift else ExitCode.OK

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "journal": self.journal,
            "dry_run": self.dry_run,
            "points": self.points,
            "restored": self.restored,
            "already_restored": self.already_restored,
            "conflicts": self.conflicts,
            "skipped_locked": self.skipped_locked,
            "vanished": self.vanished,
            "failed": self.failed,
            "torn_last_line": self.torn_last_line,
            "duration_seconds": round(self.duration_seconds, 3),
        }


def _without_nulls(values: dict[str, Any]) -> dict[str, Any]:
    # qdrant-client cannot write a JSON null with set_payload (local mode drops the
    # key, the server is sent nothing), so an explicit null is restored as an
    # absent key: both mean "no person" to the audit and to Qdrant's filters.
    return {k: v for k, v in values.items() if v is not None}


def _restore_ops(changes: list[dict[str, Any]]) -> list[PayloadOp]:
    """Set each point's before-values and delete the keys it did not have before."""
    sets: dict[str, tuple[dict[str, Any], list[PointId]]] = {}
    deletes: dict[tuple[str, ...], list[PointId]] = {}
    for change in changes:
        before = _without_nulls(change["before"])
        if before:
            sets.setdefault(json.dumps(before, sort_keys=True), (before, []))[1].append(
                change["point_id"]
            )
        gone = tuple(sorted(set(change["after"]) - set(before)))
        if gone:
            deletes.setdefault(gone, []).append(change["point_id"])
    ops: list[PayloadOp] = [DeleteKeys(list(keys), points) for keys, points in deletes.items()]
    ops += [SetKeys(values, points) for values, points in sets.values()]
    return ops


def _restored(actual: dict[str, Any], before: dict[str, Any]) -> bool:
    return same(_without_nulls(actual), _without_nulls(before))


def undo(
    settings: Settings,
    journal: Path,
    *,
    dry_run: bool = False,
    options: RepairOptions | None = None,
    stores: Stores | None = None,
    progress: Progress | None = None,
    confirm: Callable[[int], bool] | None = None,
) -> UndoReport:
    """Restore each journaled point's before-state where its payload still holds the after-state."""
    options = options or RepairOptions()
    started = time.monotonic()
    reader = JournalReader(journal)
    header = reader.header
    keys = Keys(settings.person_key, settings.flag_key)
    if header.get("collection") != settings.collection:
        raise ConfigError(
            f"journal {journal} was written for collection {header.get('collection')!r}, "
            f"not {settings.collection!r}: set --collection"
        )
    if header.get("keys") != {"person": keys.person, "flag": keys.flag}:
        raise ConfigError(
            f"journal {journal} was written with payload keys {header.get('keys')}: "
            "set --person-key and --flag-key to match"
        )
    if confirm is not None and not dry_run and not confirm(sum(1 for _ in reader.changes())):
        raise ConfigError("undo not confirmed: nothing was written")
    report = UndoReport(str(journal), dry_run)
    with using(settings, stores) as s:
        s.postgres.inspect()
        s.qdrant.require_collection()
        for batch in batched(reader.changes(), options.batch_size):
            _undo_batch(s, batch, keys, options, report, dry_run)
            if progress is not None:
                progress(report.points)
    report.torn_last_line = reader.torn
    report.duration_seconds = time.monotonic() - started
    return report


def _undo_batch(
    s: Stores,
    batch: list[dict[str, Any]],
    keys: Keys,
    options: RepairOptions,
    report: UndoReport,
    dry_run: bool,
) -> None:
    report.points += len(batch)
    # A repair plans each point once, so a point has one change line per journal.
    changes = {change["point_id"]: change for change in batch}
    with s.postgres.transaction(options.lock_timeout, options.batch_deadline) as conn:
        rows: list[Row] = []
        for _point_id, status in lock_points(s, conn, list(changes), Hooks()):
            if isinstance(status, Row):
                rows.append(status)
            elif status is Held.LOCKED:
                report.skipped_locked += 1
            elif status is Held.DUPLICATE:
                report.conflicts += 1  # several rows name it now: left alone
            else:
                report.vanished += 1
        current = s.qdrant.retrieve([row.point_id for row in rows if row.point_id is not None])
        todo: list[dict[str, Any]] = []
        for row in rows:
            assert row.point_id is not None
            change = changes[row.point_id]
            payload = current.get(row.point_id)
            if payload is None:
                report.vanished += 1
            elif same(keys.actual(payload), change["after"]):
                todo.append(change)
            elif _restored(keys.actual(payload), change["before"]):
                report.already_restored += 1
            else:
                report.conflicts += 1
                if len(report.conflict_ids) < 5:
                    report.conflict_ids.append(row.point_id)
        if dry_run or not todo:
            report.restored += len(todo)
            return
        # Whether the write fails or times out, the re-read below, still under the
        # lock, tells which points were restored.
        with contextlib.suppress(StoreError):
            s.qdrant.apply(_restore_ops(todo))
        after = s.qdrant.retrieve([change["point_id"] for change in todo])
        for change in todo:
            payload = after.get(change["point_id"])
            if payload is not None and _restored(keys.actual(payload), change["before"]):
                report.restored += 1
            else:
                report.failed += 1


__all__ = ["UndoReport", "undo"]
