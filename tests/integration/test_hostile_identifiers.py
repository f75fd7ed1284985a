"""Hostile identifiers and values from configuration or data (database, schema, table and column
names; landing keys; settings) with quotes, semicolons, newlines, backslashes and unicode: each is
carried by the driver (a bound value, ``psycopg2.sql.Identifier``) or refused with a clear error
before any SQL is built from it, on PostgreSQL and on the Snowflake stand-in (fakesnow), the
write-audit-publish macro and the ``PUT`` of the Snowflake loads included.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from conftest import _admin, query
from psycopg2 import sql

from mage_project import config, contracts, quality, transform
from mage_project import warehouse as warehouses
from mage_project.landing import NOT_UTF8, LandingZone
from mage_project.pipelines.file_drops import load_new_files, pending_drops
from mage_project.warehouse import snowflake

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
HOSTILE = ('a"b', "x; drop table raw.user_activity; --", "line\nbreak", "ünïcödé", "'quote", "$(id)",
           "back\\slash")
DROP = "x; drop table raw.user_activity; --"
HEADER = "customer_id,email,full_name,country,signup_at,utm_campaign,updated_at\n"
ROW = '1,ann@example.com,"Doe, Ann",US,2026-11-01T10:00:00Z,black_friday,2026-11-01T10:00:00Z\n'
FOLDER = "crm/customers/2026-11-01"
# A landing key in the layout whose file name holds a quote, a semicolon, a newline, unicode, a
# backslash and a shell substitution.
KEY = f"{FOLDER}/it's; drop table raw.user_activity; --\nünïcödé \\ $(id).csv"


@pytest.fixture
def zone(tmp_path, monkeypatch):
    url = (tmp_path / "landing").as_uri()
    monkeypatch.setenv("LANDING_URL", url)
    return LandingZone(url)


def load_one(zone: LandingZone, key: str = f"{FOLDER}/export.csv") -> dict:
    zone.write_bytes(key, (HEADER + ROW).encode())
    summary = load_new_files()
    assert len(summary["files"]) == 1, summary
    return summary["files"][0]


# --- names refused before any SQL (no service) ---------------------------------------------------


@pytest.mark.parametrize("name", HOSTILE, ids=repr)
def test_snowflake_ident_refuses_a_hostile_name(name):
    assert snowflake.ident("raw", "user_activity") == '"RAW"."USER_ACTIVITY"'
    for parts in ((name,), ("raw", name), (name, "user_activity")):
        with pytest.raises(ValueError, match="not a plain identifier"):
            snowflake.ident(*parts)


@pytest.mark.parametrize("name", HOSTILE, ids=repr)
def test_quality_identifier_refuses_a_hostile_name(name):
    assert quality.identifier("user_id") == "user_id"
    with pytest.raises(ValueError, match="not a plain SQL identifier"):
        quality.identifier(name)


@pytest.mark.parametrize("folder", ["a dir; ünïcödé $(id)", "semi;colon", "日本"], ids=repr)
def test_a_put_location_carries_spaces_semicolons_and_unicode_verbatim(tmp_path, folder):
    path = tmp_path / folder / "part-*.csv"
    assert snowflake.put_location(path) == f"'file://{path.as_posix()}'"


@pytest.mark.parametrize("folder, shown", [
    ("it's", "\"'\": a quote ends the quoted path"),
    ("back\\slash", "'\\\\': a backslash is an escape in a string"),
    ("line\nbreak", "'\\n': a control character"),
    ("br[ack]et", "'[': a glob pattern"), ("q?m", "'?': a glob pattern or a URL's query"),
    ("pct%41", "'%': a URL escape"), ("hash#x", "'#': a URL's fragment"), ("st*r", "'*': a glob pattern"),
], ids=repr)
def test_a_put_location_the_put_cannot_carry_is_refused_naming_work_dir(tmp_path, folder, shown):
    with pytest.raises(config.ConfigError) as raised:
        snowflake.put_location(tmp_path / folder / "valid-00000.csv")
    assert shown in str(raised.value)
    assert "Set WORK_DIR (or PROJECT_DATA_DIR) to a folder whose path has none of them" in str(raised.value)


@pytest.fixture
def project(tmp_path) -> Path:
    """A copy of the project's contracts and pipeline declarations to break."""
    shutil.copytree(ROOT / "contracts", tmp_path / "contracts")
    for metadata in (ROOT / "pipelines").glob("*/metadata.yaml"):
        folder = tmp_path / "pipelines" / metadata.parent.name
        folder.mkdir(parents=True)
        for file in ("metadata.yaml", "triggers.yaml"):
            if (metadata.parent / file).exists():
                shutil.copy(metadata.parent / file, folder / file)
    return tmp_path


REVENUE = "contracts/finance/revenue.yaml"


def refused(project: Path, old: str, new: str) -> list[tuple[str, str]]:
    """The violations of the revenue contract with ``old`` replaced by ``new``."""
    path = project / REVENUE
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(contracts.ContractError) as raised:
        contracts.load_contract(path, root=project)
    return raised.value.violations


def yaml_string(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


@pytest.mark.parametrize("name", HOSTILE, ids=repr)
def test_a_hostile_contract_column_name_is_refused_by_the_contract_loader(project, name):
    violations = refused(project, "      - name: gross_revenue\n",
                         f"      - name: {yaml_string(name)}\n")
    assert [(p, m) for p, m in violations if p == "$.schema[0].properties[1].name"] == [
        ("$.schema[0].properties[1].name", f"{name!r} does not match '^[a-z_][a-z0-9_]*$'")]


@pytest.mark.parametrize("name", HOSTILE, ids=repr)
def test_a_hostile_table_name_is_refused_by_the_contract_loader(project, name):
    violations = refused(project, "physicalName: marts.dim_customers",
                         f"physicalName: {yaml_string('marts.' + name)}")
    assert any(p == "$.schema[1].physicalName" and "does not match" in m for p, m in violations)


def test_a_hostile_column_of_a_duplicate_values_rule_is_refused_by_the_contract_loader(project):
    violations = refused(project, "        mustBe: 0\n        dimension: consistency\n",
                         "        mustBe: 0\n        dimension: consistency\n"
                         f"        arguments:\n          properties: [date, {yaml_string(DROP)}]\n")
    assert ("$.schema[0].quality[0].arguments.properties[1]",
            f"{DROP!r} does not match '^[a-z_][a-z0-9_]*$'") in violations


def test_every_dbt_model_has_a_plain_name_which_the_publish_macro_accepts():
    names = [p.stem for p in (ROOT / "dbt" / "warehouse" / "models").rglob("*.sql")]
    assert names and all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*", n) for n in names), names


@pytest.mark.parametrize("setting", ["SNOWFLAKE_DATABASE", "SNOWFLAKE_WAREHOUSE", "SNOWFLAKE_ROLE"])
def test_a_hostile_snowflake_setting_is_refused_before_connecting(monkeypatch, setting):
    for name, value in {"SNOWFLAKE_ACCOUNT": "acme", "SNOWFLAKE_USER": "loader",
                        "SNOWFLAKE_PASSWORD": "pw", "SNOWFLAKE_DATABASE": "analytics",
                        "SNOWFLAKE_WAREHOUSE": "transforming", "SNOWFLAKE_ROLE": "loader"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(setting, f'a"b{DROP}')
    with pytest.raises(config.ConfigError, match=f"bad setting: {setting}="):
        config.snowflake()


# --- PostgreSQL ----------------------------------------------------------------------------------


# Names the driver quotes, and dbt too; and those dbt cannot quote, which the settings refuse.
DATABASES = ["semi; colon -- drop", "ünïcödé $(id)", "dbname=postgres"]
REFUSED_DATABASES = ['a"b; drop table raw.user_activity; --', "line\nbreak", "it's", "back\\slash"]


@pytest.fixture
def hostile_database(pg_server, monkeypatch, request):
    """A database of the hostile name ``request.param`` on the embedded server, selected through
    POSTGRES_DBNAME. Yields an admin connection to the server's ``postgres`` database."""
    name = request.param
    admin = _admin(pg_server)
    with admin.cursor() as cur:
        cur.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    for setting, value in {"POSTGRES_HOST": pg_server.socket_dir, "POSTGRES_PORT": str(pg_server.port),
                           "POSTGRES_USER": pg_server.user, "POSTGRES_DBNAME": name}.items():
        monkeypatch.setenv(setting, value)
    yield admin
    with admin.cursor() as cur:
        cur.execute(sql.SQL("drop database {} with (force)").format(sql.Identifier(name)))
    admin.close()


@pytest.mark.parametrize("hostile_database", DATABASES, ids=repr, indirect=True)
def test_a_postgres_database_named_with_quotes_newlines_and_unicode_migrates_and_loads(
        hostile_database, zone):
    db = warehouses.backend()
    with db.connection("owner") as conn:
        applied = db.migrate(conn)
        assert query(conn, "select current_database()") == [(os.environ["POSTGRES_DBNAME"],)]
    assert applied[0] == "001_foundation.sql"
    loaded = load_one(zone)
    assert (loaded["status"], loaded["rows_loaded"]) == ("loaded", 1)
    with db.connection("owner") as conn:
        assert query(conn, "select customer_id, _file_key from raw.crm__customers") == [
            (1, f"{FOLDER}/export.csv")]
        assert query(conn, "select file_key, status from ops.file_manifest") == [
            (f"{FOLDER}/export.csv", "loaded")]
    # Nothing went to the database the name would be read as were it a connection string.
    assert query(hostile_database, "select to_regnamespace('ops')") == [(None,)]


@pytest.mark.parametrize("name", REFUSED_DATABASES, ids=repr)
def test_a_postgres_database_name_dbt_cannot_quote_is_refused_before_connecting(monkeypatch, name):
    monkeypatch.setenv("POSTGRES_HOST", "/nonexistent")
    monkeypatch.setenv("POSTGRES_USER", "loader")
    monkeypatch.setenv("POSTGRES_DBNAME", name)
    with pytest.raises(config.ConfigError, match=r"bad setting: POSTGRES_DBNAME=.* holds .*: name the "
                                                 "database without quotes, backslashes or control"):
        config.postgres()


def test_a_hostile_landing_key_is_stored_verbatim_on_postgres(warehouse, zone):
    loaded = load_one(zone, KEY)
    assert (loaded["key"], loaded["status"], loaded["rows_loaded"]) == (KEY, "loaded", 1)
    assert query(warehouse, "select file_key, version, status from ops.file_manifest") == [(KEY, 1, "loaded")]
    assert query(warehouse, "select _file_key, _row_number from raw.crm__customers") == [(KEY, 1)]
    assert query(warehouse, "select to_regclass('raw.user_activity') is not null") == [(True,)]
    assert pending_drops() == []


def test_a_landing_file_name_that_is_not_utf8_is_refused_with_its_reason_once(warehouse, zone):
    (zone.root / FOLDER).mkdir(parents=True)
    (zone.root / FOLDER / os.fsdecode(b"bad\xff name.csv")).write_text(HEADER + ROW)
    summary = load_new_files()
    shown = f"{FOLDER}/bad\\xff name.csv"
    assert summary["not_loaded"] == [{"key": shown, "status": "failed", "error": f"{shown}: {NOT_UTF8}"}]
    assert query(warehouse, "select file_key, version, status from ops.file_manifest") == [
        (shown, 1, "failed")]
    assert query(warehouse, "select count(*) from raw.crm__customers") == [(0,)]
    # Recorded as it is listed: not pending again until the file changes.
    assert pending_drops() == []


def audit_tables(conn) -> dict[str, set[str]]:
    rows = query(conn, "select table_schema, table_name from information_schema.tables"
                       " where table_schema like 'marts%%'")
    found: dict[str, set[str]] = {}
    for schema, name in rows:
        found.setdefault(schema, set()).add(name)
    return found


# A table name that, quoted without escaping (as dbt quotes), ends the publish's ALTER of the
# sequence s (which the publish does not list) and runs and commits its own statements.
BREAKOUT = 's" set schema marts;drop table raw.user_activity;commit;--'


def test_the_publish_refuses_a_hostile_table_in_the_audit_schema_on_postgres(warehouse):
    db = warehouses.backend()
    warehouses.migrate(db)
    with db.connection("transformer") as conn, db.transaction(conn) as cur:  # as dbt builds
        cur.execute("create table marts.fct_ok (id int); insert into marts.fct_ok values (1)")
        cur.execute("create schema marts__audit; create table marts__audit.fct_ok (id int);"
                    " create sequence marts__audit.s")
        cur.execute(sql.SQL("create table {} (id int)").format(sql.Identifier("marts__audit", BREAKOUT)))
    with pytest.raises(RuntimeError) as raised:
        transform.publish()
    assert f"the relation of marts__audit [{BREAKOUT}] is not a plain name" in str(raised.value)
    assert "nothing is published" in str(raised.value)
    # Nothing ran: nothing moved, nothing dropped.
    assert query(warehouse, "select to_regclass('raw.user_activity') is not null") == [(True,)]
    assert audit_tables(warehouse) == {"marts": {"fct_ok"}, "marts__audit": {BREAKOUT, "fct_ok"}}
    assert query(warehouse, "select id from marts.fct_ok") == [(1,)]
    # Without them, the same audit schema is published.
    with warehouse.cursor() as cur:
        cur.execute(sql.SQL("drop table {}; drop sequence marts__audit.s").format(
            sql.Identifier("marts__audit", BREAKOUT)))
    transform.publish()
    assert audit_tables(warehouse) == {"marts": {"fct_ok"}}
    assert query(warehouse, "select count(*) from marts.fct_ok") == [(0,)]


# --- Snowflake (the fakesnow stand-in) -----------------------------------------------------------


def sf_rows(conn, statement, params=None):
    return conn.cursor().execute(statement, params).fetchall()


def test_a_hostile_landing_key_is_stored_verbatim_on_snowflake(snowflake_warehouse, zone):
    loaded = load_one(zone, KEY)
    assert (loaded["key"], loaded["status"], loaded["rows_loaded"]) == (KEY, "loaded", 1)
    conn = snowflake_warehouse
    assert sf_rows(conn, "select file_key, version, status from ops.file_manifest") == [(KEY, 1, "loaded")]
    assert sf_rows(conn, "select _file_key, _row_number from raw.crm__customers") == [(KEY, 1)]
    assert sf_rows(conn, "select count(*) from raw.user_activity") == [(0,)]


def test_a_put_from_a_work_dir_with_a_space_a_semicolon_and_unicode_loads(snowflake_warehouse, zone,
                                                                        tmp_path, monkeypatch):
    monkeypatch.setenv("WORK_DIR", str(tmp_path / "a dir; ünïcödé $(id)"))
    loaded = load_one(zone)
    assert (loaded["status"], loaded["rows_loaded"]) == ("loaded", 1)
    assert sf_rows(snowflake_warehouse, "select customer_id, full_name from raw.crm__customers") == [
        (1, "Doe, Ann")]


def test_a_put_from_a_work_dir_with_a_quote_is_refused_clearly(snowflake_warehouse, zone, tmp_path,
                                                              monkeypatch):
    monkeypatch.setenv("WORK_DIR", str(tmp_path / "it's here"))
    loaded = load_one(zone)
    assert loaded["status"] == "error"
    assert loaded["error"].startswith("ConfigError: cannot PUT ")
    assert "\"'\": a quote ends the quoted path. Set WORK_DIR" in loaded["error"]
    assert sf_rows(snowflake_warehouse, "select status, error from ops.file_manifest") == [
        ("error", loaded["error"])]
    assert sf_rows(snowflake_warehouse, "select count(*) from raw.crm__customers") == [(0,)]


def test_the_publish_refuses_a_hostile_table_in_the_audit_schema_on_snowflake(snowflake_warehouse):
    conn = snowflake_warehouse
    # After FCT_OK in the publish's order (by name): refused before the first clone, not midway.
    hostile = f'Z"B{DROP}'
    for statement in ("create schema marts", "create table marts.fct_ok (id int)",
                      "insert into marts.fct_ok values (1)", "create schema marts__audit",
                      "create table marts__audit.fct_ok (id int)",
                      'create table marts__audit."{}" (id int)'.format(hostile.replace('"', '""'))):
        conn.cursor().execute(statement)
    audit = "select table_name from information_schema.tables where table_schema = 'MARTS__AUDIT'"
    assert sorted(n for (n,) in sf_rows(conn, audit)) == ["FCT_OK", hostile]
    with pytest.raises(RuntimeError) as raised:
        transform.publish()
    assert f"the table of marts__audit [{hostile}] is not a plain name" in str(raised.value)
    assert "nothing is published" in str(raised.value)
    # The published table is the one it was (a clone of the empty audit table would empty it),
    # and the audit schema is kept for inspection.
    assert sf_rows(conn, "select id from marts.fct_ok") == [(1,)]
    assert sorted(n for (n,) in sf_rows(conn, audit)) == ["FCT_OK", hostile]
