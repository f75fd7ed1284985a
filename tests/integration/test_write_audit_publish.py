"""Write-audit-publish of the marts on PostgreSQL: the marts build and are tested in
marts__audit, and only a build whose every test passed replaces them."""

from __future__ import annotations

import shutil
import uuid
from datetime import date

import pytest
from conftest import query
from psycopg2 import sql
from support.write_audit_publish import build_and_publish

from mage_project import config, transform
from mage_project import warehouse as warehouses
from mage_project.landing import LandingZone
from mage_project.pipelines.file_drops import load_new_files
from mage_project.pipelines.quality_gates import (
    QualityGateFailed,
    check_raw_file_drops,
    plan_build,
    publish_build,
)
from mage_project.sources.file_drops import write_drops

pytestmark = pytest.mark.integration

MARTS = ("dim_customers", "fct_daily_revenue", "fct_campaign_performance", "fct_daily_active_users")
PARAMS = {"seed": 3, "events_per_day": 1500, "users": 400}


def marts(conn, schema: str = "marts") -> dict:
    """Every row of every mart, in a stable order."""
    return {
        name: query(conn, sql.SQL("select * from {} order by 1, 2").format(sql.Identifier(schema, name)))
        for name in MARTS
    }


def schemas(conn) -> set[str]:
    return {s for (s,) in query(conn, "select nspname from pg_namespace where nspname like 'marts%%'")}


def counts(files: list[dict]) -> tuple[int, int, int]:
    """rows, rows loaded and rows rejected of the files a load summary lists."""
    return tuple(sum(f[key] for f in files) for key in ("rows", "rows_loaded", "rows_rejected"))


def land_and_gate(start: date, end: date, run_id: str, snapshot: bool = True) -> dict:
    """Land drops and load them and gate them as the run ``run_id`` does; its load summary."""
    write_drops(LandingZone(config.landing_url()), start, end, snapshot=snapshot, **PARAMS)
    loaded = load_new_files(run_id)
    assert loaded["failed"] == 0
    check_raw_file_drops(run_id)
    return loaded


@pytest.fixture
def project_with_failing_test(tmp_path, monkeypatch):
    """The dbt project with one more test on a mart, which data after 2026-11-03 fails: it
    stands in for a business rule that new data breaks."""
    copy = tmp_path / "dbt" / "warehouse"
    shutil.copytree(transform.DBT_PROJECT, copy)
    (copy / "tests").mkdir(exist_ok=True)
    (copy / "tests" / "assert_no_revenue_after_2026_11_03.sql").write_text(
        "select date, net_revenue from {{ ref('fct_daily_revenue') }} where date > '2026-11-03'\n")
    monkeypatch.setattr(transform, "DBT_PROJECT", copy)
    return copy


def test_a_build_whose_test_fails_keeps_the_previous_marts(warehouse, project_with_failing_test):
    land_and_gate(date(2026, 11, 1), date(2026, 11, 4), "run-1")
    first = build_and_publish("run-1")
    assert first["published"] is True and first["statuses"].get("fail") is None
    before = marts(warehouse)
    assert all(before[m] for m in MARTS[:3]) and schemas(warehouse) == {"marts"}  # no activity loaded

    land_and_gate(date(2026, 11, 4), date(2026, 11, 5), "run-2", snapshot=False)
    with pytest.raises(RuntimeError, match="assert_no_revenue_after_2026_11_03"):
        build_and_publish("run-2")

    assert marts(warehouse) == before  # row for row
    audited = marts(warehouse, "marts__audit")  # the failed build, kept for inspection
    new_days = [row for row in audited["fct_daily_revenue"] if row[0] > date(2026, 11, 3)]
    assert [row[0] for row in new_days] == [date(2026, 11, 4)]
    assert audited["dim_customers"] != before["dim_customers"]  # with the new day's customers
    assert query(warehouse, "select run_id from ops.build_leases") == [(None,)]  # given up
    assert not transform.run_target_path("run-2").exists()

    results = query(warehouse, "select check_name, table_name, severity, passed, observed, failing_sample"
                               " from ops.quality_results where run_id = 'run-2' and check_kind = 'dbt_test'")
    failing = [r for r in results if r[3] is not True]
    assert failing == [(
        "assert_no_revenue_after_2026_11_03", "marts.fct_daily_revenue", "error", False,
        {"status": "fail", "failures": 1, "relation": "marts__audit.fct_daily_revenue",
         "message": "Got 1 result, configured to fail if != 0"},
        [{"date": "2026-11-04", "net_revenue": str(new_days[0][3])}],
    )]
    assert len(results) == first["tests"] == 33  # 32 of the project (12 of them invariants), and this one


def test_a_passing_build_replaces_the_marts_and_keeps_the_schema_grants(warehouse):
    land_and_gate(date(2026, 11, 1), date(2026, 11, 3), "run-1")
    build_and_publish("run-1")
    reader = f"reader_{uuid.uuid4().hex[:8]}"
    with warehouse.cursor() as cur:
        cur.execute(sql.SQL("create role {}").format(sql.Identifier(reader)))
        cur.execute(sql.SQL("grant usage on schema marts to {}").format(sql.Identifier(reader)))
    try:
        # Payment days up to 2026-11-02 (and earlier ones, of payments refunded in these files).
        before = {r[0] for r in marts(warehouse)["fct_daily_revenue"]}
        assert max(before) == date(2026, 11, 2)
        land_and_gate(date(2026, 11, 3), date(2026, 11, 5), "run-2", snapshot=False)
        summary = build_and_publish("run-2")
        assert summary["published"] is True
        after = {r[0] for r in marts(warehouse)["fct_daily_revenue"]}
        assert after >= before | {date(2026, 11, 3), date(2026, 11, 4)} and max(after) == date(2026, 11, 4)
        assert schemas(warehouse) == {"marts"}
        assert query(warehouse, "select has_schema_privilege(%s, 'marts', 'usage')", (reader,)) == [(True,)]
        assert query(warehouse, "select count(*), bool_and(passed) from ops.quality_results"
                                " where run_id = 'run-2' and check_kind = 'dbt_test'") == [(32, True)]
    finally:
        with warehouse.cursor() as cur:
            cur.execute(sql.SQL("drop owned by {0}; drop role {0}").format(sql.Identifier(reader)))


def test_nothing_is_published_from_raw_data_the_gate_has_not_passed(warehouse):
    write_drops(LandingZone(config.landing_url()), date(2026, 11, 1), date(2026, 11, 2), **PARAMS)
    load_new_files()  # and no gate: the dbt block run on its own, say
    with pytest.raises(QualityGateFailed, match=r"4 loaded file version\(s\) have not passed"):
        build_and_publish("run-1")
    # No audit schema was built, and the published one (the migrations' own) holds nothing.
    assert schemas(warehouse) == {"marts"}
    in_marts = "select count(*) from pg_class where relnamespace = 'marts'::regnamespace"
    assert query(warehouse, in_marts) == [(0,)]


def test_a_run_with_nothing_new_does_not_rebuild_the_marts(warehouse):
    files = land_and_gate(date(2026, 11, 1), date(2026, 11, 3), "run-1")["files"]
    assert build_and_publish("run-1")["published"] is True
    published = marts(warehouse)
    oids = query(warehouse, "select relname, oid from pg_class where relnamespace = 'marts'::regnamespace"
                            " order by 1")
    # Nothing loaded since: the marts are up to date, the tables are the same ones.
    assert load_new_files()["files"] == []
    again = build_and_publish("run-2")
    assert (again["published"], again["up_to_date"], again["models"]) == (False, True, 0)
    assert query(warehouse, "select relname, oid from pg_class where relnamespace = 'marts'::regnamespace"
                            " order by 1") == oids
    assert marts(warehouse) == published
    assert query(warehouse, "select count(*) from ops.quality_results where run_id = 'run-2'") == [(0,)]
    # A new file version (or dbt_select) builds again.
    new_files = land_and_gate(date(2026, 11, 3), date(2026, 11, 4), "run-3", snapshot=False)["files"]
    assert build_and_publish("run-3")["published"] is True
    assert build_and_publish("run-4", select="stg_crm__customers")["published"] is True
    assert query(warehouse, "select run_id from ops.marts_publications order by published_at") == [
        ("run-1",), ("run-3",), ("run-4",)]
    # Each run that ended (published, or found the marts up to date) has its success row, with
    # the rows of the file versions it loaded.
    assert query(warehouse, "select run_id, status, rows_fetched, rows_loaded, rows_rejected"
                            " from ops.pipeline_runs where pipeline = 'warehouse_elt' order by 1") == [
        ("run-1", "success", *counts(files)), ("run-2", "success", 0, 0, 0),
        ("run-3", "success", *counts(new_files)), ("run-4", "success", 0, 0, 0)]
    assert counts(files)[0] > counts(new_files)[0] > 0


def test_one_run_builds_the_marts_at_a_time_and_a_dead_runs_lease_expires(warehouse, monkeypatch):
    land_and_gate(date(2026, 11, 1), date(2026, 11, 2), "run-1")
    monkeypatch.setenv("RUN_LOCK_TIMEOUT_SECONDS", "0")
    plan = plan_build("run-1")  # run-1 builds (its dbt block would run now)
    assert plan["up_to_date"] is False
    assert plan["target_path"] == str(transform.run_target_path("run-1"))
    with pytest.raises(warehouses.RunLockError, match=r"another run \(run-1\) is building the marts"):
        plan_build("run-2")
    assert plan_build("run-1")["up_to_date"] is False  # its own retry takes it again

    # run-1 dies before publishing: its lease ends after MARTS_BUILD_LEASE_SECONDS.
    with warehouse.cursor() as cur:
        cur.execute("update ops.build_leases set expires_at = now() - interval '1 second'")
    assert build_and_publish("run-2")["published"] is True
    assert query(warehouse, "select run_id from ops.build_leases") == [(None,)]
    # run-1's publish, too late, no longer holds the lease: nothing is published.
    with pytest.raises(warehouses.RunLockError, match="run run-1 no longer holds their build lease"):
        publish_build(plan)
    assert query(warehouse, "select run_id from ops.marts_publications") == [("run-2",)]
