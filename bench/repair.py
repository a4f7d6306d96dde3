"""Repair against the naive one-shot approach, on a 20,000-face world with 2% drift.

The naive approach is what a service's "resync" script usually does: load every
assigned face into memory and call `set_payload` once per person with all of that
person's faces. Prints points written, requests, time and peak Python heap (the
growth during the operation, via tracemalloc: local mode keeps the collection in
this process, so RSS would measure the store, not the tool).

    .venv/bin/python bench/repair.py [--faces N] [--drift 0.02]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from qdrant_client import QdrantClient

from reconcile.ops.audit import audit
from reconcile.ops.repair import repair
from reconcile.ops.undo import undo
from reconcile.plan import RepairOptions
from reconcile.settings import Settings
from reconcile.stores import Stores
from reconcile.stores.qdrant import Qdrant
from reconcile.testing.embedded import start_embedded_postgres, stop_embedded_postgres
from reconcile.testing.world import build_world, create_collection, create_schema

# Run as a script (`python bench/repair.py`), Python puts bench/ on the path, not
# the repository root that `bench` lives in.
ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench.worlds import assigned_by_person  # noqa: E402


class Counting:
    """Counts the write requests that reach the client."""

    def __init__(self, client: QdrantClient) -> None:
        self._client = client
        self.requests = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name in {"batch_update_points", "set_payload", "delete_payload"}:

            def counted(*args: Any, **kwargs: Any) -> Any:
                self.requests += 1
                return attr(*args, **kwargs)

            return counted
        return attr


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def heap_peak(fn: Callable[[], Any]) -> int:
    """Peak growth of the Python heap during `fn`, in bytes (a separate run: tracing is slow)."""
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    fn()
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak


def inject_drift(url: str, rate: float, seed: int) -> int:
    """Change persons in PostgreSQL only, as the service's bugs do."""
    rng = random.Random(seed)
    with psycopg.connect(url) as conn:
        faces = conn.execute("SELECT id, person_id FROM face_instances").fetchall()
        persons = [row[0] for row in conn.execute("SELECT id FROM persons")]
        chosen = rng.sample(faces, int(len(faces) * rate))
        updates = []
        for face_id, person in chosen:
            if person is None:
                updates.append((rng.choice(persons), face_id))  # accepted in PG only
            elif rng.random() < 0.5:
                updates.append((None, face_id))  # unassigned, or its person deleted
            else:
                updates.append((rng.choice(persons), face_id))  # moved or merged
        with conn.cursor() as cur:
            cur.executemany("UPDATE face_instances SET person_id = %s WHERE id = %s", updates)
    return len(updates)


def naive(url: str, client: QdrantClient) -> tuple[int, int]:
    by_person = assigned_by_person(url)
    for person, points in by_person.items():
        client.set_payload("faces", {"person_id": person, "is_assigned": True}, points, wait=True)
    return sum(len(points) for points in by_person.values()), len(by_person)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--faces", type=int, default=20_000)
    parser.add_argument("--drift", type=float, default=0.02)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="reconcile-bench-") as tmp:
        pgdata = Path(tmp) / "pgdata"
        url = start_embedded_postgres(pgdata)
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                create_schema(conn)
            raw = QdrantClient(path=str(Path(tmp) / "qdrant"))
            create_collection(raw)
            build_world(url, raw, faces=args.faces)
            client = Counting(raw)
            settings = Settings(
                database_url=url, qdrant_path=str(Path(tmp) / "qdrant"), flag_key="is_assigned"
            )
            stores = Stores(settings, qdrant=Qdrant(settings, client=client))  # type: ignore[arg-type]
            everything = RepairOptions(max_changes="100%", journal=Path(tmp) / "clean.jsonl")
            repair(settings, everything, stores=stores)  # start from a world in sync
            # The naive script fails outright on a point that does not exist (local
            # mode raises for the whole call), so give it a world without such rows.
            details = Path(tmp) / "details.jsonl"
            audit(settings, stores=stores, details=details)
            with psycopg.connect(url) as conn:
                for line in details.read_text().splitlines():
                    record = json.loads(line)
                    if record["kind"] == "missing_point":
                        conn.execute(
                            "DELETE FROM face_instances WHERE id = %s", (record["face_id"],)
                        )
            drifted = inject_drift(url, args.drift, seed=11)

            journals = iter(Path(tmp) / f"bench-{n}.jsonl" for n in range(3))

            def run_repair() -> Any:
                options = RepairOptions(journal=next(journals))
                return repair(settings, options, stores=stores)

            def run_undo(journal: str | None) -> None:
                assert journal is not None
                undone = undo(settings, Path(journal), stores=stores)
                assert undone.restored == report.tallies.applied

            client.requests = 0
            report, r_time = timed(run_repair)
            r_requests = client.requests
            left_by_repair = audit(settings, stores=stores).repairable
            _, u_time = timed(lambda: run_undo(report.journal))
            again: list[Any] = []
            r_peak = heap_peak(lambda: again.append(run_repair()))
            run_undo(again[0].journal)

            client.requests = 0
            (n_written, n_persons), n_time = timed(lambda: naive(url, raw))
            left_by_naive = audit(settings, stores=stores).repairable
            n_peak = heap_peak(lambda: naive(url, raw))
            raw.close()
        finally:
            stop_embedded_postgres(pgdata)

    python = f"{platform.python_implementation()} {platform.python_version()}"
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, {python}")
    print(f"world: {args.faces:,} faces, {drifted:,} changed in PostgreSQL only ({args.drift:.0%})")
    print(f"{'':<26}{'reconcile repair':>18}{'naive one-shot':>18}")
    print(f"{'points written':<26}{report.tallies.applied:>18,}{n_written:>18,}")
    print(f"{'write requests':<26}{r_requests:>18,}{n_persons:>18,}")
    print(f"{'seconds':<26}{r_time:>18.2f}{n_time:>18.2f}")
    print(f"{'peak heap growth (MiB)':<26}{r_peak / 2**20:>18.1f}{n_peak / 2**20:>18.1f}")
    print(f"{'repairable drift left':<26}{left_by_repair:>18,}{left_by_naive:>18,}")
    print(f"(the repair's run includes its full audit; undo of its journal took {u_time:.2f}s)")


if __name__ == "__main__":
    main()
