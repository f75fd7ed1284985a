"""The marts on PostgreSQL, every value checked against an independent computation in Python
over the same input files and events."""

from __future__ import annotations

import csv
import gzip
import io
from collections import defaultdict
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from conftest import query

from mage_project import config
from mage_project.landing import LandingZone
from mage_project.pipelines import user_activity
from mage_project.pipelines.file_drops import load_new_files
from mage_project.sources.activity_simulator import ActivitySimulator, generate_events
from mage_project.sources.file_drops import expected_latest, write_drops
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
