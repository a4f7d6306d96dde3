"""`--map` on the service's shape: the cluster bugs' drift found, repaired key by key, undone.

The world's points carry the service's whole payload (tests/world.py `Face.payload`),
and drift is injected the way the service's bugs make it (`service_drift`): the
expected counts there are worked out by hand from what was injected.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import models

from reconcile.diff import Kind
from reconcile.journal import FORMAT
from reconcile.ops.audit import audit
from reconcile.ops.undo import undo
from reconcile.settings import Settings, maps_of
from reconcile.stores import Stores
from reconcile.stores.base import Row
from reconcile.stores.edge import EdgeQdrant, create_edge_store, upsert
from tests.helpers import snapshot
from tests.naive import Mapped, NaiveDiff, naive_mapped_diff
from tests.world import DIM, MAP, World, merge_clusters, service_drift

COMPARED = ("person_id", "is_assigned", *MAP)


def mapped(world: World, **overrides: Any) -> Settings:
    return world.settings(**{"flag_key": "is_assigned", "map": MAP, **overrides})


class RequestSpy:
    """Counts the client's batch_update_points requests and keeps their operations,
    then delegates: the real write still happens (a spy, not a mock)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.requests: list[list[Any]] = []

    def __call__(self, collection_name: str, update_operations: Any, **kwargs: Any) -> Any:
        self.requests.append(list(update_operations))
        return self.real(collection_name, update_operations, **kwargs)


def written_keys(op: Any) -> set[str]:
    if isinstance(op, models.SetPayloadOperation):
        return set(op.set_payload.payload)
    assert isinstance(op, models.DeletePayloadOperation)
    return set(op.delete_payload.keys or [])


def op_points(op: Any) -> list[Any]:
    inner = op.set_payload if isinstance(op, models.SetPayloadOperation) else op.delete_payload
    return list(inner.points or [])


def compared(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: payload[k] for k in COMPARED if k in payload}


# The service's columns behind MAP, for the naive diff (tests/naive.py).
NAIVE_MAP = [
    Mapped("cluster_id", "character varying"),
    Mapped("asset_id", "integer", text=True),
    Mapped("face_instance_id", "uuid"),
    Mapped("detection_confidence", "double precision"),
    Mapped("quality_score", "double precision"),
]


def naive(world: World) -> tuple[NaiveDiff, dict[str, dict[str, Any]]]:
    """Both stores read whole and diffed by tests/naive.py; and the payloads it read."""
    rows = [
        Row(str(point), str(face), None if person is None else str(person), False, tuple(values))
        for point, face, person, *values in world.conn.execute(
            "SELECT qdrant_point_id, id, person_id, cluster_id, asset_id, id, "
            "detection_confidence, quality_score FROM face_instances"
        )
    ]
    payloads = {point: payload for point, (payload, _vector) in world.points().items()}
    return naive_mapped_diff(rows, payloads, NAIVE_MAP, flag_key="is_assigned"), payloads


def test_audit_finds_the_cluster_bugs_beside_person_drift(world: World) -> None:
    drift = service_drift(world)

    report = world.audit(flag_key="is_assigned", map=MAP)

    oracle, payloads = naive(world)
    assert report.counts == oracle.counts() == drift.kinds  # the oracle, and by hand
    assert report.keys == oracle.key_counts(COMPARED) == drift.keys
    assert report.drifted == 19 and report.repairable == 19
    # Drifted faces per label: a stale label is charged to the payload's, others to the row's.
    charged: Counter[str] = Counter(
        payloads[point]["cluster_id"] if sub == "stale" else oracle.expected[point]["cluster_id"]
        for point, differing in oracle.keys.items()
        if (sub := differing.get("cluster_id"))
    )
    clusters = {value: n for value, n, error in report.top_values["cluster_id"] if not error}
    assert clusters == dict(charged) == drift.top_clusters
    # The person-only audit sees the person's drift and nothing of the clusters'.
    plain = world.audit(flag_key="is_assigned")
    assert plain.counts["payload_mismatch"] == 0
    assert plain.counts["in_sync"] == drift.kinds["in_sync"] + drift.kinds["payload_mismatch"]


def test_repair_writes_exactly_the_mapped_keys_that_differ(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    drift = service_drift(world)
    before = world.points()
    assert world.client is not None
    spy = RequestSpy(world.client.batch_update_points)
    monkeypatch.setattr(world.client, "batch_update_points", spy)

    report = world.repair(mapped(world), batch_size=4)

    assert (report.tallies.applied, report.tallies.verified, report.tallies.failed) == (19, 19, 0)
    assert report.plan.set_payload == 12
    # One request per batch, whatever keys and values the batch writes.
    assert len(spy.requests) == math.ceil(19 / 4)
    for ops in spy.requests:
        sets = [
            json.dumps(op.set_payload.payload, sort_keys=True)
            for op in ops
            if isinstance(op, models.SetPayloadOperation)
        ]
        assert len(sets) == len(set(sets))  # one SetPayload per distinct set of values
        assert all(written_keys(op) <= set(COMPARED) for op in ops)
        assert 1 <= len({str(p) for op in ops for p in op_points(op)}) <= 4
    after = world.points()
    for name, face in drift.faces.items():
        payload, vector = after[str(face.point_id)]
        # Each point now holds what the service would write from its row today ...
        assert payload == world.as_stored(face).payload(), name
        # ... and every key outside the mapping, and the vector, exactly as before.
        old_payload, old_vector = before[str(face.point_id)]
        for key in ("bbox", "is_prototype", "taken_at"):
            assert payload[key] == old_payload[key], (name, key)
        assert payload["detection_confidence"] == old_payload["detection_confidence"]
        assert vector == old_vector, name
    assert world.audit(flag_key="is_assigned", map=MAP).drifted == 0

    lines = [json.loads(line) for line in Path(str(report.journal)).read_text().splitlines()]
    header = lines[0]
    assert header["version"] == 3
    assert header["keys"] == {"person": "person_id", "flag": "is_assigned", "map": MAP}
    changes = [line for line in lines if line["type"] == "change"]
    assert len(changes) == 19
    by_point = {str(face.point_id): face for face in drift.faces.values()}
    for change in changes:
        point = str(change["point_id"])
        assert change["face_id"] == by_point[point].face_id
        assert change["before"] == compared(before[point][0])
        assert change["after"] == compared(after[point][0])


def test_undo_restores_every_key_exactly(world: World) -> None:
    drift = service_drift(world)
    before, payloads = world.points(), snapshot(world.client)
    report = world.repair(mapped(world), batch_size=5)
    assert report.tallies.verified == 19 and snapshot(world.client) != payloads

    settings = mapped(world)
    result = undo(settings, Path(str(report.journal)), stores=world.stores(settings))

    assert (result.restored, result.conflicts, result.failed) == (19, 0, 0)
    assert snapshot(world.client) == payloads
    assert world.points() == before  # vectors too
    again = world.audit(flag_key="is_assigned", map=MAP)
    assert again.counts == drift.kinds and again.keys == drift.keys


def test_a_version_1_journal_still_undoes(world: World, tmp_path: Path) -> None:
    """A journal written before --map (person and flag only) undoes on today's payloads."""
    alice, carol = world.person(), world.person()
    stale = world.service_face(carol, cluster="c_3")
    accepted = world.service_face(None, cluster="u_7")
    untouched = world.service_face(alice, cluster="c_1")
    originals = {f.point_id: f.payload() for f in (stale, accepted, untouched)}
    # What the old repair did: carol was deleted, so her face lost its person; a
    # suggestion accepted in PostgreSQL gave the other one alice.
    world.conn.execute("DELETE FROM persons WHERE id = %s", (carol,))
    world.conn.execute(
        "UPDATE face_instances SET person_id = %s WHERE id = %s", (alice, accepted.face_id)
    )
    assert world.client is not None
    world.client.delete_payload("faces", ["person_id"], [stale.point_id])
    world.client.set_payload("faces", {"is_assigned": False}, [stale.point_id])
    world.client.set_payload(
        "faces", {"person_id": alice, "is_assigned": True}, [accepted.point_id]
    )
    journal = tmp_path / "old.jsonl"
    records = [
        {
            "type": "header",
            "format": FORMAT,
            "version": 1,
            "tool": "reconcile",
            "tool_version": "0.9.0",
            "table": "face_instances",
            "collection": "faces",
            "keys": {"person": "person_id", "flag": "is_assigned"},
            "started": "2025-05-01T03:00:00Z",
        },
        {
            "type": "change",
            "batch": 1,
            "point_id": stale.point_id,
            "face_id": stale.face_id,
            "before": {"person_id": carol, "is_assigned": True},
            "after": {"is_assigned": False},
        },
        {
            "type": "change",
            "batch": 1,
            "point_id": accepted.point_id,
            "face_id": accepted.face_id,
            "before": {"is_assigned": False},
            "after": {"person_id": alice, "is_assigned": True},
        },
        {"type": "outcome", "batch": 1, "applied": 2, "failed": 0, "error": None},
    ]
    journal.write_text("".join(json.dumps(r) + "\n" for r in records))

    # Today's settings map keys the old journal never held: undo takes its keys from it.
    settings = world.settings(flag_key="is_assigned")
    result = undo(mapped(world), journal, stores=world.stores(settings))

    assert (result.restored, result.conflicts, result.failed) == (2, 0, 0)
    for point_id, payload in originals.items():
        assert world.payload(point_id) == payload


def test_mapped_audit_repair_and_undo_on_an_edge_store(world: World, tmp_path: Path) -> None:
    """The in-process engine of the benchmarks, with the cluster bugs' drift."""
    faces = [world.service_face(None, cluster="u_1", point=False) for _ in range(3)]
    faces += [world.service_face(None, cluster="u_2", point=False) for _ in range(2)]
    faces += [world.service_face(world.person(), cluster="c_1", point=False)]
    store = tmp_path / "edge"
    shard = create_edge_store(store, DIM, keyword_keys=["person_id", "cluster_id"])
    upsert(shard, [(f.point_id, f.payload()) for f in faces], DIM)
    merge_clusters(world.conn, "u_1", "u_2")
    # maps_of: Settings takes a {key: source} dict at run time, but its field is typed
    # as the KeyMaps it normalizes to.
    edge_map = maps_of(MAP)
    settings = Settings(world.url, qdrant_edge=str(store), flag_key="is_assigned", map=edge_map)
    with Stores(settings, qdrant=EdgeQdrant(settings, store, shard)) as stores:
        found = audit(settings, stores=stores)
        assert found.counts[Kind.PAYLOAD_MISMATCH] == 2
        assert found.keys["cluster_id"] == {"missing": 0, "wrong": 2, "stale": 0}
        assert found.top_values["cluster_id"] == [("u_1", 2, 0)]
        before = {f.point_id: dict(stores.qdrant.retrieve([f.point_id])[f.point_id]) for f in faces}
        report = world.repair(settings, stores=stores)
        assert report.tallies.verified == 2
        assert audit(settings, stores=stores).drifted == 0
        # Only cluster_id moved (the adapter reads only the compared keys back).
        for f in faces:
            now = stores.qdrant.retrieve([f.point_id])[f.point_id]
            assert {k for k in now if now[k] != before[f.point_id][k]} <= {"cluster_id"}
        undone = undo(settings, Path(str(report.journal)), stores=stores)
        assert undone.restored == 2
        assert audit(settings, stores=stores).counts == found.counts
        stores.qdrant.close()


def test_repair_through_an_inner_join_view(world: World) -> None:
    """taken_at comes from image_assets through a view; the view is repaired and undone."""
    world.conn.execute("CREATE TABLE image_assets (id integer PRIMARY KEY, taken_at timestamp)")
    faces = [world.service_face(world.person(), cluster=f"c_{n % 2}") for n in range(6)]
    for face in faces:
        world.conn.execute(
            "INSERT INTO image_assets VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (face.asset_id, face.taken_at),
        )
    world.conn.execute(
        "CREATE VIEW faces_v AS SELECT f.*, a.taken_at "
        "FROM face_instances f JOIN image_assets a ON a.id = f.asset_id"
    )
    settings = mapped(world, table="faces_v", map={**MAP, "taken_at": "taken_at"})
    clean = audit(settings, stores=world.stores(settings))
    assert clean.counts["in_sync"] == 6 and clean.drifted == 0
    payloads = snapshot(world.client)
    # The photo's time corrected in the database: both its faces' payloads are stale.
    moved = faces[1]  # the first face of a photo of two (see World.service_face)
    world.conn.execute(
        "UPDATE image_assets SET taken_at = %s WHERE id = %s",
        (datetime(2023, 12, 31, 23, 59, 58), moved.asset_id),
    )
    on_photo = [f for f in faces if f.asset_id == moved.asset_id]
    assert len(on_photo) == 2

    found = audit(settings, stores=world.stores(settings))
    assert found.counts[Kind.PAYLOAD_MISMATCH] == 2
    assert found.keys["taken_at"] == {"missing": 0, "wrong": 2, "stale": 0}
    assert found.top_values["taken_at"] == [("2023-12-31T23:59:58", 2, 0)]

    report = world.repair(settings)
    assert report.tallies.verified == 2
    for face in faces:
        expected = face.payload()
        if face in on_photo:
            expected["taken_at"] = "2023-12-31T23:59:58"
        assert world.payload(face.point_id) == expected
    assert audit(settings, stores=world.stores(settings)).drifted == 0

    result = undo(settings, Path(str(report.journal)), stores=world.stores(settings))
    assert result.restored == 2
    assert snapshot(world.client) == payloads
