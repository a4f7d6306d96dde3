"""Every way of running `reconcile` covers the mapped keys: scopes, sampling, slices,
details, the sync helper, `--fail-on`, the config file, and a write racing a repair."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from reconcile.apply import Hooks
from reconcile.diff import Kind
from reconcile.ops.audit import audit
from reconcile.ops.sample import sample_audit, wilson
from reconcile.ops.sync import sync_faces
from reconcile.settings import Settings
from reconcile.stores.postgres import LockMode
from reconcile.targets import Targets
from tests.helpers import run_cli
from tests.world import MAP, Face, World, dismiss_cluster, merge_clusters, service_drift

COMPARED = ("person_id", "is_assigned", *MAP)
MAP_FLAGS = [
    "--flag-key",
    "is_assigned",
    *(arg for key, source in MAP.items() for arg in ("--map", f"{key}={source}")),
]


def mapped(world: World, **overrides: Any) -> Settings:
    return world.settings(**{"flag_key": "is_assigned", "map": MAP, **overrides})


def cli(world: World, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI on this world with the service's map (local mode is released to it)."""
    result = run_cli(*args, *MAP_FLAGS, env=world.env())
    world.reopen()
    return result


def unknown_groups(world: World, sizes: dict[str, int]) -> dict[str, list[Face]]:
    return {
        cluster: [world.service_face(None, cluster=cluster) for _ in range(n)]
        for cluster, n in sizes.items()
    }


def test_targeted_by_face_ids_and_point_ids(world: World) -> None:
    drift = service_drift(world)
    f = drift.faces
    settings = mapped(world)
    targets = Targets(face_ids=(f["U11b"].face_id, f["N1"].face_id, f["A1"].face_id))
    report = audit(settings, stores=world.stores(settings), targets=targets)
    assert report.scope == "targeted"
    assert report.counts["payload_mismatch"] == 2 and report.counts["in_sync"] == 1
    assert report.keys["cluster_id"] == {"missing": 1, "wrong": 1, "stale": 0}
    assert dict((v, n) for v, n, _ in report.top_values["cluster_id"]) == {"u_10": 1, "c_40": 1}

    repaired = world.repair(settings, targets=Targets(face_ids=(f["U11b"].face_id,)))
    assert repaired.tallies.verified == 1
    assert world.payload(f["U11b"].point_id) == world.as_stored(f["U11b"]).payload()
    assert world.payload(f["U11c"].point_id)["cluster_id"] == "u_11"  # not targeted: left

    result = cli(world, "audit", "--point-id", str(f["A3"].point_id), "--format", "json")
    assert result.returncode == 1, result.stderr
    out = json.loads(result.stdout)
    assert out["scope"] == "targeted" and out["counts"]["payload_mismatch"] == 1
    assert out["keys"]["asset_id"] == {"missing": 0, "wrong": 1, "stale": 0}
    assert out["top_values"]["asset_id"] == [
        {"value": str(f["A3"].asset_id), "drifted": 1, "error": 0}
    ]


def test_since_finds_a_merge_committed_after_the_cutoff_only(world: World) -> None:
    groups = unknown_groups(world, {"u_1": 2, "u_2": 3, "u_3": 2, "u_4": 4})
    merge_clusters(world.conn, "u_1", "u_2", at=datetime(2025, 1, 1, tzinfo=UTC))  # before
    merge_clusters(world.conn, "u_3", "u_4")  # after: now
    settings = mapped(world)

    full = audit(settings, stores=world.stores(settings))
    assert full.counts["payload_mismatch"] == 7
    since = Targets(since=datetime(2025, 6, 1, tzinfo=UTC))
    report = audit(settings, stores=world.stores(settings), targets=since)
    assert report.scope.startswith("since")
    assert report.counts["payload_mismatch"] == 4
    assert report.keys["cluster_id"] == {"missing": 0, "wrong": 4, "stale": 0}
    assert [(v, n) for v, n, _ in report.top_values["cluster_id"]] == [("u_3", 4)]
    repaired = world.repair(settings, targets=since)
    assert repaired.tallies.verified == 4
    for face in groups["u_4"]:
        assert world.payload(face.point_id) == world.as_stored(face).payload()
    assert audit(settings, stores=world.stores(settings)).counts["payload_mismatch"] == 3


def test_incremental_covers_the_mapped_keys(world: World, tmp_path: Path) -> None:
    unknown_groups(world, {"u_1": 2, "u_2": 2, "u_3": 1, "u_4": 3})
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    merge_clusters(world.conn, "u_1", "u_2", at=an_hour_ago)
    state = tmp_path / "state.json"

    first = cli(world, "audit", "--incremental", str(state), "--format", "json")
    assert first.returncode == 1, first.stderr
    assert json.loads(first.stdout)["scope"] == "full"  # no state yet
    assert json.loads(first.stdout)["keys"]["cluster_id"]["wrong"] == 2
    merge_clusters(world.conn, "u_3", "u_4")  # after the first run started

    second = cli(world, "audit", "--incremental", str(state), "--format", "json")
    assert second.returncode == 1, second.stderr
    out = json.loads(second.stdout)
    assert out["scope"].startswith("since")
    assert out["counts"]["payload_mismatch"] == 3  # the hour-old merge is not looked at
    assert out["top_values"]["cluster_id"] == [{"value": "u_3", "drifted": 3, "error": 0}]


def test_sample_estimates_payload_mismatch(world: World) -> None:
    groups = unknown_groups(world, {"u_1": 20, "u_2": 20})
    world.conn.execute("ANALYZE face_instances")
    merge_clusters(world.conn, "u_1", "u_2")  # half the faces drift
    settings = mapped(world)
    report = sample_audit(settings, 40, seed=5, stores=world.stores(settings))
    plain_settings = world.settings(flag_key="is_assigned")
    plain = sample_audit(plain_settings, 40, seed=5, stores=world.stores(plain_settings))
    estimate = report.estimates[Kind.PAYLOAD_MISMATCH]
    assert estimate.hits > 0 and estimate.rate > 0
    # The report's 95% interval misses the truth in one run of twenty by design (the
    # world's ids are random, so the draw is too): checked at z = 4, one in 16,000.
    low, high = wilson(estimate.hits, estimate.sampled, z=4.0)
    assert low <= 0.5 <= high
    assert plain.estimates[Kind.PAYLOAD_MISMATCH].hits == 0  # without the map: unseen
    assert len(groups["u_2"]) == 20


def test_shards_add_up_to_the_full_audit_and_workers_agree(world: World) -> None:
    service_drift(world)
    settings = mapped(world)
    full = audit(settings, stores=world.stores(settings))
    kinds: dict[str, int] = dict.fromkeys(full.counts, 0)
    keys = {key: dict.fromkeys(subs, 0) for key, subs in full.keys.items()}
    for i in (1, 2, 3):
        part = audit(settings, stores=world.stores(settings), shard=(i, 3))
        assert part.scope == f"shard {i}/3"
        for kind, n in part.counts.items():
            kinds[kind] += n
        for key, subs in part.keys.items():
            for sub, n in subs.items():
                keys[key][sub] += n
    assert kinds == full.counts
    assert keys == full.keys

    parallel = audit(settings, stores=world.stores(settings), workers=2)
    assert parallel.counts == full.counts
    assert parallel.keys == full.keys
    assert parallel.top_values == full.top_values


def test_details_lines_carry_every_compared_key(world: World, tmp_path: Path) -> None:
    drift = service_drift(world)
    f = drift.faces
    details = tmp_path / "drift.jsonl"
    report = world.audit(details=details, flag_key="is_assigned", map=MAP)
    lines = {line["face_id"]: line for line in map(json.loads, details.read_text().splitlines())}
    assert len(lines) == report.drifted == 19
    for line in lines.values():
        assert list(line["expected"]) == list(COMPARED)  # every key, None for absent
        assert set(line["actual"]) <= set(COMPARED) and line["keys"]
    merged = lines[f["U11b"].face_id]
    assert merged["kind"] == "payload_mismatch" and merged["keys"] == {"cluster_id": "wrong"}
    assert (merged["expected"]["cluster_id"], merged["actual"]["cluster_id"]) == ("u_10", "u_11")
    assert merged["expected"]["asset_id"] == merged["actual"]["asset_id"] == str(f["U11b"].asset_id)
    asset = lines[f["A3"].face_id]
    assert (
        asset["keys"] == {"asset_id": "wrong"} and asset["actual"]["asset_id"] == f["A3"].asset_id
    )
    quality = lines[f["A2"].face_id]
    assert quality["keys"] == {"quality_score": "stale"}
    assert quality["expected"]["quality_score"] is None and "quality_score" in quality["actual"]
    accepted = lines[f["U11a"].face_id]  # the person first, but every key is listed
    assert accepted["kind"] == "missing_person"
    assert accepted["keys"] == {
        "person_id": "missing",
        "is_assigned": "wrong",
        "cluster_id": "wrong",
    }


def test_sync_faces_syncs_the_cluster_and_touches_nothing_else(world: World) -> None:
    groups = unknown_groups(world, {"u_1": 1, "u_2": 2})
    moved, other = groups["u_2"]
    merge_clusters(world.conn, "u_1", "u_2")
    before = world.points()
    settings = mapped(world)

    report = sync_faces(world.stores(settings), [moved.face_id])

    assert report.tallies.verified == 1
    after = world.points()
    payload, vector = after[str(moved.point_id)]
    old_payload, old_vector = before[str(moved.point_id)]
    assert payload == {**old_payload, "cluster_id": "u_1"} and vector == old_vector
    assert after[str(other.point_id)] == before[str(other.point_id)]  # not given: left
    assert after[str(groups["u_1"][0].point_id)] == before[str(groups["u_1"][0].point_id)]


def test_fail_on_a_key_and_on_payload_mismatch(world: World) -> None:
    alice = world.person()
    assigned = world.service_face(None, cluster="u_1")
    world.service_face(None, cluster="u_2")
    world.conn.execute(
        "UPDATE face_instances SET person_id = %s WHERE id = %s", (alice, assigned.face_id)
    )

    def exit_code(fail_on: str) -> int:
        return cli(world, "audit", "--fail-on", fail_on).returncode

    # Only the person drifted (an accepted suggestion): neither fails.
    assert exit_code("key:cluster_id") == 0
    assert exit_code("payload_mismatch") == 0
    merge_clusters(world.conn, "u_1", "u_2")
    assert exit_code("key:cluster_id") == 1
    assert exit_code("payload_mismatch") == 1


def test_repair_fails_on_a_key_only_while_that_key_is_left(world: World) -> None:
    """After a repair, `key:NAME` counts the points still differing on that key."""
    alice = world.person()
    assigned = world.service_face(None, cluster="u_1")
    merged = world.service_face(None, cluster="u_2")
    world.conn.execute(
        "UPDATE face_instances SET person_id = %s WHERE id = %s", (alice, assigned.face_id)
    )
    merge_clusters(world.conn, "u_1", "u_2")  # `assigned` has a person now: not merged

    def repair(*args: str) -> int:
        return cli(world, "repair", "--yes", "--max-changes", "100%", *args).returncode

    # The dry run leaves both: the person on one face, the cluster on the other.
    assert repair("--dry-run", "--fail-on", "key:cluster_id") == 1
    assert repair("--dry-run", "--fail-on", "key:person_id") == 1
    # The application holds the merged face's row: its cluster is left, the person is not.
    app = psycopg.connect(world.url)
    try:
        app.execute("SELECT 1 FROM face_instances WHERE id = %s FOR UPDATE", (merged.face_id,))
        assert repair("--fail-on", "key:person_id") == 0
        assert repair("--fail-on", "key:cluster_id") == 1
    finally:
        app.close()
    assert repair("--fail-on", "key:cluster_id") == 0


def test_rows_held_with_different_keys_are_counted_per_key(world: World) -> None:
    """Two held rows whose points differ on different keys: each key counted once per point."""
    alice, bob = world.person(), world.person()
    moved = world.service_face(alice)
    deleted = world.service_face(bob, cluster="u_1")
    world.conn.execute(
        "UPDATE face_instances SET person_id = %s WHERE id = %s", (bob, moved.face_id)
    )
    world.conn.execute(
        "UPDATE face_instances SET person_id = NULL, cluster_id = 'u_2' WHERE id = %s",
        (deleted.face_id,),
    )
    app = psycopg.connect(world.url)
    try:
        app.execute(
            "SELECT 1 FROM face_instances WHERE id IN (%s, %s) FOR UPDATE",
            (moved.face_id, deleted.face_id),
        )
        result = cli(world, "repair", "--yes", "--max-changes", "100%", "--format", "json")
    finally:
        app.close()
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["skipped_locked"] == 2
    left = {key: n for key, n in report["remaining_keys"].items() if n}
    assert left == {"person_id": 2, "is_assigned": 1, "cluster_id": 1}


def test_map_in_a_config_file_and_bad_maps(world: World, tmp_path: Path) -> None:
    unknown_groups(world, {"u_1": 1, "u_2": 2})
    dismiss_cluster(world.conn, "u_2")
    config = tmp_path / "reconcile.toml"
    table = ", ".join(f'{key} = "{source}"' for key, source in MAP.items())
    config.write_text(f'flag_key = "is_assigned"\nmap = {{ {table} }}\n')
    result = run_cli("audit", "--config", str(config), "--format", "json", env=world.env())
    assert result.returncode == 1, result.stderr
    out = json.loads(result.stdout)
    assert out["counts"]["payload_mismatch"] == 2
    assert set(out["keys"]) == set(COMPARED)
    assert out["top_values"]["cluster_id"] == [{"value": "-1", "drifted": 2, "error": 0}]

    world.conn.execute("ALTER TABLE face_instances ADD COLUMN bool_col boolean")
    for bad, says in (
        ("cluster_id", "is not KEY=COLUMN"),
        ("person_id=person_id", "names the person key"),
        ("x=bool_col::text", "bool_col has type boolean"),
    ):
        refused = run_cli("audit", "--map", bad, env=world.env())
        assert refused.returncode == 2, (bad, refused.stderr)
        assert refused.stderr.count("\n") == 1, (bad, refused.stderr)
        assert says in refused.stderr and "Traceback" not in refused.stderr, bad


def _wait_until_blocked(pid: int, url: str) -> None:
    """Poll until backend `pid` waits on a lock: a condition, not a hopeful sleep."""
    with psycopg.connect(url, autocommit=True) as watcher:
        for _ in range(3000):
            row = watcher.execute(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)
            ).fetchone()
            if row is not None and row[0] == "Lock":
                return
            time.sleep(0.01)  # a poll interval, bounded by the loop
    raise AssertionError("the application's UPDATE never waited for the repair's lock")


@pytest.mark.parametrize("locking", [True, False], ids=["locked", "unlocked"])
def test_a_cluster_write_during_repair_is_not_overwritten(world: World, locking: bool) -> None:
    """Between recheck and write the service relabels the face on another connection.

    With the row lock its UPDATE waits, writes Qdrant after the repair, and the stores
    agree; with locking off the repair writes the older label over it: the test can
    tell, so the lock is what keeps a mapped key safe.
    """
    groups = unknown_groups(world, {"u_1": 1, "u_2": 1})
    (face,) = groups["u_2"]
    merge_clusters(world.conn, "u_1", "u_2")  # the repair will write u_1
    app = psycopg.connect(world.url)
    client = world.client
    assert client is not None

    def service_relabels() -> None:
        app.execute(
            "UPDATE face_instances SET cluster_id = 'u_9', updated_at = now() WHERE id = %s",
            (face.face_id,),
        )
        app.commit()
        client.set_payload("faces", {"cluster_id": "u_9"}, [face.point_id])

    writer = threading.Thread(target=service_relabels)

    def between_recheck_and_write(point_ids: list[Any]) -> None:
        assert point_ids == [face.point_id]
        writer.start()
        if locking:
            _wait_until_blocked(app.info.backend_pid, world.url)
        else:
            writer.join()

    try:
        world.repair(
            mapped(world),
            hooks=Hooks(
                before_write=between_recheck_and_write,
                lock=LockMode.SKIP_LOCKED if locking else LockMode.NONE,
            ),
        )
        writer.join(timeout=60)
        assert not writer.is_alive()
    finally:
        app.close()
    final = world.payload(face.point_id)
    if locking:
        assert final == {**face.payload(), "cluster_id": "u_9"}
        assert mapped_drift(world) == 0
    else:
        assert final["cluster_id"] == "u_1"  # the stale overwrite the lock prevents


def mapped_drift(world: World) -> int:
    return world.audit(flag_key="is_assigned", map=MAP).drifted
