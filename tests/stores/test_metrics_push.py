"""`--metrics-push`: the metrics of shards and scopes, pushed to the real Pushgateway.

A pod's files die with it and node_exporter cannot see them, so a batch job pushes.
Each run's group is keyed by every run label, so the two shards of one job and the
incremental and full runs of one table never replace each other's metrics.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import (
    free_port,
    http_get,
    repair_cli,
    require_program,
    run_cli,
    serving,
    start_cli,
)
from tests.world import World


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[str]:
    """A Pushgateway on a free loopback port, persistence off."""
    program = require_program("prometheus-pushgateway", "prometheus-pushgateway")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # Debian's build persists to /var/lib/prometheus by default: off, or tests would share it.
    argv = [program, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file="]
    with serving(argv, f"{url}/-/ready", tmp_path / "pushgateway.log"):
        yield url


def pushed(url: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample of `name` the gateway serves, with its labels."""
    return [
        (s.labels, s.value)
        for family in text_string_to_metric_families(http_get(f"{url}/metrics"))
        for s in family.samples
        if s.name == name
    ]


STARTED = "reconcile_run_started_timestamp_seconds"
LAST_RUN = "reconcile_last_run_timestamp_seconds"


def parse(text: str) -> dict[str, float]:
    """A textfile's samples by name (and kind), for one run's file."""
    return {
        " ".join([s.name, *([s.labels["kind"]] if "kind" in s.labels else [])]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def by_run(url: str, name: str) -> dict[str, float]:
    """The samples of `name` by run: `command shard scope`."""
    return {
        f"{labels['command']} {labels['shard']} {labels['scope']}": value
        for labels, value in pushed(url, name)
    }


def repair(world: World, tmp_path: Path, gateway: str, *scope: str) -> int:
    journal = tmp_path / f"journal-{'-'.join(scope).replace('/', '_')}.jsonl"
    result = repair_cli(journal, "--metrics-push", gateway, *scope, env=world.env())
    assert result.stderr.count("\n") <= 1, result.stderr
    return result.returncode


def test_two_shards_and_two_scopes_each_have_a_group_of_their_own(
    world: World, tmp_path: Path, gateway: str
) -> None:
    person = world.person()
    for _ in range(6):
        world.face(person, payload={})
    runs = [("--shard", "1/2"), ("--shard", "2/2"), ("--incremental", str(tmp_path / "s.json"))]
    for scope in [*runs, ()]:
        assert repair(world, tmp_path, gateway, *scope) == 0

    exits = pushed(gateway, "reconcile_exit_code")
    groups = Counter((labels["shard"], labels["scope"]) for labels, _ in exits)
    assert groups == {
        ("1/2", "shard"): 1,
        ("2/2", "shard"): 1,
        ("all", "incremental"): 1,
        ("all", "full"): 1,
    }
    for labels, value in exits:
        assert value == 0
        assert labels["job"] == "reconcile" and labels["command"] == "repair"
        assert (labels["table"], labels["collection"]) == ("face_instances", "faces")
    # The shards split the six faces between them; the runs after them found none left.
    repaired = by_run(gateway, "reconcile_points_repaired")
    assert repaired["repair 1/2 shard"] + repaired["repair 2/2 shard"] == 6
    assert repaired["repair all incremental"] == repaired["repair all full"] == 0
    started = by_run(gateway, "reconcile_run_started_timestamp_seconds")
    ended = by_run(gateway, "reconcile_last_run_timestamp_seconds")
    assert started.keys() == ended.keys() and len(started) == 4
    assert all(started[run] <= ended[run] for run in started)


def test_a_failed_run_carries_the_groups_last_success_over(
    world: World, tmp_path: Path, gateway: str
) -> None:
    world.face(world.person())
    assert repair(world, tmp_path, gateway) == 0
    ((_, success),) = pushed(gateway, "reconcile_last_success_timestamp_seconds")
    broken = {**world.env(), "QDRANT_PATH": str(tmp_path / "no-such-store")}
    failed = run_cli("audit", "--metrics-push", gateway, env=broken)
    assert failed.returncode == 2
    repaired_again = run_cli("repair", "--yes", "--metrics-push", gateway, env=broken)
    assert repaired_again.returncode == 2
    exits = by_run(gateway, "reconcile_exit_code")
    assert exits == {"repair all full": 2, "audit all full": 2}
    successes = by_run(gateway, "reconcile_last_success_timestamp_seconds")
    assert successes == {"repair all full": success}  # the audit never succeeded
    # What the failed run could not measure is not left over from the last one either.
    assert pushed(gateway, "reconcile_points_repaired") == []


def test_a_run_that_is_still_going_shows_its_start(
    world: World, tmp_path: Path, gateway: str
) -> None:
    """The test locks the table, so the run blocks in its scan: mid-run, the group and the
    file already say it started, after the last run ended, beside the last run's values."""
    world.face(world.person(), payload={})
    env = world.env()
    metrics = tmp_path / "reconcile.prom"
    args = ["audit", "--metrics-file", str(metrics), "--metrics-push", gateway]
    assert run_cli(*args, env=env).returncode == 1
    first_end = by_run(gateway, LAST_RUN)["audit all full"]

    with psycopg.connect(world.url) as blocker:
        blocker.execute("LOCK TABLE face_instances IN ACCESS EXCLUSIVE MODE")
        process = start_cli(*args, env=env)
        try:
            deadline = time.monotonic() + 60
            while by_run(gateway, STARTED)["audit all full"] <= first_end:
                assert process.poll() is None, process.communicate()[1]
                assert time.monotonic() < deadline, "the run never said it started"
                time.sleep(0.05)  # a poll interval, bounded by the deadline
            started = by_run(gateway, STARTED)["audit all full"]
            in_file = parse(metrics.read_text(encoding="utf-8"))
            assert process.poll() is None  # still blocked: this is the view of a run going on
        finally:
            blocker.rollback()
        _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1, stderr
    assert in_file[STARTED] == started > in_file[LAST_RUN] == first_end
    assert in_file["reconcile_drift_points missing_person"] == 1  # the last run's, kept
    assert by_run(gateway, LAST_RUN)["audit all full"] >= started
    assert parse(metrics.read_text(encoding="utf-8"))[STARTED] == started


def test_an_unreachable_gateway_costs_one_warning_not_the_exit_code(world: World) -> None:
    world.face(world.person(), payload={})
    down = f"http://127.0.0.1:{free_port()}"
    result = run_cli("audit", "--metrics-push", down, env=world.env())
    assert result.returncode == 1  # the drift, as without --metrics-push
    (line,) = result.stderr.splitlines()[:-1] or [""]  # the last line is audit.finished
    assert "warning metrics.push_failed" in line and down in line
    assert result.stderr.count("metrics.push_failed") == 1


@pytest.mark.parametrize("url", ["not a url", "ftp://gateway:9091"])
def test_a_bad_gateway_url_is_exit_2_in_one_line(world: World, tmp_path: Path, url: str) -> None:
    metrics = tmp_path / "reconcile.prom"
    result = run_cli(
        "audit", "--metrics-push", url, "--metrics-file", str(metrics), env=world.env()
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "--metrics-push" in result.stderr
    assert "http://HOST:9091" in result.stderr and "Traceback" not in result.stderr
