"""Repair against a real PostgreSQL and Qdrant local mode: the plan, the writes, the guard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconcile.errors import GuardError
from tests.helpers import drifted_world, run_repair, snapshot
from tests.world import World


def test_dry_run_writes_nothing(world: World) -> None:
    drifted_world(world)
    before = snapshot(world.client)
    report = run_repair(world, dry_run=True)
    assert snapshot(world.client) == before
    assert report.journal is None
    assert report.plan.to_json() | {"top_persons": []} == {
        "set_person": 3,
        "clear_person": 2,
        "set_flag": 2,
        "set_payload": 0,
        # The flag is written with the person where both differ: 4 flags, 2 of them alone.
        "keys": {"person_id": {"set": 3, "clear": 2}, "is_assigned": {"set": 4, "clear": 0}},
        "orphans": None,  # no --delete-orphans
        "persons": 3,
        "persons_exact": True,
        "requests": 1,
        "top_persons": [],
    }
    assert report.exit_code == 1
    assert report.remaining["missing_person"] == 1


def test_repair_fixes_everything_repairable_and_touches_only_its_keys(world: World) -> None:
    w = drifted_world(world)
    report = run_repair(world)
    assert (report.tallies.applied, report.tallies.verified, report.tallies.failed) == (7, 7, 0)
    assert report.remaining == {
        "missing_person": 0,
        "wrong_person": 0,
        "stale_person": 0,
        "flag_mismatch": 0,
        "payload_mismatch": 0,
        "missing_point": 1,
        "orphan_point": 1,
        "duplicate_point": 0,
    }
    assert report.exit_code == 1  # report-only kinds remain
    after = world.audit(flag_key="is_assigned")
    assert after.repairable == 0
    alice, _, _ = w["persons"]
    (missing,) = w["ids"]["missing_person"]
    assert world.payload(missing)["cluster_id"] == "c1"  # other keys untouched
    assert world.payload(missing)["person_id"] == alice
    stale = w["ids"]["stale_person"][0]
    assert world.payload(stale) == {"is_assigned": False, "asset_id": "9"}


def test_repair_twice_equals_repair_once(world: World) -> None:
    drifted_world(world)
    run_repair(world)
    once = snapshot(world.client)
    second = run_repair(world)
    assert snapshot(world.client) == once
    assert second.tallies.applied == 0 and second.journal is None


def test_flag_and_person_always_agree_afterwards(world: World) -> None:
    w = drifted_world(world)
    run_repair(world)
    (orphan,) = w["ids"]["orphan_point"]  # no row names it, so repair never touches it
    records, _ = world.client.scroll("faces", limit=1000, with_payload=True)  # type: ignore[union-attr]
    checked = 0
    for record in records:
        if record.id == orphan:
            continue
        payload = record.payload or {}
        assert payload.get("is_assigned") is (payload.get("person_id") is not None), payload
        checked += 1
    assert checked == 11


def test_without_flag_key_the_flag_is_left_alone(world: World) -> None:
    w = drifted_world(world)
    report = run_repair(world, flag=None)
    assert report.plan.set_flag == 0
    (bob_flag, _) = w["ids"]["flag_mismatch"]
    assert "is_assigned" not in world.payload(bob_flag)


def test_journal_tells_absent_from_null(world: World) -> None:
    p = world.person()
    absent = world.face(p, payload={"is_assigned": True})
    null = world.face(p, payload={"person_id": None, "is_assigned": True})
    report = run_repair(world)
    assert report.journal is not None
    changes = {
        str(c["point_id"]): c
        for c in map(json.loads, Path(report.journal).read_text().splitlines())
        if c["type"] == "change"
    }
    assert changes[str(absent)]["before"] == {"is_assigned": True}
    assert changes[str(null)]["before"] == {"person_id": None, "is_assigned": True}
    assert changes[str(null)]["after"] == {"person_id": p, "is_assigned": True}


def test_guard_refuses_an_empty_table(world: World) -> None:
    p = world.person()
    for _ in range(3):
        world.face(p, payload={})
    world.conn.execute("DELETE FROM face_instances")
    with pytest.raises(GuardError, match="one store is empty"):
        run_repair(world)


def test_guard_refuses_a_plan_over_max_changes(world: World) -> None:
    p = world.person()
    for _ in range(3):
        world.face(p, payload={})
    world.face(p)
    with pytest.raises(GuardError, match=r"changes 3 points, more than --max-changes 50% \(2 of 4"):
        run_repair(world, max_changes="50%")
    assert run_repair(world, max_changes="3").tallies.applied == 3


def test_a_plan_for_more_persons_than_counters_stays_bounded_and_says_so(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan's per-person breakdown uses the audit's bounded counters (here 2 of them)."""
    import io
    import sys

    from rich.console import Console

    from reconcile.cli.render import render_plan

    # The package's `repair` attribute is the function; the module is in sys.modules.
    monkeypatch.setattr(sys.modules["reconcile.plan"], "person_capacity", lambda top: 2)
    persons = [world.person() for _ in range(4)]
    heavy = persons[0]
    for person in [heavy] * 3 + persons:  # heavy: 4 of 7, more than 7/2: always kept
        world.face(person, payload={})  # missing_person: the repair sets this person
    report = run_repair(world, dry_run=True)
    plan = report.plan.to_json()
    assert plan["set_person"] == 7
    assert plan["persons_exact"] is False and plan["persons"] == 2  # a lower bound
    top = {p["person_id"]: p for p in plan["top_persons"]}
    assert top[heavy]["set"] + top[heavy]["error"] >= 4  # never undercounted
    assert all(p["set"] + p["error"] >= 1 for p in top.values())
    out = io.StringIO()
    render_plan(report.plan, Console(file=out, width=200))
    assert "at least 2 persons" in out.getvalue()
    assert "up to its error" in out.getvalue()
