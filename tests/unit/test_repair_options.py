"""Repair options, checked before any store is opened."""

from __future__ import annotations

import pytest

from reconcile.errors import ConfigError
from reconcile.plan import RepairOptions


@pytest.mark.parametrize("bad", ["ten", "-5", "150%", "2.5"])
def test_bad_max_changes_is_rejected(bad: str) -> None:
    with pytest.raises(ConfigError, match="--max-changes"):
        RepairOptions(max_changes=bad)
