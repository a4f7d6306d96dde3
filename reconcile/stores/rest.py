"""A Qdrant server's collection for `check`: its few requests over REST, standard library only.

Importing qdrant-client costs about 0.45 s (its package imports the async client and
every pydantic model), more than everything else `check` does against a reachable
server. `check` asks four things (does the collection exist, how many points, does a
point hold each key), so it asks them here with urllib and json; any other call goes
to the full adapter, opened on first use (`fallback`), so this is a PointStore too.
The messages and retries are the full adapter's (`base.qdrant_failure`, `base.retried`).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from reconcile.errors import ConfigError, StoreError
from reconcile.settings import Settings, mask_url
from reconcile.stores.base import PointStore, qdrant_failure, retried


class Status(Exception):
    """The server answered with an error status: 5xx and 429 are worth a retry."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"HTTP {code}: {message}")
        self.code = code


class RestQdrant:
    """`require_collection`, `count`, `estimated_count` and `has_key` over REST;
    everything else through `fallback()` (the full adapter), opened when first needed."""

    def __init__(
        self,
        settings: Settings,
        fallback: Callable[[], PointStore],
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        assert settings.qdrant_url is not None
        self.settings = settings
        self._fallback = fallback
        self._full: PointStore | None = None
        self._sleep = sleep
        # qdrant-client reads `localhost:6333` as http, and a URL without a port as
        # the default port 6333.
        url = settings.qdrant_url
        parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
        if parts.port is None and parts.hostname:
            parts = parts._replace(netloc=f"{parts.netloc}:6333")
        self._base = urllib.parse.urlunsplit(parts).rstrip("/")
        self._where = mask_url(settings.qdrant_url)
        self._collection = "/collections/" + urllib.parse.quote(settings.collection, safe="")

    def _request(self, doing: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One request's `result`, retried like the full adapter's reads."""
        headers = {"Content-Type": "application/json"}
        if self.settings.qdrant_api_key:
            headers["api-key"] = self.settings.qdrant_api_key
        data = None if body is None else json.dumps(body).encode()
        # The scheme is http or https: Settings refuses any other (check_qdrant_url).
        request = urllib.request.Request(self._base + path, data=data, headers=headers)  # noqa: S310

        def call() -> Any:
            try:
                opened = urllib.request.urlopen(request, timeout=self.settings.timeout)  # noqa: S310
                with opened as answer:
                    return json.load(answer)["result"]
            except urllib.error.HTTPError as exc:
                raise Status(exc.code, _reason(exc)) from None

        return retried(
            call,
            retries=self.settings.retries,
            failures=(Status, OSError, ValueError, KeyError),
            transient=lambda exc: not isinstance(exc, Status) or exc.code >= 500 or exc.code == 429,
            error=lambda exc: StoreError(qdrant_failure(self._where, doing, exc)),
            sleep=self._sleep,
        )

    def require_collection(self) -> None:
        if self._request("listing collections", self._collection + "/exists")["exists"]:
            return
        collections = self._request("listing collections", "/collections")["collections"]
        names = sorted(c["name"] for c in collections)
        raise ConfigError(
            f"collection {self.settings.collection!r} not found at {self._where} "
            f"(collections: {', '.join(names) or 'none'}): "
            "set --collection (QDRANT_FACE_COLLECTION)"
        )

    def count(self, exact: bool = True) -> int:
        path = self._collection + "/points/count"
        return int(self._request("counting points", path, {"exact": exact})["count"])

    def estimated_count(self) -> int:
        return self.count(exact=False)

    def has_key(self, key: str) -> bool:
        """Whether at least one point holds a non-empty value under `key`."""
        body = {
            "filter": {"must_not": [{"is_empty": {"key": key}}]},
            "limit": 1,
            "with_payload": False,
            "with_vector": False,
        }
        path = self._collection + "/points/scroll"
        found = self._request(f"looking for payload key {key!r}", path, body)
        return bool(found["points"])

    def close(self) -> None:
        if self._full is not None:
            self._full.close()

    def __getattr__(self, name: str) -> Any:
        # Only names not defined above get here: the rest of PointStore, in full.
        if name.startswith("_"):
            raise AttributeError(name)
        if self._full is None:
            self._full = self._fallback()
        return getattr(self._full, name)


def _reason(exc: urllib.error.HTTPError) -> str:
    """The server's own words for an error status, else the status's name."""
    try:
        return str(json.loads(exc.read())["status"]["error"])
    except (ValueError, KeyError, TypeError, OSError):
        return str(exc.reason)


__all__ = ["RestQdrant", "Status"]
