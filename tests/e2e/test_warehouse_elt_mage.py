"""warehouse_elt through Mage from the command line: sensor, raw load and its @test."""

from __future__ import annotations

from datetime import date

import pytest
from conftest import query, run_cli

from mage_project import config
from mage_project.landing import LandingZone
from mage_project.sources.file_drops import write_drops

pytestmark = pytest.mark.e2e


def raw_counts(conn) -> dict:
    return {
        table: query(conn, f"select count(*) from raw.{table}")[0][0]  # noqa: S608
        for table in ("crm__customers", "billing__payments", "marketing__ad_spend")
    }


def test_cli_loads_new_file_drops_once(warehouse):
    zone = LandingZone(config.landing_url())
    keys = write_drops(zone, date(2026, 11, 1), date(2026, 11, 3))
    zone.write_bytes("crm/customers/2026-11-02/broken.csv", b"")
    first = run_cli("run", "warehouse_elt")
    assert first.returncode == 0, first.stderr[-3000:]
    output = first.stdout + first.stderr
    assert "file_loads_reconcile passed" in output
    assert "dbt_build_passed passed" in output
    assert output.count("1/1 tests passed.") == 2
    (revenue_days,) = query(warehouse, "select count(*) from marts.fct_daily_revenue")[0]
    assert revenue_days >= 2
    counts = raw_counts(warehouse)
    assert all(n > 0 for n in counts.values()), counts
    assert query(warehouse, "select status, count(*) from ops.file_manifest group by 1 order by 1"
                 ) == [("failed", 1), ("loaded", len(keys))]
    again = run_cli("run", "warehouse_elt")
    assert again.returncode == 0, again.stderr[-3000:]
    assert raw_counts(warehouse) == counts
    assert query(warehouse, "select count(*) from ops.file_manifest") == [(len(keys) + 1,)]


def test_warehouse_elt_takes_no_window(warehouse):
    result = run_cli("run", "warehouse_elt", "--start", "2026-11-01", "--end", "2026-11-02")
    assert result.returncode == 2
    assert "no --start/--end" in result.stderr


def test_demo_runs_both_pipelines_and_a_second_run_changes_no_count():
    """`make demo` on the embedded defaults (its own PostgreSQL in the test's data dir)."""
    import re

    from mage_project.warehouse import embedded

    try:
        first = run_cli("demo")
        second = run_cli("demo")
    finally:
        embedded.stop(config.data_dir() / "postgres")
    assert first.returncode == 0, first.stderr[-3000:]
    assert second.returncode == 0, second.stderr[-3000:]

    def counts(out: str) -> list[str]:
        return re.findall(r"raw\.\w+: \d+ rows|\w+__\w+ +\d+ loaded +\d+ failed +\d+ rows", out)

    assert len(counts(first.stdout)) == 5, first.stdout[-2000:]
    marts = re.findall(r"marts\.\w+: \d+ rows", first.stdout)
    assert len(marts) == 4 and marts == re.findall(r"marts\.\w+: \d+ rows", second.stdout)
    assert counts(second.stdout) == counts(first.stdout)
    assert "rows changed 0" in second.stdout
