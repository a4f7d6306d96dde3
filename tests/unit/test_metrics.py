"""The Prometheus textfile: parsed back with prometheus-client's own parser."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from reconcile.diff import Kind
from reconcile.errors import ConfigError
from reconcile.metrics import Outcome, RunLabels, check_push_url, write_metrics, write_started
from reconcile.report import AuditReport

LABELS = {
    "command": "audit",
    "table": "faces",
    "collection": "faces_v1",
    "shard": "all",
    "scope": "full",
}


def make_audit(keys: dict[str, dict[str, int]] | None = None, **counts: int) -> AuditReport:
    full = {kind.value: 0 for kind in Kind}
    full.update(counts)
    return AuditReport(
        table="faces",
        collection="faces_v1",
        rows=120,
        points=118,
        rows_without_point=2,
        counts=full,
        top_persons=[],
        duration_seconds=1.5,
        keys=keys or {},
    )


def samples(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample in the file, keyed by name and sorted labels."""
    out = {}
    for family in text_string_to_metric_families(path.read_text(encoding="utf-8")):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(path: Path, name: str, **extra: str) -> float | None:
    key = (name, tuple(sorted({**LABELS, **extra}.items())))
    return samples(path).get(key)


def write(path: Path, now: float | None = None, **kwargs: object) -> None:
    """One run's metrics: `kwargs` are labels (default LABELS) and Outcome fields."""
    labels = {k: str(kwargs.pop(k, v)) for k, v in LABELS.items()}
    outcome: dict[str, object] = {"duration_seconds": 2.25, **kwargs}
    write_metrics(path, RunLabels(**labels), Outcome(**outcome), now=now)  # type: ignore[arg-type]


def test_successful_audit_writes_every_metric(tmp_path: Path) -> None:
    path = tmp_path / "reconcile.prom"
    audit = make_audit(in_sync=110, orphan_point=3, wrong_person=5)
    write(path, exit_code=1, audit=audit, now=1_700_000_000.0)

    assert value(path, "reconcile_drift_points", kind="in_sync") == 110
    assert value(path, "reconcile_drift_points", kind="orphan_point") == 3
    assert value(path, "reconcile_drift_points", kind="wrong_person") == 5
    assert value(path, "reconcile_drift_points", kind="missing_point") == 0
    assert value(path, "reconcile_rows_scanned") == 120
    assert value(path, "reconcile_points_scanned") == 118
    assert value(path, "reconcile_duration_seconds") == 2.25
    assert value(path, "reconcile_exit_code") == 1
    assert value(path, "reconcile_last_run_timestamp_seconds") == 1_700_000_000.0
    # Exit code 1 is drift found by a completed run: still a success.
    assert value(path, "reconcile_last_success_timestamp_seconds") == 1_700_000_000.0
    # An audit did not repair, so it does not claim 0 repaired.
    assert value(path, "reconcile_points_repaired") is None
    assert value(path, "reconcile_write_failures") is None


def test_every_series_carries_the_run_labels_and_every_family_is_a_documented_gauge(
    tmp_path: Path,
) -> None:
    path = tmp_path / "reconcile.prom"
    write(path, command="repair", exit_code=0, audit=make_audit(), repaired=4, failed=0, now=1.0)
    families = list(text_string_to_metric_families(path.read_text(encoding="utf-8")))
    assert {f.name for f in families} == {
        "reconcile_drift_points",
        "reconcile_rows_scanned",
        "reconcile_points_scanned",
        "reconcile_points_repaired",
        "reconcile_write_failures",
        "reconcile_duration_seconds",
        "reconcile_exit_code",
        "reconcile_last_run_timestamp_seconds",
        "reconcile_last_success_timestamp_seconds",
    }
    for family in families:
        assert family.type == "gauge"
        assert family.documentation
        for s in family.samples:
            assert {k: s.labels[k] for k in LABELS} == {**LABELS, "command": "repair"}
    assert value(path, "reconcile_points_repaired", command="repair") == 4
    assert value(path, "reconcile_write_failures", command="repair") == 0


def test_all_nine_kinds_are_present_even_when_zero(tmp_path: Path) -> None:
    path = tmp_path / "reconcile.prom"
    write(path, exit_code=0, audit=make_audit(in_sync=120))
    kinds = {
        dict(labels)["kind"] for (name, labels) in samples(path) if name == "reconcile_drift_points"
    }
    assert kinds == {kind.value for kind in Kind}
    assert len(kinds) == 9
    assert "payload_mismatch" in kinds


def test_one_series_per_compared_key_and_sub_kind_zeros_included(tmp_path: Path) -> None:
    path = tmp_path / "reconcile.prom"
    keys = {
        "person_id": {"missing": 2, "wrong": 0, "stale": 1},
        "is_assigned": {"missing": 0, "wrong": 3, "stale": 0},
        "cluster_id": {"missing": 4, "wrong": 7, "stale": 5},
        "asset_id": {"missing": 0, "wrong": 0, "stale": 0},
    }
    write(path, exit_code=1, audit=make_audit(keys, payload_mismatch=9), now=1.0)

    written = {
        (dict(labels)["key"], dict(labels)["sub_kind"]): v
        for (name, labels), v in samples(path).items()
        if name == "reconcile_key_drift_points"
    }
    assert written == {
        (key, sub): float(n) for key, subs in keys.items() for sub, n in subs.items()
    }
    assert value(path, "reconcile_key_drift_points", key="cluster_id", sub_kind="wrong") == 7
    assert value(path, "reconcile_drift_points", kind="payload_mismatch") == 9
    # Only the run's labels and the two of this family: the label set stays bounded.
    for (name, labels), _ in samples(path).items():
        if name == "reconcile_key_drift_points":
            assert set(dict(labels)) == {*LABELS, "key", "sub_kind"}


def test_a_failed_run_writes_no_key_series(tmp_path: Path) -> None:
    path = tmp_path / "reconcile.prom"
    write(path, exit_code=0, audit=make_audit({"person_id": {"missing": 1}}), now=1.0)
    write(path, exit_code=3, now=2.0)  # failed before scanning: nothing measured
    assert not any(name == "reconcile_key_drift_points" for name, _ in samples(path))


def test_a_kind_the_report_adds_is_not_dropped(tmp_path: Path) -> None:
    path = tmp_path / "reconcile.prom"
    audit = make_audit(some_future_kind=7)
    write(path, exit_code=0, audit=audit)
    assert value(path, "reconcile_drift_points", kind="some_future_kind") == 7


def test_failed_run_keeps_the_previous_last_success(tmp_path: Path) -> None:
    path = tmp_path / "reconcile.prom"
    write(path, exit_code=0, audit=make_audit(in_sync=120), now=1000.0)
    write(path, exit_code=3, now=2000.0)

    assert value(path, "reconcile_exit_code") == 3
    assert value(path, "reconcile_last_run_timestamp_seconds") == 2000.0
    assert value(path, "reconcile_last_success_timestamp_seconds") == 1000.0
    # What the failed run could not measure is absent, not zero.
    names = {name for name, _ in samples(path)}
    assert "reconcile_drift_points" not in names
    assert "reconcile_rows_scanned" not in names
    assert "reconcile_points_scanned" not in names

    # A second failure still carries the same success over; a later success replaces it.
    write(path, exit_code=130, now=3000.0)
    assert value(path, "reconcile_last_success_timestamp_seconds") == 1000.0
    write(path, exit_code=1, audit=make_audit(), now=4000.0)
    assert value(path, "reconcile_last_success_timestamp_seconds") == 4000.0


def test_failed_run_without_previous_file_has_no_last_success(tmp_path: Path) -> None:
    path = tmp_path / "reconcile.prom"
    write(path, exit_code=3, now=2000.0)
    names = {name for name, _ in samples(path)}
    assert "reconcile_last_success_timestamp_seconds" not in names
    assert value(path, "reconcile_exit_code") == 3
    assert value(path, "reconcile_last_run_timestamp_seconds") == 2000.0


def test_last_success_of_other_labels_is_not_carried_over(tmp_path: Path) -> None:
    path = tmp_path / "reconcile.prom"
    write(path, exit_code=0, audit=make_audit(), now=1000.0, collection="other")
    write(path, exit_code=3, now=2000.0)
    names = {name for name, _ in samples(path)}
    assert "reconcile_last_success_timestamp_seconds" not in names


def test_unparsable_previous_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "reconcile.prom"
    path.write_text("this is { not prometheus\n", encoding="utf-8")
    write(path, exit_code=4, now=2000.0)
    assert value(path, "reconcile_exit_code") == 4
    assert value(path, "reconcile_last_success_timestamp_seconds") is None


def test_write_leaves_no_temporary_file_and_a_readable_file(tmp_path: Path) -> None:
    path = tmp_path / "reconcile.prom"
    write(path, exit_code=0, audit=make_audit(), now=1.0)
    write(path, exit_code=3, now=2.0)
    assert [p.name for p in tmp_path.iterdir()] == ["reconcile.prom"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_file_is_readable_under_a_strict_umask(tmp_path: Path) -> None:
    path = tmp_path / "reconcile.prom"
    old = os.umask(0o077)
    try:
        write(path, exit_code=0, now=1.0)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_missing_directory_raises_config_error(tmp_path: Path) -> None:
    path = tmp_path / "absent" / "reconcile.prom"
    with pytest.raises(ConfigError) as info:
        write(path, exit_code=0, now=1.0)
    message = str(info.value)
    assert str(path) in message
    assert "--metrics-file" in message
    assert "\n" not in message
    assert not path.parent.exists()


def test_path_that_is_a_directory_raises_config_error_and_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "reconcile.prom"
    path.mkdir()
    with pytest.raises(ConfigError, match="cannot write metrics file"):
        write(path, exit_code=0, now=1.0)
    assert [p.name for p in tmp_path.iterdir()] == ["reconcile.prom"]
    assert path.is_dir()


def test_last_success_is_carried_over_only_for_the_same_shard_and_scope(tmp_path: Path) -> None:
    path = tmp_path / "reconcile.prom"
    write(path, exit_code=0, audit=make_audit(), now=1000.0, shard="1/2", scope="shard")
    write(path, exit_code=3, now=2000.0, shard="2/2", scope="shard")
    assert (
        value(path, "reconcile_last_success_timestamp_seconds", shard="2/2", scope="shard") is None
    )
    write(path, exit_code=0, now=3000.0, scope="incremental")
    write(path, exit_code=3, now=4000.0, scope="incremental")
    assert value(path, "reconcile_last_success_timestamp_seconds", scope="incremental") == 3000.0
    # Only this run's labels are in the file: a file is one run's.
    assert {dict(labels)["scope"] for _, labels in samples(path)} == {"incremental"}


def test_scope_is_one_of_a_fixed_set() -> None:
    with pytest.raises(ValueError, match="scope"):
        RunLabels("audit", "faces", "faces_v1", "all", "since 2026-11-20T00:00:00+00:00")


def test_run_started_is_written_at_start_keeping_the_last_run(tmp_path: Path) -> None:
    path = tmp_path / "reconcile.prom"
    write(path, exit_code=1, audit=make_audit(wrong_person=4), started=900.0, now=1000.0)
    write_started(path, RunLabels(**LABELS), 5000.0)

    # While the run goes on: it started after the last run ended, and the last run's
    # drift and success stay visible.
    assert value(path, "reconcile_run_started_timestamp_seconds") == 5000.0
    assert value(path, "reconcile_last_run_timestamp_seconds") == 1000.0
    assert value(path, "reconcile_last_success_timestamp_seconds") == 1000.0
    assert value(path, "reconcile_drift_points", kind="wrong_person") == 4
    assert stat.S_IMODE(path.stat().st_mode) == 0o644

    write(path, exit_code=3, started=5000.0, now=6000.0)
    assert value(path, "reconcile_run_started_timestamp_seconds") == 5000.0
    assert value(path, "reconcile_last_run_timestamp_seconds") == 6000.0
    assert value(path, "reconcile_last_success_timestamp_seconds") == 1000.0


def test_run_started_on_a_fresh_or_foreign_file(tmp_path: Path) -> None:
    path = tmp_path / "reconcile.prom"
    write_started(path, RunLabels(**LABELS), 7.0)
    assert samples(path) == {
        ("reconcile_run_started_timestamp_seconds", tuple(sorted(LABELS.items()))): 7.0
    }
    path.write_text("this is { not prometheus\n", encoding="utf-8")
    write_started(path, RunLabels(**LABELS), 8.0)
    assert value(path, "reconcile_run_started_timestamp_seconds") == 8.0
    with pytest.raises(ConfigError, match="cannot write metrics file"):
        write_started(tmp_path / "absent" / "r.prom", RunLabels(**LABELS), 9.0)


@pytest.mark.parametrize(
    ("options", "shard", "scope"),
    [
        ({}, "all", "full"),
        ({"shard": "1/2"}, "1/2", "shard"),
        ({"shard": "1/1"}, "all", "full"),
        ({"incremental": Path("state.json")}, "all", "incremental"),
        ({"since": "2h"}, "all", "since"),
        ({"face_id": ["7"]}, "all", "ids"),
        ({"point_id": ["7"], "since": "2h"}, "all", "ids"),
        ({"ids_from": "-"}, "all", "ids"),
    ],
)
def test_the_run_labels_its_scope_from_the_options(
    options: dict[str, object], shard: str, scope: str
) -> None:
    from reconcile.cli.boundary import Run
    from reconcile.cli.scope import Scope

    run = Run("repair")
    run.label_scope(options, Scope.from_params(options))
    assert (run.labels.shard, run.labels.scope) == (shard, scope)


def test_a_malformed_shard_keeps_a_label_of_its_own() -> None:
    from reconcile.cli.boundary import Run

    run = Run("repair")
    run.label_scope({"shard": " 3/2 "})
    assert (run.labels.shard, run.labels.scope) == ("3/2", "shard")


@pytest.mark.parametrize(
    "url", ["not a url", "ftp://gateway:9091", "http://", "http://host:port", "http://h?x=1"]
)
def test_a_push_url_that_is_not_a_gateway_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match=r"--metrics-push .* http://HOST:9091"):
        check_push_url(url)


def test_a_push_url_never_shows_its_password() -> None:
    for url in ("ftp://user:hunter2@gateway:9091", "http://user:hunter2@gateway:9091"):
        with pytest.raises(ConfigError, match=r"http://HOST:9091") as info:
            check_push_url(url)
        assert "hunter2" not in str(info.value)
    assert check_push_url("https://gateway.example:9091/prefix/") == (
        "https://gateway.example:9091/prefix"
    )
