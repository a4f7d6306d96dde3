"""Qdrant adapter: the one place that talks to qdrant-client."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ApiException

from reconcile.diff import Point
from reconcile.errors import ConfigError, StoreError
from reconcile.settings import Settings


@dataclass(frozen=True)
class SetKeys:
    """Set these payload values on these points (other keys untouched)."""

    values: Mapping[str, Any]
    points: Sequence[int | str]


@dataclass(frozen=True)
class DeleteKeys:
    """Remove these payload keys from these points."""

    keys: Sequence[str]
    points: Sequence[int | str]


PayloadOp = SetKeys | DeleteKeys


# Seconds one request may take; repair bounds how long it holds row locks with it.
QDRANT_TIMEOUT = 30


class Qdrant:
    """A collection, scrolled in ascending id order with only the configured keys."""

    def __init__(self, settings: Settings, client: QdrantClient | None = None) -> None:
        self.settings = settings
        self.collection = settings.collection
        self.keys = settings.keys
        self._where = settings.qdrant_url or f"local path {settings.qdrant_path}"
        self.client = client or self._connect()

    def _connect(self) -> QdrantClient:
        s = self.settings
        if s.qdrant_path:
            path = Path(s.qdrant_path)
            if not path.is_dir():
                raise ConfigError(
                    f"Qdrant local path {path} does not exist: set --qdrant-path (QDRANT_PATH) "
                    "to the directory of an existing local-mode store"
                )
            try:
                return QdrantClient(path=str(path))
            except RuntimeError as exc:  # local mode allows one client per directory
                raise StoreError(
                    f"Qdrant local path {path} is in use by another process ({exc}); "
                    "stop it or point at a server with --qdrant-url"
                ) from None
        # The compatibility probe costs a request and only logs a warning; the
        # collection check that follows tells a user more.
        return QdrantClient(
            url=s.qdrant_url,
            api_key=s.qdrant_api_key,
            timeout=30,
            check_compatibility=False,
        )

    def close(self) -> None:
        self.client.close()

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except (ApiException, httpx.HTTPError, OSError) as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StoreError(
                f"Qdrant at {self._where} failed while {doing}: {detail}; "
                "check --qdrant-url (QDRANT_URL), --qdrant-api-key and that the server is running"
            ) from None

    def require_collection(self) -> None:
        with self._errors("listing collections"):
            if self.client.collection_exists(self.collection):
                return
            names = sorted(c.name for c in self.client.get_collections().collections)
        raise ConfigError(
            f"collection {self.collection!r} not found at {self._where} "
            f"(collections: {', '.join(names) or 'none'}): "
            "set --collection (QDRANT_FACE_COLLECTION)"
        )

    def count(self) -> int:
        with self._errors("counting points"):
            return self.client.count(self.collection, exact=True).count

    def has_key(self, key: str) -> bool:
        """Whether at least one point holds a non-empty value under `key`."""
        empty = models.IsEmptyCondition(is_empty=models.PayloadField(key=key))
        with self._errors(f"looking for payload key {key!r}"):
            found, _ = self.client.scroll(
                self.collection,
                scroll_filter=models.Filter(must_not=[empty]),
                limit=1,
                with_payload=False,
                with_vectors=False,
            )
        return bool(found)

    def points(self) -> Iterator[Point]:
        """Every point, ascending by id, one scroll page at a time."""
        offset: models.ExtendedPointId | None = None
        while True:
            with self._errors("scrolling points"):
                records, next_offset = self.client.scroll(
                    self.collection,
                    limit=self.settings.page_size,
                    offset=offset,
                    with_payload=self.keys,
                    with_vectors=False,
                )
            for record in records:
                yield Point(_point_id(record.id), record.payload or {})
            if next_offset is None:
                return
            offset = next_offset

    def facet_counts(self, key: str, at_least: int) -> dict[str, int]:
        """Points per value of `key`, exact, all values (values keyed by their string form)."""
        limit = max(at_least * 2, 1000)
        while True:
            with self._errors(f"counting points per {key!r}"):
                hits = self.client.facet(self.collection, key, limit=limit, exact=True).hits
            # The facet API returns the `limit` largest values: ask again until the
            # answer is shorter than the limit, so no value is cut off.
            if len(hits) < limit:
                return {str(hit.value): hit.count for hit in hits}
            limit *= 4

    def retrieve(self, point_ids: Sequence[int | str]) -> dict[int | str, dict[str, Any]]:
        """The configured keys of the points that exist; absent points are left out."""
        with self._errors("retrieving points"):
            records = self.client.retrieve(
                self.collection, list(point_ids), with_payload=self.keys, with_vectors=False
            )
        return {_point_id(r.id): dict(r.payload or {}) for r in records}

    def apply(self, ops: Sequence[PayloadOp]) -> None:
        """All operations in one request, in order, waiting until they are applied."""
        operations: list[models.UpdateOperation] = [
            models.SetPayloadOperation(
                set_payload=models.SetPayload(payload=dict(op.values), points=list(op.points))
            )
            if isinstance(op, SetKeys)
            else models.DeletePayloadOperation(
                delete_payload=models.DeletePayload(keys=list(op.keys), points=list(op.points))
            )
            for op in ops
        ]
        with self._errors("writing payloads"):
            try:
                self.client.batch_update_points(self.collection, operations, wait=True)
            except KeyError as exc:
                # Local mode raises KeyError for a point id it does not hold, where
                # a server answers 404; both mean "a point vanished": retry without it.
                raise StoreError(f"Qdrant has no point {exc}") from None


def _point_id(value: object) -> int | str:
    """Integers stay integers; UUIDs become the canonical lower-case string."""
    return value if isinstance(value, int) else str(value).lower()
