"""JSON logs without stores: a library's logged error is one line, never a traceback."""

from __future__ import annotations

import json

import pytest


def test_library_errors_are_one_log_line_without_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # What psycopg logs when a notice handler fails; here logged directly, since no
    # handler of ours can fail.
    import logging

    from reconcile import log

    saved = [
        (lg, lg.handlers[:], lg.propagate, lg.level)
        for lg in (logging.getLogger("reconcile"), logging.getLogger("psycopg"))
    ]
    log.configure("json")
    try:
        try:
            raise ConnectionError("server closed the connection unexpectedly")
        except ConnectionError:
            logging.getLogger("psycopg").error("error processing notice callback", exc_info=True)
    finally:
        for lg, handlers, propagate, level in saved:  # the CLI's set-up is process-wide
            lg.handlers[:], lg.propagate = handlers, propagate
            lg.setLevel(level)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert json.loads(line)["event"] == "error processing notice callback"
