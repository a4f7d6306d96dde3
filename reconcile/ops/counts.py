"""Quick counts: faces per person in PostgreSQL against points per person in Qdrant.

One GROUP BY and one facet request: it finds persons whose counts differ, but
equal counts do not prove equal assignments (two faces swapped between persons
leave both counts equal).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from reconcile.errors import ExitCode
from reconcile.report import SCHEMA_VERSION
from reconcile.settings import Settings
from reconcile.stores import Stores, using

CAVEAT = "equal counts do not prove equal assignments: run a full audit for that"


@dataclass(frozen=True)
class CountsReport:
    table: str
    collection: str
    postgres_faces: int  # rows with a person
    qdrant_points: int  # points whose payload names a person
    persons: int  # persons seen on either side
    differing: list[tuple[str, int, int]]  # person, faces in PostgreSQL, points in Qdrant
    duration_seconds: float

    @property
    def exit_code(self) -> ExitCode:
        differ = self.differing or self.postgres_faces != self.qdrant_points
        return ExitCode.DRIFT if differ else ExitCode.OK

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "mode": "counts",
            "table": self.table,
            "collection": self.collection,
            "totals": {"postgres": self.postgres_faces, "qdrant": self.qdrant_points},
            "persons": self.persons,
            "differing": [
                {"person_id": p, "postgres": pg, "qdrant": qd} for p, pg, qd in self.differing
            ],
            "note": CAVEAT,
            "duration_seconds": round(self.duration_seconds, 3),
        }


def compare_counts(settings: Settings, *, stores: Stores | None = None) -> CountsReport:
    started = time.monotonic()
    with using(settings, stores) as s:
        table = s.postgres.inspect()
        s.qdrant.require_collection()
        postgres = s.postgres.person_counts()
        qdrant = s.qdrant.facet_counts(settings.person_key, at_least=len(postgres))
    persons = postgres.keys() | qdrant.keys()
    differing = sorted(
        ((p, postgres.get(p, 0), qdrant.get(p, 0)) for p in persons),
        key=lambda item: (-abs(item[1] - item[2]), item[0]),
    )
    return CountsReport(
        table=table.name,
        collection=settings.collection,
        postgres_faces=sum(postgres.values()),
        qdrant_points=sum(qdrant.values()),
        persons=len(persons),
        differing=[item for item in differing if item[1] != item[2]],
        duration_seconds=time.monotonic() - started,
    )


__all__ = ["CAVEAT", "CountsReport", "compare_counts"]
