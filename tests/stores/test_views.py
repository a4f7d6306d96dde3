"""A view as the faces "table": which ones repair can lock so that every mapped value is covered.

The worlds are the service's tables (face_instances, image_assets, person_prototypes) in
the test's schema, with the views a deployment might point --table at.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from reconcile.stores.postgres import Connection, relation_kind, view_lock_problems

TABLES = """
CREATE TABLE image_assets (id integer PRIMARY KEY, taken_at timestamp);
CREATE TABLE face_instances (
    id uuid PRIMARY KEY,
    asset_id integer NOT NULL REFERENCES image_assets (id) ON DELETE CASCADE,
    bbox_x integer NOT NULL, bbox_y integer NOT NULL, bbox_w integer NOT NULL,
    bbox_h integer NOT NULL,
    qdrant_point_id uuid NOT NULL UNIQUE,
    person_id uuid,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE person_prototypes (
    id serial PRIMARY KEY,
    person_id uuid NOT NULL,
    face_instance_id uuid NOT NULL REFERENCES face_instances (id) ON DELETE CASCADE
);
"""
# The fix every view-shape problem line ends with.
LOCKABLE = (
    "repair needs a view whose rows PostgreSQL can lock — inner joins only, no GROUP BY, "
    "DISTINCT, aggregate, window function, UNION or WITH query — or the table itself"
)
# What every view below selects, after its own columns.
FACE = "f.id, f.qdrant_point_id, f.person_id"
COLUMNS = ["qdrant_point_id", "id", "person_id"]
# The view the feature is for: the asset's taken_at by an inner join, and values the
# payload derives from the face's own columns.
INNER = (
    f"SELECT {FACE}, a.taken_at, f.person_id IS NOT NULL AS is_assigned, "
    "jsonb_build_object('x', f.bbox_x, 'y', f.bbox_y, 'w', f.bbox_w, 'h', f.bbox_h) AS bbox "
    "FROM face_instances f JOIN image_assets a ON a.id = f.asset_id"
)
EXISTS = (
    f"SELECT {FACE}, EXISTS (SELECT 1 FROM person_prototypes p "
    "WHERE p.face_instance_id = f.id) AS is_prototype FROM face_instances f"
)


@pytest.fixture
def db(pg_url: str) -> Iterator[psycopg.Connection[Any]]:
    """The test's schema with the service's tables; autocommit, for DDL and as the application."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(TABLES)
        yield conn


@pytest.fixture
def reader(pg_url: str, db: psycopg.Connection[Any]) -> Iterator[Connection]:
    """A connection as repair's reads get one: not in autocommit."""
    with psycopg.connect(pg_url) as conn:
        yield conn


def schema_of(db: psycopg.Connection[Any]) -> str:
    row = db.execute("SELECT current_schema()").fetchone()
    assert row is not None
    return str(row[0])


def problems(reader: Connection, name: str, columns: list[str]) -> list[str]:
    try:
        return view_lock_problems(reader, name, columns)
    finally:
        reader.rollback()  # as the store's connections go back after each read


def one_face(db: psycopg.Connection[Any]) -> tuple[str, str]:
    """A face on asset 1; returns its (face id, point id)."""
    face, point = str(uuid.uuid4()), str(uuid.uuid4())
    db.execute("INSERT INTO image_assets VALUES (1, '2024-06-01T10:22:00')")
    db.execute(
        "INSERT INTO face_instances (id, asset_id, bbox_x, bbox_y, bbox_w, bbox_h, "
        "qdrant_point_id) VALUES (%s, 1, 120, 44, 96, 96, %s)",
        (face, point),
    )
    return face, point


def test_relation_kind_names_tables_views_and_materialized_views(
    db: psycopg.Connection[Any], reader: Connection
) -> None:
    db.execute(f"CREATE VIEW faces_v AS {INNER}")
    db.execute("CREATE MATERIALIZED VIEW faces_m AS SELECT * FROM face_instances")
    db.execute("CREATE TABLE faces_p (id uuid) PARTITION BY HASH (id)")
    kinds = {}
    for name in ("face_instances", "faces_v", "faces_m", "faces_p"):
        found = reader.execute(f"SELECT '{name}'::regclass::oid").fetchone()
        assert found is not None
        kinds[name] = relation_kind(reader, found[0])
    assert kinds == {
        "face_instances": "table",
        "faces_v": "view",
        "faces_m": "materialized view",
        "faces_p": "partitioned table",
    }


def test_an_inner_join_view_covers_joined_columns_and_expressions(
    db: psycopg.Connection[Any], reader: Connection
) -> None:
    db.execute(f"CREATE VIEW faces_v AS {INNER}")
    columns = [*COLUMNS, "taken_at", "is_assigned", "bbox"]
    assert problems(reader, "faces_v", columns) == []
    assert problems(reader, f"{schema_of(db)}.faces_v", columns) == []
    assert problems(reader, "face_instances", COLUMNS) == []


@pytest.mark.parametrize(
    ("body", "refusal"),
    [
        (
            f"SELECT {FACE}, a.taken_at FROM face_instances f "
            "LEFT JOIN image_assets a ON a.id = f.asset_id",
            "FOR SHARE cannot be applied to the nullable side of an outer join",
        ),
        (
            "SELECT f.qdrant_point_id, min(f.id::text) AS id, min(f.person_id::text) AS person_id "
            "FROM face_instances f GROUP BY f.qdrant_point_id",
            "FOR SHARE is not allowed with GROUP BY clause",
        ),
        (
            f"SELECT DISTINCT {FACE} FROM face_instances f",
            "FOR SHARE is not allowed with DISTINCT clause",
        ),
        (
            f"SELECT {FACE}, count(*) OVER (PARTITION BY f.person_id) AS n FROM face_instances f",
            "FOR SHARE is not allowed with window functions",
        ),
    ],
    ids=["left_join", "group_by", "distinct", "window"],
)
def test_a_view_postgresql_refuses_to_lock_is_one_line_naming_it(
    db: psycopg.Connection[Any], reader: Connection, body: str, refusal: str
) -> None:
    db.execute(f"CREATE VIEW faces_v AS {body}")
    qualified = f"{schema_of(db)}.faces_v"

    found = problems(reader, qualified, COLUMNS)

    assert found == [f"view {qualified} cannot be locked FOR SHARE ({refusal}): {LOCKABLE}"]


def test_a_provably_empty_select_would_hide_the_group_by_refusal(
    db: psycopg.Connection[Any], reader: Connection
) -> None:
    """Why the check plans the select rather than running it with WHERE false: PostgreSQL
    does not plan the view's subquery when the query is provably empty."""
    db.execute(
        "CREATE VIEW faces_v AS SELECT f.qdrant_point_id, count(*) AS n "
        "FROM face_instances f GROUP BY f.qdrant_point_id"
    )
    with db.transaction():
        db.execute("SELECT qdrant_point_id FROM faces_v WHERE false FOR SHARE")  # no error

    assert len(problems(reader, "faces_v", ["qdrant_point_id"])) == 1


@pytest.mark.parametrize(
    ("column", "body"),
    [
        ("is_prototype", EXISTS),
        (
            "taken_at",
            f"SELECT {FACE}, (SELECT a.taken_at FROM image_assets a WHERE a.id = f.asset_id) "
            "AS taken_at FROM face_instances f",
        ),
        # Uncorrelated: an InitPlan, which PostgreSQL 15 prints as `$0`.
        (
            "latest",
            f"SELECT {FACE}, (SELECT max(taken_at) FROM image_assets) AS latest "
            "FROM face_instances f",
        ),
        # OFFSET 0 keeps the view from being flattened into the query: the plan's top
        # shows only `faces_v.is_prototype`, and the subquery sits below it.
        ("is_prototype", f"{EXISTS} OFFSET 0"),
    ],
    ids=["exists", "scalar", "uncorrelated", "in_a_view_planned_apart"],
)
def test_a_column_computed_by_a_subquery_is_named_and_no_other(
    db: psycopg.Connection[Any], reader: Connection, column: str, body: str
) -> None:
    db.execute(f"CREATE VIEW faces_v AS {body}")

    found = problems(reader, "faces_v", [*COLUMNS, column])

    assert found == [
        f"view faces_v computes column {column} with a subquery, which FOR SHARE does not "
        "lock: repair could overwrite a change made meanwhile; bring it in by an inner join, "
        "or leave it out of --map"
    ]
    # Left out of the mapped columns, the same view is fine.
    assert problems(reader, "faces_v", COLUMNS) == []


def test_a_subquery_in_the_views_where_is_not_charged_to_the_columns(
    db: psycopg.Connection[Any], reader: Connection
) -> None:
    """It chooses rows, not the values repair writes (see the docstring's 'not detected')."""
    db.execute(
        f"CREATE VIEW faces_v AS SELECT {FACE} FROM face_instances f "
        "WHERE (SELECT count(*) FROM person_prototypes p WHERE p.face_instance_id = f.id) < 2"
    )
    assert problems(reader, "faces_v", COLUMNS) == []


@pytest.mark.parametrize(
    "body",
    [
        f"SELECT {FACE} FROM face_instances f UNION ALL SELECT {FACE} FROM face_instances f",
        f"SELECT {FACE} FROM face_instances f UNION SELECT {FACE} FROM face_instances f",
    ],
    ids=["union_all", "union"],
)
def test_a_union_is_named_by_the_table_it_copies(
    db: psycopg.Connection[Any], reader: Connection, body: str
) -> None:
    db.execute(f"CREATE VIEW faces_v AS {body}")

    found = problems(reader, "faces_v", COLUMNS)

    assert found == [
        f"view faces_v reads table {schema_of(db)}.face_instances without locking its rows "
        "(PostgreSQL copies the rows of a UNION instead): repair could overwrite a change "
        f"made meanwhile; {LOCKABLE}"
    ]


# PostgreSQL inlines a WITH query referenced once: its table is then joined and fetched
# by ctid like a locked one, but not locked (the blocking test below shows it).
WITH_INLINED = (
    "WITH a AS (SELECT id, taken_at FROM image_assets) "
    f"SELECT {FACE}, a.taken_at FROM face_instances f JOIN a ON a.id = f.asset_id"
)


@pytest.mark.parametrize(
    "body",
    [
        WITH_INLINED,
        WITH_INLINED.replace(" AS (", " AS MATERIALIZED ("),
        f"WITH f AS (SELECT * FROM face_instances) SELECT {FACE} FROM f",
    ],
    ids=["inlined", "materialized", "the_faces_themselves"],
)
def test_a_with_query_is_named(db: psycopg.Connection[Any], reader: Connection, body: str) -> None:
    db.execute(f"CREATE VIEW faces_v AS {body}")
    assert problems(reader, "faces_v", COLUMNS) == [
        "view faces_v reads a WITH query, whose rows FOR SHARE does not lock: repair could "
        f"overwrite a change made meanwhile; {LOCKABLE}"
    ]


def test_a_with_query_in_a_view_the_view_reads_is_named_with_that_view(
    db: psycopg.Connection[Any], reader: Connection
) -> None:
    db.execute(f"CREATE VIEW faces_w AS {WITH_INLINED}")
    db.execute("CREATE VIEW faces_x AS SELECT * FROM faces_w")
    db.execute("CREATE VIEW faces_v AS SELECT x.* FROM faces_x x JOIN image_assets a ON true")
    assert problems(reader, "faces_v", COLUMNS) == [
        "view faces_v reads a WITH query (in view faces_w), whose rows FOR SHARE does not "
        f"lock: repair could overwrite a change made meanwhile; {LOCKABLE}"
    ]


def test_a_materialized_view_is_refused(db: psycopg.Connection[Any], reader: Connection) -> None:
    db.execute(f"CREATE MATERIALIZED VIEW faces_m AS {INNER}")
    assert problems(reader, "faces_m", COLUMNS) == [
        "faces_m is a materialized view: its rows are a copy, refreshed by hand, and "
        "PostgreSQL cannot lock them; point --table at the table"
    ]


def test_a_missing_view_is_a_problem_and_a_missing_column_an_error(
    db: psycopg.Connection[Any], reader: Connection
) -> None:
    assert problems(reader, "faces_v", COLUMNS) == [
        "faces_v not found in the database: set --table"
    ]
    db.execute(f"CREATE VIEW faces_v AS {INNER}")
    with pytest.raises(psycopg.errors.UndefinedColumn, match=r"column .*nope.* does not exist"):
        problems(reader, "faces_v", ["nope"])


def test_the_check_holds_no_lock_and_leaves_the_transaction_usable(
    db: psycopg.Connection[Any], reader: Connection
) -> None:
    db.execute(
        f"CREATE VIEW faces_left AS SELECT {FACE}, a.taken_at FROM face_instances f "
        "LEFT JOIN image_assets a ON a.id = f.asset_id"
    )
    db.execute(f"CREATE VIEW faces_v AS {INNER}")
    with reader.transaction():
        assert len(view_lock_problems(reader, "faces_left", COLUMNS)) == 1  # the failing path
        assert view_lock_problems(reader, "faces_v", [*COLUMNS, "taken_at"]) == []
        held = reader.execute(
            "SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() "
            "AND relation IN ('face_instances'::regclass, 'image_assets'::regclass)"
        ).fetchone()
        assert held == (0,)


def test_locking_through_an_inner_join_view_blocks_a_change_of_the_joined_row(
    db: psycopg.Connection[Any], reader: Connection, pg_url: str
) -> None:
    """The reason a plain join is accepted: FOR SHARE locks the asset's row too."""
    db.execute(f"CREATE VIEW faces_v AS {INNER}")
    _, point = one_face(db)
    db.execute("SET lock_timeout = '100ms'")
    with psycopg.connect(pg_url) as repair:
        repair.execute(
            "SELECT qdrant_point_id, taken_at FROM faces_v WHERE qdrant_point_id = %s "
            "FOR SHARE SKIP LOCKED",
            (point,),
        )
        with pytest.raises(psycopg.errors.LockNotAvailable):
            db.execute("UPDATE image_assets SET taken_at = now() WHERE id = 1")


def test_locking_through_a_subquery_column_does_not_block_its_table(
    db: psycopg.Connection[Any], reader: Connection, pg_url: str
) -> None:
    """The reason a subquery column is refused: the value repair read goes stale under it."""
    db.execute(f"CREATE VIEW faces_v AS {EXISTS}")
    face, point = one_face(db)
    db.execute("SET lock_timeout = '100ms'")
    with psycopg.connect(pg_url) as repair:
        read = repair.execute(
            "SELECT is_prototype FROM faces_v WHERE qdrant_point_id = %s FOR SHARE SKIP LOCKED",
            (point,),
        ).fetchone()
        assert read == (False,)
        # Neither waits: the prototype row is neither locked nor blocked by the face's lock.
        db.execute(
            "INSERT INTO person_prototypes (person_id, face_instance_id) VALUES (%s, %s)",
            (str(uuid.uuid4()), face),
        )
        db.execute("UPDATE person_prototypes SET person_id = %s", (str(uuid.uuid4()),))
        now = db.execute("SELECT is_prototype FROM faces_v").fetchone()
        assert now == (True,)  # while repair still holds its locks and would write false


@pytest.mark.parametrize(
    ("body", "update"),
    [
        (
            f"SELECT {FACE} FROM face_instances f WHERE f.person_id IS NULL "
            f"UNION ALL SELECT {FACE} FROM face_instances f WHERE f.person_id IS NOT NULL",
            "UPDATE face_instances SET person_id = gen_random_uuid()",
        ),
        (WITH_INLINED, "UPDATE image_assets SET taken_at = now()"),
    ],
    ids=["union_all", "with"],
)
def test_views_postgresql_locks_without_complaint_yet_not_at_all(
    db: psycopg.Connection[Any], reader: Connection, pg_url: str, body: str, update: str
) -> None:
    """The reason FOR SHARE succeeding is not enough: these rows are copied, not locked."""
    db.execute(f"CREATE VIEW faces_v AS {body}")
    _, point = one_face(db)
    db.execute("SET lock_timeout = '100ms'")
    with psycopg.connect(pg_url) as repair:
        locked = repair.execute(
            "SELECT person_id FROM faces_v WHERE qdrant_point_id = %s FOR SHARE", (point,)
        ).fetchall()
        assert locked == [(None,)]
        db.execute(update)  # not blocked: would raise LockNotAvailable
    assert len(problems(reader, "faces_v", COLUMNS)) == 1


def test_an_ordered_read_through_a_join_view_uses_the_tables_point_index(
    db: psycopg.Connection[Any],
) -> None:
    """Audit's chunk query through the view walks face_instances' point index, no sort."""
    db.execute(f"CREATE VIEW faces_v AS {INNER}")
    db.execute("INSERT INTO image_assets SELECT g, now() FROM generate_series(1, 2000) g")
    db.execute(
        "INSERT INTO face_instances (id, asset_id, bbox_x, bbox_y, bbox_w, bbox_h, "
        "qdrant_point_id) SELECT gen_random_uuid(), 1 + g % 2000, 0, 0, 1, 1, "
        "gen_random_uuid() FROM generate_series(1, 20000) g"
    )
    db.execute("ANALYZE")
    row = db.execute(
        "EXPLAIN (FORMAT JSON) SELECT qdrant_point_id, id, person_id, taken_at FROM faces_v "
        "WHERE qdrant_point_id IS NOT NULL AND qdrant_point_id > %s "
        "ORDER BY qdrant_point_id LIMIT 1000",
        ("40000000-0000-0000-0000-000000000000",),
    ).fetchone()
    assert row is not None

    def nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
        yield node
        for child in node.get("Plans", []):
            yield from nodes(child)

    plan = list(nodes(row[0][0]["Plan"]))
    scans = {
        (n["Node Type"], n.get("Relation Name"), n.get("Index Name"))
        for n in plan
        if n.get("Relation Name") == "face_instances"
    }
    assert scans == {("Index Scan", "face_instances", "face_instances_qdrant_point_id_key")}
    assert not [n for n in plan if n["Node Type"] in {"Sort", "Incremental Sort"}]
