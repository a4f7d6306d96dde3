"""reconcile: find and repair drift between PostgreSQL and a Qdrant collection."""

from importlib.metadata import version

from reconcile.audit import CheckReport, Stores, audit, check
from reconcile.errors import ConfigError, GuardError, ReconcileError, StoreError
from reconcile.repair import RepairOptions, RepairReport, repair
from reconcile.report import AuditReport
from reconcile.settings import Settings
from reconcile.sync import sync_faces, sync_faces_async
from reconcile.targets import Targets
from reconcile.undo import UndoReport, undo

__version__ = version("reconcile")

__all__ = [
    "AuditReport",
    "CheckReport",
    "ConfigError",
    "GuardError",
    "ReconcileError",
    "RepairOptions",
    "RepairReport",
    "Settings",
    "StoreError",
    "Stores",
    "Targets",
    "UndoReport",
    "__version__",
    "audit",
    "check",
    "repair",
    "sync_faces",
    "sync_faces_async",
    "undo",
]
