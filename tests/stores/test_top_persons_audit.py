"""The per-person counters through a real audit and the table, when they overflow."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from reconcile import report as report_module
from reconcile.cli.render import render_audit
from tests.world import World


def test_audit_reports_overflow(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through a real audit and the table: the one line that says the list is approximate."""
    monkeypatch.setattr(report_module, "person_capacity", lambda top: 2)
    persons = [world.person() for _ in range(4)]
    for person in persons:
        world.face(person, payload={})  # missing_person, charged to that person
    world.face(persons[0], payload={})
    report = world.audit()
    assert report.counts["missing_person"] == 5
    assert not report.top_persons_exact and report.persons_capacity == 2
    assert max(report.top_persons_error.values()) > 0
    out = io.StringIO()
    render_audit(report, Console(file=out, width=200))
    assert "more than 2 persons drifted: these counts are upper bounds" in out.getvalue()
