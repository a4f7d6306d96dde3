"""Every option, declared once as an `Annotated` alias that each command lists.

Typer reads a command's options from its signature, so a command that needs the
connection settings lists the aliases below; their values come back through
`typer.Context.params`, from which `setting_flags` and `Scope.from_params` pick
their own. Nothing here rewrites a signature.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from reconcile.config import SETTING_NAMES
from reconcile.diff import DRIFT_KINDS
from reconcile.errors import ConfigError
from reconcile.incremental import load_since, save
from reconcile.settings import Settings
from reconcile.shards import parse_shard
from reconcile.targets import Targets, parse_since


class Format(StrEnum):
    table = "table"
    json = "json"


class LogFormat(StrEnum):
    text = "text"
    json = "json"


# --- the connection settings and the mapping (reconcile.settings.Settings) -------

DatabaseUrl = Annotated[
    str | None,
    typer.Option(help="PostgreSQL URL, any postgresql:// spelling (env DATABASE_URL)."),
]
QdrantUrl = Annotated[str | None, typer.Option(help="Qdrant server URL (env QDRANT_URL).")]
QdrantPath = Annotated[
    str | None, typer.Option(help="Qdrant local-mode directory (env QDRANT_PATH).")
]
QdrantEdge = Annotated[
    str | None, typer.Option(help="A Qdrant Edge store directory (extra reconcile[edge]).")
]
QdrantApiKey = Annotated[str | None, typer.Option(help="Qdrant API key (env QDRANT_API_KEY).")]
Collection = Annotated[
    str | None,
    typer.Option(help="Qdrant collection (env QDRANT_FACE_COLLECTION).", show_default="faces"),
]
Table = Annotated[
    str | None,
    typer.Option(help="Faces table, may be schema.table.", show_default="face_instances"),
]
PointColumn = Annotated[
    str | None,
    typer.Option(help="Column naming the Qdrant point.", show_default="qdrant_point_id"),
]
PersonColumn = Annotated[
    str | None, typer.Option(help="Column naming the person.", show_default="person_id")
]
IdColumn = Annotated[str | None, typer.Option(help="Column with the face id.", show_default="id")]
UpdatedColumn = Annotated[
    str | None,
    typer.Option(help="Timestamp column for --since, --min-age.", show_default="updated_at"),
]
PersonKey = Annotated[
    str | None, typer.Option(help="Payload key holding the person.", show_default="person_id")
]
FlagKey = Annotated[
    str | None,
    typer.Option(help="Boolean payload key that must equal 'has a person', e.g. is_assigned."),
]
Retries = Annotated[
    int | None,
    typer.Option(help="Retries of a failed Qdrant read (with backoff).", show_default="3"),
]
Timeout = Annotated[
    float | None, typer.Option(help="Seconds one Qdrant request may take.", show_default="30")
]
PageSize = Annotated[
    int | None,
    typer.Option(help="Rows per fetch and points per scroll page.", show_default="1000"),
]
MinAge = Annotated[
    float | None,
    typer.Option(help="Grace window: skip rows updated this many seconds ago or less."),
]
ConfigFile = Annotated[Path | None, typer.Option(help="A TOML file holding any of these settings.")]
EnvFile = Annotated[
    Path | None, typer.Option(help="A dotenv file (DATABASE_URL, QDRANT_URL, ...).")
]


def setting_flags(params: Mapping[str, Any]) -> dict[str, Any]:
    """The Settings fields given as flags (None: not given), from a command's parameters.

    Every Settings field has an option of the same name above; `config` and
    `env_file` name the files, not settings.
    """
    return {name: params.get(name) for name in SETTING_NAMES}


# --- how a run reports and logs --------------------------------------------------

LogFormatOption = Annotated[
    LogFormat, typer.Option(help="Logs on stderr: text lines or JSON lines.")
]
MetricsFile = Annotated[
    Path | None,
    typer.Option(help="Write a Prometheus textfile here (node_exporter), on failure too."),
]
Debug = Annotated[bool, typer.Option(help="Show tracebacks on errors.")]
FormatOption = Annotated[
    Format, typer.Option("--format", help="table for people, json for machines.")
]
OutputOption = Annotated[
    Path | None, typer.Option("--output", help="Write the report to this file instead of stdout.")
]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress, only errors.")]
MaxDurationOption = Annotated[
    float | None,
    typer.Option(help="Stop cleanly after this many seconds, reporting complete: false."),
]
FailOnOption = Annotated[
    str | None,
    typer.Option(help="Drift kinds that make the exit code 1 (comma list; default: all)."),
]
TopOption = Annotated[int, typer.Option(help="How many persons to list with the most drift.")]

# --- writing (repair, undo) ------------------------------------------------------

YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Apply without asking.")]
DryRunOption = Annotated[bool, typer.Option("--dry-run", help="Show the plan; write nothing.")]
BatchOption = Annotated[int, typer.Option(help="Points per batch: one lock, one write request.")]
LockTimeoutOption = Annotated[
    float, typer.Option(help="Seconds a batch may wait for a lock in PostgreSQL.")
]
DeadlineOption = Annotated[
    float,
    typer.Option(help="Seconds a batch may hold its row locks before the server ends it."),
]

# --- which faces (audit, repair) ---------------------------------------------------

FaceIdOption = Annotated[
    list[str] | None, typer.Option(help="Only this face (repeatable); no scan.")
]
PointIdOption = Annotated[
    list[str] | None, typer.Option(help="Only this point (repeatable); no scan.")
]
IdsFromOption = Annotated[
    str | None, typer.Option(help="Only the face ids in this file, one per line; - is stdin.")
]
SinceOption = Annotated[
    str | None,
    typer.Option(help="Only rows updated since: a duration (15m, 2h, 7d) or a timestamp."),
]
IncrementalOption = Annotated[
    Path | None,
    typer.Option(help="State file: continue from where the last successful run started."),
]
ShardOption = Annotated[
    str | None, typer.Option(help="Only the i-th of N equal slices of the point ids: i/N.")
]


@dataclass(frozen=True)
class Scope:
    """Which faces a command looks at: everything, given ids, or what changed lately."""

    face_ids: tuple[str, ...]
    point_ids: tuple[str, ...]
    ids_from: str | None
    since: str | None
    incremental: Path | None
    shard: tuple[int, int] = (1, 1)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Scope:
        """The scope options of a command's parameters (the aliases above)."""
        shard = params.get("shard")
        return cls(
            tuple(params.get("face_id") or ()),
            tuple(params.get("point_id") or ()),
            params.get("ids_from"),
            params.get("since"),
            params.get("incremental"),
            parse_shard(shard) if shard else (1, 1),
        )

    @property
    def everything(self) -> bool:
        """No ids, no window, no shard: the whole of both stores."""
        return self == Scope((), (), None, None, None)

    @property
    def shard_label(self) -> str:
        return "all" if self.shard == (1, 1) else f"{self.shard[0]}/{self.shard[1]}"

    def targets(self, settings: Settings) -> Targets | None:
        """None for a full scan; an incremental run without state yet is one too."""
        if self.shard != (1, 1) and (
            self.incremental or self.since or self.face_ids or self.point_ids or self.ids_from
        ):
            raise ConfigError("--shard slices a full scan: drop the ids, --since, --incremental")
        if self.incremental is not None:
            if self.since or self.face_ids or self.point_ids or self.ids_from:
                raise ConfigError("--incremental chooses its own window: drop --since and ids")
            since = load_since(self.incremental, settings.table, settings.collection)
            return None if since is None else Targets(since=since)
        if not (self.face_ids or self.point_ids or self.ids_from or self.since):
            return None
        return Targets(
            face_ids=self.face_ids,
            point_ids=self.point_ids,
            ids_from=self.ids_from,
            since=parse_since(self.since) if self.since else None,
        )

    def succeeded(self, settings: Settings, started: datetime | None) -> None:
        """Advance the incremental state; called only after a run that completed."""
        if self.incremental is not None and started is not None:
            save(self.incremental, started, settings.table, settings.collection)


def fail_on_kinds(text: str | None) -> frozenset[str]:
    """The kinds that make the exit code 1 (default: every drift kind)."""
    if text is None or text.strip() == "all":
        return frozenset(DRIFT_KINDS)
    kinds = frozenset(k.strip() for k in text.split(",") if k.strip())
    unknown = sorted(kinds - set(DRIFT_KINDS))
    if unknown or not kinds:
        raise ConfigError(
            f"--fail-on {text!r} names no drift kind or unknown ones ({', '.join(unknown)}): "
            f"use a comma list of {', '.join(DRIFT_KINDS)}, or all"
        )
    return kinds


def positive(seconds: float) -> float:
    """A --max-duration that makes sense: more than nothing, at most a week."""
    if not 0 < seconds <= 7 * 86400:
        raise ConfigError(f"--max-duration {seconds} is out of range: use (0, 604800] seconds")
    return seconds
