"""Every output path is checked before anything is read: a run that cannot write its
metrics or its incremental state says so at once, and prints no report first."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import run_cli
from tests.world import World


@pytest.fixture
def blocked(tmp_path: Path) -> Path:
    """A directory path that cannot be made: its parent is a file (root cannot either)."""
    file = tmp_path / "a-file"
    file.write_text("not a directory\n")
    return file / "sub"


@pytest.mark.parametrize(
    ("flag", "name"), [("--metrics-file", "reconcile.prom"), ("--incremental", "state.json")]
)
def test_an_unwritable_output_is_refused_before_the_scan(
    world: World, blocked: Path, flag: str, name: str
) -> None:
    person = world.person()
    world.face(person, payload={"is_assigned": True})  # drift: a finished audit exits 1
    target = blocked / name

    result = run_cli("audit", "--flag-key", "is_assigned", flag, str(target), env=world.env())

    assert result.returncode == 2, result.stderr
    assert result.stdout == ""  # no report: nothing was scanned
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(target) in lines[0] and flag in lines[0]
