"""The activity API client against faults really injected by a server on 127.0.0.1.

Each fault comes from the activity simulator's server (``FaultPlan``): rate limits, server
errors, slow headers, dripping and stalled bodies, cut and non-JSON bodies, a 200 with an error
object, a looping cursor, a bad token, a connection closed mid-page. The client is the real one
with settings resolved by ``mage_project.config`` from the environment (the suite's backoff of
0.01-0.05 s included). A fault the client must survive leaves the fetched stream exactly the
clean one; a fault it cannot survive ends the fetch with a message that names the cause.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

import pytest

from mage_project import config
from mage_project.sources.activity_api import (
    MALFORMED_PAGE_ATTEMPTS,
    ActivityApiClient,
    ActivityApiError,
)
from mage_project.sources.activity_simulator import ActivitySimulator, FaultPlan, generate_events

pytestmark = pytest.mark.integration

START = datetime(2026, 11, 27, 8, 30, tzinfo=UTC)
END = datetime(2026, 11, 27, 14, 15, tzinfo=UTC)
PAGE_SIZE = 37
PAGES = 17  # ceil(618 / 37)
CLEAN = list(generate_events(START, END))
WINDOW = "2026-11-27T08:30:00Z..2026-11-27T14:15:00Z"


@pytest.fixture
def api(monkeypatch):
    """``api(faults, **settings)`` starts a simulator with those faults and returns it with a
    client whose settings come from ACTIVITY_API_* variables; all are stopped after the test."""
    running: list[tuple[ActivitySimulator, ActivityApiClient]] = []

    def start(faults: FaultPlan | None = None, token: str = "demo-token",
              **settings: str) -> tuple[ActivitySimulator, ActivityApiClient]:
        simulator = ActivitySimulator(token="demo-token", faults=faults).start()
        values = {"URL": simulator.url, "TOKEN": token, "PAGE_SIZE": str(PAGE_SIZE),
                  "CONNECT_TIMEOUT": "1", "READ_TIMEOUT": "1", "DEADLINE_SECONDS": "20",
                  "MAX_PAGES": "1000", **settings}
        for name, value in values.items():
            monkeypatch.setenv(f"ACTIVITY_API_{name}", value)
        client = ActivityApiClient(config.activity_api())
        running.append((simulator, client))
        return simulator, client

    yield start
    for simulator, client in running:
        client.close()
        simulator.stop()


def statuses(simulator: ActivitySimulator) -> list[int]:
    return [status for _, status in simulator.requests]


def assert_clean(events: list) -> None:
    """The fetched stream is the clean one: the same records, in order, none twice."""
    ids = [event["event_id"] for event in events]
    assert ids == [event["event_id"] for event in CLEAN]
    assert len(set(ids)) == len(ids) == 618
    assert events == CLEAN


def test_a_429_burst_is_waited_out_for_at_least_retry_after_each_time(api):
    simulator, client = api(FaultPlan({2: "429", 3: "429", 4: "429"}, retry_after=0.25))

    events = list(client.iter_events(START, END))

    assert_clean(events)
    assert statuses(simulator) == [200, 429, 429, 429] + [200] * (PAGES - 1)
    arrivals = simulator.arrivals
    # measured where the server saw the requests: each retry came no sooner than it was told
    gaps = [later - earlier for earlier, later in zip(arrivals[1:4], arrivals[2:5], strict=True)]
    assert all(gap >= 0.25 for gap in gaps), gaps
    assert len({params.get("cursor") for params, _ in simulator.requests[1:5]}) == 1
    assert client.stats == {"requests": PAGES + 3, "retries": 3, "pages": PAGES, "events": 618}


def test_a_5xx_burst_that_recovers_loses_and_repeats_nothing(api):
    simulator, client = api(FaultPlan({3: "500", 4: "503", 5: "500", 6: "503"}))

    assert_clean(list(client.iter_events(START, END)))
    assert statuses(simulator) == [200, 200, 500, 503, 500, 503] + [200] * (PAGES - 2)
    assert client.stats["retries"] == 4


@pytest.mark.parametrize(
    ("fault", "logged"),
    [
        ("slow", 200),      # headers later than the read timeout
        ("stall", 200),     # half the page, then nothing for longer than the read timeout
        ("truncate", 200),  # half the page, then the connection closes
        ("drop", 0),        # the connection closes before any answer
        ("cut_json", 200),  # a complete answer whose body is half a page
        ("not_json", 200),  # a proxy's HTML page
        ("error_200", 200),  # an error object where a page belongs
    ],
)
def test_a_page_that_fails_once_is_fetched_again_and_the_stream_is_clean(api, fault, logged):
    simulator, client = api(FaultPlan({3: fault}, slow_seconds=2.5))

    assert_clean(list(client.iter_events(START, END)))
    assert statuses(simulator) == [200, 200, logged] + [200] * (PAGES - 2)
    failed, retried = simulator.requests[2][0], simulator.requests[3][0]
    assert failed == retried and "cursor" in failed
    assert client.stats == {"requests": PAGES + 1, "retries": 1, "pages": PAGES, "events": 618}


def test_every_transient_fault_in_one_fetch_still_gives_the_clean_stream(api):
    faults = {2: "429", 4: "500", 6: "drop", 8: "truncate", 10: "stall", 12: "cut_json",
              14: "error_200", 16: "not_json", 18: "slow", 20: "503"}
    simulator, client = api(FaultPlan(faults, retry_after=0.05, slow_seconds=2.5))

    assert_clean(list(client.iter_events(START, END)))
    assert len(simulator.requests) == PAGES + len(faults)
    assert client.stats["retries"] == len(faults)


@pytest.mark.timeout(30)  # without the deadline inside requests: minutes
def test_a_dripping_body_is_cut_off_when_the_deadline_passes(api):
    # A byte every 20 ms fits every 1 s read timeout: before the deadline held inside a request,
    # this 10 kB page took minutes. Now the fetch ends at its 2 s deadline.
    simulator, client = api(FaultPlan({2: "drip"}, drip_seconds=0.02, drip_bytes=1),
                            DEADLINE_SECONDS="2")
    received = []
    began = time.monotonic()

    with pytest.raises(ActivityApiError) as caught:
        for page in client.iter_pages(START, END):
            received.append(page)

    elapsed = time.monotonic() - began
    message = str(caught.value)
    assert message.startswith(
        f"fetching {WINDOW} exceeded the deadline of 2s (ACTIVITY_API_DEADLINE_SECONDS) while "
        "reading the body of page 2 ("
    )
    got = int(re.search(r"page 2 \((\d+) bytes received\)", message).group(1))
    assert 0 < got < 200  # of about 10 000
    assert received == [CLEAN[:PAGE_SIZE]]
    assert statuses(simulator) == [200, 200]  # no retry: no time was left for one
    assert elapsed < 2 + 1.5


@pytest.mark.timeout(30)  # without the deadline inside requests: minutes
def test_headers_that_come_after_the_deadline_end_the_fetch_at_the_deadline(api):
    # A read timeout of 30 s would wait out the whole 30 s delay; the 2 s deadline is shorter.
    simulator, client = api(FaultPlan(always="slow", slow_seconds=30), READ_TIMEOUT="30",
                            DEADLINE_SECONDS="2")
    began = time.monotonic()

    with pytest.raises(ActivityApiError) as caught:
        list(client.iter_events(START, END))

    assert str(caught.value) == (
        f"fetching {WINDOW} exceeded the deadline of 2s (ACTIVITY_API_DEADLINE_SECONDS) while "
        "waiting for the answer to page 1 (1 requests in this fetch)"
    )
    assert time.monotonic() - began < 2 + 1.5
    assert len(simulator.requests) == 1


@pytest.mark.parametrize(
    ("fault", "answer"),
    [
        ("error_200", "an error object instead of a page: upstream query timed out"),
        ("not_json", "body is not JSON: <html><body><h1>502 Bad Gateway</h1></body></html>"),
        ("cut_json", 'body is not JSON: {"data":[{"event_id":"evt_'),
    ],
)
def test_a_2xx_that_is_never_a_page_fails_after_the_bounded_attempts_naming_it(
        api, fault, answer):
    simulator, client = api(FaultPlan({n: fault for n in range(2, 10)}))

    with pytest.raises(ActivityApiError) as caught:
        list(client.iter_events(START, END))

    message = str(caught.value)
    assert message.startswith(
        f"page 2 of {WINDOW}: the activity API at {simulator.url}/v1/events answered 3 times "
        "with a body that is not a page of the contract (MALFORMED_PAGE_ATTEMPTS = 3); last "
        f"answer: HTTP 200, {answer}"
    )
    # one good page, then exactly the bounded attempts: not retried until the deadline
    assert len(simulator.requests) == 1 + MALFORMED_PAGE_ATTEMPTS


def test_a_server_that_always_closes_mid_page_ends_at_the_deadline_naming_it(api):
    simulator, client = api(FaultPlan(always="truncate"), DEADLINE_SECONDS="1")

    with pytest.raises(ActivityApiError) as caught:
        list(client.iter_events(START, END))

    message = str(caught.value)
    assert "exceeded the deadline of 1s (ACTIVITY_API_DEADLINE_SECONDS)" in message
    assert re.search(r"last error: ProtocolError: .*Connection broken: IncompleteRead\(\d+ bytes "
                     r"read, \d+ more expected\)", message), message
    assert set(statuses(simulator)) == {200} and len(simulator.requests) >= 3


def test_a_repeating_cursor_fails_naming_the_loop(api):
    simulator, client = api(FaultPlan({3: "repeat_cursor"}))
    received = []

    with pytest.raises(ActivityApiError) as caught:
        for page in client.iter_pages(START, END):
            received.append(page)

    assert re.fullmatch(rf"repeated cursor '[\w-]+' on page 3 of {WINDOW}: the API is looping",
                        str(caught.value))
    assert received == [CLEAN[:PAGE_SIZE], CLEAN[PAGE_SIZE:2 * PAGE_SIZE]]
    assert statuses(simulator) == [200, 200, 200]


def test_a_rejected_token_fails_at_once_naming_the_setting(api):
    simulator, client = api(token="expired-token")

    with pytest.raises(ActivityApiError) as caught:
        list(client.iter_events(START, END))

    assert str(caught.value) == (
        f"the activity API at {simulator.url}/v1/events rejected the token (HTTP 401: missing "
        "or invalid bearer token); check ACTIVITY_API_TOKEN"
    )
    assert statuses(simulator) == [401]
