"""Column lineage of the project's own dbt models (mage_project.lineage.columns), from a real
``dbt compile`` of dbt/warehouse: on the embedded PostgreSQL, and on the Snowflake stand-in with
Snowflake's SQL (the dispatched macros compile differently there), each compiled once for the
module. Every mart column's direct input fields and its whole trace to the raw columns are written
here by hand, from reading the models' SQL."""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from pathlib import Path

import psycopg2
import pytest
from conftest import _SETTINGS, FAKESNOW_ADMIN, fakesnow_settings
from psycopg2 import sql

from mage_project import transform
from mage_project.lineage.columns import (
    by_dataset,
    model_relation,
    models_lineage,
    upstream_columns,
    upstream_paths,
)
from mage_project.lineage.schema import validate

pytestmark = pytest.mark.integration

NS = "postgres://127.0.0.1:5432"


def dataset(relation: str) -> tuple[str, str]:
    return NS, f"warehouse.{relation}"


def compile_project(env: dict[str, str]) -> dict:
    """The manifest of a ``dbt compile`` of the project with ``env`` as the only settings."""
    data = Path(tempfile.mkdtemp(prefix="mage-project-lineage-"))
    try:
        with pytest.MonkeyPatch.context() as patch:
            for name in _SETTINGS:  # the module's fixture runs before conftest's clean_environment
                patch.delenv(name, raising=False)
            for name, value in {**env, "PROJECT_DATA_DIR": str(data)}.items():
                patch.setenv(name, value)
            transform.run_dbt("compile", target_path=data / "target")
        return json.loads((data / "target" / "manifest.json").read_text())
    finally:
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres_manifest(pg_server):
    dbname = f"test_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(host=pg_server.socket_dir, port=pg_server.port, user=pg_server.user,
                             dbname="postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(sql.SQL("create database {}").format(sql.Identifier(dbname)))
    try:
        yield compile_project({"POSTGRES_HOST": pg_server.socket_dir, "POSTGRES_PORT": str(pg_server.port),
                               "POSTGRES_USER": pg_server.user, "POSTGRES_DBNAME": dbname})
    finally:
        with admin.cursor() as cur:
            cur.execute(sql.SQL("drop database {} with (force)").format(sql.Identifier(dbname)))
        admin.close()


@pytest.fixture(scope="module")
def snowflake_manifest(snowflake_server):
    import snowflake.connector

    database = f"TEST_{uuid.uuid4().hex[:12].upper()}"
    admin = snowflake.connector.connect(**FAKESNOW_ADMIN, port=snowflake_server)
    admin.cursor().execute(f"create database {database}")
    admin.close()  # fakesnow has no DROP DATABASE: its databases end with the server
    return compile_project({"WAREHOUSE": "snowflake", **fakesnow_settings(snowflake_server, database)})


@pytest.fixture(scope="module", params=["postgres", "snowflake"])
def compiled(request) -> tuple[dict, dict]:
    """(manifest, facets by unique_id) of one warehouse's compile."""
    manifest = request.getfixturevalue(f"{request.param}_manifest")
    return manifest, models_lineage(manifest, dataset, dialect=request.param)


@pytest.fixture(scope="module")
def facets(compiled) -> dict[tuple[str, str], dict]:
    manifest, by_model = compiled
    return by_dataset(manifest, by_model, dataset)


ID = ("DIRECT", "IDENTITY", False)
TR = ("DIRECT", "TRANSFORMATION", False)
AGG = ("DIRECT", "AGGREGATION", False)
COUNTED = ("DIRECT", "AGGREGATION", True)  # count: the spec's masking aggregation
COND = ("INDIRECT", "CONDITIONAL", False)
COND_COUNTED = ("INDIRECT", "CONDITIONAL", True)  # a condition under count (masking composes)
FILTER, JOIN, GROUP_BY = (("INDIRECT", kind, False) for kind in ("FILTER", "JOIN", "GROUP_BY"))

INT_PAY, STG_CRM = "intermediate.int_payments__counted", "staging.stg_crm__customers"
SPEND, SIGNUPS = "intermediate.int_ad_spend__daily", "intermediate.int_campaign_signups__daily"
EVENTS, STG_PAY = "staging.stg_activity__user_activity", "staging.stg_billing__payments"
STG_AD = "staging.stg_marketing__ad_spend"

# Each mart column: its input fields one layer down, {(relation, column): {(type, subtype, masking)}};
# and "dataset": what shapes every row of the mart.
MARTS = {
    "fct_daily_revenue": {
        "date": {(INT_PAY, "paid_date"): {ID}},
        "gross_revenue": {(INT_PAY, "amount"): {AGG}},
        "refunds": {(INT_PAY, "amount"): {AGG}, (INT_PAY, "is_refunded"): {COND}},
        "net_revenue": {(INT_PAY, "amount"): {AGG}, (INT_PAY, "is_refunded"): {COND}},
        "paying_customers": {(INT_PAY, "customer_id"): {COUNTED}, (INT_PAY, "is_refunded"): {COND_COUNTED}},
        "dataset": {(INT_PAY, "paid_date"): {GROUP_BY}},
    },
    "dim_customers": {
        "customer_id": {(STG_CRM, "customer_id"): {ID}},
        "country": {(STG_CRM, "country"): {ID}},
        "signup_at": {(STG_CRM, "signup_at"): {ID}},
        "signup_date": {(STG_CRM, "signup_at"): {TR}},
        "utm_campaign": {(STG_CRM, "utm_campaign"): {ID}},
        "first_paid_at": {(INT_PAY, "paid_at"): {AGG}},
        # coalesce(customer_payments.lifetime_net_revenue, 0) tests the sum of amounts for null
        "lifetime_net_revenue": {(INT_PAY, "amount"): {AGG, COND}, (INT_PAY, "is_refunded"): {COND}},
        # the join on customer_id, and customer_payments' group by customer_id
        "dataset": {(STG_CRM, "customer_id"): {JOIN}, (INT_PAY, "customer_id"): {JOIN, GROUP_BY}},
    },
    "fct_campaign_performance": {
        # coalesce(spend.x, signups.y): spend's value is tested for null, the signups' only returned
        "date": {(SPEND, "spend_date"): {TR, COND}, (SIGNUPS, "signup_date"): {TR}},
        "campaign": {(SPEND, "campaign"): {TR, COND}, (SIGNUPS, "campaign"): {TR}},
        "spend": {(SPEND, "spend"): {TR, COND}},
        "impressions": {(SPEND, "impressions"): {TR, COND}},
        "clicks": {(SPEND, "clicks"): {TR, COND}},
        "signups": {(SIGNUPS, "signups"): {TR, COND}},
        "dataset": {(SPEND, "spend_date"): {JOIN}, (SPEND, "campaign"): {JOIN},
                    (SIGNUPS, "signup_date"): {JOIN}, (SIGNUPS, "campaign"): {JOIN}},
    },
    "fct_daily_active_users": {
        "date": {(EVENTS, "occurred_date"): {ID}},
        "active_users": {(EVENTS, "user_id"): {COUNTED}},
        "sessions": {(EVENTS, "session_id"): {COUNTED}},
        "events": {},  # count(*): made of rows, no column (its group by is on the dataset)
        "purchases": {(EVENTS, "event_type"): {COND_COUNTED}},
        "purchase_amount": {(EVENTS, "amount"): {AGG, COND}, (EVENTS, "event_type"): {COND}},
        "dataset": {(EVENTS, "occurred_date"): {GROUP_BY}},
    },
}

PAY, CRM = "raw.billing__payments", "raw.crm__customers"
AD, ACTIVITY = "raw.marketing__ad_spend", "raw.user_activity"

# Each mart column's raw columns, through staging and intermediate (what its value is made of).
RAW = {
    "fct_daily_revenue": {
        "date": {(PAY, "paid_at")},
        "gross_revenue": {(PAY, "amount")},
        "refunds": {(PAY, "amount"), (PAY, "status")},
        "net_revenue": {(PAY, "amount"), (PAY, "status")},
        "paying_customers": {(PAY, "customer_id"), (PAY, "status")},
    },
    "dim_customers": {
        "customer_id": {(CRM, "customer_id")},
        "country": {(CRM, "country")},
        "signup_at": {(CRM, "signup_at")},
        "signup_date": {(CRM, "signup_at")},
        "utm_campaign": {(CRM, "utm_campaign")},
        "first_paid_at": {(PAY, "paid_at")},
        "lifetime_net_revenue": {(PAY, "amount"), (PAY, "status")},
    },
    "fct_campaign_performance": {
        "date": {(AD, "date"), (CRM, "signup_at")},
        "campaign": {(AD, "campaign"), (CRM, "utm_campaign")},
        "spend": {(AD, "spend")},
        "impressions": {(AD, "impressions")},
        "clicks": {(AD, "clicks")},
        "signups": set(),  # a count(*) of the customers, below the coalesce
    },
    "fct_daily_active_users": {
        "date": {(ACTIVITY, "occurred_at")},
        "active_users": {(ACTIVITY, "user_id")},
        "sessions": {(ACTIVITY, "session_id")},
        "events": set(),
        "purchases": {(ACTIVITY, "event_type")},
        "purchase_amount": {(ACTIVITY, "amount"), (ACTIVITY, "event_type")},
    },
}


def kinds(inputs: list[dict]) -> dict[tuple[str, str], set[tuple]]:
    return {(f["name"].removeprefix("warehouse."), f["field"]): {
        (t["type"], t["subtype"], t["masking"]) for t in f["transformations"]} for f in inputs}


def raw(found: set[tuple[str, str, str]]) -> set[tuple[str, str]]:
    assert {namespace for namespace, _, _ in found} <= {NS}
    return {(name.removeprefix("warehouse."), column) for _, name, column in found}


def test_every_model_has_a_facet_naming_every_column_of_its_yaml(compiled):
    manifest, by_model = compiled
    models = {uid for uid, node in manifest["nodes"].items() if node["resource_type"] == "model"}
    assert set(by_model) == models and len(models) == 11
    for unique_id in models:
        assert list(by_model[unique_id]["fields"]) == list(manifest["nodes"][unique_id]["columns"]), unique_id


@pytest.mark.parametrize("mart", sorted(MARTS))
def test_each_mart_columns_direct_inputs(facets, mart):
    facet = facets[dataset(f"marts.{mart}")]
    expected = dict(MARTS[mart])
    assert kinds(facet["dataset"]) == expected.pop("dataset")
    assert {column: kinds(entry["inputFields"]) for column, entry in facet["fields"].items()} == expected


@pytest.mark.parametrize("mart", sorted(RAW))
def test_each_mart_column_traces_to_its_raw_columns(facets, mart):
    assert {column: raw(upstream_columns(facets, *dataset(f"marts.{mart}"), column))
            for column in RAW[mart]} == RAW[mart]


def test_net_revenue_in_full(facets):
    """The facet entry exactly as emitted, and the trace hop by hop."""
    assert facets[dataset("marts.fct_daily_revenue")]["fields"]["net_revenue"] == {"inputFields": [
        {"namespace": NS, "name": "warehouse.intermediate.int_payments__counted", "field": "amount",
         "transformations": [{"type": "DIRECT", "subtype": "AGGREGATION", "description": "sum",
                              "masking": False}]},
        {"namespace": NS, "name": "warehouse.intermediate.int_payments__counted", "field": "is_refunded",
         "transformations": [{"type": "INDIRECT", "subtype": "CONDITIONAL", "description": "case when",
                              "masking": False}]}]}
    paths = upstream_paths(facets, *dataset("marts.fct_daily_revenue"), "net_revenue")
    hops = sorted([(h.name.removeprefix("warehouse."), h.field,
                    [(t.type, t.subtype) for t in h.transformations]) for h in path] for path in paths)
    assert hops == [
        [(INT_PAY, "amount", [("DIRECT", "AGGREGATION")]), (STG_PAY, "amount", [("DIRECT", "IDENTITY")]),
         (PAY, "amount", [("DIRECT", "IDENTITY")])],
        [(INT_PAY, "is_refunded", [("INDIRECT", "CONDITIONAL")]),
         (STG_PAY, "status", [("DIRECT", "TRANSFORMATION")]), (PAY, "status", [("DIRECT", "IDENTITY")])]]


def test_what_shapes_the_rows_is_followed_on_request(facets):
    """signups is a count(*): no column makes its value, but which customers and dates it counts,
    and which campaigns' rows join, is decided by these raw columns."""
    kept = {"_file_key", "_row_number"}  # the staging models keep each key's latest version by them
    assert raw(upstream_columns(facets, *dataset("marts.fct_campaign_performance"), "signups",
                                include_dataset=True)) == {
        *((CRM, c) for c in ("signup_at", "utm_campaign", "customer_id", "updated_at", *kept)),
        *((AD, c) for c in ("date", "campaign", "channel", *kept))}
    assert raw(upstream_columns(facets, *dataset("marts.fct_daily_active_users"), "events",
                                include_dataset=True)) == {(ACTIVITY, "occurred_at")}


def test_staging_and_intermediate_columns(facets):
    def model(relation: str) -> dict:
        return facets[dataset(relation)]

    payments = model(STG_PAY)
    assert kinds(payments["fields"]["amount"]["inputFields"]) == {(PAY, "amount"): {ID}}
    # where version_rank = 1, the rank a row_number() over (partition by payment_id order by ...)
    assert kinds(payments["dataset"]) == {(PAY, c): {FILTER} for c in
                                          ("payment_id", "updated_at", "_file_key", "_row_number")}
    customers = model(STG_CRM)
    assert kinds(customers["fields"]["utm_campaign"]["inputFields"]) == {(CRM, "utm_campaign"): {TR, COND}}
    assert kinds(customers["fields"]["email"]["inputFields"]) == {(CRM, "email"): {ID}}
    assert kinds(model(STG_AD)["fields"]["spend_date"]["inputFields"]) == {(AD, "date"): {ID}}
    events = model(EVENTS)
    assert kinds(events["fields"]["occurred_date"]["inputFields"]) == {(ACTIVITY, "occurred_at"): {TR}}
    assert events["dataset"] == []
    counted = model(INT_PAY)
    assert kinds(counted["fields"]["is_refunded"]["inputFields"]) == {(STG_PAY, "status"): {TR}}
    assert kinds(counted["dataset"]) == {(STG_PAY, "status"): {FILTER}}
    signups = model(SIGNUPS)
    assert signups["fields"]["signups"] == {"inputFields": []}
    assert kinds(signups["dataset"]) == {(STG_CRM, "signup_at"): {GROUP_BY},
                                         (STG_CRM, "utm_campaign"): {FILTER, GROUP_BY}}
    assert kinds(model(SPEND)["fields"]["spend"]["inputFields"]) == {(STG_AD, "spend"): {AGG}}


def test_no_mart_column_reaches_personal_data(facets):
    """email and full_name stay in staging (dim_customers' comment): no mart column traces to them,
    even through what shapes its rows."""
    for mart, columns in RAW.items():
        for column in columns:
            found = raw(upstream_columns(facets, *dataset(f"marts.{mart}"), column, include_dataset=True))
            assert not found & {(CRM, "email"), (CRM, "full_name")}, (mart, column)


def test_both_warehouses_give_the_same_facets(postgres_manifest, snowflake_manifest):
    on_postgres = models_lineage(postgres_manifest, dataset, dialect="postgres")
    assert models_lineage(snowflake_manifest, dataset, dialect="snowflake") == on_postgres
    # the SQL did differ: the utc_date macro dispatches
    assert "convert_timezone" in snowflake_manifest["nodes"]["model.warehouse.dim_customers"]["compiled_code"]


def test_the_facets_in_a_run_event_are_valid_openlineage(compiled):
    manifest, by_model = compiled
    producer = "https://github.com/example/mage-project"
    event = {
        "eventType": "COMPLETE", "eventTime": "2026-11-05T00:00:00Z", "producer": producer,
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
        "run": {"runId": str(uuid.uuid4())},
        "job": {"namespace": "mage_project", "name": "warehouse_elt.dbt"},
        "inputs": [],
        "outputs": [{"namespace": NS, "name": dataset(model_relation(manifest, uid))[1], "facets": {
            "columnLineage": {"_producer": producer,
                              "_schemaURL": "https://openlineage.io/spec/facets/1-2-0/ColumnLineageDatasetFacet.json"
                                            "#/$defs/ColumnLineageDatasetFacet", **facet}}}
            for uid, facet in by_model.items()]}
    assert validate(event) == []
