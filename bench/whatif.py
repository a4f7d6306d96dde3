"""Variants of the audit's parts, measured without changing the product (the `whatif` task).

The edge stream (page size, id conversion), the merge alone on materialised
streams (the product's diff and a lean counting merge), the audit with the
garbage collector off, read-ahead threads, and the bench's own prototypes: a
lean audit, and PostgreSQL with the merge in a second process.
"""

from __future__ import annotations

import gc
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from bench.measure import check, drain, settings_for, timed
from bench.readers import copy_chunks
from bench.worlds import ALL_KINDS, FLAG_KEY
from reconcile.scan import prefetched  # the product's read-ahead, as audits use it


def task_whatif(spec: dict[str, Any]) -> dict[str, Any]:
    """Each variant once, warm, in one process (see the module's docstring)."""
    from reconcile.diff import Keys
    from reconcile.ops.audit import audit
    from reconcile.stores import Stores

    settings = settings_for(spec)
    keys = Keys(settings.person_key, settings.flag_key)
    expected = spec["expected"]
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
        check(report, spec)
        store: Any = stores.qdrant
        shard = store.shard

        _, out["edge_product"] = timed(lambda: drain(store.points()))
        _, out["edge_raw_1000"] = timed(lambda: raw_scroll(shard, settings.keys, 1000))
        _, out["edge_raw_10000"] = timed(lambda: raw_scroll(shard, settings.keys, 10_000))
        _, out["edge_tuples_10000"] = timed(lambda: drain(edge_tuples(shard, settings.keys)))
        out["gil_share"] = gil_share_during(lambda: raw_scroll(shard, settings.keys, 1000))

        out["merge_product"], out["merge_lean"] = merges(stores, keys, settings.person_key, spec)

        counts, out["lean_audit"] = timed(lambda: lean_audit(spec, shard, settings))
        assert counts == expected, counts

        # The product's merge with PostgreSQL read in a thread (its choice for a server).
        n, out["pg_prefetched"] = timed(
            lambda: judged(prefetched(stores.postgres.rows()), store.points(), keys)
        )
        assert n == sum(expected.values())
        # The product's merge with the edge stream in a thread too, not only PostgreSQL.
        n, out["both_prefetched"] = timed(
            lambda: judged(prefetched(stores.postgres.rows()), prefetched(store.points()), keys)
        )
        assert n == sum(expected.values())

        (counts, out["worker_ready"]), out["second_process"] = timed(
            lambda: merge_in_second_process(settings, shard)
        )
        assert counts == {k: v for k, v in expected.items() if v}, counts
    return out


def raw_scroll(shard: Any, keys: list[str], page: int) -> int:
    """The engine's scroll alone: every record's id and payload touched, nothing converted."""
    import qdrant_edge as edge

    offset, n = None, 0
    while True:
        request = edge.ScrollRequest(
            offset=offset, limit=page, with_payload=keys, with_vector=False
        )
        records, offset = shard.scroll(request)
        for r in records:
            _ = r.id, r.payload
        n += len(records)
        if offset is None:
            return n
        offset = str(offset)


def merges(stores: Any, keys: Any, person_key: str, spec: dict[str, Any]) -> tuple[float, float]:
    """Both merges over the same streams, held in memory so only the merge is timed."""
    from reconcile.diff import ScanStats, diff

    rows = list(stores.postgres.rows())
    points = list(stores.qdrant.points())
    stats = ScanStats()
    drifted, product = timed(lambda: drain(diff(rows, points, keys, stats)))
    assert drifted + stats.in_sync == sum(spec["expected"].values())
    row_tuples = [(r.point_id, r.face_id, r.person_id) for r in rows]
    point_tuples = [(p.point_id, p.payload) for p in points]
    counts, lean = timed(lambda: lean_counts(row_tuples, point_tuples, person_key, FLAG_KEY))
    assert counts == spec["expected"], counts
    return product, lean


def lean_audit(spec: dict[str, Any], shard: Any, settings: Any) -> dict[str, int]:
    """The lean prototype: COPY chunks read ahead, edge tuples, the lean merge, gc off."""
    gc.disable()
    try:
        rows = prefetched(copy_chunks(spec["database_url"]))
        points = edge_tuples(shard, settings.keys)
        return lean_counts(rows, points, settings.person_key, FLAG_KEY)
    finally:
        gc.enable()


def judged(rows: Iterable[Any], points: Iterable[Any], keys: Any) -> int:
    """The product's merge over these streams: how many point ids it judged."""
    from reconcile.diff import ScanStats, diff

    stats = ScanStats()
    drift = drain(diff(rows, points, keys, stats))
    return drift + stats.in_sync


def lean_counts(
    rows: Iterable[Any], points: Iterable[Any], person: str, flag: str
) -> dict[str, int]:
    """A counting-only merge for UUID point ids, to show what the merge could cost.

    Same kinds as reconcile.diff for what the benchmark worlds hold (string ids,
    no NULL point ids, no grace window): ids compared as strings directly, no key
    tuples, no generator per stream, classification inline. Rows are
    (point_id, face_id, person_id) tuples, points (point_id, payload) tuples.
    """
    counts = dict.fromkeys(ALL_KINDS, 0)
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
