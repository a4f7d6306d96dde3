"""The state file of `--incremental`: where the last successful run started.

Times come from the database's clock, and the next run starts an overlap
earlier, so a row committed while the last run was starting is not missed.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

from reconcile.errors import ConfigError

OVERLAP = timedelta(minutes=5)


def load_since(path: Path, table: str, collection: str) -> datetime | None:
    """The `--since` for this run, or None when there is no state yet (run in full)."""
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        started = datetime.fromisoformat(state["last_success_started"])
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(
            f"--incremental {path} is not a reconcile state file: delete it to start afresh"
        ) from None
    if (state.get("table"), state.get("collection")) != (table, collection):
        raise ConfigError(
            f"--incremental {path} belongs to {state.get('table')} ↔ {state.get('collection')}, "
            f"not {table} ↔ {collection}: use one state file per table and collection"
        )
    return started - OVERLAP


def save(path: Path, started: datetime, table: str, collection: str) -> None:
    """Replace the state atomically: a crash leaves the old state, never half a file."""
    data = {
        "version": 1,
        "table": table,
        "collection": collection,
        "last_success_started": started.isoformat(),
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except OSError as exc:
        raise ConfigError(f"cannot write --incremental {path}: {exc.strerror}") from None
