"""Undo takes the table, collection and payload keys from its journal (issue 12, defect 6).

The repair's own hint, `reconcile undo JOURNAL`, and the demo's printed commands
run as printed; a setting someone chose that contradicts the journal is refused
with one line naming it, where it came from and the journal's value.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from reconcile.errors import ConfigError
from reconcile.ops import undo as undo_ops
from tests.helpers import cli_env, run_cli, run_repair, snapshot
from tests.world import World


def one_line_error(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr and "{" not in lines[0], stderr  # no raw dict
    assert lines[0].startswith("reconcile: error: ")
    return lines[0]


def drifted(world: World, drifted: int = 3, in_sync: int = 0) -> None:
    """Faces whose flag and person are missing from the payload (a repair sets both)."""
    person = world.person()
    for _ in range(drifted):
        world.face(person, payload={"is_assigned": False})
    for _ in range(in_sync):
        world.face(world.person())


def repaired(world: World, tmp_path: Path) -> tuple[Path, dict[str, str], str]:
    """A CLI repair with the flag key into a journal; (journal, env, snapshot before)."""
    drifted(world)
    before = snapshot(world.client)
    env = {**world.env(), "XDG_STATE_HOME": str(tmp_path / "state")}
    journal = tmp_path / "j.jsonl"
    result = run_cli(
        "repair", "--yes", "--flag-key", "is_assigned", "--max-changes", "100%",
        "--journal", str(journal), env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return journal, env, before


def test_the_repairs_printed_undo_hint_restores_without_key_flags(
    world: World, tmp_path: Path
) -> None:
    drifted(world)
    before = snapshot(world.client)
    state = tmp_path / "state"
    env = {**world.env(), "XDG_STATE_HOME": str(state)}
    result = run_cli(
        "repair", "--yes", "--flag-key", "is_assigned", "--max-changes", "100%", env=env
    )
    assert result.returncode == 0, result.stderr
    # One line, unwrapped however long the path: a hint is for copying.
    hint = re.search(r"^journal: .* \((.+ undo .+)\)$", result.stdout, re.M)
    assert hint is not None, result.stdout
    command = shlex.split(hint.group(1))
    assert Path(command[-1]).parent == state / "reconcile"  # the default journal place

    # Run exactly as printed, by a shell whose PATH has no virtual environment in
    # it (as after `make demo`), plus --yes: no terminal here to answer the question.
    shell_env = {**cli_env(env), "PATH": "/usr/bin:/bin"}
    undone = subprocess.run(
        f"{hint.group(1)} --yes",
        shell=True,
        env=shell_env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert undone.returncode == 0, undone.stderr
    assert "restored 3," in undone.stdout
    world.reopen()
    assert snapshot(world.client) == before


def test_the_demos_printed_commands_work_as_printed(world: World, tmp_path: Path) -> None:
    # The demo prints these three (reconcile/cli/demo.py); a small share of drift, as
    # in the demo's world, so the default --max-changes 10% lets the repair run.
    drifted(world, drifted=3, in_sync=40)
    before = snapshot(world.client)
    env = {**world.env(), "XDG_STATE_HOME": str(tmp_path / "state")}
    repair = shlex.split("repair --flag-key is_assigned --yes --journal repair.jsonl")
    assert run_cli(*repair, env=env, cwd=tmp_path).returncode == 0

    plain = run_cli("undo", "repair.jsonl", "--yes", env=env, cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert "restored 3," in plain.stdout
    printed = shlex.split("undo repair.jsonl --flag-key is_assigned --yes")
    again = run_cli(*printed, env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "already restored 3," in again.stdout
    world.reopen()
    assert snapshot(world.client) == before


@pytest.mark.parametrize(
    ("how", "source", "journal_value"),
    [
        ("flag", "(from flag)", "--flag-key 'is_assigned'"),
        ("environment", "(from environment (QDRANT_FACE_COLLECTION))", "--collection 'faces'"),
        ("config", "(from config file (", "--person-key 'person_id'"),
    ],
)
def test_a_chosen_setting_that_contradicts_the_journal_is_refused(
    world: World, tmp_path: Path, how: str, source: str, journal_value: str
) -> None:
    journal, env, _ = repaired(world, tmp_path)
    args = ["undo", str(journal), "--yes"]
    if how == "flag":
        args += ["--flag-key", "other"]
    elif how == "environment":
        env = {**env, "QDRANT_FACE_COLLECTION": "other"}
    else:
        config = tmp_path / "reconcile.toml"
        config.write_text('person_key = "someone"\n')
        args += ["--config", str(config)]
    result = run_cli(*args, env=env)
    assert result.returncode == 2
    line = one_line_error(result.stderr)
    assert source in line and f"written with {journal_value}" in line, line
    assert str(journal) in line
    world.reopen()
    assert world.audit(flag_key="is_assigned").drifted == 0  # nothing was restored


def test_a_default_never_contradicts_and_an_agreeing_flag_is_fine(
    world: World, tmp_path: Path
) -> None:
    journal, env, before = repaired(world, tmp_path)
    # --collection faces given explicitly agrees with the journal: no refusal.
    result = run_cli(
        "undo", str(journal), "--yes", "--collection", "faces", "--format", "json", env=env
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["restored"], report["table"], report["collection"]) == (
        3,
        "face_instances",
        "faces",
    )
    world.reopen()
    assert snapshot(world.client) == before


def test_the_library_takes_the_journals_keys_unless_given_otherwise(world: World) -> None:
    drifted(world)
    before = snapshot(world.client)
    journal = Path(str(run_repair(world).journal))  # written with flag key is_assigned

    plain = world.settings()  # no flag key: the default, so the journal's wins
    effective = undo_ops.journal_settings(plain, journal)
    assert (effective.flag_key, effective.collection) == ("is_assigned", "faces")
    with pytest.raises(ConfigError, match=r"--flag-key 'other' \(from the settings given\)"):
        undo_ops.undo(world.settings(flag_key="other"), journal)
    # Stores opened without the flag key would read the wrong payload keys: refused.
    with pytest.raises(ConfigError, match="the stores given were opened with --flag-key unset"):
        undo_ops.undo(plain, journal, stores=world.stores(plain))

    result = undo_ops.undo(plain, journal, stores=world.stores(effective))
    assert (result.restored, result.conflicts) == (3, 0)
    assert snapshot(world.client) == before
