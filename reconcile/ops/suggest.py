"""Suggest the `map` table: which payload keys mirror which columns, by the audit's own rules.

`reconcile check --suggest-map` reads the first N points (by id) with their whole
payload and the rows naming them with every column. A payload key matches a
column when, on every sampled point named by exactly one row where either side
holds a value, `reconcile.mapping`'s rule for that column agrees with the
payload, as the audit will compare them; so a suggested map audits those points
clean, apart from the drift it is there to find. The result is a TOML line to
paste into the config file, and one comment line per key it could not match.

Longer than most modules (about 450 lines) on purpose: the report, the choice of
a column and the reasons given for a key left out are one set of rules (the
threshold, the preferred names, what counts as evidence); apart, each part would
have to restate the others'.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from reconcile.errors import ConfigError, ExitCode
from reconcile.mapping import TEXT_CASTABLE, KeyMap, Rule, label, parse_source, rule_for
from reconcile.report import SCHEMA_VERSION
from reconcile.settings import Settings
from reconcile.stores import Stores, using
from reconcile.stores.base import PointId, point_id

DEFAULT_SAMPLE = 1000
MAX_SAMPLE = 10_000
# A key is still suggested for a column it agrees with on at least this share of the
# points compared, and the rest is reported as likely drift. The service's known bugs
# drift a few percent of the faces (the demo world injects about 5%): a real mirror
# sits well above 90%. Below it, unrelated columns of few values (a boolean, a status)
# agree by chance about as often as a mirror drifts that much, so the tool names the
# closest column instead and leaves the choice to the user.
THRESHOLD = 0.9
# A column agreeing on fewer points than this share is not worth naming as the closest.
CLOSEST = 0.5
RESERVED = "reconcile_"  # payload keys this tool may one day write for itself
# Types whose value a view's jsonb_build_object writes as the payload holds it
# (no timestamps: jsonb writes them in PostgreSQL's own ISO form, compared as text).
_JSON_SAFE = TEXT_CASTABLE | {"boolean", "double precision", "json", "jsonb"}


@dataclass(frozen=True)
class Match:
    """`key` agrees with `source` (`column` or `column::text`) on `matched` of `of` points."""

    key: str
    source: str
    matched: int
    of: int


@dataclass(frozen=True)
class Note:
    """A payload key left out of the map, and why."""

    key: str
    reason: str


@dataclass(frozen=True)
class SuggestReport:
    """The suggested map; `toml()` is the text to paste, `to_json()` the documented JSON."""

    table: str
    collection: str
    sampled: int  # points read
    compared: int  # of them, points named by exactly one row: the evidence
    map: dict[str, str]  # payload key -> "column" or "column::text", sorted by key
    partial: list[Match]  # suggested, but not agreeing on every point compared
    also: list[Match]  # other columns that agree as well as the one suggested
    unmatched: list[Note]
    skipped: list[Note]  # the person and flag keys, reserved keys

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK  # a suggestion ran, whatever it could not match

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "table": self.table,
            "collection": self.collection,
            "sampled": self.sampled,
            "compared": self.compared,
            "map": dict(self.map),
            "partial": [asdict(m) for m in self.partial],
            "also": [asdict(m) for m in self.also],
            "unmatched": [asdict(n) for n in self.unmatched],
            "skipped": [asdict(n) for n in self.skipped],
        }

    def toml(self) -> str:
        """The `map` line, ready to paste into the config file, then one comment per note."""
        pairs = ", ".join(f'{key} = "{source}"' for key, source in self.map.items())
        lines = [f"map = {{ {pairs} }}" if pairs else "map = {}"]
        for m in self.partial:
            lines.append(
                f"{m.key}: {m.source} matches {m.matched} of {m.of} points "
                "(drift, or another column?)"
            )
        for m in self.also:
            lines.append(
                f"{m.key}: {m.source} matches too ({m.matched} of {m.of} points); "
                f"{self.map[m.key]} is suggested"
            )
        lines += [f"{_shown(n.key)}: {n.reason}" for n in (*self.unmatched, *self.skipped)]
        lines.append(
            f"from the first {self.sampled} points of {self.collection} by id, {self.compared} "
            f"of them named by exactly one row of {self.table}"
        )
        return "\n".join([lines[0], *(_comment(line) for line in lines[1:])]) + "\n"


def suggest_map(
    settings: Settings, sample: int = DEFAULT_SAMPLE, stores: Stores | None = None
) -> SuggestReport:
    """Which payload keys of the first `sample` points mirror which columns of the table.

    The settings' own `map` is ignored (with stores of our own): a stale map in the
    config file must not stop the suggestion of its replacement. ConfigError when
    there is nothing to compare: an empty collection, or no sampled point that
    exactly one row names.
    """
    if not 1 <= sample <= MAX_SAMPLE:
        raise ConfigError(f"--suggest-sample {sample} is out of range: use 1 to {MAX_SAMPLE}")
    settings = replace(settings, map=())
    with using(settings, stores) as s:
        table = s.postgres.inspect().name
        s.qdrant.require_collection()
        points = s.qdrant.payload_sample(sample)
        if not points:
            raise ConfigError(
                f"collection {settings.collection!r} has no points: nothing to sample for "
                "--suggest-map; check --collection (QDRANT_FACE_COLLECTION), or run it once "
                "the service has written points"
            )
        types, rows = s.postgres.whole_rows([p.point_id for p in points])
    by_point: dict[PointId, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_point.setdefault(point_id(row[settings.point_column]), []).append(row)
    pairs = [
        (p.payload, by_point[p.point_id][0])
        for p in points
        if len(by_point.get(p.point_id, ())) == 1
    ]
    if not pairs:
        raise ConfigError(
            f"none of the {len(points)} points sampled from {settings.collection!r} is named "
            f"by exactly one row of {table} (by {settings.point_column}): nothing to compare; "
            "check --table, --point-column and that both stores are the same deployment's"
        )
    judge = _Judge(settings, table, types, pairs)
    keys = dict.fromkeys(key for p in points for key in p.payload)
    held = {key for payload, _row in pairs for key, value in payload.items() if value is not None}
    found: dict[str, str] = {}
    partial: list[Match] = []
    also: list[Match] = []
    unmatched: list[Note] = []
    skipped: list[Note] = []
    for key in sorted(keys):
        reason = _skipped(key, settings)
        if reason is not None:
            skipped.append(Note(key, reason))
            continue
        if not _plain(key) or key not in held:
            unmatched.append(Note(key, _unjudged(key, points)))
            continue
        best, others = judge.best(key, judge.raws(key), (key,))
        if best is None:
            unmatched.append(Note(key, judge.why_not(key)))
            continue
        found[key] = best.source
        if best.matched < best.of:
            partial.append(best)
        also += others
    collection = settings.collection
    return SuggestReport(
        table, collection, len(points), len(pairs), found, partial, also, unmatched, skipped
    )


# --- judging one key ------------------------------------------------------------------


@dataclass(frozen=True)
class _Candidate:
    column: str
    text: bool
    rule: Rule
    preferred: int  # position in the preferred names (the key's own first), else their count
    position: int  # the column's place in the table

    @property
    def source(self) -> str:
        return KeyMap("k", self.column, self.text).source


@dataclass(frozen=True)
class _Score:
    candidate: _Candidate
    matched: int
    of: int
    values: tuple[str, ...]  # up to two distinct non-null values it agreed on

    @property
    def ratio(self) -> float:
        return self.matched / self.of if self.of else 0.0

    def match(self, key: str) -> Match:
        return Match(key, self.candidate.source, self.matched, self.of)


class _Judge:
    """The sampled pairs (payload, row) and the columns, scored key by key."""

    def __init__(
        self,
        settings: Settings,
        table: str,
        types: dict[str, str],
        pairs: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]],
    ) -> None:
        self.settings = settings
        self.table = table
        self.types = types
        self.pairs = pairs
        self._expected: dict[tuple[str, bool], list[Any]] = {}

    def raws(self, key: str) -> list[Any]:
        return [payload.get(key) for payload, _row in self.pairs]

    def candidates(
        self, preferred: Sequence[str], types: Iterable[str] | None = None
    ) -> list[_Candidate]:
        """Every column a key could map to, the preferred names first, no cast before ::text."""
        found: list[_Candidate] = []
        for position, (column, pg_type) in enumerate(self.types.items()):
            if types is not None and pg_type not in types:
                continue
            try:
                parse_source("k", column)  # a name --map can write (a plain identifier)
                plain = rule_for(column, pg_type, False, self.table)
            except ConfigError:
                continue  # a type --map does not compare
            rank = preferred.index(column) if column in preferred else len(preferred)
            found.append(_Candidate(column, False, plain, rank, position))
            if pg_type in TEXT_CASTABLE:
                cast = rule_for(column, pg_type, True, self.table)
                if cast is not plain:  # uuid and text: the same rule, nothing to prefer
                    found.append(_Candidate(column, True, cast, rank, position))
        return found

    def expected(self, c: _Candidate) -> list[Any]:
        """The canonical payload value of the column, per pair (cached: keys share columns)."""
        cached = self._expected.get((c.column, c.text))
        if cached is None:
            cached = [
                None if row[c.column] is None else c.rule.canonical(row[c.column])
                for _payload, row in self.pairs
            ]
            self._expected[(c.column, c.text)] = cached
        return cached

    def score(self, c: _Candidate, raws: Sequence[Any]) -> _Score | None:
        """How often the column agrees; None once it cannot agree on half of the points."""
        matched = of = 0
        values: list[str] = []
        remaining = len(raws)
        for raw, expected in zip(raws, self.expected(c), strict=True):
            remaining -= 1
            if raw is None and expected is None:
                continue  # both sides empty: proves nothing
            of += 1
            if c.rule.agrees(raw, expected):
                matched += 1
                if expected is not None and len(values) < 2 and label(expected) not in values:
                    values.append(label(expected))
            elif matched + remaining < of - matched:
                return None
        return _Score(c, matched, of, tuple(values)) if of else None

    def scores(
        self, raws: Sequence[Any], preferred: Sequence[str], types: Iterable[str] | None = None
    ) -> list[_Score]:
        found = [self.score(c, raws) for c in self.candidates(preferred, types)]
        return [s for s in found if s is not None]

    def best(
        self,
        key: str,
        raws: Sequence[Any],
        preferred: Sequence[str],
        types: Iterable[str] | None = None,
    ) -> tuple[Match | None, list[Match]]:
        """The column to suggest and the others that qualify as well.

        A column qualifies at THRESHOLD; one not named like the key must also agree
        on two distinct values, or a constant (a flag false everywhere, a size of 10)
        would match any column holding the same constant. Ranked: a preferred name
        (the key's own) first, then the higher share, no cast before ::text, table order.
        """
        good = [
            s
            for s in self.scores(raws, preferred, types)
            if s.ratio >= THRESHOLD
            and (s.candidate.preferred < len(preferred) or len(s.values) > 1)
        ]
        if not good:
            return None, []
        good.sort(
            key=lambda s: (s.candidate.preferred, -s.ratio, s.candidate.text, s.candidate.position)
        )
        # One line per other column: its best-ranked spelling (no cast before ::text).
        columns = {good[0].candidate.column}
        others: list[Match] = []
        for s in good[1:]:
            if s.candidate.column not in columns:
                columns.add(s.candidate.column)
                others.append(s.match(key))
        return good[0].match(key), others

    def why_not(self, key: str) -> str:
        """The reason a key with values matched no column, as specific as the sample allows."""
        raws = self.raws(key)
        shape = self.shape(key, raws)
        if shape is not None:
            return shape
        scores = self.scores(raws, (key,))
        lone = [s for s in scores if s.ratio >= THRESHOLD]
        if lone:
            s = max(lone, key=lambda s: s.ratio)
            shown = s.values[0][:40] if s.values else "null"
            return (
                f"{s.candidate.source} agrees on {s.matched} of {s.of} points, all holding one "
                f"value ({shown}): a coincidence? map it by hand if it mirrors that column"
            )
        close = [s for s in scores if s.ratio >= CLOSEST]
        if close:
            s = max(close, key=lambda s: (s.ratio, -s.candidate.position))
            return (
                f"no column matches; the closest, {s.candidate.source}, agrees on {s.matched} "
                f"of {s.of} points (under {THRESHOLD:.0%}: map it by hand if it mirrors that "
                "column and the rest is drift)"
            )
        return f"no column of {self.table} holds it (another table? a view can bring it)"

    def shape(self, key: str, raws: Sequence[Any]) -> str | None:
        """Why no column can match, from what the values are: objects, lists, the flag,
        a same-named column of a type --map does not compare. None: none of those."""
        held = [r for r in raws if r is not None]
        if all(isinstance(r, dict) for r in held):
            built = self.object_builder(key, raws)
            how = f": {built}" if built else " with jsonb_build_object from the columns it holds"
            return f"no column matches (an object; a view can build it{how})"
        if all(isinstance(r, list) for r in held):
            return "no column matches (a list; a view can build it with jsonb_build_array)"
        if self.is_flag(raws):
            return (
                "true exactly when the face has a person: it is the flag, set "
                f'flag_key = "{key}" (--flag-key {key})'
            )
        pg_type = self.types.get(key)
        if pg_type is not None:
            try:
                rule_for(key, pg_type, False, self.table)
            except ConfigError:
                return (
                    f"column {key} has type {pg_type}, which --map does not compare "
                    "(a view can cast it to one it does)"
                )
        return None

    def object_builder(self, key: str, raws: Sequence[Any]) -> str | None:
        """`jsonb_build_object('x', bbox_x, …)` when each field of the objects mirrors a
        column (`KEY_FIELD` preferred, then `FIELD`), else None."""
        fields = dict.fromkeys(f for r in raws if isinstance(r, dict) for f in r)
        if not fields:
            return None
        parts: list[str] = []
        for field in fields:
            inner = [r.get(field) if isinstance(r, dict) else None for r in raws]
            best, _others = self.best(field, inner, (f"{key}_{field}", field), _JSON_SAFE)
            if best is None:
                return None
            quoted = str(field).replace("'", "''")
            parts.append(f"'{quoted}', {best.source}")
        return f"jsonb_build_object({', '.join(parts)})"

    def is_flag(self, raws: Sequence[Any]) -> bool:
        """Whether the key is a boolean, true exactly when the row names a person (as
        a mapped key: on THRESHOLD of the points, the rest taken as drift)."""
        if any(raw is not None and type(raw) is not bool for raw in raws):
            return False
        person = self.settings.person_column
        agree = sum(
            raw is (row.get(person) is not None)
            for raw, (_payload, row) in zip(raws, self.pairs, strict=True)
        )
        return agree >= THRESHOLD * len(raws)


def _skipped(key: str, settings: Settings) -> str | None:
    if key == settings.person_key:
        return "the person key (--person-key), compared with --person-column: not mapped"
    if key == settings.flag_key:
        return "the flag key (--flag-key), derived from the person: not mapped"
    if key.startswith(RESERVED):
        return f"keys starting with {RESERVED} are reserved for this tool"
    return None


def _unjudged(key: str, points: Sequence[Any]) -> str:
    """Why a key was not compared at all."""
    if not _plain(key):
        return "not a plain payload key (letters, digits, '_', '-'): --map cannot name it"
    if any(p.payload.get(key) is not None for p in points):
        return (
            "held only by points that no single row names (orphan or shared points): "
            "nothing to compare; sample more points (--suggest-sample)"
        )
    return "null on every point sampled: nothing to match it by"


def _plain(key: str) -> bool:
    """Whether --map can name the key (the config file's `map` parses it)."""
    try:
        parse_source(key, "x")
    except ConfigError:
        return False
    return True


def _shown(key: str) -> str:
    """A key as a comment shows it: plain keys as they are, any other quoted."""
    return key if _plain(key) else json.dumps(key)


# Control characters are the one thing a TOML comment cannot hold.
_CONTROLS = {i: f"\\x{i:02x}" for i in (*range(32), 127) if i != 9}


def _comment(text: str) -> str:
    return "# " + text.translate(_CONTROLS)


__all__ = [
    "DEFAULT_SAMPLE",
    "MAX_SAMPLE",
    "THRESHOLD",
    "Match",
    "Note",
    "SuggestReport",
    "suggest_map",
]
