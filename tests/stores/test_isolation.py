"""The suite never writes into the user's home: default paths go to the session's own state."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.helpers import run_cli
from tests.world import World


def test_a_journal_without_journal_lands_in_the_sessions_state_not_home(world: World) -> None:
    person = world.person()
    world.face(person, payload={"is_assigned": True})  # missing_person: one write
    home_state = Path.home() / ".local" / "state" / "reconcile"
    before = set(home_state.glob("*")) if home_state.is_dir() else set()

    result = run_cli(
        "repair", "--yes", "--max-changes", "100%", "--format", "json", env=world.env()
    )

    assert result.returncode == 0, result.stderr
    journal = Path(json.loads(result.stdout)["journal"])
    assert journal.is_relative_to(Path(os.environ["XDG_STATE_HOME"]))
    after = set(home_state.glob("*")) if home_state.is_dir() else set()
    assert after == before
