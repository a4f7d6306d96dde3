"""A demo world: the service's two stores (an embedded PostgreSQL, a local Qdrant
collection) with known drift.

The world has the shape of the image-search service (see service-schema.md) and
drift made the way real bugs make it, and it knows exactly how many points of
each drift kind an audit must find, so the demo and the tests can check the tool:
with the person and the flag only (`DemoWorld.injected`), and with the service's
mapped keys (`DEMO_MAP`: `DemoWorld.injected_mapped`), where the cluster labels
the service changes in PostgreSQL only show as `payload_mismatch`.

Longer than most modules (about 660 lines) on purpose: the faces, their payloads,
the load and the drift injection share one private record (`_Face`) and one
bookkeeping of which face drifted how (`_Drift`); apart, each would need the others.
"""

from __future__ import annotations

import random
import shutil
import uuid
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from qdrant_client import QdrantClient, models

from reconcile.diff import DRIFT_KINDS
from reconcile.errors import ConfigError
from reconcile.testing.embedded import start_embedded_postgres, stop_embedded_postgres

FLAG_KEY = "is_assigned"
MIN_FACES = 100
# The tool never reads vectors, so the demo keeps them tiny: it is the payloads
# that matter, and 512 floats per point would only make local mode slow.
DEMO_DIM = 8
BATCH = 500
POINT_TYPES = ("uuid", "bigint")
# The payload keys the service mirrors from face_instances' own columns, as `--map`
# takes them (service-schema.md): `Settings(map=DEMO_MAP)`.
DEMO_MAP = {
    "cluster_id": "cluster_id",
    "asset_id": "asset_id::text",
    "face_instance_id": "id",
    "detection_confidence": "detection_confidence",
    "quality_score": "quality_score",
}

# build_demo deletes its directory; this file is how it knows the directory is
# one it made, so that a mistyped --dir never removes someone's data.
_MARKER = ".reconcile-demo"
# Timestamps are fixed, not relative to now(), so a seed gives the same world
# every day; drift is dated after every row's creation but well in the past, so
# that no grace window for recent writes hides it.
_REFERENCE = datetime(2025, 6, 1, tzinfo=UTC)

SCHEMA_SQL = """
DROP TABLE IF EXISTS face_instances;
DROP TABLE IF EXISTS persons;

CREATE TABLE persons (
    id          uuid PRIMARY KEY,
    name        varchar(255) NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE face_instances (
    id                   uuid PRIMARY KEY,
    asset_id             integer NOT NULL,
    bbox_x integer NOT NULL, bbox_y integer NOT NULL,
    bbox_w integer NOT NULL, bbox_h integer NOT NULL,
    detection_confidence double precision NOT NULL,
    quality_score        double precision,
    qdrant_point_id      {point_type} NOT NULL UNIQUE,
    cluster_id           varchar(100),
    person_id            uuid REFERENCES persons (id) ON DELETE SET NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ix_face_instances_person_id ON face_instances (person_id);
CREATE INDEX ix_face_instances_cluster_id ON face_instances (cluster_id);
CREATE INDEX ix_face_instances_asset_id ON face_instances (asset_id);
"""

_FACE_COLUMNS = (
    "id",
    "asset_id",
    "bbox_x",
    "bbox_y",
    "bbox_w",
    "bbox_h",
    "detection_confidence",
    "quality_score",
    "qdrant_point_id",
    "cluster_id",
    "person_id",
    "created_at",
    "updated_at",
)

_PAYLOAD_INDEXES = {
    "person_id": models.PayloadSchemaType.KEYWORD,
    "cluster_id": models.PayloadSchemaType.KEYWORD,
    "is_prototype": models.PayloadSchemaType.BOOL,
    "asset_id": models.PayloadSchemaType.KEYWORD,  # str(asset.id) in the payload
    "face_instance_id": models.PayloadSchemaType.KEYWORD,
}

_FIRST = ("Ana", "Ben", "Chloé", "Dev", "Eun-ji", "Farid", "Greta", "Hiro", "Ines", "Jon")
_LAST = ("Alvarez", "Brandt", "Chen", "Dubois", "Eze", "Fischer", "Gupta", "Haddad", "Ito")


@dataclass(frozen=True)
class DemoWorld:
    """What build_demo made, and the drift an audit of it must find."""

    database_url: str
    qdrant_path: Path
    faces: int  # rows inserted, before any was deleted
    points: int  # points in the collection at the end
    persons: int  # persons left in PostgreSQL at the end
    injected: dict[str, int]  # every drift kind, plus "in_sync"
    # The same with DEMO_MAP: the faces whose only drift is a cluster label move
    # from in_sync to payload_mismatch.
    injected_mapped: dict[str, int]
    # The cluster_id key's drift with DEMO_MAP ({missing, wrong, stale}), over the
    # points named by exactly one row, whatever their kind (as `AuditReport.keys`).
    cluster_drift: dict[str, int]


# --- the stores' shape ---------------------------------------------------------


def create_schema(conn: psycopg.Connection[Any], point_type: str = "uuid") -> None:
    """(Re)create `persons` and `face_instances` as the service has them.

    Committed on return, unless the caller has a transaction open: then it is
    part of that transaction.
    """
    if point_type not in POINT_TYPES:
        raise ValueError(f"point_type {point_type!r} is not one of {', '.join(POINT_TYPES)}")
    statement = sql.SQL(SCHEMA_SQL).format(point_type=sql.SQL(point_type))
    with conn.transaction():
        conn.execute(statement)


def create_collection(client: QdrantClient, name: str = "faces", dim: int = DEMO_DIM) -> None:
    """(Re)create the collection and the service's payload indexes."""
    if client.collection_exists(name):
        client.delete_collection(name)
    client.create_collection(
        name, vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE)
    )
    with warnings.catch_warnings():
        # Local mode accepts indexes but does not use them, and says so; the
        # demo creates them anyway so that the collection has the service's shape.
        warnings.filterwarnings("ignore", message="Payload indexes have no effect")
        for field, schema in _PAYLOAD_INDEXES.items():
            client.create_payload_index(name, field, field_schema=schema)


# --- the world -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Face:
    id: uuid.UUID
    point_id: uuid.UUID
    asset_id: int
    bbox: tuple[int, int, int, int]
    confidence: float
    quality: float | None
    cluster_id: str | None
    person: int | None  # index into the persons list
    prototype: bool
    taken_at: datetime
    created_at: datetime


@dataclass(frozen=True, slots=True)
class _Person:
    id: uuid.UUID
    name: str
    created_at: datetime


def _uuid4(rng: random.Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def _persons(rng: random.Random, count: int) -> list[_Person]:
    start = _REFERENCE - timedelta(days=5 * 365)
    return [
        _Person(
            _uuid4(rng),
            f"{rng.choice(_FIRST)} {rng.choice(_LAST)}",
            start + timedelta(seconds=rng.randrange(4 * 365 * 86400)),
        )
        for _ in range(count)
    ]


def _owners(rng: random.Random, faces: int, persons: int) -> list[int | None]:
    """Who each face belongs to: ~80% assigned, person sizes heavily skewed."""
    assigned = round(faces * 0.8)
    # Zipf-like weights: a photo library has a few people in thousands of photos
    # and a long tail seen once or twice. Everyone gets one face, so that no
    # person the drift picks is empty.
    weights = [1.0 / rank for rank in range(1, persons + 1)]
    rng.shuffle(weights)
    owners: list[int | None] = list(range(persons))
    owners += rng.choices(range(persons), weights=weights, k=assigned - persons)
    owners += [None] * (faces - assigned)
    rng.shuffle(owners)
    return owners


def _faces(rng: random.Random, owners: Sequence[int | None], persons: int) -> list[_Face]:
    faces: list[_Face] = []
    seen: set[int] = set()
    asset_id = rng.randrange(10_000, 90_000)
    left_in_photo = 0
    taken_at = _REFERENCE
    created_at = _REFERENCE
    for person in owners:
        if left_in_photo == 0:
            # Group photos: most have one face, some several, and deleting one
            # deletes all its faces (ON DELETE CASCADE from image_assets).
            asset_id += rng.randrange(1, 4)
            left_in_photo = rng.choices((1, 2, 3, 4, 5), weights=(55, 25, 12, 5, 3))[0]
            taken_at = _REFERENCE - timedelta(days=40, seconds=rng.randrange(5 * 365 * 86400))
            created_at = taken_at + timedelta(minutes=rng.randrange(1, 30 * 24 * 60))
        left_in_photo -= 1
        cluster: str | None
        if person is not None:
            # Clusters mostly follow people; a few faces sit in someone else's.
            cluster = f"c_{person if rng.random() < 0.9 else rng.randrange(persons)}"
        elif rng.random() < 0.7:
            cluster = f"c_{persons + rng.randrange(max(1, persons // 2))}"
        else:
            cluster = None  # too blurry or too small to cluster
        size = rng.randrange(40, 400)
        faces.append(
            _Face(
                id=_uuid4(rng),
                point_id=_uuid4(rng),
                asset_id=asset_id,
                bbox=(rng.randrange(0, 4000), rng.randrange(0, 3000), size, size),
                confidence=round(rng.uniform(0.6, 0.999), 4),
                quality=round(rng.uniform(0.2, 0.99), 3) if rng.random() < 0.95 else None,
                cluster_id=cluster,
                person=person,
                prototype=person is not None and person not in seen,
                taken_at=taken_at.replace(tzinfo=None),
                created_at=created_at,
            )
        )
        if person is not None:
            seen.add(person)
    return faces


def _payload(face: _Face, persons: Sequence[_Person]) -> dict[str, Any]:
    """The whole payload, written the service's way (service-schema.md)."""
    payload: dict[str, Any] = {
        "asset_id": str(face.asset_id),  # str(asset.id): a string of the integer
        "face_instance_id": str(face.id),
        "detection_confidence": face.confidence,
        "is_prototype": face.prototype,
        "is_assigned": face.person is not None,
        "bbox": dict(zip(("x", "y", "w", "h"), face.bbox, strict=True)),
        "taken_at": face.taken_at.isoformat(timespec="seconds"),
    }
    # A NULL column is an absent key, not a null.
    if face.quality is not None:
        payload["quality_score"] = face.quality
    if face.cluster_id is not None:
        payload["cluster_id"] = face.cluster_id
    if face.person is not None:
        payload["person_id"] = str(persons[face.person].id)  # str(UUID) is lower-case
    return payload


def _vector_size(client: QdrantClient, collection: str) -> int:
    vectors = client.get_collection(collection).config.params.vectors
    if not isinstance(vectors, models.VectorParams):
        raise ValueError(f"collection {collection!r} must have one unnamed vector")
    return vectors.size


def _load(
    conn: psycopg.Connection[Any],
    client: QdrantClient,
    collection: str,
    persons: Sequence[_Person],
    faces: Sequence[_Face],
    seed: int,
) -> None:
    """Write a world in step on both sides, as a bug-free service would."""
    with conn.transaction(), conn.cursor() as cur:
        with cur.copy("COPY persons (id, name, created_at, updated_at) FROM STDIN") as copy:
            for person in persons:
                copy.write_row((person.id, person.name, person.created_at, person.created_at))
        columns = sql.SQL(", ").join(map(sql.Identifier, _FACE_COLUMNS))
        statement = sql.SQL("COPY face_instances ({}) FROM STDIN").format(columns)
        with cur.copy(statement) as copy:
            for face in faces:
                person_id = None if face.person is None else persons[face.person].id
                copy.write_row(
                    (
                        face.id,
                        face.asset_id,
                        *face.bbox,
                        face.confidence,
                        face.quality,
                        face.point_id,
                        face.cluster_id,
                        person_id,
                        face.created_at,
                        face.created_at,
                    )
                )
    # Vectors get their own generator so that the world does not depend on the
    # collection's dimension.
    vector_rng = random.Random(seed + 1)  # noqa: S311 (reproducible, not secret)
    dim = _vector_size(client, collection)
    for start in range(0, len(faces), BATCH):
        points = [
            models.PointStruct(
                id=str(face.point_id),
                vector=[vector_rng.gauss(0.0, 1.0) for _ in range(dim)],
                payload=_payload(face, persons),
            )
            for face in faces[start : start + BATCH]
        ]
        client.upsert(collection, points=points, wait=True)


class _Drift:
    """Which faces get which drift, kept disjoint so that every count is exact."""

    def __init__(self, faces: Sequence[_Face]) -> None:
        self.kinds: list[str | None] = [None] * len(faces)
        # How each face's cluster label drifted (missing, wrong, stale), beside its kind:
        # a label is one more key of a face that may have drifted otherwise too.
        self.labels: list[str | None] = [None] * len(faces)

    def mark(self, indices: Iterable[int], kind: str) -> list[int]:
        chosen = list(indices)
        for index in chosen:
            assert self.kinds[index] is None, f"face {index} drifted twice"
            self.kinds[index] = kind
        return chosen

    def relabel(self, indices: Iterable[int], sub: str) -> list[int]:
        chosen = list(indices)
        for index in chosen:
            assert self.labels[index] is None, f"face {index} relabelled twice"
            self.labels[index] = sub
        return chosen

    def free(self, indices: Iterable[int]) -> list[int]:
        return [i for i in indices if self.kinds[i] is None]

    def counts(self) -> dict[str, int]:
        counted = Counter(kind for kind in self.kinds if kind is not None)
        injected = {kind: counted[kind] for kind in DRIFT_KINDS}
        # Every face was written with its point, and each drift removes at most
        # one side, so the ids on either side are exactly the faces' point ids.
        injected["in_sync"] = len(self.kinds) - sum(counted.values())
        return injected

    def mapped_counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """The kinds with DEMO_MAP, and the cluster_id key's drift (missing, wrong, stale)."""
        mapped = self.counts()
        pairs = list(zip(self.kinds, self.labels, strict=True))
        # A face whose only drift is its label is payload_mismatch; on any other the
        # kind it has comes first (the person's, the flag's, a point's).
        moved = sum(1 for kind, sub in pairs if kind is None and sub is not None)
        mapped["payload_mismatch"] += moved
        mapped["in_sync"] -= moved
        # Keys are compared only where one row names a point that exists.
        unmatched = {"missing_point", "orphan_point"}
        subs = Counter(sub for kind, sub in pairs if sub is not None and kind not in unmatched)
        return mapped, {sub: subs[sub] for sub in ("missing", "wrong", "stale")}


def _take(pool: list[int], count: int, what: str) -> list[int]:
    if len(pool) < count:
        raise ValueError(f"too few faces to pick {count} for {what}: use more faces")
    taken = pool[:count]
    del pool[:count]
    return taken


def _closest(rng: random.Random, sizes: dict[int, int], target: int, exclude: set[int]) -> int:
    candidates = [p for p in sizes if p not in exclude]
    return min(candidates, key=lambda p: (abs(sizes[p] - target), rng.random()))


def _drift_at(rng: random.Random) -> datetime:
    return _REFERENCE - timedelta(seconds=rng.randrange(3600, 9 * 86400))


@dataclass(frozen=True)
class _Injected:
    kinds: dict[str, int]  # DemoWorld.injected
    mapped: dict[str, int]  # DemoWorld.injected_mapped
    clusters: dict[str, int]  # DemoWorld.cluster_drift


def _inject(
    conn: psycopg.Connection[Any],
    client: QdrantClient,
    collection: str,
    rng: random.Random,
    persons: Sequence[_Person],
    faces: Sequence[_Face],
    labels: random.Random,
) -> _Injected:
    """Break the world the way the service's bugs do; return what was broken.

    `labels` chooses the cluster labels' drift: a generator of its own, so that the
    rest of the drift stays what it was before labels drifted too.
    """
    n = len(faces)
    drift = _Drift(faces)
    by_person: dict[int, list[int]] = {p: [] for p in range(len(persons))}
    by_asset: dict[int, list[int]] = {}
    for index, face in enumerate(faces):
        if face.person is not None:
            by_person[face.person].append(index)
        by_asset.setdefault(face.asset_id, []).append(index)
    sizes = {p: len(members) for p, members in by_person.items()}

    # Whole persons first: every face of a merged or deleted person drifts.
    merged = _closest(rng, sizes, max(1, n // 100), set())
    deleted = _closest(rng, sizes, max(1, n // 80), {merged})
    survivors = [p for p in range(len(persons)) if p not in {merged, deleted}]
    merge_into = rng.choice(survivors)
    drift.mark(by_person[merged], "wrong_person")
    drift.mark(by_person[deleted], "stale_person")

    # Then whole photos, and a few single faces, deleted in PostgreSQL only.
    orphans: list[int] = []
    assets = sorted(by_asset)
    rng.shuffle(assets)
    deleted_assets: list[int] = []
    for asset in assets:
        if len(orphans) >= max(1, n // 100):
            break
        members = by_asset[asset]
        if drift.free(members) == members:
            deleted_assets.append(asset)
            orphans += drift.mark(members, "orphan_point")

    pool = drift.free(range(n))
    rng.shuffle(pool)
    assigned = [i for i in pool if faces[i].person is not None]
    unassigned = [i for i in pool if faces[i].person is None]

    accepted = drift.mark(_take(unassigned, max(1, n // 50), "accepted"), "missing_person")
    flag_kept_true = drift.mark(_take(unassigned, max(1, n // 450), "flags"), "flag_mismatch")
    moved = drift.mark(_take(assigned, max(1, n // 500), "moves"), "wrong_person")
    unassigned_in_db = drift.mark(_take(assigned, max(1, n // 500), "unassigns"), "stale_person")
    flag_false = drift.mark(_take(assigned, max(1, n // 450), "flags"), "flag_mismatch")
    flag_absent = drift.mark(_take(assigned, max(1, n // 450), "flags"), "flag_mismatch")
    rest = assigned + unassigned
    rng.shuffle(rest)
    lost = drift.mark(_take(rest, max(1, n // 120), "lost points"), "missing_point")
    face_deleted = drift.mark(_take(rest, max(1, n // 1000), "face deletes"), "orphan_point")

    # Cluster labels changed in PostgreSQL only, the three ways the service does it:
    # unknown-person groups merged, a group dismissed as noise, and the clustering
    # job, which cleared a group to relabel it, wrote new labels for unclustered
    # faces in chunks, and stopped before relabelling the cleared group.
    groups: dict[str, list[int]] = {}
    for index, face in enumerate(faces):
        if face.person is None and face.cluster_id is not None:
            groups.setdefault(face.cluster_id, []).append(index)
    order = sorted(groups)
    labels.shuffle(order)
    pairs = min(max(1, n // 2500), len(order) // 2)
    merges = [(order[2 * k], order[2 * k + 1]) for k in range(pairs)]
    dismissed, cleared = order[2 * pairs : 2 * pairs + 1], order[2 * pairs + 1 : 2 * pairs + 2]
    for _into, merged_group in merges:
        drift.relabel(groups[merged_group], "wrong")
    for group in dismissed:
        drift.relabel(groups[group], "wrong")
    for group in cleared:
        drift.relabel(groups[group], "stale")
    # Faces with no other drift, so that the map's audit surely finds payload_mismatch.
    unclustered = [i for i in drift.free(range(n)) if faces[i].cluster_id is None]
    labels.shuffle(unclustered)
    job = drift.relabel(_take(unclustered, max(1, n // 250), "the clustering job"), "missing")
    first_label = len(persons) + max(1, len(persons) // 2)  # past every label in use
    chunks = [
        (f"c_{first_label + k}", job[start : start + 8])
        for k, start in enumerate(range(0, len(job), 8))
    ]

    def ids(indices: Iterable[int]) -> list[uuid.UUID]:
        return [faces[i].id for i in indices]

    def points(indices: Iterable[int]) -> list[models.ExtendedPointId]:
        return [str(faces[i].point_id) for i in indices]

    with conn.transaction(), conn.cursor() as cur:
        # The application's ORM stamps updated_at on every UPDATE; ON DELETE SET
        # NULL below does not, as in the service.
        # Labels first, while person_id is what the faces were loaded with (the
        # statements choose their faces by it, as the service's do).
        relabel = (
            "UPDATE face_instances SET cluster_id = %s, updated_at = %s "
            "WHERE cluster_id = %s AND person_id IS NULL"
        )
        for into, merged_group in merges:
            cur.execute(relabel, (into, _drift_at(labels), merged_group))
            assert cur.rowcount == len(groups[merged_group])
        for group in dismissed:
            cur.execute(relabel, ("-1", _drift_at(labels), group))
        for group in cleared:
            cur.execute(relabel, (None, _drift_at(labels), group))
        for label, chunk in chunks:
            cur.execute(
                "UPDATE face_instances SET cluster_id = %s, updated_at = %s WHERE id = ANY(%s)",
                (label, _drift_at(labels), ids(chunk)),
            )
        update = "UPDATE face_instances SET person_id = %s, updated_at = %s WHERE id = ANY(%s)"
        # Suggestions accepted in bulk for a few people, PostgreSQL only.
        targets = rng.sample(survivors, min(3, len(survivors)))
        for index in accepted:
            target = persons[rng.choice(targets)].id
            cur.execute(update, (target, _drift_at(rng), [faces[index].id]))
        # Single faces moved to someone else, or unassigned, in the database only.
        for index in moved:
            current = faces[index].person
            target = persons[rng.choice([p for p in survivors if p != current])].id
            cur.execute(update, (target, _drift_at(rng), [faces[index].id]))
        cur.execute(update, (None, _drift_at(rng), ids(unassigned_in_db)))
        # A merge done in the database only: faces moved, the old person deleted.
        cur.execute(
            "UPDATE face_instances SET person_id = %s, updated_at = %s WHERE person_id = %s",
            (persons[merge_into].id, _drift_at(rng), persons[merged].id),
        )
        cur.execute("DELETE FROM persons WHERE id = %s", (persons[merged].id,))
        # A person deleted: ON DELETE SET NULL clears its faces inside PostgreSQL.
        cur.execute("DELETE FROM persons WHERE id = %s", (persons[deleted].id,))
        # Photos and faces deleted, their points left behind.
        cur.execute("DELETE FROM face_instances WHERE asset_id = ANY(%s)", (deleted_assets,))
        cur.execute("DELETE FROM face_instances WHERE id = ANY(%s)", (ids(face_deleted),))

    # Sentinel writes lost: the assignment's flag never written, a backfill that
    # wrote false, an unassign whose second write (is_assigned=false) failed.
    client.set_payload(collection, {FLAG_KEY: False}, points=points(flag_false), wait=True)
    client.delete_payload(collection, [FLAG_KEY], points=points(flag_absent), wait=True)
    client.set_payload(collection, {FLAG_KEY: True}, points=points(flag_kept_true), wait=True)
    # Upserts that failed after the row was committed.
    client.delete(collection, points_selector=models.PointIdsList(points=points(lost)), wait=True)

    injected = drift.counts()
    assert injected["orphan_point"] == len(orphans) + len(face_deleted)
    mapped, clusters = drift.mapped_counts()
    return _Injected(injected, mapped, clusters)


def build_world(
    database_url: str,
    client: QdrantClient,
    *,
    faces: int = 5000,
    seed: int = 7,
    collection: str = "faces",
) -> dict[str, int]:
    """Fill the (empty, freshly created) stores with a drifted world.

    Returns how many points of each drift kind an audit with flag key
    `is_assigned` must find, plus "in_sync"; each point has exactly one kind.
    The same seed gives the same world.
    """
    return _build(database_url, client, faces, seed, collection).kinds


def _build(
    database_url: str, client: QdrantClient, faces: int, seed: int, collection: str
) -> _Injected:
    if faces < MIN_FACES:
        raise ValueError(f"a demo world needs at least {MIN_FACES} faces, not {faces}")
    rng = random.Random(seed)  # noqa: S311 (reproducible, not secret)
    # About 25 faces per person, as in a family photo library.
    persons = _persons(rng, max(4, round(faces / 25)))
    face_list = _faces(rng, _owners(rng, faces, len(persons)), len(persons))
    labels = random.Random(seed + 2)  # noqa: S311 (seed + 1 draws the vectors)
    with psycopg.connect(database_url) as conn:
        _load(conn, client, collection, persons, face_list, seed)
        return _inject(conn, client, collection, rng, persons, face_list, labels)


def _clear(directory: Path) -> None:
    if not directory.exists():
        return
    if not directory.is_dir():
        raise ConfigError(f"{directory} is not a directory: choose another --dir")
    if not (directory / _MARKER).exists() and any(directory.iterdir()):
        raise ConfigError(
            f"{directory} is not empty and was not made by `reconcile demo`: refusing to "
            "delete it; choose a new or empty --dir"
        )
    stop_embedded_postgres(directory / "pgdata")
    shutil.rmtree(directory)


def build_demo(directory: Path, *, faces: int = 5000, seed: int = 7) -> DemoWorld:
    """Build a drifted world in `directory`, deleting any earlier demo there.

    Leaves the PostgreSQL server running (the user audits it next) and the
    Qdrant storage closed (local mode locks it to one client at a time).
    """
    if faces < MIN_FACES:
        raise ValueError(f"a demo world needs at least {MIN_FACES} faces, not {faces}")
    directory = directory.expanduser().resolve()
    _clear(directory)
    directory.mkdir(parents=True)
    (directory / _MARKER).write_text("made by `reconcile demo`; deleted by the next one\n")
    database_url = start_embedded_postgres(directory / "pgdata")
    with psycopg.connect(database_url) as conn:
        create_schema(conn)
    qdrant_path = directory / "qdrant"
    client = QdrantClient(path=str(qdrant_path))
    try:
        create_collection(client)
        injected = _build(database_url, client, faces, seed, "faces")
        points = client.count("faces", exact=True).count
    finally:
        client.close()
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM persons").fetchone()
    assert row is not None
    return DemoWorld(
        database_url=database_url,
        qdrant_path=qdrant_path,
        faces=faces,
        points=points,
        persons=int(row[0]),
        injected=injected.kinds,
        injected_mapped=injected.mapped,
        cluster_drift=injected.clusters,
    )


__all__ = [
    "DEMO_MAP",
    "DemoWorld",
    "build_demo",
    "build_world",
    "create_collection",
    "create_schema",
]
