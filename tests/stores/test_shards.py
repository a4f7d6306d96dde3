"""Shards and workers: slices of the point-id space that together cover everything once."""

from __future__ import annotations

import json
import random
import uuid
from pathlib import Path

import pytest

from reconcile.ops.audit import audit
from reconcile.report import AuditReport
from tests.helpers import run_cli
from tests.world import World


def varied_world(world: World, integer: bool, n: int = 60) -> None:
    world.loosen()
    rng = random.Random(5)
    persons = [world.person() for _ in range(3)]
    for _ in range(n):
        point = world.new_point_id(integer) if not integer else rng.randrange(-50, 10**6)
        if integer:
            point = point if point != 0 else 1
        person = rng.choice([*persons, None])
        choice = rng.random()
        if choice < 0.1:
            world.face(person, point_id=point, point=False)  # missing point
        elif choice < 0.2:
            world.face(row=False, point_id=point, payload={})  # orphan
        elif choice < 0.3:
            world.face(person, point_id=point, payload={})  # drift
        else:
            world.face(person, point_id=point)
    shared = world.face(persons[0], point_id=2 * 10**6 if integer else None)  # two rows name it
    world.face(persons[1], point_id=shared, point=False)
    world.conn.execute(
        "INSERT INTO face_instances (id, asset_id, bbox_x, bbox_y, bbox_w, bbox_h, "
        "detection_confidence, qdrant_point_id) VALUES (%s, 1, 0, 0, 1, 1, 0.5, NULL)",
        (str(uuid.uuid4()),),
    )


def summed(reports: list[AuditReport]) -> dict[str, object]:
    counts: dict[str, int] = {}
    for report in reports:
        for kind, n in report.counts.items():
            counts[kind] = counts.get(kind, 0) + n
    return {
        "counts": counts,
        "rows": sum(r.rows for r in reports),
        "points": sum(r.points for r in reports),
        "without": sum(r.rows_without_point for r in reports),
    }


@pytest.mark.parametrize("integer", [False, True], ids=["uuid-ids", "integer-ids"])
def test_shard_reports_sum_to_the_full_report(pg_url: str, tmp_path: Path, integer: bool) -> None:
    world = World(pg_url, tmp_path / "q", point_type="bigint" if integer else "uuid")
    try:
        varied_world(world, integer)
        if not integer:
            world.upsert(7, {})  # an integer point in a UUID collection: shard 1's
        s = world.settings(page_size=4)
        full = audit(s, stores=world.stores(s))
        shards = [audit(s, stores=world.stores(s), shard=(i, 3)) for i in (1, 2, 3)]
        assert summed(shards) == summed([full])
        assert all(r.scope == f"shard {i}/3" for i, r in zip((1, 2, 3), shards, strict=True))
        merged = audit(s, stores=world.stores(s), workers=4)
        assert summed([merged]) == summed([full])
        assert merged.top_persons == full.top_persons
    finally:
        world.close()


def test_small_chunks_keep_a_shared_point_whole(world: World) -> None:
    """A chunk boundary inside a point's rows must not split the duplicate."""
    from reconcile.stores import postgres

    world.loosen()
    p = world.person()
    for _ in range(40):  # 120 rows in groups of 3
        shared = world.face(p)
        world.face(p, point_id=shared, point=False)
        world.face(p, point_id=shared, point=False)
    s = world.settings(page_size=1)
    chunk = postgres.CHUNK_PAGES * s.page_size
    assert chunk < 120 and chunk % 3 != 0  # boundaries fall inside groups
    report = audit(s, stores=world.stores(s))
    assert report.counts["duplicate_point"] == 40 and report.rows == 120


def test_cli_shard_and_its_own_lock(world: World) -> None:
    import psycopg

    world.face(world.person(), payload={})
    env = world.env()
    with psycopg.connect(world.url, autocommit=True) as holder:
        holder.execute(
            "SELECT pg_advisory_lock(hashtextextended('reconcile:face_instances:faces:1/2', 0))"
        )
        one = run_cli("audit", "--shard", "1/2", "--lock", env=env)
        two = run_cli("audit", "--shard", "2/2", "--lock", "--format", "json", env=env)
    assert one.returncode == 5
    assert two.returncode in (0, 1), two.stderr
    assert json.loads(two.stdout)["scope"] == "shard 2/2"
