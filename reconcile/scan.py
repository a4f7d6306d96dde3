"""Scanning: feed both stores' streams through the merge and count what it finds.

`Scan` runs merged streams (a whole range, the slices of `--workers` in threads,
or the chunks of a targeted lookup) into the tallies, the details file and a
repair's spill; the helpers below shape the streams: read ahead in a thread,
take an in-process engine's calls one at a time, stop at a deadline, report
progress.
"""

from __future__ import annotations

import gc
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar, cast

from reconcile.diff import Drift, Keys, ScanStats, diff
from reconcile.joined import TimeUp, joined
from reconcile.report import PrivateFile, Tally
from reconcile.stores.base import KeyRange, Page, Point, PointStore, Row
from reconcile.stores.postgres import Postgres
from reconcile.targets import Chunk


class Progress(Protocol):
    """Told how far a run has got: `phase` says what it does now and how much there is
    to do (None: not known), then each call how much of that is done."""

    def phase(self, name: str, unit: str, total: int | None) -> None: ...

    def __call__(self, done: int) -> None: ...


class Scan:
    """Counts drift from merged streams; several slices may feed it, from threads."""

    def __init__(self, keys: Keys, sink: Callable[[Drift], None] | None, top: int) -> None:
        self.keys = keys
        self.sink = sink
        self.out: PrivateFile | None = None
        self.stats = ScanStats()
        self.tally = Tally(top, keys=keys)
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
                    raise TimeUp
                for drift in diff(rows, points, self.keys, stats):
                    with self._lock:
                        self.tally.add(drift)
                        if self.out is not None:
                            self.out.write_record(drift.record())
                        if self.sink is not None:
                            self.sink(drift)
        except TimeUp:
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
            pages = timed(qdrant.pages(key_range), deadline)
            streams = joined(postgres, pages, key_range, self.keys, stats)
            try:
                self.run(streams, None, stats)
            finally:
                close_streams(pages, streams)
            return stats

        with ThreadPoolExecutor(max_workers=len(ranges)) as pool:
            for stats in pool.map(one, ranges):
                self.stats.merge(stats)


class OneAtATime:
    """A point store whose calls, and each page of its scroll, take one lock."""

    def __init__(self, inner: PointStore) -> None:
        self._inner = inner
        self._lock = threading.Lock()

    def pages(self, key_range: KeyRange | None = None) -> Iterator[Page]:
        stream = self._inner.pages(key_range)
        while True:
            with self._lock:
                page = next(stream, None)
            if page is None:
                return
            yield page

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def chunk_streams(
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


def close_streams(*streams: Iterator[Any]) -> None:
    """End streams a scan left unfinished (a deadline) while their stores are still open.

    A COPY in flight is cancelled and a read-ahead thread stopped now, not when
    the garbage collector gets to them after the connections are gone.
    """
    for stream in streams:
        close = getattr(stream, "close", None)
        if close is not None:
            close()


def timed(pages: Iterator[Page], deadline: float | None) -> Iterator[Page]:
    # Stopping the point stream between pages stops the merge at a consistent place:
    # everything before the next page's first id has been judged, nothing after it has.
    if deadline is None:
        yield from pages
        return
    for page in pages:
        if time.monotonic() > deadline:
            raise TimeUp
        yield page


def counting(pages: Iterator[Page], progress: Progress | None) -> Iterator[Page]:
    if progress is None:
        yield from pages
        return
    done = 0
    for page in pages:
        yield page
        done += len(page.ids)
        progress(done)


class _Pause:
    """How many scans hold the cyclic collector paused, and whether it ran before."""

    lock = threading.Lock()
    scans = 0
    was_enabled = False


@contextmanager
def cycles_uncollected() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for a full scan (reference counting
    still frees everything that is not in a cycle).

    Why: a scan allocates millions of objects (ids, payload dicts, values) that live
    for a few chunks, so they survive the young generations and the collector then
    walks them again and again, while they hold no cycles at all. At 1M faces with
    UUID point ids that was about 2 s of the main thread's 12-14 s CPU (per-thread CPU,
    four rounds, BENCHMARKS.md; integer ids are not tracked, and cost nothing), and a
    collection afterwards found about 1,300 objects in cycles in the whole run,
    imports included. Scans nest (`--workers`, library callers in
    threads): the last one out restores the collector as the first one found it.
    """
    with _Pause.lock:
        if _Pause.scans == 0:
            _Pause.was_enabled = gc.isenabled()
            gc.disable()
        _Pause.scans += 1
    try:
        yield
    finally:
        with _Pause.lock:
            _Pause.scans -= 1
            if _Pause.scans == 0 and _Pause.was_enabled:
                gc.enable()


__all__ = [
    "OneAtATime",
    "Progress",
    "Scan",
    "chunk_streams",
    "close_streams",
    "counting",
    "cycles_uncollected",
    "prefetched",
    "timed",
]
