"""What a new user meets on the command line (issue 12): `config show` on broken files,
key=value DSNs, Qdrant URLs, `-` for stdout, flags a mode ignores, names that do not
resolve, `--ids-from DIR`. Each runs the CLI as a separate process, as cron does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.helpers import run_cli
from tests.world import World

SECRET = "kv-s3cret-pw"


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr and lines[0].startswith("reconcile: error: ")
    return lines[0]


# --- config show: the table of what could be read, then one line, exit 2 -------------

BAD_FILES = {
    "malformed TOML": ("--config", "c.toml", "page_size = [\n", "does not parse"),
    "unknown key": ("--config", "c.toml", "bogus = 1\nflag-key = 'from_file'\n", "'bogus'"),
    "missing file": ("--config", "absent.toml", None, "cannot read config file"),
    "bad env line": (
        "--env-file",
        ".env",
        "DATABASE_URL\nQDRANT_FACE_COLLECTION=from_file\n",
        ":1",
    ),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_config_show_prints_what_it_read_then_one_line_and_exit_2(
    case: str, tmp_path: Path
) -> None:
    flag, name, text, expected = BAD_FILES[case]
    if text is not None:
        (tmp_path / name).write_text(text)
    dsn = f"host=/nowhere user=u password={SECRET}"
    args = ("config", "show", flag, str(tmp_path / name), "--table", "from_flag")
    result = run_cli(*args, env={"DATABASE_URL": dsn, "QDRANT_PATH": "/q"})
    assert result.returncode == 2, result.stderr
    assert expected in one_line(result.stderr)
    # The table came first, with every layer that could be read.
    assert "Effective settings" in result.stdout and "from_flag" in result.stdout
    assert "environment (DATABASE_URL)" in result.stdout
    if case in {"unknown key", "bad env line"}:
        assert "from_file" in result.stdout  # the file's good lines still count
    assert SECRET not in result.stdout + result.stderr

    shown = run_cli(*args, "--format", "json", env={"DATABASE_URL": dsn, "QDRANT_PATH": "/q"})
    assert shown.returncode == 2
    data = json.loads(shown.stdout)
    assert data["valid"] is False and expected in data["errors"][0]
    assert data["settings"]["table"] == {"value": "from_flag", "source": "flag"}
    assert data["settings"]["database_url"]["value"] == "host=/nowhere user=u password=***"
    assert SECRET not in shown.stdout + shown.stderr


def test_config_show_json_of_valid_settings_exits_0() -> None:
    result = run_cli(
        "config", "show", "--format", "json", "--page-size", "7",
        env={"DATABASE_URL": "postgresql://u@h/d", "QDRANT_PATH": "/q"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["valid"] is True and data["errors"] == [] and data["schema_version"] == 1
    assert data["settings"]["page_size"] == {"value": 7, "source": "flag"}
    assert data["settings"]["flag_key"] == {"value": None, "source": "default"}


# --- key=value DSNs: accepted as psycopg reads them, the password never shown --------


def key_value(url: str, **extra: str) -> str:
    return make_conninfo("", **{**conninfo_to_dict(url), **extra})


def test_a_key_value_dsn_reaches_the_real_server_and_hides_its_password(world: World) -> None:
    world.face(world.person())
    env = {**world.env(), "DATABASE_URL": key_value(world.url, password=SECRET)}
    assert "=" in env["DATABASE_URL"] and "://" not in env["DATABASE_URL"]
    checked = run_cli("check", env=env)
    assert checked.returncode == 0, checked.stderr
    audited = run_cli("audit", "--format", "json", env=env)
    assert audited.returncode == 0, audited.stderr
    assert json.loads(audited.stdout)["counts"]["in_sync"] == 1
    shown = run_cli("config", "show", env=env)
    assert shown.returncode == 0 and "password=***" in shown.stdout
    for result in (checked, audited, shown):
        assert SECRET not in result.stdout + result.stderr

    refused = run_cli("check", env={**env, "DATABASE_URL": key_value(world.url, port="1")})
    assert refused.returncode == 3
    line = one_line(refused.stderr)
    assert "port=1" in line and "password=***" not in line  # this one carries none
    leaky = key_value("postgresql://u@127.0.0.1:1/d", password=f"{SECRET} x")
    for args in (["check"], ["audit", "--debug"]):
        failed = run_cli(*args, env={**env, "DATABASE_URL": leaky})
        assert failed.returncode == 3
        assert SECRET not in failed.stderr and "password=***" in failed.stderr


# --- a Qdrant URL that is not one is a configuration error ---------------------------


@pytest.mark.parametrize("url", ["not a url", "ftp://x"])
def test_a_bad_qdrant_url_is_exit_2_with_the_expected_form(world: World, url: str) -> None:
    env = {**world.env(), "QDRANT_PATH": ""}
    for args, extra in ((["--qdrant-url", url], {}), ([], {"QDRANT_URL": url})):
        result = run_cli("audit", *args, env={**env, **extra})
        assert result.returncode == 2, result.stderr
        line = one_line(result.stderr)
        assert "is not a Qdrant server URL" in line and "http://host:6333" in line


# --- `-` is stdout, and two streams never share it ----------------------------------


def test_output_dash_is_stdout_and_creates_no_file(world: World, tmp_path: Path) -> None:
    world.face(world.person(), payload={})
    env = world.env()
    for command in (["audit"], ["repair", "--dry-run"]):
        result = run_cli(*command, "--format", "json", "--output", "-", env=env, cwd=tmp_path)
        assert result.returncode == 1, result.stderr
        assert json.loads(result.stdout)["schema_version"] == 1
    table = run_cli("audit", "--output", "-", env=env, cwd=tmp_path)
    assert "missing_person" in table.stdout
    assert not (tmp_path / "-").exists()


def test_details_dash_goes_to_stdout_only_when_the_report_does_not(
    world: World, tmp_path: Path
) -> None:
    world.face(world.person(), payload={})
    world.face(world.person())
    env = world.env()
    mixed = run_cli("audit", "--details", "-", env=env, cwd=tmp_path)
    assert mixed.returncode == 2
    assert "--output FILE" in one_line(mixed.stderr) and mixed.stdout == ""
    also = run_cli("audit", "--details", "-", "--output", "-", env=env, cwd=tmp_path)
    assert also.returncode == 2 and also.stdout == ""

    report = tmp_path / "report.json"
    split = run_cli(
        "audit", "--details", "-", "--output", str(report), "--format", "json",
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert split.returncode == 1, split.stderr
    records = [json.loads(line) for line in split.stdout.splitlines()]
    assert [r["kind"] for r in records] == ["missing_person"]
    assert json.loads(report.read_text())["counts"]["missing_person"] == 1
    assert not (tmp_path / "-").exists()


# --- flags a mode does not honour are refused, by name -------------------------------


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--counts", "--shard", "1/2"], ["--shard"]),
        (["--counts", "--details", "d.jsonl"], ["--details"]),
        (["--counts", "--shard", "1/2", "--details", "d.jsonl"], ["--details", "--shard"]),
        (["--counts", "--top", "10"], ["--top"]),
        (["--counts", "--fail-on", "all", "--lock"], ["--fail-on", "--lock"]),
        (["--counts", "--since", "1h", "--workers", "2"], ["--since", "--workers"]),
        (["--sample", "5", "--top", "3"], ["--top"]),
        (["--sample", "5", "--counts"], ["--counts"]),
        (
            ["--sample", "5", "--max-duration", "5", "--details", "d"],
            ["--max-duration", "--details"],
        ),
    ],
)
def test_a_mode_refuses_the_flags_it_would_ignore(
    tmp_path: Path, args: list[str], named: list[str]
) -> None:
    # Refused before anything is read: no store is needed to see it.
    env = {"DATABASE_URL": "postgresql://u@127.0.0.1:1/d", "QDRANT_PATH": str(tmp_path)}
    result = run_cli("audit", *args, env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    line = one_line(result.stderr)
    mode = args[0]
    assert line.startswith(f"reconcile: error: {mode} ")
    assert all(flag in line for flag in named), line
    assert not (tmp_path / "d.jsonl").exists() and not (tmp_path / "d").exists()


def test_counts_and_sample_still_take_what_they_honour(world: World) -> None:
    world.face(world.person())
    env = world.env()
    counted = run_cli("audit", "--counts", "--format", "json", "--quiet", env=env)
    assert counted.returncode == 0, counted.stderr
    sampled = run_cli("audit", "--sample", "5", "--seed", "1", "--fail-on", "all", env=env)
    assert sampled.returncode == 0, sampled.stderr


# --- names that do not resolve, and --ids-from a directory ---------------------------


def test_a_host_that_does_not_resolve_names_the_url_and_the_fix(world: World) -> None:
    env = world.env()
    pg = run_cli(
        "check", env={**env, "DATABASE_URL": f"postgresql://u:{SECRET}@nonexistent.invalid/db"}
    )
    assert pg.returncode == 3
    line = one_line(pg.stderr)
    assert "postgresql://u:***@nonexistent.invalid/db" in line and "--database-url" in line
    assert SECRET not in line

    qd = run_cli(
        "check", "--retries", "0",
        env={**env, "QDRANT_PATH": "", "QDRANT_URL": "http://nonexistent.invalid:6333"},
    )  # fmt: skip
    assert qd.returncode == 3
    line = one_line(qd.stderr)
    assert "http://nonexistent.invalid:6333" in line and "does not resolve" in line
    assert "--qdrant-url" in line


def test_ids_from_a_directory_says_it_is_one(world: World, tmp_path: Path) -> None:
    result = run_cli("audit", "--ids-from", str(tmp_path), env=world.env())
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert "is a directory" in line and "one per line" in line
