"""Undo of a repair's journal against a real PostgreSQL and Qdrant local mode."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import psycopg
import pytest

from reconcile.errors import ConfigError
from reconcile.ops.undo import undo
from tests.helpers import drifted_world, run_repair, snapshot
from tests.world import World


def test_undo_restores_exactly_the_state_before(world: World) -> None:
    drifted_world(world)
    before_audit = world.audit(flag_key="is_assigned")
    before = snapshot(world.client)
    report = run_repair(world)
    assert report.journal is not None
    journal = Path(report.journal)
    assert stat.S_IMODE(journal.stat().st_mode) == 0o600
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    assert lines[0]["type"] == "header" and lines[0]["collection"] == "faces"
    assert sum(line["type"] == "change" for line in lines) == 7
    s = world.settings(flag_key="is_assigned")
    dry = undo(s, journal, dry_run=True, stores=world.stores(s))
    assert dry.restored == 7 and snapshot(world.client) != before
    result = undo(s, journal, stores=world.stores(s))
    assert (result.restored, result.conflicts, result.failed) == (7, 0, 0)
    assert snapshot(world.client) == before
    assert world.audit(flag_key="is_assigned").counts == before_audit.counts
    again = undo(s, journal, stores=world.stores(s))
    assert (again.restored, again.already_restored) == (0, 7)


def test_undo_leaves_points_changed_since_as_conflicts(world: World) -> None:
    p, q = world.person(), world.person()
    a = world.face(p, payload={"is_assigned": False})
    b = world.face(p, payload={"is_assigned": False})
    report = run_repair(world)
    world.upsert(a, {"person_id": q, "is_assigned": True})  # someone wrote since
    s = world.settings(flag_key="is_assigned")
    result = undo(s, Path(str(report.journal)), stores=world.stores(s))
    assert (result.restored, result.conflicts) == (1, 1)
    assert result.exit_code == 1
    assert world.payload(a)["person_id"] == q
    assert "person_id" not in world.payload(b)


def test_undo_rejects_a_file_that_is_not_a_journal(world: World, tmp_path: Path) -> None:
    bogus = tmp_path / "x.jsonl"
    bogus.write_text('{"kind": "missing_person"}\n')
    s = world.settings()
    with pytest.raises(ConfigError, match="not a reconcile journal"):
        undo(s, bogus, stores=world.stores(s))


def test_torn_last_line_is_reported_and_skipped(world: World) -> None:
    p = world.person()
    world.face(p, payload={"is_assigned": False})
    world.face(p, payload={"is_assigned": False})
    report = run_repair(world, batch_size=1)
    journal = Path(str(report.journal))
    text = journal.read_text()
    journal.write_text(text + text.splitlines()[1][:25])  # a kill -9 in mid-line
    s = world.settings(flag_key="is_assigned")
    result = undo(s, journal, stores=world.stores(s))
    assert result.torn_last_line and result.restored == 2


def test_integer_point_ids_repair_and_undo(pg_url: str, tmp_path: Path) -> None:
    world = World(pg_url, tmp_path / "q", point_type="bigint")
    try:
        p = world.person()
        a = world.face(p, point_id=world.new_point_id(integer=True), payload={})
        b = world.face(None, point_id=world.new_point_id(integer=True), payload={"person_id": p})
        before = snapshot(world.client)
        report = run_repair(world)
        assert report.tallies.verified == 2
        assert world.payload(a)["person_id"] == p and "person_id" not in world.payload(b)
        s = world.settings(flag_key="is_assigned")
        assert undo(s, Path(str(report.journal)), stores=world.stores(s)).restored == 2
        assert snapshot(world.client) == before
    finally:
        world.close()


def test_undo_skips_rows_the_application_holds(world: World) -> None:
    p = world.person()
    held, free = world.face(p, payload={}), world.face(p, payload={})
    report = run_repair(world)
    app = psycopg.connect(world.url)
    try:
        app.execute("SELECT 1 FROM face_instances WHERE qdrant_point_id = %s FOR UPDATE", (held,))
        s = world.settings(flag_key="is_assigned")
        result = undo(s, Path(str(report.journal)), stores=world.stores(s))
    finally:
        app.rollback()
        app.close()
    assert (result.restored, result.skipped_locked, result.exit_code) == (1, 1, 1)
    assert world.payload(held)["person_id"] == p and "person_id" not in world.payload(free)
