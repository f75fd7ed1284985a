"""The warehouse interface (mage_project.warehouse.interface.Warehouse): both backends offer
every member with the same signature, and each member does the same on the embedded
PostgreSQL and on the Snowflake stand-in (fakesnow, through the real connector), errors
included: a duplicate key, the write lock, a lease, an unreachable warehouse.
"""

from __future__ import annotations

import inspect
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from support import free_port

from mage_project import warehouse
from mage_project.entities import USER_ACTIVITY as ENTITY
from mage_project.landing import csv_line
from mage_project.warehouse import RunLockError, interface, postgres, snowflake
from mage_project.warehouse.portable import canonical_type

pytestmark = pytest.mark.integration

BACKENDS = {"postgres": "warehouse", "snowflake": "snowflake_warehouse"}
DAY = datetime(2026, 11, 3, tzinfo=UTC)


def members() -> list[str]:
    return sorted(name for name, value in vars(interface.Warehouse).items()
                  if callable(value) and not name.startswith("_"))


def call_shape(function, drop_self: bool = False) -> list[tuple]:
    """(name, kind, default) of each parameter: what a caller can rely on."""
    params = list(inspect.signature(function).parameters.values())[1 if drop_self else 0:]
    return [(p.name, p.kind, p.default) for p in params]


@pytest.mark.parametrize("module", [postgres, snowflake], ids=["postgres", "snowflake"])
def test_each_backend_implements_every_member_with_the_interfaces_signature(module):
    assert len(members()) == 38
    for name in members():
        assert callable(getattr(module, name, None)), f"{module.NAME} lacks {name}"
        assert call_shape(getattr(module, name)) == call_shape(
            getattr(interface.Warehouse, name), drop_self=True), name
    assert module.NAME == module.__name__.rsplit(".", 1)[1]
    assert isinstance(module, interface.Warehouse)


def test_both_backends_have_the_same_surface_and_warehouse_picks_them(monkeypatch):
    for name in members():
        assert call_shape(getattr(postgres, name)) == call_shape(getattr(snowflake, name)), name
    assert warehouse.backend() is postgres
    monkeypatch.setenv("WAREHOUSE", "snowflake")
    assert warehouse.backend() is snowflake


@pytest.fixture(params=list(BACKENDS))
def db(request):
    """A fresh, migrated database on the backend of the param, configured as the user would."""
    request.getfixturevalue(BACKENDS[request.param])
    backend = warehouse.backend()
    assert backend.NAME == request.param
    with backend.connection("owner") as conn:
        assert "001" in backend.migrate(conn)[0]
        assert backend.migrate(conn) == []  # applied once
    return backend


def event(n: int, *, hours: int = 0, kind: str = "page_view", amount: str = "") -> list[str]:
    occurred = (DAY + timedelta(hours=hours)).isoformat()
    return [f"e{n}", str(100 + n % 3), kind, occurred, f"s{n}", "/home", '{"b": 1, "a": 2}',
            amount]


def valid_file(tmp_path, name: str, *events: list[str]):
    path = tmp_path / name
    path.write_text(csv_line(ENTITY.column_names) + "".join(csv_line(e) for e in events))
    return (f"activity/user_activity/date=2026-11-03/{name}", path)


def rows(db, statement: str, params=None) -> list[tuple]:
    with db.connection("owner") as conn, db.transaction(conn) as cur:
        cur.execute(statement, params)
        return [tuple(r) for r in cur.fetchall()]


def test_a_duplicate_key_raises_the_projects_error_and_copies_nothing(db, tmp_path):
    twice = valid_file(tmp_path, "twice.csv", event(1), event(2), event(1))
    clean = valid_file(tmp_path, "clean.csv", event(1), event(2, kind="purchase", amount="9.5"))
    with db.connection("owner") as conn:
        db.prepare_upsert(conn, ENTITY)
        with db.transaction(conn) as cur:
            with pytest.raises(warehouse.DuplicateKeyError, match="user_activity"):
                db.copy_into_target(cur, ENTITY, "run-1", [twice])
            assert db.row_count(cur, "raw", "user_activity") == 0
            assert db.copy_into_target(cur, ENTITY, "run-1", [clean]) == 2
            with pytest.raises(warehouse.DuplicateKeyError):  # keys already in the table
                db.copy_into_target(cur, ENTITY, "run-1", [clean])
            assert db.row_count(cur, "raw", "user_activity") == 2
    assert rows(db, "select event_id, _run_id, _source_file from raw.user_activity"
                    " order by event_id") == [("e1", "run-1", clean[0]), ("e2", "run-1", clean[0])]


def test_load_rows_upserts_the_latest_delivery_and_changes_no_row_again(db, tmp_path):
    first = valid_file(tmp_path, "a.csv", event(1), event(2), event(1, kind="purchase",
                                                                          amount="3.25"))
    with db.connection("owner") as conn:
        db.prepare_upsert(conn, ENTITY)
        with db.transaction(conn) as cur:
            # Delivered twice in the run: the straight copy (if any) falls back to the upsert.
            assert db.load_rows(cur, ENTITY, "run-1", [first], new_window=True) == (3, 2, 2)
        db.prepare_upsert(conn, ENTITY)
        with db.transaction(conn) as cur:
            assert db.load_rows(cur, ENTITY, "run-2", [first], new_window=False) == (3, 2, 0)
        with db.transaction(conn) as cur:
            assert db.activity_by_day(cur, DAY, DAY + timedelta(days=1)) == [
                interface.ActivityDay(date(2026, 11, 3), 2, 2, 1, Decimal("3.25"))]
            cur.execute("select event_type, _run_id from raw.user_activity where event_id = 'e1'")
            assert tuple(cur.fetchone()) == ("purchase", "run-1")


def test_rejects_are_kept_once_per_record(db, tmp_path):
    path = tmp_path / "rejects.csv"
    path.write_text(csv_line(["run_id", "source_file", "row_number", "reason", "raw_payload"])
                    + csv_line(["run-1", "f.csv", "1", "bad type", '{"x": 1}'])
                    + csv_line(["run-1", "f.csv", "2", "bad type", '{"x": 1}'])
                    + csv_line(["run-1", "f.csv", "3", "no key", '{"y": 2}']))
    for new in (2, 0):
        with db.connection("owner") as conn:
            db.prepare_upsert(conn, ENTITY)
            with db.transaction(conn) as cur:
                assert db.insert_rejects(cur, ENTITY, [path]) == (2, new)
    assert rows(db, "select row_number, reason from raw.user_activity_rejects"
                    " order by row_number") == [(1, "bad type"), (3, "no key")]


def test_a_transaction_commits_or_leaves_nothing(db):
    with db.connection("owner") as conn:
        with pytest.raises(ZeroDivisionError), db.transaction(conn) as cur:
            db.upsert_watermark(cur, ENTITY, DAY, "run-1")
            1 / 0  # noqa: B018
        with db.transaction(conn) as cur:
            assert db.read_watermark(cur, ENTITY) is None
            db.upsert_watermark(cur, ENTITY, DAY, "run-1")
        with db.transaction(conn) as cur:
            db.upsert_watermark(cur, ENTITY, DAY - timedelta(days=1), "run-2")  # never backwards
            assert db.read_watermark(cur, ENTITY) == DAY
            db.upsert_watermark(cur, ENTITY, DAY + timedelta(days=1), "run-3")
            assert db.read_watermark(cur, ENTITY) == DAY + timedelta(days=1)


def test_a_runs_row_keeps_the_counts_recorded_and_the_latest_error(db):
    base = {"run_id": "run-1", "pipeline": ENTITY.pipeline, "window_start": DAY,
            "window_end": DAY + timedelta(days=1), "status": "success", "rows_fetched": 10,
            "rows_loaded": 8, "rows_rejected": 2, "rows_duplicate": 0, "rows_changed": 8,
            "error": None}
    with db.connection("owner") as conn:
        with db.transaction(conn) as cur:
            db.upsert_run(cur, base)
            assert db.window_loaded_before(cur, ENTITY.pipeline, DAY + timedelta(hours=1),
                                           DAY + timedelta(hours=2))
            assert not db.window_loaded_before(cur, ENTITY.pipeline, DAY + timedelta(days=1),
                                               DAY + timedelta(days=2))
            db.upsert_run(cur, {**{k: None for k in base}, "run_id": "run-1",
                                "pipeline": ENTITY.pipeline, "status": "failed",
                                "error": "a test failed"})
        with db.transaction(conn) as cur:
            assert db.run_counts(cur, "run-1") == {
                "status": "failed", "rows_fetched": 10, "rows_loaded": 8, "rows_rejected": 2,
                "rows_duplicate": 0, "rows_changed": 8}
            assert db.run_counts(cur, "run-2") is None


def test_the_write_lock_is_taken_in_a_transaction(db):
    with db.connection("owner") as conn, db.transaction(conn) as cur:
        db.acquire_run_lock(cur, ENTITY.pipeline, 5)
        db.acquire_run_lock(cur, "warehouse_elt", 5)


@pytest.mark.usefixtures("warehouse")
def test_a_second_writer_gets_run_lock_error_on_postgres():
    # fakesnow lets two transactions update one row at once, so the Snowflake wait cannot be
    # shown on the stand-in; its translation is the next test.
    with postgres.connection("owner") as holder, postgres.connection("owner") as other:
        postgres.migrate(holder)
        with postgres.transaction(holder) as cur:
            postgres.acquire_run_lock(cur, ENTITY.pipeline, 5)
            with pytest.raises(RunLockError, match="not waiting"), \
                    postgres.transaction(other) as waiting:
                postgres.acquire_run_lock(waiting, ENTITY.pipeline, 0)
            with pytest.raises(RunLockError, match="gave up after 0.2 s"), \
                    postgres.transaction(other) as waiting:
                postgres.acquire_run_lock(waiting, ENTITY.pipeline, 0.2)


def test_snowflakes_lock_timeout_leaves_as_run_lock_error():
    from snowflake.connector.errors import ProgrammingError

    class LockedCursor:  # what the connector raises when LOCK_TIMEOUT cuts the wait
        def execute(self, *args):
            raise ProgrammingError(msg="Statement has locked table RUN_LOCKS ... timed out",
                                   errno=625, sqlstate="57014")

    with pytest.raises(warehouse.RunLockError, match="gave up after 3 s"):
        snowflake.acquire_run_lock(LockedCursor(), ENTITY.pipeline, 3)


def test_a_lease_is_held_by_one_run_until_given_up_or_expired(db):
    name, now = "warehouse_elt:marts", datetime.now(UTC)
    later, holder = now + timedelta(hours=3), ("host", "boot", 42)
    with db.connection("owner") as conn, db.transaction(conn) as cur:
        assert db.read_lease(cur, name).run_id is None
        assert db.take_lease(cur, name, "run-1", now, later, holder)
        assert not db.take_lease(cur, name, "run-2", now, later, (None, None, None))
        assert db.take_lease(cur, name, "run-1", now, later, holder)  # its own again: a retry
        lease = db.read_lease(cur, name)
        assert (lease.run_id, lease.holder_host, lease.holder_boot,
                lease.holder_process_group) == ("run-1", "host", "boot", 42)
        assert lease.expires_at == later
        assert not db.take_over_lease(cur, name, "run-2", "run-9", now, later, holder)
        assert db.take_over_lease(cur, name, "run-2", "run-1", now, later, (None, None, None))
        db.release_lease(cur, name, "run-1")  # not the holder any more: nothing changes
        assert db.read_lease(cur, name).run_id == "run-2"
        assert db.take_lease(cur, name, "run-3", later + timedelta(seconds=1), later,
                             holder)  # expired
        db.release_lease(cur, name, "run-3")
        lease = db.read_lease(cur, name)
        # (fakesnow reads a NULL timestamp_tz back as 1970-01-01: the times are not compared)
        assert (lease.run_id, lease.holder_host, lease.holder_boot,
                lease.holder_process_group) == (None, None, None, None)
        assert db.read_lease(cur, "no such lease") is None


def test_table_columns_are_read_in_order_with_one_spelling_of_their_types(db):
    """raw.user_activity as each warehouse holds it (its migration's DDL): the same canonical
    types on both, whatever each warehouse calls them."""
    with db.connection("owner") as conn, db.transaction(conn) as cur:
        columns = db.table_columns(cur, "raw", "user_activity")
        assert db.table_columns(cur, "raw", "no_such_table") == []
    # amount is numeric on PostgreSQL, number(38,10) on Snowflake (its migrations).
    amount = {"postgres": "decimal", "snowflake": "decimal(38,10)"}[db.NAME]
    assert [(c.name, c.canonical) for c in columns][:9] == [
        ("event_id", "string"), ("user_id", "integer"), ("event_type", "string"),
        ("occurred_at", "timestamptz"), ("session_id", "string"), ("page_url", "string"),
        ("properties", "json"), ("amount", amount), ("_run_id", "string")]


@pytest.mark.parametrize(("name", "canonical"), [
    ("bigint", "integer"), ("NUMBER(38,0)", "integer"), ("numeric(18, 2)", "decimal(18,2)"),
    ("NUMBER(18,2)", "decimal(18,2)"), ("numeric", "decimal"), ("character varying", "string"),
    ("VARCHAR(16777216)", "string"), ("TEXT", "string"), ("timestamp with time zone", "timestamptz"),
    ("TIMESTAMP_TZ", "timestamptz"), ("timestamp_ntz", "timestamp"), ("jsonb", "json"),
    ("VARIANT", "json"), ("FLOAT", "float"), ("interval", "interval"),
])
def test_both_warehouses_type_names_have_one_spelling(name, canonical):
    assert canonical_type(name) == canonical


def test_file_manifests(db):
    key = "crm/customers/2026-11-03/customers.csv"
    row = {"file_key": key, "entity": "crm__customers", "size_bytes": 120, "checksum": "c1",
           "run_id": "run-1", "source_tag": "t1"}
    with db.connection("owner") as conn, db.transaction(conn) as cur:
        assert (db.last_file_version(cur, key), db.latest_file_content(cur, key)) == (0, None)
        db.record_file_version(cur, {**row, "version": 1, "status": "loaded", "rows_total": 3,
                                     "rows_loaded": 2, "rows_rejected": 1})
        db.record_file_version(cur, {**row, "version": 2, "checksum": "c2", "size_bytes": 130,
                                     "status": "error", "error": "OSError: disk full"})
        assert db.last_file_version(cur, key) == 2
        assert db.latest_file_content(cur, key) == (1, "c1")  # an error loaded nothing
        db.mark_file_seen(cur, key, 1, "t2")
        assert db.files_last_seen(cur) == {key: (120, "t2")}
        assert db.files_not_loaded(cur, "run-1") == [(key, "error", "OSError: disk full")]
        assert db.file_loads_by_entity(cur) == [interface.FileLoads("crm__customers", 1, 0, 2, 1)]


def test_a_streaming_cursor_fetches_in_chunks(db):
    with db.connection("owner") as conn, db.transaction(conn) as cur:
        for n in range(5):
            db.upsert_run(cur, {"run_id": f"run-{n}", "pipeline": "p", "status": "success",
                                "error": None})
    with db.connection("owner") as conn:
        cur = db.streaming_cursor(conn)
        cur.execute("select run_id from ops.pipeline_runs order by run_id")
        assert [len(cur.fetchmany(2)) for _ in range(4)] == [2, 2, 1, 0]
        cur.close()
        conn.rollback()


def test_an_unreachable_warehouse_raises_warehouse_unavailable(db, monkeypatch):
    port = str(free_port())
    monkeypatch.setenv("POSTGRES_HOST", "127.0.0.1")
    monkeypatch.setenv("POSTGRES_PORT", port)
    monkeypatch.setenv("SNOWFLAKE_PORT", port)
    monkeypatch.setenv("SNOWFLAKE_LOGIN_TIMEOUT", "2")
    with pytest.raises(warehouse.WarehouseUnavailable, match=f"cannot connect to .*{port}"):
        db.connect("owner")


def test_describe_and_the_dbt_environment(db):
    env = db.dbt_environment()
    if db.NAME == "postgres":
        assert db.describe().endswith(f"/{env['POSTGRES_DBNAME']}")
        assert set(env) == {"POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_DBNAME"}  # the logins are the user's
    else:
        assert db.describe().startswith("Snowflake 127.0.0.1:") and env == {}
