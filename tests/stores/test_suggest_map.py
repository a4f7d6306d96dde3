"""`reconcile check --suggest-map` on the service's world: the map it prints is the one the
service's payloads need, it pastes into a config file, and the audit then runs with it."""

from __future__ import annotations

import json
import random
import tomllib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import QdrantClient, models

from reconcile.config import read_config
from reconcile.errors import ConfigError
from reconcile.mapping import KeyMap
from reconcile.ops.suggest import Match, SuggestReport, suggest_map
from reconcile.settings import Settings
from reconcile.stores.base import PointId, PointStore
from reconcile.stores.edge import EdgeQdrant, create_edge_store, upsert
from reconcile.stores.qdrant import Qdrant
from reconcile.testing.world import create_collection
from tests.helpers import run_cli
from tests.world import DIM, World

# What the service's payloads need (service-schema.md): asset_id is str(int).
SERVICE_MAP = {
    "asset_id": "asset_id::text",
    "cluster_id": "cluster_id",
    "detection_confidence": "detection_confidence",
    "face_instance_id": "id",
    "quality_score": "quality_score",
}
BBOX = "jsonb_build_object('x', bbox_x, 'y', bbox_y, 'w', bbox_w, 'h', bbox_h)"
ELSEWHERE = "no column of {table} holds it (another table? a view can bring it)"
FACES = 40
RELABEL = "UPDATE face_instances SET cluster_id = %s WHERE id = ANY(%s)"


@dataclass(frozen=True)
class Face:
    id: str
    point: str
    asset: int
    taken_at: datetime  # naive, as the asset's column holds it
    prototype: bool


def service_world(
    world: World, *, clustered: bool = False, in_sync: bool = False, seed: int = 3
) -> list[Face]:
    """FACES faces written to both stores the way the service writes them; one row's
    point was lost and two points outlived their rows, so 39 of the 41 sampled points
    are named by exactly one row (`in_sync`: none of that). `clustered`: every face has
    a cluster label."""
    rng = random.Random(seed)
    persons = [world.person() for _ in range(4)]
    seen: set[str] = set()
    faces: list[Face] = []
    points: list[models.PointStruct] = []
    asset = 4700
    taken = datetime(2024, 6, 1, 10, 22)
    for n in range(FACES if in_sync else FACES + 2):
        if n % 2 == 0:  # photos of two faces
            asset += rng.randrange(1, 4)
            taken -= timedelta(days=rng.randrange(1, 40), seconds=rng.randrange(86400))
        person = rng.choice(persons) if rng.random() < 0.8 else None
        if clustered or person is None:
            cluster: str | None = rng.choice(["unknown_1", "unknown_2", "-1", f"c_{n % 3}"])
        else:
            cluster = None if rng.random() < 0.5 else f"c_{persons.index(person)}"
        face = Face(str(uuid.uuid4()), str(uuid.uuid4()), asset, taken, False)
        if person is not None and person not in seen:
            seen.add(person)
            face = Face(face.id, face.point, asset, taken, True)
        size = rng.randrange(40, 400)
        bbox = (rng.randrange(0, 4000), rng.randrange(0, 3000), size, size)
        confidence = round(rng.uniform(0.6, 0.999), 4)
        quality = round(rng.uniform(0.2, 0.99), 3) if rng.random() < 0.8 else None
        created = taken.replace(tzinfo=UTC) + timedelta(minutes=rng.randrange(1, 3000))
        if n < FACES:
            world.conn.execute(
                "INSERT INTO face_instances (id, asset_id, bbox_x, bbox_y, bbox_w, bbox_h, "
                "detection_confidence, quality_score, qdrant_point_id, cluster_id, person_id, "
                "created_at, updated_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    face.id,
                    asset,
                    *bbox,
                    confidence,
                    quality,
                    face.point,
                    cluster,
                    person,
                    *[created] * 2,
                ),
            )
            faces.append(face)
        if n == 0 and not in_sync:
            continue  # its upsert failed after the row was committed
        payload: dict[str, Any] = {
            "asset_id": str(asset),
            "face_instance_id": face.id,
            "detection_confidence": confidence,
            "is_prototype": face.prototype,
            "is_assigned": person is not None,
            "bbox": dict(zip("xywh", bbox, strict=True)),
            "taken_at": taken.isoformat(),
        }
        if quality is not None:
            payload["quality_score"] = quality
        if person is not None:
            payload["person_id"] = person
        if cluster is not None:
            payload["cluster_id"] = cluster
        points.append(models.PointStruct(id=face.point, vector=[0.5] * DIM, payload=payload))
    assert world.client is not None
    world.client.upsert("faces", points)
    return faces


def suggest(world: World, **overrides: Any) -> SuggestReport:
    sample = overrides.pop("sample", 1000)
    settings = world.settings(**overrides)
    return suggest_map(settings, sample, stores=world.stores(settings))


def reasons(report: SuggestReport) -> dict[str, str]:
    return {note.key: note.reason for note in report.unmatched}


def test_the_services_payload_gets_the_services_map(world: World) -> None:
    service_world(world)
    report = suggest(world, flag_key="is_assigned")
    assert report.map == SERVICE_MAP
    elsewhere = ELSEWHERE.format(table="face_instances")
    assert reasons(report) == {
        "bbox": f"no column matches (an object; a view can build it: {BBOX})",
        "is_prototype": elsewhere,
        "taken_at": elsewhere,
    }
    assert {note.key for note in report.skipped} == {"person_id", "is_assigned"}
    assert report.partial == [] and report.also == []
    assert (report.sampled, report.compared) == (FACES + 1, FACES - 1)
    assert report.exit_code == 0
    # The first N points by id, no more.
    assert suggest(world, flag_key="is_assigned", sample=5).sampled == 5


def test_pasted_into_a_config_file_the_audit_runs_with_it(world: World, tmp_path: Path) -> None:
    faces = service_world(world, in_sync=True)
    done = run_cli("check", "--suggest-map", "--flag-key", "is_assigned", env=world.env())
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("map = { ")
    assert tomllib.loads(done.stdout) == {"map": SERVICE_MAP}
    assert all(line.startswith("# ") for line in lines[1:])
    assert f"# bbox: no column matches (an object; a view can build it: {BBOX})" in lines
    assert "# taken_at: " + ELSEWHERE.format(table="face_instances") in lines
    assert "# is_prototype: " + ELSEWHERE.format(table="face_instances") in lines

    config = tmp_path / "reconcile.toml"
    config.write_text('flag_key = "is_assigned"\n' + done.stdout)
    problems: list[ConfigError] = []
    read = read_config(config, problems)
    assert problems == []
    assert set(read["map"]) == {
        KeyMap("asset_id", "asset_id", text=True),
        KeyMap("cluster_id", "cluster_id"),
        KeyMap("detection_confidence", "detection_confidence"),
        KeyMap("face_instance_id", "id"),
        KeyMap("quality_score", "quality_score"),
    }
    env = world.env()
    audit = run_cli("audit", "--config", str(config), "--format", "json", env=env)
    assert audit.returncode == 0, audit.stderr + audit.stdout
    report = json.loads(audit.stdout)
    assert report["counts"]["in_sync"] == FACES
    assert set(SERVICE_MAP) <= set(report["keys"])
    # The map is in force: a group dismissed as noise in PostgreSQL only is drift now.
    world.conn.execute("UPDATE face_instances SET cluster_id = '-1' WHERE id = %s", (faces[5].id,))
    audit = run_cli("audit", "--config", str(config), "--format", "json", env=env)
    assert audit.returncode == 1, audit.stderr
    assert json.loads(audit.stdout)["counts"]["payload_mismatch"] == 1


def test_the_json_report(world: World) -> None:
    service_world(world)
    done = run_cli(
        "check", "--suggest-map", "--flag-key", "is_assigned", "--format", "json", env=world.env()
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["schema_version"] == 1
    assert (data["table"], data["collection"]) == ("face_instances", "faces")
    assert (data["sampled"], data["compared"]) == (FACES + 1, FACES - 1)
    assert data["map"] == SERVICE_MAP
    assert data["partial"] == [] and data["also"] == []
    assert [u["key"] for u in data["unmatched"]] == ["bbox", "is_prototype", "taken_at"]
    assert data["skipped"][0] == {
        "key": "is_assigned",
        "reason": "the flag key (--flag-key), derived from the person: not mapped",
    }


def test_a_drifted_key_is_still_suggested_above_ninety_percent(world: World) -> None:
    faces = service_world(world, clustered=True)
    # Every face has a label on both sides: 39 points compared. A group dismissed as
    # noise in PostgreSQL only drifts 3 of them (92%), then a merge 7 more (74%).
    drifted = [f.id for f in faces[1:4]]
    world.conn.execute(
        "UPDATE face_instances SET cluster_id = 'x_1' WHERE id = ANY(%s)", (drifted,)
    )
    report = suggest(world, flag_key="is_assigned")
    assert report.map == SERVICE_MAP
    assert report.partial == [Match("cluster_id", "cluster_id", 36, 39)]
    assert (
        "# cluster_id: cluster_id matches 36 of 39 points (drift, or another column?)"
        in report.toml().splitlines()
    )
    drifted = [f.id for f in faces[4:11]]
    world.conn.execute(
        "UPDATE face_instances SET cluster_id = 'x_2' WHERE id = ANY(%s)", (drifted,)
    )
    report = suggest(world, flag_key="is_assigned")
    assert "cluster_id" not in report.map
    assert reasons(report)["cluster_id"] == (
        "no column matches; the closest, cluster_id, agrees on 29 of 39 points (under 90%: "
        "map it by hand if it mirrors that column and the rest is drift)"
    )


def test_a_view_brings_what_the_table_lacks(world: World) -> None:
    """The hints work: a view with the asset's taken_at, the prototype and the built bbox
    gets every key mapped; a second column holding the face id is named, not chosen."""
    faces = service_world(world)
    world.conn.execute("CREATE TABLE image_assets (id integer PRIMARY KEY, taken_at timestamp)")
    world.conn.execute("CREATE TABLE person_prototypes (face_instance_id uuid PRIMARY KEY)")
    for asset, taken in {(f.asset, f.taken_at) for f in faces}:
        world.conn.execute("INSERT INTO image_assets VALUES (%s, %s)", (asset, taken))
    for face in faces:
        if face.prototype:
            world.conn.execute("INSERT INTO person_prototypes VALUES (%s)", (face.id,))
    world.conn.execute(
        "CREATE VIEW faces_v AS SELECT f.*, a.taken_at, "
        f"p.face_instance_id IS NOT NULL AS is_prototype, {BBOX} AS bbox, f.id AS face_uuid "
        "FROM face_instances f JOIN image_assets a ON a.id = f.asset_id "
        "LEFT JOIN person_prototypes p ON p.face_instance_id = f.id"
    )
    report = suggest(world, flag_key="is_assigned", table="faces_v")
    assert report.map == {
        **SERVICE_MAP,
        "bbox": "bbox",
        "is_prototype": "is_prototype",
        "taken_at": "taken_at",
    }
    assert report.unmatched == []
    assert report.also == [Match("face_instance_id", "face_uuid", FACES - 1, FACES - 1)]
    assert (
        "# face_instance_id: face_uuid matches too (39 of 39 points); id is suggested"
        in report.toml().splitlines()
    )


def test_flag_constants_nulls_and_odd_keys(world: World) -> None:
    """Without --flag-key the flag is recognised as one; a constant that a differently
    named column also holds is not a match; the output still parses as TOML."""
    person = world.person()
    for n in range(6):
        owner = person if n % 2 else None
        payload: dict[str, Any] = {
            "is_assigned": owner is not None,
            "asset_id": "1",
            "ten": 10,
            "nothing": None,
            "reconcile_seen": True,
            "odd key\n": 1,
        }
        if owner is not None:
            payload["person_id"] = owner
        world.face(owner, payload=payload)
    report = suggest(world)
    assert report.map == {"asset_id": "asset_id::text"}  # the same name: one value suffices
    why = reasons(report)
    assert why["is_assigned"] == (
        'true exactly when the face has a person: it is the flag, set flag_key = "is_assigned" '
        "(--flag-key is_assigned)"
    )
    assert why["ten"] == (
        "bbox_w agrees on 6 of 6 points, all holding one value (10): a coincidence? "
        "map it by hand if it mirrors that column"
    )
    assert why["nothing"] == "null on every point sampled: nothing to match it by"
    assert why["odd key\n"].startswith("not a plain payload key")
    assert [n.key for n in report.skipped] == ["person_id", "reconcile_seen"]
    text = report.toml()
    assert tomllib.loads(text) == {"map": {"asset_id": "asset_id::text"}}
    assert '# "odd key\\n": not a plain payload key' in text


def test_integer_point_ids_and_a_stray_uuid_point(pg_url: str, tmp_path: Path) -> None:
    world = World(pg_url, tmp_path / "qdrant", point_type="bigint")
    try:
        person = world.person()
        for _ in range(4):
            world.face(person, point_id=world.new_point_id(integer=True))
        world.upsert(str(uuid.uuid4()), {"person_id": person, "asset_id": "1"})  # no row
        report = suggest(world, flag_key="is_assigned")
        assert (report.sampled, report.compared) == (5, 4)
        # The service's payload as tests.world.World writes it.
        assert report.map == {"asset_id": "asset_id::text", "face_instance_id": "id"}
    finally:
        world.close()


def test_nothing_to_compare_is_a_configuration_error(world: World) -> None:
    for _ in range(3):
        world.face(row=False, payload={"asset_id": "1"})
    with pytest.raises(ConfigError, match=r"none of the 3 points .* named by exactly one row"):
        suggest(world)


def test_cli_refusals_are_one_line_and_exit_2(world: World) -> None:
    env = world.env()
    empty = run_cli("check", "--suggest-map", env=env)
    assert empty.returncode == 2
    assert empty.stdout == ""
    assert empty.stderr.count("\n") == 1
    assert "collection 'faces' has no points: nothing to sample" in empty.stderr
    alone = run_cli("check", "--suggest-sample", "5", env=env)
    assert alone.returncode == 2
    assert "--suggest-sample goes with --suggest-map" in alone.stderr
    zero = run_cli("check", "--suggest-map", "--suggest-sample", "0", env=env)
    assert zero.returncode == 2
    assert "--suggest-sample 0 is out of range" in zero.stderr


@pytest.mark.parametrize("engine", ["local", "edge"])
def test_payload_sample_reads_the_first_points_whole(engine: str, tmp_path: Path) -> None:
    settings = Settings("postgresql://x@localhost/x", qdrant_path=str(tmp_path), page_size=3)
    rng = random.Random(1)
    ids: list[PointId] = rng.sample(range(1, 1000), 10)
    seed = [(i, {"n": i, "bbox": {"x": i}, "tags": ["a", i]}) for i in ids]
    store: PointStore
    if engine == "local":
        client = QdrantClient(path=str(tmp_path / "local"))
        create_collection(client, "faces", dim=4)
        client.upsert(
            "faces", [models.PointStruct(id=i, vector=[0.5] * 4, payload=p) for i, p in seed]
        )
        store = Qdrant(settings, client=client)
    else:
        shard = create_edge_store(tmp_path / "edge", 4)
        upsert(shard, seed, 4)
        shard.close()
        store = EdgeQdrant(settings, tmp_path / "edge")
    try:
        first = store.payload_sample(7)  # three pages of 3, the last cut to 1
        assert [p.point_id for p in first] == sorted(ids)[:7]
        assert all(
            p.payload == {"n": p.point_id, "bbox": {"x": p.point_id}, "tags": ["a", p.point_id]}
            for p in first
        )
        assert [p.point_id for p in store.payload_sample(100)] == sorted(ids)
    finally:
        store.close()
