"""The two stores: PostgreSQL (the truth) and a Qdrant collection (its mirror).

`Stores` opens both adapters together and closes them together; `using` lends
a caller's stores or opens our own. The backends are imported here only when
chosen, so a Qdrant Edge store needs no server client and the reverse, and no
backend imports another (`base` is all they share).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from reconcile.errors import ConfigError
from reconcile.settings import Settings
from reconcile.stores.base import PointStore

if TYPE_CHECKING:
    from reconcile.stores.postgres import Postgres


def open_point_store(settings: Settings, light: bool = False) -> PointStore:
    """The adapter the settings name: a server or local mode, or a Qdrant Edge store.

    `light`: a server's collection answers `check`'s few questions without importing
    qdrant-client (`rest.RestQdrant`), which is then imported only if needed.
    """
    if light and settings.qdrant_url:
        from reconcile.stores.rest import RestQdrant

        return RestQdrant(settings, fallback=lambda: open_point_store(settings))
    if not settings.qdrant_edge:
        from reconcile.stores.qdrant import Qdrant

        return Qdrant(settings)
    try:
        from reconcile.stores.edge import EdgeQdrant  # an optional extra: reconcile[edge]
    except ImportError:
        raise ConfigError(
            "--qdrant-edge needs the edge extra: pip install 'reconcile[edge]'"
        ) from None
    return EdgeQdrant(settings, Path(settings.qdrant_edge))


class Stores:
    """Both adapters, opened together and closed together; tests inject their own."""

    def __init__(
        self,
        settings: Settings,
        postgres: Postgres | None = None,
        qdrant: PointStore | None = None,
        light: bool = False,
    ) -> None:
        from reconcile.stores.postgres import Postgres

        self.settings = settings
        self.postgres = postgres or Postgres(settings)
        try:
            self.qdrant: PointStore = qdrant or open_point_store(settings, light)
        except BaseException:
            self.postgres.close()
            raise
        self._owned = (postgres is None, qdrant is None)

    def __enter__(self) -> Stores:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._owned[0]:
            self.postgres.close()
        if self._owned[1]:
            self.qdrant.close()


@contextmanager
def using(settings: Settings, stores: Stores | None) -> Iterator[Stores]:
    """The caller's stores as they are, or stores of our own, closed when done.

    A function given stores must not close them: repair audits with the same
    connections it then writes with.
    """
    if stores is not None:
        yield stores
        return
    with Stores(settings) as own:
        yield own


__all__ = ["Stores", "open_point_store", "using"]
