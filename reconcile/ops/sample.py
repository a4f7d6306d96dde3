"""Sampled audit: estimate drift per kind from N random faces and N random points.

A full audit reads every row and every point; this reads about N of each, so its
cost grows with N and only logarithmically with the stores (index probes and
scrolls from an offset), and answers with a rate and a 95% Wilson interval per kind.

How the ids are drawn, each equally likely, is `reconcile.sampling`.
"""

from __future__ import annotations

import json
import math
import random
import secrets
import time
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from reconcile.diff import DRIFT_KINDS, Keys, Kind, ScanStats, compared_keys, diff
from reconcile.errors import ConfigError, ExitCode
from reconcile.report import KEY_PREFIX, SCHEMA_VERSION
from reconcile.sampling import PointSpace, RowSpace, as_point_ids, draw
from reconcile.settings import Settings
from reconcile.stores import Stores, using
from reconcile.stores.base import PointId
from reconcile.stores.postgres import TableInfo
from reconcile.targets import Lookup

MAX_SAMPLE = 1_000_000

FACE_KINDS = (
    Kind.IN_SYNC,
    Kind.MISSING_PERSON,
    Kind.WRONG_PERSON,
    Kind.STALE_PERSON,
    Kind.FLAG_MISMATCH,
    Kind.PAYLOAD_MISMATCH,
    Kind.MISSING_POINT,
    Kind.DUPLICATE_POINT,
)


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

    def failing(self, kinds: Collection[str] = DRIFT_KINDS) -> ExitCode:
        """DRIFT when the sample holds any drift of `kinds`, else OK."""
        sample_fail_on(kinds)
        return ExitCode.DRIFT if any(self.estimates[k].hits for k in kinds) else ExitCode.OK

    @property
    def exit_code(self) -> ExitCode:
        return self.failing()

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
    # Separate streams, so that one side's draw does not shift the other's.
    # Sampling needs repeatable draws, not secrets: a seeded Mersenne Twister is right.
    face_rng = random.Random(f"{seed}:faces")  # noqa: S311
    point_rng = random.Random(f"{seed}:points")  # noqa: S311
    with using(settings, stores) as s:
        info = s.postgres.inspect()
        keys = compared_keys(settings, info.rules)
        s.qdrant.require_collection()
        started_at = s.postgres.now()
        integer = info.point_type != "uuid"

        rows = RowSpace(s.postgres, info)
        rows_estimate = rows.population()
        face_draw = draw(face_rng, n, rows.bounds(), rows_estimate, rows.windows)
        faces, face_vanished = _classify(s, info, keys, as_point_ids(face_draw.ids, integer))

        points = PointSpace(s.qdrant, integer)
        points_estimate = points.population()
        point_draw = draw(point_rng, n, points.bounds(), points_estimate, points.windows)
        found, point_vanished = _classify(s, info, keys, as_point_ids(point_draw.ids, integer))

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


def sample_fail_on(kinds: Collection[str]) -> None:
    """Refuse `--fail-on key:NAME`: a sample estimates kinds, not keys."""
    if any(k.startswith(KEY_PREFIX) for k in kinds):
        raise ConfigError(
            "--fail-on key:NAME needs the per-key counts of a scan or a targeted run; "
            "a sample estimates kinds only: use payload_mismatch with --sample"
        )


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


__all__ = ["Estimate", "SampleReport", "SideReport", "sample_audit", "sample_fail_on", "wilson"]
