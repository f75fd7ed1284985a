"""The one interface every warehouse backend implements (PEP 544: the backends are modules).

``warehouse.postgres`` and ``warehouse.snowflake`` each offer every member below with the same
signature and the same errors (``warehouse.errors``: a driver's exception never leaves the
backend where a caller is meant to handle it). ``warehouse.backend()`` returns the one WAREHOUSE
names. Cursors and connections are DB-API objects with ``%s`` parameters; what differs between
the warehouses (DDL, bulk paths, locks, upsert SQL, identifier quoting) is inside the backend.

Statements that read the same on both warehouses are written once, in ``warehouse.portable``,
and offered by both backends.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from mage_project.entities import Entity

Files = Sequence[tuple[str, Path]]  # (landing key, validated file) in delivery order


@dataclass(frozen=True)
class Lease:
    """Who holds a named lease (``ops.build_leases``); ``run_id`` None: nobody."""

    name: str
    run_id: str | None
    acquired_at: datetime | None
    expires_at: datetime | None
    holder_host: str | None
    holder_boot: str | None
    holder_process_group: int | None


@dataclass(frozen=True)
class ActivityDay:
    """One UTC day of ``raw.user_activity``, as the demo summarises it."""

    day: date
    events: int
    users: int
    purchases: int
    revenue: Decimal


@dataclass(frozen=True)
class FileLoads:
    """One entity's landing files in ``ops.file_manifest``: versions loaded and failed, rows."""

    entity: str
    loaded: int
    failed: int
    rows_loaded: int
    rows_rejected: int


@dataclass(frozen=True)
class ColumnType:
    """One column of a table as the warehouse holds it."""

    name: str  # lower case
    data_type: str  # as information_schema names it
    canonical: str  # portable.canonical_type's spelling, the same on both warehouses


@runtime_checkable
class Warehouse(Protocol):
    NAME: str  # "postgres" | "snowflake", as WAREHOUSE names it

    # --- connection and transaction ---------------------------------------------------------
    def describe(self) -> str:
        """Where the configured warehouse is, for people (no connection made)."""

    def connect(self, role: str) -> Any:
        """A connection to the configured warehouse as the project role ``role`` (config.OWNER,
        who migrates, or one of config.ROLES: loader, transformer, analyst), the embedded
        PostgreSQL started if it is the one; raises WarehouseUnavailable when none can be opened."""

    def connection(self, role: str) -> AbstractContextManager[Any]:
        """``connect(role)``, closed on leaving."""

    def roles_sql(self) -> str:
        """The SQL that creates the project's roles and their grants, for an administrator."""

    def grant_reads(self, cur: Any, relation: str, columns: list[str]) -> None:
        """Let the analyst role read ``columns`` of ``relation`` (``schema.table``), and no other."""

    def transaction(self, conn: Any) -> AbstractContextManager[Any]:
        """A cursor in one transaction: committed on success, rolled back on error."""

    def streaming_cursor(self, conn: Any) -> Any:
        """A cursor whose ``fetchmany`` pulls rows from the server as it goes."""

    def dbt_environment(self) -> dict[str, str]:
        """The environment variables Mage's dbt block and io_config.yaml need beyond the
        user's own settings (for the embedded PostgreSQL: its socket, started if need be)."""

    # --- migration and the write lock -------------------------------------------------------
    def migrate(self, conn: Any) -> list[str]:
        """Apply the migrations not applied yet, in order; returns their names."""

    def acquire_run_lock(self, cur: Any, pipeline: str, timeout_seconds: float) -> None:
        """Take ``pipeline``'s write lock for the transaction; RunLockError after the wait."""

    # --- bulk load, upsert and rejects ------------------------------------------------------
    def prepare_upsert(self, conn: Any, entity: Entity) -> None:
        """The DDL an upsert load needs, before its transaction (Snowflake commits DDL)."""

    def copy_into_target(self, cur: Any, entity: Entity, run_id: str, files: Files) -> int:
        """Copy the files straight into the entity's table; returns the rows copied. Raises
        DuplicateKeyError, having copied nothing, when a key is there already or comes twice."""

    def stage_files(self, cur: Any, entity: Entity, files: Files) -> int:
        """Copy the files into the load's staging table; returns the rows staged."""

    def upsert_from_staging(self, cur: Any, entity: Entity, run_id: str, files: Files,
                            staged: int) -> tuple[int, int]:
        """The latest delivery of each staged key into the table; (distinct keys, changed)."""

    def load_rows(self, cur: Any, entity: Entity, run_id: str, files: Files, *,
                  new_window: bool) -> tuple[int, int, int]:
        """The run's rows into the entity's table, the cheapest way this warehouse offers:
        (rows staged, distinct keys, rows inserted or changed). ``new_window``: no successful
        run covered the window before."""

    def insert_rejects(self, cur: Any, entity: Entity, paths: list[Path]) -> tuple[int, int]:
        """Rejects files into the rejects table once per record; (distinct, new)."""

    def prepare_file_load(self, conn: Any, entity: Entity) -> None:
        """The DDL a file load needs, before its transaction."""

    def copy_file_rows(self, cur: Any, entity: Entity, key: str, checksum: str,
                       counts: Any) -> None:
        """A landing file's valid rows into its raw table, its bad rows into load_rejects."""

    # --- watermarks and runs ----------------------------------------------------------------
    def read_watermark(self, cur: Any, entity: Entity) -> datetime | None: ...

    def upsert_watermark(self, cur: Any, entity: Entity, watermark: datetime,
                         run_id: str) -> None:
        """Set the entity's watermark, never moving it backwards."""

    def window_loaded_before(self, cur: Any, pipeline: str, start: datetime,
                             end: datetime) -> bool: ...

    def upsert_run(self, cur: Any, row: dict) -> None:
        """Insert or update the ``ops.pipeline_runs`` row of ``row["run_id"]``."""

    def run_counts(self, cur: Any, run_id: str) -> dict | None:
        """The counts ``ops.pipeline_runs`` holds for ``run_id``, None when it has no row."""

    # --- file manifests ---------------------------------------------------------------------
    def files_last_seen(self, cur: Any) -> dict[str, tuple[int, str | None]]: ...

    def last_file_version(self, cur: Any, file_key: str) -> int: ...

    def latest_file_content(self, cur: Any, file_key: str) -> tuple[int, str] | None: ...

    def mark_file_seen(self, cur: Any, file_key: str, version: int,
                       source_tag: str) -> None: ...

    def record_file_version(self, cur: Any, row: dict) -> None: ...

    def files_not_loaded(self, cur: Any, run_id: str) -> list[tuple[str, str, str | None]]: ...

    def file_loads_by_entity(self, cur: Any) -> list[FileLoads]: ...

    # --- leases -----------------------------------------------------------------------------
    def read_lease(self, cur: Any, name: str) -> Lease | None: ...

    def take_lease(self, cur: Any, name: str, run_id: str, now: datetime, expires_at: datetime,
                   holder: tuple[str | None, str | None, int | None]) -> bool:
        """Take the lease if it is free, expired or ``run_id``'s own; whether it was taken."""

    def take_over_lease(self, cur: Any, name: str, run_id: str, previous: str, now: datetime,
                        expires_at: datetime,
                        holder: tuple[str | None, str | None, int | None]) -> bool:
        """Take the lease from ``previous`` if it still holds it; whether it was taken."""

    def release_lease(self, cur: Any, name: str, run_id: str) -> None:
        """Give the lease up if ``run_id`` holds it."""

    # --- what the contracts' checks read ----------------------------------------------------
    def table_columns(self, cur: Any, schema: str, table: str) -> list[ColumnType]:
        """The columns of ``schema.table`` in their order; [] when there is no such table."""

    # --- what the demo and the reports read -------------------------------------------------
    def activity_by_day(self, cur: Any, start: datetime, end: datetime) -> list[ActivityDay]: ...

    def row_count(self, cur: Any, schema: str, table: str) -> int: ...

    def marts_totals(self, cur: Any) -> tuple[Decimal, Decimal, int]:
        """(net revenue, refunds, paying customers) of the published marts."""

