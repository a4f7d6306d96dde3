"""The repair journal: what each touched point held before and after, as JSON Lines.

Line 1 is a header; then, per batch, one `change` line per point, written and
fsynced before the Qdrant write, and one `outcome` line after it. Every batch is
appended with a single write() call, so a killed process leaves whole lines and
at most one torn last line, which the reader reports and skips.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reconcile.errors import ConfigError

FORMAT = "reconcile-journal"
VERSION = 1


def default_path(now: datetime | None = None) -> Path:
    """A timestamped file under the user's state directory (cron's cwd is often read-only)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S.%fZ")
    return Path(base) / "reconcile" / f"repair-{stamp}.jsonl"


def _line(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":")) + "\n"


class JournalWriter:
    """Appends to a new journal file that only its owner can read (mode 0600)."""

    def __init__(self, path: Path, header: dict[str, Any]) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        except FileExistsError:
            raise ConfigError(f"journal {path} already exists: choose another --journal") from None
        except OSError as exc:
            raise ConfigError(
                f"cannot create journal {path}: {exc.strerror}; set --journal to a writable path"
            ) from None
        self._append([{"type": "header", "format": FORMAT, "version": VERSION, **header}])

    def _append(self, records: list[dict[str, Any]]) -> None:
        data = "".join(_line(r) for r in records).encode()
        while data:
            written = os.write(self._fd, data)
            data = data[written:]
        os.fsync(self._fd)

    def changes(self, batch: int, changes: list[dict[str, Any]]) -> None:
        self._append([{"type": "change", "batch": batch, **c} for c in changes])

    def outcome(self, batch: int, **fields: Any) -> None:
        self._append([{"type": "outcome", "batch": batch, **fields}])

    def close(self) -> None:
        os.close(self._fd)


class NullJournal:
    """Journals nothing: for the sync helper, which runs per request inside a service."""

    path = "(no journal)"

    def changes(self, batch: int, changes: list[dict[str, Any]]) -> None:
        pass

    def outcome(self, batch: int, **fields: Any) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class JournalReader:
    """Streams a journal's change records; `torn` tells whether a torn last line was skipped."""

    path: Path
    header: dict[str, Any] = field(init=False)
    torn: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        try:
            with self.path.open(encoding="utf-8") as f:
                first = f.readline()
        except OSError as exc:
            raise ConfigError(f"cannot read journal {self.path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            first = ""
        try:
            header = json.loads(first)
        except ValueError:
            header = None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise ConfigError(
                f"{self.path} is not a reconcile journal (no header line): "
                "pass a file written by `reconcile repair`"
            )
        if header.get("version") != VERSION:
            raise ConfigError(
                f"journal {self.path} has version {header.get('version')!r}; "
                f"this reconcile reads version {VERSION}"
            )
        self.header = header

    def changes(self) -> Iterator[dict[str, Any]]:
        with self.path.open(encoding="utf-8", errors="replace") as f:
            f.readline()
            pending: str | None = None
            for number, line in enumerate(f, start=2):
                if pending is not None:
                    raise ConfigError(
                        f"journal {self.path} line {number - 1} is not valid JSON and is not "
                        "the last line: the file is damaged"
                    )
                try:
                    record = json.loads(line)
                except ValueError:
                    pending = line  # only allowed if it turns out to be the last line
                    continue
                if not isinstance(record, dict):
                    raise ConfigError(f"journal {self.path} line {number} is not a record")
                if record.get("type") == "change":
                    yield record
            if pending is not None:
                self.torn = True
