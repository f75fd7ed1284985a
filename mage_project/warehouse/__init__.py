"""Warehouse backends: one per target, bulk paths only, idempotent, identifiers quoted by the
driver, all behind one interface (``warehouse.interface.Warehouse``).

``postgres`` and ``snowflake`` are modules implementing that interface with the same members,
signatures and errors (``warehouse.errors``, re-exported here); ``backend()`` returns the one
WAREHOUSE names. Nothing outside this package imports a driver.
"""

from __future__ import annotations

from typing import cast

from mage_project import config
from mage_project.warehouse.errors import (
    DuplicateKeyError,
    RunLockError,
    WarehouseError,
    WarehouseUnavailable,
)
from mage_project.warehouse.interface import Warehouse

__all__ = ["DuplicateKeyError", "RunLockError", "Warehouse", "WarehouseError",
           "WarehouseUnavailable", "backend", "backend_for", "migrate"]


def backend(kind: str | None = None) -> Warehouse:
    """The backend of ``kind``, by default the one WAREHOUSE names."""
    kind = kind or config.warehouse()
    if kind == "snowflake":
        from mage_project.warehouse import snowflake as module
    else:
        from mage_project.warehouse import postgres as module
    return cast(Warehouse, module)


def migrate(db: Warehouse) -> list[str]:
    """``db``'s migrations (and its roles' grants), applied as the owner of its schemas, in a
    connection of their own: the work that follows connects in its own role."""
    with db.connection(config.OWNER) as conn:
        return db.migrate(conn)


def backend_for(conn_or_cursor) -> Warehouse:
    """The backend of the warehouse a connection or cursor speaks to, told by its driver."""
    if type(conn_or_cursor).__module__.split(".", 1)[0] == "snowflake":
        return backend("snowflake")
    return backend("postgres")

