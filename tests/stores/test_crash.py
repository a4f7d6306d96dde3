"""Signals and kill -9 during repair: whole journal lines, no half-done batch, reruns finish."""

from __future__ import annotations

import json
from pathlib import Path

from reconcile.ops.undo import undo
from tests.helpers import run_cli, snapshot
from tests.world import World

# The CLI with a kill point (fault injection: tests/crashing.py).
CRASHING = "tests.crashing"
ARGS = ["--flag-key", "is_assigned", "--yes", "--max-changes", "100%", "--batch-size", "3"]


def drift(world: World, n: int = 12) -> None:
    p, q = world.person(), world.person()
    for i in range(n):
        if i % 3 == 0:
            world.face(None, payload={"person_id": q, "is_assigned": True})
        else:
            world.face(p, payload={"is_assigned": False})


def journal_records(path: Path) -> list[dict[str, object]]:
    """Every line is JSON except at most a torn last one."""
    lines = path.read_text().splitlines()
    records = []
    for n, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except ValueError:
            assert n == len(lines) - 1, f"line {n + 1} of {path} is torn but not the last"
    return records


def test_sigterm_finishes_the_batch_in_flight_then_stops(world: World, tmp_path: Path) -> None:
    drift(world)
    env = world.env()
    journal = tmp_path / "term.jsonl"
    stopped = run_cli(
        "repair",
        *ARGS,
        "--journal",
        str(journal),
        "--format",
        "json",
        env={**env, "RECONCILE_TEST_KILL_AT": "2:before-write=SIGTERM"},
        module=CRASHING,
    )
    assert stopped.returncode == 143, stopped.stderr
    report = json.loads(stopped.stdout)
    assert report["complete"] is False and report["interrupted"] == "SIGTERM"
    assert report["applied"] == 6  # batches 1 and 2: the one in flight was finished
    assert sum(report["remaining"].values()) == 6
    outcomes = [r for r in journal_records(journal) if r["type"] == "outcome"]
    assert len(outcomes) == 2

    rest = run_cli("repair", *ARGS, "--journal", str(tmp_path / "rest.jsonl"), env=env)
    assert rest.returncode == 0, rest.stderr
    assert "applied 6" in rest.stdout


def test_a_second_ctrl_c_stops_at_once_and_says_what_was_written_and_where(
    world: World, tmp_path: Path
) -> None:
    drift(world)
    journal = tmp_path / "twice.jsonl"
    stopped = run_cli(
        "repair",
        *ARGS,
        "--journal",
        str(journal),
        # Ctrl-C twice as batch 2 is journaled: batch 1 (3 points) was written.
        env={**world.env(), "RECONCILE_TEST_KILL_AT": "2:before-write=SIGINT+SIGINT"},
        module=CRASHING,
    )
    assert stopped.returncode == 130, stopped.stderr
    assert f"3 points were written (journal: {journal})" in stopped.stderr
    assert "nothing was half-written" in stopped.stderr


def test_sigint_before_writing_stops_at_once(world: World, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    drift(world)
    # SIGINT as the plan is confirmed on a terminal: nothing has been written yet.
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reconcile",
            "repair",
            "--flag-key",
            "is_assigned",
            "--max-changes",
            "100%",
            "--journal",
            str(tmp_path / "j.jsonl"),
        ],
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **world.env()},
    )
    os.close(slave)
    err = ""
    assert proc.stderr is not None
    while "Apply this plan?" not in err:  # wait for the question: a condition, not a timer
        chunk = proc.stderr.read(1)
        assert chunk, err
        err += chunk
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    os.close(master)
    assert proc.returncode == 130
    assert not (tmp_path / "j.jsonl").exists()


def test_kill_9_again_and_again_loses_nothing(world: World, tmp_path: Path) -> None:
    """Killed at a fixed batch and phase each time; then a rerun, then undo of everything."""
    drift(world, 30)
    client = world.client
    original = snapshot(client)
    env = world.env()
    journals = []
    for run, point in enumerate(
        ["1:before-write", "1:after-write", "2:before-write", "1:after-write", "2:after-write"]
    ):
        journal = tmp_path / f"kill-{run}.jsonl"
        result = run_cli(
            "repair",
            *ARGS,
            "--journal",
            str(journal),
            env={**env, "RECONCILE_TEST_KILL_AT": point},
            module=CRASHING,
        )
        assert result.returncode == -9, result.stderr
        records = journal_records(journal)
        assert records[0]["type"] == "header"
        journals.append(journal)

    final = run_cli(
        "repair", *ARGS, "--journal", str(tmp_path / "final.jsonl"), "--format", "json", env=env
    )
    assert final.returncode == 0, final.stderr
    assert json.loads(final.stdout)["applied"] > 0  # the kills left work to finish
    journals.append(tmp_path / "final.jsonl")
    audit = run_cli("audit", "--flag-key", "is_assigned", "--format", "json", env=env)
    assert json.loads(audit.stdout)["repairable"] == 0

    world.reopen()
    s = world.settings(flag_key="is_assigned")
    for journal in reversed(journals):
        result = undo(s, journal, stores=world.stores(s))
        assert result.conflicts == 0 and result.failed == 0
    assert snapshot(world.client) == original
