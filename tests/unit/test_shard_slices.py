"""Shards without stores: parsing i/N, and slices that cover the id space without gaps."""

from __future__ import annotations

import itertools

import pytest

from reconcile.errors import ConfigError
from reconcile.shards import parse_shard, slices


@pytest.mark.parametrize("text", ["0/3", "4/3", "x", "1/0", "2"])
def test_bad_shard_is_rejected(text: str) -> None:
    with pytest.raises(ConfigError, match="--shard"):
        parse_shard(text)


def test_slices_cover_the_space_without_gaps() -> None:
    ranges = [r for i in (1, 2, 3) for r in slices(i, 3, 2, "uuid", None)]
    assert ranges[0].low is None and ranges[-1].high is None
    assert all(a.high == b.low for a, b in itertools.pairwise(ranges))
    ints = slices(2, 2, 1, "bigint", (10, 19))
    assert ints[0].low == 15 and ints[0].high is None
