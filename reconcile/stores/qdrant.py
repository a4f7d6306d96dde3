"""Qdrant adapter: the one place that talks to qdrant-client (a server, or local mode)."""

from __future__ import annotations

import functools
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ApiException, UnexpectedResponse

from reconcile.errors import ConfigError, StoreError
from reconcile.settings import Settings, mask_url
from reconcile.stores.base import (
    KeyRange,
    PayloadOp,
    Point,
    PointId,
    SetKeys,
    first_line,
    point_id,
)

# Seconds before the first retry of a failed read; doubled for each further one.
BACKOFF = 0.5
T = TypeVar("T")


def _transient(exc: Exception) -> bool:
    """Worth retrying: the server was unreachable, timed out, or said 5xx/429."""
    if isinstance(exc, UnexpectedResponse) and exc.status_code is not None:
        return exc.status_code >= 500 or exc.status_code == 429
    return True


def _unresolved(exc: BaseException) -> bool:
    """Whether a host name lookup failed somewhere in the chain of `exc` (httpx wraps it)."""
    seen: BaseException | None = exc
    for _ in range(10):  # a chain is short; the bound guards against a cycle
        if seen is None:
            return False
        if isinstance(seen, socket.gaierror):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class Qdrant:
    """A collection, scrolled in ascending id order with only the configured keys."""

    def __init__(
        self,
        settings: Settings,
        client: QdrantClient | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self._sleep = sleep
        self.collection = settings.collection
        self.keys = settings.keys
        # A server URL may carry user:password; every message shows it masked.
        self._where = mask_url(settings.qdrant_url or "") or f"local path {settings.qdrant_path}"
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
            timeout=int(s.timeout),
            check_compatibility=False,
        )

    def close(self) -> None:
        self.client.close()

    def _error(self, doing: str, exc: Exception) -> StoreError:
        if _unresolved(exc):
            # "[Errno -2] Name or service not known" alone does not say which name.
            return StoreError(
                f"Qdrant at {self._where} is unreachable: its host name does not resolve "
                f"({first_line(exc)}); check the host in --qdrant-url (QDRANT_URL) and that "
                "this machine's DNS knows it"
            )
        return StoreError(
            f"Qdrant at {self._where} failed while {doing}: {first_line(exc)}; "
            "check --qdrant-url (QDRANT_URL), --qdrant-api-key and that the server is running"
        )

    def _read(self, doing: str, call: Callable[[], T]) -> T:
        """Reads are idempotent: retry transient failures, with exponential backoff."""
        for attempt in range(self.settings.retries + 1):
            try:
                return call()
            except (ApiException, httpx.HTTPError, OSError) as exc:
                if attempt == self.settings.retries or not _transient(exc):
                    raise self._error(doing, exc) from None
                self._sleep(BACKOFF * 2**attempt)
        raise AssertionError("unreachable")

    def require_collection(self) -> None:
        if self._read(
            "listing collections", lambda: self.client.collection_exists(self.collection)
        ):
            return
        collections = self._read("listing collections", self.client.get_collections).collections
        names = sorted(c.name for c in collections)
        raise ConfigError(
            f"collection {self.collection!r} not found at {self._where} "
            f"(collections: {', '.join(names) or 'none'}): "
            "set --collection (QDRANT_FACE_COLLECTION)"
        )

    def count(self) -> int:
        return self._read(
            "counting points", lambda: self.client.count(self.collection, exact=True).count
        )

    def has_key(self, key: str) -> bool:
        """Whether at least one point holds a non-empty value under `key`."""
        empty = models.IsEmptyCondition(is_empty=models.PayloadField(key=key))
        found, _ = self._read(
            f"looking for payload key {key!r}",
            lambda: self.client.scroll(
                self.collection,
                scroll_filter=models.Filter(must_not=[empty]),
                limit=1,
                with_payload=False,
                with_vectors=False,
            ),
        )
        return bool(found)

    def points(self, key_range: KeyRange | None = None) -> Iterator[Point]:
        """Every point, ascending by id, one scroll page at a time."""
        key_range = key_range or KeyRange()
        offset: models.ExtendedPointId | None = key_range.low
        while True:
            records, next_offset = self._read(
                "scrolling points",
                functools.partial(
                    self.client.scroll,
                    self.collection,
                    limit=self.settings.page_size,
                    offset=offset,
                    with_payload=self.keys,
                    with_vectors=False,
                ),
            )
            for record in records:
                point = Point(point_id(record.id), record.payload or {})
                if key_range.beyond(point.point_id):
                    return  # the scroll is ascending: the rest belongs to later slices
                yield point
            if next_offset is None:
                return
            offset = next_offset

    def ids_from(self, offset: PointId, limit: int) -> tuple[list[PointId], PointId | None]:
        """Up to `limit` ids from `offset` on (inclusive), ascending, and where the next start."""
        records, following = self._read(
            "scrolling point ids",
            functools.partial(
                self.client.scroll,
                self.collection,
                offset=offset,
                limit=limit,
                with_payload=False,
                with_vectors=False,
            ),
        )
        ids = [point_id(r.id) for r in records]
        return ids, None if following is None else point_id(following)

    def estimated_count(self) -> int:
        """Qdrant's approximate count: an exact one may visit every point."""
        return int(
            self._read(
                "counting points", lambda: self.client.count(self.collection, exact=False).count
            )
        )

    def facet_counts(self, key: str, at_least: int) -> dict[str, int]:
        """Points per value of `key`, exact, all values (values keyed by their string form)."""
        limit = max(at_least * 2, 1000)
        while True:
            hits = self._read(
                f"counting points per {key!r}",
                functools.partial(self.client.facet, self.collection, key, limit=limit, exact=True),
            ).hits
            # The facet API returns the `limit` largest values: ask again until the
            # answer is shorter than the limit, so no value is cut off.
            if len(hits) < limit:
                return {str(hit.value): hit.count for hit in hits}
            limit *= 4

    def retrieve(self, point_ids: Sequence[PointId]) -> dict[PointId, dict[str, Any]]:
        """The configured keys of the points that exist; absent points are left out."""
        records = self._read(
            "retrieving points",
            lambda: self.client.retrieve(
                self.collection, list(point_ids), with_payload=self.keys, with_vectors=False
            ),
        )
        return {point_id(r.id): dict(r.payload or {}) for r in records}

    def payload_sample(self, limit: int) -> list[Point]:
        """The first `limit` points by id with their whole payload (`check --suggest-map`)."""
        found: list[Point] = []
        offset: models.ExtendedPointId | None = None
        while len(found) < limit:
            records, offset = self._read(
                "sampling payloads",
                functools.partial(
                    self.client.scroll,
                    self.collection,
                    limit=min(self.settings.page_size, limit - len(found)),
                    offset=offset,
                    with_payload=True,
                    with_vectors=False,
                ),
            )
            found += [Point(point_id(r.id), dict(r.payload or {})) for r in records]
            if offset is None:
                break
        return found

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
        # Not retried here: a write's outcome may be unknown after a failure, and
        # the repair loop re-reads under its row locks before it tries again.
        try:
            self.client.batch_update_points(self.collection, operations, wait=True)
        except KeyError as exc:
            # Local mode raises KeyError for a point id it does not hold, where a
            # server answers 404; both mean "a point vanished": retry without it.
            raise StoreError(f"Qdrant has no point {exc}") from None
        except (ApiException, httpx.HTTPError, OSError) as exc:
            raise self._error("writing payloads", exc) from None


__all__ = ["Qdrant"]
