"""The breakdown tables of the audit and the plan, drawn as a person at an 80-column
terminal sees them (the stores' side is in tests/stores/test_mapped_output.py)."""

from __future__ import annotations

import io

from rich.console import Console

from reconcile.cli import tables
from reconcile.cli.render import render_audit, render_plan
from reconcile.diff import Kind
from reconcile.plan import Plan
from reconcile.report import AuditReport

KEYS = {
    "person_id": {"missing": 3, "wrong": 1, "stale": 2},
    "is_assigned": {"missing": 0, "wrong": 5, "stale": 0},
    "cluster_id": {"missing": 1, "wrong": 1_234_567, "stale": 8},
    "face_instance_id": {"missing": 0, "wrong": 0, "stale": 0},
}


def report(top_values: dict[str, list[tuple[str, int, int]]] | None = None) -> AuditReport:
    counts = {kind.value: 0 for kind in Kind}
    counts.update(in_sync=90, payload_mismatch=1_234_570, stale_person=2)
    if top_values is None:
        top_values = {"cluster_id": [("u_1", 900, 0)], "face_instance_id": []}
    return AuditReport(
        table="face_instances",
        collection="faces",
        rows=100,
        points=100,
        rows_without_point=0,
        counts=counts,
        top_persons=[("0b6b5b1e-3c2f-4a57-9d1e-6f1f3b1c2d4e", 4)],
        duration_seconds=0.5,
        keys=KEYS,
        top_values=top_values,
    )


def drawn(draw: object, value: object, width: int = 80) -> str:
    out = io.StringIO()
    draw(value, Console(file=out, width=width))  # type: ignore[operator]
    return out.getvalue()


def test_every_kind_has_a_meaning_in_the_kinds_table() -> None:
    # A kind added without one would end every table-format audit in a KeyError.
    assert set(tables.MEANING) == set(Kind)


def test_every_line_fits_80_columns_and_the_key_table_is_whole() -> None:
    text = drawn(render_audit, report())
    too_wide = [line for line in text.splitlines() if len(line) > 80]
    assert not too_wide, too_wide
    assert "│ payload_mismatch │ 1,234,570 │ payload write │" in text
    row = next(line for line in text.splitlines() if line.startswith("│ cluster_id "))
    assert [cell.strip() for cell in row.split("│")[2:5]] == ["1", "1,234,567", "8"]
    assert "cluster_id: the values with the most drifted points" in text
    # A mapped key whose values never drifted gets no empty table.
    assert "face_instance_id: the values" not in text


def test_without_mapped_keys_there_is_no_key_table() -> None:
    assert tables.key_drift(report(top_values={})) is None
    text = drawn(render_audit, report(top_values={}))
    assert "Drift by payload key" not in text and "Persons with the most drift" in text


def test_an_inexact_count_is_marked_and_explained() -> None:
    values = {"cluster_id": [("u_1", 900, 0), ("u_2", 40, 7)]}
    (grid,) = tables.top_values(report(values))
    assert grid.rows == [("u_1", "900"), ("u_2", "≤ 40")]
    (note,) = grid.notes
    assert "at most 7 too high" in note and "--format json" in note
    text = drawn(render_audit, report(values))
    assert "≤ 40" in text and "at most 7 too high" in text


def test_values_are_data_never_markup_and_long_ones_are_cut() -> None:
    long = "x" * 200
    values = {"cluster_id": [("[red]noise[/red]", 3, 0), (long, 2, 0), ("", 1, 0)]}
    text = drawn(render_audit, report(values))
    assert "[red]noise[/red]" in text
    assert "x" * (tables.MAX_VALUE - 1) + "…" in text and long not in text
    assert '│ ""' in text  # an empty string is shown as one, not as a blank cell


def test_the_plan_shows_each_key_set_and_cleared() -> None:
    plan = Plan(
        audit=report(),
        set_person=3,
        clear_person=2,
        set_flag=0,
        persons=2,
        requests=1,
        by_person=[],
        guard=None,
        set_payload=1_234_570,
        keys={"person_id": {"set": 3, "clear": 2}, "cluster_id": {"set": 1_234_568, "clear": 8}},
    )
    text = drawn(render_plan, plan)
    assert "Repair plan by payload key" in text
    row = next(line for line in text.splitlines() if line.startswith("│ cluster_id "))
    assert [cell.strip() for cell in row.split("│")[2:4]] == ["1,234,568", "8"]
    assert "fix only mapped keys on 1,234,570;" in " ".join(text.split())
    assert all(len(line) <= 80 for line in text.splitlines())

    plain = Plan(report(top_values={}), 3, 2, 0, 2, 1, [], None)
    assert tables.plan_keys(plain) is None
    assert "mapped keys" not in drawn(render_plan, plain)
