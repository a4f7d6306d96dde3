"""Slices of the point-id space: `--shard i/N` and `--workers K`.

A slice is a half-open range of the merge's order (integer ids, then UUIDs in
byte order). The first slice also takes everything below the others (all
integer ids in a UUID collection, and rows with a NULL point id); the last takes
everything above (all UUIDs in an integer collection). So N slices cover every
point and every row exactly once, whatever the ids look like.
"""

from __future__ import annotations

import re
import uuid

from reconcile.errors import ConfigError
from reconcile.stores.base import KeyRange, PointId

UUID_SPACE = 2**128


def parse_shard(text: str) -> tuple[int, int]:
    """`i/N` with 1 ≤ i ≤ N (people count shards from one)."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 1 <= int(match.group(1)) <= int(match.group(2)) <= 4096:
        raise ConfigError(f"--shard {text!r} is not i/N with 1 <= i <= N <= 4096: e.g. --shard 2/8")
    return int(match.group(1)), int(match.group(2))


def _cut(lowest: int, highest: int, parts: int, point_type: str) -> list[PointId]:
    """The parts-1 inner boundaries of [lowest, highest]."""
    span = highest - lowest + 1
    cuts = [lowest + span * k // parts for k in range(1, parts)]
    if point_type == "uuid":
        return [str(uuid.UUID(int=c)) for c in cuts]
    return list(cuts)


def slices(
    index: int, count: int, workers: int, point_type: str, bounds: tuple[int, int] | None
) -> list[KeyRange]:
    """The `workers` sub-ranges of shard `index` of `count` (1-based).

    UUIDs cut the 128-bit space evenly; integers cut the column's [min, max]
    (`bounds`; None for an empty table, when one unbounded range is all there is).
    """
    parts = count * workers
    if point_type == "uuid":
        cuts = _cut(0, UUID_SPACE - 1, parts, point_type)
    elif bounds is None:
        return [KeyRange()] if index == 1 else []
    else:
        cuts = _cut(bounds[0], bounds[1], parts, point_type)
    edges: list[PointId | None] = [None, *cuts, None]
    first = (index - 1) * workers
    return [KeyRange(edges[k], edges[k + 1]) for k in range(first, first + workers)]
