"""A run's Prometheus metrics: a textfile for node_exporter, or a push to a Pushgateway.

Every series is a gauge holding the value of the last run: the collector re-reads the file
on each scrape, so counters would reset on every run and `rate()` over them would be noise.
Every series carries the labels of `RunLabels`: two runs that a deployment schedules
side by side (the shards of one job, the incremental and the nightly run) differ in
`shard` or `scope`, so their files never repeat a series, which node_exporter refuses.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

# prometheus_client is imported where a metric is written or read: every command
# imports this module (through the CLI's boundary), a run with neither --metrics-file
# nor --metrics-push never needs it, and it costs tens of milliseconds per start.
if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

from reconcile.diff import SUB_KINDS, Kind
from reconcile.errors import ConfigError, ExitCode
from reconcile.report import AuditReport
from reconcile.settings import http_url, mask_url

PREFIX = "reconcile_"
LAST_SUCCESS = f"{PREFIX}last_success_timestamp_seconds"
RUN_STARTED = f"{PREFIX}run_started_timestamp_seconds"
LABELS = ("command", "table", "collection", "shard", "scope")
# The `scope` label: which faces a run looks at, from a fixed set so that a series
# keeps its identity from run to run (never a timestamp).
SCOPES = ("full", "shard", "incremental", "since", "ids")
ALL_SHARDS = "all"  # the `shard` label of a run that is not sharded
JOB = "reconcile"  # the Pushgateway's job label
PUSH_TIMEOUT = 10.0  # seconds: a gateway that does not answer must not hold the run up

# The file holds only counts, durations and timestamps (no person or face ids), so unlike
# the details file it may be world-readable; node_exporter usually runs as its own user.
FILE_MODE = 0o644


@dataclass(frozen=True)
class RunLabels:
    """The labels of every series of one run: what tells its file and group apart."""

    command: str
    table: str
    collection: str
    shard: str = ALL_SHARDS
    scope: str = "full"

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise ValueError(f"scope {self.scope!r} is not one of {SCOPES}")

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


ORPHAN_ACTIONS = ("marked", "deleted", "rescued", "waiting", "failed")


@dataclass(frozen=True)
class Outcome:
    """What one run measured. A value left as None is left out of the metrics, so that
    a run that failed before scanning does not claim zero drift."""

    exit_code: int
    duration_seconds: float
    audit: AuditReport | None = None
    repaired: int | None = None
    failed: int | None = None
    started: float | None = None  # Unix time the run started
    # repair --delete-orphans: points marked, deleted, rescued and waiting (ORPHAN_ACTIONS)
    orphans: dict[str, int] | None = None

    @property
    def succeeded(self) -> bool:
        # Exit code 1 means the run completed and found drift; only 2 and above mean it failed.
        return self.exit_code in (ExitCode.OK, ExitCode.DRIFT)


def write_metrics(
    path: Path, labels: RunLabels, outcome: Outcome, *, now: float | None = None
) -> None:
    """Replace `path` atomically with the metrics of one finished run."""
    now = time.time() if now is None else now
    previous = None if outcome.succeeded else _previous_success(_read(path), labels)
    _write(path, _registry(labels, outcome, now, previous))


def write_started(path: Path, labels: RunLabels, started: float) -> None:
    """Add the run-started time to `path`, keeping what the last run of these labels left.

    So a run that is still going is visible (an alert on a run lock held too long), and
    the last run's drift and success stay in place until this run replaces them.
    """
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    registry.register(_Kept(_families(_read(path), labels, drop=RUN_STARTED)))
    _started_gauge(registry, labels, started)
    _write(path, registry)


def check_push_url(url: str) -> str:
    """The Pushgateway URL as given, if it is one: http(s)://HOST[:PORT][/PREFIX]."""
    parts = http_url(url)
    if parts is None or parts.query:
        raise ConfigError(
            f"--metrics-push {mask_url(url)!r} is not a Pushgateway URL: "
            "use http://HOST:9091 (or https://)"
        )
    if parts.username is not None:
        # urllib, under prometheus_client's push, would take the user and password for
        # part of the host name and fail on every push.
        raise ConfigError(
            f"--metrics-push {mask_url(url)!r} holds a user name or password, which is not "
            "supported: use http://HOST:9091 (no credentials)"
        )
    return url.rstrip("/")


def push_started(url: str, labels: RunLabels, started: float) -> str | None:
    """Push the run-started time into the run's group, leaving its other metrics there.

    Returns None, or why the gateway could not be reached (the run goes on).
    """
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    _started_gauge(registry, labels, started)
    return _push(url, labels, registry, replace=False)


def push_metrics(
    url: str, labels: RunLabels, outcome: Outcome, *, now: float | None = None
) -> str | None:
    """Replace the run's group on the gateway with the metrics of one finished run.

    A failed run carries the last success over from the group itself, as the textfile
    does from the file. Returns None, or why the gateway could not be reached.
    """
    now = time.time() if now is None else now
    previous = None
    if not outcome.succeeded:
        try:
            # http(s) only: `url` passed check_push_url.
            scrape = f"{url}/metrics"
            with urllib.request.urlopen(scrape, timeout=PUSH_TIMEOUT) as answer:  # noqa: S310
                text = answer.read().decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            return _reason(exc)
        previous = _previous_success(text, labels, job=JOB)
    return _push(url, labels, _registry(labels, outcome, now, previous), replace=True)


def grouping_key(labels: RunLabels) -> dict[str, str]:
    """The Pushgateway group of a run: every label, so shards and scopes never share one."""
    return labels.as_dict()


def _push(url: str, labels: RunLabels, registry: CollectorRegistry, *, replace: bool) -> str | None:
    # PUT replaces the whole group (a finished run's complete set); POST only the metrics
    # pushed (the start keeps the last run's drift and success beside it).
    from prometheus_client import push_to_gateway, pushadd_to_gateway

    push = push_to_gateway if replace else pushadd_to_gateway
    try:
        push(url, JOB, registry, grouping_key=grouping_key(labels), timeout=PUSH_TIMEOUT)
    except OSError as exc:
        return _reason(exc)
    return None


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
    return mask_url(str(reason))


def _registry(
    labels: RunLabels, outcome: Outcome, now: float, previous_success: float | None
) -> CollectorRegistry:
    """Every series of a finished run."""
    from prometheus_client import CollectorRegistry, Gauge

    values = labels.as_dict()
    registry = CollectorRegistry()

    def gauge(name: str, documentation: str, value: float) -> None:
        Gauge(PREFIX + name, documentation, LABELS, registry=registry).labels(**values).set(value)

    audit = outcome.audit
    if audit is not None:
        drift = Gauge(
            f"{PREFIX}drift_points",
            "Points found in each drift kind by the last run (in_sync included).",
            (*LABELS, "kind"),
            registry=registry,
        )
        # Every kind is written, zeros included, so that alerts on a kind see 0 rather than
        # an absent series once the drift is gone.
        kinds = [kind.value for kind in Kind]
        kinds += sorted(set(audit.counts) - set(kinds))
        for kind in kinds:
            drift.labels(**values, kind=kind).set(audit.counts.get(kind, 0))
        if audit.keys:
            by_key = Gauge(
                f"{PREFIX}key_drift_points",
                "Points whose payload key differs from PostgreSQL in the last run, per compared "
                "key (person, flag, --map keys) and how: missing, wrong or stale.",
                (*LABELS, "key", "sub_kind"),
                registry=registry,
            )
            # The keys are the configured ones, never data, so the series stay few; every
            # sub-kind is written, zeros included, as the kinds are.
            for key, subs in audit.keys.items():
                for sub in SUB_KINDS:
                    by_key.labels(**values, key=key, sub_kind=sub).set(subs.get(sub, 0))
        gauge("rows_scanned", "PostgreSQL rows read by the last run.", audit.rows)
        gauge("points_scanned", "Qdrant points read by the last run.", audit.points)
    if outcome.repaired is not None:
        gauge("points_repaired", "Qdrant points rewritten by the last run.", outcome.repaired)
    if outcome.failed is not None:
        gauge("write_failures", "Planned point writes that failed in the last run.", outcome.failed)
    if outcome.orphans is not None:
        orphans = Gauge(
            f"{PREFIX}orphan_points",
            "Orphan points the last repair --delete-orphans marked (first sighting), "
            "deleted, rescued (a row names them again), left waiting for the grace, or "
            "failed to delete.",
            (*LABELS, "action"),
            registry=registry,
        )
        for action in ORPHAN_ACTIONS:
            orphans.labels(**values, action=action).set(outcome.orphans.get(action, 0))
    gauge("duration_seconds", "Wall-clock duration of the last run.", outcome.duration_seconds)
    gauge("exit_code", "Exit code of the last run (see the README's table).", outcome.exit_code)
    gauge("last_run_timestamp_seconds", "Unix time the last run ended.", now)
    if outcome.started is not None:
        _started_gauge(registry, labels, outcome.started)
    last_success = now if outcome.succeeded else previous_success
    if last_success is not None:
        gauge(
            "last_success_timestamp_seconds",
            "Unix time the last completed run (exit code 0 or 1) ended.",
            last_success,
        )
    return registry


def _started_gauge(registry: CollectorRegistry, labels: RunLabels, started: float) -> None:
    from prometheus_client import Gauge

    Gauge(
        RUN_STARTED,
        "Unix time the last run started; after the last run's end while it is still going.",
        LABELS,
        registry=registry,
    ).labels(**labels.as_dict()).set(started)


class _Kept:
    """A collector serving families read back from a file, unchanged."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        # An unreadable or foreign file only costs what it held; the write that follows
        # reports a path that is truly unusable.
        return ""


def _matches(sample_labels: dict[str, str], labels: RunLabels, job: str | None) -> bool:
    wanted = labels.as_dict() if job is None else {**labels.as_dict(), "job": job}
    return all(sample_labels.get(key) == value for key, value in wanted.items())


def _families(text: str, labels: RunLabels, drop: str, job: str | None = None) -> list[Metric]:
    """The families of `text` with only the samples of these labels; none when unparsable."""
    from prometheus_client.parser import text_string_to_metric_families

    kept: list[Metric] = []
    try:
        for family in text_string_to_metric_families(text):
            samples = [s for s in family.samples if _matches(s.labels, labels, job)]
            if family.name != drop and samples:
                family.samples = samples
                kept.append(family)
    except ValueError:
        return []
    return kept


def _previous_success(text: str, labels: RunLabels, job: str | None = None) -> float | None:
    """The last-success time `text` holds for these labels (and job), if any.

    Carrying it over is what lets an alert on `time() - last_success` keep firing
    through a string of failed runs instead of resetting with each of them.
    """
    for family in _families(text, labels, drop="", job=job):
        for sample in family.samples:
            if sample.name == LAST_SUCCESS:
                return float(sample.value)
    return None


def _write(path: Path, registry: CollectorRegistry) -> None:
    """Write through `write_to_textfile`, then fix the mode and rename into place.

    `write_to_textfile` creates its file under the process umask, which cron or systemd
    may set to 077 and so hide the file from node_exporter; changing the umask is
    process-wide and races with worker threads. So it writes into a private staging
    directory beside `path` (same filesystem, so the final rename stays atomic), and the
    mode is set before the file becomes visible. The collector reads only `*.prom` files
    at the top of its directory, so the staging directory is never scraped half-written.
    """
    from prometheus_client import write_to_textfile

    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            staged = staging / path.name
            write_to_textfile(str(staged), registry)
            os.chmod(staged, FILE_MODE)
            os.replace(staged, path)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(
            f"cannot write metrics file {path}: {reason}; create its directory or make it "
            "writable, or pass another --metrics-file"
        ) from None
