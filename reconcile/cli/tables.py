"""What the report tables say, without Rich: what each drift kind means, and the
breakdown tables' titles, columns, rows and notes.

`render` draws a `Grid` (it is the one module that imports Rich). The per-person,
per-key and per-value tables of the audit and the repair plan are built here, so
that render stays about drawing and a test can read their cells without a console.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from reconcile.diff import Kind
from reconcile.plan import Plan
from reconcile.report import AuditReport

if TYPE_CHECKING:
    from reconcile.ops.repair import RepairReport

# A mapped value can be a long string or a whole JSON document; the table shows its
# start, --format json the whole of it.
MAX_VALUE = 48
INEXACT = "≤ "  # the count of an entry that may be too high (its error is > 0)
# The audit's kinds table: what each kind means, in one short line.
MEANING = {
    Kind.IN_SYNC: "payload agrees with PostgreSQL",
    Kind.MISSING_PERSON: "PostgreSQL has a person, the payload none",
    Kind.WRONG_PERSON: "both have a person, and they differ",
    Kind.STALE_PERSON: "PostgreSQL has no person, the payload still has one",
    Kind.FLAG_MISMATCH: "the flag disagrees with whether the face has a person",
    Kind.PAYLOAD_MISMATCH: "person and flag agree, another mapped key differs",
    Kind.MISSING_POINT: "the row names a point that does not exist",
    Kind.ORPHAN_POINT: "a point that no row names",
    Kind.DUPLICATE_POINT: "several rows name the same point",
}


@dataclass(frozen=True)
class Grid:
    """One table: the first column is a name, the others numbers (right-aligned)."""

    title: str
    columns: tuple[str, ...]
    rows: Sequence[tuple[str, ...]]
    notes: list[str] = field(default_factory=list)  # lines printed under the table


def mapped_keys(report: AuditReport) -> list[str]:
    """The `--map` keys of a run (each has a top-values list, empty or not)."""
    return list(report.top_values)


def short(value: str) -> str:
    if value == "":
        return '""'  # an empty string would look like no value at all
    return value if len(value) <= MAX_VALUE else value[: MAX_VALUE - 1] + "…"


def top_persons(report: AuditReport) -> Grid | None:
    if not report.top_persons:
        return None
    notes = []
    if not report.top_persons_exact:
        most = max(report.top_persons_error.values(), default=0)
        bound = (
            "still exact"
            if most == 0
            else f"upper bounds, each at most {most:,} too high (its error in --format json)"
        )
        notes.append(
            f"more than {report.persons_capacity:,} persons drifted: these counts are {bound}"
        )
    rows = [(person, f"{n:,}") for person, n in report.top_persons]
    return Grid("Persons with the most drift", ("person_id", "drifted points"), rows, notes)


def key_drift(report: AuditReport) -> Grid | None:
    """Per compared key, how the points differ; shown when `--map` maps a key (without
    it, the person's and the flag's drift is what the kinds table already says)."""
    if not mapped_keys(report) or not report.keys:
        return None
    rows = [
        (key, *(f"{subs.get(sub, 0):,}" for sub in ("missing", "wrong", "stale")))
        for key, subs in report.keys.items()
    ]
    return Grid(
        "Drift by payload key (a point counts once under each key that differs)",
        ("key", "missing", "wrong", "stale"),
        rows,
    )


def top_values(report: AuditReport) -> list[Grid]:
    """Per mapped key, its values with the most drifted points: the clusters whose
    searches miss faces (missing, wrong: charged to the row's value) or find faces
    that left them (stale: charged to the value the payload still holds)."""
    grids = []
    for key, values in report.top_values.items():
        if not values:
            continue
        rows = [(short(value), f"{INEXACT if error else ''}{n:,}") for value, n, error in values]
        notes = []
        most = max(error for _, _, error in values)
        if most:
            notes.append(
                f"{INEXACT.strip()}: more {key} values drifted than the audit keeps counters "
                f"for; each such count is at most {most:,} too high (its error in --format json)"
            )
        title = f"{key}: the values with the most drifted points"
        grids.append(Grid(title, (key, "drifted points"), rows, notes))
    return grids


def audit_breakdowns(report: AuditReport) -> list[Grid]:
    """The audit's tables under the kinds, in the order they are printed."""
    grids: Sequence[Grid | None] = (top_persons(report), key_drift(report), *top_values(report))
    return [grid for grid in grids if grid is not None]


def plan_persons(plan: Plan) -> Grid | None:
    if not plan.by_person:
        return None
    rows = [
        (person, f"{pp.set:,}", f"{pp.cleared:,}", f"{pp.flags:,}") for person, pp in plan.by_person
    ]
    return Grid(
        "Repair plan by person (largest first)",
        ("person_id", "set person", "clear person", "fix flag"),
        rows,
    )


def plan_keys(plan: Plan) -> Grid | None:
    """Per compared key, the points where the repair writes it (`set`) or deletes it
    (`clear`); shown when `--map` maps a key, as the audit's key table."""
    if not mapped_keys(plan.audit) or not plan.changes:
        return None
    rows = [(key, f"{c.get('set', 0):,}", f"{c.get('clear', 0):,}") for key, c in plan.keys.items()]
    return Grid("Repair plan by payload key", ("key", "set", "clear"), rows)


def plan_summary(plan: Plan) -> str:
    persons = f"{plan.persons:,}" if plan.persons_exact else f"at least {plan.persons:,}"
    others = f", fix only mapped keys on {plan.set_payload:,}" if mapped_keys(plan.audit) else ""
    return (
        f"plan: set the person on {plan.set_person:,} points, clear it on "
        f"{plan.clear_person:,}, fix the flag on {plan.set_flag:,}{others}; {persons} persons; "
        f"{plan.requests:,} write request{'' if plan.requests == 1 else 's'}"
    )


__all__ = [
    "MEANING",
    "Grid",
    "audit_breakdowns",
    "key_drift",
    "mapped_keys",
    "plan_keys",
    "plan_persons",
    "plan_summary",
    "top_persons",
    "top_values",
]


def orphan_plan(plan: Plan) -> list[str]:
    """The plan's lines for `--delete-orphans` (none without it): counts, then a few ids."""
    o = plan.orphans
    if o is None:
        return []
    lines = [
        f"orphan points (--delete-orphans, grace {duration(o.grace_seconds)}): mark {o.mark:,}, "
        f"delete {o.delete:,}, rescue {o.rescue:,}, waiting {o.waiting:,}; at most "
        f"{o.max_deletes:,} marked and deleted"
    ]
    lines += [
        f"  {what}, e.g.: {', '.join(map(str, ids))}" for what, ids in o.examples.items() if ids
    ]
    return lines


def duration(seconds: int) -> str:
    """A whole number of seconds as --orphan-grace spells it, in its largest exact unit."""
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def orphans_done(report: RepairReport) -> list[str]:
    """What `--delete-orphans` did (none without it), and when marked points go."""
    if report.plan.orphans is None:
        return []
    o, grace = report.orphans, report.plan.orphans.grace_seconds
    lines = [
        f"orphan points: marked {o.marked:,}, deleted {o.deleted:,}, rescued {o.rescued:,}, "
        f"waiting {o.waiting:,}, no longer orphaned {o.gone:,}, skipped (mark changed) "
        f"{o.skipped:,}, failed {o.failed:,}"
    ]
    if o.failed_ids:
        shown = ", ".join(map(str, o.failed_ids))
        lines.append(f"orphan points still there after the delete, e.g.: {shown}")
    if o.marked or o.waiting:
        lines.append(
            f"marked points are deleted by a --delete-orphans run at least {duration(grace)} "
            "after their mark, if no row names them by then"
        )
    return lines
