"""A benchmark world in the service's exact shape, with the service's whole payload.

`bench/worlds.py` writes only `person_id` and `is_assigned` into the payloads;
this world writes every key the image-search service writes
(/work/shared/service-schema.md): `asset_id` as `str(int)`, `face_instance_id`,
`detection_confidence`, `quality_score` (absent when NULL), `bbox`,
`is_prototype`, `is_assigned`, `person_id` and `cluster_id` (absent when NULL)
and `taken_at`. The engine's cost of selecting a few keys grows with what the
payload holds, so a benchmark of `--map` needs the whole payload.

Faces sit in photos of one to five faces; 80% are assigned (Zipf-like person
sizes, cluster_id NULL); the unassigned ones are in `unknown_K` groups
(Zipf-like sizes), dismissed as noise (`-1`) or not clustered yet (NULL).

The drift (`rate` of the faces) is made by the service's own code paths,
replayed on the two sides' states in the order they would run:

- PostgreSQL only: the clustering job's chunk (labels where the payload has
  none), two unknown groups merged (`SET cluster_id = A WHERE cluster_id = B
  AND person_id IS NULL`), a group dismissed as noise (`SET cluster_id = '-1'`),
  suggestions accepted in bulk, faces moved to another person, a person deleted
  (`ON DELETE SET NULL`), photos deleted with their faces (orphan points);
- Qdrant only: the sentinel lost or wrong, points lost, points left from faces
  that no longer exist (orphan points).

Some accepted suggestions and some lost sentinels deliberately fall on faces
whose cluster label drifted too, so that the kinds' precedence is exercised.
The expected counts are not bookkeeping of what was injected: an oracle in this
module compares each row and payload exactly as they are written, per kind
(with and without the mapped keys) and per key. `duplicate_point` cannot happen:
the schema has UNIQUE on the point column. Deterministic from the seed.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import qdrant_edge as edge
from psycopg import sql

from bench.worlds import _uuids, drop, whole_manifest, with_search_path
from reconcile.stores.edge import create_edge_store, upsert
from reconcile.testing.world import create_schema

GENERATOR_VERSION = 1
DIM = 4
FLAG_KEY = "is_assigned"
PERSON_KEY = "person_id"
FACES_PER_PERSON = 25
ASSIGNED_SHARE = 0.8
PAYLOAD_MISMATCH = "payload_mismatch"
# The five mapped keys of the benchmark, as `--map KEY=COLUMN[::text]`.
MAPS: tuple[tuple[str, str], ...] = (
    ("cluster_id", "cluster_id"),
    ("asset_id", "asset_id::text"),
    ("face_instance_id", "id"),
    ("detection_confidence", "detection_confidence"),
    ("quality_score", "quality_score"),
)
MAPPED_KEYS = tuple(key for key, _ in MAPS)
COMPARED_KEYS = (PERSON_KEY, FLAG_KEY, *MAPPED_KEYS)
# The drift kinds with mapping (issue 13), spelled here rather than taken from
# reconcile.diff so that the expected counts do not follow the product's code.
KINDS = (
    "in_sync",
    "missing_person",
    "wrong_person",
    "stale_person",
    "flag_mismatch",
    PAYLOAD_MISMATCH,
    "missing_point",
    "orphan_point",
    "duplicate_point",
)

# The service's payload indexes; asset_id is a string in the payload, so keyword.
KEYWORD_INDEXES = ("person_id", "cluster_id", "asset_id", "face_instance_id")
BOOL_INDEXES = ("is_prototype",)

# Shares of the drifted faces per code path (the whole-group ones are the
# closest group size to their share).
SHARES = {
    "clustering_chunk": 0.12,
    "groups_merged": 0.14,
    "group_dismissed": 0.08,
    "accepted": 0.18,
    "moved": 0.07,
    "person_deleted": 0.10,
    "photos_deleted": 0.04,
    "flag_lost": 0.10,
    "point_lost": 0.07,
    "extra_point": 0.02,
}
# Share of the accepted suggestions and lost sentinels taken from faces whose
# cluster label drifted: a person or flag kind must win over payload_mismatch.
OVERLAP = 0.05

NULL = r"\N"  # COPY's text form of NULL
_CREATED = "2025-05-01 00:00:00+00"
_DRIFTED = "2025-05-20 00:00:00+00"
_REFERENCE = datetime(2025, 6, 1)


@dataclass(frozen=True)
class ServiceWorld:
    """A built world: where it lives and what audits of it must find."""

    name: str
    directory: Path
    base_url: str  # the server; the tables are in schema `name`
    edge_path: Path
    faces: int
    manifest: dict[str, Any]

    @property
    def table(self) -> str:
        return f"{self.name}.face_instances"


@dataclass
class _State:
    """Both sides' drifted values, one entry per face (index), as written."""

    pg_person: list[int | None]
    q_person: list[int | None]
    pg_cluster: list[str | None]
    q_cluster: list[str | None]
    flag: dict[int, str]  # face -> "absent" | "true" | "false": the sentinel as written
    row_gone: set[int]
    point_gone: set[int]
    updated: set[int]  # rows the application's ORM stamped (updated_at)


# --- the truth -------------------------------------------------------------------


def _zipf_choices(rng: random.Random, groups: int, k: int) -> list[int]:
    """`k` draws of 0..groups-1, sizes Zipf-like (a few huge, a long tail), none empty."""
    weights = [1.0 / rank for rank in range(1, groups + 1)]
    rng.shuffle(weights)
    drawn = list(range(groups)) + rng.choices(range(groups), weights=weights, k=k - groups)
    rng.shuffle(drawn)
    return drawn


def _truth(
    rng: random.Random, faces: int, persons: int
) -> tuple[list[int | None], list[str | None], int]:
    """Who each face belongs to and its cluster label; and how many unknown groups."""
    assigned = round(faces * ASSIGNED_SHARE)
    owners: list[int | None] = list(_zipf_choices(rng, persons, assigned))
    owners += [None] * (faces - assigned)
    rng.shuffle(owners)
    unassigned = [i for i, o in enumerate(owners) if o is None]
    clustered = round(len(unassigned) * 0.75)
    noise = round(len(unassigned) * 0.08)
    groups = max(2, clustered // 12)
    labels: list[str | None] = [None] * faces
    for i, group in zip(unassigned, _zipf_choices(rng, groups, clustered), strict=False):
        labels[i] = f"unknown_{group}"
    for i in unassigned[clustered : clustered + noise]:
        labels[i] = "-1"
    return owners, labels, groups


def _assets(rng: random.Random, faces: int) -> tuple[list[int], list[str]]:
    """Each face's photo (ids ascending, one to five faces each) and its taken_at."""
    asset_of: list[int] = []
    taken_of: list[str] = []
    asset = rng.randrange(10_000, 90_000)
    while len(asset_of) < faces:
        asset += rng.randrange(1, 4)
        size = rng.choices((1, 2, 3, 4, 5), weights=(55, 25, 12, 5, 3))[0]
        taken = _REFERENCE - timedelta(days=40, seconds=rng.randrange(5 * 365 * 86400))
        text = taken.isoformat()
        asset_of += [asset] * size
        taken_of += [text] * size
    return asset_of[:faces], taken_of[:faces]


def _closest(sizes: Counter[Any], target: int, exclude: set[Any]) -> Any:
    """The group whose size is closest to `target` (ties: the smallest key, for determinism)."""
    return min(
        (g for g in sizes if g not in exclude), key=lambda g: (abs(sizes[g] - target), str(g))
    )


# --- the drift -------------------------------------------------------------------


def _drift(
    rng: random.Random,
    owners: list[int | None],
    labels: list[str | None],
    asset_of: list[int],
    n_persons: int,
    groups: int,
    rate: float,
    shares: Mapping[str, float] = SHARES,
) -> tuple[_State, dict[str, int], int, int | None]:
    """Replay the service's bugs.

    Returns both sides' state, the faces each code path changed, the number of
    extra (orphan) points and the deleted person.
    """
    n = len(owners)
    budget = {what: max(1, round(n * rate * share)) for what, share in shares.items()}
    state = _State(
        pg_person=list(owners),
        q_person=list(owners),
        pg_cluster=list(labels),
        q_cluster=list(labels),
        flag={},
        row_gone=set(),
        point_gone=set(),
        updated=set(),
    )
    events: dict[str, int] = {}
    touched: set[int] = set()  # faces a single-face event already took

    def pick(pool: Sequence[int], count: int, what: str) -> list[int]:
        chosen = [i for i in pool if i not in touched][:count]
        if len(chosen) < count:
            raise ValueError(f"too few faces for {count} {what}: use more faces")
        touched.update(chosen)
        return chosen

    order = list(range(n))
    rng.shuffle(order)

    # The clustering job: a chunk of labels for faces not clustered yet, written
    # in PostgreSQL; the payload write of that chunk never happened.
    unclustered = [i for i in order if owners[i] is None and labels[i] is None]
    chunk = pick(unclustered, budget["clustering_chunk"], "clustering_chunk")
    for k, i in enumerate(sorted(chunk)):
        state.pg_cluster[i] = f"unknown_{groups + k // 10}"
        state.updated.add(i)
    events["clustering_chunk"] = len(chunk)

    # Two unknown groups merged in the database only: every unassigned face of B gets A.
    sizes = Counter(c for c in state.pg_cluster if c is not None and c != "-1")
    group_b = _closest(sizes, budget["groups_merged"], set())
    group_a = _closest(sizes, budget["groups_merged"] * 3, {group_b})
    merged = [i for i in range(n) if state.pg_cluster[i] == group_b and state.pg_person[i] is None]
    for i in merged:
        state.pg_cluster[i] = group_a
        state.updated.add(i)
    events["groups_merged"] = len(merged)

    # A group dismissed as noise, in the database only.
    group_c = _closest(sizes, budget["group_dismissed"], {group_a, group_b})
    dismissed = [i for i in range(n) if state.pg_cluster[i] == group_c]
    for i in dismissed:
        state.pg_cluster[i] = "-1"
        state.updated.add(i)
    events["group_dismissed"] = len(dismissed)
    relabelled = sorted(set(chunk) | set(merged) | set(dismissed))
    rng.shuffle(relabelled)
    touched.update(relabelled)  # only the overlap picks below may take them again

    # Suggestions accepted in bulk for three persons: person_id committed, Qdrant never told.
    targets = rng.sample(range(n_persons), min(3, n_persons))
    unassigned = [i for i in order if owners[i] is None]
    on_relabelled = max(1, round(budget["accepted"] * OVERLAP))
    accepted = [i for i in relabelled if owners[i] is None][:on_relabelled]
    accepted += pick(unassigned, budget["accepted"] - len(accepted), "accepted")
    touched.update(accepted)
    for i in accepted:
        state.pg_person[i] = rng.choice(targets)
        state.updated.add(i)
    events["accepted"] = len(accepted)

    # Faces moved to another person in the database only.
    assigned = [i for i in order if owners[i] is not None]
    for i in pick(assigned, budget["moved"], "moved"):
        other = rng.randrange(n_persons)
        while other == owners[i]:
            other = rng.randrange(n_persons)
        state.pg_person[i] = other
        state.updated.add(i)
    events["moved"] = budget["moved"]

    # A person deleted: ON DELETE SET NULL clears its faces without touching updated_at.
    person_sizes = Counter(p for p in state.pg_person if p is not None)
    deleted_person: int | None = _closest(person_sizes, budget["person_deleted"], set(targets))
    cleared = [i for i in range(n) if state.pg_person[i] == deleted_person]
    for i in cleared:
        state.pg_person[i] = None
    touched.update(cleared)
    events["person_deleted"] = len(cleared)

    # Photos deleted with their faces (ON DELETE CASCADE), their points left behind.
    faces_of: dict[int, list[int]] = {}
    for i, asset in enumerate(asset_of):
        faces_of.setdefault(asset, []).append(i)
    photos = sorted(faces_of)
    rng.shuffle(photos)
    for asset in photos:
        if len(state.row_gone) >= budget["photos_deleted"]:
            break
        members = faces_of[asset]
        if not touched.intersection(members):
            state.row_gone.update(members)
            touched.update(members)
    events["photos_deleted"] = len(state.row_gone)

    # Qdrant only: sentinels lost or wrong (some on relabelled faces), points lost.
    on_relabelled = max(1, round(budget["flag_lost"] * OVERLAP))
    flagged = [i for i in relabelled if i not in accepted][:on_relabelled]
    flagged += pick(order, budget["flag_lost"] - len(flagged), "flag_lost")
    touched.update(flagged)
    for k, i in enumerate(flagged):
        if state.q_person[i] is None:
            state.flag[i] = "true"  # an unassign whose second write failed
        else:
            state.flag[i] = "absent" if k % 2 else "false"  # never written; a backfill
    events["flag_lost"] = len(flagged)
    state.point_gone.update(pick(order, budget["point_lost"], "point_lost"))
    events["point_lost"] = budget["point_lost"]
    events["extra_point"] = budget["extra_point"]
    return state, events, budget["extra_point"], deleted_person


# --- the oracle ------------------------------------------------------------------


class Oracle:
    """Counts what an audit must find, from each row and payload exactly as written."""

    def __init__(self) -> None:
        self.person_only: Counter[str] = Counter()
        self.mapped: Counter[str] = Counter()
        self.keys: dict[str, Counter[str]] = {key: Counter() for key in COMPARED_KEYS}

    def point_only(self) -> None:
        self.person_only["orphan_point"] += 1
        self.mapped["orphan_point"] += 1

    def row_only(self) -> None:
        self.person_only["missing_point"] += 1
        self.mapped["missing_point"] += 1

    def both(self, expected: dict[str, Any], payload: dict[str, Any]) -> None:
        """One point named by one row: `expected` holds each compared key's canonical value."""
        differs: dict[str, str] = {}
        for key in COMPARED_KEYS:
            want, got = expected[key], payload.get(key)
            if want is None and got is None:
                continue
            if got is None:
                differs[key] = "missing"
            elif want is None:
                differs[key] = "stale"
            elif type(got) is not type(want) or got != want:
                differs[key] = "wrong"
            else:
                continue
            self.keys[key][differs[key]] += 1
        person = differs.get(PERSON_KEY)
        if person is not None:
            kind = f"{person}_person"
        elif FLAG_KEY in differs:
            kind = "flag_mismatch"
        else:
            kind = "in_sync"
        self.person_only[kind] += 1
        if kind == "in_sync" and differs:
            kind = PAYLOAD_MISMATCH
        self.mapped[kind] += 1

    def expected(self) -> dict[str, Any]:
        def full(counts: Counter[str], kinds: Sequence[str]) -> dict[str, int]:
            return {kind: counts[kind] for kind in kinds}

        person_kinds = [k for k in KINDS if k != PAYLOAD_MISMATCH]
        return {
            "person_only": full(self.person_only, person_kinds),
            "mapped": full(self.mapped, KINDS),
            "keys": {k: full(c, ("missing", "wrong", "stale")) for k, c in self.keys.items()},
        }


# --- the build -------------------------------------------------------------------


def _persons_copy(ids: Sequence[str], gone: int | None) -> bytes:
    names = ("Ana", "Ben", "Chloe", "Dev", "Eun-ji", "Farid", "Greta", "Hiro", "Ines", "Jon")
    return "".join(
        f"{pid}\t{names[i % len(names)]} {i}\t{_CREATED}\t{_CREATED}\n"
        for i, pid in enumerate(ids)
        if i != gone
    ).encode()


def _thin_store(path: Path) -> edge.EdgeShard:
    return create_edge_store(path, DIM, keyword_keys=KEYWORD_INDEXES)


def _thin_write(shard: edge.EdgeShard, points: Iterator[tuple[str, dict[str, Any]]]) -> int:
    return upsert(shard, points, dim=DIM)


def build(
    directory: Path,
    base_url: str,
    *,
    faces: int,
    rate: float,
    seed: int,
    name: str,
    store: Callable[[Path], edge.EdgeShard] = _thin_store,
    write: Callable[[edge.EdgeShard, Iterator[tuple[Any, dict[str, Any]]]], int] = _thin_write,
    point_type: str = "uuid",
    shares: Mapping[str, float] | None = None,
) -> ServiceWorld:
    """Build (or rebuild) the world `name` of `faces` faces under `directory`.

    `store` creates the empty edge store (with the service's keyword indexes) and
    `write` upserts the (id, payload) pairs into it: by default one shared tiny
    vector, since the audit never reads vectors (bench/orphans.py writes 512-d ones).
    `point_type` "bigint" makes the point ids random positive 62-bit integers (a
    bigint `qdrant_point_id` column, integer Qdrant ids); `shares` replaces
    SHARES, the drift mix (same keys). Both are recorded in the manifest when
    not the defaults, and `load` must be given them to reuse such a world.
    """
    started = time.perf_counter()
    variant = _variant(point_type, shares)  # checks them before anything is written
    rng = random.Random(f"{seed}:{faces}:service")
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)

    n_persons = max(4, faces // FACES_PER_PERSON)
    persons = _uuids(rng, n_persons)
    face_ids = _uuids(rng, faces)
    point_ids: Sequence[Any] = (
        _uuids(rng, faces) if point_type == "uuid" else _integer_ids(rng, faces, point_type)
    )
    owners, labels, groups = _truth(rng, faces, n_persons)
    asset_of, taken_of = _assets(rng, faces)
    state, events, extra, deleted_person = _drift(
        rng, owners, labels, asset_of, n_persons, groups, rate, SHARES if shares is None else shares
    )
    # Attributes no code path changes come from a generator of their own, drawn
    # while writing, so they need no memory per face.
    attrs = random.Random(f"{seed}:{faces}:attributes")
    oracle = Oracle()
    planned = time.perf_counter()

    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    url = with_search_path(base_url, name)
    edge_path = directory / "edge"
    edge_path.mkdir()
    shard = store(edge_path)
    seen: set[int] = set()  # persons whose first face (the prototype) was written

    with psycopg.connect(url) as conn:
        create_schema(conn, point_type)
        with conn.transaction(), conn.cursor() as cur:
            with cur.copy("COPY persons (id, name, created_at, updated_at) FROM STDIN") as copy:
                copy.write(_persons_copy(persons, deleted_person))
            columns = (
                "id, asset_id, bbox_x, bbox_y, bbox_w, bbox_h, detection_confidence, "
                "quality_score, qdrant_point_id, cluster_id, person_id, created_at, updated_at"
            )
            with cur.copy(f"COPY face_instances ({columns}) FROM STDIN") as copy:
                buffer: list[str] = []

                def points() -> Iterator[tuple[Any, dict[str, Any]]]:
                    # One pass makes each face's row and payload: the row goes to
                    # the COPY (in chunks) as a side effect, the payload to the
                    # upsert, and the oracle judges the pair as written.
                    for i in range(faces):
                        size = attrs.randrange(40, 400)
                        bbox = (attrs.randrange(0, 4000), attrs.randrange(0, 3000), size, size)
                        confidence = round(attrs.uniform(0.6, 0.999), 4)
                        quality = (
                            round(attrs.uniform(0.2, 0.99), 3) if attrs.random() < 0.95 else None
                        )
                        owner = owners[i]
                        prototype = owner is not None and owner not in seen
                        if owner is not None:
                            seen.add(owner)
                        pg_person, pg_cluster = state.pg_person[i], state.pg_cluster[i]
                        expected: dict[str, Any] = {
                            PERSON_KEY: None if pg_person is None else persons[pg_person],
                            FLAG_KEY: pg_person is not None,
                            "cluster_id": pg_cluster,
                            "asset_id": str(asset_of[i]),
                            "face_instance_id": face_ids[i],
                            "detection_confidence": confidence,
                            "quality_score": quality,
                        }
                        if i not in state.row_gone:
                            fields = (
                                face_ids[i],
                                str(asset_of[i]),
                                *map(str, bbox),
                                repr(confidence),
                                NULL if quality is None else repr(quality),
                                str(point_ids[i]),
                                NULL if pg_cluster is None else pg_cluster,
                                NULL if pg_person is None else persons[pg_person],
                                _CREATED,
                                _DRIFTED if i in state.updated else _CREATED,
                            )
                            buffer.append("\t".join(fields) + "\n")
                            if len(buffer) >= 20_000:
                                copy.write("".join(buffer).encode())
                                buffer.clear()
                        if i in state.point_gone:
                            oracle.row_only()
                            continue
                        payload = _payload(
                            asset_of[i], face_ids[i], confidence, quality, bbox, prototype,
                            state.q_person[i], state.q_cluster[i], taken_of[i], persons,
                            state.flag.get(i),
                        )  # fmt: skip
                        if i in state.row_gone:
                            oracle.point_only()
                        else:
                            oracle.both(expected, payload)
                        yield point_ids[i], payload
                    # Points of faces deleted long ago, whose rows are gone for good.
                    extra_ids: Sequence[Any] = _uuids(rng, extra)
                    if point_type != "uuid":
                        taken = set(point_ids)
                        extra_ids = [p for p in _integer_ids(rng, 2 * extra) if p not in taken]
                        extra_ids = extra_ids[:extra]
                    for k, point in enumerate(extra_ids):
                        oracle.point_only()
                        yield point, _payload(
                            asset_of[0] - 1 - k, str(point), 0.9, None, (0, 0, 100, 100), False,
                            None, "-1", taken_of[0], persons, None,
                        )  # fmt: skip

                try:
                    written = write(shard, points())
                    copy.write("".join(buffer).encode())
                    for key in BOOL_INDEXES:
                        shard.update(
                            edge.UpdateOperation.create_field_index(
                                key, edge.PayloadSchemaType.Bool
                            )
                        )
                    shard.flush()
                finally:
                    shard.close()
    loaded = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        # The service's other indexes, if create_schema did not make them (it makes
        # them in later versions of reconcile.testing.world).
        for column in ("cluster_id", "asset_id"):
            conn.execute(
                f"CREATE INDEX IF NOT EXISTS ix_face_instances_{column} "
                f"ON face_instances ({column})"
            )
        conn.execute("VACUUM ANALYZE face_instances")
        conn.execute("VACUUM ANALYZE persons")
        row = conn.execute("SELECT count(*) FROM face_instances").fetchone()
    rows = 0 if row is None else int(row[0])
    expected = oracle.expected()
    # Every face (row, point or both) and every extra point has exactly one kind.
    assert sum(expected["mapped"].values()) == faces + extra, expected
    manifest = {
        "generator_version": GENERATOR_VERSION,
        "name": name,
        "faces": faces,
        "rows": rows,
        "points": written,
        "persons": n_persons - (deleted_person is not None),
        "unknown_groups": groups,
        "drift_rate": rate,
        "seed": seed,
        "flag_key": FLAG_KEY,
        "maps": [f"{key}={source}" for key, source in MAPS],
        **variant,
        "events": events,
        "expected": expected,
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "build_seconds": {
            "plan": round(planned - started, 1),
            "postgres_and_edge": round(loaded - planned, 1),
            "indexes_and_vacuum": round(time.perf_counter() - loaded, 1),
        },
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return ServiceWorld(name, directory, base_url, edge_path, faces, manifest)


def _payload(
    asset: int,
    face_id: str,
    confidence: float,
    quality: float | None,
    bbox: tuple[int, int, int, int],
    prototype: bool,
    person: int | None,
    cluster: str | None,
    taken_at: str,
    persons: Sequence[str],
    flag: str | None,
) -> dict[str, Any]:
    """The payload as the service writes it (service-schema.md), then as drift left it."""
    payload: dict[str, Any] = {
        "asset_id": str(asset),
        "face_instance_id": face_id,
        "detection_confidence": confidence,
        "is_prototype": prototype,
        FLAG_KEY: person is not None,
        "bbox": {"x": bbox[0], "y": bbox[1], "w": bbox[2], "h": bbox[3]},
        "taken_at": taken_at,
    }
    if quality is not None:
        payload["quality_score"] = quality
    if person is not None:
        payload[PERSON_KEY] = persons[person]
    if cluster is not None:
        payload["cluster_id"] = cluster
    if flag == "absent":
        del payload[FLAG_KEY]
    elif flag is not None:
        payload[FLAG_KEY] = flag == "true"
    return payload


def _integer_ids(rng: random.Random, count: int, point_type: str = "bigint") -> list[int]:
    """`count` distinct random positive integer point ids (62 bits: a bigint, a Qdrant u64)."""
    if point_type != "bigint":
        raise ValueError(f"point_type {point_type!r}: uuid or bigint")
    return rng.sample(range(1, 2**62), count)


def _variant(point_type: str, shares: Mapping[str, float] | None) -> dict[str, Any]:
    """The manifest's record of a non-default point type or drift mix (none for the defaults,
    so that worlds built before these options existed are still reused)."""
    found: dict[str, Any] = {}
    if point_type != "uuid":
        found["point_type"] = point_type
    if shares is not None:
        if set(shares) != set(SHARES):
            raise ValueError(f"shares must name exactly {', '.join(SHARES)}")
        found["shares"] = dict(shares)
    return found


def load(
    directory: Path,
    base_url: str,
    *,
    faces: int,
    rate: float,
    seed: int,
    name: str,
    point_type: str = "uuid",
    shares: Mapping[str, float] | None = None,
) -> ServiceWorld | None:
    """The world under `directory`, if it was built with these parameters and is whole."""
    wanted = {
        "generator_version": GENERATOR_VERSION,
        "faces": faces,
        "drift_rate": rate,
        "seed": seed,
        **_variant(point_type, shares),
    }
    manifest = whole_manifest(directory, with_search_path(base_url, name), wanted)
    if manifest is None:
        return None
    return ServiceWorld(name, directory, base_url, directory / "edge", faces, manifest)


__all__ = ["KINDS", "MAPS", "ServiceWorld", "build", "drop", "load"]
