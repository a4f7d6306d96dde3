"""Slices of the point-id space: `--shard i/N` and `--workers K`.

A slice is a half-open range of the merge's order (integer ids, then UUIDs in
byte order). The first slice also takes everything below the others (all
integer ids in a UUID collection, and rows with a NULL point id); the last takes
everything above (all UUIDs in an integer collection). So N slices cover every
point and every row exactly once, whatever the ids look like.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Mapping

from reconcile.errors import ConfigError
from reconcile.stores.base import KeyRange, PointId

UUID_SPACE = 2**128


MAX_SHARDS = 4096
# Kubernetes gives each pod of an Indexed Job its completion index, counted from 0.
INDEX_VARIABLE = "JOB_COMPLETION_INDEX"


def parse_shard(text: str, environ: Mapping[str, str] | None = None) -> tuple[int, int]:
    """`i/N` with 1 ≤ i ≤ N (people count shards from one), or `auto/N`.

    `auto/N` takes i from JOB_COMPLETION_INDEX + 1 (in `environ`, default the
    process's environment), so an Indexed Job's pods need no shell arithmetic.
    """
    auto = re.fullmatch(r"\s*auto\s*/\s*(\d+)\s*", text)
    if auto and 1 <= int(auto.group(1)) <= MAX_SHARDS:
        count = int(auto.group(1))
        return _completion_index(text, count, os.environ if environ is None else environ), count
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 1 <= int(match.group(1)) <= int(match.group(2)) <= MAX_SHARDS:
        raise ConfigError(
            f"--shard {text!r} is not i/N or auto/N with 1 <= i <= N <= {MAX_SHARDS}: "
            "e.g. --shard 2/8, or --shard auto/8 in a Kubernetes Indexed Job"
        )
    return int(match.group(1)), int(match.group(2))


def _completion_index(text: str, count: int, environ: Mapping[str, str]) -> int:
    """The 1-based shard of an Indexed Job's pod: its 0-based completion index + 1."""
    fix = f"run it in a Kubernetes Indexed Job with completions: {count}, or give --shard i/{count}"
    raw = environ.get(INDEX_VARIABLE)
    if raw is None or not raw.strip():
        raise ConfigError(f"--shard {text!r} needs {INDEX_VARIABLE}, which is not set: {fix}")
    if not re.fullmatch(r"[0-9]+", raw.strip()):
        raise ConfigError(
            f"--shard {text!r}: {INDEX_VARIABLE}={raw!r} is not a whole number from 0: {fix}"
        )
    index = int(raw)
    if index >= count:
        raise ConfigError(
            f"--shard {text!r}: {INDEX_VARIABLE}={index} is not below {count}: "
            f"set the Job's completions to {count}, the N of --shard auto/N"
        )
    return index + 1


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
