"""The pure merge of two ascending streams into drift records (no I/O here)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, Self, TypeVar

from reconcile.errors import StreamOrderError
from reconcile.mapping import Rule
from reconcile.settings import Settings
from reconcile.stores.base import Point, PointId, Row

T = TypeVar("T")


class Kind(StrEnum):
    """Drift kinds; the names are part of the JSON interface."""

    IN_SYNC = "in_sync"
    MISSING_PERSON = "missing_person"
    WRONG_PERSON = "wrong_person"
    STALE_PERSON = "stale_person"
    FLAG_MISMATCH = "flag_mismatch"
    PAYLOAD_MISMATCH = "payload_mismatch"
    MISSING_POINT = "missing_point"
    ORPHAN_POINT = "orphan_point"
    DUPLICATE_POINT = "duplicate_point"


DRIFT_KINDS = tuple(kind.value for kind in Kind if kind is not Kind.IN_SYNC)
REPAIRABLE = frozenset(
    {
        Kind.MISSING_PERSON,
        Kind.WRONG_PERSON,
        Kind.STALE_PERSON,
        Kind.FLAG_MISMATCH,
        Kind.PAYLOAD_MISMATCH,
    }
)
PERSON_KINDS = {
    "missing": Kind.MISSING_PERSON,
    "wrong": Kind.WRONG_PERSON,
    "stale": Kind.STALE_PERSON,
}
# How one compared key differs, in the per-key breakdown (`keys` in the report).
SUB_KINDS = ("missing", "wrong", "stale")


@dataclass(frozen=True, slots=True)
class Keys:
    """The payload keys compared: the person, optionally a boolean sentinel derived from
    it, and the mapped keys (`--map`) with the rule of their column's type."""

    person: str
    flag: str | None = None
    mapped: tuple[tuple[str, Rule], ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        """Every compared key: the person, the flag, the mapped keys."""
        flag = () if self.flag is None else (self.flag,)
        return (self.person, *flag, *(key for key, _ in self.mapped))

    def expected(self, row: Row) -> dict[str, Any]:
        """The payload values PostgreSQL implies; None means "absent" (no person, a NULL)."""
        person = row.person_id
        values: dict[str, Any] = {self.person: person}
        if self.flag is not None:
            values[self.flag] = person is not None
        for (key, _rule), value in zip(self.mapped, row.values, strict=False):
            values[key] = value
        return values

    def actual(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """The compared keys that are present (an absent key stays absent, unlike null)."""
        return {k: payload[k] for k in self.names if k in payload}

    def differing(self, row: Row, payload: Mapping[str, Any]) -> dict[str, str]:
        """Each compared key that disagrees, and how: `missing`, `wrong` or `stale`."""
        found: dict[str, str] = {}
        person = _sub_kind(row.person_id, payload.get(self.person), _same)
        if person is not None:
            found[self.person] = person
        if self.flag is not None:
            flag = payload.get(self.flag)
            if flag is None:
                found[self.flag] = "missing"
            elif flag is not (row.person_id is not None):
                found[self.flag] = "wrong"
        for (key, rule), value in zip(self.mapped, row.values, strict=False):
            sub = _sub_kind(value, payload.get(key), rule.agrees)
            if sub is not None:
                found[key] = sub
        return found

    def kind(self, differing: Mapping[str, str]) -> Kind:
        """The one kind of a matched point: the person first, then the flag, then the rest."""
        person = differing.get(self.person)
        if person is not None:
            return PERSON_KINDS[person]
        if self.flag is not None and self.flag in differing:
            return Kind.FLAG_MISMATCH
        return Kind.PAYLOAD_MISMATCH if differing else Kind.IN_SYNC


def compared_keys(settings: Settings, rules: Iterable[Rule] = ()) -> Keys:
    """The keys a run compares: the settings' keys, with the rules `Postgres.inspect` found."""
    mapped = tuple(zip((m.key for m in settings.map), rules, strict=True))
    return Keys(settings.person_key, settings.flag_key, mapped)


def _sub_kind(expected: Any, raw: Any, agrees: Any) -> str | None:
    if expected is None:
        return None if raw is None else "stale"
    if raw is None:
        return "missing"
    return None if agrees(raw, expected) else "wrong"


@dataclass(frozen=True, slots=True)
class Drift:
    """One drifted point: what PostgreSQL implies and what the payload holds."""

    kind: Kind
    point_id: PointId
    face_ids: tuple[str, ...]
    expected: dict[str, Any] | None  # None: no single row (orphan or duplicate)
    actual: dict[str, Any] | None  # None: no point
    person: str | None  # who this drift is charged to in the per-person summary
    # Matched points only: each compared key that differs, and how (`Keys.differing`).
    keys: dict[str, str] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """The `--details` JSON line (also the repair spill format)."""
        record: dict[str, Any] = {
            "kind": self.kind.value,
            "point_id": self.point_id,
            "face_id": self.face_ids[0] if self.face_ids else None,
            "expected": self.expected,
            "actual": self.actual,
            "keys": self.keys,
        }
        if len(self.face_ids) > 1:
            record["face_ids"] = list(self.face_ids)
        return record


class Tallied:
    """A dataclass of counters (ints and Counters) that adds another one into itself.

    Slices scanned in parallel and batches applied one by one each count on their
    own and are summed at the end; every field is summed, so a new counter cannot
    be forgotten in the sum.
    """

    def merge(self, other: Self) -> None:
        for f in fields(self):  # type: ignore[arg-type]  # subclasses are dataclasses
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if isinstance(mine, Counter):
                mine.update(theirs)
            else:
                setattr(self, f.name, mine + theirs)


@dataclass
class ScanStats(Tallied):
    """Counters the merge keeps while it streams."""

    rows: int = 0
    points: int = 0
    rows_without_point: int = 0
    in_sync: int = 0
    skipped_recent: int = 0  # point ids whose rows changed within the grace window


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


def _same(a: Any, b: Any) -> bool:
    # True == 1 in Python, but a payload holding 1 is not the boolean true.
    return type(a) is type(b) and bool(a == b)


def classify(row: Row, payload: Mapping[str, Any], keys: Keys) -> Kind:
    """The kind of one point named by exactly one row."""
    return keys.kind(keys.differing(row, payload))


def _label(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


def _duplicate(point_id: PointId, group: list[Row], point: Point | None, keys: Keys) -> Drift:
    """A point named by several rows is one duplicate_point, whatever its payload."""
    persons = sorted(_label(r.person_id) for r in group if r.person_id is not None)
    return Drift(
        Kind.DUPLICATE_POINT,
        point_id,
        # Sorted: the rows of one point come in no particular order from PostgreSQL.
        tuple(sorted(r.face_id for r in group)),
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
        keys.expected(row),
        None,
        person,
    )


def _matched(row: Row, point: Point, keys: Keys) -> Drift | None:
    differing = keys.differing(row, point.payload)
    kind = keys.kind(differing)
    if kind is Kind.IN_SYNC:
        return None
    # A stale payload is charged to the person it still names: that person's
    # searches are the ones returning a face that is no longer theirs.
    charged = point.payload.get(keys.person) if kind is Kind.STALE_PERSON else row.person_id
    return Drift(
        kind,
        point.point_id,
        (row.face_id,),
        keys.expected(row),
        keys.actual(point.payload),
        None if charged is None else _label(charged),
        differing,
    )


def _before(a: PointId, b: PointId) -> bool:
    """Whether `a` comes before `b` in Qdrant's order (integers before UUIDs)."""
    return a < b if type(a) is type(b) else isinstance(b, str)  # type: ignore[operator]


def _out_of_order(stream: str, point_id: PointId, previous: PointId) -> StreamOrderError:
    if stream == "rows":
        return StreamOrderError(
            f"PostgreSQL rows are not ascending by point id ({point_id!r} after "
            f"{previous!r}): check the point column's type and collation"
        )
    return StreamOrderError(
        f"Qdrant points are not strictly ascending ({point_id!r} after {previous!r}): "
        "the scroll order is not what the merge needs"
    )


def diff(
    rows: Iterable[Row], points: Iterable[Point], keys: Keys, stats: ScanStats
) -> Iterator[Drift]:
    """Merge-join two ascending streams; yield one Drift per drifted point id.

    Each distinct point id gets exactly one kind; in-sync points are only counted
    in `stats`, so a clean collection costs no allocation per point.

    This loop runs once per point of the collection, so it is written for speed:
    one loop over both streams (no generator per stream), ids compared as they
    are (both streams hold one id type but for orphans, see `_before`), counters
    in locals until the end, and the in-sync test inline. Drifted points, about
    1% of them, go through the plain helpers above.
    """
    person_key, flag_key, mapped = keys.person, keys.flag, keys.mapped
    row_iter, point_iter = iter(rows), iter(points)
    n_rows = n_without = n_points = n_sync = n_recent = 0
    last_point: PointId | None = None
    rid: PointId = 0  # the point id of `group`
    group: list[Row] | None = None  # the rows of the smallest point id not yet judged
    # Rows read for `group` (and rows without a point read after it) are counted
    # when it is judged: a scan stopped by the deadline counts only what it judged.
    pending = pending_without = 0
    try:
        row = next(row_iter, None)
        point = next(point_iter, None)
        taken = False  # the point was consumed: fetch the next one before comparing
        while True:
            if taken:
                # Fetched only now, after the previous point was judged: the
                # deadline stops the point stream by raising from this call, and
                # everything before it must have been counted and yielded.
                point = next(point_iter, None)
                taken = False
            if group is None:
                while row is not None and row[0] is None:
                    n_rows += 1
                    n_without += 1
                    row = next(row_iter, None)
                if row is not None:
                    rid = row[0]  # type: ignore[assignment]  # rows without a point were skipped
                    group = [row]
                    pending = 1
                    row = next(row_iter, None)
                    while row is not None and (row[0] == rid or row[0] is None):
                        pending += 1
                        if row[0] is None:
                            pending_without += 1
                        else:
                            group.append(row)
                        row = next(row_iter, None)
                    # The row after the group is checked before anything is judged,
                    # so rows out of order report nothing false first. (Points out
                    # of order are found when fetched; the run then stops, and
                    # writes no details file and no repair.)
                    if row is not None and _before(row[0], rid):  # type: ignore[arg-type]
                        raise _out_of_order("rows", row[0], rid)  # type: ignore[arg-type]
            # Which side holds the smallest id: -1 rows only, 1 the point only, 0 both.
            if group is None:
                if point is None:
                    return
                side = 1
            elif point is None:
                side = -1
            else:
                pid = point[0]
                side = 0 if rid == pid else -1 if _before(rid, pid) else 1
            if side >= 0:
                assert point is not None
                current = point
                pid = current[0]
                if last_point is not None and not _before(last_point, pid):
                    raise _out_of_order("points", pid, last_point)
                last_point = pid
                n_points += 1
                taken = True
            if side > 0:
                yield Drift(Kind.ORPHAN_POINT, pid, (), None, keys.actual(current[1]), None)
                continue
            assert group is not None
            rows_, group = group, None
            n_rows += pending
            n_without += pending_without
            pending = pending_without = 0
            first = rows_[0]
            if first[3] or (len(rows_) > 1 and any(r[3] for r in rows_)):
                # An application write may be in flight for this face: judge it next run.
                n_recent += 1
                continue
            if side < 0:
                if len(rows_) > 1:
                    yield _duplicate(rid, rows_, None, keys)
                else:
                    yield _missing(rid, first, keys)
                continue
            if len(rows_) > 1:
                yield _duplicate(rid, rows_, current, keys)
                continue
            # Inline, the test `classify` makes for a point in sync; it names the
            # kind of the few that are not.
            payload = current[1]
            expected = first[2]
            raw = payload.get(person_key)
            in_sync = (
                raw is None
                if expected is None
                else type(raw) is type(expected) and bool(raw == expected)
            )
            if in_sync and flag_key is not None:
                in_sync = payload.get(flag_key) is (expected is not None)
            if in_sync and mapped:
                # Rule.agrees, inline for the common case of an equal value.
                for (key, rule), value in zip(mapped, first[4], strict=False):
                    raw = payload.get(key)
                    if raw is None:
                        if value is not None:
                            in_sync = False
                            break
                    elif value is None or not (
                        (rule.fast and type(raw) is type(value) and raw == value)
                        or rule.same(raw, value)
                    ):
                        in_sync = False
                        break
            if in_sync:
                n_sync += 1
                continue
            drift = _matched(first, current, keys)
            assert drift is not None
            yield drift
    finally:
        stats.rows += n_rows
        stats.rows_without_point += n_without
        stats.points += n_points
        stats.in_sync += n_sync
        stats.skipped_recent += n_recent
