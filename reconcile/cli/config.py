"""`reconcile config show`: every setting, where it came from, and whether the whole is valid."""

from typing import Any

import typer

from reconcile import config as config_file
from reconcile.cli import options as o
from reconcile.cli import render
from reconcile.cli.boundary import boundary, layers
from reconcile.errors import ConfigError, ReconcileError
from reconcile.report import SCHEMA_VERSION

config_app = typer.Typer(
    help="Show the effective settings.", no_args_is_help=True, add_completion=False
)


@config_app.command("show", cls=o.command_class(o.settings_options))
def config_show_command(
    ctx: typer.Context,
    format: o.FormatOption = o.Format.table,
    debug: o.Debug = False,
) -> None:
    """Print every setting, where it came from, and whether the whole is valid (exit 2 if not)."""
    params = o.shared(ctx)
    with boundary("config show", {"debug": debug}):
        # Every problem is collected, not raised, so the table of what could be read is
        # printed first: a broken file is exactly when someone runs this command.
        problems: list[ReconcileError] = []
        values, sources = layers(params, problems)
        if not problems:
            # Validated only when every file was read: a setting missing because its
            # file was unreadable would be reported as missing, which misleads.
            try:
                config_file.build(values)
            except ConfigError as exc:
                problems.append(exc)
        if format is o.Format.json:
            render.emit(render.to_json(_as_json(values, sources, problems)), None)
        else:
            render.render_settings(config_file.show(values, sources), render.stdout())
        if problems:
            # One line: each problem names its file (and line), so all can be fixed at once.
            raise ConfigError("; ".join(str(problem) for problem in problems))


def _as_json(
    values: dict[str, Any], sources: dict[str, str], problems: list[ReconcileError]
) -> dict[str, Any]:
    """Each setting's masked value and source, and the verdict."""
    return {
        "schema_version": SCHEMA_VERSION,
        "settings": {
            name: {
                "value": config_file.safe_value(name, values.get(name)),
                "source": sources.get(name, config_file.DEFAULT),
            }
            for name in config_file.SETTING_NAMES
        },
        "valid": not problems,
        "errors": [str(problem) for problem in problems],
    }
