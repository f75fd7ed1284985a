"""Warehouse writers: one per target, bulk paths only, idempotent, identifiers quoted by the driver.

``postgres`` and ``snowflake`` offer the same functions (connection, transaction, migrate,
acquire_run_lock, prepare_file_load, copy_file_rows; prepare_upsert, stage_files,
upsert_from_staging, insert_rejects, upsert_watermark, upsert_run); ``writer()`` picks the
configured one, ``writer_for(cursor)`` the one a cursor belongs to.
"""

from __future__ import annotations

from types import ModuleType

from mage_project import config


class RunLockError(RuntimeError):
    """Another run of the same pipeline holds the write lock."""


def writer(kind: str | None = None) -> ModuleType:
    """The writer module of ``kind``, by default the one WAREHOUSE names."""
    kind = kind or config.warehouse()
    if kind == "snowflake":
        from mage_project.warehouse import snowflake

        return snowflake
    from mage_project.warehouse import postgres

    return postgres


def writer_for(cursor) -> ModuleType:
    """The writer module of the warehouse ``cursor`` speaks to, told by its driver's package."""
    if type(cursor).__module__.split(".", 1)[0] == "snowflake":
        return writer("snowflake")
    return writer("postgres")
