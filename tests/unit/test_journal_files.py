"""Journals on disk: retention parsing, pruning only real journals, the listing, undo marks.

Files only, in the test's own directory: no store, no process.
"""

from __future__ import annotations

import dataclasses
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reconcile.errors import ConfigError
from reconcile.journal import JournalReader, JournalWriter, mark_undone, state_dir
from reconcile.ops.journals import list_journals, prune_journals
from reconcile.ops.undo import journal_settings
from reconcile.plan import RepairOptions, parse_retention
from reconcile.settings import Settings

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
KEYS = {"person": "person_id", "flag": "is_assigned"}


def journal(
    path: Path,
    *,
    age: timedelta = timedelta(days=100),
    table: str = "face_instances",
    collection: str = "faces",
    points: int = 2,
) -> Path:
    """A journal as repair writes it, started `age` before NOW."""
    started = (NOW - age).strftime("%Y-%m-%dT%H:%M:%SZ")
    header = {"table": table, "collection": collection, "keys": KEYS, "started": started}
    writer = JournalWriter(path, header)
    changes = [
        {"point_id": f"p{i}", "face_id": i, "before": {}, "after": {"person_id": "x"}}
        for i in range(points)
    ]
    writer.changes(1, changes)
    writer.outcome(1, applied=points, failed=0, error=None)
    writer.close()
    return path


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        (" 2w ", timedelta(weeks=2)),
        ("90m", timedelta(minutes=90)),
        ("off", None),
        ("OFF", None),
    ],
)
def test_retention_parses_durations_and_off(spec: str, expected: timedelta | None) -> None:
    assert parse_retention(spec) == expected


@pytest.mark.parametrize("spec", ["0", "0d", "", "30", "thirty days", "-1d", "1y", "never"])
def test_retention_refuses_anything_else_in_one_line(spec: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_retention(spec)
    message = str(caught.value)
    assert "\n" not in message
    assert f"--journal-retention {spec!r}" in message and "off to keep" in message


def test_the_library_refuses_a_retention_of_nothing() -> None:
    assert RepairOptions().journal_retention == timedelta(days=90)
    with pytest.raises(ConfigError, match="--journal-retention"):
        RepairOptions(journal_retention=timedelta(0))


def test_prune_deletes_only_old_journals_of_the_same_table_and_collection(
    tmp_path: Path,
) -> None:
    old = journal(tmp_path / "repair-old.jsonl")
    fresh = journal(tmp_path / "repair-fresh.jsonl", age=timedelta(days=10))
    other_collection = journal(tmp_path / "repair-c.jsonl", collection="other")
    other_table = journal(tmp_path / "repair-t.jsonl", table="public.faces2")
    kept = journal(tmp_path / "repair-kept.jsonl")  # the run's own journal, however old
    named = journal(tmp_path / "mine.jsonl")  # a journal by its header, whatever its name
    # Not journals, whatever their names or ages: never deleted.
    details = tmp_path / "repair-details.jsonl"
    details.write_text('{"kind": "missing_person", "point_id": "p"}\n')
    notes = tmp_path / "notes.txt"
    notes.write_text(old.read_text())  # a journal's text, but not a *.jsonl file
    outside = journal(tmp_path / "outside" / "repair-x.jsonl")
    link = tmp_path / "repair-link.jsonl"
    link.symlink_to(outside)
    for path in (details, notes, outside):
        os.utime(path, (0, 0))

    deleted = prune_journals(
        tmp_path,
        table="face_instances",
        collection="faces",
        older_than=NOW - timedelta(days=90),
        keep=kept,
    )
    assert deleted == 2
    assert not old.exists() and not named.exists()
    for path in (fresh, other_collection, other_table, kept, details, notes, outside, link):
        assert path.exists(), path


def test_prune_of_a_missing_directory_deletes_nothing(tmp_path: Path) -> None:
    gone = tmp_path / "none"
    cutoff = NOW
    assert prune_journals(gone, table="t", collection="c", older_than=cutoff) == 0


def test_listing_says_what_each_journal_was_for_and_whether_it_was_undone(
    tmp_path: Path,
) -> None:
    first = journal(tmp_path / "repair-1.jsonl", age=timedelta(days=3), points=4)
    journal(tmp_path / "repair-2.jsonl", age=timedelta(days=2), collection="c2")
    third = journal(tmp_path / "repair-3.jsonl", age=timedelta(days=1), points=1)
    mark_undone(first, {"restored": 4, "conflicts": 0, "failed": 0})
    mark_undone(third, {"restored": 0, "conflicts": 1, "failed": 0})
    (tmp_path / "drift.jsonl").write_text('{"kind": "orphan_point"}\n')  # not a journal

    report = list_journals(tmp_path)
    assert report.exit_code == 0
    rows = [
        (Path(e.path).name, e.collection, e.points, e.undone, e.status) for e in report.journals
    ]
    assert rows == [
        ("repair-1.jsonl", "faces", 4, "yes", "ok"),
        ("repair-2.jsonl", "c2", 2, "no", "ok"),
        ("repair-3.jsonl", "faces", 1, "partly", "ok"),
    ]
    data = report.to_json()
    assert data["damaged"] == 0 and data["directory"] == str(tmp_path)
    assert data["journals"][0]["undone_at"] is not None
    assert data["journals"][0]["started"] == "2026-11-28T12:00:00Z"
    assert data["journals"][1]["undone_at"] is None
    # The undo marks leave the journals readable for undo itself.
    assert sum(1 for _ in JournalReader(first).changes()) == 4


def test_a_journal_that_cannot_be_read_is_listed_as_damaged(tmp_path: Path) -> None:
    journal(tmp_path / "repair-ok.jsonl")
    broken = journal(tmp_path / "repair-broken.jsonl")
    lines = broken.read_text().splitlines(keepends=True)
    broken.write_text(lines[0] + "{not json\n" + "".join(lines[1:]))  # damaged mid-file
    (tmp_path / "repair-empty.jsonl").write_text("")  # lost its header
    (tmp_path / "repair-binary.jsonl").write_bytes(b"\xff\xfe\x00garbage")
    future = journal(tmp_path / "repair-v9.jsonl")
    header = json.loads(future.read_text().splitlines()[0])
    future.write_text(json.dumps({**header, "version": 9}) + "\n")

    report = list_journals(tmp_path)
    status = {Path(e.path).name: (e.status, e.error) for e in report.journals}
    assert status["repair-ok.jsonl"] == ("ok", None)
    for name in ("repair-broken.jsonl", "repair-empty.jsonl", "repair-binary.jsonl"):
        assert status[name][0] == "damaged", name
    assert "damaged" in str(status["repair-broken.jsonl"][1])
    assert "version 9" in str(status["repair-v9.jsonl"][1])
    assert report.to_json()["damaged"] == 4


def test_listing_a_missing_directory_is_empty_and_a_file_is_refused(tmp_path: Path) -> None:
    assert list_journals(tmp_path / "none").journals == []
    a_file = tmp_path / "f"
    a_file.write_text("x")
    with pytest.raises(ConfigError, match="is not a directory"):
        list_journals(a_file)


def test_an_undo_mark_after_a_torn_line_keeps_the_journal_readable(tmp_path: Path) -> None:
    path = journal(tmp_path / "repair-torn.jsonl", points=2)
    text = path.read_text()
    path.write_text(text + text.splitlines()[1][:20])  # a kill -9 in mid-line
    mark_undone(path, {"restored": 2, "conflicts": 0})
    reader = JournalReader(path)
    assert sum(1 for _ in reader.changes()) == 2 and reader.torn
    (entry,) = list_journals(tmp_path).journals
    assert (entry.status, entry.undone, entry.points) == ("torn", "yes", 2)
    # A change line after the torn one is damage, not a tear.
    path.write_text(path.read_text() + text.splitlines()[1] + "\n")
    with pytest.raises(ConfigError, match="damaged"):
        list(JournalReader(path).changes())


def test_the_state_directory_follows_xdg_state_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert state_dir() == tmp_path / "reconcile"
    assert list_journals().directory == str(tmp_path / "reconcile")


def test_undo_takes_the_mapping_from_the_journal_and_refuses_only_chosen_settings(
    tmp_path: Path,
) -> None:
    path = journal(tmp_path / "j.jsonl", table="public.faces2", collection="people")
    plain = Settings(database_url="postgresql://u@h/db", qdrant_path="/q")
    taken = journal_settings(plain, path)
    assert (taken.table, taken.collection, taken.person_key, taken.flag_key) == (
        "public.faces2",
        "people",
        "person_id",
        "is_assigned",
    )
    # The CLI's sources: a default never contradicts, a chosen value must agree.
    sources = {"collection": "default", "flag_key": "environment (X)"}
    other = dataclasses.replace(plain, flag_key="other")
    with pytest.raises(ConfigError) as caught:
        journal_settings(other, path, sources)
    assert str(caught.value) == (
        f"--flag-key 'other' (from environment (X)) contradicts the journal {path}, "
        "written with --flag-key 'is_assigned': undo takes it from the journal, "
        "so remove that setting (or pass the journal of that repair)"
    )
    agreeing = dataclasses.replace(plain, flag_key="is_assigned")
    assert journal_settings(agreeing, path, sources).collection == "people"

    header = json.loads(path.read_text().splitlines()[0])
    path.write_text(json.dumps({**header, "keys": None}) + "\n")
    with pytest.raises(ConfigError, match="damaged header"):
        journal_settings(plain, path)
