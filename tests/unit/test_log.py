"""JSON logs without stores: a library's logged error is one line, never a traceback."""

from __future__ import annotations

import json

import pytest


def test_library_errors_are_one_log_line_without_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # What SQLAlchemy's pool logs when it cannot reset a connection the server
    # dropped; here logged directly, since the race that causes it cannot be timed.
    import logging

    from reconcile import log

    saved = [
        (lg, lg.handlers[:], lg.propagate, lg.level)
        for lg in (logging.getLogger("reconcile"), logging.getLogger("sqlalchemy"))
    ]
    log.configure("json")
    try:
        try:
            raise ConnectionError("server closed the connection unexpectedly")
        except ConnectionError:
            logging.getLogger("sqlalchemy.pool.impl.QueuePool").error(
                "Exception during reset or similar", exc_info=True
            )
    finally:
        for lg, handlers, propagate, level in saved:  # the CLI's set-up is process-wide
            lg.handlers[:], lg.propagate = handlers, propagate
            lg.setLevel(level)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert json.loads(line)["event"] == "Exception during reset or similar"
