"""The pure merge: classification rules, order checks, and a property test against a naive diff."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconcile.diff import Drift, Keys, Kind, ScanStats, classify, diff
from reconcile.errors import StreamOrderError
from reconcile.stores.base import Point, Row
from tests.naive import naive_counts

P = "3f0c1e6a-0000-4000-8000-000000000001"
KEYS = Keys("person_id", "is_assigned")


def kinds(rows: list[Row], points: list[Point], keys: Keys = KEYS) -> dict[str, int]:
    stats = ScanStats()
    counts: dict[str, int] = {}
    for drift in diff(rows, points, keys, stats):
        counts[drift.kind.value] = counts.get(drift.kind.value, 0) + 1
    if stats.in_sync:
        counts["in_sync"] = stats.in_sync
    return counts


@pytest.mark.parametrize(
    ("expected", "payload", "kind"),
    [
        (P, {"person_id": P, "is_assigned": True}, Kind.IN_SYNC),
        (None, {"is_assigned": False}, Kind.IN_SYNC),
        (None, {"person_id": None, "is_assigned": False}, Kind.IN_SYNC),
        (P, {"is_assigned": False}, Kind.MISSING_PERSON),
        (P, {"person_id": None, "is_assigned": True}, Kind.MISSING_PERSON),
        (P, {"person_id": P.upper(), "is_assigned": True}, Kind.WRONG_PERSON),
        (P, {"person_id": 7, "is_assigned": True}, Kind.WRONG_PERSON),
        (P, {"person_id": "", "is_assigned": True}, Kind.WRONG_PERSON),
        (P, {"person_id": [P], "is_assigned": True}, Kind.WRONG_PERSON),
        (P, {"person_id": str(uuid.uuid4()), "is_assigned": True}, Kind.WRONG_PERSON),
        (None, {"person_id": P, "is_assigned": True}, Kind.STALE_PERSON),
        (None, {"person_id": "", "is_assigned": False}, Kind.STALE_PERSON),
        (P, {"person_id": P}, Kind.FLAG_MISMATCH),
        (P, {"person_id": P, "is_assigned": "true"}, Kind.FLAG_MISMATCH),
        (P, {"person_id": P, "is_assigned": 1}, Kind.FLAG_MISMATCH),
        (None, {"is_assigned": True}, Kind.FLAG_MISMATCH),
        (None, {}, Kind.FLAG_MISMATCH),
    ],
)
def test_classification(expected: Any, payload: dict[str, Any], kind: Kind) -> None:
    assert classify(Row(1, "f", expected), payload, KEYS) is kind


def test_integer_person_must_not_equal_a_boolean() -> None:
    # True == 1 in Python; a payload holding true is not the person 1.
    assert classify(Row(1, "f", 1), {"person_id": True}, Keys("person_id")) is Kind.WRONG_PERSON


def test_flag_is_ignored_without_flag_key() -> None:
    assert classify(Row(1, "f", P), {"person_id": P}, Keys("person_id")) is Kind.IN_SYNC


def test_every_kind_once() -> None:
    rows = [
        Row(1, "a", P),  # in sync
        Row(2, "b", P),  # missing_person
        Row(3, "c", None),  # stale_person
        Row(4, "d", P),  # missing_point
        Row(6, "e", P),  # duplicate
        Row(6, "f", None),
        Row(None, "g", P),  # no point
    ]
    points = [
        Point(1, {"person_id": P, "is_assigned": True}),
        Point(2, {"is_assigned": False}),
        Point(3, {"person_id": P, "is_assigned": True}),
        Point(5, {}),  # orphan
        Point(6, {"person_id": P, "is_assigned": True}),
    ]
    stats = ScanStats()
    drifts = list(diff(rows, points, KEYS, stats))
    assert [(d.kind, d.point_id) for d in drifts] == [
        (Kind.MISSING_PERSON, 2),
        (Kind.STALE_PERSON, 3),
        (Kind.MISSING_POINT, 4),
        (Kind.ORPHAN_POINT, 5),
        (Kind.DUPLICATE_POINT, 6),
    ]
    assert (stats.rows, stats.points, stats.rows_without_point, stats.in_sync) == (7, 5, 1, 1)
    assert drifts[4].face_ids == ("e", "f")
    assert drifts[1].person == P  # stale is charged to the person the payload still names


def test_details_record_tells_absent_from_null() -> None:
    rows = [Row(1, "a", P), Row(2, "b", P)]
    points = [Point(1, {"person_id": None}), Point(2, {})]
    records = [d.record() for d in diff(rows, points, KEYS, ScanStats())]
    assert records[0]["actual"] == {"person_id": None}
    assert records[1]["actual"] == {}
    assert records[0]["expected"] == {"person_id": P, "is_assigned": True}
    assert records[0]["face_id"] == "a"


def test_integer_ids_sort_before_uuids() -> None:
    u = str(uuid.UUID(int=5))
    rows = [Row(2, "a", None), Row(u, "b", None)]
    points = [Point(2, {"is_assigned": False}), Point(10, {}), Point(u, {"is_assigned": False})]
    assert kinds(rows, points) == {"in_sync": 2, "orphan_point": 1}


def test_descending_rows_fail_loudly() -> None:
    with pytest.raises(StreamOrderError, match="PostgreSQL rows are not ascending"):
        kinds([Row(2, "a", None), Row(1, "b", None)], [])


def test_rows_out_of_order_report_nothing_first() -> None:
    # The row after a group is checked before the group is judged: a stream out
    # of order must not leave false drift records in a details file or a plan.
    seen: list[Drift] = []
    rows = [Row(5, "a", None), Row(3, "b", None), Row(5, "c", None)]
    with pytest.raises(StreamOrderError, match="PostgreSQL rows are not ascending"):
        seen.extend(diff(rows, [Point(3, {}), Point(5, {})], KEYS, ScanStats()))
    assert seen == []


class _Stop(Exception):
    """Stands in for the deadline, which stops the point stream by raising from it."""


def test_a_point_stream_stopped_by_the_deadline_loses_no_judged_point() -> None:
    def points() -> Iterator[Point]:
        for n in range(6):
            if n == 3:
                raise _Stop
            yield Point(n, {"person_id": "wrong" if n == 2 else P})

    rows = [Row(n, f"f{n}", P) for n in range(6)]
    stats = ScanStats()
    seen: list[Drift] = []
    with pytest.raises(_Stop):
        seen.extend(diff(rows, points(), Keys("person_id"), stats))
    assert [(d.kind, d.point_id) for d in seen] == [(Kind.WRONG_PERSON, 2)]
    assert (stats.points, stats.in_sync) == (3, 2)


def test_a_stopped_scan_counts_only_the_rows_it_judged() -> None:
    # Row 3 is read (to know point 2 is an orphan) but not judged when the stream
    # stops at point 3: the report's counts cover the point ids seen so far.
    def points() -> Iterator[Point]:
        yield Point(1, {"person_id": P})
        yield Point(2, {})
        raise _Stop

    rows = [Row(1, "a", P), Row(None, "x", None), Row(3, "b", P), Row(None, "y", None)]
    stats = ScanStats()
    seen: list[Drift] = []
    with pytest.raises(_Stop):
        seen.extend(diff(rows, points(), Keys("person_id"), stats))
    assert [(d.kind, d.point_id) for d in seen] == [(Kind.ORPHAN_POINT, 2)]
    assert (stats.rows, stats.rows_without_point, stats.points) == (2, 1, 2)


def test_a_recent_row_skips_its_point_even_after_an_orphan() -> None:
    stats = ScanStats()
    drifts = list(diff([Row(5, "a", P, True)], [Point(4, {}), Point(5, {})], KEYS, stats))
    assert [(d.kind, d.point_id) for d in drifts] == [(Kind.ORPHAN_POINT, 4)]
    assert stats.skipped_recent == 1 and stats.points == 2


def test_repeated_point_fails_loudly() -> None:
    with pytest.raises(StreamOrderError, match="Qdrant points are not strictly ascending"):
        kinds([], [Point(1, {}), Point(1, {})])


persons = st.sampled_from([None, P, "3f0c1e6a-0000-4000-8000-000000000002"])
payload_person = st.one_of(
    st.just(None),
    persons,
    st.sampled_from([P.upper(), "", 7, [P], {"id": P}]),
)


@st.composite
def worlds(draw: st.DrawFn, uuid_ids: bool) -> tuple[list[Row], dict[Any, dict[str, Any]]]:
    pool = draw(st.lists(st.integers(0, 60), min_size=0, max_size=40, unique=True))
    ids: list[Any] = [str(uuid.UUID(int=i * 7919 + 1)) for i in pool] if uuid_ids else pool
    rows = [
        Row(draw(st.sampled_from([*ids, None])) if ids else None, f"f{n}", draw(persons))
        for n in range(draw(st.integers(0, 40)))
    ]
    points: dict[Any, dict[str, Any]] = {}
    for point_id in draw(st.lists(st.sampled_from(ids), unique=True)) if ids else []:
        payload: dict[str, Any] = {}
        if draw(st.booleans()):
            payload["person_id"] = draw(payload_person)
        if draw(st.booleans()):
            payload["is_assigned"] = draw(st.sampled_from([True, False, "true", None]))
        points[point_id] = payload
    if uuid_ids:
        # A UUID collection may still hold integer ids (orphans, sorted before the UUIDs).
        for point_id in draw(st.lists(st.integers(0, 5), unique=True, max_size=3)):
            points[point_id] = {}
    return rows, points


def _key(point_id: Any) -> tuple[bool, Any]:
    return (isinstance(point_id, str), point_id)


@pytest.mark.parametrize("uuid_ids", [False, True], ids=["integer-ids", "uuid-ids"])
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_merge_equals_naive_diff(uuid_ids: bool, data: st.DataObject) -> None:
    rows, points = data.draw(worlds(uuid_ids))
    flag = data.draw(st.sampled_from([None, "is_assigned"]))
    ordered_rows = sorted(
        rows, key=lambda r: (r.point_id is None, _key(r.point_id) if r.point_id is not None else 0)
    )
    ordered_points = [Point(pid, points[pid]) for pid in sorted(points, key=_key)]
    stats = ScanStats()
    counts = {kind.value: 0 for kind in Kind}
    for drift in diff(ordered_rows, ordered_points, Keys("person_id", flag), stats):
        counts[drift.kind.value] += 1
    counts["in_sync"] = stats.in_sync
    expected, without = naive_counts(rows, points, "person_id", flag)
    assert counts == expected
    assert stats.rows_without_point == without
    assert sum(counts.values()) == len(
        {r.point_id for r in rows if r.point_id is not None} | set(points)
    )
