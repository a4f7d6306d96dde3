"""The demo world holds exactly the drift it claims, checked by a naive diff of its own."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from qdrant_client import QdrantClient

from reconcile.diff import DRIFT_KINDS
from reconcile.testing.embedded import stop_embedded_postgres
from reconcile.testing.world import DemoWorld, build_demo
from tests.helpers import server_dir

FACES = 300


def naive_diff(database_url: str, qdrant_path: Path) -> tuple[Counter[str], dict[str, int]]:
    """Both stores loaded whole into dicts and compared point by point.

    Deliberately nothing like the tool's streaming merge, so that the two check
    each other rather than share a mistake.
    """
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT qdrant_point_id, person_id FROM face_instances").fetchall()
        persons = conn.execute("SELECT count(*) FROM persons").fetchone()
    named = Counter(str(point) for point, _ in rows)
    expected = {str(point): None if person is None else str(person) for point, person in rows}

    client = QdrantClient(path=str(qdrant_path))
    try:
        payloads: dict[str, dict[str, Any]] = {}
        offset: Any = None
        while True:
            page, offset = client.scroll("faces", limit=256, offset=offset, with_payload=True)
            for point in page:
                payloads[str(point.id)] = dict(point.payload or {})
            if offset is None:
                break
    finally:
        client.close()

    kinds: Counter[str] = Counter()
    for point_id in set(expected) | set(payloads):
        person = expected.get(point_id)
        payload = payloads.get(point_id)
        if named[point_id] > 1:
            kinds["duplicate_point"] += 1
        elif point_id not in expected:
            kinds["orphan_point"] += 1
        elif payload is None:
            kinds["missing_point"] += 1
        elif person is not None and "person_id" not in payload:
            kinds["missing_person"] += 1
        elif person is None and payload.get("person_id") is not None:
            kinds["stale_person"] += 1
        elif person is not None and payload["person_id"] != person:
            kinds["wrong_person"] += 1
        elif payload.get("is_assigned") is not (person is not None):
            kinds["flag_mismatch"] += 1
        else:
            kinds["in_sync"] += 1
    assert persons is not None
    sizes = {"rows": len(rows), "points": len(payloads), "persons": int(persons[0])}
    return kinds, sizes


@pytest.fixture(scope="module")
def world() -> Iterator[DemoWorld]:
    with server_dir("demo-world") as root:
        directory = root / "demo"
        try:
            yield build_demo(directory, faces=FACES, seed=11)
        finally:
            stop_embedded_postgres(directory / "pgdata")


def test_injected_counts_are_what_the_stores_hold(world: DemoWorld) -> None:
    kinds, sizes = naive_diff(world.database_url, world.qdrant_path)

    assert set(world.injected) == {*DRIFT_KINDS, "in_sync"}
    assert {kind: kinds[kind] for kind in world.injected} == world.injected
    assert sizes["points"] == world.points
    assert sizes["persons"] == world.persons
    assert sizes["rows"] == world.faces - world.injected["orphan_point"]


def test_every_kind_but_duplicates_is_injected(world: DemoWorld) -> None:
    assert world.injected["duplicate_point"] == 0
    for kind in DRIFT_KINDS:
        if kind != "duplicate_point":
            assert world.injected[kind] >= 1, kind
    assert world.injected["in_sync"] > FACES // 2


def test_the_world_has_the_service_shape(world: DemoWorld) -> None:
    with psycopg.connect(world.database_url) as conn:
        assigned, unassigned = conn.execute(
            "SELECT count(person_id), count(*) - count(person_id) FROM face_instances"
        ).fetchone() or (0, 0)
        biggest = conn.execute(
            "SELECT count(*) FROM face_instances WHERE person_id IS NOT NULL"
            " GROUP BY person_id ORDER BY 1 DESC LIMIT 1"
        ).fetchone()
    assert 0.1 * FACES < unassigned < 0.35 * FACES
    assert biggest is not None and biggest[0] > assigned / world.persons  # skewed sizes

    client = QdrantClient(path=str(world.qdrant_path))
    try:
        points, _ = client.scroll("faces", limit=FACES, with_payload=True)
    finally:
        client.close()
    for point in points:
        payload = point.payload or {}
        assert {"asset_id", "face_instance_id", "bbox", "is_prototype"} <= payload.keys()
        person = payload.get("person_id")
        assert person is None or person == person.lower()


def test_a_second_build_in_the_same_directory_starts_afresh(server_root: Path) -> None:
    directory = server_root / "demo"
    try:
        first = build_demo(directory, faces=150, seed=3)
        (directory / "left-over.txt").write_text("from the first run")
        second = build_demo(directory, faces=150, seed=3)

        assert not (directory / "left-over.txt").exists()
        assert second.injected == first.injected  # same seed, same world
        kinds, sizes = naive_diff(second.database_url, second.qdrant_path)
        assert {kind: kinds[kind] for kind in second.injected} == second.injected
        assert sizes["rows"] == 150 - second.injected["orphan_point"]  # not doubled
    finally:
        stopped = stop_embedded_postgres(directory / "pgdata")
    assert stopped
    assert not stop_embedded_postgres(directory / "pgdata")
