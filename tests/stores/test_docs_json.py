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
DATA_KEYED = {
    "counts",
    "remaining",
    "estimates",
    "keys_found",
    "settings",
    "keys",  # per compared key: the audit's breakdown, the plan's set and clear
    "top_values",  # per --map key
    "mapped",  # check: per --map key, its column and type
    "map",  # check --suggest-map: payload key -> column
}


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
    """With mapped keys, so that every per-key map (`keys`, `top_values`, the plan's
    `keys`, check's `mapped`) holds entries whose own keys are checked too."""
    person = world.person()
    for _ in range(3):
        world.face(person, payload={"is_assigned": True})
    world.face(None)
    synced = world.face(person)  # in sync but for its cluster: check finds every key
    world.upsert(synced, {**world.payload(synced), "cluster_id": "c_1"})
    # A cluster merged in PostgreSQL only: every face's cluster_id drifts.
    world.conn.execute("UPDATE face_instances SET cluster_id = 'c_2'")
    env = world.env()
    flag = ["--flag-key", "is_assigned", "--map", "cluster_id=cluster_id"]
    flag += ["--map", "asset_id=asset_id::text"]
    journal = tmp_path / "j.jsonl"
    outputs = {
        "check": run_json("check", *flag, env=env),
        "check --suggest-map": run_json("check", "--suggest-map", *flag, env=env),
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
    # The mapped keys were compared, counted and planned, not only accepted.
    audit = outputs["audit"]
    assert audit["counts"]["payload_mismatch"] == 2  # the face without a person, and `synced`
    assert audit["keys"]["cluster_id"] == {"missing": 4, "wrong": 1, "stale": 0}
    assert audit["top_values"]["cluster_id"] == [{"value": "c_2", "drifted": 5, "error": 0}]
    assert outputs["repair --dry-run"]["planned"]["keys"]["cluster_id"] == {"set": 5, "clear": 0}
    assert set(outputs["check"]["table"]["mapped"]) == {"cluster_id", "asset_id"}
