"""Running one measurement in a fresh child process: `bench/suite.py --child TASK SPEC`.

A fresh process per measurement, so that one measurement's heap growth cannot
hide the next one's. The child prints its result as one JSON line after
`RESULT` (bench.tasks.child); the parent reads the last such line.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SUITE = Path(__file__).resolve().parent / "suite.py"
RESULT = "RESULT "


def child_command(task: str, spec: dict[str, Any]) -> list[str]:
    """The command line that runs `task` on `spec` in a fresh interpreter."""
    return [sys.executable, str(SUITE), "--child", task, json.dumps(spec)]


def last_result(stdout: str) -> dict[str, Any] | None:
    """The result a child printed last, if it printed one."""
    lines = [line for line in stdout.splitlines() if line.startswith(RESULT)]
    if not lines:
        return None
    result: dict[str, Any] = json.loads(lines[-1][len(RESULT) :])
    return result


def progress(spec: dict[str, Any], what: str, elapsed: float) -> None:
    """One line on stderr per finished child: the world, the task, the wall time."""
    print(f"  {spec['name']:>6} {what:<9} {elapsed:6.1f}s", file=sys.stderr, flush=True)


def run_child(task: str, spec: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    proc = subprocess.run(
        child_command(task, spec),
        capture_output=True,
        text=True,
        check=False,
    )
    result = last_result(proc.stdout)
    if proc.returncode != 0 or result is None:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"bench task {task} failed on {spec['name']} (exit {proc.returncode})")
    progress(spec, task, time.perf_counter() - started)
    return result
