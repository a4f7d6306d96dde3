"""The scale suite: audit, reads, repair, targeted and sampled checks at 100k and 1M faces.

    .venv/bin/python bench/suite.py [--sizes 100000,1000000] [--drift 0.01] [--repeat 3,2]
                                    [--no-keep] [--markdown FILE] [--no-profile]

Worlds (bench/worlds.py) live under bench/.worlds/ and are reused while their
manifest and row count still match (`--no-keep` deletes them at the end). The
PostgreSQL side is an embedded server under bench/.worlds/pgdata, stopped at
the end, or `RECONCILE_BENCH_DATABASE_URL` (each world is a schema of its own
there, dropped with `--no-keep`). Qdrant is a Qdrant Edge store per world.

Every measurement runs in a fresh child process (`--child TASK`), so that one
measurement's heap growth cannot hide the next one's, and memory is measured
above the level the process holds once the edge store is open: RssAnon from
/proc/self/status sampled every few milliseconds, and the Python heap's peak
via tracemalloc in a separate, traced run. Prints numbers; asserts only that
every audit (and the bench's own prototypes) found exactly the drift the world
was built with. The profile uses py-spy when installed, else pyinstrument.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
import tracemalloc
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import worlds

from reconcile.scan import prefetched  # the product's read-ahead, as audits use it

BENCH = Path(__file__).resolve().parent
DEFAULT_ROOT = BENCH / ".worlds"
CHUNK_ROWS = 50_000  # rows per keyset chunk, as the product's default (page 1000 x 50)
RESULT = "RESULT "
SPY_RATE = 100  # samples per second: py-spy pauses the process for each native unwind
# Round trips added to each page of the out-of-process point stream: none, and
# 2 ms (a LAN round trip plus a server's queueing).
REMOTE_LATENCIES = (0.0, 0.002)

# --- helpers used by the children -----------------------------------------------


def rss_anon() -> int:
    """Anonymous resident memory of this process, in bytes (heap, arenas, thread stacks)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


class PeakRss:
    """Samples RssAnon every `interval` seconds in a thread; `peak` is the highest seen."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.base = rss_anon()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_anon())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_anon())

    @property
    def growth(self) -> int:
        return self.peak - self.base


def heap_peak(fn: Callable[[], Any]) -> tuple[Any, int, float]:
    """(result, peak growth of the traced Python heap in bytes, seconds under tracing)."""
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    started = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return result, peak, seconds


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def drain(items: Iterable[object]) -> int:
    n = 0
    for _ in items:
        n += 1
    return n


def _settings(spec: dict[str, Any], edge_path: str | None = None) -> Any:
    from reconcile.settings import Settings

    return Settings(
        database_url=spec["database_url"],
        qdrant_edge=edge_path or spec["edge_path"],
        flag_key=worlds.FLAG_KEY,
    )


def _check(report: Any, spec: dict[str, Any]) -> None:
    if dict(report.counts) != spec["expected"]:
        raise AssertionError(f"audit found {dict(report.counts)}, world has {spec['expected']}")


def _scratch(spec: dict[str, Any]) -> Path:
    """A private copy of the world's edge store, for runs that write to it."""
    scratch = Path(spec["scratch"])
    if scratch.exists():
        shutil.rmtree(scratch)
    shutil.copytree(spec["edge_path"], scratch)
    return scratch


# --- the children's tasks -----------------------------------------------------------


def task_streams(spec: dict[str, Any]) -> dict[str, Any]:
    """Each stream alone and the full audit, all warm, medians of `repeat` runs."""
    from reconcile.ops.audit import audit
    from reconcile.stores import Stores

    settings = _settings(spec)
    out: dict[str, list[float]] = defaultdict(list)
    rows = 0
    with Stores(settings) as stores:
        stores.postgres.inspect()  # binds the point column's type, as audit does first
        # The engine's first scroll in a process faults the payload storage in (mmap);
        # every later one finds it mapped. Timed apart, so the rest compare warm to warm.
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_majflt
        _, cold = timed(lambda: drain(stores.qdrant.points()))
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_majflt - faults
        for _ in range(spec["repeat"]):
            rows, t = timed(lambda: drain(stores.postgres.rows()))
            out["pg"].append(t)
            _, t = timed(lambda: drain(stores.qdrant.points()))
            out["edge"].append(t)
            report, t = timed(lambda: audit(settings, stores=stores))
            _check(report, spec)
            out["audit"].append(t)
    result: dict[str, Any] = {k: statistics.median(v) for k, v in out.items()}
    result["rows"] = rows
    result["runs"] = spec["repeat"]
    result["edge_cold"] = cold
    result["edge_cold_faults"] = faults
    return result


def task_memory(spec: dict[str, Any]) -> dict[str, Any]:
    """One audit with RssAnon sampled (above the level once both stores are open), one traced.

    Both also note what the process holds at each quarter of the scan: flat
    memory means the last quarter holds what the first did.
    """
    from reconcile.ops.audit import audit
    from reconcile.stores import Stores

    settings = _settings(spec)
    quarters = [spec["points"] * q // 4 for q in (1, 2, 3)]

    def at_quarters(read: Callable[[], int], into: list[int]) -> Callable[[int], None]:
        def progress(n: int) -> None:
            if len(into) < len(quarters) and n >= quarters[len(into)]:
                into.append(read())

        return progress

    rss_held: list[int] = []
    heap_held: list[int] = []
    with Stores(settings) as stores:
        stores.postgres.inspect()
        opened = rss_anon()
        with PeakRss() as rss:
            report, seconds = timed(
                lambda: audit(settings, stores=stores, progress=at_quarters(rss_anon, rss_held))
            )
        _check(report, spec)
        after = rss_anon()

        def traced_heap() -> int:
            return tracemalloc.get_traced_memory()[0]

        report, heap, traced = heap_peak(
            lambda: audit(settings, stores=stores, progress=at_quarters(traced_heap, heap_held))
        )
        _check(report, spec)
    return {
        "rss_opened": opened,
        "rss_growth": rss.growth,
        "rss_after": after - opened,
        "rss_quarters": [x - opened for x in rss_held],
        "heap_peak": heap,
        "heap_quarters": heap_held,
        "seconds": seconds,
        "traced_seconds": traced,
        "rows": report.rows,
    }


def task_readers(spec: dict[str, Any]) -> dict[str, Any]:
    """Ways to read (point, face, person) in point order, without the product's code."""
    import psycopg
    import sqlalchemy as sa
    from psycopg.types.string import TextLoader

    from reconcile.settings import sqlalchemy_url
    from reconcile.stores.base import Row

    url = spec["database_url"]
    columns = "qdrant_point_id, id, person_id"
    ordered = f"SELECT {columns} FROM face_instances ORDER BY qdrant_point_id"
    results: dict[str, Any] = {}

    def record(name: str, fn: Callable[[], tuple[int, float]]) -> None:
        times, longest = [], 0.0
        for _ in range(spec["repeat_reads"]):
            (n, hold), t = timed(fn)
            times.append(t)
            longest = max(longest, hold)
            assert n == spec["rows"], (name, n)
        results[name] = {"seconds": statistics.median(times), "longest_transaction": longest}

    engine = sa.create_engine(sqlalchemy_url(url))
    table = sa.table(
        "face_instances",
        sa.column("qdrant_point_id", sa.Uuid(as_uuid=False)),
        sa.column("id"),
        sa.column("person_id"),
    )
    point = table.c.qdrant_point_id
    select = sa.select(point, table.c.id, table.c.person_id)

    def sa_cursor() -> tuple[int, float]:
        started = time.perf_counter()
        with engine.connect() as conn:
            result = conn.execution_options(yield_per=1000).execute(select.order_by(point))
            n = drain(result)
        return n, time.perf_counter() - started

    def sa_chunks() -> tuple[int, float]:
        n, last, longest = 0, None, 0.0
        while True:
            stmt = select.order_by(point).limit(CHUNK_ROWS)
            if last is not None:
                stmt = stmt.where(point > last)
            started = time.perf_counter()
            read = 0
            with engine.connect() as conn:  # one connection checkout = one transaction
                for row in conn.execution_options(yield_per=1000).execute(stmt):
                    read += 1
                    last = row[0]
            longest = max(longest, time.perf_counter() - started)
            n += read
            if read < CHUNK_ROWS:
                return n, longest

    def pg_connect(as_text: bool) -> psycopg.Connection[Any]:
        conn = psycopg.connect(url)
        if as_text:
            conn.adapters.register_loader("uuid", TextLoader)
        return conn

    def named_cursor(as_text: bool) -> tuple[int, float]:
        started = time.perf_counter()
        with pg_connect(as_text) as conn, conn.cursor(name="scan") as cur:
            cur.itersize = 1000
            cur.execute(ordered)
            n = drain(cur)
        return n, time.perf_counter() - started

    def pg_chunks(make_row: Callable[[Any], Any] | None) -> tuple[int, float]:
        """Keyset chunks, each one transaction streamed by a named cursor, uuids as text."""
        n, last, longest = 0, None, 0.0
        with pg_connect(as_text=True) as conn:
            while True:
                started = time.perf_counter()
                read = 0
                with conn.transaction(), conn.cursor(name="chunk") as cur:
                    cur.itersize = 1000
                    if last is None:
                        cur.execute(f"{ordered} LIMIT %s", (CHUNK_ROWS,))
                    else:
                        cur.execute(
                            f"SELECT {columns} FROM face_instances WHERE qdrant_point_id > %s "
                            "ORDER BY qdrant_point_id LIMIT %s",
                            (last, CHUNK_ROWS),
                        )
                    for row in cur:
                        read += 1
                        if make_row is not None:
                            make_row(row)
                        last = row[0]
                longest = max(longest, time.perf_counter() - started)
                n += read
                if read < CHUNK_ROWS:
                    return n, longest

    def copy_raw() -> tuple[int, float]:
        started = time.perf_counter()
        n = 0
        with (
            psycopg.connect(url) as conn,
            conn.cursor() as cur,
            cur.copy(f"COPY ({ordered}) TO STDOUT") as copy,
        ):
            for data in copy:
                n += bytes(data).count(b"\n")
        return n, time.perf_counter() - started

    def copy_parsed() -> tuple[int, float]:
        started = time.perf_counter()
        n = 0
        with (
            psycopg.connect(url) as conn,
            conn.cursor() as cur,
            cur.copy(f"COPY ({ordered}) TO STDOUT") as copy,
        ):
            for data in copy:
                rows = [
                    (point, face, None if person == "\\N" else person)
                    for point, face, person in (
                        line.split("\t") for line in bytes(data).decode().splitlines()
                    )
                ]
                n += len(rows)
        return n, time.perf_counter() - started

    record("sqlalchemy server-side cursor, one transaction (yield_per 1000)", sa_cursor)
    record(f"sqlalchemy keyset chunks of {CHUNK_ROWS:,} (yield_per 1000)", sa_chunks)
    record("psycopg named cursor, uuid objects", lambda: named_cursor(as_text=False))
    record("psycopg named cursor, uuid as text", lambda: named_cursor(as_text=True))
    record(f"psycopg keyset chunks of {CHUNK_ROWS:,}, uuid as text", lambda: pg_chunks(None))
    record(
        f"psycopg keyset chunks of {CHUNK_ROWS:,}, uuid as text, Row objects",
        lambda: pg_chunks(lambda r: Row(r[0], r[1], r[2], False)),
    )
    record("COPY TO STDOUT, raw bytes", copy_raw)
    record("COPY TO STDOUT, split into str tuples", copy_parsed)

    def copy_in_chunks() -> tuple[int, float]:
        holds: list[float] = []
        n = drain(copy_chunks(url, holds=holds))
        return n, max(holds)

    record(f"COPY per keyset chunk of {CHUNK_ROWS:,}, str tuples", copy_in_chunks)
    engine.dispose()
    return results


def lean_counts(
    rows: Iterable[Any], points: Iterable[Any], person: str, flag: str
) -> dict[str, int]:
    """A counting-only merge for UUID point ids, to show what the merge could cost.

    Same kinds as reconcile.diff for what the benchmark worlds hold (string ids,
    no NULL point ids, no grace window): ids compared as strings directly, no key
    tuples, no generator per stream, classification inline. Rows are
    (point_id, face_id, person_id) tuples, points (point_id, payload) tuples.
    """
    counts = dict.fromkeys(worlds.ALL_KINDS, 0)
    end = "\uffff"  # above every canonical UUID string
    row_iter, point_iter = iter(rows), iter(points)
    row = next(row_iter, None)
    point = next(point_iter, None)
    last_point = ""
    while row is not None or point is not None:
        rid = end if row is None else row[0]
        pid = end if point is None else point[0]
        if rid <= pid:
            group = [row]
            row = next(row_iter, None)
            while row is not None and row[0] == rid:
                group.append(row)
                row = next(row_iter, None)
            if row is not None and row[0] < rid:
                raise AssertionError("rows not ascending")
        if pid < rid:
            counts["orphan_point"] += 1
        elif rid < pid:
            counts["duplicate_point" if len(group) > 1 else "missing_point"] += 1
        elif len(group) > 1:
            counts["duplicate_point"] += 1
        else:
            payload = point[1]
            raw = payload.get(person)
            expected = group[0][2]
            if expected is None:
                kind = "stale_person" if raw is not None else ""
            elif raw is None:
                kind = "missing_person"
            elif type(raw) is not type(expected) or raw != expected:
                kind = "wrong_person"
            else:
                kind = ""
            if not kind:
                kind = "flag_mismatch" if payload.get(flag) is not (expected is not None) else ""
            counts[kind or "in_sync"] += 1
        if pid <= rid:
            if pid <= last_point:
                raise AssertionError("points not ascending")
            last_point = pid
            point = next(point_iter, None)
    return counts


def task_whatif(spec: dict[str, Any]) -> dict[str, Any]:
    """Variants of the audit's parts, measured without changing the product.

    The edge stream (page size, id conversion), the merge alone on materialised
    streams (the product's diff and a lean counting merge), and the audit with
    the garbage collector off.
    """
    import gc

    import qdrant_edge as edge

    from reconcile.diff import Keys, ScanStats, diff
    from reconcile.ops.audit import audit
    from reconcile.stores import Stores

    settings = _settings(spec)
    keys = Keys(settings.person_key, settings.flag_key)
    out: dict[str, Any] = {}
    with Stores(settings) as stores:
        stores.postgres.inspect()
        drain(stores.qdrant.points())  # the first scroll maps the store in: compare warm runs
        report, out["audit"] = timed(lambda: audit(settings, stores=stores))
        gc.disable()
        try:
            report, out["audit_gc_off"] = timed(lambda: audit(settings, stores=stores))
        finally:
            gc.enable()
        _check(report, spec)
        store: Any = stores.qdrant
        shard = store.shard

        def raw_scroll(page: int) -> int:
            offset, n = None, 0
            while True:
                request = edge.ScrollRequest(
                    offset=offset, limit=page, with_payload=settings.keys, with_vector=False
                )
                records, offset = shard.scroll(request)
                for r in records:
                    _ = r.id, r.payload
                n += len(records)
                if offset is None:
                    return n
                offset = str(offset)

        _, out["edge_product"] = timed(lambda: drain(store.points()))
        _, out["edge_raw_1000"] = timed(lambda: raw_scroll(1000))
        _, out["edge_raw_10000"] = timed(lambda: raw_scroll(10_000))
        _, out["edge_tuples_10000"] = timed(lambda: drain(edge_tuples(shard, settings.keys)))
        out["gil_share"] = gil_share_during(lambda: raw_scroll(1000))

        def merges() -> tuple[float, float]:
            """Both merges over the same streams, held in memory so only the merge is timed."""
            rows = list(stores.postgres.rows())
            points = list(store.points())
            stats = ScanStats()
            drifted, product = timed(lambda: drain(diff(rows, points, keys, stats)))
            assert drifted + stats.in_sync == sum(spec["expected"].values())
            row_tuples = [(r.point_id, r.face_id, r.person_id) for r in rows]
            point_tuples = [(p.point_id, p.payload) for p in points]
            counts, lean = timed(
                lambda: lean_counts(row_tuples, point_tuples, settings.person_key, worlds.FLAG_KEY)
            )
            assert counts == spec["expected"], counts
            return product, lean

        out["merge_product"], out["merge_lean"] = merges()

        def lean_audit() -> dict[str, int]:
            gc.disable()
            try:
                rows = prefetched(copy_chunks(spec["database_url"]))
                points = edge_tuples(shard, settings.keys)
                return lean_counts(rows, points, settings.person_key, worlds.FLAG_KEY)
            finally:
                gc.enable()

        counts, out["lean_audit"] = timed(lean_audit)
        assert counts == spec["expected"], counts

        def pg_prefetched() -> int:
            """The product's merge with PostgreSQL read in a thread (its choice for a server)."""
            stats = ScanStats()
            drift = drain(diff(prefetched(stores.postgres.rows()), store.points(), keys, stats))
            return drift + stats.in_sync

        judged, out["pg_prefetched"] = timed(pg_prefetched)
        assert judged == sum(spec["expected"].values())

        def both_prefetched() -> int:
            """The product's merge with the edge stream in a thread too, not only PostgreSQL."""
            stats = ScanStats()
            pg = prefetched(stores.postgres.rows())
            points = prefetched(store.points())
            drift = drain(diff(pg, points, keys, stats))
            return drift + stats.in_sync

        judged, out["both_prefetched"] = timed(both_prefetched)
        assert judged == sum(spec["expected"].values())

        (counts, out["worker_ready"]), out["second_process"] = timed(
            lambda: merge_in_second_process(settings, shard)
        )
        assert counts == {k: v for k, v in spec["expected"].items() if v}, counts
    return out


def _merge_worker(settings: Any, conn: Any) -> None:
    """Child process: read PostgreSQL and merge against point pages sent by the parent."""
    import pickle

    from reconcile.diff import Keys, ScanStats, diff
    from reconcile.stores.base import Point
    from reconcile.stores.postgres import Postgres

    postgres = Postgres(settings)
    postgres.inspect()
    conn.send_bytes(b"ready")

    def points() -> Iterator[Any]:
        while data := conn.recv_bytes():
            for point_id, payload in pickle.loads(data):
                yield Point(point_id, payload)

    stats = ScanStats()
    counts: Counter[str] = Counter()
    for drift in diff(
        postgres.rows(), points(), Keys(settings.person_key, settings.flag_key), stats
    ):
        counts[drift.kind.value] += 1
    counts["in_sync"] = stats.in_sync
    conn.send(dict(counts))
    postgres.close()


def merge_in_second_process(settings: Any, shard: Any) -> tuple[dict[str, int], float]:
    """A prototype: this process scrolls the engine, a spawned one reads PostgreSQL and merges.

    Returns the counts and the seconds until the worker was ready (imports, connect).
    """
    import multiprocessing
    import pickle

    from reconcile.diff import batched

    started = time.perf_counter()
    conn, child = multiprocessing.Pipe()
    worker = multiprocessing.get_context("spawn").Process(
        target=_merge_worker, args=(settings, child), daemon=True
    )
    worker.start()
    child.close()
    if conn.recv_bytes() != b"ready":
        raise RuntimeError("the merge worker did not start")
    ready = time.perf_counter() - started
    for page in batched(edge_tuples(shard, list(settings.keys), page=1000), 1000):
        conn.send_bytes(pickle.dumps(page, protocol=pickle.HIGHEST_PROTOCOL))
    conn.send_bytes(b"")
    counts = conn.recv()
    worker.join(timeout=30)
    return counts, ready


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

    def points(self, key_range: Any = None) -> Iterator[Any]:
        from reconcile.stores.base import Point

        assert key_range is None or (key_range.low is None and key_range.high is None)
        offset = None
        while True:
            self._conn.send((offset, self.page))
            page, offset = self._conn.recv()
            for point_id, payload in page:
                yield Point(point_id, payload)
            if offset is None:
                return

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
        flag_key=worlds.FLAG_KEY,
    )
    in_process = _settings(spec)
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
                    _check(report, spec)
                    out[f"{name}_{latency}"].append(t)
        finally:
            remote.close()
            postgres.close()
    return {k: statistics.median(v) for k, v in out.items()}


def gil_share_during(work: Callable[[], object]) -> float:
    """How fast a pure-Python thread runs while `work` runs, relative to running alone.

    Near 1 when `work` releases the GIL (native code running outside it), near the
    switch-interval share (~0.5 or less) when `work` holds it.
    """
    counter = [0]
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            counter[0] += 1

    def rate(during: Callable[[], object]) -> float:
        counter[0] = 0
        stop.clear()
        thread = threading.Thread(target=spin)
        started = time.perf_counter()
        thread.start()
        during()
        stop.set()
        thread.join()
        return counter[0] / (time.perf_counter() - started)

    alone = rate(lambda: time.sleep(1.0))
    return rate(work) / alone


def edge_tuples(shard: Any, keys: list[str], page: int = 10_000) -> Iterator[tuple[str, Any]]:
    """The edge scroll as (canonical id, payload) tuples: str(UUID) is already lower-case."""
    import qdrant_edge as edge

    offset = None
    while True:
        request = edge.ScrollRequest(
            offset=offset, limit=page, with_payload=keys, with_vector=False
        )
        records, offset = shard.scroll(request)
        for r in records:
            yield str(r.id), r.payload or {}
        if offset is None:
            return
        offset = str(offset)


def copy_chunks(
    url: str, chunk: int = CHUNK_ROWS, holds: list[float] | None = None
) -> Iterator[tuple[str, str, str | None]]:
    """(point, face, person) by keyset chunks, each one short COPY in its own transaction.

    `holds` gets each chunk's duration (how long its snapshot was held).
    """
    import psycopg

    query = (
        "COPY (SELECT qdrant_point_id, id, person_id FROM face_instances {where} "
        "ORDER BY qdrant_point_id LIMIT {limit}) TO STDOUT"
    )
    last: str | None = None
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            where = "" if last is None else f"WHERE qdrant_point_id > '{last}'"
            read = 0
            started = time.perf_counter()
            with conn.cursor() as cur, cur.copy(query.format(where=where, limit=chunk)) as copy:
                for data in copy:
                    for line in bytes(data).decode().splitlines():
                        point, face, person = line.split("\t")
                        read += 1
                        yield point, face, None if person == "\\N" else person
                        last = point
            if holds is not None:
                holds.append(time.perf_counter() - started)
            if read < chunk:
                return


class CountingShard:
    """Counts the write operations and reads that reach the engine."""

    def __init__(self, shard: Any) -> None:
        self._shard = shard
        self.updates = 0
        self.retrieves = 0

    def update(self, operation: Any) -> Any:
        self.updates += 1
        return self._shard.update(operation)

    def retrieve(self, *args: Any) -> Any:
        self.retrieves += 1
        return self._shard.retrieve(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._shard, name)


def task_repair(spec: dict[str, Any]) -> dict[str, Any]:
    """reconcile repair on a copy of the world, undone from its journal, then again traced."""
    from reconcile.ops.repair import repair
    from reconcile.ops.undo import undo
    from reconcile.plan import RepairOptions
    from reconcile.stores import Stores

    scratch = _scratch(spec)
    settings = _settings(spec, str(scratch))
    journals = iter(scratch.parent / f"{scratch.name}-{n}.jsonl" for n in range(2))
    try:
        with Stores(settings) as stores:
            stores.postgres.inspect()
            store: Any = stores.qdrant
            shard = CountingShard(store.shard)
            store.shard = shard
            applies = 0
            apply = store.apply

            def counted_apply(ops: Any) -> None:
                nonlocal applies
                applies += 1
                apply(ops)

            store.apply = counted_apply
            with PeakRss() as rss:
                report, seconds = timed(
                    lambda: repair(settings, RepairOptions(journal=next(journals)), stores=stores)
                )
            requests, operations = applies, shard.updates
            journal = Path(report.journal)
            undone, undo_seconds = timed(lambda: undo(settings, journal, stores=stores))
            assert undone.restored == report.tallies.applied, (undone.restored, report.tallies)
            again, heap, traced = heap_peak(
                lambda: repair(settings, RepairOptions(journal=next(journals)), stores=stores)
            )
            assert again.tallies.applied == report.tallies.applied
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        for leftover in scratch.parent.glob(f"{scratch.name}-*.jsonl"):
            leftover.unlink()
    left = {k: v for k, v in report.remaining.items() if v}
    return {
        "seconds": seconds,
        "audit_seconds": report.plan.audit.duration_seconds,
        "written": report.tallies.applied,
        "verified": report.tallies.verified,
        "requests": requests,
        "operations": operations,
        "rss_growth": rss.growth,
        "heap_peak": heap,
        "traced_seconds": traced,
        "undo_seconds": undo_seconds,
        "undone": undone.restored,
        "repairable_left": sum(
            v for k, v in left.items() if k not in {"missing_point", "orphan_point"}
        ),
        "left": left,
    }


def naive_resync(url: str, shard: Any) -> dict[str, int]:
    """The usual resync script: every assigned face into memory, one set_payload per person."""
    import psycopg
    import qdrant_edge as edge

    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT qdrant_point_id, person_id FROM face_instances WHERE person_id IS NOT NULL"
        ).fetchall()
    by_person: dict[str, list[str]] = defaultdict(list)
    for point, person in rows:
        by_person[str(person)].append(str(point))
    failed = 0
    for person, points in by_person.items():
        try:
            shard.update(
                edge.UpdateOperation.set_payload(points, {"person_id": person, "is_assigned": True})
            )
        except Exception:  # a point the collection lacks fails the request (the rest is written)
            failed += 1
    return {"written": len(rows), "requests": len(by_person), "failed": failed}


def task_naive(spec: dict[str, Any]) -> dict[str, Any]:
    from reconcile.ops.audit import audit
    from reconcile.stores.edge import open_edge_store

    scratch = _scratch(spec)
    try:
        shard = open_edge_store(scratch)
        with PeakRss() as rss:
            result, seconds = timed(lambda: naive_resync(spec["database_url"], shard))
        _, heap, traced = heap_peak(lambda: naive_resync(spec["database_url"], shard))
        shard.flush()
        shard.close()
        report = audit(_settings(spec, str(scratch)))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    left = {k: v for k, v in report.counts.items() if v and k != "in_sync"}
    return {
        **result,
        "seconds": seconds,
        "rss_growth": rss.growth,
        "heap_peak": heap,
        "traced_seconds": traced,
        "repairable_left": report.repairable,
        "left": left,
    }


def task_targeted(spec: dict[str, Any]) -> dict[str, Any]:
    from reconcile.ops.audit import audit
    from reconcile.stores import Stores
    from reconcile.targets import Targets

    settings = _settings(spec)
    targets = Targets(face_ids=tuple(spec["target_face_ids"]))
    times = []
    with Stores(settings) as stores:
        for _ in range(spec["repeat"] + 1):
            report, t = timed(lambda: audit(settings, stores=stores, targets=targets))
            times.append(t)
    return {
        "seconds": statistics.median(times[1:]),  # the first run warms the caches
        "rows": report.rows,
        "points": report.points,
        "unknown": len(report.unknown_ids),
    }


def task_sample(spec: dict[str, Any]) -> dict[str, Any]:
    try:
        from reconcile.ops.sample import sample_audit
    except ImportError as exc:
        return {"missing": f"reconcile.sample.sample_audit not available ({exc})"}
    from reconcile.stores import Stores

    settings = _settings(spec)
    times, faces, points = [], [], []
    with Stores(settings) as stores:
        for seed in range(spec["repeat"] + 1):
            report, t = timed(lambda s=seed: sample_audit(settings, 1000, seed=s, stores=stores))
            times.append(t)
            faces.append(report.faces.sampled)
            points.append(report.points.sampled)
            drifted = report.drifted
        big, big_seconds = timed(lambda: sample_audit(settings, 4000, seed=99, stores=stores))
    return {
        "seconds": statistics.median(times[1:]),  # the first run warms the caches
        "drift_estimate": [drifted.rate, *drifted.interval],
        "faces": faces[-1],
        "points": points[-1],
        "seconds_4000": big_seconds,
        "drift_estimate_4000": [big.drifted.rate, *big.drifted.interval],
    }


def task_profile(spec: dict[str, Any]) -> dict[str, Any]:
    """pyinstrument over one full audit: the top functions by own time, and some subtotals."""
    try:
        from pyinstrument import Profiler
    except ImportError:
        return {"missing": "neither py-spy nor pyinstrument is installed in this venv"}

    from reconcile.ops.audit import audit
    from reconcile.stores import Stores

    settings = _settings(spec)
    with Stores(settings) as stores:
        stores.postgres.inspect()
        profiler = Profiler(interval=0.001)
        profiler.start()
        report = audit(settings, stores=stores)
        profiler.stop()
    _check(report, spec)
    session = profiler.last_session
    assert session is not None
    root = session.root_frame()
    assert root is not None
    own: dict[str, float] = defaultdict(float)
    total: dict[str, float] = defaultdict(float)

    def walk(frame: Any, ancestors: frozenset[str]) -> None:
        if frame.is_synthetic:  # pyinstrument's "[self]" leaves: counted by total_self_time
            return
        name = f"{frame.function} ({_short(frame.file_path)}:{frame.line_no})"
        own[name] += frame.total_self_time
        if name not in ancestors:  # recursion counted once
            total[name] += frame.time
        for child in frame.children:
            walk(child, ancestors | {name})

    walk(root, frozenset())
    top_own = sorted(own.items(), key=lambda kv: -kv[1])[:20]
    top_total = sorted(
        ((k, v) for k, v in total.items() if "reconcile" in k or "qdrant_edge" in k),
        key=lambda kv: -kv[1],
    )[:20]
    out_file = Path(spec["profile_html"])
    out_file.write_text(profiler.output_html())
    return {
        "duration": session.duration,
        "own": top_own,
        "total": top_total,
        "html": str(out_file),
    }


def task_audit_once(spec: dict[str, Any]) -> dict[str, Any]:
    """One audit in a fresh process (what py-spy watches)."""
    from reconcile.ops.audit import audit

    report, seconds = timed(lambda: audit(_settings(spec)))
    _check(report, spec)
    return {"seconds": seconds}


_PY_FRAME = re.compile(r"^(?P<func>.+) \((?P<file>[^()]*\.py):(?P<line>\d+)\)$")
_THREAD = re.compile(r"^thread \((?P<tid>\d+)\)(?:: (?P<name>.*))?$")


def _spy_category(frames: list[str]) -> tuple[str, str]:
    """(what the thread was doing, its innermost Python function) for one py-spy stack."""
    last = max((i for i, f in enumerate(frames) if _PY_FRAME.match(f)), default=-1)
    leaf = _PY_FRAME.match(frames[last]) if last >= 0 else None
    leaf_name = f"{leaf['func']} ({_short(leaf['file'])})" if leaf else "?"
    native = ";".join(frames[last + 1 :])
    if any("gc_collect" in f for f in frames):
        return "garbage collector", leaf_name
    # A threading lock (the prefetch queue) waits in PyThread_acquire_lock; the GIL
    # waits in a bare pthread_cond_timedwait (take_gil has no symbol of its own).
    queue_wait = leaf is not None and leaf["func"] in {"lock.acquire", "Condition.wait"}
    if queue_wait or "PyThread_acquire_lock" in native or "sem_" in native:
        return "waiting on the prefetch queue", leaf_name
    if "pthread_cond_timedwait" in native or "take_gil" in native:
        return "waiting for the GIL", leaf_name
    if "qdrant_edge" in native:
        return "engine scroll (Rust, incl. building uuid.UUID ids)", leaf_name
    if "poll" in native or "recv" in native or "select" in native:
        return "waiting for PostgreSQL (socket)", leaf_name
    if "_psycopg" in native or "libpq" in native:
        return "psycopg/libpq C code", leaf_name
    return "Python", leaf_name


def spy_summary(raw: Path) -> dict[str, Any]:
    """Shares of each thread's wall time by activity, and its top Python functions."""
    names: dict[str, str] = {}
    activity: dict[str, Counter[str]] = defaultdict(Counter)
    python: dict[str, Counter[str]] = defaultdict(Counter)
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        thread = _THREAD.match(frames[0])
        if thread is None or not count.isdigit():
            continue
        if thread["name"]:
            names[thread["tid"]] = thread["name"]
        # Only the audit: not imports, not interpreter start-up.
        if not any(f.startswith(("audit (reconcile/", "prefetched.")) for f in frames):
            continue
        what, leaf = _spy_category(frames[1:])
        activity[thread["tid"]][what] += int(count)
        if what == "Python":
            python[thread["tid"]][leaf] += int(count)
    threads = {}
    for tid, counts in activity.items():
        total = sum(counts.values())
        threads[names.get(tid, tid)] = {
            "samples": total,
            "activity": [(k, v / total) for k, v in counts.most_common()],
            "python": [(k, v / total) for k, v in python[tid].most_common(12)],
        }
    return threads


def run_profile(spec: dict[str, Any], root: Path) -> dict[str, Any]:
    """py-spy over one audit in a fresh process (all threads, native frames), else pyinstrument."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    raw = root / f"profile-{spec['name']}.txt"
    if Path(spy).is_file():
        command = [spy, "record", "--rate", str(SPY_RATE), "--idle", "--threads", "--native"]
        command += ["--format", "raw", "-o", str(raw), "--", sys.executable]
        command += [str(Path(__file__).resolve()), "--child", "audit_once", json.dumps(spec)]
        started = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True, check=False)
        lines = [x for x in proc.stdout.splitlines() if x.startswith(RESULT)]
        if proc.returncode == 0 and lines and raw.is_file():
            seconds = json.loads(lines[-1][len(RESULT) :])["seconds"]
            elapsed = time.perf_counter() - started
            print(f"  {spec['name']:>6} {'py-spy':<9} {elapsed:6.1f}s", file=sys.stderr)
            return {"tool": "py-spy", "seconds": seconds, "threads": spy_summary(raw)}
        sys.stderr.write(f"py-spy failed ({proc.returncode}), using pyinstrument\n")
    return run_child("profile", spec) | {"tool": "pyinstrument"}


def _short(path: str | None) -> str:
    if not path:
        return "?"
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return Path(path).name


TASKS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "streams": task_streams,
    "memory": task_memory,
    "readers": task_readers,
    "repair": task_repair,
    "naive": task_naive,
    "whatif": task_whatif,
    "remote": task_remote,
    "targeted": task_targeted,
    "sample": task_sample,
    "profile": task_profile,
    "audit_once": task_audit_once,
}


def child(task: str, spec_json: str) -> None:
    spec = json.loads(spec_json)
    result = TASKS[task](spec)
    print(RESULT + json.dumps(result), flush=True)


# --- the parent: worlds, children, tables ----------------------------------------------


def run_child(task: str, spec: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", task, json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT)]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"bench task {task} failed on {spec['name']} (exit {proc.returncode})")
    elapsed = time.perf_counter() - started
    print(f"  {spec['name']:>6} {task:<9} {elapsed:6.1f}s", file=sys.stderr, flush=True)
    result: dict[str, Any] = json.loads(lines[-1][len(RESULT) :])
    return result


def label(faces: int) -> str:
    return f"{faces // 1_000_000}M" if faces % 1_000_000 == 0 else f"{faces // 1000}k"


def mib(n: float) -> str:
    return f"{n / 2**20:.1f}"


class Table:
    """Rows of (what, value per size...) printed as text and kept for Markdown."""

    def __init__(self, title: str, header: list[str]) -> None:
        self.title = title
        self.header = header
        self.rows: list[list[str]] = []

    def add(self, *cells: object) -> None:
        self.rows.append([str(c) for c in cells])

    def text(self) -> str:
        widths = [
            max(len(r[i]) for r in [self.header, *self.rows]) for i in range(len(self.header))
        ]
        lines = [self.title]
        for row in [self.header, *self.rows]:
            first = row[0].ljust(widths[0])
            rest = "  ".join(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True))
            lines.append(f"  {first}  {rest}")
        return "\n".join(lines)

    def markdown(self) -> str:
        lines = [f"**{self.title}**", ""]
        lines.append("| " + " | ".join(self.header) + " |")
        lines.append("|---|" + "---:|" * (len(self.header) - 1))
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(lines)


def seconds_row(table: Table, title: str, values: list[float]) -> None:
    """A row of seconds per size, and how the largest compares with the smallest."""
    table.add(title, *(f"{v:.2f}" for v in values), ratio(values[-1], values[0]))


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "n/a"
    return f"{a / b:.2f}"


def product_version() -> str:
    """The commit the product was measured at, and whether reconcile/ had local changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=BENCH,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "reconcile"],
            cwd=BENCH.parent,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"commit {head}" + (" with uncommitted changes in reconcile/" if dirty else "")


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    python = f"{platform.python_implementation()} {platform.python_version()}"
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, {platform.machine()}, {python}"


def report(
    sizes: list[int], results: dict[int, dict[str, Any]], worlds_: dict[int, Any]
) -> list[Table]:
    names = [label(n) for n in sizes]
    growth = f"{names[-1]}/{names[0]}" if len(sizes) > 1 else "-"
    tables = []

    world = Table("Worlds", ["", *names])
    for key, title in (
        ("rows", "face rows (PostgreSQL)"),
        ("points", "points (Qdrant Edge)"),
        ("persons", "persons"),
        ("largest_person", "faces of the largest person"),
        ("drifted", "drifted point ids"),
    ):
        world.add(title, *(f"{worlds_[n].manifest[key]:,}" for n in sizes))
    world.add(
        "build seconds (PostgreSQL + edge)",
        *("{postgres} + {edge}".format(**worlds_[n].manifest["build_seconds"]) for n in sizes),
    )
    tables.append(world)

    audit = Table("Full audit", ["", *names, growth])

    def line(title: str, values: list[float | None], fmt: str, grows: bool = True) -> None:
        cells = ["n/a" if v is None else format(v, fmt) for v in values]
        last = ratio(values[-1], values[0]) if grows and len(values) > 1 else ""
        audit.add(title, *cells, last)

    s = [results[n]["streams"] for n in sizes]
    m = [results[n]["memory"] for n in sizes]
    line("PostgreSQL stream alone (s)", [x["pg"] for x in s], ".2f")
    line("edge scroll alone, first in a fresh process (s)", [x["edge_cold"] for x in s], ".2f")
    line("  major page faults in that first scroll", [x["edge_cold_faults"] for x in s], ",.0f")
    line("edge scroll alone (s)", [x["edge"] for x in s], ".2f")
    line("full audit (s)", [x["audit"] for x in s], ".2f")
    line("full audit, first in a fresh process (s)", [x["seconds"] for x in m], ".2f")
    line("audit throughput (rows/s)", [x["rows"] / x["audit"] for x in s], ",.0f")
    line(
        "full / max(two alone)",
        [x["audit"] / max(x["pg"], x["edge"]) for x in s],
        ".2f",
        grows=False,
    )
    line("own RssAnon peak above open stores (MiB)", [x["rss_growth"] / 2**20 for x in m], ".1f")
    line("own Python heap peak, tracemalloc (MiB)", [x["heap_peak"] / 2**20 for x in m], ".1f")
    line("RssAnon with both stores open (MiB)", [x["rss_opened"] / 2**20 for x in m], ".1f")
    line("audit under tracemalloc (s)", [x["traced_seconds"] for x in m], ".1f")

    def quarters(key: str) -> list[str]:
        return [" / ".join(f"{v / 2**20:.1f}" for v in x[key]) for x in m]

    audit.add("RssAnon held at 1/4, 1/2, 3/4 of the scan (MiB)", *quarters("rss_quarters"), "")
    audit.add("heap held at 1/4, 1/2, 3/4 of the scan (MiB)", *quarters("heap_quarters"), "")
    tables.append(audit)

    parts = Table(
        "Where the audit's time goes: variants measured in one process (s)", ["", *names, growth]
    )
    w = [results[n]["whatif"] for n in sizes]
    for key, title in (
        ("audit", "full audit (same process as the rows below)"),
        ("audit_gc_off", "full audit, garbage collector off"),
        ("edge_product", "edge: reconcile points() (page 1000, Point tuples)"),
        ("edge_raw_1000", "edge: engine scroll only, page 1000"),
        ("edge_raw_10000", "edge: engine scroll only, page 10000"),
        ("merge_product", "merge alone: reconcile diff() on lists in memory"),
        ("merge_lean", "merge alone: lean counting merge (bench prototype)"),
        ("edge_tuples_10000", "edge: page 10000, (str(id), payload) tuples"),
        ("pg_prefetched", "reconcile diff() with PostgreSQL prefetched in a thread"),
        ("both_prefetched", "reconcile diff() with both streams prefetched in threads"),
        ("lean_audit", "lean audit prototype: COPY chunks + edge tuples + lean merge, gc off"),
        ("second_process", "prototype: PostgreSQL and the merge in a spawned second process"),
        ("worker_ready", "  of which starting that process (imports, connect)"),
    ):
        seconds_row(parts, title, [x[key] for x in w])
    parts.add(
        "a Python thread's speed while the engine scrolls (share of alone)",
        *(f"{x['gil_share']:.0%}" for x in w),
        "",
    )
    tables.append(parts)

    served = Table(
        "Points from another process (a stand-in for a Qdrant server), warm, medians (s)",
        ["", *names, growth],
    )
    rm = [results[n]["remote"] for n in sizes]

    def served_line(title: str, key: str) -> None:
        seconds_row(served, title, [x[key] for x in rm])

    served_line("PostgreSQL stream alone", "pg")
    for latency in REMOTE_LATENCIES:
        rtt = f"{latency * 1000:.0f} ms round trip"
        served_line(f"points alone, one request per 1,000 points, {rtt}", f"points_{latency}")
        served_line(
            "  full audit, both streams read ahead in threads (the product's way)",
            f"thread_{latency}",
        )
        served_line("  full audit, both streams in one thread", f"inline_{latency}")
        served.add(
            "  full (threads) / max(two alone)",
            *(f"{x[f'thread_{latency}'] / max(x[f'points_{latency}'], x['pg']):.2f}" for x in rm),
            "",
        )
    tables.append(served)

    reads = Table(
        "Reading (point, face, person) in point order (s; longest transaction)",
        ["", *names, growth],
    )
    r = [results[n]["readers"] for n in sizes]
    seconds_row(
        reads, "reconcile Postgres.rows() (COPY per keyset chunk, Row tuples)", [x["pg"] for x in s]
    )
    for name in r[0]:
        cells = [f"{x[name]['seconds']:.2f}; {x[name]['longest_transaction']:.2f}" for x in r]
        reads.add(name, *cells, ratio(r[-1][name]["seconds"], r[0][name]["seconds"]))
    copy_name = "COPY TO STDOUT, raw bytes"
    reads.add(
        "ratio Postgres.rows() / COPY raw",
        *(ratio(x["pg"], y[copy_name]["seconds"]) for x, y in zip(s, r, strict=True)),
        "",
    )
    tables.append(reads)

    rep = Table(
        "Repair at the world's drift (1%) vs the naive one-shot resync",
        ["", *(f"{a} {n}" for n in names for a in ("repair", "naive"))],
    )
    rr = [results[n]["repair"] for n in sizes]
    nn = [results[n]["naive"] for n in sizes]

    def pair(
        title: str, get_r: Callable[[dict[str, Any]], str], get_n: Callable[[dict[str, Any]], str]
    ) -> None:
        cells = []
        for a, b in zip(rr, nn, strict=True):
            cells += [get_r(a), get_n(b)]
        rep.add(title, *cells)

    pair("points written", lambda x: f"{x['written']:,}", lambda x: f"{x['written']:,}")
    pair(
        "write requests (server equivalent)",
        lambda x: f"{x['requests']:,}",
        lambda x: f"{x['requests']:,}",
    )
    pair(
        "engine write operations",
        lambda x: f"{x['operations']:,}",
        lambda x: f"{x['requests']:,}",
    )
    pair("failed requests", lambda x: "0", lambda x: f"{x['failed']:,}")
    pair("seconds", lambda x: f"{x['seconds']:.2f}", lambda x: f"{x['seconds']:.2f}")
    pair("  of which the audit", lambda x: f"{x['audit_seconds']:.2f}", lambda x: "-")
    pair(
        "peak RssAnon growth (MiB)",
        lambda x: mib(x["rss_growth"]),
        lambda x: mib(x["rss_growth"]),
    )
    pair(
        "peak heap, tracemalloc (MiB)", lambda x: mib(x["heap_peak"]), lambda x: mib(x["heap_peak"])
    )
    pair(
        "repairable drift left",
        lambda x: f"{x['repairable_left']:,}",
        lambda x: f"{x['repairable_left']:,}",
    )
    pair("undo from the journal (s)", lambda x: f"{x['undo_seconds']:.2f}", lambda x: "-")
    tables.append(rep)

    cheap = Table("Targeted and sampled checks (s, median)", ["", *names, growth])
    t = [results[n]["targeted"] for n in sizes]
    cheap.add(
        "audit of 1,000 face ids (targets)",
        *(f"{x['seconds']:.3f}" for x in t),
        ratio(t[-1]["seconds"], t[0]["seconds"]),
    )
    sm = [results[n]["sample"] for n in sizes]
    if all("seconds" in x for x in sm):
        cheap.add(
            "sample_audit(n=1000)",
            *(f"{x['seconds']:.3f}" for x in sm),
            ratio(sm[-1]["seconds"], sm[0]["seconds"]),
        )
        cheap.add(
            "sample_audit(n=4000), one run",
            *(f"{x['seconds_4000']:.3f}" for x in sm),
            ratio(sm[-1]["seconds_4000"], sm[0]["seconds_4000"]),
        )
        cheap.add(
            "  n=4000 / n=1000",
            *(ratio(x["seconds_4000"], x["seconds"]) for x in sm),
            "",
        )
        cheap.add(
            "  true share of faces drifted",
            *(f"{face_drift(worlds_[n]):.2%}" for n in sizes),
            "",
        )
        cheap.add(
            "  estimated drift rate [95% CI], n=4000",
            *("{:.2%} [{:.2%}, {:.2%}]".format(*x["drift_estimate_4000"]) for x in sm),
            "",
        )
        cheap.add(
            "  estimated drift rate [95% CI], n=1000",
            *("{:.2%} [{:.2%}, {:.2%}]".format(*x["drift_estimate"]) for x in sm),
            "",
        )
    else:
        cheap.add("sample_audit", *(x.get("missing", "?") for x in sm), "")
    tables.append(cheap)
    return tables


def face_drift(world: Any) -> float:
    """The share of face rows whose point is drifted (what sampling faces estimates)."""
    expected = world.expected
    drifted = sum(v for k, v in expected.items() if k not in {"in_sync", "orphan_point"})
    return drifted / world.manifest["rows"]


def profile_text(profile: dict[str, Any]) -> str:
    if "missing" in profile:
        return f"Profile skipped: {profile['missing']} (pip install py-spy)"
    if profile["tool"] == "py-spy":
        lines = [
            f"Profile of one {profile['label']} audit in a fresh process (py-spy --native "
            f"--idle, {SPY_RATE} Hz; {profile['seconds']:.1f}s under the profiler)"
        ]
        for thread, data in profile["threads"].items():
            lines.append(f"  thread {thread} ({data['samples']:,} samples): share of its wall time")
            lines += [f"    {share:6.1%}  {what}" for what, share in data["activity"]]
            lines.append("    of which Python, by innermost function:")
            lines += [f"      {share:6.1%}  {name}" for name, share in data["python"][:10]]
        return "\n".join(lines)
    lines = [f"Profile of the {profile['label']} audit (pyinstrument, {profile['duration']:.1f}s)"]
    lines.append("  own time:")
    lines += [f"    {secs:6.2f}s  {name}" for name, secs in profile["own"][:15]]
    lines.append("  inclusive time (reconcile and the engine):")
    lines += [f"    {secs:6.2f}s  {name}" for name, secs in profile["total"][:15]]
    lines.append(f"  (full profile: {profile['html']})")
    return "\n".join(lines)


def targets_text(sizes: list[int], results: dict[int, dict[str, Any]]) -> str:
    big, small = max(sizes), min(sizes)
    s, m = results[big]["streams"], results[big]["memory"]
    m0 = results[small]["memory"]
    own = max(m["rss_growth"], m["heap_peak"])
    flat_rss = m["rss_growth"] / max(m0["rss_growth"], 1)
    flat_heap = m["heap_peak"] / max(m0["heap_peak"], 1)
    full_ratio = s["audit"] / max(s["pg"], s["edge"])
    cold = m["seconds"]
    held_growth = m["heap_quarters"][-1] / max(m["heap_quarters"][0], 1)

    def verdict(ok: bool) -> str:
        return "reached" if ok else "NOT reached"

    return "\n".join(
        [
            f"Targets (issue 5) at {label(big)}:",
            f"  audit <= 15 s on edge: {cold:.1f}s in a fresh process, {s['audit']:.1f}s warm"
            f" -> {verdict(cold <= 15)}",
            f"  own memory < 100 MB: {own / 1e6:.1f} MB -> {verdict(own < 100e6)}",
            f"  flat (<= 1.25x {label(small)}): RssAnon {flat_rss:.2f}x"
            f" -> {verdict(flat_rss <= 1.25)};"
            f" heap {flat_heap:.2f}x (+{(m['heap_peak'] - m0['heap_peak']) / 2**20:.2f} MiB)"
            f" -> {verdict(flat_heap <= 1.25)}",
            f"  heap held at 3/4 of the {label(big)} scan / at 1/4: {held_growth:.2f}x",
            f"  full <= 1.2 x max(two alone): {full_ratio:.2f} -> {verdict(full_ratio <= 1.2)}",
        ]
    )


def start_postgres(root: Path) -> tuple[str, Callable[[], None]]:
    external = os.environ.get("RECONCILE_BENCH_DATABASE_URL")
    if external:
        return external, lambda: None
    from reconcile.testing.embedded import start_embedded_postgres, stop_embedded_postgres

    pgdata = root / "pgdata"
    url = start_embedded_postgres(pgdata)
    return url, lambda: stop_embedded_postgres(pgdata)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--drift", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument(
        "--repeat",
        default="3,2",
        help="runs per timing, per size (medians); one number for all sizes",
    )
    parser.add_argument(
        "--keep",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep the worlds under --root for the next run (default) or delete them",
    )
    parser.add_argument("--profile", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--markdown", type=Path, help="also write the tables as Markdown here")
    parser.add_argument("--child", nargs=2, metavar=("TASK", "SPEC"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return

    started = time.perf_counter()
    load = os.getloadavg()
    version = product_version()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    repeats = [int(r) for r in args.repeat.split(",")]
    repeats += [repeats[-1]] * (len(sizes) - len(repeats))
    root = args.root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    url, stop = start_postgres(root)
    built: dict[int, Any] = {}
    results: dict[int, dict[str, Any]] = {}
    profile: dict[str, Any] | None = None
    try:
        for faces in sizes:
            name = f"w{label(faces).lower()}"
            params = {"faces": faces, "rate": args.drift, "seed": args.seed, "name": name}
            world = worlds.load(root / name, url, **params)
            if world is None:
                print(f"building {name} ({faces:,} faces)...", file=sys.stderr, flush=True)
                world = worlds.build(root / name, url, **params)
            built[faces] = world
        print(f"worlds ready after {time.perf_counter() - started:.0f}s", file=sys.stderr)
        for faces, repeat in zip(sizes, repeats, strict=True):
            world = built[faces]
            spec = {
                "name": label(faces),
                "database_url": world.database_url,
                "edge_path": str(world.edge_path),
                "scratch": str(world.directory / "scratch-edge"),
                "expected": world.expected,
                "rows": world.manifest["rows"],
                "points": world.manifest["points"],
                "target_face_ids": world.target_face_ids,
                "repeat": repeat,
                # Nine ways to read the table: once each at a million rows, for time.
                "repeat_reads": repeat if faces < 1_000_000 else 1,
                "profile_html": str(root / f"profile-{label(faces)}.html"),
            }
            measured = [t for t in TASKS if t not in {"profile", "audit_once"}]
            results[faces] = {task: run_child(task, spec) for task in measured}
            if args.profile and faces == sizes[-1]:
                profile = run_profile(spec, root) | {"label": label(faces)}
    finally:
        stop()
        if not args.keep:
            if os.environ.get("RECONCILE_BENCH_DATABASE_URL"):
                for faces in sizes:
                    worlds.drop(url, f"w{label(faces).lower()}")
            shutil.rmtree(root, ignore_errors=True)

    print()
    print(f"machine: {machine()}")
    print(f"product: {version}")
    print(f"drift {args.drift:.0%}, seed {args.seed}, page size 1000, repeats {args.repeat}")
    print(f"load average at the start {load[0]:.2f}, at the end {os.getloadavg()[0]:.2f}")
    tables = report(sizes, results, built)
    for table in tables:
        print()
        print(table.text())
    extra = [targets_text(sizes, results)]
    if profile is not None:
        extra.append(profile_text(profile))
    for block in extra:
        print()
        print(block)
    print(f"\nsuite took {time.perf_counter() - started:.0f}s")
    if args.markdown:
        parts = [f"Machine: {machine()}. Product: {version}.", *(t.markdown() for t in tables)]
        parts.insert(
            1, f"Load average {load[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end."
        )
        parts += [f"```\n{block}\n```" for block in extra]
        args.markdown.write_text("\n\n".join(parts) + "\n")


if __name__ == "__main__":
    main()
