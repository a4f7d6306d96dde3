"""What a Qdrant server's answers cost this process per point: qdrant-client's own parsing
of a scroll page, over REST and over gRPC (issue 15's server shape).

    .venv/bin/python bench/parsing.py [--points 1000] [--repeat 30]

One page of `--points` points with the service's whole payload (uuid ids), encoded
as the server sends it (REST: the JSON body; gRPC: the protobuf ScrollResponse),
then decoded as qdrant-client does (`api_client.parse_response` into the scroll's
response model; `ScrollResponse.FromString` and `GrpcToRest.convert_retrieved_point`),
and turned into this tool's points (`Point(point_id(record.id), payload)`). Best of
`--repeat`, in microseconds per point, and seconds per million points.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from qdrant_client import grpc  # noqa: E402
from qdrant_client.conversions.conversion import GrpcToRest, RestToGrpc  # noqa: E402
from qdrant_client.http import models  # noqa: E402
from qdrant_client.http.api_client import parse_response  # noqa: E402

from reconcile.stores.base import Point, point_id  # noqa: E402


def payload(n: int) -> dict[str, Any]:
    """The service's whole payload (service-schema.md), different per point."""
    return {
        "asset_id": str(4700 + n // 2),
        "face_instance_id": str(uuid.UUID(int=n * 7919 + 1)),
        "detection_confidence": round(0.6 + (n % 37) / 100, 4),
        "quality_score": round(0.31 + (n % 50) / 100, 3),
        "is_prototype": False,
        "is_assigned": n % 3 != 0,
        "bbox": {"x": 7 * n % 4000, "y": 3 * n % 3000, "w": 40 + n % 90, "h": 40 + n % 90},
        "taken_at": "2024-06-01T10:22:00",
        "person_id": str(uuid.UUID(int=n % 97 + 1)),
        "cluster_id": f"c{n % 50}",
    }


def best(repeat: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        work()
        times.append(time.perf_counter() - began)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    n = args.points
    ids = sorted(str(uuid.UUID(int=(k * 0x9E3779B97F4A7C15) % 2**128)) for k in range(n + 1))
    records = [models.Record(id=ids[k], payload=payload(k)) for k in range(n)]
    body = json.dumps(
        {
            "result": {"points": [r.model_dump() for r in records], "next_page_offset": ids[n]},
            "status": "ok",
            "time": 0.001,
        }
    ).encode()
    response = grpc.ScrollResponse(
        result=[
            grpc.RetrievedPoint(
                id=RestToGrpc.convert_extended_point_id(r.id),
                payload=RestToGrpc.convert_payload(r.payload or {}),
            )
            for r in records
        ],
        next_page_offset=RestToGrpc.convert_extended_point_id(ids[n]),
    )
    wire = response.SerializeToString()
    scroll_type = models.InlineResponse20019

    def ours(found: list[models.Record]) -> list[Point]:
        return [Point(point_id(r.id), r.payload or {}) for r in found]

    def rest() -> object:
        result = parse_response(body, scroll_type).result
        assert result is not None
        return ours(result.points)

    def grpc_() -> object:
        parsed = grpc.ScrollResponse.FromString(wire)
        return ours([GrpcToRest.convert_retrieved_point(p) for p in parsed.result])

    rows = {
        "json.loads of the REST body alone (the floor)": best(
            args.repeat, lambda: json.loads(body)
        ),
        "REST: qdrant-client's parse_response, then Point": best(args.repeat, rest),
        "gRPC: FromString only": best(args.repeat, lambda: grpc.ScrollResponse.FromString(wire)),
        "gRPC: FromString, convert_retrieved_point, then Point": best(args.repeat, grpc_),
    }
    print(
        f"one page of {n:,} points, the service's whole payload: REST body "
        f"{len(body):,} bytes, gRPC {len(wire):,} bytes"
    )
    print("| decoding | µs per point | s per million points |")
    print("|---|---:|---:|")
    for name, seconds in rows.items():
        per = seconds / n
        print(f"| {name} | {per * 1e6:.2f} | {per * 1e6:.2f} |")


if __name__ == "__main__":
    main()
