"""Every command that reaches the stores logs what it did, as JSON lines with --log-format json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import run_cli
from tests.world import World


@pytest.mark.parametrize(
    ("args", "event"),
    [
        (["check"], "check.finished"),
        (["audit"], "audit.finished"),
        (["audit", "--counts"], "audit.counts.finished"),
        (["audit", "--sample", "3", "--seed", "1"], "audit.sample.finished"),
        (["repair", "--dry-run"], "repair.finished"),
    ],
)
def test_a_command_logs_its_end_as_one_json_line(
    world: World, tmp_path: Path, args: list[str], event: str
) -> None:
    person = world.person()
    world.face(person)
    world.face(person, payload={"is_assigned": True})
    done = run_cli(*args, "--flag-key", "is_assigned", "--log-format", "json", env=world.env())
    assert done.returncode in (0, 1), done.stderr
    records = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    assert [r["event"] for r in records] == [event]
    assert records[0]["level"] == "info" and "timestamp" in records[0]


@pytest.mark.parametrize("command", ["check", "audit"])
def test_quiet_leaves_stderr_empty(world: World, command: str) -> None:
    world.face(world.person())
    done = run_cli(command, "--quiet", env=world.env())
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
