"""`repair --delete-orphans` against a real PostgreSQL and both Qdrant engines (local mode
and Qdrant Edge): marked first, deleted a grace later, rechecked, journaled whole, undone.

Time is never waited for: a run "a grace later" is made by moving the mark an earlier
run wrote back by that much (`Orphans.age`), as if that run had been then.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from reconcile.apply import Hooks
from reconcile.errors import ConfigError, GuardError
from reconcile.ops.repair import RepairReport, repair
from reconcile.ops.undo import UndoReport, undo
from reconcile.orphans import Action, marked_at, sighting, stamp
from reconcile.plan import RepairOptions
from reconcile.settings import ORPHAN_KEY, Settings
from reconcile.stores import Stores
from reconcile.stores.base import PointId, SetKeys, WholePoint
from reconcile.targets import Targets
from reconcile.testing.world import create_schema
from tests.engines import Engine, engine, gauss
from tests.helpers import repair_cli, run_cli

__all__ = ["engine"]  # the fixture, used by name

HOUR = timedelta(hours=1)


def mixed_vectors(n: int) -> dict[str, Any]:
    """Every kind of vector the "mixed" collection holds, different per point."""
    import random

    rng = random.Random(n)
    return {
        "": gauss(rng, 4),
        "dot": gauss(rng, 3),
        "multi": [gauss(rng, 2) for _ in range(1 + n % 3)],
        "sp": {"indices": rng.sample(range(1000), 4), "values": gauss(rng, 4)},
    }


class Orphans:
    """Faces in PostgreSQL and both kinds of points in one engine, and runs against them."""

    def __init__(self, engine: Engine, url: str, tmp: Path) -> None:
        self.engine, self.url, self.tmp = engine, url, tmp
        self.conn = psycopg.connect(url, autocommit=True)
        create_schema(self.conn)
        engine.settings = self.settings()  # the adapter reads the payload keys it names
        engine.create("mixed")
        self.faces = [self.point(row=True) for _ in range(8)]
        self.orphans = [self.point(row=False) for _ in range(2)]

    def point(self, row: bool, conn: psycopg.Connection[Any] | None = None) -> str:
        """A face's point (and its row, unless `row` is False: an orphan)."""
        point_id = str(uuid.uuid4())
        face_id = str(uuid.uuid4())
        n = len(getattr(self, "faces", ())) + len(getattr(self, "orphans", ()))
        self.engine.write(
            [(point_id, mixed_vectors(n), {"face_instance_id": face_id, "is_assigned": False})]
        )
        if row:
            self.row(point_id, face_id, conn)
        return point_id

    def row(
        self, point_id: str, face_id: str | None = None, conn: psycopg.Connection[Any] | None = None
    ) -> None:
        (conn or self.conn).execute(
            "INSERT INTO face_instances (id, asset_id, bbox_x, bbox_y, bbox_w, bbox_h, "
            "detection_confidence, qdrant_point_id) VALUES (%s, 1, 0, 0, 10, 10, 0.9, %s)",
            (face_id or str(uuid.uuid4()), point_id),
        )

    def settings(self, **overrides: Any) -> Settings:
        where = (
            {"qdrant_edge": str(self.engine.root)}
            if self.engine.name == "edge"
            else {"qdrant_path": str(self.engine.root)}
        )
        values: dict[str, Any] = {
            "flag_key": "is_assigned",
            "delete_orphans": True,
            "max_deletes": "100%",
            **where,
        }
        return Settings(database_url=self.url, **(values | overrides))

    def repair(self, hooks: Hooks | None = None, **overrides: Any) -> RepairReport:
        options = {
            k: overrides.pop(k) for k in ("dry_run", "targets", "batch_size") if k in overrides
        }
        targets = options.pop("targets", None)
        settings = self.settings(**overrides)
        journal = self.tmp / f"journal-{time.monotonic_ns()}.jsonl"
        return repair(
            settings,
            RepairOptions(max_changes="100%", journal=journal, **options),
            stores=Stores(settings, qdrant=self.engine.store),
            hooks=hooks,
            targets=targets,
        )

    def undo(self, journal: str | None) -> UndoReport:
        assert journal is not None
        settings = self.settings()
        return undo(settings, Path(journal), stores=Stores(settings, qdrant=self.engine.store))

    def whole(self, *point_ids: PointId) -> dict[PointId, WholePoint]:
        return self.engine.store.whole(list(point_ids))

    def mark(self, point_id: PointId) -> Any:
        found = self.whole(point_id).get(point_id)
        return None if found is None else found.payload.get(ORPHAN_KEY)

    def age(self, by: timedelta, *point_ids: PointId) -> None:
        """Move these points' marks back by `by`: as if the marking run was that long ago."""
        for point_id in point_ids:
            since = marked_at(self.mark(point_id))
            assert since is not None, f"{point_id} is not marked"
            self.engine.store.apply([SetKeys({ORPHAN_KEY: stamp(since - by)}, [point_id])])


@pytest.fixture
def o(engine: Engine, pg_url: str, tmp_path: Path) -> Iterator[Orphans]:
    world = Orphans(engine, pg_url, tmp_path)
    yield world
    world.conn.close()


def journal_lines(path: str | None) -> list[dict[str, Any]]:
    assert path is not None
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


# --- the rule ------------------------------------------------------------------------------


def test_sighting_rule() -> None:
    now = datetime.fromisoformat("2026-12-01T12:00:00+00:00")
    day = 24 * HOUR
    assert sighting(None, now, HOUR) is Action.MARK
    assert sighting("not a time", now, HOUR) is Action.MARK
    assert sighting("2026-12-01T11:00:00", now, HOUR) is Action.MARK  # no zone: not ours
    assert sighting(stamp(now - 30 * timedelta(minutes=1)), now, HOUR) is Action.WAIT
    assert sighting(stamp(now - HOUR), now, HOUR) is Action.DELETE
    # A daily run with an hour's grace deletes what the day before marked …
    assert sighting(stamp(now - day), now, HOUR) is Action.DELETE
    # … and a mark older than ten graces and 30 days starts the count again.
    assert sighting(stamp(now - 30 * day), now, HOUR) is Action.DELETE
    assert sighting(stamp(now - 30 * day - timedelta(seconds=1)), now, HOUR) is Action.MARK
    assert sighting(stamp(now - 300 * day), now, 31 * day) is Action.DELETE  # ten graces
    assert sighting(stamp(now - 311 * day), now, 31 * day) is Action.MARK
    assert sighting(stamp(now + HOUR / 2), now, HOUR) is Action.WAIT  # a clock a little behind
    assert sighting(stamp(now + 2 * HOUR), now, HOUR) is Action.MARK  # far ahead: start again
    assert sighting(stamp(now), now, timedelta(0)) is Action.DELETE  # 0s: the next run
    assert sighting(None, now, HOUR, second=False) is Action.DELETE


# --- marked, then deleted a grace later, then undone -------------------------------------------


def test_first_run_marks_a_run_a_grace_later_deletes_and_undo_recreates(o: Orphans) -> None:
    first = o.repair()
    assert (first.orphans.marked, first.orphans.deleted) == (2, 0)
    assert first.journal is None, first.plan.to_json()  # marks: nothing for undo
    assert first.remaining["orphan_point"] == 2 and first.exit_code == 1
    for point_id in o.orphans:
        assert marked_at(o.mark(point_id)) is not None
    for point_id in o.faces:
        assert o.mark(point_id) is None  # a face's point is never marked
    before = o.whole(*o.orphans)

    o.age(HOUR + timedelta(seconds=1), *o.orphans)
    second = o.repair()
    assert (second.orphans.marked, second.orphans.deleted, second.orphans.waiting) == (0, 2, 0)
    assert second.remaining["orphan_point"] == 0 and second.exit_code == 0
    assert o.whole(*o.orphans) == {}
    assert len(o.whole(*o.faces)) == len(o.faces)
    deletes = [r for r in journal_lines(second.journal) if r.get("op") == "delete"]
    assert sorted(r["point_id"] for r in deletes) == sorted(o.orphans)
    assert all(ORPHAN_KEY not in r["point"]["payload"] for r in deletes)

    o.engine.reopen()  # undo is a later process: it reads the store from disk
    report = o.undo(second.journal)
    assert (report.restored, report.conflicts, report.failed) == (2, 0, 0)
    o.engine.reopen()
    after = o.whole(*o.orphans)
    for point_id in o.orphans:
        # Field by field what was retrieved before the delete, but the mark.
        assert after[point_id] == before[point_id].without(ORPHAN_KEY)
        assert after[point_id].vectors == before[point_id].vectors
    assert o.undo(second.journal).already_restored == 2  # a second undo changes nothing


def test_a_run_before_the_grace_deletes_nothing(o: Orphans) -> None:
    o.repair()
    marks = {p: o.mark(p) for p in o.orphans}
    o.age(HOUR - timedelta(minutes=1), *o.orphans)
    report = o.repair()
    assert (report.orphans.marked, report.orphans.deleted, report.orphans.waiting) == (0, 0, 2)
    assert len(o.whole(*o.orphans)) == 2
    assert all(o.mark(p) != marks[p] for p in o.orphans)  # aged by the test, not re-marked


def test_a_row_committed_between_the_runs_rescues_its_point(o: Orphans) -> None:
    o.repair()
    saved, lost = o.orphans
    o.row(saved)
    o.age(2 * HOUR, saved, lost)
    report = o.repair()
    assert (report.orphans.rescued, report.orphans.deleted) == (1, 1)
    assert o.mark(saved) is None and saved in o.whole(saved)  # mark cleared, point kept
    assert o.whole(lost) == {}


def test_a_mark_older_than_thirty_days_starts_the_count_again(o: Orphans) -> None:
    o.repair()
    o.age(31 * 24 * HOUR, *o.orphans)
    report = o.repair()
    assert (report.orphans.marked, report.orphans.deleted) == (2, 0)
    assert len(o.whole(*o.orphans)) == 2


def test_dry_run_shows_what_would_be_marked_and_deleted_and_writes_nothing(o: Orphans) -> None:
    o.repair()
    first, _ = o.orphans
    o.age(2 * HOUR, first)
    o.engine.store.apply([SetKeys({ORPHAN_KEY: "garbage"}, [o.orphans[1]])])
    before = o.whole(*o.orphans)
    report = o.repair(dry_run=True)
    assert report.plan.orphans is not None
    plan = report.plan.to_json()["orphans"]
    assert {k: plan[k] for k in ("mark", "delete", "rescue", "waiting")} == {
        "mark": 1,
        "delete": 1,
        "rescue": 0,
        "waiting": 0,
    }
    assert plan["examples"] == {"mark": [o.orphans[1]], "delete": [first]}
    assert report.orphans.deleted == report.orphans.marked == 0
    assert o.whole(*o.orphans) == before


# --- guards and refusals -------------------------------------------------------------------


def test_max_deletes_refuses_the_whole_repair_before_writing(o: Orphans) -> None:
    with pytest.raises(GuardError, match="--max-deletes 1 "):
        o.repair(max_deletes="1")
    assert all(o.mark(p) is None for p in o.orphans)
    # 10% of 10 points is 1: refused too; the default 1% of a tiny world is 0.
    with pytest.raises(GuardError, match=r"\(1 of 10 points\)"):
        o.repair(max_deletes="10%")
    assert o.repair(max_deletes="2").orphans.marked == 2


def test_targeted_runs_refuse_delete_orphans(o: Orphans) -> None:
    with pytest.raises(ConfigError, match="--delete-orphans needs a scan of the whole id range"):
        o.repair(targets=Targets(point_ids=(o.orphans[0],)))


def test_an_empty_table_never_marks(o: Orphans) -> None:
    o.conn.execute("DELETE FROM face_instances")
    report = o.repair(dry_run=True)
    assert report.plan.orphans is not None and report.plan.orphans.guard is not None
    with pytest.raises(GuardError, match="one store is empty"):
        o.repair()
    assert all(o.mark(p) is None for p in o.orphans)


def test_a_matched_point_holding_a_mark_is_in_sync_and_rescued(o: Orphans) -> None:
    face = o.faces[0]
    o.engine.store.apply([SetKeys({ORPHAN_KEY: stamp(datetime.now().astimezone())}, [face])])
    o.engine.store.also_read(["face_instance_id"])  # the store was opened without the map
    report = o.repair(delete_orphans=False, map=("face_instance_id=id",))
    assert report.plan.audit.counts["in_sync"] == len(o.faces)  # never drift of any key
    report = o.repair()
    assert report.orphans.rescued == 1 and o.mark(face) is None


# --- concurrency: a row not yet committed -------------------------------------------------
#
# A writer upserts a point, then inserts its row in a transaction that is still open
# while the next run rechecks. Only the grace protects it: the recheck cannot see an
# uncommitted row. Deterministic: the test holds the transaction open itself.


@pytest.mark.parametrize(
    ("grace", "second_sighting", "survives"),
    [("1h", True, True), ("0s", True, False), ("1h", False, False)],
    ids=["grace-longer-than-the-gap", "grace-shorter", "second-sighting-off"],
)
def test_a_point_whose_row_is_not_yet_committed(
    o: Orphans, pg_url: str, grace: str, second_sighting: bool, survives: bool
) -> None:
    hooks = Hooks(second_sighting=second_sighting)
    new = o.point(row=False)  # the writer's point, written first
    if second_sighting:
        o.repair(hooks=hooks, orphan_grace=grace)  # a run sees it orphaned: marks it
    with psycopg.connect(pg_url) as writer:  # its row, inserted, not yet committed
        o.row(new, conn=writer)
        report = o.repair(hooks=hooks, orphan_grace=grace)
        assert (new in o.whole(new)) is survives, report.orphans
        writer.commit()
    if survives:
        assert o.repair(hooks=hooks, orphan_grace=grace).orphans.rescued == 1
        assert o.mark(new) is None


def test_a_row_committed_after_the_scan_is_seen_by_the_recheck(o: Orphans) -> None:
    o.repair()
    saved = o.orphans[0]
    o.age(2 * HOUR, *o.orphans)
    hooks = Hooks(before_recheck=lambda ids: o.row(saved) if saved in ids else None)
    report = o.repair(hooks=hooks)
    assert report.plan.orphans is not None and report.plan.orphans.delete == 2
    assert (report.orphans.deleted, report.orphans.gone, report.orphans.rescued) == (1, 1, 1)
    assert saved in o.whole(saved) and o.mark(saved) is None
    assert report.remaining["orphan_point"] == 0


# --- undo: insert-only -------------------------------------------------------------------


def test_undo_leaves_a_point_written_again_meanwhile_alone(o: Orphans) -> None:
    o.repair()
    o.age(2 * HOUR, *o.orphans)
    report = o.repair()
    again, _ = o.orphans
    o.engine.write([(again, mixed_vectors(99), {"face_instance_id": "new", "is_assigned": True})])
    undone = o.undo(report.journal)
    assert (undone.restored, undone.conflicts, undone.conflict_ids) == (1, 1, [again])
    assert o.whole(again)[again].payload == {"face_instance_id": "new", "is_assigned": True}
    assert undone.exit_code == 1


# --- the CLI: views, scopes, kill -9, what a user sees ---------------------------------------


def cli_env(o: Orphans) -> dict[str, str]:
    o.engine.store.close()  # local mode allows one process per directory
    return {"DATABASE_URL": o.url}


def store_flag(o: Orphans) -> list[str]:
    flag = "--qdrant-edge" if o.engine.name == "edge" else "--qdrant-path"
    return [flag, str(o.engine.root), "--flag-key", "is_assigned"]


def test_since_and_incremental_refuse_on_the_command_line(o: Orphans, tmp_path: Path) -> None:
    env = cli_env(o)
    for scope in (["--since", "1h"], ["--incremental", str(tmp_path / "state.json")]):
        done = repair_cli(tmp_path / "j.jsonl", *store_flag(o), "--delete-orphans", *scope, env=env)
        assert done.returncode == 2, done.stderr
        assert "--delete-orphans needs a scan of the whole id range" in done.stderr
        assert "Traceback" not in done.stderr


def test_a_view_needs_its_base_table(o: Orphans, tmp_path: Path) -> None:
    o.conn.execute("CREATE VIEW faces_v AS SELECT * FROM face_instances WHERE asset_id = 1")
    env = cli_env(o)
    args = [*store_flag(o), "--table", "faces_v", "--delete-orphans", "--max-deletes", "100%"]
    done = repair_cli(tmp_path / "j1.jsonl", *args, env=env)
    assert done.returncode == 2
    assert "--orphan-table" in done.stderr and done.stderr.count("\n") == 1
    done = repair_cli(tmp_path / "j2.jsonl", *args, "--orphan-table", "faces_v", env=env)
    assert done.returncode == 2 and "is a view, not a table" in done.stderr
    done = repair_cli(
        tmp_path / "j3.jsonl",
        *args,
        "--orphan-table",
        "face_instances",
        "--format",
        "json",
        env=env,
    )
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout)["orphans_marked"] == 2


def test_kill_between_journal_and_delete_then_next_run_and_undo(o: Orphans, tmp_path: Path) -> None:
    o.repair()
    o.age(2 * HOUR, *o.orphans)
    before = o.whole(*o.orphans)
    env = cli_env(o)
    journal = tmp_path / "killed.jsonl"
    args = [*store_flag(o), "--delete-orphans", "--max-deletes", "100%"]
    killed = run_cli(
        "repair", "--yes", "--journal", str(journal), *args,
        env=env | {"RECONCILE_TEST_KILL_AT": "1:before-delete"}, module="tests.crashing",
    )  # fmt: skip
    assert killed.returncode == -9
    assert [r["point_id"] for r in journal_lines(str(journal)) if r.get("op") == "delete"]
    # Journaled, not deleted: undo finds the points as they were (already restored) and
    # clears their marks, so they are deleted only after two fresh sightings.
    undone = run_cli("undo", "--yes", str(journal), "--format", "json", *store_flag(o)[:2], env=env)
    assert json.loads(undone.stdout)["already_restored"] == 2, undone.stderr
    o.engine.reopen()
    assert all(o.mark(p) is None for p in o.orphans)
    assert {p: w.without(ORPHAN_KEY) for p, w in o.whole(*o.orphans).items()} == {
        p: w.without(ORPHAN_KEY) for p, w in before.items()
    }
    # The next runs start the count again, and delete a grace later.
    o.repair()
    o.age(2 * HOUR, *o.orphans)
    assert o.repair().orphans.deleted == 2


def test_json_table_metrics_and_logs_report_the_orphans(o: Orphans, tmp_path: Path) -> None:
    env = cli_env(o)
    metrics = tmp_path / "reconcile.prom"
    args = [*store_flag(o), "--delete-orphans", "--max-deletes", "100%"]
    done = repair_cli(
        tmp_path / "j.jsonl", *args, "--format", "json", "--metrics-file", str(metrics),
        "--log-format", "json", env=env,
    )  # fmt: skip
    report = json.loads(done.stdout)
    assert {k: report[k] for k in report if k.startswith("orphans_")} == {
        "orphans_marked": 2,
        "orphans_deleted": 0,
        "orphans_rescued": 0,
        "orphans_waiting": 0,
        "orphans_failed": 0,
        "orphans_gone": 0,
        "orphans_skipped": 0,
    }
    assert report["planned"]["orphans"]["mark"] == 2
    assert 'reconcile_orphan_points{action="marked"' in metrics.read_text()
    finished = [json.loads(line) for line in done.stderr.splitlines() if "repair.finished" in line]
    assert finished[0]["orphans_marked"] == 2
    table = repair_cli(tmp_path / "k.jsonl", *args, "--dry-run", env=env)
    assert "orphan points (--delete-orphans, grace 1h): mark 0, delete 0" in table.stdout
    assert "waiting 2" in table.stdout
    done = repair_cli(tmp_path / "l.jsonl", *args, env=env)
    assert "deleted by a --delete-orphans run at least 1h after their mark" in done.stdout


def readme_command(marker: str) -> str:
    """The README's one-line command containing `marker`."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    (line,) = [x for x in readme.splitlines() if x.startswith("reconcile ") and marker in x]
    return line


def test_the_readme_lists_the_face_ids_to_re_embed(o: Orphans, tmp_path: Path) -> None:
    lost = str(uuid.uuid4())
    o.row(lost, face_id=(face := str(uuid.uuid4())))  # a row whose point is gone
    env = cli_env(o)
    config = tmp_path / "reconcile.toml"
    where = "qdrant_edge" if o.engine.name == "edge" else "qdrant_path"
    config.write_text(f'{where} = "{o.engine.root}"\nflag_key = "is_assigned"\n')
    command = readme_command("missing_point").replace("/etc/reconcile.toml", str(config))
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        env={**os.environ, **env, "PATH": path},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1, done.stderr  # drift found: audit's exit code comes through
    assert done.stdout.split() == [face]


def test_check_names_a_config_files_delete_orphans_on_a_view(o: Orphans, tmp_path: Path) -> None:
    o.conn.execute("CREATE VIEW faces_v AS SELECT * FROM face_instances")
    env = cli_env(o)
    config = tmp_path / "reconcile.toml"
    config.write_text('table = "faces_v"\ndelete_orphans = true\norphan_grace = "2h"\n')
    done = run_cli("check", "--config", str(config), *store_flag(o)[:2], env=env)
    assert done.returncode == 2 and "--orphan-table" in done.stdout + done.stderr
    config.write_text(config.read_text() + 'orphan_table = "face_instances"\n')
    done = run_cli("check", "--config", str(config), *store_flag(o)[:2], env=env)
    # (The world's faces have no person: check's other problem, not this test's.)
    assert "--orphan-table" not in done.stdout + done.stderr


# --- found in review: each failed before its fix ----------------------------------------


def test_a_point_written_again_between_the_recheck_and_the_delete_is_kept(o: Orphans) -> None:
    """The application upserts the id again (dropping the mark) right before the delete."""
    o.repair()
    o.age(2 * HOUR, *o.orphans)
    again, lost = o.orphans
    payload = {"face_instance_id": "new", "is_assigned": False}

    class Rewrite(Hooks):
        def checkpoint(self, batch: int, phase: str) -> None:
            if phase == "before-delete":
                o.engine.write([(again, mixed_vectors(7), payload)])

    report = o.repair(hooks=Rewrite())
    assert (report.orphans.deleted, report.orphans.skipped) == (1, 1)
    assert o.whole(again)[again].payload == payload and o.whole(lost) == {}


def test_faces_a_view_hides_are_never_marked(o: Orphans) -> None:
    hidden = o.faces[0]
    o.conn.execute(  # a uuid the test made: safe to put into the statement
        f"CREATE VIEW faces_v AS SELECT * FROM face_instances WHERE qdrant_point_id <> '{hidden}'"
    )
    o.engine.store.apply([SetKeys({ORPHAN_KEY: stamp(datetime.now().astimezone())}, [hidden])])
    for _ in range(2):
        report = o.repair(table="faces_v", orphan_table="face_instances", max_deletes="2")
        assert report.plan.audit.counts["orphan_point"] == 3  # the view's audit says so
        assert report.plan.orphans is not None and report.plan.orphans.mark in (2, 0)
        assert o.mark(hidden) is None  # rescued by the base table, never marked again
    assert report.orphans.waiting == 2


def test_a_mixed_case_table_is_found(o: Orphans) -> None:
    o.conn.execute('ALTER TABLE face_instances RENAME TO "Faces"')
    assert o.repair(table="Faces").orphans.marked == 2


def test_sync_faces_with_settings_that_delete_orphans(o: Orphans) -> None:
    from reconcile.ops.sync import sync_faces

    face_id = o.conn.execute("SELECT id FROM face_instances LIMIT 1").fetchone()
    assert face_id is not None
    settings = o.settings()  # delete_orphans=True, as a shared config file may say
    report = sync_faces(Stores(settings, qdrant=o.engine.store), [str(face_id[0])])
    assert report.plan.orphans is None and report.orphans.deleted == 0


def test_a_scan_cut_short_rescues_nothing(o: Orphans, tmp_path: Path) -> None:
    """Points a scan read ahead but never judged (a --max-duration run on a server reads
    pages ahead) are in the marks left over; an incomplete scan must not rescue them."""
    import dataclasses
    import tempfile

    from reconcile.ops.audit import audit
    from reconcile.orphans import OrphanPlanner, Sightings

    settings = o.settings()
    stores = Stores(settings, qdrant=o.engine.store)
    report = audit(settings, stores=stores)
    for complete, rescued in ((True, [o.faces[0]]), (False, [])):
        with tempfile.TemporaryFile("w+") as spill, tempfile.TemporaryFile("w+") as checked:
            sightings = Sightings(o.engine.store)
            sightings.marks[o.faces[0]] = stamp(datetime.now().astimezone())  # read, unjudged
            planner = OrphanPlanner(spill, checked, sightings)
            planner.plan(
                dataclasses.replace(report, complete=complete), settings, stores.postgres, 10
            )
            assert planner.rescues == rescued


def test_the_json_guard_names_the_max_deletes_refusal(o: Orphans, tmp_path: Path) -> None:
    env = cli_env(o)
    args = [*store_flag(o), "--delete-orphans", "--dry-run", "--format", "json"]
    done = repair_cli(tmp_path / "j.jsonl", *args, "--max-deletes", "1", env=env)
    assert json.loads(done.stdout)["guard"].startswith("--delete-orphans would mark 2")
    done = repair_cli(tmp_path / "j.jsonl", *args, "--max-deletes", "2", env=env)
    assert json.loads(done.stdout)["guard"] is None


def test_a_zero_grace_warns(o: Orphans, tmp_path: Path) -> None:
    env = cli_env(o)
    args = [*store_flag(o), "--delete-orphans", "--max-deletes", "100%", "--orphan-grace", "0s"]
    done = repair_cli(tmp_path / "j.jsonl", *args, "--log-format", "json", env=env)
    events = [json.loads(line) for line in done.stderr.splitlines()]
    assert [e for e in events if e.get("event") == "repair.unsafe_grace"], done.stderr


def test_grace_is_shown_in_its_largest_unit() -> None:
    from reconcile.cli.tables import duration

    assert [duration(s) for s in (0, 45, 90, 1800, 3600, 5400, 86400, 604800)] == [
        "0s", "45s", "90s", "30m", "1h", "90m", "1d", "1w",
    ]  # fmt: skip
