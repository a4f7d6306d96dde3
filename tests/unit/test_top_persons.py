"""The per-person counters: exact like a Counter while they fit, bounded and honest after."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from reconcile.diff import Drift, Kind, ScanStats
from reconcile.report import AuditReport, SpaceSaving, Tally, person_capacity

# A few heavy persons and a long tail, in any order: the shape of real drift.
skewed = st.lists(
    st.one_of(st.integers(0, 3), st.integers(0, 60)).map(lambda i: f"p{i:02d}"),
    max_size=300,
)


def counter_top(stream: list[str], n: int) -> list[tuple[str, int]]:
    """What the old Counter-based tally printed."""
    return sorted(Counter(stream).items(), key=lambda item: (-item[1], item[0]))[:n]


def summary(stream: list[str], capacity: int) -> SpaceSaving:
    counters = SpaceSaving(capacity)
    for person in stream:
        counters.add(person)
    return counters


def test_capacity_rule() -> None:
    assert person_capacity(0) == person_capacity(10) == 1000
    assert person_capacity(25) == 2500


def test_ties_order_like_the_counter() -> None:
    stream = ["b", "c", "a", "c", "b", "d"]
    counters = summary(stream, capacity=4)
    assert counters.top(3) == [("b", 2), ("c", 2), ("a", 1)]
    assert counters.top(10) == counter_top(stream, 10)
    assert counters.exact and all(counters.error(p) == 0 for p in "abcd")


@given(stream=skewed, n=st.integers(0, 70))
def test_equals_the_counter_while_within_capacity(stream: list[str], n: int) -> None:
    counters = summary(stream, capacity=max(1, len(set(stream))))
    assert counters.exact
    assert counters.top(n) == counter_top(stream, n)
    assert all(counters.error(p) == 0 for p, _ in counters.top(n))


def test_evicts_the_oldest_of_the_smallest_count() -> None:
    counters = summary(["a", "b", "a", "c", "d"], capacity=2)
    # c replaces b, the only key of count 1, and has count 2 like a; d then replaces
    # a, which reached count 2 first, although a's true count is the larger.
    assert not counters.exact
    assert counters.top(2) == [("d", 3), ("c", 2)]
    assert (counters.error("c"), counters.error("d")) == (1, 2)
    assert counters.error("a") == 0 and "a" not in dict(counters.top(2))
    # add() names the key it replaced (the plan drops that person's breakdown).
    fresh = SpaceSaving(2)
    assert [fresh.add(k) for k in ["a", "b", "a", "c", "d"]] == [None, None, None, "b", "a"]


@given(stream=skewed, capacity=st.integers(1, 12))
def test_space_saving_bounds(stream: list[str], capacity: int) -> None:
    counters = summary(stream, capacity)
    truth = Counter(stream)
    kept = counters.top(capacity + 1)
    assert len(counters) == len(kept) <= capacity
    assert counters.total == len(stream) == sum(n for _, n in kept)
    for person, n in kept:
        assert n - counters.error(person) <= truth[person] <= n
    present = dict(kept)
    assert all(p in present for p, t in truth.items() if t > len(stream) / capacity)
    assert counters.exact == (len(truth) <= capacity)
    again = summary(stream, capacity)
    assert again.top(capacity) == kept
    assert all(again.error(p) == counters.error(p) for p, _ in kept)


def drift(person: str) -> Drift:
    return Drift(Kind.WRONG_PERSON, "point", ("face",), None, None, person)


def report_of(tally: Tally, top: int) -> AuditReport:
    """Built the way audit() builds it."""
    return AuditReport(
        table="face_instances",
        collection="faces",
        rows=0,
        points=0,
        rows_without_point=0,
        counts=tally.counts(ScanStats()),
        top_persons=tally.top(top),
        top_persons_exact=tally.persons.exact,
        top_persons_error=tally.errors(top),
        persons_capacity=tally.persons.capacity,
        duration_seconds=0.0,
    )


def test_json_says_when_the_counts_are_bounds() -> None:
    exact = Tally(capacity=3)
    for person in ["x", "y", "x"]:
        exact.add(drift(person))
    data = report_of(exact, 2).to_json()
    assert data["top_persons_exact"] is True
    assert data["top_persons"] == [
        {"person_id": "x", "drifted": 2, "error": 0},
        {"person_id": "y", "drifted": 1, "error": 0},
    ]

    overflow = Tally(capacity=2)
    for person in ["a", "a", "a", "a", "b", "c", "d"]:
        overflow.add(drift(person))
    data = report_of(overflow, 2).to_json()
    assert data["top_persons_exact"] is False
    assert data["top_persons"] == [
        {"person_id": "a", "drifted": 4, "error": 0},
        {"person_id": "d", "drifted": 3, "error": 2},  # truly 1: c and b went before it
    ]
