"""What only the Qdrant Edge adapter promises, and the CLI end to end on an Edge store."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from reconcile.errors import ConfigError, StoreError
from reconcile.settings import Settings
from reconcile.stores.base import DeleteKeys, SetKeys
from reconcile.stores.edge import EdgeQdrant, create_edge_store, open_edge_store, upsert
from tests.helpers import PERSON_A, STORE_DIM
from tests.world import World


def test_edge_apply_with_a_missing_point_writes_nothing(tmp_path: Path) -> None:
    # The engine alone would write the points it has before failing (so does local
    # mode); the adapter checks first so that the failed batch's outcome is known.
    shard = create_edge_store(tmp_path, STORE_DIM)
    upsert(shard, [(1, {"is_assigned": False})], STORE_DIM)
    settings = Settings(
        "postgresql://x@localhost/x", qdrant_path=str(tmp_path), flag_key="is_assigned"
    )
    store = EdgeQdrant(settings, tmp_path, shard=shard)
    with pytest.raises(StoreError, match=re.escape("no point 2 (and 1 more); nothing written")):
        store.apply([SetKeys({"person_id": PERSON_A}, [1, 2]), DeleteKeys(["x"], [3])])
    assert store.retrieve([1]) == {1: {"is_assigned": False}}
    store.close()


def test_edge_refuses_a_directory_that_is_not_a_store(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a shard")
    with pytest.raises(ConfigError, match="not a Qdrant Edge store"):
        open_edge_store(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # left as it was


def test_edge_create_refuses_an_existing_store(tmp_path: Path) -> None:
    shard = create_edge_store(tmp_path, STORE_DIM)
    upsert(shard, [(1, {})], STORE_DIM)
    shard.close()
    with pytest.raises(ConfigError, match="already contains"):
        create_edge_store(tmp_path, STORE_DIM)


def test_edge_close_is_idempotent(tmp_path: Path) -> None:
    create_edge_store(tmp_path, STORE_DIM).close()
    store = EdgeQdrant(Settings("postgresql://x@localhost/x", qdrant_path=str(tmp_path)), tmp_path)
    store.close()
    store.close()


def test_edge_facet_without_an_index_says_so(tmp_path: Path) -> None:
    shard = create_edge_store(tmp_path, STORE_DIM)
    upsert(shard, [(1, {"person_id": PERSON_A})], STORE_DIM)
    store = EdgeQdrant(
        Settings("postgresql://x@localhost/x", qdrant_path=str(tmp_path)), tmp_path, shard
    )
    with pytest.raises(StoreError, match="index"):
        store.facet_counts("person_id", at_least=0)
    store.close()


def test_cli_audit_and_repair_on_an_edge_store(world: World, tmp_path: Path) -> None:
    """The same commands, end to end, with --qdrant-edge instead of a server or local mode."""
    import json

    from tests.helpers import run_cli

    p = world.person()
    synced = world.face(p, point=False)
    drifted = world.face(p, point=False)
    store = tmp_path / "edge"
    shard = create_edge_store(store, 4, keyword_keys=["person_id"])
    upsert(shard, [(synced, {"person_id": p, "is_assigned": True}), (drifted, {})], dim=4)
    shard.close()
    env = {"DATABASE_URL": world.url, "QDRANT_EDGE": ""}
    args = ["--qdrant-edge", str(store), "--flag-key", "is_assigned"]
    audit = run_cli("audit", *args, "--format", "json", env=env)
    assert audit.returncode == 1, audit.stderr
    assert json.loads(audit.stdout)["counts"]["missing_person"] == 1
    repair = run_cli(
        "repair",
        *args,
        "--yes",
        "--max-changes",
        "100%",
        "--format",
        "json",
        "--journal",
        str(tmp_path / "j.jsonl"),
        env=env,
    )
    assert repair.returncode == 0, repair.stderr
    assert json.loads(repair.stdout)["verified"] == 1
    counts = run_cli("audit", *args, "--counts", "--format", "json", env=env)
    assert counts.returncode == 0, counts.stderr
    # Sampling reads the store through the same adapter (ids from offsets, estimates).
    sample = run_cli("audit", *args, "--sample", "20", "--seed", "3", "--format", "json", env=env)
    assert sample.returncode == 0, sample.stderr
    sampled = json.loads(sample.stdout)
    assert sampled["points"]["sampled"] > 0 and sampled["points"]["population_estimate"] == 2
    assert sampled["drift_seen"] == 0
