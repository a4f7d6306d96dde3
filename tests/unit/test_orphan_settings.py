"""The orphan settings: validated once, with one line naming the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconcile.config import load_config
from reconcile.errors import ConfigError
from reconcile.settings import ORPHAN_KEY, Settings, deletes_limit, grace_seconds

URL = "postgresql://u@h/d"


def test_grace_accepts_durations_and_refuses_the_rest() -> None:
    assert [grace_seconds(s) for s in ("0s", "90s", "30m", "1h", "2d", "1w")] == [
        0,
        90,
        1800,
        3600,
        172800,
        604800,
    ]
    for bad in ("", "1", "1 hour", "-1h", "1.5h"):
        with pytest.raises(ConfigError, match=r"--orphan-grace .* is not a duration: use e.g. 30m"):
            grace_seconds(bad)


def test_max_deletes_is_a_count_or_a_share_of_the_points() -> None:
    assert deletes_limit("1%", 1_000_000) == 10_000
    assert deletes_limit("1%", 99) == 0  # rounded down: a tiny world deletes nothing
    assert deletes_limit("250", 10) == 250
    for bad, why in (("1.5", "whole number"), ("101%", "over 100%"), ("lots", "not a number")):
        with pytest.raises(ConfigError, match=f"--max-deletes .*{why}"):
            deletes_limit(bad, 100)


def test_settings_refuse_bad_orphan_values_and_the_tools_own_key() -> None:
    with pytest.raises(ConfigError, match="--orphan-grace"):
        Settings(URL, qdrant_path="/q", orphan_grace="soon")
    with pytest.raises(ConfigError, match="--max-deletes"):
        Settings(URL, qdrant_path="/q", max_deletes="-1")
    with pytest.raises(ConfigError, match=r"^--orphan-table 'a\.b\.c' has too many dots"):
        Settings(URL, qdrant_path="/q", orphan_table="a.b.c")
    for field in ("person_key", "flag_key"):
        with pytest.raises(ConfigError, match="keeps orphan sightings in"):
            Settings(URL, qdrant_path="/q", **{field: ORPHAN_KEY})
    with pytest.raises(ConfigError, match="keeps orphan sightings in"):
        Settings(URL, qdrant_path="/q", map=(f"{ORPHAN_KEY}=id",))


def test_a_config_file_may_give_max_deletes_as_a_number(tmp_path: Path) -> None:
    config = tmp_path / "reconcile.toml"
    config.write_text('delete_orphans = true\nmax_deletes = 500\norphan_grace = "2h"\n')
    assert load_config(config) == {
        "delete_orphans": True,
        "max_deletes": "500",
        "orphan_grace": "2h",
    }
    config.write_text("orphan_grace = 2\n")
    with pytest.raises(ConfigError, match="orphan_grace must be a string"):
        load_config(config)
