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


def test_auto_shard_numbers_an_indexed_jobs_pods_from_one() -> None:
    """Kubernetes counts completions from 0; the N pods get shards 1..N, each once."""
    shards = [parse_shard("auto/4", {"JOB_COMPLETION_INDEX": str(i)}) for i in range(4)]
    assert shards == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert parse_shard(" auto / 1 ", {"JOB_COMPLETION_INDEX": "0"}) == (1, 1)


def test_auto_shard_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "2")
    assert parse_shard("auto/3") == (3, 3)


@pytest.mark.parametrize(
    ("environ", "says"),
    [
        ({}, "not set: run it in a Kubernetes Indexed Job with completions: 4"),
        ({"JOB_COMPLETION_INDEX": ""}, "not set"),
        ({"JOB_COMPLETION_INDEX": "x"}, "'x' is not a whole number from 0"),
        ({"JOB_COMPLETION_INDEX": "-1"}, "'-1' is not a whole number from 0"),
        ({"JOB_COMPLETION_INDEX": "1.5"}, "'1.5' is not a whole number"),
        ({"JOB_COMPLETION_INDEX": "²"}, "is not a whole number"),
        ({"JOB_COMPLETION_INDEX": "4"}, "=4 is not below 4: set the Job's completions to 4"),
    ],
)
def test_auto_shard_without_a_usable_index_names_the_variable_and_the_fix(
    environ: dict[str, str], says: str
) -> None:
    with pytest.raises(ConfigError, match="JOB_COMPLETION_INDEX") as caught:
        parse_shard("auto/4", environ)
    assert says in str(caught.value)
    assert "\n" not in str(caught.value)
    assert caught.value.exit_code == 2


@pytest.mark.parametrize("text", ["auto/0", "auto/4097", "auto", "auto/x", "auto/2/3"])
def test_bad_auto_shard_count_is_rejected(text: str) -> None:
    """A bad N is the flag's own error; the variable is not even read."""
    with pytest.raises(ConfigError, match=r"--shard .* auto/N"):
        parse_shard(text, {"JOB_COMPLETION_INDEX": "0"})
