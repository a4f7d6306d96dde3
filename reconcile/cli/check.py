"""`reconcile check`: validate the mapping on both stores (exit 2 on problems), or
suggest the `map` table (`--suggest-map`)."""

from typing import Annotated

import typer

from reconcile import log
from reconcile.cli import options as o
from reconcile.cli import render
from reconcile.cli.boundary import boundary, finish
from reconcile.errors import ConfigError
from reconcile.ops.check import check
from reconcile.ops.suggest import DEFAULT_SAMPLE, suggest_map


def check_command(
    ctx: typer.Context,
    format: o.FormatOption = o.Format.table,
    suggest: Annotated[
        bool,
        typer.Option(
            "--suggest-map",
            help="Print the map table of the payload keys that mirror a column, to paste "
            "into the config file.",
            rich_help_panel="Mapping",
            metavar="",
        ),
    ] = False,
    suggest_sample: Annotated[
        int,
        typer.Option(
            "--suggest-sample",
            help="How many points --suggest-map reads (the first N by id).",
            rich_help_panel="Mapping",
        ),
    ] = DEFAULT_SAMPLE,
    quiet: o.QuietOption = False,
) -> None:
    """Validate the mapping on both stores and print row and point counts (exit 2 on problems);
    or, with --suggest-map, print the map table that the payloads need."""
    params = o.shared(ctx)
    with boundary("check", params) as run:
        settings = run.settings(params)
        log.set_quiet(quiet)  # after the run's logging is set up, as audit and repair do
        if not suggest:
            source = getattr(ctx.get_parameter_source("suggest_sample"), "name", "DEFAULT")
            if source in {"COMMANDLINE", "ENVIRONMENT"}:
                raise ConfigError("--suggest-sample goes with --suggest-map")
            report = check(settings)
            render.show(report, render.render_check, format, None)
            log.event(
                "check.finished",
                problems=len(report.problems),
                rows=report.rows,
                points=report.points,
            )
            finish(report.exit_code)
        suggestion = suggest_map(settings, suggest_sample)
        if format is o.Format.json:
            render.emit(render.to_json(suggestion.to_json()), None)
        else:
            # Plain text, not Rich: it is TOML to paste, and Rich would wrap or colour it.
            typer.echo(suggestion.toml(), nl=False)
        log.event(
            "check.suggested",
            sampled=suggestion.sampled,
            compared=suggestion.compared,
            mapped=len(suggestion.map),
            partial=len(suggestion.partial),
            unmatched=len(suggestion.unmatched),
        )
        finish(suggestion.exit_code)
