"""Which way makes the full audit fastest as a fresh process (issue 15): measured, not productized.

    .venv/bin/python bench/joinpath.py [--sizes 100000,1000000] [--repeat 3] [--chunk 10000]
                                       [--root DIR] [--extras] [--profile] [--py-spy PATH]

Every variant is a fresh process, imports and store opening included, as cron
pays (bench/mapped.py's `run_process`: wall time, CPU time from wait4, peak RSS
as the child's own VmHWM sampled every 5 ms), on bench/mapped.py's service
worlds (whole payload, 1% drift; they must exist: run bench/mapped.py first,
nothing is rebuilt here). Per size, one unmeasured round, then `--repeat`
rounds; each round runs every variant once, in an order rotated per round, so
that other sessions' load falls on all of them alike. Medians are reported.

The two limits of issue 15, each for the five mapped keys and for the person only:

- raw COPY: every row's point, id, person (and the five mapped columns, as the
  audit selects them) through psycopg's row iterator with set_types, nothing else;
- plain scroll: open the edge store, read every record's id and payload with
  the audit's payload selector (person_id, is_assigned and the mapped keys),
  nothing else.

The audits:

- today's `reconcile audit --qdrant-edge … --flag-key is_assigned --format json`
  (bench/mapped.py's arguments), person-only and with the five `--map`s;
- the join prototype ("let PostgreSQL do the join"): one process scrolls the
  store; per keyset chunk of `--chunk` points it sends the chunk's ids (one
  `uuid[]` literal) and their compared keys' values (one JSON array of arrays,
  `jsonb`) as the parameters of ONE read-only query that FULL JOINs them with
  the chunk's id range of the table and returns only candidate points; that
  query runs in a thread while the main thread scrolls the next chunk (psycopg
  waits with the GIL released, so the server's C code works on the other
  core). SQL only
  filters: it keeps a point unless the payload's array is jsonb-equal to the
  array the row implies, which is never looser than the mapping's rules
  (strings and booleans compare exactly; two numbers are equal as decimals,
  which for a float column is float equality; an integer, json or jsonb column
  also needs equal text, since '5'::jsonb = '5.0'::jsonb). Each candidate is
  judged in Python by the real rules (reconcile.diff.Keys.differing and
  Keys.kind), so the counts are exactly the audit's; every run's counts are
  checked against the manifest (MISMATCH otherwise, exit 1).

`--extras`: COPY (FORMAT binary) with uuids loaded as their 16 bytes, and the
cost per point of the id forms (str(UUID), .hex, .int, .bytes) in a warm process.
`--profile`: py-spy (`--py-spy`, else `py-spy` on PATH) of one five-key audit
and one five-key join prototype at the largest size, summed per function.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

# `python bench/joinpath.py` puts bench/ on sys.path, not the repository root.
ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

TARGET = 1.25
POINT, FACE, PERSON = "qdrant_point_id", "id", "person_id"
PERSON_KEY, FLAG_KEY = "person_id", "is_assigned"
# (name, what it measures, five-key or person-only); the order of the first round.
VARIANTS = (
    ("copy", "raw COPY, 8 columns", True),
    ("copy3", "raw COPY, point/id/person", False),
    ("scroll", "plain scroll, 7 keys", True),
    ("scroll2", "plain scroll, 2 keys", False),
    ("audit", "audit, five --map", True),
    ("audit2", "audit, person only", False),
    ("join", "join prototype, five keys", True),
    ("join2", "join prototype, person only", False),
)
EXTRA_VARIANTS = (("copybin", "raw COPY binary, 8 columns, uuids as bytes", True),)


# --- the children: each runs in a fresh process --------------------------------------


def _backend_cpu(pid: int) -> float:
    """CPU seconds the server process `pid` (this child's backend) has used so far."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_copy(spec: dict[str, Any]) -> dict[str, Any]:
    """Every row through one COPY and psycopg's row iterator; nothing else."""
    import psycopg

    columns: list[list[str]] = spec["columns"]  # [sql expression, set_types name]
    binary = " (FORMAT binary)" if spec.get("binary") else ""
    select = ", ".join(expr for expr, _ in columns)
    query = f"COPY (SELECT {select} FROM {spec['table']} ORDER BY {POINT}) TO STDOUT{binary}"
    rows = 0
    with psycopg.connect(spec["url"]) as conn:
        with conn.cursor() as cur, cur.copy(query) as copy:
            copy.set_types([kind for _, kind in columns])
            for _row in copy.rows():
                rows += 1
        server = _backend_cpu(conn.info.backend_pid)
    return {"rows": rows, "server_cpu": server}


def child_scroll(spec: dict[str, Any]) -> dict[str, Any]:
    """Open the store; read every record's id and payload with the audit's selector."""
    import qdrant_edge as edge

    shard = edge.EdgeShard.load(spec["edge"])
    points = 0
    offset = None
    while True:
        request = edge.ScrollRequest(
            offset=offset, limit=spec["page"], with_payload=spec["keys"], with_vector=False
        )
        records, offset = shard.scroll(request)
        for record in records:
            # Both are converted to Python objects when read (a uuid.UUID, a dict).
            _ = record.id, record.payload
        points += len(records)
        if offset is None:
            break
    shard.close()
    return {"points": points}


def child_join(spec: dict[str, Any]) -> dict[str, Any]:
    """The join prototype: scroll here, join and filter in PostgreSQL, judge candidates here."""
    started = time.perf_counter()
    from collections import Counter
    from concurrent.futures import Future, ThreadPoolExecutor

    import psycopg
    import qdrant_edge as edge
    from psycopg.types.string import TextLoader

    from reconcile.diff import Keys, Kind
    from reconcile.mapping import parse_map, rule_for
    from reconcile.stores.base import Row

    table = spec["table"]
    maps = [parse_map(m) for m in spec["maps"]]
    conn = psycopg.connect(spec["url"], autocommit=True)
    # uuids arrive as their canonical text, as the audit reads them.
    conn.adapters.register_loader("uuid", TextLoader)
    conn.execute("SET default_transaction_read_only = on")
    types: dict[str, str] = dict(
        conn.execute(
            "SELECT attname::text, format_type(atttypid, NULL) FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
            [table],
        ).fetchall()
    )
    rules = [rule_for(m.column, types[m.column], m.text, table) for m in maps]
    keys = Keys(PERSON_KEY, FLAG_KEY, tuple((m.key, r) for m, r in zip(maps, rules, strict=True)))
    point_type = types[POINT]
    if point_type != "uuid":
        raise SystemExit(f"the prototype reads uuid point ids only, not {point_type}")

    # Each point goes as the JSON array of its compared keys' values (null: absent,
    # as Keys.differing reads a payload), and each row as the array it implies.
    # jsonb equality is never looser than the rules for these types; where it is (an
    # integer, json or jsonb column: '5'::jsonb = '5.0'::jsonb), the value's text
    # must be equal too. Arrays rather than objects: half the bytes, and PostgreSQL
    # parses and compares them in about two thirds of the time.
    names = keys.names
    values = [f"f.{PERSON}", f"f.{PERSON} IS NOT NULL"]
    strict = []
    if types[PERSON] != "uuid" and "char" not in types[PERSON] and types[PERSON] != "text":
        strict.append(f"(p.v -> 0)::text IS DISTINCT FROM to_jsonb(f.{PERSON})::text")
    for n, rule in enumerate(rules):
        values.append(f"f.m{n}")
        if rule.name in {"integer", "json", "jsonb"}:
            strict.append(f"(p.v -> {n + 2})::text IS DISTINCT FROM to_jsonb(f.m{n})::text")
    mapped = "".join(
        f", {m.column}{'::text' if m.text else ''} AS m{n}" for n, m in enumerate(maps)
    )
    expected = f"jsonb_build_array({', '.join(values)})"
    candidate = " OR ".join(
        [
            "p.o IS NULL",
            f"f.{POINT} IS NULL",
            "f.n > 1",
            f"p.v IS DISTINCT FROM {expected}",
            *strict,
        ]
    )

    def query(low: bool, high: bool) -> str:
        bounds = [f"{POINT} >= %(lo)s::uuid"] * low + [f"{POINT} < %(hi)s::uuid"] * high
        where = f"WHERE {' AND '.join(bounds)}" if bounds else ""
        # ROWS FROM zips the ids with the payloads; the window counts each point's
        # rows so that a duplicate, even one whose rows agree, comes back.
        return (
            f"SELECT p.o, coalesce(f.{POINT}, p.point), f.{FACE}, f.{PERSON}, f.n"
            f"{''.join(f', f.m{n}' for n in range(len(maps)))} "
            "FROM ROWS FROM (unnest(%(ids)s::uuid[]), jsonb_array_elements(%(payloads)s::jsonb)) "
            "WITH ORDINALITY AS p(point, v, o) "
            f"FULL JOIN (SELECT {POINT}, {FACE}, {PERSON}{mapped}, "
            f"count(*) OVER (PARTITION BY {POINT}) AS n FROM {table} {where}) f "
            f"ON f.{POINT} = p.point WHERE {candidate}"
        )

    queries = {(lo, hi): query(lo, hi) for lo in (False, True) for hi in (False, True)}
    busy = {"query": 0.0, "fallback": 0}

    def run(
        lo: str | None, hi: str | None, ids: str, payloads: str, n: int
    ) -> list[tuple[Any, ...]]:
        began = time.perf_counter()
        sql = queries[lo is not None, hi is not None]
        params = {"lo": lo, "hi": hi, "ids": ids, "payloads": payloads}
        try:
            found = conn.execute(sql, params).fetchall()
        except psycopg.DataError:
            # A string jsonb refuses (\u0000, a lone surrogate): every point of the
            # chunk becomes a candidate (an empty array equals no row's), judged in Python.
            busy["fallback"] += 1
            params["payloads"] = json.dumps([[]] * n)
            found = conn.execute(sql, params).fetchall()
        busy["query"] += time.perf_counter() - began
        return found

    counts: Counter[str] = Counter()
    per_key: dict[str, Counter[str]] = {k: Counter() for k in keys.names}
    tally = {"points": 0, "matched_candidates": 0, "candidates": 0, "fallback_chunks": 0}

    def judge(found: list[tuple[Any, ...]], payloads: list[Any]) -> None:
        """The real rules on each candidate; the points not returned are in sync."""
        tally["candidates"] += len(found)
        duplicated: set[str] = set()
        for o, point, face, person, n, *values in found:
            if face is None:
                counts[Kind.ORPHAN_POINT.value] += 1
                tally["matched_candidates"] += 1
                continue
            if n > 1:
                if point not in duplicated:
                    duplicated.add(point)
                    counts[Kind.DUPLICATE_POINT.value] += 1
                    tally["matched_candidates"] += o is not None
                continue
            if o is None:
                counts[Kind.MISSING_POINT.value] += 1
                continue
            tally["matched_candidates"] += 1
            canonical = tuple(rule.canonical(v) for rule, v in zip(rules, values, strict=True))
            row = Row(point, face, person, False, canonical)
            payload = {k: v for k, v in zip(names, payloads[o - 1], strict=True) if v is not None}
            differing = keys.differing(row, payload)
            counts[keys.kind(differing).value] += 1
            for key, sub in differing.items():
                per_key[key][sub] += 1

    pool = ThreadPoolExecutor(max_workers=1)
    without_point = pool.submit(
        lambda: conn.execute(f"SELECT count(*) FROM {table} WHERE {POINT} IS NULL").fetchone()
    )
    shard = edge.EdgeShard.load(spec["edge"])
    opened = time.perf_counter()
    in_flight: list[tuple[Future[list[tuple[Any, ...]]], list[Any]]] = []
    waited = encoded = 0.0
    ids: list[str] = []
    payloads: list[Any] = []
    low: str | None = None
    offset = None
    while True:
        request = edge.ScrollRequest(
            offset=offset, limit=spec["page"], with_payload=list(keys.names), with_vector=False
        )
        records, offset = shard.scroll(request)
        began = time.perf_counter()
        # 32 hex digits is a uuid literal PostgreSQL reads; .hex is cheaper than str().
        ids.append(",".join([r.id.hex for r in records]))  # type: ignore[union-attr]
        payloads += [tuple(map((r.payload or {}).get, names)) for r in records]
        encoded += time.perf_counter() - began
        tally["points"] += len(records)
        if len(payloads) < spec["chunk"] and offset is not None:
            continue
        high = None if offset is None else offset.hex  # type: ignore[union-attr]
        began = time.perf_counter()
        try:
            if spec.get("fallback"):  # checks the path below on a world without NaN
                raise ValueError("fallback")
            text = json.dumps(payloads, separators=(",", ":"), allow_nan=False)
        except ValueError:
            # NaN or infinity, which jsonb refuses: this chunk's every point is made
            # a candidate (an empty array equals no row's) and judged in Python.
            tally["fallback_chunks"] += 1
            text = json.dumps([[] for _ in payloads])
        if spec.get("nul"):  # checks run()'s fallback: jsonb refuses \u0000
            text = text.replace('"', '"\\u0000', 1)
        id_text = "{" + ",".join(ids) + "}"
        encoded += time.perf_counter() - began
        in_flight.append((pool.submit(run, low, high, id_text, text, len(payloads)), payloads))
        # Judge the chunk before this one: its query ran while this one was scrolled.
        if len(in_flight) > 1:
            future, held = in_flight.pop(0)
            began = time.perf_counter()
            found = future.result()
            waited += time.perf_counter() - began
            judge(found, held)
        ids, payloads, low = [], [], high
        if offset is None:
            break
    for future, held in in_flight:
        began = time.perf_counter()
        found = future.result()
        waited += time.perf_counter() - began
        judge(found, held)
    pool.shutdown()
    shard.close()
    row = without_point.result()
    server = _backend_cpu(conn.info.backend_pid)
    conn.close()
    # Every point not returned is in sync (and so is every candidate judged so).
    counts[Kind.IN_SYNC.value] += tally["points"] - tally["matched_candidates"]
    tally["fallback_chunks"] += int(busy["fallback"])
    report: dict[str, Any] = {
        "counts": {kind.value: counts[kind.value] for kind in Kind},
        "keys": {k: {s: c[s] for s in ("missing", "wrong", "stale")} for k, c in per_key.items()},
        "rows_without_point": 0 if row is None else row[0],
        "server_cpu": server,
        "timing": {
            "imports_and_open": round(opened - started, 3),
            "encode": round(encoded, 3),
            "waited_for_server": round(waited, 3),
            "server_query_wall": round(busy["query"], 3),
            "total": round(time.perf_counter() - started, 3),
        },
        **tally,
    }
    if not keys.mapped:
        report["counts"].pop(Kind.PAYLOAD_MISMATCH.value)
    return report


def child_ids(spec: dict[str, Any]) -> dict[str, Any]:
    """Per point, in a warm process: what each form of a scrolled id costs (µs)."""
    from collections.abc import Callable
    from itertools import pairwise
    from typing import cast
    from uuid import UUID

    import qdrant_edge as edge

    shard = edge.EdgeShard.load(spec["edge"])
    pages = []
    offset = None
    while True:
        request = edge.ScrollRequest(
            offset=offset, limit=spec["page"], with_payload=False, with_vector=False
        )
        records, offset = shard.scroll(request)
        pages.append(records)
        if offset is None:
            break
    shard.close()
    ids = [cast(UUID, r.id) for records in pages for r in records]
    forms: dict[str, Callable[[], object]] = {
        "record.id (a uuid.UUID built)": lambda: [r.id for records in pages for r in records],
        "str(UUID)": lambda: [str(u) for u in ids],
        "UUID.hex": lambda: [u.hex for u in ids],
        "UUID.int": lambda: [u.int for u in ids],
        "UUID.bytes": lambda: [u.bytes for u in ids],
    }
    strings = [str(u) for u in ids]
    ints = [u.int for u in ids]
    forms["compare str ids (a < b)"] = lambda: [a < b for a, b in pairwise(strings)]
    forms["compare int ids (a < b)"] = lambda: [a < b for a, b in pairwise(ints)]
    forms["int(text, 16) of a COPY'd hex"] = lambda: [int(s.replace("-", ""), 16) for s in strings]
    out: dict[str, float] = {}
    for name, form in forms.items():
        best = float("inf")
        for _ in range(3):
            began = time.perf_counter()
            form()
            best = min(best, time.perf_counter() - began)
        out[name] = round(best / len(ids) * 1e6, 3)
    return {"points": len(ids), "us_per_point": out}


CHILDREN = {
    "copy": child_copy,
    "copy3": child_copy,
    "copybin": child_copy,
    "scroll": child_scroll,
    "scroll2": child_scroll,
    "join": child_join,
    "join2": child_join,
    "ids": child_ids,
}


# --- the parent ----------------------------------------------------------------------


def parse_args() -> Any:
    import argparse

    from bench.mapped import DEFAULT_ROOT

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--repeat", type=int, default=3, help="measured rounds per size")
    parser.add_argument("--chunk", type=int, default=10_000, help="points per join query")
    parser.add_argument("--page", type=int, default=1000, help="points per scroll call")
    parser.add_argument("--drift", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--only", default="", help="comma-separated variants (default: all)")
    parser.add_argument("--extras", action="store_true", help="COPY binary, id forms")
    parser.add_argument("--profile", action="store_true", help="py-spy of audit and join")
    parser.add_argument("--py-spy", default="py-spy", help="the py-spy executable")
    return parser.parse_args()


def copy_columns(world: Any, mapped: bool, binary: bool) -> list[list[str]]:
    """The audit's COPY columns with the psycopg type each is loaded as."""
    import psycopg

    from bench.worlds import with_search_path
    from reconcile.mapping import parse_map, rule_for

    with psycopg.connect(with_search_path(world.base_url, world.name)) as conn:
        types: dict[str, str] = dict(
            conn.execute(
                "SELECT attname::text, format_type(atttypid, NULL) FROM pg_attribute "
                "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
                [world.table],
            ).fetchall()
        )
    # Binary COPY: a uuid loaded as bytea is its 16 raw bytes, no uuid.UUID built.
    uuid = "bytea" if binary else "text"
    columns = [[POINT, uuid], [FACE, uuid], [PERSON, uuid]]
    if mapped:
        for spec in world.manifest["maps"]:
            m = parse_map(spec)
            rule = rule_for(m.column, types[m.column], m.text, world.table)
            kind = uuid if types[m.column] == "uuid" and not m.text else rule.copy_type
            columns.append([m.column + ("::text" if m.text else ""), kind])
    return columns


def child_argv(name: str, world: Any, args: Any) -> list[str]:
    """How to run variant `name` on `world` as a fresh process."""
    from bench import mapped

    if name in ("audit", "audit2"):
        return [str(mapped.RECONCILE), *mapped.audit_args(world, name == "audit")]
    five = name in ("copy", "copybin", "scroll", "join", "ids")
    spec: dict[str, Any] = {
        "url": world.base_url,
        "table": world.table,
        "edge": str(world.edge_path),
        "page": args.page,
        "chunk": args.chunk,
        "keys": [PERSON_KEY, FLAG_KEY, *(k.split("=")[0] for k in world.manifest["maps"])]
        if five
        else [PERSON_KEY, FLAG_KEY],
        "maps": world.manifest["maps"] if five else [],
    }
    if name.startswith("copy"):
        spec["binary"] = name == "copybin"
        spec["columns"] = copy_columns(world, five, name == "copybin")
    return [sys.executable, str(Path(__file__).resolve()), "--child", name, json.dumps(spec)]


def check(name: str, world: Any, run: Any) -> tuple[dict[str, Any] | None, list[str]]:
    """The child's JSON output, and what differs from the manifest's expected counts."""
    from bench import mapped

    if run.exit_code not in (0, 1):
        return None, [f"exit {run.exit_code}: {run.stderr.strip()[-400:]}"]
    try:
        # The audit prints indented JSON; a child prints one line (after py-spy's, say).
        text = run.stdout.strip()
        found = json.loads(text if text.startswith("{") else text.splitlines()[-1])
    except (ValueError, IndexError):
        return None, [f"printed no JSON: {run.stdout[:200]!r} {run.stderr[-300:]!r}"]
    expected = world.manifest["expected"]
    if name.startswith(("audit", "join")):
        return found, mapped.mismatches(found, expected, name in ("audit", "join"))
    if name.startswith("copy") and found["rows"] != world.manifest["rows"]:
        return found, [f"rows: {found['rows']}, expected {world.manifest['rows']}"]
    if name.startswith("scroll") and found["points"] != world.manifest["points"]:
        return found, [f"points: {found['points']}, expected {world.manifest['points']}"]
    return found, []


def measure(world: Any, names: list[str], args: Any, results: dict[str, list[Any]]) -> int:
    """One unmeasured round, then `repeat` rounds, every variant once per round."""
    from bench import mapped, report

    bad = 0
    for number in range(args.repeat + 1):
        shift = number % len(names)
        for name in names[shift:] + names[:shift]:
            run = mapped.run_process(child_argv(name, world, args))
            found, problems = check(name, world, run)
            extra = ""
            if found is not None and "timing" in found:
                extra = f" {found['timing']} candidates {found['candidates']}"
            if found is not None and "server_cpu" in found:
                extra += f" server cpu {found['server_cpu']:.2f}s"
            print(
                f"  {report.label(world.faces):>5} {'warm-up' if number == 0 else number} "
                f"{name:<8} {run.seconds:6.2f}s (cpu {run.cpu:5.2f}s) "
                f"rss {report.mib(run.max_rss)} MiB, load {os.getloadavg()[0]:.2f}{extra}",
                file=sys.stderr,
                flush=True,
            )
            if problems:
                bad += 1
                print(f"\n*** MISMATCH: {name} on {world.name} ***", file=sys.stderr)
                for problem in problems:
                    print(f"***   {problem}", file=sys.stderr)
                print(file=sys.stderr, flush=True)
            if number > 0:
                results.setdefault(name, []).append((run, found))
    return bad


def _median(runs: list[Any], attr: str) -> float:
    import statistics

    return float(statistics.median(getattr(run, attr) for run, _ in runs))


def table(sizes: list[int], results: dict[int, dict[str, list[Any]]]) -> str:
    from bench import report

    out = report.Table(
        "Full audit as a fresh process: medians; ratio = variant / max(raw COPY, plain scroll)",
        [
            "size",
            "keys",
            "raw COPY s",
            "plain scroll s",
            "max s",
            "audit s",
            "audit ratio",
            "join s",
            "join ratio",
            "audit RSS MiB",
            "join RSS MiB",
            "scroll RSS MiB",
        ],
    )
    for faces in sizes:
        got = results[faces]
        for five, (copy, scroll, audit, join) in (
            (True, ("copy", "scroll", "audit", "join")),
            (False, ("copy3", "scroll2", "audit2", "join2")),
        ):
            if not all(name in got for name in (copy, scroll)):
                continue
            limit = max(_median(got[copy], "seconds"), _median(got[scroll], "seconds"))

            def cell(
                name: str, attr: str, fmt: str, limit: float = limit, got: Any = got
            ) -> list[str]:
                if name not in got:
                    return ["n/a"] * (2 if attr == "ratio" else 1)
                value = _median(got[name], "seconds")
                if attr == "ratio":
                    return [f"{value:.2f}", f"{value / limit:.2f}"]
                return [format(_median(got[name], attr) / 2**20, fmt)]

            out.add(
                report.label(faces),
                "five --map" if five else "person only",
                f"{_median(got[copy], 'seconds'):.2f}",
                f"{_median(got[scroll], 'seconds'):.2f}",
                f"{limit:.2f}",
                *cell(audit, "ratio", ""),
                *cell(join, "ratio", ""),
                *cell(audit, "max_rss", ".0f"),
                *cell(join, "max_rss", ".0f"),
                *cell(scroll, "max_rss", ".0f"),
            )
    return out.markdown()


def details(sizes: list[int], results: dict[int, dict[str, list[Any]]]) -> str:
    """Every variant's median wall and CPU time, and the server's CPU where known."""
    import math
    import statistics

    from bench import report

    lines = ["| size | variant | wall s | client CPU s | server CPU s | peak RSS MiB |"]
    lines.append("|---|---|---:|---:|---:|---:|")
    names = dict((n, what) for n, what, _ in VARIANTS + EXTRA_VARIANTS)
    for faces in sizes:
        for name, runs in results[faces].items():
            servers = [f["server_cpu"] for _, f in runs if f and "server_cpu" in f]
            server = statistics.median(servers) if servers else math.nan
            lines.append(
                f"| {report.label(faces)} | {names.get(name, name)} | "
                f"{_median(runs, 'seconds'):.2f} | {_median(runs, 'cpu'):.2f} | "
                f"{'' if math.isnan(server) else f'{server:.2f}'} | "
                f"{_median(runs, 'max_rss') / 2**20:.0f} |"
            )
    return "\n".join(lines)


def profile(world: Any, args: Any) -> str:
    """py-spy of one five-key audit and one five-key join prototype, per function."""
    import shutil
    import subprocess
    import tempfile
    from collections import Counter

    spy = shutil.which(args.py_spy) or (args.py_spy if Path(args.py_spy).exists() else None)
    if spy is None:
        return f"(no profile: {args.py_spy} not found; pip install py-spy, or pass --py-spy)"
    blocks = []
    for name in ("audit", "join"):
        with tempfile.TemporaryDirectory() as scratch:
            out = Path(scratch) / "stacks.txt"
            argv = [spy, "record", "--nonblocking", "-r", "200", "-f", "raw", "-o", str(out)]
            started = time.perf_counter()
            subprocess.run(
                [*argv, "--", *child_argv(name, world, args)], capture_output=True, check=True
            )
            seconds = time.perf_counter() - started
            leaf: Counter[str] = Counter()
            inclusive: Counter[str] = Counter()
            total = 0
            for line in out.read_text().splitlines():
                stack, _, count = line.rpartition(" ")
                n = int(count)
                total += n
                frames = [_short(f) for f in stack.split(";")]
                leaf[frames[-1]] += n
                for frame in set(frames):
                    inclusive[frame] += n
        block = [f"py-spy, {name}, {report_label(world)} ({seconds:.1f}s, {total} samples):"]
        block.append("  self (leaf frames):")
        block += [f"    {n / total:6.1%}  {f}" for f, n in leaf.most_common(18)]
        block.append("  inclusive:")
        block += [f"    {n / total:6.1%}  {f}" for f, n in inclusive.most_common(30)]
        blocks.append("\n".join(block))
    return "\n\n".join(blocks)


def _short(frame: str) -> str:
    """`func (path/to/file.py:123)` as `func (file.py)`: lines of one function summed."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({'/'.join(Path(path).parts[-2:])})" if path else name


def report_label(world: Any) -> str:
    from bench import report

    return str(report.label(world.faces))


def uptime() -> str:
    import subprocess

    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def main() -> None:
    from bench import mapped, report, service_world
    from bench.suite import start_postgres

    args = parse_args()
    started = time.perf_counter()
    uptime_before = uptime()
    load = os.getloadavg()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    names = [n for n, _, _ in VARIANTS + (EXTRA_VARIANTS if args.extras else ())]
    if args.only:
        names = [n for n in names if n in args.only.split(",")]
    root = args.root.resolve()
    url, stop = start_postgres(root)
    results: dict[int, dict[str, list[Any]]] = {}
    worlds: dict[int, Any] = {}
    ids: dict[int, Any] = {}
    bad = 0
    profiled = ""
    try:
        for faces in sizes:
            name = mapped.world_name(faces)
            world = service_world.load(
                root / name, url, faces=faces, rate=args.drift, seed=args.seed, name=name
            )
            if world is None:
                raise SystemExit(
                    f"no {name} world under {root}: build it with bench/mapped.py --sizes {faces}"
                )
            worlds[faces] = world
        for faces in sizes:
            results[faces] = {}
            bad += measure(worlds[faces], names, args, results[faces])
            if args.extras:
                run = mapped.run_process(child_argv("ids", worlds[faces], args))
                ids[faces] = json.loads(run.stdout.strip().splitlines()[-1])
        if args.profile:
            profiled = profile(worlds[sizes[-1]], args)
    finally:
        stop()
    uptime_after = uptime()

    print()
    print(report.heading(report.product_version(), load, args.drift, args.seed, str(args.repeat)))
    print(f"uptime before: {uptime_before}")
    print(f"uptime after:  {uptime_after}")
    print(f"join chunk {args.chunk} points, scroll page {args.page}")
    print()
    print(table(sizes, results))
    print()
    print(details(sizes, results))
    for faces, found in ids.items():
        print(f"\nid forms, {report.label(faces)} ids, warm, best of 3 (µs per point):")
        for form, us in found["us_per_point"].items():
            print(f"  {us:7.3f}  {form}")
    if profiled:
        print()
        print(profiled)
    print(f"\nbench took {time.perf_counter() - started:.0f}s")
    if bad:
        print(f"MISMATCH in {bad} run(s): see the lines marked *** above")
        raise SystemExit(1)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        print(json.dumps(CHILDREN[sys.argv[2]](json.loads(sys.argv[3]))))
    else:
        main()
