"""Journal retention after a repair, and `reconcile journals`, run as the CLI (issue 12).

Every run here has XDG_STATE_HOME in the test's own directory: the default
journal place is exercised without touching the real home.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reconcile.journal import JournalWriter
from tests.helpers import run_cli, run_repair
from tests.world import World

KEYS = {"person": "person_id", "flag": "is_assigned"}


def old_journal(path: Path, days: float, collection: str = "faces") -> Path:
    """A journal written by the real writer, as if its repair started `days` ago."""
    started = datetime.now(UTC) - timedelta(days=days)
    header = {
        "table": "face_instances",
        "collection": collection,
        "keys": KEYS,
        "started": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    JournalWriter(path, header).close()
    return path


def state(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    directory = tmp_path / "state"
    return directory / "reconcile", {"XDG_STATE_HOME": str(directory)}


def drift(world: World, n: int = 2) -> None:
    person = world.person()
    for _ in range(n):
        world.face(person, payload={"is_assigned": False})


def test_a_successful_repair_deletes_its_old_journals_and_says_how_many(
    world: World, tmp_path: Path
) -> None:
    journals, xdg = state(tmp_path)
    journals.mkdir(parents=True)
    expired = old_journal(journals / "repair-a.jsonl", days=40)
    recent = old_journal(journals / "repair-b.jsonl", days=20)
    other = old_journal(journals / "repair-c.jsonl", days=400, collection="other")
    stranger = journals / "repair-notes.jsonl"  # named like one, but not a journal
    stranger.write_text('{"note": "mine"}\n')
    drift(world)
    env = {**world.env(), **xdg}
    args = ["--flag-key", "is_assigned", "--max-changes", "100%", "--journal-retention", "30d"]

    result = run_cli("repair", "--yes", *args, "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["journals_deleted"] == 1
    assert not expired.exists()
    assert recent.exists() and other.exists() and stranger.exists()
    assert Path(report["journal"]).exists() and Path(report["journal"]).parent == journals

    # Nothing to repair still retires what expired; the table says so in one line.
    old_journal(journals / "repair-d.jsonl", days=31)
    table = run_cli("repair", "--yes", *args, env=env)
    assert table.returncode == 0, table.stderr
    assert "old journals deleted (past --journal-retention): 1" in table.stdout
    assert not (journals / "repair-d.jsonl").exists()


def test_dry_runs_failed_runs_and_off_keep_every_journal(world: World, tmp_path: Path) -> None:
    journals, xdg = state(tmp_path)
    journals.mkdir(parents=True)
    expired = old_journal(journals / "repair-a.jsonl", days=400)
    drift(world)
    env = {**world.env(), **xdg}
    base = ["--flag-key", "is_assigned", "--format", "json"]

    dry = run_cli("repair", "--dry-run", *base, env=env)
    assert dry.returncode == 1 and json.loads(dry.stdout)["journals_deleted"] == 0
    guarded = run_cli("repair", "--yes", *base, "--max-changes", "1", env=env)
    assert guarded.returncode == 4  # refused: not a successful run
    off = run_cli(
        "repair", "--yes", *base, "--max-changes", "100%", "--journal-retention", "off", env=env
    )
    assert off.returncode == 0, off.stderr
    assert json.loads(off.stdout)["journals_deleted"] == 0
    assert expired.exists()
    # The default, 90 days, applies when the flag is not given.
    world.reopen()
    drift(world)
    env = {**world.env(), **xdg}  # the CLI needs local mode's directory to itself
    default = run_cli("repair", "--yes", *base, "--max-changes", "100%", env=env)
    assert default.returncode == 0, default.stderr
    assert json.loads(default.stdout)["journals_deleted"] == 1 and not expired.exists()


@pytest.mark.parametrize("spec", ["0", "30", "thirty", "-1d"])
def test_a_bad_retention_is_one_line_exit_2(world: World, spec: str) -> None:
    result = run_cli("repair", "--dry-run", "--journal-retention", spec, env=world.env())
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith(f"reconcile: error: --journal-retention {spec!r}")


def test_journals_lists_time_table_collection_points_and_undone(
    world: World, tmp_path: Path
) -> None:
    journals, xdg = state(tmp_path)
    drift(world, 3)
    env = {**world.env(), **xdg}
    args = ["--flag-key", "is_assigned", "--max-changes", "100%"]
    first = run_cli("repair", "--yes", *args, "--format", "json", env=env)
    assert first.returncode == 0, first.stderr
    undone_path = json.loads(first.stdout)["journal"]
    world.reopen()
    drift(world, 2)
    env = {**world.env(), **xdg}  # the CLI needs local mode's directory to itself
    second = run_cli("repair", "--yes", *args, "--format", "json", env=env)
    kept_path = json.loads(second.stdout)["journal"]
    assert run_cli("undo", undone_path, "--yes", env=env).returncode == 0
    (journals / "repair-zz-broken.jsonl").write_text("\x00\x01 not a header\n")

    listed = run_cli("journals", "--format", "json", env=env)
    assert listed.returncode == 0, listed.stderr
    data = json.loads(listed.stdout)
    assert data["directory"] == str(journals) and data["damaged"] == 1
    by_path = {entry["path"]: entry for entry in data["journals"]}
    assert (by_path[undone_path]["points"], by_path[undone_path]["undone"]) == (3, "yes")
    assert (by_path[kept_path]["points"], by_path[kept_path]["undone"]) == (2, "no")
    assert by_path[kept_path]["table"] == "face_instances"
    assert by_path[kept_path]["collection"] == "faces"
    assert by_path[kept_path]["started"] is not None
    broken = by_path[str(journals / "repair-zz-broken.jsonl")]
    assert broken["status"] == "damaged" and broken["error"]

    table = run_cli("journals", env=env)
    assert table.returncode == 0 and "Traceback" not in table.stderr
    assert "face_instances" in table.stdout and "damaged" in table.stdout
    assert Path(undone_path).name in table.stdout

    elsewhere = run_cli("journals", "--dir", str(tmp_path / "nothing"), env=env)
    assert elsewhere.returncode == 0 and "no journals in" in elsewhere.stdout


def test_journals_dir_that_is_a_file_is_one_line_exit_2(tmp_path: Path) -> None:
    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    result = run_cli("journals", "--dir", str(a_file))
    assert result.returncode == 2
    assert result.stderr.strip() == f"reconcile: error: {a_file} is not a directory: " + (
        "pass the journals' directory"
    )


def test_the_library_repair_retires_journals_in_its_journals_directory(world: World) -> None:
    directory = world.qdrant_dir.parent
    expired = old_journal(directory / "repair-old.jsonl", days=100)
    drift(world)
    report = run_repair(world, journal=directory / "new.jsonl")
    assert report.journals_deleted == 1 and not expired.exists()
    assert report.to_json()["journals_deleted"] == 1
