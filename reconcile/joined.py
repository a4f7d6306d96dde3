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
went from 1.45-1.77 times a plain scroll of the store to 1.16-1.37 times.
"""

from __future__ import annotations

import contextlib
import json
import struct
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from reconcile.diff import Keys, ScanStats
from reconcile.stores.base import (
    KeyRange,
    Page,
    Point,
    PointId,
    RawId,
    Row,
    column_holds,
    each_point,
    point_id,
    point_order,
)
from reconcile.stores.postgres import Joiner, Postgres

CHUNK = 10_000  # points per statement: 10 scroll pages; about 1 MB of parameters
AHEAD = 2  # chunks scrolled while a statement is pending

Found = list[tuple[int | None, Row | None]] | None  # None: too many, merge the rows


class TimeUp(Exception):
    """Raised inside the point stream when --max-duration has passed (`scan.timed`)."""


def joined(
    postgres: Postgres,
    pages: Iterator[Page],
    key_range: KeyRange,
    keys: Keys,
    stats: ScanStats,
) -> Iterator[tuple[Iterator[Row], Iterator[Point]]]:
    """The candidates of each chunk of `pages` (the scroll of `key_range`) and of the
    rows of the chunk's id range, as (rows, points) streams for the merge; the in-sync
    pairs counted into `stats` when their chunk is handed over.

    A TimeUp raised by `pages` (the deadline) hands over the chunks already sent to
    PostgreSQL, then goes on: everything before the chunk being read was judged,
    nothing after.
    """
    integer = postgres.inspect().point_type != "uuid"
    names = keys.names
    low: PointId | None = key_range.low
    pending: deque[_Chunk] = deque()
    join = postgres.joiner()
    with ThreadPoolExecutor(1, "reconcile-join") as pool:
        following = next(pages, None)
        first = True
        while first or following is not None:
            first = False
            ids: list[RawId] = []
            payloads: list[dict[str, Any]] = []
            columns: list[list[Any]] = [[] for _ in names]  # each compared key's values
            try:
                # Whole pages up to CHUNK points (a page_size that does not divide it
                # makes a chunk at most a page longer).
                while following is not None and len(ids) < CHUNK:
                    ids += following.ids
                    payloads += following.payloads
                    # The values are read now, while the page's payloads are still in
                    # the CPU's cache: the join's thread, later, took four times as long.
                    for column, key in zip(columns, names, strict=True):
                        column += [p.get(key) for p in following.payloads]
                    following = next(pages, None)
            except TimeUp:
                while pending:
                    yield pending.popleft().handed_over(postgres, stats)
                raise
            high = key_range.high if following is None else point_id(following.ids[0])
            # Point ids the column cannot hold (integers in a uuid table, UUIDs or
            # integers past bigint in an integer one) name no row: candidates as they are.
            # Ids ascend (integers first, then UUIDs): when the first and the last fit,
            # all do, and the per-point test (0.15 µs) is skipped, as it is for nearly
            # every chunk.
            own: Sequence[int]
            if not ids or (column_holds(ids[0], integer) and column_holds(ids[-1], integer)):
                own = range(len(ids))
            else:
                own = [n for n, raw in enumerate(ids) if column_holds(raw, integer)]
            lo, hi = _bound(low, integer), _bound(high, integer)
            future = pool.submit(_query, join, lo, hi, ids, columns, own, integer)
            pending.append(_Chunk(future, ids, payloads, own, lo, hi))
            # Up to AHEAD chunks' statements queued behind the one running: a statement
            # slower than the next chunk's scroll (the server shares the cores) is
            # waited for only when it falls that far behind.
            if len(pending) > AHEAD:
                yield pending.popleft().handed_over(postgres, stats)
            low = high
        while pending:
            yield pending.popleft().handed_over(postgres, stats)
    if key_range.first:
        without = postgres.rows_without_point()
        stats.rows += without
        stats.rows_without_point += without


_BEFORE_ALL = object()  # a bound below every id of the column's kind
_AFTER_ALL = object()  # a bound above every id of the column's kind


def _bound(value: PointId | None, integer: bool) -> object:
    """A chunk's bound for the column: None (open), an id it can hold, or a marker.

    Qdrant orders integers before UUIDs, so an integer bound in a uuid table lies
    below every row, and a UUID bound (or one past bigint) in an integer table above
    every row.
    """
    if value is None or column_holds(value, integer):
        return value
    return _AFTER_ALL if integer else _BEFORE_ALL


def _id_bytes(ids: list[RawId], integer: bool) -> bytes:
    """The ids as one bytes parameter, which the statement cuts into its array: 8
    big-endian bytes each in an integer column, a UUID's 16 bytes in a uuid one.

    Binary because it is cheaper at both ends: 0.07 µs a UUID here against 0.4 for its
    text, and PostgreSQL cuts bytes faster than it parses an array literal (10,000
    UUIDs: 3.4 ms of this thread, holding the GIL, against 5.8).
    """
    if integer:
        return struct.pack(f">{len(ids)}q", *ids)
    try:
        return b"".join([u.int.to_bytes(16) for u in ids])  # type: ignore[union-attr]
    except AttributeError:
        return b"".join([_uuid_bytes(u) for u in ids])  # an adapter that gives strings


def _uuid_bytes(value: RawId) -> bytes:
    """A UUID's 16 bytes, from a `uuid.UUID` or its text."""
    if isinstance(value, UUID):
        return value.bytes
    text = str(value)
    if len(text) == 36 and text[8] == text[13] == text[18] == text[23] == "-":
        # The hyphenated form, as Qdrant writes ids, in a fifth of UUID()'s time. fromhex
        # skips spaces, so 16 bytes from the 32 other characters means 32 hex digits.
        with contextlib.suppress(ValueError):
            found = bytes.fromhex(text.replace("-", ""))
            if len(found) == 16:
                return found
    return UUID(text).bytes  # braces, a urn: prefix, no hyphens; or ValueError


def _query(
    join: Joiner,
    low: object,
    high: object,
    ids: list[RawId],
    columns: list[list[Any]],
    own: Sequence[int],
    integer: bool,
) -> Found:
    """Run in the pool's thread: the chunk's candidates, or (an empty id range) its
    points of the column's kind, each a candidate without a row.

    The compared values go as one JSON array per key (in Keys.names order), a value
    per point (null: absent); see `_encoded` for the exact positions. A key's values
    as one list: the JSON encoder takes 0.1 µs a string in a list, and 1 µs a small
    dict.
    """
    if low is _AFTER_ALL or high is _BEFORE_ALL:
        return [(n + 1, None) for n in range(len(own))]
    if len(own) < len(ids):
        ids = [ids[n] for n in own]
        columns = [[column[n] for n in own] for column in columns]
    values: list[str] | None
    try:
        values = [_encoded(column, i in join.exact) for i, column in enumerate(columns)]
    except ValueError:
        # NaN or infinity, which JSON cannot carry: every point of the chunk is made a
        # candidate and judged by the merge.
        values = None
    lo = None if low is _BEFORE_ALL else low
    hi = None if high is _AFTER_ALL else high
    return join(lo, hi, _id_bytes(ids, integer), values)  # type: ignore[arg-type]


_INTEGERS = {int, type(None)}


def _encoded(column: list[Any], exact: bool) -> str:
    """A key's values as a JSON array. At an `exact` position (`Joiner.exact`) each
    value goes as its JSON text, Python's, which PostgreSQL's to_jsonb text equals
    exactly when the values are equal under the rules (see `Postgres._join_sql`);
    but a chunk of integers (or absent values) alone goes as plain JSON numbers, whose
    text the statement takes: an integer's JSON text is its digits at both ends, and
    the set of types costs a third of a call per value.
    """
    if exact and not {type(v) for v in column} <= _INTEGERS:
        column = [_exact_text(v) for v in column]
    return json.dumps(column, separators=(",", ":"), allow_nan=False)


def _exact_text(value: Any) -> str | None:
    """A payload value as its JSON text (None: absent or null)."""
    if value is None:
        return None
    if type(value) is int:
        return str(value)  # what dumps() writes, in a fifth of the time
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


@dataclass(frozen=True)
class _Chunk:
    """A chunk whose statement is in flight: its points, which of them are of the
    column's kind (`own`, by position), and its id range's bounds."""

    future: Future[Found]
    ids: list[RawId]
    payloads: list[dict[str, Any]]
    own: Sequence[int]
    low: object
    high: object

    def handed_over(
        self, postgres: Postgres, stats: ScanStats
    ) -> tuple[Iterator[Row], Iterator[Point]]:
        """The chunk's candidates in the merge's order; its in-sync pairs counted. With
        too many candidates, the chunk's points and every row of its range instead."""
        found = self.future.result()
        ids, payloads, own = self.ids, self.payloads, self.own
        if found is None:
            low = None if self.low is _BEFORE_ALL else self.low
            high = None if self.high is _AFTER_ALL else self.high
            key_range = KeyRange(low, high)  # type: ignore[arg-type]
            return postgres.rows(key_range, nulls=False), each_point([Page(ids, payloads)])
        rows = sorted((row for _, row in found if row is not None), key=_row_order)
        candidates = {own[o - 1] for o, _ in found if o is not None}
        if len(own) < len(ids):
            mine = set(own)
            candidates.update(n for n in range(len(ids)) if n not in mine)
        in_sync = len(ids) - len(candidates)
        stats.rows += in_sync
        stats.points += in_sync
        stats.in_sync += in_sync
        points = [Point(point_id(ids[n]), payloads[n]) for n in sorted(candidates)]
        return iter(rows), iter(points)


def _row_order(row: Row) -> tuple[bool, int, str]:
    assert row.point_id is not None  # the statement returns rows with a point only
    return point_order(row.point_id)


__all__ = ["CHUNK", "TimeUp", "joined"]
