"""The audit against points served by another process: a stand-in for a Qdrant server.

The `remote` task. `RemoteEdge` asks a spawned process that holds the edge store
for one page per request, as qdrant-client asks a server, optionally with a
simulated network round trip per page (`REMOTE_LATENCIES`).
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.measure import check, drain, settings_for, timed
from bench.worlds import FLAG_KEY

# Round trips added to each page of the out-of-process point stream: none, and
# 2 ms (a LAN round trip plus a server's queueing).
REMOTE_LATENCIES = (0.0, 0.002)


def _serve_pages(edge_path: str, keys: list[str], conn: Any, latency: float) -> None:
    """Child process: answer scroll requests from the edge store, as a Qdrant server would.

    Each request is (offset, limit); each answer ([(id, payload)], next offset),
    sent `latency` seconds after the scroll (the network round trip a server adds).
    Runs in its own process, so its scroll holds another interpreter's GIL.
    """
    import qdrant_edge as edge

    from reconcile.stores.edge import open_edge_store

    shard = open_edge_store(Path(edge_path))
    conn.send("ready")
    while (request := conn.recv()) is not None:
        offset, limit = request
        records, next_offset = shard.scroll(
            edge.ScrollRequest(offset=offset, limit=limit, with_payload=keys, with_vector=False)
        )
        page = [(r.id if type(r.id) is int else str(r.id), r.payload or {}) for r in records]
        if latency:
            time.sleep(latency)  # a simulated round trip, not a wait for anything
        conn.send((page, None if next_offset is None else str(next_offset)))
    shard.close()


class RemoteEdge:
    """A point store whose engine runs in another process: a stand-in for a Qdrant server.

    Like qdrant-client against a server, each page is one request and this
    process waits for the answer with its GIL released, so threads here can run
    meanwhile. Only what an audit calls is implemented.
    """

    def __init__(
        self, edge_path: str, keys: list[str], latency: float = 0.0, page: int = 1000
    ) -> None:
        import multiprocessing

        self.page = page
        self._conn, child = multiprocessing.Pipe()
        self._proc = multiprocessing.get_context("spawn").Process(
            target=_serve_pages, args=(edge_path, keys, child, latency), daemon=True
        )
        self._proc.start()
        child.close()
        if self._conn.recv() != "ready":
            raise RuntimeError("the edge server process did not start")

    def require_collection(self) -> None:
        pass

    def pages(self, key_range: Any = None) -> Iterator[Any]:
        from reconcile.stores.base import Page

        assert key_range is None or (key_range.low is None and key_range.high is None)
        offset = None
        while True:
            self._conn.send((offset, self.page))
            page, offset = self._conn.recv()
            if page:
                yield Page([p for p, _ in page], [payload for _, payload in page])
            if offset is None:
                return

    def points(self, key_range: Any = None) -> Iterator[Any]:
        from reconcile.stores.base import each_point

        return each_point(self.pages(key_range))

    def close(self) -> None:
        self._conn.send(None)
        self._proc.join(timeout=30)


def task_remote(spec: dict[str, Any]) -> dict[str, Any]:
    """The audit against points served by another process (see RemoteEdge), warm, medians.

    The product reads PostgreSQL in a thread when Qdrant is a server (`qdrant_url`
    set) and in the scanning thread for an engine in its own process; both ways
    are timed here against the same out-of-process stream.
    """
    from reconcile.ops.audit import audit
    from reconcile.settings import Settings
    from reconcile.stores import Stores
    from reconcile.stores.postgres import Postgres

    as_server = Settings(
        database_url=spec["database_url"],
        qdrant_url="http://remote-edge.invalid:6333",  # never contacted: the store is given
        flag_key=FLAG_KEY,
    )
    in_process = settings_for(spec)
    postgres = Postgres(in_process)
    out: dict[str, list[float]] = defaultdict(list)
    try:
        postgres.inspect()
        for _ in range(spec["repeat"]):
            _, t = timed(lambda: drain(postgres.rows()))
            out["pg"].append(t)
    finally:
        postgres.close()
    for latency in REMOTE_LATENCIES:
        remote = RemoteEdge(spec["edge_path"], list(in_process.keys), latency)
        postgres = Postgres(in_process)
        try:
            postgres.inspect()
            drain(remote.points())  # the server's first scroll maps its store in
            for _ in range(spec["repeat"]):
                _, t = timed(lambda: drain(remote.points()))  # noqa: B023
                out[f"points_{latency}"].append(t)
                for name, settings in (("thread", as_server), ("inline", in_process)):
                    with Stores(settings, postgres, remote) as stores:  # type: ignore[arg-type]
                        report, t = timed(lambda: audit(settings, stores=stores))  # noqa: B023
                    check(report, spec)
                    out[f"{name}_{latency}"].append(t)
        finally:
            remote.close()
            postgres.close()
    return {k: statistics.median(v) for k, v in out.items()}
