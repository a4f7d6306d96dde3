"""Check: validate the mapping on both stores, collecting every problem instead of the first."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reconcile.errors import ConfigError, ExitCode
from reconcile.mapping import KeyMap
from reconcile.report import SCHEMA_VERSION
from reconcile.settings import Settings
from reconcile.stores import Stores
from reconcile.stores.postgres import TableInfo


@dataclass(frozen=True)
class CheckReport:
    """What `check` found: the table, the counts, and one line per problem."""

    table: TableInfo | None
    rows: int | None
    points: int | None
    keys_found: dict[str, bool]
    problems: list[str]
    mapped: tuple[KeyMap, ...] = ()  # the --map entries, for the table's `mapped`

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.USAGE if self.problems else ExitCode.OK

    def to_json(self) -> dict[str, Any]:
        t = self.table
        return {
            "schema_version": SCHEMA_VERSION,
            "table": None
            if t is None
            else {
                "name": t.name,
                "point_type": t.point_type,
                "person_type": t.person_type,
                "id_type": t.id_type,
                "point_indexed": t.point_indexed,
                "kind": t.kind,
                "mapped": {
                    m.key: {"column": m.source, "type": pg_type}
                    for m, pg_type in zip(self.mapped, t.mapped_types, strict=True)
                },
            },
            "rows": self.rows,
            "points": self.points,
            "keys_found": self.keys_found,
            "problems": self.problems,
        }


def check(settings: Settings, stores: Stores | None = None) -> CheckReport:
    """Validate the mapping on both sides, collecting every problem instead of the first."""
    problems: list[str] = []
    table = rows = points = None
    keys_found: dict[str, bool] = {}
    # A server's few questions go over plain REST: check then starts without
    # qdrant-client, whose import costs more than the rest of the check.
    with stores or Stores(settings, light=True) as s:
        try:
            table = s.postgres.inspect()
            rows = s.postgres.count()
            if not table.point_indexed and table.kind != "table":
                problems.append(
                    f"{table.kind} {table.name} is read in {settings.point_column} order by "
                    "sorting all of it, not through an index: its point column must come "
                    "straight from a b-tree-indexed column of its base table (index that "
                    "column; DISTINCT, GROUP BY and UNION views always sort)"
                )
            elif not table.point_indexed:
                problems.append(
                    f"no index on {table.name}.{settings.point_column}: the ordered scan "
                    f"would sort the whole table; CREATE INDEX ON {table.name} "
                    f"({settings.point_column})"
                )
            problems.extend(s.postgres.lock_problems())
            if settings.delete_orphans:  # a config file's: the base table repair rechecks
                s.postgres.orphan_table()
        except ConfigError as exc:
            problems.append(str(exc))
        try:
            s.qdrant.require_collection()
            points = s.qdrant.count()
            columns = {m.key: m.column for m in settings.map}
            for key in settings.keys:
                keys_found[key] = s.qdrant.has_key(key)
                if keys_found[key] or not points:
                    continue
                # A mapped column that is NULL everywhere (no cluster yet) is in sync
                # with a key that no point holds.
                column = columns.get(key)
                if column is not None and table is not None and not s.postgres.has_value(column):
                    continue
                problems.append(
                    f"no point in {settings.collection!r} holds payload key {key!r}: "
                    "check --person-key / --flag-key / --map"
                )
        except ConfigError as exc:
            problems.append(str(exc))
    return CheckReport(table, rows, points, keys_found, problems, settings.map)


__all__ = ["CheckReport", "check"]
