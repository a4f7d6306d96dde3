"""The sync helper a service calls right after committing an assignment.

It brings the given faces' payloads in line with PostgreSQL through the repair
protocol (lock, recheck, write the value just read), but waits for a row another
transaction holds (up to `lock_timeout`) instead of skipping it, applies no
share-of-collection guard, and keeps no journal.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable

from reconcile.apply import Hooks
from reconcile.ops.repair import RepairReport, repair
from reconcile.plan import RepairOptions
from reconcile.settings import Settings
from reconcile.stores import Stores
from reconcile.stores.postgres import LockMode
from reconcile.targets import Targets


def sync_faces(
    target: Settings | Stores, face_ids: Iterable[str], *, lock_timeout: float = 5.0
) -> RepairReport:
    """Make these faces' payloads agree with PostgreSQL; returns what was done.

    `target` is either settings (connections are opened and closed here) or the
    service's own `Stores` (reused, not closed). Unknown face ids are reported in
    `report.plan.audit.unknown_ids`, not raised.
    """
    ids = tuple(str(face_id) for face_id in face_ids)
    settings = target.settings if isinstance(target, Stores) else target
    stores = target if isinstance(target, Stores) else None
    if not ids:
        raise ValueError("sync_faces needs at least one face id")
    options = RepairOptions(
        max_changes="100%",  # targeted: a share of the collection does not apply
        lock_timeout=lock_timeout,
        write_journal=False,
    )
    return repair(
        # A config file shared with the cron job may turn --delete-orphans on: a
        # targeted sync never deletes orphans (it sees no orphan), and must not refuse.
        dataclasses.replace(settings, delete_orphans=False),
        options,
        stores=stores,
        targets=Targets(face_ids=ids),
        hooks=Hooks(lock=LockMode.WAIT),
    )


async def sync_faces_async(
    target: Settings | Stores, face_ids: Iterable[str], *, lock_timeout: float = 5.0
) -> RepairReport:
    """`sync_faces` for async services: the blocking protocol runs in a worker thread."""
    ids = list(face_ids)
    return await asyncio.to_thread(sync_faces, target, ids, lock_timeout=lock_timeout)


__all__ = ["sync_faces", "sync_faces_async"]
