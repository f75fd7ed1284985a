"""The marts on PostgreSQL, every value checked against an independent computation in Python
over the same input files and events."""

from __future__ import annotations

import csv
import gzip
import io
import shutil
from collections import defaultdict
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from conftest import query
from support.file_drops import expected_latest

from mage_project import config, transform
from mage_project.landing import LandingZone
from mage_project.pipelines import user_activity
from mage_project.pipelines.file_drops import load_new_files
from mage_project.sources.activity_simulator import ActivitySimulator, generate_events
from mage_project.sources.file_drops import write_drops
from mage_project.transform import run_dbt

pytestmark = pytest.mark.integration

START, END = date(2026, 11, 1), date(2026, 11, 5)
PARAMS = {"seed": 3, "events_per_day": 1500, "users": 400}


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def read_rows(zone, key):
    data = zone.read_bytes(key)
    text = (gzip.decompress(data) if key.endswith(".gz") else data).decode()
    return list(csv.DictReader(io.StringIO(text)))


@pytest.fixture
def built(warehouse, monkeypatch):
    zone = LandingZone(config.landing_url())
    keys = write_drops(zone, START, END, gzip_entities={"billing/payments"}, **PARAMS)
    assert load_new_files()["loaded"] == len(keys)
    with ActivitySimulator(token="t", **PARAMS) as api:
        monkeypatch.setenv("ACTIVITY_API_URL", api.url)
        monkeypatch.setenv("ACTIVITY_API_TOKEN", "t")
        window = {"window_start": datetime(2026, 11, 1, tzinfo=UTC),
                  "window_end": datetime(2026, 11, 5, tzinfo=UTC)}
        user_activity.load(user_activity.validate(user_activity.fetch(**window)))
    result = run_dbt("build")
    assert "ERROR=0" in result.stdout, result.stdout[-3000:]

    def latest(prefix):
        return expected_latest([(k, read_rows(zone, k)) for k in keys if k.startswith(prefix)],
                               prefix).values()

    return latest("crm/customers"), latest("billing/payments"), latest("marketing/ad_spend")


def test_marts_equal_an_independent_computation(warehouse, built):
    customers, payments, spend = built
    counted = [p for p in payments if p["status"] in ("succeeded", "refunded")]

    revenue = defaultdict(lambda: [Decimal(0), Decimal(0), set()])
    for p in counted:
        day = revenue[utc(p["paid_at"]).date()]
        day[0] += Decimal(p["amount"])
        if p["status"] == "refunded":
            day[1] += Decimal(p["amount"])
        else:
            day[2].add(int(p["customer_id"]))
    assert {r[0]: r[1:] for r in query(warehouse, "select * from marts.fct_daily_revenue")} == {
        d: (g, r, g - r, len(c)) for d, (g, r, c) in revenue.items()}
    assert any(r > 0 for _, r, _ in revenue.values())

    paid = defaultdict(list)
    for p in counted:
        paid[int(p["customer_id"])].append(p)
    expected_customers = {
        int(c["customer_id"]): (
            c["country"], utc(c["signup_at"]), utc(c["signup_at"]).date(), c["utm_campaign"] or None,
            min((utc(p["paid_at"]) for p in paid[int(c["customer_id"])]), default=None),
            sum((Decimal(p["amount"]) for p in paid[int(c["customer_id"])]
                 if p["status"] == "succeeded"), Decimal(0)),
        )
        for c in customers
    }
    assert {r[0]: r[1:] for r in query(warehouse, "select * from marts.dim_customers")} == (
        expected_customers)

    performance = defaultdict(lambda: [Decimal(0), 0, 0, 0])
    for s in spend:
        row = performance[(date.fromisoformat(s["date"]), s["campaign"])]
        row[0] += Decimal(s["spend"])
        row[1] += int(s["impressions"])
        row[2] += int(s["clicks"])
    for c in customers:
        if c["utm_campaign"]:
            performance[(utc(c["signup_at"]).date(), c["utm_campaign"])][3] += 1
    assert {(r[0], r[1]): list(r[2:]) for r in query(
        warehouse, "select * from marts.fct_campaign_performance")} == dict(performance)
    assert any(v[3] > 0 for v in performance.values())

    events = list(generate_events(datetime(2026, 11, 1, tzinfo=UTC),
                                  datetime(2026, 11, 5, tzinfo=UTC), **PARAMS))
    active = defaultdict(lambda: [set(), set(), 0, 0, Decimal(0)])
    for e in events:
        day = active[utc(e["occurred_at"]).date()]
        day[0].add(e["user_id"])
        if e["session_id"] is not None:
            day[1].add(e["session_id"])
        day[2] += 1
        if e["event_type"] == "purchase":
            day[3] += 1
            day[4] += Decimal(repr(e["amount"]))
    assert {r[0]: r[1:] for r in query(warehouse, "select * from marts.fct_daily_active_users")} == {
        d: (len(u), len(s), n, p, a) for d, (u, s, n, p, a) in active.items()}


def corrupt(project, mart: str, *updates: str) -> None:
    """Make ``mart`` of the dbt project at ``project`` build with ``updates`` applied after it
    (post-hooks, each an update of ``{{ this }}``), so its tests run on the corrupted rows."""
    model = project / "models" / "marts" / f"{mart}.sql"
    hooks = ", ".join(repr(f"update {{{{ this }}}} {u}") for u in updates)
    model.write_text(f"{{{{ config(post_hook=[{hooks}]) }}}}\n" + model.read_text())


def test_a_broken_invariant_fails_the_build_by_the_tests_name(warehouse, built, tmp_path, monkeypatch):
    """Every invariant test of the marts (models/marts/_marts.yml) fails a real ``dbt build`` when
    one row breaks its invariant, and only that test: each corruption below breaks one invariant
    on its own row of the clean build, keeping the others true."""
    copy = tmp_path / "warehouse"
    shutil.copytree(transform.DBT_PROJECT, copy, ignore=shutil.ignore_patterns("target", "logs"))
    monkeypatch.setattr(transform, "DBT_PROJECT", copy)

    # Three of the corruptions need a day with paying customers, the other two any other day.
    days = query(warehouse, "select date, paying_customers > 0 and net_revenue > 0"
                            " from marts.fct_daily_revenue order by 1")
    paying = [d for d, with_payers in days if with_payers][:3]
    others = [d for d, _ in days if d not in paying]
    assert len(paying) == 3 and len(others) >= 2, days
    day = [f"where date = '{d.isoformat()}'" for d in paying + others]
    corrupt(copy, "fct_daily_revenue",
            f"set net_revenue = net_revenue + 0.01 {day[0]}",
            # refunds above gross, net kept at gross - refunds
            f"set refunds = gross_revenue + 1, net_revenue = -1 {day[1]}",
            f"set paying_customers = 0 {day[2]}",
            f"set paying_customers = paying_customers + 1000 {day[3]}",
            f"set paying_customers = -1, refunds = gross_revenue, net_revenue = 0 {day[4]}")

    campaigns = query(warehouse, "select date, campaign from marts.fct_campaign_performance"
                                 " where spend > 0 and clicks > 0 order by 1, 2")
    assert len(campaigns) >= 3, campaigns
    row = [f"where date = '{d.isoformat()}' and campaign = '{c}'" for d, c in campaigns]
    corrupt(copy, "fct_campaign_performance",
            f"set spend = -0.01 {row[0]}",
            f"set signups = -1 {row[1]}",
            f"set clicks = impressions + 1 {row[2]}")

    active = [d for (d,) in query(warehouse, "select date from marts.fct_daily_active_users"
                                             " where purchases > 0 order by 1")]
    assert len(active) >= 2, active
    corrupt(copy, "fct_daily_active_users",
            f"set events = active_users - 1 where date = '{active[0].isoformat()}'",
            f"set purchases = 0 where date = '{active[1].isoformat()}'")

    customers = [c for (c,) in query(warehouse, "select customer_id from marts.dim_customers"
                                                " where lifetime_net_revenue > 0 order by 1 limit 2")]
    assert len(customers) == 2, customers
    corrupt(copy, "dim_customers",
            f"set lifetime_net_revenue = -1 where customer_id = {customers[0]}",
            f"set first_paid_at = null where customer_id = {customers[1]}")

    target = tmp_path / "target"
    with pytest.raises(RuntimeError, match="dbt build failed"):
        run_dbt("build", target_path=target)
    tests = transform.summary(target)["test_results"]
    broken = {t["name"]: (t["status"], t["failures"], t["table"]) for t in tests if t["status"] != "pass"}
    assert broken == {
        "fct_daily_revenue_net_is_gross_minus_refunds": ("fail", 1, "marts.fct_daily_revenue"),
        "fct_daily_revenue_refunds_within_gross": ("fail", 1, "marts.fct_daily_revenue"),
        "fct_daily_revenue_paying_customers_at_most_the_days_customers": (
            "fail", 1, "marts.fct_daily_revenue"),
        "fct_daily_revenue_paying_customers_is_not_negative": ("fail", 1, "marts.fct_daily_revenue"),
        "fct_daily_revenue_net_revenue_only_with_paying_customers": (
            "fail", 1, "marts.fct_daily_revenue"),
        "fct_campaign_performance_spend_is_not_negative": ("fail", 1, "marts.fct_campaign_performance"),
        "fct_campaign_performance_counts_are_not_negative": ("fail", 1, "marts.fct_campaign_performance"),
        # severity warn, as the raw gate's check of the same rule: recorded, never blocking
        "fct_campaign_performance_clicks_at_most_impressions": ("warn", 1, "marts.fct_campaign_performance"),
        "fct_daily_active_users_counts_within_events": ("fail", 1, "marts.fct_daily_active_users"),
        "fct_daily_active_users_purchase_amount_only_with_purchases": (
            "fail", 1, "marts.fct_daily_active_users"),
        "dim_customers_lifetime_net_revenue_is_not_negative": ("fail", 1, "marts.dim_customers"),
        "dim_customers_net_revenue_only_with_a_payment": ("fail", 1, "marts.dim_customers"),
    }
    assert len(tests) == 32  # every other test ran, and passed


def test_every_staging_and_mart_column_is_documented_as_built(warehouse, built):
    """_staging.yml and _marts.yml name every column of every model they describe, in the
    model's order, each with a description; and every built staging view and mart is in them."""
    import yaml

    documented = {}
    for layer in ("staging", "marts"):
        spec = yaml.safe_load((transform.DBT_PROJECT / "models" / layer / f"_{layer}.yml").read_text())
        for model in spec["models"]:
            assert model.get("description"), model["name"]
            undescribed = [c["name"] for c in model["columns"] if not c.get("description")]
            assert undescribed == [], f"{model['name']}: {undescribed}"
            documented[(layer, model["name"])] = [c["name"] for c in model["columns"]]
    columns = defaultdict(list)
    for schema, table, column in query(
            warehouse, "select table_schema, table_name, column_name from information_schema.columns"
                       " where table_schema in ('staging', 'marts') order by 1, 2, ordinal_position"):
        columns[(schema, table)].append(column)
    assert len(columns) == 8
    assert documented == dict(columns)
