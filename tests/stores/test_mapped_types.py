"""Every `--map` column type through the real PostgreSQL: the COPY stream and the driver's
locked lookups give the same canonical values, and they are what the service's Python
writes; unsupported types and casts are refused before any scan."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
import pytest

from reconcile.errors import ConfigError
from reconcile.mapping import RULES
from reconcile.ops.repair import repair
from reconcile.plan import RepairOptions
from reconcile.settings import Settings
from reconcile.stores.postgres import LockMode, Postgres
from tests.helpers import run_cli
from tests.naive import column_string, written
from tests.world import World

# (column, its DDL type, its format_type name) — one column of every supported type.
SUPPORTED = [
    ("c_uuid", "uuid", "uuid"),
    ("c_text", "text", "text"),
    ("c_varchar", "varchar(100)", "character varying"),
    ("c_small", "smallint", "smallint"),
    ("c_int", "integer", "integer"),
    ("c_big", "bigint", "bigint"),
    ("c_bool", "boolean", "boolean"),
    ("c_double", "double precision", "double precision"),
    ("c_numeric", "numeric", "numeric"),
    ("c_real", "real", "real"),
    ("c_tstz", "timestamptz", "timestamp with time zone"),
    ("c_ts", "timestamp", "timestamp without time zone"),
    ("c_json", "json", "json"),
    ("c_jsonb", "jsonb", "jsonb"),
]
UNSUPPORTED = [
    ("c_bytea", "bytea"),
    ("c_interval", "interval"),
    ("c_point", "point"),
    ("c_arr", "text[]"),
]
TEXT_MAPPED = ["c_uuid", "c_text", "c_varchar", "c_small", "c_int", "c_big"]
PG_TYPE = {column: name for column, _ddl, name in SUPPORTED}
# Every supported column under a key of its own, the text-castable ones also as ::text,
# and columns the tool already reads (id, point, person) mapped once more.
MAP: dict[str, str] = {
    **{f"k_{column}": column for column, _ddl, _name in SUPPORTED},
    **{f"t_{column}": f"{column}::text" for column in TEXT_MAPPED},
    "face_instance_id": "id",
    "point_copy": "qdrant_point_id",
    "person_copy": "person_id",
}

PLUS_2 = timezone(timedelta(hours=2))
MINUS_2_30 = timezone(timedelta(hours=-2, minutes=-30))
UPPER = "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"
UNICODE = 'tab\there \\ back\nnew ünï ✓ 😀 "q" , ;'
JSON_TEXT = '{"b": [1, true, 1.0, "x"],   "a": {"z": null, "y": -0.5}}'
JSONB_TEXT = '{"zz": 1.0, "a": [1, true], "m": {"k": "v"}}'

# Each row's mapped columns as the service's Python holds them (None: NULL). uuids and
# JSON are given as the text inserted (upper case, key order, spacing kept by json).
ROWS: list[dict[str, Any]] = [
    {
        "c_uuid": UPPER,  # PostgreSQL prints it in lower case
        "c_text": UNICODE,
        "c_varchar": "-1",
        "c_small": -32768,
        "c_int": 4711,
        "c_big": 2**63 - 1,
        "c_bool": True,
        "c_double": 0.1,
        "c_numeric": Decimal("0.1"),
        "c_real": 0.81,
        "c_tstz": datetime(2024, 6, 1, 12, 22, tzinfo=PLUS_2),
        "c_ts": datetime(2024, 6, 1, 10, 22, 0, 123456),
        "c_json": JSON_TEXT,
        "c_jsonb": JSONB_TEXT,
    },
    {column: None for column, _ddl, _name in SUPPORTED},
    {
        "c_uuid": str(uuid.UUID(int=1)),
        "c_text": "",
        "c_varchar": "unknown_12",
        "c_small": 32767,
        "c_int": -(2**31),
        "c_big": -(2**63),
        "c_bool": False,
        "c_double": 1e300,
        "c_numeric": Decimal("12345678901234567890.125"),
        "c_real": 1.0,
        "c_tstz": datetime(1999, 12, 31, 21, 29, 59, 5, tzinfo=MINUS_2_30),
        "c_ts": datetime(2024, 6, 1, 10, 22),
        "c_json": '"x"',  # a JSON string is a string, not a JSON text to parse again
        "c_jsonb": '"5"',
    },
    {
        "c_uuid": str(uuid.UUID(int=2**128 - 1)),
        "c_text": "5",
        "c_varchar": "ÄÖÜ",
        "c_small": 0,
        "c_int": 0,
        "c_big": 1,
        "c_bool": True,
        "c_double": -0.0,
        "c_numeric": Decimal("5.00"),
        "c_real": -2.5,
        "c_tstz": datetime(1900, 1, 1, tzinfo=UTC),  # St. John's offset then had seconds
        "c_ts": datetime(1, 1, 1),
        "c_json": "null",  # JSON null: the key must be absent, as for NULL
        "c_jsonb": "[]",
    },
]


def service_value(column: str, value: Any, text: bool = False) -> Any:
    """What the service's Python writes into the payload for this column value."""
    if value is None:
        return None
    pg_type = PG_TYPE[column]
    if pg_type in ("json", "jsonb"):
        return json.loads(value)
    if pg_type == "uuid":
        value = uuid.UUID(value)
    return written(pg_type, value, text)


def _strict(value: Any) -> str:
    # JSON's text tells 1 from 1.0 and true from 1; floats keep every digit.
    return json.dumps(value, sort_keys=True)


def _in_zone(pg_url: str, zone: str) -> str:
    parts = urlsplit(pg_url)
    query = dict(parse_qsl(parts.query))
    query["options"] = f"{query.get('options', '')} -cTimeZone={zone}".strip()
    # %20, not urlencode's '+': libpq does not read '+' as a space.
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


def _create(conn: Any) -> None:
    columns = ", ".join(f"{c} {ddl}" for c, ddl, _name in SUPPORTED)
    unsupported = ", ".join(f"{c} {ddl}" for c, ddl in UNSUPPORTED)
    conn.execute(
        f"CREATE TABLE typed (id uuid PRIMARY KEY, qdrant_point_id uuid UNIQUE, "
        f"person_id uuid, updated_at timestamptz NOT NULL DEFAULT now(), {columns}, "
        f"{unsupported})"
    )


def _insert(conn: Any, values: dict[str, Any], person: str | None = None) -> tuple[str, str]:
    face, point = str(uuid.uuid4()), str(uuid.uuid4())
    names = [c for c, _ddl, _name in SUPPORTED]
    # Each value cast in SQL, so that PostgreSQL parses the text we give (upper-case
    # uuids, JSON spacing and key order) rather than psycopg choosing a type.
    casts = ", ".join(f"%s::{ddl}" for _c, ddl, _name in SUPPORTED)
    conn.execute(
        f"INSERT INTO typed (id, qdrant_point_id, person_id, {', '.join(names)}) "
        f"VALUES (%s, %s, %s, {casts})",
        (face, point, person, *(values[c] for c in names)),
    )
    return face, point


def _settings(url: str, tmp_path: Path, **overrides: Any) -> Settings:
    overrides.setdefault("map", MAP)
    return Settings(
        database_url=url, qdrant_path=str(tmp_path / "unused"), table="typed", **overrides
    )


def _expected(values: dict[str, Any], face: str, point: str, person: str | None) -> list[Any]:
    found: list[Any] = []
    for key, source in MAP.items():
        column, _, cast = source.partition("::")
        if column == "id":
            found.append(face)
        elif column == "qdrant_point_id":
            found.append(point)
        elif column == "person_id":
            found.append(person)
        elif cast:
            value = values[column]
            found.append(None if value is None else column_string(PG_TYPE[column], value))
        else:
            found.append(service_value(column, values[column]))
        assert key  # every entry of MAP is covered, in its order
    return found


@pytest.fixture(params=["UTC", "America/St_Johns", "Asia/Kathmandu"])
def zoned_url(pg_url: str, request: pytest.FixtureRequest) -> str:
    """The test's schema, with a session time zone: timestamptz text depends on it."""
    return _in_zone(pg_url, str(request.param))


@pytest.fixture
def typed(zoned_url: str) -> Iterator[list[tuple[str, str, str | None, dict[str, Any]]]]:

    with psycopg.connect(zoned_url, autocommit=True) as conn:
        _create(conn)
        made = []
        for n, values in enumerate(ROWS):
            person = None if n % 2 else str(uuid.uuid4())
            face, point = _insert(conn, values, person)
            made.append((face, point, person, values))
        yield made


def test_copy_and_driver_give_the_service_values(
    zoned_url: str, typed: list[tuple[str, str, str | None, dict[str, Any]]], tmp_path: Path
) -> None:
    postgres = Postgres(_settings(zoned_url, tmp_path))
    try:
        info = postgres.inspect()
        assert info.mapped_types[: len(SUPPORTED)] == tuple(n for _c, _d, n in SUPPORTED)
        streamed = {row.face_id: row for row in postgres.rows()}
        with postgres.reading("test lookups") as conn:
            looked_up = {
                row.face_id: row
                for row in postgres.select_rows(conn, [p for _f, p, _p, _v in typed], LockMode.NONE)
            }
    finally:
        postgres.close()
    assert set(streamed) == set(looked_up) == {face for face, _p, _q, _v in typed}
    if "St_Johns" in zoned_url:
        # The case is real: PostgreSQL writes this instant with an offset in seconds.
        with psycopg.connect(zoned_url) as conn:
            (text,) = conn.execute(
                "SELECT c_tstz::text FROM typed WHERE c_tstz < '1901-01-01'"
            ).fetchone() or ("",)
        assert text.endswith("-03:30:52"), text
    for face, point, person, values in typed:
        copy, driver = streamed[face], looked_up[face]
        # identical, types included: the merge compares one and repair writes the other
        assert repr(copy) == repr(driver), face
        assert (copy.point_id, copy.person_id, copy.recent) == (point, person, False)
        expected = _expected(values, face, point, person)
        for key, got, want in zip(MAP, copy.values, expected, strict=True):
            assert _strict(got) == _strict(want), (key, got, want)
        # and the service's payload is in sync under each column's rule
        for rule, key, got, want in zip(info.rules, MAP, copy.values, expected, strict=True):
            assert rule.agrees(want, got), (key, want, got)


def test_postgresql_text_form_is_pythons_str(zoned_url: str, tmp_path: Path) -> None:
    # ::text is allowed where PostgreSQL's text form is str() of the driver's value:
    # integers, lower-case uuids, text. Checked on values at the edges of each type.

    with psycopg.connect(zoned_url, autocommit=True) as conn:
        _create(conn)
        for small, integer, big, text in [
            (-32768, -(2**31), -(2**63), "x"),
            (32767, 2**31 - 1, 2**63 - 1, "ünï"),
            (0, 0, 0, ""),
        ]:
            values: dict[str, Any] = dict.fromkeys(PG_TYPE)
            values.update(
                c_uuid=UPPER, c_small=small, c_int=integer, c_big=big, c_text=text, c_varchar=text
            )
            _insert(conn, values)
    postgres = Postgres(_settings(zoned_url, tmp_path))
    try:
        rows = list(postgres.rows())
    finally:
        postgres.close()
    offset = len(SUPPORTED)
    seen = 0
    for row in rows:
        text_values = row.values[offset : offset + len(TEXT_MAPPED)]
        native = row.values[: len(TEXT_MAPPED)]
        for column, as_text, value in zip(TEXT_MAPPED, text_values, native, strict=True):
            assert as_text == (str(value) if column != "c_uuid" else str(uuid.UUID(UPPER)))
            seen += 1
    assert seen == 3 * len(TEXT_MAPPED)


def test_every_supported_type_is_in_the_table() -> None:
    assert {name for _c, _d, name in SUPPORTED} == set(RULES)


@pytest.mark.parametrize(("column", "pg_type"), UNSUPPORTED)
def test_unsupported_type_refused_naming_column_and_type(
    pg_url: str, tmp_path: Path, column: str, pg_type: str
) -> None:

    with psycopg.connect(pg_url, autocommit=True) as conn:
        _create(conn)
    postgres = Postgres(_settings(pg_url, tmp_path, map={"k": column}))
    try:
        with pytest.raises(ConfigError) as caught:
            postgres.inspect()
    finally:
        postgres.close()
    message = str(caught.value)
    assert f"typed.{column} has type {pg_type}" in message
    assert "which --map does not compare" in message and "cast it in a view" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("column", "pg_type"),
    [
        ("c_bool", "boolean"),
        ("c_double", "double precision"),
        ("c_real", "real"),
        ("c_numeric", "numeric"),
        ("c_tstz", "timestamp with time zone"),
        ("c_ts", "timestamp without time zone"),
        ("c_json", "json"),
        ("c_jsonb", "jsonb"),
    ],
)
def test_text_cast_refused_where_str_differs(
    pg_url: str, tmp_path: Path, column: str, pg_type: str
) -> None:

    with psycopg.connect(pg_url, autocommit=True) as conn:
        _create(conn)
    postgres = Postgres(_settings(pg_url, tmp_path, map={"flag_text": f"{column}::text"}))
    try:
        with pytest.raises(ConfigError, match=f"typed.{column} has type {pg_type}") as caught:
            postgres.inspect()
    finally:
        postgres.close()
    assert "map it without ::text" in str(caught.value)


def test_missing_columns_refused_naming_the_columns_there(pg_url: str, tmp_path: Path) -> None:

    with psycopg.connect(pg_url, autocommit=True) as conn:
        _create(conn)
    postgres = Postgres(
        _settings(pg_url, tmp_path, map={"a": "nope", "b": "c_bytea", "c": "c_int"})
    )
    try:
        with pytest.raises(ConfigError) as caught:
            postgres.inspect()
    finally:
        postgres.close()
    message = str(caught.value)
    assert "column 'nope' of --map a=nope not found in typed" in message
    assert "c_bool, c_bytea, c_double" in message  # the columns there, sorted
    assert "typed.c_bytea has type bytea" in message  # every problem, in one line
    assert "\n" not in message


def _cli_world(pg_url: str, tmp_path: Path) -> World:
    world = World(pg_url, tmp_path / "qdrant")
    _create(world.conn)
    _insert(world.conn, ROWS[0])
    return world


def test_check_and_audit_refuse_an_unsupported_type_exit_2(pg_url: str, tmp_path: Path) -> None:
    world = _cli_world(pg_url, tmp_path)
    try:
        env = world.env()
        common = ["--table", "typed", "--map", "cluster_id=c_text", "--map", "span=c_interval"]
        result = run_cli("check", *common, env=env)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        problems = [line for line in result.stdout.splitlines() if line.startswith("problem:")]
        assert len(problems) == 1, result.stdout
        assert "typed.c_interval has type interval" in problems[0]

        result = run_cli("audit", *common, env=env)
        assert result.returncode == 2, result.stdout + result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("reconcile: error: "), result.stderr
        assert "typed.c_interval has type interval" in lines[0]
        assert result.stdout == ""  # refused before any scan: no report

        result = run_cli("check", "--table", "typed", "--map", "f=c_bool::text", env=env)
        assert result.returncode == 2
        assert "typed.c_bool has type boolean" in result.stdout
    finally:
        world.close()


def test_a_value_with_no_payload_form_is_one_line_naming_the_fix(
    pg_url: str, tmp_path: Path
) -> None:
    """An infinite timestamp cannot become Python's datetime nor an ISO string: exit 3."""
    world = _cli_world(pg_url, tmp_path)
    try:
        world.conn.execute("UPDATE typed SET c_tstz = 'infinity'")
        result = run_cli("audit", "--table", "typed", "--map", "t=c_tstz", env=world.env())
        assert result.returncode == 3, result.stdout + result.stderr
        [line] = result.stderr.strip().splitlines()
        assert line.startswith(
            "reconcile: error: PostgreSQL sent a value of a --map column that has no payload form"
        )
        assert "infinity" in line and "through a view" in line
    finally:
        world.close()


# --- the whole round trip: service payloads in sync, look-alikes judged, repair exact ---


def test_round_trip_through_both_stores(pg_url: str, tmp_path: Path) -> None:
    world = World(_in_zone(pg_url, "America/St_Johns"), tmp_path / "qdrant")
    try:
        _create(world.conn)
        points = []
        for n, values in enumerate(ROWS):
            person = None if n % 2 else str(uuid.uuid4())
            face, point = _insert(world.conn, values, person)
            payload = {
                key: want
                for key, want in zip(MAP, _expected(values, face, point, person), strict=True)
                if want is not None
            }
            if person is not None:
                payload["person_id"] = person
            payload["vector_note"] = "untouched"
            world.upsert(point, payload)
            points.append(point)
        report = world.audit(table="typed", map=MAP)
        assert report.counts["in_sync"] == len(ROWS), report.to_json()
        assert report.drifted == 0

        first = world.payload(points[0])
        # Equal by the rules, in another spelling: must stay in sync.
        equal = {
            "k_c_real": 0.8100000023841858,
            "k_c_tstz": "2024-06-01T07:52:00-02:30",
        }
        # Look-alikes on the wrong side of the rule.
        wrong = {
            "k_c_uuid": UPPER,
            "k_c_int": 4711.0,
            "t_c_int": 4711,
            "k_c_text": first["k_c_text"].upper(),
            "k_c_bool": 1,
            "k_c_ts": "2024-06-01T10:22:00.123456+00:00",
            "k_c_jsonb": {"zz": 1, "a": [1, True], "m": {"k": "v"}},
            "k_c_json": {"b": [1, 1, 1.0, "x"], "a": {"z": None, "y": -0.5}},
        }
        world.upsert(points[0], {**first, **equal, **wrong, "k_c_numeric": None})
        # The NULL row: a value where NULL means absent.
        second = world.payload(points[1])
        world.upsert(points[1], {**second, "k_c_small": 0, "k_c_json": None})
        # numeric 5.00 is the JSON number 5 as well as 5.0
        world.upsert(points[3], {**world.payload(points[3]), "k_c_numeric": 5})
        report = world.audit(table="typed", map=MAP)
        assert report.counts["payload_mismatch"] == 2, report.to_json()
        keys = {k: v for k, v in report.keys.items() if any(v.values())}
        assert keys == {
            **{k: {"missing": 0, "wrong": 1, "stale": 0} for k in wrong},
            "k_c_numeric": {"missing": 1, "wrong": 0, "stale": 0},
            "k_c_small": {"missing": 0, "wrong": 0, "stale": 1},
        }

        settings = world.settings(table="typed", map=MAP)
        journal = tmp_path / f"journal-{time.monotonic_ns()}.jsonl"
        repaired = repair(
            settings,
            RepairOptions(max_changes="100%", journal=journal),
            stores=world.stores(settings),
        )
        assert repaired.tallies.applied == 2 and repaired.tallies.failed == 0
        after = world.payload(points[0])
        # exactly the differing keys written, with the service's values; the equal
        # spellings and every other key left as they were
        expected = _expected(ROWS[0], after["face_instance_id"], points[0], after["person_id"])
        service = dict(zip(MAP, expected, strict=True))
        for key in [*wrong, "k_c_numeric"]:
            assert _strict(after[key]) == _strict(service[key]), key
        for key, value in equal.items():
            assert after[key] == value, key
        assert after["vector_note"] == "untouched"
        assert "k_c_small" not in world.payload(points[1])
        assert world.payload(points[3])["k_c_numeric"] == 5
        assert world.audit(table="typed", map=MAP).drifted == 0
    finally:
        world.close()
