"""A view as --table, as a user meets it: check names what repair cannot lock, repair and
undo refuse it before writing, audit still runs, and a view's index is judged by the plan."""

from __future__ import annotations

import json

from tests.helpers import run_cli
from tests.world import World

# The asset's taken_at through an outer join: the nullable side cannot be locked FOR SHARE.
LEFT_JOIN = (
    "CREATE TABLE image_assets (id integer PRIMARY KEY, taken_at timestamp);"
    "CREATE VIEW faces_left AS SELECT f.*, a.taken_at FROM face_instances f "
    "LEFT JOIN image_assets a ON a.id = f.asset_id"
)
# The same value through an inner join: every joined row is locked.
INNER_JOIN = (
    "CREATE VIEW faces_inner AS SELECT f.*, a.taken_at FROM face_instances f "
    "JOIN image_assets a ON a.id = f.asset_id"
)


def views(world: World) -> None:
    world.conn.execute(LEFT_JOIN)
    world.conn.execute(INNER_JOIN)
    world.conn.execute("INSERT INTO image_assets VALUES (1, '2024-06-01 10:22:00')")


def test_check_names_an_unlockable_view_and_repair_refuses_it_before_writing(
    world: World,
) -> None:
    views(world)
    person = world.person()
    point = world.face(person)
    world.conn.execute("UPDATE face_instances SET person_id = NULL")  # stale_person
    env = world.env()
    flags = ("--table", "faces_left", "--map", "taken_at=taken_at")

    checked = run_cli("check", *flags, "--format", "json", env=env)
    assert checked.returncode == 2, checked.stderr
    problems = json.loads(checked.stdout)["problems"]
    [line] = [p for p in problems if "cannot be locked" in p]
    assert "faces_left" in line and "outer join" in line
    assert json.loads(checked.stdout)["table"]["kind"] == "view"

    audited = run_cli("audit", *flags, "--format", "json", env=env)
    assert audited.returncode == 1, audited.stderr  # audit needs no lock: it runs
    assert json.loads(audited.stdout)["counts"]["stale_person"] == 1

    repaired = run_cli("repair", *flags, "--yes", env=env)
    assert repaired.returncode == 2
    [error] = repaired.stderr.strip().splitlines()
    assert error.startswith("reconcile: error: repair refused: view") and "outer join" in error
    assert person == world.reopen().retrieve("faces", [point])[0].payload["person_id"]


def test_an_inner_join_view_passes_check_with_its_base_index(world: World) -> None:
    views(world)
    world.face(world.person())
    env = world.env()
    checked = run_cli(
        "check", "--table", "faces_inner", "--map", "taken_at=taken_at", "--format", "json", env=env
    )
    report = json.loads(checked.stdout)
    # taken_at is in no payload here: the only problem is that key, not the view.
    assert report["problems"] == [
        "no point in 'faces' holds payload key 'taken_at': check --person-key / --flag-key / --map"
    ]
    assert report["table"]["point_indexed"] is True
    assert report["table"]["mapped"] == {
        "taken_at": {"column": "taken_at", "type": "timestamp without time zone"}
    }


def test_a_view_without_an_index_on_its_base_column_is_named(world: World) -> None:
    world.conn.execute("CREATE TABLE loose (qdrant_point_id uuid, id uuid, person_id uuid)")
    world.conn.execute("CREATE VIEW loose_v AS SELECT * FROM loose")
    env = world.env()
    checked = run_cli("check", "--table", "loose_v", "--format", "json", env=env)
    report = json.loads(checked.stdout)
    assert report["table"]["point_indexed"] is False
    [line] = [p for p in report["problems"] if "sorting" in p]
    assert line.startswith("view loose_v is read in qdrant_point_id order by sorting all of it")
