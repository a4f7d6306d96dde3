"""An in-memory diff written straight from the spec, to check the streaming merge against."""

from __future__ import annotations

import json
import uuid
from array import array
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from reconcile.diff import Kind
from reconcile.stores.base import Row

ABSENT = object()


def naive_kind(
    expected: Any, payload: Mapping[str, Any], person_key: str, flag_key: str | None
) -> Kind:
    actual = payload.get(person_key)  # absent and null both mean "no person"
    if expected is None and actual is not None:
        return Kind.STALE_PERSON
    if expected is not None and actual is None:
        return Kind.MISSING_PERSON
    if expected is not None and (type(actual) is not type(expected) or actual != expected):
        return Kind.WRONG_PERSON
    if flag_key is not None:
        flag = payload.get(flag_key, ABSENT)
        if not (isinstance(flag, bool) and flag == (expected is not None)):
            return Kind.FLAG_MISMATCH
    return Kind.IN_SYNC


def naive_counts(
    rows: Iterable[Row],
    points: Mapping[Any, Mapping[str, Any]],
    person_key: str = "person_id",
    flag_key: str | None = None,
) -> tuple[dict[str, int], int]:
    """Counts per kind, and the number of rows without a point."""
    by_point: dict[Any, list[Row]] = defaultdict(list)
    without = 0
    for row in rows:
        if row.point_id is None:
            without += 1
        else:
            by_point[row.point_id].append(row)
    counts: Counter[str] = Counter({kind.value: 0 for kind in Kind})
    for point_id in set(by_point) | set(points):
        named = by_point.get(point_id, [])
        if len(named) > 1:
            counts[Kind.DUPLICATE_POINT] += 1
        elif not named:
            counts[Kind.ORPHAN_POINT] += 1
        elif point_id not in points:
            counts[Kind.MISSING_POINT] += 1
        else:
            kind = naive_kind(named[0].person_id, points[point_id], person_key, flag_key)
            counts[kind.value] += 1
    return {str(k): v for k, v in counts.items()}, without


# --- mapped keys (`--map`), straight from issue 13's table of canonical payload values ---
#
# Written from the words, not from reconcile.mapping: the column value here is
# what the driver hands over (uuid.UUID or its text, int, bool, float, Decimal,
# datetime, parsed JSON), and each rule below is one sentence of the issue.

INTEGER_TYPES = ("smallint", "integer", "bigint")


@dataclass(frozen=True)
class Mapped:
    """One `--map`: payload `key` mirrors a column of type `pg_type` (its string when `text`)."""

    key: str
    pg_type: str
    text: bool = False


def _f32(value: float) -> float:
    # array('f') stores a C float: the value a `real` column keeps.
    return array("f", [value])[0]


def _json_number(raw: Any) -> bool:
    return type(raw) in (int, float)  # a JSON boolean is not a number


def _parsed(raw: Any) -> datetime | None:
    if type(raw) is not str:
        return None
    try:
        return datetime.fromisoformat(raw)
    except ValueError:
        return None


def column_string(pg_type: str, value: Any) -> str:
    """ "anything with ::text → its string": the service's str() of the column value."""
    if pg_type == "uuid":
        return str(uuid.UUID(str(value)))  # lower-case, hyphenated
    return str(value)


def agrees(pg_type: str, raw: Any, value: Any, text: bool = False) -> bool:
    """Whether payload value `raw` (None: absent or null) mirrors column value `value`."""
    if value is None:
        return raw is None  # "A NULL column means the key must be absent (or null)"
    if raw is None:
        return False
    if text:
        return type(raw) is str and raw == column_string(pg_type, value)
    if pg_type == "uuid":  # "lower-case hyphenated string"
        return type(raw) is str and raw == column_string("uuid", value)
    if pg_type in ("text", "character varying"):
        return type(raw) is str and raw == value
    if pg_type in INTEGER_TYPES:  # "a float 5.0 or a string "5" is wrong"
        return type(raw) is int and raw == value
    if pg_type == "boolean":
        return type(raw) is bool and raw == value
    if pg_type in ("double precision", "numeric"):  # "equal by value as a float"
        return _json_number(raw) and float(raw) == float(value)
    if pg_type == "real":  # "compared at single precision"
        return _json_number(raw) and _f32(float(raw)) == _f32(float(value))
    if pg_type == "timestamp with time zone":
        moment = _parsed(raw)
        if moment is None:
            return False
        if moment.tzinfo is None:  # "a payload string without an offset is taken as UTC"
            moment = moment.replace(tzinfo=UTC)
        return bool(moment == value)  # aware datetimes compare as instants
    if pg_type == "timestamp without time zone":  # "equal when the parsed value is equal"
        moment = _parsed(raw)
        return moment is not None and moment.tzinfo is None and moment == value
    if pg_type in ("json", "jsonb"):
        # "deep equality, strict on types at every level": JSON's own text tells
        # true from 1 and 1 from 1.0; sorted keys make object order irrelevant.
        return json.dumps(raw, sort_keys=True) == json.dumps(value, sort_keys=True)
    raise ValueError(f"no rule for {pg_type}")


def written(pg_type: str, value: Any, text: bool = False) -> Any:
    """The payload value the service writes (and a repair sets) for column value `value`."""
    if value is None:
        return None
    if text or pg_type == "uuid":
        return column_string(pg_type, value)
    if pg_type in ("double precision", "numeric", "real"):
        return float(value)
    if pg_type == "timestamp with time zone":  # "repaired as datetime.isoformat() in UTC"
        return value.astimezone(UTC).isoformat()
    if pg_type == "timestamp without time zone":
        return value.isoformat()
    return value


def _sub_kind(agreeing: bool, raw: Any, value: Any) -> str | None:
    if agreeing:
        return None
    if value is None:
        return "stale"
    return "missing" if raw is None else "wrong"


@dataclass
class NaiveDiff:
    """What the naive diff found, point by point."""

    kinds: dict[Any, Kind] = field(default_factory=dict)  # every judged point id
    keys: dict[Any, dict[str, str]] = field(default_factory=dict)  # matched points: {key: sub}
    expected: dict[Any, dict[str, Any]] = field(default_factory=dict)  # matched: key → written
    without: int = 0  # rows without a point
    skipped_recent: int = 0

    def counts(self) -> dict[str, int]:
        counts = {kind.value: 0 for kind in Kind}
        for kind in self.kinds.values():
            counts[kind.value] += 1
        return counts

    def key_counts(self, names: Iterable[str]) -> dict[str, dict[str, int]]:
        found = {name: {"missing": 0, "wrong": 0, "stale": 0} for name in names}
        for differing in self.keys.values():
            for key, sub in differing.items():
                found[key][sub] += 1
        return found


def naive_mapped_diff(
    rows: Iterable[Row],
    points: Mapping[Any, Mapping[str, Any]],
    mapped: Sequence[Mapped],
    person_key: str = "person_id",
    flag_key: str | None = None,
) -> NaiveDiff:
    """The diff of issue 13; each row's `values` hold its mapped columns' driver values."""
    found = NaiveDiff()
    by_point: dict[Any, list[Row]] = defaultdict(list)
    for row in rows:
        if row.point_id is None:
            found.without += 1
        else:
            by_point[row.point_id].append(row)
    for point_id in set(by_point) | set(points):
        named = by_point.get(point_id, [])
        if any(row.recent for row in named):
            found.skipped_recent += 1  # in the grace window: not judged at all
            continue
        if len(named) > 1:
            found.kinds[point_id] = Kind.DUPLICATE_POINT
            continue
        if not named:
            found.kinds[point_id] = Kind.ORPHAN_POINT
            continue
        if point_id not in points:
            found.kinds[point_id] = Kind.MISSING_POINT
            continue
        row, payload = named[0], points[point_id]
        differing: dict[str, str] = {}
        expected: dict[str, Any] = {person_key: row.person_id}
        person = payload.get(person_key)
        same_person = (
            person is None
            if row.person_id is None
            else type(person) is type(row.person_id) and person == row.person_id
        )
        sub = _sub_kind(same_person, person, row.person_id)
        if sub is not None:
            differing[person_key] = sub
        if flag_key is not None:
            flag, want = payload.get(flag_key), row.person_id is not None
            expected[flag_key] = want
            sub = _sub_kind(type(flag) is bool and flag == want, flag, want)
            if sub is not None:
                differing[flag_key] = sub
        for m, value in zip(mapped, row.values, strict=True):
            raw = payload.get(m.key)
            expected[m.key] = written(m.pg_type, value, m.text)
            sub = _sub_kind(agrees(m.pg_type, raw, value, m.text), raw, value)
            if sub is not None:
                differing[m.key] = sub
        # Precedence: the person kinds, then flag_mismatch, then payload_mismatch.
        if person_key in differing:
            kind = {
                "missing": Kind.MISSING_PERSON,
                "wrong": Kind.WRONG_PERSON,
                "stale": Kind.STALE_PERSON,
            }[differing[person_key]]
        elif flag_key is not None and flag_key in differing:
            kind = Kind.FLAG_MISMATCH
        elif differing:
            kind = Kind.PAYLOAD_MISMATCH
        else:
            kind = Kind.IN_SYNC
        found.kinds[point_id] = kind
        found.keys[point_id] = differing
        found.expected[point_id] = expected
    return found
