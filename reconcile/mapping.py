"""Mapped payload keys: `KEY=COLUMN[::text]`, and what each PostgreSQL type looks like in a payload.

A mapped key's payload value must be the *canonical* form of its column's value,
the form the service writes (`../shared/service-schema.md`, README "Mapped
keys"). Each supported column type has a `Rule`: how a row's value becomes the
canonical value, and when a payload value agrees with it. The rules are strict
where Qdrant is (a keyword filter on "5" does not find 5; an integer index does
not hold 5.0) and lenient where only the representation differs (one instant
written in two zones, a float stored at single precision).
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from reconcile.errors import ConfigError

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]{0,127}")
_COLUMN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
TEXT_CAST = "::text"


@dataclass(frozen=True)
class KeyMap:
    """One `--map`: payload `key` mirrors `column`, as its text form when `text`."""

    key: str
    column: str
    text: bool = False

    @property
    def source(self) -> str:
        """The right-hand side as a user writes it: `asset_id::text`."""
        return self.column + (TEXT_CAST if self.text else "")


def parse_source(key: str, source: str) -> KeyMap:
    """`KEY` and `COLUMN[::text]` (a config file's `map` entry) as a KeyMap, validated."""
    if not _KEY.fullmatch(key):
        raise ConfigError(
            f"--map {key}={source}: {key!r} is not a plain payload key: "
            "use letters, digits, '_' or '-'"
        )
    column, cast, rest = source.strip().partition("::")
    if cast and rest.lower() != "text":
        raise ConfigError(
            f"--map {key}={source}: the only cast is ::text (the column's value written as a "
            "string): use COLUMN or COLUMN::text"
        )
    if not _COLUMN.fullmatch(column):
        raise ConfigError(
            f"--map {key}={source}: {column!r} is not a plain column name: use letters, "
            "digits and '_' (a view can bring a computed or joined value under a plain name)"
        )
    return KeyMap(key, column, bool(cast))


def parse_map(spec: str) -> KeyMap:
    """A `--map KEY=COLUMN[::text]` flag."""
    key, sep, source = spec.partition("=")
    if not sep or not key.strip() or not source.strip():
        raise ConfigError(
            f"--map {spec!r} is not KEY=COLUMN: e.g. --map cluster_id=cluster_id "
            "or --map asset_id=asset_id::text"
        )
    return parse_source(key.strip(), source)


def check_maps(maps: tuple[KeyMap, ...], person_key: str, flag_key: str | None) -> None:
    """Refuse a map of the person or flag key, and a key mapped twice."""
    seen: set[str] = set()
    for m in maps:
        if m.key == person_key:
            raise ConfigError(
                f"--map {m.key}={m.source} names the person key: the person is compared "
                "through --person-key and --person-column; drop this --map"
            )
        if m.key == flag_key:
            raise ConfigError(
                f"--map {m.key}={m.source} names the flag key, which is derived from the "
                "person (--flag-key); drop this --map"
            )
        if m.key in seen:
            raise ConfigError(f"--map maps payload key {m.key!r} twice: keep one")
        seen.add(m.key)


# --- the rules --------------------------------------------------------------------------


def _never(_raw: Any, _expected: Any) -> bool:
    # For types whose canonical value is exact: the fast test (same type, ==) already
    # failed, and nothing else agrees.
    return False


def _number(raw: Any) -> bool:
    return type(raw) is int or type(raw) is float  # bool is an int, but never a number here


def _double(raw: Any, expected: Any) -> bool:
    return _number(raw) and _equal_floats(float(raw), expected)


def _equal_floats(a: float, b: float) -> bool:
    # NaN, which JSON cannot carry (a server refuses it), is equal only to itself here,
    # so that a NaN a local store holds is not drift forever.
    return a == b or (math.isnan(a) and math.isnan(b))


def _single(value: float) -> float | None:
    try:
        return float(struct.unpack("f", struct.pack("f", value))[0])
    except OverflowError:
        return None


def _real(raw: Any, expected: Any) -> bool:
    # A `real` column keeps 24 bits of mantissa: 0.81 and 0.8100000023841858 are the
    # same stored value, whichever of them the payload holds.
    if not _number(raw):
        return False
    a, b = _single(float(raw)), _single(expected)
    return a is not None and b is not None and _equal_floats(a, b)


def _instant(text: str, naive_as_utc: bool) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if naive_as_utc and moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


def _same_instant(raw: Any, expected: Any) -> bool:
    # One instant written in two zones is one instant; a string without an offset
    # is taken as UTC, as the service's UTC clocks write it.
    if type(raw) is not str:
        return False
    moment = _instant(raw, naive_as_utc=True)
    return moment is not None and moment == _instant(expected, naive_as_utc=True)


def _same_local(raw: Any, expected: Any) -> bool:
    # A naive timestamp names no instant: the strings must parse to the same naive
    # value (an aware string never equals a naive one).
    if type(raw) is not str:
        return False
    moment = _instant(raw, naive_as_utc=False)
    return moment is not None and moment == _instant(expected, naive_as_utc=False)


def strict_equal(a: Any, b: Any) -> bool:
    """JSON equality strict on types at every level: true is not 1, 1 is not 1.0."""
    if type(a) is not type(b):
        return False
    if type(a) is dict:
        return a.keys() == b.keys() and all(strict_equal(a[k], b[k]) for k in a)
    if type(a) is list:
        return len(a) == len(b) and all(strict_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _utc_iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def _iso(value: datetime) -> str:
    return value.isoformat()


def _as_float(value: Any) -> float:
    return float(value)


@dataclass(frozen=True)
class Rule:
    """How one column type is compared.

    `copy_type` is the psycopg loader a COPY stream decodes the column's text with;
    `load` turns that value into the canonical payload value (None: it already is);
    `canon` does the same for a value the driver decoded itself (locked lookups);
    `same` says whether a payload value agrees when the fast test (`fast`: same
    type and ==) did not settle it. `fast` is False where == is looser than the
    rule (JSON containers: `{"a": 1} == {"a": True}` in Python).
    """

    name: str
    copy_type: str
    same: Callable[[Any, Any], bool]
    load: Callable[[Any], Any] | None = None
    canon: Callable[[Any], Any] | None = None
    fast: bool = True

    def agrees(self, raw: Any, expected: Any) -> bool:
        """Whether payload value `raw` agrees with the canonical `expected` (None: absent)."""
        if expected is None or raw is None:
            return raw is expected
        if self.fast and type(raw) is type(expected) and raw == expected:
            return True
        return self.same(raw, expected)

    def canonical(self, value: Any) -> Any:
        """The canonical payload value of a value the driver decoded."""
        return value if value is None or self.canon is None else self.canon(value)


_STRING = Rule("string", "text", _never, canon=str)
_INTEGER = Rule("integer", "int8", _never, canon=int)
_TEXT_OF_INTEGER = Rule("text", "text", _never, canon=str)
RULES: dict[str, Rule] = {
    "uuid": Rule("uuid", "text", _never, canon=lambda v: str(v).lower()),
    "text": _STRING,
    "character varying": _STRING,
    "smallint": _INTEGER,
    "integer": _INTEGER,
    "bigint": _INTEGER,
    "boolean": Rule("boolean", "bool", _never),
    "double precision": Rule("double precision", "float8", _double, canon=_as_float),
    # numeric is read as a float: a Decimal never equals the float a payload holds.
    "numeric": Rule("numeric", "float8", _double, canon=_as_float),
    "real": Rule("real", "float8", _real, canon=_as_float),
    "timestamp with time zone": Rule(
        "timestamptz", "timestamptz", _same_instant, load=_utc_iso, canon=_utc_iso
    ),
    "timestamp without time zone": Rule(
        "timestamp", "timestamp", _same_local, load=_iso, canon=_iso
    ),
    # psycopg parses json/jsonb (COPY and the driver alike): a str here is a JSON
    # string value ('"x"', '"5"'), never a JSON text to parse again.
    "json": Rule("json", "json", strict_equal, fast=False),
    "jsonb": Rule("jsonb", "jsonb", strict_equal, fast=False),
}
# `::text` only where PostgreSQL's text form is what the service's str() writes:
# not for a boolean (`true` against `True`), a float (`0.1` against `0.1` only by
# luck of the shortest repr), a timestamp (a space against `T`) or JSON.
TEXT_CASTABLE = frozenset({"uuid", "text", "character varying", "smallint", "integer", "bigint"})


def rule_for(column: str, pg_type: str, text: bool, where: str) -> Rule:
    """The rule of a mapped column of type `pg_type`; ConfigError naming the column if none."""
    if text:
        if pg_type not in TEXT_CASTABLE:
            raise ConfigError(
                f"column {where}.{column} has type {pg_type}, whose text form is not what "
                f"Python's str() writes: map it without ::text (::text is for "
                f"{', '.join(sorted(TEXT_CASTABLE))})"
            )
        return _TEXT_OF_INTEGER if pg_type in {"smallint", "integer", "bigint"} else RULES[pg_type]
    rule = RULES.get(pg_type)
    if rule is None:
        raise ConfigError(
            f"column {where}.{column} has type {pg_type}, which --map does not compare: "
            f"supported are {', '.join(sorted(RULES))} (cast it in a view to one of them)"
        )
    return rule


def label(value: Any) -> str:
    """A payload value as a short string for per-value counts: strings as they are."""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


__all__ = [
    "RULES",
    "TEXT_CASTABLE",
    "KeyMap",
    "Rule",
    "check_maps",
    "label",
    "parse_map",
    "parse_source",
    "rule_for",
    "strict_equal",
]
