"""The report contract, counting drift, the per-person breakdown, and the details file.

Every operation returns a `Report`: `to_json()` is its documented JSON (keys
are only ever added within a `SCHEMA_VERSION`), `exit_code` what the CLI exits with.
"""

from __future__ import annotations

import heapq
import json
import os
import tempfile
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol

from reconcile.diff import DRIFT_KINDS, REPAIRABLE, SUB_KINDS, Drift, Keys, Kind, ScanStats
from reconcile.errors import ConfigError, ExitCode
from reconcile.mapping import label

SCHEMA_VERSION = 1
KEY_PREFIX = "key:"  # `--fail-on key:NAME`


class Report(Protocol):
    """What every operation returns, and all the CLI needs of it."""

    def to_json(self) -> dict[str, Any]: ...

    @property
    def exit_code(self) -> ExitCode: ...


class ScopeKind(StrEnum):
    """Which faces an audit looked at; the first word of the report's `scope`."""

    FULL = "full"
    SHARD = "shard"  # "shard i/N"
    TARGETED = "targeted"  # given face or point ids
    SINCE = "since"  # "since <timestamp>": --since and --incremental

    @property
    def scanned(self) -> bool:
        """A scan of the id space (all of it or a slice), not a lookup of some faces."""
        return self in (ScopeKind.FULL, ScopeKind.SHARD)


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
    scope: str = "full"  # "full", "shard i/N", "targeted" or "since <timestamp>" (ScopeKind)
    unknown_ids: list[str] = field(default_factory=list)  # targeted ids found in neither store
    started_at: datetime | None = None  # the database's clock when the run began
    skipped_recent: int = 0  # in the grace window: neither counted as drift nor repaired
    complete: bool = True  # False when --max-duration stopped the scan early
    # False when more persons drifted than Tally keeps counters for: the counts in
    # top_persons are then upper bounds, each at most top_persons_error[person] too high.
    top_persons_exact: bool = True
    top_persons_error: dict[str, int] = field(default_factory=dict)
    persons_capacity: int = 0  # how many per-person counters the audit kept
    # Per compared key, how many matched points it differs on: {key: {missing, wrong, stale}}.
    keys: dict[str, dict[str, int]] = field(default_factory=dict)
    # Per mapped key, its most drifted values: (value, drifted, error), as top_persons.
    top_values: dict[str, list[tuple[str, int, int]]] = field(default_factory=dict)

    @property
    def drifted(self) -> int:
        return sum(n for kind, n in self.counts.items() if kind != Kind.IN_SYNC)

    @property
    def repairable(self) -> int:
        return sum(self.counts[kind] for kind in REPAIRABLE)

    @property
    def scope_kind(self) -> ScopeKind:
        return ScopeKind(self.scope.split(" ", 1)[0])

    def failing(self, kinds: Collection[str] = DRIFT_KINDS) -> ExitCode:
        """DRIFT when any of `kinds` was found or the scan stopped early, else OK.

        A kind `key:NAME` is drift of that compared key, whatever the point's kind.
        """
        drifting = any(
            sum(self.keys.get(kind[4:], {}).values())
            if kind.startswith(KEY_PREFIX)
            else self.counts[kind]
            for kind in kinds
        )
        return ExitCode.DRIFT if drifting or not self.complete else ExitCode.OK

    @property
    def exit_code(self) -> ExitCode:
        return self.failing()

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
            "top_persons": [
                {"person_id": p, "drifted": n, "error": self.top_persons_error.get(p, 0)}
                for p, n in self.top_persons
            ],
            "top_persons_exact": self.top_persons_exact,
            "keys": self.keys,
            "top_values": {
                key: [{"value": v, "drifted": n, "error": e} for v, n, e in values]
                for key, values in self.top_values.items()
            },
            "duration_seconds": round(self.duration_seconds, 3),
            "details": self.details,
            "scope": self.scope,
            "skipped_recent": self.skipped_recent,
            "complete": self.complete,
            "unknown_ids": self.unknown_ids,
            "started_at": None if self.started_at is None else self.started_at.isoformat(),
        }


def person_capacity(top: int) -> int:
    """How many per-person counters an audit keeps, whatever the size of the table.

    Space-Saving overcounts by at most N/capacity (N: drifts charged to persons):
    100 counters per listed person make that a hundredth of N/top, small beside the
    count of any listed person with a real share of the drift. At least 1000, so
    that the usual audit (fewer drifted persons than that) is counted exactly. A
    counter with its UUID key costs about 260 bytes (measured with tracemalloc):
    1000 are about 0.3 MB.
    """
    return max(1000, 100 * top)


class SpaceSaving:
    """Approximate counts of the most frequent keys in `capacity` counters.

    Space-Saving (Metwally, Agrawal, El Abbadi 2005) with its stream summary: the
    keys are bucketed by count and the smallest count is tracked, so an update is
    O(1). When all counters are taken, a new key replaces the oldest key of the
    smallest count and inherits that count as its `error`: its true count lies in
    [count - error, count], and every key seen more than N/capacity times is kept.
    Until the first replacement (`exact`), the counts are exact.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity {capacity} must be at least 1")
        self.capacity = capacity
        self.total = 0
        self.exact = True
        self._count: dict[str, int] = {}
        self._error: dict[str, int] = {}
        # count -> keys of that count, oldest first (dicts keep insertion order), so
        # that which key is replaced depends only on the order of the stream.
        self._buckets: dict[int, dict[str, None]] = {}
        self._min = 0

    def __len__(self) -> int:
        return len(self._count)

    def add(self, key: str) -> str | None:
        """Count `key` once; returns the key it replaced, if any."""
        self.total += 1
        victim: str | None = None
        count = self._count.get(key)
        if count is not None:
            self._leave(key, count)
        elif len(self._count) < self.capacity:
            count = 0
            self._error[key] = 0
        else:
            count = self._min
            victim = next(iter(self._buckets[count]))
            self._leave(victim, count)
            del self._count[victim], self._error[victim]
            self._error[key] = count
            self.exact = False
        self._count[key] = count + 1
        self._buckets.setdefault(count + 1, {})[key] = None
        # A new key's 1 is the smallest count; else the minimum moves up only when
        # its last key left its bucket.
        if count == 0 or (count == self._min and count not in self._buckets):
            self._min = count + 1
        return victim

    def _leave(self, key: str, count: int) -> None:
        bucket = self._buckets[count]
        del bucket[key]
        if not bucket:
            del self._buckets[count]

    def top(self, n: int) -> list[tuple[str, int]]:
        # Ties are broken by key so that two runs print the same list.
        return heapq.nsmallest(n, self._count.items(), key=lambda item: (-item[1], item[0]))

    def error(self, key: str) -> int:
        return self._error.get(key, 0)


class Tally:
    """Counts a drift stream by kind, by charged person, by compared key and by the
    values of the mapped keys, in bounded memory."""

    def __init__(
        self, top: int = 10, capacity: int | None = None, keys: Keys | None = None
    ) -> None:
        capacity = person_capacity(top) if capacity is None else capacity
        self.kinds: Counter[Kind] = Counter()
        self.persons = SpaceSaving(capacity)
        names: Sequence[str] = () if keys is None else keys.names
        self.keys: dict[str, Counter[str]] = {name: Counter() for name in names}
        mapped = () if keys is None else keys.mapped
        self.values = {key: SpaceSaving(capacity) for key, _rule in mapped}

    def add(self, drift: Drift) -> None:
        self.kinds[drift.kind] += 1
        if drift.person is not None:
            self.persons.add(drift.person)
        for key, sub in drift.keys.items():
            self.keys.setdefault(key, Counter())[sub] += 1
            counter = self.values.get(key)
            if counter is not None:
                # As for the person: a stale value is charged to the value the payload
                # still holds (its searches find the face), any other to the row's value.
                side = drift.actual if sub == "stale" else drift.expected
                counter.add(label(None if side is None else side.get(key)))

    def key_counts(self) -> dict[str, dict[str, int]]:
        return {key: {sub: c[sub] for sub in SUB_KINDS} for key, c in self.keys.items()}

    def top_values(self, n: int) -> dict[str, list[tuple[str, int, int]]]:
        return {
            key: [(value, count, counter.error(value)) for value, count in counter.top(n)]
            for key, counter in self.values.items()
        }

    def counts(self, stats: ScanStats) -> dict[str, int]:
        counts = {kind.value: self.kinds[kind] for kind in Kind}
        counts[Kind.IN_SYNC.value] = stats.in_sync
        return counts

    def top(self, n: int) -> list[tuple[str, int]]:
        return self.persons.top(n)

    def errors(self, n: int) -> dict[str, int]:
        """The overcount of each of the `n` top persons (all 0 while exact)."""
        return {p: self.persons.error(p) for p, _ in self.top(n)}


def unwritable(path: Path) -> str | None:
    """Why a file could not be written at `path`, or None when it could.

    Outputs written at the end of a run (metrics, incremental state) are probed
    before anything is read, so that a typo costs a second, not a whole scan. The
    probe does what the real write does: a temporary file in the directory (made if
    missing, as the writers make it), removed at once. Permission bits alone would
    not do: root may write where the bits say no, and not on a read-only mount.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent)
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    os.unlink(tmp)
    return None


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
