"""The quality gate on the raw loads, on PostgreSQL: every declared expectation fails for a
crafted file (or a raw row another loader could have written) and passes for the demo data,
with what it observed stored in ops.quality_results."""

from __future__ import annotations

from datetime import date

import pytest
from conftest import query

from mage_project import quality
from mage_project.entities import FILE_ENTITIES
from mage_project.landing import LandingZone
from mage_project.pipelines.file_drops import load_new_files
from mage_project.pipelines.quality_gates import QualityGateFailed, check_raw_file_drops
from mage_project.sources.file_drops import write_drops
from mage_project.warehouse import postgres

pytestmark = pytest.mark.integration

CLEAN = {
    "crm/customers": (
        "customer_id,email,full_name,country,signup_at,utm_campaign,updated_at\n",
        ["1,ann@example.com,Ann Doe,US,2026-11-01T10:00:00Z,black_friday,2026-11-01T10:00:00Z",
         "2,bo@example.com,Bo Li,DE,2026-11-01T11:00:00Z,,2026-11-01T11:00:00Z"],
    ),
    "billing/payments": (
        "payment_id,customer_id,amount,status,paid_at,updated_at\n",
        ["pay_1,1,25.00,succeeded,2026-11-01T10:05:00Z,2026-11-01T10:05:00Z",
         "pay_2,2,40.50,failed,2026-11-01T11:05:00Z,2026-11-01T11:05:00Z"],
    ),
    "marketing/ad_spend": (
        "date,campaign,channel,spend,impressions,clicks\n",
        ["2026-11-01,black_friday,google,120.50,10000,250",
         "2026-11-01,spring_sale,meta,80.00,8000,90"],
    ),
}
ROW2_KEYS = {"crm/customers": {"customer_id": 2}, "billing/payments": {"payment_id": "pay_2"},
             "marketing/ad_spend": {"date": "2026-11-01", "campaign": "spring_sale", "channel": "meta"}}

# (entity, check, how the second row goes wrong, the offending values in the failing sample).
# "file": row 2 of the file written as given (it passes the loader's type validation);
# "raw": the loaded row 2 changed in the raw table, as a loader without that validation (or a
# warehouse without the NOT NULL) could have left it.
NULL = None
CASES = [
    ("crm/customers", "expect_column_values_to_not_be_null(customer_id)", "raw", {"customer_id": NULL}),
    ("crm/customers", "expect_column_values_to_not_be_null(signup_at)", "raw", {"signup_at": NULL}),
    ("crm/customers", "expect_column_values_to_not_be_null(updated_at)", "raw", {"updated_at": NULL}),
    ("crm/customers", "expect_column_values_to_match_regex(country)", "raw", {"country": "usa"}),
    ("crm/customers", "expect_column_values_to_match_regex(email)", "file",
     "2,bo-at-example.com,Bo Li,DE,2026-11-01T11:00:00Z,,2026-11-01T11:00:00Z"),
    ("crm/customers", "expect_column_pair_values_a_to_be_greater_than_b(updated_at, signup_at)", "file",
     "2,bo@example.com,Bo Li,DE,2026-11-01T11:00:00Z,,2026-11-01T09:00:00Z"),
    ("billing/payments", "expect_column_values_to_not_be_null(payment_id)", "raw", {"payment_id": NULL}),
    ("billing/payments", "expect_column_values_to_not_be_null(customer_id)", "raw", {"customer_id": NULL}),
    ("billing/payments", "expect_column_values_to_not_be_null(amount)", "raw", {"amount": NULL}),
    ("billing/payments", "expect_column_values_to_not_be_null(paid_at)", "raw", {"paid_at": NULL}),
    ("billing/payments", "expect_column_values_to_be_in_set(status)", "raw", {"status": "paid"}),
    ("billing/payments", "expect_column_values_to_be_between(amount)", "file",
     "pay_2,2,250000.00,failed,2026-11-01T11:05:00Z,2026-11-01T11:05:00Z"),
    ("billing/payments", "expect_column_pair_values_a_to_be_greater_than_b(updated_at, paid_at)", "file",
     "pay_2,2,40.50,refunded,2026-11-01T11:05:00Z,2026-11-01T10:00:00Z"),
    ("marketing/ad_spend", "expect_column_values_to_not_be_null(date)", "raw", {"date": NULL}),
    ("marketing/ad_spend", "expect_column_values_to_not_be_null(campaign)", "raw", {"campaign": NULL}),
    ("marketing/ad_spend", "expect_column_values_to_not_be_null(channel)", "raw", {"channel": NULL}),
    ("marketing/ad_spend", "expect_column_values_to_not_be_null(spend)", "raw", {"spend": NULL}),
    ("marketing/ad_spend", "expect_column_values_to_be_between(spend)", "raw", {"spend": "-5.00"}),
    ("marketing/ad_spend", "expect_column_pair_values_a_to_be_greater_than_b(impressions, clicks)", "file",
     "2026-11-01,spring_sale,meta,80.00,8000,9000"),
]
FILE_CASES = [(prefix, "file_versions_have_rows") for prefix in CLEAN]
# What the failing sample holds besides lineage and keys, for the "file" cases.
FILE_SAMPLES = {
    "expect_column_values_to_match_regex(email)": {"email": "bo-at-example.com"},
    "expect_column_pair_values_a_to_be_greater_than_b(updated_at, signup_at)": {
        "updated_at": "2026-11-01T09:00:00+00:00", "signup_at": "2026-11-01T11:00:00+00:00"},
    "expect_column_values_to_be_between(amount)": {"amount": "250000.00"},
    "expect_column_pair_values_a_to_be_greater_than_b(updated_at, paid_at)": {
        "updated_at": "2026-11-01T10:00:00+00:00", "paid_at": "2026-11-01T11:05:00+00:00"},
    "expect_column_pair_values_a_to_be_greater_than_b(impressions, clicks)": {
        "impressions": 8000, "clicks": 9000},
}


@pytest.fixture
def zone(tmp_path, monkeypatch):
    url = (tmp_path / "landing").as_uri()
    monkeypatch.setenv("LANDING_URL", url)
    return LandingZone(url)


def key_of(prefix: str) -> str:
    return f"{prefix}/2026-11-01/export.csv"


def stored(conn, run_id: str, table: str) -> dict:
    rows = query(conn, "select check_name, check_kind, severity, passed, observed, failing_sample"
                       " from ops.quality_results where run_id = %s and table_name = %s",
                 (run_id, table))
    return {name: rest for name, *rest in rows}


def gate(run_id: str):
    """The gate's summary, or the QualityGateFailed it raised."""
    try:
        return check_raw_file_drops(run_id)
    except QualityGateFailed as exc:
        return exc


def test_every_declared_expectation_has_a_failing_case():
    declared = {(p, e.check_name) for p, entity in FILE_ENTITIES.items() for e in entity.expectations}
    assert {(p, c) for p, c, *_ in CASES} | set(FILE_CASES) == declared


@pytest.mark.parametrize(("prefix", "check", "how", "bad"), CASES,
                         ids=[f"{c[0].split('/')[1]}:{c[1]}" for c in CASES])
def test_each_expectation_fails_for_its_crafted_row(warehouse, zone, prefix, check, how, bad):
    entity = FILE_ENTITIES[prefix]
    header, rows = CLEAN[prefix]
    zone.write_bytes(key_of(prefix), (header + "\n".join([rows[0], bad if how == "file" else rows[1]])
                                      + "\n").encode())
    assert load_new_files()["loaded"] == 1
    if how == "raw":
        (column, value), = bad.items()
        warehouse.cursor().execute(f"alter table raw.{entity.table} alter column {column} drop not null")
        warehouse.cursor().execute(f"update raw.{entity.table} set {column} = %s"  # noqa: S608
                                   " where _row_number = 2", (value,))
    outcome = gate("run-1")
    expectation = next(e for e in entity.expectations if e.check_name == check)

    results = stored(warehouse, "run-1", f"raw.{entity.table}")
    assert {name: r[2] for name, r in results.items()} == {
        e.check_name: e.check_name != check for e in entity.expectations}
    kind, severity, passed, observed, sample = results[check]
    assert (kind, severity, passed) == ("great_expectations", expectation.severity, False)
    assert observed == {"expectation_type": expectation.type, "element_count": 2, "missing_count": 0,
                        "unexpected_count": 1, "unexpected_percent": 50.0, "file_versions": 1}
    offending = bad if how == "raw" else FILE_SAMPLES[check]
    assert sample == [{"_file_key": key_of(prefix), "_row_number": 2,
                       **{k: v for k, v in ROW2_KEYS[prefix].items() if k not in offending},
                       **offending}]
    verdict = query(warehouse, "select quality_status, quality_run_id from ops.file_manifest")
    if expectation.severity == "error":
        assert isinstance(outcome, QualityGateFailed)
        assert f"raw.{entity.table} {check}: 1 of 2 unexpected" in str(outcome)
        assert verdict == [("failed", "run-1")]
    else:
        assert outcome["failed_error"] == [] and outcome["failed_warn"] == [f"raw.{entity.table} {check}"]
        assert verdict == [("passed", "run-1")]


@pytest.mark.parametrize(("prefix", "check"), FILE_CASES, ids=[p for p, _ in FILE_CASES])
def test_a_file_version_without_rows_warns(warehouse, zone, prefix, check):
    entity = FILE_ENTITIES[prefix]
    zone.write_bytes(key_of(prefix), CLEAN[prefix][0].encode())  # the header only
    load_new_files()
    outcome = gate("run-1")
    assert outcome["failed_warn"] == [f"raw.{entity.table} {check}"] and outcome["failed_error"] == []
    results = stored(warehouse, "run-1", f"raw.{entity.table}")
    assert results[check] == ["great_expectations", "warn", False, {
        "expectation_type": "expect_column_values_to_be_between", "element_count": 1,
        "missing_count": 0, "unexpected_count": 1, "unexpected_percent": 100.0, "file_versions": 1,
    }, [{"_file_key": key_of(prefix), "rows": 0}]]
    assert all(r[2] for name, r in results.items() if name != check)
    assert results["expect_column_values_to_not_be_null(" + entity.key_columns[0] + ")"][3][
        "element_count"] == 0


def test_the_demo_data_passes_every_expectation(warehouse, zone):
    keys = write_drops(zone, date(2026, 11, 1), date(2026, 11, 4), seed=3, events_per_day=1500, users=400)
    assert load_new_files()["loaded"] == len(keys)
    summary = check_raw_file_drops("run-demo")
    expectations = sum(len(e.expectations) for e in FILE_ENTITIES.values())
    assert summary == {"run_id": "run-demo", "file_versions": len(keys), "checks": expectations,
                       "passed": expectations, "failed_error": [], "failed_warn": [],
                       "stored": expectations}
    for prefix, entity in FILE_ENTITIES.items():
        (rows,), = query(warehouse, f"select count(*) from raw.{entity.table}")  # noqa: S608
        files = sum(1 for k in keys if k.startswith(prefix))
        assert rows > files > 0
        results = stored(warehouse, "run-demo", f"raw.{entity.table}")
        assert set(results) == {e.check_name for e in entity.expectations}
        for e in entity.expectations:
            _, severity, passed, observed, sample = results[e.check_name]
            count = rows if e.scope == "rows" else files
            assert (severity, passed, sample) == (e.severity, True, None), e.check_name
            assert observed["element_count"] == count and observed["unexpected_count"] == 0, e.check_name
    assert query(warehouse, "select distinct quality_status, quality_run_id from ops.file_manifest") == [
        ("passed", "run-demo")]
    # Nothing new: the next run checks nothing and stores nothing.
    assert check_raw_file_drops("run-next")["file_versions"] == 0
    assert query(warehouse, "select count(*) from ops.quality_results where run_id = 'run-next'") == [(0,)]


def test_a_failed_version_fails_every_run_until_a_new_version_replaces_it(warehouse, zone):
    header, rows = CLEAN["billing/payments"]
    bad = "pay_2,2,250000.00,failed,2026-11-01T11:05:00Z,2026-11-01T11:05:00Z"
    key = key_of("billing/payments")
    zone.write_bytes(key, (header + rows[0] + "\n" + bad + "\n").encode())
    load_new_files()
    assert isinstance(gate("run-1"), QualityGateFailed)
    assert isinstance(gate("run-2"), QualityGateFailed)  # nothing new, still not passed
    failed = "select passed from ops.quality_results where run_id = %s and check_name = %s"
    amount = "expect_column_values_to_be_between(amount)"
    assert query(warehouse, failed, ("run-2", amount)) == [(False,)]
    zone.write_bytes(key, (header + "\n".join(rows) + "\n").encode())  # corrected at the source
    assert load_new_files()["loaded"] == 1
    summary = gate("run-3")
    assert (summary["file_versions"], summary["failed_error"]) == (1, [])
    assert query(warehouse, "select version, quality_status, quality_run_id from ops.file_manifest"
                            " order by version") == [(1, "failed", "run-2"), (2, "passed", "run-3")]


def test_rows_are_checked_in_chunks_with_the_same_result(warehouse, zone):
    header, _ = CLEAN["billing/payments"]
    lines = [f"pay_{n},{n},{'250000.00' if n % 3 == 0 else '10.00'},succeeded,"
             "2026-11-01T10:00:00Z,2026-11-01T10:00:00Z" for n in range(1, 26)]
    key = key_of("billing/payments")
    zone.write_bytes(key, (header + "\n".join(lines) + "\n").encode())
    load_new_files()
    (checksum,), = query(warehouse, "select checksum from ops.file_manifest")
    versions = [quality.FileVersion(FILE_ENTITIES["billing/payments"], key, checksum)]
    with postgres.connection() as conn:
        chunked = quality.run_expectations(conn, versions, chunk_rows=4, sample_size=5)
        whole = quality.run_expectations(conn, versions, sample_size=5)
    assert [(r.check_name, r.passed, r.observed) for r in chunked] == [
        (r.check_name, r.passed, r.observed) for r in whole]
    amount = next(r for r in chunked if r.check_name == "expect_column_values_to_be_between(amount)")
    assert (amount.passed, amount.observed["element_count"], amount.observed["unexpected_count"],
            amount.observed["unexpected_percent"]) == (False, 25, 8, 32.0)
    assert amount.failing_sample == [
        {"_file_key": key, "_row_number": n, "payment_id": f"pay_{n}", "amount": "250000.00"}
        for n in (3, 6, 9, 12, 15)]


def test_expectations_read_the_raw_rows_the_same_way_on_snowflake(snowflake_warehouse, zone):
    """The suites' portable reads (plain select, %s parameters, upper-case names back) on the
    Snowflake stand-in give what they give on PostgreSQL."""
    header, rows = CLEAN["billing/payments"]
    bad = "pay_2,2,250000.00,failed,2026-11-01T11:05:00Z,2026-11-01T11:05:00Z"
    key = key_of("billing/payments")
    zone.write_bytes(key, (header + rows[0] + "\n" + bad + "\n").encode())
    assert load_new_files()["loaded"] == 1
    (checksum,), = snowflake_warehouse.cursor().execute("select checksum from ops.file_manifest").fetchall()
    versions = [quality.FileVersion(FILE_ENTITIES["billing/payments"], key, checksum)]
    results = quality.run_expectations(snowflake_warehouse, versions, chunk_rows=1)
    assert [r.check_name for r in results if not r.passed] == ["expect_column_values_to_be_between(amount)"]
    amount = next(r for r in results if not r.passed)
    assert (amount.observed["element_count"], amount.observed["unexpected_count"]) == (2, 1)
    assert amount.failing_sample == [
        {"_file_key": key, "_row_number": 2, "payment_id": "pay_2", "amount": "250000.00"}]
