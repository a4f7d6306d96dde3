"""All the CLI's output, and the one place that imports Rich: reports, tables, progress.

Reports go to stdout (or to `--output`), as a table for people or JSON for
machines; messages and progress go to stderr. The breakdown tables' cells come from `tables`.
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from reconcile.cli import tables
from reconcile.cli.options import Format
from reconcile.diff import REPAIRABLE, Drift, Kind
from reconcile.ops.check import CheckReport
from reconcile.ops.counts import CAVEAT, CountsReport
from reconcile.ops.journals import JournalsReport
from reconcile.ops.repair import RepairReport
from reconcile.ops.sample import SampleReport
from reconcile.ops.undo import UndoReport
from reconcile.plan import Plan
from reconcile.report import AuditReport, PrivateFile, Report


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


def program() -> str:
    """This very `reconcile`, as a shell will find it: plain only when PATH leads to it.

    After `make demo` the command lives in .venv/bin, which is not on PATH: the
    hints would fail with 127 unless they name it by its path.
    """
    script = Path(sys.executable).parent / "reconcile"
    if not script.is_file():
        return f"{shlex.quote(sys.executable)} -m reconcile"
    found = shutil.which("reconcile")
    if found is not None and Path(found).resolve() == script.resolve():
        return "reconcile"
    return shlex.quote(str(script))


def say(text: str) -> None:
    """A line for the person at the terminal, on stdout (the demo's story)."""
    print(text)


def tell(text: str) -> None:
    """A line on stderr: what the run is doing, never data."""
    print(text, file=sys.stderr)


def file_or_stdout(path: Path | None) -> Path | None:
    """`-` means stdout, as `--ids-from -` means stdin: None then, never a file named `-`."""
    return None if path is None or str(path) == "-" else path


def emit(text: str, output: Path | None) -> None:
    """Text to stdout, or to `output` (mode 0600, renamed into place when complete)."""
    output = file_or_stdout(output)
    if output is None:
        sys.stdout.write(text)
        return
    with PrivateFile(output) as out:
        out.file.write(text)


def details_line(drift: Drift) -> None:
    """One `--details -` record on stdout, as the details file holds it."""
    sys.stdout.write(json.dumps(drift.record(), separators=(",", ":")) + "\n")


def _rendered(render: Callable[[Console], None], output: Path | None) -> None:
    """Render a Rich table to stdout, or as plain text to `output`."""
    if file_or_stdout(output) is None:
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
        counts.add_row(kind.value, f"{n:,}", repair, tables.MEANING[kind], style=style)
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
    for grid in tables.audit_breakdowns(report):
        draw(grid, console)
    if report.details:
        console.print(f"details: {report.details}")


def draw(grid: tables.Grid, console: Console) -> None:
    """A breakdown table: names and values are data (a cluster may be called `[red]`),
    never markup."""
    # The title on a line of its own, styled as Rich styles a table's: as a table title
    # Rich would wrap it to the width of the (narrow) columns.
    console.print(Text(grid.title, style="table.title"))
    table = Table()
    table.add_column(grid.columns[0], overflow="fold")
    for name in grid.columns[1:]:
        table.add_column(name, justify="right", no_wrap=True)
    for row in grid.rows:
        table.add_row(*(Text(cell) for cell in row))
    console.print(table)
    for note in grid.notes:
        console.print(note, markup=False, highlight=False)


def render_check(report: CheckReport, console: Console) -> None:
    if report.table is not None:
        t = report.table
        console.print(
            f"table {t.name}: {report.rows:,} rows; point column {t.point_type}"
            f"{' (indexed)' if t.point_indexed else ' (NOT indexed)'}, "
            f"person column {t.person_type}, id column {t.id_type}"
        )
        if report.mapped:
            mapped = zip(report.mapped, t.mapped_types, strict=True)
            console.print(
                "mapped keys: " + ", ".join(f"{m.key}={m.source} ({ty})" for m, ty in mapped),
                markup=False,
                highlight=False,
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


class Display:
    """Progress on stderr for a person at a terminal: one phase at a time, each with
    its total, share and time left where the total is known; nothing once stopped.

    The library announces each phase (`phase`) and reports how far it got (call);
    `stop` takes the display off the screen, as before any question is asked.
    """

    def __init__(self, enabled: bool, console: Console | None = None) -> None:
        self.console = console or stderr()
        self.enabled = enabled and self.console.is_terminal
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._total: int | None = None

    def phase(self, name: str, unit: str, total: int | None) -> None:
        self.stop()
        if not self.enabled:
            return
        counted = "{task.completed:,}" + ("" if total is None else " of {task.total:,}")
        columns: list[ProgressColumn] = [SpinnerColumn(), TextColumn(f"{name} {counted} {unit}")]
        if total is not None:
            columns += [BarColumn(), TaskProgressColumn(), TextColumn("ETA"), TimeRemainingColumn()]
        columns.append(TimeElapsedColumn())
        self._bar = Progress(*columns, console=self.console, transient=True)
        self._bar.start()
        self._task = self._bar.add_task(name, total=total)
        self._total = total

    def __call__(self, done: int) -> None:
        if self._bar is None or self._task is None:
            return
        if self._total is not None and done > self._total:
            # The scan's total is an estimate: past it, say so by growing it.
            self._total = done
            self._bar.update(self._task, total=done)
        self._bar.update(self._task, completed=done)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = self._task = None


@contextmanager
def progress(label: str, enabled: bool) -> Iterator[Display]:
    """A progress display for a command, starting in phase `label` (total unknown)."""
    display = Display(enabled)
    display.phase(label, "points", None)
    try:
        yield display
    finally:
        display.stop()


def render_plan(plan: Plan, console: Console) -> None:
    for grid in (tables.plan_persons(plan), tables.plan_keys(plan)):
        if grid is not None:
            draw(grid, console)
    console.print(tables.plan_summary(plan))
    if not plan.persons_exact:
        console.print(
            "more persons have changes than the plan keeps counters for: each person may "
            "have up to its error (in --format json) more changes than its columns show"
        )
    orphans = plan.orphans
    for line in tables.orphan_plan(plan):
        console.print(line, markup=False, highlight=False)
    for guard in (plan.guard, None if orphans is None else orphans.guard):
        if guard:
            console.print(f"guard: would refuse: {guard}", markup=False, highlight=False)


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
    for line in tables.orphans_done(report):
        console.print(line, markup=False, highlight=False)
    if report.interrupted:
        console.print(
            f"stopped by {report.interrupted} after the batch in flight: run again to finish"
        )
    left = {k: n for k, n in report.remaining.items() if n}
    console.print(
        "remaining: " + (", ".join(f"{k} {n:,}" for k, n in left.items()) if left else "none")
    )
    keys_left = {k: n for k, n in report.remaining_keys.items() if n}
    if keys_left:
        console.print(
            "keys still differing: " + ", ".join(f"{k} {n:,}" for k, n in keys_left.items())
        )
    if report.journal:
        # The hint is for copying: never wrapped, never read as markup, quoted for a shell.
        console.print(
            f"journal: {report.journal} ({program()} undo {shlex.quote(report.journal)})",
            soft_wrap=True,
            markup=False,
            highlight=False,
        )
    if report.journals_deleted:
        console.print(
            f"old journals deleted (past --journal-retention): {report.journals_deleted:,}"
        )


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
            + ", ".join(str(p) for p in report.conflict_ids[:5])
        )
    if report.torn_last_line:
        console.print("the journal's last line was torn (the repair was killed): skipped")


def render_journals(report: JournalsReport, console: Console) -> None:
    if not report.journals:
        console.print(f"no journals in {report.directory}", markup=False, highlight=False)
        return
    table = Table(title=f"Journals in {report.directory}", title_justify="left")
    table.add_column("started", no_wrap=True)
    table.add_column("table")
    table.add_column("collection")
    table.add_column("points", justify="right")
    table.add_column("undone", overflow="fold")  # a damaged journal's reason is long
    table.add_column("file", no_wrap=True)  # the name to pass to `reconcile undo`, whole
    for e in report.journals:
        undone = f"damaged: {e.error}" if e.status == "damaged" else e.undone
        if e.status == "torn":
            undone += " (torn last line)"
        cells = (e.started, e.table, e.collection, f"{e.points:,}", undone, Path(e.path).name)
        table.add_row(*(cell or "?" for cell in cells))
    console.print(table)
    console.print(
        f"(undo times are in --format json; files in {report.directory})",
        style="dim",
        markup=False,
        highlight=False,
    )


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
