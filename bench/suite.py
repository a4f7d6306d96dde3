"""The scale suite: audit, reads, repair, targeted and sampled checks at 100k and 1M faces.

    .venv/bin/python bench/suite.py [--sizes 100000,1000000] [--drift 0.01] [--repeat 3,2]
                                    [--no-keep] [--markdown FILE] [--no-profile]

Worlds (bench/worlds.py) live under bench/.worlds/ and are reused while their
manifest and row count still match (`--no-keep` deletes them at the end). The
PostgreSQL side is an embedded server under bench/.worlds/pgdata, stopped at
the end, or `RECONCILE_BENCH_DATABASE_URL` (each world is a schema of its own
there, dropped with `--no-keep`). Qdrant is a Qdrant Edge store per world.

Every measurement runs in a fresh child process (`--child TASK`), so that one
measurement's heap growth cannot hide the next one's, and memory is measured
above the level the process holds once the edge store is open: RssAnon from
/proc/self/status sampled every few milliseconds, and the Python heap's peak
via tracemalloc in a separate, traced run. Prints numbers; asserts only that
every audit (and the bench's own prototypes) found exactly the drift the world
was built with. The profile uses py-spy when installed, else pyinstrument.

This file is the entry point only: the arguments and the order of the steps.
The tasks the children run are in bench/tasks.py (and bench/readers.py,
bench/whatif.py, bench/remote.py, bench/profiling.py), what they measure with in
bench/measure.py, how a child is started in bench/runner.py, and the tables and
verdicts in bench/report.py.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# `python bench/suite.py` (how `make bench` runs it, and how each measurement's
# child process is started) puts bench/ on sys.path, not the repository root, so
# the `bench` package would not be found: put the root on it. The processes the
# children spawn (bench.whatif, bench.remote) are given this path too.
ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench import profiling, report, runner, tasks, worlds  # noqa: E402

DEFAULT_ROOT = Path(__file__).resolve().parent / ".worlds"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--drift", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument(
        "--repeat",
        default="3,2",
        help="runs per timing, per size (medians); one number for all sizes",
    )
    parser.add_argument(
        "--keep",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep the worlds under --root for the next run (default) or delete them",
    )
    parser.add_argument("--profile", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--markdown", type=Path, help="also write the tables as Markdown here")
    parser.add_argument("--child", nargs=2, metavar=("TASK", "SPEC"), help=argparse.SUPPRESS)
    return parser.parse_args()


def start_postgres(root: Path) -> tuple[str, Callable[[], None]]:
    """The server's URL, and how to stop it (nothing to stop for an external one)."""
    external = os.environ.get("RECONCILE_BENCH_DATABASE_URL")
    if external:
        return external, lambda: None
    from reconcile.testing.embedded import start_embedded_postgres, stop_embedded_postgres

    pgdata = root / "pgdata"
    url = start_embedded_postgres(pgdata)
    return url, lambda: stop_embedded_postgres(pgdata)


def world_name(faces: int) -> str:
    return f"w{report.label(faces).lower()}"


def ready_world(root: Path, url: str, faces: int, args: argparse.Namespace) -> worlds.World:
    """The world of `faces` faces: reused if it is still whole, else built."""
    name = world_name(faces)
    params = {"faces": faces, "rate": args.drift, "seed": args.seed, "name": name}
    world = worlds.load(root / name, url, **params)
    if world is None:
        print(f"building {name} ({faces:,} faces)...", file=sys.stderr, flush=True)
        world = worlds.build(root / name, url, **params)
    return world


def world_spec(world: worlds.World, repeat: int, root: Path) -> dict[str, Any]:
    """What a child is told about the world it measures."""
    return {
        "name": report.label(world.faces),
        "database_url": world.database_url,
        "edge_path": str(world.edge_path),
        "scratch": str(world.directory / "scratch-edge"),
        "expected": world.expected,
        "rows": world.manifest["rows"],
        "points": world.manifest["points"],
        "target_face_ids": world.target_face_ids,
        "repeat": repeat,
        # Nine ways to read the table: once each at a million rows, for time.
        "repeat_reads": repeat if world.faces < 1_000_000 else 1,
        "profile_html": str(root / f"profile-{report.label(world.faces)}.html"),
    }


def remove_worlds(root: Path, url: str, sizes: list[int]) -> None:
    """`--no-keep`: the worlds' directories, and their schemas on an external server."""
    if os.environ.get("RECONCILE_BENCH_DATABASE_URL"):
        for faces in sizes:
            worlds.drop(url, world_name(faces))
    shutil.rmtree(root, ignore_errors=True)


def per_size(repeat: str, sizes: int) -> list[int]:
    """`--repeat` as one number per size: the last one given serves the larger sizes."""
    repeats = [int(r) for r in repeat.split(",")]
    return repeats + [repeats[-1]] * (sizes - len(repeats))


def measure(
    sizes: list[int], built: dict[int, worlds.World], repeats: list[int], root: Path, profile: bool
) -> tuple[dict[int, dict[str, Any]], dict[str, Any] | None]:
    """Every measured task on every world, smallest first, then the profile on the largest."""
    results: dict[int, dict[str, Any]] = {}
    profiled: dict[str, Any] | None = None
    for faces, repeat in zip(sizes, repeats, strict=True):
        spec = world_spec(built[faces], repeat, root)
        results[faces] = {task: runner.run_child(task, spec) for task in tasks.MEASURED}
        if profile and faces == sizes[-1]:
            profiled = profiling.run_profile(spec, root) | {"label": report.label(faces)}
    return results, profiled


def main() -> None:
    args = parse_args()
    if args.child:
        tasks.child(*args.child)
        return

    started = time.perf_counter()
    load = os.getloadavg()
    version = report.product_version()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    repeats = per_size(args.repeat, len(sizes))
    root = args.root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    url, stop = start_postgres(root)
    try:
        built = {faces: ready_world(root, url, faces, args) for faces in sizes}
        print(f"worlds ready after {time.perf_counter() - started:.0f}s", file=sys.stderr)
        results, profile = measure(sizes, built, repeats, root, args.profile)
    finally:
        stop()
        if not args.keep:
            remove_worlds(root, url, sizes)

    sections = report.tables(sizes, results, built)
    blocks = [report.targets_text(sizes, results)]
    if profile is not None:
        blocks.append(profiling.profile_text(profile))
    print()
    print(report.heading(version, load, args.drift, args.seed, args.repeat))
    for block in [*(table.text() for table in sections), *blocks]:
        print()
        print(block)
    print(f"\nsuite took {time.perf_counter() - started:.0f}s")
    if args.markdown:
        args.markdown.write_text(report.markdown(version, load, sections, blocks))


if __name__ == "__main__":
    main()
