"""What the test modules share: one module, so that no test module imports another.

Fixtures live in tests/conftest.py, the World builder in tests/world.py and the naive
oracle diff in tests/naive.py; everything else two test modules need is here.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
from qdrant_client import QdrantClient

from reconcile.ops.repair import RepairReport, repair
from reconcile.plan import RepairOptions
from tests.world import World

# The repository's root (README.md, pyproject.toml), wherever a test module sits.
ROOT = Path(__file__).resolve().parent.parent

# The point-store adapter tests' own small stores (stores/test_backends.py, test_edge.py).
STORE_DIM = 4
PERSON_A = "0b8e1c52-77e4-4a39-9d1e-3f0c2a8d5e11"
PERSON_B = "c4d2a9f0-1e3b-4c7d-8a6f-5b9e0d2c7a33"


def with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(params)
    return urlunsplit(parts._replace(query=urlencode(query)))


def run_cli(
    *args: str,
    env: dict[str, str] | None = None,
    module: str = "reconcile",
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """The CLI as cron runs it: a separate process, no terminal, exit code and both streams.

    `cwd` runs it elsewhere, for commands whose relative paths are part of the test."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        env=cli_env(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def repair_cli(
    journal: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """A repair as a scheduled run makes it: `--yes`, any share of a tiny world's points
    (`--max-changes 100%`), its journal at `journal`."""
    return run_cli(
        "repair", "--yes", "--max-changes", "100%", "--journal", str(journal), *args, env=env
    )


def cli_env(env: dict[str, str] | None) -> dict[str, str]:
    """The environment of a CLI process: this one's, without the stores a shell may name."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "QDRANT_URL", "QDRANT_PATH"}
    }
    return {**clean, **(env or {})}


def start_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """The CLI as a process that goes on while the test watches it (`run_cli` waits)."""
    return subprocess.Popen(
        [sys.executable, "-m", "reconcile", *args],
        env=cli_env(env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def snapshot(client: QdrantClient | None, nulls: bool = True) -> str:
    """Every point's whole payload, serialized: equal strings mean byte-identical payloads.

    `nulls=False` leaves out keys holding null, which undo restores as absent.
    """
    assert client is not None
    records, _ = client.scroll("faces", limit=100_000, with_payload=True)
    payloads = {
        str(r.id): {k: v for k, v in (r.payload or {}).items() if nulls or v is not None}
        for r in records
    }
    return json.dumps(payloads, sort_keys=True)


def drifted_world(world: World) -> dict[str, Any]:
    """Every kind of drift, the way the service's bugs make it."""
    alice, bob, carol = world.person(), world.person(), world.person()
    ids = {
        "in_sync": [world.face(alice) for _ in range(3)] + [world.face(None)],
        "missing_person": [world.face(alice, payload={"is_assigned": False, "cluster_id": "c1"})],
        "wrong_person": [
            world.face(bob, payload={"person_id": alice, "is_assigned": True}),
            world.face(bob, payload={"person_id": bob.upper(), "is_assigned": True}),
        ],
        "stale_person": [
            world.face(None, payload={"person_id": carol, "is_assigned": True, "asset_id": "9"}),
            world.face(None, payload={"person_id": "", "is_assigned": False}),
        ],
        "flag_mismatch": [
            world.face(bob, payload={"person_id": bob}),
            world.face(None, payload={"is_assigned": True}),
        ],
        "missing_point": [world.face(bob, point=False)],
        "orphan_point": [world.face(row=False, payload={"person_id": bob})],
    }
    return {"persons": (alice, bob, carol), "ids": ids}


def run_repair(world: World, flag: str | None = "is_assigned", **options: Any) -> RepairReport:
    """A repair of the world through the library, as the repair and undo tests run it."""
    settings = world.settings(flag_key=flag)
    hooks = options.pop("hooks", None)
    confirm = options.pop("confirm", None)
    options.setdefault("max_changes", "100%")  # tiny worlds: any drift is a large share
    options.setdefault("journal", world.qdrant_dir.parent / f"journal-{time.monotonic_ns()}.jsonl")
    return repair(
        settings,
        RepairOptions(**options),
        stores=world.stores(settings),
        hooks=hooks,
        confirm=confirm,
    )


# --- outside programs the tests run for real (node_exporter, Pushgateway, promtool) ---


def require_program(program: str, package: str) -> str:
    """The program's path; a missing one fails the test (never skips) naming its package."""
    path = shutil.which(program)
    if path is None:
        pytest.fail(
            f"{program} is not installed: `make test` installs it, or run "
            f"`apt-get install {package}`",
            pytrace=False,
        )
    return path


def free_port() -> int:
    """A loopback port nothing listens on right now (the server binds it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_get(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body: bytes = response.read()
        return body.decode("utf-8")


@contextmanager
def serving(argv: list[str], ready_url: str, log: Path, deadline: float = 20.0) -> Iterator[None]:
    """Run a server until the block ends: ready once `ready_url` answers, always stopped.

    Its stderr and stdout go to `log`, for the test to read (node_exporter logs there).
    """
    with log.open("w") as sink:
        process = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT)
    try:
        end = time.monotonic() + deadline
        while True:
            if process.poll() is not None:
                pytest.fail(f"{argv[0]} exited with {process.returncode}: {log.read_text()}")
            try:
                http_get(ready_url, timeout=1.0)
                break
            except OSError:
                if time.monotonic() > end:
                    pytest.fail(f"{argv[0]} did not answer {ready_url} in {deadline} s")
                time.sleep(0.05)  # a poll interval, bounded by the deadline above
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def server_dir(prefix: str) -> Iterator[Path]:
    """A directory for an embedded PostgreSQL server, removed afterwards.

    Not under pytest's basetemp: as root the server runs as another user, and every
    pytest run (a concurrent one too) makes basetemp 0700 again, cutting the server
    off from its own data.
    """
    root = Path(tempfile.mkdtemp(prefix=f"reconcile-{prefix}-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)
