"""The file-drop generator: agreement with the activity simulator, restatements, CSV files."""

from __future__ import annotations

import csv
import gzip
import io
import math
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from support.file_drops import expected_latest

from mage_project.landing import LandingZone
from mage_project.sources.activity_simulator import (
    _CHANNELS,
    CAMPAIGNS,
    generate_events,
    parse_rfc3339,
    user_profile,
)
from mage_project.sources.file_drops import (
    AD_SPEND,
    COLUMNS,
    CUSTOMERS,
    PAYMENTS,
    customer_snapshot,
    generate_day,
    main,
    render_csv,
    write_drops,
)

DAY = date(2026, 11, 4)
ONE_DAY = timedelta(days=1)


def _days(start: date, count: int) -> list[date]:
    return [start + n * ONE_DAY for n in range(count)]


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _purchases(day: date, seed: int = 0) -> list[dict]:
    events = generate_events(_midnight(day), _midnight(day + ONE_DAY), seed=seed)
    return [e for e in events if e["event_type"] == "purchase"]


def _first_versions(payments: list[dict]) -> list[dict]:
    return [p for p in payments if p["status"] != "refunded"]


def _read_csv(data: bytes) -> list[dict]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))


# --- determinism and shape --------------------------------------------------------------------


def test_a_day_is_the_same_on_every_call_and_another_seed_changes_it():
    first = generate_day(DAY, seed=0)
    again = generate_day(DAY, seed=0)
    other = generate_day(DAY, seed=1)

    assert first == again
    for entity in COLUMNS:
        assert first[entity] != other[entity], entity


def test_rows_have_exactly_the_declared_columns_in_order():
    assert COLUMNS == {
        "crm/customers": ["customer_id", "email", "full_name", "country", "signup_at",
                          "utm_campaign", "updated_at"],
        "billing/payments": ["payment_id", "customer_id", "amount", "status", "paid_at", "updated_at"],
        "marketing/ad_spend": ["date", "campaign", "channel", "spend", "impressions", "clicks"],
    }
    for entity, rows in generate_day(DAY).items():
        assert rows, entity
        assert {tuple(row) for row in rows} == {tuple(COLUMNS[entity])}, entity
        assert all(isinstance(value, str) for row in rows for value in row.values())


# --- payments ---------------------------------------------------------------------------------


@pytest.mark.parametrize("day", _days(date(2026, 11, 1), 3))
def test_payments_of_a_day_are_the_simulators_purchases_of_that_day(day):
    purchases = _purchases(day)
    payments = _first_versions(generate_day(day)[PAYMENTS])

    assert len(payments) == len(purchases) > 20
    assert sum(Decimal(p["amount"]) for p in payments) == sum(
        Decimal(str(e["amount"])) for e in purchases
    )
    assert Counter(int(p["customer_id"]) for p in payments) == Counter(e["user_id"] for e in purchases)
    assert [p["payment_id"] for p in payments] == [
        "pay_" + e["properties"]["order_id"].removeprefix("ord_") for e in purchases
    ]
    for payment, event in zip(payments, purchases, strict=True):
        assert payment["paid_at"].endswith("Z")
        assert parse_rfc3339(payment["paid_at"]) == parse_rfc3339(event["occurred_at"])
        assert payment["paid_at"][:10] == day.isoformat()
        assert payment["updated_at"] == payment["paid_at"]
        assert Decimal(payment["amount"]) > 0
        assert Decimal(payment["amount"]).as_tuple().exponent == -2


def test_the_first_day_of_november_has_the_pinned_totals():
    payments = _first_versions(generate_day(date(2026, 11, 1))[PAYMENTS])

    assert len(payments) == 35
    assert sum(Decimal(p["amount"]) for p in payments) == Decimal("4916.80")


def test_about_five_percent_of_payments_fail_and_the_rest_succeed():
    days = _days(date(2026, 10, 1), 30)
    statuses = Counter(p["status"] for day in days for p in _first_versions(generate_day(day)[PAYMENTS]))

    assert set(statuses) == {"succeeded", "failed"}
    total = sum(statuses.values())
    assert total > 900
    assert 0.03 < statuses["failed"] / total < 0.07


def test_refunds_restate_a_succeeded_payment_of_the_previous_three_days():
    days = _days(date(2026, 10, 1), 30)
    first = {p["payment_id"]: (day, p) for day in days for p in _first_versions(generate_day(day)[PAYMENTS])}
    refunds = [
        (day, p) for day in days[3:] for p in generate_day(day)[PAYMENTS] if p["status"] == "refunded"
    ]

    assert len(refunds) >= 10
    assert len({p["payment_id"] for _, p in refunds}) == len(refunds)  # refunded once
    for day, refund in refunds:
        paid_on, original = first[refund["payment_id"]]
        assert original["status"] == "succeeded"
        assert 1 <= (day - paid_on).days <= 3
        assert {k: refund[k] for k in ("customer_id", "amount", "paid_at")} == {
            k: original[k] for k in ("customer_id", "amount", "paid_at")
        }
        assert refund["updated_at"][:10] == day.isoformat()
        assert parse_rfc3339(refund["updated_at"]) > parse_rfc3339(original["updated_at"])
    succeeded = sum(p["status"] == "succeeded" for _, p in first.values())
    assert 0.01 < len(refunds) / succeeded < 0.06


def test_a_refund_wins_over_the_payment_it_restates():
    days = _days(date(2026, 11, 1), 4)
    files = [(f"billing/payments/{d}/export.csv", generate_day(d)[PAYMENTS]) for d in days]
    refunded = {p["payment_id"] for _, rows in files for p in rows if p["status"] == "refunded"}
    payment_id = next(
        p["payment_id"] for p in files[-1][1] if p["status"] == "refunded" and p["paid_at"] >= "2026-11-01"
    )

    latest = expected_latest(files, PAYMENTS)

    assert latest[payment_id]["status"] == "refunded"
    assert {pid for pid, row in latest.items() if row["status"] == "refunded"} == refunded
    first = {p["payment_id"] for _, rows in files for p in _first_versions(rows)}
    assert set(latest) == first | refunded  # and refunds of October payments
    assert len(refunded - first) == 5


# --- customers --------------------------------------------------------------------------------


@pytest.mark.parametrize("day", _days(date(2026, 11, 1), 5))
def test_new_customers_of_a_day_are_its_signups_with_their_profile(day):
    customers = generate_day(day)[CUSTOMERS]
    new = [c for c in customers if c["updated_at"] == c["signup_at"]]
    signups = [
        e for e in generate_events(_midnight(day), _midnight(day + ONE_DAY))
        if e["event_type"] == "signup"
    ]
    expected = sorted(u for u in range(1, 501) if user_profile(u)["signup_at"][:10] == day.isoformat())

    assert sorted(int(c["customer_id"]) for c in new) == expected == sorted(e["user_id"] for e in signups)
    for row in new:
        assert row == {**{k: str(v) for k, v in user_profile(int(row["customer_id"])).items()},
                       "updated_at": row["signup_at"]}


def test_the_november_signups_are_the_pinned_users():
    new = {}
    for day in _days(date(2026, 11, 1), 7):
        rows = generate_day(day)[CUSTOMERS]
        new[day.day] = [int(c["customer_id"]) for c in rows if c["updated_at"] == c["signup_at"]]

    assert new == {1: [], 2: [134], 3: [356], 4: [100, 329], 5: [462], 6: [], 7: [253]}


@pytest.mark.parametrize("day", _days(date(2026, 11, 1), 5))
def test_returning_customers_have_a_later_version_with_one_changed_value(day):
    before = {row["customer_id"]: row for row in customer_snapshot(day)}
    changed = [c for c in generate_day(day)[CUSTOMERS] if c["updated_at"] != c["signup_at"]]

    assert math.floor(0.02 * len(before)) <= len(changed) <= math.ceil(0.02 * len(before))
    assert len({c["customer_id"] for c in changed}) == len(changed)
    kinds = set()
    for row in changed:
        previous = before[row["customer_id"]]
        assert row["updated_at"][:10] == day.isoformat()
        assert parse_rfc3339(row["updated_at"]) > parse_rfc3339(previous["updated_at"])
        differing = {k for k in COLUMNS[CUSTOMERS] if row[k] != previous[k]}
        assert differing in ({"country", "updated_at"}, {"email", "updated_at"})
        kinds |= differing - {"updated_at"}
        local, _, domain = row["email"].partition("@")
        assert local == previous["email"].partition("@")[0]
        assert domain in ("example.com", "example.org", "example.net", "mail.example.com")
    assert kinds == {"country", "email"}


@pytest.mark.parametrize("day", [date(2025, 1, 2), date(2026, 11, 1), date(2027, 2, 1)])
def test_the_snapshot_of_the_next_day_is_the_snapshot_plus_the_days_file(day):
    files = [
        (f"crm/customers/{day}/export-snapshot.csv", customer_snapshot(day)),
        (f"crm/customers/{day}/export.csv", generate_day(day)[CUSTOMERS]),
    ]

    latest = expected_latest(files, CUSTOMERS)

    in_order = sorted(latest.values(), key=lambda row: int(row["customer_id"]))
    assert in_order == customer_snapshot(day + ONE_DAY)


def test_every_customer_has_signed_up_once_the_signup_range_is_over():
    snapshot = customer_snapshot(date(2027, 1, 2))

    assert [int(row["customer_id"]) for row in snapshot] == list(range(1, 501))
    assert customer_snapshot(date(2025, 1, 1)) == []


def test_payments_name_customers_known_by_then_or_who_sign_up_later():
    zone = _MemoryZone()
    zone_rows = _files_of(zone, write_drops(zone, date(2026, 11, 1), date(2026, 11, 4)))
    payments = [
        (key, p) for key, rows in zone_rows if key.startswith(PAYMENTS) for p in _first_versions(rows)
    ]
    late = []
    for key, payment in payments:
        day = date.fromisoformat(key.split("/")[2])
        known = expected_latest(
            [(k, rows) for k, rows in zone_rows if k.startswith(CUSTOMERS) and k.split("/")[2] <= str(day)],
            CUSTOMERS,
        )
        signup_at = user_profile(int(payment["customer_id"]))["signup_at"]
        if parse_rfc3339(signup_at) <= parse_rfc3339(payment["paid_at"]):
            assert payment["customer_id"] in known
        else:
            late.append((payment["customer_id"], signup_at))

    # The simulator lets a user buy before signing up: that customer's first version is in the
    # file of its signup day.
    purchases = [e for d in _days(date(2026, 11, 1), 3) for e in _purchases(d)]
    assert len(late) == sum(
        parse_rfc3339(user_profile(e["user_id"])["signup_at"]) > parse_rfc3339(e["occurred_at"])
        for e in purchases
    ) > 0
    customer_id, signup_at = late[0]
    signup_day = date.fromisoformat(signup_at[:10])
    assert customer_id in {c["customer_id"] for c in generate_day(signup_day)[CUSTOMERS]}


# --- ad spend ---------------------------------------------------------------------------------


@pytest.mark.parametrize("day", _days(date(2026, 11, 1), 5))
def test_ad_spend_has_a_row_per_campaign_and_restates_one_row_of_the_day_before(day):
    rows = generate_day(day)[AD_SPEND]
    keys = [(r["date"], r["campaign"], r["channel"]) for r in rows]

    assert len(set(keys)) == len(keys) == len(CAMPAIGNS) + 1
    assert sorted(k for k in keys if k[0] == day.isoformat()) == sorted(
        (day.isoformat(), c, _CHANNELS[c][0]) for c in CAMPAIGNS
    )
    (restated,) = [r for r in rows if r["date"] == (day - ONE_DAY).isoformat()]
    (original,) = [
        r for r in generate_day(day - ONE_DAY)[AD_SPEND]
        if r["date"] == restated["date"] and r["campaign"] == restated["campaign"]
    ]
    change = abs(Decimal(restated["spend"]) / Decimal(original["spend"]) - 1)
    assert Decimal("0.015") < change < Decimal("0.11")
    for row in rows:
        assert Decimal(row["spend"]) > 0
        assert Decimal(row["spend"]).as_tuple().exponent == -2
        assert 0 <= int(row["clicks"]) <= int(row["impressions"])


def test_the_restated_ad_spend_row_replaces_the_earlier_one():
    earlier, later = date(2026, 11, 2), date(2026, 11, 3)
    # given later file first: the order of the list does not matter, the paths do
    files = [
        (f"marketing/ad_spend/{later}/export.csv", generate_day(later)[AD_SPEND]),
        (f"marketing/ad_spend/{earlier}/export.csv", generate_day(earlier)[AD_SPEND]),
    ]
    (restated,) = [r for r in files[0][1] if r["date"] == str(earlier)]
    key = (restated["date"], restated["campaign"], restated["channel"])
    (original,) = [r for r in files[1][1] if (r["date"], r["campaign"], r["channel"]) == key]

    latest = expected_latest(files, AD_SPEND)

    assert latest[key] == restated != original
    assert expected_latest(files[1:], AD_SPEND)[key] == original
    # the rows of Nov 2 and Nov 3, and the row of Nov 1 that the file of Nov 2 restates
    assert len(latest) == 2 * len(CAMPAIGNS) + 1


def test_a_restatement_changes_the_spend_even_when_it_is_a_few_cents():
    for day in _days(date(2026, 11, 1), 20):
        rows = generate_day(day, events_per_day=1)[AD_SPEND]
        (restated,) = [r for r in rows if r["date"] != day.isoformat()]
        (original,) = [
            r for r in generate_day(day - ONE_DAY, events_per_day=1)[AD_SPEND]
            if r["date"] == restated["date"] and r["campaign"] == restated["campaign"]
        ]
        assert Decimal(restated["spend"]) != Decimal(original["spend"])
        assert Decimal(restated["spend"]) >= Decimal("0.01")


def test_ad_spend_grows_with_the_traffic():
    def spend(events_per_day):
        return sum(Decimal(r["spend"]) for r in generate_day(DAY, events_per_day=events_per_day)[AD_SPEND])

    assert spend(4000) > Decimal("1.8") * spend(2000)
    assert Decimal("800") < spend(2000) < Decimal("1500")


# --- expected_latest rules --------------------------------------------------------------------


def _customer(customer_id, country, updated_at):
    return {"customer_id": customer_id, "email": "a@example.com", "full_name": "A", "country": country,
            "signup_at": "2026-01-01T00:00:00Z", "utm_campaign": "", "updated_at": updated_at}


def test_latest_updated_at_wins_over_file_order_and_ties_go_to_the_later_file():
    files = [
        ("crm/customers/2026-11-02/export.csv", [_customer("1", "FR", "2026-11-01T10:00:00Z"),
                                                  _customer("2", "SE", "2026-11-02T08:00:00Z")]),
        ("crm/customers/2026-11-01/export.csv", [_customer("1", "DE", "2026-11-01T11:00:00+02:00"),
                                                  _customer("2", "PL", "2026-11-02T08:00:00Z")]),
        ("crm/customers/2026-11-02/b.csv", [_customer("3", "US", "2026-11-01T00:00:00Z"),
                                            _customer("3", "GB", "2026-11-01T00:00:00Z")]),
    ]

    latest = expected_latest(files, CUSTOMERS)

    # 11:00+02:00 is 09:00Z: earlier than the other file's 10:00Z
    assert {k: row["country"] for k, row in latest.items()} == {"1": "FR", "2": "SE", "3": "GB"}


def test_ad_spend_files_of_one_date_are_ordered_by_name():
    row = {"date": "2026-11-01", "campaign": "c", "channel": "x", "impressions": "10", "clicks": "1"}
    files = [
        ("drops/marketing/ad_spend/2026-11-01/export_b.csv", [dict(row, spend="2.00")]),
        ("drops/marketing/ad_spend/2026-11-01/export_a.csv", [dict(row, spend="1.00")]),
        ("drops/marketing/ad_spend/2026-10-31/export_z.csv", [dict(row, spend="3.00")]),
    ]

    assert expected_latest(files, AD_SPEND)[("2026-11-01", "c", "x")]["spend"] == "2.00"


def test_expected_latest_rejects_unknown_entities_and_paths_without_a_date():
    with pytest.raises(ValueError, match="unknown entity"):
        expected_latest([], "crm/leads")
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        expected_latest([("crm/customers/latest/export.csv", [])], CUSTOMERS)


# --- files ------------------------------------------------------------------------------------


class _MemoryZone:
    """Holds written files in memory; write_drops needs nothing more of a zone."""

    def __init__(self):
        self.files: dict[str, bytes] = {}

    def write_bytes(self, key, data):
        self.files[key] = data

    def read_bytes(self, key):
        return self.files[key]


def _files_of(zone, keys) -> list[tuple[str, list[dict]]]:
    def text(key):
        data = zone.read_bytes(key)
        return gzip.decompress(data) if key.endswith(".gz") else data

    return [(key, _read_csv(text(key))) for key in keys]


def test_write_drops_writes_each_entity_per_day_and_csv_gz_holds_the_same_bytes(tmp_path):
    plain = LandingZone((tmp_path / "plain").as_uri())
    zipped = LandingZone((tmp_path / "zipped").as_uri())

    keys = write_drops(plain, date(2026, 11, 1), date(2026, 11, 3))
    gz_keys = write_drops(zipped, date(2026, 11, 1), date(2026, 11, 3),
                          gzip_entities={PAYMENTS, CUSTOMERS}, name="nightly")

    assert keys == [
        "crm/customers/2026-11-01/export-snapshot.csv",
        "crm/customers/2026-11-01/export.csv",
        "billing/payments/2026-11-01/export.csv",
        "marketing/ad_spend/2026-11-01/export.csv",
        "crm/customers/2026-11-02/export.csv",
        "billing/payments/2026-11-02/export.csv",
        "marketing/ad_spend/2026-11-02/export.csv",
    ]
    assert plain.list() == sorted(keys)
    assert gz_keys == [
        k.replace("export", "nightly").replace(".csv", ".csv.gz") if not k.startswith("marketing")
        else k.replace("export", "nightly")
        for k in keys
    ]
    for key, gz_key in zip(keys, gz_keys, strict=True):
        data = zipped.read_bytes(gz_key)
        assert (gzip.decompress(data) if gz_key.endswith(".gz") else data) == plain.read_bytes(key)
    assert write_drops(plain, date(2026, 11, 1), date(2026, 11, 2), snapshot=False) == keys[1:4]


def test_files_read_back_with_dictreader_equal_the_generated_rows(tmp_path):
    zone = LandingZone(tmp_path.as_uri())

    files = dict(_files_of(zone, write_drops(zone, DAY, DAY + ONE_DAY)))

    assert files.pop(f"crm/customers/{DAY}/export-snapshot.csv") == customer_snapshot(DAY)
    assert files == {f"{entity}/{DAY}/export.csv": rows for entity, rows in generate_day(DAY).items()}
    raw = zone.read_bytes(f"crm/customers/{DAY}/export-snapshot.csv")
    assert raw.startswith(b"customer_id,email,full_name,country,signup_at,utm_campaign,updated_at\r\n")
    assert raw.count(b"\r\n") == raw.count(b"\n") == 1 + len(customer_snapshot(DAY))
    assert b"O'Brien" in raw and "Zoë".encode() in raw


def test_render_csv_quotes_commas_quotes_and_line_breaks():
    row = {"customer_id": "7", "email": '"odd, one"@example.com', "full_name": "Smith, Jane \"JJ\"\nJr.",
           "country": "US", "signup_at": "2026-11-01T00:00:00Z", "utm_campaign": "",
           "updated_at": "2026-11-01T00:00:00Z"}

    data = render_csv(CUSTOMERS, [row])

    assert data == (
        b"customer_id,email,full_name,country,signup_at,utm_campaign,updated_at\r\n"
        b'7,"""odd, one""@example.com","Smith, Jane ""JJ""\nJr.",US,2026-11-01T00:00:00Z,,'
        b"2026-11-01T00:00:00Z\r\n"
    )
    assert _read_csv(data) == [row]


def test_render_csv_rejects_rows_of_another_shape():
    with pytest.raises(ValueError, match="expected"):
        render_csv(PAYMENTS, [{"payment_id": "p1"}])
    with pytest.raises(ValueError, match="unknown entity"):
        render_csv("billing/invoices", [])


def test_write_drops_rejects_unknown_entities_and_names_with_a_slash():
    with pytest.raises(ValueError, match="unknown entities"):
        write_drops(_MemoryZone(), DAY, DAY + ONE_DAY, gzip_entities={"billing/invoices"})
    with pytest.raises(ValueError, match="without '/'"):
        write_drops(_MemoryZone(), DAY, DAY + ONE_DAY, name="a/b")


def test_command_line_writes_the_files_and_prints_their_keys(tmp_path, capsys):
    main(["--landing-url", tmp_path.as_uri(), "--start", "2026-11-01", "--end", "2026-11-02",
          "--seed", "3", "--events-per-day", "500", "--users", "50", "--gzip", AD_SPEND])

    printed = capsys.readouterr().out.splitlines()
    assert printed == [
        "crm/customers/2026-11-01/export-snapshot.csv",
        "crm/customers/2026-11-01/export.csv",
        "billing/payments/2026-11-01/export.csv",
        "marketing/ad_spend/2026-11-01/export.csv.gz",
    ]
    zone = LandingZone(tmp_path.as_uri())
    assert zone.list() == sorted(printed)
    expected = generate_day(date(2026, 11, 1), seed=3, events_per_day=500, users=50)
    assert _read_csv(zone.read_bytes(printed[2])) == expected[PAYMENTS]
    assert _read_csv(gzip.decompress(zone.read_bytes(printed[3]))) == expected[AD_SPEND]


def test_command_line_rejects_an_empty_range(tmp_path):
    with pytest.raises(SystemExit):
        main(["--landing-url", tmp_path.as_uri(), "--start", "2026-11-02", "--end", "2026-11-02"])
