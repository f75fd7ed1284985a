"""The Snowflake backend of the warehouse interface (``warehouse.interface.Warehouse``):
migrations, the per-pipeline write lock, and the bulk path (PUT to a stage + COPY INTO), with
the same members, signatures and errors as ``warehouse.postgres``.

Snowflake commits on every DDL statement, so what a load needs of DDL (a temporary stage and
temporary staging tables) is created by ``prepare_file_load`` (``prepare_upsert``) before the
load's transaction begins; inside it there is only PUT, COPY INTO and DML, which commit or roll
back together.

Identifiers come from the entity declarations (checked against a strict pattern here) and are
double-quoted upper case, which is how Snowflake stores unquoted names; values are always
bound parameters.
"""

from __future__ import annotations

import csv
import logging
import re
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import orjson

from mage_project import config
from mage_project.entities import Entity
from mage_project.faults import failpoint
from mage_project.landing import csv_line
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

NAME = "snowflake"

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


def describe() -> str:
    settings = config.snowflake()
    where = f"{settings.host}:{settings.port}" if settings.host else settings.account
    return f"Snowflake {where}/{settings.database}"


def connect(role: str):
    """A connection as the project role ``role`` (config.OWNER or one of config.ROLES)."""
    import snowflake.connector

    settings = config.snowflake(role)
    try:
        return snowflake.connector.connect(**settings.connect_kwargs())
    except snowflake.connector.errors.Error as exc:
        raise WarehouseUnavailable(f"cannot connect to {describe()}: {exc}") from exc


@contextmanager
def connection(role: str):
    conn = connect(role)
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


def streaming_cursor(conn):
    """A plain cursor: snowflake-connector-python streams result batches as they are fetched."""
    return conn.cursor()


def dbt_environment() -> dict[str, str]:
    """Nothing beyond the user's SNOWFLAKE_* settings, which are checked here (a missing one
    fails now, naming the variable)."""
    config.snowflake()
    return {}


def row_count(cur, schema: str, table: str) -> int:
    cur.execute(f"select count(*) from {ident(schema, table)}")  # noqa: S608 - ident() names
    return int(cur.fetchone()[0])


def roles_sql() -> str:
    """The SQL that creates the project's roles and grants them, for the configured database and
    warehouse (an administrator runs it: the project's own user does not manage roles)."""
    settings = config.snowflake()
    text = resources.files("mage_project.warehouse").joinpath("sql/roles/snowflake_roles.sql").read_text(
        encoding="utf-8")
    return text.replace("{database}", ident(settings.database)).replace(
        "{warehouse}", ident(settings.warehouse))


def grant_reads(cur, relation: str, columns: list[str]) -> None:
    """The analyst role (SNOWFLAKE_ANALYST_ROLE; none set: the project's roles are not in use)
    reads ``relation`` when ``columns`` are all of its columns: Snowflake has no column
    privileges, so a table with a column withheld is not granted at all."""
    role = config.snowflake_role(config.ANALYST)
    if role is None:
        return
    schema, _, table = relation.partition(".")
    every = [c.name for c in table_columns(cur, schema, table)]
    action = ("grant select on table {} to role {}" if set(every) <= {c.lower() for c in columns}
              else "revoke select on table {} from role {}")
    cur.execute(action.format(ident(schema, table), ident(role)))


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


def acquire_run_lock(cur, pipeline: str, timeout_seconds: float) -> None:
    """Take ``pipeline``'s write lock for the current transaction, waiting up to the timeout.

    Snowflake lets one transaction at a time update a table's rows: updating the pipeline's
    row of ``ops.run_locks`` first thing makes a second writer wait there until the first
    commits. The wait is bounded by the session's LOCK_TIMEOUT, which ``connect`` sets from
    RUN_LOCK_TIMEOUT_SECONDS (at login: fakesnow does not implement ALTER SESSION SET
    LOCK_TIMEOUT, and ignores the login parameter). A wait cut by it, SQLSTATE 57014,
    leaves as RunLockError.
    """
    from snowflake.connector.errors import DatabaseError

    update = ("update ops.run_locks set locked_at = current_timestamp()"
              " where pipeline = %s")
    try:
        cur.execute(update, (pipeline,))
        if cur.rowcount == 0:  # the pipeline's first run: its row, then the lock
            cur.execute("insert into ops.run_locks (pipeline) values (%s)", (pipeline,))
            cur.execute(update, (pipeline,))
    except DatabaseError as exc:
        if exc.sqlstate != "57014":  # statement cancelled: here, the lock wait timed out
            raise
        raise RunLockError(
            f"another run of {pipeline} is still writing; gave up after {timeout_seconds:g} s "
            f"(RUN_LOCK_TIMEOUT_SECONDS): {exc.msg}") from None
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


# What a local path cannot hold in a PUT, and why: the connector finds a quoted path's end at its
# next quote (for GCS stages, escaped or not) and expands the path as a glob; Snowflake reads a
# backslash in a string as an escape; the stand-in reads the path as a URL.
_PUT_UNSAFE = {"'": "a quote ends the quoted path", "\\": "a backslash is an escape in a string",
               "*": "a glob pattern", "?": "a glob pattern or a URL's query", "[": "a glob pattern",
               "]": "a glob pattern", "%": "a URL escape", "#": "a URL's fragment"}


def put_location(path: Path) -> str:
    """The quoted ``'file://...'`` of a PUT of the local ``path`` (whose file name may be a glob
    of ours, ``*``); ``ConfigError`` when the path holds what a PUT cannot carry (a quote, a
    backslash, glob or URL characters, a control character), naming the setting to change."""
    location = path.resolve().as_posix()
    folder, _, name = location.rpartition("/")
    found = sorted({c for c in folder + name.replace("*", "")
                    if c in _PUT_UNSAFE or ord(c) < 32 or ord(c) == 127})
    if found:
        why = "; ".join(f"{c!r}: {_PUT_UNSAFE.get(c, 'a control character')}" for c in found)
        raise config.ConfigError(
            f"cannot PUT {location!r} to Snowflake: its local path holds {why}. Set WORK_DIR"
            " (or PROJECT_DATA_DIR) to a folder whose path has none of them")
    return f"'file://{location}'"


def _put(cur, path: Path, folder: str) -> None:
    if not _NAME.fullmatch(folder):  # a stage path of ours (a table's name): never quoted text
        raise ValueError(f"not a plain stage folder: {folder!r}")
    cur.execute(f"put {put_location(path)} @{ident(STAGE)}/{folder}/"
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


# --- the upsert path (user_activity_ingest): latest delivery of a key wins ---------------------
#
# Snowflake enforces no primary key, so there is no fast path of COPY straight into the table
# (PostgreSQL's, which a duplicate key sends back to staging): every load stages its files,
# keeps the latest delivery of each key, updates the keys whose values changed and inserts the
# new ones, all in the load's transaction and under the pipeline's write lock.
#
# Why UPDATE ... FROM + INSERT ... WHERE NOT EXISTS and not one MERGE: fakesnow 0.12.1 runs a
# MERGE as CREATE TEMPORARY TABLE merge_candidates + DML, and its CREATE TABLE bookkeeping
# writes to a second DuckDB database, which DuckDB refuses inside a transaction that has
# already written (the write lock's update is the first statement): the MERGE answers HTTP 500.
# Both statements are plain Snowflake SQL; under the write lock they do what the MERGE would.

# The delivery order of the staged rows: the file's position in the run, and the row's position
# in the whole run (files in order, rows in file order). COPY cannot number rows without a
# transformation (fakesnow runs none), so stage_files writes both into the files it stages.
_FILE_NO, _SEQ = "_file_no", "_seq"
_REJECT_COLUMNS = ("run_id", "source_file", "row_number", "reason", "raw_payload")


def _files_table(entity: Entity) -> str:
    return ident(f"stage_{entity.table}_files")


def _rejects_staging_table(entity: Entity) -> str:
    return ident(f"stage_{entity.rejects_table}")


def _json_columns(entity: Entity) -> list[int]:
    return [i for i, c in enumerate(entity.columns) if c.pg_type == "jsonb"]


def prepare_upsert(conn, entity: Entity) -> None:
    """The DDL an upsert load needs, before its transaction: an empty temporary stage, the
    staging table (JSON columns as text, converted by ``upsert_from_staging``), the table of the
    run's files and the rejects' staging table."""
    cur = conn.cursor()
    # Temporary objects live in the session's current schema (fakesnow refuses them qualified).
    cur.execute(f"use schema {ident(entity.schema)}")
    columns = ", ".join(
        f"{ident(c.name)} {'varchar' if c.pg_type == 'jsonb' else _TYPES[c.pg_type]}"
        for c in entity.columns
    )
    cur.execute(f"create or replace temporary stage {ident(STAGE)}")
    cur.execute(f"create or replace temporary table {_staging_table(entity)}"
                f" ({columns}, {ident(_FILE_NO)} number(10,0), {ident(_SEQ)} number(19,0))")
    cur.execute(f"create or replace temporary table {_files_table(entity)}"
                f" ({ident(_FILE_NO)} number(10,0), {ident('_source_file')} varchar)")
    cur.execute(f"create or replace temporary table {_rejects_staging_table(entity)}"
                " (run_id varchar, source_file varchar, row_number number(19,0), reason varchar,"
                " raw_payload varchar)")


def _write_staged(entity: Entity, source: Path, target: Path, file_no: int, first_seq: int) -> int:
    """Copy a validated file to ``target`` with its delivery order; returns the rows written.

    Streams row by row. An empty field, quoted or not, is written as NULL (as PostgreSQL's COPY
    reads it with force_null); a JSON value is written with its keys sorted and a repeated key
    kept once (the last, as jsonb keeps it: parse_json refuses repeated keys).
    """
    json_columns = _json_columns(entity)
    seq = first_seq
    with (
        open(source, encoding="utf-8", newline="") as src,
        open(target, "w", encoding="utf-8", newline="") as out,
    ):
        reader = csv.reader(src, strict=True)
        header = next(reader, None)
        if header != entity.column_names:
            raise ValueError(f"{source} has header {header}, expected {entity.column_names}")
        out.write(csv_line([*header, _FILE_NO, _SEQ]))
        for row in reader:
            values = [value or None for value in row]
            for i in json_columns:
                if values[i] is not None:
                    values[i] = orjson.dumps(orjson.loads(values[i]),
                                             option=orjson.OPT_SORT_KEYS).decode()
            seq += 1
            out.write(csv_line([*values, str(file_no), str(seq)]))
    return seq - first_seq


def _copy_folder(cur, table: str, columns: list[str], folder: str, expected: int) -> None:
    """COPY every file PUT under ``folder`` of the stage into ``table``; all rows or an error."""
    cur.execute(f"copy into {table} ({', '.join(ident(c) for c in columns)})"
                f" from @{ident(STAGE)}/{folder}/ file_format = ({_CSV_FORMAT})"
                " on_error = abort_statement")
    names = [d[0].lower() for d in cur.description]
    loaded = sum(row[names.index("rows_loaded")] or 0 for row in cur.fetchall())
    if loaded != expected:  # e.g. a file skipped as loaded before: never silently fewer rows
        raise RuntimeError(f"COPY INTO {table} loaded {loaded} rows of {expected}")


def stage_files(cur, entity: Entity, files: list[tuple[str, Path]]) -> int:
    """PUT the files to the temporary stage with their delivery order and COPY them into the
    staging table. Returns the rows staged.

    ``files`` are (landing key, validated file) in delivery order; ``_file_no`` is a file's
    position in it, ``_seq`` a row's position in the run.
    """
    return _stage(cur, entity, files, entity.table)


def _stage(cur, entity: Entity, files: list[tuple[str, Path]], folder: str) -> int:
    """``stage_files`` through the stage's ``folder``: COPY skips a file it loaded before into
    the table, so a second staging in one load (after ``copy_into_target``) needs other paths."""
    staged = 0
    with tempfile.TemporaryDirectory(prefix="snowflake-stage-", dir=config.work_dir()) as tmp:
        for file_no, (_key, path) in enumerate(files):
            target = Path(tmp) / f"part-{file_no:05d}.csv"
            rows = _write_staged(entity, Path(path), target, file_no, staged)
            if rows == 0:
                target.unlink()  # a file of no rows costs no PUT (nor COPY's header-only case)
            staged += rows
        if staged:
            _put(cur, Path(tmp) / "part-*.csv", folder)
    if staged:
        _copy_folder(cur, _staging_table(entity), [*entity.column_names, _FILE_NO, _SEQ],
                     folder, staged)
    if files:
        insert = (f"insert into {_files_table(entity)}"  # noqa: S608 - ident() names only
                  f" ({ident(_FILE_NO)}, {ident('_source_file')}) values (%s, %s)")
        cur.executemany(insert, [(file_no, key) for file_no, (key, _path) in enumerate(files)])
    return staged


def copy_into_target(cur, entity: Entity, run_id: str, files: list[tuple[str, Path]]) -> int:
    """The files straight into the entity's table, refusing keys as PostgreSQL's primary key
    does: a key already in the table, or twice in the files, raises DuplicateKeyError with
    nothing written (the staging tables emptied again). Returns the rows copied.

    Snowflake enforces no key, so the files are staged and their keys checked first: this costs
    what a staged upsert costs, which is why ``load_rows`` always takes that path here.
    """
    # A folder of its own each time: COPY skips a path it loaded into the table before.
    staged = _stage(cur, entity, files, f"direct_{entity.table}_{uuid.uuid4().hex[:12]}")
    stage, key = _staging_table(entity), ident(entity.primary_key)
    target = ident(entity.schema, entity.table)
    cur.execute(
        f"select (select count(*) - count(distinct {key}) from {stage})"  # noqa: S608 - ident()
        f" + (select count(*) from {stage} as s join {target} as t on t.{key} = s.{key})"
    )
    (duplicates,) = cur.fetchone()
    if duplicates:
        cur.execute(f"delete from {stage}")  # noqa: S608 - ident() names
        cur.execute(f"delete from {_files_table(entity)}")  # noqa: S608 - ident() names
        raise DuplicateKeyError(f"{entity.schema}.{entity.table}: {duplicates} rows of keys"
                                " already in the table or delivered twice")
    return upsert_from_staging(cur, entity, run_id, files, staged)[1]


def load_rows(cur, entity: Entity, run_id: str, files: list[tuple[str, Path]], *,
              new_window: bool) -> tuple[int, int, int]:
    """Stage the files and upsert them, whether or not the window is new: with no key enforced,
    a straight copy would have to stage and check the keys anyway (``copy_into_target``).
    Returns (staged, distinct keys, inserted or changed)."""
    staged = stage_files(cur, entity, files)
    failpoint("after_staging_copy")
    distinct, changed = upsert_from_staging(cur, entity, run_id, files, staged)
    return staged, distinct, changed


def upsert_from_staging(cur, entity: Entity, run_id: str, files: list[tuple[str, Path]],
                        staged: int) -> tuple[int, int]:
    """Upsert the staged rows into the entity's table, the latest delivery of each key winning.

    A key whose values did not change is left alone, so re-running a window changes no row.
    Returns (distinct keys staged, rows inserted or changed). The caller holds the pipeline's
    write lock, so no other run writes the same keys meanwhile.
    """
    stage, key = _staging_table(entity), ident(entity.primary_key)
    seq = ident(_SEQ)
    # Earlier deliveries of a key delivered more than once in this run lose to the latest.
    # (Here and below: names from ident() only, values bound.)
    cur.execute(
        f"delete from {stage} as s using ("  # noqa: S608
        f" select {key}, max({seq}) as last_seq from {stage} group by {key} having count(*) > 1"
        f") as d where s.{key} = d.{key} and s.{seq} < d.last_seq"
    )
    distinct = staged - cur.rowcount
    if distinct == 0:
        return 0, 0
    target = ident(entity.schema, entity.table)
    others = [ident(c) for c in entity.column_names if c != entity.primary_key]
    data = [ident(c) for c in entity.column_names]
    json_columns = {entity.column_names[i] for i in _json_columns(entity)}
    source_file = ident("_source_file")
    # The staged rows as the table's types, with the name of the file each came from.
    select = ", ".join(f"parse_json(st.{ident(c)}) as {ident(c)}" if c in json_columns
                       else f"st.{ident(c)}" for c in entity.column_names)
    source = (f"(select {select}, f.{source_file} from {stage} as st"  # noqa: S608
              f" join {_files_table(entity)} as f on f.{ident(_FILE_NO)} = st.{ident(_FILE_NO)})")
    changed = " or ".join(f"t.{c} is distinct from s.{c}" for c in others)
    update = (
        f"update {target} as t set {', '.join(f'{c} = s.{c}' for c in others)},"  # noqa: S608
        f" {ident('_run_id')} = %(run_id)s, {ident('_loaded_at')} = current_timestamp(),"
        f" {source_file} = s.{source_file}"
        f" from {source} as s where t.{key} = s.{key} and ({changed})"
    )
    cur.execute(update, {"run_id": run_id})
    updated = cur.rowcount
    insert = (
        f"insert into {target} ({', '.join(data)}, {ident('_run_id')},"  # noqa: S608
        f" {ident('_loaded_at')}, {source_file})"
        f" select {', '.join(f's.{c}' for c in data)}, %(run_id)s, current_timestamp(),"
        f" s.{source_file} from {source} as s"
        f" where not exists (select 1 from {target} as t where t.{key} = s.{key})"
    )
    cur.execute(insert, {"run_id": run_id})
    return distinct, updated + cur.rowcount


def insert_rejects(cur, entity: Entity, paths: list[Path]) -> tuple[int, int]:
    """Add the rejects files to the entity's rejects table, one row per distinct record (its
    JSON text's md5); a record already there is kept as it was first rejected.

    Returns (distinct records in the files, of which new to the table)."""
    rows = 0
    with tempfile.TemporaryDirectory(prefix="snowflake-stage-", dir=config.work_dir()) as tmp:
        combined = Path(tmp) / "rejects.csv"
        with open(combined, "w", encoding="utf-8", newline="") as out:
            out.write(csv_line(_REJECT_COLUMNS))
            for path in paths:
                with open(path, encoding="utf-8", newline="") as src:
                    reader = csv.reader(src, strict=True)
                    header = next(reader, None)
                    if header is None:
                        continue
                    if tuple(header) != _REJECT_COLUMNS:
                        raise ValueError(f"{path} has header {header}, expected {_REJECT_COLUMNS}")
                    for row in reader:
                        out.write(csv_line(row))
                        rows += 1
        if rows == 0:  # nothing to PUT (and COPY cannot read a header-only file on fakesnow)
            return 0, 0
        _put(cur, combined, entity.rejects_table)
    stage = _rejects_staging_table(entity)
    _copy_folder(cur, stage, list(_REJECT_COLUMNS), entity.rejects_table, rows)
    cur.execute(f"select count(distinct md5({ident('raw_payload')})) from {stage}")  # noqa: S608
    distinct = cur.fetchone()[0]
    cols = ", ".join(ident(c) for c in _REJECT_COLUMNS)
    target = ident(entity.schema, entity.rejects_table)
    md5 = f"md5(s.{ident('raw_payload')})"
    cur.execute(
        f"insert into {target} ({ident('payload_md5')}, {cols})"  # noqa: S608 - ident() names
        f" select {md5}, {', '.join(f's.{ident(c)}' for c in _REJECT_COLUMNS)} from {stage} as s"
        f" where not exists (select 1 from {target} as t where t.{ident('payload_md5')} = {md5})"
        f" qualify row_number() over (partition by {md5}"
        f" order by s.{ident('source_file')}, s.{ident('row_number')}) = 1"
    )
    return distinct, cur.rowcount


def upsert_watermark(cur, entity: Entity, watermark, run_id: str) -> None:
    """Set the entity's watermark, never moving it backwards. Update, else insert: the caller
    holds the pipeline's write lock (and fakesnow runs no MERGE inside a transaction)."""
    key = (entity.pipeline, entity.name)
    cur.execute(
        "update ops.watermarks set watermark = %s, run_id = %s, updated_at = current_timestamp()"
        " where pipeline = %s and entity = %s and watermark < %s",
        (watermark, run_id, *key, watermark),
    )
    if cur.rowcount:
        return
    cur.execute("select 1 from ops.watermarks where pipeline = %s and entity = %s", key)
    if cur.fetchone() is None:
        cur.execute("insert into ops.watermarks (pipeline, entity, watermark, run_id)"
                    " values (%s, %s, %s, %s)", (*key, watermark, run_id))


# ops.pipeline_runs columns that are not text, for the casts of their bound values.
_RUN_TYPES = {"window_start": "timestamp_tz", "window_end": "timestamp_tz",
              "started_at": "timestamp_tz", "duration_seconds": "float",
              "rows_fetched": "number(19,0)", "rows_loaded": "number(19,0)",
              "rows_rejected": "number(19,0)", "rows_duplicate": "number(19,0)",
              "rows_changed": "number(19,0)"}


def upsert_run(cur, row: dict) -> None:
    """Insert or update the ``ops.pipeline_runs`` row of ``row["run_id"]``: a value not given
    (None) keeps the one recorded, ``error`` and ``finished_at`` are always the latest.

    Update, else insert: one run's row is written by that run, then maybe by its failure
    callback, never by two processes at once.
    """
    columns = list(row)
    name = {c: ident(c) for c in columns}
    value = {c: f"%({c})s::{_RUN_TYPES.get(c, 'varchar')}" for c in columns}
    kept = ", ".join(f"{name[c]} = coalesce({value[c]}, {name[c]})" for c in columns
                     if c not in ("run_id", "error"))
    cur.execute(
        f"update ops.pipeline_runs set {kept}, {name['error']} = {value['error']},"  # noqa: S608
        f" finished_at = current_timestamp() where {name['run_id']} = {value['run_id']}",
        row,
    )
    if cur.rowcount:
        return
    cur.execute(
        f"insert into ops.pipeline_runs ({', '.join(name.values())}, finished_at)"  # noqa: S608
        f" values ({', '.join(value.values())}, current_timestamp())",
        row,
    )
