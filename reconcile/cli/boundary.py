"""The one place where errors become exit codes, and where a run's metrics are written.

Every command runs inside `boundary(...)`, which hands it the `Run` record of
this invocation: what the metrics file needs to know, gathered as the command
goes, and written when it ends, on failure too.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import typer

from reconcile import config as config_file
from reconcile import log
from reconcile.cli.options import Scope, fail_on_kinds, setting_flags
from reconcile.errors import ExitCode, ReconcileError
from reconcile.metrics import write_metrics
from reconcile.report import AuditReport
from reconcile.settings import Settings
from reconcile.stores import Stores
from reconcile.stores.postgres import Postgres, advisory_lock

_SECRET_IN_URL = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")


def layers(params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Every setting's value and source: flag > environment > env file > config > default."""
    config, env_file = params.get("config"), params.get("env_file")
    loaded = config_file.load_config(config) if config is not None else {}
    dotenv = config_file.load_env_file(env_file) if env_file is not None else {}
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
    """What the metrics file needs to know of this run, gathered as it goes."""

    command: str
    metrics_file: Path | None = None
    table: str = "?"
    collection: str = "?"
    audit: AuditReport | None = None
    repaired: int | None = None
    failed: int | None = None
    started: float = field(default_factory=time.monotonic)

    def settings(self, params: Mapping[str, Any]) -> Settings:
        """Configure logging, then resolve and validate the settings of a command's params.

        The table and collection are noted first, so that the metrics of a run whose
        settings are invalid still carry the names it was given.
        """
        log.configure(params.get("log_format") or "text")
        self.table = params.get("table") or "?"
        self.collection = params.get("collection") or "?"
        values, _sources = layers(params)
        self.table, self.collection = values.get("table", "?"), values.get("collection", "?")
        return config_file.build(values)

    def scanning(
        self, params: Mapping[str, Any], *, quiet: bool, fail_on: str | None
    ) -> tuple[Settings, Scope, frozenset[str]]:
        """What a command that reads the stores' faces needs first: the settings, the
        scope of faces, and the drift kinds that fail the run; quiet logs if asked."""
        settings = self.settings(params)
        scope = Scope.from_params(params)
        log.set_quiet(quiet)
        return settings, scope, fail_on_kinds(fail_on)

    def record(self, code: int) -> None:
        """Write the metrics file, on failure too, so cron's alerting sees every run."""
        if self.metrics_file is None:
            return
        write_metrics(
            self.metrics_file,
            command=self.command,
            table=self.table,
            collection=self.collection,
            exit_code=code,
            duration_seconds=time.monotonic() - self.started,
            audit=self.audit,
            repaired=self.repaired,
            failed=self.failed,
        )


def fail(message: str, code: int) -> NoReturn:
    """One line on stderr (or a JSON log event), then exit with `code`."""
    # Whatever a driver put in its message, a password inside a URL never reaches the terminal.
    safe = _SECRET_IN_URL.sub(r"\g<1>***@", message)
    if log.json_mode():
        log.event("error", logging.ERROR, message=safe, exit_code=code)
    else:
        print(f"reconcile: error: {safe}", file=sys.stderr)
    raise typer.Exit(code)


@contextmanager
def boundary(command: str, params: Mapping[str, Any]) -> Iterator[Run]:
    """Run a command: its errors become exit codes, and its metrics are written at the end.

    `params` are the command's options: `--debug` and `--metrics-file` are read here.
    """
    debug = bool(params.get("debug"))
    run = Run(command, params.get("metrics_file"))
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
def run_lock(settings: Settings, shard: str | None) -> Iterator[Stores | None]:
    """Take the run lock before Qdrant is opened, and give the command stores to use.

    The lock's name holds the table, the collection and the shard, so the shards of
    one job run side by side but no slice runs twice.
    """
    if shard is None:
        yield None
        return
    postgres = Postgres(settings)
    name = f"reconcile:{settings.table}:{settings.collection}:{shard}"
    try:
        with advisory_lock(postgres, name), Stores(settings, postgres=postgres) as stores:
            yield stores
    finally:
        postgres.close()


def finish(code: int) -> NoReturn:
    """End the command with this exit code (0 included: Typer's Exit, not SystemExit)."""
    raise typer.Exit(int(code))
