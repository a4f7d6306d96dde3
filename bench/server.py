"""Issue 15's server shape: the audit when the points come from another process, and what
qdrant-client's own parsing of a server's answers would add.

    .venv/bin/python bench/server.py [--sizes 100000,1000000] [--repeat 3] [--page 1000]
                                     [--database-url URL] [--no-parsing]

No Qdrant server binary exists here, so the points come from bench/remote.py's
stand-in: a spawned process holding the Qdrant Edge store answers one scroll page
per request (`RemoteEdge`), after a simulated round trip of 0 or 2 ms per page
(`REMOTE_LATENCIES`). The worlds are bench/mapped.py's world A (uuid ids, the
service's whole payload, 1% drift), cached under bench/.worlds/mapped/ as
bench/speed.py finds them; nothing is built here (run bench/mapped.py first).
PostgreSQL is a server over loopback TCP (`--database-url`, default
`RECONCILE_BENCH_DATABASE_URL` or the system server at 127.0.0.1:5432).

Every run is a fresh process (bench/mapped.py's `run_process`: wall, CPU from
wait4), one of:

- `stream`: every page of the stand-in's point stream, person_id and
  is_assigned selected, nothing else;
- `audit`: `reconcile.ops.audit.audit` with the RemoteEdge store and settings
  that name a Qdrant server (`qdrant_url`, never contacted: the store is given),
  so the product reads ahead as it does against a server; person + `--flag-key
  is_assigned`. Its counts and per-key counts are checked against the manifest.

Inside each run the stand-in is started and warmed first (one untimed pass over
the store, as a long-running server has its store mapped in), then the stream or
the audit alone is timed; that time is the one reported. Per size: one
unmeasured round, then `--repeat` rounds, each running every variant once in an
order rotated per round; medians. Then bench/parsing.py runs once (qdrant-client's
per-point parse cost over REST and gRPC) and its table is printed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# `python bench/server.py` puts bench/ on sys.path, not the repository root; the
# stand-in process RemoteEdge spawns is given this path too.
ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench import mapped, report, runner, service_world  # noqa: E402
from bench.measure import drain, timed  # noqa: E402
from bench.remote import REMOTE_LATENCIES, RemoteEdge  # noqa: E402
from bench.speed import DEFAULT_URL  # noqa: E402

PARSING = Path(__file__).resolve().parent / "parsing.py"
TASKS = ("stream", "audit")
DRIFT, SEED = 0.01, 7  # world A as bench/mapped.py and bench/speed.py build it by default
VARIANTS = tuple((task, latency) for task in TASKS for latency in REMOTE_LATENCIES)


# --- the children: each runs in a fresh process ---------------------------------------


def server_settings(spec: dict[str, Any]) -> Any:
    """The product's settings as against a Qdrant server, person + flag."""
    from reconcile.settings import Settings

    return Settings(
        database_url=spec["database_url"],
        table=spec["table"],
        qdrant_url="http://remote-edge.invalid:6333",  # never contacted: the store is given
        flag_key=service_world.FLAG_KEY,
        page_size=spec["page"],
    )


def child(task: str, spec: dict[str, Any]) -> dict[str, Any]:
    """One stream or one audit against a warmed stand-in; its time and what it found."""
    from reconcile.ops.audit import audit
    from reconcile.stores import Stores
    from reconcile.stores.postgres import Postgres

    settings = server_settings(spec)
    remote, started = timed(
        lambda: RemoteEdge(spec["edge_path"], list(settings.keys), spec["latency"], spec["page"])
    )
    try:
        _, warm = timed(lambda: drain(remote.points()))  # a server has its store mapped in
        if task == "stream":
            points, seconds = timed(lambda: drain(remote.points()))
            return {"seconds": seconds, "points": points, "start": started, "warm": warm}
        postgres = Postgres(settings)
        try:
            with Stores(settings, postgres, remote) as stores:
                found, seconds = timed(lambda: audit(settings, stores=stores))
        finally:
            postgres.close()
    finally:
        remote.close()
    out = found.to_json()
    return {
        "seconds": seconds,
        "counts": out["counts"],
        "keys": out["keys"],
        "points": found.points,
        "start": started,
        "warm": warm,
    }


# --- the parent ------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--repeat", type=int, default=3, help="measured rounds per size")
    parser.add_argument("--page", type=int, default=1000, help="points per request")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("RECONCILE_BENCH_DATABASE_URL", DEFAULT_URL),
    )
    parser.add_argument(
        "--parsing", action=argparse.BooleanOptionalAction, default=True, help="run parsing.py"
    )
    parser.add_argument("--child", nargs=2, metavar=("TASK", "SPEC"), help=argparse.SUPPRESS)
    return parser.parse_args()


def world_a(faces: int, args: argparse.Namespace) -> service_world.ServiceWorld:
    """bench/mapped.py's cached world A of `faces` faces (as bench/speed.py uses it)."""
    name = mapped.world_name(faces)
    world = service_world.load(
        mapped.DEFAULT_ROOT.resolve() / name,
        args.database_url,
        faces=faces,
        rate=DRIFT,
        seed=SEED,
        name=name,
    )
    if world is None:
        raise SystemExit(
            f"world {name} is not cached under {mapped.DEFAULT_ROOT}: "
            f"build it with bench/mapped.py --sizes {faces}"
        )
    return world


def argv(task: str, latency: float, world: service_world.ServiceWorld, page: int) -> list[str]:
    spec = {
        "database_url": world.base_url,
        "table": world.table,
        "edge_path": str(world.edge_path),
        "latency": latency,
        "page": page,
    }
    return [sys.executable, str(Path(__file__).resolve()), "--child", task, json.dumps(spec)]


def problems(task: str, world: service_world.ServiceWorld, found: dict[str, Any]) -> list[str]:
    if task == "stream":
        want = world.manifest["points"]
        return [] if found["points"] == want else [f"points {found['points']}, expected {want}"]
    return mapped.mismatches(found, world.manifest["expected"], mapped=False)


def measure(
    world: service_world.ServiceWorld, args: argparse.Namespace
) -> tuple[dict[tuple[str, float], list[dict[str, Any]]], int]:
    """One unmeasured round, then `repeat` rounds, every variant once per round."""
    runs: dict[tuple[str, float], list[dict[str, Any]]] = {}
    bad = 0
    for number in range(args.repeat + 1):
        shift = number % len(VARIANTS)
        for task, latency in VARIANTS[shift:] + VARIANTS[:shift]:
            run = mapped.run_process(argv(task, latency, world, args.page))
            found = runner.last_result(run.stdout)
            wrong = [f"exit {run.exit_code}: {run.stderr.strip()[-400:]}"]
            if run.exit_code == 0 and found is not None:
                wrong = problems(task, world, found)
            what = f"{task} {latency * 1000:.0f} ms"
            inner = "n/a" if found is None else f"{found['seconds']:.2f}s"
            print(
                f"  {report.label(world.faces):>5} {'warm-up' if number == 0 else number} "
                f"{what:<12} {inner} (process {run.seconds:.2f}s, cpu {run.cpu:.2f}s), "
                f"load {os.getloadavg()[0]:.2f}",
                file=sys.stderr,
                flush=True,
            )
            if wrong:
                bad += 1
                mapped.shout(f"{what} on {world.name}", wrong)
            elif number > 0 and found is not None:
                found |= {"process": run.seconds, "cpu": run.cpu}
                runs.setdefault((task, latency), []).append(found)
    return runs, bad


def median(runs: list[dict[str, Any]] | None, key: str) -> float | None:
    return statistics.median(r[key] for r in runs) if runs else None


def _s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def table(results: dict[int, dict[tuple[str, float], list[dict[str, Any]]]], page: int) -> str:
    lines = [
        "| size | round trip | pages | stream s | audit s | audit / stream | audit - stream s "
        "| audit process s (CPU s) | stream runs | audit runs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for faces, runs in results.items():
        for latency in REMOTE_LATENCIES:
            stream, audit = runs.get(("stream", latency)), runs.get(("audit", latency))
            s, a = median(stream, "seconds"), median(audit, "seconds")
            pages = math.ceil(stream[0]["points"] / page) if stream else 0
            lines.append(
                f"| {report.label(faces)} | {latency * 1000:.0f} ms | {pages:,} | {_s(s)} | "
                f"{_s(a)} | **{report.ratio(a, s)}** | "
                f"{_s(None if a is None or s is None else a - s)} | "
                f"{_s(median(audit, 'process'))} ({_s(median(audit, 'cpu'))}) | "
                f"{', '.join(_s(r['seconds']) for r in stream or [])} | "
                f"{', '.join(_s(r['seconds']) for r in audit or [])} |"
            )
    return "\n".join(lines)


def parsing_table() -> str:
    proc = subprocess.run(
        [sys.executable, str(PARSING)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        return f"bench/parsing.py failed (exit {proc.returncode}): {proc.stderr.strip()[-400:]}"
    return proc.stdout.strip()


def main() -> None:
    args = parse_args()
    if args.child:
        result = child(args.child[0], json.loads(args.child[1]))
        print(runner.RESULT + json.dumps(result), flush=True)
        return
    started = time.perf_counter()
    load = os.getloadavg()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    worlds = {faces: world_a(faces, args) for faces in sizes}
    results, bad = {}, 0
    for faces in sizes:
        results[faces], wrong = measure(worlds[faces], args)
        bad += wrong
    print()
    print(report.heading(report.product_version(), load, DRIFT, SEED, str(args.repeat)))
    print(f"database: {args.database_url} (loopback TCP); {args.page} points per request")
    for faces in sizes:
        m = worlds[faces].manifest
        print(f"{worlds[faces].name}: {m['rows']:,} rows, {m['points']:,} points")
    print()
    print(table(results, args.page))
    if args.parsing:
        print()
        print(parsing_table())
    print(f"\nbench took {time.perf_counter() - started:.0f}s")
    if bad:
        raise SystemExit(f"{bad} run(s) failed or mismatched: see the lines marked *** above")


if __name__ == "__main__":
    main()
