"""Env files, config files and `config show` through the CLI, on a real PostgreSQL and Qdrant."""

from __future__ import annotations

from pathlib import Path

from tests.world import World


def test_cli_env_file_config_file_and_config_show(world: World, tmp_path: Path) -> None:
    import json as _json

    from tests.helpers import run_cli

    world.face(world.person())
    world.release()
    env_file = tmp_path / ".env"
    env_file.write_text(f"DATABASE_URL={world.url}\nexport QDRANT_PATH='{world.qdrant_dir}'\n")
    config = tmp_path / "reconcile.toml"
    config.write_text('[reconcile]\nflag-key = "is_assigned"\npage_size = 7\n')
    result = run_cli(
        "audit", "--env-file", str(env_file), "--config", str(config), "--format", "json"
    )
    assert result.returncode == 0, result.stderr
    assert _json.loads(result.stdout)["counts"]["in_sync"] == 1

    secret = "postgresql://u:hunter2@127.0.0.1:1/db"
    shown = run_cli(
        "config",
        "show",
        "--env-file",
        str(env_file),
        "--config",
        str(config),
        "--database-url",
        secret,
    )
    assert shown.returncode == 0, shown.stderr
    assert "hunter2" not in shown.stdout and "u:***@" in shown.stdout
    assert "env file" in shown.stdout and "config file" in shown.stdout and "flag" in shown.stdout

    config.write_text("page_size = [\n")
    bad = run_cli("audit", "--env-file", str(env_file), "--config", str(config))
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "does not parse" in bad.stderr
