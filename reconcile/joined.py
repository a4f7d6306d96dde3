"""The full scan's fast path: PostgreSQL joins each chunk of points with its rows.

The plain merge decodes every row in this process and compares every pair here,
while the engine's scroll (which holds the GIL) already takes most of the time.
Instead, per chunk of `CHUNK` points in scroll order, the chunk's ids and compared
payload values go to PostgreSQL as the parameters of one read-only statement
(`stores.postgres.Joiner`) that FULL JOINs them with the rows of the chunk's id
range and returns only candidates: points no row names, rows naming no point, points
several rows name, recent rows, and pairs whose values are not exactly equal. The
statement runs in a thread while this one scrolls the next chunk, so the server's C
code works on the other core. Every pair not returned is in sync and only counted;
the candidates go through the same merge (`diff.diff`) as before, so every kind,
per-key count, detail line and repair record is the merge's own.

Measured at 1M faces on Qdrant Edge, fresh processes (BENCHMARKS.md): the audit
went from 1.45-1.77 times a plain scroll of the store to 1.09-1.12 times.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice

from reconcile.diff import Keys, ScanStats
from reconcile.stores.base import KeyRange, Point, PointId, Row, point_order
from reconcile.stores.postgres import Joiner, Postgres

CHUNK = 10_000  # points per statement: 10 scroll pages; about 1 MB of parameters

Found = list[tuple[int | None, Row | None]] | None  # None: too many, merge the rows


class TimeUp(Exception):
    """Raised inside the point stream when --max-duration has passed (`scan.timed`)."""


def joined(
    postgres: Postgres,
    points: Iterator[Point],
    key_range: KeyRange,
    keys: Keys,
    stats: ScanStats,
) -> Iterator[tuple[Iterator[Row], Iterator[Point]]]:
    """The candidates of each chunk of `points` (the scroll of `key_range`) and of the
    rows of the chunk's id range, as (rows, points) streams for the merge; the in-sync
    pairs counted into `stats` when their chunk is handed over.

    A TimeUp raised by `points` (the deadline) hands over the chunk already joined,
    then goes on: everything before the point being read was judged, nothing after.
    """
    integer = postgres.inspect().point_type != "uuid"
    names = keys.names
    low: PointId | None = key_range.low
    pending: _Chunk | None = None
    join = postgres.joiner()
    with ThreadPoolExecutor(1, "reconcile-join") as pool:
        following = next(points, None)
        first = True
        while first or following is not None:
            first = False
            try:
                chunk = [] if following is None else [following, *islice(points, CHUNK - 1)]
                following = next(points, None)
            except TimeUp:
                if pending is not None:
                    yield pending.handed_over(postgres, stats)
                raise
            high = key_range.high if following is None else following[0]
            # Point ids the column cannot hold (integers in a uuid table, UUIDs or
            # integers past bigint in an integer one) name no row: candidates as they are.
            # Ids ascend (integers first, then UUIDs): when the first and the last fit,
            # all do, and the per-point test (0.15 µs) is skipped, as it is for nearly
            # every chunk.
            if not chunk or (_fits(chunk[0][0], integer) and _fits(chunk[-1][0], integer)):
                own = list(range(len(chunk)))
            else:
                own = [n for n, p in enumerate(chunk) if _fits(p[0], integer)]
            lo, hi = _bound(low, integer), _bound(high, integer)
            future = pool.submit(_query, join, lo, hi, chunk, own, names, join.exact)
            if pending is not None:
                yield pending.handed_over(postgres, stats)
            pending = _Chunk(future, chunk, own, lo, hi)
            low = high
        if pending is not None:
            yield pending.handed_over(postgres, stats)
    if key_range.first:
        without = postgres.rows_without_point()
        stats.rows += without
        stats.rows_without_point += without


_BEFORE_ALL = object()  # a bound below every id of the column's kind
_AFTER_ALL = object()  # a bound above every id of the column's kind


BIGINT_END = 2**63  # Qdrant's integer ids are unsigned 64-bit; PostgreSQL's bigint is not


def _fits(point_id: PointId, integer: bool) -> bool:
    """Whether the point column (integers when `integer`, else uuid) can hold this id."""
    if type(point_id) is int:
        return integer and point_id < BIGINT_END
    return not integer


def _bound(value: PointId | None, integer: bool) -> object:
    """A chunk's bound for the column: None (open), an id it can hold, or a marker.

    Qdrant orders integers before UUIDs, so an integer bound in a uuid table lies
    below every row, and a UUID bound (or one past bigint) in an integer table above
    every row.
    """
    if value is None or _fits(value, integer):
        return value
    return _AFTER_ALL if integer else _BEFORE_ALL


def _query(
    join: Joiner,
    low: object,
    high: object,
    chunk: list[Point],
    own: list[int],
    names: tuple[str, ...],
    exact: tuple[int, ...],
) -> Found:
    """Run in the pool's thread: the chunk's candidates, or (an empty id range) its
    points of the column's kind, each a candidate without a row.

    Each point's values go in `names` order; those at the `exact` positions as their
    JSON text (Python's, which PostgreSQL's to_jsonb text equals exactly when the
    values are equal under the rules: see `Postgres._join_sql`).
    """
    if low is _AFTER_ALL or high is _BEFORE_ALL:
        return [(n + 1, None) for n in range(len(own))]
    points = chunk if len(own) == len(chunk) else [chunk[n] for n in own]
    ids = "{" + ",".join([str(p[0]) for p in points]) + "}"
    try:
        # map() over the payload's bound get: 0.1 µs a point less than a comprehension.
        rows = [list(map(p[1].get, names)) for p in points]
        for i in exact:
            for row in rows:
                if row[i] is not None:
                    row[i] = json.dumps(row[i], ensure_ascii=False, allow_nan=False)
        values = json.dumps(rows, separators=(",", ":"), allow_nan=False)
    except ValueError:
        # NaN or infinity, which JSON cannot carry: every point of the chunk is made a
        # candidate (an empty array equals no row's array) and judged by the merge.
        values = "[" + ",".join(["[]"] * len(own)) + "]"
    lo = None if low is _BEFORE_ALL else low
    hi = None if high is _AFTER_ALL else high
    return join(lo, hi, ids, values, len(own))  # type: ignore[arg-type]


@dataclass(frozen=True)
class _Chunk:
    """A chunk whose statement is in flight: its points, which of them are of the
    column's kind (`own`, by position), and its id range's bounds."""

    future: Future[Found]
    chunk: list[Point]
    own: list[int]
    low: object
    high: object

    def handed_over(
        self, postgres: Postgres, stats: ScanStats
    ) -> tuple[Iterator[Row], Iterator[Point]]:
        """The chunk's candidates in the merge's order; its in-sync pairs counted. With
        too many candidates, the chunk's points and every row of its range instead."""
        found = self.future.result()
        chunk, own = self.chunk, self.own
        if found is None:
            low = None if self.low is _BEFORE_ALL else self.low
            high = None if self.high is _AFTER_ALL else self.high
            key_range = KeyRange(low, high)  # type: ignore[arg-type]
            return postgres.rows(key_range, nulls=False), iter(chunk)
        rows = sorted((row for _, row in found if row is not None), key=_row_order)
        candidates = {own[o - 1] for o, _ in found if o is not None}
        if len(own) < len(chunk):
            mine = set(own)
            candidates.update(n for n in range(len(chunk)) if n not in mine)
        in_sync = len(chunk) - len(candidates)
        stats.rows += in_sync
        stats.points += in_sync
        stats.in_sync += in_sync
        return iter(rows), iter([chunk[n] for n in sorted(candidates)])


def _row_order(row: Row) -> tuple[bool, int, str]:
    assert row.point_id is not None  # the statement returns rows with a point only
    return point_order(row.point_id)


__all__ = ["CHUNK", "TimeUp", "joined"]
