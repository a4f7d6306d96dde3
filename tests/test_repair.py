"""Repair and undo against a real PostgreSQL and Qdrant local mode."""

from __future__ import annotations

import json
import stat
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from qdrant_client import QdrantClient

from reconcile.apply import Hooks
from reconcile.diff import Kind
from reconcile.errors import ConfigError, GuardError
from reconcile.ops.repair import RepairReport, repair
from reconcile.ops.undo import undo
from reconcile.plan import Plan, RepairOptions
from reconcile.stores.postgres import LockMode
from tests.world import World


def snapshot(client: QdrantClient | None, nulls: bool = True) -> str:
    """Every point's whole payload, serialized: equal strings mean byte-identical payloads.

    `nulls=False` leaves out keys holding null, which undo restores as absent.
    """
    assert client is not None
    records, _ = client.scroll("faces", limit=100_000, with_payload=True)
    payloads = {
        str(r.id): {k: v for k, v in (r.payload or {}).items() if nulls or v is not None}
        for r in records
    }
    return json.dumps(payloads, sort_keys=True)


def drifted_world(world: World) -> dict[str, Any]:
    """Every kind of drift, the way the service's bugs make it."""
    alice, bob, carol = world.person(), world.person(), world.person()
    ids = {
        "in_sync": [world.face(alice) for _ in range(3)] + [world.face(None)],
        "missing_person": [world.face(alice, payload={"is_assigned": False, "cluster_id": "c1"})],
        "wrong_person": [
            world.face(bob, payload={"person_id": alice, "is_assigned": True}),
            world.face(bob, payload={"person_id": bob.upper(), "is_assigned": True}),
        ],
        "stale_person": [
            world.face(None, payload={"person_id": carol, "is_assigned": True, "asset_id": "9"}),
            world.face(None, payload={"person_id": "", "is_assigned": False}),
        ],
        "flag_mismatch": [
            world.face(bob, payload={"person_id": bob}),
            world.face(None, payload={"is_assigned": True}),
        ],
        "missing_point": [world.face(bob, point=False)],
        "orphan_point": [world.face(row=False, payload={"person_id": bob})],
    }
    return {"persons": (alice, bob, carol), "ids": ids}


def run(world: World, flag: str | None = "is_assigned", **options: Any) -> RepairReport:
    settings = world.settings(flag_key=flag)
    hooks = options.pop("hooks", None)
    confirm = options.pop("confirm", None)
    options.setdefault("max_changes", "100%")  # tiny worlds: any drift is a large share
    options.setdefault("journal", world.qdrant_dir.parent / f"journal-{time.monotonic_ns()}.jsonl")
    return repair(
        settings,
        RepairOptions(**options),
        stores=world.stores(settings),
        hooks=hooks,
        confirm=confirm,
    )


def test_dry_run_writes_nothing(world: World) -> None:
    drifted_world(world)
    before = snapshot(world.client)
    report = run(world, dry_run=True)
    assert snapshot(world.client) == before
    assert report.journal is None
    assert report.plan.to_json() | {"top_persons": []} == {
        "set_person": 3,
        "clear_person": 2,
        "set_flag": 2,
        "persons": 3,
        "persons_exact": True,
        "requests": 1,
        "top_persons": [],
    }
    assert report.exit_code == 1
    assert report.remaining["missing_person"] == 1


def test_repair_fixes_everything_repairable_and_touches_only_its_keys(world: World) -> None:
    w = drifted_world(world)
    report = run(world)
    assert (report.tallies.applied, report.tallies.verified, report.tallies.failed) == (7, 7, 0)
    assert report.remaining == {
        "missing_person": 0,
        "wrong_person": 0,
        "stale_person": 0,
        "flag_mismatch": 0,
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
    run(world)
    once = snapshot(world.client)
    second = run(world)
    assert snapshot(world.client) == once
    assert second.tallies.applied == 0 and second.journal is None


def test_flag_and_person_always_agree_afterwards(world: World) -> None:
    w = drifted_world(world)
    run(world)
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
    report = run(world, flag=None)
    assert report.plan.set_flag == 0
    (bob_flag, _) = w["ids"]["flag_mismatch"]
    assert "is_assigned" not in world.payload(bob_flag)


def test_undo_restores_exactly_the_state_before(world: World) -> None:
    drifted_world(world)
    before_audit = world.audit(flag_key="is_assigned")
    before = snapshot(world.client)
    report = run(world)
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


def test_journal_tells_absent_from_null(world: World) -> None:
    p = world.person()
    absent = world.face(p, payload={"is_assigned": True})
    null = world.face(p, payload={"person_id": None, "is_assigned": True})
    report = run(world)
    assert report.journal is not None
    changes = {
        str(c["point_id"]): c
        for c in map(json.loads, Path(report.journal).read_text().splitlines())
        if c["type"] == "change"
    }
    assert changes[str(absent)]["before"] == {"is_assigned": True}
    assert changes[str(null)]["before"] == {"person_id": None, "is_assigned": True}
    assert changes[str(null)]["after"] == {"person_id": p, "is_assigned": True}


def test_undo_leaves_points_changed_since_as_conflicts(world: World) -> None:
    p, q = world.person(), world.person()
    a = world.face(p, payload={"is_assigned": False})
    b = world.face(p, payload={"is_assigned": False})
    report = run(world)
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
    report = run(world, batch_size=1)
    journal = Path(str(report.journal))
    text = journal.read_text()
    journal.write_text(text + text.splitlines()[1][:25])  # a kill -9 in mid-line
    s = world.settings(flag_key="is_assigned")
    result = undo(s, journal, stores=world.stores(s))
    assert result.torn_last_line and result.restored == 2


def test_guard_refuses_an_empty_table(world: World) -> None:
    p = world.person()
    for _ in range(3):
        world.face(p, payload={})
    world.conn.execute("DELETE FROM face_instances")
    with pytest.raises(GuardError, match="one store is empty"):
        run(world)


def test_guard_refuses_a_plan_over_max_changes(world: World) -> None:
    p = world.person()
    for _ in range(3):
        world.face(p, payload={})
    world.face(p)
    with pytest.raises(GuardError, match=r"changes 3 points, more than --max-changes 50% \(2 of 4"):
        run(world, max_changes="50%")
    assert run(world, max_changes="3").tallies.applied == 3


@pytest.mark.parametrize("bad", ["ten", "-5", "150%", "2.5"])
def test_bad_max_changes_is_rejected(bad: str) -> None:
    with pytest.raises(ConfigError, match="--max-changes"):
        RepairOptions(max_changes=bad)


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

    report = run(world, confirm=meanwhile)
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

        report = run(world, confirm=meanwhile)
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
        run(
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


class FailingWrites:
    """Fault injection (a wrapper, since local mode cannot fail): batch_update_points
    raises qdrant-client's own ResponseHandlingException, as a timeout or a refused
    connection does, for the first `failures` calls."""

    def __init__(self, client: QdrantClient, failures: int) -> None:
        self._client = client
        self.failures = failures
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name != "batch_update_points":
            return attr

        def fail(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls <= self.failures:
                from qdrant_client.http.exceptions import ResponseHandlingException

                raise ResponseHandlingException(TimeoutError("timed out"))
            return attr(*args, **kwargs)

        return fail


def run_with(world: World, client: Any, **options: Any) -> RepairReport:
    from reconcile.stores import Stores
    from reconcile.stores.qdrant import Qdrant

    settings = world.settings(flag_key="is_assigned")
    hooks = options.pop("hooks", None)
    options.setdefault("max_changes", "100%")
    options.setdefault("journal", world.qdrant_dir.parent / f"j-{time.monotonic_ns()}.jsonl")
    stores = Stores(settings, qdrant=Qdrant(settings, client=client))
    return repair(settings, RepairOptions(**options), stores=stores, hooks=hooks)


def test_a_failed_write_is_retried_once_under_the_lock(world: World) -> None:
    p = world.person()
    for _ in range(3):
        world.face(p, payload={})
    assert world.client is not None
    report = run_with(world, FailingWrites(world.client, failures=1))
    assert (report.tallies.applied, report.tallies.failed, report.exit_code) == (3, 0, 0)


def test_failed_writes_are_counted_and_the_run_goes_on(world: World) -> None:
    p = world.person()
    points = [world.face(p, payload={}) for _ in range(4)]
    assert world.client is not None
    # Batches of 2: the first batch fails twice (write and retry), the second succeeds.
    report = run_with(world, FailingWrites(world.client, failures=2), batch_size=2)
    assert (report.tallies.applied, report.tallies.failed) == (2, 2)
    assert report.remaining["missing_person"] == 2
    assert report.exit_code == 3
    assert sum("person_id" in world.payload(pt) for pt in points) == 2
    lines = [json.loads(x) for x in Path(str(report.journal)).read_text().splitlines()]
    outcomes = [x for x in lines if x["type"] == "outcome"]
    assert [o["failed"] for o in outcomes] == [2, 0]
    assert "timed out" in outcomes[0]["error"]


def test_a_store_that_keeps_failing_stops_the_run(world: World) -> None:
    from reconcile.errors import StoreError

    p = world.person()
    for _ in range(5):
        world.face(p, payload={})
    assert world.client is not None
    with pytest.raises(StoreError, match="3 batches in a row failed"):
        run_with(world, FailingWrites(world.client, failures=100), batch_size=1)


def test_point_deleted_between_recheck_and_write(world: World) -> None:
    p = world.person()
    doomed, kept = world.face(p, payload={}), world.face(p, payload={})

    def delete_one(point_ids: list[Any]) -> None:
        world.client.delete("faces", [doomed])  # type: ignore[union-attr]

    report = run(world, hooks=Hooks(before_write=delete_one))
    assert (report.tallies.applied, report.tallies.vanished, report.tallies.failed) == (1, 1, 0)
    assert report.remaining["missing_point"] == 1
    assert world.payload(kept)["person_id"] == p


def test_no_write_once_the_batch_deadline_has_passed(world: World) -> None:
    p = world.person()
    point = world.face(p, payload={})
    now = [0.0]

    def slow_recheck(point_ids: list[Any]) -> None:
        now[0] += 61  # the lock and recheck took longer than --batch-deadline 60

    report = run(world, hooks=Hooks(before_write=slow_recheck, clock=lambda: now[0]))
    assert (report.tallies.applied, report.tallies.failed, report.exit_code) == (0, 1, 3)
    assert "person_id" not in world.payload(point)


def test_face_deleted_from_both_stores_is_not_an_orphan(world: World) -> None:
    p = world.person()
    gone = world.face(p, payload={})

    def delete_face(plan: Plan) -> bool:
        world.conn.execute("DELETE FROM face_instances WHERE qdrant_point_id = %s", (gone,))
        world.client.delete("faces", [gone])  # type: ignore[union-attr]
        return True

    report = run(world, confirm=delete_face)
    assert report.tallies.vanished == 1
    assert sum(report.remaining.values()) == 0 and report.exit_code == 0


def test_integer_point_ids_repair_and_undo(pg_url: str, tmp_path: Path) -> None:
    world = World(pg_url, tmp_path / "q", point_type="bigint")
    try:
        p = world.person()
        a = world.face(p, point_id=world.new_point_id(integer=True), payload={})
        b = world.face(None, point_id=world.new_point_id(integer=True), payload={"person_id": p})
        before = snapshot(world.client)
        report = run(world)
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
    report = run(world)
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
    report = run(world, dry_run=True)
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
