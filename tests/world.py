"""Test worlds in the service's shape: a schema per test and a Qdrant local-mode store."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any

import psycopg
from qdrant_client import QdrantClient, models

from reconcile.ops.audit import audit
from reconcile.ops.repair import RepairReport, repair
from reconcile.plan import RepairOptions
from reconcile.report import AuditReport
from reconcile.settings import Settings
from reconcile.stores import Stores
from reconcile.stores.qdrant import Qdrant
from reconcile.testing.world import create_collection, create_schema

DIM = 8
SERVICE = object()  # a face's payload as the service writes it
# The --map of every key the service mirrors from face_instances' own columns
# (service-schema.md): `Settings(map=MAP)`.
MAP = {
    "cluster_id": "cluster_id",
    "asset_id": "asset_id::text",
    "face_instance_id": "id",
    "detection_confidence": "detection_confidence",
    "quality_score": "quality_score",
}


class _Auto(Enum):
    AUTO = "auto"  # a value chosen by the world (None is a value: a NULL column)


AUTO = _Auto.AUTO


@dataclass(frozen=True)
class Face:
    """One face as the service keeps it: the row's values, and the point's id and vector."""

    face_id: str
    point_id: int | str
    person: str | None
    asset_id: int
    cluster_id: str | None
    detection_confidence: float
    quality_score: float | None
    bbox: tuple[int, int, int, int]
    is_prototype: bool
    taken_at: datetime
    vector: list[float] = field(repr=False)

    def payload(self) -> dict[str, Any]:
        """The point's whole payload, written the service's way (service-schema.md)."""
        x, y, w, h = self.bbox
        payload: dict[str, Any] = {
            "asset_id": str(self.asset_id),  # str(asset.id): a string of the integer
            "face_instance_id": self.face_id,
            "detection_confidence": self.detection_confidence,
            "is_prototype": self.is_prototype,
            "is_assigned": self.person is not None,
            "bbox": {"x": x, "y": y, "w": w, "h": h},
            "taken_at": self.taken_at.isoformat(),
        }
        # NULL columns are absent keys, not nulls.
        if self.quality_score is not None:
            payload["quality_score"] = self.quality_score
        if self.person is not None:
            payload["person_id"] = self.person
        if self.cluster_id is not None:
            payload["cluster_id"] = self.cluster_id
        return payload


class World:
    """Faces and persons written straight into both stores, drift included."""

    def __init__(self, url: str, qdrant_dir: Path, point_type: str = "uuid") -> None:
        self.url = url
        self.qdrant_dir = qdrant_dir
        self.conn = psycopg.connect(url, autocommit=True)
        create_schema(self.conn, point_type)
        self.client: QdrantClient | None = QdrantClient(path=str(qdrant_dir))
        create_collection(self.client, "faces", dim=DIM)
        self._next_int = 1
        self._faces = 0  # service faces made so far: each gets values of its own

    def loosen(self) -> None:
        """Allow shared and NULL point ids: the service forbids them, other tables may not."""
        self.conn.execute(
            "ALTER TABLE face_instances DROP CONSTRAINT face_instances_qdrant_point_id_key"
        )
        self.conn.execute("ALTER TABLE face_instances ALTER COLUMN qdrant_point_id DROP NOT NULL")
        self.conn.execute("CREATE INDEX ON face_instances (qdrant_point_id)")

    def person(self) -> str:
        person_id = str(uuid.uuid4())
        self.conn.execute("INSERT INTO persons (id, name) VALUES (%s, %s)", (person_id, "someone"))
        return person_id

    def new_point_id(self, integer: bool = False) -> int | str:
        if integer:
            self._next_int += 1
            return self._next_int
        return str(uuid.uuid4())

    def face(
        self,
        person: str | None = None,
        *,
        point_id: int | str | None = None,
        payload: Any = SERVICE,
        row: bool = True,
        point: bool = True,
    ) -> int | str:
        """Add one face; `payload` overrides what the service would have written."""
        point_id = self.new_point_id() if point_id is None else point_id
        face_id = str(uuid.uuid4())
        if row:
            self.conn.execute(
                "INSERT INTO face_instances (id, asset_id, bbox_x, bbox_y, bbox_w, bbox_h, "
                "detection_confidence, qdrant_point_id, person_id) "
                "VALUES (%s, 1, 0, 0, 10, 10, 0.9, %s, %s)",
                (face_id, point_id, person),
            )
        if point:
            if payload is SERVICE:
                payload = {
                    "face_instance_id": face_id,
                    "asset_id": "1",
                    "is_assigned": person is not None,
                }
                if person is not None:
                    payload["person_id"] = person
            self.upsert(point_id, payload)
        return point_id

    def service_face(
        self,
        person: str | None = None,
        *,
        cluster: str | None = None,
        asset: int | _Auto = AUTO,
        confidence: float | _Auto = AUTO,
        quality: float | _Auto | None = AUTO,
        bbox: tuple[int, int, int, int] | _Auto = AUTO,
        prototype: bool = False,
        taken_at: datetime | _Auto = AUTO,
        point_id: int | str | None = None,
        row: bool = True,
        point: bool = True,
    ) -> Face:
        """Add one face with every column the service fills and its WHOLE payload, in step.

        Values not given differ from face to face (two faces per photo), so that a
        key written to the wrong point would show; the vector differs too.
        """
        n = self._faces = self._faces + 1
        face = Face(
            face_id=str(uuid.uuid4()),
            point_id=self.new_point_id() if point_id is None else point_id,
            person=person,
            asset_id=4700 + n // 2 if asset is AUTO else asset,
            cluster_id=cluster,
            detection_confidence=round(0.6 + (n % 37) / 100, 4)
            if confidence is AUTO
            else confidence,
            quality_score=round(0.31 + (n % 50) / 100, 3) if quality is AUTO else quality,
            bbox=(7 * n % 4000, 3 * n % 3000, 40 + n % 90, 40 + n % 90) if bbox is AUTO else bbox,
            is_prototype=prototype,
            taken_at=datetime(2024, 6, 1, 10, 22) + timedelta(minutes=n // 2)
            if taken_at is AUTO
            else taken_at,
            vector=[((n * 7 + i) % 11 + 1) / 11 for i in range(DIM)],
        )
        if row:
            self.conn.execute(
                "INSERT INTO face_instances (id, asset_id, bbox_x, bbox_y, bbox_w, bbox_h, "
                "detection_confidence, quality_score, qdrant_point_id, cluster_id, person_id) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    face.face_id,
                    face.asset_id,
                    *face.bbox,
                    face.detection_confidence,
                    face.quality_score,
                    face.point_id,
                    face.cluster_id,
                    face.person,
                ),
            )
        if point:
            self.upsert(face.point_id, face.payload(), vector=face.vector)
        return face

    def as_stored(self, face: Face) -> Face:
        """`face` with the values its row holds now: its payload is what the service
        would write today (the keys from other tables, taken_at and is_prototype, kept)."""
        found = self.conn.execute(
            "SELECT person_id, cluster_id, asset_id, detection_confidence, quality_score, "
            "bbox_x, bbox_y, bbox_w, bbox_h FROM face_instances WHERE id = %s",
            (face.face_id,),
        ).fetchone()
        assert found is not None, f"face {face.face_id} has no row"
        person, cluster, asset, confidence, quality, *bbox = found
        return replace(
            face,
            person=None if person is None else str(person),
            cluster_id=cluster,
            asset_id=asset,
            detection_confidence=confidence,
            quality_score=quality,
            bbox=(bbox[0], bbox[1], bbox[2], bbox[3]),
        )

    def upsert(
        self, point_id: int | str, payload: dict[str, Any], vector: list[float] | None = None
    ) -> None:
        assert self.client is not None
        self.client.upsert(
            "faces",
            [models.PointStruct(id=point_id, vector=vector or [0.5] * DIM, payload=payload)],
        )

    def points(self) -> dict[str, tuple[dict[str, Any], list[float]]]:
        """Every point's whole payload and vector, by point id (as a string)."""
        assert self.client is not None
        records, _ = self.client.scroll(
            "faces", limit=100_000, with_payload=True, with_vectors=True
        )
        found: dict[str, tuple[dict[str, Any], list[float]]] = {}
        for r in records:
            assert isinstance(r.vector, list)
            found[str(r.id)] = (dict(r.payload or {}), [float(v) for v in r.vector])  # type: ignore[arg-type]
        return found

    def payload(self, point_id: int | str) -> dict[str, Any]:
        assert self.client is not None
        (record,) = self.client.retrieve("faces", [point_id], with_payload=True)
        return dict(record.payload or {})

    def settings(self, **overrides: Any) -> Settings:
        return Settings(database_url=self.url, qdrant_path=str(self.qdrant_dir), **overrides)

    def stores(self, settings: Settings) -> Stores:
        """Stores that share this world's Qdrant client (local mode allows one per directory)."""
        assert self.client is not None
        return Stores(settings, qdrant=Qdrant(settings, client=self.client))

    def audit(self, details: Path | None = None, **overrides: Any) -> AuditReport:
        settings = self.settings(**overrides)
        return audit(settings, details=details, stores=self.stores(settings))

    def repair(self, settings: Settings, **options: Any) -> RepairReport:
        """A repair through the library with these settings (`run_repair` with any map):
        any share of a tiny world's points, a fresh journal beside the store."""
        hooks = options.pop("hooks", None)
        targets = options.pop("targets", None)
        stores = options.pop("stores", None) or self.stores(settings)
        options.setdefault("max_changes", "100%")
        journal = self.qdrant_dir.parent / f"journal-{time.monotonic_ns()}.jsonl"
        options.setdefault("journal", journal)
        return repair(
            settings, RepairOptions(**options), stores=stores, hooks=hooks, targets=targets
        )

    def env(self) -> dict[str, str]:
        """The environment a CLI run needs; releases local mode's lock on the directory."""
        self.release()
        return {"DATABASE_URL": self.url, "QDRANT_PATH": str(self.qdrant_dir)}

    def reopen(self) -> QdrantClient:
        """Take the directory back after a CLI run."""
        if self.client is None:
            self.client = QdrantClient(path=str(self.qdrant_dir))
        return self.client

    def release(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def close(self) -> None:
        self.release()
        self.conn.close()


# --- cluster labels changed in PostgreSQL only, the three ways the service does it ---
# Each stamps updated_at, as the application's ORM does on every UPDATE.


def merge_clusters(
    conn: psycopg.Connection[Any], into: str, merged: str, at: datetime | None = None
) -> None:
    """Two unknown-person groups merged in the database only (`at`: when, default now)."""
    conn.execute(
        "UPDATE face_instances SET cluster_id = %s, updated_at = coalesce(%s, now()) "
        "WHERE cluster_id = %s AND person_id IS NULL",
        (into, at, merged),
    )


def dismiss_cluster(conn: psycopg.Connection[Any], cluster: str) -> None:
    """A group dismissed as noise in the database only."""
    conn.execute(
        "UPDATE face_instances SET cluster_id = '-1', updated_at = now() "
        "WHERE cluster_id = %s AND person_id IS NULL",
        (cluster,),
    )


def label_chunk(conn: psycopg.Connection[Any], label: str | None, faces: list[Face]) -> None:
    """One chunk of the unknown-person clustering job: labels written (or cleared, by a
    run that starts over) in the database only."""
    conn.execute(
        "UPDATE face_instances SET cluster_id = %s, updated_at = now() WHERE id = ANY(%s)",
        (label, [uuid.UUID(f.face_id) for f in faces]),
    )


@dataclass
class ServiceDrift:
    """A small service world with the cluster bugs' drift beside the person's, and the
    counts an audit with `MAP` and flag key is_assigned must find (worked out by hand
    from what was injected; see `service_drift`)."""

    faces: dict[str, Face]
    persons: dict[str, str]
    kinds: dict[str, int]
    keys: dict[str, dict[str, int]]
    top_clusters: dict[str, int]  # drifted faces per cluster label (top_values)


def service_drift(world: World) -> ServiceDrift:
    """28 faces: 9 in sync, 19 drifted, every compared key but two touched.

    alice A1-A4 (c_1), bob B1-B3 (c_2) and B4 (in unknown group u_11: a merge of u_11
    must not move him), carol C1-C2 (c_3), dave D1-D2 (c_4); unknown groups u_10
    (U10a-d), u_11 (U11a-c), u_12 (U12a-c), u_13 (U13a-b); unclustered N1-N4 (N4
    without a quality score, in sync).
    """
    alice, bob, carol, dave = (world.person() for _ in range(4))
    faces: dict[str, Face] = {}

    def make(names: str, person: str | None, cluster: str | None, **kw: Any) -> None:
        for name in names.split():
            faces[name] = world.service_face(person, cluster=cluster, **kw)

    make("A1 A2 A3 A4", alice, "c_1")
    make("B1 B2 B3", bob, "c_2")
    make("B4", bob, "u_11")
    make("C1 C2", carol, "c_3")
    make("D1 D2", dave, "c_4")
    make("U10a U10b U10c U10d", None, "u_10")
    make("U11a U11b U11c", None, "u_11")
    make("U12a U12b U12c", None, "u_12")
    make("U13a U13b", None, "u_13")
    make("N1 N2 N3", None, None)
    make("N4", None, None, quality=None)

    conn = world.conn
    merge_clusters(conn, "u_10", "u_11")  # U11a-c: wrong (B4 has a person: untouched)
    dismiss_cluster(conn, "u_12")  # U12a-c: wrong
    # The clustering job cleared u_13 to relabel it, wrote two chunks, and stopped.
    label_chunk(conn, None, [faces["U13a"], faces["U13b"]])  # stale
    label_chunk(conn, "c_40", [faces["N1"], faces["N2"]])  # missing
    label_chunk(conn, "c_41", [faces["N3"]])  # missing

    def set_person(person: str | None, *names: str) -> None:
        conn.execute(
            "UPDATE face_instances SET person_id = %s, updated_at = now() WHERE id = ANY(%s)",
            (person, [uuid.UUID(faces[n].face_id) for n in names]),
        )

    set_person(alice, "U10a", "U11a")  # suggestions accepted: missing_person
    set_person(bob, "A4")  # moved: wrong_person
    conn.execute("DELETE FROM persons WHERE id = %s", (carol,))  # C1, C2: stale_person
    conn.execute(
        "UPDATE face_instances SET quality_score = NULL, updated_at = now() WHERE id = %s",
        (faces["A2"].face_id,),
    )
    assert world.client is not None
    world.client.set_payload("faces", {"is_assigned": False}, [faces["B1"].point_id])
    world.client.delete_payload("faces", ["is_assigned"], [faces["B2"].point_id])
    # asset_id written as the integer, where the service (and the map's ::text) says str().
    world.client.set_payload("faces", {"asset_id": faces["A3"].asset_id}, [faces["A3"].point_id])

    kinds = {
        "in_sync": 9,  # A1 B3 B4 D1 D2 U10b-d N4
        "missing_person": 2,  # U10a U11a
        "wrong_person": 1,  # A4
        "stale_person": 2,  # C1 C2
        "flag_mismatch": 2,  # B1 B2
        # U11b U11c, U12a-c, U13a-b, N1-N3, A2 (quality), A3 (asset_id)
        "payload_mismatch": 12,
        "missing_point": 0,
        "orphan_point": 0,
        "duplicate_point": 0,
    }
    zero = {"missing": 0, "wrong": 0, "stale": 0}
    keys = {
        "person_id": {"missing": 2, "wrong": 1, "stale": 2},
        "is_assigned": {"missing": 1, "wrong": 5, "stale": 0},  # B2; U10a U11a C1 C2 B1
        "cluster_id": {"missing": 3, "wrong": 6, "stale": 2},
        "asset_id": {"missing": 0, "wrong": 1, "stale": 0},
        "face_instance_id": dict(zero),
        "detection_confidence": dict(zero),
        "quality_score": {"missing": 0, "wrong": 0, "stale": 1},
    }
    # Wrong and missing labels are charged to the row's label, stale ones to the payload's.
    top = {"u_10": 3, "-1": 3, "c_40": 2, "u_13": 2, "c_41": 1}
    persons = {"alice": alice, "bob": bob, "carol": carol, "dave": dave}
    return ServiceDrift(faces, persons, kinds, keys, top)
