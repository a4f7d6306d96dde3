"""The demo as a new user meets it after `make demo`: the venv is not on PATH, the demo
was built with `--dir` somewhere, and every printed hint must run exactly as shown."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest

from tests.helpers import run_cli

# A shell's PATH without the virtual environment, as after `make demo`.
BARE_PATH = "/usr/local/bin:/usr/bin:/bin"


def shell(script: str, cwd: Path, state: Path) -> subprocess.CompletedProcess[str]:
    """`script` as a user pastes it into a fresh shell (no venv on PATH)."""
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "QDRANT_PATH", "PATH"}}
    env.update(PATH=BARE_PATH, XDG_STATE_HOME=str(state), HOME=str(state))
    return subprocess.run(
        ["/bin/sh", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_hints_run_as_printed_and_stop_finds_a_demo_built_with_dir(tmp_path: Path) -> None:
    # The server runs as another user when we are root: its directory must stay reachable,
    # which pytest's basetemp is not once a concurrent pytest run makes it 0700 again.
    root = Path(tempfile.mkdtemp(prefix="reconcile-demo-test-"))
    state, directory, elsewhere = tmp_path / "state", root / "built-here", tmp_path / "cwd"
    elsewhere.mkdir()
    env = {"XDG_STATE_HOME": str(state), "HOME": str(state), "PATH": BARE_PATH}
    try:
        built = run_cli("demo", "--dir", str(directory), "--faces", "100", env=env, cwd=elsewhere)
        assert built.returncode == 0, built.stderr
        hints = built.stdout.split("Try next", 1)[1]
        lines = [line.strip() for line in hints.splitlines() if line.startswith("  ")]
        export, commands = lines[0], lines[1:]
        assert export.startswith("export DATABASE_URL=")
        url = re.search(r"DATABASE_URL='([^']+)'", export)
        assert url is not None
        # Every one, in order and as printed, from a shell that has no `reconcile` on
        # PATH: the smallest world too must not trip a guard (exit 4) or a lock.
        for command in commands:
            ran = shell(f"{export}\n{command}", elsewhere, state)
            assert ran.returncode in (0, 1), f"{command}: {ran.returncode} {ran.stderr}"
        assert (elsewhere / "drift.jsonl").stat().st_size > 0
        assert (elsewhere / "repair.jsonl").stat().st_size > 0

        stop = re.search(r"`([^`]+ demo --stop)`", hints)
        assert stop is not None
        stopped = shell(stop.group(1), elsewhere, state)  # no --dir, another directory
        assert stopped.returncode == 0, stopped.stderr
        assert f"stopped the demo server of {directory}" in stopped.stdout
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(url.group(1), connect_timeout=5).close()
        again = shell(stop.group(1), elsewhere, state)
        assert "no demo server was running" in again.stdout and "--dir" in again.stdout
    finally:
        run_cli("demo", "--dir", str(directory), "--stop", env=env)
        shutil.rmtree(root, ignore_errors=True)
