"""Connection settings and the table/collection mapping, validated once."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

from reconcile.errors import ConfigError
from reconcile.mapping import KeyMap, check_maps, parse_map, parse_source

# Every scheme the service's own settings may hold; all are read with psycopg 3,
# so the async and psycopg2 spellings work without those drivers installed.
_SCHEMES = (
    "postgresql",
    "postgres",
    "postgresql+psycopg",
    "postgresql+psycopg2",
    "postgresql+asyncpg",
)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_PAYLOAD_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]{0,127}")


@dataclass(frozen=True)
class Settings:
    """Everything a command needs to reach both stores and compare them."""

    database_url: str
    qdrant_url: str | None = None
    qdrant_path: str | None = None
    qdrant_edge: str | None = None
    qdrant_api_key: str | None = None
    collection: str = "faces"
    table: str = "face_instances"
    point_column: str = "qdrant_point_id"
    person_column: str = "person_id"
    id_column: str = "id"
    updated_column: str = "updated_at"
    person_key: str = "person_id"
    flag_key: str | None = None
    page_size: int = 1000
    min_age: float = 0.0  # grace window in seconds: rows changed more recently are skipped
    retries: int = 3  # Qdrant reads retried on a transient failure
    timeout: float = 30.0  # seconds one Qdrant request may take
    # Further payload keys that mirror columns (`--map KEY=COLUMN[::text]`). A library
    # caller may give a {key: "column[::text]"} dict or "KEY=COLUMN" strings: they are
    # normalized here, so the field always holds KeyMaps.
    map: tuple[KeyMap, ...] = ()
    # `repair --delete-orphans` (off by default): delete points no row names, once seen
    # orphaned twice at least `orphan_grace` apart, at most `max_deletes` (N or P% of
    # the points scanned) marked and deleted per run. `orphan_table` is the base table
    # owning the point column, which a view as --table needs for the recheck.
    delete_orphans: bool = False
    orphan_grace: str = "1h"
    max_deletes: str = "1%"
    orphan_table: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "map", maps_of(self.map))
        conninfo(self.database_url)  # raises on a scheme typo
        if self.qdrant_url:
            check_qdrant_url(self.qdrant_url)
        located = [bool(self.qdrant_url), bool(self.qdrant_path), bool(self.qdrant_edge)]
        if not any(located):
            raise ConfigError(
                "no Qdrant given: set --qdrant-url (or QDRANT_URL) for a server, "
                "--qdrant-path (or QDRANT_PATH) for a local-mode directory, "
                "or --qdrant-edge for a Qdrant Edge store"
            )
        if sum(located) > 1:
            raise ConfigError(
                "more than one of --qdrant-url, --qdrant-path, --qdrant-edge given: choose one"
            )
        if not self.collection:
            raise ConfigError("--collection is empty: name the Qdrant collection")
        table_parts(self.table)
        for flag, name in (
            ("--point-column", self.point_column),
            ("--person-column", self.person_column),
            ("--id-column", self.id_column),
            ("--updated-column", self.updated_column),
        ):
            check_identifier(flag, name)
        for flag, key in (
            ("--person-key", self.person_key),
            ("--flag-key", self.flag_key),
        ):
            if key is not None and not _PAYLOAD_KEY.fullmatch(key):
                raise ConfigError(
                    f"{flag} {key!r} is not a plain payload key: use letters, digits, '_' or '-'"
                )
        if self.flag_key is not None and self.flag_key == self.person_key:
            raise ConfigError("--flag-key must differ from --person-key")
        check_maps(self.map, self.person_key, self.flag_key)
        for flag, key in (("--person-key", self.person_key), ("--flag-key", self.flag_key)):
            if key == ORPHAN_KEY:
                raise ConfigError(f"{flag} {key!r} is the key reconcile keeps orphan sightings in")
        if any(m.key == ORPHAN_KEY for m in self.map):
            raise ConfigError(f"--map {ORPHAN_KEY} is the key reconcile keeps orphan sightings in")
        grace_seconds(self.orphan_grace)
        deletes_limit(self.max_deletes, 0)
        if self.orphan_table is not None:
            table_parts(self.orphan_table, "--orphan-table")
        if not 0 <= self.min_age <= 30 * 86400:
            raise ConfigError(f"--min-age {self.min_age} is out of range: use 0 to 2592000 seconds")
        if not 0 <= self.retries <= 10:
            raise ConfigError(f"--retries {self.retries} is out of range: use 0 to 10")
        if not 1 <= self.timeout <= 600:
            raise ConfigError(f"--timeout {self.timeout} is out of range: use 1 to 600 seconds")
        if not 1 <= self.page_size <= 100_000:
            raise ConfigError(f"page size {self.page_size} is out of range: use 1 to 100000")

    @property
    def keys(self) -> list[str]:
        """The payload keys this tool reads and, when repairing, writes."""
        flag = [self.flag_key] if self.flag_key else []
        return [self.person_key, *flag, *(m.key for m in self.map)]


# The payload key holding when a point was first seen orphaned (the database's clock,
# ISO 8601 UTC). The tool's own: never compared, never mapped, never restored by undo.
ORPHAN_KEY = "reconcile_orphan_since"

_DURATION = re.compile(r"(\d+)\s*([smhdw])")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def grace_seconds(spec: str) -> int:
    """`--orphan-grace`: `30m`, `1h`, `2d`; `0s` is accepted (for tests: unsafe in production)."""
    match = _DURATION.fullmatch(spec.strip())
    if match is None:
        raise ConfigError(
            f"--orphan-grace {spec!r} is not a duration: use e.g. 30m, 1h or 1d "
            "(longer than the service's longest gap between writing a point and committing its row)"
        )
    return int(match.group(1)) * _SECONDS[match.group(2)]


def points_limit(flag: str, spec: str, points: int, example: str) -> int:
    """A limit on points: `500` points, or `10%` of `points` (rounded down).

    `flag` and `example` (a percentage) name the option in the messages.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(%?)\s*", spec)
    if match is None:
        raise ConfigError(f"{flag} {spec!r} is not a number or a percentage: use 500 or {example}")
    value, percent = float(match.group(1)), bool(match.group(2))
    if percent:
        if value > 100:
            raise ConfigError(f"{flag} {spec!r} is over 100%")
        return math.floor(points * value / 100)
    if not value.is_integer():
        raise ConfigError(f"{flag} {spec!r} must be a whole number of points")
    return int(value)


def deletes_limit(spec: str, points: int) -> int:
    """`--max-deletes`: how many orphan points one run may mark and delete together."""
    return points_limit("--max-deletes", spec, points, "1%")


def maps_of(value: Any) -> tuple[KeyMap, ...]:
    """`--map` values in any accepted spelling as KeyMaps: KeyMaps, `KEY=COLUMN`
    strings, {key: "COLUMN[::text]"} (a config file's table), or asdict's dicts."""
    if isinstance(value, Mapping):
        return tuple(parse_source(str(k), str(v)) for k, v in value.items())
    found: list[KeyMap] = []
    for item in value if isinstance(value, Iterable) and not isinstance(value, str) else [value]:
        if isinstance(item, KeyMap):
            found.append(item)
        elif isinstance(item, Mapping):
            found.append(KeyMap(**item))
        else:
            found.append(parse_map(str(item)))
    return tuple(found)


def check_identifier(flag: str, name: str) -> str:
    """Accept only plain SQL identifiers: they are quoted again when used, never pasted."""
    if not _IDENTIFIER.fullmatch(name):
        raise ConfigError(
            f"{flag} {name!r} is not a plain identifier: use letters, digits and '_' "
            "(at most 63, not starting with a digit)"
        )
    return name


def table_parts(table: str, flag: str = "--table") -> tuple[str | None, str]:
    """Split `schema.table` (or `table`) into validated parts; `flag` names it in errors."""
    parts = table.split(".")
    if len(parts) > 2:
        raise ConfigError(f"{flag} {table!r} has too many dots: use 'table' or 'schema.table'")
    names = [check_identifier(flag, part) for part in parts]
    return (names[0], names[1]) if len(names) == 2 else (None, names[0])


# A database URL read as SQLAlchemy reads one (sqlalchemy.engine.url._parse_url): the
# service's own DATABASE_URL is written for SQLAlchemy, so a password it takes with a
# bare '%', '#' or space must connect here too, though libpq would refuse the URL.
_URL = re.compile(
    r"""
    (?P<scheme>[\w+]+)://
    (?:(?P<user>[^:/]*)(?::(?P<password>[^@]*))?@)?
    (?:(?:\[(?P<ipv6host>[^/?]+)\]|(?P<host>[^/:?]+))?(?::(?P<port>[^/?]*))?)?
    (?:/(?P<dbname>[^?]*))?
    (?:\?(?P<query>.*))?
    """,
    re.X,
)


_URL_START = re.compile(r"[\w+]+://")
# SQLAlchemy's psycopg dialect reads `?host=h:5432` (or several `host=`) as hosts and ports.
_HOST_PORT = re.compile(r"[A-Za-z0-9.-]*(?::\d*)?")


def conninfo(database_url: str) -> str:
    """Any accepted PostgreSQL URL, or a libpq key=value string, as a key=value string
    for libpq: a URL's parts (user name, password and database percent-decoded, the
    query's pairs as they are) each become a quoted value."""
    scheme, sep, rest = database_url.partition("://")
    if _key_values(database_url):
        _check_key_values(database_url)
        return database_url
    found = _URL.match(database_url)
    if not sep or not rest or found is None:
        raise ConfigError(
            f"database URL {mask_url(database_url)!r} is not a URL: "
            "use postgresql://user:password@host:5432/dbname, or key=value pairs "
            "(host=db port=5432 dbname=faces user=app)"
        )
    if scheme.lower() not in _SCHEMES:
        raise ConfigError(
            f"database URL scheme {scheme!r} is not PostgreSQL: "
            f"use one of {', '.join(s + '://' for s in _SCHEMES)}"
        )
    part = found.groupdict()
    if "@" in (part["host"] or "") + (part["dbname"] or "") or not (part["port"] or "0").isdigit():
        # A second bare '@' in the password (or a ':' in the user name) splits the URL
        # elsewhere: the host or the port then holds part of the password, so neither
        # is quoted back, and libpq is not asked to resolve it.
        raise ConfigError(
            f"database URL {mask_url(database_url)!r} does not parse: percent-encode "
            "'@' and ':' in the user name and password (a password p@ss is written p%40ss)"
        )
    if "\x00" in unquote(database_url):
        raise ConfigError(
            f"database URL {mask_url(database_url)!r} holds a NUL byte (%00), which "
            "libpq cannot take: remove it"
        )
    pairs = {
        "host": part["host"] or part["ipv6host"],
        "port": part["port"],
        **{k: unquote(part[k] or "") for k in ("user", "password", "dbname")},
        **_query_params(database_url, part["query"] or ""),
    }
    # Empty parts are left out, as SQLAlchemy leaves them: libpq then reads PGUSER, …
    return " ".join(f"{k}={_quoted_value(v)}" for k, v in pairs.items() if v)


def _query_params(database_url: str, query: str) -> dict[str, str]:
    """A URL's query as SQLAlchemy's psycopg dialect passes it to libpq: several `host=`,
    or one `host=NAME:PORT` without `port=`, become libpq's host and port lists."""
    pairs = parse_qsl(query)
    keys = [k for k, _ in pairs]
    repeated = sorted({k for k in keys if keys.count(k) > 1} - {"host"})
    if repeated:
        raise ConfigError(
            f"database URL {mask_url(database_url)!r} gives {repeated[0]!r} twice in its "
            "query: give it once"
        )
    params = dict(pairs)
    hosts = [v for k, v in pairs if k == "host"]
    one_with_port = (
        len(hosts) == 1
        and "port" not in params
        and ":" in hosts[0]
        and _HOST_PORT.fullmatch(hosts[0]) is not None
    )
    if len(hosts) > 1 or one_with_port:
        names, ports = zip(*(h.partition(":")[::2] for h in hosts), strict=True)
        params["host"], params["port"] = ",".join(names), ",".join(ports)
    return params


def _quoted_value(value: str) -> str:
    """A libpq key=value string's value: in single quotes, `'` and `\\` escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _key_values(text: str) -> bool:
    """Whether `text` is a libpq key=value string rather than a URL: a value may hold
    '://' (application_name=http://x), a URL starts with its scheme."""
    return "=" in text and not _URL_START.match(text)


def _check_key_values(text: str) -> None:
    """Raise unless `text` parses as libpq's key=value pairs (`host=/run/pg user=app …`)."""
    # Imported here: every command imports this module, and only a key=value string
    # needs the driver to read it.
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        conninfo_to_dict(text)
    except psycopg.ProgrammingError:
        # Neither the string nor libpq's message is quoted back: on a string that does
        # not parse, which word is the password is exactly what cannot be known.
        raise ConfigError(
            "database connection string does not parse: use key=value pairs separated by "
            "spaces (host=db port=5432 dbname=faces user=app; a value with spaces in single "
            "quotes), or a postgresql:// URL"
        ) from None


def http_url(url: str) -> SplitResult | None:
    """`url` split, when it is http(s)://HOST[:PORT]… with a port that is a number in
    range (a Qdrant server, a Pushgateway); otherwise None."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a port that is not a number in range)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return parts


# qdrant-client's one spelling without a scheme (it special-cases it).
_QDRANT_LOCALHOST = re.compile(r"localhost(:[0-9]{1,5})?")


def check_qdrant_url(url: str) -> str:
    """Accept what qdrant-client can reach: http(s)://host[:port][/prefix].

    Checked here, with the other settings, so that a typo is a configuration error
    (exit 2) before anything is opened, not the client's exception at first use.
    """
    ok = http_url(url) is not None and not any(char.isspace() for char in url)
    if not ok and not _QDRANT_LOCALHOST.fullmatch(url):
        raise ConfigError(
            f"--qdrant-url {mask_url(url)!r} is not a Qdrant server URL: "
            "use http://host:6333 or https://host:6333 (QDRANT_URL), "
            "or --qdrant-path for a local-mode directory"
        )
    return url


# A password inside any text: a URL's user:password@, or a key=value pair (libpq, a
# URL's query). A quoted value is masked to its closing quote, an unquoted one to
# the next blank: masking a little too much is safe, a little too little is not.
_SECRET_IN_URL = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")
_SECRET_PAIR = re.compile(
    r"(?P<key>\b(?:ssl)?password\s*=\s*)(?P<value>'(?:[^'\\]|\\.)*'?|(?:\\.|[^\s\\])*\\?)",
    re.IGNORECASE,
)


def mask_secrets(text: str) -> str:
    """Any message with every password in it masked, wherever a driver put it."""
    return _SECRET_PAIR.sub(r"\g<key>***", _SECRET_IN_URL.sub(r"\g<1>***@", text))


_QUERY_SECRET = re.compile(r"(?P<key>(?:^|&)(?:ssl)?password=)[^&]*", re.IGNORECASE)
_USERINFO = re.compile(r"^(?P<head>[^:/?#]*://[^:/?#@]*:)(?P<password>.*)@(?P<tail>[^@]*)$", re.S)


def mask_url(url: str) -> str:
    """The URL with any password replaced by ***, safe for every message and log.

    The password is everything between the user's colon and the last "@", so a
    password holding "@", "/" or "?" (unescaped, as people do type them) is masked
    whole even where a URL parser would give up.
    """
    if _key_values(url) or "://" not in url:
        # A libpq key=value string: `password=` and `sslpassword=` values, quoted or not.
        url = _SECRET_PAIR.sub(r"\g<key>***", url)
        if "://" not in url:
            return url
        # A value may hold '://'; or it is a URL with no scheme: mask it as one too.
    masked = _USERINFO.sub(r"\g<head>***@\g<tail>", url)
    # The query as SQLAlchemy reads it: after the first '?', to the end ('#' included).
    head, question, query = masked.partition("?")
    return head + question + _QUERY_SECRET.sub(r"\g<key>***", query)
