"""reconcile: find and repair drift between PostgreSQL and a Qdrant collection."""

from reconcile.audit import CheckReport, Stores, audit, check
from reconcile.errors import ConfigError, ReconcileError, StoreError
from reconcile.report import AuditReport
from reconcile.settings import Settings

__version__ = "0.1.0"

__all__ = [
    "AuditReport",
    "CheckReport",
    "ConfigError",
    "ReconcileError",
    "Settings",
    "StoreError",
    "Stores",
    "__version__",
    "audit",
    "check",
]
