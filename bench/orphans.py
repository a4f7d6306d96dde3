"""`repair --delete-orphans` at scale (issue 14): mark, delete and undo against the audit.

    .venv/bin/python bench/orphans.py [--faces 1000000] [--orphans 0.001] [--repeat 3] [--seed 7]
                                      [--database-url URL] [--root DIR]

The world is bench/service_world.py's (the service's schema, whole payload and
payload indexes) with what the service really stores besides: a 512-dimensional
cosine vector per point (random unit vectors, numpy, in batches). It is built
with no drift (the builder still makes one face of each kind of drift, which
one plain `reconcile repair` right after the build sets right, so the world is
in sync), plus orphan points (points no row names) up to `--orphans` of the
faces: the builder's own (a deleted photo's faces, one extra point) and extra
points with the service's payload. It lives under bench/.worlds/orphans/
(`--root`), its tables in a schema of its own on the system PostgreSQL
(`--database-url`, loopback TCP), and is reused while its manifest and row
count match.

Each step is the CLI in a fresh process, as cron runs it (bench/mapped.py's
`run_process`: wall time, CPU time from wait4, peak RSS as the child's own
VmHWM sampled every 5 ms), on the same world, in this order:

0. an unmeasured `reconcile audit` (page cache, and the world's counts checked);
1. `reconcile audit --format json`: the baseline;
2. `reconcile repair --yes --delete-orphans --max-deletes 1%`: marks every orphan;
3. the marks moved back two hours (written here through qdrant_edge, as
   tests/stores/test_orphans.py's `Orphans.age` does: nobody waits for the grace),
   then the same repair: journals every orphan whole (vector and payload) and
   deletes it;
4. `reconcile undo --yes JOURNAL`: re-creates them, insert-only;

then an unmeasured audit that checks the world is as it was. Every step's JSON
counts are checked (orphans marked, deleted, restored); a difference stops the
bench with exit status 1. Marks left by an interrupted run are cleared first.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

# `python bench/orphans.py` puts bench/ on sys.path, not the repository root.
ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import qdrant_edge as edge  # noqa: E402

from bench import report, service_world  # noqa: E402
from bench.mapped import Run, audit_args, command_args, run_cli, shout  # noqa: E402
from bench.worlds import _uuids, whole_manifest, with_search_path  # noqa: E402
from reconcile.diff import batched  # noqa: E402
from reconcile.orphans import marked_at, stamp  # noqa: E402
from reconcile.settings import ORPHAN_KEY  # noqa: E402
from reconcile.stores.edge import open_edge_store  # noqa: E402

DEFAULT_ROOT = Path(__file__).resolve().parent / ".worlds" / "orphans"
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DIM = 512  # the service's embeddings
BATCH = 2_000  # points per upsert: 4 MB of vectors
BENCH_VERSION = 1
AGE = timedelta(hours=2)  # how far the marks are moved back: past the 1h grace


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=1_000_000)
    parser.add_argument("--orphans", type=float, default=0.001, help="orphan points per face")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("RECONCILE_BENCH_DATABASE_URL", DEFAULT_URL),
        help="the PostgreSQL server; the world's tables go in a schema of their own",
    )
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--repeat", type=int, default=3, help="rounds of steps 1-4 (medians)")
    return parser.parse_args()


# --- the world: 512-d vectors, the whole payload, orphans ------------------------------


def vector_store(path: Path) -> edge.EdgeShard:
    """An empty shard of 512-d cosine vectors with the service's keyword indexes.

    No optimizer runs unless asked (`shard.optimize()`, which nothing here calls),
    so the points stay in plain segments, as in the thin worlds: no HNSW graph.
    """
    params = edge.EdgeVectorParams(size=DIM, distance=edge.Distance.Cosine)
    shard = edge.EdgeShard.create(str(path), edge.EdgeConfig(vectors=params))
    for key in service_world.KEYWORD_INDEXES:
        shard.update(edge.UpdateOperation.create_field_index(key, edge.PayloadSchemaType.Keyword))
    return shard


class VectorWriter:
    """Upserts (id, payload) pairs, each with its own random unit vector, in batches."""

    def __init__(self, seed: str) -> None:
        self.rng = np.random.default_rng(list(seed.encode()))

    def __call__(self, shard: edge.EdgeShard, points: Iterator[tuple[str, dict[str, Any]]]) -> int:
        written = 0
        for chunk in batched(points, BATCH):
            vectors = self.rng.standard_normal((len(chunk), DIM), dtype=np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            batch = [
                edge.Point(pid, vector, payload)
                for (pid, payload), vector in zip(chunk, vectors.tolist(), strict=True)
            ]
            shard.update(edge.UpdateOperation.upsert_points(batch))
            written += len(batch)
        return written


def world_name(faces: int) -> str:
    return f"orph{report.label(faces).lower()}"


def wanted(args: argparse.Namespace) -> dict[str, Any]:
    """What a cached world's manifest must say to be reused."""
    return {
        "generator_version": service_world.GENERATOR_VERSION,
        "bench": f"orphans-{BENCH_VERSION}",
        "faces": args.faces,
        "drift_rate": 0.0,
        "seed": args.seed,
        "dim": DIM,
        "orphans": orphan_target(args),
    }


def orphan_payload(asset: int, point: str) -> dict[str, Any]:
    box = (0, 0, 100, 100)
    taken = "2024-01-01T00:00:00"
    return service_world._payload(asset, point, 0.9, None, box, False, None, "-1", taken, (), None)


def orphan_target(args: argparse.Namespace) -> int:
    return max(1, round(int(args.faces) * float(args.orphans)))


def add_orphans(world: service_world.ServiceWorld, count: int, seed: str) -> int:
    """`count` points with the service's payload and no row (faces deleted long ago)."""
    rng = random.Random(f"{seed}:orphans")
    ids = _uuids(rng, count)
    # As the builder's extra points: unassigned, dismissed as noise, no quality score.
    points = ((point, orphan_payload(10_000 + k, point)) for k, point in enumerate(ids))
    shard = open_edge_store(world.edge_path)
    try:
        written = VectorWriter(f"{seed}:orphan-vectors")(shard, points)
        shard.flush()
    finally:
        shard.close()
    return written


def build(directory: Path, url: str, args: argparse.Namespace) -> service_world.ServiceWorld:
    name = world_name(args.faces)
    seed = f"{args.seed}:{args.faces}"
    started = time.perf_counter()
    world = service_world.build(
        directory, url, faces=args.faces, rate=0.0, seed=args.seed, name=name,
        store=vector_store, write=VectorWriter(f"{seed}:vectors"),
    )  # fmt: skip
    built = time.perf_counter()
    person_only = world.manifest["expected"]["person_only"]
    extra = orphan_target(args) - person_only["orphan_point"]
    if extra < 0:
        raise SystemExit(f"the builder made {person_only['orphan_point']} orphans already")
    added = add_orphans(world, extra, seed)
    orphaned = time.perf_counter()
    # The builder's one face of each kind of drift, set right: the world is in sync.
    run = run_cli(repair_args(world, directory / "journals" / "cleanup.jsonl", orphans=False))
    if run.exit_code not in (0, 1):
        sys.stderr.write(run.stdout + run.stderr)
        raise SystemExit(f"the clean-up repair of {name} failed (exit {run.exit_code})")
    rows = world.manifest["rows"]
    missing = person_only["missing_point"]  # a repair does not write points
    manifest = dict(world.manifest)
    manifest.update(wanted(args))
    manifest["points"] += added
    manifest["orphan_points_added"] = added
    manifest["expected"] = {
        "person_only": {
            **dict.fromkeys(person_only, 0),
            "in_sync": rows - missing,
            "missing_point": missing,
            "orphan_point": orphan_target(args),
        }
    }
    manifest["build_seconds"] = {
        **manifest["build_seconds"],
        "orphans": round(orphaned - built, 1),
        "cleanup_repair": round(run.seconds, 1),
        "total": round(time.perf_counter() - started, 1),
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return service_world.ServiceWorld(name, directory, url, world.edge_path, args.faces, manifest)


def ready_world(root: Path, url: str, args: argparse.Namespace) -> service_world.ServiceWorld:
    name = world_name(args.faces)
    directory = root / name
    manifest = whole_manifest(directory, with_search_path(url, name), wanted(args))
    if manifest is not None:
        return service_world.ServiceWorld(
            name, directory, url, directory / "edge", args.faces, manifest
        )
    print(f"building {name} ({args.faces:,} faces, {DIM}-d vectors)...", file=sys.stderr)
    world = build(directory, url, args)
    print(f"  built: {world.manifest['build_seconds']}", file=sys.stderr, flush=True)
    return world


# --- the marks, written directly ------------------------------------------------------


def marks(shard: edge.EdgeShard) -> dict[Any, Any]:
    """Every point that holds a mark, and the mark."""
    found: dict[Any, Any] = {}
    offset = None
    while True:
        request = edge.ScrollRequest(
            offset=offset,
            limit=10_000,
            filter=edge.Filter(must_not=[edge.IsEmptyCondition(ORPHAN_KEY)]),
            with_payload=[ORPHAN_KEY],
            with_vector=False,
        )
        records, offset = shard.scroll(request)
        for record in records:
            found[record.id] = (record.payload or {}).get(ORPHAN_KEY)
        if offset is None:
            return found


def age_marks(world: service_world.ServiceWorld, by: timedelta | None) -> int:
    """Move every mark back by `by`, as if the marking run was that long ago (None:
    delete the marks, what an interrupted earlier run left). Returns how many."""
    shard = open_edge_store(world.edge_path)
    try:
        found = marks(shard)
        if by is None:
            if found:
                shard.update(edge.UpdateOperation.delete_payload(list(found), [ORPHAN_KEY]))
        else:
            moved: dict[str, list[Any]] = {}
            for point, raw in found.items():
                since = marked_at(raw)
                if since is None:
                    raise SystemExit(f"point {point} holds a mark that is no instant: {raw!r}")
                moved.setdefault(stamp(since - by), []).append(point)
            for value, points in moved.items():
                shard.update(edge.UpdateOperation.set_payload(points, {ORPHAN_KEY: value}))
        shard.flush()
    finally:
        shard.close()
    return len(found)


# --- the steps ----------------------------------------------------------------------


def repair_args(world: service_world.ServiceWorld, journal: Path, orphans: bool) -> list[str]:
    args = command_args(world, "repair", "--yes")
    args += ["--journal", str(journal), "--journal-retention", "off"]
    if orphans:
        args += ["--delete-orphans", "--orphan-grace", "1h", "--max-deletes", "1%"]
    return args


def undo_args(world: service_world.ServiceWorld, journal: Path) -> list[str]:
    return [
        "undo",
        "--yes",
        str(journal),
        "--database-url",
        world.base_url,
        "--qdrant-edge",
        str(world.edge_path),
        "--format",
        "json",
    ]


class Failed(SystemExit):
    pass


def step(what: str, argv: list[str], ok: tuple[int, ...] = (0, 1)) -> tuple[Run, dict[str, Any]]:
    """Run one fresh CLI process; its JSON report (exit status outside `ok`: stop)."""
    run = run_cli(argv)
    print(
        f"  {what:<22} {run.seconds:7.2f}s (cpu {run.cpu:6.2f}s) exit {run.exit_code} "
        f"rss {report.mib(run.max_rss)} MiB, load {os.getloadavg()[0]:.2f}",
        file=sys.stderr,
        flush=True,
    )
    if run.exit_code not in ok:
        sys.stderr.write(run.stdout[-2000:] + run.stderr[-4000:])
        raise Failed(f"{what} failed (exit {run.exit_code})")
    try:
        return run, json.loads(run.stdout)
    except ValueError:
        sys.stderr.write(run.stderr[-4000:])
        raise Failed(f"{what} printed no JSON: {run.stdout[:300]!r}") from None


def expect(what: str, found: dict[str, Any], wanted: dict[str, Any]) -> None:
    """Stop loudly if any of the `wanted` values differs in `found`."""
    differ = {k: v for k, v in wanted.items() if found.get(k) != v}
    problems = [f"{k}: found {found.get(k)!r}, expected {v!r}" for k, v in differ.items()]
    if problems:
        shout(what, problems)
        raise Failed(f"{what}: the counts differ from the world's (see *** above)")


def audit(world: service_world.ServiceWorld, what: str) -> Run:
    run, found = step(what, audit_args(world, mapped=False))
    counts = found.get("counts", {})
    expect(what, counts, world.manifest["expected"]["person_only"])
    return run


def journaled(journal: Path) -> int:
    """Points the journal recorded as deleted whole."""
    with journal.open() as lines:
        return sum(1 for line in lines if json.loads(line).get("op") == "delete")


def one_round(world: service_world.ServiceWorld, number: int) -> dict[str, Any]:
    """Steps 1-4 once; the world is as it was at the end (the orphans re-created, unmarked)."""
    target = world.manifest["orphans"]
    journals = world.directory / "journals"
    print(f"round {number}:", file=sys.stderr)
    results: dict[str, Any] = {"audit": audit(world, "1 audit")}

    journal = journals / f"run-{number}-mark.jsonl"
    run, found = step("2 repair: mark", repair_args(world, journal, True))
    expect("the marking run", found, {"orphans_marked": target, "orphans_deleted": 0})
    results["mark"] = run

    aged = age_marks(world, AGE)
    expect("the marks", {"marked points": aged}, {"marked points": target})
    journal = journals / f"run-{number}-delete.jsonl"
    run, found = step("3 repair: delete", repair_args(world, journal, True))
    expect("the deleting run", found, {"orphans_deleted": target, "orphans_failed": 0})
    expect("the journal", {"points deleted": journaled(journal)}, {"points deleted": target})
    results["delete"] = run
    results["journal_bytes"] = journal.stat().st_size

    run, found = step("4 undo", undo_args(world, journal))
    expect("the undo", found, {"restored": target, "conflicts": 0, "failed": 0})
    results["undo"] = run
    return results


def measure(world: service_world.ServiceWorld, repeat: int) -> list[dict[str, Any]]:
    """A warm-up audit, `repeat` rounds of steps 1-4, and an audit that checks the world."""
    journals = world.directory / "journals"
    journals.mkdir(exist_ok=True)
    for old in journals.glob("run-*.jsonl"):
        old.unlink()
    cleared = age_marks(world, None)
    if cleared:
        print(f"  cleared {cleared} marks an earlier run left", file=sys.stderr)
    audit(world, "audit (warm-up)")
    rounds = [one_round(world, number) for number in range(1, repeat + 1)]
    audit(world, "audit (after the undo)")
    return rounds


# --- the report ------------------------------------------------------------------------

STEPS = (
    ("audit", "1 audit (baseline)"),
    ("mark", "2 repair --delete-orphans: mark"),
    ("delete", "3 repair --delete-orphans: delete"),
    ("undo", "4 undo (re-create)"),
)


def median(rounds: list[dict[str, Any]], key: str, attr: str) -> float:
    return float(statistics.median(getattr(r[key], attr) for r in rounds))


def table(world: service_world.ServiceWorld, rounds: list[dict[str, Any]]) -> str:
    target = world.manifest["orphans"]
    out = report.Table(
        f"{report.label(world.faces)} faces, {target:,} orphan points, {DIM}-d vectors: "
        f"fresh CLI processes, median of {len(rounds)}",
        ["step", "wall s", "CPU s", "peak RSS MiB", "RssAnon MiB", "wall - audit s", "ms/orphan"],
    )
    base = median(rounds, "audit", "seconds")
    for key, title in STEPS:
        wall = median(rounds, key, "seconds")
        extra = wall - base
        compared = key in ("mark", "delete")
        out.add(
            title,
            f"{wall:.2f}",
            f"{median(rounds, key, 'cpu'):.2f}",
            report.mib(median(rounds, key, "max_rss")),
            report.mib(median(rounds, key, "rss_anon")),
            f"{extra:+.2f}" if compared else "",
            "" if key == "audit" else f"{(extra if compared else wall) / target * 1000:.2f}",
        )
    size = rounds[0]["journal_bytes"]
    lines = [
        out.text(),
        f"  journal of the deleting run: {size:,} bytes, {size / target:,.0f} bytes per point",
        "  ms/orphan: (run - audit) per orphan point for the repairs, the whole run per point",
        "  for the undo. Per round, wall and CPU over the audit's (s):",
    ]
    for number, r in enumerate(rounds, 1):
        cells = [
            f"{key} {r[key].seconds - r['audit'].seconds:+.2f} / {r[key].cpu - r['audit'].cpu:+.2f}"
            for key in ("mark", "delete")
        ]
        lines.append(f"    round {number}: audit {r['audit'].seconds:.2f}s, {', '.join(cells)}")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    load = os.getloadavg()
    version = report.product_version()
    root = args.root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    world = ready_world(root, args.database_url, args)
    print(f"world ready after {time.perf_counter() - started:.0f}s", file=sys.stderr, flush=True)
    try:
        rounds = measure(world, args.repeat)
    except Failed as failed:
        print(f"\n{failed}", file=sys.stderr)
        raise SystemExit(1) from None
    manifest = world.manifest
    print()
    print(report.heading(version, load, 0.0, args.seed, str(args.repeat)))
    print(f"database: {args.database_url} (loopback TCP)")
    print(
        f"world {world.name}: {manifest['rows']:,} rows, {manifest['points']:,} points "
        f"({manifest['orphans']:,} orphans), store {du(world.edge_path) / 2**30:.2f} GiB, "
        f"built in {manifest['build_seconds']}"
    )
    print()
    print(table(world, rounds))
    print(f"\nbench took {time.perf_counter() - started:.0f}s")


def du(path: Path) -> int:
    """Bytes on disk under `path`."""
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


if __name__ == "__main__":
    main()
