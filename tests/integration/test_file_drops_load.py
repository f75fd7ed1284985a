"""Raw load of file drops into PostgreSQL: every delivery case with its expected outcome."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from conftest import query
from support import SmtpSink

from mage_project import config
from mage_project.landing import LandingZone
from mage_project.pipelines.file_drops import drop_file, load_new_files, pending_drops

pytestmark = pytest.mark.integration

HEADER = "customer_id,email,full_name,country,signup_at,utm_campaign,updated_at\n"
ROW1 = '1,ann@example.com,"Doe, Ann",US,2026-11-01T10:00:00Z,black_friday,2026-11-01T10:00:00Z\n'
ROW2 = "2,bo@example.com,Bo Li,DE,2026-11-01T11:00:00+01:00,,2026-11-01T11:00:00+01:00\n"
CUSTOMERS = "crm/customers/2026-11-01/export.csv"


@pytest.fixture
def zone(tmp_path, monkeypatch):
    url = (tmp_path / "landing").as_uri()
    monkeypatch.setenv("LANDING_URL", url)
    return LandingZone(url)


def customers(conn):
    return query(conn, "select customer_id, email, full_name, country, signup_at, utm_campaign,"
                       " _file_key, _row_number from raw.crm__customers order by _file_key, _row_number")


def manifest(conn):
    return query(conn, "select file_key, version, status, rows_total, rows_loaded, rows_rejected,"
                       " error, notes from ops.file_manifest order by file_key, version")


def test_a_file_loads_with_lineage_once(warehouse, zone):
    zone.write_bytes(CUSTOMERS, (HEADER + ROW1 + ROW2).encode())
    first = load_new_files()
    assert (first["loaded"], first["skipped"], first["failed"]) == (1, 0, 0)
    assert customers(warehouse) == [
        (1, "ann@example.com", "Doe, Ann", "US", datetime(2026, 11, 1, 10, tzinfo=UTC),
         "black_friday", CUSTOMERS, 1),
        (2, "bo@example.com", "Bo Li", "DE", datetime(2026, 11, 1, 10, tzinfo=UTC), None,
         CUSTOMERS, 2),
    ]
    assert manifest(warehouse) == [(CUSTOMERS, 1, "loaded", 2, 2, 0, None, None)]
    (checksum,) = query(warehouse, "select distinct _file_checksum from raw.crm__customers")[0]
    assert len(checksum) == 64
    # Delivered again unchanged: skipped, nothing written.
    zone.write_bytes(CUSTOMERS, (HEADER + ROW1 + ROW2).encode())
    again = load_new_files()
    assert (again["loaded"], again["skipped"]) == (0, 1)
    assert len(customers(warehouse)) == 2 and len(manifest(warehouse)) == 1


def test_a_changed_file_under_the_same_key_is_a_new_version(warehouse, zone, caplog):
    zone.write_bytes(CUSTOMERS, (HEADER + ROW1).encode())
    load_new_files()
    zone.write_bytes(CUSTOMERS, (HEADER + ROW1 + ROW2).encode())
    load_new_files()
    assert [(k, v, s, n) for k, v, s, n, *_ in manifest(warehouse)] == [
        (CUSTOMERS, 1, "loaded", 1), (CUSTOMERS, 2, "loaded", 2)]
    assert query(warehouse, "select count(*), count(distinct _file_checksum)"
                            " from raw.crm__customers") == [(3, 2)]
    assert "changed since version 1: loading it as version 2" in caplog.text


@pytest.mark.parametrize(
    ("content", "rows"),
    [
        (b"\xef\xbb\xbf" + (HEADER + ROW1).encode(), 1),                       # UTF-8 BOM
        (HEADER.encode(), 0),                                                   # header only
        ((HEADER.rstrip("\n") + ",extra\n" + ROW1.rstrip("\n") + ",x\n").encode(), 1),
        ((b"updated_at,customer_id,email,full_name,country,signup_at,utm_campaign\n"
          b'2026-11-01T10:00:00Z,1,ann@example.com,"Doe, Ann",US,2026-11-01T10:00:00Z,'
          b"black_friday\n"), 1),                                       # reordered
    ],
    ids=["bom", "header-only", "extra-column", "reordered-columns"],
)
def test_tolerated_shapes_load(warehouse, zone, content, rows):
    zone.write_bytes(CUSTOMERS, content)
    assert load_new_files()["loaded"] == 1
    assert len(customers(warehouse)) == rows
    if rows:
        assert customers(warehouse)[0][:4] == (1, "ann@example.com", "Doe, Ann", "US")


def test_extra_columns_are_noted(warehouse, zone):
    zone.write_bytes(CUSTOMERS, (HEADER.rstrip("\n") + ",extra\n" + ROW1.rstrip("\n") + ",x\n").encode())
    summary = load_new_files()
    assert manifest(warehouse)[0][7] == "unknown_field extra: ignored in 1 row"
    assert summary["files"][0]["drift"] == {"unknown_field": {"extra": 1}}


def test_gzip_files_load(warehouse, zone):
    zone.write_bytes(CUSTOMERS + ".gz", gzip.compress((HEADER + ROW1 + ROW2).encode()))
    assert load_new_files()["loaded"] == 1
    assert [r[0] for r in customers(warehouse)] == [1, 2]


def test_rows_of_the_wrong_type_go_to_rejects_with_reason_and_raw_line(warehouse, zone):
    bad = "abc,x@example.com,X,US,2026-11-01T10:00:00Z,,2026-11-01T10:00:00Z\n"
    worse = "3,y@example.com,Y,usa,2026-11-01T10:00:00Z,,2026-11-01T10:00:00Z\n"
    zone.write_bytes(CUSTOMERS, (HEADER + ROW1 + bad + worse).encode())
    load_new_files()
    assert [r[0] for r in customers(warehouse)] == [1]
    assert query(warehouse, "select file_key, row_number, reason, raw_line from raw.load_rejects"
                            " order by row_number") == [
        (CUSTOMERS, 2, "customer_id is not an integer: 'abc'", bad.rstrip("\n")),
        (CUSTOMERS, 3, "country is not an ISO 3166 alpha-2 code: 'usa'", worse.rstrip("\n")),
    ]
    assert manifest(warehouse)[0][2:6] == ("loaded", 3, 1, 2)
    assert manifest(warehouse)[0][7] == ("wrong_type country: 1 row rejected;"
                                         " wrong_type customer_id: 1 row rejected")


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("p1,1,0.00,succeeded,2026-11-01T10:00:00Z,2026-11-01T10:00:00Z", "amount is not positive"),
        ("p1,1,1.005,succeeded,2026-11-01T10:00:00Z,2026-11-01T10:00:00Z",
         "amount is not an amount with at most 2 decimals"),
        ("p1,1,5.00,paid,2026-11-01T10:00:00Z,2026-11-01T10:00:00Z", "status is not one of"),
        ("p1,1,5.00,succeeded,2026-11-01,2026-11-01T10:00:00Z", "paid_at is not an RFC 3339"),
    ],
)
def test_payment_rows_are_checked(warehouse, zone, row, reason):
    zone.write_bytes("billing/payments/2026-11-01/p.csv",
                     f"payment_id,customer_id,amount,status,paid_at,updated_at\n{row}\n".encode())
    load_new_files()
    (got,) = query(warehouse, "select reason from raw.load_rejects")
    assert got[0].startswith(reason), got


@pytest.mark.parametrize(
    ("content", "error", "key"),
    [
        (b"", "the file is empty (0 bytes)", CUSTOMERS),
        ("customer_id,email,full_name,country,signup_at,utm_campaign,updat\xe9d_at\n"
         .encode("latin-1"), "the header is not UTF-8", CUSTOMERS),
        (b"customer_id,email\n1,a@example.com\n", "the header lacks ['full_name'", CUSTOMERS),
        (b"\xff\xfe" + HEADER.encode("utf-16-le"), "the file is UTF-16", CUSTOMERS),
        (b"not gzip at all", "the file is not valid gzip", CUSTOMERS + ".gz"),
    ],
    ids=["zero-bytes", "header-not-utf8", "wrong-header", "utf16", "not-gzip"],
)
def test_an_unreadable_file_fails_alone_and_alerts(warehouse, zone, monkeypatch, content, error,
                                                   key):
    zone.write_bytes(key, content)
    zone.write_bytes("marketing/ad_spend/2026-11-01/spend.csv",
                     b"date,campaign,channel,spend,impressions,clicks\n"
                     b"2026-11-01,black_friday,google,120.50,10000,250\n")
    with SmtpSink() as smtp:
        monkeypatch.setenv("SMTP_HOST", "127.0.0.1")
        monkeypatch.setenv("SMTP_PORT", str(smtp.port))
        monkeypatch.setenv("ALERT_EMAIL_TO", "data-team@example.com")
        summary = load_new_files()
        messages = smtp.wait_for(1)
    assert (summary["loaded"], summary["failed"]) == (1, 1)
    failed = [f for f in summary["files"] if f["status"] == "failed"][0]
    assert failed["key"] == key and failed["error"].startswith(error)
    assert summary["not_loaded"] == [{"key": key, "status": "failed", "error": failed["error"]}]
    assert query(warehouse, "select date, campaign, channel, spend, impressions, clicks"
                            " from raw.marketing__ad_spend") == [
        (datetime(2026, 11, 1).date(), "black_friday", "google", Decimal("120.50"), 10000, 250)]
    assert customers(warehouse) == []
    (row,) = [m for m in manifest(warehouse) if m[0] == key]
    assert row[2] == "failed" and row[6].startswith(error)
    assert key in messages[0].get_content()
    # The same broken file is not retried (nor alerted) on every poll; a fixed one loads.
    assert load_new_files()["failed"] == 0
    zone.write_bytes(key, gzip.compress((HEADER + ROW1).encode()) if key.endswith(".gz")
                     else (HEADER + ROW1).encode())
    assert load_new_files()["loaded"] == 1
    assert len(customers(warehouse)) == 1


# --- drift policies (entities.DriftPolicy), set on the entity the loader finds for the key ------

SPEND = "marketing/ad_spend/2026-11-01/spend.csv"
SPEND_FILE = (b"date,campaign,channel,spend,impressions,clicks\n"
              b"2026-11-01,black_friday,google,120.50,10000,250\n")


@pytest.fixture
def drift(monkeypatch):
    """``drift(**modes)`` sets crm/customers' drift policy for the loads that follow."""
    from dataclasses import replace

    from mage_project.entities import CRM_CUSTOMERS, FILE_ENTITIES, DriftPolicy

    def set_policy(**modes):
        monkeypatch.setitem(FILE_ENTITIES, "crm/customers",
                            replace(CRM_CUSTOMERS, drift=DriftPolicy(**modes)))
    return set_policy


def with_extra(*rows: str) -> bytes:
    return (HEADER.rstrip("\n") + ",extra\n"
            + "".join(r.rstrip("\n") + ",x\n" for r in rows)).encode()


def rejects(conn):
    return query(conn, "select row_number, reason from raw.load_rejects order by row_number")


def test_an_unknown_column_under_discard_row_rejects_every_row_naming_it(warehouse, zone, drift):
    drift(unknown_field="discard_row", missing_field="freeze")
    zone.write_bytes(CUSTOMERS, with_extra(ROW1, ROW2))
    assert load_new_files()["loaded"] == 1
    assert customers(warehouse) == []
    reason = "extra is not a declared column (unknown_field is discard_row)"
    assert rejects(warehouse) == [(1, reason), (2, reason)]
    assert manifest(warehouse) == [(CUSTOMERS, 1, "loaded", 2, 0, 2, None,
                                    "unknown_field extra: 2 rows rejected")]


def test_an_unknown_column_under_freeze_fails_the_file_naming_it_and_the_others_load(
        warehouse, zone, drift):
    drift(unknown_field="freeze", missing_field="freeze")
    zone.write_bytes(CUSTOMERS, with_extra(ROW1))
    zone.write_bytes(SPEND, SPEND_FILE)
    summary = load_new_files()
    assert (summary["loaded"], summary["failed"]) == (1, 1)
    (row,) = [m for m in manifest(warehouse) if m[0] == CUSTOMERS]
    assert row[2] == "failed"
    assert row[6].startswith("the header has the undeclared columns ['extra']")
    assert customers(warehouse) == []


def test_a_missing_optional_column_under_discard_value_loads_nulls_and_is_noted(
        warehouse, zone, drift):
    drift(missing_field="discard_value")
    zone.write_bytes(CUSTOMERS, b"customer_id,email,full_name,country,signup_at,updated_at\n"
                                b"1,ann@example.com,Ann,US,2026-11-01T10:00:00Z,2026-11-01T10:00:00Z\n")
    load_new_files()
    assert customers(warehouse) == [(1, "ann@example.com", "Ann", "US",
                                     datetime(2026, 11, 1, 10, tzinfo=UTC), None, CUSTOMERS, 1)]
    assert manifest(warehouse)[0][2:] == ("loaded", 1, 1, 0, None,
                                          "missing_field utm_campaign: NULL in 1 row")


def test_a_missing_required_column_fails_the_file_under_every_policy(warehouse, zone, drift):
    drift(missing_field="discard_value")
    zone.write_bytes(CUSTOMERS, b"customer_id,email,full_name,country,signup_at,utm_campaign\n"
                                b"1,ann@example.com,Ann,US,2026-11-01T10:00:00Z,\n")
    assert load_new_files()["failed"] == 1
    assert manifest(warehouse)[0][2] == "failed"
    assert manifest(warehouse)[0][6].startswith("the header lacks the required ['updated_at']")


def test_a_missing_optional_column_under_discard_row_rejects_every_row(warehouse, zone, drift):
    drift(missing_field="discard_row")
    zone.write_bytes(CUSTOMERS, b"customer_id,email,full_name,country,signup_at,updated_at\n"
                                b"1,ann@example.com,Ann,US,2026-11-01T10:00:00Z,2026-11-01T10:00:00Z\n")
    load_new_files()
    assert rejects(warehouse) == [
        (1, "utm_campaign is not in the file's header (missing_field is discard_row)")]
    assert manifest(warehouse)[0][7] == "missing_field utm_campaign: 1 row rejected"


def test_a_wrong_type_under_discard_value_loads_null_for_an_optional_column_only(
        warehouse, zone, drift):
    drift(wrong_type="discard_value")
    bad_country = "3,c@example.com,C,usa,2026-11-01T10:00:00Z,,2026-11-01T10:00:00Z\n"
    bad_id = "x4,d@example.com,D,US,2026-11-01T10:00:00Z,,2026-11-01T10:00:00Z\n"
    zone.write_bytes(CUSTOMERS, (HEADER + ROW1 + bad_country + bad_id).encode())
    summary = load_new_files()
    assert [(r[0], r[3]) for r in customers(warehouse)] == [(1, "US"), (3, None)]
    assert rejects(warehouse) == [(3, "customer_id is not an integer: 'x4'")]
    assert manifest(warehouse)[0][2:] == (
        "loaded", 3, 2, 1, None,
        "wrong_type country: NULL in 1 row; wrong_type customer_id: 1 row rejected")
    assert summary["files"][0]["drift"] == {"wrong_type": {"country": 1, "customer_id": 1}}


def test_a_wrong_type_under_freeze_fails_the_file_naming_the_column_and_the_row(
        warehouse, zone, drift):
    drift(wrong_type="freeze")
    bad = "3,c@example.com,C,usa,2026-11-01T10:00:00Z,,2026-11-01T10:00:00Z\n"
    zone.write_bytes(CUSTOMERS, (HEADER + ROW1 + ROW2 + bad).encode())
    zone.write_bytes(SPEND, SPEND_FILE)
    summary = load_new_files()
    assert (summary["loaded"], summary["failed"]) == (1, 1)
    (row,) = [m for m in manifest(warehouse) if m[0] == CUSTOMERS]
    assert row[2:7] == ("failed", None, None, None,
                        "row 3: country is not an ISO 3166 alpha-2 code: 'usa'"
                        " (wrong_type is freeze)")
    assert customers(warehouse) == [] and rejects(warehouse) == []


def test_only_the_landing_layout_is_loaded():
    assert drop_file("crm/customers/2026-11-01/a.csv").entity.table == "crm__customers"
    assert drop_file("billing/payments/2026-11-01/b.csv.gz").entity.table == "billing__payments"
    assert drop_file("crm/customers/2026-11-01/a.txt") is None
    assert drop_file("crm/leads/2026-11-01/a.csv") is None
    assert drop_file("crm/customers/20261101/a.csv") is None
    assert drop_file("activity/user_activity/date=2026-11-01/x.csv") is None


def test_drops_load_from_s3_too(warehouse, s3_bucket, monkeypatch):
    monkeypatch.setenv("LANDING_URL", f"s3://{s3_bucket}/drops")
    LandingZone(config.landing_url()).write_bytes(CUSTOMERS, (HEADER + ROW1 + ROW2).encode())
    assert load_new_files()["loaded"] == 1
    assert [r[0] for r in customers(warehouse)] == [1, 2]


def test_generated_drops_load_exactly_once(warehouse, zone):
    from datetime import date

    from mage_project.sources.file_drops import write_drops

    keys = write_drops(zone, date(2026, 11, 1), date(2026, 11, 4), gzip_entities={"billing/payments"})
    files = [zone.read_bytes(k) for k in keys]
    expected_rows = {
        table: sum(
            (gzip.decompress(data) if key.endswith(".gz") else data).decode().count("\r\n") - 1
            for key, data in zip(keys, files, strict=True) if key.startswith(prefix)
        )
        for table, prefix in (("crm__customers", "crm/"), ("billing__payments", "billing/"),
                              ("marketing__ad_spend", "marketing/"))
    }
    summary = load_new_files()
    assert (summary["loaded"], summary["failed"]) == (len(keys), 0)
    for table, rows in expected_rows.items():
        assert rows > 0
        assert query(warehouse, f"select count(*) from raw.{table}") == [(rows,)]  # noqa: S608
    assert query(warehouse, "select count(*) from raw.load_rejects") == [(0,)]
    # Nothing new: the listing matches the manifest, and no file is read again.
    assert pending_drops() == []
    assert load_new_files()["files"] == []


def test_pending_files_are_found_from_the_listing_alone(warehouse, zone):
    zone.write_bytes(CUSTOMERS, (HEADER + ROW1).encode())
    assert [f.key for f in pending_drops()] == [CUSTOMERS]
    load_new_files()
    assert pending_drops() == []
    # Written again with the same bytes: pending (the listing changed), then skipped and
    # remembered as seen; the manifest keeps one version.
    zone.write_bytes(CUSTOMERS, (HEADER + ROW1).encode())
    assert [f.key for f in pending_drops()] == [CUSTOMERS]
    assert load_new_files()["skipped"] == 1
    assert pending_drops() == []
    assert len(manifest(warehouse)) == 1


def test_raw_tables_match_their_entity_declarations(warehouse):
    """The migrations' DDL and the entities (which drive validation and COPY) cannot drift."""
    from mage_project.entities import ENTITIES, FILE_ENTITIES
    from mage_project.warehouse import postgres

    with postgres.connection("owner") as conn:
        postgres.migrate(conn)
    for entity in [*ENTITIES.values(), *FILE_ENTITIES.values()]:
        declared = [(c.name, c.pg_type, not c.required) for c in entity.columns]
        actual = query(
            warehouse,
            "select a.attname, format_type(a.atttypid, a.atttypmod), not a.attnotnull"
            " from pg_attribute a where a.attrelid = %s::regclass and a.attnum > 0"
            " and not a.attisdropped and a.attname not like '\\_%%' order by a.attnum",
            (f"{entity.schema}.{entity.table}",),
        )
        expected = [(n, {"timestamptz": "timestamp with time zone"}.get(t, t), null)
                    for n, t, null in declared]
        assert actual == expected, entity.table
