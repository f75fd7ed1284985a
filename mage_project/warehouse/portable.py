"""Statements that read the same on PostgreSQL and Snowflake, written once: each backend offers
them as members of the warehouse interface (``warehouse.interface.Warehouse``).

Plain SQL with ``%s`` parameters, which psycopg2 and snowflake-connector-python both bind;
names unquoted and lower case, so each warehouse folds them to its own case.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal

from mage_project.entities import Entity
from mage_project.warehouse.interface import ActivityDay, ColumnType, FileLoads, Lease

# --- watermarks and runs ------------------------------------------------------------------------


def read_watermark(cur, entity: Entity) -> datetime | None:
    cur.execute(
        "select watermark from ops.watermarks where pipeline = %s and entity = %s",
        (entity.pipeline, entity.name),
    )
    row = cur.fetchone()
    return row[0] if row else None


def window_loaded_before(cur, pipeline: str, start: datetime, end: datetime) -> bool:
    """Whether a successful run of ``pipeline`` covered any part of ``[start, end)``."""
    cur.execute(
        "select 1 from ops.pipeline_runs where pipeline = %s and status = 'success'"
        " and window_start < %s and window_end > %s limit 1",
        (pipeline, end, start),
    )
    return cur.fetchone() is not None


_RUN_COUNTS = ("rows_fetched", "rows_loaded", "rows_rejected", "rows_duplicate", "rows_changed")


def run_counts(cur, run_id: str) -> dict | None:
    cur.execute(f"select status, {', '.join(_RUN_COUNTS)} from ops.pipeline_runs"  # noqa: S608 - constants
                " where run_id = %s", (run_id,))
    row = cur.fetchone()
    if row is None:
        return None
    return {"status": row[0],
            **{name: None if n is None else int(n) for name, n in zip(_RUN_COUNTS, row[1:],
                                                                       strict=True)}}


# --- file manifests (ops.file_manifest) ---------------------------------------------------------


def files_last_seen(cur) -> dict[str, tuple[int, str | None]]:
    """(size, source tag) of the latest version of every file in the manifest, errors apart: a
    file whose last attempt ended in 'error' was not seen then, so it is pending again."""
    cur.execute(
        "select m.file_key, m.size_bytes, m.source_tag from ops.file_manifest as m"
        " join (select file_key, max(version) as version from ops.file_manifest"
        " where status <> 'error' group by file_key) as latest"
        " on latest.file_key = m.file_key and latest.version = m.version"
    )
    return {key: (int(size), tag) for key, size, tag in cur.fetchall()}


def last_file_version(cur, file_key: str) -> int:
    """The highest version the manifest holds of ``file_key``, whatever its status; 0 if none."""
    cur.execute("select max(version) from ops.file_manifest where file_key = %s", (file_key,))
    (last,) = cur.fetchone()
    return int(last or 0)


def latest_file_content(cur, file_key: str) -> tuple[int, str] | None:
    """(version, checksum) of the latest attempt at ``file_key`` that did not end in 'error'
    (those loaded nothing: the content to compare with is the one before them)."""
    cur.execute(
        "select version, checksum from ops.file_manifest where file_key = %s"
        " and status <> 'error' order by version desc limit 1",
        (file_key,),
    )
    row = cur.fetchone()
    return (int(row[0]), row[1]) if row else None


def mark_file_seen(cur, file_key: str, version: int, source_tag: str) -> None:
    """Delivered again with the same content: remember the delivery's tag as seen."""
    cur.execute("update ops.file_manifest set source_tag = %s where file_key = %s"
                " and version = %s", (source_tag, file_key, version))


MANIFEST_COLUMNS = ("file_key", "version", "entity", "size_bytes", "checksum", "status",
                    "rows_total", "rows_loaded", "rows_rejected", "error", "notes", "run_id",
                    "source_tag")
_INSERT_MANIFEST = (
    f"insert into ops.file_manifest ({', '.join(MANIFEST_COLUMNS)})"  # noqa: S608 - constants
    f" values ({', '.join(['%s'] * len(MANIFEST_COLUMNS))})"
)


def record_file_version(cur, row: dict) -> None:
    """Add one version of a file to the manifest (columns of ``MANIFEST_COLUMNS``; a missing
    one is NULL)."""
    cur.execute(_INSERT_MANIFEST, [row.get(c) for c in MANIFEST_COLUMNS])


def files_not_loaded(cur, run_id: str) -> list[tuple[str, str, str | None]]:
    """(file_key, status, error) of each file the run did not load, by key."""
    cur.execute(
        "select file_key, status, error from ops.file_manifest"
        " where run_id = %s and status <> 'loaded' order by file_key",
        (run_id,),
    )
    return [tuple(row) for row in cur.fetchall()]


def file_loads_by_entity(cur) -> list[FileLoads]:
    cur.execute(
        "select entity, sum(case when status = 'loaded' then 1 else 0 end),"
        " sum(case when status = 'failed' then 1 else 0 end),"
        " coalesce(sum(rows_loaded), 0), coalesce(sum(rows_rejected), 0)"
        " from ops.file_manifest group by entity order by entity"
    )
    return [FileLoads(entity, *(int(n) for n in counts)) for entity, *counts in cur.fetchall()]


# --- leases (ops.build_leases) ------------------------------------------------------------------

_HOLDER = "holder_host = %s, holder_boot = %s, holder_process_group = %s"


def read_lease(cur, name: str) -> Lease | None:
    cur.execute("select run_id, acquired_at, expires_at, holder_host, holder_boot,"
                " holder_process_group from ops.build_leases where name = %s", (name,))
    row = cur.fetchone()
    return Lease(name, *row) if row else None


def take_lease(cur, name: str, run_id: str, now: datetime, expires_at: datetime,
               holder: tuple[str | None, str | None, int | None]) -> bool:
    cur.execute(
        f"update ops.build_leases set run_id = %s, acquired_at = %s, expires_at = %s, {_HOLDER}"  # noqa: S608 - constants
        " where name = %s and (run_id is null or run_id = %s or expires_at < %s)",
        (run_id, now, expires_at, *holder, name, run_id, now))
    return bool(cur.rowcount)


def take_over_lease(cur, name: str, run_id: str, previous: str, now: datetime,
                    expires_at: datetime,
                    holder: tuple[str | None, str | None, int | None]) -> bool:
    cur.execute(
        f"update ops.build_leases set run_id = %s, acquired_at = %s, expires_at = %s, {_HOLDER}"  # noqa: S608 - constants
        " where name = %s and run_id = %s",
        (run_id, now, expires_at, *holder, name, previous))
    return bool(cur.rowcount)


def release_lease(cur, name: str, run_id: str) -> None:
    cur.execute("update ops.build_leases set run_id = null, acquired_at = null,"
                " expires_at = null, holder_host = null, holder_boot = null,"
                " holder_process_group = null where name = %s and run_id = %s",
                (name, run_id))


# --- what the demo and the reports read ---------------------------------------------------------


def activity_by_day(cur, start: datetime, end: datetime) -> list[ActivityDay]:
    """``raw.user_activity`` of ``[start, end)`` by UTC day (both warehouses' sessions are UTC)."""
    cur.execute(
        "select cast(occurred_at as date) as day, count(*), count(distinct user_id),"
        " sum(case when event_type = 'purchase' then 1 else 0 end), coalesce(sum(amount), 0)"
        " from raw.user_activity where occurred_at >= %s and occurred_at < %s"
        " group by cast(occurred_at as date) order by 1",
        (start, end),
    )
    return [ActivityDay(day, int(events), int(users), int(purchases),
                        Decimal(revenue).quantize(Decimal("0.01")))
            for day, events, users, purchases, revenue in cur.fetchall()]


def marts_totals(cur) -> tuple[Decimal, Decimal, int]:
    cur.execute("select coalesce(sum(net_revenue), 0), coalesce(sum(refunds), 0)"
                " from marts.fct_daily_revenue")
    net, refunds = cur.fetchone()
    cur.execute("select count(first_paid_at) from marts.dim_customers")
    (paying,) = cur.fetchone()
    cent = Decimal("0.01")
    return Decimal(net).quantize(cent), Decimal(refunds).quantize(cent), int(paying)


# --- what the contracts' checks read ------------------------------------------------------------

# Both warehouses' type names (information_schema's and DDL's) -> one canonical name.
_TYPES = {
    "integer": ("bigint", "int8", "integer", "int", "int4", "smallint", "int2"),
    "string": ("text", "varchar", "character varying", "character", "char", "string"),
    "date": ("date",),
    "timestamptz": ("timestamptz", "timestamp with time zone", "timestamp_tz"),
    "timestamp": ("timestamp", "timestamp without time zone", "timestamp_ntz"),
    "json": ("jsonb", "json", "variant", "object"),
    "boolean": ("boolean", "bool"),
    "float": ("double precision", "float", "float8", "real", "double"),
}
_CANONICAL = {name: canonical for canonical, names in _TYPES.items() for name in names}
_DECIMAL = re.compile(r"(numeric|number|decimal)\s*(?:\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\))?")


def canonical_type(name: str) -> str:
    """A column type as either warehouse (or a contract's physicalType) names it, in one
    spelling: ``integer`` (any integer, and a decimal of scale 0: Snowflake's NUMBER(38,0)),
    ``decimal(p,s)`` or ``decimal`` (unconstrained), ``string``, ``date``, ``timestamptz``,
    ``timestamp``, ``json``, ``boolean``, ``float``; an unknown name lower-cased as it is."""
    text = " ".join(name.lower().split())
    if match := _DECIMAL.fullmatch(text):
        precision, scale = match[2], match[3] or ("0" if match[2] else None)
        if scale == "0":
            return "integer"
        return f"decimal({precision},{scale})" if precision else "decimal"
    return _CANONICAL.get(re.sub(r"\(.*\)$", "", text).strip(), text)


def table_columns(cur, schema: str, table: str) -> list[ColumnType]:
    cur.execute(
        "select lower(column_name), data_type, numeric_precision, numeric_scale"
        " from information_schema.columns where lower(table_schema) = %s and lower(table_name) = %s"
        " order by ordinal_position", (schema.lower(), table.lower()))
    columns = []
    for name, data_type, precision, scale in cur.fetchall():
        declared = data_type
        if canonical_type(data_type).startswith("decimal") and precision is not None:
            declared = f"numeric({precision},{scale or 0})"
        columns.append(ColumnType(name, data_type, canonical_type(declared)))
    return columns
