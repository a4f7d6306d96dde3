"""Properties over random worlds, against the real PostgreSQL and Qdrant local mode."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from reconcile.errors import GuardError
from reconcile.ops.repair import repair
from reconcile.ops.undo import undo
from reconcile.plan import RepairOptions
from reconcile.testing.world import create_collection, create_schema
from tests.helpers import snapshot
from tests.world import World

PERSONS = [str(uuid.UUID(int=i, version=4)) for i in range(1, 4)]
RAW = st.sampled_from([None, *PERSONS, PERSONS[0].upper(), "", 7, [PERSONS[0]]])


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_repair_converges_is_idempotent_and_undo_restores(
    world: World, tmp_path: Path, data: st.DataObject
) -> None:
    integer = data.draw(st.booleans(), label="integer ids")
    flag = data.draw(st.sampled_from([None, "is_assigned"]), label="flag key")
    world.conn.execute("DROP TABLE IF EXISTS face_instances, persons")
    create_schema(world.conn, "bigint" if integer else "uuid")
    world.loosen()
    assert world.client is not None
    create_collection(world.client, "faces", dim=8)
    for person in PERSONS:
        world.conn.execute("INSERT INTO persons (id, name) VALUES (%s, 'x')", (person,))
    ids = data.draw(st.lists(st.integers(1, 10**9), max_size=25, unique=True), label="ids")
    points: list[Any] = ids if integer else [str(uuid.UUID(int=i, version=4)) for i in ids]
    for point in points:
        with_row = data.draw(st.integers(0, 9)) > 0  # some orphans
        rows = 2 if with_row and data.draw(st.integers(0, 9)) == 0 else int(with_row)
        for _ in range(rows):  # a shared point now and then
            world.face(data.draw(st.sampled_from([None, *PERSONS])), point_id=point, point=False)
        if data.draw(st.integers(0, 9)) > 0:  # some missing points
            payload: dict[str, Any] = {"other": "kept"}
            if data.draw(st.booleans()):
                payload["person_id"] = data.draw(RAW)
            if data.draw(st.booleans()):
                payload["is_assigned"] = data.draw(st.sampled_from([True, False, "true"]))
            world.upsert(point, payload)

    s = world.settings(flag_key=flag)
    before = snapshot(world.client, nulls=False)
    first = world.audit(flag_key=flag)
    if (first.rows - first.rows_without_point == 0) != (first.points == 0):
        with pytest.raises(GuardError, match="one store is empty"):
            repair(s, RepairOptions(max_changes="100%"), stores=world.stores(s))
        return
    journals = []
    for n in range(2):
        journal = tmp_path / f"j-{uuid.uuid4().hex}-{n}.jsonl"
        report = repair(
            s,
            RepairOptions(
                max_changes="100%", batch_size=data.draw(st.integers(1, 5)), journal=journal
            ),
            stores=world.stores(s),
        )
        assert report.tallies.failed == 0
        if n == 0:
            once = snapshot(world.client)
            assert report.tallies.applied == first.repairable
        else:
            assert report.tallies.applied == 0  # idempotent
            assert snapshot(world.client) == once
        if report.journal:
            journals.append(Path(report.journal))
    after = world.audit(flag_key=flag)
    assert after.repairable == 0
    for kind in ("missing_point", "orphan_point", "duplicate_point"):
        assert after.counts[kind] == first.counts[kind]
    event(f"repaired {first.repairable > 0}")
    for journal in reversed(journals):
        undo(s, journal, stores=world.stores(s))
    assert snapshot(world.client, nulls=False) == before  # an explicit null comes back absent
    assert world.audit(flag_key=flag).counts == first.counts
