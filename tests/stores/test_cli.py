"""The CLI as cron runs it: separate processes, exit codes, one-line errors, no tracebacks."""

from __future__ import annotations

import json
import re
from pathlib import Path

import psycopg
import pytest

from reconcile.testing.embedded import start_embedded_postgres, stop_embedded_postgres
from tests.helpers import run_cli, server_dir
from tests.world import World


def one_line_error(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert lines[0].startswith("reconcile: error: ")
    return lines[0]


def test_audit_in_sync_exits_0_and_drift_exits_1(world: World) -> None:
    person = world.person()
    point = world.face(person)
    env = world.env()
    result = run_cli("audit", "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["counts"]["in_sync"] == 1

    world.conn.execute(
        "UPDATE face_instances SET person_id = NULL WHERE qdrant_point_id = %s", (point,)
    )
    result = run_cli("audit", env=env)
    assert result.returncode == 1
    assert "stale_person" in result.stdout and person in result.stdout


def test_output_and_details_files(world: World, tmp_path: Path) -> None:
    world.face(world.person(), payload={})
    out, details = tmp_path / "report.json", tmp_path / "details.jsonl"
    result = run_cli(
        "audit",
        "--format",
        "json",
        "--output",
        str(out),
        "--details",
        str(details),
        "--quiet",
        env=world.env(),
    )
    assert result.returncode == 1
    assert result.stdout == "" and result.stderr == ""
    assert json.loads(out.read_text())["counts"]["missing_person"] == 1
    assert json.loads(details.read_text())["kind"] == "missing_person"


def test_check_reports_mapping_and_missing_index(world: World) -> None:
    world.face(world.person())
    env = world.env()
    result = run_cli("check", "--flag-key", "is_assigned", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rows" in result.stdout and "1 points" in result.stdout

    world.conn.execute(
        "ALTER TABLE face_instances DROP CONSTRAINT face_instances_qdrant_point_id_key"
    )
    result = run_cli("check", "--person-key", "owner", "--format", "json", env=env)
    assert result.returncode == 2
    problems = json.loads(result.stdout)["problems"]
    assert len(problems) == 2
    assert "no index on" in problems[0]
    assert "payload key 'owner'" in problems[1]


@pytest.mark.parametrize(
    ("args", "env_overrides", "code", "pattern"),
    [
        (["--table", "missing"], {}, 2, "table 'missing' not found"),
        (["--point-column", "nope"], {}, 2, "column 'nope' not found"),
        (["--point-column", "cluster_id"], {}, 2, "has type character varying"),
        (["--table", "x;drop table persons"], {}, 2, "not a plain identifier"),
        (["--collection", "other"], {}, 2, "collection 'other' not found"),
        (
            [],
            {"DATABASE_URL": "postgresq://u:secret@localhost/db"},
            2,
            "scheme 'postgresq' is not PostgreSQL",
        ),
        (
            [],
            {"DATABASE_URL": "postgresql://u:secret@127.0.0.1:1/db"},
            3,
            "PostgreSQL at postgresql://u:\\*\\*\\*@127.0.0.1:1/db",
        ),
        (
            [],
            {"QDRANT_PATH": "", "QDRANT_URL": "http://127.0.0.1:1"},
            3,
            "Qdrant at http://127.0.0.1:1",
        ),
        ([], {"QDRANT_PATH": "/nonexistent/q"}, 2, "does not exist"),
        ([], {"DATABASE_URL": ""}, 2, "no database given"),
        (["--top", "-1"], {}, 2, "--top -1 is negative"),
    ],
)
def test_bad_input_is_one_clear_line(
    world: World, args: list[str], env_overrides: dict[str, str], code: int, pattern: str
) -> None:
    world.face(world.person())
    env = {**world.env(), **env_overrides}
    env = {k: v for k, v in env.items() if v}
    result = run_cli("audit", *args, env=env)
    assert result.returncode == code, result.stderr
    line = one_line_error(result.stderr)
    assert re.search(pattern, line), line
    assert "secret" not in result.stderr


def test_debug_shows_traceback_without_password(world: World) -> None:
    env = {**world.env(), "DATABASE_URL": "postgresql://u:hunter2@127.0.0.1:1/db"}
    result = run_cli("audit", "--debug", env=env)
    assert result.returncode == 3
    assert "Traceback" in result.stderr
    assert "hunter2" not in result.stderr


@pytest.fixture(scope="module")
def password_server() -> str:
    """A server of our own that checks passwords (the shared one may trust everyone)."""
    with server_dir("pwserver") as root:
        pgdata = root / "pgdata"
        url = start_embedded_postgres(pgdata)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ALTER ROLE postgres PASSWORD 'right'")
            (hba,) = conn.execute("SHOW hba_file").fetchone() or ("",)
            Path(hba).write_text("local all all scram-sha-256\n")
            conn.execute("SELECT pg_reload_conf()")
        yield url  # type: ignore[misc]
        stop_embedded_postgres(pgdata)


def test_wrong_password_is_exit_3_and_masked(world: World, password_server: str) -> None:
    wrong = password_server.replace("postgres@", "postgres:wrong@", 1)
    assert "wrong@" in wrong
    result = run_cli("check", env={**world.env(), "DATABASE_URL": wrong})
    assert result.returncode == 3
    line = one_line_error(result.stderr)
    assert "password authentication failed" in line
    assert "wrong" not in line.replace("password authentication", "")


def test_a_key_value_dsn_carries_its_password_and_never_shows_it(
    world: World, password_server: str
) -> None:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(password_server)
    right = make_conninfo("", **{**params, "password": "right"})
    result = run_cli("check", env={**world.env(), "DATABASE_URL": right})
    # That server has no faces table: being told so proves the password logged in.
    assert result.returncode == 2, result.stderr
    assert "table 'face_instances' not found" in result.stdout + result.stderr
    wrong = make_conninfo("", **{**params, "password": "wr0ng pass"})
    result = run_cli("check", env={**world.env(), "DATABASE_URL": wrong})
    assert result.returncode == 3
    line = one_line_error(result.stderr)
    assert "password authentication failed" in line and "password=***" in line
    assert "wr0ng" not in line and "pass'" not in line


def test_unknown_format_is_usage_error(world: World) -> None:
    result = run_cli("audit", "--format", "xml", env=world.env())
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_demo_builds_audits_and_stops(server_root: Path) -> None:
    directory = server_root / "demo"
    try:
        result = run_cli("demo", "--dir", str(directory), "--faces", "200")
        assert result.returncode == 0, result.stderr
        assert "found exactly the" in result.stdout
        assert "export DATABASE_URL=" in result.stdout
        assert (directory / "drift.jsonl").stat().st_size > 0
        env = {"DATABASE_URL": "", "QDRANT_PATH": str(directory / "qdrant")}
        url = re.search(r"DATABASE_URL='([^']+)'", result.stdout)
        assert url is not None
        env["DATABASE_URL"] = url.group(1)
        again = run_cli("audit", "--flag-key", "is_assigned", "--format", "json", env=env)
        assert again.returncode == 1
        assert json.loads(again.stdout)["drifted"] > 0
    finally:
        stopped = run_cli("demo", "--dir", str(directory), "--stop")
    assert stopped.returncode == 0
    assert "stopped the demo server" in stopped.stdout


def test_demo_rejects_too_few_faces(tmp_path: Path) -> None:
    result = run_cli("demo", "--dir", str(tmp_path / "d"), "--faces", "5")
    assert result.returncode == 2
    assert "--faces 5 is out of range" in one_line_error(result.stderr)


def drift_env(world: World, n: int = 3) -> dict[str, str]:
    person = world.person()
    for _ in range(n):
        world.face(person, payload={"is_assigned": False})
    return world.env()


def test_repair_refuses_without_a_decision_when_no_terminal(world: World) -> None:
    result = run_cli("repair", env=drift_env(world))
    assert result.returncode == 2
    assert "add --yes to apply, or --dry-run" in one_line_error(result.stderr)


def test_repair_dry_run_then_apply_then_undo(world: World, tmp_path: Path) -> None:
    env = drift_env(world)
    dry = run_cli("repair", "--dry-run", "--flag-key", "is_assigned", "--format", "json", env=env)
    assert dry.returncode == 1, dry.stderr
    plan = json.loads(dry.stdout)
    assert plan["dry_run"] is True and plan["planned"]["set_person"] == 3
    assert set(plan) >= {
        "dry_run",
        "planned",
        "applied",
        "skipped_changed",
        "skipped_locked",
        "vanished",
        "failed",
        "verified",
        "journal",
        "remaining",
    }

    journal = tmp_path / "j.jsonl"
    args = ["--flag-key", "is_assigned", "--max-changes", "100%", "--journal", str(journal)]
    done = run_cli("repair", "--yes", *args, "--format", "json", env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["applied"], report["verified"], report["journal"]) == (3, 3, str(journal))
    assert sum(report["remaining"].values()) == 0

    table = run_cli("undo", str(journal), "--yes", "--flag-key", "is_assigned", env=env)
    assert table.returncode == 0, table.stderr
    assert "restored 3" in table.stdout
    audit = run_cli("audit", "--flag-key", "is_assigned", "--format", "json", env=env)
    assert json.loads(audit.stdout)["counts"]["missing_person"] == 3


def test_repair_guard_exits_4(world: World) -> None:
    result = run_cli("repair", "--yes", env=drift_env(world))
    assert result.returncode == 4
    assert "raise --max-changes" in one_line_error(result.stderr)


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["--batch-size", "0"], "--batch-size 0 is out of range"),
        (["--batch-size", "99999999"], "--batch-size 99999999 is out of range"),
        (["--max-changes", "lots"], "--max-changes 'lots' is not a number"),
        (["--lock-timeout", "-1"], "--lock-timeout -1.0 is out of range"),
        (["--rate", "0"], "--rate 0.0 is out of range"),
        (["--rate", "1e9"], "--rate 1000000000.0 is out of range"),
        (["--max-duration", "-5"], "--max-duration -5.0 is out of range"),
        (["--fail-on", "nonsense"], "--fail-on 'nonsense': nonsense is not a drift kind"),
        (["--shard", "3/2"], "--shard '3/2' is not i/N"),
    ],
)
def test_repair_rejects_bad_numbers(world: World, args: list[str], pattern: str) -> None:
    result = run_cli("repair", "--dry-run", *args, env=world.env())
    assert result.returncode == 2
    assert pattern in one_line_error(result.stderr)


def test_undo_rejects_a_non_journal(world: World, tmp_path: Path) -> None:
    bogus = tmp_path / "notes.txt"
    bogus.write_text("hello\n")
    result = run_cli("undo", str(bogus), "--yes", env=world.env())
    assert result.returncode == 2
    assert "is not a reconcile journal" in one_line_error(result.stderr)


def test_repair_asks_on_a_terminal(world: World, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = drift_env(world)
    for answer, code in ((b"n\n", 2), (b"y\n", 0)):
        master, slave = os.openpty()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "reconcile",
                "repair",
                "--max-changes",
                "100%",
                "--journal",
                str(tmp_path / f"j{code}.jsonl"),
            ],
            stdin=slave,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **env},
        )
        os.close(slave)
        os.write(master, answer)
        out, err = proc.communicate(timeout=120)
        os.close(master)
        assert proc.returncode == code, err
        assert "Repair plan by person" in err and "Apply this plan?" in err
    assert "applied 3" in out
