"""The same scenarios against both Qdrant backends: local mode (qdrant-client) and Qdrant Edge."""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import QdrantClient, models

from reconcile.errors import ConfigError, StoreError
from reconcile.settings import Settings
from reconcile.stores.base import DeleteKeys, PointId, PointStore, SetKeys
from reconcile.stores.edge import EdgeQdrant, create_edge_store, open_edge_store, upsert
from reconcile.stores.qdrant import Qdrant
from reconcile.testing.world import create_collection
from tests.world import World

DIM = 4
Seed = Sequence[tuple[PointId, dict[str, Any]]]

PERSON_A = "0b8e1c52-77e4-4a39-9d1e-3f0c2a8d5e11"
PERSON_B = "c4d2a9f0-1e3b-4c7d-8a6f-5b9e0d2c7a33"

# Edges of both id spaces: 9 < 10 numerically but not as text, the sign bit of
# the first UUID byte, and UUIDs that start with a digit or a letter.
EDGE_INTS = [0, 1, 9, 10, 11, 99, 100, 2**53 + 1]
EDGE_UUIDS = [
    "00000000-0000-0000-0000-000000000000",
    "00000000-0000-0000-0000-000000000001",
    "7fffffff-ffff-ffff-ffff-ffffffffffff",
    "80000000-0000-0000-0000-000000000000",
    "9fffffff-0000-0000-0000-000000000000",
    "a0000000-0000-0000-0000-000000000000",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
]


def service_payload(person: str | None, **extra: Any) -> dict[str, Any]:
    """A payload as the service writes it: other keys besides the configured ones."""
    payload: dict[str, Any] = {"face_instance_id": str(uuid.uuid4()), "asset_id": "7"}
    payload["is_assigned"] = person is not None
    if person is not None:
        payload["person_id"] = person
    payload.update(extra)
    return payload


def ascending(ids: Sequence[PointId]) -> list[PointId]:
    """Qdrant's scroll order, written out: integers ascending, then UUID strings."""
    ints = sorted(i for i in ids if isinstance(i, int))
    uuids = sorted(i for i in ids if isinstance(i, str))
    return [*ints, *uuids]


class Backend:
    """One store, filled with a seed, behind the adapter under test."""

    name: str
    adapter: PointStore

    def __init__(self, root: Path, settings: Settings) -> None:
        self.root = root
        self.settings = settings

    def fill(self, seed: Seed) -> PointStore:
        raise NotImplementedError

    def payload(self, point_id: PointId) -> dict[str, Any]:
        """The whole payload, every key, read around the adapter."""
        raise NotImplementedError

    def reopen(self) -> PointStore:
        raise NotImplementedError

    def open_missing(self, path: Path) -> PointStore:
        raise NotImplementedError

    def close(self) -> None:
        self.adapter.close()


class LocalBackend(Backend):
    name = "local"

    def fill(self, seed: Seed) -> PointStore:
        self.client = QdrantClient(path=str(self.root))
        create_collection(self.client, "faces", dim=DIM)
        if seed:
            self.client.upsert(
                "faces",
                [models.PointStruct(id=i, vector=[0.5] * DIM, payload=p) for i, p in seed],
            )
        self.adapter = Qdrant(self.settings, client=self.client)
        return self.adapter

    def payload(self, point_id: PointId) -> dict[str, Any]:
        (record,) = self.client.retrieve("faces", [point_id], with_payload=True)
        return dict(record.payload or {})

    def reopen(self) -> PointStore:
        self.adapter.close()
        self.adapter = Qdrant(self.settings)
        self.client = self.adapter.client
        return self.adapter

    def open_missing(self, path: Path) -> PointStore:
        return Qdrant(Settings(self.settings.database_url, qdrant_path=str(path)))


class EdgeBackend(Backend):
    name = "edge"

    def fill(self, seed: Seed) -> PointStore:
        shard = create_edge_store(self.root, DIM, keyword_keys=["person_id"])
        upsert(shard, seed, DIM, batch_size=5)
        shard.close()
        # Opened again from disk: the path a run of the tool takes.
        self.edge = EdgeQdrant(self.settings, self.root)
        self.adapter = self.edge
        return self.adapter

    def payload(self, point_id: PointId) -> dict[str, Any]:
        (record,) = self.edge.shard.retrieve([point_id], True, False)
        return dict(record.payload or {})

    def reopen(self) -> PointStore:
        self.adapter.close()
        self.edge = EdgeQdrant(self.settings, self.root)
        self.adapter = self.edge
        return self.adapter

    def open_missing(self, path: Path) -> PointStore:
        return EdgeQdrant(self.settings, path)


@pytest.fixture(params=[LocalBackend, EdgeBackend], ids=["local", "edge"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    # Settings still insist on a URL or a local path; the edge adapter takes its path apart.
    settings = Settings(
        "postgresql://reconcile@localhost/reconcile",
        qdrant_path=str(tmp_path / "store"),
        flag_key="is_assigned",
        page_size=3,
    )
    kind: Callable[[Path, Settings], Backend] = request.param
    b = kind(tmp_path / "store", settings)
    yield b
    if hasattr(b, "adapter"):
        b.close()


def mixed_seed(n_random: int = 10) -> list[tuple[PointId, dict[str, Any]]]:
    rng = random.Random(5)
    ids: list[PointId] = [*EDGE_INTS, *EDGE_UUIDS]
    ids += [rng.randrange(2**40) for _ in range(n_random)]
    ids += [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(n_random)]
    rng.shuffle(ids)
    return [(i, service_payload(PERSON_A if n % 2 else None)) for n, i in enumerate(ids)]


def test_points_ascending_across_pages(backend: Backend) -> None:
    seed = mixed_seed()
    store = backend.fill(seed)
    expected = ascending([i for i, _ in seed])
    got = [p.point_id for p in store.points()]
    assert got == expected
    assert len(got) > 5 * backend.settings.page_size  # many pages, not one
    assert all(isinstance(i, int) or i == i.lower() for i in got)


def test_points_stay_ascending_after_writes(backend: Backend) -> None:
    seed = mixed_seed()
    store = backend.fill(seed)
    ids = [i for i, _ in seed]
    store.apply([SetKeys({"person_id": PERSON_B, "is_assigned": True}, ids[::3])])
    store.apply([DeleteKeys(["person_id"], ids[1::4])])
    assert [p.point_id for p in store.points()] == ascending(ids)


def test_ids_from_an_offset_page_by_page(backend: Backend) -> None:
    """The sampler's read: ids from an inclusive offset, and where the next page starts."""
    seed = mixed_seed()
    store = backend.fill(seed)
    expected = ascending([i for i, _ in seed])
    start = expected[len(expected) // 3]  # an existing id: the offset is inclusive
    got: list[PointId] = []
    offset: PointId | None = start
    while offset is not None:
        page, offset = store.ids_from(offset, 7)
        assert len(page) <= 7
        got += page
    assert got == expected[len(expected) // 3 :]
    assert store.ids_from(expected[-1], 5) == ([expected[-1]], None)
    assert store.estimated_count() == len(seed)  # approximate, but exact at this size


def test_payload_holds_only_configured_keys(backend: Backend) -> None:
    store = backend.fill(
        [
            (1, service_payload(PERSON_A, embedding_model="x")),
            (2, service_payload(None)),
            (3, {"person_id": None, "asset_id": "7"}),  # null is not absent
            (EDGE_UUIDS[0], {"asset_id": "7"}),
        ]
    )
    expected: dict[PointId, dict[str, Any]] = {
        1: {"person_id": PERSON_A, "is_assigned": True},
        2: {"is_assigned": False},
        3: {"person_id": None},
        EDGE_UUIDS[0]: {},
    }
    assert {p.point_id: dict(p.payload) for p in store.points()} == expected
    assert store.retrieve(list(expected)) == expected


def test_retrieve_leaves_absent_points_out(backend: Backend) -> None:
    present = str(uuid.uuid4())
    store = backend.fill([(present, service_payload(PERSON_A)), (42, service_payload(None))])
    absent_uuid = str(uuid.uuid4())
    assert store.retrieve([present, absent_uuid, 42, 43]) == {
        present: {"person_id": PERSON_A, "is_assigned": True},
        42: {"is_assigned": False},
    }
    assert store.retrieve([absent_uuid, 43]) == {}
    assert store.retrieve([]) == {}


def test_set_and_delete_keys_leave_other_keys_untouched(backend: Backend) -> None:
    a, b, c = str(uuid.uuid4()), 7, str(uuid.uuid4())
    seed: list[tuple[PointId, dict[str, Any]]] = [
        (a, service_payload(None)),
        (b, service_payload(PERSON_A)),
        (c, service_payload(PERSON_A, note="keep me")),
    ]
    store = backend.fill(seed)
    before = {i: backend.payload(i) for i, _ in seed}
    store.apply(
        [
            SetKeys({"person_id": PERSON_B, "is_assigned": True}, [a, b]),
            DeleteKeys(["person_id"], [c]),
            SetKeys({"is_assigned": False}, [c]),
        ]
    )
    assert backend.payload(a) == {**before[a], "person_id": PERSON_B, "is_assigned": True}
    assert backend.payload(b) == {**before[b], "person_id": PERSON_B}
    rest = {k: v for k, v in before[c].items() if k != "person_id"}
    assert backend.payload(c) == {**rest, "is_assigned": False}


def test_operations_apply_in_order(backend: Backend) -> None:
    store = backend.fill([(1, service_payload(None)), (2, service_payload(None))])
    store.apply(
        [
            SetKeys({"person_id": PERSON_A}, [1]),
            DeleteKeys(["person_id"], [1]),
            DeleteKeys(["person_id"], [2]),
            SetKeys({"person_id": PERSON_A}, [2]),
        ]
    )
    assert store.retrieve([1, 2]) == {
        1: {"is_assigned": False},
        2: {"person_id": PERSON_A, "is_assigned": False},
    }


@pytest.mark.parametrize("absent", [404, "5d3c5a8e-0000-4000-8000-000000000404"])
def test_missing_point_in_apply_raises_store_error(backend: Backend, absent: PointId) -> None:
    store = backend.fill([(1, service_payload(None))])
    with pytest.raises(StoreError, match="no point"):
        store.apply([SetKeys({"person_id": PERSON_A}, [1, absent])])
    with pytest.raises(StoreError, match="no point"):
        store.apply([DeleteKeys(["person_id"], [absent])])
    assert store.count() == 1  # nothing was created for the absent id


def test_writes_survive_close_and_reopen(backend: Backend) -> None:
    store = backend.fill([(1, service_payload(None))])
    store.apply([SetKeys({"person_id": PERSON_A, "is_assigned": True}, [1])])
    store = backend.reopen()
    assert store.retrieve([1]) == {1: {"person_id": PERSON_A, "is_assigned": True}}


def test_count_and_has_key(backend: Backend) -> None:
    seed = mixed_seed(n_random=3)
    seed.append((5000, {"flag_only": True, "nothing": None}))
    store = backend.fill(seed)
    store.require_collection()
    assert store.count() == len(seed)
    assert store.has_key("person_id")
    assert store.has_key("is_assigned")
    assert store.has_key("flag_only")
    assert not store.has_key("nothing")  # null counts as empty, as in Qdrant
    assert not store.has_key("no_such_key")


def test_facet_counts_every_value(backend: Backend) -> None:
    persons = [str(uuid.UUID(int=n)) for n in range(1, 1102)]  # more than one answer holds
    seed: list[tuple[PointId, dict[str, Any]]] = [
        (n, service_payload(person)) for n, person in enumerate(persons, 1)
    ]
    seed += [(5000, service_payload(persons[0])), (5001, service_payload(None))]
    store = backend.fill(seed)
    counts = store.facet_counts("person_id", at_least=0)
    assert counts == {person: 2 if person == persons[0] else 1 for person in persons}


def test_empty_store(backend: Backend) -> None:
    store = backend.fill([])
    store.require_collection()
    assert store.count() == 0
    assert list(store.points()) == []
    assert not store.has_key("person_id")
    assert store.retrieve([1]) == {}
    assert store.facet_counts("person_id", at_least=0) == {}


def test_missing_store_is_a_config_error(backend: Backend, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        backend.open_missing(tmp_path / "nowhere")


def test_store_in_use_is_a_store_error(backend: Backend) -> None:
    backend.fill([(1, service_payload(None))])
    with pytest.raises(StoreError, match="in use"):
        if isinstance(backend, EdgeBackend):
            EdgeQdrant(backend.settings, backend.root)
        else:
            Qdrant(backend.settings)


# --- what only the edge adapter promises --------------------------------------------


def test_edge_apply_with_a_missing_point_writes_nothing(tmp_path: Path) -> None:
    # The engine alone would write the points it has before failing (so does local
    # mode); the adapter checks first so that the failed batch's outcome is known.
    shard = create_edge_store(tmp_path, DIM)
    upsert(shard, [(1, {"is_assigned": False})], DIM)
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
    shard = create_edge_store(tmp_path, DIM)
    upsert(shard, [(1, {})], DIM)
    shard.close()
    with pytest.raises(ConfigError, match="already contains"):
        create_edge_store(tmp_path, DIM)


def test_edge_close_is_idempotent(tmp_path: Path) -> None:
    create_edge_store(tmp_path, DIM).close()
    store = EdgeQdrant(Settings("postgresql://x@localhost/x", qdrant_path=str(tmp_path)), tmp_path)
    store.close()
    store.close()


def test_edge_facet_without_an_index_says_so(tmp_path: Path) -> None:
    shard = create_edge_store(tmp_path, DIM)
    upsert(shard, [(1, {"person_id": PERSON_A})], DIM)
    store = EdgeQdrant(
        Settings("postgresql://x@localhost/x", qdrant_path=str(tmp_path)), tmp_path, shard
    )
    with pytest.raises(StoreError, match="index"):
        store.facet_counts("person_id", at_least=0)
    store.close()


def test_cli_audit_and_repair_on_an_edge_store(world: World, tmp_path: Path) -> None:
    """The same commands, end to end, with --qdrant-edge instead of a server or local mode."""
    import json

    from tests.conftest import run_cli

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
