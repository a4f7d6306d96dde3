"""Undo: restore what a repair journal says each point held, where nothing changed since.

The journal's header names the table, the collection and the payload keys the
repair wrote; undo takes them from there, so the hint a repair prints
(`reconcile undo JOURNAL`) works as printed. The mapped keys (`--map`) come from
the journal too, whatever the settings say: the settings' map may have grown
since, and only the keys the journal holds can be restored. A setting someone chose (a flag,
the environment, a file; in the library, a value other than the default) that
contradicts the journal is refused rather than silently overridden: it is the
sign of a wrong journal or a wrong environment.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconcile import log
from reconcile.apply import Held, Hooks, lock_points, refuse_unlocked, same
from reconcile.config import DEFAULT
from reconcile.diff import Keys, batched, compared_keys
from reconcile.errors import ConfigError, ExitCode, StoreError
from reconcile.journal import JournalReader, mark_undone
from reconcile.plan import RepairOptions
from reconcile.report import SCHEMA_VERSION
from reconcile.scan import Progress
from reconcile.settings import ORPHAN_KEY, Settings, maps_of
from reconcile.stores import Stores, using
from reconcile.stores.base import DeleteKeys, PayloadOp, PointId, Row, SetKeys, WholePoint

# The settings a journal's header records, with the flag that sets each.
_RECORDED = {
    "table": "--table",
    "collection": "--collection",
    "person_key": "--person-key",
    "flag_key": "--flag-key",
}


def _recorded(header: Mapping[str, Any], journal: Path) -> dict[str, Any]:
    """The table, collection and payload keys the journal was written with."""
    keys = header.get("keys")
    mapped = keys.get("map", {}) if isinstance(keys, dict) else {}
    found = {
        "table": header.get("table"),
        "collection": header.get("collection"),
        "person_key": keys.get("person") if isinstance(keys, dict) else None,
        "flag_key": keys.get("flag") if isinstance(keys, dict) else None,
    }
    strings = all(isinstance(found[name], str) for name in ("table", "collection", "person_key"))
    if not strings or not isinstance(found["flag_key"], str | None):
        raise ConfigError(
            f"journal {journal} has a damaged header (table, collection or payload keys): "
            "pass a journal written by `reconcile repair`"
        )
    try:
        found["map"] = maps_of(mapped)
    except ConfigError:
        raise ConfigError(
            f"journal {journal} has a damaged header (its map of payload keys): "
            "pass a journal written by `reconcile repair`"
        ) from None
    return found


def _library_sources(settings: Settings) -> dict[str, str]:
    """For library callers: a value other than the default counts as chosen."""
    return {
        f.name: DEFAULT if getattr(settings, f.name) == f.default else "the settings given"
        for f in dataclasses.fields(settings)
        if f.name in _RECORDED
    }


def journal_settings(
    settings: Settings, journal: Path, sources: Mapping[str, str] | None = None
) -> Settings:
    """`settings` with the table, collection and payload keys of `journal`'s header.

    `sources` says where each setting came from (`reconcile.config.merge`'s second
    value); a setting whose source is not "default" must agree with the journal,
    or this raises ConfigError naming the setting, its source and the journal's
    value. Without `sources`, a value other than the field's default counts as
    chosen (a library caller cannot say more).
    """
    recorded = _recorded(JournalReader(journal).header, journal)
    given = _library_sources(settings) if sources is None else sources
    for name, flag in _RECORDED.items():
        value, source = getattr(settings, name), given.get(name, DEFAULT)
        if source != DEFAULT and value != recorded[name]:
            raise ConfigError(
                f"{flag} {_shown(value)} (from {source}) contradicts the journal {journal}, "
                f"written with {flag} {_shown(recorded[name])}: undo takes it from the journal, "
                "so remove that setting (or pass the journal of that repair)"
            )
    return dataclasses.replace(settings, **recorded)


def _shown(value: str | None) -> str:
    return "unset" if value is None else repr(value)


CONFLICTS_LISTED = 100


@dataclass
class UndoReport:
    journal: str
    dry_run: bool
    table: str = ""  # as the journal recorded them
    collection: str = ""
    points: int = 0  # change records read
    restored: int = 0
    already_restored: int = 0
    conflicts: int = 0
    skipped_locked: int = 0
    vanished: int = 0
    failed: int = 0
    torn_last_line: bool = False
    duration_seconds: float = 0.0
    conflict_ids: list[PointId] = field(default_factory=list)  # the first CONFLICTS_LISTED

    def conflict(self, point_id: PointId) -> None:
        self.conflicts += 1
        if len(self.conflict_ids) < CONFLICTS_LISTED:
            self.conflict_ids.append(point_id)

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
            "table": self.table,
            "collection": self.collection,
            "points": self.points,
            "restored": self.restored,
            "already_restored": self.already_restored,
            "conflicts": self.conflicts,
            "skipped_locked": self.skipped_locked,
            "vanished": self.vanished,
            "failed": self.failed,
            "torn_last_line": self.torn_last_line,
            "conflict_ids": self.conflict_ids,
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
    sources: Mapping[str, str] | None = None,
) -> UndoReport:
    """Restore each journaled point's before-state where its payload still holds the after-state.

    The table, collection and payload keys come from the journal (see
    `journal_settings` for `sources` and when a given setting is refused).
    Unless a dry run, a finished undo appends an `undo` line to the journal.
    """
    options = options or RepairOptions()
    started = time.monotonic()
    settings = journal_settings(settings, journal, sources)
    if stores is not None:
        _check_stores(stores.settings, settings, journal)
    reader = JournalReader(journal)
    if confirm is not None and not dry_run and not confirm(sum(1 for _ in reader.changes())):
        raise ConfigError("undo not confirmed: nothing was written")
    report = UndoReport(str(journal), dry_run, settings.table, settings.collection)
    with using(settings, stores) as s:
        keys = compared_keys(settings, s.postgres.inspect().rules)
        refuse_unlocked(s, "undo")
        s.qdrant.require_collection()
        for batch in batched(reader.changes(), options.batch_size):
            deleted = [change for change in batch if change.get("op") == "delete"]
            if deleted:
                _recreate(s, deleted, report, dry_run, journal)
            changed = [change for change in batch if change.get("op") != "delete"]
            if changed:
                _undo_batch(s, changed, keys, options, report, dry_run)
            if progress is not None:
                progress(report.points)
    report.torn_last_line = reader.torn
    report.duration_seconds = time.monotonic() - started
    if not dry_run:
        _mark(journal, report)
    return report


def _check_stores(opened: Settings, needed: Settings, journal: Path) -> None:
    """Stores a caller opened read the collection and keys they were opened with."""
    for name, flag in {**_RECORDED, "map": "--map"}.items():
        if getattr(opened, name) != getattr(needed, name):
            raise ConfigError(
                f"the stores given were opened with {flag} {_shown(getattr(opened, name))}, "
                f"but the journal {journal} was written with {_shown(getattr(needed, name))}: "
                "open them with reconcile.ops.undo.journal_settings(settings, journal)"
            )


def _mark(journal: Path, report: UndoReport) -> None:
    """Record the undo in the journal, for `reconcile journals`; never fails the undo."""
    counts = report.to_json()
    fields = ("restored", "already_restored", "conflicts", "skipped_locked", "vanished", "failed")
    try:
        mark_undone(journal, {name: counts[name] for name in fields})
    except OSError as exc:
        # The restore itself is done; only the listing will not know of it.
        log.event(
            "undo.unrecorded", logging.WARNING, journal=str(journal), error=exc.strerror or exc
        )


def _recreate(
    s: Stores, changes: list[dict[str, Any]], report: UndoReport, dry_run: bool, journal: Path
) -> None:
    """Re-create deleted orphan points with an insert-only write.

    No row can be locked for a point no row names: what protects a point that
    exists again (the application re-created it, or a kill -9 left it undeleted) is
    the insert-only write itself, which never overwrites one. A point equal to the
    journaled one (its mark aside) counts as already restored; any other is a
    conflict, left alone. Undo never writes the mark back, and clears it from a
    point it finds already restored: an undone point is deleted again only after
    two fresh sightings.
    """
    report.points += len(changes)
    try:
        wanted = {p.point_id: p for p in (WholePoint.from_json(c["point"]) for c in changes)}
    except (KeyError, TypeError, ValueError):
        raise ConfigError(
            f"journal {journal} has a damaged deletion record (no whole point): "
            "pass a journal written by `reconcile repair`"
        ) from None
    current = s.qdrant.whole(list(wanted))
    todo: list[WholePoint] = []
    marked: list[PointId] = []
    for point_id, point in wanted.items():
        there = current.get(point_id)
        if there is None:
            todo.append(point)
        elif there.without(ORPHAN_KEY).equals(point):
            report.already_restored += 1
            if ORPHAN_KEY in there.payload:
                marked.append(point_id)
        else:
            report.conflict(point_id)
    if dry_run:
        report.restored += len(todo)
        return
    if marked:
        # Only the mark is left if this fails: the count goes on from it, as before.
        with contextlib.suppress(StoreError):
            s.qdrant.apply([DeleteKeys([ORPHAN_KEY], marked)])
    error: StoreError | None = None
    try:
        s.qdrant.insert_only(todo)
    except StoreError as exc:
        error = exc  # the outcome is unknown (a timeout may have landed): re-read
    after = s.qdrant.whole([point.point_id for point in todo])
    if error is not None and not after:
        raise error  # nothing landed (a server too old for insert-only, say): its line
    for point in todo:
        found = after.get(point.point_id)
        # The payload tells ours from a point written meanwhile (insert-only left that
        # one alone). Vectors are not compared here: local mode holds a cosine vector
        # it was just given re-normalized until it is reopened (see WholePoint.equals).
        if found is None:
            report.failed += 1
        elif same(dict(found.payload), dict(point.payload)):
            report.restored += 1
        else:
            report.conflict(point.point_id)


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
                report.conflict(row.point_id)
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


__all__ = ["UndoReport", "journal_settings", "undo"]
