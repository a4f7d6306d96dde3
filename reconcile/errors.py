"""One error hierarchy, and the one table of exit codes the CLI maps it to."""

from __future__ import annotations

import signal
from enum import IntEnum


class ExitCode(IntEnum):
    """Documented in the README; cron jobs and scripts branch on these."""

    OK = 0
    DRIFT = 1
    USAGE = 2
    STORE = 3
    GUARD = 4
    LOCKED = 5
    # A signal stopped the run where nothing was half-done: 128 + the signal, as a shell says.
    SIGINT = 128 + signal.SIGINT
    SIGTERM = 128 + signal.SIGTERM

    @classmethod
    def for_signal(cls, signum: int) -> ExitCode:
        """130 for SIGINT, 143 for SIGTERM: the two signals a run stops cleanly on."""
        return cls(128 + signum)


class ReconcileError(Exception):
    """An error a user can act on: the message names the problem and the fix."""

    exit_code: ExitCode = ExitCode.STORE


class ConfigError(ReconcileError):
    """Bad flags, settings or mapping: fix the command line or the configuration."""

    exit_code = ExitCode.USAGE


class StoreError(ReconcileError):
    """A store is unreachable, refused us, or answered something we cannot use."""

    exit_code = ExitCode.STORE


class StreamOrderError(StoreError):
    """A stream was not ascending: the merge-join would report a wrong diff."""


class GuardError(ReconcileError):
    """A repair refused to run: the plan looks like a misconfiguration, not drift."""

    exit_code = ExitCode.GUARD


class LockHeld(ReconcileError):
    """Another run holds the advisory lock for this table, collection and shard."""

    exit_code = ExitCode.LOCKED


class Interrupted(ReconcileError):
    """A signal stopped the run where nothing was half-done; exit 128 + the signal."""

    def __init__(self, signum: int, detail: str | None = None) -> None:
        name = signal.Signals(signum).name
        done = f" after {detail}" if detail else ""
        super().__init__(f"interrupted by {name}{done}: nothing was half-written")
        self.exit_code = ExitCode.for_signal(signum)
