"""An in-memory diff written straight from the spec, to check the streaming merge against."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
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
