"""Demo and test data for the CSV file drops: CRM customers, billing payments, ad spend.

The drops agree with the activity simulator called with the same ``seed``, ``events_per_day``
and ``users`` (its clean stream: no invalid records, no re-deliveries):

- ``crm/customers``: the customers who sign up on the day, as ``user_profile`` describes them
  (``updated_at`` = ``signup_at``), then a later version of ``CUSTOMER_CHANGE_RATE`` of the
  customers who signed up before the day, each with either ``country`` or the e-mail domain
  changed and ``updated_at`` on the day. The changes form one history per (seed, users), so a
  version always differs from the version before it.
- ``billing/payments``: one payment per ``purchase`` event of the day; ``payment_id`` is the
  order id with ``pay_`` for ``ord_``; ``PAYMENT_FAILURE_RATE`` of them ``failed``. Of the
  succeeded payments, ``PAYMENT_REFUND_RATE`` are refunded once, 1 to ``REFUND_LAG_DAYS`` days
  later: the file of the refund day restates the payment (same id, customer, amount and
  ``paid_at``) with status ``refunded`` and ``updated_at`` on that day.
- ``marketing/ad_spend``: one row per campaign of ``CAMPAIGNS`` and its channel (the
  simulator's ``utm_source`` for it), spend scaled with ``events_per_day``; the file of a day
  also restates one row of the day before with a different spend (and impressions and clicks
  scaled with it).

Every value in a row is the text written to the CSV, so rows read back with ``csv.DictReader``
equal the generated rows. Files are UTF-8 with a header row, comma separated, quoted as RFC 4180
requires (only fields holding a comma, quote or line break are quoted) and end lines with
``\\r\\n`` as RFC 4180 specifies. An empty ``utm_campaign`` is an empty unquoted field, which
PostgreSQL's ``COPY ... CSV`` reads as NULL unless told otherwise.

Because new customers arrive at well under one a day over 2025-2026, a range of daily files
alone names few of the customers who pay in it; ``write_drops`` therefore also writes, by
default, a full export of the customers as of the range's start (``customer_snapshot``).
The simulator lets a user buy before their ``signup_at``, so some payments name a customer
whose first CRM version only appears in the file of a later day.

Run it with ``python -m mage_project.sources.file_drops --landing-url file:///tmp/landing
--start 2026-11-01 --end 2026-11-04``.
"""

from __future__ import annotations

import argparse
import bisect
import csv
import functools
import gzip
import io
import random
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal

from mage_project.sources.activity_simulator import (
    _CHANNELS,
    _COUNTRIES,
    CAMPAIGNS,
    generate_events,
    parse_rfc3339,
    user_profile,
)

CUSTOMERS = "crm/customers"
PAYMENTS = "billing/payments"
AD_SPEND = "marketing/ad_spend"

COLUMNS: dict[str, list[str]] = {
    CUSTOMERS: ["customer_id", "email", "full_name", "country", "signup_at", "utm_campaign",
                "updated_at"],
    PAYMENTS: ["payment_id", "customer_id", "amount", "status", "paid_at", "updated_at"],
    AD_SPEND: ["date", "campaign", "channel", "spend", "impressions", "clicks"],
}

CUSTOMER_CHANGE_RATE = 0.02  # of the customers signed up before the day, changed on the day
PAYMENT_FAILURE_RATE = 0.05
PAYMENT_REFUND_RATE = 0.03  # of the succeeded payments
REFUND_LAG_DAYS = 3
LINE_TERMINATOR = "\r\n"

# E-mail domains a customer moves between (all reserved for documentation, RFC 2606).
_EMAIL_DOMAINS = ("example.com", "example.org", "example.net", "mail.example.com")
# Per campaign: daily spend in USD at 2000 events a day, cost per 1000 impressions, click rate.
_AD_PLANS = {
    "black_friday": (Decimal("420.00"), 9.50, 0.012),
    "spring_sale": (Decimal("180.00"), 7.80, 0.009),
    "brand_search": (Decimal("260.00"), 45.00, 0.045),
    "newsletter_nov": (Decimal("35.00"), 1.20, 0.025),
    "retargeting": (Decimal("150.00"), 3.20, 0.004),
}
_REFERENCE_EVENTS_PER_DAY = 2000
_CENT = Decimal("0.01")
_DAY_MS = 86_400_000


# --- helpers ----------------------------------------------------------------------------------


def _as_date(value: date) -> date:
    if isinstance(value, datetime) or not isinstance(value, date):
        raise TypeError(f"expected a date, got {value!r}")
    return value


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def _stamp(value: datetime, *, millis: bool = False) -> str:
    """RFC 3339 in UTC with ``Z``, to the second (as ``signup_at``) or the millisecond."""
    naive = value.astimezone(UTC).replace(tzinfo=None)
    return naive.isoformat(timespec="milliseconds" if millis else "seconds") + "Z"


def _money(value: Decimal | float) -> Decimal:
    return Decimal(str(value)).quantize(_CENT, rounding=ROUND_HALF_UP)


# --- customers --------------------------------------------------------------------------------


def _customer_row(profile: dict, updated_at: str) -> dict:
    return {
        "customer_id": str(profile["customer_id"]),
        "email": profile["email"],
        "full_name": profile["full_name"],
        "country": profile["country"],
        "signup_at": profile["signup_at"],
        "utm_campaign": profile["utm_campaign"],
        "updated_at": updated_at,
    }


class _CrmHistory:
    """Every customer version of one (seed, users), built day by day from the first signup on.

    A change depends on the version it replaces, so the days are folded in order; what is
    built is kept, so later calls only extend it.
    """

    def __init__(self, seed: int, users: int) -> None:
        self.seed = seed
        profiles = [user_profile(user, seed) for user in range(1, users + 1)]
        profiles.sort(key=lambda p: (p["signup_at"], p["customer_id"]))
        self.originals = [_customer_row(p, p["signup_at"]) for p in profiles]
        self.signup_days = [parse_rfc3339(p["signup_at"]).date() for p in profiles]
        self.latest: dict[str, dict] = {}  # the state at the start of ``next_day``
        self.changes: dict[date, list[dict]] = {}
        self.next_day = self.signup_days[0] if self.signup_days else date.max

    def _signed_up_before(self, day: date) -> int:
        return bisect.bisect_left(self.signup_days, day)

    def _advance(self, until: date) -> None:
        """Build the changes of every day up to and including ``until``."""
        while self.next_day <= until:
            day = self.next_day
            earlier = self._signed_up_before(day)
            rng = random.Random(f"crm-changes:{self.seed}:{day.isoformat()}")
            count = int(earlier * CUSTOMER_CHANGE_RATE + rng.random())  # rounds to the rate on average
            changed = []
            for index in rng.sample(range(earlier), count):
                current = self.latest[self.originals[index]["customer_id"]]
                at = _midnight(day) + timedelta(seconds=rng.randrange(86_400))
                changed.append(self._changed(current, rng, _stamp(at)))
            changed.sort(key=lambda row: (row["updated_at"], int(row["customer_id"])))
            self.changes[day] = changed
            for row in self.originals[earlier:self._signed_up_before(day + timedelta(days=1))]:
                self.latest[row["customer_id"]] = row
            for row in changed:
                self.latest[row["customer_id"]] = row
            self.next_day = day + timedelta(days=1)

    @staticmethod
    def _changed(current: dict, rng: random.Random, updated_at: str) -> dict:
        row = dict(current, updated_at=updated_at)
        if rng.random() < 0.5:
            row["country"] = rng.choice([c for c in _COUNTRIES if c != current["country"]])
        else:
            local, _, domain = current["email"].partition("@")
            row["email"] = f"{local}@{rng.choice([d for d in _EMAIL_DOMAINS if d != domain])}"
        return row

    def day_rows(self, day: date) -> list[dict]:
        start = self._signed_up_before(day)
        new = self.originals[start:self._signed_up_before(day + timedelta(days=1))]
        self._advance(day)
        return [dict(row) for row in new] + [dict(row) for row in self.changes.get(day, [])]

    def state_before(self, day: date) -> dict[str, dict]:
        self._advance(day - timedelta(days=1))
        state = {row["customer_id"]: row for row in self.originals[:self._signed_up_before(day)]}
        for change_day in sorted(d for d in self.changes if d < day):
            for row in self.changes[change_day]:
                state[row["customer_id"]] = row
        return state


@functools.lru_cache(maxsize=8)
def _crm(seed: int, users: int) -> _CrmHistory:
    return _CrmHistory(seed, users)


def customer_snapshot(as_of: date, *, seed: int = 0, users: int = 500) -> list[dict]:
    """A full CRM export at ``as_of`` 00:00 UTC: the latest version of every customer who
    signed up before, ordered by ``customer_id``."""
    if users < 1:
        raise ValueError(f"users must be >= 1, got {users}")
    state = _crm(seed, users).state_before(_as_date(as_of))
    return [dict(state[key]) for key in sorted(state, key=int)]


# --- payments ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _payments_made(day: date, seed: int, events_per_day: int, users: int) -> tuple[dict, ...]:
    """The first version of the payments of the purchases made on ``day``."""
    start = _midnight(day)
    events = generate_events(start, start + timedelta(days=1), seed=seed,
                             events_per_day=events_per_day, users=users)
    payments = []
    for event in events:
        if event["event_type"] != "purchase":
            continue
        order_id = (event["properties"] or {}).get("order_id")
        payment_id = "pay_" + order_id.removeprefix("ord_") if order_id else "pay_" + event["event_id"]
        paid_at = _stamp(parse_rfc3339(event["occurred_at"]), millis=True)
        failed = random.Random(f"payment:{seed}:{payment_id}").random() < PAYMENT_FAILURE_RATE
        payments.append({
            "payment_id": payment_id,
            "customer_id": str(event["user_id"]),
            "amount": str(_money(event["amount"])),
            "status": "failed" if failed else "succeeded",
            "paid_at": paid_at,
            "updated_at": paid_at,
        })
    return tuple(payments)


def _refund_day(payment: dict, seed: int, paid_on: date) -> date | None:
    """The day a succeeded payment is refunded, or None."""
    if payment["status"] != "succeeded":
        return None
    rng = random.Random(f"refund:{seed}:{payment['payment_id']}")
    if rng.random() >= PAYMENT_REFUND_RATE:
        return None
    return paid_on + timedelta(days=rng.randint(1, REFUND_LAG_DAYS))


def _payment_rows(day: date, seed: int, events_per_day: int, users: int) -> list[dict]:
    rows = [dict(p) for p in _payments_made(day, seed, events_per_day, users)]
    refunds = []
    for lag in range(REFUND_LAG_DAYS, 0, -1):
        paid_on = day - timedelta(days=lag)
        for payment in _payments_made(paid_on, seed, events_per_day, users):
            if _refund_day(payment, seed, paid_on) == day:
                rng = random.Random(f"refund-at:{seed}:{payment['payment_id']}")
                at = _midnight(day) + timedelta(milliseconds=rng.randrange(_DAY_MS))
                refunds.append(dict(payment, status="refunded", updated_at=_stamp(at, millis=True)))
    refunds.sort(key=lambda row: (row["updated_at"], row["payment_id"]))
    return rows + refunds


# --- ad spend ---------------------------------------------------------------------------------


def _ad_rows(day: date, seed: int, events_per_day: int) -> list[dict]:
    """The first version of the ad spend of ``day``, one row per campaign."""
    rng = random.Random(f"ad-spend:{seed}:{day.isoformat()}")
    scale = Decimal(events_per_day) / _REFERENCE_EVENTS_PER_DAY
    rows = []
    for campaign in CAMPAIGNS:
        budget, cpm, click_rate = _AD_PLANS[campaign]
        spend = max(_CENT, _money(budget * scale * Decimal(str(rng.uniform(0.85, 1.15)))))
        impressions = round(float(spend) / cpm * 1000 * rng.uniform(0.9, 1.1))
        clicks = min(impressions, round(impressions * click_rate * rng.uniform(0.8, 1.2)))
        rows.append({
            "date": day.isoformat(),
            "campaign": campaign,
            "channel": _CHANNELS[campaign][0],
            "spend": str(spend),
            "impressions": str(impressions),
            "clicks": str(clicks),
        })
    return rows


def _ad_restatement(day: date, seed: int, events_per_day: int) -> dict:
    """The row of ``day - 1`` that the file of ``day`` restates: late costs, or a credit."""
    rng = random.Random(f"ad-restate:{seed}:{day.isoformat()}")
    earlier = rng.choice(_ad_rows(day - timedelta(days=1), seed, events_per_day))
    factor = rng.uniform(1.02, 1.10) if rng.random() < 0.7 else rng.uniform(0.90, 0.98)
    spend = Decimal(earlier["spend"])
    restated = max(_CENT, _money(spend * Decimal(str(factor))))
    if restated == spend:  # only a spend of a few cents can round back to itself
        restated += _CENT
    impressions = round(int(earlier["impressions"]) * factor)
    clicks = min(impressions, round(int(earlier["clicks"]) * factor))
    return dict(earlier, spend=str(restated), impressions=str(impressions), clicks=str(clicks))


# --- public API -------------------------------------------------------------------------------


def generate_day(
    day: date, *, seed: int = 0, events_per_day: int = 2000, users: int = 500
) -> dict[str, list[dict]]:
    """The rows of each entity's file for ``day`` (see the module docstring for the rules).

    Values are the CSV texts: ids, counts and money as strings, money with two decimals.
    """
    day = _as_date(day)
    if users < 1:
        raise ValueError(f"users must be >= 1, got {users}")
    if events_per_day < 0:
        raise ValueError(f"events_per_day must be >= 0, got {events_per_day}")
    return {
        CUSTOMERS: _crm(seed, users).day_rows(day),
        PAYMENTS: _payment_rows(day, seed, events_per_day, users),
        AD_SPEND: _ad_rows(day, seed, events_per_day) + [_ad_restatement(day, seed, events_per_day)],
    }


def render_csv(entity: str, rows: Iterable[dict]) -> bytes:
    """The file of ``rows``: UTF-8, header row, RFC 4180 quoting, ``\\r\\n`` line ends."""
    columns = _columns(entity)
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator=LINE_TERMINATOR)
    writer.writerow(columns)
    for row in rows:
        if set(row) != set(columns):
            raise ValueError(f"{entity} row has columns {sorted(row)}, expected {columns}")
        writer.writerow([row[column] for column in columns])
    return buffer.getvalue().encode("utf-8")


def drop_key(entity: str, day: date, name: str = "export", *, gzipped: bool = False) -> str:
    """``<source>/<entity>/<YYYY-MM-DD>/<name>.csv`` (``.csv.gz`` when gzipped)."""
    _columns(entity)
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"file name {name!r} must be non-empty, without '/' or a leading dot")
    return f"{entity}/{_as_date(day).isoformat()}/{name}.csv{'.gz' if gzipped else ''}"


def write_drops(
    zone,
    start: date,
    end: date,
    *,
    seed: int = 0,
    events_per_day: int = 2000,
    users: int = 500,
    gzip_entities: set[str] | frozenset[str] = frozenset(),
    name: str = "export",
    snapshot: bool = True,
) -> list[str]:
    """Write the files of each day of ``[start, end)`` through ``zone.write_bytes``.

    With ``snapshot`` (the default) the full customer export as of ``start`` goes first, as
    ``crm/customers/<start>/<name>-snapshot.csv``, so the customers who signed up before the
    range are known. Returns the keys written, in the order written.
    """
    start, end = _as_date(start), _as_date(end)
    unknown = set(gzip_entities) - set(COLUMNS)
    if unknown:
        raise ValueError(f"unknown entities to gzip: {sorted(unknown)}; expected some of {list(COLUMNS)}")
    drop_key(CUSTOMERS, start, name)  # validates the name before anything is written

    def put(entity: str, day: date, file_name: str, rows: list[dict]) -> str:
        key = drop_key(entity, day, file_name, gzipped=entity in gzip_entities)
        data = render_csv(entity, rows)
        if entity in gzip_entities:
            data = gzip.compress(data, mtime=0)  # mtime 0: the same rows give the same bytes
        zone.write_bytes(key, data)
        return key

    keys = []
    if snapshot and start < end:
        rows = customer_snapshot(start, seed=seed, users=users)
        keys.append(put(CUSTOMERS, start, f"{name}-snapshot", rows))
    day = start
    while day < end:
        for entity, rows in generate_day(day, seed=seed, events_per_day=events_per_day,
                                         users=users).items():
            keys.append(put(entity, day, name, rows))
        day += timedelta(days=1)
    return keys


def _columns(entity: str) -> list[str]:
    try:
        return COLUMNS[entity]
    except KeyError:
        raise ValueError(f"unknown entity {entity!r}; expected one of {list(COLUMNS)}") from None


def main(argv: list[str] | None = None) -> None:
    from mage_project.landing import LandingZone

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--landing-url", required=True, help="e.g. file:///tmp/landing")
    parser.add_argument("--start", type=date.fromisoformat, required=True, help="first day, YYYY-MM-DD")
    parser.add_argument("--end", type=date.fromisoformat, required=True, help="day after the last")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--events-per-day", type=int, default=2000)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--name", default="export", help="file name without .csv")
    parser.add_argument("--gzip", action="append", default=[], choices=list(COLUMNS),
                        metavar="ENTITY", help="write this entity as .csv.gz (repeatable)")
    parser.add_argument("--no-snapshot", action="store_true",
                        help="skip the full customer export as of --start")
    args = parser.parse_args(argv)
    if args.end <= args.start:
        parser.error("--end must be after --start")
    try:
        zone = LandingZone(args.landing_url)
        keys = write_drops(
            zone, args.start, args.end, seed=args.seed, events_per_day=args.events_per_day,
            users=args.users, gzip_entities=frozenset(args.gzip), name=args.name,
            snapshot=not args.no_snapshot,
        )
    except ValueError as exc:
        parser.error(str(exc))
    for key in keys:
        print(key)


if __name__ == "__main__":
    main()
