"""A real PostgreSQL for the whole session, a fresh schema per test, Qdrant in local mode."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from reconcile.testing.embedded import start_embedded_postgres, stop_embedded_postgres
from tests.helpers import server_dir, with_query
from tests.world import World


@pytest.fixture(scope="session", autouse=True)
def private_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """No test writes into the user's home: every default state path (journals, the
    demo's memory) goes to a directory of the session's own, also for the CLI
    processes the tests start (they inherit the environment)."""
    state = tmp_path_factory.mktemp("xdg-state")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_STATE_HOME", str(state))
        yield state


@pytest.fixture
def server_root() -> Iterator[Path]:
    """A directory for a test's own embedded server (see helpers.server_dir)."""
    with server_dir("test") as root:
        yield root


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """RECONCILE_TEST_DATABASE_URL when set; otherwise an embedded server for the session."""
    url = os.environ.get("RECONCILE_TEST_DATABASE_URL")
    if url:
        yield url
        return
    # Not under pytest's basetemp: every pytest run makes that 0700 again, and the
    # server (another system user) could then no longer reach a concurrent run's data.
    root = Path(tempfile.mkdtemp(prefix="reconcile-test-pg-"))
    pgdata = root / "pgdata"
    try:
        yield start_embedded_postgres(pgdata)
    finally:
        stop_embedded_postgres(pgdata)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(server_url: str) -> Iterator[str]:
    """A URL whose search_path is a schema of this test's own, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    yield with_query(server_url, options=f"-csearch_path={schema}")
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def world(pg_url: str, tmp_path: Path) -> Iterator[World]:
    w = World(pg_url, tmp_path / "qdrant")
    yield w
    w.close()
