"""Raw load of file drops into Snowflake (WAREHOUSE=snowflake): the real connector's PUT +
COPY INTO against the fakesnow stand-in, with the same outcomes as on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from mage_project import config
from mage_project.landing import LandingZone
from mage_project.pipelines.file_drops import load_new_files, pending_drops

pytestmark = pytest.mark.integration

HEADER = "customer_id,email,full_name,country,signup_at,utm_campaign,updated_at\n"
ROW1 = '1,ann@example.com,"Doe, Ann",US,2026-11-01T10:00:00Z,black_friday,2026-11-01T10:00:00Z\n'
ROW2 = "2,bo@example.com,Bo Li,DE,2026-11-01T11:00:00+01:00,,2026-11-01T11:00:00+01:00\n"
BAD = "x,cy@example.com,Cy,FR,2026-11-01T12:00:00Z,,2026-11-01T12:00:00Z\n"
CUSTOMERS = "crm/customers/2026-11-01/export.csv"
PAYMENTS = "billing/payments/2026-11-01/payments.csv"


def rows(conn, statement, params=None):
    return conn.cursor().execute(statement, params).fetchall()


@pytest.fixture
def zone(tmp_path, monkeypatch):
    url = (tmp_path / "landing").as_uri()
    monkeypatch.setenv("LANDING_URL", url)
    return LandingZone(url)


def test_files_load_once_with_lineage_and_rejects(snowflake_warehouse, zone):
    zone.write_bytes(CUSTOMERS, (HEADER + ROW1 + BAD + ROW2).encode())
    zone.write_bytes(PAYMENTS, b"payment_id,customer_id,amount,status,paid_at,updated_at\n"
                               b"pay_1,1,19.90,succeeded,2026-11-01T10:05:00Z,2026-11-01T10:05:00Z\n")
    first = load_new_files()
    assert (first["loaded"], first["skipped"], first["failed"]) == (2, 0, 0)
    conn = snowflake_warehouse
    assert rows(conn, "select customer_id, email, full_name, country, signup_at, utm_campaign,"
                      " _file_key, _row_number from raw.crm__customers order by _row_number") == [
        (1, "ann@example.com", "Doe, Ann", "US", datetime(2026, 11, 1, 10, tzinfo=UTC),
         "black_friday", CUSTOMERS, 1),
        (2, "bo@example.com", "Bo Li", "DE", datetime(2026, 11, 1, 10, tzinfo=UTC), None,
         CUSTOMERS, 3),
    ]
    assert rows(conn, "select payment_id, amount, status from raw.billing__payments") == [
        ("pay_1", Decimal("19.90"), "succeeded")]
    assert rows(conn, "select file_key, row_number, reason, raw_line from raw.load_rejects") == [
        (CUSTOMERS, 2, "customer_id is not an integer: 'x'", BAD.rstrip("\n"))]
    assert rows(conn, "select file_key, version, status, rows_total, rows_loaded, rows_rejected"
                      " from ops.file_manifest order by file_key") == [
        (PAYMENTS, 1, "loaded", 1, 1, 0), (CUSTOMERS, 1, "loaded", 3, 2, 1)]
    # Nothing pending; the same content delivered again is skipped, a change is a new version.
    assert pending_drops() == []
    zone.write_bytes(CUSTOMERS, (HEADER + ROW1 + BAD + ROW2).encode())
    assert load_new_files()["skipped"] == 1
    zone.write_bytes(CUSTOMERS, (HEADER + ROW1).encode())
    assert load_new_files()["loaded"] == 1
    assert rows(conn, "select version, rows_loaded from ops.file_manifest where file_key = %s"
                      " order by version", (CUSTOMERS,)) == [(1, 2), (2, 1)]
    assert rows(conn, "select count(*) from raw.crm__customers") == [(3,)]


def test_an_unreadable_file_is_recorded_failed_and_loads_nothing(snowflake_warehouse, zone):
    zone.write_bytes(CUSTOMERS, b"")
    summary = load_new_files()
    assert summary["failed"] == 1
    assert rows(snowflake_warehouse, "select status, error from ops.file_manifest") == [
        ("failed", "the file is empty (0 bytes)")]
    assert rows(snowflake_warehouse, "select count(*) from raw.crm__customers") == [(0,)]
    assert config.warehouse() == "snowflake"
