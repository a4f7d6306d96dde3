"""Drawing ids for `audit --sample`: every id of a store equally likely in each draw.

How ids are drawn. The obvious draw, "a random id r, then the first id >= r",
picks each id with probability proportional to the gap before it. For random
UUIDs that gap is independent of drift, but it is not small: on a table of M ids
it shifts the estimate by about sqrt(2 p (1 - p) / M), as much as a sample of M/2,
the same for every seed; for serial or time-ordered ids gaps follow the history
of inserts and deletes, and so may go with drift. Instead each draw takes *every* id in a
random window [r, r + w) of the id range, treated as a circle. An id lies in a
window with probability w / span whatever its neighbours, so every id is equally
likely to be drawn, for integers and UUIDs, dense or sparse ranges alike. A window
costs one index range probe (PostgreSQL) or one scroll from an offset (Qdrant),
like the next-id draw. Its width aims at one id per window and adapts between
batches to the yield seen so far, which depends on id density only, never on drift.

What is accepted:
- Sampling is with replacement: windows may overlap, and an id drawn twice counts twice.
- Two ids from one window are neighbours in id order. For random UUIDs that means
  nothing; for serial ids, drift that comes in runs of consecutive ids makes the
  interval somewhat too narrow (at most by a factor of about 1.4 at one id per window).
- A window holding more than WINDOW_CAP ids is dropped, not truncated (a truncated
  window would favour low ids), and counted in the report: only time-ordered ids
  inserted in a burst far denser than average cause it, and those bursts are then
  under-represented.
- The face side samples distinct point ids that some row names, as the audit counts
  them; rows without a point id are not sampled. The point side samples only ids of
  the table's kind (integers or UUIDs): a point of the other kind can never be named
  by a row, and is never drawn.
- Estimated counts multiply a rate by a population that is itself an estimate: the
  planner's row estimate (pg_class.reltuples scaled to the table's current size,
  so never a count(*)) and Qdrant's approximate count.
"""

from __future__ import annotations

import json
import math
import random
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from reconcile.stores.base import PointId, PointStore
from reconcile.stores.postgres import Postgres, TableInfo, quoted

# One id per window costs about one probe per sampled id; a smaller yield would
# cut the neighbour effect described above at a proportional cost in probes.
TARGET_YIELD = 1.0
# Far above what a window holds when its width matches the density (Poisson with
# mean 1), so only extreme clustering reaches it.
WINDOW_CAP = 256
# Ids per Qdrant scroll request while reading a window: most windows hold 0 to 2.
SCROLL_PAGE = 4
# Windows per pilot round, and how many rounds may retune a badly estimated width
# (each changes it up to 16-fold).
PILOT_WINDOWS = 16
PILOT_ROUNDS = 40
# A draw gives up after this many windows per requested id: a store emptied
# while we sample must not keep us probing forever.
MAX_WINDOWS_PER_ID = 64
# Qdrant ids are unsigned 64-bit integers or UUIDs.
MAX_INT_ID = 2**64 - 1
MAX_UUID = 2**128 - 1


# --- drawing ids ------------------------------------------------------------------
#
# Ids are handled as integers (a UUID as its 128-bit value, whose order is the
# order both stores keep) so that one circle arithmetic serves both kinds.

Window = tuple[tuple[int, int], ...]  # one or two inclusive ranges (two when it wraps)
# The ids in each window, in order, or None for a window over WINDOW_CAP. Lazy, so
# that Qdrant is not asked about windows the sample no longer needs.
Fetch = Callable[[list[Window]], Iterable[list[int] | None]]


@dataclass(frozen=True)
class _Draw:
    ids: list[int]
    windows: int
    dropped: int


def _window(start: int, width: int, low: int, high: int) -> Window:
    end = start + width - 1
    if end <= high:
        return ((start, end),)
    return ((start, high), (low, low + end - high - 1))


def draw(
    rng: random.Random,
    n: int,
    bounds: tuple[int, int] | None,
    population: int,
    fetch: Fetch,
) -> _Draw:
    """n ids, each id of [low, high] equally likely in every draw (see the module doc)."""
    if bounds is None:
        return _Draw([], 0, 0)
    low, high = bounds
    span = high - low + 1
    width = _clamp(round(span * TARGET_YIELD / max(population, 1)), 1, span)
    windows = dropped = 0

    def windows_of(count: int) -> Iterator[list[int] | None]:
        nonlocal windows, dropped
        starts = [rng.randint(low, high) for _ in range(count)]
        for found in fetch([_window(start, width, low, high) for start in starts]):
            windows += 1
            dropped += found is None
            yield found

    # Pilot windows only tune the width and their ids are thrown away: with a stale
    # size estimate the first windows could hold hundreds of neighbouring ids, and
    # keeping or discarding windows by what they held would favour sparse ranges.
    for _ in range(PILOT_ROUNDS):
        pilot = list(windows_of(PILOT_WINDOWS))
        mean = _held(pilot) / len(pilot)
        if mean == 0 and width == span:
            return _Draw([], windows, dropped)  # emptied while we sample
        if TARGET_YIELD / 2 <= mean <= TARGET_YIELD * 2 or (mean > 0 and width == 1):
            break
        width = _adapt(width, mean, span)

    ids: list[int] = []
    budget = windows + MAX_WINDOWS_PER_ID * n
    while len(ids) < n and windows < budget:
        count = min(1000, max(8, math.ceil((n - len(ids)) / TARGET_YIELD * 1.1)))
        used: list[list[int] | None] = []
        for found in windows_of(count):
            used.append(found)
            if found is None:
                continue
            room = n - len(ids)
            # The window that completes the sample gives a random subset of its ids:
            # taking its lowest would favour ids that follow a gap.
            ids.extend(found if len(found) <= room else rng.sample(found, room))
            if len(ids) >= n:
                break
        mean = _held(used) / len(used)
        if mean == 0 and width == span:
            break
        # The width depends only on how many ids earlier windows held, never on
        # drift, so changing it between windows keeps every id equally likely.
        width = _adapt(width, mean, span)
    return _Draw(ids, windows, dropped)


def _held(found: Sequence[list[int] | None]) -> int:
    return sum(WINDOW_CAP + 1 if ids is None else len(ids) for ids in found)


def _adapt(width: int, mean: float, span: int) -> int:
    factor = min(16.0, max(1 / 16, TARGET_YIELD / mean)) if mean else 16.0
    return max(1, min(span, round(width * factor)))


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


class RowSpace:
    """The table's point ids: bounds, size estimate, and windows, all through the index."""

    def __init__(self, postgres: Postgres, info: TableInfo) -> None:
        self.postgres = postgres
        self.uuid = info.point_type == "uuid"
        self._table_sql = postgres.table
        self._column_sql = quoted(postgres.settings.point_column)
        # Every point id the table holds, in the order its index gives.
        col = self._column_sql
        self._present = f"SELECT {col} FROM {self._table_sql} WHERE {col} IS NOT NULL"

    def bounds(self) -> tuple[int, int] | None:
        # min() and max() do not exist for uuid; the two ends of the index do.
        col, present = self._column_sql, self._present
        stmt = f"SELECT ({present} ORDER BY {col} LIMIT 1), ({present} ORDER BY {col} DESC LIMIT 1)"
        with self.postgres.reading("sampling rows") as conn:
            row = conn.execute(stmt).fetchone()
        assert row is not None
        low, high = row
        if low is None or high is None:
            return None
        return _int_id(low), _int_id(high)

    def population(self) -> int:
        """The planner's estimate of rows with a point id: reltuples scaled to the
        table's current size, so it needs no count(*) and no prior ANALYZE."""
        with self.postgres.reading("estimating rows") as conn:
            row = conn.execute(f"EXPLAIN (FORMAT JSON) {self._present}").fetchone()
        assert row is not None
        plan = row[0]
        if isinstance(plan, str):
            plan = json.loads(plan)
        return max(0, round(float(plan[0]["Plan"]["Plan Rows"])))

    def windows(self, windows: list[Window]) -> list[list[int] | None]:
        """The distinct point ids in each window, in one statement of index range probes."""
        starts: list[int | str] = []
        ends: list[int | str] = []
        owners: list[int] = []
        for i, window in enumerate(windows):
            for start, end in window:
                starts.append(self._value(start))
                ends.append(self._value(end))
                owners.append(i)
        kind = "uuid" if self.uuid else "bigint"
        col = self._column_sql
        statement = (
            f"SELECT w.i, hit.p FROM unnest(CAST(%(a)s AS {kind}[]), CAST(%(b)s AS {kind}[]), "
            "CAST(%(i)s AS integer[])) AS w(a, b, i) "
            f"CROSS JOIN LATERAL (SELECT DISTINCT {col} AS p FROM {self._table_sql} "
            f"WHERE {col} BETWEEN w.a AND w.b ORDER BY p LIMIT %(cap)s) AS hit"
        )
        found: list[list[int]] = [[] for _ in windows]
        with self.postgres.reading("sampling rows") as conn:
            # The planner cannot know that a window holds about one row; left alone it
            # may read a window's whole range (bitmap scan, sort) before the LIMIT.
            # Walking the index in order lets the LIMIT bound what a window costs.
            # Local to this read-only transaction, so a replica accepts it too.
            conn.execute(
                "SELECT set_config('enable_seqscan', 'off', true), "
                "set_config('enable_bitmapscan', 'off', true), "
                "set_config('enable_sort', 'off', true), "
                "set_config('enable_hashagg', 'off', true)"
            )
            result = conn.execute(
                statement, {"a": starts, "b": ends, "i": owners, "cap": WINDOW_CAP + 1}
            )
            for owner, point in result:
                found[owner].append(_int_id(point))
        # A wrapped window is two ranges, each capped on its own: cap the sum here.
        return [ids if len(ids) <= WINDOW_CAP else None for ids in found]

    def _value(self, value: int) -> int | str:
        return str(uuid.UUID(int=value)) if self.uuid else value


class PointSpace:
    """The collection's ids of the table's kind, read by scrolling from offsets."""

    def __init__(self, store: PointStore, integer: bool) -> None:
        self.store = store
        self.integer = integer

    def bounds(self) -> tuple[int, int] | None:
        """The lowest and highest id of our kind: Qdrant has no max(), so bisect.

        At most 64 (integers) or 128 (UUIDs) scrolls of one point, whatever the size.
        """
        first = self._first_from(0)
        if first is None:
            return None
        best, beyond = first, (MAX_INT_ID if self.integer else MAX_UUID) + 1
        while best + 1 < beyond:
            middle = (best + 1 + beyond) // 2
            found = self._first_from(middle)
            if found is None:
                beyond = middle
            else:
                best = found
        return first, best

    def population(self) -> int:
        return self.store.estimated_count()

    def windows(self, windows: list[Window]) -> Iterator[list[int] | None]:
        for window in windows:
            ids: list[int] | None = []
            for start, end in window:
                assert ids is not None
                part = self._between(start, end, WINDOW_CAP + 1 - len(ids))
                ids = None if part is None else ids + part
                if ids is None:
                    break
            yield ids

    def _between(self, start: int, end: int, limit: int) -> list[int] | None:
        """Ids in [start, end], or None when there are `limit` or more."""
        ids: list[int] = []
        offset: PointId | None = self._value(start)
        while offset is not None:
            page, offset = self.store.ids_from(offset, SCROLL_PAGE)
            for point in page:
                value = self._ours(point)
                if value is None or value > end:
                    return ids
                ids.append(value)
                if len(ids) >= limit:
                    return None
        return ids

    def _first_from(self, start: int) -> int | None:
        page, _ = self.store.ids_from(self._value(start), 1)
        return self._ours(page[0]) if page else None

    def _ours(self, point: PointId) -> int | None:
        """The id as an integer; None for a UUID when ours are integers (they sort
        after all integers, so they end every range of ours)."""
        if self.integer:
            return point if isinstance(point, int) else None
        return None if isinstance(point, int) else uuid.UUID(point).int

    def _value(self, value: int) -> PointId:
        return value if self.integer else str(uuid.UUID(int=value))


def _int_id(value: object) -> int:
    return value if isinstance(value, int) else uuid.UUID(str(value)).int


def as_point_ids(ids: list[int], integer: bool) -> list[PointId]:
    return [i if integer else str(uuid.UUID(int=i)) for i in ids]


__all__ = ["PointSpace", "RowSpace", "as_point_ids", "draw"]
