"""Fuzzing the two parsers that read outside input: the journal reader and the DSN handling."""

from __future__ import annotations

from pathlib import Path

import pytest
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


def sqlalchemy_reads(url: str) -> dict[str, str]:
    """What SQLAlchemy's psycopg dialect passes to psycopg.connect for `url`."""
    from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
    from sqlalchemy.engine import make_url

    _, params = PGDialect_psycopg().create_connect_args(make_url(url))
    return {k: str(v) for k, v in params.items()}


def we_read(url: str) -> dict[str, str]:
    from psycopg.conninfo import conninfo_to_dict

    return {k: str(v) for k, v in conninfo_to_dict(conninfo(url)).items()}


TEXT = st.characters(codec="utf-8", exclude_characters="\x00")


@settings(max_examples=400, deadline=None)
@given(
    user=st.text(alphabet=TEXT, max_size=8),
    password=st.none()
    | st.text(alphabet=st.characters(codec="utf-8", exclude_characters="@\x00"), max_size=12),
    host=st.from_regex(r"[a-z0-9][a-z0-9.-]{0,10}", fullmatch=True),
    port=st.none() | st.integers(1, 65535),
    dbname=st.text(alphabet=TEXT, max_size=8),
    sslmode=st.none() | st.sampled_from(["require", "disable"]),
)
@example(user="u", password="100%sure #1 it's \\", host="h", port=5432, dbname="d", sslmode=None)
@example(user="u", password="p/w?x:y", host="h", port=None, dbname="", sslmode="require")
@example(user="", password="", host="h", port=None, dbname="", sslmode=None)
def test_a_url_reaches_libpq_as_sqlalchemy_reads_it(
    user: str, password: str | None, host: str, port: int | None, dbname: str, sslmode: str | None
) -> None:
    """The service's DATABASE_URL is written for SQLAlchemy, whose parser takes a bare
    '%', '#', '/' or space in a password: libpq must get the same parts from us."""
    from urllib.parse import quote

    secret = "" if password is None else f":{password}"
    url = (
        f"postgresql://{quote(user, safe='')}{secret}@{host}{'' if port is None else f':{port}'}"
        f"/{quote(dbname, safe='')}{'' if sslmode is None else f'?sslmode={sslmode}'}"
    )
    assert we_read(url) == sqlalchemy_reads(url)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:p@/db?host=h1:5432&host=h2:5433",  # several servers
        "postgresql://u:p@/db?host=h1:5433",
        "postgresql://u:p@/db?host=h1,h2&port=1,2",
        "postgresql://u@/db?host=h1&host=h2",
        "postgresql://u:p@h/db?host=/run/pg",  # a socket directory
        "postgresql://u@h/db?sslmode=require&application_name=a%20b",
        "postgresql://u:@h/",  # empty parts are left out: libpq reads PGPASSWORD, PGDATABASE
        "postgresql://[::1]:5433/db",
    ],
)
def test_query_hosts_and_empty_parts_as_sqlalchemy_reads_them(url: str) -> None:
    assert we_read(url) == sqlalchemy_reads(url)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app:Zq@secret9/tail@127.0.0.1/test",  # the password's tail as a host
        "postgresql://app:Zq@secret9@127.0.0.1/test",
        "postgresql://app:Zq@secret9:1/x@h/db",  # its tail as a host, port and database
        "postgresql://u@h/db?sslmode=require&sslmode=disable",
    ],
)
def test_a_url_that_would_split_elsewhere_is_refused_without_its_password(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        conninfo(url)
    message = str(info.value)
    assert "secret" not in message and "Zq" not in message, message


def test_a_key_value_string_may_hold_a_url_in_a_value() -> None:
    dsn = "host=db password=s3cret application_name=http://x"
    assert conninfo(dsn) == dsn
    assert mask_url(dsn) == "host=db password=*** application_name=http://x"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://u@h/db?password=se#cret", "postgresql://u@h/db?password=***"),
        ("postgresql://[::1/db?password=s3cret&x=1", "postgresql://[::1/db?password=***&x=1"),
        (
            "postgresql://u@h/db?sslmode=require&SSLPASSWORD=k",
            "postgresql://u@h/db?sslmode=require&SSLPASSWORD=***",
        ),
    ],
)
def test_a_query_password_is_masked_whole_where_urllib_would_split_it(
    url: str, masked: str
) -> None:
    assert mask_url(url) == masked
