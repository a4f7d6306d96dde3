"""Audit: stream every row and every point once, merge-join them, and count the drift."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

from reconcile.diff import Drift, compared_keys
from reconcile.errors import ConfigError
from reconcile.joined import joined
from reconcile.report import AuditReport, PrivateFile
from reconcile.scan import (
    OneAtATime,
    Progress,
    Scan,
    chunk_streams,
    close_streams,
    counting,
    cycles_uncollected,
    prefetched,
    timed,
)
from reconcile.settings import Settings
from reconcile.shards import slices
from reconcile.stores import Stores, using
from reconcile.targets import Lookup, Targets


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
    unknown: list[str] = []
    with using(settings, stores) as s, ExitStack() as stack:
        table = s.postgres.inspect()
        scan = Scan(compared_keys(settings, table.rules), sink, top)
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
            scan.run(chunk_streams(chunks, unknown), deadline)
        else:
            stack.enter_context(cycles_uncollected())  # until the scan ends (its reason)
            bounds = None if table.point_type == "uuid" else s.postgres.point_bounds()
            ranges = slices(*shard, workers, table.point_type, bounds)
            if shard != (1, 1):
                scope = f"shard {shard[0]}/{shard[1]}"
            if progress is not None:
                # Points are what the scan counts; Qdrant's estimate costs no scan. A
                # shard's slice of the id space holds about its share of them.
                progress.phase("scanning", "points", s.qdrant.estimated_count() // shard[1])
            if workers == 1:
                for key_range in ranges:
                    pages = s.qdrant.pages(key_range)
                    if settings.qdrant_url:
                        # A server's client waits on the network with the GIL
                        # released: reading ahead in a thread overlaps it with the
                        # rest. An engine in this process (local mode, edge) holds
                        # the GIL while it scrolls, so there a thread only adds
                        # switching (BENCHMARKS.md).
                        pages = prefetched(pages, batch=1)
                    pages = timed(counting(pages, progress), deadline)
                    # The deadline is the point stream's (timed): joined() hands over
                    # what it joined before it goes on.
                    streams = joined(s.postgres, pages, key_range, scan.keys, scan.stats)
                    try:
                        scan.run(streams, None)
                    finally:
                        close_streams(pages, streams)
            else:
                # A server's client is thread-safe; an in-process engine (local mode,
                # edge) is not, and gains nothing from threads under the GIL anyway:
                # its calls are taken one at a time while PostgreSQL reads overlap.
                qdrant = s.qdrant if settings.qdrant_url else OneAtATime(s.qdrant)
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
        keys=tally.key_counts(),
        top_values=tally.top_values(top),
        duration_seconds=time.monotonic() - started,
        details=None if details is None else str(details),
        scope=scope,
        unknown_ids=unknown,
        started_at=started_at,
        skipped_recent=stats.skipped_recent,
        complete=scan.complete,
    )


__all__ = ["audit"]
