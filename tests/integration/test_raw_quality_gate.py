"""The quality gate on the raw loads, on PostgreSQL: every check the raw tables' contracts give it
(the Great Expectations suite of each entity, the other quality rules measured in the warehouse)
fails for a crafted file (or a raw row another loader could have written) and passes for the demo
data, with what it observed stored in ops.quality_results and the owning domain alerted."""

from __future__ import annotations

from datetime import date

import pytest
from conftest import query
from support import SmtpSink

from mage_project import contracts, enforcement, quality
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


def not_null(column: str) -> str:
    return f"expect_column_values_to_not_be_null({column})"


# (entity, check, how the second row goes wrong, the offending values in the failing sample).
# "file": row 2 of the file written as given (it passes the loader's type validation);
# "raw": the loaded row 2 changed in the raw table, as a loader without that validation (or a
# warehouse without the NOT NULL) could have left it. The named checks are the contracts' rules.
NULL = None
CASES = [
    *(("crm/customers", not_null(c), "raw", {c: NULL}) for c in ("customer_id", "signup_at", "updated_at")),
    ("crm/customers", "country_is_iso_3166_alpha_2", "raw", {"country": "usa"}),
    ("crm/customers", "email_looks_like_an_address", "file",
     "2,bo-at-example.com,Bo Li,DE,2026-11-01T11:00:00Z,,2026-11-01T11:00:00Z"),
    ("crm/customers", "crm_customers_updated_after_signup", "file",
     "2,bo@example.com,Bo Li,DE,2026-11-01T11:00:00Z,,2026-11-01T09:00:00Z"),
    *(("billing/payments", not_null(c), "raw", {c: NULL})
      for c in ("payment_id", "customer_id", "amount", "status", "paid_at", "updated_at")),
    ("billing/payments", "payment_status_is_known", "raw", {"status": "paid"}),
    ("billing/payments", "payment_amount_is_plausible", "file",
     "pay_2,2,250000.00,failed,2026-11-01T11:05:00Z,2026-11-01T11:05:00Z"),
    ("billing/payments", "billing_payments_updated_after_paid", "file",
     "pay_2,2,40.50,refunded,2026-11-01T11:05:00Z,2026-11-01T10:00:00Z"),
    *(("marketing/ad_spend", not_null(c), "raw", {c: NULL})
      for c in ("date", "campaign", "channel", "spend", "impressions", "clicks")),
    ("marketing/ad_spend", "ad_spend_is_not_negative", "raw", {"spend": "-5.00"}),
    ("marketing/ad_spend", "ad_spend_clicks_at_most_impressions", "file",
     "2026-11-01,spring_sale,meta,80.00,8000,9000"),
]
FILE_CASES = [(prefix, "file_versions_have_rows") for prefix in CLEAN]
# What the failing sample holds besides lineage and keys, for the expectations' "file" cases.
FILE_SAMPLES = {
    "email_looks_like_an_address": {"email": "bo-at-example.com"},
    "payment_amount_is_plausible": {"amount": "250000.00"},
}


def measured_rules(entity) -> list[contracts.QualityRule]:
    """The contract's rules on the entity's raw table that the gate measures in the warehouse."""
    _, table = contracts.raw_table(entity.qualified_name)
    return [r for r in table.quality if r.great_expectation is None]


def checks(entity) -> dict[str, str]:
    """Every check the gate runs on the entity's rows: name -> severity."""
    return {**{e.check_name: e.severity for e in entity.expectations},
            **{r.name: r.level for r in measured_rules(entity)}}


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


def test_every_check_has_a_failing_case():
    declared = {(p, name) for p, entity in FILE_ENTITIES.items() for name in checks(entity)}
    assert {(p, c) for p, c, *_ in CASES} | set(FILE_CASES) == declared
    # Every quality rule of the raw contracts is a check, under its own name, the rest required columns.
    rules = {r.name for e in FILE_ENTITIES.values() for r in contracts.raw_table(e.qualified_name)[1].quality}
    assert rules == {c for _, c, *_ in CASES if not c.startswith("expect_")}


def test_the_contracts_rules_are_the_suites_expectations():
    billing = FILE_ENTITIES["billing/payments"]
    suite = {e.check_name: (e.type, e.kwargs, e.severity) for e in billing.expectations}
    assert suite["payment_status_is_known"] == (
        "expect_column_values_to_be_in_set",
        {"column": "status", "value_set": ["succeeded", "failed", "refunded"]}, "error")
    assert suite["payment_amount_is_plausible"] == (
        "expect_column_values_to_be_between",
        {"column": "amount", "min_value": 0, "strict_min": True, "max_value": 100000}, "error")
    assert suite[not_null("status")] == ("expect_column_values_to_not_be_null", {"column": "status"}, "error")
    crm = {e.check_name: (e.type, e.kwargs, e.severity) for e in FILE_ENTITIES["crm/customers"].expectations}
    assert crm["email_looks_like_an_address"] == (
        "expect_column_values_to_match_regex", {"column": "email", "regex": r"^[^@\s]+@[^@\s]+\.[^@\s]+$"},
        "warn")
    assert [r.name for r in measured_rules(FILE_ENTITIES["marketing/ad_spend"])] == [
        "ad_spend_clicks_at_most_impressions", "ad_spend_is_not_negative"]


@pytest.mark.parametrize(("prefix", "check", "how", "bad"), CASES,
                         ids=[f"{c[0].split('/')[1]}:{c[1]}" for c in CASES])
def test_each_check_fails_for_its_crafted_row(warehouse, zone, prefix, check, how, bad):
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
    severity = checks(entity)[check]

    results = stored(warehouse, "run-1", f"raw.{entity.table}")
    assert {name: r[2] for name, r in results.items()} == {name: name != check for name in checks(entity)}
    kind, stored_severity, passed, observed, sample = results[check]
    assert (stored_severity, passed) == (severity, False)
    expectation = next((e for e in entity.expectations if e.check_name == check), None)
    if expectation is not None:
        assert kind == "great_expectations"
        assert observed == {"expectation_type": expectation.type, "element_count": 2, "missing_count": 0,
                            "unexpected_count": 1, "unexpected_percent": 50.0, "file_versions": 1}
        offending = bad if how == "raw" else FILE_SAMPLES[check]
        assert sample == [{"_file_key": key_of(prefix), "_row_number": 2,
                           **{k: v for k, v in ROW2_KEYS[prefix].items() if k not in offending},
                           **offending}]
        problem = f"raw.{entity.table} {check}: 1 of 2 unexpected"
    else:  # measured in the warehouse over the version's rows: a count, no sample
        (rule,) = [r for r in measured_rules(entity) if r.name == check]
        assert (kind, sample) == ("contract", None)
        where = f"raw.{entity.table}" + (f".{rule.column}" if rule.column else "")
        problem = f"platform/file_drops {where}: quality: rule {check}: measured 1, mustBe 0"
        assert observed == {"product": "platform/file_drops", "version": "1.0.0",
                            "owner_email": "data-team@example.com", "table": f"raw.{entity.table}",
                            "column": rule.column, "rule": "quality", "value": 1, "message": problem}
    verdict = query(warehouse, "select quality_status, quality_run_id from ops.file_manifest")
    if severity == "error":
        assert isinstance(outcome, QualityGateFailed)
        assert f"- {problem}" in str(outcome)
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
    assert results[not_null(entity.key_columns[0])][3]["element_count"] == 0


def test_the_demo_data_passes_every_expectation(warehouse, zone):
    keys = write_drops(zone, date(2026, 11, 1), date(2026, 11, 4), seed=3, events_per_day=1500, users=400)
    assert load_new_files()["loaded"] == len(keys)
    summary = check_raw_file_drops("run-demo")
    total = sum(len(checks(e)) for e in FILE_ENTITIES.values())
    assert summary == {"run_id": "run-demo", "file_versions": len(keys), "checks": total,
                       "passed": total, "failed_error": [], "failed_warn": [], "stored": total}
    for prefix, entity in FILE_ENTITIES.items():
        (rows,), = query(warehouse, f"select count(*) from raw.{entity.table}")  # noqa: S608
        files = sum(1 for k in keys if k.startswith(prefix))
        assert rows > files > 0
        results = stored(warehouse, "run-demo", f"raw.{entity.table}")
        assert set(results) == set(checks(entity))
        for rule in measured_rules(entity):
            assert results[rule.name][:3] == ["contract", rule.level, True]
            assert results[rule.name][3]["value"] == 0, rule.name
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
    assert query(warehouse, failed, ("run-2", "payment_amount_is_plausible")) == [(False,)]
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
    with postgres.connection("owner") as conn:
        chunked = quality.run_expectations(conn, versions, chunk_rows=4, sample_size=5)
        whole = quality.run_expectations(conn, versions, sample_size=5)
    assert [(r.check_name, r.passed, r.observed) for r in chunked] == [
        (r.check_name, r.passed, r.observed) for r in whole]
    amount = next(r for r in chunked if r.check_name == "payment_amount_is_plausible")
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
    assert [r.check_name for r in results if not r.passed] == ["payment_amount_is_plausible"]
    amount = next(r for r in results if not r.passed)
    assert (amount.observed["element_count"], amount.observed["unexpected_count"]) == (2, 1)
    assert amount.failing_sample == [
        {"_file_key": key, "_row_number": 2, "payment_id": "pay_2", "amount": "250000.00"}]


def test_the_warehouse_rules_read_the_same_rows_on_snowflake(snowflake_warehouse, zone):
    """The contract's sql rules over the checked versions' rows (a join to their keys and
    checksums) measure on the Snowflake stand-in what they measure on PostgreSQL."""
    header, rows = CLEAN["marketing/ad_spend"]
    key = key_of("marketing/ad_spend")
    zone.write_bytes(key, (header + rows[0] + "\n2026-11-01,spring_sale,meta,80.00,8000,9000\n").encode())
    assert load_new_files()["loaded"] == 1
    snowflake_warehouse.cursor().execute("update raw.marketing__ad_spend set spend = -5"
                                         " where _row_number = 2")
    (checksum,), = snowflake_warehouse.cursor().execute("select checksum from ops.file_manifest").fetchall()
    versions = [quality.FileVersion(FILE_ENTITIES["marketing/ad_spend"], key, checksum)]
    results = enforcement.check_versions(snowflake_warehouse.cursor(), versions)
    assert {r.check_name: (r.passed, r.severity, r.observed["value"]) for r in results} == {
        "ad_spend_is_not_negative": (False, "error", 1),
        "ad_spend_clicks_at_most_impressions": (False, "warn", 1)}


def test_the_warehouse_rules_measure_only_the_versions_checked(warehouse, zone):
    """A row of a version the gate passed before is not measured again: only the new versions'."""
    header, rows = CLEAN["marketing/ad_spend"]
    zone.write_bytes(key_of("marketing/ad_spend"), (header + "\n".join(rows) + "\n").encode())
    load_new_files()
    assert gate("run-1")["failed_error"] == []
    warehouse.cursor().execute("update raw.marketing__ad_spend set spend = -1")  # after its verdict
    zone.write_bytes("marketing/ad_spend/2026-11-02/export.csv",
                     (header + "2026-11-02,black_friday,google,10.00,100,5\n").encode())
    load_new_files()
    assert gate("run-2")["failed_error"] == []
    assert query(warehouse, "select observed from ops.quality_results where run_id = 'run-2'"
                            " and check_name = 'ad_spend_is_not_negative'")[0][0]["value"] == 0


def test_the_owning_domain_is_alerted_when_new_data_fails_not_at_every_run(warehouse, zone, monkeypatch):
    header, rows = CLEAN["billing/payments"]
    bad = "pay_2,2,250000.00,failed,2026-11-01T11:05:00Z,2026-11-01T11:05:00Z"
    zone.write_bytes(key_of("billing/payments"), (header + rows[0] + "\n" + bad + "\n").encode())
    load_new_files()
    with SmtpSink() as smtp:
        monkeypatch.setenv("SMTP_HOST", "127.0.0.1")
        monkeypatch.setenv("SMTP_PORT", str(smtp.port))
        monkeypatch.setenv("ALERT_EMAIL_TO", "platform@example.com")
        assert isinstance(gate("run-1"), QualityGateFailed)
        (alert,) = smtp.wait_for(1)
        assert isinstance(gate("run-2"), QualityGateFailed)  # the same version fails again
        assert isinstance(gate("run-1"), QualityGateFailed)  # a retry of the block
        assert len(smtp.wait_for(2, timeout=2)) == 1
    assert alert["To"] == "data-team@example.com"
    assert alert["Subject"] == ("[mage_project] platform/file_drops: not used, its contract is broken"
                                " (warehouse_elt run run-1)")
    body = alert.get_content()
    assert "New rows break the contract, so no mart was built on them; the published marts stay:" in body
    assert ("- raw.billing__payments payment_amount_is_plausible: 1 of 2 unexpected, e.g. [{'amount': "
            f"'250000.00', '_file_key': '{key_of('billing/payments')}', '_row_number': 2, 'payment_id': "
            "'pay_2'}]") in body
