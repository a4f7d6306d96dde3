"""`reconcile config show`: every setting, where it came from, and whether the whole is valid."""

import typer

from reconcile import config as config_file
from reconcile.cli import options as o
from reconcile.cli import render
from reconcile.cli.boundary import boundary, layers


def config_show_command(
    ctx: typer.Context,
    debug: o.Debug = False,
) -> None:
    """Print every setting, where it came from, and whether the whole is valid (exit 2 if not)."""
    params = o.shared(ctx)
    with boundary("config show", {"debug": debug}):
        values, sources = layers(params)
        render.render_settings(config_file.show(values, sources), render.stdout())
        config_file.build(values)
