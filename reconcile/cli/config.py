"""`reconcile config show`: every setting, where it came from, and whether the whole is valid."""

from reconcile import config as config_file
from reconcile.cli import options as o
from reconcile.cli import render
from reconcile.cli.boundary import boundary, layers


def config_show_command(
    debug: o.Debug = False,
    database_url: o.DatabaseUrl = None,
    qdrant_url: o.QdrantUrl = None,
    qdrant_path: o.QdrantPath = None,
    qdrant_edge: o.QdrantEdge = None,
    qdrant_api_key: o.QdrantApiKey = None,
    collection: o.Collection = None,
    table: o.Table = None,
    point_column: o.PointColumn = None,
    person_column: o.PersonColumn = None,
    id_column: o.IdColumn = None,
    updated_column: o.UpdatedColumn = None,
    person_key: o.PersonKey = None,
    flag_key: o.FlagKey = None,
    retries: o.Retries = None,
    timeout: o.Timeout = None,
    page_size: o.PageSize = None,
    min_age: o.MinAge = None,
    config: o.ConfigFile = None,
    env_file: o.EnvFile = None,
) -> None:
    """Print every setting, where it came from, and whether the whole is valid (exit 2 if not)."""
    # locals() is exactly this command's parameters: the settings are picked from it by name.
    params = locals()
    with boundary("config show", debug=debug):
        values, sources = layers(params)
        render.render_settings(config_file.show(values, sources), render.stdout())
        config_file.build(values)
