"""Faults: Qdrant failing mid-scroll, answering 5xx, and a PostgreSQL connection lost."""

from __future__ import annotations

import http.server
import logging
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from qdrant_client import QdrantClient
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from reconcile.errors import StoreError
from reconcile.ops.audit import audit
from reconcile.stores import Stores
from reconcile.stores.postgres import Connections, Joiner
from reconcile.stores.qdrant import Qdrant
from tests.helpers import run_cli
from tests.world import World


class Flaky:
    """Fault injection (local mode cannot fail): the named method raises qdrant-client's
    own exceptions for its first `failures` calls, then behaves."""

    def __init__(self, client: QdrantClient, method: str, failures: int, exc: Exception) -> None:
        self._client = client
        self.method = method
        self.failures = failures
        self.exc = exc
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name != self.method:
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls <= self.failures:
                raise self.exc
            return attr(*args, **kwargs)

        return call


def flaky_audit(world: World, failures: int, exc: Exception, retries: int = 3) -> Any:
    assert world.client is not None
    flaky = Flaky(world.client, "scroll", failures, exc)
    s = world.settings(page_size=2, retries=retries)
    slept: list[float] = []
    qdrant = Qdrant(s, client=flaky, sleep=slept.append)  # type: ignore[arg-type]
    return audit(s, stores=Stores(s, qdrant=qdrant)), slept


def test_scroll_retries_transient_failures_with_backoff(world: World) -> None:
    p = world.person()
    for _ in range(5):
        world.face(p)
    report, slept = flaky_audit(world, 2, ResponseHandlingException(TimeoutError("timed out")))
    assert report.counts["in_sync"] == 5
    assert slept == [0.5, 1.0]


def test_scroll_gives_up_after_the_retries(world: World) -> None:
    world.face(world.person())
    unavailable = UnexpectedResponse(503, "Service Unavailable", b"overloaded", httpx_headers())
    with pytest.raises(StoreError, match="failed while scrolling points"):
        flaky_audit(world, 10, unavailable, retries=2)


def test_client_errors_are_not_retried(world: World) -> None:
    world.face(world.person())
    forbidden = UnexpectedResponse(403, "Forbidden", b"bad api key", httpx_headers())
    with pytest.raises(StoreError, match="Forbidden"):
        flaky_audit(world, 1, forbidden)


def httpx_headers() -> Any:
    import httpx

    return httpx.Headers()


class Failing(http.server.BaseHTTPRequestHandler):
    """A real HTTP server on loopback answering like an overloaded Qdrant."""

    requests = 0

    def do_GET(self) -> None:
        type(self).requests += 1
        body = b'{"status": {"error": "overloaded"}}'
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def failing_qdrant() -> Iterator[str]:
    Failing.requests = 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_qdrant_answering_503_is_exit_3_after_retries(world: World, failing_qdrant: str) -> None:
    env = {**world.env(), "QDRANT_URL": failing_qdrant}
    env.pop("QDRANT_PATH")
    result = run_cli("audit", "--retries", "1", env=env)
    assert result.returncode == 3
    assert "503" in result.stderr and "Traceback" not in result.stderr
    assert Failing.requests == 2  # the first try and one retry


def test_postgres_connection_lost_mid_stream_is_exit_3(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    # 200,000 rows whose points are missing: more candidates than a joined chunk
    # returns (JOIN_LIMIT), so they are read by COPY, which the server sends ahead
    # into socket buffers: one chunk of ~20 MB is far more than they hold, so the cut
    # lands inside it.
    world.conn.execute(
        "INSERT INTO face_instances (id, asset_id, bbox_x, bbox_y, bbox_w, bbox_h, "
        "detection_confidence, qdrant_point_id) SELECT gen_random_uuid(), 1, 0, 0, 1, 1, "
        "0.9, gen_random_uuid() FROM generate_series(1, 200000)"
    )
    s = world.settings(page_size=5000)
    stores = world.stores(s)
    rows = stores.postgres.rows

    def rows_then_cut(*args: Any, **kwargs: Any) -> Iterator[Any]:
        # Fault injection: terminate our own backend from another session in the
        # middle of the stream, as a failover or a network cut would.
        for n, row in enumerate(rows(*args, **kwargs)):
            if n == 1000:
                with psycopg.connect(world.url, autocommit=True) as killer:
                    killer.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name LIKE 'reconcile%%' AND pid <> pg_backend_pid()"
                    )
            yield row

    stores.postgres.rows = rows_then_cut  # type: ignore[method-assign]
    with pytest.raises(StoreError, match="PostgreSQL"):
        audit(s, stores=stores)
    # The dead session is dropped, not handed back to the pool (which would log
    # a traceback trying to reset it), and the next read gets a live one.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert stores.postgres.count() == 200000


def test_postgres_connection_lost_while_joining_a_chunk_is_exit_3(
    world: World, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    for _ in range(3):
        world.face()
    s = world.settings()
    stores = world.stores(s)
    execute = Joiner._execute

    def cut_then_join(self: Joiner, raw: Any, *args: Any) -> Any:
        # Fault injection: our joining session is terminated from another one (a
        # failover, a network cut) right before its statement.
        with psycopg.connect(world.url, autocommit=True) as killer:
            killer.execute("SELECT pg_terminate_backend(%s)", (raw.info.backend_pid,))
        return execute(self, raw, *args)

    monkeypatch.setattr(Joiner, "_execute", cut_then_join)
    with pytest.raises(StoreError, match="PostgreSQL"):
        audit(s, stores=stores)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    monkeypatch.undo()
    assert audit(s, stores=stores).counts["in_sync"] == 3  # the pool gives a live session


def test_debug_output_never_shows_the_api_key(world: World, failing_qdrant: str) -> None:
    env = {**world.env(), "QDRANT_URL": failing_qdrant, "QDRANT_API_KEY": "topsecret-key-42"}
    env.pop("QDRANT_PATH")
    result = run_cli("audit", "--retries", "0", "--debug", env=env)
    assert result.returncode == 3
    assert "Traceback" in result.stderr
    assert "topsecret-key-42" not in result.stderr + result.stdout


def test_postgres_lost_mid_batch_writes_nothing_and_exits_3(world: World) -> None:
    from reconcile.apply import Hooks
    from reconcile.ops.repair import repair
    from reconcile.plan import RepairOptions

    p = world.person()
    point = world.face(p, payload={})
    s = world.settings()

    def cut(point_ids: list[Any]) -> None:
        # Fault injection: our batch's session dies between the recheck and the write.
        with psycopg.connect(world.url, autocommit=True) as killer:
            killer.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name LIKE 'reconcile%%' AND state LIKE 'idle in transaction%%'"
            )

    report = repair(
        s,
        RepairOptions(max_changes="100%", journal=world.qdrant_dir.parent / "j.jsonl"),
        stores=world.stores(s),
        hooks=Hooks(before_write=cut),
    )
    assert report.tallies.failed == 1 and report.exit_code == 3
    assert "person_id" not in world.payload(point)  # the lock was gone: nothing written


def test_after_the_server_ends_every_session_one_read_fails_and_the_next_works(
    world: World,
) -> None:
    """A failover or restart kills the idle connections too: the first read that meets a
    dead one fails, and the pool then starts afresh instead of handing out the others
    one failure at a time (a repair stops after three failed batches)."""
    for _ in range(5):
        world.face(world.person())
    faces = world.conn.execute("SELECT count(*) FROM face_instances").fetchone()
    postgres = world.stores(world.settings()).postgres
    with (
        postgres.connections.connect(),
        postgres.connections.connect(),
        postgres.connections.connect(),
    ):
        pass  # three sessions, now idle in the pool
    with psycopg.connect(world.url, autocommit=True) as killer:
        ended = killer.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name LIKE 'reconcile%%' AND pid <> pg_backend_pid()"
        ).fetchone()
    assert ended is not None and ended[0] >= 3  # other tests' idle sessions too
    with pytest.raises(StoreError, match=r"PostgreSQL at .* failed while counting rows"):
        postgres.count()
    assert faces is not None and postgres.count() == faces[0]


def test_a_connection_in_use_when_the_pool_closes_is_closed_when_given_back(
    world: World,
) -> None:
    """close() ends the idle sessions at once and each one in use when it comes back
    (the join's thread may still hold one); a connection taken after it is kept."""
    connections = Connections(world.url, "reconcile close-test")
    with connections.connect() as before:
        connections.close()
        with connections.connect() as after:
            assert after is not before
    assert before.closed and not after.closed  # `after` is idle in the pool
    with connections.connect() as again:
        assert again is after  # reused
    connections.close()
    assert after.closed
