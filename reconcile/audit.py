"""The audit and check commands as library calls: stream both stores, merge, count."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from reconcile.diff import Drift, Keys, Point, Row, ScanStats, diff
from reconcile.errors import ConfigError
from reconcile.postgres import Postgres, TableInfo
from reconcile.qdrant import PointStore, open_store
from reconcile.report import AuditReport, PrivateFile, Tally
from reconcile.settings import Settings
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
) -> AuditReport:
    """Stream every row and every point once, merge-join them, and count the drift.

    With `targets`, look only those faces up in both stores instead of scanning.
    `sink` sees every drift record as it streams (repair spills them to disk).
    Past `deadline` (time.monotonic) the scan stops cleanly: the report counts
    what was seen, in id order, and says `complete=False`.
    """
    if top < 0:
        raise ConfigError(f"--top {top} is negative: use 0 or more")
    started = time.monotonic()
    keys = Keys(settings.person_key, settings.flag_key)
    stats = ScanStats()
    tally = Tally()
    unknown: list[str] = []
    with using(settings, stores) as s:
        table = s.postgres.inspect()
        s.qdrant.require_collection()
        started_at = s.postgres.now()
        scope = "full"
        streams: Iterator[tuple[Iterator[Row], Iterator[Point]]]
        if targets is None:
            points = _timed(_counting(s.qdrant.points(), progress), deadline)
            streams = iter([(s.postgres.rows(), points)])
        else:
            since = (
                started_at - targets.since
                if isinstance(targets.since, timedelta)
                else targets.since
            )
            scope = targets.describe(since)
            lookup = Lookup(s.postgres, s.qdrant, table, settings.page_size)
            chunks = lookup.by_ids(targets) if since is None else lookup.since(since)
            streams = _chunk_streams(chunks, unknown)
        complete = True
        with ExitStack() as stack:
            out = None if details is None else stack.enter_context(PrivateFile(details))
            try:
                for rows, points in streams:
                    if deadline is not None and time.monotonic() > deadline:
                        raise _TimeUp
                    for drift in diff(rows, points, keys, stats):
                        tally.add(drift)
                        if out is not None:
                            out.write_record(drift.record())
                        if sink is not None:
                            sink(drift)
            except _TimeUp:
                complete = False
    return AuditReport(
        table=table.name,
        collection=settings.collection,
        rows=stats.rows,
        points=stats.points,
        rows_without_point=stats.rows_without_point,
        counts=tally.counts(stats),
        top_persons=tally.top(top),
        duration_seconds=time.monotonic() - started,
        details=None if details is None else str(details),
        scope=scope,
        unknown_ids=unknown,
        started_at=started_at,
        skipped_recent=stats.skipped_recent,
        complete=complete,
    )


def _chunk_streams(
    chunks: Iterator[Chunk], unknown: list[str]
) -> Iterator[tuple[Iterator[Row], Iterator[Point]]]:
    for chunk in chunks:
        unknown.extend(chunk.unknown)
        yield iter(chunk.rows), iter(chunk.points)


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
