"""Test worlds in the service's shape: a schema per test and a Qdrant local-mode store."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import psycopg
from qdrant_client import QdrantClient, models

from reconcile.ops.audit import audit
from reconcile.report import AuditReport
from reconcile.settings import Settings
from reconcile.stores import Stores
from reconcile.stores.qdrant import Qdrant
from reconcile.testing.world import create_collection, create_schema

DIM = 8
SERVICE = object()  # a face's payload as the service writes it


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

    def upsert(self, point_id: int | str, payload: dict[str, Any]) -> None:
        assert self.client is not None
        self.client.upsert(
            "faces", [models.PointStruct(id=point_id, vector=[0.5] * DIM, payload=payload)]
        )

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
