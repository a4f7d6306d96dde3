"""The audit with five mapped payload keys against the person-only audit (issue 13).

    .venv/bin/python bench/mapped.py [--sizes 100000,1000000] [--repeat 3] [--drift 0.01]
                                     [--seed 7] [--root DIR] [--no-keep]

The worlds (bench/service_world.py) have the service's exact shape and its whole
payload, and 1% drift made by the service's own code paths, person and cluster
labels both. They live under bench/.worlds/mapped/ (`--root`) and are reused
while their manifest and row count match; `--no-keep` deletes them at the end.
PostgreSQL is an embedded server under the root, or `RECONCILE_BENCH_DATABASE_URL`
(a schema per world), as for bench/suite.py.

Every audit is the CLI in a fresh process, as cron runs it:

    reconcile audit --database-url URL --qdrant-edge PATH --table SCHEMA.face_instances
                    --flag-key is_assigned --format json --quiet [--map KEY=COLUMN ...]

once without and once with the five `--map`s (cluster_id, asset_id::text,
face_instance_id=id, detection_confidence, quality_score). Per run: wall time,
CPU time (wait4), peak RSS (VmHWM) and peak RssAnon, both sampled every 5 ms
from /proc/PID/status (RSS also counts the edge store's mapped pages, RssAnon
does not). One unmeasured run of each first, so that both find the store's
files in the page cache; then `--repeat` runs of each, alternating. Medians are
reported, and the best run. Each run's JSON counts (and per-key counts, when
the report has them) are checked against the manifest's expected counts: a
difference prints MISMATCH and the exit status is 1. Until `audit` takes
`--map`, the five-key run's usage error (exit 2) is reported as "--map not
available yet" and the person-only runs are still measured.

Memory: the engine holds memory in proportion to the store once it is open (its
id tracker and payload indexes); a process that only opens the store measures
that level, and the audit's own memory is its peak RssAnon above it.

The issue's target: five-key throughput at least 0.75 x person-only at 1M
(person-only time / five-key time), memory still flat (1M/100k of the audit's
own memory).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# `python bench/mapped.py` puts bench/ on sys.path, not the repository root.
ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench import report, service_world  # noqa: E402
from bench.suite import start_postgres  # noqa: E402

DEFAULT_ROOT = Path(__file__).resolve().parent / ".worlds" / "mapped"
RECONCILE = Path(sys.executable).parent / "reconcile"
TARGET = 0.75
MODES = ("person", "mapped")  # person-only, five mapped keys


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--repeat", type=int, default=3, help="measured runs per mode and size")
    parser.add_argument("--drift", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument(
        "--keep",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep the worlds under --root for the next run (default) or delete them",
    )
    return parser.parse_args()


# --- one fresh process -----------------------------------------------------------


@dataclass
class Run:
    """One CLI process: how it ended, what it printed, what it cost."""

    exit_code: int
    stdout: str
    stderr: str
    seconds: float
    max_rss: int  # bytes: the highest VmHWM sampled
    rss_anon: int  # bytes: the highest RssAnon sampled
    cpu: float  # user + system seconds, from wait4


def memory(pid: int) -> dict[str, int]:
    """VmHWM and RssAnon of process `pid` in bytes; empty once it has exited (a zombie)."""
    found: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                name, _, value = line.partition(":")
                if name in ("VmHWM", "RssAnon"):
                    found[name] = int(value.split()[0]) * 1024
    except OSError:
        return {}
    return found


def run_cli(args: list[str]) -> Run:
    """Run `reconcile ARGS` in a fresh process: wall time, CPU time, peak memory."""
    return run_process([str(RECONCILE), *args])


def run_process(argv: list[str]) -> Run:
    """Run `argv` in a fresh process: wall time, CPU time, peak memory.

    Peak RSS is the process's own VmHWM, sampled every 5 ms (it only grows, so
    the last sample before exit is the peak within a few ms). Not ru_maxrss:
    Linux carries the high-water mark of the memory the child was forked from
    across exec, so a child of this (large, after building a 1M world) process
    would report this process's RSS.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err)
        peak = {"VmHWM": 0, "RssAnon": 0}
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.005):
                now = memory(proc.pid)
                if not now:
                    return
                for name, value in now.items():
                    peak[name] = max(peak[name], value)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        # wait4, not Popen.wait: this child's own CPU time (RUSAGE_CHILDREN sums them all).
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        done.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped: Popen must not wait
        out.seek(0)
        err.seek(0)
        return Run(
            exit_code=proc.returncode,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
            seconds=seconds,
            max_rss=peak["VmHWM"],
            rss_anon=peak["RssAnon"],
            cpu=usage.ru_utime + usage.ru_stime,
        )


def command_args(world: service_world.ServiceWorld, *command: str) -> list[str]:
    """`command` against this world's stores, its report as JSON, no progress."""
    return [
        *command,
        "--database-url",
        world.base_url,
        "--qdrant-edge",
        str(world.edge_path),
        "--table",
        world.table,
        "--flag-key",
        service_world.FLAG_KEY,
        "--format",
        "json",
        "--quiet",
    ]


def audit_args(world: service_world.ServiceWorld, mapped: bool) -> list[str]:
    args = command_args(world, "audit")
    if mapped:
        for spec in world.manifest["maps"]:
            args += ["--map", spec]
    return args


# --- checking a run against the manifest -------------------------------------------


def shout(what: str, problems: list[str]) -> None:
    """A run whose counts differ from the manifest's, on stderr, impossible to miss."""
    print(f"\n*** MISMATCH: {what} ***", file=sys.stderr)
    for problem in problems:
        print(f"***   {problem}", file=sys.stderr)
    print(file=sys.stderr, flush=True)


def mismatches(found: dict[str, Any], expected: dict[str, Any], mapped: bool) -> list[str]:
    """What differs between a run's JSON report and the manifest's expected counts."""
    problems: list[str] = []
    want: dict[str, int] = expected["mapped" if mapped else "person_only"]
    counts = found.get("counts")
    if not isinstance(counts, dict):
        return ["the report has no counts"]
    for kind in sorted(set(want) | set(counts)):
        if counts.get(kind, 0) != want.get(kind, 0):
            problems.append(f"{kind}: found {counts.get(kind, 0)}, expected {want.get(kind, 0)}")
    keys = found.get("keys")
    if keys is None:
        if mapped:
            problems.append("the report has no per-key counts (`keys`)")
        return problems
    if not isinstance(keys, dict):
        return [*problems, f"`keys` is not an object: {keys!r}"]
    expected_keys: dict[str, dict[str, int]] = expected["keys"]
    for key, entry in keys.items():
        if key not in expected_keys:
            problems.append(f"keys.{key}: not a compared key of this run")
            continue
        if not isinstance(entry, dict):
            problems.append(f"keys.{key} is not an object: {entry!r}")
            continue
        for what, number in expected_keys[key].items():
            if entry.get(what, 0) != number:
                problems.append(f"keys.{key}.{what}: found {entry.get(what, 0)}, expected {number}")
    if mapped:
        absent = [k for k in service_world.MAPPED_KEYS if k not in keys]
        if absent:
            problems.append(f"keys lacks the mapped {', '.join(absent)}")
    return problems


@dataclass
class Series:
    """The measured runs of one mode on one world."""

    runs: list[Run] = field(default_factory=list)
    unavailable: str | None = None  # why the mode could not run (--map not there yet)
    mismatched: int = 0

    def median(self, attr: str) -> float | None:
        values = [getattr(r, attr) for r in self.runs]
        return statistics.median(values) if values else None

    def best(self) -> float | None:
        return min((r.seconds for r in self.runs), default=None)


def usage_error(run: Run) -> bool:
    """A usage error (exit 2) naming --map: the option is not there, or not yet for audit."""
    return run.exit_code == 2 and "map" in run.stderr.lower()


def one_run(world: service_world.ServiceWorld, mode: str, series: Series, keep: bool) -> None:
    """Run one audit of `mode`; `keep` it among the measured runs; check its counts."""
    mapped = mode == "mapped"
    run = run_cli(audit_args(world, mapped))
    what = "five-key" if mapped else "person-only"
    print(
        f"  {report.label(world.faces):>5} {what:<11} {run.seconds:6.2f}s "
        f"(cpu {run.cpu:5.2f}s) exit {run.exit_code} rss {report.mib(run.max_rss)} MiB "
        f"anon {report.mib(run.rss_anon)} MiB, load {os.getloadavg()[0]:.2f}",
        file=sys.stderr,
        flush=True,
    )
    if mapped and usage_error(run):
        series.unavailable = run.stderr.strip().splitlines()[-1] if run.stderr.strip() else "?"
        return
    if run.exit_code not in (0, 1):
        sys.stderr.write(run.stdout + run.stderr)
        raise SystemExit(f"{what} audit of {world.name} failed (exit {run.exit_code})")
    try:
        found = json.loads(run.stdout)
    except ValueError:
        sys.stderr.write(run.stderr)
        raise SystemExit(
            f"{what} audit of {world.name} (exit {run.exit_code}) printed no JSON: "
            f"{run.stdout[:200]!r}"
        ) from None
    problems = mismatches(found, world.manifest["expected"], mapped)
    if problems:
        series.mismatched += 1
        shout(f"{what} audit of {world.name}", problems)
    if keep:
        series.runs.append(run)


# A process with the audit's imports (the CLI imports a command's modules only
# when it runs) that opens the edge store and does nothing else:
# the engine holds memory in proportion to the store (its id tracker and payload
# indexes), which the tool cannot change; the audit's own memory is what it adds.
_OPEN_ONLY = """
import sys
from pathlib import Path
import reconcile.cli, reconcile.cli.audit, reconcile.ops.audit, reconcile.stores.postgres
from reconcile.stores.edge import open_edge_store
shard = open_edge_store(Path(sys.argv[1]))
shard.info()
with open("/proc/self/status") as status:
    print(" ".join(line.split()[1] for line in status if line.startswith(("VmHWM:", "RssAnon:"))))
shard.close()
"""


def open_level(world: service_world.ServiceWorld) -> dict[str, int]:
    """VmHWM and RssAnon (bytes) of a fresh process once it has opened the world's store."""
    proc = subprocess.run(
        [sys.executable, "-c", _OPEN_ONLY, str(world.edge_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    hwm, anon = (int(v) * 1024 for v in proc.stdout.split())
    return {"max_rss": hwm, "rss_anon": anon}


def measure(world: service_world.ServiceWorld, repeat: int) -> dict[str, Series]:
    """One warm-up of each mode, then `repeat` runs of each, alternating."""
    results = {mode: Series() for mode in MODES}
    for keep in [False] + [True] * repeat:
        for mode in MODES:
            if results[mode].unavailable is None:
                one_run(world, mode, results[mode], keep)
    return results


# --- the report ----------------------------------------------------------------------


def _s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _mib(value: float | None) -> str:
    return "n/a" if value is None else report.mib(value)


def table(
    sizes: list[int],
    results: dict[int, dict[str, Series]],
    rows: dict[int, int],
    opened: dict[int, dict[str, int]],
) -> str:
    header = ["", *(report.label(s) for s in sizes)]
    if len(sizes) > 1:
        header.append(f"{report.label(sizes[-1])}/{report.label(sizes[0])}")
    out = report.Table("Audit as a fresh CLI process: person-only vs five mapped keys", header)

    def line(title: str, values: list[float | None], fmt: Any, grows: bool) -> None:
        cells = [fmt(v) for v in values]
        if len(sizes) > 1:
            cells.append(report.ratio(values[-1], values[0]) if grows else "")
        out.add(title, *cells)

    person = [results[s]["person"] for s in sizes]
    mapped = [results[s]["mapped"] for s in sizes]
    line("face rows", [float(rows[s]) for s in sizes], lambda v: f"{v:,.0f}", False)
    line("person-only audit, median (s)", [x.median("seconds") for x in person], _s, True)
    line("five-key audit, median (s)", [x.median("seconds") for x in mapped], _s, True)
    line("person-only audit, best (s)", [x.best() for x in person], _s, True)
    line("five-key audit, best (s)", [x.best() for x in mapped], _s, True)
    ratios = [
        _ratio(p.median("seconds"), m.median("seconds"))
        for p, m in zip(person, mapped, strict=True)
    ]
    best = [_ratio(p.best(), m.best()) for p, m in zip(person, mapped, strict=True)]
    line("throughput five-key / person-only (medians)", ratios, _s, False)
    line("throughput five-key / person-only (best runs)", best, _s, False)
    cpu = [_ratio(p.median("cpu"), m.median("cpu")) for p, m in zip(person, mapped, strict=True)]
    line("CPU time person-only / five-key (medians)", cpu, _s, False)
    line(
        "five-key throughput, median (rows/s)",
        [_per_second(rows[s], results[s]["mapped"].median("seconds")) for s in sizes],
        lambda v: "n/a" if v is None else f"{v:,.0f}",
        False,
    )
    line("person-only CPU, median (s)", [x.median("cpu") for x in person], _s, True)
    line("five-key CPU, median (s)", [x.median("cpu") for x in mapped], _s, True)
    line("person-only peak RSS (MiB)", [x.median("max_rss") for x in person], _mib, True)
    line("five-key peak RSS (MiB)", [x.median("max_rss") for x in mapped], _mib, True)
    line("person-only peak RssAnon (MiB)", [x.median("rss_anon") for x in person], _mib, True)
    line("five-key peak RssAnon (MiB)", [x.median("rss_anon") for x in mapped], _mib, True)
    line(
        "RSS, a process that only opens the store (MiB)", _at(opened, sizes, "max_rss"), _mib, True
    )
    line("RssAnon, same process (MiB)", _at(opened, sizes, "rss_anon"), _mib, True)
    for title, series in (("person-only", person), ("five-key", mapped)):
        peaks = [x.median("rss_anon") for x in series]
        above = [
            None if peak is None else peak - opened[s]["rss_anon"]
            for s, peak in zip(sizes, peaks, strict=True)
        ]
        line(f"{title} RssAnon above it (MiB)", above, _mib, True)
    return out.text()


def _at(opened: dict[int, dict[str, int]], sizes: list[int], key: str) -> list[float | None]:
    return [float(opened[s][key]) for s in sizes]


def _ratio(person: float | None, mapped: float | None) -> float | None:
    """Five-key throughput over person-only throughput: person-only time / five-key time."""
    return None if person is None or mapped is None or mapped == 0 else person / mapped


def _per_second(rows: int, seconds: float | None) -> float | None:
    return None if seconds is None or seconds == 0 else rows / seconds


def verdicts(sizes: list[int], results: dict[int, dict[str, Series]]) -> list[str]:
    lines: list[str] = []
    for faces in sizes:
        person, mapped = results[faces]["person"], results[faces]["mapped"]
        name = report.label(faces)
        if mapped.unavailable is not None:
            lines.append(f"{name}: five-key audit: --map not available yet ({mapped.unavailable})")
            continue
        ratio = _ratio(person.median("seconds"), mapped.median("seconds"))
        if ratio is not None:
            lines.append(
                f"{name}: five-key throughput {ratio:.2f} x person-only (target >= {TARGET}): "
                f"{report.verdict(ratio >= TARGET)}"
            )
    for faces in sizes:
        for mode, series in results[faces].items():
            if series.mismatched:
                lines.append(
                    f"{report.label(faces)}: MISMATCH in {series.mismatched} {mode} run(s): "
                    "see the lines marked *** above"
                )
    return lines


def expected_text(world: service_world.ServiceWorld) -> str:
    expected = world.manifest["expected"]
    mapped = expected["mapped"]
    lines = [f"expected counts, {report.label(world.faces)} ({world.manifest['rows']:,} rows, "]
    lines[0] += f"{world.manifest['points']:,} points):"
    lines.append("  kind              person-only  five-key")
    for kind in service_world.KINDS:
        person = expected["person_only"].get(kind)
        lines.append(f"  {kind:<16} {'-' if person is None else person:>12} {mapped[kind]:>9}")
    lines.append("  per key (missing / wrong / stale):")
    for key, entry in expected["keys"].items():
        lines.append(f"    {key:<21} {entry['missing']} / {entry['wrong']} / {entry['stale']}")
    return "\n".join(lines)


# --- the steps -------------------------------------------------------------------------


def world_name(faces: int) -> str:
    return f"svc{report.label(faces).lower()}"


def ready_world(
    root: Path, url: str, faces: int, args: argparse.Namespace
) -> service_world.ServiceWorld:
    name = world_name(faces)
    params = {"faces": faces, "rate": args.drift, "seed": args.seed, "name": name}
    world = service_world.load(root / name, url, **params)
    if world is None:
        print(f"building {name} ({faces:,} faces)...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        world = service_world.build(root / name, url, **params)
        print(
            f"  built in {time.perf_counter() - started:.0f}s {world.manifest['build_seconds']}",
            file=sys.stderr,
            flush=True,
        )
    return world


def map_in_help() -> bool:
    """Whether `reconcile audit --help` names --map (it may still fail when run)."""
    proc = subprocess.run(
        [str(RECONCILE), "audit", "--help"], capture_output=True, text=True, check=False
    )
    return "--map" in proc.stdout


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    load = os.getloadavg()
    version = report.product_version()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    root = args.root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    url, stop = start_postgres(root)
    built: dict[int, service_world.ServiceWorld] = {}
    results: dict[int, dict[str, Series]] = {}
    opened: dict[int, dict[str, int]] = {}
    try:
        for faces in sizes:
            built[faces] = ready_world(root, url, faces, args)
        print(f"worlds ready after {time.perf_counter() - started:.0f}s", file=sys.stderr)
        print(f"reconcile audit --help names --map: {map_in_help()}", file=sys.stderr)
        for faces in sizes:
            opened[faces] = open_level(built[faces])
            results[faces] = measure(built[faces], args.repeat)
    finally:
        stop()
        if not args.keep:
            if os.environ.get("RECONCILE_BENCH_DATABASE_URL"):
                for faces in sizes:
                    service_world.drop(url, world_name(faces))
            shutil.rmtree(root, ignore_errors=True)

    print()
    print(report.heading(version, load, args.drift, args.seed, str(args.repeat)))
    print()
    for faces in sizes:
        print(expected_text(built[faces]))
        print()
    print(table(sizes, results, {s: built[s].manifest["rows"] for s in sizes}, opened))
    print()
    for line in verdicts(sizes, results):
        print(line)
    print(f"\nbench took {time.perf_counter() - started:.0f}s")
    if any(series.mismatched for per in results.values() for series in per.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
