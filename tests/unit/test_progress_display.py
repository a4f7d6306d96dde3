"""What a person sees while a run works: the phase by name, with a total, a share and
the time left when the total is known; nothing at all once the display is stopped."""

from __future__ import annotations

import io

from rich.console import Console

from reconcile.cli.render import Display


def terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=120), out


def test_a_phase_with_a_total_shows_its_name_count_share_and_eta() -> None:
    console, out = terminal()
    display = Display(True, console)
    display.phase("writing", "points", 1050)
    display(315)
    display.stop()
    text = out.getvalue()
    assert "writing 315 of 1,050 points" in text
    assert "30%" in text and "ETA" in text


def test_a_phase_without_a_total_counts_only() -> None:
    console, out = terminal()
    display = Display(True, console)
    display.phase("undoing", "points", None)
    display(20)
    display.stop()
    assert "undoing 20 points" in out.getvalue() and "%" not in out.getvalue()


def test_an_estimate_that_proves_too_small_grows_instead_of_passing_100_percent() -> None:
    console, out = terminal()
    display = Display(True, console)
    display.phase("scanning", "points", 100)
    display(150)
    display.stop()
    assert "150 of 150 points" in out.getvalue() and "150%" not in out.getvalue()


def test_nothing_is_drawn_after_stop_or_off_a_terminal() -> None:
    console, out = terminal()
    display = Display(True, console)
    display.phase("scanning", "points", 10)
    display.stop()
    drawn = out.getvalue()
    display(5)  # the library may still report; nothing reaches the screen
    assert out.getvalue() == drawn
    piped = io.StringIO()
    quiet = Display(True, Console(file=piped))  # not a terminal: cron, a pipe
    quiet.phase("scanning", "points", 10)
    quiet(5)
    quiet.stop()
    assert piped.getvalue() == ""
