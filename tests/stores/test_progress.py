"""The library names each phase of a run and its total, so a display can show both."""

from __future__ import annotations

from reconcile.ops.repair import repair
from reconcile.plan import RepairOptions
from tests.world import World


class Recorder:
    """A progress sink that keeps what it was told."""

    def __init__(self) -> None:
        self.phases: list[tuple[str, str, int | None]] = []
        self.done: dict[str, int] = {}

    def phase(self, name: str, unit: str, total: int | None) -> None:
        self.phases.append((name, unit, total))

    def __call__(self, done: int) -> None:
        self.done[self.phases[-1][0]] = done


def test_repair_scans_then_writes_each_phase_with_its_total(world: World) -> None:
    person = world.person()
    for _ in range(5):
        world.face(person, payload={"is_assigned": True})  # missing_person
    world.face(person)  # in sync
    settings = world.settings(flag_key="is_assigned")
    seen = Recorder()
    report = repair(
        settings,
        RepairOptions(max_changes="100%", batch_size=2, write_journal=False),
        stores=world.stores(settings),
        progress=seen,
    )
    assert report.tallies.applied == 5
    # The scan's total is the collection's size (an estimate: local mode's is exact);
    # the writes' is the plan's size, and every planned point is counted as done.
    assert seen.phases == [("scanning", "points", 6), ("writing", "points", 5)]
    assert seen.done["writing"] == 5
