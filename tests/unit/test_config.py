"""Config files, env files and precedence: pure unit tests, no stores needed."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from reconcile.config import (
    ENV_VARS,
    build,
    load_config,
    load_env_file,
    load_settings,
    merge,
    resolve,
    show,
)
from reconcile.errors import ConfigError
from reconcile.settings import Settings

DB = "postgresql://app:s3cret-pw@db.internal:5432/faces"
BASE_ENV = {"DATABASE_URL": DB, "QDRANT_PATH": "/var/lib/qdrant"}


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(call: Any, *args: Any) -> str:
    """The message of the ConfigError `call` raises: one line, as the CLI prints it."""
    with pytest.raises(ConfigError) as info:
        call(*args)
    message = str(info.value)
    assert "\n" not in message
    return message


# Precedence: flag > environment > env file > config file > default, for one setting.
@pytest.mark.parametrize(
    ("layers", "expected", "source"),
    [
        ((), "faces", "default"),
        (("config",), "from-config", "config file ({config})"),
        (("config", "env_file"), "from-env-file", "env file ({env_file})"),
        (("config", "env_file", "environ"), "from-environ", "environment (QDRANT_FACE_COLLECTION)"),
        (("config", "env_file", "environ", "flag"), "from-flag", "flag"),
        # Each layer beats every lower one on its own, not only the one just below it.
        (("config", "flag"), "from-flag", "flag"),
        (("env_file", "flag"), "from-flag", "flag"),
        (("config", "environ"), "from-environ", "environment (QDRANT_FACE_COLLECTION)"),
    ],
)
def test_precedence_for_one_setting(
    tmp_path: Path, layers: tuple[str, ...], expected: str, source: str
) -> None:
    config_path = tmp_path / "reconcile.toml"
    env_file_path = tmp_path / ".env"
    config = {"collection": "from-config"} if "config" in layers else {}
    env_file = {"QDRANT_FACE_COLLECTION": "from-env-file"} if "env_file" in layers else {}
    environ = dict(BASE_ENV)
    if "environ" in layers:
        environ["QDRANT_FACE_COLLECTION"] = "from-environ"
    flags = {"collection": "from-flag"} if "flag" in layers else {}

    settings, sources = resolve(
        flags, environ, env_file, config, env_file_path=env_file_path, config_path=config_path
    )

    assert settings.collection == expected
    assert sources["collection"] == source.format(config=config_path, env_file=env_file_path)


def test_every_source_is_reported_per_setting(tmp_path: Path) -> None:
    env_file = write(tmp_path, "service.env", f"DATABASE_URL={DB}\nQDRANT_API_KEY=k3y\n")
    config = write(tmp_path, "reconcile.toml", 'page_size = 50\ntable = "app.faces"\n')

    settings, sources = load_settings(
        {"flag_key": "is_assigned", "page_size": None},  # None: not given on the command line
        {"QDRANT_URL": "http://qdrant:6333", "UNRELATED": "x"},
        config_path=config,
        env_file_path=env_file,
    )

    assert settings == Settings(
        database_url=DB,
        qdrant_url="http://qdrant:6333",
        qdrant_api_key="k3y",
        flag_key="is_assigned",
        page_size=50,
        table="app.faces",
    )
    assert sources["flag_key"] == "flag"
    assert sources["qdrant_url"] == "environment (QDRANT_URL)"
    assert sources["database_url"] == f"env file ({env_file})"
    assert sources["qdrant_api_key"] == f"env file ({env_file})"
    assert sources["page_size"] == f"config file ({config})"
    assert sources["table"] == f"config file ({config})"
    assert sources["retries"] == "default"
    assert set(sources) == {f.name for f in dataclasses.fields(Settings)}


def test_env_vars_name_only_fields_of_settings() -> None:
    names = {f.name for f in dataclasses.fields(Settings)}
    assert set(ENV_VARS) <= names
    assert ENV_VARS["collection"] == "QDRANT_FACE_COLLECTION"


def test_an_empty_environment_variable_counts_as_unset() -> None:
    settings, sources = resolve(
        {}, {**BASE_ENV, "QDRANT_FACE_COLLECTION": ""}, {"QDRANT_FACE_COLLECTION": "svc"}, {}
    )
    assert settings.collection == "svc"
    assert sources["collection"] == "env file"


def test_a_higher_layer_choosing_qdrant_replaces_the_lower_choice_whole(tmp_path: Path) -> None:
    # The service's .env names a server; a flag pointing at a local copy must win, not clash.
    settings, sources = resolve(
        {"qdrant_path": "/tmp/copy"},
        {"DATABASE_URL": DB},
        {"QDRANT_URL": "http://qdrant:6333"},
        {},
        env_file_path=tmp_path / ".env",
    )
    assert settings.qdrant_path == "/tmp/copy"
    assert settings.qdrant_url is None
    assert sources["qdrant_path"] == "flag"
    assert sources["qdrant_url"] == "unused: qdrant_path comes from flag"


def test_both_qdrant_locations_in_one_layer_are_still_rejected() -> None:
    message = config_error(
        resolve,
        {},
        {"DATABASE_URL": DB, "QDRANT_URL": "http://q:6333", "QDRANT_PATH": "/q"},
        {},
        {},
    )
    assert "more than one of --qdrant-url, --qdrant-path" in message


def test_no_database_anywhere_says_where_to_set_one() -> None:
    message = config_error(resolve, {}, {"QDRANT_PATH": "/q"}, {}, {})
    assert message.startswith("no database given: set --database-url or DATABASE_URL")


def test_settings_validation_applies_to_values_from_a_config_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "r.toml", "page_size = 0\n"))
    message = config_error(resolve, {}, BASE_ENV, {}, config)
    assert "out of range" in message


def test_kebab_and_snake_case_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "reconcile.toml",
        'flag-key = "is_assigned"\npoint_column = "point"\npage-size = 200\ntimeout = 5\n',
    )
    config = load_config(path)
    assert config == {
        "flag_key": "is_assigned",
        "point_column": "point",
        "page_size": 200,
        "timeout": 5.0,
    }
    assert isinstance(config["timeout"], float)  # TOML's 5 is an int; the field is a float


def test_one_setting_spelled_twice_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "r.toml", "page-size = 1\npage_size = 2\n")
    message = config_error(load_config, path)
    assert str(path) in message
    assert "'page-size' and 'page_size'" in message


def test_settings_under_a_reconcile_table(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "reconcile.toml",
        f'# shared by the nightly jobs\n[reconcile]\ndatabase-url = "{DB}"\n'
        'qdrant-url = "http://qdrant:6333"\ncollection = "faces_v2"\nretries = 5\n',
    )
    settings, sources = load_settings({}, {}, config_path=path)
    assert (settings.database_url, settings.collection, settings.retries) == (DB, "faces_v2", 5)
    assert sources["collection"] == f"config file ({path})"


def test_keys_beside_the_reconcile_table_are_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "r.toml", 'collection = "x"\n[reconcile]\nretries = 1\n')
    message = config_error(load_config, path)
    assert str(path) in message
    assert "collection outside the [reconcile] table" in message


def test_every_setting_can_be_written_in_a_config_file(tmp_path: Path) -> None:
    # Guards against a field added to Settings with a type this module cannot read.
    lines = []
    for field in dataclasses.fields(Settings):
        value = field.default if field.default is not dataclasses.MISSING else DB
        if value is None:
            continue
        literal = f'"{value}"' if isinstance(value, str) else repr(value).lower()
        if field.name == "map":  # a table, not a scalar
            literal = '{ cluster_id = "cluster_id", asset_id = "asset_id::text" }'
        lines.append(f"{field.name.replace('_', '-')} = {literal}")
    config = load_config(write(tmp_path, "all.toml", "\n".join(lines) + "\n"))
    settings, _ = resolve({}, {"QDRANT_PATH": "/q"}, {}, config)
    mapped = {"cluster_id": "cluster_id", "asset_id": "asset_id::text"}
    assert settings == Settings(database_url=DB, qdrant_path="/q", map=mapped)


def test_malformed_toml_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.toml", 'collection = "faces"\npage_size = = 3\n')
    message = config_error(load_config, path)
    assert message.startswith(f"config file {path} does not parse:")
    assert "line 2" in message


def test_a_config_file_that_is_not_text_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "binary.toml"
    path.write_bytes(b"collection = '\xff\xfe'\n")
    assert str(path) in config_error(load_config, path)


def test_a_missing_file_is_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    assert config_error(load_config, path) == (
        f"cannot read config file {path}: No such file or directory"
    )
    assert str(path) in config_error(load_env_file, path)


def test_unknown_key_lists_the_valid_ones(tmp_path: Path) -> None:
    path = write(tmp_path, "r.toml", 'colection = "faces"\n')
    message = config_error(load_config, path)
    assert message.startswith(f"config file {path}: unknown setting 'colection'")
    for field in dataclasses.fields(Settings):
        assert field.name.replace("_", "-") in message


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('page_size = "big"', "page_size must be an integer, not a string 'big'"),
        ("page_size = true", "page_size must be an integer, not a boolean True"),
        ("page_size = 10.5", "page_size must be an integer, not a number 10.5"),
        ('timeout = "30s"', "timeout must be a number, not a string '30s'"),
        ("collection = 7", "collection must be a string, not an integer 7"),
        ("table = ['a', 'b']", "table must be a string, not an array ['a', 'b']"),
        ("[flag-key]\nx = 1", "flag_key must be a string, not a table {'x': 1}"),
    ],
)
def test_wrong_value_type_names_the_key_and_expected_type(
    tmp_path: Path, line: str, expected: str
) -> None:
    path = write(tmp_path, "r.toml", line + "\n")
    assert config_error(load_config, path) == f"config file {path}: {expected}"


def test_a_secret_of_the_wrong_type_is_not_echoed(tmp_path: Path) -> None:
    path = write(tmp_path, "r.toml", "qdrant_api_key = 123456789\n")
    message = config_error(load_config, path)
    assert "qdrant_api_key must be a string, not an integer" in message
    assert "123456789" not in message


def test_dotenv_quotes_export_and_comments(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        ".env",
        "\ufeff# the service's settings\n"
        "\n"
        f"export DATABASE_URL='{DB}'\n"
        'QDRANT_URL="http://qdrant:6333"  # the cluster\n'
        "QDRANT_API_KEY=abc#def\n"  # no space before '#': part of the key
        "QDRANT_FACE_COLLECTION = faces_v2 # trailing comment\n"
        "SINGLE='no $interpolation \\n here'\n"
        'DOUBLE="tab\\there \\"quoted\\" back\\\\slash \\d kept ${HOME}"\n'
        "EMPTY=\n"
        "SPACED=two words\n"
        "   INDENTED=yes\n"
        "REPEATED=first\n"
        "REPEATED=second\n",
    )
    assert load_env_file(path) == {
        "DATABASE_URL": DB,
        "QDRANT_URL": "http://qdrant:6333",
        "QDRANT_API_KEY": "abc#def",
        "QDRANT_FACE_COLLECTION": "faces_v2",
        "SINGLE": "no $interpolation \\n here",
        "DOUBLE": 'tab\there "quoted" back\\slash \\d kept ${HOME}',
        "EMPTY": "",
        "SPACED": "two words",
        "INDENTED": "yes",
        "REPEATED": "second",
    }


@pytest.mark.parametrize(
    ("line", "hint"),
    [
        ("DATABASE_URL", ""),  # no '='
        ("not a setting", ""),
        ("1KEY=value", ""),  # a key cannot start with a digit
        ("QDRANT_API_KEY='unterminated-s3cret", " (setting QDRANT_API_KEY)"),
        ('QDRANT_API_KEY="s3cret" trailing', " (setting QDRANT_API_KEY)"),
        ("export", ""),
    ],
)
def test_malformed_dotenv_line_names_file_and_line(tmp_path: Path, line: str, hint: str) -> None:
    path = write(tmp_path, ".env", f"# comment\nQDRANT_URL=http://q:6333\n{line}\nLATER=1\n")
    message = config_error(load_env_file, path)
    assert message.startswith(f"env file {path}:3 does not parse{hint}: expected KEY=value")
    assert "s3cret" not in message  # the line may hold a credential: never quoted back


def test_show_masks_secrets_and_reports_sources(tmp_path: Path) -> None:
    settings, sources = resolve(
        {"qdrant_api_key": "super-secret-key"},
        {"DATABASE_URL": DB, "QDRANT_URL": "https://reader:qpass@qdrant.example:6333"},
        {},
        {},
    )
    rows = show(settings, sources)
    table = {name: (value, source) for name, value, source in rows}

    assert [name for name, _, _ in rows] == [f.name for f in dataclasses.fields(Settings)]
    assert table["database_url"] == (
        "postgresql://app:***@db.internal:5432/faces",
        "environment (DATABASE_URL)",
    )
    assert table["qdrant_api_key"] == ("***", "flag")
    assert table["qdrant_url"][0] == "https://reader:***@qdrant.example:6333"
    assert table["qdrant_path"] == ("", "default")
    assert table["page_size"] == ("1000", "default")
    printed = repr(rows)
    for secret in ("s3cret-pw", "super-secret-key", "qpass"):
        assert secret not in printed


def test_show_works_on_an_invalid_merge_for_config_show(tmp_path: Path) -> None:
    # `config show` is run when something is wrong: it must print before validation fails.
    values, sources = merge({}, {"QDRANT_API_KEY": "k"}, {}, {"page_size": 0})
    table = {name: (value, source) for name, value, source in show(values, sources)}
    assert table["database_url"] == ("", "default")
    assert table["qdrant_api_key"] == ("***", "environment (QDRANT_API_KEY)")
    assert table["page_size"] == ("0", "config file")
    assert config_error(build, values).startswith("no database given")


def test_flags_that_are_not_settings_are_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="not settings: debug"):
        resolve({"debug": True}, BASE_ENV, {}, {})
