"""reconcile: find and repair drift between PostgreSQL and a Qdrant collection.

The public API is what `__all__` lists (the README's "Library" section shows
it). No module of the package bears one of these names, so `reconcile.audit`
is always the function. Each name is imported on first use (PEP 562): a
command that never touches Qdrant's client does not pay for importing it.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reconcile.errors import ConfigError, ExitCode, GuardError, ReconcileError, StoreError
    from reconcile.mapping import KeyMap
    from reconcile.ops.audit import audit
    from reconcile.ops.check import CheckReport, check
    from reconcile.ops.counts import CountsReport, compare_counts
    from reconcile.ops.repair import RepairReport, repair
    from reconcile.ops.sample import SampleReport, sample_audit
    from reconcile.ops.sync import sync_faces, sync_faces_async
    from reconcile.ops.undo import UndoReport, undo
    from reconcile.plan import RepairOptions
    from reconcile.report import AuditReport
    from reconcile.settings import Settings
    from reconcile.stores import Stores
    from reconcile.stores.postgres import Postgres
    from reconcile.stores.qdrant import Qdrant
    from reconcile.targets import Targets

# Where each public name lives.
_HOMES = {
    "AuditReport": "reconcile.report",
    "CheckReport": "reconcile.ops.check",
    "ConfigError": "reconcile.errors",
    "CountsReport": "reconcile.ops.counts",
    "ExitCode": "reconcile.errors",
    "GuardError": "reconcile.errors",
    "KeyMap": "reconcile.mapping",
    "Postgres": "reconcile.stores.postgres",
    "Qdrant": "reconcile.stores.qdrant",
    "ReconcileError": "reconcile.errors",
    "RepairOptions": "reconcile.plan",
    "RepairReport": "reconcile.ops.repair",
    "SampleReport": "reconcile.ops.sample",
    "Settings": "reconcile.settings",
    "StoreError": "reconcile.errors",
    "Stores": "reconcile.stores",
    "Targets": "reconcile.targets",
    "UndoReport": "reconcile.ops.undo",
    "audit": "reconcile.ops.audit",
    "check": "reconcile.ops.check",
    "compare_counts": "reconcile.ops.counts",
    "repair": "reconcile.ops.repair",
    "sample_audit": "reconcile.ops.sample",
    "sync_faces": "reconcile.ops.sync",
    "sync_faces_async": "reconcile.ops.sync",
    "undo": "reconcile.ops.undo",
}


def __getattr__(name: str) -> Any:
    if name == "__version__":
        # Read from the installed metadata on first use: importing importlib.metadata
        # costs every command 20-60 ms, and only --version needs it.
        from importlib.metadata import version

        globals()[name] = version("reconcile")
        return globals()[name]
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'reconcile' has no attribute {name!r}")
    value = getattr(import_module(home), name)
    globals()[name] = value  # the next access is a plain lookup
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "AuditReport",
    "CheckReport",
    "ConfigError",
    "CountsReport",
    "ExitCode",
    "GuardError",
    "KeyMap",
    "Postgres",
    "Qdrant",
    "ReconcileError",
    "RepairOptions",
    "RepairReport",
    "SampleReport",
    "Settings",
    "StoreError",
    "Stores",
    "Targets",
    "UndoReport",
    "__version__",
    "audit",
    "check",
    "compare_counts",
    "repair",
    "sample_audit",
    "sync_faces",
    "sync_faces_async",
    "undo",
]
