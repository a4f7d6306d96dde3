"""The Prometheus textfile a scheduled run leaves for node_exporter's textfile collector.

Every series is a gauge holding the value of the last run: the collector re-reads the file
on each scrape, so counters would reset on every run and `rate()` over them would be noise.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile
from prometheus_client.parser import text_string_to_metric_families

from reconcile.diff import Kind
from reconcile.errors import ConfigError, ExitCode
from reconcile.report import AuditReport

PREFIX = "reconcile_"
LAST_SUCCESS = f"{PREFIX}last_success_timestamp_seconds"
LABELS = ("command", "table", "collection")

# The file holds only counts, durations and timestamps (no person or face ids), so unlike
# the details file it may be world-readable; node_exporter usually runs as its own user.
FILE_MODE = 0o644


def write_metrics(
    path: Path,
    *,
    command: str,
    table: str,
    collection: str,
    exit_code: int,
    duration_seconds: float,
    audit: AuditReport | None = None,
    repaired: int | None = None,
    failed: int | None = None,
    now: float | None = None,
) -> None:
    """Replace `path` atomically with the metrics of one run.

    Pass only what the run measured: a value left as None is left out of the file, so
    that a run that failed before scanning does not claim zero drift.
    """
    now = time.time() if now is None else now
    labels = {"command": command, "table": table, "collection": collection}
    registry = CollectorRegistry()

    def gauge(name: str, documentation: str, value: float) -> None:
        Gauge(PREFIX + name, documentation, LABELS, registry=registry).labels(**labels).set(value)

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
            drift.labels(**labels, kind=kind).set(audit.counts.get(kind, 0))
        gauge("rows_scanned", "PostgreSQL rows read by the last run.", audit.rows)
        gauge("points_scanned", "Qdrant points read by the last run.", audit.points)
    if repaired is not None:
        gauge("points_repaired", "Qdrant points rewritten by the last run.", repaired)
    if failed is not None:
        gauge("write_failures", "Planned point writes that failed in the last run.", failed)
    gauge("duration_seconds", "Wall-clock duration of the last run.", duration_seconds)
    gauge("exit_code", "Exit code of the last run (see the README's table).", exit_code)
    gauge("last_run_timestamp_seconds", "Unix time the last run ended.", now)

    # Exit code 1 means the run completed and found drift; only 2 and above mean it failed.
    last_success = (
        now if exit_code in (ExitCode.OK, ExitCode.DRIFT) else _previous_success(path, labels)
    )
    if last_success is not None:
        gauge(
            "last_success_timestamp_seconds",
            "Unix time the last completed run (exit code 0 or 1) ended.",
            last_success,
        )

    _write(path, registry)


def _previous_success(path: Path, labels: dict[str, str]) -> float | None:
    """The last-success time the file at `path` holds for these labels, if any.

    Carrying it over is what lets an alert on `time() - last_success` keep firing
    through a string of failed runs instead of resetting with each of them.
    """
    try:
        text = path.read_text(encoding="utf-8")
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == LAST_SUCCESS and all(
                    sample.labels.get(key) == value for key, value in labels.items()
                ):
                    return float(sample.value)
    except (OSError, UnicodeDecodeError, ValueError):
        # An unreadable or foreign file only costs the carried-over time; the write that
        # follows reports a path that is truly unusable.
        return None
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
