"""The same scenarios against both Qdrant backends: local mode (qdrant-client) and Qdrant Edge."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import QdrantClient, models

from reconcile.errors import ConfigError, StoreError
from reconcile.settings import Settings
from reconcile.stores.base import DeleteKeys, PointId, PointStore, SetKeys
from reconcile.stores.edge import EdgeQdrant, create_edge_store, upsert
from reconcile.stores.qdrant import Qdrant
from reconcile.testing.world import create_collection
from tests.helpers import PERSON_A, PERSON_B, STORE_DIM

Seed = Sequence[tuple[PointId, dict[str, Any]]]

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
        create_collection(self.client, "faces", dim=STORE_DIM)
        if seed:
            self.client.upsert(
                "faces",
                [models.PointStruct(id=i, vector=[0.5] * STORE_DIM, payload=p) for i, p in seed],
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
        shard = create_edge_store(self.root, STORE_DIM, keyword_keys=["person_id"])
        upsert(shard, seed, STORE_DIM, batch_size=5)
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
