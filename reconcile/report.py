"""Counting drift, the per-person breakdown, the JSON report, and the details file."""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from reconcile.diff import REPAIRABLE, Drift, Kind, ScanStats
from reconcile.errors import ConfigError

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class AuditReport:
    """The result of one audit; `to_json` is the documented interface."""

    table: str
    collection: str
    rows: int
    points: int
    rows_without_point: int
    counts: dict[str, int]
    top_persons: list[tuple[str, int]]
    duration_seconds: float
    details: str | None = None
    scope: str = "full"  # "full", "targeted" or "since <timestamp>"
    unknown_ids: list[str] = field(default_factory=list)  # targeted ids found in neither store
    started_at: datetime | None = None  # the database's clock when the run began
    skipped_recent: int = 0  # in the grace window: neither counted as drift nor repaired
    complete: bool = True  # False when --max-duration stopped the scan early

    @property
    def drifted(self) -> int:
        return sum(n for kind, n in self.counts.items() if kind != Kind.IN_SYNC)

    @property
    def repairable(self) -> int:
        return sum(self.counts[kind] for kind in REPAIRABLE)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "table": self.table,
            "collection": self.collection,
            "scanned": {
                "rows": self.rows,
                "points": self.points,
                "rows_without_point": self.rows_without_point,
            },
            "counts": dict(self.counts),
            "drifted": self.drifted,
            "repairable": self.repairable,
            "top_persons": [{"person_id": p, "drifted": n} for p, n in self.top_persons],
            "duration_seconds": round(self.duration_seconds, 3),
            "details": self.details,
            "scope": self.scope,
            "skipped_recent": self.skipped_recent,
            "complete": self.complete,
            "unknown_ids": self.unknown_ids,
            "started_at": None if self.started_at is None else self.started_at.isoformat(),
        }


@dataclass
class Tally:
    """Counts a drift stream by kind and by charged person, in O(persons) memory."""

    kinds: Counter[Kind] = field(default_factory=Counter)
    persons: Counter[str] = field(default_factory=Counter)

    def add(self, drift: Drift) -> None:
        self.kinds[drift.kind] += 1
        if drift.person is not None:
            self.persons[drift.person] += 1

    def counts(self, stats: ScanStats) -> dict[str, int]:
        counts = {kind.value: self.kinds[kind] for kind in Kind}
        counts[Kind.IN_SYNC.value] = stats.in_sync
        return counts

    def top(self, n: int) -> list[tuple[str, int]]:
        # Ties are broken by person id so that two runs print the same list.
        return sorted(self.persons.items(), key=lambda item: (-item[1], item[0]))[:n]


class PrivateFile:
    """A file created with mode 0600, written to a temporary name and renamed on success.

    Details say which person is in which photo, so only the owner may read them; and
    a run that fails half-way must not leave a file that looks complete.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
        except OSError as exc:
            raise ConfigError(
                f"cannot write {path}: {exc.strerror}; choose a writable path"
            ) from None
        self._tmp = Path(tmp)
        self.file: IO[str] = os.fdopen(fd, "w", encoding="utf-8")

    def __enter__(self) -> PrivateFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.file.close()
        if exc_type is None:
            os.replace(self._tmp, self.path)
        else:
            self._tmp.unlink(missing_ok=True)

    def write_record(self, record: dict[str, Any]) -> None:
        self.file.write(json.dumps(record, separators=(",", ":")) + "\n")
