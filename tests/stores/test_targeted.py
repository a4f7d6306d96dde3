"""Targeted, incremental and quick-count runs, and the sync helper the service calls."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from reconcile.ops.audit import audit
from reconcile.ops.counts import compare_counts
from reconcile.ops.repair import repair
from reconcile.ops.sync import sync_faces, sync_faces_async
from reconcile.plan import RepairOptions
from reconcile.targets import Targets
from tests.helpers import run_cli
from tests.world import World


def face_id_of(world: World, point: Any) -> str:
    row = world.conn.execute(
        "SELECT id FROM face_instances WHERE qdrant_point_id = %s", (point,)
    ).fetchone()
    assert row is not None
    return str(row[0])


def test_targeted_audit_looks_up_only_the_given_faces(world: World) -> None:
    p = world.person()
    drifted = world.face(p, payload={})
    clean = world.face(p)
    world.face(p, payload={})  # drifted, but not asked about
    orphan = world.face(row=False, payload={})
    unknown_face, unknown_point = str(uuid.uuid4()), str(uuid.uuid4())
    s = world.settings()
    report = audit(
        s,
        stores=world.stores(s),
        targets=Targets(
            face_ids=(
                face_id_of(world, drifted),
                face_id_of(world, clean),
                unknown_face,
                "nonsense",
            ),
            point_ids=(str(orphan), unknown_point, str(drifted)),
        ),
    )
    assert report.scope == "targeted"
    assert report.counts["missing_person"] == 1  # once, though named twice
    assert report.counts["in_sync"] == 1
    assert report.counts["orphan_point"] == 1
    assert sorted(report.unknown_ids) == sorted([unknown_face, "nonsense", unknown_point])


def test_targeted_lookup_still_finds_a_shared_point(world: World) -> None:
    world.loosen()
    p = world.person()
    shared = world.face(p)
    world.face(p, point_id=shared, point=False)
    s = world.settings()
    report = audit(
        s, stores=world.stores(s), targets=Targets(face_ids=(face_id_of(world, shared),))
    )
    assert report.counts["duplicate_point"] == 1


def test_targeted_repair_touches_only_those_faces(world: World) -> None:
    p = world.person()
    asked = world.face(p, payload={})
    other = world.face(p, payload={})
    s = world.settings()
    report = repair(
        s,
        RepairOptions(journal=world.qdrant_dir.parent / "j.jsonl"),  # default 10%: not applied
        stores=world.stores(s),
        targets=Targets(face_ids=(face_id_of(world, asked),)),
    )
    assert report.tallies.applied == 1 and report.plan.guard is None
    assert world.payload(asked)["person_id"] == p
    assert "person_id" not in world.payload(other)


def test_targeted_repair_respects_an_absolute_max_changes(world: World) -> None:
    p = world.person()
    faces = [face_id_of(world, world.face(p, payload={})) for _ in range(3)]
    s = world.settings()
    from reconcile.errors import GuardError

    with pytest.raises(GuardError, match="more than --max-changes 2"):
        repair(
            s,
            RepairOptions(max_changes="2", journal=world.qdrant_dir.parent / "j.jsonl"),
            stores=world.stores(s),
            targets=Targets(face_ids=tuple(faces)),
        )


def test_since_sees_rows_updated_inside_the_window_only(world: World) -> None:
    p = world.person()
    recent = world.face(p, payload={})
    old = world.face(p, payload={})
    world.conn.execute(
        "UPDATE face_instances SET updated_at = now() - interval '2 hours' "
        "WHERE qdrant_point_id = %s",
        (old,),
    )
    s = world.settings()
    report = audit(s, stores=world.stores(s), targets=Targets(since=timedelta(minutes=15)))
    assert report.scope.startswith("since ")
    assert report.counts["missing_person"] == 1 and report.rows == 1
    wider = audit(s, stores=world.stores(s), targets=Targets(since=timedelta(hours=3)))
    assert wider.counts["missing_person"] == 2
    assert recent != old


def test_counts_find_a_person_moved_in_postgres_only(world: World) -> None:
    alice, bob = world.person(), world.person()
    moved = world.face(alice)
    world.face(alice)
    world.face(bob)
    world.conn.execute(
        "UPDATE face_instances SET person_id = %s WHERE qdrant_point_id = %s", (bob, moved)
    )
    s = world.settings()
    report = compare_counts(s, stores=world.stores(s))
    assert sorted(report.differing) == sorted([(alice, 1, 2), (bob, 2, 1)])
    assert report.postgres_faces == report.qdrant_points == 3
    assert report.exit_code == 1
    assert "do not prove" in report.to_json()["note"]


def test_sync_faces_fixes_its_faces_and_leaves_others(world: World) -> None:
    p, q = world.person(), world.person()
    mine = [world.face(p, payload={}), world.face(None, payload={"person_id": q})]
    other = world.face(q, payload={})
    s = world.settings(flag_key="is_assigned")
    report = sync_faces(world.stores(s), [face_id_of(world, m) for m in mine] + ["not-a-face"])
    assert report.tallies.verified == 2 and report.journal is None
    assert report.plan.audit.unknown_ids == ["not-a-face"]
    assert world.payload(mine[0]) | {} == {"person_id": p, "is_assigned": True}
    assert "person_id" not in world.payload(mine[1])
    assert "person_id" not in world.payload(other)  # not asked about: untouched


def test_sync_faces_async_twin(world: World) -> None:
    p = world.person()
    point = world.face(p, payload={})
    s = world.settings()
    report = asyncio.run(sync_faces_async(world.stores(s), [face_id_of(world, point)]))
    assert report.tallies.applied == 1
    assert world.payload(point)["person_id"] == p


def test_cli_ids_from_stdin_and_incremental_state(world: World, tmp_path: Path) -> None:
    import subprocess
    import sys

    p = world.person()
    point = world.face(p, payload={})
    face = face_id_of(world, point)
    env = world.env()
    import os

    piped = subprocess.run(
        [sys.executable, "-m", "reconcile", "audit", "--ids-from", "-", "--format", "json"],
        input=f"{face}\nunknown-face\n",
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert piped.returncode == 1, piped.stderr
    data = json.loads(piped.stdout)
    assert data["counts"]["missing_person"] == 1 and data["unknown_ids"] == ["unknown-face"]

    state = tmp_path / "state.json"
    first = run_cli("audit", "--incremental", str(state), "--format", "json", env=env)
    assert first.returncode == 1 and json.loads(first.stdout)["scope"] == "full"
    saved = json.loads(state.read_text())["last_success_started"]

    broken = {**env, "QDRANT_PATH": str(tmp_path / "missing")}
    failed = run_cli("audit", "--incremental", str(state), env=broken)
    assert failed.returncode == 2
    assert json.loads(state.read_text())["last_success_started"] == saved  # not advanced

    second = run_cli("audit", "--incremental", str(state), "--format", "json", env=env)
    assert json.loads(second.stdout)["scope"].startswith("since ")
    assert json.loads(second.stdout)["counts"]["missing_person"] == 1
    assert json.loads(state.read_text())["last_success_started"] > saved


def test_cli_counts(world: World) -> None:
    world.face(world.person())
    result = run_cli("audit", "--counts", "--format", "json", env=world.env())
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["differing"] == []
