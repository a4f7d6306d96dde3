"""Targets without stores: --since as a duration or a timestamp, and ids or since, not both."""

from __future__ import annotations

from datetime import timedelta

import pytest

from reconcile.errors import ConfigError
from reconcile.targets import Targets, parse_since


@pytest.mark.parametrize(
    ("text", "ok"),
    [("15m", True), ("2h", True), ("7d", True), ("2026-11-20T00:00Z", True), ("soon", False)],
)
def test_parse_since(text: str, ok: bool) -> None:
    if ok:
        parse_since(text)
    else:
        with pytest.raises(ConfigError, match="neither a duration nor a timestamp"):
            parse_since(text)


def test_ids_and_since_together_are_rejected() -> None:
    with pytest.raises(ConfigError, match="not both"):
        Targets(face_ids=("x",), since=timedelta(minutes=1))
