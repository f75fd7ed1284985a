"""A local simulator of the activity REST API: a deterministic event generator and its server.

The demo and the integration tests read from it instead of the real API. It serves the same
contract (``GET /v1/events`` with a time window, a bearer token and an opaque cursor) and can
inject the faults a production client must survive: rate limits, server errors, slow, dripping,
stalled and cut responses, 200s that are not pages (not JSON, cut short, an error object),
dropped connections and a looping cursor.

Events are generated per UTC hour bucket from a ``random.Random`` seeded with the seed and the
hour, so any window yields exactly the events of its covering buckets that fall inside it, and
adjacent windows partition the stream. The cursor encodes a position (hour bucket and index
within the bucket's output), so each page generates only the buckets it needs.

Run it with ``python -m mage_project.sources.activity_simulator --port 8765``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import functools
import hashlib
import hmac
import ipaddress
import json
import logging
import math
import random
import re
import signal
import threading
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs

from mage_project import processes

log = logging.getLogger(__name__)

SHOP_URL = "https://shop.example.com"
EVENT_TYPES = (
    "session_start",
    "page_view",
    "click",
    "signup",
    "add_to_cart",
    "purchase",
    "logout",
)
CAMPAIGNS = ("black_friday", "spring_sale", "brand_search", "newsletter_nov", "retargeting")
# The one defect each invalid record carries, in the order they are cycled through.
INVALID_KINDS = (
    "event_id_missing",
    "event_id_empty",
    "user_id_not_integer",
    "occurred_at_without_offset",
    "occurred_at_unparseable",
    "amount_not_number",
    "properties_list",
    "properties_string",
)
# What each fault does to the request it hits:
#   429, 500, 503   that status with an error object (429 with Retry-After)
#   slow            the page after slow_seconds without a byte (slow headers)
#   drip            the page drip_bytes at a time, one piece every drip_seconds
#   stall           half the page, slow_seconds without a byte, then the rest
#   truncate        half the page, then the connection closes (Content-Length promised more)
#   cut_json        a 200 with half the page as its whole body (Content-Length says so)
#   not_json        a 200 with an HTML page, as a proxy in the way would send
#   error_200       a 200 with the contract's error object instead of a page
#   repeat_cursor   the page with the cursor it was asked for as its next_cursor
#   drop            the connection closes without an answer
FAULTS = ("429", "500", "503", "slow", "drip", "stall", "truncate", "cut_json", "not_json",
          "error_200", "repeat_cursor", "drop")
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100

HOUR_MS = 3_600_000
HOUR_US = HOUR_MS * 1000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_NAIVE = datetime(1970, 1, 1)

# (utm_source, utm_medium, referrer) of each campaign's traffic.
_CHANNELS = {
    "black_friday": ("facebook", "paid_social", "https://www.facebook.com/"),
    "spring_sale": ("instagram", "paid_social", "https://www.instagram.com/"),
    "brand_search": ("google", "cpc", "https://www.google.com/"),
    "newsletter_nov": ("newsletter", "email", None),
    "retargeting": ("criteo", "display", "https://www.criteo.com/"),
}
_ORGANIC_REFERRERS = (None, None, "https://www.google.com/", "https://www.bing.com/",
                      "https://duckduckgo.com/")
# (slug, sku, unit price in USD)
_PRODUCTS = (
    ("trail-runner-shoes", "SKU-1001", 89.90),
    ("merino-wool-socks", "SKU-1002", 14.50),
    ("rain-shell-jacket", "SKU-1003", 149.00),
    ("canvas-backpack", "SKU-1004", 64.95),
    ("insulated-bottle", "SKU-1005", 24.99),
    ("fleece-hoodie", "SKU-1006", 59.00),
    ("leather-belt", "SKU-1007", 35.00),
    ("beanie-hat", "SKU-1008", 19.90),
    ("down-parka", "SKU-1009", 249.00),
    ("sunglasses", "SKU-1010", 79.00),
    ("gift-card", "SKU-1011", 50.00),
    ("headlamp", "SKU-1012", 39.95),
)
_BROWSE_PAGES = (
    "/",
    "/category/shoes",
    "/category/outerwear",
    "/category/accessories",
    "/search?q=boots",
    "/search?q=jacket",
    "/cart",
    "/about",
)
_LANDING_PAGES = ("/", "/", "/category/shoes", "/category/outerwear")
_CLICK_TARGETS = ("nav_link", "product_card", "banner", "search_button", "filter", "footer_link")
_DEVICES = ("desktop", "mobile", "tablet")
_DEVICE_WEIGHTS = (0.45, 0.47, 0.08)
_PAYMENT_METHODS = ("card", "card", "card", "paypal", "apple_pay", "gift_card")
# Minutes east of UTC for the share of clients that report local time with an offset.
_OFFSETS = (120, 60, -300, 330, -480, 540, -180)

_FIRST_NAMES = (
    "Ana", "Ben", "Chloé", "David", "Elif", "Farid", "Grace", "Hiroshi", "Inès", "Jonas",
    "Kavya", "Liam", "María", "Noah", "Olga", "Pedro", "Quinn", "Rosa", "Søren", "Tomás",
    "Uma", "Victor", "Wei", "Ximena", "Yusuf", "Zoë",
)
_LAST_NAMES = (
    "Andersen", "Brown", "Costa", "Dubois", "Eriksson", "Fischer", "García", "Hoang",
    "Ibrahim", "Jansen", "Kowalski", "López", "Müller", "Nakamura", "O'Brien", "Patel",
    "Rossi", "Schmidt", "Tanaka", "Novák", "Walsh", "Yılmaz", "Zhang",
)
_COUNTRIES = ("US", "GB", "DE", "FR", "ES", "NL", "SE", "PL", "IT", "CA", "BR", "IN", "JP", "AU")
_COUNTRY_WEIGHTS = (30, 10, 10, 7, 5, 4, 3, 3, 5, 5, 5, 6, 4, 3)
_SIGNUP_FROM_S = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp())
_SIGNUP_TO_S = int(datetime(2027, 1, 1, tzinfo=UTC).timestamp())

# Share of the daily volume per UTC hour: quiet at night, a peak mid-afternoon.
_DIURNAL = tuple(0.25 + 0.75 * (0.5 - 0.5 * math.cos(2 * math.pi * (h - 3) / 24)) for h in range(24))
_DIURNAL_SUM = sum(_DIURNAL)

_RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
)


def parse_rfc3339(value: str) -> datetime:
    """An RFC 3339 timestamp with offset as an aware datetime; ``ValueError`` otherwise."""
    match = _RFC3339.match(value)
    if match is None:
        raise ValueError(f"{value!r} is not an RFC 3339 timestamp with offset")
    day, clock, fraction, offset = match.groups()
    offset = "+00:00" if offset in ("Z", "z") else offset
    return datetime.fromisoformat(f"{day}T{clock}{(fraction or '')[:7]}{offset}")


def _to_us(value: datetime) -> int:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{value!r} is naive; pass a timezone-aware datetime")
    return (value - _EPOCH) // timedelta(microseconds=1)


def _digest(text: str, size: int) -> str:
    return hashlib.blake2b(text.encode(), digest_size=size).hexdigest()


def _render(ms: int, offset_min: int) -> str:
    local = _EPOCH_NAIVE + timedelta(milliseconds=ms + offset_min * 60_000)
    text = local.isoformat(timespec="milliseconds")
    if offset_min == 0:
        return text + "Z"
    hours, minutes = divmod(abs(offset_min), 60)
    return f"{text}{'+' if offset_min > 0 else '-'}{hours:02d}:{minutes:02d}"


# --- users -----------------------------------------------------------------------------------


def _ascii(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z]", "", folded.lower())


def _signup_s(rng: random.Random) -> int:
    return _SIGNUP_FROM_S + int(rng.random() * (_SIGNUP_TO_S - _SIGNUP_FROM_S))


def user_profile(user_id: int, seed: int = 0) -> dict:
    """The CRM view of a user: deterministic for (user_id, seed).

    ``utm_campaign`` is the campaign the user signed up through ("" for organic signups); the
    user's ``signup`` event carries the same value.
    """
    if user_id < 1:
        raise ValueError(f"user ids start at 1, got {user_id}")
    rng = random.Random(f"profile:{seed}:{user_id}")
    signup = _signup_s(rng)  # drawn first so _signups() can draw it alone
    first = rng.choice(_FIRST_NAMES)
    last = rng.choice(_LAST_NAMES)
    country = rng.choices(_COUNTRIES, _COUNTRY_WEIGHTS)[0]
    campaign = "" if rng.random() < 0.4 else rng.choice(CAMPAIGNS)
    return {
        "customer_id": user_id,
        "email": f"{_ascii(first)}.{_ascii(last)}.{user_id}@example.com",
        "full_name": f"{first} {last}",
        "country": country,
        "signup_at": _render(signup * 1000, 0).replace(".000Z", "Z"),
        "utm_campaign": campaign,
    }


@functools.lru_cache(maxsize=16)
def _signups(seed: int, users: int) -> dict[int, tuple[tuple[int, int], ...]]:
    """hour -> ((ms within the hour, user_id), ...) of the users who sign up in that hour."""
    by_hour: dict[int, list[tuple[int, int]]] = {}
    for user in range(1, users + 1):
        ms = _signup_s(random.Random(f"profile:{seed}:{user}")) * 1000
        by_hour.setdefault(ms // HOUR_MS, []).append((ms % HOUR_MS, user))
    return {hour: tuple(sorted(items)) for hour, items in by_hour.items()}


# --- events ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Params:
    seed: int
    events_per_day: int
    users: int
    invalid_rate: float
    redelivery_rate: float

    def __post_init__(self) -> None:
        if self.events_per_day < 0:
            raise ValueError(f"events_per_day must be >= 0, got {self.events_per_day}")
        if self.users < 1:
            raise ValueError(f"users must be >= 1, got {self.users}")
        for name in ("invalid_rate", "redelivery_rate"):
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {rate}")


class _Session:
    """Builds one visit's events: (ms within the hour, offset minutes, fields)."""

    def __init__(self, rng: random.Random, label: str, user: int, device: str,
                 campaign: str | None, referrer: str | None, tracked: bool) -> None:
        self.rng = rng
        self.label = label
        self.user = user
        self.device = device
        self.campaign = campaign
        self.referrer = referrer
        self.session_id = "ses_" + _digest(label, 8) if tracked else None
        self.offset = 0 if rng.random() < 0.85 else rng.choice(_OFFSETS)
        self.events: list[tuple[int, int, dict]] = []

    def utm(self) -> dict:
        if self.campaign is None:
            return {}
        source, medium, _ = _CHANNELS[self.campaign]
        return {"utm_source": source, "utm_medium": medium, "utm_campaign": self.campaign}

    def add(self, ms: int, event_type: str, page_url: str | None, properties: dict | None,
            amount: float | None = None) -> bool:
        if not 0 <= ms < HOUR_MS:
            return False
        fields = {
            "user_id": self.user,
            "event_type": event_type,
            "session_id": self.session_id,
            "page_url": page_url,
            "properties": properties,
            "amount": amount,
        }
        self.events.append((ms, self.offset, fields))
        return True


def _visit(rng: random.Random, p: _Params, hour: int, number: int) -> list:
    if rng.random() < 0.7:
        user = rng.randint(1, p.users)
    else:  # a tenth of the users make up a good share of the traffic
        user = rng.randint(1, max(1, p.users // 10))
    campaign = None if rng.random() < 0.5 else rng.choice(CAMPAIGNS)
    referrer = _CHANNELS[campaign][2] if campaign else rng.choice(_ORGANIC_REFERRERS)
    device = rng.choices(_DEVICES, _DEVICE_WEIGHTS)[0]
    tracked = rng.random() >= 0.03  # consent refused: no session cookie
    s = _Session(rng, f"{p.seed}:{hour}:visit:{number}", user, device, campaign, referrer, tracked)

    t = int(rng.random() * HOUR_MS)
    landing = f"/landing/{campaign}" if campaign else rng.choice(_LANDING_PAGES)
    s.add(t, "session_start", SHOP_URL + landing,
          {**s.utm(), "device": device, "referrer": referrer})
    cart: list[tuple[str, int, float]] = []
    for _ in range(1 + min(int(rng.expovariate(0.35)), 12)):
        t += 500 + int(rng.expovariate(1 / 25_000))
        product = None
        if rng.random() < 0.55:
            product = rng.choice(_PRODUCTS)
            path = f"/products/{product[0]}"
        else:
            path = rng.choice(_BROWSE_PAGES)
        props = None if rng.random() < 0.2 else {"device": device}
        if not s.add(t, "page_view", SHOP_URL + path, props):
            break
        for _ in range(rng.choice((0, 0, 1, 1, 2))):
            t += 300 + int(rng.expovariate(1 / 8_000))
            s.add(t, "click", SHOP_URL + path, {"element": rng.choice(_CLICK_TARGETS)})
        if product is not None and rng.random() < 0.25:
            t += 300 + int(rng.expovariate(1 / 6_000))
            quantity = 1 if rng.random() < 0.8 else rng.randint(2, 3)
            if s.add(t, "add_to_cart", SHOP_URL + path,
                     {"sku": product[1], "quantity": quantity, "price": product[2]}):
                cart.append((product[1], quantity, product[2]))
    if cart and rng.random() < 0.4:
        t += 5_000 + int(rng.expovariate(1 / 60_000))
        shipping = 0.0 if rng.random() < 0.6 else 4.99
        amount = round(sum(q * price for _, q, price in cart) + shipping, 2)
        s.add(t, "purchase", SHOP_URL + "/checkout/confirmation", {
            "order_id": "ord_" + _digest(s.label + ":order", 6),
            "items": sum(q for _, q, _ in cart),
            "currency": "USD",
            "payment_method": rng.choice(_PAYMENT_METHODS),
            **({"utm_campaign": campaign} if campaign else {}),
        }, amount)
    if rng.random() < 0.25:
        t += 1_000 + int(rng.expovariate(1 / 30_000))
        s.add(t, "logout", None, None)
    return s.events


def _signup_visit(rng: random.Random, p: _Params, hour: int, ms: int, user: int) -> list:
    profile_campaign = user_profile(user, p.seed)["utm_campaign"]
    campaign = profile_campaign or None
    referrer = _CHANNELS[campaign][2] if campaign else rng.choice(_ORGANIC_REFERRERS)
    device = rng.choices(_DEVICES, _DEVICE_WEIGHTS)[0]
    s = _Session(rng, f"{p.seed}:{hour}:signup:{user}", user, device, campaign, referrer, True)
    landing = f"/landing/{campaign}" if campaign else "/"
    s.add(ms - 45_000, "session_start", SHOP_URL + landing,
          {**s.utm(), "device": device, "referrer": referrer})
    s.add(ms - 20_000, "page_view", SHOP_URL + "/signup", {"device": device})
    utm = s.utm() or {"utm_campaign": profile_campaign}
    s.add(ms, "signup", SHOP_URL + "/signup", {**utm, "device": device, "referrer": referrer})
    return s.events


def _invalid(event: dict, kind: str, ms: int) -> dict:
    bad = dict(event)
    if kind == "event_id_missing":
        del bad["event_id"]
    elif kind == "event_id_empty":
        bad["event_id"] = ""
    elif kind == "user_id_not_integer":
        bad["user_id"] = "abc"
    elif kind == "occurred_at_without_offset":
        bad["occurred_at"] = (_EPOCH_NAIVE + timedelta(milliseconds=ms)).isoformat("T", "seconds")
    elif kind == "occurred_at_unparseable":
        bad["occurred_at"] = "not-a-time"
    elif kind == "amount_not_number":
        bad["amount"] = "ten"
    elif kind == "properties_list":
        bad["properties"] = [1, 2]
    elif kind == "properties_string":
        bad["properties"] = "utm_source=newsletter"
    else:  # pragma: no cover - INVALID_KINDS is closed
        raise ValueError(kind)
    return bad


def _redelivered(event: dict) -> dict:
    again = dict(event)
    again["properties"] = {**(event["properties"] or {}), "delivery": 2}
    if event["event_type"] == "purchase":
        # The first delivery missed a 10% discount; the second carries the charged amount.
        again["amount"] = max(0.01, round(event["amount"] * 0.9, 2))
    return again


def _bucket(p: _Params, hour: int) -> list[tuple[int, dict]]:
    """The hour's output as (true instant in ms, record), in the order the API serves it."""
    rng = random.Random(f"activity:{p.seed}:{hour}")
    mean = p.events_per_day * _DIURNAL[hour % 24] / _DIURNAL_SUM
    target = max(0, round(rng.gauss(mean, math.sqrt(mean)))) if mean > 0 else 0

    drafts: list[tuple[int, int, dict]] = []
    for ms, user in _signups(p.seed, p.users).get(hour, ()):
        drafts.extend(_signup_visit(rng, p, hour, ms, user))
    visits: list[tuple[int, int, dict]] = []
    number = 0
    while len(visits) < target:
        visits.extend(_visit(rng, p, hour, number))
        number += 1
    del visits[target:]
    drafts.extend(visits)
    drafts.sort(key=lambda draft: draft[0])  # stable: ties keep generation order

    base = hour * HOUR_MS
    events: list[tuple[int, dict]] = []
    for index, (offset_ms, offset_min, fields) in enumerate(drafts):
        ms = base + offset_ms
        events.append((ms, {
            "event_id": "evt_" + _digest(f"{p.seed}:{hour}:{index}", 12),
            "user_id": fields["user_id"],
            "event_type": fields["event_type"],
            "occurred_at": _render(ms, offset_min),
            "session_id": fields["session_id"],
            "page_url": fields["page_url"],
            "properties": fields["properties"],
            "amount": fields["amount"],
        }))

    # A separate stream, so the rates change which records are affected and nothing else.
    chooser = random.Random(f"delivery:{p.seed}:{hour}")
    output: list[tuple[int, dict]] = []
    later: list[tuple[int, dict]] = []
    defects = 0
    for ms, event in events:
        draw = chooser.random()
        if draw < p.invalid_rate:
            kind = INVALID_KINDS[(hour + defects) % len(INVALID_KINDS)]
            defects += 1
            output.append((ms, _invalid(event, kind, ms)))
        elif draw < p.invalid_rate + p.redelivery_rate:
            output.append((ms, event))
            later.append((ms, _redelivered(event)))
        else:
            output.append((ms, event))
    return output + later


def generate_events(
    start: datetime,
    end: datetime,
    *,
    seed: int = 0,
    events_per_day: int = 2000,
    users: int = 500,
    invalid_rate: float = 0.0,
    redelivery_rate: float = 0.0,
) -> Iterator[dict]:
    """The events of ``[start, end)`` as the simulator serves them, bucket by bucket.

    Within an hour bucket events are ordered by ``occurred_at``; re-deliveries follow the
    bucket's other events. Records are fresh dicts; the caller may change them.
    """
    params = _Params(seed, events_per_day, users, invalid_rate, redelivery_rate)
    start_us, end_us = _to_us(start), _to_us(end)
    if end_us <= start_us:
        return
    for hour in range(start_us // HOUR_US, (end_us - 1) // HOUR_US + 1):
        for ms, event in _bucket(params, hour):
            if start_us <= ms * 1000 < end_us:
                yield event


@functools.lru_cache(maxsize=4)
def _wire_bucket(params: _Params, hour: int) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """The bucket as served: instants and JSON texts. Cached so paging a bucket is linear."""
    bucket = _bucket(params, hour)
    return (
        tuple(ms for ms, _ in bucket),
        tuple(json.dumps(event, separators=(",", ":")) for _, event in bucket),
    )


# --- cursor ----------------------------------------------------------------------------------


class _BadRequest(ValueError):
    pass


def _encode_cursor(start_us: int, end_us: int, hour: int, index: int) -> str:
    raw = json.dumps({"v": 1, "s": start_us, "e": end_us, "h": hour, "i": index},
                     separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).rstrip(b"=").decode()


def _decode_cursor(cursor: str, start_us: int, end_us: int) -> tuple[int, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        state = json.loads(raw)
    except (binascii.Error, ValueError):
        raise _BadRequest("cursor is malformed") from None
    keys = ("v", "s", "e", "h", "i")
    if not isinstance(state, dict) or not all(
        type(state.get(key)) is int for key in keys  # not bool
    ) or state["v"] != 1 or state["i"] < 0:
        raise _BadRequest("cursor is malformed")
    if (state["s"], state["e"]) != (start_us, end_us) or not (
        start_us // HOUR_US <= state["h"] <= (end_us - 1) // HOUR_US
    ):
        raise _BadRequest("cursor does not belong to this start/end window")
    return state["h"], state["i"]


# --- server ----------------------------------------------------------------------------------


@dataclass
class FaultPlan:
    """Faults to inject, by the 1-based number of the ``/v1/events`` request, or always."""

    by_request: dict[int, str] = field(default_factory=dict)
    always: str | None = None
    retry_after: float = 1.0
    slow_seconds: float = 2.0
    drip_seconds: float = 0.5
    drip_bytes: int = 1

    def __post_init__(self) -> None:
        for fault in [*self.by_request.values(), self.always]:
            if fault is not None and fault not in FAULTS:
                raise ValueError(f"unknown fault {fault!r}; expected one of {', '.join(FAULTS)}")

    def fault_for(self, number: int) -> str | None:
        return self.by_request.get(number, self.always)


_FAULT_ERRORS = {"429": "rate limit exceeded", "500": "internal error", "503": "unavailable"}
_NOT_A_PAGE = {
    "not_json": b"<html><body><h1>502 Bad Gateway</h1></body></html>",
    "error_200": json.dumps({"error": "upstream query timed out"}).encode(),
}


class _Server(processes.HTTPServer):
    def __init__(self, address: tuple[str, int], simulator: ActivitySimulator) -> None:
        self.simulator = simulator
        super().__init__(address, _Handler)

    def handle_error(self, request, client_address) -> None:
        # Clients that hang up (timeouts, the drop fault) are expected; anything else is a bug.
        log.debug("activity simulator: error serving %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ActivitySimulator/1"
    timeout = 60  # idle kept-alive connections
    disable_nagle_algorithm = True  # headers and body go out in two writes
    server: _Server

    def log_message(self, format: str, *args) -> None:
        pass

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        try:
            if path == "/healthz":
                self._send(200, b'{"status":"ok"}')
            elif path == "/v1/events":
                self._events(query)
            else:
                self._send(404, json.dumps({"error": f"no route for {path}"}).encode())
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _events(self, query: str) -> None:
        sim = self.server.simulator
        number = sim._next_request_number()
        raw = parse_qs(query, keep_blank_values=True)
        logged = {key: values[-1] for key, values in raw.items()}
        fault = sim.faults.fault_for(number)
        if fault in _NOT_A_PAGE:
            sim._record(logged, 200)
            self._send(200, _NOT_A_PAGE[fault], {"Content-Type": "text/html"}
                       if fault == "not_json" else None)
            return
        if fault == "drop":
            sim._record(logged, 0)
            self.close_connection = True
            return
        if fault in _FAULT_ERRORS:
            status = int(fault)
            sim._record(logged, status)
            headers = {"Retry-After": f"{sim.faults.retry_after:g}"} if fault == "429" else {}
            self._send(status, json.dumps({"error": _FAULT_ERRORS[fault]}).encode(), headers)
            return
        status, body, headers = sim._answer(
            self.headers.get("Authorization"), raw, repeat_cursor=fault == "repeat_cursor"
        )
        sim._record(logged, status)
        if fault == "slow":
            sim._stopping.wait(sim.faults.slow_seconds)
        if fault == "cut_json":
            body = body[: len(body) // 2]
        self._send(status, body, headers, truncate=fault == "truncate",
                   drip=fault == "drip", stall=fault == "stall")

    def _send(self, status: int, body: bytes, headers: dict | None = None,
              truncate: bool = False, drip: bool = False, stall: bool = False) -> None:
        self.send_response(status)
        headers = {"Content-Type": "application/json", **(headers or {})}
        headers["Content-Length"] = str(len(body))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        faults, stopping = self.server.simulator.faults, self.server.simulator._stopping
        if truncate:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
        elif drip:
            self.wfile.flush()
            step = max(1, faults.drip_bytes)
            for at in range(0, len(body), step):
                if stopping.wait(faults.drip_seconds):
                    self.close_connection = True
                    return
                self.wfile.write(body[at:at + step])
                self.wfile.flush()
        elif stall:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            if stopping.wait(faults.slow_seconds):
                self.close_connection = True
                return
            self.wfile.write(body[len(body) // 2:])
        else:
            self.wfile.write(body)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ActivitySimulator:
    """The activity API on a loopback port, served from a daemon thread.

    ``requests`` lists ``(params, status)`` per ``/v1/events`` request in arrival order;
    status 0 means the connection was dropped without an answer. ``arrivals`` holds each of
    those requests' arrival on ``time.monotonic()``, for tests of how long a client waited.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str = "demo-token",
        seed: int = 0,
        events_per_day: int = 2000,
        users: int = 500,
        invalid_rate: float = 0.0,
        redelivery_rate: float = 0.0,
        faults: FaultPlan | None = None,
    ) -> None:
        if not _is_loopback(host):
            raise ValueError(f"the simulator binds loopback addresses only, got {host!r}")
        if not token:
            raise ValueError("token must not be empty")
        self.host = host
        self.port = port
        self.token = token
        self.faults = faults or FaultPlan()
        self._params = _Params(seed, events_per_day, users, invalid_rate, redelivery_rate)
        self._lock = threading.Lock()
        self._log: list[tuple[dict, int]] = []
        self._arrivals: list[float] = []
        self._count = 0
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # lifecycle

    def start(self) -> ActivitySimulator:
        if self._server is not None:
            raise RuntimeError("the simulator is already running")
        self._stopping.clear()
        self._server = _Server((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"activity-simulator-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.close_open_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> ActivitySimulator:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the simulator is not running; use it as a context manager")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def requests(self) -> list[tuple[dict, int]]:
        with self._lock:
            return list(self._log)

    @property
    def arrivals(self) -> list[float]:
        with self._lock:
            return list(self._arrivals)

    # request handling (called from handler threads)

    def _next_request_number(self) -> int:
        with self._lock:
            self._count += 1
            self._arrivals.append(time.monotonic())
            return self._count

    def _record(self, params: dict, status: int) -> None:
        with self._lock:
            self._log.append((params, status))

    def _answer(self, authorization: str | None, raw: dict[str, list[str]],
                repeat_cursor: bool = False) -> tuple[int, bytes, dict]:
        expected = f"Bearer {self.token}".encode()
        if not hmac.compare_digest((authorization or "").encode(), expected):
            body = json.dumps({"error": "missing or invalid bearer token"}).encode()
            return 401, body, {"WWW-Authenticate": 'Bearer realm="activity"'}
        try:
            start_us, end_us, limit, (hour, index) = _parse_params(raw)
        except _BadRequest as exc:
            return 400, json.dumps({"error": str(exc)}).encode(), {}
        chunks, position = self._page(start_us, end_us, limit, hour, index)
        cursor = _encode_cursor(start_us, end_us, *position) if position else None
        if repeat_cursor:
            given = raw.get("cursor", [""])[-1]
            cursor = given or _encode_cursor(start_us, end_us, start_us // HOUR_US, 0)
        data = ",".join(chunks)
        return 200, f'{{"data":[{data}],"next_cursor":{json.dumps(cursor)}}}'.encode(), {}

    def _page(self, start_us: int, end_us: int, limit: int, hour: int,
              index: int) -> tuple[list[str], tuple[int, int] | None]:
        """Up to ``limit`` records from (hour, index) on, and where the next page starts."""
        chunks: list[str] = []
        last_hour = (end_us - 1) // HOUR_US
        while hour <= last_hour:
            instants, texts = _wire_bucket(self._params, hour)
            while index < len(instants):
                if start_us <= instants[index] * 1000 < end_us:
                    if len(chunks) == limit:
                        return chunks, (hour, index)
                    chunks.append(texts[index])
                index += 1
            hour, index = hour + 1, 0
        return chunks, None


def _parse_params(raw: dict[str, list[str]]) -> tuple[int, int, int, tuple[int, int]]:
    def single(name: str) -> str | None:
        values = raw.get(name)
        if not values:
            return None
        if len(values) > 1:
            raise _BadRequest(f"parameter {name} is given more than once")
        return values[0]

    bounds = []
    for name in ("start", "end"):
        value = single(name)
        if value is None:
            raise _BadRequest(
                f"missing required parameter {name} (RFC 3339 with offset, "
                "e.g. 2026-11-01T00:00:00Z)"
            )
        try:
            bounds.append(_to_us(parse_rfc3339(value)))
        except ValueError:
            raise _BadRequest(f"{name}={value!r} is not an RFC 3339 timestamp with offset") from None
    start_us, end_us = bounds
    if end_us <= start_us:
        raise _BadRequest("end must be after start")
    limit_text = single("limit")
    limit = DEFAULT_LIMIT
    if limit_text is not None:
        if not re.fullmatch(r"\d{1,7}", limit_text) or not 1 <= int(limit_text) <= MAX_LIMIT:
            raise _BadRequest(
                f"limit must be an integer between 1 and {MAX_LIMIT}, got {limit_text!r}"
            )
        limit = int(limit_text)
    cursor = single("cursor")
    position = (
        _decode_cursor(cursor, start_us, end_us) if cursor else (start_us // HOUR_US, 0)
    )
    return start_us, end_us, limit, position


# --- command line ----------------------------------------------------------------------------


def _parse_faults(text: str, retry_after: float, slow_seconds: float) -> FaultPlan:
    """``"2:429,3:503"``; ``"*:500"`` applies a fault to every request."""
    by_request: dict[int, str] = {}
    always = None
    for item in filter(None, (part.strip() for part in text.split(","))):
        number, sep, fault = item.partition(":")
        if not sep:
            raise argparse.ArgumentTypeError(f"bad fault {item!r}; expected NUMBER:FAULT")
        if number.strip() == "*":
            always = fault.strip()
        elif number.strip().isdigit() and int(number) >= 1:
            by_request[int(number)] = fault.strip()
        else:
            raise argparse.ArgumentTypeError(f"bad request number in {item!r}")
    try:
        return FaultPlan(by_request, always, retry_after=retry_after, slow_seconds=slow_seconds)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--token", default="demo-token")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--events-per-day", type=int, default=2000)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--invalid-rate", type=float, default=0.0)
    parser.add_argument("--redelivery-rate", type=float, default=0.0)
    parser.add_argument("--faults", default="", help='e.g. "2:429,3:503" or "*:500"')
    parser.add_argument("--retry-after", type=float, default=1.0)
    parser.add_argument("--slow-seconds", type=float, default=2.0)
    args = parser.parse_args(argv)
    try:
        faults = _parse_faults(args.faults, args.retry_after, args.slow_seconds)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))

    try:
        simulator = ActivitySimulator(
            host=args.host,
            port=args.port,
            token=args.token,
            seed=args.seed,
            events_per_day=args.events_per_day,
            users=args.users,
            invalid_rate=args.invalid_rate,
            redelivery_rate=args.redelivery_rate,
            faults=faults,
        )
    except ValueError as exc:
        parser.error(str(exc))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with simulator:
        print(f"serving on {simulator.url}", flush=True)
        while not stop.wait(0.5):
            pass


if __name__ == "__main__":
    main()
