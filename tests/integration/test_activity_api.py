"""The activity API client against the real simulator on 127.0.0.1, with injected faults."""

from __future__ import annotations

import json
import random
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone

import pytest
import requests

from mage_project.config import PROJECT_ROOT, ActivityApiSettings
from mage_project.sources.activity_api import ActivityApiClient, ActivityApiError
from mage_project.sources.activity_simulator import (
    INVALID_KINDS,
    ActivitySimulator,
    FaultPlan,
    generate_events,
    user_profile,
)

pytestmark = pytest.mark.integration

# Not aligned to hours, so the first and last buckets are cut by the window.
START = datetime(2026, 11, 27, 8, 30, tzinfo=UTC)
END = datetime(2026, 11, 27, 14, 15, tzinfo=UTC)
IN_WINDOW = 618  # events of seed 0 at 2000/day in [START, END)
PAGE_SIZE = 37
PAGES = 17  # ceil(618 / 37)
FIRST_PARAMS = {"start": "2026-11-27T08:30:00Z", "end": "2026-11-27T14:15:00Z", "limit": "37"}
MISSING = object()


@pytest.fixture
def serve():
    """Start simulators on free loopback ports; all are stopped after the test."""
    running: list[ActivitySimulator] = []

    def start(**kwargs) -> ActivitySimulator:
        simulator = ActivitySimulator(**kwargs).start()
        running.append(simulator)
        return simulator

    yield start
    for simulator in running:
        simulator.stop()


def make_client(url: str, *, sleep=time.sleep, **overrides) -> ActivityApiClient:
    values = {
        "url": url,
        "token": "demo-token",
        "page_size": PAGE_SIZE,
        "connect_timeout": 1.0,
        "read_timeout": 2.0,
        "deadline_seconds": 10.0,
        "max_pages": 10_000,
        "backoff_base": 0.01,
        "backoff_max": 0.05,
    }
    values.update(overrides)
    return ActivityApiClient(ActivityApiSettings(**values), sleep=sleep, rng=random.Random(7))


def fetch(url: str, start: datetime = START, end: datetime = END) -> list:
    with make_client(url) as client:
        return list(client.iter_events(start, end))


def statuses(simulator: ActivitySimulator) -> list[int]:
    return [status for _, status in simulator.requests]


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_window_fetched_over_many_pages_equals_the_generator(serve):
    simulator = serve()
    expected = list(generate_events(START, END))

    with make_client(simulator.url) as client:
        pages = list(client.iter_pages(START, END))

    assert len(expected) == IN_WINDOW
    assert [len(page) for page in pages] == [PAGE_SIZE] * (PAGES - 1) + [IN_WINDOW % PAGE_SIZE]
    assert [event for page in pages for event in page] == expected
    assert client.stats == {"requests": PAGES, "retries": 0, "pages": PAGES, "events": IN_WINDOW}
    assert statuses(simulator) == [200] * PAGES
    assert simulator.requests[0][0] == FIRST_PARAMS
    cursors = [params.get("cursor") for params, _ in simulator.requests[1:]]
    assert all(cursors) and len(set(cursors)) == PAGES - 1
    assert all(START <= instant(e["occurred_at"]) < END for e in expected)


def test_two_fetches_of_a_window_are_equal_and_the_seed_changes_them(serve):
    first, second, other_seed = serve(seed=3), serve(seed=3), serve(seed=4)

    a, b, c = (fetch(simulator.url) for simulator in (first, second, other_seed))

    assert a == b
    assert a == list(generate_events(START, END, seed=3))
    assert {e["event_id"] for e in a}.isdisjoint({e["event_id"] for e in c})


def test_adjacent_windows_partition_the_stream(serve):
    simulator = serve()
    # 11:07:13.5 UTC, given in another zone: the client sends it normalised to UTC
    cut = datetime(2026, 11, 27, 13, 7, 13, 500000, tzinfo=timezone(timedelta(hours=2)))
    client = make_client(simulator.url)

    left = list(client.iter_events(START, cut))
    right = list(client.iter_events(cut, END))

    assert left + right == list(generate_events(START, END))
    assert len(left) + len(right) == IN_WINDOW
    pages = -(-len(left) // PAGE_SIZE) + -(-len(right) // PAGE_SIZE)
    assert client.stats == {"requests": pages, "retries": 0, "pages": pages, "events": IN_WINDOW}
    assert max(instant(e["occurred_at"]) for e in left) < cut
    assert min(instant(e["occurred_at"]) for e in right) >= cut
    assert {params["end"] for params, _ in simulator.requests} == {
        "2026-11-27T11:07:13.500000Z",
        "2026-11-27T14:15:00Z",
    }


def test_rate_limit_waits_at_least_retry_after(serve):
    simulator = serve(faults=FaultPlan({2: "429"}, retry_after=0.3))
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(0)

    client = make_client(simulator.url, sleep=sleep)
    events = list(client.iter_events(START, END))

    assert events == list(generate_events(START, END))
    # jitter is at most backoff_max (0.05 s), so the server's 0.3 s wins
    assert waits == [0.3]
    assert statuses(simulator) == [200, 429] + [200] * (PAGES - 1)
    assert simulator.requests[1][0] == simulator.requests[2][0]
    assert client.stats == {
        "requests": PAGES + 1, "retries": 1, "pages": PAGES, "events": IN_WINDOW
    }


@pytest.mark.parametrize(
    ("fault", "logged_status"),
    [("500", 500), ("503", 503), ("truncate", 200), ("drop", 0), ("slow", 200)],
)
def test_transient_failure_of_a_page_is_retried(serve, fault, logged_status, caplog):
    simulator = serve(faults=FaultPlan({3: fault}, slow_seconds=1.5))
    client = make_client(simulator.url, read_timeout=0.3)

    with caplog.at_level("WARNING", logger="mage_project.sources.activity_api"):
        events = list(client.iter_events(START, END))

    assert events == list(generate_events(START, END))
    assert statuses(simulator) == [200, 200, logged_status] + [200] * (PAGES - 2)
    failed, retried = simulator.requests[2][0], simulator.requests[3][0]
    assert failed == retried and "cursor" in failed
    assert client.stats == {
        "requests": PAGES + 1, "retries": 1, "pages": PAGES, "events": IN_WINDOW
    }
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "activity API page 3 of 2026-11-27T08:30:00Z..2026-11-27T14:15:00Z failed" in (
        caplog.records[0].getMessage()
    )


def test_bad_token_fails_at_once_naming_the_setting(serve):
    simulator = serve(token="right-token")
    client = make_client(simulator.url, token="wrong-token")

    with pytest.raises(ActivityApiError, match="HTTP 401") as caught:
        list(client.iter_events(START, END))

    assert "check ACTIVITY_API_TOKEN" in str(caught.value)
    assert "wrong-token" not in str(caught.value)
    assert simulator.requests == [(FIRST_PARAMS, 401)]
    assert client.stats == {"requests": 1, "retries": 0, "pages": 0, "events": 0}


def test_rejected_parameters_fail_at_once_with_the_server_message(serve):
    simulator = serve()
    client = make_client(simulator.url, page_size=5000)

    with pytest.raises(ActivityApiError) as caught:
        list(client.iter_events(START, END))

    assert str(caught.value).endswith(
        "rejected the request (HTTP 400): limit must be an integer between 1 and 1000, "
        "got '5000'"
    )
    assert simulator.requests == [({**FIRST_PARAMS, "limit": "5000"}, 400)]


@pytest.mark.parametrize(("by_request", "pages_before"), [({2: "repeat_cursor"}, 1),
                                                          ({1: "repeat_cursor",
                                                            2: "repeat_cursor"}, 1)])
def test_a_repeated_cursor_stops_the_fetch(serve, by_request, pages_before):
    simulator = serve(faults=FaultPlan(by_request))
    client = make_client(simulator.url)
    received = []

    with pytest.raises(ActivityApiError, match=r"repeated cursor .* the API is looping"):
        for page in client.iter_pages(START, END):
            received.append(page)

    assert len(received) == pages_before
    assert statuses(simulator) == [200, 200]


def test_a_failing_api_ends_at_the_deadline(serve):
    simulator = serve(faults=FaultPlan(always="500"))
    client = make_client(
        simulator.url, deadline_seconds=1.0, backoff_base=0.1, backoff_max=0.2
    )
    began = time.monotonic()

    with pytest.raises(ActivityApiError, match=r"exceeded the deadline of 1s") as caught:
        list(client.iter_events(START, END))

    elapsed = time.monotonic() - began
    message = str(caught.value)
    # No time for another attempt, or the deadline cut the attempt in flight: either way the
    # message counts the requests and ends with the server's last answer.
    attempts = int(re.search(r"\((\d+) requests in this fetch\)", message).group(1))
    assert "ACTIVITY_API_DEADLINE_SECONDS" in message
    assert message.endswith("last error: HTTP 500: internal error")
    seen = len(simulator.requests)
    if " while " in message:
        # The deadline cut the last attempt in flight (connecting, or waiting for its answer):
        # it may not have reached the server's handler yet.
        assert seen in (attempts - 1, attempts)
    else:
        assert seen == attempts
    assert seen >= 5
    assert set(statuses(simulator)) == {500}
    assert 0.6 < elapsed < 1.5
    assert client.stats == {
        "requests": attempts, "retries": attempts - 1, "pages": 0, "events": 0
    }


def test_more_pages_than_max_pages_is_an_error(serve):
    simulator = serve()
    client = make_client(simulator.url, page_size=10, max_pages=3)
    received = []

    with pytest.raises(ActivityApiError, match="raise ACTIVITY_API_MAX_PAGES") as caught:
        for page in client.iter_pages(START, END):
            received.append(page)

    assert "needs more than 3 pages of 10" in str(caught.value)
    assert [e for page in received for e in page] == list(generate_events(START, END))[:30]
    assert len(simulator.requests) == 3


def _defect(record: dict, original: dict) -> str:
    """The one defect that turns ``original`` into ``record``."""
    changed = [
        key for key in original.keys() | record.keys()
        if record.get(key, MISSING) != original.get(key, MISSING)
    ]
    assert len(changed) == 1, (record, original)
    key = changed[0]
    value = record.get(key, MISSING)
    if key == "event_id":
        return {MISSING: "event_id_missing", "": "event_id_empty"}[value]
    if key == "user_id" and value == "abc":
        return "user_id_not_integer"
    if key == "occurred_at" and value == "not-a-time":
        return "occurred_at_unparseable"
    if key == "occurred_at":
        naive = datetime.fromisoformat(value)
        assert naive.tzinfo is None
        assert naive == instant(original["occurred_at"]).astimezone(UTC).replace(
            tzinfo=None, microsecond=0
        )
        return "occurred_at_without_offset"
    if key == "amount" and value == "ten":
        return "amount_not_number"
    if key == "properties" and value == [1, 2]:
        return "properties_list"
    if key == "properties" and isinstance(value, str):
        return "properties_string"
    raise AssertionError(f"unexpected change of {key}: {value!r}")


def test_invalid_records_carry_one_documented_defect_each(serve):
    simulator = serve(invalid_rate=0.2)
    clean = list(generate_events(START, END))

    got = fetch(simulator.url)

    assert got == list(generate_events(START, END, invalid_rate=0.2))
    assert len(got) == len(clean) == IN_WINDOW
    kinds = [_defect(bad, good) for bad, good in zip(got, clean, strict=True) if bad != good]
    assert set(kinds) == set(INVALID_KINDS)
    assert 0.15 * IN_WINDOW < len(kinds) < 0.25 * IN_WINDOW
    for bad in got:
        if isinstance(bad.get("occurred_at"), str) and bad["occurred_at"] != "not-a-time":
            moment = datetime.fromisoformat(bad["occurred_at"])
            assert START <= (moment if moment.tzinfo else moment.replace(tzinfo=UTC)) < END


def test_redelivered_events_come_twice_and_the_second_says_delivery_2(serve):
    simulator = serve(redelivery_rate=0.1)
    once = {e["event_id"]: e for e in generate_events(START, END)}

    got = fetch(simulator.url)

    counts = Counter(e["event_id"] for e in got)
    twice = [event_id for event_id, n in counts.items() if n == 2]
    assert set(counts) == set(once)
    assert set(counts.values()) == {1, 2}
    assert len(got) == IN_WINDOW + len(twice)
    assert 0.05 * IN_WINDOW < len(twice) < 0.15 * IN_WINDOW
    for event_id in twice:
        first, second = (i for i, e in enumerate(got) if e["event_id"] == event_id)
        original, again = got[first], got[second]
        assert original == once[event_id]
        assert "delivery" not in (original["properties"] or {})
        assert again["properties"] == {**(original["properties"] or {}), "delivery": 2}
        assert again["occurred_at"] == original["occurred_at"]
        if original["event_type"] == "purchase":
            assert again["amount"] == round(original["amount"] * 0.9, 2)
        else:
            assert again["amount"] is None
        for key in ("event_id", "user_id", "event_type", "session_id", "page_url"):
            assert again[key] == original[key]


def test_events_look_like_shop_activity():
    day = list(generate_events(datetime(2026, 11, 27, tzinfo=UTC),
                               datetime(2026, 11, 28, tzinfo=UTC)))
    types = Counter(e["event_type"] for e in day)
    purchases = [e for e in day if e["event_type"] == "purchase"]
    signups = [e for e in day if e["event_type"] == "signup"]

    assert 1900 < len(day) < 2100
    assert set(types) == {"session_start", "page_view", "click", "signup", "add_to_cart",
                          "purchase", "logout"}
    assert all(isinstance(e["amount"], float) and e["amount"] > 0 for e in purchases)
    assert all(e["amount"] == round(e["amount"], 2) for e in purchases)
    assert all(e["amount"] is None for e in day if e["event_type"] != "purchase")
    assert all({"order_id", "items"} <= e["properties"].keys() for e in purchases)
    assert all(e["page_url"] is None or e["page_url"].startswith("https://shop.example.com/")
               for e in day)
    assert {e["occurred_at"][-1] for e in day} >= {"Z", "0"}  # "Z" and "+02:00"-like offsets
    assert any(e["session_id"] is None for e in day)
    assert any(e["properties"] is None for e in day)
    assert {e["user_id"] for e in day} <= set(range(1, 501))
    for signup in signups:
        profile = user_profile(signup["user_id"])
        assert signup["properties"]["utm_campaign"] == profile["utm_campaign"]
        assert instant(signup["occurred_at"]) == instant(profile["signup_at"])


def test_simulator_checks_the_token_before_the_parameters(serve):
    simulator = serve()

    health = requests.get(f"{simulator.url}/healthz", timeout=2)
    no_token = requests.get(f"{simulator.url}/v1/events", params={"limit": "0"}, timeout=2)

    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert (no_token.status_code, no_token.json()) == (
        401, {"error": "missing or invalid bearer token"}
    )
    assert simulator.requests == [({"limit": "0"}, 401)]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"end": "2026-11-27T10:00:00Z"},
         "missing required parameter start (RFC 3339 with offset, e.g. 2026-11-01T00:00:00Z)"),
        ({"start": "2026-11-27T08:00:00", "end": "2026-11-27T10:00:00Z"},
         "start='2026-11-27T08:00:00' is not an RFC 3339 timestamp with offset"),
        ({"start": "2026-11-27T10:00:00+02:00", "end": "2026-11-27T08:00:00Z"},
         "end must be after start"),
        ({"start": "2026-11-27T08:00:00Z", "end": "2026-11-27T10:00:00Z", "limit": "0"},
         "limit must be an integer between 1 and 1000, got '0'"),
        ({"start": "2026-11-27T08:00:00Z", "end": "2026-11-27T10:00:00Z", "cursor": "x!y"},
         "cursor is malformed"),
    ],
)
def test_simulator_rejects_bad_parameters(serve, params, message):
    simulator = serve()

    answer = requests.get(f"{simulator.url}/v1/events", params=params, timeout=2,
                          headers={"Authorization": "Bearer demo-token"})

    assert (answer.status_code, answer.json()) == (400, {"error": message})


def test_simulator_rejects_a_cursor_of_another_window(serve):
    simulator = serve()
    auth = {"Authorization": "Bearer demo-token"}
    window = {"start": "2026-11-27T08:00:00Z", "end": "2026-11-27T10:00:00Z", "limit": "5"}
    first = requests.get(f"{simulator.url}/v1/events", params=window, headers=auth, timeout=2)

    other = {**window, "end": "2026-11-27T11:00:00Z", "cursor": first.json()["next_cursor"]}
    answer = requests.get(f"{simulator.url}/v1/events", params=other, headers=auth, timeout=2)

    assert (answer.status_code, answer.json()) == (
        400, {"error": "cursor does not belong to this start/end window"}
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_command_line_serves_the_same_stream_until_a_signal_then_frees_its_port(signum):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with subprocess.Popen(
        [sys.executable, "-m", "mage_project.sources.activity_simulator",
         "--port", str(port), "--token", "cli-token", "--faults", "1:503"],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as process:
        try:
            banner = process.stdout.readline().strip()
            with make_client(f"http://127.0.0.1:{port}", token="cli-token") as client:
                events = list(client.iter_events(START, END))
        finally:
            process.send_signal(signum)
            _, stderr = process.communicate(timeout=10)

    assert banner == f"serving on http://127.0.0.1:{port}"
    # another process with its own hash seed produces the very same events
    assert json.dumps(events) == json.dumps(list(generate_events(START, END)))
    assert client.stats["retries"] == 1
    assert (process.returncode, stderr) == (0, "")
    with socket.socket() as probe:  # nothing listens there any more
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))
