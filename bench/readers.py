"""Ways to read (point, face, person) from PostgreSQL in point order, without the product's code.

The `readers` task times each way on the world's face table. Each way returns
(rows read, its longest transaction in seconds). `copy_chunks` (keyset chunks,
each one short COPY) also feeds the lean audit prototype in bench.whatif.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

from bench.measure import drain, timed

CHUNK_ROWS = 50_000  # rows per keyset chunk, as the product's default (page 1000 x 50)
COLUMNS = "qdrant_point_id, id, person_id"
ORDERED = f"SELECT {COLUMNS} FROM face_instances ORDER BY qdrant_point_id"


def task_readers(spec: dict[str, Any]) -> dict[str, Any]:
    """Each way to read the table, medians of `repeat_reads` runs."""
    import sqlalchemy as sa

    from reconcile.settings import conninfo
    from reconcile.stores.base import Row

    url = spec["database_url"]
    # SQLAlchemy's URL for the same server, with the psycopg 3 driver (a URL, not key=value).
    engine = sa.create_engine(conninfo(url).replace("postgresql://", "postgresql+psycopg://", 1))
    table = sa.table(
        "face_instances",
        sa.column("qdrant_point_id", sa.Uuid(as_uuid=False)),
        sa.column("id"),
        sa.column("person_id"),
    )
    point = table.c.qdrant_point_id
    select = sa.select(point, table.c.id, table.c.person_id)
    ways: dict[str, Callable[[], tuple[int, float]]] = {
        "sqlalchemy server-side cursor, one transaction (yield_per 1000)": (
            lambda: sa_cursor(engine, select, point)
        ),
        f"sqlalchemy keyset chunks of {CHUNK_ROWS:,} (yield_per 1000)": (
            lambda: sa_chunks(engine, select, point)
        ),
        "psycopg named cursor, uuid objects": lambda: named_cursor(url, as_text=False),
        "psycopg named cursor, uuid as text": lambda: named_cursor(url, as_text=True),
        f"psycopg keyset chunks of {CHUNK_ROWS:,}, uuid as text": lambda: pg_chunks(url, None),
        f"psycopg keyset chunks of {CHUNK_ROWS:,}, uuid as text, Row objects": (
            lambda: pg_chunks(url, lambda r: Row(r[0], r[1], r[2], False))
        ),
        "COPY TO STDOUT, raw bytes": lambda: copy_all(url, count_lines),
        "COPY TO STDOUT, split into str tuples": lambda: copy_all(url, count_tuples),
        f"COPY per keyset chunk of {CHUNK_ROWS:,}, str tuples": lambda: copy_in_chunks(url),
    }
    results = {name: median_read(name, way, spec) for name, way in ways.items()}
    engine.dispose()
    return results


def median_read(name: str, way: Callable[[], tuple[int, float]], spec: dict[str, Any]) -> Any:
    """The median seconds of `repeat_reads` runs, and the longest transaction of any."""
    times, longest = [], 0.0
    for _ in range(spec["repeat_reads"]):
        (n, hold), t = timed(way)
        times.append(t)
        longest = max(longest, hold)
        assert n == spec["rows"], (name, n)
    return {"seconds": statistics.median(times), "longest_transaction": longest}


def sa_cursor(engine: Any, select: Any, point: Any) -> tuple[int, float]:
    started = time.perf_counter()
    with engine.connect() as conn:
        result = conn.execution_options(yield_per=1000).execute(select.order_by(point))
        n = drain(result)
    return n, time.perf_counter() - started


def sa_chunks(engine: Any, select: Any, point: Any) -> tuple[int, float]:
    n, last, longest = 0, None, 0.0
    while True:
        stmt = select.order_by(point).limit(CHUNK_ROWS)
        if last is not None:
            stmt = stmt.where(point > last)
        started = time.perf_counter()
        read = 0
        with engine.connect() as conn:  # one connection checkout = one transaction
            for row in conn.execution_options(yield_per=1000).execute(stmt):
                read += 1
                last = row[0]
        longest = max(longest, time.perf_counter() - started)
        n += read
        if read < CHUNK_ROWS:
            return n, longest


def pg_connect(url: str, as_text: bool) -> Any:
    import psycopg
    from psycopg.types.string import TextLoader

    conn = psycopg.connect(url)
    if as_text:
        conn.adapters.register_loader("uuid", TextLoader)
    return conn


def named_cursor(url: str, as_text: bool) -> tuple[int, float]:
    started = time.perf_counter()
    with pg_connect(url, as_text) as conn, conn.cursor(name="scan") as cur:
        cur.itersize = 1000
        cur.execute(ORDERED)
        n = drain(cur)
    return n, time.perf_counter() - started


def pg_chunks(url: str, make_row: Callable[[Any], Any] | None) -> tuple[int, float]:
    """Keyset chunks, each one transaction streamed by a named cursor, uuids as text."""
    n, last, longest = 0, None, 0.0
    with pg_connect(url, as_text=True) as conn:
        while True:
            started = time.perf_counter()
            read = 0
            with conn.transaction(), conn.cursor(name="chunk") as cur:
                cur.itersize = 1000
                if last is None:
                    cur.execute(f"{ORDERED} LIMIT %s", (CHUNK_ROWS,))
                else:
                    cur.execute(
                        f"SELECT {COLUMNS} FROM face_instances WHERE qdrant_point_id > %s "
                        "ORDER BY qdrant_point_id LIMIT %s",
                        (last, CHUNK_ROWS),
                    )
                for row in cur:
                    read += 1
                    if make_row is not None:
                        make_row(row)
                    last = row[0]
            longest = max(longest, time.perf_counter() - started)
            n += read
            if read < CHUNK_ROWS:
                return n, longest


def copy_all(url: str, count: Callable[[bytes], int]) -> tuple[int, float]:
    """The whole table by one COPY TO STDOUT; `count` tells the rows in each block of data."""
    import psycopg

    started = time.perf_counter()
    n = 0
    with (
        psycopg.connect(url) as conn,
        conn.cursor() as cur,
        cur.copy(f"COPY ({ORDERED}) TO STDOUT") as copy,
    ):
        for data in copy:
            n += count(bytes(data))
    return n, time.perf_counter() - started


def count_lines(data: bytes) -> int:
    return data.count(b"\n")


def count_tuples(data: bytes) -> int:
    """The rows of a block split into (point, face, person) str tuples."""
    rows = [
        (point, face, None if person == "\\N" else person)
        for point, face, person in (line.split("\t") for line in data.decode().splitlines())
    ]
    return len(rows)


def copy_in_chunks(url: str) -> tuple[int, float]:
    holds: list[float] = []
    n = drain(copy_chunks(url, holds=holds))
    return n, max(holds)


def copy_chunks(
    url: str, chunk: int = CHUNK_ROWS, holds: list[float] | None = None
) -> Iterator[tuple[str, str, str | None]]:
    """(point, face, person) by keyset chunks, each one short COPY in its own transaction.

    `holds` gets each chunk's duration (how long its snapshot was held).
    """
    import psycopg

    query = (
        "COPY (SELECT qdrant_point_id, id, person_id FROM face_instances {where} "
        "ORDER BY qdrant_point_id LIMIT {limit}) TO STDOUT"
    )
    last: str | None = None
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            where = "" if last is None else f"WHERE qdrant_point_id > '{last}'"
            read = 0
            started = time.perf_counter()
            with conn.cursor() as cur, cur.copy(query.format(where=where, limit=chunk)) as copy:
                for data in copy:
                    for line in bytes(data).decode().splitlines():
                        point, face, person = line.split("\t")
                        read += 1
                        yield point, face, None if person == "\\N" else person
                        last = point
            if holds is not None:
                holds.append(time.perf_counter() - started)
            if read < chunk:
                return
