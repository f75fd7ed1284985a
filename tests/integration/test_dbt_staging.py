"""dbt staging models on PostgreSQL: the latest version of every key, from the raw file loads,
checked against the generator's independent reference (support.file_drops.expected_latest)."""

from __future__ import annotations

import csv
import gzip
import io
from datetime import date, datetime
from decimal import Decimal

import pytest
from conftest import query
from support.file_drops import expected_latest

from mage_project import config
from mage_project.landing import LandingZone
from mage_project.pipelines.file_drops import load_new_files
from mage_project.sources.file_drops import write_drops
from mage_project.transform import run_dbt

pytestmark = pytest.mark.integration


def read_rows(zone, key):
    data = zone.read_bytes(key)
    text = (gzip.decompress(data) if key.endswith(".gz") else data).decode()
    return list(csv.DictReader(io.StringIO(text)))


def test_staging_models_keep_the_latest_version_of_every_key(warehouse):
    zone = LandingZone(config.landing_url())
    keys = write_drops(zone, date(2026, 11, 1), date(2026, 11, 5))
    assert load_new_files()["loaded"] == len(keys)
    result = run_dbt("build", "--select", "staging", "--indirect-selection", "cautious")
    assert "ERROR=0" in result.stdout and "PASS=" in result.stdout

    def files(prefix):
        return [(k, read_rows(zone, k)) for k in keys if k.startswith(prefix)]

    customers = expected_latest(files("crm/customers"), "crm/customers")
    assert {
        r[0]: r[1:] for r in query(
            warehouse, "select customer_id, email, country, updated_at from staging.stg_crm__customers")
    } == {
        int(c["customer_id"]): (c["email"], c["country"], datetime.fromisoformat(c["updated_at"]))
        for c in customers.values()
    }
    payments = expected_latest(files("billing/payments"), "billing/payments")
    assert {
        r[0]: r[1:] for r in query(
            warehouse, "select payment_id, status, amount from staging.stg_billing__payments")
    } == {p["payment_id"]: (p["status"], Decimal(p["amount"])) for p in payments.values()}
    assert any(p["status"] == "refunded" for p in payments.values())
    spend = expected_latest(files("marketing/ad_spend"), "marketing/ad_spend")
    assert {
        (str(r[0]), r[1], r[2]): r[3] for r in query(
            warehouse, "select spend_date, campaign, channel, spend from staging.stg_marketing__ad_spend")
    } == {(s["date"], s["campaign"], s["channel"]): Decimal(s["spend"]) for s in spend.values()}
