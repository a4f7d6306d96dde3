"""Journals on disk: list them (`reconcile journals`), delete those past their retention.

A journal says which person is in which photo, so it should not outlive its use:
a repair deletes the journals of its table and collection older than
`--journal-retention` after a run that succeeded. Only files whose first line is
a reconcile journal header are ever deleted; anything else in the directory is
left alone, whatever its name.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from reconcile import log
from reconcile.errors import ConfigError, ExitCode
from reconcile.journal import JournalReader, read_header, started_at, state_dir
from reconcile.report import SCHEMA_VERSION

# A file named like a default journal but without a header is a journal that lost
# it (a disk error, a bad copy), not some other file: it is listed as damaged.
_DEFAULT_PREFIX = "repair-"


@dataclass(frozen=True)
class JournalEntry:
    """One journal file: what it was written for, how many points, whether it was undone."""

    path: str
    started: str | None = None
    table: str | None = None
    collection: str | None = None
    points: int = 0  # change lines: points the repair journaled (and then wrote)
    undone: str = "no"  # "yes", "partly" (conflicts, locked, vanished or failed), "no"
    undone_at: str | None = None  # the last undo's time
    status: str = "ok"  # "ok", "torn" (a killed repair's last line: still undoable), "damaged"
    error: str | None = None  # why a damaged journal cannot be read

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "started": self.started,
            "table": self.table,
            "collection": self.collection,
            "points": self.points,
            "undone": self.undone,
            "undone_at": self.undone_at,
            "status": self.status,
            "error": self.error,
        }


@dataclass(frozen=True)
class JournalsReport:
    directory: str
    journals: list[JournalEntry] = field(default_factory=list)

    @property
    def exit_code(self) -> ExitCode:
        # A listing is information: a damaged journal is shown, not a failure.
        return ExitCode.OK

    @property
    def damaged(self) -> int:
        return sum(entry.status == "damaged" for entry in self.journals)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "directory": self.directory,
            "journals": [entry.to_json() for entry in self.journals],
            "damaged": self.damaged,
        }


def _candidates(directory: Path) -> list[Path]:
    """The `*.jsonl` regular files directly in `directory` (a symlink is never followed)."""
    try:
        if not directory.exists():
            return []  # no repair has written a journal here yet
        if not directory.is_dir():
            raise ConfigError(f"{directory} is not a directory: pass the journals' directory")
        paths = sorted(directory.glob("*.jsonl"))
    except OSError as exc:
        raise ConfigError(f"cannot list {directory}: {exc.strerror or exc}") from None
    return [p for p in paths if p.is_file() and not p.is_symlink()]


def _entry(path: Path) -> JournalEntry | None:
    """What `reconcile journals` says of one file; None for a file that is no journal."""
    try:
        header = read_header(path)
        if header is None:
            if path.name.startswith(_DEFAULT_PREFIX):
                return JournalEntry(str(path), status="damaged", error="no journal header")
            return None
        reader = JournalReader(path)
        points, last_undo = 0, None
        for record in reader.records():
            if record.get("type") == "change":
                points += 1
            elif record.get("type") == "undo":
                last_undo = record
    except (ConfigError, OSError) as exc:
        return JournalEntry(str(path), status="damaged", error=str(exc))
    undone = "no"
    if last_undo is not None:
        left = ("conflicts", "skipped_locked", "vanished", "failed")
        undone = "partly" if any(last_undo.get(k) for k in left) else "yes"
    keys = header.get("table"), header.get("collection"), header.get("started")
    table, collection, started = (None if v is None else str(v) for v in keys)
    return JournalEntry(
        str(path),
        started=started,
        table=table,
        collection=collection,
        points=points,
        undone=undone,
        undone_at=None if last_undo is None else str(last_undo.get("at")),
        status="torn" if reader.torn else "ok",
    )


def list_journals(directory: Path | None = None) -> JournalsReport:
    """Every journal in `directory` (default: the state directory), oldest first.

    A missing directory holds no journals; a file that cannot be read as a
    journal is listed as damaged, with the reason.
    """
    directory = directory or state_dir()
    entries = [e for e in map(_entry, _candidates(directory)) if e is not None]
    entries.sort(key=lambda e: (e.started is None, e.started or "", e.path))
    return JournalsReport(str(directory), entries)


def prune_journals(
    directory: Path,
    *,
    table: str,
    collection: str,
    older_than: datetime,
    keep: Path | None = None,
) -> int:
    """Delete the journals of `table` and `collection` started before `older_than`.

    Only files with a journal header are looked at, and only those whose header
    names this table and collection and a start time; `keep` (the journal just
    written) never goes. Returns how many were deleted; a file that cannot be
    deleted is logged and left.
    """
    deleted = 0
    kept = keep.resolve() if keep is not None else None
    try:
        candidates = _candidates(directory)
    except ConfigError:
        return 0  # nothing to clean up where nothing can be listed
    for path in candidates:
        try:
            header = read_header(path)
        except ConfigError:
            continue
        if header is None or (header.get("table"), header.get("collection")) != (
            table,
            collection,
        ):
            continue
        started = started_at(header)
        if started is None or started >= older_than or path.resolve() == kept:
            continue
        try:
            path.unlink()
        except OSError as exc:
            log.event("journal.not_deleted", logging.WARNING, journal=str(path), error=exc.strerror)
            continue
        deleted += 1
    return deleted


__all__ = ["JournalEntry", "JournalsReport", "list_journals", "prune_journals"]
