"""Both Qdrant engines the tests run (local mode and Qdrant Edge), in two collection shapes:
"plain" is the service's (one unnamed 512-d cosine vector); "mixed" has every kind of vector
(unnamed dense cosine, named dense, a cosine multi-vector, sparse). Points are written around
the adapter, in the engine's own types, as the service would write them.
"""

from __future__ import annotations

import random
import uuid
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import qdrant_edge as edge
from qdrant_client import QdrantClient, models

from reconcile.settings import ORPHAN_KEY, Settings
from reconcile.stores.base import PointId, PointStore
from reconcile.stores.edge import EdgeQdrant
from reconcile.stores.qdrant import Qdrant
from tests.helpers import PERSON_A

DIM = 512  # the service's embeddings


def f32(x: float) -> float:
    """`x` as the nearest f32, the precision both engines store vectors in."""
    return array("f", [x])[0]


def service_payload(person: str | None, **extra: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "face_instance_id": str(uuid.uuid4()),
        "asset_id": 7,
        "is_assigned": person is not None,
        "bbox": {"x": 1, "y": 2, "w": 30.5, "h": None},
        "tags": ["a", 1, 2.5, True, None],
    }
    if person is not None:
        payload["person_id"] = person
    payload.update(extra)
    return payload


# --- the engines --------------------------------------------------------------------------
#
# Two collection shapes: "plain" is the service's (one unnamed 512-d cosine vector);
# "mixed" has every kind of vector. Points are written around the adapter, in the
# engine's own types, as the service would write them.


class Engine:
    name: str
    store: PointStore

    def __init__(self, root: Path) -> None:
        self.root = root
        self.settings = Settings("postgresql://x@localhost/x", qdrant_path=str(root))

    def create(self, shape: str) -> PointStore:
        raise NotImplementedError

    def write(self, points: list[tuple[PointId, Any, dict[str, Any]]]) -> None:
        """Upsert (id, vectors as JSON, payload), converted to the engine's own types."""
        raise NotImplementedError

    def reopen(self) -> PointStore:
        """Closed and opened again from disk: what a later run of the tool sees."""
        raise NotImplementedError

    def count(self) -> int:
        return self.store.count()


class Local(Engine):
    name = "local"

    def create(self, shape: str) -> PointStore:
        client = QdrantClient(path=str(self.root))
        if shape == "plain":
            client.create_collection(
                "faces",
                vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE),
            )
        else:
            client.create_collection(
                "faces",
                vectors_config={
                    "": models.VectorParams(size=4, distance=models.Distance.COSINE),
                    "dot": models.VectorParams(size=3, distance=models.Distance.DOT),
                    "multi": models.VectorParams(
                        size=2,
                        distance=models.Distance.COSINE,
                        multivector_config=models.MultiVectorConfig(
                            comparator=models.MultiVectorComparator.MAX_SIM
                        ),
                    ),
                },
                sparse_vectors_config={"sp": models.SparseVectorParams()},
            )
        self.store = Qdrant(self.settings, client=client)
        return self.store

    def write(self, points: list[tuple[PointId, Any, dict[str, Any]]]) -> None:
        assert isinstance(self.store, Qdrant)
        structs = []
        for pid, given, payload in points:
            vectors = given
            if isinstance(given, dict):
                vectors = {
                    k: models.SparseVector(**v) if isinstance(v, dict) else v
                    for k, v in given.items()
                }
            structs.append(models.PointStruct(id=pid, vector=vectors, payload=payload))
        self.store.client.upsert("faces", structs)

    def reopen(self) -> PointStore:
        self.store.close()
        self.store = Qdrant(self.settings)
        return self.store


class Edge(Engine):
    name = "edge"

    def create(self, shape: str) -> PointStore:
        if shape == "plain":
            config = edge.EdgeConfig(
                vectors=edge.EdgeVectorParams(size=DIM, distance=edge.Distance.Cosine)
            )
        else:
            config = edge.EdgeConfig(
                vectors={
                    "": edge.EdgeVectorParams(size=4, distance=edge.Distance.Cosine),
                    "dot": edge.EdgeVectorParams(size=3, distance=edge.Distance.Dot),
                    "multi": edge.EdgeVectorParams(
                        size=2,
                        distance=edge.Distance.Cosine,
                        multivector_config=edge.MultiVectorConfig(
                            edge.MultiVectorComparator.MaxSim
                        ),
                    ),
                },
                sparse_vectors={"sp": edge.EdgeSparseVectorParams()},
            )
        self.root.mkdir()
        shard = edge.EdgeShard.create(str(self.root), config)
        self.store = EdgeQdrant(self.settings, self.root, shard)
        return self.store

    def write(self, points: list[tuple[PointId, Any, dict[str, Any]]]) -> None:
        assert isinstance(self.store, EdgeQdrant)
        batch = []
        for pid, given, payload in points:
            vectors = given
            if isinstance(given, dict):
                vectors = {
                    k: edge.SparseVector(v["indices"], v["values"]) if isinstance(v, dict) else v
                    for k, v in given.items()
                }
            batch.append(edge.Point(pid, vectors, payload))
        self.store.shard.update(edge.UpdateOperation.upsert_points(batch))

    def reopen(self) -> PointStore:
        self.store.close()
        self.store = EdgeQdrant(self.settings, self.root)
        return self.store


@pytest.fixture(params=[Local, Edge], ids=["local", "edge"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    e: Engine = request.param(tmp_path / "store")
    yield e
    if hasattr(e, "store"):
        e.store.close()


def gauss(rng: random.Random, n: int) -> list[float]:
    return [rng.gauss(0, 1) for _ in range(n)]


def seed(engine: Engine, shape: str, n: int = 24) -> list[PointId]:
    """`n` points with random vectors (not normalized: the engine does that), half with
    integer ids and half with UUIDs; returns their ids."""
    rng = random.Random(14)
    ids: list[PointId] = [rng.randrange(2**40) for _ in range(n // 2)]
    ids += [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(n - n // 2)]
    points = []
    for i, pid in enumerate(ids):
        vectors: Any
        if shape == "plain":
            vectors = gauss(rng, DIM)
        else:
            vectors = {
                "": gauss(rng, 4),
                "dot": gauss(rng, 3),
                "multi": [gauss(rng, 2) for _ in range(1 + i % 3)],
                "sp": {"indices": rng.sample(range(1000), 5), "values": gauss(rng, 5)},
            }
            if i % 4 == 3:
                del vectors["dot"]  # a point may lack some named vectors
            if i % 6 == 5:
                vectors = {"": vectors[""]}  # or have only its unnamed one
        person = PERSON_A if i % 2 else None
        points.append((pid, vectors, service_payload(person, **{ORPHAN_KEY: f"2026-01-0{i % 9}"})))
    engine.write(points)
    return ids
