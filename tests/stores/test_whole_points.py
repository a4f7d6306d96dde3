"""Whole points out, deletes, insert-only re-creation: the store layer under orphan deletion
and its undo, on local mode (qdrant-client) and Qdrant Edge.

Both engines hold every kind of vector the tests use: an unnamed dense cosine vector,
named dense vectors, a cosine multi-vector and a sparse vector, in one collection.
"""

from __future__ import annotations

import http.server
import json
import math
import struct
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from reconcile.errors import StoreError
from reconcile.settings import ORPHAN_KEY, Settings
from reconcile.stores.base import PointStore, WholePoint
from reconcile.stores.edge import EdgeQdrant
from reconcile.stores.qdrant import Qdrant
from tests.engines import DIM, Engine, engine, f32, seed, service_payload
from tests.helpers import PERSON_A, PERSON_B

__all__ = ["engine"]  # the fixture, used by name

UUID_A = "8d3c1a52-77e4-4a39-9d1e-3f0c2a8d5e11"
UUID_B = "f4d2a9f0-1e3b-4c7d-8a6f-5b9e0d2c7a33"


def bits(x: float) -> int:
    """The f32 `x` as an integer: neighbouring f32 values (of one sign) differ by one."""
    return int(struct.unpack("<i", struct.pack("<f", x))[0])


def ulps(a: float, b: float) -> int:
    """How many f32 steps apart two f32 values are."""
    return abs(bits(a) - bits(b))


def floats(vectors: Any) -> list[float]:
    """Every float of a JSON vectors structure, in a fixed order."""
    if isinstance(vectors, dict):
        return [x for k in sorted(vectors) for x in floats(vectors[k])]
    if isinstance(vectors, list):
        return [x for v in vectors for x in floats(v)]
    return [vectors]


# --- whole() ------------------------------------------------------------------------------


def test_whole_returns_every_vector_as_the_engine_stores_it(engine: Engine) -> None:
    store = engine.create("mixed")
    payload = service_payload(PERSON_A, nested={"x": [1, None, {"y": False}]})
    engine.write(
        [
            (
                1,
                {
                    "": [3.0, 4.0, 0.0, 0.0],
                    "dot": [1.0, -2.0, 0.1],
                    "multi": [[1.0, 1.0], [3.0, 4.0]],
                    "sp": {"indices": [9, 1], "values": [0.5, 0.25]},
                },
                payload,
            ),
            (UUID_A, {"": [0.0, 0.0, 0.0, 2.0], "sp": {"indices": [3], "values": [1.5]}}, {}),
        ]
    )
    got = store.whole([1, UUID_A, 2, UUID_B])  # 2 and UUID_B do not exist
    assert sorted(got, key=str) == [1, UUID_A]
    # Cosine vectors come back normalized, as f32; dot vectors as given (as f32);
    # sparse ones sorted by index.
    root_half = f32(1 / math.sqrt(2))
    assert got[1].to_json() == {
        "point_id": 1,
        "vectors": {
            "": [f32(0.6), f32(0.8), 0.0, 0.0],
            "dot": [1.0, -2.0, f32(0.1)],
            "multi": [[root_half, root_half], [f32(0.6), f32(0.8)]],
            "sp": {"indices": [1, 9], "values": [0.25, 0.5]},
        },
        "payload": payload,
    }
    assert got[UUID_A].vectors == {
        "": [0.0, 0.0, 0.0, 1.0],
        "sp": {"indices": [3], "values": [1.5]},
    }
    assert got[UUID_A].payload == {}
    assert store.whole([]) == {}


def test_whole_of_the_services_shape_is_one_normalized_list(engine: Engine) -> None:
    store = engine.create("plain")
    ids = seed(engine, "plain", n=4)
    got = store.whole(ids)
    for pid in ids:
        vector = got[pid].vectors
        assert isinstance(vector, list) and len(vector) == DIM
        assert all(type(x) is float and f32(x) == x for x in vector)
        assert math.isclose(math.fsum(x * x for x in vector), 1.0, abs_tol=1e-6)
        assert got[pid].payload[ORPHAN_KEY]  # the whole payload, the tool's key too


# --- delete() and insert_only(): undoing a delete ------------------------------------------


# Local mode keeps two forms of a cosine vector (qdrant-client 1.20, see
# qdrant/qdrant-client#1381): in the session that wrote it, the vector normalized by
# its write path; on disk, and so after reopening, the vector exactly as it was given.
# A point the application wrote unnormalized thus reads back normalized through the
# writer's client but raw in any later process; and a point re-created from what was
# read comes back exact only once reopened. Each run of the tool is a later process, so
# the tests compare after reopening, and in the writing session only where local mode
# allows. Qdrant Edge (and a server) skip an already normalized vector: one form.


@pytest.mark.parametrize("later_run", [False, True], ids=["same-session", "later-run"])
@pytest.mark.parametrize("shape", ["plain", "mixed"])
def test_delete_then_insert_only_recreates_the_points_exactly(
    engine: Engine, shape: str, later_run: bool
) -> None:
    store = engine.create(shape)
    ids = seed(engine, shape)
    if later_run:
        store = engine.reopen()  # the tool runs after the application wrote
    bystander = ids.pop()
    before = store.whole(ids)
    # Through the journal's form: what undo reads back is JSON text.
    journaled = [WholePoint.from_json(json.loads(json.dumps(p.to_json()))) for p in before.values()]

    store.delete(ids)
    assert store.whole(ids) == {}
    assert engine.count() == 1
    store.insert_only(journaled)
    assert engine.count() == len(ids) + 1

    now = store.whole(ids)
    assert sorted(now, key=str) == sorted(before, key=str)
    for pid, point in now.items():
        assert point.payload == before[pid].payload
        if engine.name == "edge":
            assert point.equals(before[pid])
        elif not later_run:
            # Normalized once more by local mode's write path (in f32 or f64), a value
            # can move by one f32 step; read from a later run it can move anywhere.
            a, b = floats(point.vectors), floats(before[pid].vectors)
            assert len(a) == len(b) and max(ulps(x, y) for x, y in zip(a, b, strict=True)) <= 1

    store = engine.reopen()
    again = store.whole([*ids, bystander])
    for pid in ids:
        assert again[pid].equals(before[pid]), pid  # field by field: vectors and payload
    assert bystander in again


def test_insert_only_never_overwrites_a_point_that_exists(engine: Engine) -> None:
    engine.create("mixed")
    ids = seed(engine, "mixed", n=6)
    store = engine.reopen()  # the tool runs after the application wrote
    kept, gone, recreated_by_app = ids[0], ids[1], ids[2]
    before = store.whole(ids)
    store.delete([gone, recreated_by_app])
    # Meanwhile the application writes the point again with a new embedding and payload.
    engine.write(
        [(recreated_by_app, {"": [0.0, 1.0, 0.0, 0.0]}, service_payload(PERSON_B, fresh=True))]
    )
    app_version = store.whole([recreated_by_app])[recreated_by_app]
    # The same ids with other contents: written over, they would show.
    changed = {
        pid: WholePoint(pid, {"": [1.0, 0.0, 0.0, 0.0]}, {"overwritten": True})
        for pid in (kept, recreated_by_app)
    }
    store.insert_only([changed[kept], before[gone], changed[recreated_by_app]])

    after = store.whole(ids)
    assert after[kept].equals(before[kept])
    assert after[recreated_by_app].equals(app_version)
    assert after[gone].payload == before[gone].payload  # the absent one was created
    store = engine.reopen()
    after = store.whole(ids)
    assert after[kept].equals(before[kept])
    assert after[recreated_by_app].equals(app_version)
    assert after[gone].equals(before[gone])


def test_absent_ids_and_empty_calls_are_no_ops(engine: Engine) -> None:
    """A delete whose points are already gone succeeds (a retry after a crash finds them
    gone); empty calls make no request (local mode would refuse an empty upsert)."""
    store = engine.create("plain")
    ids = seed(engine, "plain", n=4)
    before = store.whole(ids)
    store.delete([10**12, UUID_B])
    store.delete([ids[0], ids[0]])
    store.delete([ids[0]])  # again
    store.delete([])
    store.insert_only([])
    assert store.whole([]) == {}
    assert sorted(store.whole(ids), key=str) == sorted(ids[1:], key=str)
    with pytest.raises(ValueError, match="same point id twice"):
        store.insert_only([before[ids[0]], before[ids[0]]])
    assert engine.count() == 3  # nothing written by the refused call


def test_insert_only_into_a_collection_without_those_vectors_is_a_store_error(
    engine: Engine,
) -> None:
    store = engine.create("plain")
    stray = WholePoint(5, {"other": [1.0, 0.0]}, {})
    with pytest.raises(StoreError) as caught:
        store.insert_only([stray])
    assert "\n" not in str(caught.value) and "re-creat" in str(caught.value)
    assert engine.count() == 0


# --- the tool's own payload key ------------------------------------------------------------


def test_extra_keys_are_read_only_when_asked_for(engine: Engine) -> None:
    engine.create("plain")
    ids = seed(engine, "plain", n=4)
    store = engine.store
    assert not any(ORPHAN_KEY in p.payload for p in store.points())
    assert not any(ORPHAN_KEY in p for p in store.retrieve(ids).values())
    store.also_read([ORPHAN_KEY, ORPHAN_KEY, "person_id"])
    assert all(ORPHAN_KEY in p.payload for p in store.points())
    got = store.retrieve(ids)
    assert all(set(p) <= {"person_id", ORPHAN_KEY} and ORPHAN_KEY in p for p in got.values())
    store.close()
    reopened: PointStore
    if engine.name == "local":
        reopened = Qdrant(engine.settings, extra_keys=[ORPHAN_KEY])
    else:
        reopened = EdgeQdrant(engine.settings, engine.root, extra_keys=[ORPHAN_KEY])
    engine.store = reopened
    assert all(ORPHAN_KEY in p.payload for p in reopened.points())


# --- the record type ----------------------------------------------------------------------


def test_whole_point_json_round_trip_and_exact_equality() -> None:
    point = WholePoint(
        UUID_A,
        {"": [f32(0.6), -0.0], "sp": {"indices": [1], "values": [0.5]}, "m": [[1.0], [2.0]]},
        {"n": 1, "t": True, "f": 1.0, "x": None, "nested": {"l": [1, "a"]}, ORPHAN_KEY: "t0"},
    )
    text = json.dumps(point.to_json())
    back = WholePoint.from_json(json.loads(text))
    assert back.equals(point) and back == point and hash(back) == hash(point)
    assert WholePoint.from_json({"point_id": UUID_A.upper(), "vectors": [], "payload": {}}) == (
        WholePoint(UUID_A, [], {})
    )

    def with_payload(**changes: Any) -> WholePoint:
        return WholePoint(point.point_id, point.vectors, {**point.payload, **changes})

    # Python's 1 == 1.0 == True; a payload's `1`, `1.0` and `true` are different values.
    assert not with_payload(n=1.0).equals(point)
    assert not with_payload(t=1).equals(point)
    assert not with_payload(f=1).equals(point)
    nudged = struct.unpack("<f", struct.pack("<i", bits(f32(0.6)) + 1))[0]  # one f32 step
    assert isinstance(point.vectors, dict)
    moved = WholePoint(point.point_id, {**point.vectors, "": [nudged, -0.0]}, point.payload)
    assert not moved.equals(point)
    assert not WholePoint(
        point.point_id, {**point.vectors, "": [f32(0.6), 0.0]}, point.payload
    ).equals(point)
    assert not WholePoint(1, point.vectors, point.payload).equals(point)
    # Payload key order does not matter; it is a mapping.
    assert WholePoint(1, [], {"a": 1, "b": 2}).equals(WholePoint(1, [], {"b": 2, "a": 1}))

    stripped = point.without(ORPHAN_KEY)
    assert ORPHAN_KEY not in stripped.payload and ORPHAN_KEY in point.payload
    assert stripped.vectors == point.vectors

    with pytest.raises(ValueError, match="not a whole point"):
        WholePoint.from_json({"point_id": 1, "vectors": 3.0, "payload": {}})


# --- a server: insert-only and its version --------------------------------------------------
#
# No Qdrant server can run here (no binary, no image), so these stand a real HTTP server
# on loopback in its place: fault injection for the too-old server, and a look at the
# request a current one would get. Local mode writes insert-only by its own check.


class FakeServer(http.server.BaseHTTPRequestHandler):
    version = "1.17.0"
    writes: ClassVar[list[tuple[str, str, Any]]] = []

    def _answer(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        assert self.path == "/", self.path
        self._answer({"title": "qdrant - vector search engine", "version": self.version})

    def _write(self) -> None:
        length = int(self.headers["Content-Length"])
        type(self).writes.append((self.command, self.path, json.loads(self.rfile.read(length))))
        result = {"operation_id": 1, "status": "completed"}
        self._answer({"result": result, "status": "ok", "time": 0.0})

    do_PUT = do_POST = _write

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def fake_server() -> Iterator[str]:
    FakeServer.writes = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


SPARSE_POINT = WholePoint(
    UUID_A, {"": [f32(0.6), f32(0.8)], "sp": {"indices": [1], "values": [0.5]}}, {"k": 1}
)


def test_a_server_older_than_1_17_is_refused_before_any_write(
    fake_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(FakeServer, "version", "1.16.3")
    store = Qdrant(Settings("postgresql://x@localhost/x", qdrant_url=fake_server, retries=0))
    with pytest.raises(StoreError, match=r"version 1\.16\.3, which ignores insert-only .* 1\.17"):
        store.insert_only([SPARSE_POINT])
    assert FakeServer.writes == []
    store.close()


def test_a_server_is_sent_one_insert_only_upsert_and_one_delete(fake_server: str) -> None:
    store = Qdrant(Settings("postgresql://x@localhost/x", qdrant_url=fake_server, retries=0))
    store.insert_only([SPARSE_POINT, WholePoint(7, {"": [1.0, 0.0]}, {})])
    store.insert_only([SPARSE_POINT])  # the version is read once
    store.delete([7, UUID_A])
    store.close()
    (_, upsert, body), _, (_, delete, deleted) = FakeServer.writes
    assert upsert.startswith("/collections/faces/points?") and "wait=true" in upsert
    assert body["update_mode"] == "insert_only"
    assert body["points"][0] == {
        "id": UUID_A,
        "vector": {"": [f32(0.6), f32(0.8)], "sp": {"indices": [1], "values": [0.5]}},
        "payload": {"k": 1},
    }
    assert delete.startswith("/collections/faces/points/delete?") and "wait=true" in delete
    assert deleted == {"points": [7, UUID_A]}
