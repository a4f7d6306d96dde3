"""Every option, declared once, and the groups of options commands share.

A command's own options are its parameters, as Typer reads them; an option
several commands take is an `Annotated` alias below. The groups several
commands take whole (the connection settings, how a run logs, which faces it
looks at) are each declared once as a function whose signature Typer reads
like a command's; `command_class(...)` gives a command those options through
Typer's documented `cls=` hook, and their values reach the command as
`shared(ctx)`. No signature is rewritten, and no option list is repeated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.main
from typer.core import TyperCommand

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


# --- options several commands take ------------------------------------------------

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

# --- the groups commands share --------------------------------------------------


def settings_options(
    database_url: Annotated[
        str | None,
        typer.Option(help="PostgreSQL URL, any postgresql:// spelling (env DATABASE_URL)."),
    ] = None,
    qdrant_url: Annotated[
        str | None, typer.Option(help="Qdrant server URL (env QDRANT_URL).")
    ] = None,
    qdrant_path: Annotated[
        str | None, typer.Option(help="Qdrant local-mode directory (env QDRANT_PATH).")
    ] = None,
    qdrant_edge: Annotated[
        str | None, typer.Option(help="A Qdrant Edge store directory (extra reconcile[edge]).")
    ] = None,
    qdrant_api_key: Annotated[
        str | None, typer.Option(help="Qdrant API key (env QDRANT_API_KEY).")
    ] = None,
    collection: Annotated[
        str | None,
        typer.Option(help="Qdrant collection (env QDRANT_FACE_COLLECTION).", show_default="faces"),
    ] = None,
    table: Annotated[
        str | None,
        typer.Option(help="Faces table, may be schema.table.", show_default="face_instances"),
    ] = None,
    point_column: Annotated[
        str | None,
        typer.Option(help="Column naming the Qdrant point.", show_default="qdrant_point_id"),
    ] = None,
    person_column: Annotated[
        str | None, typer.Option(help="Column naming the person.", show_default="person_id")
    ] = None,
    id_column: Annotated[
        str | None, typer.Option(help="Column with the face id.", show_default="id")
    ] = None,
    updated_column: Annotated[
        str | None,
        typer.Option(help="Timestamp column for --since, --min-age.", show_default="updated_at"),
    ] = None,
    person_key: Annotated[
        str | None, typer.Option(help="Payload key holding the person.", show_default="person_id")
    ] = None,
    flag_key: Annotated[
        str | None,
        typer.Option(help="Boolean payload key that must equal 'has a person', e.g. is_assigned."),
    ] = None,
    retries: Annotated[
        int | None,
        typer.Option(help="Retries of a failed Qdrant read (with backoff).", show_default="3"),
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Seconds one Qdrant request may take.", show_default="30")
    ] = None,
    page_size: Annotated[
        int | None,
        typer.Option(help="Rows per fetch and points per scroll page.", show_default="1000"),
    ] = None,
    min_age: Annotated[
        float | None,
        typer.Option(help="Grace window: skip rows updated this many seconds ago or less."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="A TOML file holding any of these settings.")
    ] = None,
    env_file: Annotated[
        Path | None, typer.Option(help="A dotenv file (DATABASE_URL, QDRANT_URL, ...).")
    ] = None,
) -> None:
    """The connection settings and the mapping (one option per field of Settings), and
    the files that may hold them."""


def setting_flags(params: Mapping[str, Any]) -> dict[str, Any]:
    """The Settings fields given as flags (None: not given), from a command's options.

    Every Settings field has an option of the same name in `settings_options`;
    `config` and `env_file` name the files, not settings.
    """
    return {name: params.get(name) for name in SETTING_NAMES}


def run_options(
    log_format: Annotated[
        LogFormat, typer.Option(help="Logs on stderr: text lines or JSON lines.")
    ] = LogFormat.text,
    metrics_file: Annotated[
        Path | None,
        typer.Option(help="Write a Prometheus textfile here (node_exporter), on failure too."),
    ] = None,
    debug: Debug = False,
) -> None:
    """How a run that reaches the stores logs, and where it leaves its metrics."""


def scope_options(
    face_id: Annotated[
        list[str] | None, typer.Option(help="Only this face (repeatable); no scan.")
    ] = None,
    point_id: Annotated[
        list[str] | None, typer.Option(help="Only this point (repeatable); no scan.")
    ] = None,
    ids_from: Annotated[
        str | None, typer.Option(help="Only the face ids in this file, one per line; - is stdin.")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Only rows updated since: a duration (15m, 2h, 7d) or a timestamp."),
    ] = None,
    incremental: Annotated[
        Path | None,
        typer.Option(help="State file: continue from where the last successful run started."),
    ] = None,
    shard: Annotated[
        str | None, typer.Option(help="Only the i-th of N equal slices of the point ids: i/N.")
    ] = None,
) -> None:
    """Which faces a run looks at (`Scope`)."""


_SHARED = "reconcile.shared"


def _options_of(declaration: Callable[..., None]) -> list[Any]:
    """The Click options Typer builds from `declaration`'s signature, as for a command."""
    declared = typer.Typer(add_completion=False)
    declared.command()(declaration)
    return list(typer.main.get_command(declared).params)


def command_class(*groups: Callable[..., None]) -> type[TyperCommand]:
    """A command class that adds these groups' options after the command's own.

    Their values are taken out of the parameters Typer passes to the command
    function (which does not declare them) and kept for `shared(ctx)`.
    """

    class Command(TyperCommand):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.shared = [option for group in groups for option in _options_of(group)]
            self.params.extend(self.shared)

        def invoke(self, ctx: Any) -> Any:
            ctx.meta[_SHARED] = {p.name: ctx.params.pop(p.name) for p in self.shared}
            return super().invoke(ctx)

    return Command


def shared(ctx: typer.Context) -> dict[str, Any]:
    """The values of the shared options a command was given (every one, defaults included)."""
    values: dict[str, Any] = ctx.meta[_SHARED]
    return values


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
