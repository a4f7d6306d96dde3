"""Qdrant adapter: the one place that talks to qdrant-client (a server, or local mode)."""

from __future__ import annotations

import functools
import re
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
    Page,
    PayloadOp,
    Point,
    PointId,
    SetKeys,
    WholePoint,
    cut,
    each_point,
    first_line,
    point_id,
    qdrant_failure,
    retried,
    vectors_from_json,
)

T = TypeVar("T")
# The first server version that honours an upsert's `update_mode` (qdrant/qdrant#7963).
# An older one ignores the unknown field, over REST and gRPC alike, and overwrites.
INSERT_ONLY_SINCE = (1, 17)


def _transient(exc: BaseException) -> bool:
    """Worth retrying: the server was unreachable, timed out, or said 5xx/429."""
    if isinstance(exc, UnexpectedResponse) and exc.status_code is not None:
        return exc.status_code >= 500 or exc.status_code == 429
    return True


class Qdrant:
    """A collection, scrolled in ascending id order with only the configured keys."""

    def __init__(
        self,
        settings: Settings,
        client: QdrantClient | None = None,
        sleep: Callable[[float], None] = time.sleep,
        extra_keys: Sequence[str] = (),
    ) -> None:
        self.settings = settings
        self._sleep = sleep
        self.collection = settings.collection
        self.keys = settings.keys
        self.also_read(extra_keys)
        # A server URL may carry user:password; every message shows it masked.
        self._where = mask_url(settings.qdrant_url or "") or f"local path {settings.qdrant_path}"
        self.client = client or self._connect()
        self._insert_only_checked = False

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

    def also_read(self, keys: Sequence[str]) -> None:
        """points() and retrieve() also return these payload keys from now on."""
        self.keys = [*self.keys, *(k for k in dict.fromkeys(keys) if k not in self.keys)]

    @property
    def local(self) -> bool:
        """Whether the client runs local mode (a directory, or memory) rather than a server."""
        options = self.client.init_options
        return bool(options.get("path")) or options.get("location") == ":memory:"

    def _error(self, doing: str, exc: BaseException) -> StoreError:
        return StoreError(qdrant_failure(self._where, doing, exc))

    def _read(self, doing: str, call: Callable[[], T]) -> T:
        """Reads are idempotent: retry transient failures, with exponential backoff."""
        return retried(
            call,
            retries=self.settings.retries,
            failures=(ApiException, httpx.HTTPError, OSError),
            transient=_transient,
            error=lambda exc: self._error(doing, exc),
            sleep=self._sleep,
        )

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

    def pages(self, key_range: KeyRange | None = None) -> Iterator[Page]:
        """Every point, ascending by id, one scroll page at a time (canonical ids)."""
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
            page, ended = cut(
                Page([point_id(r.id) for r in records], [r.payload or {} for r in records]),
                key_range,
            )
            if page.ids:
                yield page
            if ended or next_offset is None:
                return  # the scroll is ascending: the rest belongs to later slices
            offset = next_offset

    def points(self, key_range: KeyRange | None = None) -> Iterator[Point]:
        """Every point, ascending by id."""
        return each_point(self.pages(key_range))

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

    def whole(self, point_ids: Sequence[PointId]) -> dict[PointId, WholePoint]:
        """The points that exist, each with every vector and its whole payload.

        Read over REST (this adapter never asks for gRPC), whose floats are the
        shortest text of the stored f32: written back, they give the same f32.
        """
        records = self._read(
            "retrieving points with their vectors",
            lambda: self.client.retrieve(
                self.collection, list(point_ids), with_payload=True, with_vectors=True
            ),
        )
        wholes = (WholePoint.of_record(r) for r in records)
        return {whole.point_id: whole for whole in wholes}

    def delete(self, point_ids: Sequence[PointId], holding: tuple[str, Any] | None = None) -> None:
        """Delete these points in one request; ids already absent are no error.

        `holding` (key, value): only those whose payload still holds that value, judged
        by the server as it deletes (a point written again meanwhile is kept).
        """
        if not point_ids:
            return
        selector: models.PointIdsList | models.FilterSelector = models.PointIdsList(
            points=list(point_ids)
        )
        if holding is not None:
            key, value = holding
            selector = models.FilterSelector(
                filter=models.Filter(
                    must=[
                        models.HasIdCondition(has_id=list(point_ids)),
                        models.FieldCondition(key=key, match=models.MatchValue(value=value)),
                    ]
                )
            )
        # Not retried, as apply() is not: the caller re-reads to learn the outcome.
        try:
            self.client.delete(self.collection, selector, wait=True)
        except (ApiException, httpx.HTTPError, OSError) as exc:
            raise self._error("deleting points", exc) from None

    def insert_only(self, points: Sequence[WholePoint]) -> None:
        """Re-create these points in one write; a point that exists is left as it is."""
        if not points:
            return  # local mode refuses an empty upsert
        ids = [p.point_id for p in points]
        if len(set(ids)) != len(ids):
            raise ValueError("insert_only() was given the same point id twice")
        local = self.local
        mode: models.UpdateMode | None = None
        if local:
            # Local mode's own INSERT_ONLY skips any id it has held in this session,
            # so a point deleted earlier through the same client never came back
            # before qdrant-client 1.20 (seen in 1.17.0 to 1.19.1). Instead: leave
            # out the points that exist and write the others plainly. Nothing can
            # write in between: a local-mode directory admits one client.
            existing = set(self.retrieve(ids))
            points = [p for p in points if p.point_id not in existing]
            if not points:
                return
        else:
            self._require_insert_only()
            mode = models.UpdateMode.INSERT_ONLY  # qdrant-client 1.17 or later
        structs = []
        for p in points:
            vectors = vectors_from_json(p.vectors, _sparse)
            if local and isinstance(vectors, list):
                # Local mode returns a point's only vector bare even when the collection
                # names others, yet refuses a bare vector there; by name it takes it anywhere.
                vectors = {"": vectors}
            structs.append(
                models.PointStruct(id=p.point_id, vector=vectors, payload=dict(p.payload))
            )
        try:
            self.client.upsert(self.collection, structs, wait=True, update_mode=mode)
        except ValueError as exc:  # local mode's, and the client's own validation
            raise StoreError(
                f"Qdrant at {self._where} refused to re-create points: {first_line(exc)}; "
                f"collection {self.collection!r} no longer has the vectors they were saved with"
            ) from None
        except (ApiException, httpx.HTTPError, OSError) as exc:
            raise self._error("re-creating points", exc) from None

    def _require_insert_only(self) -> None:
        """Refuse a server too old for insert-only writes: it would overwrite points."""
        if self._insert_only_checked:
            return
        version = self._read("reading the server's version", self.client.info).version
        found = re.match(r"(\d+)\.(\d+)", version or "")
        if found is None or (int(found[1]), int(found[2])) < INSERT_ONLY_SINCE:
            since = ".".join(map(str, INSERT_ONLY_SINCE))
            raise StoreError(
                f"Qdrant at {self._where} is version {version}, which ignores insert-only "
                f"writes and would overwrite points: upgrade the server to {since} or later"
            )
        self._insert_only_checked = True


def _sparse(indices: list[int], values: list[float]) -> models.SparseVector:
    return models.SparseVector(indices=indices, values=values)


__all__ = ["INSERT_ONLY_SINCE", "Qdrant"]
