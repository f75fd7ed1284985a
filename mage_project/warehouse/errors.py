"""The warehouse layer's own errors: each backend translates its driver's into these, so no
caller above ``mage_project.warehouse`` needs to know a driver's exceptions."""

from __future__ import annotations


class WarehouseError(RuntimeError):
    """Something the warehouse refused or could not do, in the project's words."""


class RunLockError(WarehouseError):
    """Another run of the same pipeline holds the write lock (or the marts' build lease)."""


class DuplicateKeyError(WarehouseError):
    """A straight copy met a key already in the table, or the same key twice in its files."""


class WarehouseUnavailable(WarehouseError):
    """The warehouse cannot be reached: no connection could be opened."""
