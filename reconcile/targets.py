"""Targeted and incremental scopes: look faces up directly instead of scanning.

Both stores are read by id in chunks: the rows naming a chunk of points (all of
them, so that a point two rows name is still a duplicate) and the points
themselves through `retrieve`. Each chunk is sorted and merged like a scan.
"""

from __future__ import annotations

import re
import sys
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from reconcile.diff import batched
from reconcile.errors import ConfigError
from reconcile.stores.base import Point, PointId, PointStore, Row, point_order
from reconcile.stores.postgres import TIME_TYPES, Postgres, TableInfo

_DURATION = re.compile(r"(\d+)\s*([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta | None:
    """`15m`, `2h`, `7d`, `1w` as a timedelta; None when `text` is not a duration."""
    match = _DURATION.fullmatch(text.strip())
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))}) if match else None


def parse_since(text: str) -> datetime | timedelta:
    """`15m`, `2h`, `7d` (before the database's now) or an ISO timestamp (UTC if no zone)."""
    duration = parse_duration(text)
    if duration is not None:
        return duration
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(
            f"--since {text!r} is neither a duration nor a timestamp: "
            "use e.g. 15m, 2h, 7d or 2026-11-20T00:00Z"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _check_ids_file(path: Path) -> None:
    """A readable file of ids, or one line saying what `path` is instead."""
    fix = "name a file of face ids, one per line, or - for stdin"
    if path.is_dir():
        raise ConfigError(f"--ids-from {path} is a directory: {fix}")
    try:
        with path.open("rb"):
            pass
    except FileNotFoundError:
        raise ConfigError(f"--ids-from {path}: no such file: {fix}") from None
    except OSError as exc:
        raise ConfigError(f"--ids-from {path} cannot be read ({exc.strerror}): {fix}") from None


@dataclass(frozen=True)
class Targets:
    """Which faces a run looks at: ids given by the user, or rows changed since a time."""

    face_ids: tuple[str, ...] = ()
    point_ids: tuple[str, ...] = ()
    ids_from: str | None = None  # a file of face ids, one per line; "-" is stdin
    since: datetime | timedelta | None = None

    def __post_init__(self) -> None:
        by_id = bool(self.face_ids or self.point_ids or self.ids_from)
        if by_id and self.since is not None:
            raise ConfigError("choose ids (--face-id, --point-id, --ids-from) or --since, not both")
        if not by_id and self.since is None:
            raise ConfigError("a targeted run needs --face-id, --point-id, --ids-from or --since")
        if self.ids_from not in (None, "-"):
            _check_ids_file(Path(str(self.ids_from)))

    @property
    def by_id(self) -> bool:
        return self.since is None

    def describe(self, since: datetime | None) -> str:
        return "targeted" if self.by_id else f"since {since.isoformat() if since else '?'}"


@dataclass
class Chunk:
    rows: list[Row]
    points: list[Point]
    unknown: list[str]


def _parse(value: str, pg_type: str) -> str | int | None:
    """An id in the column's canonical form, or None when it cannot be one."""
    value = value.strip()
    if pg_type == "uuid":
        try:
            return str(uuid.UUID(value))
        except ValueError:
            return None
    if pg_type in {"smallint", "integer", "bigint"}:
        return int(value) if re.fullmatch(r"-?\d{1,19}", value) else None
    return value


def _face_ids(targets: Targets) -> Iterator[str]:
    yield from targets.face_ids
    if targets.ids_from is not None:
        lines: Iterable[str]
        if targets.ids_from == "-":
            lines = sys.stdin
            yield from (line.strip() for line in lines if line.strip())
        else:
            with Path(targets.ids_from).open(encoding="utf-8") as f:
                yield from (line.strip() for line in f if line.strip())


class Lookup:
    """Reads the targeted faces chunk by chunk; remembers the points already merged."""

    def __init__(self, postgres: Postgres, qdrant: PointStore, info: TableInfo, size: int) -> None:
        self.postgres = postgres
        self.qdrant = qdrant
        self.info = info
        self.size = size
        # Targeted runs are small by design; this set keeps a point named twice
        # (by two ids, or in two chunks) from being counted twice.
        self.seen: set[PointId] = set()

    def by_ids(self, targets: Targets) -> Iterator[Chunk]:
        for batch in batched(_face_ids(targets), self.size):
            yield self._faces(batch)
        for batch in batched(targets.point_ids, self.size):
            points: list[PointId] = []
            unknown: list[str] = []
            for raw in batch:
                parsed = _parse(raw, self.info.point_type)
                if parsed is None:
                    unknown.append(raw)
                else:
                    points.append(parsed)
            merged = {p for p in points if p in self.seen}
            chunk = self.chunk(points)
            found = {r.point_id for r in chunk.rows} | {p.point_id for p in chunk.points}
            chunk.unknown = unknown + [str(p) for p in points if p not in found and p not in merged]
            yield chunk

    def since(self, since: datetime) -> Iterator[Chunk]:
        if self.info.updated_type not in TIME_TYPES:
            raise ConfigError(
                f"--since needs a timestamp column {self.postgres.settings.updated_column!r} in "
                f"{self.info.name}: set --updated-column"
            )
        changed = self.postgres.points_changed_since(since)
        batch: list[PointId] = []
        for point in changed:
            batch.append(point)
            if len(batch) == self.size:
                yield self.chunk(batch)
                batch = []
        if batch:
            yield self.chunk(batch)

    def _faces(self, face_ids: list[str]) -> Chunk:
        parsed = {raw: _parse(raw, self.info.id_type) for raw in face_ids}
        valid = [str(v) for v in parsed.values() if v is not None]
        found = self.postgres.points_of_faces(valid) if valid else {}
        unknown = [raw for raw, v in parsed.items() if v is None or str(v) not in found]
        without_point = [Row(None, face, None) for face, point in found.items() if point is None]
        chunk = self.chunk([p for p in found.values() if p is not None])
        chunk.rows += without_point
        chunk.unknown = unknown
        return chunk

    def chunk(self, point_ids: list[PointId]) -> Chunk:
        fresh = sorted({p for p in point_ids if p not in self.seen}, key=point_order)
        self.seen.update(fresh)
        if not fresh:
            return Chunk([], [], [])
        rows = self.postgres.rows_of_points(fresh)
        payloads = self.qdrant.retrieve(fresh)
        points = [Point(p, payloads[p]) for p in fresh if p in payloads]
        return Chunk(rows, points, [])
