"""Audit against a real PostgreSQL and Qdrant local mode."""

from __future__ import annotations

import dataclasses
import gc
import json
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconcile import joined
from reconcile.diff import Kind
from reconcile.errors import ConfigError, StoreError
from reconcile.ops.audit import audit
from reconcile.settings import Settings
from reconcile.stores import postgres
from reconcile.stores.base import Page, Row
from reconcile.testing.world import create_collection, create_schema
from tests.naive import naive_counts
from tests.world import SERVICE, World


def test_every_kind_found_and_charged(world: World, tmp_path: Path) -> None:
    world.loosen()
    alice, bob, carol = world.person(), world.person(), world.person()
    for _ in range(3):
        world.face(alice)
    world.face(None)
    world.face(alice, payload={"is_assigned": False})  # suggestion accepted in PG only
    world.face(alice, payload={"person_id": bob, "is_assigned": True})  # merged in PG only
    world.face(None, payload={"person_id": carol, "is_assigned": True})  # person deleted
    world.face(None, payload={"person_id": carol, "is_assigned": True})
    world.face(bob, payload={"person_id": bob})  # sentinel lost
    world.face(bob, point=False)  # point lost
    world.face(row=False, payload={"person_id": bob})  # face row deleted
    shared = world.face(bob)
    world.face(alice, point_id=shared, point=False)  # two rows name one point
    world.conn.execute(
        "INSERT INTO face_instances (id, asset_id, bbox_x, bbox_y, bbox_w, bbox_h, "
        "detection_confidence, qdrant_point_id) VALUES (%s, 1, 0, 0, 1, 1, 0.5, NULL)",
        (str(uuid.uuid4()),),
    )

    details = tmp_path / "drift.jsonl"
    report = world.audit(flag_key="is_assigned", details=details)
    assert report.counts == {
        "in_sync": 4,
        "missing_person": 1,
        "wrong_person": 1,
        "stale_person": 2,
        "flag_mismatch": 1,
        "payload_mismatch": 0,
        "missing_point": 1,
        "orphan_point": 1,
        "duplicate_point": 1,
    }
    assert (report.rows, report.points, report.rows_without_point) == (13, 11, 1)
    assert report.drifted == 8 and report.repairable == 5
    assert dict(report.top_persons)[carol] == 2
    # missing + wrong, and the duplicate when alice is the smaller id its rows name
    assert dict(report.top_persons)[alice] == 2 + (alice < bob)
    records = [json.loads(line) for line in details.read_text().splitlines()]
    assert len(records) == 8
    assert stat.S_IMODE(details.stat().st_mode) == 0o600
    stale = [r for r in records if r["kind"] == "stale_person"]
    assert stale[0]["expected"] == {"person_id": None, "is_assigned": False}
    assert stale[0]["actual"] == {"person_id": carol, "is_assigned": True}
    dup = next(r for r in records if r["kind"] == "duplicate_point")
    assert len(dup["face_ids"]) == 2


def test_json_report_shape(world: World) -> None:
    world.face(world.person())
    data = world.audit().to_json()
    assert set(data) >= {
        "schema_version",
        "table",
        "collection",
        "scanned",
        "counts",
        "drifted",
        "repairable",
        "top_persons",
        "duration_seconds",
    }
    assert data["schema_version"] == 1
    assert set(data["counts"]) == {k.value for k in Kind}
    assert data["counts"]["in_sync"] == 1 and data["drifted"] == 0


def test_integer_point_ids(pg_url: str, tmp_path: Path) -> None:
    world = World(pg_url, tmp_path / "q", point_type="bigint")
    try:
        p = world.person()
        ids = [world.face(p, point_id=world.new_point_id(integer=True)) for _ in range(5)]
        world.face(None, point_id=world.new_point_id(integer=True), payload={"person_id": p})
        world.upsert(10_000, {})  # orphan with a large integer id
        world.upsert(str(uuid.uuid4()), {})  # a UUID point in an integer-keyed collection
        report = world.audit(page_size=2)
        assert report.counts["in_sync"] == len(ids)
        assert report.counts["stale_person"] == 1
        assert report.counts["orphan_point"] == 2
    finally:
        world.close()


@pytest.mark.parametrize("value", ["UPPER", 7, "", ["list"]])
def test_non_canonical_person_is_wrong_person_with_raw_value(
    world: World, tmp_path: Path, value: Any
) -> None:
    person = world.person()
    raw = person.upper() if value == "UPPER" else value
    world.face(person, payload={"person_id": raw, "is_assigned": True})
    details = tmp_path / "d.jsonl"
    report = world.audit(details=details)
    assert report.counts["wrong_person"] == 1
    (record,) = [json.loads(line) for line in details.read_text().splitlines()]
    assert record["actual"] == {"person_id": raw}
    assert record["expected"] == {"person_id": person}


def test_schema_qualified_table_outside_search_path(world: World, server_url: str) -> None:
    world.face(world.person())
    schema = world.conn.execute("SELECT current_schema()").fetchone()
    assert schema is not None
    s = Settings(
        database_url=server_url,
        qdrant_path=str(world.qdrant_dir),
        table=f"{schema[0]}.face_instances",
    )
    report = audit(s, stores=world.stores(s))
    assert report.counts["in_sync"] == 1
    assert report.table == f"{schema[0]}.face_instances"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"table": "nope"}, "table 'nope' not found"),
        ({"person_column": "owner"}, "column 'owner' not found"),
        ({"point_column": "cluster_id"}, "has type character varying"),
        ({"collection": "nope"}, "collection 'nope' not found"),
    ],
)
def test_mapping_errors_are_config_errors(
    world: World, overrides: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        world.audit(**overrides)


PERSONS = [None, "3f0c1e6a-0000-4000-8000-000000000001", "3f0c1e6a-0000-4000-8000-000000000002"]


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_real_stores_equal_naive_diff(world: World, data: st.DataObject) -> None:
    """Random worlds, through PostgreSQL's ORDER BY and Qdrant's scroll, give the naive counts."""
    integer = data.draw(st.booleans(), label="integer ids")
    world.conn.execute("DROP TABLE IF EXISTS face_instances, persons")
    create_schema(world.conn, "bigint" if integer else "uuid")
    world.loosen()
    assert world.client is not None
    create_collection(world.client, "faces", dim=8)
    for person in PERSONS[1:]:
        world.conn.execute("INSERT INTO persons (id, name) VALUES (%s, 'x')", (person,))
    pool = data.draw(st.lists(st.integers(1, 2**40), max_size=30, unique=True), label="ids")
    ids: list[Any] = (
        pool if integer else [str(uuid.UUID(int=i * 0x9E3779B97F4A7C15 % 2**128)) for i in pool]
    )
    rows = []
    for n in range(data.draw(st.integers(0, 30), label="rows")):
        point_id = data.draw(st.sampled_from([*ids, None]) if ids else st.none())
        person = data.draw(st.sampled_from(PERSONS))
        rows.append(Row(point_id, f"face{n}", person))
        world.conn.execute(
            "INSERT INTO face_instances (id, asset_id, bbox_x, bbox_y, bbox_w, bbox_h, "
            "detection_confidence, qdrant_point_id, person_id) "
            "VALUES (%s, 1, 0, 0, 1, 1, 0.5, %s, %s)",
            (str(uuid.uuid4()), point_id, person),
        )
    points: dict[Any, dict[str, Any]] = {}
    for point_id in data.draw(st.lists(st.sampled_from(ids), unique=True) if ids else st.just([])):
        payload: dict[str, Any] = {}
        if data.draw(st.booleans()):
            payload["person_id"] = data.draw(
                st.sampled_from([*PERSONS, str(PERSONS[1]).upper(), "", 5, [PERSONS[1]]])
            )
        if data.draw(st.booleans()):
            payload["is_assigned"] = data.draw(st.sampled_from([True, False, "true"]))
        points[point_id] = payload
        world.upsert(point_id, payload)
    for stray in data.draw(st.lists(st.integers(1, 2**40), max_size=2), label="strays"):
        # Points of the other id kind than the column's: orphans no statement can name.
        stray_id: Any = str(uuid.UUID(int=stray)) if integer else stray
        points[stray_id] = {"person_id": PERSONS[1]}
        world.upsert(stray_id, points[stray_id])
    flag = data.draw(st.sampled_from([None, "is_assigned"]))
    with pytest.MonkeyPatch.context() as patch:
        # The fast path's chunks (points per joined statement) small enough to cut these
        # worlds anywhere, and now and then so few candidates allowed per chunk that it
        # is merged from the row stream instead.
        patch.setattr(joined, "CHUNK", data.draw(st.integers(1, 8), label="chunk"))
        patch.setattr(postgres, "JOIN_LIMIT", data.draw(st.sampled_from([0, 2, 50_000])))
        report = world.audit(flag_key=flag, page_size=data.draw(st.integers(1, 7)))
    expected, without = naive_counts(rows, points, "person_id", flag)
    assert report.counts == expected
    assert report.rows_without_point == without


def test_rows_read_by_copy_keep_text_exact_and_integers_typed(world: World) -> None:
    """COPY's text format escapes tabs, newlines and backslashes: they must come back as stored."""
    from reconcile.stores.base import Row
    from reconcile.stores.postgres import Postgres

    world.conn.execute(
        "CREATE TABLE legacy_faces (id text PRIMARY KEY, owner text, point bigint, "
        "updated_at timestamptz NOT NULL DEFAULT now())"
    )
    world.conn.execute("CREATE INDEX ON legacy_faces (point)")
    stored = [
        ("f\\1", "tab\there", 3),
        ("f\t2", "back\\slash \\N", 3),
        ("f\n3", "line\nbreak\r", -7),
        ("f 4", None, 12),
        ("f5", "ünïcode 'quoted' \"too\"", None),
        ("f6", "\\N", 2**40),
    ]
    with world.conn.cursor() as cur:
        cur.executemany("INSERT INTO legacy_faces (id, owner, point) VALUES (%s, %s, %s)", stored)
    s = world.settings(
        table="legacy_faces", id_column="id", person_column="owner", point_column="point"
    )
    postgres = Postgres(s)
    try:
        rows = list(postgres.rows())
    finally:
        postgres.close()
    with_point = sorted((r for r in stored if r[2] is not None), key=lambda r: (r[2], r[0]))
    expected = [Row(p, f, o, False) for f, o, p in with_point] + [Row(None, "f5", stored[4][1])]
    assert sorted(rows[:-1], key=lambda r: (r.point_id, r.face_id)) == expected[:-1]
    assert rows[-1] == expected[-1]  # NULL point ids come last
    assert all(type(r.point_id) is int for r in rows[:-1])


def test_against_a_server_both_streams_are_read_ahead_with_the_same_result(world: World) -> None:
    # `qdrant_url` makes audit read both streams ahead in threads, as it does for a
    # server; the world's local-mode client stands in for that server here.
    p, q = world.person(), world.person()
    for n in range(40):
        world.face(p if n % 2 else q, payload={} if n % 7 == 0 else SERVICE)
    world.face(None, payload={"person_id": p})  # stale
    world.face(q, row=False)  # orphan point
    inline = world.settings(page_size=3)
    served = Settings(database_url=world.url, qdrant_url="http://127.0.0.1:9", page_size=3)
    a = audit(inline, stores=world.stores(inline))
    b = audit(served, stores=world.stores(served))
    assert a.counts == b.counts and a.top_persons == b.top_persons
    assert b.counts["missing_person"] == 6 and b.counts["orphan_point"] == 1

    stores = world.stores(served)
    first_page = next(stores.qdrant.pages())

    def failing(key_range: object = None) -> Iterator[Page]:
        # Fault injection (a mock): a scroll that fails after its first page.
        yield first_page
        raise StoreError("Qdrant failed while scrolling points: injected")

    stores.qdrant.pages = failing  # type: ignore[method-assign]
    with pytest.raises(StoreError, match="injected"):
        audit(served, stores=stores)
    late = audit(served, stores=world.stores(served), deadline=time.monotonic() - 1)
    assert late.complete is False and late.points < b.points


@pytest.mark.parametrize("workers", [1, 3])
def test_a_full_scan_pauses_the_cycle_collector_and_restores_it(world: World, workers: int) -> None:
    """`scan.cycles_uncollected`: off while the scan streams (the sink sees it), then as
    the caller had it, on or off."""
    alice = world.person()
    for _ in range(4):
        world.face(alice, payload={"person_id": None})  # drift: the sink is called
    settings = world.settings()
    seen: list[bool] = []
    for before in (True, False):
        (gc.enable if before else gc.disable)()
        seen.clear()
        try:
            audit(
                settings,
                sink=lambda _drift: seen.append(gc.isenabled()),
                stores=world.stores(settings),
                workers=workers,
            )
            assert gc.isenabled() is before
        finally:
            gc.enable()
        assert seen == [False] * 4


def test_scans_in_threads_leave_the_collector_as_the_first_found_it() -> None:
    from reconcile.scan import cycles_uncollected

    assert gc.isenabled()
    first, second = cycles_uncollected(), cycles_uncollected()
    first.__enter__()
    second.__enter__()
    assert not gc.isenabled()
    first.__exit__(None, None, None)  # the first out: the second still scans
    assert not gc.isenabled()
    with pytest.raises(RuntimeError), cycles_uncollected():
        raise RuntimeError("a scan that fails")
    assert not gc.isenabled()
    second.__exit__(None, None, None)
    assert gc.isenabled()


def test_the_readmes_stores_from_a_sqlalchemy_engine(world: World) -> None:
    """README, Library: `Postgres(settings, engine=…)` reads the engine's URL (the
    settings' own URL may be anything) and leaves the engine's pool alone."""
    import sqlalchemy as sa

    from reconcile import Postgres, Qdrant, Stores

    alice = world.person()
    world.face(alice)
    world.face(alice, payload={"person_id": None})
    scheme, rest = world.url.split("://", 1)
    engine = sa.create_engine(f"postgresql+psycopg://{rest}")
    settings = dataclasses.replace(
        world.settings(), database_url="postgresql://nobody@127.0.0.1:9/nowhere"
    )
    assert world.client is not None
    stores = Stores(
        settings,
        postgres=Postgres(settings, engine=engine),
        qdrant=Qdrant(settings, client=world.client),
    )
    report = audit(settings, stores=stores)
    assert (report.counts["in_sync"], report.counts["missing_person"]) == (1, 1)
    assert engine.pool.checkedout() == 0 and scheme.startswith("postgres")
    engine.dispose()
