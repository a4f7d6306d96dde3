"""The demo world holds exactly the drift it claims, checked by a naive diff of its own."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from qdrant_client import QdrantClient

from reconcile.diff import DRIFT_KINDS
from reconcile.ops.audit import audit
from reconcile.settings import Settings, maps_of
from reconcile.testing.embedded import stop_embedded_postgres
from reconcile.testing.world import DEMO_MAP, DemoWorld, build_demo
from tests.helpers import server_dir

FACES = 300


@dataclass
class Naive:
    """What the naive diff found: kinds with the person and flag only, kinds with the
    service's map (DEMO_MAP), the cluster_id key's drift, and the stores' sizes."""

    kinds: Counter[str]
    mapped: Counter[str]
    clusters: Counter[str]
    sizes: dict[str, int]


def service_payload(row: tuple[Any, ...]) -> dict[str, Any]:
    """The mapped keys as the service writes them from a row (service-schema.md)."""
    _point, face_id, _person, cluster, asset, confidence, quality = row
    written = {
        "cluster_id": cluster,
        "asset_id": str(asset),
        "face_instance_id": str(face_id),
        "detection_confidence": confidence,
        "quality_score": quality,
    }
    return {key: value for key, value in written.items() if value is not None}


def naive_diff(database_url: str, qdrant_path: Path) -> Naive:
    """Both stores loaded whole into dicts and compared point by point.

    Deliberately nothing like the tool's streaming merge, so that the two check
    each other rather than share a mistake.
    """
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT qdrant_point_id, id, person_id, cluster_id, asset_id, "
            "detection_confidence, quality_score FROM face_instances"
        ).fetchall()
        persons = conn.execute("SELECT count(*) FROM persons").fetchone()
    named = Counter(str(row[0]) for row in rows)
    expected = {str(row[0]): None if row[2] is None else str(row[2]) for row in rows}
    mirrored = {str(row[0]): service_payload(row) for row in rows}

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
    mapped: Counter[str] = Counter()
    clusters: Counter[str] = Counter()
    for point_id in set(expected) | set(payloads):
        person = expected.get(point_id)
        payload = payloads.get(point_id)
        if named[point_id] > 1:
            kind = "duplicate_point"
        elif point_id not in expected:
            kind = "orphan_point"
        elif payload is None:
            kind = "missing_point"
        elif person is not None and "person_id" not in payload:
            kind = "missing_person"
        elif person is None and payload.get("person_id") is not None:
            kind = "stale_person"
        elif person is not None and payload["person_id"] != person:
            kind = "wrong_person"
        elif payload.get("is_assigned") is not (person is not None):
            kind = "flag_mismatch"
        else:
            kind = "in_sync"
        kinds[kind] += 1
        if payload is None or kind in ("orphan_point", "duplicate_point"):
            mapped[kind] += 1
            continue
        want = mirrored[point_id]
        # `!=` on the values as they are: 4711 is not "4711".
        differs = any(payload.get(key) != want.get(key) for key in DEMO_MAP)
        mapped["payload_mismatch" if kind == "in_sync" and differs else kind] += 1
        label, row_label = payload.get("cluster_id"), want.get("cluster_id")
        if label != row_label:
            clusters["missing" if label is None else "stale" if row_label is None else "wrong"] += 1
    assert persons is not None
    sizes = {"rows": len(rows), "points": len(payloads), "persons": int(persons[0])}
    return Naive(kinds, mapped, clusters, sizes)


@pytest.fixture(scope="module")
def world() -> Iterator[DemoWorld]:
    with server_dir("demo-world") as root:
        directory = root / "demo"
        try:
            yield build_demo(directory, faces=FACES, seed=11)
        finally:
            stop_embedded_postgres(directory / "pgdata")


def test_injected_counts_are_what_the_stores_hold(world: DemoWorld) -> None:
    found = naive_diff(world.database_url, world.qdrant_path)

    assert set(world.injected) == set(world.injected_mapped) == {*DRIFT_KINDS, "in_sync"}
    assert {kind: found.kinds[kind] for kind in world.injected} == world.injected
    assert {kind: found.mapped[kind] for kind in world.injected} == world.injected_mapped
    assert {sub: found.clusters[sub] for sub in world.cluster_drift} == world.cluster_drift
    assert found.sizes["points"] == world.points
    assert found.sizes["persons"] == world.persons
    assert found.sizes["rows"] == world.faces - world.injected["orphan_point"]


def test_the_tool_finds_the_cluster_labels_only_with_the_map(world: DemoWorld) -> None:
    settings = Settings(
        world.database_url, qdrant_path=str(world.qdrant_path), flag_key="is_assigned"
    )
    plain = audit(settings)
    with_map = audit(dataclasses.replace(settings, map=maps_of(DEMO_MAP)))

    assert plain.counts == world.injected and plain.counts["payload_mismatch"] == 0
    assert with_map.counts == world.injected_mapped
    assert with_map.keys["cluster_id"] == world.cluster_drift
    # Every other mapped key is written the service's way: asset_id as str(int) too.
    for key in ("asset_id", "face_instance_id", "detection_confidence", "quality_score"):
        assert sum(with_map.keys[key].values()) == 0, key
    labels = {value for value, _n, _error in with_map.top_values["cluster_id"]}
    assert "-1" in labels  # the group dismissed as noise


def test_every_kind_but_duplicates_is_injected(world: DemoWorld) -> None:
    assert world.injected["duplicate_point"] == 0
    # payload_mismatch needs the map: the person-only audit cannot see a label.
    assert world.injected["payload_mismatch"] == 0
    for kind in DRIFT_KINDS:
        if kind not in ("duplicate_point", "payload_mismatch"):
            assert world.injected[kind] >= 1, kind
            assert world.injected_mapped[kind] == world.injected[kind], kind
    assert world.injected_mapped["payload_mismatch"] >= 1
    # The three cluster bugs: merged and dismissed groups, the job's new and cleared labels.
    assert all(n >= 1 for n in world.cluster_drift.values()), world.cluster_drift
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
        assert isinstance(payload["asset_id"], str) and payload["asset_id"].isdigit()
        assert None not in payload.values()  # a NULL column is an absent key
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
        assert second.injected_mapped == first.injected_mapped
        found = naive_diff(second.database_url, second.qdrant_path)
        assert {kind: found.kinds[kind] for kind in second.injected} == second.injected
        assert {kind: found.mapped[kind] for kind in second.injected} == second.injected_mapped
        assert found.sizes["rows"] == 150 - second.injected["orphan_point"]  # not doubled
    finally:
        stopped = stop_embedded_postgres(directory / "pgdata")
    assert stopped
    assert not stop_embedded_postgres(directory / "pgdata")
