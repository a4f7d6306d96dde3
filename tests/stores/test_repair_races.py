"""Repair while the stores change under it: vanished rows and points, the application's locks."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest
from qdrant_client import QdrantClient

from reconcile.apply import Hooks
from reconcile.diff import Kind
from reconcile.ops.repair import repair
from reconcile.plan import Plan, RepairOptions
from reconcile.stores.postgres import LockMode
from tests.helpers import run_repair
from tests.world import World


def test_rows_and_points_that_vanish_after_planning_are_reported(world: World) -> None:
    p = world.person()
    gone_point = world.face(p, payload={})
    gone_row = world.face(p, payload={})
    kept = world.face(p, payload={})

    def meanwhile(plan: Plan) -> bool:
        assert plan.set_person == 3
        world.client.delete("faces", [gone_point])  # type: ignore[union-attr]
        world.conn.execute("DELETE FROM face_instances WHERE qdrant_point_id = %s", (gone_row,))
        return True

    report = run_repair(world, confirm=meanwhile)
    assert report.tallies.vanished == 2 and report.tallies.applied == 1
    assert report.remaining["missing_point"] == 1 and report.remaining["orphan_point"] == 1
    assert world.payload(kept)["person_id"] == p


def test_rows_held_by_the_application_are_skipped_not_waited_for(world: World) -> None:
    p = world.person()
    held = world.face(p, payload={})
    free = world.face(p, payload={})
    app = psycopg.connect(world.url)
    try:

        def meanwhile(plan: Plan) -> bool:
            app.execute(
                "SELECT 1 FROM face_instances WHERE qdrant_point_id = %s FOR UPDATE", (held,)
            )
            return True

        report = run_repair(world, confirm=meanwhile)
    finally:
        app.rollback()
        app.close()
    assert report.tallies.skipped_locked == 1 and report.tallies.applied == 1
    assert report.remaining["missing_person"] == 1 and report.exit_code == 1
    assert "person_id" not in world.payload(held)
    assert world.payload(free)["person_id"] == p


def _wait_until_blocked(pid: int, url: str) -> None:
    """Poll until backend `pid` waits on a lock: a condition, not a hopeful sleep."""
    with psycopg.connect(url, autocommit=True) as watcher:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            row = watcher.execute(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)
            ).fetchone()
            if row is not None and row[0] == "Lock":
                return
            time.sleep(0.01)
    raise AssertionError("the application's UPDATE never waited for the repair's lock")


@pytest.mark.parametrize("service", ["commit-then-qdrant", "qdrant-inside-transaction"])
@pytest.mark.parametrize("locking", [True, False], ids=["locked", "unlocked"])
def test_application_update_during_repair(world: World, service: str, locking: bool) -> None:
    """Between recheck and write, the service reassigns the face on another connection.

    With the lock its UPDATE waits, writes Qdrant after the repair, and the stores
    agree. With locking switched off the repair overwrites the newer value: the
    test can tell the difference, so it proves the lock is what keeps us safe.
    """
    old, new = world.person(), world.person()
    point = world.face(old, payload={"is_assigned": False})  # accepted in PostgreSQL only
    app = psycopg.connect(world.url)
    client = world.client
    assert client is not None

    def service_reassigns() -> None:
        app.execute(
            "UPDATE face_instances SET person_id = %s, updated_at = now() "
            "WHERE qdrant_point_id = %s",
            (new, point),
        )
        if service == "commit-then-qdrant":
            app.commit()
            client.set_payload("faces", {"person_id": new, "is_assigned": True}, [point])
        else:
            client.set_payload("faces", {"person_id": new, "is_assigned": True}, [point])
            app.commit()

    writer = threading.Thread(target=service_reassigns)

    def between_recheck_and_write(point_ids: list[Any]) -> None:
        assert point_ids == [point]
        writer.start()
        if locking:
            _wait_until_blocked(app.info.backend_pid, world.url)
        else:
            writer.join()  # nothing stops it: it runs to the end before our write

    try:
        run_repair(
            world,
            hooks=Hooks(
                before_write=between_recheck_and_write,
                lock=LockMode.SKIP_LOCKED if locking else LockMode.NONE,
            ),
        )
        writer.join(timeout=60)
        assert not writer.is_alive()
    finally:
        app.close()
    final = world.payload(point)["person_id"]
    if locking:
        assert final == new
        assert world.audit(flag_key="is_assigned").counts[Kind.IN_SYNC] == 1
    else:
        assert final == old  # the stale overwrite the lock prevents


class SerializedClient:
    """The test's own guard around local mode, which has no internal locking."""

    def __init__(self, client: QdrantClient) -> None:
        self._client = client
        self._lock = threading.RLock()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return attr(*args, **kwargs)

        return call


def test_soak_writers_and_repair_end_in_agreement(world: World) -> None:
    """Writers reassign their own faces the way the service does while repairs run.

    No repair runs after the writers stop, so a stale overwrite would be left in
    place and fail the final check. The race window is narrow, so this soak is a
    smoke test (no crash, no deadlock, agreement at the end); the deterministic
    test above is the one that proves the lock is needed.
    """
    import random

    from reconcile.stores import Stores
    from reconcile.stores.qdrant import Qdrant

    persons = [world.person() for _ in range(4)]
    rng = random.Random(3)
    faces = [world.face(rng.choice([*persons, None])) for _ in range(40)]
    assert world.client is not None
    client = SerializedClient(world.client)

    def writer(own: list[Any], seed: int) -> None:
        r = random.Random(seed)
        with psycopg.connect(world.url) as conn:
            for _ in range(60):
                point, person = r.choice(own), r.choice([*persons, None])
                conn.execute(
                    "UPDATE face_instances SET person_id = %s, updated_at = now() "
                    "WHERE qdrant_point_id = %s",
                    (person, point),
                )
                conn.commit()
                if person is None:  # how the service unassigns
                    client.delete_payload("faces", ["person_id"], [point])
                    client.set_payload("faces", {"is_assigned": False}, [point])
                else:
                    client.set_payload("faces", {"person_id": person, "is_assigned": True}, [point])

    writers = [threading.Thread(target=writer, args=(faces[i::2], i)) for i in range(2)]
    settings = world.settings(flag_key="is_assigned")
    stores = Stores(settings, qdrant=Qdrant(settings, client=client))  # type: ignore[arg-type]
    for t in writers:
        t.start()
    rounds = 0
    while any(t.is_alive() for t in writers):
        repair(
            settings,
            RepairOptions(
                batch_size=4,
                max_changes="100%",
                journal=world.qdrant_dir.parent / f"soak-{rounds}.jsonl",
            ),
            stores=stores,
        )
        rounds += 1
    for t in writers:
        t.join()
    assert rounds >= 1
    assert world.audit(flag_key="is_assigned").counts["in_sync"] == len(faces)


def test_point_deleted_between_recheck_and_write(world: World) -> None:
    p = world.person()
    doomed, kept = world.face(p, payload={}), world.face(p, payload={})

    def delete_one(point_ids: list[Any]) -> None:
        world.client.delete("faces", [doomed])  # type: ignore[union-attr]

    report = run_repair(world, hooks=Hooks(before_write=delete_one))
    assert (report.tallies.applied, report.tallies.vanished, report.tallies.failed) == (1, 1, 0)
    assert report.remaining["missing_point"] == 1
    assert world.payload(kept)["person_id"] == p


def test_face_deleted_from_both_stores_is_not_an_orphan(world: World) -> None:
    p = world.person()
    gone = world.face(p, payload={})

    def delete_face(plan: Plan) -> bool:
        world.conn.execute("DELETE FROM face_instances WHERE qdrant_point_id = %s", (gone,))
        world.client.delete("faces", [gone])  # type: ignore[union-attr]
        return True

    report = run_repair(world, confirm=delete_face)
    assert report.tallies.vanished == 1
    assert sum(report.remaining.values()) == 0 and report.exit_code == 0
