"""A stand-in for a Qdrant server's REST API, for the requests `check` makes: no Qdrant
server binary exists for these machines.

Not a mock of answers: each request body is parsed by qdrant-client's own REST request
model (a body Qdrant would refuse fails here too), executed by qdrant-client's local
mode (Qdrant's semantics, in Python), and answered in the REST schema qdrant-client's
own models give. So both the light adapter (`reconcile.stores.rest`) and the full one
(qdrant-client talking REST) can be pointed at it and must agree.
"""

from __future__ import annotations

import http.server
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from qdrant_client import QdrantClient, models

VERSION = "1.17.0"


class Handler(http.server.BaseHTTPRequestHandler):
    client: ClassVar[QdrantClient]
    api_key: ClassVar[str | None] = None
    requests: ClassVar[list[str]] = []

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _answer(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _ok(self, result: Any) -> None:
        self._answer(200, {"result": result, "status": "ok", "time": 0.0})

    def _route(self, method: str) -> None:
        self.requests.append(f"{method} {self.path}")
        if self.api_key is not None and self.headers.get("api-key") != self.api_key:
            self._answer(403, {"status": {"error": "Invalid api-key"}})
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else {}
        c = self.client
        if method == "GET" and self.path == "/":
            self._answer(200, {"title": "qdrant - vector search engine", "version": VERSION})
            return
        if method == "GET" and self.path == "/collections":
            names = [d.name for d in c.get_collections().collections]
            self._ok({"collections": [{"name": n} for n in names]})
            return
        found = re.fullmatch(r"/collections/([^/?]+)(/[^?]*)?(\?.*)?", self.path)
        if found is None:
            self._answer(404, {"status": {"error": f"no route {self.path}"}})
            return
        name, rest = found[1], found[2] or ""
        if method == "GET" and rest == "/exists":
            self._ok({"exists": c.collection_exists(name)})
            return
        if not c.collection_exists(name):
            self._answer(
                404, {"status": {"error": f"Not found: Collection `{name}` doesn't exist!"}}
            )
            return
        if method == "POST" and rest == "/points/count":
            count = models.CountRequest(**body)
            result = c.count(name, count_filter=count.filter, exact=bool(count.exact))
            self._ok(result.model_dump())
        elif method == "POST" and rest == "/points/scroll":
            scroll = models.ScrollRequest(**body)
            points, following = c.scroll(
                name,
                scroll_filter=scroll.filter,
                limit=scroll.limit or 10,
                offset=scroll.offset,
                with_payload=scroll.with_payload if scroll.with_payload is not None else True,
                with_vectors=scroll.with_vector or False,
            )
            result = models.ScrollResult(points=points, next_page_offset=following)
            self._ok(json.loads(result.model_dump_json()))
        else:
            self._answer(404, {"status": {"error": f"no route {method} {self.path}"}})

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")


@contextmanager
def serving(client: QdrantClient, api_key: str | None = None) -> Iterator[str]:
    """The stand-in on a free port, answering from `client` (local mode); its URL."""

    class Bound(Handler):
        pass

    Bound.client, Bound.api_key, Bound.requests = client, api_key, []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Bound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
