"""What a user sees of the mapped keys: the CLI's tables, its JSON, its metrics file.

The world is the service's cluster bugs in small: two unknown-person groups merged in
PostgreSQL only, a group dismissed as noise, faces whose cluster was cleared, next to
one face whose person drifted.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import require_program, run_cli
from tests.world import World

MAP = ["--flag-key", "is_assigned", "--map", "cluster_id=cluster_id"]
MAP += ["--map", "asset_id=asset_id::text"]


def promtool_check_metrics(text: str) -> str:
    """What `promtool check metrics` says of a textfile: "" when it has no complaint."""
    promtool = require_program("promtool", "prometheus")
    done = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def clustered(world: World, cluster: str | None, person: str | None = None) -> int | str:
    """A face whose row and payload both hold `cluster` (the service's write)."""
    point = world.face(person)
    world.conn.execute(
        "UPDATE face_instances SET cluster_id = %s WHERE qdrant_point_id = %s", (cluster, point)
    )
    if cluster is not None:
        world.upsert(point, {**world.payload(point), "cluster_id": cluster})
    return point


def cluster_bugs(world: World) -> str:
    """The three cluster_id bugs; returns the person whose face drifted too."""
    person = world.person()
    for _ in range(5):
        clustered(world, "u_1")
    for _ in range(4):
        clustered(world, "u_2")
    for _ in range(3):
        clustered(world, "u_3")
    cleared = [clustered(world, "u_9") for _ in range(2)]
    clustered(world, "c_7", person)  # in sync
    drifted = clustered(world, "c_7", person)
    sql = world.conn.execute
    # Merge u_2 into u_1, dismiss u_3 as noise: 4 + 3 faces in the wrong group.
    sql(
        "UPDATE face_instances SET cluster_id = 'u_1' "
        "WHERE cluster_id = 'u_2' AND person_id IS NULL"
    )
    sql("UPDATE face_instances SET cluster_id = '-1' WHERE cluster_id = 'u_3'")
    # The clustering job cleared two labels: their payloads keep u_9 (stale).
    sql("UPDATE face_instances SET cluster_id = NULL WHERE qdrant_point_id = ANY(%s)", (cleared,))
    # And a person drift beside them: the face moved to nobody in PostgreSQL only.
    sql("UPDATE face_instances SET person_id = NULL WHERE qdrant_point_id = %s", (drifted,))
    return person


def table_row(text: str, *cells: str) -> bool:
    """Whether `text` has a table row with exactly these cells, in this order."""
    pattern = r"^│ " + r"\s+│\s+".join(re.escape(c) for c in cells) + r"\s+│$"
    return re.search(pattern, text, re.MULTILINE) is not None


def test_the_audit_table_shows_drift_by_key_and_the_most_drifted_clusters(world: World) -> None:
    cluster_bugs(world)
    env = world.env()
    done = run_cli("audit", *MAP, env=env)
    assert done.returncode == 1, done.stderr
    out = done.stdout
    # The merged and dismissed faces have no person: payload_mismatch, 7 + 2 stale.
    assert re.search(r"^│ payload_mismatch\s+│\s+9 │ payload write", out, re.MULTILINE), out
    assert "Drift by payload key" in out
    assert table_row(out, "person_id", "0", "0", "1")
    assert table_row(out, "is_assigned", "0", "1", "0")
    assert table_row(out, "cluster_id", "0", "7", "2")
    assert table_row(out, "asset_id", "0", "0", "0")
    # Wrong faces are charged to the group they now belong to, stale ones to the
    # group their payload still names.
    values = out.split("cluster_id: the values with the most drifted points", 1)[1]
    assert table_row(values, "u_1", "4")
    assert table_row(values, "-1", "3")
    assert table_row(values, "u_9", "2")
    assert values.index("u_1") < values.index("-1") < values.index("u_9")
    assert "asset_id: the values" not in out  # no asset_id drifted: no table for it

    # Without --map the key table would repeat the kinds table: not shown.
    plain = run_cli("audit", "--flag-key", "is_assigned", env=env)
    assert plain.returncode == 1, plain.stderr
    assert "Drift by payload key" not in plain.stdout
    assert "the values with the most" not in plain.stdout


def test_the_json_and_the_details_carry_every_compared_key(world: World, tmp_path: Path) -> None:
    person = cluster_bugs(world)
    details = tmp_path / "details.jsonl"
    done = run_cli("audit", *MAP, "--format", "json", "--details", str(details), env=world.env())
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["counts"]["payload_mismatch"] == 9
    assert report["counts"]["stale_person"] == 1
    assert report["keys"] == {
        "person_id": {"missing": 0, "wrong": 0, "stale": 1},
        "is_assigned": {"missing": 0, "wrong": 1, "stale": 0},
        "cluster_id": {"missing": 0, "wrong": 7, "stale": 2},
        "asset_id": {"missing": 0, "wrong": 0, "stale": 0},
    }
    assert report["top_values"] == {
        "cluster_id": [
            {"value": "u_1", "drifted": 4, "error": 0},
            {"value": "-1", "drifted": 3, "error": 0},
            {"value": "u_9", "drifted": 2, "error": 0},
        ],
        "asset_id": [],
    }
    assert report["top_persons"] == [{"person_id": person, "drifted": 1, "error": 0}]

    lines = [json.loads(line) for line in details.read_text().splitlines()]
    by_kind = {line["kind"]: line for line in lines}
    stale = by_kind["stale_person"]
    assert stale["keys"] == {"person_id": "stale", "is_assigned": "wrong"}
    assert stale["expected"] == {
        "person_id": None,
        "is_assigned": False,
        "cluster_id": "c_7",
        "asset_id": "1",
    }
    assert set(stale["actual"]) == {"person_id", "is_assigned", "cluster_id", "asset_id"}
    noise = [line for line in lines if line["expected"]["cluster_id"] == "-1"]
    assert len(noise) == 3
    assert all(line["keys"] == {"cluster_id": "wrong"} for line in noise)
    assert all(line["actual"]["cluster_id"] == "u_3" for line in noise)


def test_the_dry_run_shows_the_plan_per_key(world: World) -> None:
    cluster_bugs(world)
    done = run_cli("repair", "--dry-run", *MAP, env=world.env())
    assert done.returncode == 1, done.stderr
    out = done.stdout
    assert "Repair plan by payload key" in out
    assert table_row(out, "cluster_id", "7", "2")  # 7 set, 2 cleared
    assert table_row(out, "person_id", "0", "1")
    assert table_row(out, "asset_id", "0", "0")
    assert "fix the flag on 0, fix only mapped keys on 9;" in out

    as_json = run_cli("repair", "--dry-run", *MAP, "--format", "json", env=world.env())
    planned = json.loads(as_json.stdout)["planned"]
    assert planned["set_payload"] == 9
    assert planned["keys"]["cluster_id"] == {"set": 7, "clear": 2}


def test_the_metrics_file_has_one_series_per_key_and_sub_kind(world: World, tmp_path: Path) -> None:
    cluster_bugs(world)
    metrics = tmp_path / "reconcile.prom"
    done = run_cli("audit", *MAP, "--metrics-file", str(metrics), "--quiet", env=world.env())
    assert done.returncode == 1, done.stderr
    text = metrics.read_text()
    series = {
        (s.labels["key"], s.labels["sub_kind"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "reconcile_key_drift_points"
    }
    keys = ("person_id", "is_assigned", "cluster_id", "asset_id")
    assert set(series) == {(k, sub) for k in keys for sub in ("missing", "wrong", "stale")}
    assert series[("cluster_id", "wrong")] == 7
    assert series[("cluster_id", "stale")] == 2
    assert series[("asset_id", "wrong")] == 0  # zeros are written, not left out
    kinds = {
        s.labels["kind"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "reconcile_drift_points"
    }
    assert kinds["payload_mismatch"] == 9
    # Prometheus' own linter accepts the file as node_exporter would serve it.
    assert promtool_check_metrics(text) == ""
