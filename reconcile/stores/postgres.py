"""PostgreSQL adapter: validate the mapping and stream face rows by point id.

Longer than the other modules (about 480 lines) on purpose: it is the one place
that speaks SQL, as reladiff keeps one module per database. What is here is the
table's check, the chunked COPY stream, the locked lookups of repair and undo,
and the run lock; splitting it would spread one table's statements over files.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg.types.string import TextLoader
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from reconcile.errors import ConfigError, LockHeld, StoreError
from reconcile.settings import Settings, mask_url, sqlalchemy_url, table_parts
from reconcile.stores.base import KeyRange, PointId, Row, first_line, point_order

POINT_TYPES = {"uuid", "smallint", "integer", "bigint"}
# Rows per chunk of a scan, in pages: large enough that the query overhead is
# small, small enough that each chunk is a short read.
CHUNK_PAGES = 50
TIME_TYPES = {"timestamp with time zone", "timestamp without time zone"}


class LockMode(Enum):
    """How `select_rows` locks: not at all, skipping held rows, or waiting for them."""

    NONE = "none"
    SKIP_LOCKED = "skip_locked"
    WAIT = "wait"


def _sql_type(pg_type: str) -> sa.types.TypeEngine[Any]:
    """A bind type for ids given as strings: uuid and integers need their own type."""
    if pg_type == "uuid":
        return sa.Uuid(as_uuid=False)
    if pg_type in {"smallint", "integer", "bigint"}:
        return sa.BigInteger()
    return sa.String()


PERSON_TYPES = POINT_TYPES | {"text", "character varying"}


@dataclass(frozen=True)
class TableInfo:
    """What `check` learned of the table."""

    name: str
    point_type: str
    person_type: str
    id_type: str
    point_indexed: bool
    updated_type: str | None = None  # the --updated-column's type, None when absent


class Postgres:
    """The face table, read through SQLAlchemy Core (no ORM objects in the hot path)."""

    def __init__(self, settings: Settings, engine: Engine | None = None) -> None:
        self.settings = settings
        self._masked = mask_url(settings.database_url)
        self.engine = engine or sa.create_engine(
            sqlalchemy_url(settings.database_url),
            # The pid in the name lets a second run say which process holds the lock.
            connect_args={
                "connect_timeout": 10,
                "application_name": f"reconcile pid={os.getpid()}",
            },
            pool_pre_ping=False,
        )
        # UUIDs arrive as their canonical text, which is what the merge compares:
        # building a uuid.UUID per value and printing it back cost a third of a scan.
        sa.event.listen(self.engine, "connect", _uuids_as_text)
        self.info: TableInfo | None = None
        self._bind(sa.types.NullType(), sa.types.NullType())

    def _bind(self, point: sa.types.TypeEngine[Any], face: sa.types.TypeEngine[Any]) -> None:
        """Build the table expression; typed columns let ids given as strings bind."""
        s = self.settings
        schema, name = table_parts(s.table)
        self.table = sa.table(
            name,
            sa.column(s.point_column, point),
            sa.column(s.person_column),
            sa.column(s.id_column, face),
            sa.column(s.updated_column, sa.DateTime(timezone=True)),
            schema=schema,
        )
        self._point = self.table.c[s.point_column]
        self._person = self.table.c[s.person_column]
        self._id = self.table.c[s.id_column]
        self._updated = self.table.c[s.updated_column]

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """Turn driver errors into one line a user can act on, password masked."""
        try:
            yield
        except (DBAPIError, psycopg.Error) as exc:
            # psycopg's own errors come from COPY, which runs on the raw connection.
            orig = exc.orig if isinstance(exc, DBAPIError) else exc
            detail = first_line(orig) if orig else str(exc)
            invalidated = isinstance(exc, DBAPIError) and exc.connection_invalidated
            if "resolve host" in detail:
                # libpq's "failed to resolve host" names neither the URL nor what to fix.
                raise StoreError(
                    f"PostgreSQL at {self._masked} is unreachable: {detail}; check the host "
                    "name in --database-url (DATABASE_URL) and that this machine's DNS knows it"
                ) from None
            if invalidated or "connection" in detail.lower():
                raise StoreError(
                    f"PostgreSQL at {self._masked} failed while {doing}: {detail}; "
                    "check --database-url (DATABASE_URL) and that the server is running"
                ) from None
            raise StoreError(f"PostgreSQL failed while {doing}: {detail}") from None
        except SQLAlchemyError as exc:
            raise StoreError(f"PostgreSQL failed while {doing}: {exc}") from None

    @contextmanager
    def reading(self, doing: str) -> Iterator[sa.Connection]:
        """A connection for one short read; driver errors become a StoreError naming `doing`."""
        with self._errors(doing), self.engine.connect() as conn:
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
            oid = conn.execute(
                sa.text(
                    "SELECT to_regclass(CASE WHEN CAST(:schema AS text) IS NULL THEN '' "
                    "ELSE quote_ident(:schema) || '.' END || quote_ident(:name))::oid"
                ),
                {"schema": schema, "name": name},
            ).scalar()
            if oid is None:
                raise ConfigError(
                    f"table {qualified!r} not found in the database: set --table "
                    "(use 'schema.table' for a table outside the search path)"
                )
            columns = {
                row.attname: (row.type, row.attnum)
                for row in conn.execute(
                    sa.text(
                        "SELECT attname, format_type(atttypid, NULL) AS type, attnum "
                        "FROM pg_attribute WHERE attrelid = :oid AND attnum > 0 "
                        "AND NOT attisdropped"
                    ),
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
            if problems:
                raise ConfigError("; ".join(problems))
            indexed = bool(
                conn.execute(
                    sa.text(
                        "SELECT EXISTS (SELECT 1 FROM pg_index i "
                        "JOIN pg_class ic ON ic.oid = i.indexrelid "
                        "JOIN pg_am am ON am.oid = ic.relam "
                        "WHERE i.indrelid = :oid AND i.indkey[0] = :attnum "
                        "AND i.indpred IS NULL AND am.amname = 'btree')"
                    ),
                    {"oid": oid, "attnum": columns[s.point_column][1]},
                ).scalar()
            )
        self._bind(_sql_type(columns[s.point_column][0]), _sql_type(columns[s.id_column][0]))
        updated = columns.get(s.updated_column, ("", 0))[0]
        return TableInfo(
            name=qualified,
            point_type=columns[s.point_column][0],
            person_type=columns[s.person_column][0],
            id_type=columns[s.id_column][0],
            point_indexed=indexed,
            updated_type=updated or None,
        )

    def count(self) -> int:
        with self.reading("counting rows") as conn:
            return int(
                conn.execute(sa.select(sa.func.count()).select_from(self.table)).scalar_one()
            )

    def _recent(self) -> sa.ColumnElement[bool]:
        """Whether a row changed within the grace window (`--min-age`), by the server's clock."""
        if self.settings.min_age <= 0:
            return sa.false()
        window = sa.func.make_interval(0, 0, 0, 0, 0, 0, self.settings.min_age)
        return sa.func.coalesce(self._updated > sa.func.now() - window, False)

    def rows(self, key_range: KeyRange | None = None) -> Iterator[Row]:
        """Every row in the range, ascending by point id, in bounded chunks.

        Each chunk is its own short read (keyset pagination on the point index), so
        a scan of 10^8 rows never holds one snapshot for an hour: vacuum goes on,
        no statement_timeout is hit, a replica does not cancel us. A chunk never
        ends inside a point's rows: the rows of its last point are read whole, so
        a point two rows name is still seen as one duplicate. Rows with a NULL
        point id come last, in the first slice only.
        """
        self.inspect()  # binds the column types the statements below are built with
        key_range = key_range or KeyRange()
        after: PointId | None = None
        limit = self.settings.page_size * CHUNK_PAGES
        base = sa.select(self._point, self._id, self._person, self._recent())
        while True:
            stmt = base.where(self._point.is_not(None))
            if after is not None:
                stmt = stmt.where(self._point > after)
            elif key_range.low is not None:
                stmt = stmt.where(self._point >= key_range.low)
            if key_range.high is not None:
                stmt = stmt.where(self._point < key_range.high)
            # Each point's rows are held back until the next point starts, so that
            # a chunk cut inside the last point's rows can drop them and read them
            # whole. `first` is the point's first row, `more` the rare others.
            first: Row | None = None
            more: list[Row] = []
            read = 0
            for row in self._stream(stmt.order_by(self._point).limit(limit)):
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
            yield from self._stream(base.where(self._point == after))
        if key_range.first:
            yield from self._stream(base.where(self._point.is_(None)))

    def _stream(self, stmt: sa.Select[Any]) -> Iterator[Row]:
        """One short read, a transaction of its own: the select's rows through COPY.

        COPY streams rows without a cursor's round trips, and psycopg's C code
        parses them into the exact types wanted (ids as text or integers):
        2.4 times faster than SQLAlchemy's result layer at a million rows
        (BENCHMARKS.md). The statement is still built by SQLAlchemy, compiled to
        psycopg's placeholders; COPY cannot take server-side parameters, so
        psycopg binds them on the client.
        """
        info = self.inspect()
        types = [_copy_type(info.point_type), "text", _copy_type(info.person_type), "bool"]
        compiled = stmt.compile(dialect=self.engine.dialect)
        # Identifiers are plain (settings.check_identifier), so the statement holds
        # no % that psycopg would need to unescape when there are no params.
        query = f"COPY ({compiled}) TO STDOUT"
        with self.reading("streaming rows") as conn:
            raw = conn.connection.driver_connection
            assert raw is not None
            try:
                with raw.cursor() as cur, cur.copy(query, compiled.params) as copy:
                    copy.set_types(types)
                    for point, face, person, recent in copy.rows():
                        yield Row(point, face, person, recent)
            finally:
                if raw.broken:
                    # The session is gone. SQLAlchemy did not see the error (it came
                    # from the raw connection), so tell its pool not to reuse it.
                    conn.invalidate()

    def point_bounds(self) -> tuple[int, int] | None:
        """min and max of an integer point column (index probes), None when empty."""
        stmt = sa.select(sa.func.min(self._point), sa.func.max(self._point))
        with self.reading("reading the point id range") as conn:
            low, high = conn.execute(stmt).one()
        return None if low is None else (int(low), int(high))

    @contextmanager
    def transaction(self, lock_timeout: float, hold_limit: float) -> Iterator[sa.Connection]:
        """One short transaction whose waits and idle time are bounded by the server.

        `lock_timeout` bounds waiting for a lock; `idle_in_transaction_session_timeout`
        makes the server end the session (and free our row locks) if this process
        hangs or dies while holding them, so the application is never blocked for long.
        """
        with self.reading("locking rows") as conn, conn.begin():
            conn.execute(
                sa.text(
                    "SELECT set_config('lock_timeout', :lock, true), "
                    "set_config('idle_in_transaction_session_timeout', :idle, true)"
                ),
                {"lock": f"{int(lock_timeout * 1000)}ms", "idle": f"{int(hold_limit * 1000)}ms"},
            )
            yield conn

    def ping(self, conn: sa.Connection) -> None:
        """Fail unless this transaction's session is still alive (and so its locks held)."""
        with self._errors("checking the row locks are still held"):
            conn.execute(sa.select(1))

    def select_rows(
        self, conn: sa.Connection, point_ids: list[PointId], lock: LockMode
    ) -> list[Row]:
        """The rows naming these points, locked FOR SHARE unless `lock` says otherwise.

        FOR SHARE blocks an application UPDATE of the same rows until we commit, so
        the application writes Qdrant after us. SKIP LOCKED passes over rows an
        application transaction holds (it will write Qdrant itself); WAIT waits for
        them, up to the transaction's lock_timeout.
        """
        stmt = sa.select(self._point, self._id, self._person, self._recent()).where(
            self._point.in_(point_ids)
        )
        if lock is not LockMode.NONE:
            stmt = stmt.with_for_update(read=True, skip_locked=lock is LockMode.SKIP_LOCKED)
        with self._errors("locking rows"):
            return [
                Row(_point_value(point), str(face), _point_value(person), recent)
                for point, face, person, recent in conn.execute(stmt)
            ]

    def points_of_faces(self, face_ids: list[str]) -> dict[str, PointId | None]:
        """The point each of these faces names; unknown faces are left out."""
        stmt = sa.select(self._id, self._point).where(self._id.in_(face_ids))
        with self.reading("looking up faces") as conn:
            return {str(face): _point_value(point) for face, point in conn.execute(stmt)}

    def rows_of_points(self, point_ids: list[PointId]) -> list[Row]:
        """Every row naming these points, ascending by point id, without locks."""
        with self.reading("looking up rows") as conn:
            rows = self.select_rows(conn, point_ids, LockMode.NONE)
        return sorted(rows, key=lambda r: point_order(r.point_id if r.point_id is not None else 0))

    def points_changed_since(self, since: datetime) -> Iterator[PointId]:
        """Point ids of rows updated at or after `since`, streamed."""
        stmt = (
            sa.select(self._point)
            .where(self._updated >= since, self._point.is_not(None))
            .execution_options(yield_per=self.settings.page_size)
        )
        with self.reading("reading changed rows") as conn:
            for (point,) in conn.execute(stmt):
                value = _point_value(point)
                assert value is not None
                yield value

    def now(self) -> datetime:
        """The database's clock: run windows must not depend on this machine's clock."""
        with self.reading("reading the clock") as conn:
            value = conn.execute(sa.select(sa.func.now())).scalar_one()
        assert isinstance(value, datetime)
        return value

    def person_counts(self) -> dict[str, int]:
        """Faces per person (one GROUP BY; NULL persons left out)."""
        stmt = (
            sa.select(self._person, sa.func.count())
            .where(self._person.is_not(None))
            .group_by(self._person)
        )
        with self.reading("counting faces per person") as conn:
            return {str(_point_value(person)): int(n) for person, n in conn.execute(stmt)}

    def rows_per_point(self, conn: sa.Connection, point_ids: list[PointId]) -> dict[PointId, int]:
        """How many rows name each point, read without locks (tells held rows from deleted ones)."""
        stmt = (
            sa.select(self._point, sa.func.count())
            .where(self._point.in_(point_ids))
            .group_by(self._point)
        )
        with self._errors("re-reading rows"):
            found: dict[PointId, int] = {}
            for point, n in conn.execute(stmt):
                value = _point_value(point)
                assert value is not None
                found[value] = int(n)
            return found


@contextmanager
def advisory_lock(postgres: Postgres, name: str) -> Iterator[None]:
    """Hold a session-level advisory lock named `name` for the block, or raise LockHeld.

    The lock lives on a connection of its own, so it goes away when this process
    dies (the server ends the session), and short batch transactions do not touch it.
    """
    key = sa.func.hashtextextended(name, 0)
    with postgres._errors("taking the run lock"):
        conn = postgres.engine.connect()
        try:
            taken = conn.execute(sa.select(sa.func.pg_try_advisory_lock(key))).scalar_one()
            holder = None if taken else _lock_holder(conn, name)
            conn.commit()
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
        with contextlib.suppress(SQLAlchemyError):
            conn.execute(sa.select(sa.func.pg_advisory_unlock(key)))
            conn.commit()
        conn.close()


def _lock_holder(conn: sa.Connection, name: str) -> str | None:
    """Who holds the advisory lock: our pid is in its application_name."""
    holder = conn.execute(
        sa.text(
            "SELECT a.application_name, a.pid, a.backend_start, a.client_addr "
            "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
            "AND l.classid::bigint = ((hashtextextended(:name, 0) >> 32) & 4294967295) "
            "AND l.objid::bigint = (hashtextextended(:name, 0) & 4294967295)"
        ),
        {"name": name},
    ).first()
    if holder is None:
        return None
    where = f" from {holder.client_addr}" if holder.client_addr else ""
    return (
        f"{holder.application_name or 'a session'} (server pid {holder.pid}{where}, "
        f"connected since {holder.backend_start:%Y-%m-%d %H:%M:%S %Z})"
    )


def _copy_type(column_type: str) -> str:
    """How COPY hands a point or person column over: integers as int, the rest as text."""
    return "int8" if column_type in {"smallint", "integer", "bigint"} else "text"


def _uuids_as_text(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.adapters.register_loader("uuid", TextLoader)


def _point_value(value: Any) -> PointId | None:
    """Canonical payload form: UUIDs as lower-case strings, integers as integers."""
    if value is None or isinstance(value, PointId):
        return value
    return str(value)
