"""The Snowflake writer: migrations, the per-pipeline write lock, and the bulk path
(PUT to a stage + COPY INTO), with the same functions as ``warehouse.postgres``.

Snowflake commits on every DDL statement, so what a load needs of DDL (a temporary stage and
temporary staging tables) is created by ``prepare_file_load`` before the load's transaction
begins; inside it there is only PUT, COPY INTO and DML, which commit or roll back together.

Identifiers come from the entity declarations (checked against a strict pattern here) and are
double-quoted upper case, which is how Snowflake stores unquoted names; values are always
bound parameters.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

from mage_project import config
from mage_project.entities import Entity
from mage_project.warehouse import RunLockError

log = logging.getLogger(__name__)

STAGE = "mage_project_load"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
# The valid and rejects files written by validation: RFC 4180, header row, empty = NULL.
_CSV_FORMAT = ("type = csv skip_header = 1 field_optionally_enclosed_by = '\"'"
               " empty_field_as_null = true")
# Entity column types (PostgreSQL spelling) in Snowflake's.
_TYPES = {"text": "varchar", "bigint": "number(19,0)", "timestamptz": "timestamp_tz",
          "date": "date", "numeric(18,2)": "number(18,2)", "numeric": "number(38,10)",
          "jsonb": "variant"}


def ident(*parts: str) -> str:
    """A quoted, dotted Snowflake identifier; refuses anything that is not a plain name."""
    for part in parts:
        if not _NAME.fullmatch(part):
            raise ValueError(f"not a plain identifier: {part!r}")
    return ".".join(f'"{part.upper()}"' for part in parts)


def connect(settings: config.SnowflakeSettings | None = None):
    import snowflake.connector

    settings = settings or config.snowflake()
    return snowflake.connector.connect(**settings.connect_kwargs())


@contextmanager
def connection(settings: config.SnowflakeSettings | None = None):
    conn = connect(settings)
    try:
        yield conn
    finally:
        conn.close()


@contextmanager
def transaction(conn) -> Iterator:
    """A cursor inside one explicit transaction: committed on success, rolled back on error."""
    cur = conn.cursor()
    cur.execute("begin")
    try:
        yield cur
    except BaseException:
        cur.execute("rollback")
        raise
    else:
        cur.execute("commit")
    finally:
        cur.close()


def migrate(conn) -> list[str]:
    """Apply the project's Snowflake migrations not yet applied, in order. Returns their names.

    Snowflake has no advisory locks: every migration is idempotent (``if not exists``), so two
    runs migrating at once both end with the same schema.
    """
    files = sorted(
        (f for f in resources.files("mage_project.warehouse").joinpath("sql/snowflake").iterdir()
         if f.name.endswith(".sql")),
        key=lambda f: f.name,
    )
    cur = conn.cursor()
    cur.execute("create schema if not exists ops")
    cur.execute("create table if not exists ops.schema_migrations (name varchar not null,"
                " applied_at timestamp_tz not null default current_timestamp())")
    done = {name for (name,) in cur.execute("select name from ops.schema_migrations").fetchall()}
    applied = []
    for f in files:
        if f.name in done:
            continue
        for _ in conn.execute_string(f.read_text(encoding="utf-8"), remove_comments=True):
            pass
        cur.execute("insert into ops.schema_migrations (name) values (%s)", (f.name,))
        applied.append(f.name)
    if applied:
        log.info("applied Snowflake migrations: %s", ", ".join(applied))
    return applied


def acquire_run_lock(cur, pipeline: str, timeout_seconds: float | None = None) -> None:
    """Take ``pipeline``'s write lock for the current transaction, waiting up to the timeout.

    Snowflake lets one transaction at a time update a table's rows: updating the pipeline's
    row of ``ops.run_locks`` first thing makes a second writer wait there until the first
    commits. The wait is bounded by the session's LOCK_TIMEOUT, which ``connect`` sets from
    RUN_LOCK_TIMEOUT_SECONDS (at login: fakesnow does not implement ALTER SESSION SET
    LOCK_TIMEOUT, and ignores the login parameter).
    """
    update = ("update ops.run_locks set locked_at = current_timestamp()"
              " where pipeline = %s")
    cur.execute(update, (pipeline,))
    if cur.rowcount == 0:  # the pipeline's first run: its row, then the lock
        cur.execute("insert into ops.run_locks (pipeline) values (%s)", (pipeline,))
        cur.execute(update, (pipeline,))
    if cur.rowcount != 1:
        raise RunLockError(f"ops.run_locks holds {cur.rowcount} rows for {pipeline}, not one")


def _staging_table(entity: Entity) -> str:
    return ident(f"stage_{entity.table}")


def prepare_file_load(conn, entity: Entity) -> None:
    """The DDL a load needs, before its transaction: an empty temporary stage and staging tables."""
    cur = conn.cursor()
    # Temporary objects live in the session's current schema (fakesnow refuses them qualified).
    cur.execute(f"use schema {ident(entity.schema)}")
    columns = ", ".join(f"{ident(c.name)} {_TYPES[c.pg_type]}" for c in entity.columns)
    cur.execute(f"create or replace temporary stage {ident(STAGE)}")
    cur.execute(f"create or replace temporary table {_staging_table(entity)}"
                f" ({columns}, {ident('_row_number')} number(19,0))")
    cur.execute(f"create or replace temporary table {ident('stage_load_rejects')}"
                " (row_number number(19,0), reason varchar, raw_line varchar)")


def _put(cur, path: Path, folder: str) -> None:
    location = str(path.resolve()).replace("\\", "/").replace("'", "\\'")
    cur.execute(f"put 'file://{location}' @{ident(STAGE)}/{folder}/"
                " auto_compress = true overwrite = true")


def copy_file_rows(cur, entity: Entity, key: str, checksum: str, counts) -> None:
    """PUT the file's valid and rejected rows, COPY them into the staging tables, and append
    them with the file's lineage to the entity's raw table and ``raw.load_rejects``."""
    # A file with no valid (or no rejected) rows costs no PUT and no COPY.
    if counts.valid:
        _copy_valid_rows(cur, entity, key, checksum, Path(counts.valid_path))
    if counts.rejected:
        _put(cur, Path(counts.rejects_path), "rejects")
        cur.execute(f"copy into {ident('stage_load_rejects')} (row_number, reason, raw_line)"
                    f" from @{ident(STAGE)}/rejects/ file_format = ({_CSV_FORMAT})"
                    " on_error = abort_statement")
        cur.execute(
            "insert into raw.load_rejects (file_key, file_checksum, row_number, reason, raw_line)"
            " select %s, %s, row_number, reason, raw_line from stage_load_rejects",
            (key, checksum),
        )


def _copy_valid_rows(cur, entity: Entity, key: str, checksum: str, path: Path) -> None:
    staged = _staging_table(entity)
    names = [*entity.column_names, "_row_number"]
    columns = ", ".join(ident(n) for n in names)
    _put(cur, path, "valid")
    cur.execute(f"copy into {staged} ({columns}) from @{ident(STAGE)}/valid/"
                f" file_format = ({_CSV_FORMAT}) on_error = abort_statement")
    data = ", ".join(ident(n) for n in entity.column_names)
    lineage = ", ".join(ident(n) for n in ("_file_key", "_file_checksum", "_row_number"))
    # Names from ident() only; the file's key and checksum are bound.
    append = (f"insert into {ident(entity.schema, entity.table)} ({data}, {lineage})"  # noqa: S608
              f" select {data}, %s, %s, {ident('_row_number')} from {staged}")
    cur.execute(append, (key, checksum))
