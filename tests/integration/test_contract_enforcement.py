"""The contracts held at run time (mage_project.enforcement), on the embedded PostgreSQL and on the
Snowflake stand-in: each rule over a table made to break it, then the publish of a build that
breaks a contract refused, the previous marts kept and the owning domain alerted."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from datetime import UTC, date, datetime

import pytest
from support import SmtpSink
from support.write_audit_publish import build_and_publish

from mage_project import config, contracts, enforcement, transform, warehouse
from mage_project.contracts import Column, QualityRule
from mage_project.landing import LandingZone
from mage_project.pipelines import quality_gates, user_activity
from mage_project.pipelines.file_drops import load_new_files
from mage_project.pipelines.quality_gates import QualityGateFailed
from mage_project.sources.activity_simulator import ActivitySimulator
from mage_project.sources.file_drops import write_drops

pytestmark = pytest.mark.integration

REVENUE_COLUMNS = ("date date, gross_revenue numeric(18, 2), refunds numeric(18, 2),"
                   " net_revenue numeric(18, 2), paying_customers bigint")
CLEAN = [("2026-11-01", 10, 2, 8, 3), ("2026-11-02", 5, 0, 5, 1)]
CUSTOM_RULE = "fct_daily_revenue_paying_customers_at_most_the_days_customers"
PASSED_DBT = [{"name": CUSTOM_RULE, "status": "pass"}]


@pytest.fixture(params=["postgres", "snowflake"])
def backend(request):
    """The warehouse a test runs on, fresh: the embedded PostgreSQL or the Snowflake stand-in."""
    request.getfixturevalue("warehouse" if request.param == "postgres" else "snowflake_warehouse")
    db = warehouse.backend()
    assert db.NAME == request.param
    with db.connection("owner") as conn:
        db.migrate(conn)
        with db.transaction(conn) as cur:
            cur.execute("create schema if not exists contract_test")
        yield db, conn


@pytest.fixture(scope="module")
def revenue() -> contracts.Product:
    return {p.key: p for p in contracts.load_products()}["finance/revenue"]


def check(backend, product, table, columns: str, rows, dbt_tests=PASSED_DBT):
    """``table``'s checks over a table ``contract_test.<name>`` of ``columns`` holding ``rows``."""
    db, conn = backend
    where = f"contract_test.{table.table}"
    # Outside an explicit transaction: fakesnow fails a create of a text column inside one.
    for ddl in (f"drop table if exists {where}", f"create table {where} ({columns})"):
        conn.cursor().execute(ddl)
        conn.commit()
    with db.transaction(conn) as cur:
        marks = ", ".join(["%s"] * len(rows[0]))
        for row in rows:  # one by one: fakesnow answers 500 to some multi-row inserts
            cur.execute(f"insert into {where} values ({marks})", row)  # noqa: S608 - test's own
    with db.transaction(conn) as cur:
        return enforcement.check_table(db, cur, product, table, where, dbt_tests)


def failed(results) -> dict[str, str]:
    return {r.check_name: r.observed["message"] for r in results if r.passed is not True}


def test_a_table_that_keeps_its_contract_passes_every_check(backend, revenue):
    table = revenue.table("marts.fct_daily_revenue")
    results = check(backend, revenue, table, REVENUE_COLUMNS, CLEAN)
    assert failed(results) == {}
    assert [r.check_name for r in results] == [
        "contract_schema", "contract_required_date", "contract_unique_date",
        *(rule.name for rule in table.quality)]
    assert {r.check_kind for r in results} == {"contract"} and all(r.severity == "error" for r in results)
    assert results[0].observed == {
        "product": "finance/revenue", "version": revenue.version, "owner_email": "finance-data@example.com",
        "table": "marts.fct_daily_revenue", "column": None, "rule": "schema",
        "missing": [], "undeclared": [], "retyped": {}}


BREAKS = {
    "a null in a required column": (
        [(None, 1, 0, 1, 1)], "contract_required_date",
        "finance/revenue marts.fct_daily_revenue.date: required: 1 null(s) in a required column"),
    "a value twice in a unique column": (
        [CLEAN[0]], "contract_unique_date",
        "finance/revenue marts.fct_daily_revenue.date: unique: 1 value(s) more than once in a unique"
        " column"),
    "a quality rule's query": (
        [("2026-11-03", 10, 2, 9, 3)], "fct_daily_revenue_net_is_gross_minus_refunds",
        "finance/revenue marts.fct_daily_revenue: quality: rule fct_daily_revenue_net_is_gross_minus"
        "_refunds: measured 1, mustBe 0"),
}


@pytest.mark.parametrize("extra, name, message", BREAKS.values(), ids=BREAKS.keys())
def test_each_broken_promise_fails_its_check_by_product_table_column_and_rule(backend, revenue, extra,
                                                                             name, message):
    results = check(backend, revenue, revenue.table("marts.fct_daily_revenue"), REVENUE_COLUMNS,
                    CLEAN + extra)
    assert failed(results) == {name: message}
    assert [r for r in results if not r.passed][0].blocking


@pytest.mark.parametrize("columns, message", [
    (REVENUE_COLUMNS.replace("net_revenue numeric", "net numeric"),
     "finance/revenue marts.fct_daily_revenue: schema: column net_revenue is missing (renamed or"
     " removed?); column net is not in the contract"),
    (REVENUE_COLUMNS.replace("paying_customers bigint", "paying_customers varchar"),
     "finance/revenue marts.fct_daily_revenue.paying_customers: schema: column paying_customers is"
     " {varchar} in the build, the contract says bigint"),
    (REVENUE_COLUMNS.replace("refunds numeric(18, 2)", "refunds numeric(18, 4)"),
     "finance/revenue marts.fct_daily_revenue.refunds: schema: column refunds is {numeric} in the"
     " build, the contract says numeric(18,2)"),
], ids=["renamed", "retyped", "rescaled"])
def test_a_missing_renamed_or_retyped_column_fails_the_schema_and_stops_there(backend, revenue, columns,
                                                                              message):
    db, _ = backend
    names = {"postgres": {"varchar": "character varying", "numeric": "numeric"},
             "snowflake": {"varchar": "TEXT", "numeric": "NUMBER"}}[db.NAME]
    rows = [(*row[:4], str(row[4])) if "varchar" in columns else row for row in CLEAN]
    results = check(backend, revenue, revenue.table("marts.fct_daily_revenue"), columns, rows)
    assert [(r.check_name, r.observed.get("message")) for r in results] == [
        ("contract_schema", message.format(**names))]


def test_a_custom_rule_fails_when_its_dbt_test_did_not_pass_or_did_not_run(backend, revenue):
    table = revenue.table("marts.fct_daily_revenue")
    for dbt_tests, outcome in (([{"name": CUSTOM_RULE, "status": "fail"}], "ended fail"),
                               ([], "did not run in the build")):
        results = check(backend, revenue, table, REVENUE_COLUMNS, CLEAN, dbt_tests)
        assert failed(results) == {CUSTOM_RULE: f"finance/revenue marts.fct_daily_revenue: quality: rule "
                                                f"{CUSTOM_RULE}: the dbt test {outcome}"}


def test_a_pii_column_holding_a_value_in_clear_fails_its_masking(backend, revenue):
    table = dataclasses.replace(
        revenue.table("marts.dim_customers"), quality=(),
        columns=(Column("customer_id", "integer", "bigint", "confidential", required=True, unique=True),
                 Column("email_sha256", "string", "text", "pii", masking="sha256")))
    hashed = hashlib.sha256(b"ada@example.com").hexdigest()
    results = check(backend, revenue, table, "customer_id bigint, email_sha256 text",
                    [(1, hashed), (2, hashed.upper()), (3, None), (4, "grace@example.com")])
    assert failed(results) == {"contract_masking_email_sha256": (
        "finance/revenue marts.dim_customers.email_sha256: masking: 1 value(s) that are not sha256"
        " hashes: pii in clear")}
    assert results[-1].observed["in_clear"] == 1


def test_the_library_metrics_are_measured(backend, revenue):
    rules = (QualityRule("once_per_date", "marts.fct_daily_revenue", None, "library", "error",
                         metric="duplicateValues", arguments={"properties": ["date"]},
                         operator="mustBe", threshold=0),
             QualityRule("known_counts", "marts.fct_daily_revenue", "paying_customers", "library",
                         "warning", metric="invalidValues", arguments={"validValues": [1, 3]},
                         operator="mustBe", threshold=0),
             QualityRule("some_days", "marts.fct_daily_revenue", None, "library", "error",
                         metric="rowCount", operator="mustBeBetween", threshold=[1, 2]),
             QualityRule("no_null_refunds", "marts.fct_daily_revenue", "refunds", "library", "error",
                         metric="nullValues", operator="mustBe", threshold=0))
    table = dataclasses.replace(revenue.table("marts.fct_daily_revenue"), quality=rules,
                                columns=tuple(dataclasses.replace(c, unique=False)
                                              for c in revenue.table("marts.fct_daily_revenue").columns))
    results = check(backend, revenue, table, REVENUE_COLUMNS, [*CLEAN, CLEAN[1][:4] + (7,)])
    by_name = {r.check_name: r for r in results}
    assert {n: (r.passed, r.observed.get("value")) for n, r in by_name.items() if n in
            ("once_per_date", "known_counts", "some_days", "no_null_refunds")} == {
        "once_per_date": (False, 1), "known_counts": (False, 1), "some_days": (False, 3),
        "no_null_refunds": (True, 0)}
    assert by_name["known_counts"].severity == "warn" and not by_name["known_counts"].blocking


# --- the publish -------------------------------------------------------------------------------

PARAMS = {"seed": 5, "events_per_day": 300, "users": 120}


def publish_twice_renaming_a_column(monkeypatch, tmp_path) -> tuple[dict, QualityGateFailed]:
    """Land three days and publish them; then land a fourth and build it with dim_customers'
    country renamed: what the first publish returned and the error of the second."""
    zone = LandingZone(config.landing_url())
    write_drops(zone, date(2026, 11, 1), date(2026, 11, 4), **PARAMS)
    assert load_new_files("load-1")["failed"] == 0
    with ActivitySimulator(token="t", **PARAMS) as api:
        monkeypatch.setenv("ACTIVITY_API_URL", api.url)
        monkeypatch.setenv("ACTIVITY_API_TOKEN", "t")
        window = {"window_start": datetime(2026, 11, 1, tzinfo=UTC),
                  "window_end": datetime(2026, 11, 4, tzinfo=UTC)}
        user_activity.load(user_activity.validate(user_activity.fetch(**window)))
    quality_gates.check_raw_file_drops("gate-1")
    first = build_and_publish("build-1")

    copy = tmp_path / "dbt" / "warehouse"
    shutil.copytree(transform.DBT_PROJECT, copy, ignore=shutil.ignore_patterns("target", "logs"))
    model = copy / "models" / "marts" / "dim_customers.sql"
    model.write_text(model.read_text().replace("customers.country,", "customers.country as country_code,"))
    monkeypatch.setattr(transform, "DBT_PROJECT", copy)
    write_drops(zone, date(2026, 11, 4), date(2026, 11, 5), snapshot=False, **PARAMS)
    assert load_new_files("load-2")["failed"] == 0
    quality_gates.check_raw_file_drops("gate-2")
    with pytest.raises(QualityGateFailed) as refused:
        build_and_publish("build-2")
    return first, refused.value


def rows(db, conn, statement: str) -> list[tuple]:
    with db.transaction(conn) as cur:
        cur.execute(statement)
        return cur.fetchall()


@pytest.mark.parametrize("kind", ["postgres", "snowflake"])
def test_a_build_that_breaks_a_contract_is_not_published_and_its_domain_is_alerted(
        request, monkeypatch, tmp_path, kind):
    request.getfixturevalue("warehouse" if kind == "postgres" else "snowflake_warehouse")
    with SmtpSink() as smtp:
        monkeypatch.setenv("SMTP_HOST", "127.0.0.1")
        monkeypatch.setenv("SMTP_PORT", str(smtp.port))
        monkeypatch.setenv("ALERT_EMAIL_TO", "platform@example.com")
        first, refused = publish_twice_renaming_a_column(monkeypatch, tmp_path)
        messages = smtp.wait_for(1)
    assert first["published"] is True
    assert str(refused) == (
        "not publishing the marts: they break their contracts: finance/revenue marts.dim_customers:"
        " schema: column country is missing (renamed or removed?); column country_code is not in the"
        " contract")
    # One check per promise of each published table: its columns, each required, unique and pii
    # column, each quality rule; a table whose columns break the contract gets the first only.
    tables = {t.name: t for p in contracts.load_products() for t in p.tables if t.schema == "marts"}
    promises = {name: 1 + sum(c.required + c.unique + (c.classification == "pii") for c in t.columns)
                + len(t.quality) for name, t in tables.items()}
    assert len(promises) >= 4 and promises["marts.dim_customers"] > 1
    db = warehouse.backend()
    with db.connection("owner") as conn:
        # The first build's checks all passed; the second's failed on dim_customers only.
        assert rows(db, conn, "select run_id, passed, count(*) from ops.quality_results where"
                              " check_kind = 'contract' and table_name like 'marts.%'"
                              " group by run_id, passed order by 1, 2") == [
            ("build-1", True, sum(promises.values())), ("build-2", False, 1),
            ("build-2", True, sum(promises.values()) - promises["marts.dim_customers"])]
        assert rows(db, conn, "select table_name, check_name from ops.quality_results where"
                              " check_kind = 'contract' and not passed") == [
            ("marts.dim_customers", "contract_schema")]
        # The previous marts stay: the published dim_customers still has its country.
        assert [c.name for c in db.table_columns(conn.cursor(), "marts", "dim_customers")][:2] == [
            "customer_id", "country"]
        assert rows(db, conn, "select count(*) from ops.marts_publications") == [(1,)]
    assert len(messages) == 1
    alert = messages[0]
    assert alert["To"] == "finance-data@example.com"
    assert alert["Subject"] == ("[mage_project] finance/revenue: not published, its contract is broken"
                                " (warehouse_elt run build-2)")
    assert "- finance/revenue marts.dim_customers: schema: column country is missing" in alert.get_content()


# --- the loads ---------------------------------------------------------------------------------

def raw_promises(name: str) -> int:
    """The checks a load of raw table ``name`` gets: its columns, each required and unique column."""
    table = contracts.raw_table(name)[1]
    return 1 + sum(c.required + c.unique for c in table.columns)


@pytest.mark.parametrize("kind", ["postgres", "snowflake"])
def test_each_load_is_held_to_its_raw_tables_contract_and_rows_that_break_it_are_not_kept(
        request, monkeypatch, kind):
    """Every file version's rows and every API run's rows are checked in their load's
    transaction; a raw table whose columns are no longer its contract's (a migration the contract
    does not know) keeps nothing of the loads, which fail naming the column, the files tried
    again by the next run; the other tables' files load; the owning domain is alerted."""
    request.getfixturevalue("warehouse" if kind == "postgres" else "snowflake_warehouse")
    zone = LandingZone(config.landing_url())
    write_drops(zone, date(2026, 11, 1), date(2026, 11, 2), **PARAMS)
    first = load_new_files("load-1")
    assert (first["loaded"], first["failed"], first["error"]) == (4, 0, 0)  # crm: a snapshot too
    db = warehouse.backend()
    with db.connection("owner") as conn:
        conn.cursor().execute("alter table raw.crm__customers add column nickname text")
        conn.commit()
    write_drops(zone, date(2026, 11, 2), date(2026, 11, 3), snapshot=False, **PARAMS)
    with SmtpSink() as smtp:
        monkeypatch.setenv("SMTP_HOST", "127.0.0.1")
        monkeypatch.setenv("SMTP_PORT", str(smtp.port))
        monkeypatch.setenv("ALERT_EMAIL_TO", "platform@example.com")
        second = load_new_files("load-2")
        (alert,) = smtp.wait_for(1)
    assert (second["loaded"], second["failed"], second["error"]) == (2, 0, 1)
    (crm,) = second["not_loaded"]
    assert crm["key"] == "crm/customers/2026-11-02/export.csv"
    assert crm["error"] == ("breaks the contract of platform/file_drops: platform/file_drops "
                            "raw.crm__customers.nickname: schema: column nickname is not in the contract")
    assert alert["To"] == "data-team@example.com"
    assert alert["Subject"] == ("[mage_project] platform/file_drops: not loaded, its contract is broken"
                                " (warehouse_elt run load-2)")
    assert "raw.crm__customers.nickname: schema" in alert.get_content()
    with db.connection("owner") as conn:
        assert rows(db, conn, "select run_id, table_name, passed, count(*) from ops.quality_results"
                              " where check_kind = 'contract' group by 1, 2, 3 order by 1, 2, 3") == [
            ("load-1", "raw.billing__payments", True, raw_promises("raw.billing__payments")),
            ("load-1", "raw.crm__customers", True, 2 * raw_promises("raw.crm__customers")),
            ("load-1", "raw.marketing__ad_spend", True, raw_promises("raw.marketing__ad_spend")),
            ("load-2", "raw.billing__payments", True, raw_promises("raw.billing__payments")),
            ("load-2", "raw.crm__customers", False, 1),
            ("load-2", "raw.marketing__ad_spend", True, raw_promises("raw.marketing__ad_spend"))]
        assert rows(db, conn, "select status, count(*) from ops.file_manifest where run_id = 'load-2'"
                              " group by 1 order by 1") == [("error", 1), ("loaded", 2)]
        # Nothing of the file that broke the contract is in the table.
        kept = f"select count(*) from raw.crm__customers where _file_key = '{crm['key']}'"  # noqa: S608
        assert rows(db, conn, kept) == [(0,)]


@pytest.mark.parametrize("kind", ["postgres", "snowflake"])
def test_an_api_run_whose_rows_break_the_raw_contract_keeps_nothing_and_the_next_loads_it(
        request, monkeypatch, kind):
    request.getfixturevalue("warehouse" if kind == "postgres" else "snowflake_warehouse")
    db = warehouse.backend()
    with db.connection("owner") as conn:
        db.migrate(conn)
        conn.cursor().execute("alter table raw.user_activity add column extra text")
        conn.commit()
    window = {"window_start": datetime(2026, 11, 1, tzinfo=UTC),
              "window_end": datetime(2026, 11, 2, tzinfo=UTC)}
    with ActivitySimulator(token="t", **PARAMS) as api, SmtpSink() as smtp:
        for name, value in (("ACTIVITY_API_URL", api.url), ("ACTIVITY_API_TOKEN", "t"),
                            ("SMTP_HOST", "127.0.0.1"), ("SMTP_PORT", str(smtp.port)),
                            ("ALERT_EMAIL_TO", "platform@example.com")):
            monkeypatch.setenv(name, value)
        with pytest.raises(enforcement.ContractBroken) as broken:
            user_activity.load(user_activity.validate(user_activity.fetch(**window)))
        (alert,) = smtp.wait_for(1)
        assert str(broken.value) == ("product/user_activity raw.user_activity.extra: schema: column extra"
                                     " is not in the contract")
        assert alert["To"] == "product-analytics@example.com"
        with db.connection("owner") as conn:
            # Nothing of the run: no row, no watermark, no run recorded; the checks say why.
            assert rows(db, conn, "select count(*) from raw.user_activity") == [(0,)]
            assert rows(db, conn, "select count(*) from ops.watermarks") == [(0,)]
            assert rows(db, conn, "select check_name, passed from ops.quality_results") == [
                ("contract_schema", False)]
            conn.cursor().execute("alter table raw.user_activity drop column extra")
            conn.commit()
        loaded = user_activity.load(user_activity.validate(user_activity.fetch(**window)))
    assert loaded["status"] == "success" and loaded["rows_loaded"] > 0
    with db.connection("owner") as conn:
        checks = f"select passed, count(*) from ops.quality_results where run_id = '{loaded['run_id']}'" \
            " group by 1"  # noqa: S608 - the test's own run id
        assert rows(db, conn, checks) == [(True, raw_promises("raw.user_activity"))]
