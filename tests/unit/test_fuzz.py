"""Fuzzing the two parsers that read outside input: the journal reader and the DSN handling."""

from __future__ import annotations

from pathlib import Path

from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from reconcile.errors import ConfigError
from reconcile.journal import JournalReader
from reconcile.settings import mask_url, sqlalchemy_url

HEADER = '{"type":"header","format":"reconcile-journal","version":1}\n'
SENTINEL = "\x00"  # never generated as part of a quoted password: quote() escapes it


def _everything_said(url: str) -> str:
    """The masked URL and the error message (if any) the tool writes for `url`."""
    try:
        sqlalchemy_url(url)
        said = ""
    except ConfigError as exc:
        said = str(exc)
    return mask_url(url) + said


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=400), with_header=st.booleans())
def test_journal_reader_never_crashes(
    tmp_path_factory: object, body: bytes, with_header: bool
) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "j.jsonl"
        path.write_bytes((HEADER.encode() if with_header else b"") + body)
        try:
            reader = JournalReader(path)
            for record in reader.changes():
                assert record["type"] == "change"
        except ConfigError as exc:
            assert str(exc)  # a clear message, never another exception


@settings(max_examples=500, deadline=None)
@given(
    user=st.text(max_size=12),
    password=st.text(min_size=1, max_size=12).filter(lambda p: len(p.strip(":@/")) > 2),
    host=st.text(max_size=12),
    scheme=st.sampled_from(
        ["postgresql", "postgres", "postgresql+asyncpg", "mysql", "", "postgresq"]
    ),
)
@example(user="", password="Pos", host="", scheme="mysql")  # "Pos" is in "PostgreSQL"
def test_dsn_parsing_never_crashes_and_never_leaks(
    user: str, password: str, host: str, scheme: str
) -> None:
    from urllib.parse import quote

    # A password that the message holds anyway (a word of its own text, the user, the
    # host) cannot show a leak: the same URL with another password must not hold it.
    other = f"{scheme}://{quote(user, safe='')}:{SENTINEL}@{host}/db"
    assume(quote(password, safe="") not in _everything_said(other))
    url = f"{scheme}://{quote(user, safe='')}:{quote(password, safe='')}@{host}/db"
    masked = mask_url(url)
    assert quote(password, safe="") not in masked.split("@")[0].split("//", 1)[-1].split(":", 1)[-1]
    try:
        rewritten = sqlalchemy_url(url)
        assert rewritten.startswith("postgresql+psycopg://")
    except ConfigError as exc:
        assert quote(password, safe="") not in str(exc)
