"""What the demo builder refuses, checked before it starts a server or deletes anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconcile.errors import ConfigError
from reconcile.testing.world import build_demo


def test_too_few_faces_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 100 faces"):
        build_demo(tmp_path / "demo", faces=99)
    assert not (tmp_path / "demo").exists()


def test_a_directory_it_did_not_make_is_not_deleted(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="refusing to delete"):
        build_demo(tmp_path, faces=100)
    assert (tmp_path / "precious.txt").exists()
