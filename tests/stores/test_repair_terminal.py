"""A repair asked on a real terminal (tmux): the question stays on screen, no run lock is
held while it is open, and progress names its phase; and what a second Ctrl-C says."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from reconcile.cli.boundary import held
from tests.helpers import run_cli, snapshot
from tests.world import World

QUESTION = "Apply this plan? [y/N]"


def drift(world: World, n: int = 6) -> None:
    person = world.person()
    for _ in range(n):
        world.face(person, payload={"is_assigned": True})  # missing_person


class Terminal:
    """One command in a tmux pane of a private tmux server: type, read the screen."""

    def __init__(self, tmp: Path, command: list[str], env: dict[str, str]) -> None:
        self.socket = str(tmp / "tmux.sock")
        script = tmp / "run.sh"
        exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())
        script.write_text(
            f"{exports}{shlex.join(command)}\necho EXIT=$?\nsleep 600\n", encoding="utf-8"
        )
        self.tmux("new-session", "-d", "-x", "150", "-y", "60", f"bash {shlex.quote(str(script))}")

    def tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-S", self.socket, *args], capture_output=True, text=True, check=True
        )
        return done.stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-J")

    def wait_for(self, text: str, seconds: float = 90) -> str:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            shown = self.screen()
            if text in shown:
                return shown
            time.sleep(0.05)  # polling the screen, bounded by the deadline
        raise AssertionError(f"{text!r} never appeared on the terminal:\n{self.screen()}")

    def type(self, keys: str) -> None:
        self.tmux("send-keys", keys, "Enter")

    def exit_code(self) -> int:
        shown = self.wait_for("EXIT=")
        return int(shown.split("EXIT=", 1)[1].split()[0])

    def close(self) -> None:
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], check=False)


@pytest.fixture
def terminal(tmp_path: Path) -> Any:
    opened: list[Terminal] = []

    def open_(args: list[str], env: dict[str, str]) -> Terminal:
        term = Terminal(tmp_path, [sys.executable, "-m", "reconcile", *args], env)
        opened.append(term)
        return term

    yield open_
    for term in opened:
        term.close()


ARGS = ["repair", "--flag-key", "is_assigned", "--max-changes", "100%"]


def test_the_question_stays_on_screen_and_n_writes_nothing(
    world: World, tmp_path: Path, terminal: Any
) -> None:
    drift(world)
    before = snapshot(world.reopen())
    env = world.env()
    term = terminal([*ARGS, "--journal", str(tmp_path / "n.jsonl")], env)
    term.wait_for(QUESTION)
    # A live progress display redraws about ten times a second, and would have drawn
    # over the question within this window; the screen must not change meanwhile.
    shown = term.screen()
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        assert term.screen() == shown
    assert QUESTION in shown and "plan: set the person on 6 points" in shown
    term.type("n")
    assert term.exit_code() == 2
    assert not (tmp_path / "n.jsonl").exists()
    assert snapshot(world.reopen()) == before


def test_y_applies_and_no_run_lock_is_held_while_the_question_is_open(
    world: World, tmp_path: Path, terminal: Any
) -> None:
    drift(world)
    env = world.env()
    settings = world.settings(flag_key="is_assigned")
    term = terminal([*ARGS, "--journal", str(tmp_path / "y.jsonl")], env)
    term.wait_for(QUESTION)
    # Another run could take the same run lock while the question is open: it is free.
    with held(settings, "all"):
        pass
    term.type("y")
    assert term.exit_code() == 0
    assert json.loads((tmp_path / "y.jsonl").read_text().splitlines()[0])["type"] == "header"
    again = run_cli("audit", "--flag-key", "is_assigned", "--format", "json", env=env)
    assert json.loads(again.stdout)["repairable"] == 0


def test_y_exits_5_at_once_when_another_run_took_the_lock_meanwhile(
    world: World, tmp_path: Path, terminal: Any
) -> None:
    drift(world)
    before = snapshot(world.reopen())
    env = world.env()
    settings = world.settings(flag_key="is_assigned")
    term = terminal([*ARGS, "--journal", str(tmp_path / "late.jsonl")], env)
    term.wait_for(QUESTION)
    with held(settings, "all"):  # another run took the lock meanwhile
        term.type("y")
        assert term.exit_code() == 5
        assert "another run holds the lock" in term.screen()
    assert not (tmp_path / "late.jsonl").exists()
    assert snapshot(world.reopen()) == before


def test_the_undo_question_stays_on_screen(world: World, tmp_path: Path, terminal: Any) -> None:
    drift(world)
    env = world.env()
    journal = tmp_path / "u.jsonl"
    done = run_cli(*ARGS, "--yes", "--journal", str(journal), env=env)
    assert done.returncode == 0, done.stderr
    term = terminal(["undo", str(journal)], env)
    question = f"Restore up to 6 points from {journal}? [y/N]"
    term.wait_for(question)
    # The progress display (a spinner) drew over the question before it was stopped.
    shown = term.screen()
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        assert term.screen() == shown
    term.type("y")
    assert term.exit_code() == 0
