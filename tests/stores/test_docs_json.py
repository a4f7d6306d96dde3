"""Every key of every JSON output is documented in the README (as the flags and exit
codes are in tests/unit/test_docs.py): each command is run for real and its JSON read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from reconcile.diff import Kind
from tests.helpers import ROOT, run_cli
from tests.world import World

README = (ROOT / "README.md").read_text()
# Maps whose keys are data, not names: drift kinds (documented as kinds) and payload keys.
DATA_KEYED = {"counts", "remaining", "estimates", "keys_found", "settings"}


def keys(value: Any, found: set[str]) -> set[str]:
    if isinstance(value, dict):
        for key, inner in value.items():
            found.add(key)
            if key in DATA_KEYED and isinstance(inner, dict):
                assert set(inner) <= {k.value for k in Kind} | set(inner), key
                for each in inner.values():
                    keys(each, found)
            else:
                keys(inner, found)
    elif isinstance(value, list):
        for item in value:
            keys(item, found)
    return found


def run_json(*args: str, env: dict[str, str]) -> Any:
    done = run_cli(*args, "--format", "json", env=env)
    assert done.returncode in (0, 1), f"{args}: {done.stderr}"
    return json.loads(done.stdout)


def test_every_json_key_of_every_command_is_in_the_readme(world: World, tmp_path: Path) -> None:
    person = world.person()
    for _ in range(3):
        world.face(person, payload={"is_assigned": True})
    world.face(None)
    world.face(person)  # in sync: check finds the person key
    env = world.env()
    flag = ["--flag-key", "is_assigned"]
    journal = tmp_path / "j.jsonl"
    outputs = {
        "check": run_json("check", *flag, env=env),
        "audit": run_json("audit", *flag, "--top", "1", env=env),
        "audit --counts": run_json("audit", "--counts", *flag, env=env),
        "audit --sample": run_json("audit", "--sample", "3", "--seed", "1", *flag, env=env),
        "repair --dry-run": run_json("repair", "--dry-run", *flag, env=env),
        "repair": run_json(
            "repair", "--yes", "--max-changes", "100%", "--journal", str(journal), *flag, env=env
        ),
        "undo": run_json("undo", str(journal), "--yes", *flag, env=env),
        "journals": run_json("journals", "--dir", str(tmp_path), env=env),
        "config show": run_json("config", "show", *flag, env=env),
    }
    missing = {
        command: sorted(k for k in keys(data, set()) if f"`{k}`" not in README)
        for command, data in outputs.items()
    }
    undocumented = {command: ks for command, ks in missing.items() if ks}
    assert not undocumented, json.dumps(undocumented)
