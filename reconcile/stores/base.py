"""What every store adapter shares: the records they yield, id ranges, payload writes.

The adapters (`postgres`, `qdrant`, `edge`) import this module and nothing else of
`reconcile.stores`, so any one of them can be replaced or left uninstalled.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, TypeVar
from uuid import UUID

PointId = int | str
T = TypeVar("T")


# Row and Point are named tuples rather than dataclasses: a million of each are
# built per million faces, and a tuple is built in under half the time (0.15 µs
# against 0.34 µs for a frozen slotted dataclass of four fields).
class Row(NamedTuple):
    """One face row; `person_id` is already the canonical payload value (lower-case UUID)."""

    point_id: PointId | None
    face_id: str
    person_id: PointId | None
    recent: bool = False  # changed within the grace window: not judged, not repaired
    # The --map columns' canonical payload values, in the order of Settings.map (None: NULL).
    values: tuple[Any, ...] = ()


class Point(NamedTuple):
    """One Qdrant point with only the configured payload keys."""

    point_id: PointId
    payload: Mapping[str, Any]


# An id as an adapter read it: an int, or a UUID as a `uuid.UUID` or a string;
# point_id() gives its canonical form.
RawId = int | str | UUID


class Page(NamedTuple):
    """One scroll page: ids ascending as the engine returned them, and their payloads
    (the configured keys), position by position.

    The full scan reads pages rather than points: at a million points a page-level
    loop saves building a Point and the canonical string of a `uuid.UUID` (0.5 µs
    together) per point, and only the few points found out of sync get either.
    """

    ids: list[RawId]
    payloads: list[dict[str, Any]]


def point_order(point_id: PointId) -> tuple[bool, int, str]:
    # Qdrant orders integer ids before UUIDs; lower-case UUID strings sort like
    # PostgreSQL's byte-wise uuid order, so one key orders both streams.
    if isinstance(point_id, str):
        return (True, 0, point_id)
    return (False, point_id, "")


def each_point(pages: Iterable[Page]) -> Iterator[Point]:
    """The points of `pages`, one at a time, with canonical ids."""
    for ids, payloads in pages:
        for raw, payload in zip(ids, payloads, strict=True):
            yield Point(point_id(raw), payload)


def cut(page: Page, key_range: KeyRange) -> tuple[Page, bool]:
    """The part of `page` before `key_range`'s end, and whether anything was cut off.

    Ids ascend, so only the last id is tested unless the end falls inside the page,
    and then a bisection finds it.
    """
    ids = page.ids
    if not ids or key_range.high is None or not key_range.beyond(point_id(ids[-1])):
        return page, False
    lo, hi = 0, len(ids) - 1  # ids[hi] is beyond the end; everything before lo is not
    while lo < hi:
        mid = (lo + hi) // 2
        if key_range.beyond(point_id(ids[mid])):
            hi = mid
        else:
            lo = mid + 1
    return Page(ids[:lo], page.payloads[:lo]), True


BIGINT_END = 2**63  # Qdrant's integer ids are unsigned 64-bit; PostgreSQL's bigint is not


def column_holds(point_id: RawId | None, integer: bool) -> bool:
    """Whether a point column (integers when `integer`, else uuid) can hold this id: one
    it cannot (a UUID in an integer column, an integer past bigint) names no row."""
    if type(point_id) is int:
        return integer and point_id < BIGINT_END
    return not integer


def point_id(value: object) -> PointId:
    """The canonical payload form of an id: integers stay integers, UUIDs (a
    `uuid.UUID` or a string in any case) become the lower-case hyphenated string."""
    if isinstance(value, int):
        return value
    if isinstance(value, UUID):
        return str(value)  # already the canonical lower-case form
    return str(value).lower()


@dataclass(frozen=True)
class KeyRange:
    """Point ids from `low` (inclusive) to `high` (exclusive); None means unbounded."""

    low: PointId | None = None
    high: PointId | None = None

    @property
    def first(self) -> bool:
        """The slice that also counts rows whose point id is NULL."""
        return self.low is None

    def beyond(self, point_id: PointId) -> bool:
        """Whether `point_id` is at or past this range's end (ranges are half-open)."""
        return self.high is not None and point_order(point_id) >= point_order(self.high)

    def describe(self) -> str:
        return f"[{self.low if self.low is not None else '-inf'}, {self.high or '+inf'})"


@dataclass(frozen=True)
class SetKeys:
    """Set these payload values on these points (other keys untouched)."""

    values: Mapping[str, Any]
    points: Sequence[PointId]


@dataclass(frozen=True)
class DeleteKeys:
    """Remove these payload keys from these points."""

    keys: Sequence[str]
    points: Sequence[PointId]


PayloadOp = SetKeys | DeleteKeys

# A point's vectors as JSON: a list of floats for a collection's one unnamed dense
# vector (a list of lists if it is a multi-vector), otherwise {name: vector} where a
# vector is a list of floats, a list of lists of floats (multi-vector) or
# {"indices": [...], "values": [...]} (sparse); "" names the unnamed vector there.
VectorsJSON = list[Any] | dict[str, Any]


@dataclass(frozen=True, eq=False)
class WholePoint:
    """A point with everything needed to re-create it: every vector as the engine
    returned it (a cosine vector in the normalized form it was stored in) and the
    whole payload. `to_json()` / `from_json()` carry it through a journal line."""

    point_id: PointId
    vectors: VectorsJSON
    payload: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"point_id": self.point_id, "vectors": self.vectors, "payload": dict(self.payload)}

    @classmethod
    def of_record(cls, record: Any) -> WholePoint:
        """From an engine's record (qdrant-client's and Qdrant Edge's have id, vector, payload)."""
        return cls(point_id(record.id), vectors_json(record.vector), dict(record.payload or {}))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WholePoint:
        vectors, payload = data["vectors"], data["payload"]
        if not isinstance(vectors, list | dict) or not isinstance(payload, dict):
            raise ValueError(f"not a whole point: {data!r:.200}")
        return cls(point_id(data["point_id"]), vectors, payload)

    def without(self, *keys: str) -> WholePoint:
        """The same point without these payload keys (the tool's own, say)."""
        payload = {k: v for k, v in self.payload.items() if k not in keys}
        return WholePoint(self.point_id, self.vectors, payload)

    def equals(self, other: WholePoint) -> bool:
        """Exactly the same id, vectors and payload.

        Floats are compared for equality, not closeness: both sides come from the
        same engine, which returns the floats it stores (f32, already normalized
        for cosine), and re-creating a point from what it returned stores the same
        floats again, so any difference is a different point. (One exception, not
        worked around: qdrant-client's local mode, until reopened, holds a cosine
        vector it was just given as its write path normalized it, which for an
        already normalized one can be one f32 step off; on disk it keeps what it got.)
        The JSON text is compared rather than the dicts because Python has
        1 == 1.0 == True, and a payload's `true` is not its `1`.
        """
        return _canonical(self) == _canonical(other)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WholePoint) and self.equals(other)

    def __hash__(self) -> int:
        return hash(_canonical(self))


def _canonical(point: WholePoint) -> str:
    return json.dumps(point.to_json(), sort_keys=True, separators=(",", ":"))


def vectors_json(vector: Any) -> VectorsJSON:
    """An engine's vector structure (qdrant-client's or Qdrant Edge's) as JSON.

    Both engines' sparse vectors have `indices` and `values`; nothing else does.
    No vector at all (a point whose every vector was deleted) is {}.
    """
    if vector is None:
        return {}
    if isinstance(vector, dict):
        return {name: _vector_json(v) for name, v in vector.items()}
    return _dense_json(vector)  # the unnamed vector is never sparse


def _vector_json(vector: Any) -> VectorsJSON:
    if hasattr(vector, "indices") and hasattr(vector, "values"):
        return {"indices": list(vector.indices), "values": list(vector.values)}
    return _dense_json(vector)


def _dense_json(vector: Any) -> list[Any]:
    # A fresh list either way (a multi-vector's rows too): the engine's own stays unshared.
    return [list(v) if isinstance(v, list | tuple) else v for v in vector]


def vectors_from_json(vectors: VectorsJSON, sparse: Callable[[list[int], list[float]], Any]) -> Any:
    """The inverse of `vectors_json`, building sparse vectors with the engine's own `sparse`."""
    if isinstance(vectors, list):
        return vectors
    return {
        name: sparse(v["indices"], v["values"]) if isinstance(v, dict) else v
        for name, v in vectors.items()
    }


class PointStore(Protocol):
    """What audit and repair need from a collection, whichever engine holds it."""

    def require_collection(self) -> None: ...
    def count(self) -> int: ...
    def has_key(self, key: str) -> bool: ...
    # The scroll of `key_range` (everything by default), ascending, a page at a time;
    # no empty pages. points() is the same scroll point by point: each_point(pages()).
    def pages(self, key_range: KeyRange | None = None) -> Iterator[Page]: ...
    def points(self, key_range: KeyRange | None = None) -> Iterator[Point]: ...
    def ids_from(self, offset: PointId, limit: int) -> tuple[list[PointId], PointId | None]: ...
    def estimated_count(self) -> int: ...
    def facet_counts(self, key: str, at_least: int) -> dict[str, int]: ...
    def retrieve(self, point_ids: Sequence[PointId]) -> dict[PointId, dict[str, Any]]: ...
    def apply(self, ops: Sequence[PayloadOp]) -> None: ...
    def close(self) -> None: ...
    # `check --suggest-map`: the first `limit` points by id with their whole payload.
    def payload_sample(self, limit: int) -> list[Point]: ...
    # Payload keys read by points() and retrieve() besides the settings' (the tool's own
    # record keys); the constructors' `extra_keys` do the same.
    def also_read(self, keys: Sequence[str]) -> None: ...
    # Deleting orphan points and undoing it. whole(): the points that exist, each with
    # every vector and its whole payload. delete(): one request; ids already absent are
    # no error, none is no request; with `holding` (key, value) only the points whose
    # payload holds that value then, judged by the engine as it deletes. insert_only():
    # re-create points, never overwriting one that exists (it is left as it is,
    # silently); none is no request.
    def whole(self, point_ids: Sequence[PointId]) -> dict[PointId, WholePoint]: ...
    def delete(
        self, point_ids: Sequence[PointId], holding: tuple[str, Any] | None = None
    ) -> None: ...
    def insert_only(self, points: Sequence[WholePoint]) -> None: ...


BACKOFF = 0.5  # seconds before the first retry of a Qdrant read; doubled each time


def unresolved(exc: BaseException) -> bool:
    """Whether a host name lookup failed somewhere in the chain of `exc` (clients wrap it)."""
    seen: BaseException | None = exc
    for _ in range(10):  # a chain is short; the bound guards against a cycle
        if seen is None:
            return False
        if isinstance(seen, socket.gaierror):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def qdrant_failure(where: str, doing: str, exc: BaseException) -> str:
    """A failed Qdrant request as one line naming the server (masked) and the fix
    (the adapters raise it as a StoreError)."""
    if unresolved(exc):
        # "[Errno -2] Name or service not known" alone does not say which name.
        return (
            f"Qdrant at {where} is unreachable: its host name does not resolve "
            f"({first_line(exc)}); check the host in --qdrant-url (QDRANT_URL) and that "
            "this machine's DNS knows it"
        )
    return (
        f"Qdrant at {where} failed while {doing}: {first_line(exc)}; "
        "check --qdrant-url (QDRANT_URL), --qdrant-api-key and that the server is running"
    )


def retried(
    call: Callable[[], T],
    *,
    retries: int,
    failures: tuple[type[BaseException], ...],
    transient: Callable[[BaseException], bool],
    error: Callable[[BaseException], Exception],
    sleep: Callable[[float], None],
) -> T:
    """An idempotent read, its transient `failures` retried `retries` times with
    exponential backoff; the last failure (or one not transient) raised as `error`."""
    for attempt in range(retries + 1):
        try:
            return call()
        except failures as exc:
            if attempt == retries or not transient(exc):
                raise error(exc) from None
            sleep(BACKOFF * 2**attempt)
    raise AssertionError("unreachable")


def first_line(exc: BaseException, prefix: str = "") -> str:
    """A driver error as one line for a message: its first line, or its type's name.

    Drivers put whole tracebacks, SQL and server banners in their messages; a user
    needs the first line. `prefix` is a driver's own boilerplate to drop.
    """
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    return text.splitlines()[0].removeprefix(prefix)


__all__ = [
    "BACKOFF",
    "BIGINT_END",
    "DeleteKeys",
    "KeyRange",
    "Page",
    "PayloadOp",
    "Point",
    "PointId",
    "PointStore",
    "RawId",
    "Row",
    "SetKeys",
    "VectorsJSON",
    "WholePoint",
    "column_holds",
    "cut",
    "each_point",
    "first_line",
    "point_id",
    "point_order",
    "qdrant_failure",
    "retried",
    "unresolved",
    "vectors_from_json",
    "vectors_json",
]
