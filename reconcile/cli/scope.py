"""Which faces a command looks at (`Scope`), and the flags that shape a run's outcome.

Parsed from the values of `options.scope_options` (and `--fail-on`, `--max-duration`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from reconcile.diff import DRIFT_KINDS
from reconcile.errors import ConfigError
from reconcile.incremental import load_since, save
from reconcile.report import KEY_PREFIX, unwritable
from reconcile.settings import Settings
from reconcile.shards import parse_shard
from reconcile.targets import Targets, parse_since


@dataclass(frozen=True)
class Scope:
    """Which faces a command looks at: everything, given ids, or what changed lately."""

    face_ids: tuple[str, ...]
    point_ids: tuple[str, ...]
    ids_from: str | None
    since: str | None
    incremental: Path | None
    shard: tuple[int, int] = (1, 1)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Scope:
        """The scope options of a command's parameters (the aliases above)."""
        shard = params.get("shard")
        return cls(
            tuple(params.get("face_id") or ()),
            tuple(params.get("point_id") or ()),
            params.get("ids_from"),
            params.get("since"),
            params.get("incremental"),
            parse_shard(shard) if shard else (1, 1),
        )

    @property
    def everything(self) -> bool:
        """No ids, no window, no shard: the whole of both stores."""
        return self == Scope((), (), None, None, None)

    @property
    def shard_label(self) -> str:
        return "all" if self.shard == (1, 1) else f"{self.shard[0]}/{self.shard[1]}"

    def targets(self, settings: Settings) -> Targets | None:
        """None for a full scan; an incremental run without state yet is one too."""
        if self.shard != (1, 1) and (
            self.incremental or self.since or self.face_ids or self.point_ids or self.ids_from
        ):
            raise ConfigError("--shard slices a full scan: drop the ids, --since, --incremental")
        if self.incremental is not None:
            if self.since or self.face_ids or self.point_ids or self.ids_from:
                raise ConfigError("--incremental chooses its own window: drop --since and ids")
            reason = unwritable(self.incremental)
            if reason is not None:
                raise ConfigError(
                    f"cannot write --incremental {self.incremental}: {reason}; "
                    "choose a writable path"
                )
            since = load_since(self.incremental, settings.table, settings.collection)
            return None if since is None else Targets(since=since)
        if not (self.face_ids or self.point_ids or self.ids_from or self.since):
            return None
        return Targets(
            face_ids=self.face_ids,
            point_ids=self.point_ids,
            ids_from=self.ids_from,
            since=parse_since(self.since) if self.since else None,
        )

    def succeeded(self, settings: Settings, started: datetime | None) -> None:
        """Advance the incremental state; called only after a run that completed."""
        if self.incremental is not None and started is not None:
            save(self.incremental, started, settings.table, settings.collection)


def fail_on_kinds(text: str | None, keys: Collection[str] = ()) -> frozenset[str]:
    """The kinds that make the exit code 1 (default: every drift kind); `key:NAME`
    names drift of one compared key (one of `keys`), whatever the point's kind."""
    if text is None or text.strip() == "all":
        return frozenset(DRIFT_KINDS)
    kinds = frozenset(k.strip() for k in text.split(",") if k.strip())
    known = set(DRIFT_KINDS) | {KEY_PREFIX + key for key in keys}
    unknown = sorted(kinds - known)
    if unknown or not kinds:
        raise ConfigError(
            f"--fail-on {text!r}: {', '.join(unknown) or 'nothing'} is not a drift kind nor "
            f"key:NAME of a compared payload key: use a comma list of "
            f"{', '.join(DRIFT_KINDS)}, key:NAME with NAME one of {', '.join(keys)} "
            "(a --map adds a key), or all"
        )
    return kinds


def positive(seconds: float) -> float:
    """A --max-duration that makes sense: more than nothing, at most a week."""
    if not 0 < seconds <= 7 * 86400:
        raise ConfigError(f"--max-duration {seconds} is out of range: use (0, 604800] seconds")
    return seconds
