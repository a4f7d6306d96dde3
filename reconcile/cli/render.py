"""All the CLI's output, and the one place that imports Rich: reports, tables, progress.

Reports go to stdout (or to `--output`), as a table for people or JSON for
machines; messages and progress go to stderr.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from reconcile.cli.options import Format
from reconcile.diff import REPAIRABLE, Kind
from reconcile.ops.check import CheckReport
from reconcile.ops.counts import CAVEAT, CountsReport
from reconcile.ops.repair import RepairReport
from reconcile.ops.sample import SampleReport
from reconcile.ops.undo import UndoReport
from reconcile.plan import Plan
from reconcile.report import AuditReport, PrivateFile, Report

_WHAT = {
    Kind.IN_SYNC: "payload agrees with PostgreSQL",
    Kind.MISSING_PERSON: "PostgreSQL has a person, the payload none",
    Kind.WRONG_PERSON: "both have a person, and they differ",
    Kind.STALE_PERSON: "PostgreSQL has no person, the payload still has one",
    Kind.FLAG_MISMATCH: "the flag disagrees with whether the face has a person",
    Kind.MISSING_POINT: "the row names a point that does not exist",
    Kind.ORPHAN_POINT: "a point that no row names",
    Kind.DUPLICATE_POINT: "several rows name the same point",
}


def stdout(width: int | None = None) -> Console:
    # Piped or redirected output gets Rich's 80 columns, which wraps the tables;
    # a log file or a pager reads better at 120.
    if width is None and not sys.stdout.isatty():
        width = 120
    return Console(file=sys.stdout, width=width, soft_wrap=False)


def stderr() -> Console:
    return Console(file=sys.stderr, stderr=True)


def to_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2) + "\n"


def say(text: str) -> None:
    """A line for the person at the terminal, on stdout (the demo's story)."""
    print(text)


def tell(text: str) -> None:
    """A line on stderr: what the run is doing, never data."""
    print(text, file=sys.stderr)


def emit(text: str, output: Path | None) -> None:
    """Text to stdout, or to `output` (mode 0600, renamed into place when complete)."""
    if output is None:
        sys.stdout.write(text)
        return
    with PrivateFile(output) as out:
        out.file.write(text)


def _rendered(render: Callable[[Console], None], output: Path | None) -> None:
    """Render a Rich table to stdout, or as plain text to `output`."""
    if output is None:
        render(stdout())
        return
    console = stdout(width=120)
    with console.capture() as captured:
        render(console)
    emit(captured.get(), output)


def show(
    report: Report, render: Callable[[Any, Console], None], fmt: Format, output: Path | None
) -> None:
    """A report as JSON or as its table, on stdout or into `output`."""
    if fmt is Format.json:
        emit(to_json(report.to_json()), output)
    else:
        _rendered(lambda console: render(report, console), output)


def render_audit(report: AuditReport, console: Console) -> None:
    counts = Table(title=f"Drift: {report.table} ↔ {report.collection}", title_justify="left")
    counts.add_column("kind")
    counts.add_column("points", justify="right")
    counts.add_column("repair")
    counts.add_column("meaning", style="dim")
    for kind in Kind:
        n = report.counts[kind.value]
        style = "green" if kind is Kind.IN_SYNC else ("bold red" if n else "")
        repair = (
            "payload write" if kind in REPAIRABLE else ("-" if kind is Kind.IN_SYNC else "report")
        )
        counts.add_row(kind.value, f"{n:,}", repair, _WHAT[kind], style=style)
    console.print(counts)
    if report.scope != "full":
        console.print(f"scope: {report.scope} (faces looked up directly, no scan)")
    if report.unknown_ids:
        shown = ", ".join(report.unknown_ids[:10])
        more = f" and {len(report.unknown_ids) - 10:,} more" if len(report.unknown_ids) > 10 else ""
        console.print(f"unknown ids (in neither store): {shown}{more}", markup=False)
    console.print(
        f"scanned {report.rows:,} rows ({report.rows_without_point:,} without a point) and "
        f"{report.points:,} points in {report.duration_seconds:.1f}s: "
        f"{report.drifted:,} drifted, {report.repairable:,} repairable"
    )
    if report.top_persons:
        persons = Table(title="Persons with the most drift", title_justify="left")
        persons.add_column("person_id")
        persons.add_column("drifted points", justify="right")
        for person, n in report.top_persons:
            persons.add_row(person, f"{n:,}")
        console.print(persons)
        if not report.top_persons_exact:
            most = max(report.top_persons_error.values(), default=0)
            bound = (
                "still exact"
                if most == 0
                else f"upper bounds, each at most {most:,} too high (its error in --format json)"
            )
            console.print(
                f"more than {report.persons_capacity:,} persons drifted: these counts are {bound}"
            )
    if report.details:
        console.print(f"details: {report.details}")


def render_check(report: CheckReport, console: Console) -> None:
    if report.table is not None:
        t = report.table
        console.print(
            f"table {t.name}: {report.rows:,} rows; point column {t.point_type}"
            f"{' (indexed)' if t.point_indexed else ' (NOT indexed)'}, "
            f"person column {t.person_type}, id column {t.id_type}"
        )
    if report.points is not None:
        keys = ", ".join(
            f"{k} {'found' if ok else 'NOT found'}" for k, ok in report.keys_found.items()
        )
        console.print(f"collection: {report.points:,} points; payload keys: {keys}")
    for problem in report.problems:
        console.print(f"problem: {problem}", markup=False, highlight=False)
    if not report.problems:
        console.print("ok: the mapping is valid")


@contextmanager
def progress(label: str, enabled: bool) -> Iterator[Callable[[int], None] | None]:
    """A transient spinner on stderr, only for a person watching a terminal."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description} {task.completed:,} points"),
        TimeElapsedColumn(),
        console=stderr(),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=None)
        yield lambda n: bar.update(task, completed=n)


def render_plan(plan: Plan, console: Console) -> None:
    if plan.by_person:
        table = Table(title="Repair plan by person (largest first)", title_justify="left")
        table.add_column("person_id")
        for name in ("set person", "clear person", "fix flag"):
            table.add_column(name, justify="right")
        for person, pp in plan.by_person:
            table.add_row(person, f"{pp.set:,}", f"{pp.cleared:,}", f"{pp.flags:,}")
        console.print(table)
    persons = f"{plan.persons:,}" if plan.persons_exact else f"at least {plan.persons:,}"
    console.print(
        f"plan: set the person on {plan.set_person:,} points, clear it on "
        f"{plan.clear_person:,}, fix the flag on {plan.set_flag:,}; {persons} persons; "
        f"{plan.requests:,} write requests"
    )
    if not plan.persons_exact:
        console.print(
            "more persons have changes than the plan keeps counters for: each person may "
            "have up to its error (in --format json) more changes than its columns show"
        )
    if plan.guard:
        console.print(f"guard: would refuse: {plan.guard}", markup=False, highlight=False)


def render_repair(report: RepairReport, console: Console) -> None:
    render_audit(report.plan.audit, console)
    render_plan(report.plan, console)
    if report.dry_run:
        console.print("dry run: nothing was written")
        return
    t = report.tallies
    console.print(
        f"applied {t.applied:,}, verified {t.verified:,}, skipped (changed since) "
        f"{t.skipped_changed:,}, skipped (locked) {t.skipped_locked:,}, vanished {t.vanished:,}, "
        f"failed {t.failed:,}"
    )
    if report.interrupted:
        console.print(
            f"stopped by {report.interrupted} after the batch in flight: run again to finish"
        )
    left = {k: n for k, n in report.remaining.items() if n}
    console.print(
        "remaining: " + (", ".join(f"{k} {n:,}" for k, n in left.items()) if left else "none")
    )
    if report.journal:
        console.print(f"journal: {report.journal} (reconcile undo {report.journal})")


def render_undo(report: UndoReport, console: Console) -> None:
    verb = "would restore" if report.dry_run else "restored"
    console.print(
        f"{report.points:,} journaled points: {verb} {report.restored:,}, already restored "
        f"{report.already_restored:,}, conflicts {report.conflicts:,}, skipped (locked) "
        f"{report.skipped_locked:,}, vanished {report.vanished:,}, failed {report.failed:,}"
    )
    if report.conflict_ids:
        console.print(
            "conflicts (changed since the repair, left alone), e.g.: "
            + ", ".join(str(p) for p in report.conflict_ids)
        )
    if report.torn_last_line:
        console.print("the journal's last line was torn (the repair was killed): skipped")


def render_counts(report: CountsReport, console: Console) -> None:
    console.print(
        f"faces with a person: {report.postgres_faces:,} in {report.table}, "
        f"{report.qdrant_points:,} points with one in {report.collection}; "
        f"{report.persons:,} persons, {len(report.differing):,} with different counts"
    )
    if report.differing:
        table = Table(title="Persons whose counts differ", title_justify="left")
        table.add_column("person_id")
        table.add_column("PostgreSQL", justify="right")
        table.add_column("Qdrant", justify="right")
        for person, pg, qd in report.differing:
            table.add_row(person, f"{pg:,}", f"{qd:,}")
        console.print(table)
    console.print(f"note: {CAVEAT}", style="dim")


def render_settings(rows: list[tuple[str, str, str]], console: Console) -> None:
    table = Table(title="Effective settings (secrets masked)", title_justify="left")
    for name in ("setting", "value", "from"):
        table.add_column(name)
    for name, value, source in rows:
        table.add_row(name, value, source)
    console.print(table)


def render_sample(report: SampleReport, console: Console) -> None:
    console.print(
        f"Sampled {report.faces.sampled:,} of ~{report.faces.population:,} faces and "
        f"{report.points.sampled:,} of ~{report.points.population:,} points "
        f"(seed {report.seed}): estimates with {report.confidence:.0%} intervals, not counts"
    )
    table = Table(title="Estimated drift", title_justify="left")
    for name, justify in (
        ("kind", "left"),
        ("hits / sampled", "right"),
        ("rate", "right"),
        ("95% interval", "right"),
        ("estimated points", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    rows = [(kind, e) for kind, e in report.estimates.items()]
    rows.append(("drifted faces", report.drifted))
    for kind, e in rows:
        low, high = e.interval
        est = e.to_json()
        label = f"{kind} (of points)" if e.side == "points" else kind
        table.add_row(
            label,
            f"{e.hits:,} / {e.sampled:,}",
            f"{e.rate:.1%}",
            f"{low:.1%} - {high:.1%}",
            f"~{est['estimated']:,} ({est['estimated_low']:,}-{est['estimated_high']:,})",
        )
    console.print(table)
    lost = report.faces.dropped_windows + report.points.dropped_windows
    vanished = report.faces.vanished + report.points.vanished
    if lost or vanished:
        console.print(
            f"note: {lost:,} over-full windows dropped, {vanished:,} drawn ids vanished meanwhile",
            style="dim",
        )
