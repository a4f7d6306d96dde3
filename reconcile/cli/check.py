"""`reconcile check`: validate the mapping on both stores (exit 2 on problems)."""

from reconcile.cli import options as o
from reconcile.cli import render
from reconcile.cli.boundary import boundary, finish
from reconcile.ops.check import check


def check_command(
    format: o.FormatOption = o.Format.table,
    log_format: o.LogFormatOption = o.LogFormat.text,
    metrics_file: o.MetricsFile = None,
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
    """Validate the mapping on both stores and print row and point counts (exit 2 on problems)."""
    # locals() is exactly this command's parameters: the settings are picked from it by name.
    params = locals()
    with boundary("check", debug=debug, metrics_file=metrics_file) as run:
        report = check(run.settings(params))
        render.show(report, render.render_check, format, None)
        finish(report.exit_code)
