"""Every option, declared once, and the groups of options commands share.

A command's own options are its parameters, as Typer reads them; an option
several commands take is an `Annotated` alias below. The groups several
commands take whole (the connection settings, how a run logs, which faces it
looks at) are each declared once as a function whose signature Typer reads
like a command's; `command_class(...)` gives a command those options through
Typer's documented `cls=` hook, and their values reach the command as
`shared(ctx)`. No signature is rewritten, and no option list is repeated.
Longer than most modules on purpose: it is the one list of every option, and
an option is looked for in one file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
import typer.main
from typer.core import TyperCommand

from reconcile.config import SETTING_NAMES
from reconcile.settings import maps_of


class Format(StrEnum):
    table = "table"
    json = "json"


class LogFormat(StrEnum):
    text = "text"
    json = "json"


# --- options several commands take ------------------------------------------------

Debug = Annotated[
    bool,
    typer.Option(
        "--debug", help="Show tracebacks on errors.", rich_help_panel="Output", metavar=""
    ),
]
FormatOption = Annotated[
    Format,
    typer.Option("--format", help="table for people, json for machines.", rich_help_panel="Output"),
]
OutputOption = Annotated[
    Path | None,
    typer.Option(
        "--output",
        help="Write the report to this file instead of stdout.",
        rich_help_panel="Output",
    ),
]
QuietOption = Annotated[
    bool,
    typer.Option(
        "--quiet", "-q", help="No progress, only errors.", rich_help_panel="Output", metavar=""
    ),
]
MaxDurationOption = Annotated[
    float | None,
    typer.Option(
        help="Stop cleanly after this many seconds, reporting complete: false.",
        rich_help_panel="Cron",
    ),
]
FailOnOption = Annotated[
    str | None,
    typer.Option(
        help="Drift kinds that make the exit code 1 (comma list; default: all); key:NAME for "
        "drift of one compared payload key.",
        rich_help_panel="Cron",
    ),
]
TopOption = Annotated[
    int,
    typer.Option(
        help="How many persons (and values of each --map key) to list with the most drift.",
        rich_help_panel="Output",
    ),
]

# --- writing (repair, undo) ------------------------------------------------------

YesOption = Annotated[
    bool,
    typer.Option("--yes", "-y", help="Apply without asking.", rich_help_panel="Safety", metavar=""),
]
DryRunOption = Annotated[
    bool,
    typer.Option(
        "--dry-run", help="Show the plan; write nothing.", rich_help_panel="Safety", metavar=""
    ),
]
BatchOption = Annotated[
    int,
    typer.Option(help="Points per batch: one lock, one write request.", rich_help_panel="Safety"),
]
LockTimeoutOption = Annotated[
    float,
    typer.Option(
        help="Seconds a batch may wait for a lock in PostgreSQL.", rich_help_panel="Safety"
    ),
]
DeadlineOption = Annotated[
    float,
    typer.Option(
        help="Seconds a batch may hold its row locks before the server ends it.",
        rich_help_panel="Safety",
    ),
]

# --- the groups commands share --------------------------------------------------


def settings_options(
    database_url: Annotated[
        str | None,
        typer.Option(
            help="PostgreSQL URL, any postgresql:// spelling (env DATABASE_URL).",
            rich_help_panel="Connection",
        ),
    ] = None,
    qdrant_url: Annotated[
        str | None,
        typer.Option(help="Qdrant server URL (env QDRANT_URL).", rich_help_panel="Connection"),
    ] = None,
    qdrant_path: Annotated[
        str | None,
        typer.Option(
            help="Qdrant local-mode directory (env QDRANT_PATH).", rich_help_panel="Connection"
        ),
    ] = None,
    qdrant_edge: Annotated[
        str | None,
        typer.Option(
            help="A Qdrant Edge store directory (extra reconcile\\[edge]).",
            rich_help_panel="Connection",
        ),
    ] = None,
    qdrant_api_key: Annotated[
        str | None,
        typer.Option(help="Qdrant API key (env QDRANT_API_KEY).", rich_help_panel="Connection"),
    ] = None,
    collection: Annotated[
        str | None,
        typer.Option(
            help="Qdrant collection (env QDRANT_FACE_COLLECTION).",
            show_default="faces",
            rich_help_panel="Connection",
        ),
    ] = None,
    table: Annotated[
        str | None,
        typer.Option(
            help="Faces table or view, may be schema.table.",
            show_default="face_instances",
            rich_help_panel="Mapping",
        ),
    ] = None,
    point_column: Annotated[
        str | None,
        typer.Option(
            help="Column naming the Qdrant point.",
            show_default="qdrant_point_id",
            rich_help_panel="Mapping",
        ),
    ] = None,
    person_column: Annotated[
        str | None,
        typer.Option(
            help="Column naming the person.", show_default="person_id", rich_help_panel="Mapping"
        ),
    ] = None,
    id_column: Annotated[
        str | None,
        typer.Option(help="Column with the face id.", show_default="id", rich_help_panel="Mapping"),
    ] = None,
    updated_column: Annotated[
        str | None,
        typer.Option(
            help="Timestamp column for --since, --min-age.",
            show_default="updated_at",
            rich_help_panel="Mapping",
        ),
    ] = None,
    person_key: Annotated[
        str | None,
        typer.Option(
            help="Payload key holding the person.",
            show_default="person_id",
            rich_help_panel="Mapping",
        ),
    ] = None,
    flag_key: Annotated[
        str | None,
        typer.Option(
            help="Boolean payload key that must equal 'has a person', e.g. is_assigned.",
            rich_help_panel="Mapping",
        ),
    ] = None,
    map: Annotated[  # named as the flag and the config key, though a builtin
        list[str] | None,
        typer.Option(
            "--map",
            metavar="KEY=COLUMN",
            help="Payload KEY that must mirror COLUMN: KEY=COLUMN, or KEY=COLUMN::text for "
            "its value written as a string (repeatable; replaces a config file's map).",
            rich_help_panel="Mapping",
        ),
    ] = None,
    retries: Annotated[
        int | None,
        typer.Option(
            help="Retries of a failed Qdrant read (with backoff).",
            show_default="3",
            rich_help_panel="Connection",
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            help="Seconds one Qdrant request may take.",
            show_default="30",
            rich_help_panel="Connection",
        ),
    ] = None,
    page_size: Annotated[
        int | None,
        typer.Option(
            help="Rows per fetch and points per scroll page.",
            show_default="1000",
            rich_help_panel="Connection",
        ),
    ] = None,
    min_age: Annotated[
        float | None,
        typer.Option(
            help="Grace window: skip rows updated this many seconds ago or less.",
            rich_help_panel="Scope",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            help="A TOML file holding any of these settings.", rich_help_panel="Connection"
        ),
    ] = None,
    env_file: Annotated[
        Path | None,
        typer.Option(
            help="A dotenv file (DATABASE_URL, QDRANT_URL, ...).", rich_help_panel="Connection"
        ),
    ] = None,
) -> None:
    """The connection settings and the mapping (one option per field of Settings), and
    the files that may hold them."""


def setting_flags(params: Mapping[str, Any]) -> dict[str, Any]:
    """The Settings fields given as flags (None: not given), from a command's options.

    Every Settings field has an option of the same name in `settings_options`, but
    repair's `orphan_options`; `config` and `env_file` name the files, not settings.
    """
    flags = {name: params.get(name) for name in SETTING_NAMES}
    # Repeatable: an empty list is "not given", so a config file's map still counts.
    flags["map"] = maps_of(flags["map"]) if flags.get("map") else None
    return flags


def run_options(
    log_format: Annotated[
        LogFormat,
        typer.Option(help="Logs on stderr: text lines or JSON lines.", rich_help_panel="Output"),
    ] = LogFormat.text,
    metrics_file: Annotated[
        Path | None,
        typer.Option(
            help="Write a Prometheus textfile here (node_exporter), on failure too.",
            rich_help_panel="Cron",
        ),
    ] = None,
    metrics_push: Annotated[
        str | None,
        typer.Option(
            help="Push the metrics to this Pushgateway too, e.g. http://HOST:9091.",
            rich_help_panel="Cron",
        ),
    ] = None,
    debug: Debug = False,
) -> None:
    """How a run that reaches the stores logs, and where it leaves its metrics."""


def orphan_options(
    delete_orphans: Annotated[
        bool | None,
        typer.Option(
            "--delete-orphans/--no-delete-orphans",
            help="Delete points no row names: marked on the first sighting, deleted on one "
            "at least --orphan-grace later, journaled whole for undo.",
            show_default="off",
            metavar="",
            rich_help_panel="Orphans",
        ),
    ] = None,
    orphan_grace: Annotated[
        str | None,
        typer.Option(
            help="Least time between the two sightings: longer than the service's longest "
            "gap between writing a point and committing its row.",
            show_default="1h",
            metavar="DURATION",
            rich_help_panel="Orphans",
        ),
    ] = None,
    max_deletes: Annotated[
        str | None,
        typer.Option(
            help="Refuse the run if it would mark and delete more: a number, or a % of the "
            "points scanned.",
            show_default="1%",
            metavar="N|P%",
            rich_help_panel="Orphans",
        ),
    ] = None,
    orphan_table: Annotated[
        str | None,
        typer.Option(
            help="With a view as --table: the table behind it that holds the point column.",
            metavar="TABLE",
            rich_help_panel="Orphans",
        ),
    ] = None,
) -> None:
    """repair's --delete-orphans and its limits (Settings fields: a config file may set them)."""


def scope_options(
    face_id: Annotated[
        list[str] | None,
        typer.Option(
            help="Only this face (repeatable); no scan.", metavar="ID", rich_help_panel="Scope"
        ),
    ] = None,
    point_id: Annotated[
        list[str] | None,
        typer.Option(
            help="Only this point (repeatable); no scan.", metavar="ID", rich_help_panel="Scope"
        ),
    ] = None,
    ids_from: Annotated[
        str | None,
        typer.Option(
            help="Only the face ids in this file, one per line; - is stdin.",
            rich_help_panel="Scope",
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            help="Only rows updated since: a duration (15m, 2h, 7d) or a timestamp.",
            rich_help_panel="Scope",
        ),
    ] = None,
    incremental: Annotated[
        Path | None,
        typer.Option(
            help="State file: continue from where the last successful run started.",
            rich_help_panel="Scope",
        ),
    ] = None,
    shard: Annotated[
        str | None,
        typer.Option(
            help="Only the i-th of N equal slices of the point ids: i/N, or auto/N "
            "(i from JOB_COMPLETION_INDEX + 1, in a Kubernetes Indexed Job).",
            rich_help_panel="Scope",
        ),
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
