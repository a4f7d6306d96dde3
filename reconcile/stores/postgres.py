"""PostgreSQL adapter: validate the mapping and stream face rows by point id.

Longer than the other modules (about 1,130 lines) on purpose: it is the one place
that speaks SQL, as reladiff keeps one module per database. What is here is the
connections it reuses, the table's check, the chunked COPY stream, the joined
chunks of a full scan, the locked lookups of repair and undo, the base table's
recheck of orphan points, the run lock, and whether a view can be locked (at the
end); splitting it would spread one table's statements over files.

The statements are strings built from quoted identifiers, their values bound by
psycopg, with no SQLAlchemy: importing it cost a fifth of a second on every start,
and the hot paths (COPY, the joined chunks) spoke to psycopg directly already.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.string import TextLoader

from reconcile.errors import ConfigError, LockHeld, StoreError
from reconcile.mapping import Rule, rule_for
from reconcile.settings import Settings, conninfo, mask_url, table_parts
from reconcile.stores.base import (
    KeyRange,
    PointId,
    Row,
    column_holds,
    first_line,
    point_id,
    point_order,
)

POINT_TYPES = {"uuid", "smallint", "integer", "bigint"}
INTEGER_TYPES = {"smallint", "integer", "bigint"}
# Column types whose value's str() in Python is PostgreSQL's text of it (uuids are
# loaded as text on every connection: `Connections.open`).
PLAIN_TEXT = {"uuid", "text", "character varying", *INTEGER_TYPES}
# Candidates one joined chunk may return (`Joiner`); past it, the chunk is merged from
# the row stream: a long run of rows whose points are missing stays O(chunk) in memory.
JOIN_LIMIT = 50_000
# Rows per chunk of a scan, in pages: large enough that the query overhead is
# small, small enough that each chunk is a short read.
CHUNK_PAGES = 50
TIME_TYPES = {"timestamp with time zone", "timestamp without time zone"}


class LockMode(Enum):
    """How `select_rows` locks: not at all, skipping held rows, or waiting for them."""

    NONE = "none"
    SKIP_LOCKED = "skip_locked"
    WAIT = "wait"


Connection = psycopg.Connection[Any]
# Idle connections kept for the next short read: a scan's chunks, `--workers` and the
# join thread each take one at a time, so a few cover every use.
IDLE_CONNECTIONS = 8


def quoted(name: str) -> str:
    """An identifier in double quotes, as written: a mixed-case name stays mixed-case.
    Names are plain identifiers (settings.check_identifier), so none holds a quote."""
    return f'"{name}"'


def qualified_sql(table: str, flag: str = "--table") -> str:
    """`schema.table` (or `table`) validated and quoted for a statement."""
    schema, name = table_parts(table, flag)
    return f"{quoted(schema)}.{quoted(name)}" if schema else quoted(name)


class Connections:
    """psycopg connections to one database, reused: a scan reads in hundreds of short
    transactions, and connecting costs more than most of them.

    A connection goes back to the idle list rolled back (or in autocommit, where it
    was put for a statement), and only if it is still usable; a broken one is closed.
    Thread-safe: the join's thread and `--workers` take connections of their own.
    """

    def __init__(self, target: str, application_name: str) -> None:
        self._target = target
        self._name = application_name
        self._idle: list[Connection] = []
        # Bumped by close(): a connection taken before it is closed when given back.
        self._generation = 0
        self._lock = threading.Lock()

    def open(self, autocommit: bool = False) -> Connection:
        """A new connection of its own (not reused), uuids loaded as their text."""
        conn = psycopg.connect(
            self._target,
            autocommit=autocommit,
            connect_timeout=10,
            # The pid in the name lets a second run say which process holds the lock.
            application_name=self._name,
        )
        # UUIDs arrive as their canonical text, which is what the merge compares:
        # building a uuid.UUID per value and printing it back cost a third of a scan.
        conn.adapters.register_loader("uuid", TextLoader)
        return conn

    @contextmanager
    def connect(self, autocommit: bool = False) -> Iterator[Connection]:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
            generation = self._generation
        if conn is None:
            conn = self.open(autocommit)
        try:
            if conn.autocommit != autocommit:
                conn.autocommit = autocommit  # idle, so no transaction is open
            yield conn
        finally:
            self._give_back(conn, generation)

    def _give_back(self, conn: Connection, generation: int) -> None:
        if conn.broken:
            # The session was lost: after a server restart or a failover every idle one
            # is gone too, and each would fail a statement of its own before anyone
            # noticed (a repair stops after three failed batches). Start afresh.
            self.close()
        elif not conn.closed:
            try:
                conn.rollback()  # nothing when no transaction is open
            except psycopg.Error:
                pass
            else:
                with self._lock:
                    if generation == self._generation and len(self._idle) < IDLE_CONNECTIONS:
                        self._idle.append(conn)
                        return
        conn.close()

    def close(self) -> None:
        """Close the idle connections, and each one in use when it is given back."""
        with self._lock:
            idle, self._idle = self._idle, []
            self._generation += 1
        for conn in idle:
            conn.close()


PERSON_TYPES = POINT_TYPES | {"text", "character varying"}


@dataclass(frozen=True)
class TableInfo:
    """What `check` learned of the table."""

    name: str
    point_type: str
    person_type: str
    id_type: str
    point_indexed: bool
    point_unique: bool = False  # a valid unique index on the point column alone (a table's)
    updated_type: str | None = None  # the --updated-column's type, None when absent
    kind: str = "table"  # or "view", "materialized view", … (relation_kind)
    # Each --map's column type and rule, in the order of Settings.map (and Row.values).
    mapped_types: tuple[str, ...] = ()
    rules: tuple[Rule, ...] = ()


class Postgres:
    """The face table, read with psycopg: the statements are built here from quoted
    identifiers, the values always bound as parameters."""

    def __init__(self, settings: Settings, engine: Any = None) -> None:
        """`engine`: the service's SQLAlchemy engine, whose URL (password included) is
        then read instead of `settings.database_url`. Its pooled connections are not
        borrowed: this class opens its own with psycopg, and registers loaders on them
        that a connection handed back to the service's pool would keep."""
        self.settings = settings
        url = (
            settings.database_url
            if engine is None
            else engine.url.render_as_string(hide_password=False)
        )
        self._masked = mask_url(url)
        self.connections = Connections(conninfo(url), f"reconcile pid={os.getpid()}")
        self.info: TableInfo | None = None
        self._lock_problems: list[str] | None = None
        self._orphan_table: str | None = None
        self._loads: list[tuple[int, Any]] = []  # (index in Row.values, rule.load)
        s = settings
        self.table = qualified_sql(s.table)
        self._point, self._person, self._id, self._updated = (
            quoted(c) for c in (s.point_column, s.person_column, s.id_column, s.updated_column)
        )
        # The mapped columns, as their text form where the map says ::text; labelled
        # by position, since one column may be mapped to two keys.
        self._mapped = [
            f"{quoted(m.column)}{'::text' if m.text else ''} AS mapped_{n}"
            for n, m in enumerate(s.map)
        ]
        # A row as the merge reads it: point, face, person, recent, mapped values.
        self._row = ", ".join([self._point, self._id, self._person, self._recent(), *self._mapped])

    def close(self) -> None:
        self.connections.close()

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """Turn driver errors into one line a user can act on, password masked."""
        try:
            yield
        except psycopg.Error as exc:
            detail = first_line(exc)
            # No SQLSTATE, or class 08: the connection failed or went away.
            lost = isinstance(exc, psycopg.OperationalError) and (
                exc.sqlstate is None or exc.sqlstate.startswith("08")
            )
            if "resolve host" in detail:
                # libpq's "failed to resolve host" names neither the URL nor what to fix.
                raise StoreError(
                    f"PostgreSQL at {self._masked} is unreachable: {detail}; check the host "
                    "name in --database-url (DATABASE_URL) and that this machine's DNS knows it"
                ) from None
            if lost or "connection" in detail.lower():
                raise StoreError(
                    f"PostgreSQL at {self._masked} failed while {doing}: {detail}; "
                    "check --database-url (DATABASE_URL) and that the server is running"
                ) from None
            raise StoreError(f"PostgreSQL failed while {doing}: {detail}") from None

    @contextmanager
    def reading(self, doing: str, autocommit: bool = False) -> Iterator[Connection]:
        """A connection for one short read (its transaction rolled back after); driver
        errors become a StoreError naming `doing`."""
        with self._errors(doing), self.connections.connect(autocommit) as conn:
            yield conn

    def inspect(self) -> TableInfo:
        """Check the table, its columns and their types, and the point-id index (cached)."""
        if self.info is None:
            self.info = self._inspect()
        return self.info

    def _inspect(self) -> TableInfo:
        s = self.settings
        schema, name = table_parts(s.table)
        qualified = f"{schema}.{name}" if schema else name
        with self.reading("reading the table's definition") as conn:
            oid = relation_oid(conn, schema, name)
            if oid is None:
                raise ConfigError(
                    f"table {qualified!r} not found in the database: set --table "
                    "(use 'schema.table' for a table outside the search path)"
                )
            columns = {
                name: (pg_type, number)
                for name, pg_type, number in conn.execute(
                    "SELECT attname, format_type(atttypid, NULL), attnum FROM pg_attribute "
                    "WHERE attrelid = %(oid)s AND attnum > 0 AND NOT attisdropped",
                    {"oid": oid},
                )
            }
            problems = []
            for flag, column, allowed in (
                ("--point-column", s.point_column, POINT_TYPES),
                ("--person-column", s.person_column, PERSON_TYPES),
                ("--id-column", s.id_column, None),
            ):
                if column not in columns:
                    problems.append(
                        f"column {column!r} not found in {qualified} (columns: "
                        f"{', '.join(sorted(columns))}): set {flag}"
                    )
                elif allowed is not None and columns[column][0] not in allowed:
                    problems.append(
                        f"column {qualified}.{column} has type {columns[column][0]}, "
                        f"expected one of {', '.join(sorted(allowed))}: set {flag}"
                    )
            rules: list[Rule] = []
            for m in s.map:
                if m.column not in columns:
                    problems.append(
                        f"column {m.column!r} of --map {m.key}={m.source} not found in "
                        f"{qualified} (columns: {', '.join(sorted(columns))})"
                    )
                    continue
                try:
                    rules.append(rule_for(m.column, columns[m.column][0], m.text, qualified))
                except ConfigError as exc:
                    problems.append(str(exc))
            if problems:
                raise ConfigError("; ".join(problems))
            kind = relation_kind(conn, oid)
            if kind != "table":
                # A view (or a partitioned or foreign table) has no index of its own.
                indexed, unique = self._ordered_by_index(conn), False
            else:
                # A btree index led by the point column (whole, not partial), and whether
                # a valid unique index on it alone rules out two rows naming one point.
                indexed, unique = _one(
                    conn,
                    "SELECT coalesce(bool_or(am.amname = 'btree'), false), "
                    "coalesce(bool_or(i.indisunique AND i.indisvalid AND i.indnkeyatts = 1), "
                    "false) "
                    # An inheritance child's rows are read with the table's but are not in
                    # its index: no unique index then rules out duplicates.
                    "AND NOT (SELECT relhassubclass FROM pg_class WHERE oid = %(oid)s) "
                    "FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid "
                    "JOIN pg_am am ON am.oid = ic.relam "
                    "WHERE i.indrelid = %(oid)s AND i.indkey[0] = %(attnum)s AND i.indpred IS NULL",
                    {"oid": oid, "attnum": columns[s.point_column][1]},
                )
        updated = columns.get(s.updated_column, ("", 0))[0]
        self._loads = [(n, r.load) for n, r in enumerate(rules) if r.load is not None]
        return TableInfo(
            name=qualified,
            point_type=columns[s.point_column][0],
            person_type=columns[s.person_column][0],
            id_type=columns[s.id_column][0],
            point_indexed=indexed,
            point_unique=unique,
            updated_type=updated or None,
            mapped_types=tuple(columns[m.column][0] for m in s.map),
            kind=kind,
            rules=tuple(rules),
        )

    def _ordered_by_index(self, conn: Connection) -> bool:
        """Whether PostgreSQL reads a view (or a partitioned or foreign table) in point
        order through an index, as the scan's chunks do, rather than sorting it all."""
        p = self._point
        stmt = (
            f"SELECT {p} FROM {self.table} WHERE {p} IS NOT NULL ORDER BY {p} "
            f"LIMIT {self.settings.page_size * CHUNK_PAGES}"
        )
        # Whether an index CAN give the order, whatever the size today: with sorts and
        # sequential scans priced out, a plan still sorts only when no index serves. The
        # savepoint's rollback restores the planner settings.
        with conn.transaction(force_rollback=True):
            conn.execute(
                "SELECT set_config('enable_sort', 'off', true), "
                "set_config('enable_seqscan', 'off', true)"
            )
            plan = "\n".join(row[0] for row in conn.execute(f"EXPLAIN {stmt}"))
        return "Index" in plan and "Sort" not in plan

    def lock_problems(self) -> list[str]:
        """Why repair's row locks would not cover every compared value: [] for a table;
        for a view, `view_lock_problems` (one line each)."""
        info = self.inspect()
        if info.kind not in {"view", "materialized view"}:
            return []
        if self._lock_problems is None:  # planned once: sync_faces repairs per request
            s = self.settings
            columns = [s.point_column, s.id_column, s.person_column, *(m.column for m in s.map)]
            with self.reading("checking the view's row locks") as conn:
                self._lock_problems = view_lock_problems(
                    conn, s.table, list(dict.fromkeys(columns))
                )
        return self._lock_problems

    def count(self) -> int:
        with self.reading("counting rows") as conn:
            return int(_scalar(conn, f"SELECT count(*) FROM {self.table}"))

    def _recent(self) -> str:
        """Whether a row changed within the grace window (`--min-age`), by the server's clock."""
        if self.settings.min_age <= 0:
            return "false"
        # A float's repr is a numeric literal PostgreSQL reads (min_age is finite).
        window = f"make_interval(secs => {float(self.settings.min_age)!r})"
        return f"coalesce({self._updated} > now() - {window}, false)"

    def rows(self, key_range: KeyRange | None = None, nulls: bool = True) -> Iterator[Row]:
        """Every row in the range, ascending by point id, in bounded chunks.

        Each chunk is its own short read (keyset pagination on the point index), so
        a scan of 10^8 rows never holds one snapshot for an hour: vacuum goes on,
        no statement_timeout is hit, a replica does not cancel us. A chunk never
        ends inside a point's rows: the rows of its last point are read whole, so
        a point two rows name is still seen as one duplicate. Rows with a NULL
        point id come last, in the first slice only.
        """
        key_range = key_range or KeyRange()
        after: PointId | None = None
        limit = self.settings.page_size * CHUNK_PAGES
        p, base = self._point, f"SELECT {self._row} FROM {self.table}"
        while True:
            where, params = [f"{p} IS NOT NULL"], dict[str, Any]()
            if after is not None:
                where.append(f"{p} > %(after)s")
                params["after"] = after
            elif key_range.low is not None:
                where.append(f"{p} >= %(low)s")
                params["low"] = key_range.low
            if key_range.high is not None:
                where.append(f"{p} < %(high)s")
                params["high"] = key_range.high
            stmt = f"{base} WHERE {' AND '.join(where)} ORDER BY {p} LIMIT {limit}"
            # Each point's rows are held back until the next point starts, so that
            # a chunk cut inside the last point's rows can drop them and read them
            # whole. `first` is the point's first row, `more` the rare others.
            first: Row | None = None
            more: list[Row] = []
            read = 0
            for row in self._stream(stmt, params):
                read += 1
                if first is None:
                    first = row
                elif row[0] == first[0]:
                    more.append(row)
                else:
                    yield first
                    if more:
                        yield from more
                        more = []
                    first = row
            if read < limit:
                if first is not None:
                    yield first
                    yield from more
                break
            assert first is not None
            after = first.point_id
            yield from self._stream(f"{base} WHERE {p} = %(after)s", {"after": after})
        if key_range.first and nulls:
            yield from self._stream(f"{base} WHERE {p} IS NULL")

    def _stream(self, stmt: str, params: dict[str, Any] | None = None) -> Iterator[Row]:
        """One short read, a transaction of its own: the select's rows through COPY.

        COPY streams rows without a cursor's round trips, and psycopg's C code
        parses them into the exact types wanted (ids as text or integers):
        2.4 times faster than SQLAlchemy's result layer at a million rows
        (BENCHMARKS.md). COPY cannot take server-side parameters, so psycopg
        binds them on the client.
        """
        info = self.inspect()
        types = [_copy_type(info.point_type), "text", _copy_type(info.person_type), "bool"]
        types += [rule.copy_type for rule in info.rules]
        # Identifiers are plain (settings.check_identifier), so the statement holds
        # no % that psycopg would need to unescape when there are no params.
        query = f"COPY ({stmt}) TO STDOUT"
        with self.reading("streaming rows") as conn:
            try:
                with conn.cursor() as cur, cur.copy(query, params or None) as copy:
                    copy.set_types(types)
                    if not info.rules:
                        for point, face, person, recent in copy.rows():
                            yield Row(point, face, person, recent)
                    else:
                        yield from self._with_values(copy.rows())
            except psycopg.DataError as exc:
                if exc.sqlstate is not None or not info.rules:
                    raise  # the server's error, not a value psycopg could not decode
                # psycopg could not decode a value into Python: only a mapped column can
                # hold one (an infinite timestamp, a year past 9999), and the payload
                # cannot hold its ISO form either.
                raise no_payload_form(exc) from None

    def _with_values(self, records: Iterator[tuple[Any, ...]]) -> Iterator[Row]:
        """Rows with their mapped columns' canonical values (`Row.values`)."""
        loads = self._loads
        for record in records:
            values = record[4:]
            if loads:
                # Only timestamps need a step after psycopg's decoding (to isoformat).
                changed = list(values)
                for n, load in loads:
                    if changed[n] is not None:
                        changed[n] = load(changed[n])
                values = tuple(changed)
            yield Row(record[0], record[1], record[2], record[3], values)

    def has_value(self, column: str) -> bool:
        """Whether some row holds a non-NULL value in `column` (a column of the table)."""
        stmt = f"SELECT EXISTS (SELECT 1 FROM {self.table} WHERE {quoted(column)} IS NOT NULL)"
        with self.reading(f"looking for values in {column}") as conn:
            return bool(_scalar(conn, stmt))

    def point_bounds(self) -> tuple[int, int] | None:
        """min and max of an integer point column (index probes), None when empty."""
        stmt = f"SELECT min({self._point}), max({self._point}) FROM {self.table}"
        with self.reading("reading the point id range") as conn:
            low, high = _one(conn, stmt)
        return None if low is None else (int(low), int(high))

    @contextmanager
    def transaction(self, lock_timeout: float, hold_limit: float) -> Iterator[Connection]:
        """One short transaction whose waits and idle time are bounded by the server.

        `lock_timeout` bounds waiting for a lock; `idle_in_transaction_session_timeout`
        makes the server end the session (and free our row locks) if this process
        hangs or dies while holding them, so the application is never blocked for long.
        """
        with self.reading("locking rows") as conn, conn.transaction():
            conn.execute(
                "SELECT set_config('lock_timeout', %(lock)s, true), "
                "set_config('idle_in_transaction_session_timeout', %(idle)s, true)",
                {"lock": f"{int(lock_timeout * 1000)}ms", "idle": f"{int(hold_limit * 1000)}ms"},
            )
            yield conn

    def ping(self, conn: Connection) -> None:
        """Fail unless this transaction's session is still alive (and so its locks held)."""
        with self._errors("checking the row locks are still held"):
            conn.execute("SELECT 1")

    def _held(self, point_ids: list[PointId]) -> list[PointId]:
        """The ids the point column can hold: any other (an integer in a uuid column, a
        UUID or an integer past bigint in an integer one) names no row, and would not
        bind to the column's type."""
        integer = self.inspect().point_type != "uuid"
        return [p for p in point_ids if column_holds(p, integer)]

    def _in(self, column: str, column_type: str) -> str:
        """`column = ANY(array)`, the array one parameter (`%(ids)s`) cast to the column's
        type: ids given as strings then bind to a uuid column too."""
        # format_type() without the modifier: "character" alone is char(1), "bit" bit(1).
        array = {"character": "bpchar", "bit": "varbit"}.get(column_type, column_type)
        array = "bigint" if column_type in INTEGER_TYPES else array
        return f"{column} = ANY(%(ids)s::{array}[])"

    def select_rows(self, conn: Connection, point_ids: list[PointId], lock: LockMode) -> list[Row]:
        """The rows naming these points, locked FOR SHARE unless `lock` says otherwise.

        FOR SHARE blocks an application UPDATE of the same rows until we commit, so
        the application writes Qdrant after us. SKIP LOCKED passes over rows an
        application transaction holds (it will write Qdrant itself); WAIT waits for
        them, up to the transaction's lock_timeout.
        """
        info = self.inspect()
        where = self._in(self._point, info.point_type)
        stmt = f"SELECT {self._row} FROM {self.table} WHERE {where}"
        if lock is not LockMode.NONE:
            stmt += " FOR SHARE" + (" SKIP LOCKED" if lock is LockMode.SKIP_LOCKED else "")
        with self._errors("locking rows"):
            return [
                Row(
                    _point_value(record[0]),
                    str(record[1]),
                    _point_value(record[2]),
                    record[3],
                    tuple(
                        rule.canonical(v) for rule, v in zip(info.rules, record[4:], strict=True)
                    ),
                )
                for record in conn.execute(stmt, {"ids": self._held(point_ids)})
            ]

    def points_of_faces(self, face_ids: list[str]) -> dict[str, PointId | None]:
        """The point each of these faces names; unknown faces are left out."""
        info = self.inspect()
        where = self._in(self._id, info.id_type)
        stmt = f"SELECT {self._id}, {self._point} FROM {self.table} WHERE {where}"
        with self.reading("looking up faces") as conn:
            found = conn.execute(stmt, {"ids": face_ids})
            return {str(face): _point_value(point) for face, point in found}

    def rows_of_points(self, point_ids: list[PointId]) -> list[Row]:
        """Every row naming these points, ascending by point id, without locks."""
        with self.reading("looking up rows") as conn:
            rows = self.select_rows(conn, point_ids, LockMode.NONE)
        return sorted(rows, key=lambda r: point_order(r.point_id if r.point_id is not None else 0))

    def points_changed_since(self, since: datetime) -> Iterator[PointId]:
        """Point ids of rows updated at or after `since`, streamed (a server-side cursor)."""
        p = self._point
        where = f"{self._updated} >= %(since)s AND {p} IS NOT NULL"
        stmt = f"SELECT {p} FROM {self.table} WHERE {where}"
        with self.reading("reading changed rows") as conn, conn.cursor(name="changed") as cur:
            cur.itersize = self.settings.page_size
            for (point,) in cur.execute(stmt, {"since": since}):
                value = _point_value(point)
                assert value is not None
                yield value

    def now(self, conn: Connection | None = None) -> datetime:
        """The database's clock (run windows must not depend on this machine's): the
        start of `conn`'s transaction, or of a read of its own."""
        if conn is None:
            with self.reading("reading the clock") as own:
                return self.now(own)
        with self._errors("reading the clock"):
            value = _scalar(conn, "SELECT now()")
        assert isinstance(value, datetime)
        return value

    def person_counts(self) -> dict[str, int]:
        """Faces per person (one GROUP BY; NULL persons left out)."""
        person = self._person
        stmt = f"SELECT {person}, count(*) FROM {self.table} WHERE {person} IS NOT NULL GROUP BY 1"
        with self.reading("counting faces per person") as conn:
            return {str(_point_value(who)): int(n) for who, n in conn.execute(stmt)}

    def rows_per_point(self, conn: Connection, point_ids: list[PointId]) -> dict[PointId, int]:
        """How many rows name each point, read without locks (tells held rows from deleted ones)."""
        info = self.inspect()
        stmt = (
            f"SELECT {self._point}, count(*) FROM {self.table} "
            f"WHERE {self._in(self._point, info.point_type)} GROUP BY 1"
        )
        with self._errors("re-reading rows"):
            found: dict[PointId, int] = {}
            for point, n in conn.execute(stmt, {"ids": self._held(point_ids)}):
                value = _point_value(point)
                assert value is not None
                found[value] = int(n)
            return found

    # --- the full scan's fast path (`reconcile.joined`): PostgreSQL joins a chunk ----------

    def _join_sql(self, low: bool, high: bool) -> str:
        """The statement that FULL JOINs a chunk's points with the rows of its id range
        and returns only candidates (see `Joiner`); `low`, `high`: whether the range
        has that end (parameters `lo`, `hi`)."""
        s, info, p = self.settings, self.inspect(), self._point
        inner = [
            f"{p} AS r_point",
            f"{self._id} AS r_face",
            f"{self._person} AS r_person",
            f"{self._recent()} AS r_recent",
            *self._mapped,
        ]
        # `every`: a chunk whose values JSON cannot carry, all of it candidates.
        candidate = ["p.o IS NULL", "f.r_point IS NULL", "f.r_recent", "%(every)s"]
        if not info.point_unique:
            # Each point's rows counted: a duplicate comes back even if its rows agree.
            # A unique index rules duplicates out, and the window's sort is a sixth of
            # the statement's time.
            inner.append(f"count(*) OVER (PARTITION BY {p}) AS r_n")
            candidate.append("f.r_n > 1")
        where = [f"{p} IS NOT NULL"] + [f"{p} >= %(lo)s"] * low + [f"{p} < %(hi)s"] * high
        # The payload side is one JSON array per compared key (Keys.names order), a
        # value per point (absent and null alike are null; at the exact positions the
        # value's JSON text); the row side is the array the row implies.
        flag = s.flag_key is not None
        count = _compared_keys(s)
        payload = [f"p.c{i}" for i in range(count)]
        values = ["f.r_person"] + ["f.r_person IS NOT NULL"] * flag
        values += [f"f.mapped_{n}" for n in range(len(s.map))]
        source = {0: "f.r_person", **{n + 1 + flag: f"f.mapped_{n}" for n in range(len(s.map))}}
        # jsonb equality is never looser than the mapping's rules but where noted here;
        # SQL only filters, and Python judges every candidate by the rules.
        for i in self.join_exact():
            # Integers and JSON: '5'::jsonb = '5.0'::jsonb, and a float prints 1e+16 where
            # jsonb prints 10000000000000000. Both sides are compared as their exact JSON
            # text: the payload's as Python wrote it (`joined._encoded`: a string holding
            # the text, or a whole number whose text is its digits), the row's as jsonb
            # prints it. Equal texts are equal values.
            payload[i] = f"({payload[i]} #>> '{{}}')"
            values[i] = f"to_jsonb({source[i]})::text"
        for n, rule in enumerate(info.rules):
            column, i = f"f.mapped_{n}", n + 1 + flag
            if rule.name == "json":
                # A json column keeps its text ('1e2', which Python reads as a float),
                # while to_jsonb normalizes it (100): an exponent is a candidate.
                candidate.append(f"{column}::text ~ '[eE]'")
            elif rule.copy_type == "float8":  # double precision, numeric, real
                # NaN and Infinity columns turn into the strings "NaN", "Infinity".
                candidate.append(f"jsonb_typeof({payload[i]}) = 'string'")
            elif rule.copy_type in {"timestamptz", "timestamp"}:
                # Infinity, BC and years past 9999 have no payload form: decoding the
                # candidate fails with the message the row stream gives (no_payload_form).
                candidate.append(f"extract(year FROM {column}) NOT BETWEEN 2 AND 9998")
        candidate.append(
            f"jsonb_build_array({', '.join(payload)}) "
            f"IS DISTINCT FROM jsonb_build_array({', '.join(values)})"
        )
        # The chunk's ids come as one bytes parameter (`joined._id_bytes`), cut here into
        # a UUID's 16 bytes or a bigint's 8 (big-endian, two's complement).
        width = 16 if info.point_type == "uuid" else 8
        part = f"encode(substring(%(ids)b FROM i * {width} + 1 FOR {width}), 'hex')"
        cut = f"{part}::uuid" if width == 16 else f"('x' || {part})::bit(64)::bigint"
        ids = f"ARRAY(SELECT {cut} FROM generate_series(0, length(%(ids)b) / {width} - 1) AS i)"
        mapped = "".join(f", f.mapped_{n}" for n in range(len(s.map)))
        columns = "".join(f", jsonb_array_elements(%(c{i})s::jsonb)" for i in range(count))
        return (
            f"SELECT p.o, f.r_point, f.r_face, f.r_person, f.r_recent::int{mapped} "
            f"FROM ROWS FROM (unnest({ids}){columns}) "
            f"WITH ORDINALITY AS p(point, {', '.join(f'c{i}' for i in range(count))}, o) "
            f"FULL JOIN (SELECT {', '.join(inner)} FROM {self.table} "
            f"WHERE {' AND '.join(where)}) AS f "
            f"ON f.r_point = p.point WHERE {' OR '.join(candidate)} LIMIT {JOIN_LIMIT + 1}"
        )

    def join_exact(self) -> tuple[int, ...]:
        """The positions (in Keys.names order) whose values a joined chunk compares as
        exact JSON text: an integer person column, integer, json and jsonb --map columns."""
        info, flag = self.inspect(), self.settings.flag_key is not None
        person = (0,) if info.person_type in INTEGER_TYPES else ()
        exact = {"integer", "json", "jsonb"}
        return person + tuple(n + 1 + flag for n, r in enumerate(info.rules) if r.name in exact)

    def joiner(self) -> Joiner:
        """The statement runner for `reconcile.joined` (one per scan or worker)."""
        return Joiner(self)

    def rows_without_point(self) -> int:
        """How many rows name no point (NULL point id)."""
        stmt = f"SELECT count(*) FROM {self.table} WHERE {self._point} IS NULL"
        with self.reading("counting rows without a point") as conn:
            return int(_scalar(conn, stmt))

    # --- `repair --delete-orphans`: committed rows of the base table ---------------------

    def orphan_table(self) -> str:
        """The table whose committed rows keep a point from being deleted as an orphan:
        --orphan-table, else --table when it is a table (not a view); checked once.

        A view cannot say a point is an orphan: a filtered or joined view hides real
        faces. Raises ConfigError naming the fix.
        """
        if self._orphan_table is not None:
            return self._orphan_table
        s = self.settings
        info = self.inspect()
        name = s.orphan_table or s.table
        if s.orphan_table is None and info.kind not in {"table", "partitioned table"}:
            raise ConfigError(
                f"--delete-orphans on {info.name}, a {info.kind}: a point its rows do not "
                "name may still have a row in the table behind it; name that table with "
                f"--orphan-table (the table holding {s.point_column}), or use --table TABLE"
            )
        schema, table = table_parts(name, "--orphan-table")
        with self.reading("checking --orphan-table") as conn:
            oid = relation_oid(conn, schema, table)
            kind = None if oid is None else relation_kind(conn, oid)
            found = (
                None
                if oid is None
                else _scalar(
                    conn,
                    "SELECT format_type(atttypid, NULL) FROM pg_attribute "
                    "WHERE attrelid = %(oid)s AND attname = %(column)s AND NOT attisdropped",
                    {"oid": oid, "column": s.point_column},
                )
            )
        if kind not in {"table", "partitioned table"}:
            what = "not found" if kind is None else f"a {kind}, not a table"
            raise ConfigError(
                f"--orphan-table {name!r} is {what}: name the table that holds "
                f"{s.point_column} (schema.table outside the search path)"
            )
        if found != info.point_type:
            has = "has no column" if found is None else f"has {s.point_column} of type {found}, not"
            raise ConfigError(
                f"--orphan-table {name!r} {has} {s.point_column} ({info.point_type}): name "
                "the table behind --table that holds the point ids"
            )
        self._orphan_table = qualified_sql(name, "--orphan-table")
        return self._orphan_table

    def named_points(self, conn: Connection, point_ids: list[PointId]) -> set[PointId]:
        """Which of these points a committed row of `orphan_table` names (no locks: a row
        not yet committed cannot be seen, which is what the grace is for)."""
        table, info = self.orphan_table(), self.inspect()
        wanted = self._held(point_ids)
        if not wanted:
            return set()
        where = self._in(self._point, info.point_type)
        stmt = f"SELECT DISTINCT {self._point} FROM {table} WHERE {where}"
        with self._errors("rechecking orphan points"):
            return {point_id(value) for (value,) in conn.execute(stmt, {"ids": wanted})}

    # --- `check --suggest-map`: whole rows, every column ----------------------------------

    def whole_rows(self, point_ids: list[PointId]) -> tuple[dict[str, str], list[dict[str, Any]]]:
        """Every column's type (format_type, in the table's order) and the rows naming
        these points with every column, as the driver decodes them (as `select_rows`
        reads mapped columns: uuids as text)."""
        info = self.inspect()  # the table, its point column and that column's type
        wanted = self._held(point_ids)
        stmt = f"SELECT * FROM {self.table} WHERE {self._in(self._point, info.point_type)}"
        with self.reading("reading sample rows") as conn:
            types = {
                str(column): str(pg_type)
                for column, pg_type in conn.execute(
                    "SELECT attname, format_type(atttypid, NULL) FROM pg_attribute "
                    "WHERE attrelid = to_regclass(%(name)s) AND attnum > 0 "
                    "AND NOT attisdropped ORDER BY attnum",
                    {"name": self.table},
                )
            }
            rows: list[dict[str, Any]] = []
            with conn.cursor(row_factory=dict_row) as cur:
                for start in range(0, len(wanted), 1000):
                    rows += cur.execute(stmt, {"ids": wanted[start : start + 1000]}).fetchall()
        return types, rows


def no_payload_form(exc: psycopg.DataError) -> StoreError:
    """psycopg could not decode a value into Python: only a mapped column can hold one
    (an infinite timestamp, a year past 9999), and the payload cannot hold its ISO form."""
    return StoreError(
        f"PostgreSQL sent a value of a --map column that has no payload form "
        f"({first_line(exc)}): map that column through a view that casts or "
        "clamps it (e.g. to text), or leave it out of --map"
    )


def _compared_keys(settings: Settings) -> int:
    """How many payload keys a scan compares: the person, the flag, each --map key."""
    return 1 + (settings.flag_key is not None) + len(settings.map)


class Joiner:
    """One chunk of a full scan joined in PostgreSQL: the chunk's point ids (an array)
    and compared payload values (a JSON array of arrays) FULL JOINed with the rows of
    the chunk's id range, in one read-only statement; only candidates come back.

    A candidate is a point no row names, a row naming no point of the chunk, a point
    several rows name, a recent row (the grace window), or a pair whose values are
    not exactly equal. Every pair not returned is in sync. The query runs while the
    caller scrolls the next chunk: psycopg waits with the GIL released, so the
    server's C code does the comparing on the other core.
    """

    def __init__(self, postgres: Postgres) -> None:
        self.postgres = postgres
        self.rules = postgres.inspect().rules
        self.exact = postgres.join_exact()
        self._keys = _compared_keys(postgres.settings)
        both = (False, True)
        self._sql = {(lo, hi): postgres._join_sql(lo, hi) for lo in both for hi in both}
        self._face_type: int | None = None

    def __call__(
        self,
        low: PointId | None,
        high: PointId | None,
        ids: bytes,
        columns: list[str] | None,
    ) -> list[tuple[int | None, Row | None]] | None:
        """(ordinal of the chunk's point, 1-based, or None; its row, or None) per candidate
        row or point; `ids` the chunk's ids as bytes (`joined._id_bytes`), `columns` a JSON
        array of their values per compared key (see `Postgres._join_sql`), or None to
        make every point a candidate (values JSON cannot carry).

        None when the chunk is better merged from the row stream: more than JOIN_LIMIT
        candidates (a range of rows whose points are missing, an empty collection),
        or a value the statement cannot take (a json column PostgreSQL cannot turn
        into jsonb); memory stays bounded and the merge decides, as without this path.
        """
        sql = self._sql[low is not None, high is not None]
        params = {"lo": low, "hi": high, "ids": ids, **self._values(columns)}
        # A pooled connection per statement, each its own snapshot (autocommit): a scan
        # holds no snapshot for long, nor a connection between chunks (`--workers`).
        with self.postgres.reading("joining points with rows", autocommit=True) as conn:
            found = self._execute(conn, sql, params)
        if found is None or len(found) > JOIN_LIMIT:
            return None
        rules = self.rules
        return [
            (
                o,
                None
                if point is None
                else Row(
                    _point_value(point),
                    str(face),
                    _point_value(person),
                    recent == 1,
                    tuple(rule.canonical(v) for rule, v in zip(rules, mapped, strict=True)),
                ),
            )
            for o, point, face, person, recent, *mapped in found
        ]

    def _values(self, columns: list[str] | None) -> dict[str, Any]:
        """The statement's value parameters: each compared key's JSON array (`c0`, …)
        and `every`; None makes every point of the chunk a candidate, its arrays empty."""
        if columns is None:
            return {"every": True, **{f"c{i}": "[]" for i in range(self._keys)}}
        return {"every": False, **{f"c{i}": column for i, column in enumerate(columns)}}

    def _execute(
        self, conn: Connection, sql: str, params: dict[str, Any]
    ) -> list[tuple[Any, ...]] | None:
        info = self.postgres.inspect()
        cur = conn.cursor()
        # The face id as PostgreSQL's text, as the row stream's COPY gives it ('t' for a
        # boolean id, not True): for the types whose Python str() is not that text, and
        # only when no compared column shares the type (their loaders stay).
        if info.id_type not in PLAIN_TEXT and info.id_type not in info.mapped_types:
            if self._face_type is None:
                found = conn.execute("SELECT %s::regtype::oid", [info.id_type]).fetchone()
                assert found is not None
                self._face_type = int(found[0])
            cur.adapters.register_loader(self._face_type, TextLoader)
        # Not prepared: a PgBouncer in transaction mode forbids prepared statements.
        try:
            return cur.execute(sql, params, prepare=False).fetchall()
        except psycopg.DataError as exc:
            if exc.sqlstate is None:
                raise no_payload_form(exc) from None  # decoding a row, in this process
        # A string jsonb refuses (\u0000, a lone surrogate): every point of the chunk
        # becomes a candidate.
        params.update(self._values(None))
        try:
            return cur.execute(sql, params, prepare=False).fetchall()
        except psycopg.DataError as exc:
            if exc.sqlstate is None:
                raise no_payload_form(exc) from None
            return None  # a row's value the statement cannot take: the row stream's turn


@contextmanager
def advisory_lock(postgres: Postgres, name: str) -> Iterator[None]:
    """Hold a session-level advisory lock named `name` for the block, or raise LockHeld.

    The lock lives on a connection of its own, never reused, so it goes away when
    this process dies (the server ends the session), and short batch transactions
    do not touch it.
    """
    with postgres._errors("taking the run lock"):
        conn = postgres.connections.open(autocommit=True)
        try:
            taken = _scalar(conn, "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", [name])
            holder = None if taken else _lock_holder(conn, name)
        except BaseException:
            conn.close()
            raise
    if not taken:
        conn.close()
        raise LockHeld(
            f"another run holds the lock {name!r}: {holder or 'another session'}; "
            "wait for it to finish, or stop it if it is stuck"
        )
    try:
        yield
    finally:
        with contextlib.suppress(psycopg.Error):
            conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", [name])
        conn.close()


def _lock_holder(conn: Connection, name: str) -> str | None:
    """Who holds the advisory lock: our pid is in its application_name."""
    holder = conn.execute(
        "SELECT a.application_name, a.pid, a.backend_start, a.client_addr "
        "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
        "AND l.classid::bigint = ((hashtextextended(%(name)s, 0) >> 32) & 4294967295) "
        "AND l.objid::bigint = (hashtextextended(%(name)s, 0) & 4294967295)",
        {"name": name},
    ).fetchone()
    if holder is None:
        return None
    application, pid, since, address = holder
    where = f" from {address}" if address else ""
    return (
        f"{application or 'a session'} (server pid {pid}{where}, "
        f"connected since {since:%Y-%m-%d %H:%M:%S %Z})"
    )


def _one(conn: Connection, stmt: str, params: Any = None) -> tuple[Any, ...]:
    """The statement's one row."""
    row = conn.execute(stmt, params).fetchone()
    assert row is not None, stmt
    return tuple(row)


def _scalar(conn: Connection, stmt: str, params: Any = None) -> Any:
    """The first value of the statement's one row (None when it returns no row)."""
    row = conn.execute(stmt, params).fetchone()
    return None if row is None else row[0]


def _copy_type(column_type: str) -> str:
    """How COPY hands a point or person column over: integers as int, the rest as text."""
    return "int8" if column_type in {"smallint", "integer", "bigint"} else "text"


def _point_value(value: Any) -> PointId | None:
    """Canonical payload form: UUIDs as lower-case strings, integers as integers."""
    if value is None or isinstance(value, PointId):
        return value
    return str(value)


RELATION_KINDS = {
    "r": "table",
    "p": "partitioned table",
    "v": "view",
    "m": "materialized view",
    "f": "foreign table",
    "i": "index",
    "I": "partitioned index",
    "S": "sequence",
    "t": "TOAST table",
    "c": "composite type",
}
# PostgreSQL's refusals to lock rows: 0A000 for an outer join's nullable side, GROUP BY,
# DISTINCT, aggregates and window functions; 42809 for a materialized view.
_LOCK_REFUSED = {"0A000", "42809"}
_LOCKABLE = (
    "repair needs a view whose rows PostgreSQL can lock — inner joins only, no GROUP BY, "
    "DISTINCT, aggregate, window function, UNION or WITH query — or the table itself"
)
_OVERWRITE = "repair could overwrite a change made meanwhile"


def relation_oid(conn: Connection, schema: str | None, name: str) -> int | None:
    """The oid of table or view `schema.name` (the search path's when schema is None),
    each part quoted as given (a mixed-case name stays mixed-case); None when absent."""
    oid = _scalar(
        conn,
        "SELECT to_regclass(CASE WHEN CAST(%(schema)s AS text) IS NULL THEN '' "
        "ELSE quote_ident(%(schema)s) || '.' END || quote_ident(%(name)s))::oid",
        {"schema": schema, "name": name},
    )
    return None if oid is None else int(oid)


def relation_kind(conn: Connection, oid: int) -> str:
    """'table', 'view', 'materialized view', 'partitioned table', 'foreign table' … from
    pg_class.relkind."""
    kind = _scalar(conn, "SELECT relkind FROM pg_class WHERE oid = %(oid)s::oid", {"oid": oid})
    if kind is None:
        raise StoreError(f"relation {oid} was dropped while it was being checked: run again")
    return RELATION_KINDS.get(kind, f"relation of kind {kind!r}")


def view_lock_problems(conn: Connection, qualified: str, columns: Sequence[str]) -> list[str]:
    """Why repair cannot lock this view's rows so that they cover every column in `columns`;
    [] when it can. One line per problem.

    Repair selects the rows FOR SHARE (SKIP LOCKED) through the view. PostgreSQL (15 to
    18) then locks the row of every table the view joins, and a column computed from
    those rows is covered. Reported (statements are planned, never run, each in a
    savepoint rolled back at once, so no lock outlives the check):

    - FOR SHARE refused (outer join, GROUP BY, DISTINCT, aggregate, window function):
      found by planning the FOR SHARE select. Not by running it with `WHERE false`: a
      provably empty query is planned without the view's subquery, so GROUP BY passes.
    - a materialized view: PostgreSQL refuses to lock its rows, and they are a copy
      refreshed by hand, so a repair would write stale values even if it could.
    - a WITH query in the view or in a view it reads: FOR SHARE does not lock its rows,
      even when PostgreSQL inlines it into a join, and the plan cannot tell: the inlined
      table is fetched by ctid (for rechecks) exactly like a locked one. Found in the
      views' stored query trees (pg_rewrite), followed through pg_depend.
    - FOR SHARE accepted but a table's rows copied, not locked (a UNION, also UNION ALL):
      found in the locked plan, where that table is scanned without its ctid.
    - a column computed by a subquery (EXISTS, a scalar subquery, correlated or not):
      its table is read, not locked. Found per column: a plan of that column alone with
      more SubPlan/InitPlan nodes than a plan of no column (those belong to the view's
      WHERE). Counted in the plan's tree rather than read from its text, which differs
      by version (15 prints an InitPlan's value as `$0`, 17 as `(InitPlan 1).col1`) and,
      for a view PostgreSQL plans apart (OFFSET 0, say), shows only `v.column` at the top.

    Not detected: a function in a column that reads another table (EXPLAIN shows the
    call, not what it reads; PostgreSQL does not inline a SQL function with a
    subquery); rows from a function or VALUES in FROM; subqueries in the view's WHERE or
    join conditions (they choose rows, not the values repair writes; an EXISTS planned
    as a semi-join is fetched by ctid but not locked either); whether a foreign table
    under the view is locked (the FDW's business). The view is checked as it is now.

    `qualified` is the name as the user wrote it (validated plain identifiers, quoted
    here again). A missing column raises the driver's error: check columns first.
    """
    view = qualified_sql(qualified)
    columns = list(dict.fromkeys(columns))
    oid = _scalar(conn, "SELECT CAST(to_regclass(%(name)s) AS oid)", {"name": view})
    if oid is None:
        return [f"{qualified} not found in the database: set --table"]
    if relation_kind(conn, oid) == "materialized view":
        return [
            f"{qualified} is a materialized view: its rows are a copy, refreshed by hand, and "
            "PostgreSQL cannot lock them; point --table at the table"
        ]
    select = f"SELECT {', '.join(quoted(c) for c in columns)} FROM {view}"
    _explain(conn, select)  # a missing column is not a lock problem: let it raise
    try:
        locked = _explain(conn, f"{select} FOR SHARE SKIP LOCKED")
    except psycopg.Error as exc:
        if exc.sqlstate not in _LOCK_REFUSED:
            raise
        return [f"view {qualified} cannot be locked FOR SHARE ({first_line(exc)}): {_LOCKABLE}"]
    problems = [
        f"view {qualified} reads a WITH query{'' if holder == oid else f' (in view {inner})'}, "
        f"whose rows FOR SHARE does not lock: {_OVERWRITE}; {_LOCKABLE}"
        for holder, inner in _views_with_ctes(conn, oid)
    ]
    if not problems:  # a WITH query's rows are copied too: one line for one cause
        problems = [
            f"view {qualified} reads table {table} without locking its rows (PostgreSQL "
            f"copies the rows of a UNION instead): {_OVERWRITE}; {_LOCKABLE}"
            for table in dict.fromkeys(_copied(locked))
        ]
    baseline = _subplans(_explain(conn, f"SELECT true FROM {view}"))
    problems += [
        f"view {qualified} computes column {column} with a subquery, which FOR SHARE does not "
        f"lock: {_OVERWRITE}; bring it in by an inner join, or leave it out of --map"
        for column in columns
        if _subplans(_explain(conn, f"SELECT {quoted(column)} FROM {view}")) > baseline
    ]
    return problems


def _explain(conn: Connection, stmt: str) -> dict[str, Any]:
    """The top node of the statement's verbose plan; planned only, in a savepoint rolled
    back on success too: the relation locks planning took go with it."""
    # Identifiers are plain (settings.check_identifier) and the statement has no
    # parameters, so its text holds no % for the driver to read as a placeholder.
    with conn.transaction(force_rollback=True):
        plan = _scalar(conn, f"EXPLAIN (VERBOSE, FORMAT JSON) {stmt}")
    top: dict[str, Any] = plan[0]["Plan"]
    return top


def _views_with_ctes(conn: Connection, oid: int) -> list[tuple[int, str]]:
    """The view and the views it reads, at any depth, whose query has a WITH query."""
    # A stored query tree writes a WITH query as a CommonTableExpr node; a rule's
    # pg_depend rows name the relations its query reads.
    return [
        (int(found), str(name))
        for found, name in conn.execute(
            (
                "WITH RECURSIVE views(oid) AS ("
                " SELECT CAST(%(oid)s AS oid)"
                " UNION SELECT d.refobjid FROM views v"
                " JOIN pg_rewrite r ON r.ev_class = v.oid"
                " JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid"
                " AND d.refclassid = 'pg_class'::regclass"
                " JOIN pg_class c ON c.oid = d.refobjid AND c.relkind = 'v')"
                " SELECT DISTINCT v.oid, CAST(CAST(v.oid AS regclass) AS text) FROM views v"
                " JOIN pg_rewrite r ON r.ev_class = v.oid"
                " WHERE strpos(CAST(r.ev_action AS text), '{COMMONTABLEEXPR ') > 0"
                " ORDER BY 2"
            ),
            {"oid": oid},
        )
    ]


def _copied(node: dict[str, Any]) -> Iterator[str]:
    """Tables the locked plan scans without their ctid: FOR SHARE copies their rows."""
    if node.get("Parent Relationship") in {"SubPlan", "InitPlan"}:
        return  # subqueries are judged per column
    # `ctid` alone when the query reads one relation, else `alias.ctid`.
    if "Relation Name" in node and not any(
        out == "ctid" or str(out).endswith(".ctid") for out in node.get("Output", [])
    ):
        schema = node.get("Schema")  # always there in a VERBOSE plan
        yield f"{schema + '.' if schema else ''}{node['Relation Name']}"
    for child in node.get("Plans", []):
        yield from _copied(child)


def _subplans(node: dict[str, Any]) -> int:
    """SubPlan and InitPlan nodes in a plan, a materialized WITH query's own left out."""
    own = node.get("Parent Relationship") in {"SubPlan", "InitPlan"} and not str(
        node.get("Subplan Name", "")
    ).startswith("CTE ")
    return int(own) + sum(_subplans(child) for child in node.get("Plans", []))
