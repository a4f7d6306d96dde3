"""Issue 15's table: the audit as a user runs it, against its two limits, on two worlds.

    .venv/bin/python bench/speed.py [--sizes 100000,1000000] [--worlds A,B] [--repeat 3]
                                    [--repair-at 1000000] [--database-url URL] [--seed 7]

PostgreSQL is a server over loopback TCP (`--database-url`, default the system
server at 127.0.0.1:5432, or `RECONCILE_BENCH_DATABASE_URL`), a schema per
world; the Qdrant side is an Edge store. Two worlds, each at every size:

- A: bench/mapped.py's service world (uuid point ids, the service's whole
  payload and five payload indexes, 1% drift by the service's code paths),
  cached under bench/.worlds/mapped/ as bench/mapped.py caches it;
- B: the same builder with integer point ids (a bigint `qdrant_point_id`
  column, random 62-bit ids) and another drift mix (SHARES_B: more deleted
  persons, deleted photos, lost and extra points; few cluster-label changes),
  cached under bench/.worlds/speed/.

Per world and size, in the same run, interleaved: one unmeasured round, then
`--repeat` rounds, each running every variant once as a fresh process in an
order rotated per round (bench/mapped.py's `run_process`: wall, CPU from wait4,
peak VmHWM and RssAnon sampled every 5 ms); medians are reported. The variants,
each for the person only and for three mapped keys (cluster_id,
asset_id::text, face_instance_id=id):

- the raw COPY limit: every row's point, id, person (and the mapped columns)
  through psycopg's row iterator (bench/joinpath.py's child_copy; integer point
  ids loaded as int8, as the audit loads them);
- the plain scroll limit: load the store, read every record's id and payload
  with the audit's payload selector, nothing else (joinpath's child_scroll);
- `reconcile audit --qdrant-edge … --table … --flag-key is_assigned --format
  json --quiet [--map …]`;
- at the `--repair-at` sizes, on world A only: `reconcile repair --yes
  --max-changes 100% --journal TMP` (person only) of the 1% drift. A repair
  writes payloads (never PostgreSQL), so each repair runs on a fresh copy of
  the world's edge store (copied before the run, not timed); an audit of the
  last copy afterwards must find every person and flag drift set right. The
  same person-only audit also runs on a fresh copy (`audit@copy`), so that
  the repair is compared with its audit on a store in the same state. After
  each copy both stores' files are dropped from the page cache (`evict`): the
  engine leaves most of its store uncached when a process closes it, and a copy
  would otherwise hand the next run on the original a fully cached store.

Every audit's and repair's JSON counts are checked against the manifest (the
three-key counts are the five-key ones when the world has no drift on the two
keys left out, which is checked); COPY rows and scrolled points too. A
difference prints MISMATCH and the exit status is 1.

The issue's targets: audit <= 1.25 x max(COPY, scroll); peak memory 1M/100k
<= 1.25 and < 100 MB above the stores (here: above the plain scroll, which
holds the same store open); repair <= 1.3 x its audit.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# `python bench/speed.py` puts bench/ on sys.path, not the repository root.
ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench import joinpath, mapped, orphans, report, service_world  # noqa: E402

DEFAULT_ROOT = Path(__file__).resolve().parent / ".worlds" / "speed"
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
TARGET, MEMORY_TARGET, FLAT_TARGET, REPAIR_TARGET = 1.25, 100 * 2**20, 1.25, 1.3
THREE = 3  # the first three of the world's maps: cluster_id, asset_id::text, face_instance_id=id
# World B's drift mix: the same code paths as SHARES, weighted towards stale
# persons, orphans and missing points, away from payload-only (cluster label) drift.
SHARES_B = {
    "clustering_chunk": 0.03,
    "groups_merged": 0.03,
    "group_dismissed": 0.02,
    "accepted": 0.12,
    "moved": 0.08,
    "person_deleted": 0.22,
    "photos_deleted": 0.15,
    "flag_lost": 0.08,
    "point_lost": 0.17,
    "extra_point": 0.10,
}
# (variant, joinpath's child name, with the three --maps); repair is added where asked.
VARIANTS = (
    ("copy", "copy3", False),
    ("scroll", "scroll2", False),
    ("audit", "audit2", False),
    ("copy+3", "copy", True),
    ("scroll+3", "scroll", True),
    ("audit+3", "audit", True),
)
# Run on a fresh copy of the store (made untimed before each run): the repair, which
# writes payloads; the same audit, as the repair's like-for-like; the check after the last repair.
COPIED = ("repair", "audit@copy", "after")
PERSON_KINDS = ("missing_person", "wrong_person", "stale_person", "flag_mismatch")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--worlds", default="A,B")
    parser.add_argument("--repeat", type=int, default=3, help="measured rounds per world and size")
    parser.add_argument(
        "--repair-at", default="1000000", help="sizes whose world A is repaired ('' for none)"
    )
    parser.add_argument("--drift", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("RECONCILE_BENCH_DATABASE_URL", DEFAULT_URL),
        help="the PostgreSQL server; each world's tables go in a schema of their own",
    )
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="world B's cache")
    args = parser.parse_args()
    args.page, args.chunk = 1000, 10_000  # joinpath.child_argv's scroll page (the audit's)
    return args


# --- the worlds -------------------------------------------------------------------------


def ready_world(which: str, faces: int, args: argparse.Namespace) -> service_world.ServiceWorld:
    """World A (bench/mapped.py's, built there if absent) or B, reused while whole."""
    if which == "A":
        return mapped.ready_world(mapped.DEFAULT_ROOT.resolve(), args.database_url, faces, args)
    name = f"svcb{report.label(faces).lower()}"
    directory = args.root.resolve() / name
    params: dict[str, Any] = {
        "faces": faces,
        "rate": args.drift,
        "seed": args.seed,
        "name": name,
        "point_type": "bigint",
        "shares": SHARES_B,
    }
    world = service_world.load(directory, args.database_url, **params)
    if world is None:
        print(f"building {name} ({faces:,} faces, bigint ids)...", file=sys.stderr, flush=True)
        world = service_world.build(directory, args.database_url, **params)
        print(f"  built: {world.manifest['build_seconds']}", file=sys.stderr, flush=True)
    return world


def three_maps(world: service_world.ServiceWorld) -> service_world.ServiceWorld:
    """The world as the three-key runs see it: its manifest names only the first three maps."""
    manifest = {**world.manifest, "maps": world.manifest["maps"][:THREE]}
    return dataclasses.replace(world, manifest=manifest)


def expected(world: service_world.ServiceWorld, three: bool) -> dict[str, Any]:
    """What an audit must find, shaped for mapped.mismatches(…, mapped=False): the kinds
    under "person_only" and the compared keys under "keys"."""
    want = world.manifest["expected"]
    keys = [service_world.PERSON_KEY, service_world.FLAG_KEY]
    if not three:
        return {"person_only": want["person_only"], "keys": {k: want["keys"][k] for k in keys}}
    left_out = service_world.MAPPED_KEYS[THREE:]
    drifted = {k: want["keys"][k] for k in left_out if any(want["keys"][k].values())}
    if drifted:
        raise SystemExit(
            f"{world.name} has drift on {', '.join(drifted)}: the three-key counts cannot be "
            "taken from the five-key ones; rebuild the world or map all five keys"
        )
    keys += list(service_world.MAPPED_KEYS[:THREE])
    return {"person_only": want["mapped"], "keys": {k: want["keys"][k] for k in keys}}


def repaired(world: service_world.ServiceWorld) -> dict[str, int]:
    """The person-only counts after a repair: every person and flag drift set right."""
    counts = dict(world.manifest["expected"]["person_only"])
    counts["in_sync"] += sum(counts[kind] for kind in PERSON_KINDS)
    counts.update(dict.fromkeys(PERSON_KINDS, 0))
    return counts


# --- the runs -------------------------------------------------------------------------------


def argv(variant: str, world: service_world.ServiceWorld, args: argparse.Namespace) -> list[str]:
    """How to run `variant` on `world` as a fresh process."""
    child, three = next((c, t) for v, c, t in VARIANTS if v == variant)
    found = joinpath.child_argv(child, three_maps(world) if three else world, args)
    if child.startswith("copy") and world.manifest.get("point_type") == "bigint":
        spec = json.loads(found[-1])
        spec["columns"][0][1] = "int8"  # as the audit's COPY loads an integer point column
        found[-1] = json.dumps(spec)
    return found


def audit_problems(world: service_world.ServiceWorld, three: bool, found: Any) -> list[str]:
    want = expected(world, three)
    problems = mapped.mismatches(found, want, mapped=False)
    keys = found.get("keys") or {}
    problems += [f"keys lacks {k}" for k in want["keys"] if k not in keys]
    return problems


def check(variant: str, world: service_world.ServiceWorld, run: mapped.Run) -> list[str]:
    """What differs between the run's output and the world's manifest."""
    if not variant.startswith(("audit", "repair", "after")):
        child = next(c for v, c, _ in VARIANTS if v == variant)
        return joinpath.check(child, world, run)[1]
    if run.exit_code not in (0, 1):
        return [f"exit {run.exit_code}: {run.stderr.strip()[-400:]}"]
    try:
        found = json.loads(run.stdout)
    except ValueError:
        return [f"printed no JSON: {run.stdout[:200]!r} {run.stderr[-300:]!r}"]
    if variant.startswith("audit"):
        return audit_problems(world, variant == "audit+3", found)  # audit@copy: person only
    if variant == "after":
        counts = found.get("counts", {})
        want = repaired(world)
        return [
            f"{k}: found {counts.get(k)}, expected {v}"
            for k, v in want.items()
            if counts.get(k) != v
        ]
    problems = audit_problems(world, False, found.get("audit", {}))
    person = world.manifest["expected"]["person_only"]
    wanted = {
        "applied": sum(person[kind] for kind in PERSON_KINDS),
        "failed": 0,
        "complete": True,
    }
    problems += [
        f"repair {k}: found {found.get(k)!r}, expected {v!r}"
        for k, v in wanted.items()
        if found.get(k) != v
    ]
    return problems


def evict(directory: Path) -> None:
    """Drop the files under `directory` from the page cache, as the engine leaves its
    store when a process closes it (about a quarter of a 1M store stays cached).

    Without this, a run right after a copy finds the whole store cached: a 1M
    scroll then took 6.5 s instead of 11-13 s."""
    for path in directory.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)  # written pages must be clean before they can be dropped
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


class Bench:
    """The runs of one world at one size, and how many of them mismatched."""

    def __init__(self, world: service_world.ServiceWorld, args: argparse.Namespace) -> None:
        self.world, self.args = world, args
        self.runs: dict[str, list[mapped.Run]] = {}
        self.bad = 0
        self.scratch = Path(tempfile.mkdtemp(prefix=f"speed-{world.name}-"))

    def one(self, variant: str, label: str, keep: bool) -> None:
        world = self.world
        if variant in COPIED:
            # The check after the last repair reads the repair's copy.
            edge = self.scratch / ("copy" if variant == "audit@copy" else "repaired")
            if variant != "after":  # a fresh copy of the drifted store, not timed
                shutil.rmtree(edge, ignore_errors=True)
                shutil.copytree(world.edge_path, edge)
                evict(world.edge_path)  # the copy read it all into the page cache
                evict(edge)
            world = dataclasses.replace(world, edge_path=edge)
            if variant == "repair":
                journal = self.scratch / "repair.jsonl"
                journal.unlink(missing_ok=True)
                cli = [*orphans.repair_args(world, journal, False), "--max-changes", "100%"]
            else:
                cli = mapped.audit_args(world, False)
            command = [str(mapped.RECONCILE), *cli]
        else:
            command = argv(variant, world, self.args)
        run = mapped.run_process(command)
        problems = check(variant, self.world, run)
        print(
            f"  {self.world.name:>8} {label:<7} {variant:<8} {run.seconds:6.2f}s "
            f"(cpu {run.cpu:5.2f}s) exit {run.exit_code} rss {report.mib(run.max_rss)} MiB "
            f"anon {report.mib(run.rss_anon)} MiB, load {os.getloadavg()[0]:.2f}",
            file=sys.stderr,
            flush=True,
        )
        if problems:
            self.bad += 1
            mapped.shout(f"{variant} on {self.world.name}", problems)
        if keep:
            self.runs.setdefault(variant, []).append(run)

    def measure(self, repair: bool) -> None:
        names = [v for v, _, _ in VARIANTS] + ["repair", "audit@copy"] * repair
        for number in range(self.args.repeat + 1):
            shift = number % len(names)
            for name in names[shift:] + names[:shift]:
                self.one(name, "warm-up" if number == 0 else str(number), number > 0)
        if repair:
            self.one("after", "check", False)
        shutil.rmtree(self.scratch, ignore_errors=True)

    def median(self, variant: str, attr: str) -> float | None:
        runs = self.runs.get(variant)
        return float(statistics.median(getattr(r, attr) for r in runs)) if runs else None


# --- the report --------------------------------------------------------------------------


def _f(value: float | None, fmt: str = ".2f") -> str:
    return "n/a" if value is None else format(value, fmt)


def _mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:+.0f}"


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def above(bench: Bench, audit: str, scroll: str, attr: str) -> float | None:
    a, s = bench.median(audit, attr), bench.median(scroll, attr)
    return None if a is None or s is None else a - s


def table(benches: dict[tuple[str, int], Bench], sizes: list[int], worlds: list[str]) -> str:
    lines = [
        "| world | size | keys | raw COPY s | plain scroll s | audit s | ratio | "
        "RSS above scroll MiB | RssAnon above scroll MiB | RSS above, 1M/100k |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for which in worlds:
        for faces in sizes:
            bench = benches.get((which, faces))
            if bench is None:
                continue
            for suffix, keys in (("", "person only"), ("+3", "three --map")):
                copy = bench.median("copy" + suffix, "seconds")
                scroll = bench.median("scroll" + suffix, "seconds")
                audit = bench.median("audit" + suffix, "seconds")
                limit = None if copy is None or scroll is None else max(copy, scroll)
                rss = above(bench, "audit" + suffix, "scroll" + suffix, "max_rss")
                flat = ""
                small = benches.get((which, sizes[0]))
                if faces != sizes[0] and small is not None:
                    base = above(small, "audit" + suffix, "scroll" + suffix, "max_rss")
                    flat = _f(_ratio(rss, base))
                lines.append(
                    f"| {which} | {report.label(faces)} | {keys} | {_f(copy)} | {_f(scroll)} | "
                    f"{_f(audit)} | **{_f(_ratio(audit, limit))}** | {_mb(rss)} | "
                    f"{_mb(above(bench, 'audit' + suffix, 'scroll' + suffix, 'rss_anon'))} | "
                    f"{flat} |"
                )
    return "\n".join(lines)


def details(benches: dict[tuple[str, int], Bench]) -> str:
    lines = [
        "| world | size | variant | wall s | CPU s | peak RSS MiB | peak RssAnon MiB | runs (s) |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    order = [v for v, _, _ in VARIANTS] + ["repair", "audit@copy"]
    for (which, faces), bench in benches.items():
        for variant in sorted(bench.runs, key=order.index):
            runs = bench.runs[variant]
            lines.append(
                f"| {which} | {report.label(faces)} | {variant} | "
                f"{_f(bench.median(variant, 'seconds'))} | {_f(bench.median(variant, 'cpu'))} | "
                f"{_f((bench.median(variant, 'max_rss') or 0) / 2**20, '.0f')} | "
                f"{_f((bench.median(variant, 'rss_anon') or 0) / 2**20, '.0f')} | "
                f"{', '.join(f'{r.seconds:.2f}' for r in runs)} |"
            )
    return "\n".join(lines)


def verdicts(benches: dict[tuple[str, int], Bench], sizes: list[int]) -> list[str]:
    out: list[str] = []
    for (which, faces), bench in benches.items():
        name = f"{which} {report.label(faces)}"
        for suffix, keys in (("", "person only"), ("+3", "three --map")):
            copy = bench.median("copy" + suffix, "seconds")
            scroll = bench.median("scroll" + suffix, "seconds")
            ratio = _ratio(
                bench.median("audit" + suffix, "seconds"),
                None if copy is None or scroll is None else max(copy, scroll),
            )
            if ratio is not None:
                out.append(
                    f"{name} {keys}: audit {ratio:.2f} x max(limits) (target <= {TARGET}): "
                    f"{report.verdict(ratio <= TARGET)}"
                )
            rss = above(bench, "audit" + suffix, "scroll" + suffix, "max_rss")
            if rss is not None:
                out.append(
                    f"{name} {keys}: peak RSS {rss / 2**20:+.0f} MiB above the plain scroll "
                    f"(target < 100 MB): {report.verdict(rss < MEMORY_TARGET)}"
                )
            small = benches.get((which, sizes[0]))
            if small is not None and faces != sizes[0]:
                for attr in ("max_rss", "rss_anon"):
                    flat = _ratio(
                        bench.median("audit" + suffix, attr), small.median("audit" + suffix, attr)
                    )
                    if flat is not None:
                        out.append(
                            f"{name} {keys}: audit peak {attr} {report.label(faces)}/"
                            f"{report.label(sizes[0])} = {flat:.2f} (whole process; the "
                            "engine's store grows with the world)"
                        )
        for audit in ("audit", "audit@copy"):
            repair = _ratio(bench.median("repair", "seconds"), bench.median(audit, "seconds"))
            if repair is not None:
                out.append(
                    f"{name}: repair {repair:.2f} x {audit} (target <= {REPAIR_TARGET}): "
                    f"{report.verdict(repair <= REPAIR_TARGET)}"
                )
        if bench.bad:
            out.append(f"{name}: MISMATCH in {bench.bad} run(s): see the lines marked *** above")
    return out


def describe(world: service_world.ServiceWorld) -> str:
    m = world.manifest
    person = m["expected"]["person_only"]
    drift = ", ".join(
        f"{k} {v:,}" for k, v in m["expected"]["mapped"].items() if v and k != "in_sync"
    )
    return (
        f"{world.name}: {m['rows']:,} rows, {m['points']:,} points, "
        f"{m.get('point_type', 'uuid')} ids; person-only in_sync {person['in_sync']:,}; "
        f"drift (three/five keys): {drift}; store {orphans.du(world.edge_path) / 2**20:.0f} MiB"
    )


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    uptime_before = joinpath.uptime()
    load = os.getloadavg()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    worlds = [w.strip().upper() for w in args.worlds.split(",")]
    repair_at = {int(s) for s in args.repair_at.split(",") if s}
    built = {(w, faces): ready_world(w, faces, args) for faces in sizes for w in worlds}
    print(f"worlds ready after {time.perf_counter() - started:.0f}s", file=sys.stderr, flush=True)
    benches: dict[tuple[str, int], Bench] = {}
    for faces in sizes:
        for which in worlds:
            bench = Bench(built[which, faces], args)
            bench.measure(repair=which == "A" and faces in repair_at)
            benches[which, faces] = bench
    uptime_after = joinpath.uptime()

    print()
    print(report.heading(report.product_version(), load, args.drift, args.seed, str(args.repeat)))
    print(f"database: {args.database_url} (loopback TCP)")
    print(f"uptime before: {uptime_before}")
    print(f"uptime after:  {uptime_after}")
    for world in built.values():
        print(describe(world))
    print()
    print(table(benches, sizes, worlds))
    print()
    print(details(benches))
    print()
    for line in verdicts(benches, sizes):
        print(line)
    print(f"\nbench took {time.perf_counter() - started:.0f}s")
    if any(bench.bad for bench in benches.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
