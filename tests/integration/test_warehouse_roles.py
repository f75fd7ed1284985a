"""The project's warehouse roles on PostgreSQL (README: Warehouse roles): each connection of the
project holds its role's privileges only, and is refused outside them."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import errors, sql
from support.write_audit_publish import build_and_publish

from mage_project import config, contracts, enforcement, warehouse
from mage_project.landing import LandingZone
from mage_project.pipelines.file_drops import load_new_files
from mage_project.pipelines.quality_gates import check_raw_file_drops
from mage_project.sources.file_drops import write_drops
from mage_project.warehouse import embedded, postgres, snowflake

pytestmark = pytest.mark.integration

PARAMS = {"seed": 5, "events_per_day": 300}


def run_as(role: str, statement) -> list[tuple]:
    with postgres.connection(role) as conn, postgres.transaction(conn) as cur:
        cur.execute(statement)
        return cur.fetchall() if cur.description else []


def refused(role: str, statement) -> str:
    with pytest.raises(errors.InsufficientPrivilege) as caught:
        run_as(role, statement)
    return str(caught.value).splitlines()[0]


@pytest.fixture
def published(warehouse):
    """Both pipelines' tables, with marts published by the project's own write-audit-publish."""
    write_drops(LandingZone(config.landing_url()), date(2026, 11, 1), date(2026, 11, 3), **PARAMS)
    assert load_new_files("run-1")["failed"] == 0
    check_raw_file_drops("run-1")
    assert build_and_publish("run-1")["published"] is True
    return warehouse


def test_each_role_does_its_work_and_is_refused_outside_its_grants(published):
    assert run_as("loader", "select current_user") == [("mage_loader",)]
    assert run_as("loader", "select count(*) > 0 from raw.billing__payments") == [(True,)]
    run_as("loader", "update ops.watermarks set run_id = run_id")
    assert refused("loader", "select * from marts.fct_daily_revenue") == (
        "permission denied for schema marts")
    assert refused("loader", "select * from staging.stg_billing__payments") == (
        "permission denied for schema staging")
    assert refused("loader", "create table raw.mine (x int)") == "permission denied for schema raw"
    assert refused("loader", "drop table raw.billing__payments") == (
        "must be owner of table billing__payments")

    assert run_as("transformer", "select count(*) > 0 from raw.billing__payments") == [(True,)]
    assert run_as("transformer", "select count(*) > 0 from marts.fct_daily_revenue") == [(True,)]
    assert refused("transformer", "delete from raw.billing__payments") == (
        "permission denied for table billing__payments")
    assert refused("transformer", "create table raw.mine (x int)") == "permission denied for schema raw"

    assert run_as("analyst", "select count(*) > 0 from marts.fct_daily_revenue") == [(True,)]
    assert refused("analyst", "select * from raw.billing__payments") == "permission denied for schema raw"
    assert refused("analyst", "select * from ops.pipeline_runs") == "permission denied for schema ops"
    assert refused("analyst", "delete from marts.fct_daily_revenue") == (
        "permission denied for table fct_daily_revenue")
    assert refused("analyst", "drop table marts.fct_daily_revenue") == (
        "must be owner of table fct_daily_revenue")
    assert refused("analyst", "create table marts.mine (x int)") == "permission denied for schema marts"


def test_the_analyst_reads_only_the_columns_the_contract_allows(published):
    """A published table's columns that its contract classifies pii are not granted."""
    [product] = [p for p in contracts.load_products() if "marts.dim_customers" in p.table_names]
    table = product.table("marts.dim_customers")
    withheld = table.columns[1].name
    marked = dataclasses.replace(table, columns=tuple(
        dataclasses.replace(c, classification="pii") if c.name == withheld else c for c in table.columns))
    product = dataclasses.replace(product, tables=(marked,))
    with postgres.connection("transformer") as conn, postgres.transaction(conn) as cur:
        granted = enforcement.grant_reads(postgres, cur, [product], relation=lambda name: name)
    allowed = [c.name for c in table.columns if c.name != withheld]
    assert granted == {"marts.dim_customers": allowed}
    readable = sql.SQL("select count(*) > 0 from (select {} from marts.dim_customers) as t").format(
        sql.SQL(", ").join(map(sql.Identifier, allowed)))
    assert run_as("analyst", readable) == [(True,)]
    withheld_column = sql.SQL("select {} from marts.dim_customers").format(sql.Identifier(withheld))
    assert refused("analyst", withheld_column) == "permission denied for table dim_customers"


def test_the_embedded_servers_logins_are_the_roles_and_the_editor_gets_the_analysts():
    """No POSTGRES_HOST: the embedded server, whose logins are the project's roles; what `make
    editor` and the runner export for Mage (its SQL blocks log in as POSTGRES_USER)."""
    env = postgres.dbt_environment()
    assert {k: v for k, v in env.items() if k.endswith("_USER")} == {
        "POSTGRES_OWNER_USER": embedded.ensure_running(config.postgres().pgdata).user,
        "POSTGRES_LOADER_USER": "mage_loader", "POSTGRES_TRANSFORMER_USER": "mage_transformer",
        "POSTGRES_ANALYST_USER": "mage_analyst", "POSTGRES_USER": "mage_analyst"}
    assert "roles@" in warehouse.migrate(postgres)[-1]
    assert run_as("loader", "select current_user, count(*) from raw.user_activity") == [("mage_loader", 0)]
    assert refused("analyst", "select * from raw.user_activity") == "permission denied for schema raw"


def test_warehouse_roles_prints_what_the_administrator_runs(monkeypatch):
    command = [sys.executable, "-m", "mage_project", "warehouse", "roles"]
    printed = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    assert printed == postgres.roles_sql() and printed.startswith("-- The project's roles")
    monkeypatch.setenv("WAREHOUSE", "snowflake")
    refused_run = subprocess.run(command, capture_output=True, text=True)
    assert (refused_run.returncode, refused_run.stdout, refused_run.stderr) == (
        2, "", "error: missing setting: environment variable SNOWFLAKE_ACCOUNT is not set\n")


@pytest.fixture
def own_server(monkeypatch):
    """A server of its own, where the project's roles do not exist yet, and a database owned by a
    login that may not create roles: a managed PostgreSQL, say."""
    root = Path(tempfile.mkdtemp(prefix="mage-project-roles-"))
    server = embedded.ensure_running(root / "pgdata")
    admin = psycopg2.connect(host=server.socket_dir, port=server.port, user=server.user, dbname="postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("create role app_owner login")
        cur.execute("create database warehouse owner app_owner")
    for name, value in {"POSTGRES_HOST": server.socket_dir, "POSTGRES_PORT": str(server.port),
                        "POSTGRES_DBNAME": "warehouse", "POSTGRES_USER": "app_owner"}.items():
        monkeypatch.setenv(name, value)
    yield server
    admin.close()
    embedded.stop(root / "pgdata")


def test_an_owner_that_may_not_create_roles_migrates_and_says_what_the_administrator_runs(
        own_server, caplog, monkeypatch):
    db = warehouse.backend()
    with caplog.at_level(logging.WARNING, logger="mage_project.warehouse.postgres"):
        applied = warehouse.migrate(db)
    assert applied[0] == "001_foundation.sql" and not any(a.startswith("roles@") for a in applied)
    assert caplog.messages == [
        "the project's warehouse roles are not set up: role mage_loader does not exist, and app_owner "
        "may not create roles. An administrator runs the SQL of `python -m mage_project warehouse "
        "roles` (README: Warehouse roles)"]

    # The administrator runs the printed SQL, and gives the loads a login in the loader's role.
    admin = psycopg2.connect(host=own_server.socket_dir, port=own_server.port, user=own_server.user,
                             dbname="warehouse")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(db.roles_sql())
        cur.execute("create role etl_loader login in role mage_loader")
    admin.close()
    [applied] = warehouse.migrate(db)  # the owner grants its tables to the roles
    assert applied.startswith("roles@")
    assert warehouse.migrate(db) == []
    monkeypatch.setenv("POSTGRES_LOADER_USER", "etl_loader")
    assert run_as("loader", "select current_user, count(*) from raw.user_activity") == [("etl_loader", 0)]
    assert refused("loader", "select * from pg_catalog.pg_class, marts.fct_daily_revenue") == (
        "permission denied for schema marts")


def snowflake_grants(text: str) -> dict[str, set[tuple[str, str]]]:
    """role -> {(privilege, object)} of the GRANT statements of ``text``."""
    grants: dict[str, set[tuple[str, str]]] = {}
    for privileges, on, role in re.findall(r"^grant (.+?) on (.+?) to role (\w+);$", text, re.M):
        grants.setdefault(role, set()).update((p.strip(), on) for p in privileges.split(","))
    return grants


def test_the_snowflake_roles_are_granted_their_schemas_only(snowflake_warehouse):
    """fakesnow has no roles and no GRANT: the stand-in runs the statements it has (the schemas),
    and the grants are read from the SQL the administrator is given."""
    text = snowflake.roles_sql()
    database = f'"{os.environ["SNOWFLAKE_DATABASE"]}"'
    statements = [s.strip() for s in re.sub(r"--[^\n]*", "", text).split(";") if s.strip()]
    cur = snowflake_warehouse.cursor()
    for statement in statements:
        if statement.startswith("create schema"):
            cur.execute(statement)
    schemas = {s for (s,) in cur.execute("select schema_name from information_schema.schemata").fetchall()}
    assert schemas >= {"RAW", "OPS", "STAGING", "INTERMEDIATE", "MARTS"}
    assert [s for s in statements if s.startswith("create role")] == [
        f"create role if not exists {r}" for r in ("MAGE_LOADER", "MAGE_TRANSFORMER", "MAGE_ANALYST")]

    grants = snowflake_grants(text)
    on = {role: {obj for _, obj in granted} for role, granted in grants.items()}
    assert on["MAGE_ANALYST"] == {
        'warehouse "TRANSFORMING"', f"database {database}", f"schema {database}.MARTS"}
    assert not {o for o in on["MAGE_LOADER"] if re.search(r"STAGING|INTERMEDIATE|MARTS", o)}
    assert {p for p, o in grants["MAGE_TRANSFORMER"] if o.endswith(".RAW")} == {"usage", "select"}
    assert ("create schema", f"database {database}") in grants["MAGE_TRANSFORMER"]  # marts__audit


def test_a_snowflake_name_that_is_not_a_plain_identifier_is_refused(snowflake_warehouse, monkeypatch):
    monkeypatch.setenv("SNOWFLAKE_DATABASE", 'ANALYTICS"; drop database PROD; --')
    with pytest.raises(config.ConfigError, match="bad setting: SNOWFLAKE_DATABASE=.* is not a plain name"):
        snowflake.roles_sql()
