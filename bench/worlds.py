"""Benchmark worlds: a face table in PostgreSQL and a Qdrant Edge store, with known drift.

A world of N faces is built in well under a minute at 1M: PostgreSQL through one
`COPY` of pre-formatted text, Qdrant Edge through batched upserts with a tiny
shared vector (the tool never reads vectors). The drift is decided up front and
each side is written in its drifted state, so the build costs one pass per
store; every drifted face differs from the truth on exactly one side:

- PostgreSQL only: an unassigned face accepted (`missing_person`), a face moved
  to another person (`wrong_person`), a face unassigned or its person deleted
  (`stale_person`), a face row deleted (`orphan_point`);
- Qdrant only: the sentinel lost or wrong (`flag_mismatch`), the upsert lost
  (`missing_point`), a stale person left in the payload (`wrong_person`), the
  person key deleted (`missing_person`), a point whose row never existed
  (`orphan_point`, an extra point).

`duplicate_point` cannot happen here: the service's schema has UNIQUE on the
point column. The manifest (written last) records the parameters and the exact
counts an audit must find; a world is reused only while its manifest, its
store directory and its row count agree.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from reconcile.diff import Kind
from reconcile.stores.edge import create_edge_store, upsert
from reconcile.testing.world import create_schema

GENERATOR_VERSION = 2
DIM = 4
FLAG_KEY = "is_assigned"
ASSIGNED_SHARE = 0.8
FACES_PER_PERSON = 25
TARGET_IDS = 1000

# How the drift is split between kinds and sides (shares of the drifted faces).
MIX: tuple[tuple[str, str, float], ...] = (
    ("pg", "accepted", 0.25),  # missing_person
    ("pg", "moved", 0.15),  # wrong_person
    ("pg", "unassigned", 0.15),  # stale_person
    ("pg", "row_deleted", 0.05),  # orphan_point
    ("qdrant", "flag_lost", 0.15),  # flag_mismatch
    ("qdrant", "point_lost", 0.10),  # missing_point
    ("qdrant", "stale_payload", 0.05),  # wrong_person
    ("qdrant", "person_key_deleted", 0.05),  # missing_person
    ("qdrant", "extra_point", 0.05),  # orphan_point (a point, not a face)
)
KIND_OF = {
    "accepted": "missing_person",
    "moved": "wrong_person",
    "unassigned": "stale_person",
    "row_deleted": "orphan_point",
    "flag_lost": "flag_mismatch",
    "point_lost": "missing_point",
    "stale_payload": "wrong_person",
    "person_key_deleted": "missing_person",
    "extra_point": "orphan_point",
}
ALL_KINDS = tuple(kind.value for kind in Kind)
_CREATED = "2025-05-01 00:00:00+00"
_DRIFTED = "2025-05-20 00:00:00+00"


@dataclass(frozen=True)
class World:
    """A built world: where it lives and what an audit of it must find."""

    name: str
    directory: Path
    database_url: str
    edge_path: Path
    faces: int
    manifest: dict[str, Any]

    @property
    def expected(self) -> dict[str, int]:
        return dict(self.manifest["expected"])

    @property
    def target_face_ids(self) -> list[str]:
        return list(self.manifest["target_face_ids"])


def with_search_path(url: str, schema: str) -> str:
    """The URL with `search_path` set by libpq `options`, so unqualified names hit `schema`."""
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options=-csearch_path%3D{schema}"


def _uuids(rng: random.Random, count: int) -> list[str]:
    """`count` random UUIDs as canonical lower-case strings (fast: one randbytes call)."""
    raw = rng.randbytes(16 * count).hex()
    out = []
    for i in range(0, 32 * count, 32):
        h = raw[i : i + 32]
        out.append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}")
    return out


def _owners(rng: random.Random, faces: int, persons: int) -> list[int | None]:
    """~80% of faces assigned; person sizes Zipf-like (a few huge, a long tail)."""
    assigned = round(faces * ASSIGNED_SHARE)
    weights = [1.0 / rank for rank in range(1, persons + 1)]
    rng.shuffle(weights)
    owners: list[int | None] = list(range(persons))  # nobody is empty
    owners += rng.choices(range(persons), weights=weights, k=assigned - persons)
    owners += [None] * (faces - assigned)
    rng.shuffle(owners)
    return owners


def _plan_drift(
    rng: random.Random, owners: list[int | None], rate: float
) -> tuple[dict[int, str], int]:
    """Which face gets which drift (disjoint), and how many extra orphan points."""
    n = len(owners)
    total = round(n * rate)
    counts = {what: round(total * share) for _, what, share in MIX}
    extra = counts.pop("extra_point")
    order = list(range(n))
    rng.shuffle(order)
    assigned = [i for i in order if owners[i] is not None]
    unassigned = [i for i in order if owners[i] is None]
    anyone = order
    plan: dict[int, str] = {}
    pools = {
        "accepted": unassigned,
        "moved": assigned,
        "unassigned": assigned,
        "person_key_deleted": assigned,
    }
    for what, count in counts.items():
        pool = pools.get(what, anyone)
        taken = 0
        while taken < count:
            index = pool.pop()
            if index in plan:
                continue
            plan[index] = what
            taken += 1
    return plan, extra


def _persons_sql(rng: random.Random, ids: list[str]) -> bytes:
    names = ("Ana", "Ben", "Chloe", "Dev", "Eun-ji", "Farid", "Greta", "Hiro", "Ines", "Jon")
    lines = [
        f"{pid}\t{rng.choice(names)} {i}\t{_CREATED}\t{_CREATED}\n" for i, pid in enumerate(ids)
    ]
    return "".join(lines).encode()


def build(
    directory: Path, base_url: str, *, faces: int, rate: float, seed: int, name: str
) -> World:
    """Build (or rebuild) the world `name` of `faces` faces under `directory`."""
    started = time.perf_counter()
    rng = random.Random(f"{seed}:{faces}")
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    url = with_search_path(base_url, name)

    n_persons = max(4, faces // FACES_PER_PERSON)
    persons = _uuids(rng, n_persons)
    face_ids = _uuids(rng, faces)
    point_ids = _uuids(rng, faces)
    owners = _owners(rng, faces, n_persons)
    plan, extra = _plan_drift(rng, owners, rate)
    sizes = Counter(o for o in owners if o is not None)

    expected = dict.fromkeys(ALL_KINDS, 0)
    for what in plan.values():
        expected[KIND_OF[what]] += 1
    expected["orphan_point"] += extra
    expected["in_sync"] = faces - len(plan)

    # PostgreSQL: the rows as the database has them after the drift.
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    with psycopg.connect(url) as conn:
        create_schema(conn)
        with conn.transaction(), conn.cursor() as cur:
            with cur.copy("COPY persons (id, name, created_at, updated_at) FROM STDIN") as copy:
                copy.write(_persons_sql(rng, persons))
            columns = (
                "id, asset_id, bbox_x, bbox_y, bbox_w, bbox_h, detection_confidence, "
                "quality_score, qdrant_point_id, cluster_id, person_id, created_at, updated_at"
            )
            with cur.copy(f"COPY face_instances ({columns}) FROM STDIN") as copy:
                buffer: list[str] = []
                for i in range(faces):
                    what = plan.get(i)
                    if what == "row_deleted":
                        continue
                    owner = owners[i]
                    person = r"\N" if owner is None else persons[owner]
                    updated = _CREATED
                    if what in {"accepted", "moved"}:
                        other = rng.randrange(n_persons)
                        while other == owner:
                            other = rng.randrange(n_persons)
                        person, updated = persons[other], _DRIFTED
                    elif what == "unassigned":
                        person, updated = r"\N", _DRIFTED
                    buffer.append(
                        f"{face_ids[i]}\t{10_000 + i // 2}\t10\t20\t100\t100\t0.9\t0.5\t"
                        f"{point_ids[i]}\t\\N\t{person}\t{_CREATED}\t{updated}\n"
                    )
                    if len(buffer) >= 20_000:
                        copy.write("".join(buffer).encode())
                        buffer = []
                copy.write("".join(buffer).encode())
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE face_instances")
        conn.execute("VACUUM ANALYZE persons")
    pg_done = time.perf_counter()

    # Qdrant Edge: the payloads as the collection has them after the drift.
    edge_path = directory / "edge"
    edge_path.mkdir()

    def payloads() -> Any:
        for i in range(faces):
            what = plan.get(i)
            if what == "point_lost":
                continue
            owner = owners[i]
            payload: dict[str, Any] = {FLAG_KEY: owner is not None}
            if owner is not None:
                payload["person_id"] = persons[owner]
            if what == "flag_lost":
                if owner is None:
                    payload[FLAG_KEY] = True  # an unassign whose second write failed
                elif i % 2:
                    del payload[FLAG_KEY]  # the sentinel never written
                else:
                    payload[FLAG_KEY] = False  # a backfill that wrote false
            elif what == "stale_payload":
                if owner is None:  # an assignment undone in Qdrant by an old write
                    payload = {"person_id": persons[i % n_persons], FLAG_KEY: True}
                    plan[i] = "stale_payload_unassigned"
                else:
                    other = (owner + 1) % n_persons
                    payload["person_id"] = persons[other]
            elif what == "person_key_deleted":
                del payload["person_id"]  # drawn from assigned faces only
            yield point_ids[i], payload
        for point in _uuids(rng, extra):
            yield point, {FLAG_KEY: False}

    shard = create_edge_store(edge_path, DIM, keyword_keys=["person_id"])
    try:
        points = upsert(shard, payloads(), dim=DIM)
        shard.flush()
    finally:
        shard.close()
    # A stale person left in the payload of a face that has none in PostgreSQL
    # is stale_person, not wrong_person.
    for what in plan.values():
        if what == "stale_payload_unassigned":
            expected["wrong_person"] -= 1
            expected["stale_person"] += 1
    edge_done = time.perf_counter()

    in_pg = [i for i in range(faces) if plan.get(i) != "row_deleted"]
    targets = [face_ids[i] for i in random.Random(seed).sample(in_pg, TARGET_IDS)]
    manifest = {
        "generator_version": GENERATOR_VERSION,
        "name": name,
        "faces": faces,
        "rows": len(in_pg),
        "points": points,
        "persons": n_persons,
        "largest_person": max(sizes.values()),
        "persons_with_one_face": sum(1 for s in sizes.values() if s == 1),
        "drift_rate": rate,
        "seed": seed,
        "expected": expected,
        "drifted": sum(v for k, v in expected.items() if k != "in_sync"),
        "target_face_ids": targets,
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "build_seconds": {
            "postgres": round(pg_done - started, 1),
            "edge": round(edge_done - pg_done, 1),
        },
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return World(name, directory, url, edge_path, faces, manifest)


def load(
    directory: Path, base_url: str, *, faces: int, rate: float, seed: int, name: str
) -> World | None:
    """The world already under `directory`, if it was built with these parameters and is whole."""
    url = with_search_path(base_url, name)
    wanted = {
        "generator_version": GENERATOR_VERSION,
        "faces": faces,
        "drift_rate": rate,
        "seed": seed,
    }
    manifest = whole_manifest(directory, url, wanted)
    if manifest is None:
        return None
    return World(name, directory, url, directory / "edge", faces, manifest)


def whole_manifest(directory: Path, url: str, wanted: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest of the world under `directory` when it was built with the `wanted`
    parameters and both stores are whole: the edge store is there and the table at
    `url` holds the rows the manifest counted. None means "build it again"."""
    manifest_file = directory / "manifest.json"
    if not manifest_file.is_file() or not (directory / "edge" / "edge_config.json").is_file():
        return None
    try:
        manifest: dict[str, Any] = json.loads(manifest_file.read_text())
    except ValueError:
        return None
    if any(manifest.get(k) != v for k, v in wanted.items()):
        return None
    try:
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT count(*) FROM face_instances").fetchone()
    except psycopg.Error:
        return None
    if row is None or row[0] != manifest["rows"]:
        return None
    return manifest


def drop(base_url: str, name: str) -> None:
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def assigned_by_person(url: str) -> dict[str, list[str]]:
    """The naive resync's read: every assigned face's point, grouped by person, in memory."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT qdrant_point_id, person_id FROM face_instances WHERE person_id IS NOT NULL"
        ).fetchall()
    by_person: dict[str, list[str]] = defaultdict(list)
    for point, person in rows:
        by_person[str(person)].append(str(point))
    return by_person
