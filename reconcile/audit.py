"""The audit and check commands as library calls: stream both stores, merge, count."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

from reconcile.diff import Drift, Keys, Point, Row, ScanStats, diff
from reconcile.errors import ConfigError
from reconcile.postgres import Postgres, TableInfo
from reconcile.qdrant import PointStore, open_store
from reconcile.report import AuditReport, PrivateFile, Tally
from reconcile.settings import Settings
from reconcile.shards import KeyRange, slices
from reconcile.targets import Chunk, Lookup, Targets

Progress = Callable[[int], None]


@dataclass(frozen=True)
class CheckReport:
    """What `check` found: the table, the counts, and one line per problem."""

    table: TableInfo | None
    rows: int | None
    points: int | None
    keys_found: dict[str, bool]
    problems: list[str]


class Stores:
    """Both adapters, opened together and closed together; tests inject their own."""

    def __init__(
        self,
        settings: Settings,
        postgres: Postgres | None = None,
        qdrant: PointStore | None = None,
    ) -> None:
        self.settings = settings
        self.postgres = postgres or Postgres(settings)
        try:
            self.qdrant: PointStore = qdrant or open_store(settings)
        except BaseException:
            self.postgres.close()
            raise
        self._owned = (postgres is None, qdrant is None)

    def __enter__(self) -> Stores:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._owned[0]:
            self.postgres.close()
        if self._owned[1]:
            self.qdrant.close()


@contextmanager
def using(settings: Settings, stores: Stores | None) -> Iterator[Stores]:
    """The caller's stores as they are, or stores of our own, closed when done.

    A function given stores must not close them: repair audits with the same
    connections it then writes with.
    """
    if stores is not None:
        yield stores
        return
    with Stores(settings) as own:
        yield own


def check(settings: Settings, stores: Stores | None = None) -> CheckReport:
    """Validate the mapping on both sides, collecting every problem instead of the first."""
    problems: list[str] = []
    table = rows = points = None
    keys_found: dict[str, bool] = {}
    with using(settings, stores) as s:
        try:
            table = s.postgres.inspect()
            rows = s.postgres.count()
            if not table.point_indexed:
                problems.append(
                    f"no index on {table.name}.{settings.point_column}: the ordered scan "
                    f"would sort the whole table; CREATE INDEX ON {table.name} "
                    f"({settings.point_column})"
                )
        except ConfigError as exc:
            problems.append(str(exc))
        try:
            s.qdrant.require_collection()
            points = s.qdrant.count()
            for key in settings.keys:
                keys_found[key] = s.qdrant.has_key(key)
                if not keys_found[key] and points:
                    problems.append(
                        f"no point in {settings.collection!r} holds payload key {key!r}: "
                        "check --person-key / --flag-key"
                    )
        except ConfigError as exc:
            problems.append(str(exc))
    return CheckReport(table, rows, points, keys_found, problems)


def audit(
    settings: Settings,
    *,
    top: int = 10,
    details: Path | None = None,
    progress: Progress | None = None,
    stores: Stores | None = None,
    sink: Callable[[Drift], None] | None = None,
    targets: Targets | None = None,
    deadline: float | None = None,
    shard: tuple[int, int] = (1, 1),
    workers: int = 1,
) -> AuditReport:
    """Stream every row and every point once, merge-join them, and count the drift.

    With `targets`, look only those faces up in both stores instead of scanning.
    `shard` (i, N) restricts the scan to the i-th of N slices of the point-id
    space; `workers` scans that many sub-slices at once, each on connections of
    its own, and merges the counts. `sink` sees every drift record as it streams
    (repair spills them to disk). Past `deadline` (time.monotonic) the scan stops
    cleanly: the report counts what was seen and says `complete=False`.
    """
    if top < 0:
        raise ConfigError(f"--top {top} is negative: use 0 or more")
    if not 1 <= workers <= 64:
        raise ConfigError(f"--workers {workers} is out of range: use 1 to 64")
    if workers > 1 and targets is not None:
        raise ConfigError("--workers slices a full scan: drop the ids, --since, --incremental")
    started = time.monotonic()
    keys = Keys(settings.person_key, settings.flag_key)
    scan = _Scan(keys, sink, top)
    unknown: list[str] = []
    with using(settings, stores) as s, ExitStack() as stack:
        table = s.postgres.inspect()
        s.qdrant.require_collection()
        started_at = s.postgres.now()
        scan.out = None if details is None else stack.enter_context(PrivateFile(details))
        scope = "full"
        if targets is not None:
            since = (
                started_at - targets.since
                if isinstance(targets.since, timedelta)
                else targets.since
            )
            scope = targets.describe(since)
            lookup = Lookup(s.postgres, s.qdrant, table, settings.page_size)
            chunks = lookup.by_ids(targets) if since is None else lookup.since(since)
            scan.run(_chunk_streams(chunks, unknown), deadline)
        else:
            bounds = None if table.point_type == "uuid" else s.postgres.point_bounds()
            ranges = slices(*shard, workers, table.point_type, bounds)
            if shard != (1, 1):
                scope = f"shard {shard[0]}/{shard[1]}"
            if workers == 1:
                for key_range in ranges:
                    points = s.qdrant.points(key_range)
                    rows = s.postgres.rows(key_range)
                    if settings.qdrant_url:
                        # A server's client waits on the network with the GIL
                        # released: each stream read ahead in a thread of its own
                        # overlaps the other and the merge. An engine in this process
                        # (local mode, edge) holds the GIL while it scrolls, so there
                        # threads only add switching (1M faces on edge: 5.8 s with
                        # PostgreSQL in a thread, 5.2 s without; BENCHMARKS.md).
                        points, rows = prefetched(points), prefetched(rows)
                    points = _timed(_counting(points, progress), deadline)
                    try:
                        scan.run(iter([(rows, points)]), deadline)
                    finally:
                        _close(points, rows)
            else:
                # A server's client is thread-safe; an in-process engine (local mode,
                # edge) is not, and gains nothing from threads under the GIL anyway:
                # its calls are taken one at a time while PostgreSQL reads overlap.
                qdrant = s.qdrant if settings.qdrant_url else _OneAtATime(s.qdrant)
                scan.parallel(s.postgres, qdrant, ranges, deadline)
    stats, tally = scan.stats, scan.tally
    return AuditReport(
        table=table.name,
        collection=settings.collection,
        rows=stats.rows,
        points=stats.points,
        rows_without_point=stats.rows_without_point,
        counts=tally.counts(stats),
        top_persons=tally.top(top),
        top_persons_exact=tally.persons.exact,
        top_persons_error=tally.errors(top),
        persons_capacity=tally.persons.capacity,
        duration_seconds=time.monotonic() - started,
        details=None if details is None else str(details),
        scope=scope,
        unknown_ids=unknown,
        started_at=started_at,
        skipped_recent=stats.skipped_recent,
        complete=scan.complete,
    )


class _Scan:
    """Counts drift from merged streams; several slices may feed it, from threads."""

    def __init__(self, keys: Keys, sink: Callable[[Drift], None] | None, top: int) -> None:
        self.keys = keys
        self.sink = sink
        self.out: PrivateFile | None = None
        self.stats = ScanStats()
        self.tally = Tally(top)
        self.complete = True
        self._lock = threading.Lock()

    def run(
        self,
        streams: Iterator[tuple[Iterator[Row], Iterator[Point]]],
        deadline: float | None,
        stats: ScanStats | None = None,
    ) -> None:
        stats = stats or self.stats
        try:
            for rows, points in streams:
                if deadline is not None and time.monotonic() > deadline:
                    raise _TimeUp
                for drift in diff(rows, points, self.keys, stats):
                    with self._lock:
                        self.tally.add(drift)
                        if self.out is not None:
                            self.out.write_record(drift.record())
                        if self.sink is not None:
                            self.sink(drift)
        except _TimeUp:
            self.complete = False

    def parallel(
        self,
        postgres: Postgres,
        qdrant: PointStore,
        ranges: list[KeyRange],
        deadline: float | None,
    ) -> None:
        """Each slice in a thread of its own (PostgreSQL gives each its connection)."""

        def one(key_range: KeyRange) -> ScanStats:
            stats = ScanStats()
            points = _timed(qdrant.points(key_range), deadline)
            self.run(iter([(postgres.rows(key_range), points)]), deadline, stats)
            return stats

        with ThreadPoolExecutor(max_workers=len(ranges)) as pool:
            for stats in pool.map(one, ranges):
                self.stats.merge(stats)


class _OneAtATime:
    """A point store whose calls, and each step of its scroll, take one lock."""

    def __init__(self, inner: PointStore) -> None:
        self._inner = inner
        self._lock = threading.Lock()

    def points(self, key_range: KeyRange | None = None) -> Iterator[Point]:
        stream = self._inner.points(key_range)
        while True:
            with self._lock:
                point = next(stream, None)
            if point is None:
                return
            yield point

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _chunk_streams(
    chunks: Iterator[Chunk], unknown: list[str]
) -> Iterator[tuple[Iterator[Row], Iterator[Point]]]:
    for chunk in chunks:
        unknown.extend(chunk.unknown)
        yield iter(chunk.rows), iter(chunk.points)


T = TypeVar("T")
_DONE = object()


def prefetched(items: Iterator[T], batch: int = 1000, depth: int = 8) -> Iterator[T]:
    """Read `items` in a background thread, `depth` batches ahead (bounded memory).

    PostgreSQL's network waits and row decoding then overlap with the Qdrant
    scroll and the merge in this thread. The producer stops when the consumer
    does (closing the generator), and its errors are raised here.
    """
    pipe: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(value: object) -> bool:
        while not stop.is_set():
            try:
                pipe.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def fill() -> None:
        try:
            chunk: list[T] = []
            for item in items:
                chunk.append(item)
                if len(chunk) == batch:
                    if not put(chunk):
                        return
                    chunk = []
            if put(chunk):
                put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            put(exc)

    thread = threading.Thread(target=fill, name="reconcile-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            got = pipe.get()
            if got is _DONE:
                return
            if isinstance(got, BaseException):
                raise got
            yield from cast(list[T], got)
    finally:
        stop.set()
        thread.join(timeout=5)


def _close(*streams: Iterator[Any]) -> None:
    """End streams a scan left unfinished (a deadline) while their stores are still open.

    A COPY in flight is cancelled and a read-ahead thread stopped now, not when
    the garbage collector gets to them after the connections are gone.
    """
    for stream in streams:
        close = getattr(stream, "close", None)
        if close is not None:
            close()


class _TimeUp(Exception):
    """Raised inside the point stream when --max-duration has passed."""


def _timed(points: Iterator[Point], deadline: float | None) -> Iterator[Point]:
    # Stopping the point stream stops the merge at a consistent place: everything
    # before the current point id has been judged, nothing after it has.
    if deadline is None:
        yield from points
        return
    for n, point in enumerate(points):
        if n % 1000 == 0 and time.monotonic() > deadline:
            raise _TimeUp
        yield point


def _counting(points: Iterator[Point], progress: Progress | None) -> Iterator[Point]:
    if progress is None:
        yield from points
        return
    for n, point in enumerate(points, 1):
        if n % 1000 == 0:
            progress(n)
        yield point


__all__ = ["CheckReport", "Stores", "audit", "check"]
