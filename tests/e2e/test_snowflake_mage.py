"""WAREHOUSE=snowflake through Mage from the command line: both pipelines, with their blocks'
@tests, write to the Snowflake stand-in only, and a run with nothing new rebuilds nothing."""

from __future__ import annotations

from datetime import date

import pytest
from conftest import run_cli
from support import emitted_events, run_log

from mage_project import config
from mage_project.landing import LandingZone
from mage_project.lineage import naming, schema
from mage_project.sources.activity_simulator import ActivitySimulator
from mage_project.sources.file_drops import write_drops

pytestmark = pytest.mark.e2e

SIM = {"seed": 11, "events_per_day": 300, "users": 120}




def rows(conn, statement):
    return conn.cursor().execute(statement).fetchall()


def test_both_pipelines_run_on_snowflake(snowflake_warehouse, monkeypatch):
    write_drops(LandingZone(config.landing_url()), date(2026, 11, 1), date(2026, 11, 3), **SIM)
    with ActivitySimulator(token="t0ken", **SIM) as sim:
        monkeypatch.setenv("ACTIVITY_API_URL", sim.url)
        monkeypatch.setenv("ACTIVITY_API_TOKEN", "t0ken")
        ingest = run_cli("run", "user_activity_ingest", "--start", "2026-11-01", "--end", "2026-11-03")
    assert ingest.returncode == 0, ingest.stderr[-3000:]
    assert "load_reconciles passed" in run_log(ingest.stdout)

    elt = run_cli("run", "warehouse_elt")
    assert elt.returncode == 0, elt.stderr[-3000:]
    output = run_log(elt.stdout)
    for check in ("file_loads_reconcile", "raw_quality_passed", "dbt_build_passed", "marts_published"):
        assert f"{check} passed" in output, f"block test {check} did not run"
    conn = snowflake_warehouse
    assert rows(conn, "select count(*) from marts.fct_daily_active_users") == [(2,)]
    assert rows(conn, "select count(*) > 0 from marts.dim_customers") == [(True,)]
    assert rows(conn, "select pipeline, status from ops.pipeline_runs order by 1") == [
        ("user_activity_ingest", "success"), ("warehouse_elt", "success")]
    assert rows(conn, "select count(*) from ops.marts_publications") == [(1,)]
    assert_lineage_on_snowflake(conn)
    # Nothing new: nothing loaded, the marts are up to date and not rebuilt.
    again = run_cli("run", "warehouse_elt")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "'up_to_date': True" in run_log(again.stdout)
    assert rows(conn, "select count(*) from ops.marts_publications") == [(1,)]
    assert rows(conn, "select status, rows_fetched, rows_loaded from ops.pipeline_runs"
                      " where pipeline = 'warehouse_elt' order by finished_at desc limit 1") == [
        ("success", 0, 0)]
    # PostgreSQL was never needed: no embedded server was started.
    assert not (config.data_dir() / "postgres").exists()


def assert_lineage_on_snowflake(conn) -> None:
    """Both runs' events: valid, each run and block started and completed, the tables named as
    Snowflake names them (snowflake://<account>, DB.SCHEMA.TABLE), their counts the tables'."""
    events = emitted_events()
    assert {e["job"]["name"]: schema.validate(e) for e in events if schema.validate(e)} == {}
    ended = {}
    for e in events:
        ended.setdefault(e["run"]["runId"], []).append(e["eventType"])
    assert {tuple(types) for types in ended.values()} == {("START", "COMPLETE")}
    namespace, name = naming.table("raw.user_activity")
    assert namespace == f"snowflake://{config.snowflake().account.lower()}"
    assert name == f"{config.snowflake().database}.RAW.USER_ACTIVITY".upper()
    [loaded] = [d for e in events if e["eventType"] == "COMPLETE" for d in e["outputs"]
                if e["job"]["name"].endswith("load_postgres_user_activity") and d["name"] == name]
    assert [loaded["outputFacets"]["outputStatistics"]["rowCount"]] == [
        n for (n,) in rows(conn, "select count(*) from raw.user_activity")]
    revenue = naming.table("marts.fct_daily_revenue")
    [mart] = [d for e in events if e["eventType"] == "COMPLETE" for d in e["outputs"]
              if e["job"]["name"].endswith("build_dbt_warehouse.fct_daily_revenue")
              and (d["namespace"], d["name"]) == revenue]
    net = mart["facets"]["columnLineage"]["fields"]["net_revenue"]["inputFields"]
    assert {(f["name"], f["field"]) for f in net} == {
        (naming.table("intermediate.int_payments__counted")[1], "amount"),
        (naming.table("intermediate.int_payments__counted")[1], "is_refunded")}
