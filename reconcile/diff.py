"""The pure merge of two ascending streams into drift records (no I/O here)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from reconcile.errors import StreamOrderError

PointId = int | str
T = TypeVar("T")


class Kind(StrEnum):
    """Drift kinds; the names are part of the JSON interface."""

    IN_SYNC = "in_sync"
    MISSING_PERSON = "missing_person"
    WRONG_PERSON = "wrong_person"
    STALE_PERSON = "stale_person"
    FLAG_MISMATCH = "flag_mismatch"
    MISSING_POINT = "missing_point"
    ORPHAN_POINT = "orphan_point"
    DUPLICATE_POINT = "duplicate_point"


DRIFT_KINDS = tuple(kind.value for kind in Kind if kind is not Kind.IN_SYNC)
REPAIRABLE = frozenset(
    {Kind.MISSING_PERSON, Kind.WRONG_PERSON, Kind.STALE_PERSON, Kind.FLAG_MISMATCH}
)


@dataclass(frozen=True, slots=True)
class Keys:
    """The payload keys compared: the person, and optionally a boolean sentinel."""

    person: str
    flag: str | None = None

    def expected(self, person: PointId | None) -> dict[str, Any]:
        """The payload values PostgreSQL implies; a None person means "no person"."""
        values: dict[str, Any] = {self.person: person}
        if self.flag is not None:
            values[self.flag] = person is not None
        return values

    def actual(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """The configured keys that are present (an absent key stays absent, unlike null)."""
        return {k: payload[k] for k in (self.person, self.flag) if k is not None and k in payload}


@dataclass(frozen=True, slots=True)
class Row:
    """One face row; `person_id` is already the canonical payload value (lower-case UUID)."""

    point_id: PointId | None
    face_id: str
    person_id: PointId | None
    recent: bool = False  # changed within the grace window: not judged, not repaired


@dataclass(frozen=True, slots=True)
class Point:
    """One Qdrant point with only the configured payload keys."""

    point_id: PointId
    payload: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Drift:
    """One drifted point: what PostgreSQL implies and what the payload holds."""

    kind: Kind
    point_id: PointId
    face_ids: tuple[str, ...]
    expected: dict[str, Any] | None  # None: no single row (orphan or duplicate)
    actual: dict[str, Any] | None  # None: no point
    person: str | None  # who this drift is charged to in the per-person summary

    def record(self) -> dict[str, Any]:
        """The `--details` JSON line (also the repair spill format)."""
        record: dict[str, Any] = {
            "kind": self.kind.value,
            "point_id": self.point_id,
            "face_id": self.face_ids[0] if self.face_ids else None,
            "expected": self.expected,
            "actual": self.actual,
        }
        if len(self.face_ids) > 1:
            record["face_ids"] = list(self.face_ids)
        return record


@dataclass
class ScanStats:
    """Counters the merge keeps while it streams."""

    rows: int = 0
    points: int = 0
    rows_without_point: int = 0
    in_sync: int = 0
    skipped_recent: int = 0  # point ids whose rows changed within the grace window

    def merge(self, other: ScanStats) -> None:
        self.rows += other.rows
        self.points += other.points
        self.rows_without_point += other.rows_without_point
        self.in_sync += other.in_sync
        self.skipped_recent += other.skipped_recent


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Lists of `size` items (the last may be shorter); itertools.batched is 3.12+."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def point_order(point_id: PointId) -> tuple[bool, int, str]:
    # Qdrant orders integer ids before UUIDs; lower-case UUID strings sort like
    # PostgreSQL's byte-wise uuid order, so one key orders both streams.
    if isinstance(point_id, str):
        return (True, 0, point_id)
    return (False, point_id, "")


def _same(a: Any, b: Any) -> bool:
    # True == 1 in Python, but a payload holding 1 is not the boolean true.
    return type(a) is type(b) and bool(a == b)


def classify(row: Row, payload: Mapping[str, Any], keys: Keys) -> Kind:
    """The kind of one point named by exactly one row."""
    raw = payload.get(keys.person)
    expected = row.person_id
    if expected is None:
        if raw is not None:
            return Kind.STALE_PERSON
    elif raw is None:
        return Kind.MISSING_PERSON
    elif not _same(raw, expected):
        return Kind.WRONG_PERSON
    if keys.flag is not None and payload.get(keys.flag) is not (expected is not None):
        return Kind.FLAG_MISMATCH
    return Kind.IN_SYNC


Key = tuple[bool, int, str]


def _row_groups(rows: Iterable[Row], stats: ScanStats) -> Iterator[tuple[Key, PointId, list[Row]]]:
    """Rows grouped by point id with the group's order key, checking the stream ascends."""
    current: PointId | None = None
    current_key: Key = (False, 0, "")
    group: list[Row] = []
    for row in rows:
        stats.rows += 1
        point_id = row.point_id
        if point_id is None:
            stats.rows_without_point += 1
            continue
        if point_id != current:
            key = point_order(point_id)
            if current is not None:
                if key < current_key:
                    raise StreamOrderError(
                        f"PostgreSQL rows are not ascending by point id ({point_id!r} after "
                        f"{current!r}): check the point column's type and collation"
                    )
                yield current_key, current, group
                group = []
            current, current_key = point_id, key
        group.append(row)
    if current is not None:
        yield current_key, current, group


def _checked_points(points: Iterable[Point], stats: ScanStats) -> Iterator[tuple[Key, Point]]:
    previous: Key | None = None
    for point in points:
        key = point_order(point.point_id)
        if previous is not None and key <= previous:
            raise StreamOrderError(
                f"Qdrant points are not strictly ascending ({point.point_id!r} after an id "
                "not below it): the scroll order is not what the merge needs"
            )
        stats.points += 1
        previous = key
        yield key, point


def _label(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


def _duplicate(point_id: PointId, group: list[Row], point: Point | None, keys: Keys) -> Drift:
    """A point named by several rows is one duplicate_point, whatever its payload."""
    persons = sorted(_label(r.person_id) for r in group if r.person_id is not None)
    return Drift(
        Kind.DUPLICATE_POINT,
        point_id,
        tuple(r.face_id for r in group),
        None,
        None if point is None else keys.actual(point.payload),
        persons[0] if persons else None,
    )


def _missing(point_id: PointId, row: Row, keys: Keys) -> Drift:
    person = None if row.person_id is None else _label(row.person_id)
    return Drift(
        Kind.MISSING_POINT,
        point_id,
        (row.face_id,),
        keys.expected(row.person_id),
        None,
        person,
    )


def _matched(row: Row, point: Point, keys: Keys) -> Drift | None:
    kind = classify(row, point.payload, keys)
    if kind is Kind.IN_SYNC:
        return None
    # A stale payload is charged to the person it still names: that person's
    # searches are the ones returning a face that is no longer theirs.
    charged = point.payload.get(keys.person) if kind is Kind.STALE_PERSON else row.person_id
    return Drift(
        kind,
        point.point_id,
        (row.face_id,),
        keys.expected(row.person_id),
        keys.actual(point.payload),
        None if charged is None else _label(charged),
    )


def diff(
    rows: Iterable[Row], points: Iterable[Point], keys: Keys, stats: ScanStats
) -> Iterator[Drift]:
    """Merge-join two ascending streams; yield one Drift per drifted point id.

    Each distinct point id gets exactly one kind; in-sync points are only counted
    in `stats`, so a clean collection costs no allocation per point.
    """
    # Each id's order key is computed once, where its stream is checked: the loop
    # below compares keys for every point of the collection.
    groups = _row_groups(rows, stats)
    points_iter = _checked_points(points, stats)
    group = next(groups, None)
    current = next(points_iter, None)
    while group is not None or current is not None:
        if group is not None and any(row.recent for row in group[2]):
            # An application write may be in flight for this face: judge it next run.
            stats.skipped_recent += 1
            if current is not None and current[0] == group[0]:
                current = next(points_iter, None)
            group = next(groups, None)
            continue
        if current is None or (group is not None and group[0] < current[0]):
            assert group is not None
            _, point_id, rows_ = group
            if len(rows_) > 1:
                yield _duplicate(point_id, rows_, None, keys)
            else:
                yield _missing(point_id, rows_[0], keys)
            group = next(groups, None)
        elif group is None or current[0] < group[0]:
            point = current[1]
            yield Drift(
                Kind.ORPHAN_POINT,
                point.point_id,
                (),
                None,
                keys.actual(point.payload),
                None,
            )
            current = next(points_iter, None)
        else:
            _, point_id, rows_ = group
            point = current[1]
            drift = (
                _duplicate(point_id, rows_, point, keys)
                if len(rows_) > 1
                else _matched(rows_[0], point, keys)
            )
            if drift is None:
                stats.in_sync += 1
            else:
                yield drift
            group = next(groups, None)
            current = next(points_iter, None)
