"""The suite's results as printed tables and verdicts (and the same as Markdown).

`tables` makes one table per section, each from the tasks' results per world
size (smallest first); `targets_text` gives the verdicts on the issue's targets
at the largest size. The profile's block is bench.profiling's.
"""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.remote import REMOTE_LATENCIES

BENCH = Path(__file__).resolve().parent

Results = list[dict[str, Any]]  # one task's results, one per size, smallest first


def label(faces: int) -> str:
    return f"{faces // 1_000_000}M" if faces % 1_000_000 == 0 else f"{faces // 1000}k"


def mib(n: float) -> str:
    return f"{n / 2**20:.1f}"


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "n/a"
    return f"{a / b:.2f}"


class Table:
    """Rows of (what, value per size...) printed as text and kept for Markdown."""

    def __init__(self, title: str, header: list[str]) -> None:
        self.title = title
        self.header = header
        self.rows: list[list[str]] = []

    def add(self, *cells: object) -> None:
        self.rows.append([str(c) for c in cells])

    def text(self) -> str:
        widths = [
            max(len(r[i]) for r in [self.header, *self.rows]) for i in range(len(self.header))
        ]
        lines = [self.title]
        for row in [self.header, *self.rows]:
            first = row[0].ljust(widths[0])
            rest = "  ".join(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True))
            lines.append(f"  {first}  {rest}")
        return "\n".join(lines)

    def markdown(self) -> str:
        lines = [f"**{self.title}**", ""]
        lines.append("| " + " | ".join(self.header) + " |")
        lines.append("|---|" + "---:|" * (len(self.header) - 1))
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(lines)


def column(results: Results, key: str, unit: float = 1) -> list[float]:
    """One value per size: `key` of each size's results, in `unit`s (2**20 for MiB)."""
    return [x[key] / unit for x in results]


def seconds_row(table: Table, title: str, values: list[float], fmt: str = ".2f") -> None:
    """A row of seconds per size, and how the largest compares with the smallest."""
    table.add(title, *(format(v, fmt) for v in values), ratio(values[-1], values[0]))


def growing_row(table: Table, title: str, values: list[float], fmt: str, grows: bool) -> None:
    """A row of values per size, and largest / smallest if `grows` and there are two sizes."""
    last = ratio(values[-1], values[0]) if grows and len(values) > 1 else ""
    table.add(title, *(format(v, fmt) for v in values), last)


# --- the tables, one function a section ------------------------------------------------


def tables(
    sizes: list[int], results: dict[int, dict[str, Any]], worlds_by_size: dict[int, Any]
) -> list[Table]:
    """Every section's table, in the order printed."""
    names = [label(n) for n in sizes]
    growth = f"{names[-1]}/{names[0]}" if len(sizes) > 1 else "-"
    header = ["", *names, growth]
    by_task = {task: [results[n][task] for n in sizes] for task in results[sizes[0]]}
    built = [worlds_by_size[n] for n in sizes]
    return [
        worlds_table(names, built),
        audit_table(header, by_task["streams"], by_task["memory"]),
        whatif_table(header, by_task["whatif"]),
        remote_table(header, by_task["remote"]),
        readers_table(header, by_task["streams"], by_task["readers"]),
        repair_table(names, by_task["repair"], by_task["naive"]),
        checks_table(header, by_task["targeted"], by_task["sample"], built),
    ]


def worlds_table(names: list[str], built: list[Any]) -> Table:
    table = Table("Worlds", ["", *names])
    for key, title in (
        ("rows", "face rows (PostgreSQL)"),
        ("points", "points (Qdrant Edge)"),
        ("persons", "persons"),
        ("largest_person", "faces of the largest person"),
        ("drifted", "drifted point ids"),
    ):
        table.add(title, *(f"{world.manifest[key]:,}" for world in built))
    table.add(
        "build seconds (PostgreSQL + edge)",
        *("{postgres} + {edge}".format(**world.manifest["build_seconds"]) for world in built),
    )
    return table


def audit_table(header: list[str], streams: Results, memory: Results) -> Table:
    table = Table("Full audit", header)
    s, m = streams, memory
    for title, values, fmt, grows in (
        ("PostgreSQL stream alone (s)", column(s, "pg"), ".2f", True),
        ("edge scroll alone, first in a fresh process (s)", column(s, "edge_cold"), ".2f", True),
        ("  major page faults in that first scroll", column(s, "edge_cold_faults"), ",.0f", True),
        ("edge scroll alone (s)", column(s, "edge"), ".2f", True),
        ("full audit (s)", column(s, "audit"), ".2f", True),
        ("full audit, first in a fresh process (s)", column(m, "seconds"), ".2f", True),
        ("audit throughput (rows/s)", [x["rows"] / x["audit"] for x in s], ",.0f", True),
        ("full / max(two alone)", [full_ratio(x) for x in s], ".2f", False),
        ("own RssAnon peak above open stores (MiB)", column(m, "rss_growth", 2**20), ".1f", True),
        ("own Python heap peak, tracemalloc (MiB)", column(m, "heap_peak", 2**20), ".1f", True),
        ("RssAnon with both stores open (MiB)", column(m, "rss_opened", 2**20), ".1f", True),
        ("audit under tracemalloc (s)", column(m, "traced_seconds"), ".1f", True),
    ):
        growing_row(table, title, values, fmt, grows)
    for key, title in (
        ("rss_quarters", "RssAnon held at 1/4, 1/2, 3/4 of the scan (MiB)"),
        ("heap_quarters", "heap held at 1/4, 1/2, 3/4 of the scan (MiB)"),
    ):
        table.add(title, *(" / ".join(mib(v) for v in x[key]) for x in m), "")
    return table


def full_ratio(streams: dict[str, Any]) -> float:
    """The full audit's time over the slower of its two streams read alone."""
    return streams["audit"] / max(streams["pg"], streams["edge"])


def whatif_table(header: list[str], whatif: Results) -> Table:
    table = Table("Where the audit's time goes: variants measured in one process (s)", header)
    for key, title in (
        ("audit", "full audit (same process as the rows below)"),
        ("audit_gc_off", "full audit, garbage collector off"),
        ("edge_product", "edge: reconcile points() (page 1000, Point tuples)"),
        ("edge_raw_1000", "edge: engine scroll only, page 1000"),
        ("edge_raw_10000", "edge: engine scroll only, page 10000"),
        ("merge_product", "merge alone: reconcile diff() on lists in memory"),
        ("merge_lean", "merge alone: lean counting merge (bench prototype)"),
        ("edge_tuples_10000", "edge: page 10000, (str(id), payload) tuples"),
        ("pg_prefetched", "reconcile diff() with PostgreSQL prefetched in a thread"),
        ("both_prefetched", "reconcile diff() with both streams prefetched in threads"),
        ("lean_audit", "lean audit prototype: COPY chunks + edge tuples + lean merge, gc off"),
        ("second_process", "prototype: PostgreSQL and the merge in a spawned second process"),
        ("worker_ready", "  of which starting that process (imports, connect)"),
    ):
        seconds_row(table, title, column(whatif, key))
    table.add(
        "a Python thread's speed while the engine scrolls (share of alone)",
        *(f"{x['gil_share']:.0%}" for x in whatif),
        "",
    )
    return table


def remote_table(header: list[str], remote: Results) -> Table:
    table = Table(
        "Points from another process (a stand-in for a Qdrant server), warm, medians (s)", header
    )
    seconds_row(table, "PostgreSQL stream alone", column(remote, "pg"))
    for latency in REMOTE_LATENCIES:
        rtt = f"{latency * 1000:.0f} ms round trip"
        for key, title in (
            (f"points_{latency}", f"points alone, one request per 1,000 points, {rtt}"),
            (
                f"thread_{latency}",
                "  full audit, both streams read ahead in threads (the product's way)",
            ),
            (f"inline_{latency}", "  full audit, both streams in one thread"),
        ):
            seconds_row(table, title, column(remote, key))
        table.add(
            "  full (threads) / max(two alone)",
            *(
                f"{x[f'thread_{latency}'] / max(x[f'points_{latency}'], x['pg']):.2f}"
                for x in remote
            ),
            "",
        )
    return table


def readers_table(header: list[str], streams: Results, readers: Results) -> Table:
    table = Table("Reading (point, face, person) in point order (s; longest transaction)", header)
    seconds_row(
        table,
        "reconcile Postgres.rows() (COPY per keyset chunk, Row tuples)",
        column(streams, "pg"),
    )
    for name in readers[0]:
        table.add(
            name,
            *(f"{x[name]['seconds']:.2f}; {x[name]['longest_transaction']:.2f}" for x in readers),
            ratio(readers[-1][name]["seconds"], readers[0][name]["seconds"]),
        )
    copy_name = "COPY TO STDOUT, raw bytes"
    table.add(
        "ratio Postgres.rows() / COPY raw",
        *(ratio(x["pg"], y[copy_name]["seconds"]) for x, y in zip(streams, readers, strict=True)),
        "",
    )
    return table


def _count(key: str) -> Callable[[dict[str, Any]], str]:
    return lambda x: f"{x[key]:,}"


def _seconds(key: str) -> Callable[[dict[str, Any]], str]:
    return lambda x: f"{x[key]:.2f}"


def _mib(key: str) -> Callable[[dict[str, Any]], str]:
    return lambda x: mib(x[key])


def _fixed(text: str) -> Callable[[dict[str, Any]], str]:
    return lambda x: text


# (title, the repair's cell, the naive resync's cell)
_REPAIR_ROWS = (
    ("points written", _count("written"), _count("written")),
    ("write requests (server equivalent)", _count("requests"), _count("requests")),
    ("engine write operations", _count("operations"), _count("requests")),
    ("failed requests", _fixed("0"), _count("failed")),
    ("seconds", _seconds("seconds"), _seconds("seconds")),
    ("  of which the audit", _seconds("audit_seconds"), _fixed("-")),
    ("peak RssAnon growth (MiB)", _mib("rss_growth"), _mib("rss_growth")),
    ("peak heap, tracemalloc (MiB)", _mib("heap_peak"), _mib("heap_peak")),
    ("repairable drift left", _count("repairable_left"), _count("repairable_left")),
    ("undo from the journal (s)", _seconds("undo_seconds"), _fixed("-")),
)


def repair_table(names: list[str], repair: Results, naive: Results) -> Table:
    table = Table(
        "Repair at the world's drift (1%) vs the naive one-shot resync",
        ["", *(f"{a} {n}" for n in names for a in ("repair", "naive"))],
    )
    for title, repair_cell, naive_cell in _REPAIR_ROWS:
        cells = []
        for r, n in zip(repair, naive, strict=True):
            cells += [repair_cell(r), naive_cell(n)]
        table.add(title, *cells)
    return table


def checks_table(header: list[str], targeted: Results, sample: Results, built: list[Any]) -> Table:
    table = Table("Targeted and sampled checks (s, median)", header)
    seconds_row(table, "audit of 1,000 face ids (targets)", column(targeted, "seconds"), ".3f")
    if not all("seconds" in x for x in sample):
        table.add("sample_audit", *(x.get("missing", "?") for x in sample), "")
        return table
    seconds_row(table, "sample_audit(n=1000)", column(sample, "seconds"), ".3f")
    seconds_row(table, "sample_audit(n=4000), one run", column(sample, "seconds_4000"), ".3f")
    table.add("  n=4000 / n=1000", *(ratio(x["seconds_4000"], x["seconds"]) for x in sample), "")
    table.add("  true share of faces drifted", *(f"{face_drift(world):.2%}" for world in built), "")
    for key, n in (("drift_estimate_4000", 4000), ("drift_estimate", 1000)):
        table.add(
            f"  estimated drift rate [95% CI], n={n}",
            *("{:.2%} [{:.2%}, {:.2%}]".format(*x[key]) for x in sample),
            "",
        )
    return table


def face_drift(world: Any) -> float:
    """The share of face rows whose point is drifted (what sampling faces estimates)."""
    expected = world.expected
    drifted = sum(v for k, v in expected.items() if k not in {"in_sync", "orphan_point"})
    return drifted / world.manifest["rows"]


# --- the verdicts and the run's circumstances -------------------------------------------


def targets_text(sizes: list[int], results: dict[int, dict[str, Any]]) -> str:
    """The issue's targets at the largest size, each reached or not."""
    big, small = max(sizes), min(sizes)
    s, m = results[big]["streams"], results[big]["memory"]
    m0 = results[small]["memory"]
    own = max(m["rss_growth"], m["heap_peak"])
    flat_rss = m["rss_growth"] / max(m0["rss_growth"], 1)
    flat_heap = m["heap_peak"] / max(m0["heap_peak"], 1)
    full = full_ratio(s)
    cold = m["seconds"]
    held_growth = m["heap_quarters"][-1] / max(m["heap_quarters"][0], 1)
    return "\n".join(
        [
            f"Targets (issue 5) at {label(big)}:",
            f"  audit <= 15 s on edge: {cold:.1f}s in a fresh process, {s['audit']:.1f}s warm"
            f" -> {verdict(cold <= 15)}",
            f"  own memory < 100 MB: {own / 1e6:.1f} MB -> {verdict(own < 100e6)}",
            f"  flat (<= 1.25x {label(small)}): RssAnon {flat_rss:.2f}x"
            f" -> {verdict(flat_rss <= 1.25)};"
            f" heap {flat_heap:.2f}x (+{(m['heap_peak'] - m0['heap_peak']) / 2**20:.2f} MiB)"
            f" -> {verdict(flat_heap <= 1.25)}",
            f"  heap held at 3/4 of the {label(big)} scan / at 1/4: {held_growth:.2f}x",
            f"  full <= 1.2 x max(two alone): {full:.2f} -> {verdict(full <= 1.2)}",
        ]
    )


def verdict(ok: bool) -> str:
    return "reached" if ok else "NOT reached"


def product_version() -> str:
    """The commit the product was measured at, and whether reconcile/ had local changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=BENCH,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "reconcile"],
            cwd=BENCH.parent,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"commit {head}" + (" with uncommitted changes in reconcile/" if dirty else "")


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    python = f"{platform.python_implementation()} {platform.python_version()}"
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, {platform.machine()}, {python}"


def heading(version: str, load: tuple[float, ...], drift: float, seed: int, repeat: str) -> str:
    """The lines printed before the tables: where, what and how the suite measured."""
    return "\n".join(
        [
            f"machine: {machine()}",
            f"product: {version}",
            f"drift {drift:.0%}, seed {seed}, page size 1000, repeats {repeat}",
            f"load average at the start {load[0]:.2f}, at the end {os.getloadavg()[0]:.2f}",
        ]
    )


def markdown(
    version: str, load: tuple[float, ...], sections: list[Table], blocks: list[str]
) -> str:
    """The tables as Markdown, and the text blocks (verdicts, profile) as code blocks."""
    parts = [f"Machine: {machine()}. Product: {version}.", *(t.markdown() for t in sections)]
    parts.insert(
        1, f"Load average {load[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end."
    )
    parts += [f"```\n{block}\n```" for block in blocks]
    return "\n\n".join(parts) + "\n"
