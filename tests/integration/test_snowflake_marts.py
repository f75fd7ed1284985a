"""The same files and events give the same marts on PostgreSQL and on Snowflake (the fakesnow
stand-in, through the real connector and dbt-snowflake). The PostgreSQL marts are checked
value by value against an independent computation in test_dbt_marts.py."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from conftest import query
from support.write_audit_publish import build_and_publish

from mage_project import config
from mage_project.landing import LandingZone
from mage_project.pipelines import quality_gates, user_activity
from mage_project.pipelines.file_drops import load_new_files
from mage_project.sources.activity_simulator import ActivitySimulator
from mage_project.sources.file_drops import write_drops

pytestmark = pytest.mark.integration

PARAMS = {"seed": 5, "events_per_day": 400, "users": 150}
MARTS = {"dim_customers": "customer_id", "fct_daily_revenue": "date",
         "fct_campaign_performance": "date, campaign", "fct_daily_active_users": "date"}


def build_warehouse(monkeypatch, kind: str) -> None:
    """Load every landing file and the activity window into ``kind``, pass the raw quality gate,
    then build, test and publish the marts (write-audit-publish), as a run of the pipelines does."""
    monkeypatch.setenv("WAREHOUSE", kind)
    assert load_new_files()["failed"] == 0
    window = {"window_start": datetime(2026, 11, 1, tzinfo=UTC),
              "window_end": datetime(2026, 11, 4, tzinfo=UTC)}
    assert user_activity.load(user_activity.validate(user_activity.fetch(**window)))[
        "status"] == "success"
    assert quality_gates.check_raw_file_drops(f"gate-{kind}")["failed_error"] == []
    assert build_and_publish(f"build-{kind}")["published"] is True


def marts(cursor_of) -> dict[str, tuple[list[str], list[tuple]]]:
    """Every mart's columns and rows, in key order. fakesnow returns a NULL TIMESTAMP_TZ as
    1970-01-01, so NULLs are read again as ``is null`` flags and put back."""
    found = {}
    for mart, key in MARTS.items():
        cur = cursor_of()
        cur.execute(f"select * from marts.{mart} order by {key}")  # noqa: S608 (constants)
        columns = [d[0].lower() for d in cur.description]
        rows = [list(r) for r in cur.fetchall()]
        flags = ", ".join(f"{c} is null" for c in columns)
        cur.execute(f"select {flags} from marts.{mart} order by {key}")  # noqa: S608
        for row, nulls in zip(rows, cur.fetchall(), strict=True):
            row[:] = [None if null else value for value, null in zip(row, nulls, strict=True)]
        found[mart] = (columns, [tuple(r) for r in rows])
    return found


def test_the_same_input_gives_the_same_marts_on_both(warehouse, snowflake_warehouse,
                                                    monkeypatch):
    write_drops(LandingZone(config.landing_url()), date(2026, 11, 1), date(2026, 11, 4),
                gzip_entities={"billing/payments"}, **PARAMS)
    with ActivitySimulator(token="t", **PARAMS) as api:
        monkeypatch.setenv("ACTIVITY_API_URL", api.url)
        monkeypatch.setenv("ACTIVITY_API_TOKEN", "t")
        build_warehouse(monkeypatch, "postgres")
        build_warehouse(monkeypatch, "snowflake")

    on_postgres = marts(warehouse.cursor)
    on_snowflake = marts(snowflake_warehouse.cursor)
    for mart in MARTS:
        columns, rows = on_postgres[mart]
        assert on_snowflake[mart][0] == columns, mart
        assert len(rows) > 0, f"{mart} is empty: the comparison would prove nothing"
        assert on_snowflake[mart][1] == rows, mart
    assert query(warehouse, "select count(*) from marts.fct_daily_active_users") == [(3,)]
    # The same checks ran on both, with the same verdicts; no audit schema is left behind.
    checks = ("select check_kind, table_name, check_name, passed from ops.quality_results"
              " order by 1, 2, 3")
    on_pg = query(warehouse, checks)
    assert len(on_pg) > 30 and all(passed for *_, passed in on_pg)
    assert sum(kind == "dbt_test" for kind, *_ in on_pg) == 32  # the marts' 12 invariant tests among them
    assert snowflake_warehouse.cursor().execute(checks).fetchall() == on_pg
    assert snowflake_warehouse.cursor().execute(
        "select count(*) from information_schema.schemata where schema_name = 'MARTS__AUDIT'"
    ).fetchall() == [(0,)]
