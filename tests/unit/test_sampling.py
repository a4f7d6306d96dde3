"""Sampling without stores: Wilson intervals, uniform draws over any gaps, the --sample range."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable

import pytest

from reconcile.errors import ConfigError
from reconcile.ops.sample import sample_audit, wilson
from reconcile.sampling import WINDOW_CAP, Window
from reconcile.sampling import draw as _draw
from reconcile.settings import Settings


def test_wilson_known_values_and_edges() -> None:
    low, high = wilson(10, 100)
    assert low == pytest.approx(0.0552, abs=1e-4)
    assert high == pytest.approx(0.1744, abs=1e-4)
    assert wilson(0, 100)[0] == 0.0
    assert wilson(0, 100)[1] == pytest.approx(1.96**2 / (100 + 1.96**2), rel=1e-3)
    assert wilson(100, 100)[1] == 1.0
    assert wilson(100, 100)[0] == pytest.approx(100 / (100 + 1.96**2), rel=1e-3)
    assert wilson(1, 1)[0] == pytest.approx(0.2065, abs=1e-4)
    assert wilson(1, 1)[1] == 1.0
    assert wilson(0, 0) == (0.0, 1.0)  # no sample, no knowledge
    low, high = wilson(50, 100)
    assert low + high == pytest.approx(1.0)  # symmetric at one half
    with pytest.raises(ValueError, match="successes"):
        wilson(3, 2)
    with pytest.raises(ValueError, match="successes"):
        wilson(-1, 2)


@pytest.mark.parametrize("n", [0, -1, 1_000_001])
def test_sample_size_out_of_range_is_rejected(n: int) -> None:
    # Rejected before any store is opened: these stores do not exist.
    settings = Settings(database_url="postgresql://u@localhost/none", qdrant_path="/nonexistent")
    with pytest.raises(ConfigError, match="--sample"):
        sample_audit(settings, n)


def _fake_fetch(ids: list[int]) -> Callable[[list[Window]], list[list[int] | None]]:
    """The fetchers' contract over a list: each window's ids, None over the cap."""
    ordered = sorted(ids)

    def fetch(windows: list[Window]) -> list[list[int] | None]:
        found = [[i for start, end in w for i in ordered if start <= i <= end] for w in windows]
        return [ids if len(ids) <= WINDOW_CAP else None for ids in found]

    return fetch


def test_every_id_is_equally_likely_whatever_the_gaps() -> None:
    # A dense cluster, lone ids after huge gaps, and both ends of the range: the
    # "first id after a random point" draw would pick 10**6 some 900,000 times as
    # often as 1; windows must pick each about equally often.
    ids = [0, 1, 2, 3, 4, 10**5, 10**6, 10**6 + 1, 2 * 10**6]
    drawn = _draw(random.Random(7), 90_000, (0, 2 * 10**6), len(ids), _fake_fetch(ids))
    assert len(drawn.ids) == 90_000 and drawn.dropped == 0
    counts = Counter(drawn.ids)
    assert set(counts) == set(ids)
    for i in ids:
        assert 9_000 < counts[i] < 11_000, (i, counts[i])


def test_a_stale_size_estimate_only_costs_pilot_windows() -> None:
    ids = list(range(0, 20_000, 2))
    # The estimate says 10 ids, there are 10,000: the first windows hold about
    # 1,000 ids each, over the cap. Pilot rounds shrink them; their ids are not kept.
    drawn = _draw(random.Random(3), 500, (0, 19_998), 10, _fake_fetch(ids))
    assert len(drawn.ids) == 500
    assert drawn.dropped > 0
    assert drawn.windows < 800  # pilots, then about one window per id
    assert len(set(drawn.ids)) > 400  # not a few clusters of neighbours
