"""Sampled audit: estimate drift per kind from N random faces and N random points.

A full audit reads every row and every point; this reads about N of each, so its
cost grows with N and only logarithmically with the stores (index probes and
scrolls from an offset), and answers with a rate and a 95% Wilson interval per kind.

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
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from reconcile.audit import Stores, using
from reconcile.diff import Keys, Kind, PointId, ScanStats, diff
from reconcile.errors import ConfigError
from reconcile.postgres import Postgres, TableInfo
from reconcile.qdrant import PointStore
from reconcile.settings import Settings
from reconcile.targets import Lookup

SCHEMA_VERSION = 1
MAX_SAMPLE = 1_000_000

FACE_KINDS = (
    Kind.IN_SYNC,
    Kind.MISSING_PERSON,
    Kind.WRONG_PERSON,
    Kind.STALE_PERSON,
    Kind.FLAG_MISMATCH,
    Kind.MISSING_POINT,
    Kind.DUPLICATE_POINT,
)

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


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval for a binomial proportion; (0, 1) when n is 0.

    Unlike the normal approximation it stays inside [0, 1] and keeps its coverage
    near 0 and 1, where drift rates usually are.
    """
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"wilson needs 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    # The exact ends are 0 and 1 at the extremes; rounding must not move them.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


@dataclass(frozen=True)
class Estimate:
    """One kind's share of a sample, its interval, and what that means in the store."""

    side: str  # "faces" or "points": which sample the rate is a share of
    hits: int
    sampled: int
    population: int  # estimated size of what was sampled from

    @property
    def rate(self) -> float:
        return self.hits / self.sampled if self.sampled else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.hits, self.sampled)

    def to_json(self) -> dict[str, Any]:
        low, high = self.interval
        return {
            "side": self.side,
            "hits": self.hits,
            "sampled": self.sampled,
            "rate": round(self.rate, 6),
            "low": round(low, 6),
            "high": round(high, 6),
            "estimated": round(self.rate * self.population),
            "estimated_low": math.floor(low * self.population),
            "estimated_high": math.ceil(high * self.population),
        }


@dataclass(frozen=True)
class SideReport:
    """How one side was sampled: what the rates are shares of, and what went wrong."""

    requested: int
    sampled: int  # draws classified: fewer than requested if ids vanished or the store is empty
    population: int  # the estimate the rates are multiplied by
    windows: int
    dropped_windows: int  # windows over WINDOW_CAP, left out (see the module doc)
    vanished: int  # drawn ids gone by the time they were looked up

    def to_json(self) -> dict[str, Any]:
        return {
            "requested": self.requested,
            "sampled": self.sampled,
            "population_estimate": self.population,
            "windows": self.windows,
            "dropped_windows": self.dropped_windows,
            "vanished": self.vanished,
        }


@dataclass(frozen=True)
class SampleReport:
    """The result of `audit --sample N`; `to_json` is the documented interface."""

    table: str
    collection: str
    seed: int
    faces: SideReport
    points: SideReport
    estimates: dict[str, Estimate]  # every Kind, keyed by its value, in Kind order
    duration_seconds: float
    started_at: datetime | None = None
    confidence: float = 0.95

    @property
    def drift_seen(self) -> int:
        """Drifted faces and orphan points in the sample: nonzero means drift exists."""
        return sum(e.hits for kind, e in self.estimates.items() if kind != Kind.IN_SYNC)

    @property
    def drifted(self) -> Estimate:
        """The share of faces with drift of any kind."""
        in_sync = self.estimates[Kind.IN_SYNC]
        return Estimate(
            "faces", in_sync.sampled - in_sync.hits, in_sync.sampled, in_sync.population
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "scope": "sample",
            "table": self.table,
            "collection": self.collection,
            "seed": self.seed,
            "confidence": self.confidence,
            "faces": self.faces.to_json(),
            "points": self.points.to_json(),
            "estimates": {kind: e.to_json() for kind, e in self.estimates.items()},
            "drifted_faces": self.drifted.to_json(),
            "drift_seen": self.drift_seen,
            "duration_seconds": round(self.duration_seconds, 3),
            "started_at": None if self.started_at is None else self.started_at.isoformat(),
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2)


def sample_audit(
    settings: Settings,
    n: int,
    *,
    seed: int | None = None,
    stores: Stores | None = None,
) -> SampleReport:
    """Classify about n random faces and n random points exactly as `audit` would.

    `seed` makes the draw repeatable on unchanged stores; without one a seed is
    chosen and reported, so that a surprising run can be repeated.
    """
    if isinstance(n, bool) or not 1 <= n <= MAX_SAMPLE:
        raise ConfigError(f"--sample {n} is out of range: use 1 to {MAX_SAMPLE:,}")
    if seed is None:
        seed = secrets.randbits(63)
    started = time.monotonic()
    keys = Keys(settings.person_key, settings.flag_key)
    # Separate streams, so that one side's draw does not shift the other's.
    # Sampling needs repeatable draws, not secrets: a seeded Mersenne Twister is right.
    face_rng = random.Random(f"{seed}:faces")  # noqa: S311
    point_rng = random.Random(f"{seed}:points")  # noqa: S311
    with using(settings, stores) as s:
        info = s.postgres.inspect()
        s.qdrant.require_collection()
        started_at = s.postgres.now()
        integer = info.point_type != "uuid"

        rows = _RowSpace(s.postgres, info)
        rows_estimate = rows.population()
        face_draw = _draw(face_rng, n, rows.bounds(), rows_estimate, rows.windows)
        faces, face_vanished = _classify(s, info, keys, _as_point_ids(face_draw.ids, integer))

        points = _PointSpace(s.qdrant, integer)
        points_estimate = points.population()
        point_draw = _draw(point_rng, n, points.bounds(), points_estimate, points.windows)
        found, point_vanished = _classify(s, info, keys, _as_point_ids(point_draw.ids, integer))

    # Drawn from the table, a point that no row names any more lost its rows meanwhile;
    # drawn from the collection, a missing point was deleted meanwhile.
    face_vanished += faces.pop(Kind.ORPHAN_POINT, 0)
    point_vanished += found.pop(Kind.MISSING_POINT, 0)
    face_n = sum(faces.values())
    point_n = sum(found.values())
    estimates = {
        kind.value: Estimate("faces", faces[kind], face_n, rows_estimate) for kind in FACE_KINDS
    }
    estimates[Kind.ORPHAN_POINT.value] = Estimate(
        "points", found[Kind.ORPHAN_POINT], point_n, points_estimate
    )
    return SampleReport(
        table=info.name,
        collection=settings.collection,
        seed=seed,
        faces=SideReport(
            n, face_n, rows_estimate, face_draw.windows, face_draw.dropped, face_vanished
        ),
        points=SideReport(
            n, point_n, points_estimate, point_draw.windows, point_draw.dropped, point_vanished
        ),
        estimates={kind.value: estimates[kind.value] for kind in Kind},
        duration_seconds=time.monotonic() - started,
        started_at=started_at,
    )


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


def _draw(
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


class _RowSpace:
    """The table's point ids: bounds, size estimate, and windows, all through the index."""

    def __init__(self, postgres: Postgres, info: TableInfo) -> None:
        self.postgres = postgres
        self.uuid = info.point_type == "uuid"
        self.column = postgres.table.c[postgres.settings.point_column]
        preparer = postgres.engine.dialect.identifier_preparer
        self._table_sql = preparer.format_table(postgres.table)
        self._column_sql = preparer.quote(postgres.settings.point_column)

    def bounds(self) -> tuple[int, int] | None:
        # min() and max() do not exist for uuid; the two ends of the index do.
        present = sa.select(self.column).where(self.column.is_not(None)).limit(1)
        stmt = sa.select(
            present.order_by(self.column.asc()).scalar_subquery(),
            present.order_by(self.column.desc()).scalar_subquery(),
        )
        with self.postgres.reading("sampling rows") as conn:
            low, high = conn.execute(stmt).one()
        if low is None or high is None:
            return None
        return _int_id(low), _int_id(high)

    def population(self) -> int:
        """The planner's estimate of rows with a point id: reltuples scaled to the
        table's current size, so it needs no count(*) and no prior ANALYZE."""
        query = sa.select(self.column).where(self.column.is_not(None))
        compiled = str(query.compile(dialect=self.postgres.engine.dialect))
        with self.postgres.reading("estimating rows") as conn:
            plan = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + compiled).scalar_one()
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
        statement = sa.text(
            f"SELECT w.i, hit.p FROM unnest(CAST(:a AS {kind}[]), CAST(:b AS {kind}[]), "
            "CAST(:i AS integer[])) AS w(a, b, i) "
            f"CROSS JOIN LATERAL (SELECT DISTINCT {col} AS p FROM {self._table_sql} "
            f"WHERE {col} BETWEEN w.a AND w.b ORDER BY p LIMIT :cap) AS hit"
        )
        found: list[list[int]] = [[] for _ in windows]
        with self.postgres.reading("sampling rows") as conn:
            # The planner cannot know that a window holds about one row; left alone it
            # may read a window's whole range (bitmap scan, sort) before the LIMIT.
            # Walking the index in order lets the LIMIT bound what a window costs.
            # Local to this read-only transaction, so a replica accepts it too.
            conn.execute(
                sa.text(
                    "SELECT set_config('enable_seqscan', 'off', true), "
                    "set_config('enable_bitmapscan', 'off', true), "
                    "set_config('enable_sort', 'off', true), "
                    "set_config('enable_hashagg', 'off', true)"
                )
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


class _PointSpace:
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


def _as_point_ids(ids: list[int], integer: bool) -> list[PointId]:
    return [i if integer else str(uuid.UUID(int=i)) for i in ids]


# --- classifying them --------------------------------------------------------------


def _classify(
    s: Stores, info: TableInfo, keys: Keys, drawn: list[PointId]
) -> tuple[Counter[Kind], int]:
    """The kind of every draw (a point drawn twice counts twice), and how many vanished.

    The same lookup as a targeted audit (all rows naming a point, and the point),
    merged by the same `diff`, so duplicates, missing points and payload rules agree.
    """
    size = s.settings.page_size
    lookup = Lookup(s.postgres, s.qdrant, info, size)
    distinct = list(dict.fromkeys(drawn))
    kinds: dict[PointId, Kind | None] = {}
    for start in range(0, len(distinct), size):
        batch = distinct[start : start + size]
        chunk = lookup.chunk(batch)
        drifted = {d.point_id: d.kind for d in diff(chunk.rows, chunk.points, keys, ScanStats())}
        named = {r.point_id for r in chunk.rows}
        present = {p.point_id for p in chunk.points}
        for point_id in batch:
            if point_id in drifted:
                kinds[point_id] = drifted[point_id]
            elif point_id in named and point_id in present:
                kinds[point_id] = Kind.IN_SYNC
            else:
                kinds[point_id] = None  # in neither store any more
    tally: Counter[Kind] = Counter()
    vanished = 0
    for point_id in drawn:
        kind = kinds[point_id]
        if kind is None:
            vanished += 1
        else:
            tally[kind] += 1
    return tally, vanished


__all__ = ["Estimate", "SampleReport", "SideReport", "sample_audit", "wilson"]
