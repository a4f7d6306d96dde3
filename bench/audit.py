"""Audit throughput on a 20,000-face world (embedded PostgreSQL, Qdrant local mode).

Prints numbers; asserts nothing. Local mode keeps the whole collection inside this
process and re-sorts it on every scroll page, so memory is measured later, on a
real engine; here the point is rows per second and where the time goes.

    .venv/bin/python bench/audit.py [--faces N] [--repeat K]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from qdrant_client import QdrantClient

from reconcile.ops.audit import audit
from reconcile.settings import Settings
from reconcile.stores import Stores
from reconcile.stores.postgres import Postgres
from reconcile.stores.qdrant import Qdrant
from reconcile.testing.embedded import start_embedded_postgres, stop_embedded_postgres
from reconcile.testing.world import build_world, create_collection, create_schema


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def drain(items: Iterator[object]) -> int:
    return sum(1 for _ in items)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--faces", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="reconcile-bench-") as tmp:
        pgdata = Path(tmp) / "pgdata"
        url = start_embedded_postgres(pgdata)
        try:
            import psycopg

            with psycopg.connect(url, autocommit=True) as conn:
                create_schema(conn)
            client = QdrantClient(path=str(Path(tmp) / "qdrant"))
            create_collection(client)
            started = time.perf_counter()
            injected = build_world(url, client, faces=args.faces)
            built = time.perf_counter() - started
            settings = Settings(
                database_url=url, qdrant_path=str(Path(tmp) / "qdrant"), flag_key="is_assigned"
            )
            postgres = Postgres(settings)
            qdrant = Qdrant(settings, client=client)
            stores = Stores(settings, postgres=postgres, qdrant=qdrant)

            pg_times = timed(lambda: drain(postgres.rows()), args.repeat)
            qd_times = timed(lambda: drain(qdrant.points()), args.repeat)
            audit_times = timed(lambda: audit(settings, stores=stores), args.repeat)
            report = audit(settings, stores=stores)
            assert report.counts == injected, "the benchmark world is not what was injected"
            postgres.close()
            client.close()
        finally:
            stop_embedded_postgres(pgdata)

    rows = report.rows
    python = f"{platform.python_implementation()} {platform.python_version()}"
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, {python}")
    print(
        f"world: {args.faces:,} faces, {report.points:,} points, "
        f"{report.drifted:,} drifted (built in {built:.1f}s)"
    )
    print(f"{'what':<28}{'median s':>10}{'rows/s':>12}")
    for name, times in (
        ("PostgreSQL stream alone", pg_times),
        ("Qdrant scroll alone", qd_times),
        ("full audit", audit_times),
    ):
        median = statistics.median(times)
        print(f"{name:<28}{median:>10.3f}{rows / median:>12,.0f}")


if __name__ == "__main__":
    main()
