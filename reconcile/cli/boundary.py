"""The one place where errors become exit codes, and where a run's metrics are written.

Every command runs inside `boundary(...)`, which hands it the `Run` record of
this invocation: what the metrics file needs to know, gathered as the command
goes, and written when it ends, on failure too.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import typer
from typer.exceptions import TyperException

from reconcile import config as config_file
from reconcile import log
from reconcile.cli.options import setting_flags
from reconcile.cli.scope import Scope, fail_on_kinds
from reconcile.errors import ConfigError, ExitCode, ReconcileError
from reconcile.metrics import (
    ALL_SHARDS,
    Outcome,
    RunLabels,
    check_push_url,
    push_metrics,
    push_started,
    write_metrics,
    write_started,
)
from reconcile.report import AuditReport
from reconcile.settings import Settings, mask_secrets, mask_url
from reconcile.stores import Stores
from reconcile.stores.postgres import Postgres, advisory_lock


def layers(
    params: Mapping[str, Any], problems: list[ReconcileError] | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """Every setting's value and source: flag > environment > env file > config > default.

    A file's first problem is raised; with `problems`, each is appended there instead
    and the rest of the files still counts (`config show` prints what it could read).
    """
    config, env_file = params.get("config"), params.get("env_file")
    found: list[ConfigError] = []
    loaded = config_file.read_config(config, found) if config is not None else {}
    dotenv = config_file.read_env_file(env_file, found) if env_file is not None else {}
    if found and problems is None:
        raise found[0]
    if problems is not None:
        problems.extend(found)
    return config_file.merge(
        setting_flags(params),
        os.environ,
        dotenv,
        loaded,
        env_file_path=env_file,
        config_path=config,
    )


@dataclass
class Run:
    """What the metrics need to know of this run, gathered as it goes."""

    command: str
    metrics_file: Path | None = None
    metrics_push: str | None = None
    table: str = "?"
    collection: str = "?"
    shard: str = ALL_SHARDS
    scope: str = "full"
    audit: AuditReport | None = None
    repaired: int | None = None
    failed: int | None = None
    orphans: dict[str, int] | None = None  # repair --delete-orphans: per ORPHAN_ACTIONS
    # Where each setting came from ("flag", "environment (VAR)", …, "default"): undo
    # takes the mapping from its journal and refuses only what someone chose.
    sources: dict[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    started_at: float = field(default_factory=time.time)
    push_failed: bool = False

    def settings(self, params: Mapping[str, Any]) -> Settings:
        """Configure logging, then resolve and validate the settings of a command's params;
        then say the run started (metrics), before it reads anything."""
        settings = self._resolve(params)
        self.begin()
        return settings

    def _resolve(self, params: Mapping[str, Any]) -> Settings:
        """The settings; the table, collection and scope labels are noted first, so that the
        metrics of a run whose settings are invalid still carry the names it was given."""
        log.configure(params.get("log_format") or "text")
        if self.metrics_push is not None:
            url, self.metrics_push = self.metrics_push, None  # a bad URL is not pushed to
            self.metrics_push = check_push_url(url)
        self.table = params.get("table") or "?"
        self.collection = params.get("collection") or "?"
        self.label_scope(params)
        values, self.sources = layers(params)
        self.table, self.collection = values.get("table", "?"), values.get("collection", "?")
        return config_file.build(values)

    def label_scope(self, params: Mapping[str, Any], scope: Scope | None = None) -> None:
        """The `shard` and `scope` labels, from the scope options as given: a first
        `--incremental` run (a full scan) keeps its cron line's labels. The shard is
        canonical once `scope` is parsed (`1/1` is `all`)."""
        raw = str(params.get("shard") or "").strip()
        self.shard = scope.shard_label if scope is not None else raw or ALL_SHARDS
        if self.shard != ALL_SHARDS:
            self.scope = "shard"
        elif params.get("incremental"):
            self.scope = "incremental"
        elif params.get("face_id") or params.get("point_id") or params.get("ids_from"):
            self.scope = "ids"
        else:
            self.scope = "since" if params.get("since") else "full"

    def scanning(
        self, params: Mapping[str, Any], *, quiet: bool, fail_on: str | None
    ) -> tuple[Settings, Scope, frozenset[str]]:
        """What a command that reads the stores' faces needs first: the settings, the
        scope of faces, and the drift kinds that fail the run; quiet logs if asked."""
        settings = self._resolve(params)
        scope = Scope.from_params(params)
        self.label_scope(params, scope)
        log.set_quiet(quiet)
        self.begin()
        return settings, scope, fail_on_kinds(fail_on, settings.keys)

    @property
    def labels(self) -> RunLabels:
        return RunLabels(self.command, self.table, self.collection, self.shard, self.scope)

    def begin(self) -> None:
        """Say the run started, so that one still going shows (the run lock held too long).

        An unwritable metrics file ends the run here, before anything is read; an
        unreachable gateway costs one warning, never the run.
        """
        if self.metrics_file is not None:
            path, self.metrics_file = self.metrics_file, None  # not written again at the end
            write_started(path, self.labels, self.started_at)
            self.metrics_file = path
        if self.metrics_push is not None:
            self._warn(push_started(self.metrics_push, self.labels, self.started_at))

    def record(self, code: int) -> None:
        """Write and push the metrics, on failure too, so alerting sees every run."""
        outcome = Outcome(
            exit_code=code,
            duration_seconds=time.monotonic() - self.started,
            audit=self.audit,
            repaired=self.repaired,
            failed=self.failed,
            started=self.started_at,
            orphans=self.orphans,
        )
        now = time.time()  # one end time: the file and the gateway say the same
        if self.metrics_push is not None:
            self._warn(push_metrics(self.metrics_push, self.labels, outcome, now=now))
        if self.metrics_file is not None:
            write_metrics(self.metrics_file, self.labels, outcome, now=now)

    def _warn(self, reason: str | None) -> None:
        """One warning line per run: a gateway that is down at the start still gets the
        end's push, but says so only once."""
        if reason is not None and self.metrics_push is not None and not self.push_failed:
            self.push_failed = True
            log.event(
                "metrics.push_failed",
                logging.WARNING,
                url=mask_url(self.metrics_push),
                reason=reason,
            )


def fail(message: str, code: int) -> NoReturn:
    """One line on stderr (or a JSON log event), then exit with `code`."""
    # Whatever a driver put in its message, a password (in a URL, or a key=value pair)
    # never reaches the terminal.
    safe = mask_secrets(message)
    if log.json_mode():
        log.event("error", logging.ERROR, message=safe, exit_code=code)
    else:
        print(f"reconcile: error: {safe}", file=sys.stderr)
    raise typer.Exit(code)


@contextmanager
def boundary(command: str, params: Mapping[str, Any]) -> Iterator[Run]:
    """Run a command: its errors become exit codes, and its metrics are written at the end.

    `params` are the command's options: `--debug`, `--metrics-file` and `--metrics-push`
    are read here.
    """
    debug = bool(params.get("debug"))
    run = Run(command, params.get("metrics_file"), params.get("metrics_push"))
    code = int(ExitCode.STORE)
    try:
        yield run
        code = 0
    except typer.Exit as exc:
        code = exc.exit_code
        raise
    except ReconcileError as exc:
        code = exc.exit_code
        if debug:
            traceback.print_exc()
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        code = ExitCode.SIGINT
        fail("interrupted", ExitCode.SIGINT)
    except Exception as exc:
        if debug:
            traceback.print_exc()
        fail(
            f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)",
            ExitCode.STORE,
        )
    finally:
        try:
            run.record(code)
        except ReconcileError as exc:
            fail(str(exc), exc.exit_code)


@contextmanager
def held(settings: Settings, shard: str) -> Iterator[Postgres]:
    """Hold the run lock (exit 5 at once if another run holds it), on a connection of its own.

    The lock's name holds the table, the collection and the shard, so the shards of
    one job run side by side but no slice runs twice.
    """
    postgres = Postgres(settings)
    name = f"reconcile:{settings.table}:{settings.collection}:{shard}"
    try:
        with advisory_lock(postgres, name):
            yield postgres
    finally:
        postgres.close()


@contextmanager
def run_lock(settings: Settings, shard: str | None) -> Iterator[Stores | None]:
    """Take the run lock before Qdrant is opened, and give the command stores to use."""
    if shard is None:
        yield None
        return
    with held(settings, shard) as postgres, Stores(settings, postgres=postgres) as stores:
        yield stores


def usage_error(exc: TyperException, argv: Sequence[str]) -> NoReturn:
    """A usage error (an unknown flag, a bad value) as one line, like every other error.

    Typer shows these as a box of several lines, before any command has configured
    the logs: so `--log-format json` is read from `argv` here, to log it as JSON too.
    """
    pairs = zip(argv, [*argv[1:], ""], strict=True)
    if "--log-format=json" in argv or ("--log-format", "json") in pairs:
        log.configure("json")
    where = getattr(getattr(exc, "ctx", None), "command_path", None) or "reconcile"
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    message = message.rstrip(".")
    try:
        fail(f"{message}: see '{where} --help'", int(getattr(exc, "exit_code", ExitCode.USAGE)))
    except typer.Exit as done:
        sys.exit(done.exit_code)


def finish(code: int) -> NoReturn:
    """End the command with this exit code (0 included: Typer's Exit, not SystemExit)."""
    raise typer.Exit(int(code))
