"""Fuzzing the two parsers that read outside input: the journal reader and the DSN handling."""

from __future__ import annotations

from pathlib import Path

from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from reconcile.errors import ConfigError
from reconcile.journal import JournalReader
from reconcile.settings import conninfo, mask_url

HEADER = '{"type":"header","format":"reconcile-journal","version":1}\n'
SENTINEL = "\x00"  # never generated as part of a quoted password: quote() escapes it


def _everything_said(url: str) -> str:
    """The masked URL and the error message (if any) the tool writes for `url`."""
    try:
        conninfo(url)
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
        from psycopg.conninfo import conninfo_to_dict

        assert conninfo_to_dict(conninfo(url))["password"] == password  # intact
    except ConfigError as exc:
        assert quote(password, safe="") not in str(exc)


@settings(max_examples=400, deadline=None)
@given(
    user=st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=8),
    password=st.none()
    | st.text(alphabet=st.characters(codec="utf-8", exclude_characters="@\x00"), max_size=12),
    host=st.from_regex(r"[a-z0-9][a-z0-9.-]{0,10}", fullmatch=True),
    port=st.none() | st.integers(1, 65535),
    dbname=st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=8),
    sslmode=st.none() | st.sampled_from(["require", "disable"]),
)
@example(user="u", password="100%sure #1 it's \\", host="h", port=5432, dbname="d", sslmode=None)
@example(user="u", password="p/w?x:y", host="h", port=None, dbname="", sslmode="require")
def test_a_url_reaches_libpq_as_sqlalchemy_reads_it(
    user: str, password: str | None, host: str, port: int | None, dbname: str, sslmode: str | None
) -> None:
    """The service's DATABASE_URL is written for SQLAlchemy, whose parser takes a bare
    '%', '#', '/' or space in a password: libpq must get the same parts from us."""
    from urllib.parse import quote

    from psycopg.conninfo import conninfo_to_dict
    from sqlalchemy.engine import make_url

    secret = "" if password is None else f":{password}"
    url = (
        f"postgresql://{quote(user, safe='')}{secret}@{host}{'' if port is None else f':{port}'}"
        f"/{quote(dbname, safe='')}{'' if sslmode is None else f'?sslmode={sslmode}'}"
    )
    theirs = make_url(url)
    expected = {
        "user": theirs.username,
        "password": theirs.password,
        "host": theirs.host,
        "port": None if theirs.port is None else str(theirs.port),
        "dbname": theirs.database,
        **theirs.query,
    }
    assert conninfo_to_dict(conninfo(url)) == {k: v for k, v in expected.items() if v is not None}
