"""The full scan's fast path (`reconcile.joined`) against the row stream's merge, on the same
PostgreSQL table and points: every count, every record, the same, whatever the values.

The cases are those a review found where the joined statement once disagreed (each
failed before its fix), and random worlds cut into random chunks and ranges.
"""

from __future__ import annotations

import itertools
import json
import random
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from reconcile import joined as joined_module
from reconcile.diff import ScanStats, compared_keys, diff
from reconcile.errors import StoreError
from reconcile.joined import joined
from reconcile.settings import Settings
from reconcile.stores import postgres as postgres_module
from reconcile.stores.base import KeyRange, Page, Point, PointId, point_order
from reconcile.stores.postgres import Postgres

U = "00000000-0000-0000-0000-000000000001"


class Table:
    """One table `t` in the test's schema, and both paths over it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn = psycopg.connect(url, autocommit=True)

    def create(self, columns: str, *rows: str) -> None:
        self.conn.execute("DROP TABLE IF EXISTS t")
        self.conn.execute(f"CREATE TABLE t ({columns})")
        for row in rows:
            self.conn.execute(f"INSERT INTO t VALUES ({row})")

    def both(
        self,
        points: list[tuple[PointId, dict[str, Any]]],
        maps: tuple[str, ...] = (),
        key_range: KeyRange | None = None,
        **settings: Any,
    ) -> tuple[Any, Any]:
        """(row stream's merge, joined path): each its stats and records, or its error."""
        s = Settings(self.url, qdrant_path="/nowhere", table="t", map=maps, **settings)
        postgres = Postgres(s)
        key_range = key_range or KeyRange()
        keys = compared_keys(s, postgres.inspect().rules)
        found = []
        for name in ("rows", "joined"):
            stats = ScanStats()
            try:
                if name == "rows":
                    stream = iter([Point(p, payload) for p, payload in points])
                    drifts = list(diff(postgres.rows(key_range), stream, keys, stats))
                else:
                    pairs = joined(postgres, pages(points), key_range, keys, stats)
                    drifts = [d for rows, pts in pairs for d in diff(rows, pts, keys, stats)]
            except StoreError as exc:
                found.append(("error", str(exc).split(" (")[0]))
                continue
            # JSON text: NaN equals NaN there, as the rules say it does.
            records = json.dumps([d.record() for d in drifts], sort_keys=True)
            found.append((vars(stats), records))
        postgres.close()
        return found[0], found[1]

    def candidates(
        self, points: list[tuple[PointId, dict[str, Any]]], maps: tuple[str, ...], **settings: Any
    ) -> list[PointId]:
        """The points the joined statement hands to the merge (in drift, or not judged)."""
        s = Settings(self.url, qdrant_path="/nowhere", table="t", map=maps, **settings)
        postgres = Postgres(s)
        keys = compared_keys(s, postgres.inspect().rules)
        try:
            pairs = joined(postgres, pages(points), KeyRange(), keys, ScanStats())
            return [point.point_id for _, pts in pairs for point in pts]
        finally:
            postgres.close()


def pages(points: list[tuple[PointId, dict[str, Any]]]) -> Iterator[Page]:
    """The points as an engine's scroll gives them: pages of 1 to 3 points, UUIDs as
    `uuid.UUID`s (as Qdrant Edge gives them) in every other page, else as strings."""
    rnd = random.Random(len(points))
    n = 0
    while n < len(points):
        size = rnd.randint(1, 3)
        page = points[n : n + size]
        raw = [uuid.UUID(p) if isinstance(p, str) and n % 2 else p for p, _ in page]
        yield Page(raw, [payload for _, payload in page])
        n += size


@pytest.fixture
def table(pg_url: str) -> Iterator[Table]:
    t = Table(pg_url)
    yield t
    t.conn.close()


NUMBERS = (
    "id text, qdrant_point_id bigint, person_id bigint, updated_at timestamptz, b bigint, "
    "d double precision, n numeric, r real, j json, jb jsonb"
)


@pytest.mark.parametrize(
    ("payload", "maps"),
    [
        ({"person_id": 1e16}, ()),  # a float Python writes 1e+16, jsonb 10000000000000000
        ({"person_id": 10**16, "b": 1e16}, ("b=b",)),
        ({"person_id": 10**16, "b": 10**16}, ("b=b",)),  # in sync
        ({"person_id": 10**16, "d": "NaN"}, ("d=d",)),  # to_jsonb(NaN) is the string "NaN"
        ({"person_id": 10**16, "n": "Infinity"}, ("n=n",)),
        ({"person_id": 10**16, "r": "NaN"}, ("r=r",)),
        ({"person_id": 10**16, "d": float("nan")}, ("d=d",)),  # no JSON form: all candidates
        ({"person_id": 10**16, "j": 100}, ("j=j",)),  # json '1e2' is a float to Python
        ({"person_id": 10**16, "j": 100.0}, ("j=j",)),
        ({"person_id": 10**16, "jb": 1e16}, ("jb=jb",)),
        ({"person_id": 10**16, "jb": 10**16}, ("jb=jb",)),
    ],
)
def test_numbers_are_judged_as_the_rules_say(
    table: Table, payload: dict[str, Any], maps: tuple[str, ...]
) -> None:
    table.create(NUMBERS, "'f1', 1, 10000000000000000, now(), 10000000000000000, 'NaN', "
                 "'Infinity', 'NaN', '1e2', '1e16'")  # fmt: skip
    rows, fast = table.both([(1, payload)], maps)
    assert fast == rows


@pytest.mark.parametrize(
    ("persons", "drifted"),
    [
        ([5, 10**16, None, 8, -3], [3]),  # whole numbers alone: sent as JSON numbers
        ([5.0, 10**16, None, 7, -3], [0]),  # a float among them: each value as its text
        ([5, 1e16, None, 7, True], [1, 4]),
        ([10**40, 10**16, None, 7, -3], [0]),  # past bigint: a number no row holds
    ],
)
def test_whole_numbers_and_their_texts_are_judged_alike(
    table: Table, persons: list[Any], drifted: list[int]
) -> None:
    """`joined._encoded` sends a chunk of integers at an exact position as numbers, and
    any other chunk as each value's text; the statement compares both as text, so only
    the points in drift come back as candidates, and the merge judges them."""
    table.create(
        "id text, qdrant_point_id bigint, person_id bigint, updated_at timestamptz, b bigint",
        *(f"'f{n}', {n}, {v}, now() - interval '1 day', {v}"
          for n, v in enumerate(["5", "10000000000000000", "NULL", "7", "-3"])),
    )  # fmt: skip
    for maps in ((), ("b=b",)):
        points: list[tuple[PointId, dict[str, Any]]] = [
            (n, {"person_id": v, "b": v}) for n, v in enumerate(persons)
        ]
        rows, fast = table.both(points, maps, min_age=60)
        assert fast == rows, maps
        assert rows[0]["in_sync"] == len(persons) - len(drifted)
        assert table.candidates(points, maps, min_age=60) == drifted, maps


def test_ids_go_as_bytes_whatever_form_an_adapter_gives() -> None:
    u = uuid.UUID("0123abcd-4567-89ef-0123-456789abcdef")
    forms: list[Any] = [u, str(u), str(u).upper(), u.hex, f"{{{u}}}", u.urn]
    assert joined_module._id_bytes(forms, integer=False) == u.bytes * len(forms)
    assert joined_module._id_bytes([0, 1, 2**63 - 1], integer=True) == bytes.fromhex(
        "0000000000000000" + "0000000000000001" + "7fffffffffffffff"
    )
    with pytest.raises(ValueError, match="badly formed"):  # 16 bytes, not a UUID's text
        joined_module._id_bytes(["0123abcd 4567 89ef 0123 456789abcdef"], integer=False)


def test_values_the_statement_cannot_take_fall_back_to_the_rows(table: Table) -> None:
    table.create(
        "id text, qdrant_point_id bigint, person_id text, updated_at timestamptz, j json",
        "'f1', 1, 'p', now(), '\"\\u0000\"'",
    )
    # An id past bigint (Qdrant's are unsigned), and a json value jsonb refuses.
    rows, fast = table.both([(1, {"person_id": "p", "j": "\x00"}), (2**63, {})], ("j=j",))
    assert fast == rows
    assert '"kind": "orphan_point"' in rows[1]


def test_a_value_with_no_payload_form_fails_as_on_the_row_stream(table: Table) -> None:
    table.create(
        "id text, qdrant_point_id bigint, person_id text, updated_at timestamptz, "
        "ts timestamptz, tn timestamp",
        "'f1', 1, 'p', now(), 'infinity', '-infinity'",
    )
    for key in ("ts", "tn"):
        rows, fast = table.both([(1, {"person_id": "p", key: "infinity"})], (f"{key}={key}",))
        assert (
            rows
            == fast
            == ("error", "PostgreSQL sent a value of a --map column that has no payload form")
        )


@pytest.mark.parametrize("id_type", ["boolean", "timestamptz", "bigint"])
def test_face_ids_read_as_the_row_stream_reads_them(table: Table, id_type: str) -> None:
    value = {"boolean": "true", "timestamptz": "'2024-01-01'", "bigint": "7"}[id_type]
    table.create(
        f"id {id_type}, qdrant_point_id bigint, person_id text, updated_at timestamptz",
        f"{value}, 1, 'p', now() - interval '1 day'",
    )
    rows, fast = table.both([(1, {"person_id": "q"})], min_age=60)
    assert fast == rows


def test_strings_timestamps_and_ids_of_the_other_kind(table: Table) -> None:
    table.create(
        "id text, qdrant_point_id uuid, person_id text, updated_at timestamptz, tx text, "
        "ts timestamptz, tn timestamp",
        f"'f1', '{U}', 'é', now(), 'a', '2024-06-01 12:00:00+02', '2024-06-01 12:00:00.5'",
    )
    cases: list[tuple[list[tuple[PointId, dict[str, Any]]], tuple[str, ...]]] = [
        ([(U, {"person_id": "e\u0301"})], ()),  # NFD is not NFC
        ([(U, {"person_id": "é", "tx": "\ud800"})], ("tx=tx",)),  # refused by jsonb
        ([(U, {"person_id": "é", "tx": "a\x00"})], ("tx=tx",)),
        ([(U, {"person_id": "é", "ts": "2024-06-01T10:00:00+00:00"})], ("ts=ts",)),
        ([(U, {"person_id": "é", "ts": "2024-06-01T10:00:00"})], ("ts=ts",)),
        ([(U, {"person_id": "é", "tn": "2024-06-01T12:00:00.500000"})], ("tn=tn",)),
        ([(U, {"person_id": "é", "tn": "2024-06-01T12:00:00.5+00:00"})], ("tn=tn",)),
        ([(5, {"person_id": "é"}), (U, {"person_id": "é"})], ()),
        ([], ()),
    ]
    for points, maps in cases:
        rows, fast = table.both(points, maps)
        assert fast == rows, (points, maps)


@pytest.mark.parametrize("seed", range(30))
def test_random_worlds_cut_anywhere(
    table: Table, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rnd = random.Random(seed)
    ptype = rnd.choice(["uuid", "bigint", "integer"])

    def own() -> PointId:
        return str(uuid.UUID(int=rnd.getrandbits(128))) if ptype == "uuid" else rnd.randrange(60)

    def other() -> PointId:
        return rnd.randrange(60) if ptype == "uuid" else str(uuid.UUID(int=rnd.getrandbits(128)))

    points: dict[PointId, dict[str, Any]] = {}
    rows = []
    for point in [own() for _ in range(rnd.randrange(25))]:
        person = rnd.choice([None, "a", "b"])
        if rnd.random() < 0.7:
            points[point] = {} if person is None else {"person_id": person}
        if rnd.random() < 0.85:
            rows.append((point, person))
        if rnd.random() < 0.1:
            rows.append((point, "a"))  # a duplicate
    for _ in range(rnd.randrange(4)):
        points[other()] = {"person_id": "a"}
    rows += [(None, "a")] * rnd.randrange(3)
    values = []
    for n, (point, person) in enumerate(rows):
        recent = "now()" if rnd.random() < 0.1 else "now() - interval '1 day'"
        p = "NULL" if point is None else f"'{point}'"
        values.append(f"'f{n}', {p}, {'NULL' if person is None else repr(person)}, {recent}")
    table.create(
        f"id text, qdrant_point_id {ptype}, person_id text, updated_at timestamptz", *values
    )
    named = [point for point, _ in rows if point is not None]
    if len(set(named)) == len(named) and rnd.random() < 0.5:
        # The service's table: the statement then leaves out the duplicate count.
        table.conn.execute("ALTER TABLE t ADD UNIQUE (qdrant_point_id)")
    monkeypatch.setattr(joined_module, "CHUNK", rnd.randint(1, 5))
    monkeypatch.setattr(postgres_module, "JOIN_LIMIT", rnd.choice([0, 2, 50_000]))
    ordered = sorted(points.items(), key=lambda item: point_order(item[0]))
    cuts = sorted({own() for _ in range(rnd.randrange(3))}, key=point_order)
    bounds: list[PointId | None] = [None, *cuts, None]
    for low, high in itertools.pairwise(bounds):
        key_range = KeyRange(low, high)
        mine = [
            (p, payload)
            for p, payload in ordered
            if (low is None or point_order(p) >= point_order(low)) and not key_range.beyond(p)
        ]
        rows_found, fast = table.both(mine, key_range=key_range, min_age=3600)
        assert fast == rows_found, key_range.describe()


@pytest.mark.parametrize(
    ("index", "unique"),
    [
        ("ALTER TABLE t ADD UNIQUE (qdrant_point_id)", True),
        ("CREATE UNIQUE INDEX ON t (qdrant_point_id) INCLUDE (person_id)", True),
        ("CREATE INDEX ON t (qdrant_point_id)", False),
        ("CREATE UNIQUE INDEX ON t (qdrant_point_id) WHERE person_id IS NOT NULL", False),
        ("CREATE UNIQUE INDEX ON t (qdrant_point_id, id)", False),
        ("CREATE UNIQUE INDEX ON t (id)", False),
    ],
)
def test_only_a_whole_unique_index_on_the_point_skips_the_duplicate_count(
    table: Table, index: str, unique: bool
) -> None:
    table.create("id text, qdrant_point_id bigint, person_id text, updated_at timestamptz")
    table.conn.execute(index)
    s = Settings(table.url, qdrant_path="/nowhere", table="t")
    postgres = Postgres(s)
    try:
        assert postgres.inspect().point_unique is unique
        assert ("OVER (PARTITION BY" not in postgres.joiner()._sql[True, True]) is unique
    finally:
        postgres.close()


def test_a_unique_index_left_invalid_still_counts_duplicates(table: Table) -> None:
    """CREATE UNIQUE INDEX CONCURRENTLY that met a duplicate leaves an invalid index behind:
    the duplicate is still there, and the joined path must still report it."""
    table.create(
        "id text, qdrant_point_id bigint, person_id text, updated_at timestamptz",
        "'f1', 1, 'a', now() - interval '1 day'",
        "'f2', 1, 'a', now() - interval '1 day'",
        "'f3', 2, 'b', now() - interval '1 day'",
    )
    with pytest.raises(psycopg.errors.UniqueViolation):
        table.conn.execute("CREATE UNIQUE INDEX CONCURRENTLY t_point ON t (qdrant_point_id)")
    found = table.conn.execute(
        "SELECT indisvalid FROM pg_index WHERE indexrelid = 't_point'::regclass"
    )
    assert found.fetchone() == (False,)
    rows_found, fast = table.both([(1, {"person_id": "a"}), (2, {"person_id": "b"})])
    assert fast == rows_found
    assert '"duplicate_point"' in rows_found[1]


def test_a_unique_index_does_not_cover_an_inheritance_childs_rows(table: Table) -> None:
    """The scan reads a child table's rows with its parent's, but the parent's unique
    index does not hold them: the same point in both is still a duplicate."""
    table.create(
        "id text, qdrant_point_id bigint UNIQUE, person_id text, updated_at timestamptz",
        "'f1', 1, 'a', now() - interval '1 day'",
    )
    table.conn.execute("DROP TABLE IF EXISTS t_child")
    table.conn.execute("CREATE TABLE t_child () INHERITS (t)")
    table.conn.execute("INSERT INTO t_child VALUES ('f2', 1, 'a', now() - interval '1 day')")
    rows_found, fast = table.both([(1, {"person_id": "a"})])
    table.conn.execute("DROP TABLE t_child")
    assert fast == rows_found
    assert '"duplicate_point"' in rows_found[1]


@pytest.mark.parametrize(
    ("id_type", "value"),
    [
        ("char(8)", "abcdefgh"),
        ("varchar(12)", "face-1"),
        ("text", "face-1"),
        ("uuid", U),
        ("bigint", "7"),
        ("integer", "7"),
        ("numeric(5,1)", "7.5"),
        ("bit(3)", "101"),
    ],
)
def test_faces_are_looked_up_by_their_id_whatever_its_type(
    table: Table, id_type: str, value: str
) -> None:
    table.create(
        f"id {id_type}, qdrant_point_id bigint, person_id text, updated_at timestamptz",
        f"'{value}', 1, 'a', now()",
    )
    postgres = Postgres(Settings(table.url, qdrant_path="/nowhere", table="t"))
    try:
        assert postgres.points_of_faces([value, "0"] if id_type != "uuid" else [value]) == {
            value: 1
        }
    finally:
        postgres.close()


def test_ids_the_point_column_cannot_hold_name_no_row(table: Table) -> None:
    """Qdrant's integer ids reach 2^64 - 1, a bigint column 2^63 - 1: such an id (or a
    UUID in an integer table) is looked up as naming no row, not as an error."""
    table.create(
        "id text, qdrant_point_id bigint, person_id text, updated_at timestamptz",
        "'f1', 1, 'a', now()",
    )
    postgres = Postgres(Settings(table.url, qdrant_path="/nowhere", table="t"))
    try:
        found = postgres.rows_of_points([1, 2**63, 2**64 - 1, U])
        assert [(row.point_id, row.face_id) for row in found] == [(1, "f1")]
        with postgres.reading("a test") as conn:
            assert postgres.rows_per_point(conn, [2**63, 1]) == {1: 1}
    finally:
        postgres.close()
