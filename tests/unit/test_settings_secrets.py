"""libpq key=value connection strings and Qdrant URLs: read as the drivers read them,
masked wherever they are shown, and rejected early with the form that works."""

from __future__ import annotations

import pytest
from psycopg.conninfo import conninfo_to_dict

from reconcile.config import display
from reconcile.errors import ConfigError
from reconcile.settings import Settings, conninfo, mask_secrets, mask_url

KEY_VALUE = [
    "host=/x user=u password=secret",
    "host=db password=secret user=u dbname=faces",
    "host=db user=u password='secret with spaces' port=5432",
    "host=db PASSWORD = secret",
    "host=db sslpassword=secret sslmode=require",
    r"host=db password=sec\ ret",
]


@pytest.mark.parametrize("dsn", KEY_VALUE)
def test_key_value_passwords_are_masked_everywhere_a_url_is(dsn: str) -> None:
    for shown in (mask_url(dsn), mask_secrets(dsn), display("database_url", dsn)):
        assert "secret" not in shown and "ret" not in shown.split("=")[-1], shown
        assert "***" in shown
    # Inside a message, as the boundary sees it: the rest of the message survives.
    said = mask_secrets(f"PostgreSQL at {mask_url(dsn)} is unreachable: {dsn} failed")
    assert "secret" not in said and "is unreachable" in said


def test_masking_keeps_what_is_not_a_password() -> None:
    assert mask_url("host=/x user=u password=secret") == "host=/x user=u password=***"
    assert mask_url("host=/x user=u") == "host=/x user=u"
    assert mask_secrets("postgresql://u:pw@h/d?password=q&sslmode=require") == (
        "postgresql://u:***@h/d?password=***"
    )


def test_a_key_value_string_is_accepted_as_psycopg_reads_it() -> None:
    dsn = "host=/run/pg port=5433 user=app password='s3 cret' dbname=faces options=-cx=1"
    # Every pair reaches psycopg.connect unchanged, the socket directory included.
    assert conninfo_to_dict(conninfo(dsn)) == conninfo_to_dict(dsn)
    Settings(database_url=dsn, qdrant_path="/q")  # valid as a setting too


@pytest.mark.parametrize("dsn", ["host=/x password secret", "host=/x password='secret"])
def test_a_key_value_string_that_does_not_parse_is_not_echoed(dsn: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings(database_url=dsn, qdrant_path="/q")
    message = str(info.value)
    assert "does not parse" in message and "key=value" in message
    assert "secret" not in message


@pytest.mark.parametrize(
    "url",
    ["not a url", "ftp://x", "http://", "qdrant:6333", "http://h:99999", "http://u:secret@h x"],
)
def test_a_bad_qdrant_url_is_a_configuration_error_with_the_expected_form(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings(database_url="postgresql://u@h/d", qdrant_url=url)
    message = str(info.value)
    assert "\n" not in message and "secret" not in message
    assert "http://host:6333" in message and "--qdrant-url" in message


@pytest.mark.parametrize(
    "url",
    ["http://qdrant:6333", "https://x.example.com", "http://[::1]:6333/prefix", "localhost:6333"],
)
def test_qdrant_urls_qdrant_client_reaches_stay_valid(url: str) -> None:
    assert Settings(database_url="postgresql://u@h/d", qdrant_url=url).qdrant_url == url
