"""Running unattended: the run lock, the grace window, the time box, --fail-on, JSON logs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import psycopg

from reconcile.ops.audit import audit
from reconcile.ops.repair import repair
from reconcile.plan import RepairOptions
from tests.helpers import run_cli
from tests.world import World

LOCK = "reconcile:face_instances:faces:all"


def test_a_second_run_exits_5_naming_the_holder_before_opening_qdrant(world: World) -> None:
    world.face(world.person(), payload={})
    env = {"DATABASE_URL": world.url, "QDRANT_PATH": str(world.qdrant_dir)}
    # The world's own Qdrant client stays open: a run that opened the local-mode
    # directory would fail with exit 3; exit 5 shows the lock came first.
    with psycopg.connect(world.url, autocommit=True) as holder:
        holder.execute("SET application_name = 'reconcile pid=4242'")
        holder.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (LOCK,))
        result = run_cli("repair", "--yes", "--max-changes", "100%", env=env)
        locked_audit = run_cli("audit", "--lock", env=env)
    assert result.returncode == 5, result.stderr
    assert "reconcile pid=4242" in result.stderr and "since" in result.stderr
    assert locked_audit.returncode == 5
    world.release()
    free = run_cli("repair", "--yes", "--max-changes", "100%", env=env)
    assert free.returncode == 0, free.stderr


def test_grace_window_skips_a_row_updated_a_moment_ago(world: World) -> None:
    p = world.person()
    fresh = world.face(p, payload={})
    settled = world.face(p, payload={})
    world.conn.execute(
        "UPDATE face_instances SET updated_at = now() - interval '1 hour' "
        "WHERE qdrant_point_id = %s",
        (settled,),
    )
    report = world.audit(min_age=600)
    assert report.skipped_recent == 1 and report.counts["missing_person"] == 1
    s = world.settings(min_age=600)
    repaired = repair(
        s,
        RepairOptions(max_changes="100%", journal=world.qdrant_dir.parent / "j.jsonl"),
        stores=world.stores(s),
    )
    assert repaired.tallies.applied == 1
    assert "person_id" not in world.payload(fresh)  # an in-flight write is not "fixed"
    assert world.payload(settled)["person_id"] == p


def test_time_box_ends_early_with_complete_false(world: World) -> None:
    p = world.person()
    for _ in range(30):
        world.face(p, payload={})
    s = world.settings(page_size=5)
    report = audit(s, stores=world.stores(s), deadline=time.monotonic() - 1)
    assert report.complete is False and report.drifted < 30
    assert report.to_json()["complete"] is False
    result = run_cli(
        "repair",
        "--yes",
        "--max-changes",
        "100%",
        "--max-duration",
        "0.001",
        "--format",
        "json",
        env=world.env(),
    )
    data = json.loads(result.stdout)
    assert result.returncode == 1 and data["complete"] is False


def test_fail_on_chooses_the_exit_code(world: World) -> None:
    world.face(world.person())
    world.face(row=False, payload={})  # a known backlog of orphans
    env = world.env()
    assert run_cli("audit", env=env).returncode == 1
    assert run_cli("audit", "--fail-on", "missing_person,wrong_person", env=env).returncode == 0
    assert run_cli("audit", "--fail-on", "orphan_point", env=env).returncode == 1
    bad = run_cli("audit", "--fail-on", "orphans", env=env)
    assert bad.returncode == 2 and "orphans is not a drift kind" in bad.stderr


def test_json_logs_and_quiet(world: World) -> None:
    world.face(world.person())
    env = world.env()
    result = run_cli("audit", "--log-format", "json", "--format", "json", env=env)
    (line,) = result.stderr.strip().splitlines()
    event = json.loads(line)
    assert event["event"] == "audit.finished" and event["level"] == "info"
    assert event["drifted"] == 0 and "timestamp" in event
    quiet = run_cli("audit", "--log-format", "json", "--quiet", env=env)
    assert quiet.stderr == ""
    failing = run_cli("audit", "--log-format", "json", "--table", "nope", env=env)
    error = json.loads(failing.stderr.strip())
    assert error["level"] == "error" and "nope" in error["message"] and error["exit_code"] == 2


def test_metrics_file_parsed_back(world: World, tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    world.face(world.person(), payload={})
    env = world.env()
    metrics = tmp_path / "reconcile.prom"
    run_cli("repair", "--yes", "--max-changes", "100%", "--metrics-file", str(metrics), env=env)
    families = {f.name: f for f in text_string_to_metric_families(metrics.read_text())}
    repaired = families["reconcile_points_repaired"].samples[0]
    assert repaired.value == 1 and repaired.labels["command"] == "repair"
    drift = {s.labels["kind"]: s.value for s in families["reconcile_drift_points"].samples}
    assert drift["missing_person"] == 1
    success = families["reconcile_last_success_timestamp_seconds"].samples[0].value

    broken = {**env, "QDRANT_PATH": str(tmp_path / "no-such-store")}
    failed = run_cli("repair", "--yes", "--metrics-file", str(metrics), env=broken)
    assert failed.returncode == 2
    families = {f.name: f for f in text_string_to_metric_families(metrics.read_text())}
    assert families["reconcile_exit_code"].samples[0].value == 2
    assert families["reconcile_last_success_timestamp_seconds"].samples[0].value == success
