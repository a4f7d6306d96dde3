"""The repair journal: what each touched point held before and after, as JSON Lines.

Line 1 is a header; then, per batch, one `change` line per point, written and
fsynced before the Qdrant write, and one `outcome` line after it. A payload change
holds `before` and `after`; an orphan point's deletion (`"op": "delete"`) holds the
whole `point`: its id, every vector as the engine returned it, and its payload. Every batch is
appended with a single write() call, so a killed process leaves whole lines and
at most one torn last line, which the reader reports and skips. Each finished
`undo` appends one `undo` line with its counts, so `reconcile journals` can tell
which repairs were undone without a second file to keep (or to forget to delete).
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
# 2: the header's `keys` holds `map` (the --map keys), and change records hold every
# compared key. 3: a change record may be `"op": "delete"` with the whole `point`
# (`repair --delete-orphans`). Older journals read and undo the same.
VERSION = 3
READABLE = (1, 2, 3)


# A header is a few hundred bytes; reading at most this much of a first line keeps
# a look at a large file that is not a journal (`reconcile journals --dir`) cheap.
_HEADER_LIMIT = 64 * 1024


def state_dir() -> Path:
    """Where journals go by default: the user's state directory (cron's cwd is often read-only)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "reconcile"


def default_path(now: datetime | None = None) -> Path:
    """A timestamped file under the state directory."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S.%fZ")
    return state_dir() / f"repair-{stamp}.jsonl"


def read_header(path: Path) -> dict[str, Any] | None:
    """The journal header on `path`'s first line; None when that line is not one.

    Raises ConfigError when the file cannot be read at all.
    """
    try:
        with path.open("rb") as f:
            first = f.readline(_HEADER_LIMIT)
    except OSError as exc:
        raise ConfigError(f"cannot read journal {path}: {exc.strerror}") from None
    try:
        header = json.loads(first.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        return None
    return header


def started_at(header: dict[str, Any]) -> datetime | None:
    """When the repair that wrote this header started (UTC); None when it does not say."""
    try:
        moment = datetime.fromisoformat(str(header.get("started")))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _line(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":")) + "\n"


def _write_all(fd: int, data: bytes) -> None:
    """One append, fsynced: write() may take less than all of it."""
    while data:
        written = os.write(fd, data)
        data = data[written:]
    os.fsync(fd)


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
        _write_all(self._fd, "".join(_line(r) for r in records).encode())

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
        header = read_header(self.path)
        if header is None:
            raise ConfigError(
                f"{self.path} is not a reconcile journal (no header line): "
                "pass a file written by `reconcile repair`"
            )
        if header.get("version") not in READABLE:
            raise ConfigError(
                f"journal {self.path} has version {header.get('version')!r}; this reconcile "
                f"reads versions {', '.join(map(str, READABLE))}: undo it with the reconcile "
                "that wrote it"
            )
        self.header = header

    def changes(self) -> Iterator[dict[str, Any]]:
        return (record for record in self.records() if record.get("type") == "change")

    def records(self) -> Iterator[dict[str, Any]]:
        """Every record after the header: change, outcome and undo lines.

        A line that is not JSON is a torn write of a killed repair, allowed only as
        the last line of the repair's own writing: undo lines appended after it
        (by an undo of that journal) may follow, nothing else.
        """
        with self.path.open(encoding="utf-8", errors="replace") as f:
            f.readline(_HEADER_LIMIT)
            torn: int | None = None
            for number, line in enumerate(f, start=2):
                try:
                    record = json.loads(line)
                except ValueError:
                    record = None
                if record is not None and not isinstance(record, dict):
                    raise ConfigError(f"journal {self.path} line {number} is not a record")
                if torn is not None and (record is None or record.get("type") != "undo"):
                    raise ConfigError(
                        f"journal {self.path} line {torn} is not valid JSON and is not "
                        "the last line: the file is damaged"
                    )
                if record is None:
                    torn = number  # only allowed if it turns out to be the last line
                    continue
                yield record
            if torn is not None:
                self.torn = True


def mark_undone(path: Path, counts: dict[str, Any]) -> None:
    """Append an `undo` line recording what an undo of this journal did.

    A torn last line (a killed repair) is ended first, so the new line is whole.
    Raises OSError when the journal cannot be written.
    """
    record = {"type": "undo", "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), **counts}
    fd = os.open(path, os.O_RDWR | os.O_APPEND)
    try:
        size = os.fstat(fd).st_size
        ends_whole = size == 0 or os.pread(fd, 1, size - 1) == b"\n"
        _write_all(fd, (("" if ends_whole else "\n") + _line(record)).encode())
    finally:
        os.close(fd)
