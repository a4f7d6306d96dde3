"""Repair when Qdrant's writes fail or come too late: retried once, counted, or the run stops."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import QdrantClient

from reconcile.apply import Hooks
from reconcile.ops.repair import RepairReport, repair
from reconcile.plan import RepairOptions
from tests.helpers import run_repair
from tests.world import World


class FailingWrites:
    """Fault injection (a wrapper, since local mode cannot fail): batch_update_points
    raises qdrant-client's own ResponseHandlingException, as a timeout or a refused
    connection does, for the first `failures` calls."""

    def __init__(self, client: QdrantClient, failures: int) -> None:
        self._client = client
        self.failures = failures
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name != "batch_update_points":
            return attr

        def fail(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls <= self.failures:
                from qdrant_client.http.exceptions import ResponseHandlingException

                raise ResponseHandlingException(TimeoutError("timed out"))
            return attr(*args, **kwargs)

        return fail


def run_with(world: World, client: Any, **options: Any) -> RepairReport:
    from reconcile.stores import Stores
    from reconcile.stores.qdrant import Qdrant

    settings = world.settings(flag_key="is_assigned")
    hooks = options.pop("hooks", None)
    options.setdefault("max_changes", "100%")
    options.setdefault("journal", world.qdrant_dir.parent / f"j-{time.monotonic_ns()}.jsonl")
    stores = Stores(settings, qdrant=Qdrant(settings, client=client))
    return repair(settings, RepairOptions(**options), stores=stores, hooks=hooks)


def test_a_failed_write_is_retried_once_under_the_lock(world: World) -> None:
    p = world.person()
    for _ in range(3):
        world.face(p, payload={})
    assert world.client is not None
    report = run_with(world, FailingWrites(world.client, failures=1))
    assert (report.tallies.applied, report.tallies.failed, report.exit_code) == (3, 0, 0)


def test_failed_writes_are_counted_and_the_run_goes_on(world: World) -> None:
    p = world.person()
    points = [world.face(p, payload={}) for _ in range(4)]
    assert world.client is not None
    # Batches of 2: the first batch fails twice (write and retry), the second succeeds.
    report = run_with(world, FailingWrites(world.client, failures=2), batch_size=2)
    assert (report.tallies.applied, report.tallies.failed) == (2, 2)
    assert report.remaining["missing_person"] == 2
    assert report.exit_code == 3
    assert sum("person_id" in world.payload(pt) for pt in points) == 2
    lines = [json.loads(x) for x in Path(str(report.journal)).read_text().splitlines()]
    outcomes = [x for x in lines if x["type"] == "outcome"]
    assert [o["failed"] for o in outcomes] == [2, 0]
    assert "timed out" in outcomes[0]["error"]


def test_a_store_that_keeps_failing_stops_the_run(world: World) -> None:
    from reconcile.errors import StoreError

    p = world.person()
    for _ in range(5):
        world.face(p, payload={})
    assert world.client is not None
    with pytest.raises(StoreError, match="3 batches in a row failed"):
        run_with(world, FailingWrites(world.client, failures=100), batch_size=1)


def test_no_write_once_the_batch_deadline_has_passed(world: World) -> None:
    p = world.person()
    point = world.face(p, payload={})
    now = [0.0]

    def slow_recheck(point_ids: list[Any]) -> None:
        now[0] += 61  # the lock and recheck took longer than --batch-deadline 60

    report = run_repair(world, hooks=Hooks(before_write=slow_recheck, clock=lambda: now[0]))
    assert (report.tallies.applied, report.tallies.failed, report.exit_code) == (0, 1, 3)
    assert "person_id" not in world.payload(point)
