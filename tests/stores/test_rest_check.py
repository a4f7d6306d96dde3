"""`check` against a Qdrant server without importing qdrant-client: the light REST adapter
(`reconcile.stores.rest`) against the full one, both talking to the REST stand-in."""

from __future__ import annotations

import subprocess
import sys

import pytest

from reconcile.errors import ConfigError, StoreError
from reconcile.settings import Settings
from reconcile.stores.qdrant import Qdrant
from reconcile.stores.rest import RestQdrant
from tests.helpers import cli_env
from tests.qdrant_rest import serving
from tests.world import World


def adapters(world: World, url: str, **overrides: object) -> tuple[RestQdrant, Qdrant]:
    settings = world.settings(flag_key="is_assigned", **overrides).__class__(
        database_url=world.url,
        qdrant_url=url,
        flag_key="is_assigned",
        **overrides,  # type: ignore[arg-type]
    )
    full = Qdrant(settings)
    return RestQdrant(settings, fallback=lambda: Qdrant(settings)), full


def test_the_light_adapter_answers_as_the_full_one(world: World) -> None:
    person = world.person()
    for n in range(5):
        world.face(person if n % 2 else None)
    world.upsert(world.new_point_id(), {"person_id": None, "is_assigned": False})  # a null
    assert world.client is not None
    with serving(world.client) as url:
        light, full = adapters(world, url)
        assert light.count() == full.count() == 6
        assert light.estimated_count() == full.estimated_count()
        for key in ("person_id", "is_assigned", "face_instance_id", "nowhere"):
            assert light.has_key(key) == full.has_key(key), key
        assert light.has_key("person_id") and not light.has_key("nowhere")
        light.require_collection()
        # Anything else goes to the full adapter, opened on first use.
        assert [p.point_id for p in light.payload_sample(2)] == [
            p.point_id for p in full.payload_sample(2)
        ]
        light.close()
        full.close()
        missing_light, missing_full = adapters(world, url, collection="nope")
        with pytest.raises(ConfigError) as light_error:
            missing_light.require_collection()
        with pytest.raises(ConfigError) as full_error:
            missing_full.require_collection()
        assert str(light_error.value) == str(full_error.value)
        assert "collections: faces" in str(light_error.value)


def test_api_key_is_sent_and_a_refusal_is_one_line_without_retries(world: World) -> None:
    assert world.client is not None
    with serving(world.client, api_key="s3cret") as url:
        settings = Settings(world.url, qdrant_url=url, qdrant_api_key="s3cret")
        assert RestQdrant(settings, fallback=lambda: Qdrant(settings)).count() == 0
        settings = Settings(world.url, qdrant_url=url, qdrant_api_key="wrong")
        wrong = RestQdrant(settings, fallback=lambda: Qdrant(settings))
        with pytest.raises(StoreError, match=r"failed while counting points: HTTP 403: Invalid"):
            wrong.count()


def test_check_against_a_server_never_imports_qdrant_client(world: World) -> None:
    for _ in range(3):
        world.face()
    assert world.client is not None
    with serving(world.client) as url:
        env = cli_env({"DATABASE_URL": world.url, "QDRANT_URL": url})
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "reconcile", "check"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 2, done.stderr  # the world's faces have no person: a problem
    assert "collection: 3 points" in done.stdout, done.stdout
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert "qdrant_client" not in imported
    assert "reconcile.stores.rest" in imported
