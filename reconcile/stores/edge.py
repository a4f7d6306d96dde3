"""Qdrant Edge adapter: the collection interface over Qdrant's in-process engine.

Qdrant Edge (`qdrant-edge-py`, module `qdrant_edge`) runs Qdrant's own storage
engine inside this process, on one shard directory. It is beta, so the version
is pinned in the `edge` extra. An edge store holds exactly one shard, which
plays the part of the collection, so `--collection` does not apply to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import qdrant_edge as edge

from reconcile.errors import ConfigError, ReconcileError, StoreError
from reconcile.settings import Settings
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
    vectors_from_json,
)

# The engine prefixes every error it raises with this.
_ENGINE_PREFIX = "Service runtime error: "


def _detail(exc: BaseException) -> str:
    return first_line(exc, _ENGINE_PREFIX)


# `create` writes it, so its absence means "not an edge store"; checked before
# `load`, which would otherwise leave a `segments/` directory in any folder it is given.
CONFIG_FILE = "edge_config.json"
LOAD_BATCH = 10_000


class EdgeQdrant:
    """An edge shard, scrolled in ascending id order with only the configured keys."""

    def __init__(
        self,
        settings: Settings,
        path: Path,
        shard: edge.EdgeShard | None = None,
        extra_keys: Sequence[str] = (),
    ) -> None:
        self.settings = settings
        self.collection = settings.collection
        self.keys = settings.keys
        self.also_read(extra_keys)
        self.path = Path(path)
        self._where = f"Qdrant Edge store {self.path}"
        self.shard = shard if shard is not None else open_edge_store(self.path)
        self._closed = False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # close() flushes too, but only best-effort: a failed flush would be lost.
        try:
            with self._errors("flushing to disk"):
                self.shard.flush()
        finally:
            self.shard.close()

    def also_read(self, keys: Sequence[str]) -> None:
        """points() and retrieve() also return these payload keys from now on."""
        self.keys = [*self.keys, *(k for k in dict.fromkeys(keys) if k not in self.keys)]

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except ReconcileError:
            raise
        except Exception as exc:
            # The engine reports its own failures as a bare Exception (ValueError for
            # an unparsable id); a TypeError is a bug on this side and stays one.
            if type(exc) not in (Exception, ValueError) and not isinstance(exc, OSError):
                raise
            raise StoreError(f"{self._where} failed while {doing}: {_detail(exc)}") from None

    def require_collection(self) -> None:
        # Opening the store already proved the "collection" exists; this only
        # checks that the shard still answers.
        with self._errors("reading the shard's info"):
            self.shard.info()

    def count(self) -> int:
        with self._errors("counting points"):
            return self.shard.count(edge.CountRequest(exact=True))

    def has_key(self, key: str) -> bool:
        """Whether at least one point holds a non-empty value under `key`."""
        request = edge.ScrollRequest(
            limit=1,
            filter=edge.Filter(must_not=[edge.IsEmptyCondition(key)]),
            with_payload=False,
            with_vector=False,
        )
        with self._errors(f"looking for payload key {key!r}"):
            found, _ = self.shard.scroll(request)
        return bool(found)

    def pages(self, key_range: KeyRange | None = None) -> Iterator[Page]:
        """Every point, ascending by id, one scroll page at a time.

        The engine orders ids as a Qdrant server does (integers first, then UUIDs
        in byte order) and pages from an inclusive offset, so nothing is re-sorted
        here. Ids stay as the engine gives them (an int, or a `uuid.UUID`).
        """
        key_range = key_range or KeyRange()
        offset: PointId | None = key_range.low
        while True:
            request = edge.ScrollRequest(
                offset=offset,
                limit=self.settings.page_size,
                with_payload=self.keys,
                with_vector=False,
            )
            with self._errors("scrolling points"):
                records, next_offset = self.shard.scroll(request)
            page, ended = cut(
                Page([r.id for r in records], [r.payload or {} for r in records]), key_range
            )
            if page.ids:
                yield page
            if ended or next_offset is None:
                return  # the scroll is ascending: the rest belongs to later slices
            offset = point_id(next_offset)

    def points(self, key_range: KeyRange | None = None) -> Iterator[Point]:
        """Every point, ascending by id, with canonical ids."""
        return each_point(self.pages(key_range))

    def ids_from(self, offset: PointId, limit: int) -> tuple[list[PointId], PointId | None]:
        """Up to `limit` ids from `offset` on (inclusive), ascending, and where the next start."""
        request = edge.ScrollRequest(
            offset=offset, limit=limit, with_payload=False, with_vector=False
        )
        with self._errors("scrolling point ids"):
            records, following = self.shard.scroll(request)
        ids = [point_id(r.id) for r in records]
        return ids, None if following is None else point_id(following)

    def estimated_count(self) -> int:
        with self._errors("counting points"):
            return int(self.shard.count(edge.CountRequest(exact=False)))

    def facet_counts(self, key: str, at_least: int) -> dict[str, int]:
        """Points per value of `key`, exact, all values (values keyed by their string form).

        Like a server, and unlike local mode, the engine needs a keyword index on `key`.
        """
        limit = max(at_least * 2, 1000)
        while True:
            request = edge.FacetRequest(key, limit=limit, exact=True)
            with self._errors(f"counting points per {key!r}"):
                hits = self.shard.facet(request).hits
            # Only the `limit` largest values come back: ask again until the answer
            # is shorter than the limit, so no value is cut off.
            if len(hits) < limit:
                return {str(hit.value): hit.count for hit in hits}
            limit *= 4

    def retrieve(self, point_ids: Sequence[PointId]) -> dict[PointId, dict[str, Any]]:
        """The configured keys of the points that exist; absent points are left out."""
        with self._errors("retrieving points"):
            # 0.9.0 requires all three arguments, whatever its stubs say.
            records = self.shard.retrieve(list(point_ids), self.keys, False)
        return {point_id(r.id): dict(r.payload or {}) for r in records}

    def payload_sample(self, limit: int) -> list[Point]:
        """The first `limit` points by id with their whole payload (`check --suggest-map`)."""
        found: list[Point] = []
        offset: PointId | None = None
        while len(found) < limit:
            request = edge.ScrollRequest(
                offset=offset,
                limit=min(self.settings.page_size, limit - len(found)),
                with_payload=True,
                with_vector=False,
            )
            with self._errors("sampling payloads"):
                records, following = self.shard.scroll(request)
            found += [Point(point_id(r.id), dict(r.payload or {})) for r in records]
            if following is None:
                break
            offset = point_id(following)
        return found

    def apply(self, ops: Sequence[PayloadOp]) -> None:
        """All operations, in order; none at all if a point they name does not exist."""
        wanted = {point_id(p) for op in ops for p in op.points}
        with self._errors("checking the points to write"):
            found = {point_id(r.id) for r in self.shard.retrieve(list(wanted), False, False)}
        # The engine writes the points it has and then fails on the first one it
        # lacks. Checking first keeps the outcome known: the shard's directory
        # lock means no other process can delete a point in between.
        missing = sorted(wanted - found, key=str)
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise StoreError(f"{self._where} has no point {missing[0]!r}{more}; nothing written")
        with self._errors("writing payloads"):
            for op in ops:
                self.shard.update(
                    edge.UpdateOperation.set_payload(list(op.points), dict(op.values))
                    if isinstance(op, SetKeys)
                    else edge.UpdateOperation.delete_payload(list(op.points), list(op.keys))
                )

    def whole(self, point_ids: Sequence[PointId]) -> dict[PointId, WholePoint]:
        """The points that exist, each with every vector and its whole payload."""
        with self._errors("retrieving points with their vectors"):
            records = self.shard.retrieve(list(point_ids), True, True)
        wholes = (WholePoint.of_record(r) for r in records)
        return {whole.point_id: whole for whole in wholes}

    def delete(self, point_ids: Sequence[PointId], holding: tuple[str, Any] | None = None) -> None:
        """Delete these points in one operation; ids already absent are no error.
        `holding` (key, value): only those whose payload still holds that value."""
        if not point_ids:
            return
        operation = edge.UpdateOperation.delete_points(list(point_ids))
        if holding is not None:
            condition = edge.FieldCondition(holding[0], match=edge.MatchValue(holding[1]))
            where = edge.Filter(must=[edge.HasIdCondition(set(point_ids)), condition])
            operation = edge.UpdateOperation.delete_points_by_filter(where)
        with self._errors("deleting points"):
            self.shard.update(operation)

    def insert_only(self, points: Sequence[WholePoint]) -> None:
        """Re-create these points in one operation; a point that exists is left as it is."""
        if not points:
            return
        ids = [p.point_id for p in points]
        if len(set(ids)) != len(ids):
            raise ValueError("insert_only() was given the same point id twice")
        batch = [
            edge.Point(p.point_id, vectors_from_json(p.vectors, edge.SparseVector), dict(p.payload))
            for p in points
        ]
        with self._errors("re-creating points"):
            self.shard.update(
                edge.UpdateOperation.upsert_points(batch, update_mode=edge.UpdateMode.InsertOnly)
            )


def open_edge_store(path: Path) -> edge.EdgeShard:
    """The shard at `path`, or a ConfigError/StoreError that says what to do."""
    if not path.is_dir():
        raise ConfigError(
            f"Qdrant Edge store {path} does not exist: set --qdrant-edge to the "
            "directory of an existing edge shard"
        )
    if not (path / CONFIG_FILE).is_file():
        raise ConfigError(
            f"{path} is not a Qdrant Edge store (it has no {CONFIG_FILE}): "
            "set --qdrant-edge to the directory of an existing edge shard"
        )
    try:
        return edge.EdgeShard.load(str(path))
    except Exception as exc:
        if type(exc) is not Exception:
            raise
        detail = _detail(exc)
        if "WouldBlock" in detail:  # the write-ahead log is locked by another handle
            raise StoreError(
                f"Qdrant Edge store {path} is in use by another process or handle "
                f"({detail}); stop it and retry"
            ) from None
        raise StoreError(f"Qdrant Edge store {path} could not be opened: {detail}") from None


def create_edge_store(path: Path, dim: int, keyword_keys: Sequence[str] = ()) -> edge.EdgeShard:
    """A new, empty shard for test and benchmark worlds; the tool never reads vectors.

    `keyword_keys` get keyword indexes, as the service's collection has on
    `person_id`; `facet_counts` needs one.
    """
    config = edge.EdgeConfig(vectors=edge.EdgeVectorParams(size=dim, distance=edge.Distance.Dot))
    try:
        shard = edge.EdgeShard.create(str(path), config)
    except Exception as exc:
        if type(exc) is not Exception:
            raise
        raise ConfigError(f"cannot create a Qdrant Edge store at {path}: {_detail(exc)}") from None
    for key in keyword_keys:
        shard.update(edge.UpdateOperation.create_field_index(key, edge.PayloadSchemaType.Keyword))
    return shard


def upsert(
    shard: edge.EdgeShard,
    points: Iterable[tuple[PointId, Mapping[str, Any]]],
    dim: int,
    batch_size: int = LOAD_BATCH,
) -> int:
    """Write (id, payload) pairs with one shared tiny vector, in large batches; returns the count.

    Call `shard.flush()` (or close it) when done: until then the points live in the WAL.
    """
    vector = [0.0] * dim
    written = 0
    batch: list[edge.Point] = []
    for pid, payload in points:
        batch.append(edge.Point(pid, vector, dict(payload)))
        if len(batch) >= batch_size:
            shard.update(edge.UpdateOperation.upsert_points(batch))
            written += len(batch)
            batch = []
    if batch:
        shard.update(edge.UpdateOperation.upsert_points(batch))
        written += len(batch)
    return written


__all__ = ["EdgeQdrant", "create_edge_store", "open_edge_store", "upsert"]
