"""warehouse_elt through Mage from the command line: sensor, raw load, quality gate and
write-audit-publish of the marts, with the blocks' @tests."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest
from conftest import query, run_cli
from support import SmtpSink, run_log

from mage_project import config
from mage_project.landing import LandingZone
from mage_project.sources.file_drops import write_drops

pytestmark = pytest.mark.e2e


def raw_counts(conn) -> dict:
    return {
        table: query(conn, f"select count(*) from raw.{table}")[0][0]  # noqa: S608
        for table in ("crm__customers", "billing__payments", "marketing__ad_spend")
    }




def skipped(block: str, stderr: str) -> bool:
    """Whether the run's block lines show ``block`` skipped."""
    return re.search(rf"^  {block} +skipped$", stderr, re.MULTILINE) is not None


def test_cli_loads_new_file_drops_once(warehouse):
    zone = LandingZone(config.landing_url())
    keys = write_drops(zone, date(2026, 11, 1), date(2026, 11, 3))
    zone.write_bytes("crm/customers/2026-11-02/broken.csv", b"")
    first = run_cli("run", "warehouse_elt")
    # Exit 3: the run completed, every other file loaded, the empty one failed (and is named).
    assert first.returncode == 3, first.stderr[-3000:]
    assert "crm/customers/2026-11-02/broken.csv" in first.stderr
    log = run_log(first.stderr)
    for check in ("file_loads_reconcile", "raw_quality_passed", "marts_build_planned", "dbt_build_passed",
                  "marts_published"):
        assert f"{check} passed" in log, f"block test {check} did not run"
    assert log.count("1/1 tests passed.") == 3 and log.count("2/2 tests passed.") == 1
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
    # Nothing new: the marts are up to date, Mage's dbt block and the publish are skipped.
    assert skipped("build_dbt_warehouse", again.stderr), again.stderr
    assert skipped("publish_marts", again.stderr), again.stderr
    assert query(warehouse, "select count(*) from ops.marts_publications") == [(1,)]


def marts(conn) -> dict:
    return {
        mart: query(conn, f"select * from marts.{mart} order by 1, 2")  # noqa: S608
        for mart in ("dim_customers", "fct_daily_revenue", "fct_campaign_performance")
    }


def test_a_failing_quality_gate_keeps_the_previous_marts_and_alerts(warehouse, monkeypatch):
    zone = LandingZone(config.landing_url())
    write_drops(zone, date(2026, 11, 1), date(2026, 11, 3))
    first = run_cli("run", "warehouse_elt")
    assert first.returncode == 0, first.stderr[-3000:]
    before = marts(warehouse)
    assert all(before.values())
    # Passes the loader's type checks, fails the error-level amount expectation.
    bad = "billing/payments/2026-11-03/export.csv"
    zone.write_bytes(bad, b"payment_id,customer_id,amount,status,paid_at,updated_at\n"
                          b"pay_big,1,250000.00,succeeded,2026-11-03T10:00:00Z,2026-11-03T10:00:00Z\n")
    with SmtpSink() as smtp:
        monkeypatch.setenv("SMTP_HOST", "127.0.0.1")
        monkeypatch.setenv("SMTP_PORT", str(smtp.port))
        monkeypatch.setenv("ALERT_EMAIL_TO", "oncall@example.com")
        failed = run_cli("run", "warehouse_elt")
        messages = smtp.wait_for(2)
    assert failed.returncode == 1, failed.stdout[-3000:]
    assert marts(warehouse) == before  # row for row
    assert query(warehouse, "select count(*) from raw.billing__payments where payment_id = 'pay_big'"
                 ) == [(1,)]  # loaded, and kept out of the marts
    # The run's failure to ALERT_EMAIL_TO, the broken contract to the raw tables' owners.
    by_recipient = {msg["To"]: msg for msg in messages}
    assert sorted(by_recipient) == ["data-team@example.com", "oncall@example.com"]
    assert "warehouse_elt failed" in by_recipient["oncall@example.com"]["Subject"]
    body = by_recipient["oncall@example.com"].get_content()
    assert "raw quality gate: 1 error-level check(s) failed" in body
    problem = "raw.billing__payments payment_amount_is_plausible: 1 of 1 unexpected"
    assert problem in body and problem in by_recipient["data-team@example.com"].get_content()
    assert "platform/file_drops: not used" in by_recipient["data-team@example.com"]["Subject"]
    (run_id, error), = query(warehouse, "select run_id, error from ops.pipeline_runs where status = 'failed'")
    assert error.startswith("QualityGateFailed: raw quality gate")
    assert query(warehouse, "select check_kind, passed, failing_sample from ops.quality_results"
                            " where run_id = %s and passed is not true", (run_id,)) == [
        ("great_expectations", False,
         [{"_file_key": bad, "_row_number": 1, "payment_id": "pay_big", "amount": "250000.00"}])]
    assert query(warehouse, "select count(*) from ops.quality_results where run_id = %s"
                            " and check_kind = 'dbt_test'", (run_id,)) == [(0,)]  # dbt never ran


def test_warehouse_elt_takes_no_window(warehouse):
    result = run_cli("run", "warehouse_elt", "--start", "2026-11-01", "--end", "2026-11-02")
    assert result.returncode == 2
    assert "no --start/--end" in result.stderr


# What the demo must not print: Mage's log records, dbt's output, the libraries' warnings.
NOISE = re.compile(r'"block_uuid"|Running with dbt|__sklearn_tags__|Message signing|XDG_RUNTIME_DIR'
                   r"|Warning")


def _demo_twice(**env: str) -> tuple[str, str]:
    """Two `make demo` runs (``python -m mage_project demo``): their outputs. Each prints its
    summary and little else: a line per pipeline, everything Mage and dbt say in its log file."""
    runs = [run_cli("demo", env=env), run_cli("demo", env=env)]
    for run in runs:
        assert run.returncode == 0, run.stderr[-3000:]
        assert not NOISE.search(run.stdout + run.stderr), (run.stdout + run.stderr)[-3000:]
        assert len(run.stdout.splitlines()) <= 30, run.stdout
        (log,) = re.findall(r"log \(Mage's and dbt's output\): (\S+)", run.stdout)
        assert "Running with dbt" in Path(log).read_text() and '"block_uuid"' in Path(log).read_text()
        assert re.search(r"^user_activity_ingest \.\.\. done in [\d.]+ s$", run.stdout, re.M)
        assert re.search(r"^warehouse_elt \.\.\. done in [\d.]+ s$", run.stdout, re.M)
    return runs[0].stdout, runs[1].stdout


def _summary(out: str) -> list[str]:
    """What the demo says landed: the days, the raw and mart row counts, the file loads and the
    revenue (not the run's id, duration or warehouse)."""
    return re.findall(r"\d{4}-\d\d-\d\d +\d+ +\d+ +\d+ +[\d.]+|(?:raw|marts)\.\w+: \d+ rows"
                      r"|\w+__\w+ +\d+ loaded +\d+ failed +\d+ rows +\d+ rejected"
                      r"|net revenue .*|rows changed \d+", out)


def test_demo_prints_the_same_summary_on_postgres_and_snowflake(snowflake_warehouse, tmp_path):
    """`make demo` on the embedded defaults (its own PostgreSQL in the test's data dir), then
    with WAREHOUSE=snowflake on the Snowflake stand-in, from a data dir of its own: the same
    days, counts and revenue on both, and a second run changes nothing (on Snowflake, its
    publish replaces the marts that the first one published)."""
    from mage_project.warehouse import embedded

    try:
        pg_first, pg_second = _demo_twice(WAREHOUSE="postgres")
    finally:
        embedded.stop(config.data_dir() / "postgres")
    sf_data = tmp_path / "snowflake-demo"
    sf_first, sf_second = _demo_twice(PROJECT_DATA_DIR=str(sf_data))
    assert "into embedded PostgreSQL" in pg_first, re.findall(r".* into .*", pg_first)
    assert "into Snowflake" in sf_first, re.findall(r".* into .*", sf_first)
    summary = _summary(pg_first)
    assert len([line for line in summary if "loaded" in line]) == 3, pg_first[-2000:]
    assert len([line for line in summary if line.startswith("marts.")]) == 4, pg_first[-2000:]
    assert len([line for line in summary if re.match(r"\d{4}-", line)]) == 3, pg_first[-2000:]
    assert _summary(sf_first) == summary
    for second in (pg_second, sf_second):
        assert "rows changed 0" in second
        assert [line for line in _summary(second) if "rows changed" not in line] == [
            line for line in summary if "rows changed" not in line]
    assert not (sf_data / "postgres").exists()  # the Snowflake runs never needed PostgreSQL
