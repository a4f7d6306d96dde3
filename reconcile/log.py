"""Logs on stderr for cron and log shippers: text lines or JSON lines, one per event."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

logger = logging.getLogger("reconcile")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = getattr(record, "fields", {})
        return json.dumps(
            {
                "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(),
                "level": record.levelname.lower(),
                "event": record.getMessage(),
                **fields,
            },
            default=str,
        )


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = getattr(record, "fields", {})
        stamp = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        pairs = " ".join(f"{k}={v}" for k, v in fields.items())
        return f"{stamp} {record.levelname.lower()} {record.getMessage()} {pairs}".rstrip()


def configure(fmt: str = "text", quiet: bool = False) -> None:
    """One handler on stderr; `quiet` leaves only errors."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.ERROR if quiet else logging.INFO)
    # The driver logs its own trouble too (psycopg: a server time zone Python does not
    # know, an error in a notice handler). Left to Python's last-resort handler that
    # is a traceback on stderr, which breaks JSON logs; through ours it is one line.
    library = logging.getLogger("psycopg")
    library.handlers[:] = [handler]
    library.propagate = False
    library.setLevel(logging.ERROR if quiet else logging.WARNING)


def set_quiet(quiet: bool) -> None:
    if quiet:
        logger.setLevel(logging.ERROR)


def event(name: str, level: int = logging.INFO, **fields: Any) -> None:
    logger.log(level, name, extra={"fields": fields})


def json_mode() -> bool:
    return any(isinstance(h.formatter, _JsonFormatter) for h in logger.handlers)
