"""The PostgreSQL backend of the warehouse interface (``warehouse.interface.Warehouse``):
migrations, the per-pipeline write lock, bulk COPY and upsert, the embedded server started on
first connection.

Every identifier goes through ``psycopg2.sql.Identifier``; no SQL is built by string
formatting of names or values. psycopg2's errors that callers act on leave as the project's
own (``warehouse.errors``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import psycopg2
from psycopg2 import sql

from mage_project import config
from mage_project.entities import Entity
from mage_project.faults import failpoint
from mage_project.warehouse import embedded
from mage_project.warehouse.errors import DuplicateKeyError, RunLockError, WarehouseUnavailable
from mage_project.warehouse.portable import (  # noqa: F401 - members of the interface
    activity_by_day,
    file_loads_by_entity,
    files_last_seen,
    files_not_loaded,
    last_file_version,
    latest_file_content,
    mark_file_seen,
    marts_totals,
    read_lease,
    read_watermark,
    record_file_version,
    release_lease,
    run_counts,
    table_columns,
    take_lease,
    take_over_lease,
    window_loaded_before,
)

log = logging.getLogger(__name__)

NAME = "postgres"


def resolve_settings(settings: config.PostgresSettings | None = None) -> config.PostgresSettings:
    """The configured PostgreSQL's settings, ready to connect with: for the embedded server,
    started if it is not running (and its database and the project's login roles created), its
    socket, port, and the login of the settings' role (the server's superuser for the owner)."""
    settings = settings or config.postgres()
    if not settings.embedded:
        return settings
    server = embedded.ensure_running(settings.pgdata)
    embedded.ensure_database(server, settings.dbname, tuple(config.POSTGRES_ROLES.values()))
    user = config.POSTGRES_ROLES[settings.role] if settings.role else server.user
    return dataclasses.replace(settings, host=server.socket_dir, port=server.port, user=user)


def describe() -> str:
    settings = config.postgres()
    where = "embedded PostgreSQL" if settings.embedded else f"{settings.host}:{settings.port}"
    return f"{where}/{settings.dbname}"


def connect(role: str):
    """A connection as the project role ``role`` (config.OWNER or one of config.ROLES)."""
    settings = resolve_settings(config.postgres(role))
    try:
        return psycopg2.connect(**settings.dsn_kwargs())
    except psycopg2.OperationalError as exc:
        login = f"the {settings.role}'s login " if settings.role else ""
        raise WarehouseUnavailable(f"cannot connect to PostgreSQL ({describe()}) as {login}"
                                   f"{settings.user}: {str(exc).strip()}") from exc


@contextmanager
def connection(role: str):
    conn = connect(role)
    try:
        yield conn
    finally:
        conn.close()


@contextmanager
def transaction(conn) -> Iterator:
    """A cursor inside one transaction: committed on success, rolled back on error.

    Not psycopg2's ``with conn``: when the connection itself is lost (the server gone, the
    network cut mid-COPY), its rollback raises "connection already closed" in place of the
    error that says what happened. Here the original error is the one raised.
    """
    cur = conn.cursor()
    try:
        yield cur
        conn.commit()
    except BaseException:
        if not conn.closed:
            try:
                conn.rollback()
            except psycopg2.Error as exc:  # lost meanwhile: the error being raised says why
                log.debug("rollback after a failed transaction failed too: %s", exc)
        raise
    finally:
        if not cur.closed and not conn.closed:
            cur.close()


def streaming_cursor(conn):
    """A named (server-side) cursor: psycopg2 holds a whole result client-side otherwise."""
    return conn.cursor(name=f"stream_{os.getpid()}_{id(conn)}")


def dbt_environment() -> dict[str, str]:
    """The resolved connection settings (the embedded server's, started if need be). For the
    embedded server, the login of each role too, and POSTGRES_USER (io_config.yaml's, for the
    editor's SQL blocks) the analyst's: what a deployment's own logins would be."""
    settings = resolve_settings()
    env = {"POSTGRES_HOST": str(settings.host), "POSTGRES_PORT": str(settings.port),
           "POSTGRES_DBNAME": settings.dbname}
    if not settings.embedded:
        return env
    env["POSTGRES_OWNER_USER"] = str(settings.user)
    for role, name in config.POSTGRES_ROLES.items():
        env[f"POSTGRES_{role.upper()}_USER"] = name
    env["POSTGRES_USER"] = config.POSTGRES_ROLES["analyst"]
    return env


def grant_reads(cur, relation: str, columns: list[str]) -> None:
    """The analyst role reads ``columns`` of ``relation`` and no other (column privileges)."""
    target = sql.Identifier(*relation.split("."))
    analyst = sql.Identifier(config.POSTGRES_ROLES["analyst"])
    cur.execute(sql.SQL("revoke all on {} from {}").format(target, analyst))
    if columns:
        cur.execute(sql.SQL("grant select ({}) on {} to {}").format(
            sql.SQL(", ").join(map(sql.Identifier, columns)), target, analyst))


def row_count(cur, schema: str, table: str) -> int:
    cur.execute(sql.SQL("select count(*) from {}").format(sql.Identifier(schema, table)))
    return int(cur.fetchone()[0])


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for ``name``."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def _sql_files(folder: str) -> list:
    return sorted((f for f in resources.files("mage_project.warehouse").joinpath(folder).iterdir()
                   if f.name.endswith(".sql")), key=lambda f: f.name)


def _roles_file(name: str) -> str:
    return resources.files("mage_project.warehouse").joinpath(f"sql/roles/{name}").read_text(
        encoding="utf-8")


def roles_sql() -> str:
    """The SQL that creates the project's roles: an administrator runs it where the owner may not
    create roles (the owner's migrations grant them, ``postgres_grants.sql``)."""
    return _roles_file("postgres_roles.sql")


def migrate(conn) -> list[str]:
    """Apply the project's migrations not yet applied, in order, under a lock, then the roles'
    grants when they changed since last applied (``roles_sql``). Returns the names applied.
    Run as the owner of the schemas."""
    applied = []
    with conn:
        with conn.cursor() as cur:
            cur.execute("select pg_advisory_xact_lock(%s)", (lock_key("mage_project.migrate"),))
            cur.execute("create schema if not exists ops")
            cur.execute(
                "create table if not exists ops.schema_migrations ("
                " name text primary key, applied_at timestamptz not null default now())"
            )
            cur.execute("select name from ops.schema_migrations")
            done = {name for (name,) in cur.fetchall()}
            for f in _sql_files("sql/postgres"):
                if f.name in done:
                    continue
                cur.execute(f.read_text(encoding="utf-8"))
                cur.execute("insert into ops.schema_migrations (name) values (%s)", (f.name,))
                applied.append(f.name)
            roles = roles_sql() + _roles_file("postgres_grants.sql")
            name = f"roles@{hashlib.sha256(roles.encode()).hexdigest()[:12]}"
            if name not in done and _apply_roles(cur, roles):
                cur.execute("insert into ops.schema_migrations (name) values (%s)", (name,))
                applied.append(name)
    if applied:
        log.info("applied migrations: %s", ", ".join(applied))
    return applied


def _apply_roles(cur, roles: str) -> bool:
    """Run the roles' SQL in a savepoint; False, with a warning, where the roles do not exist and
    the owner may not create them (the migrations apply it again until it is done)."""
    cur.execute("savepoint roles")
    try:
        cur.execute(roles)
    except psycopg2.errors.InsufficientPrivilege as exc:
        cur.execute("rollback to savepoint roles")
        log.warning("the project's warehouse roles are not set up: %s. An administrator runs the SQL"
                    " of `python -m mage_project warehouse roles` (README: Warehouse roles)",
                    str(exc).strip().splitlines()[0])
        return False
    cur.execute("release savepoint roles")
    return True


def acquire_run_lock(cur, pipeline: str, timeout_seconds: float) -> None:
    """Take ``pipeline``'s write lock for the current transaction, waiting up to the timeout."""
    key = lock_key(f"pipeline:{pipeline}")
    if timeout_seconds <= 0:
        cur.execute("select pg_try_advisory_xact_lock(%s)", (key,))
        if not cur.fetchone()[0]:
            raise RunLockError(
                f"another run of {pipeline} is writing; not waiting (RUN_LOCK_TIMEOUT_SECONDS=0)"
            )
        return
    cur.execute(
        "select set_config('lock_timeout', %s, true)", (f"{int(timeout_seconds * 1000)}ms",)
    )
    try:
        cur.execute("select pg_advisory_xact_lock(%s)", (key,))
    except psycopg2.errors.LockNotAvailable:
        raise RunLockError(
            f"another run of {pipeline} is still writing; gave up after {timeout_seconds:g} s "
            "(RUN_LOCK_TIMEOUT_SECONDS)"
        ) from None
    cur.execute("select set_config('lock_timeout', '0', true)")


def copy_csv(cur, table: sql.Composable, columns: Iterable[str], path: Path,
             force_null: Iterable[str] = ()) -> int:
    """COPY a CSV file with a header row into ``table``; returns the rows copied.

    ``force_null`` columns read an empty field as NULL even when it is quoted.
    """
    options = sql.SQL("format csv, header true")
    force_null = list(force_null)
    if force_null:
        options = sql.SQL("{}, force_null ({})").format(
            options, sql.SQL(", ").join(map(sql.Identifier, force_null))
        )
    statement = sql.SQL("copy {} ({}) from stdin with ({})").format(
        table, sql.SQL(", ").join(map(sql.Identifier, columns)), options
    )
    with open(path, "rb") as handle:
        cur.copy_expert(statement, handle, size=1 << 20)
    return cur.rowcount


def _optional(entity: Entity) -> list[str]:
    return [c.name for c in entity.columns if not c.required]


def copy_into_target(cur, entity: Entity, run_id: str, files: list[tuple[str, Path]]) -> int:
    """The bulk path: COPY the files straight into the entity's table. Returns the rows copied.

    Only for keys not in the table yet: a key already there (or twice in the files) meets the
    table's primary key, the savepoint undoes the copy, and DuplicateKeyError is raised (the
    caller then stages and upserts).
    """
    target = sql.Identifier(entity.schema, entity.table)
    cur.execute("savepoint bulk_copy")
    try:
        cur.execute("select set_config('mage_project.run_id', %s, true)", (run_id,))
        copied = 0
        for key, path in files:
            cur.execute("select set_config('mage_project.source_file', %s, true)", (key,))
            copied += copy_csv(cur, target, entity.column_names, path, _optional(entity))
    except psycopg2.errors.UniqueViolation as exc:
        cur.execute("rollback to savepoint bulk_copy")
        raise DuplicateKeyError(
            f"{entity.schema}.{entity.table}: {exc.diag.message_detail or exc}") from None
    cur.execute("release savepoint bulk_copy")
    return copied


def load_rows(cur, entity: Entity, run_id: str, files: list[tuple[str, Path]], *,
              new_window: bool) -> tuple[int, int, int]:
    """The raw tables' primary keys refuse a second row of a key, so a window never loaded
    before is COPY'd straight into its table; a key already there or delivered twice sends the
    load to staging and upsert instead. Returns (staged, distinct keys, inserted or changed)."""
    if new_window:
        try:
            copied = copy_into_target(cur, entity, run_id, files)
        except DuplicateKeyError:
            log.info("%s: keys already loaded or delivered twice; staging and upserting",
                     entity.pipeline)
        else:
            failpoint("after_staging_copy")
            return copied, copied, copied
    staged = stage_files(cur, entity, files)
    failpoint("after_staging_copy")
    distinct, changed = upsert_from_staging(cur, entity, run_id, files, staged)
    return staged, distinct, changed


def stage_files(cur, entity: Entity, files: list[tuple[str, Path]]) -> int:
    """COPY the files into a temporary staging table, in delivery order. Returns the rows staged.

    ``_seq`` numbers the rows in the order they were delivered; ``_file_no`` is the file's
    position in ``files``.
    """
    stage = sql.Identifier(f"stage_{entity.table}")
    columns = [
        sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.pg_type))
        for c in entity.columns
    ]
    cur.execute(
        sql.SQL(
            "create temporary table {} ({}, _file_no integer,"
            " _seq bigint generated always as identity) on commit drop"
        ).format(stage, sql.SQL(", ").join(columns))
    )
    staged = 0
    for file_no, (_key, path) in enumerate(files):
        cur.execute(
            sql.SQL("alter table {} alter column _file_no set default {}").format(
                stage, sql.Literal(file_no)
            )
        )
        staged += copy_csv(cur, stage, entity.column_names, path, _optional(entity))
    return staged


REJECT_COLUMNS = ("run_id", "source_file", "row_number", "reason", "raw_payload")


def insert_rejects(cur, entity: Entity, paths: list[Path]) -> tuple[int, int]:
    """Add the rejects files to the entity's rejects table, one row per distinct record (its
    JSON text's md5); a record already there is kept as it was first rejected.

    Returns (distinct records in the files, of which new to the table).
    """
    stage = sql.Identifier(f"stage_{entity.rejects_table}")
    cur.execute(
        sql.SQL("create temporary table {} (run_id text, source_file text, row_number bigint,"
                " reason text, raw_payload text) on commit drop").format(stage)
    )
    for path in paths:
        copy_csv(cur, stage, REJECT_COLUMNS, path)
    cur.execute(sql.SQL("select count(distinct md5(raw_payload)) from {}").format(stage))
    distinct = cur.fetchone()[0]
    cols = sql.SQL(", ").join(map(sql.Identifier, REJECT_COLUMNS))
    cur.execute(
        sql.SQL(
            "insert into {target} (payload_md5, {cols})"
            " select distinct on (md5(raw_payload)) md5(raw_payload), {cols} from {stage}"
            " order by md5(raw_payload), source_file, row_number"
            " on conflict (payload_md5) do nothing"
        ).format(target=sql.Identifier(entity.schema, entity.rejects_table), cols=cols,
                 stage=stage)
    )
    return distinct, cur.rowcount


def upsert_from_staging(cur, entity: Entity, run_id: str, files: list[tuple[str, Path]],
                        staged: int) -> tuple[int, int]:
    """Upsert the staged rows into the entity's table, the latest delivery of each key winning.

    A key whose values did not change is left alone, so re-running a window changes no row.
    Returns (distinct keys staged, rows inserted or changed). The caller holds the pipeline's
    write lock, so no other run inserts the same keys meanwhile.
    """
    stage = sql.Identifier(f"stage_{entity.table}")
    key = sql.Identifier(entity.primary_key)
    cur.execute("set local work_mem = '256MB'")
    # Earlier deliveries of a key delivered more than once in this run lose to the latest.
    cur.execute(
        sql.SQL(
            "delete from {stage} as s using ("
            " select {key}, max(_seq) as last_seq from {stage} group by {key} having count(*) > 1"
            ") as d where s.{key} = d.{key} and s._seq < d.last_seq"
        ).format(stage=stage, key=key)
    )
    distinct = staged - cur.rowcount
    cur.execute(sql.SQL("analyze {}").format(stage))
    params = {"run_id": run_id, "files": [k for k, _ in files]}
    return distinct, _update_changed(cur, entity, params) + _insert_new(cur, entity, params)


# The landing key of a staged row's file: params["files"] in delivery order, by _file_no.
_SOURCE_FILE = sql.SQL("(%(files)s::text[])[s._file_no + 1]")


def _update_changed(cur, entity: Entity, params: dict) -> int:
    """Update the keys already in the table whose values the staging changes; returns how many."""
    other_cols = [sql.Identifier(c) for c in entity.column_names if c != entity.primary_key]
    comma = sql.SQL(", ")
    cur.execute(
        sql.SQL(
            "update {target} as t set {updates}, _run_id = %(run_id)s, _loaded_at = now(),"
            " _source_file = {source_file}"
            " from {stage} as s where t.{key} = s.{key} and ({t_other}) is distinct from ({s_other})"
        ).format(
            target=sql.Identifier(entity.schema, entity.table),
            updates=comma.join(sql.SQL("{0} = s.{0}").format(c) for c in other_cols),
            source_file=_SOURCE_FILE,
            stage=sql.Identifier(f"stage_{entity.table}"),
            key=sql.Identifier(entity.primary_key),
            t_other=comma.join(sql.SQL("t.{}").format(c) for c in other_cols),
            s_other=comma.join(sql.SQL("s.{}").format(c) for c in other_cols),
        ),
        params,
    )
    return cur.rowcount


def _insert_new(cur, entity: Entity, params: dict) -> int:
    """Insert the staged keys not in the table yet; returns how many."""
    target = sql.Identifier(entity.schema, entity.table)
    data_cols = [sql.Identifier(c) for c in entity.column_names]
    comma = sql.SQL(", ")
    cur.execute(
        sql.SQL(
            "insert into {target} ({cols}, _run_id, _loaded_at, _source_file)"
            " select {s_cols}, %(run_id)s, now(), {source_file} from {stage} as s"
            " where not exists (select from {target} as t where t.{key} = s.{key})"
        ).format(
            target=target,
            cols=comma.join(data_cols),
            s_cols=comma.join(sql.SQL("s.{}").format(c) for c in data_cols),
            source_file=_SOURCE_FILE,
            stage=sql.Identifier(f"stage_{entity.table}"),
            key=sql.Identifier(entity.primary_key),
        ),
        params,
    )
    return cur.rowcount


def prepare_upsert(conn, entity: Entity) -> None:
    """Nothing to prepare: PostgreSQL's DDL is transactional, ``stage_files`` and
    ``insert_rejects`` create their temporary tables inside the load's transaction."""


def upsert_watermark(cur, entity: Entity, watermark, run_id: str) -> None:
    """Set the entity's watermark, never moving it backwards."""
    cur.execute(
        """
        insert into ops.watermarks as w (pipeline, entity, watermark, run_id)
        values (%s, %s, %s, %s)
        on conflict (pipeline, entity) do update
            set watermark = excluded.watermark, run_id = excluded.run_id, updated_at = now()
            where excluded.watermark > w.watermark
        """,
        (entity.pipeline, entity.name, watermark, run_id),
    )


def upsert_run(cur, row: dict) -> None:
    """Insert or update the ``ops.pipeline_runs`` row of ``row["run_id"]``: a value not given
    (None) keeps the one recorded, ``error`` and ``finished_at`` are always the latest."""
    columns = list(row)
    kept = [c for c in columns if c not in ("run_id", "error")]
    cur.execute(
        sql.SQL(
            "insert into ops.pipeline_runs as r ({columns}, finished_at)"
            " values ({values}, clock_timestamp())"
            " on conflict (run_id) do update set {kept},"
            " error = excluded.error, finished_at = excluded.finished_at"
        ).format(
            columns=sql.SQL(", ").join(map(sql.Identifier, columns)),
            values=sql.SQL(", ").join(sql.Placeholder(c) for c in columns),
            kept=sql.SQL(", ").join(
                sql.SQL("{0} = coalesce(excluded.{0}, r.{0})").format(sql.Identifier(c))
                for c in kept
            ),
        ),
        row,
    )


def prepare_file_load(conn, entity: Entity) -> None:
    """Nothing to prepare: PostgreSQL's DDL is transactional, the load creates what it needs."""


def copy_file_rows(cur, entity: Entity, key: str, checksum: str, counts) -> None:
    """COPY a file's valid rows into the entity's raw table (its lineage from the session's
    settings) and its rejected rows into ``raw.load_rejects``."""
    cur.execute("select set_config('mage_project.file_key', %s, true),"
                " set_config('mage_project.file_checksum', %s, true)", (key, checksum))
    copy_csv(cur, sql.Identifier(entity.schema, entity.table),
             [*entity.column_names, "_row_number"], Path(counts.valid_path))
    cur.execute("create temporary table if not exists stage_load_rejects"
                " (row_number bigint, reason text, raw_line text) on commit drop")
    cur.execute("truncate stage_load_rejects")
    copy_csv(cur, sql.Identifier("stage_load_rejects"),
             ["row_number", "reason", "raw_line"], Path(counts.rejects_path))
    cur.execute(
        "insert into raw.load_rejects (file_key, file_checksum, row_number, reason, raw_line)"
        " select %s, %s, row_number, reason, raw_line from stage_load_rejects",
        (key, checksum),
    )
