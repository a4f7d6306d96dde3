"""The measured tasks: each runs in a fresh child process (`bench/suite.py --child TASK SPEC`).

A task takes the spec of one world (bench.suite builds it) and returns a JSON-able
dict of measurements; `child` prints it for the parent (bench.runner). The
audit and repair tasks are here; the longer families have modules of their own
(bench.readers, bench.whatif, bench.remote, bench.profiling). The tasks assert
that every audit they run finds exactly the drift the world was built with.
"""

from __future__ import annotations

import json
import resource
import shutil
import statistics
import tracemalloc
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.measure import (
    PeakRss,
    check,
    drain,
    heap_peak,
    rss_anon,
    scratch_copy,
    settings_for,
    timed,
)
from bench.profiling import task_audit_once, task_profile
from bench.readers import task_readers
from bench.remote import task_remote
from bench.runner import RESULT
from bench.whatif import task_whatif
from bench.worlds import assigned_by_person


def task_streams(spec: dict[str, Any]) -> dict[str, Any]:
    """Each stream alone and the full audit, all warm, medians of `repeat` runs."""
    from reconcile.ops.audit import audit
    from reconcile.stores import Stores

    settings = settings_for(spec)
    out: dict[str, list[float]] = defaultdict(list)
    rows = 0
    with Stores(settings) as stores:
        stores.postgres.inspect()  # binds the point column's type, as audit does first
        # The engine's first scroll in a process faults the payload storage in (mmap);
        # every later one finds it mapped. Timed apart, so the rest compare warm to warm.
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_majflt
        _, cold = timed(lambda: drain(stores.qdrant.points()))
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_majflt - faults
        for _ in range(spec["repeat"]):
            rows, t = timed(lambda: drain(stores.postgres.rows()))
            out["pg"].append(t)
            _, t = timed(lambda: drain(stores.qdrant.points()))
            out["edge"].append(t)
            report, t = timed(lambda: audit(settings, stores=stores))
            check(report, spec)
            out["audit"].append(t)
    result: dict[str, Any] = {k: statistics.median(v) for k, v in out.items()}
    result["rows"] = rows
    result["runs"] = spec["repeat"]
    result["edge_cold"] = cold
    result["edge_cold_faults"] = faults
    return result


def task_memory(spec: dict[str, Any]) -> dict[str, Any]:
    """One audit with RssAnon sampled (above the level once both stores are open), one traced.

    Both also note what the process holds at each quarter of the scan: flat
    memory means the last quarter holds what the first did.
    """
    from reconcile.ops.audit import audit
    from reconcile.stores import Stores

    settings = settings_for(spec)
    quarters = [spec["points"] * q // 4 for q in (1, 2, 3)]

    class AtQuarters:
        """A `scan.Progress` that reads memory as the scan passes each quarter."""

        def __init__(self, read: Callable[[], int], into: list[int]) -> None:
            self.read, self.into = read, into

        def phase(self, name: str, unit: str, total: int | None) -> None:
            pass  # the quarters are of the points, known up front

        def __call__(self, done: int) -> None:
            if len(self.into) < len(quarters) and done >= quarters[len(self.into)]:
                self.into.append(self.read())

    rss_held: list[int] = []
    heap_held: list[int] = []
    with Stores(settings) as stores:
        stores.postgres.inspect()
        opened = rss_anon()
        with PeakRss() as rss:
            report, seconds = timed(
                lambda: audit(settings, stores=stores, progress=AtQuarters(rss_anon, rss_held))
            )
        check(report, spec)
        after = rss_anon()

        def traced_heap() -> int:
            return tracemalloc.get_traced_memory()[0]

        report, heap, traced = heap_peak(
            lambda: audit(settings, stores=stores, progress=AtQuarters(traced_heap, heap_held))
        )
        check(report, spec)
    return {
        "rss_opened": opened,
        "rss_growth": rss.growth,
        "rss_after": after - opened,
        "rss_quarters": [x - opened for x in rss_held],
        "heap_peak": heap,
        "heap_quarters": heap_held,
        "seconds": seconds,
        "traced_seconds": traced,
        "rows": report.rows,
    }


class CountingShard:
    """Counts the write operations and reads that reach the engine."""

    def __init__(self, shard: Any) -> None:
        self._shard = shard
        self.updates = 0
        self.retrieves = 0

    def update(self, operation: Any) -> Any:
        self.updates += 1
        return self._shard.update(operation)

    def retrieve(self, *args: Any) -> Any:
        self.retrieves += 1
        return self._shard.retrieve(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._shard, name)


def task_repair(spec: dict[str, Any]) -> dict[str, Any]:
    """reconcile repair on a copy of the world, undone from its journal, then again traced."""
    from reconcile.ops.repair import repair
    from reconcile.ops.undo import undo
    from reconcile.plan import RepairOptions
    from reconcile.stores import Stores

    scratch = scratch_copy(spec)
    settings = settings_for(spec, str(scratch))
    journals = iter(scratch.parent / f"{scratch.name}-{n}.jsonl" for n in range(2))
    try:
        with Stores(settings) as stores:
            stores.postgres.inspect()
            store: Any = stores.qdrant
            shard = CountingShard(store.shard)
            store.shard = shard
            applies = 0
            apply = store.apply

            def counted_apply(ops: Any) -> None:
                nonlocal applies
                applies += 1
                apply(ops)

            store.apply = counted_apply
            with PeakRss() as rss:
                report, seconds = timed(
                    lambda: repair(settings, RepairOptions(journal=next(journals)), stores=stores)
                )
            requests, operations = applies, shard.updates
            journal = Path(report.journal)
            undone, undo_seconds = timed(lambda: undo(settings, journal, stores=stores))
            assert undone.restored == report.tallies.applied, (undone.restored, report.tallies)
            again, heap, traced = heap_peak(
                lambda: repair(settings, RepairOptions(journal=next(journals)), stores=stores)
            )
            assert again.tallies.applied == report.tallies.applied
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        for leftover in scratch.parent.glob(f"{scratch.name}-*.jsonl"):
            leftover.unlink()
    left = {k: v for k, v in report.remaining.items() if v}
    return {
        "seconds": seconds,
        "audit_seconds": report.plan.audit.duration_seconds,
        "written": report.tallies.applied,
        "verified": report.tallies.verified,
        "requests": requests,
        "operations": operations,
        "rss_growth": rss.growth,
        "heap_peak": heap,
        "traced_seconds": traced,
        "undo_seconds": undo_seconds,
        "undone": undone.restored,
        "repairable_left": sum(
            v for k, v in left.items() if k not in {"missing_point", "orphan_point"}
        ),
        "left": left,
    }


def naive_resync(url: str, shard: Any) -> dict[str, int]:
    """The usual resync script: every assigned face into memory, one set_payload per person."""
    import qdrant_edge as edge

    by_person = assigned_by_person(url)
    failed = 0
    for person, points in by_person.items():
        try:
            shard.update(
                edge.UpdateOperation.set_payload(points, {"person_id": person, "is_assigned": True})
            )
        except Exception:  # a point the collection lacks fails the request (the rest is written)
            failed += 1
    written = sum(len(points) for points in by_person.values())
    return {"written": written, "requests": len(by_person), "failed": failed}


def task_naive(spec: dict[str, Any]) -> dict[str, Any]:
    from reconcile.ops.audit import audit
    from reconcile.stores.edge import open_edge_store

    scratch = scratch_copy(spec)
    try:
        shard = open_edge_store(scratch)
        with PeakRss() as rss:
            result, seconds = timed(lambda: naive_resync(spec["database_url"], shard))
        _, heap, traced = heap_peak(lambda: naive_resync(spec["database_url"], shard))
        shard.flush()
        shard.close()
        report = audit(settings_for(spec, str(scratch)))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    left = {k: v for k, v in report.counts.items() if v and k != "in_sync"}
    return {
        **result,
        "seconds": seconds,
        "rss_growth": rss.growth,
        "heap_peak": heap,
        "traced_seconds": traced,
        "repairable_left": report.repairable,
        "left": left,
    }


def task_targeted(spec: dict[str, Any]) -> dict[str, Any]:
    from reconcile.ops.audit import audit
    from reconcile.stores import Stores
    from reconcile.targets import Targets

    settings = settings_for(spec)
    targets = Targets(face_ids=tuple(spec["target_face_ids"]))
    times = []
    with Stores(settings) as stores:
        for _ in range(spec["repeat"] + 1):
            report, t = timed(lambda: audit(settings, stores=stores, targets=targets))
            times.append(t)
    return {
        "seconds": statistics.median(times[1:]),  # the first run warms the caches
        "rows": report.rows,
        "points": report.points,
        "unknown": len(report.unknown_ids),
    }


def task_sample(spec: dict[str, Any]) -> dict[str, Any]:
    try:
        from reconcile.ops.sample import sample_audit
    except ImportError as exc:
        return {"missing": f"reconcile.sample.sample_audit not available ({exc})"}
    from reconcile.stores import Stores

    settings = settings_for(spec)
    times, faces, points = [], [], []
    with Stores(settings) as stores:
        for seed in range(spec["repeat"] + 1):
            report, t = timed(lambda s=seed: sample_audit(settings, 1000, seed=s, stores=stores))
            times.append(t)
            faces.append(report.faces.sampled)
            points.append(report.points.sampled)
            drifted = report.drifted
        big, big_seconds = timed(lambda: sample_audit(settings, 4000, seed=99, stores=stores))
    return {
        "seconds": statistics.median(times[1:]),  # the first run warms the caches
        "drift_estimate": [drifted.rate, *drifted.interval],
        "faces": faces[-1],
        "points": points[-1],
        "seconds_4000": big_seconds,
        "drift_estimate_4000": [big.drifted.rate, *big.drifted.interval],
    }


TASKS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "streams": task_streams,
    "memory": task_memory,
    "readers": task_readers,
    "repair": task_repair,
    "naive": task_naive,
    "whatif": task_whatif,
    "remote": task_remote,
    "targeted": task_targeted,
    "sample": task_sample,
    "profile": task_profile,
    "audit_once": task_audit_once,
}
# What the suite runs on every world, in this order; the profile runs apart, once.
MEASURED = tuple(t for t in TASKS if t not in {"profile", "audit_once"})


def child(task: str, spec_json: str) -> None:
    """The child's side: run `task` on the world in `spec_json`, print the result for the parent."""
    spec = json.loads(spec_json)
    result = TASKS[task](spec)
    print(RESULT + json.dumps(result), flush=True)
