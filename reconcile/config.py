"""Where each setting comes from: flags, environment, an env file, a config file, defaults.

Precedence, highest first: flag > environment > env file > config file > default.
Every layer is kept separate until `resolve`, so `reconcile config show` can say
which one supplied each value: an operator debugging a cron job needs to know
whether the URL came from the unit's environment or from a forgotten `.env`.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from reconcile.errors import ConfigError
from reconcile.settings import Settings, maps_of, mask_url

# Only these five have an environment variable: they are the names the service's
# own `.env` already uses, so one file configures both the service and this tool.
ENV_VARS: dict[str, str] = {
    "database_url": "DATABASE_URL",
    "qdrant_url": "QDRANT_URL",
    "qdrant_path": "QDRANT_PATH",
    "qdrant_api_key": "QDRANT_API_KEY",
    "collection": "QDRANT_FACE_COLLECTION",
}

FLAG = "flag"
DEFAULT = "default"

# The ways of reaching Qdrant are one choice spelled several ways: a layer that names
# one of them replaces the lower layers' choice whole. Resolved per field, a service
# `.env` holding QDRANT_URL would make `--qdrant-path /tmp/q` fail as "both given".
_QDRANT_LOCATIONS = ("qdrant_url", "qdrant_path", "qdrant_edge")

_FIELDS: tuple[dataclasses.Field[Any], ...] = dataclasses.fields(Settings)
_NAMES: tuple[str, ...] = tuple(f.name for f in _FIELDS)
_LOCATIONS = tuple(name for name in _QDRANT_LOCATIONS if name in _NAMES)
SETTING_NAMES = _NAMES  # every setting, in the dataclass's order


def _base_type(hint: Any) -> type:
    """`str | None` -> str: TOML has no null, so only the non-None part can be written."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return _base_type(args[0])
    origin = typing.get_origin(hint)
    if isinstance(origin, type):
        return origin
    if isinstance(hint, type):
        return hint
    return object


# Read from the dataclass, not listed here, so a field added to Settings is configurable
# (and type-checked) at once, without this module learning about it.
_TYPES: dict[str, type] = {
    name: _base_type(hint)
    for name, hint in typing.get_type_hints(Settings).items()
    if name in _NAMES
}
_KINDS: dict[type, str] = {
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    list: "an array",
    dict: "a table",
}
_SECRETS = frozenset({"database_url", "qdrant_url", "qdrant_api_key"})


def _check_type(where: str, name: str, value: Any) -> Any:
    """The value as the field's type, or a ConfigError naming the key and the expected type."""
    if name == "map":
        # A table of payload key = "column" (or "column::text"): not a scalar type.
        if not isinstance(value, dict):
            raise ConfigError(
                f'{where}: map must be a table of payload key = "column", e.g. '
                'map = { cluster_id = "cluster_id", asset_id = "asset_id::text" }'
            )
        for key, column in value.items():
            if not isinstance(column, str):
                raise ConfigError(
                    f"{where}: map's {key} must be a column name as a string "
                    f'({key} = "{key}" or "{key}::text"), not {_KINDS.get(type(column), "that")}'
                )
        try:
            return maps_of(value)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    if name == "max_deletes" and type(value) is int:
        return str(value)  # `max_deletes = 500` is a number of points, as "500" is
    expected = _TYPES[name]
    # bool is an int to Python but never what someone meant by `page_size = true`.
    if expected is bool:
        ok = isinstance(value, bool)
    elif expected is float:
        # TOML's `timeout = 30` is an integer; any number is fine for a float setting.
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif expected is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, expected)
    if not ok:
        wanted = _KINDS.get(expected, expected.__name__)
        kind = _KINDS.get(type(value), type(value).__name__)
        # A secret typed wrongly is still a secret: name its type, never echo it.
        got = kind if name in _SECRETS else f"{kind} {value!r}"
        raise ConfigError(f"{where}: {name} must be {wanted}, not {got}")
    return float(value) if expected is float else value


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def load_config(path: Path) -> dict[str, Any]:
    """The settings a TOML file sets, keyed by field name, type-checked; nothing else.

    Keys are Settings field names in snake_case or kebab-case (the flag spelling),
    at the top level or all under a `[reconcile]` table.
    """
    found: dict[str, Any] = _strict(read_config, path)
    return found


def _strict(read: Callable[[Path, list[ConfigError]], dict[str, Any]], path: Path) -> Any:
    """What `read` found, or its first problem raised: a command must not run half-configured."""
    problems: list[ConfigError] = []
    found = read(path, problems)
    if problems:
        raise problems[0]
    return found


def read_config(path: Path, problems: list[ConfigError]) -> dict[str, Any]:
    """The settings of a TOML file that are valid; each problem is appended to `problems`.

    A file that does not parse yields nothing; an unknown key or a wrong type skips
    that key only, so `config show` can still show what the rest of the file sets.
    """
    where = f"config file {path}"
    try:
        data = tomllib.loads(_read_bytes(path, "config file").decode("utf-8-sig"))
    except ConfigError as exc:
        problems.append(exc)
        return {}
    except UnicodeDecodeError:
        problems.append(ConfigError(f"{where} does not parse: it is not UTF-8 text"))
        return {}
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message already ends with "(at line N, column M)".
        twice = "; a key is set twice there" if "overwrite" in str(exc) else ""
        problems.append(ConfigError(f"{where} does not parse: {exc}{twice}"))
        return {}
    table: Mapping[str, Any] = data
    if isinstance(data.get("reconcile"), dict):
        stray = sorted(key for key in data if key != "reconcile")
        if stray:
            # Keys beside the table are almost always a setting meant for inside it.
            problems.append(
                ConfigError(
                    f"{where}: {', '.join(stray)} outside the [reconcile] table: "
                    "put every setting under [reconcile], or drop the table"
                )
            )
        table = data["reconcile"]
    settings: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for key, value in table.items():
        name = key.replace("-", "_")
        try:
            if name not in _TYPES:
                valid = ", ".join(n.replace("_", "-") for n in _NAMES)
                raise ConfigError(f"{where}: unknown setting {key!r}: valid settings are {valid}")
            if name in spelled:
                raise ConfigError(f"{where}: {spelled[name]!r} and {key!r} set the same setting")
            spelled[name] = key
            settings[name] = _check_type(where, name, value)
        except ConfigError as exc:
            problems.append(exc)
    return settings


_ENV_LINE = re.compile(
    r"(?:export[ \t]+)?(?P<key>[A-Za-z_][A-Za-z0-9_]*)[ \t]*=[ \t]*(?P<value>.*)", re.S
)
_DOUBLE_ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "t": "\t", "r": "\r"}


def _unquote(raw: str) -> str | None:
    """The value of one `KEY=` right-hand side, or None when it is malformed."""
    if not raw or raw[0] not in "'\"":
        # Unquoted: a comment starts only after whitespace, so `pa#ss` stays a password.
        return re.split(r"[ \t]#", raw, maxsplit=1)[0].rstrip()
    quote, i = raw[0], 1
    out: list[str] = []
    while i < len(raw):
        char = raw[i]
        if char == quote:
            rest = raw[i + 1 :].strip()
            # After the closing quote only a comment may follow; anything else is a typo.
            return "".join(out) if not rest or rest.startswith("#") else None
        if quote == '"' and char == "\\" and i + 1 < len(raw):
            nxt = raw[i + 1]
            # An unknown escape stays as typed: Windows paths and regexes survive.
            out.append(_DOUBLE_ESCAPES.get(nxt, "\\" + nxt))
            i += 2
            continue
        out.append(char)
        i += 1
    return None  # unterminated: multi-line values are not supported


def load_env_file(path: Path) -> dict[str, str]:
    """Every `KEY=value` of a dotenv file; a malformed line is a ConfigError at file:line.

    Deliberately small and strict: `export ` prefixes, `#` comments, single quotes
    (literal) and double quotes (with \\\\ \\" \\n \\t \\r escapes). No `${VAR}`
    interpolation and no multi-line values: this file holds credentials, and a
    guess at what a line meant could connect to the wrong database.
    """
    found: dict[str, str] = _strict(read_env_file, path)
    return found


def read_env_file(path: Path, problems: list[ConfigError]) -> dict[str, Any]:
    """The well-formed lines of a dotenv file; each malformed one is appended to `problems`."""
    try:
        text = _read_bytes(path, "env file").decode("utf-8-sig")
    except ConfigError as exc:
        problems.append(exc)
        return {}
    except UnicodeDecodeError:
        problems.append(ConfigError(f"env file {path} does not parse: it is not UTF-8 text"))
        return {}
    values: dict[str, Any] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _ENV_LINE.fullmatch(stripped)
        value = _unquote(match["value"]) if match else None
        if match is None or value is None:
            # The line itself is never quoted back: it may be a password.
            hint = f" (setting {match['key']})" if match else ""
            problems.append(
                ConfigError(
                    f"env file {path}:{number} does not parse{hint}: "
                    "expected KEY=value, KEY='value' or KEY=\"value\""
                )
            )
            continue
        values[match["key"]] = value  # a later line wins, as in a shell
    return values


def merge(
    flags: Mapping[str, Any],
    environ: Mapping[str, str],
    env_file: Mapping[str, str],
    config: Mapping[str, Any],
    *,
    env_file_path: Path | None = None,
    config_path: Path | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """Every field's winning value and its source, not yet validated.

    Separate from `resolve` so `config show` can still print the layers when the
    result is invalid, which is exactly when someone runs it.
    """
    unknown = sorted(set(flags) - set(_NAMES))
    if unknown:
        # A caller's bug, not a user's: the CLI passes only Settings fields.
        raise ValueError(f"not settings: {', '.join(unknown)}")
    env_file_source = f"env file ({env_file_path})" if env_file_path else "env file"
    config_source = f"config file ({config_path})" if config_path else "config file"

    def layers(name: str) -> list[tuple[Any, str, int]]:
        """(value, source, rank) for each layer that sets `name`, highest precedence first."""
        found: list[tuple[Any, str, int]] = []
        if flags.get(name) is not None:
            found.append((flags[name], FLAG, 0))
        var = ENV_VARS.get(name)
        # An empty variable counts as unset, as Click treats it: `QDRANT_URL=` in a
        # unit file means "none", not "the empty URL".
        if var and environ.get(var):
            found.append((environ[var], f"environment ({var})", 1))
        if var and env_file.get(var):
            found.append((env_file[var], env_file_source, 2))
        if config.get(name) is not None:
            found.append((config[name], config_source, 3))
        return found

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for field in _FIELDS:
        found = layers(field.name)
        if found:
            values[field.name], sources[field.name], _ = found[0]
        elif field.default is not dataclasses.MISSING:
            values[field.name], sources[field.name] = field.default, DEFAULT

    # The highest layer naming any Qdrant location decides; within it, naming two is
    # still the "both given" error Settings reports. Lower layers' choices are dropped.
    located = {name: layers(name) for name in _LOCATIONS}
    ranks = [rank for found in located.values() for _, _, rank in found]
    if ranks:
        best = min(ranks)
        winner = next(n for n, found in located.items() if found and found[0][2] == best)
        for name, found in located.items():
            if found and found[0][2] > best:
                values[name] = None
                sources[name] = f"unused: {winner} comes from {sources[winner]}"
    return values, sources


def resolve(
    flags: Mapping[str, Any],
    environ: Mapping[str, str],
    env_file: Mapping[str, str],
    config: Mapping[str, Any],
    *,
    env_file_path: Path | None = None,
    config_path: Path | None = None,
) -> tuple[Settings, dict[str, str]]:
    """The effective Settings and, for each field, the layer it came from.

    `flags` holds only what was given on the command line: None means not given.
    """
    values, sources = merge(
        flags, environ, env_file, config, env_file_path=env_file_path, config_path=config_path
    )
    return build(values), sources


def build(values: Mapping[str, Any]) -> Settings:
    """Validated Settings from `merge`'s values; split out so `config show` prints first."""
    if not values.get("database_url"):
        raise ConfigError(
            "no database given: set --database-url or DATABASE_URL "
            "(in the environment or an --env-file), or database_url in a --config file"
        )
    return Settings(**values)


def load_settings(
    flags: Mapping[str, Any],
    environ: Mapping[str, str],
    *,
    config_path: Path | None = None,
    env_file_path: Path | None = None,
) -> tuple[Settings, dict[str, str]]:
    """Read the optional files and resolve: the one call a command needs."""
    config = load_config(config_path) if config_path is not None else {}
    env_file = load_env_file(env_file_path) if env_file_path is not None else {}
    return resolve(
        flags, environ, env_file, config, env_file_path=env_file_path, config_path=config_path
    )


def safe_value(name: str, value: Any) -> Any:
    """A value as safe to print or put in JSON: URLs lose their passwords, the API key is `***`."""
    if value is None:
        return None
    if name == "map":
        return {m.key: m.source for m in maps_of(value)}
    if name == "qdrant_api_key":
        return "***"
    if name in _SECRETS:
        # A Qdrant URL may carry user:password too; mask_url leaves a plain URL alone.
        return mask_url(str(value))
    return value


def display(name: str, value: Any) -> str:
    """A value as text for the table (masked as by `safe_value`; unset is empty)."""
    shown = safe_value(name, value)
    if name == "map":
        return ", ".join(f"{key}={source}" for key, source in shown.items())
    return "" if shown is None else str(shown)


def show(
    settings: Settings | Mapping[str, Any], sources: Mapping[str, str]
) -> list[tuple[str, str, str]]:
    """(name, masked value, source) for every setting, in the dataclass's order."""
    values = dataclasses.asdict(settings) if isinstance(settings, Settings) else settings
    return [(name, display(name, values.get(name)), sources.get(name, DEFAULT)) for name in _NAMES]
