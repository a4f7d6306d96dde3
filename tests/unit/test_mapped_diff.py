"""Mapped payload keys (`--map`, issue 13) without stores: the type rules, the merge against
the naive diff of tests/naive.py, the parsing and refusals, and the exact writes of a repair."""

from __future__ import annotations

import json
import math
import re
import struct
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconcile.apply import Tallies, _Write, group_writes, target
from reconcile.diff import Drift, Keys, Kind, ScanStats, diff
from reconcile.errors import ConfigError
from reconcile.mapping import (
    RULES,
    TEXT_CASTABLE,
    KeyMap,
    Rule,
    check_maps,
    parse_map,
    parse_source,
    rule_for,
)
from reconcile.report import Tally
from reconcile.settings import Settings
from reconcile.stores.base import DeleteKeys, Point, Row, SetKeys
from tests.naive import Mapped, agrees, column_string, naive_counts, naive_mapped_diff, written

P = "3f0c1e6a-0000-4000-8000-000000000001"
Q = "3f0c1e6a-0000-4000-8000-000000000002"
U1 = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
U2 = "0b8e1c52-77e4-4a39-9d1e-3f0c2a8d5e11"
PLUS_2 = timezone(timedelta(hours=2))
ST_JOHNS = timezone(timedelta(hours=-2, minutes=-30))
TOKYO = timezone(timedelta(hours=9))


def _next_double(x: float) -> float:
    return math.nextafter(x, math.inf)


def _f32(x: float) -> float:
    return float(struct.unpack("f", struct.pack("f", x))[0])


def _next_single(x: float) -> float:
    """The next float32 above x: a different `real`, however close."""
    (bits,) = struct.unpack("<I", struct.pack("<f", x))
    return float(struct.unpack("<f", struct.pack("<I", bits + 1))[0])


def _column_value_for_diff(m: Mapped, value: Any, rule: Rule) -> Any:
    """What the store adapter hands the merge: for ::text PostgreSQL's text form (which is
    the service's str() for these types: tests/stores/test_mapped_types.py), then the rule's
    canonical value of the driver's value."""
    if value is None:
        return None
    return rule.canonical(column_string(m.pg_type, value) if m.text else value)


def _rule(m: Mapped) -> Rule:
    return rule_for("c", m.pg_type, m.text, "t")


def _strict(a: Any) -> str:
    # JSON's text tells 1 from 1.0 and true from 1; repr keeps float digits exact.
    return json.dumps(a, sort_keys=True)


# --- the look-alikes, each on its side of the rule -----------------------------

LOOK_ALIKES: list[tuple[str, bool, Any, Any, bool]] = [
    # (column type, ::text, column value as the driver decodes it, payload value, agrees)
    ("uuid", False, U1, U1, True),
    ("uuid", False, U1, U1.upper(), False),
    ("uuid", False, U1, U1.replace("-", ""), False),
    ("uuid", False, U1, uuid.UUID(U1).urn, False),
    ("uuid", True, U1, U1, True),
    ("uuid", True, U1, U1.upper(), False),
    ("integer", False, 1, 1, True),
    ("integer", False, 1, 1.0, False),
    ("integer", False, 1, True, False),
    ("integer", False, 5, "5", False),
    ("smallint", False, 0, False, False),
    ("bigint", False, 2**63 - 1, 2**63 - 1, True),
    ("bigint", False, 2**63 - 1, float(2**63 - 1), False),
    ("integer", True, 5, "5", True),
    ("integer", True, 5, 5, False),
    ("integer", True, 5, "5.0", False),
    ("integer", True, 5, " 5", False),
    ("bigint", True, -(2**63), str(-(2**63)), True),
    ("text", False, "5", 5, False),
    ("text", False, "5", "5", True),
    ("text", True, "5", "5", True),
    ("character varying", False, "-1", -1, False),
    ("character varying", False, "c_17", "C_17", False),
    ("boolean", False, True, True, True),
    ("boolean", False, True, 1, False),
    ("boolean", False, False, 0, False),
    ("boolean", False, True, "true", False),
    ("double precision", False, 1.0, 1, True),
    ("double precision", False, 1.0, 1.0, True),
    ("double precision", False, 1.0, True, False),
    ("double precision", False, 0.81, _f32(0.81), False),  # single precision is not double
    ("double precision", False, 0.1, "0.1", False),
    ("double precision", False, 0.1, _next_double(0.1), False),
    ("numeric", False, Decimal("0.1"), 0.1, True),  # read as a float, not a Decimal
    ("numeric", False, Decimal("5.00"), 5, True),
    ("numeric", False, Decimal("5.00"), 5.0, True),
    ("numeric", False, Decimal("0.1"), _next_double(0.1), False),
    ("real", False, 0.81, _f32(0.81), True),  # 0.8100000023841858: the same real
    ("real", False, _f32(0.81), 0.81, True),
    ("real", False, 0.81, 0.81, True),
    ("real", False, 0.81, _next_single(0.81), False),
    ("real", False, 1.0, 1, True),
    ("real", False, 1.0, True, False),
]
LOOK_ALIKES += (
    [
        ("timestamp with time zone", False, datetime(2024, 6, 1, 12, 22, tzinfo=PLUS_2), raw, ok)
        for raw, ok in [
            ("2024-06-01T10:22:00+00:00", True),
            ("2024-06-01T12:22:00+02:00", True),  # one instant written in two zones
            ("2024-06-01T19:22:00+09:00", True),
            ("2024-06-01T10:22:00Z", True),
            ("2024-06-01T10:22:00", True),  # no offset: taken as UTC
            ("2024-06-01 10:22:00", True),
            ("2024-06-01T12:22:00", False),  # the local wall time, taken as UTC: another instant
            ("2024-06-01T10:22:00.000001+00:00", False),
            ("2024-06-01T10:22:01+00:00", False),
            (1717237320, False),
            ("not a time", False),
        ]
    ]
    + [
        ("timestamp without time zone", False, datetime(2024, 6, 1, 10, 22, 0, 500000), raw, ok)
        for raw, ok in [
            ("2024-06-01T10:22:00.500000", True),
            ("2024-06-01T10:22:00.5", True),  # equal by parsed value
            ("2024-06-01 10:22:00.500", True),
            ("2024-06-01T10:22:00.500000+00:00", False),  # an aware string is never naive
            ("2024-06-01T10:22:00.5Z", False),
            ("2024-06-01T10:22:00", False),
            ("2024-06-01T10:22:00.500001", False),
            ("garbage", False),
        ]
    ]
    + [
        (json_type, False, value, raw, ok)
        for json_type in ("json", "jsonb")
        for value, raw, ok in [
            ({"a": [1, True]}, {"a": [1, True]}, True),
            ({"a": [1, True]}, {"a": [1, 1]}, False),  # true is not 1, at any depth
            ({"a": [1, True]}, {"a": [1.0, True]}, False),  # 1 is not 1.0
            ({"a": [1, True]}, {"a": [True, 1]}, False),  # arrays keep their order
            ({"a": [1, True]}, '{"a": [1, true]}', False),  # a JSON text is a string
            (1, 1.0, False),
            (1.0, 1.0, True),
            ({"b": 1, "a": 2}, {"a": 2, "b": 1}, True),  # objects have no order
            ({"a": None}, {}, False),
            ({"a": {"b": [None]}}, {"a": {"b": [None]}}, True),
            ("x", "x", True),
            (False, 0, False),
        ]
    ]
)


@pytest.mark.parametrize(("pg_type", "text", "value", "raw", "ok"), LOOK_ALIKES)
def test_look_alikes_fall_on_their_side_of_the_rule(
    pg_type: str, text: bool, value: Any, raw: Any, ok: bool
) -> None:
    m = Mapped("k", pg_type, text)
    rule = _rule(m)
    assert agrees(pg_type, raw, value, text) is ok  # the oracle reads the issue right
    assert rule.agrees(raw, _column_value_for_diff(m, value, rule)) is ok
    keys = Keys("person_id", None, (("k", rule),))
    row = Row(1, "f", None, False, (_column_value_for_diff(m, value, rule),))
    differing = keys.differing(row, {"k": raw})
    assert differing == ({} if ok else {"k": "wrong"})


@pytest.mark.parametrize("pg_type", sorted(RULES))
def test_null_means_absent_or_null_for_every_type(pg_type: str) -> None:
    rule = RULES[pg_type]
    keys = Keys("person_id", None, (("k", rule),))
    row = Row(1, "f", None, False, (None,))
    assert keys.differing(row, {}) == {}
    assert keys.differing(row, {"k": None}) == {}
    raw: Any
    for raw in ("", 0, False, [], {}):
        assert keys.differing(row, {"k": raw}) == {"k": "stale"}, raw
        assert agrees(pg_type, raw, None) is False


def test_the_service_writes_what_the_rules_call_in_sync() -> None:
    # The oracle's "written" value (the service's Python) agrees with its own column
    # value under the production rule, for a value of every type.
    for pg_type, text, value, _raw, _ok in LOOK_ALIKES:
        m = Mapped("k", pg_type, text)
        rule = _rule(m)
        assert rule.agrees(written(pg_type, value, text), _column_value_for_diff(m, value, rule))


# --- random worlds with random mappings, against the naive diff ------------------------

COLUMN_KINDS: list[tuple[str, bool]] = [(t, False) for t in sorted(RULES)] + [
    (t, True) for t in sorted(TEXT_CASTABLE)
]


TSTZ = [
    datetime(2024, 6, 1, 12, 22, tzinfo=PLUS_2),
    datetime(2024, 6, 1, 10, 22, 0, 123456, tzinfo=UTC),
    datetime(1999, 12, 31, 21, 29, 59, tzinfo=ST_JOHNS),
]
NAIVE = [
    datetime(2024, 6, 1, 10, 22),
    datetime(2024, 6, 1, 10, 22, 0, 500000),
    datetime(2000, 1, 1),
]
JSONS: list[Any] = [
    {"a": [1, True]},
    {"a": [1, 1]},
    {"b": 2, "a": 1.0},
    [1, {"b": None}],
    1,
    1.0,
    "x",
    "5",  # a JSON string, not the number a JSON text "5" would parse to
    True,
]
POOLS: dict[str, list[Any]] = {
    "uuid": [U1, U2],
    "text": ["c_17", "-1", "5", "", "ünï ✓\ttab"],
    "character varying": ["c_17", "unknown_12", "5"],
    "smallint": [0, 1, 5, -32768],
    "integer": [1, 5, 4711, 2**31 - 1],
    "bigint": [1, 5, 2**63 - 1, -(2**63)],
    "boolean": [True, False],
    "double precision": [0.1, 1.0, 0.81, -2.5, 1e300],
    "numeric": [Decimal("0.1"), Decimal("1"), Decimal("5.00"), Decimal("-2.5")],
    "real": [0.81, 1.0, 0.1, -2.5],
    "timestamp with time zone": TSTZ,
    "timestamp without time zone": NAIVE,
    "json": JSONS,
    "jsonb": JSONS,
}


def test_every_supported_type_is_generated() -> None:
    # A type added to RULES must get a pool and look-alikes here (and a rule in the oracle).
    assert set(POOLS) == set(RULES)


def _swap_json_types(value: Any) -> Any:
    """The same JSON with a boolean as an integer, an integer as a float, a float as an int."""
    if type(value) is bool:
        return int(value)
    if type(value) is int:
        return float(value)
    if type(value) is float and value.is_integer():
        return int(value)
    if type(value) is dict:
        return {k: _swap_json_types(v) for k, v in reversed(value.items())}
    if type(value) is list:
        return [_swap_json_types(v) for v in value]
    return value


def _stamps(moment: datetime) -> list[Any]:
    utc = moment.astimezone(UTC)
    return [
        utc.isoformat(),
        moment.isoformat(),
        moment.astimezone(TOKYO).isoformat(),
        utc.isoformat().replace("+00:00", "Z"),
        utc.replace(tzinfo=None).isoformat(),  # no offset: UTC, equal
        moment.astimezone(PLUS_2).replace(tzinfo=None).isoformat(),  # local wall time: wrong
        (utc + timedelta(microseconds=1)).isoformat(),
        utc.timestamp(),
    ]


def look_alikes(m: Mapped, value: Any) -> list[Any]:
    """Payload values that look like what the service writes for `value`, both sides of the rule."""
    if value is None:
        return ["", 0, False, "null"]
    near: list[Any]
    if m.text:
        s = column_string(m.pg_type, value)
        near = [s, s.upper(), s + " "]
        if m.pg_type in ("smallint", "integer", "bigint"):
            near += [value, f"{float(value)}", f"0{s}"]
        elif m.pg_type == "uuid":
            near += [s.replace("-", "")]
        return near
    t = m.pg_type
    if t == "uuid":
        return [value, value.upper(), value.replace("-", ""), uuid.UUID(value).urn]
    if t in ("text", "character varying"):
        near = [value, value.upper(), value + " ", [value]]
        return [*near, int(value)] if value.lstrip("-").isdigit() else near
    if t in ("smallint", "integer", "bigint"):
        return [value, float(value), str(value), value + 1, bool(value % 2), [value]]
    if t == "boolean":
        return [value, not value, int(value), str(value).lower()]
    if t in ("double precision", "numeric"):
        f = float(value)
        near = [f, _next_double(f), str(f), _f32(f), True]
        return [*near, int(f)] if f.is_integer() else near
    if t == "real":
        near = [value, _f32(value), _next_single(value), _next_double(_f32(value)), str(value)]
        return [*near, int(value), True] if value.is_integer() else near
    if t == "timestamp with time zone":
        return _stamps(value)
    if t == "timestamp without time zone":
        return [
            value.isoformat(),
            value.isoformat(sep=" "),
            value.isoformat(timespec="microseconds"),
            value.replace(tzinfo=UTC).isoformat(),  # aware: never equal
            value.isoformat() + "Z",
            (value + timedelta(seconds=1)).isoformat(),
            value.timestamp(),
        ]
    assert t in ("json", "jsonb")
    return [value, _swap_json_types(value), json.dumps(value)]


NULL = object()  # an explicit null in the payload (None: the key is absent)


def _draw_payload_value(draw: st.DrawFn, m: Mapped, value: Any) -> Any:
    """Absent, null, or a payload value: mostly near the row's value, sometimes another's."""
    choice = draw(st.integers(0, 9))
    if choice == 7:
        return None
    if choice == 8:
        return NULL
    if choice == 9:
        other = draw(st.sampled_from(POOLS[m.pg_type]))
        return written(m.pg_type, other, m.text)  # another row's value, as the service writes it
    return draw(st.sampled_from(look_alikes(m, value)))


PERSON_RAW = st.sampled_from([None, P, Q, P.upper(), "", 7, [P]])


@st.composite
def mapped_worlds(
    draw: st.DrawFn, uuid_ids: bool
) -> tuple[list[Mapped], list[Row], dict[Any, dict[str, Any]]]:
    kinds = draw(st.lists(st.sampled_from(COLUMN_KINDS), min_size=1, max_size=6))
    mapped = [Mapped(f"k{n}", t, text) for n, (t, text) in enumerate(kinds)]
    pool = draw(st.lists(st.integers(0, 10**6), min_size=1, max_size=25, unique=True))
    ids: list[Any] = [str(uuid.UUID(int=i * 7919 + 1)) for i in pool] if uuid_ids else pool
    rows: list[Row] = []

    def add_row(point_id: Any) -> Row:
        row = Row(
            point_id,
            f"f{len(rows)}",
            draw(st.sampled_from([P, None, Q])),
            draw(st.integers(0, 19)) == 0,  # now and then in the grace window
            tuple(draw(st.sampled_from([*POOLS[m.pg_type], None])) for m in mapped),
        )
        rows.append(row)
        return row

    points: dict[Any, dict[str, Any]] = {}
    for point_id in ids:
        # Mostly one row and its point, so that most points are compared key by key.
        shape = draw(st.sampled_from(["matched"] * 6 + ["missing", "orphan", "duplicate"]))
        named = [add_row(point_id) for _ in range({"orphan": 0, "duplicate": 2}.get(shape, 1))]
        if shape == "missing":
            continue
        first = named[0] if named else Row(point_id, "", None, False, (None,) * len(mapped))
        payload: dict[str, Any] = {"bbox": {"x": 1}}  # a key no mapping names
        person = first.person_id if draw(st.integers(0, 9)) < 7 else draw(PERSON_RAW)
        if person is not None:
            payload["person_id"] = person
        flag: Any = first.person_id is not None
        if draw(st.integers(0, 9)) >= 7:
            flag = draw(st.sampled_from([None, not flag, "true", 1]))
        if flag is not None:
            payload["is_assigned"] = flag
        for n, m in enumerate(mapped):
            raw = _draw_payload_value(draw, m, first.values[n])
            if raw is not None:
                payload[m.key] = None if raw is NULL else raw
        points[point_id] = payload
    for _ in range(draw(st.integers(0, 2))):
        add_row(None)
    # the streams are sorted by the caller; the order drawn here must not matter
    return mapped, draw(st.permutations(rows)), points


def _order(point_id: Any) -> tuple[bool, Any]:
    return (isinstance(point_id, str), point_id)


def _run(
    mapped: list[Mapped],
    rows: list[Row],
    points: dict[Any, dict[str, Any]],
    flag: str | None,
) -> None:
    rules = [_rule(m) for m in mapped]
    keys = Keys("person_id", flag, tuple((m.key, r) for m, r in zip(mapped, rules, strict=True)))
    diff_rows = [
        r._replace(
            values=tuple(
                _column_value_for_diff(m, v, rule)
                for m, v, rule in zip(mapped, r.values, rules, strict=True)
            )
        )
        for r in rows
    ]
    ordered_rows = sorted(
        diff_rows,
        key=lambda r: (r.point_id is None, _order(r.point_id) if r.point_id is not None else 0),
    )
    ordered_points = [Point(pid, points[pid]) for pid in sorted(points, key=_order)]
    stats = ScanStats()
    tally = Tally(keys=keys)
    drifts: dict[Any, Drift] = {}
    for drift in diff(ordered_rows, ordered_points, keys, stats):
        tally.add(drift)
        drifts[drift.point_id] = drift

    naive = naive_mapped_diff(rows, points, mapped, "person_id", flag)
    # kinds, point by point, and the counts
    assert {pid: d.kind for pid, d in drifts.items()} == {
        pid: k for pid, k in naive.kinds.items() if k is not Kind.IN_SYNC
    }
    assert tally.counts(stats) == naive.counts()
    assert stats.skipped_recent == naive.skipped_recent
    assert stats.rows_without_point == naive.without
    distinct = {r.point_id for r in rows if r.point_id is not None} | set(points)
    assert sum(naive.counts().values()) + stats.skipped_recent == len(distinct)
    assert sum(tally.counts(stats).values()) + stats.skipped_recent == len(distinct)
    # the per-key breakdown: every compared key, over points named by exactly one row
    assert tally.key_counts() == naive.key_counts(keys.names)
    assert list(tally.key_counts()) == list(keys.names)
    by_face = {r.face_id: r for r in diff_rows}
    for pid, drift in drifts.items():
        if pid not in naive.keys:  # missing, orphan, duplicate: no per-key verdict
            assert drift.keys == {}
            continue
        assert drift.keys == naive.keys[pid]
        assert drift.expected is not None
        assert _strict(drift.expected) == _strict(naive.expected[pid])
        # a repair writes exactly the differing keys, with the service's values, and
        # the payload it leaves is in sync by the oracle
        payload = points[pid]
        values, deletes = target(by_face[drift.face_ids[0]], payload, keys)
        assert set(values) | set(deletes) == set(naive.keys[pid])
        assert not set(values) & set(deletes)
        assert all(naive.expected[pid][k] is None for k in deletes)
        assert _strict(values) == _strict({k: naive.expected[pid][k] for k in values})
        repaired = {k: v for k, v in payload.items() if k not in deletes} | values
        again = naive_mapped_diff(
            [r for r in rows if r.point_id == pid], {pid: repaired}, mapped, "person_id", flag
        )
        assert again.kinds == {pid: Kind.IN_SYNC}
    if not any(r.recent for r in rows):
        # The old oracle, blind to mapped keys, sees payload_mismatch as in sync.
        old, without = naive_counts(rows, points, "person_id", flag)
        mine = naive.counts()
        mine["in_sync"] += mine.pop("payload_mismatch")
        assert {k: v for k, v in old.items() if k != "payload_mismatch"} == mine
        assert without == naive.without


@pytest.mark.parametrize("uuid_ids", [False, True], ids=["integer-ids", "uuid-ids"])
@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_merge_with_random_mappings_equals_naive_diff(uuid_ids: bool, data: st.DataObject) -> None:
    mapped, rows, points = data.draw(mapped_worlds(uuid_ids))
    flag = data.draw(st.sampled_from([None, "is_assigned"]))
    _run(mapped, rows, points, flag)


def test_every_look_alike_through_the_merge() -> None:
    # Deterministic: each type's every look-alike on a matched point of its own, so
    # that no case depends on what the random search happens to draw.
    for pg_type, text in COLUMN_KINDS:
        m = Mapped("k", pg_type, text)
        rows, points = [], {}
        n = 0
        for value in POOLS[pg_type]:
            for raw in [*look_alikes(m, value), None]:
                n += 1
                rows.append(Row(n, f"f{n}", None, False, (value,)))
                points[n] = {} if raw is None else {"k": raw}
        n += 1
        rows.append(Row(n, f"f{n}", None, False, (None,)))
        points[n] = {"k": "stale"}
        _run([m], rows, points, None)


# --- parsing and refusals: one line, naming the problem and the fix ---------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("cluster_id", "is not KEY=COLUMN: e.g. --map cluster_id=cluster_id"),
        ("=cluster_id", "is not KEY=COLUMN"),
        ("cluster_id=", "is not KEY=COLUMN"),
        ("asset_id=asset_id::int", "the only cast is ::text"),
        ("asset_id=asset_id::", "the only cast is ::text"),
        ("k=lower(cluster_id)", "is not a plain column name: use letters"),
        ("k=a.b", "is not a plain column name"),
        ("k=1col", "is not a plain column name"),
        ("bad key=col", "'bad key' is not a plain payload key"),
        ("k.x=col", "is not a plain payload key"),
    ],
)
def test_parse_map_errors_name_the_problem_and_the_fix(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        parse_map(spec)
    assert "\n" not in str(caught.value)
    assert spec.strip() in str(caught.value) or repr(spec) in str(caught.value)


def test_parse_map_reads_what_users_write() -> None:
    assert parse_map("cluster_id=cluster_id") == KeyMap("cluster_id", "cluster_id")
    assert parse_map(" asset_id = asset_id::text ") == KeyMap("asset_id", "asset_id", True)
    assert parse_map("a-b=Col_1::TEXT") == KeyMap("a-b", "Col_1", True)
    assert KeyMap("asset_id", "asset_id", True).source == "asset_id::text"
    assert parse_source("face_instance_id", "id") == KeyMap("face_instance_id", "id")
    with pytest.raises(ConfigError, match="the only cast is ::text"):
        parse_source("k", "col::varchar")


def test_settings_normalize_every_spelling_of_a_map() -> None:
    want = (KeyMap("cluster_id", "cluster_id"), KeyMap("asset_id", "asset_id", True))
    spellings: list[Any] = [
        {"cluster_id": "cluster_id", "asset_id": "asset_id::text"},  # a config file's table
        ["cluster_id=cluster_id", "asset_id=asset_id::text"],  # --map flags
        want,
    ]
    for spelling in spellings:
        # Settings.map is typed as KeyMaps; the other spellings are normalized at runtime.
        kw: dict[str, Any] = {"database_url": "postgresql://u@h/db", "qdrant_path": "/x"}
        assert Settings(**kw, map=spelling).map == want
    s = Settings(database_url="postgresql://u@h/db", qdrant_path="/x", flag_key="f", map=want)
    assert s.keys == ["person_id", "f", "cluster_id", "asset_id"]


@pytest.mark.parametrize(
    ("maps", "flag", "message"),
    [
        ([KeyMap("person_id", "person_id")], None, "names the person key"),
        ([KeyMap("is_assigned", "x")], "is_assigned", "names the flag key"),
        ([KeyMap("c", "a"), KeyMap("c", "b::text")], None, "maps payload key 'c' twice: keep one"),
    ],
)
def test_check_maps_refusals(maps: list[KeyMap], flag: str | None, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        check_maps(tuple(maps), "person_id", flag)
    assert "\n" not in str(caught.value)
    # the same refusal from Settings, whichever way the map is given
    with pytest.raises(ConfigError, match=re.escape(message)):
        Settings(
            database_url="postgresql://u@h/db",
            qdrant_path="/nowhere",
            flag_key=flag,
            map=tuple(maps),
        )


def test_check_maps_allows_one_column_under_two_keys() -> None:
    check_maps((KeyMap("a", "asset_id"), KeyMap("b", "asset_id", True)), "person_id", None)
    # a key may mirror the person column under another name
    check_maps((KeyMap("owner", "person_id"),), "person_id", "is_assigned")


@pytest.mark.parametrize(
    "pg_type",
    ["boolean", "double precision", "real", "numeric", "timestamp with time zone",
     "timestamp without time zone", "json", "jsonb"],
)  # fmt: skip
def test_rule_for_refuses_text_where_str_differs(pg_type: str) -> None:
    with pytest.raises(ConfigError) as caught:
        rule_for("flagcol", pg_type, True, "public.faces")
    message = str(caught.value)
    assert f"column public.faces.flagcol has type {pg_type}" in message
    assert "map it without ::text" in message and "\n" not in message


@pytest.mark.parametrize(
    "pg_type",
    ["bytea", "interval", "point", "text[]", "integer[]", "date", "time without time zone",
     "money", "inet", "character", "USER-DEFINED"],
)  # fmt: skip
@pytest.mark.parametrize("text", [False, True])
def test_rule_for_refuses_unsupported_types(pg_type: str, text: bool) -> None:
    with pytest.raises(ConfigError) as caught:
        rule_for("col", pg_type, text, "faces")
    message = str(caught.value)
    assert f"column faces.col has type {pg_type}" in message and "\n" not in message


def test_rule_for_text_cast_rules() -> None:
    for pg_type in TEXT_CASTABLE:
        rule = rule_for("c", pg_type, True, "t")
        assert rule.agrees("5", "5") and not rule.agrees(5, "5")
    assert rule_for("c", "uuid", True, "t").canonical(U1.upper()) == U1


# --- a repair writes exactly the keys that differ ---------------------------------------

SERVICE_KEYS = Keys(
    "person_id",
    "is_assigned",
    (
        ("cluster_id", RULES["character varying"]),
        ("quality_score", RULES["double precision"]),
        ("asset_id", rule_for("asset_id", "integer", True, "face_instances")),
    ),
)


def _service_payload(**changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "person_id": P,
        "is_assigned": True,
        "cluster_id": "c_1",
        "quality_score": 0.81,
        "asset_id": "4711",
        "face_instance_id": "f",
        "bbox": {"x": 1, "y": 2, "w": 3, "h": 4},
        "detection_confidence": 0.97,
    }
    payload.update(changes)
    return {k: v for k, v in payload.items() if v is not None}


def test_target_writes_exactly_the_differing_keys() -> None:
    # cluster_id wrong (a merge in PG only) and quality_score stale (NULLed in PG)
    row = Row(1, "f", P, False, ("c_2", None, "4711"))
    payload = _service_payload()
    values, deletes = target(row, payload, SERVICE_KEYS)
    assert values == {"cluster_id": "c_2"}
    assert deletes == ("quality_score",)
    ops = group_writes([_Write(row, 1, {}, {}, values, deletes)])
    assert ops == [SetKeys({"cluster_id": "c_2"}, [1]), DeleteKeys(["quality_score"], [1])]


@pytest.mark.parametrize(
    ("row_values", "changes", "values", "deletes"),
    [
        (("c_1", 0.81, "4711"), {}, {}, ()),  # in sync: nothing
        (("c_1", 0.81, "4711"), {"asset_id": 4711}, {"asset_id": "4711"}, ()),
        (("c_1", 1.0, "4711"), {"quality_score": 1}, {}, ()),  # 1 is 1.0 in a double
        (("c_1", 0.81, "4711"), {"cluster_id": None}, {"cluster_id": "c_1"}, ()),
        ((None, None, "4711"), {}, {}, ("cluster_id", "quality_score")),
        ((None, 0.81, "4711"), {"cluster_id": None}, {}, ()),
    ],
)
def test_target_cases(
    row_values: tuple[Any, ...],
    changes: dict[str, Any],
    values: dict[str, Any],
    deletes: tuple[str, ...],
) -> None:
    row = Row(1, "f", P, False, row_values)
    assert target(row, _service_payload(**changes), SERVICE_KEYS) == (values, deletes)


def test_target_with_the_person_and_a_mapped_key() -> None:
    # the person unassigned in PG and the cluster moved: every differing key, no other
    row = Row(1, "f", None, False, ("c_9", 0.81, "4711"))
    values, deletes = target(row, _service_payload(), SERVICE_KEYS)
    assert values == {"is_assigned": False, "cluster_id": "c_9"}
    assert deletes == ("person_id",)


def test_group_writes_one_op_per_distinct_values_and_key_set() -> None:
    row = Row(0, "f", None)
    writes = [
        _Write(row, 1, {}, {}, {"cluster_id": "c_2"}, ()),
        _Write(row, 2, {}, {}, {"cluster_id": "c_2"}, ("quality_score",)),
        _Write(row, 3, {}, {}, {"cluster_id": "c_3"}, ("quality_score",)),
        _Write(row, 4, {}, {}, {"cluster_id": "c_2", "asset_id": "1"}, ()),
        _Write(row, 5, {}, {}, {"asset_id": "1", "cluster_id": "c_2"}, ()),  # same dict
        _Write(row, 6, {}, {}, {}, ("person_id", "quality_score")),
        _Write(row, 7, {}, {}, {"x": 1}, ()),
        _Write(row, 8, {}, {}, {"x": 1.0}, ()),  # 1.0 is another value to write
        _Write(row, 9, {}, {}, {"x": True}, ()),  # and true a third
        _Write(row, 10, {}, {}, {"x": 1}, ()),
    ]
    ops = group_writes(writes)
    sets = [op for op in ops if isinstance(op, SetKeys)]
    clears = [op for op in ops if isinstance(op, DeleteKeys)]
    assert len(ops) == len(sets) + len(clears)
    by_values = {_strict(op.values): list(op.points) for op in sets}
    assert by_values == {
        _strict({"cluster_id": "c_2"}): [1, 2],
        _strict({"cluster_id": "c_3"}): [3],
        _strict({"cluster_id": "c_2", "asset_id": "1"}): [4, 5],
        _strict({"x": 1}): [7, 10],
        _strict({"x": 1.0}): [8],
        _strict({"x": True}): [9],
    }
    assert {tuple(op.keys): list(op.points) for op in clears} == {
        ("quality_score",): [2, 3],
        ("person_id", "quality_score"): [6],
    }
    # each point gets exactly what it asked for, through the grouped ops
    for w in writes:
        got: dict[str, Any] = {}
        cleared: set[str] = set()
        for op in ops:
            if w.point_id in op.points:
                if isinstance(op, SetKeys):
                    got.update(op.values)
                else:
                    cleared.update(op.keys)
        assert _strict(got) == _strict(w.values) and cleared == set(w.delete)


def test_points_left_undone_are_counted_per_key_whatever_their_sub_kinds() -> None:
    # A spill record's `keys` maps each key to how it differs; the count is per key.
    tallies = Tallies()
    tallies.leave(
        [
            {"kind": "wrong_person", "keys": {"person_id": "wrong"}},
            {"kind": "stale_person", "keys": {"person_id": "stale", "is_assigned": "wrong"}},
            {"kind": "missing_point"},
        ]
    )
    assert tallies.remaining_keys == Counter({"person_id": 2, "is_assigned": 1})
    assert tallies.remaining == Counter({"wrong_person": 1, "stale_person": 1, "missing_point": 1})


@pytest.mark.parametrize("pg_type", ["double precision", "numeric", "real"])
def test_nan_agrees_only_with_nan(pg_type: str) -> None:
    rule = rule_for("c", pg_type, False, "t")
    nan = float("nan")
    assert rule.agrees(nan, nan)
    assert not rule.agrees(0.0, nan)
    assert not rule.agrees(nan, 0.0)
