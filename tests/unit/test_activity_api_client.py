"""The activity API client's pure parts (backoff, Retry-After, timestamps, page bodies, reading a
body within the time left) and its deadline and malformed-page rules, driven over a scripted
transport on a clock the test moves."""

from __future__ import annotations

import dataclasses
import json
import random
from datetime import UTC, datetime, timedelta, timezone

import pytest
import requests
import requests.adapters

from mage_project.config import ActivityApiSettings
from mage_project.sources.activity_api import (
    MALFORMED_PAGE_ATTEMPTS,
    ActivityApiClient,
    ActivityApiError,
    BodyCut,
    MalformedPage,
    backoff_delay,
    excerpt,
    format_rfc3339,
    parse_page,
    parse_retry_after,
    read_body,
    request_timeouts,
)


class _Ceiling(random.Random):
    """Always draws the top of the range, so the bound itself can be asserted."""

    def uniform(self, a: float, b: float) -> float:
        return b


@pytest.mark.parametrize(
    ("attempt", "base", "cap", "ceiling"),
    [
        (0, 0.5, 60.0, 0.5),
        (1, 0.5, 60.0, 1.0),
        (3, 0.5, 60.0, 4.0),
        (6, 0.5, 60.0, 32.0),
        (7, 0.5, 60.0, 60.0),
        (5000, 0.5, 60.0, 60.0),
        (4, 0.0, 60.0, 0.0),
        (2, 1.0, 0.0, 0.0),
    ],
)
def test_backoff_ceiling_doubles_per_attempt_up_to_the_cap(attempt, base, cap, ceiling):
    assert backoff_delay(attempt, base, cap, _Ceiling()) == ceiling


@pytest.mark.parametrize(("attempt", "ceiling"), [(0, 0.5), (2, 2.0), (10, 8.0)])
def test_backoff_is_full_jitter_between_zero_and_the_ceiling(attempt, ceiling):
    rng = random.Random(42)
    delays = [backoff_delay(attempt, 0.5, 8.0, rng) for _ in range(2000)]

    assert min(delays) >= 0.0
    assert max(delays) <= ceiling
    # full jitter spreads over the whole range rather than clustering at the ceiling
    assert min(delays) < 0.05 * ceiling
    assert max(delays) > 0.95 * ceiling
    assert 0.4 * ceiling < sum(delays) / len(delays) < 0.6 * ceiling


def test_backoff_is_reproducible_with_a_seeded_rng():
    first = [backoff_delay(n, 0.5, 60.0, random.Random(7)) for n in range(5)]
    second = [backoff_delay(n, 0.5, 60.0, random.Random(7)) for n in range(5)]

    assert first == second


def test_backoff_rejects_a_negative_attempt():
    with pytest.raises(ValueError, match="attempt must be >= 0, got -1"):
        backoff_delay(-1, 0.5, 60.0, random.Random(0))


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("2", 2.0),
        ("0", 0.0),
        (" 7 ", 7.0),
        ("1.5", 1.5),
        ("120", 120.0),
    ],
)
def test_retry_after_in_seconds(header, seconds):
    assert parse_retry_after(header) == seconds


NOW = datetime(2015, 10, 21, 7, 27, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("Wed, 21 Oct 2015 07:28:00 GMT", 30.0),
        ("Wed, 21 Oct 2015 09:28:00 +0200", 30.0),
        ("Wed, 21 Oct 2015 07:28:00 -0000", 30.0),
        ("Wed, 21 Oct 2015 07:30:00 GMT", 150.0),
        ("Wed, 21 Oct 2015 07:27:30 GMT", 0.0),
        ("Tue, 20 Oct 2015 07:28:00 GMT", 0.0),  # already past: retry now
    ],
)
def test_retry_after_as_http_date_counts_from_now(header, seconds):
    assert parse_retry_after(header, now=NOW) == seconds


@pytest.mark.parametrize(
    "header",
    [None, "", "   ", "soon", "-1", "1e3", "nan", "inf", "1.2.3", "\u00b2", "Wed, 99 Foo 2015"],
)
def test_unreadable_retry_after_is_none(header):
    assert parse_retry_after(header, now=NOW) is None


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2026, 11, 1, 10, 0, tzinfo=UTC), "2026-11-01T10:00:00Z"),
        (datetime(2026, 11, 1, 12, 0, tzinfo=timezone(timedelta(hours=2))),
         "2026-11-01T10:00:00Z"),
        (datetime(2026, 11, 1, 0, 30, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
         "2026-11-01T06:00:00Z"),
        (datetime(2026, 11, 1, 10, 0, 0, 250000, tzinfo=UTC), "2026-11-01T10:00:00.250000Z"),
        (datetime(2026, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-1))),
         "2027-01-01T00:59:59Z"),
    ],
)
def test_window_bounds_are_sent_as_rfc3339_utc_with_z(moment, text):
    assert format_rfc3339(moment) == text


def test_naive_window_bounds_are_refused():
    with pytest.raises(ValueError, match="is naive; pass a timezone-aware datetime"):
        format_rfc3339(datetime(2026, 11, 1, 10, 0))


@pytest.mark.parametrize(
    ("body", "page"),
    [
        (b'{"data": [], "next_cursor": null}', ([], None)),
        (b'{"data": [{"event_id": "e1"}, 3], "next_cursor": "abc"}',
         ([{"event_id": "e1"}, 3], "abc")),
        (b'{"data": [], "next_cursor": null, "extra": 1}', ([], None)),
    ],
)
def test_page_body_gives_data_as_sent_and_the_cursor(body, page):
    assert parse_page(body) == page


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"<html>Bad gateway</html>", "body is not JSON"),
        (b'{"data": [1, 2], "next_cur', "body is not JSON"),
        (b"\xff\xfe", "body is not JSON"),
        (b"[]", "body is a JSON list, not an object"),
        (b'{"next_cursor": null}', "'data' is missing or not a list"),
        (b'{"data": {"a": 1}, "next_cursor": null}', "'data' is missing or not a list"),
        (b'{"data": []}', "'next_cursor' is missing"),
        (b'{"data": [], "next_cursor": 5}', "'next_cursor' is neither null nor a non-empty"),
        (b'{"data": [], "next_cursor": ""}', "'next_cursor' is neither null nor a non-empty"),
        (b'{"error": "quota exhausted"}', "an error object instead of a page"),
        (b'{"error": "quota exhausted", "next_cursor": null}', "an error object instead of"),
    ],
)
def test_a_body_that_is_not_a_page_is_malformed(body, problem):
    with pytest.raises(MalformedPage) as caught:
        parse_page(body)

    assert str(caught.value).startswith(problem)


@pytest.mark.parametrize(
    ("content", "text"),
    [
        (b'{"error": "quota exhausted"}', "quota exhausted"),
        (b'{"error": "' + b"x" * 300 + b'"}', "x" * 200),
        (b"<html>\n  <h1>502 Bad Gateway</h1>\n</html>", "<html> <h1>502 Bad Gateway</h1> </html>"),
        (b'{"data": [1, 2], "next_cur', '{"data": [1, 2], "next_cur'),
        (b"y" * 5000, "y" * 200 + "..."),
        (b"\xff\xfeok", "\ufffd\ufffdok"),
        (b"", "(empty body)"),
    ],
)
def test_excerpt_is_the_error_text_or_the_start_of_the_body(content, text):
    assert excerpt(content) == text


@pytest.mark.parametrize(
    ("left", "timeouts"),
    [(900.0, (5.0, 30.0)), (12.0, (5.0, 12.0)), (2.5, (2.5, 2.5)), (0.01, (0.01, 0.01))],
)
def test_request_timeouts_never_outlast_the_time_left(left, timeouts):
    assert request_timeouts(5.0, 30.0, left) == timeouts


class _Clock:
    """A monotonic clock that moves only when the test (or a fake read) moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class _Reads:
    """A body arriving ``step`` bytes every ``every`` seconds of the clock; ``read(wait)`` as
    one socket read with timeout ``wait`` behaves. Records each wait and the time left then."""

    def __init__(self, clock: _Clock, body: bytes, every: float, step: int = 1,
                 deadline: float | None = None) -> None:
        self.clock, self.body, self.every, self.step = clock, body, every, step
        self.deadline = deadline
        self.at = 0
        self.waits: list[tuple[float, float | None]] = []

    def __call__(self, wait: float) -> bytes:
        left = None if self.deadline is None else self.deadline - self.clock.now
        self.waits.append((wait, left))
        if self.at >= len(self.body):
            return b""
        if self.every > wait:
            self.clock.now += wait
            raise TimeoutError("timed out")
        self.clock.now += self.every
        chunk = self.body[self.at:self.at + self.step]
        self.at += len(chunk)
        return chunk


def test_a_prompt_body_is_read_whole():
    clock = _Clock()
    reads = _Reads(clock, b"0123456789", every=0.0, step=4)

    body = read_body(reads, lambda: 60.0, read_timeout=30.0)

    assert body == b"0123456789"
    assert [wait for wait, _ in reads.waits] == [30.0] * 4  # three chunks, then the end


def test_a_dripping_body_is_cut_when_the_time_is_up():
    clock = _Clock()
    deadline = clock.now + 4.5
    reads = _Reads(clock, b"x" * 1000, every=1.0, deadline=deadline)

    with pytest.raises(BodyCut) as caught:
        read_body(reads, lambda: deadline - clock.now, read_timeout=30.0)

    # one byte a second fits every read timeout: only the deadline stops it, half a second past
    # the fourth byte (the fifth read waits the half second that is left, in vain)
    assert (caught.value.received, caught.value.deadline) == (4, True)
    assert clock.now == deadline
    assert all(wait <= left for wait, left in reads.waits)
    assert [wait for wait, _ in reads.waits] == [4.5, 3.5, 2.5, 1.5, 0.5]


def test_a_stall_within_the_time_left_is_a_read_timeout_not_the_deadline():
    clock = _Clock()
    reads = _Reads(clock, b"abc", every=45.0)

    with pytest.raises(BodyCut) as caught:
        read_body(reads, lambda: 600.0, read_timeout=30.0)

    assert (caught.value.received, caught.value.waited, caught.value.deadline) == (0, 30.0, False)
    assert str(caught.value) == "no byte came for 30s after 0 bytes of the body"


def test_no_read_starts_once_the_time_is_up():
    reads = _Reads(_Clock(), b"abc", every=0.0)

    with pytest.raises(BodyCut, match="the deadline passed after 0 bytes"):
        read_body(reads, lambda: 0.0, read_timeout=30.0)

    assert reads.waits == []


def test_a_body_that_has_all_come_is_kept_although_the_time_is_up():
    clock = _Clock()
    deadline = clock.now + 3.0
    reads = _Reads(clock, b"abc", every=1.0)

    body = read_body(reads, lambda: deadline - clock.now, read_timeout=30.0,
                     complete=lambda: reads.at == len(reads.body))

    assert body == b"abc"
    assert clock.now == deadline
    assert len(reads.waits) == 3  # no read for the end: the body said it was whole


def test_reading_stops_at_the_limit():
    reads = _Reads(_Clock(), b"0123456789", every=0.0, step=4)

    assert read_body(reads, lambda: 60.0, read_timeout=30.0, limit=6) == b"012345"
    assert len(reads.waits) == 2


# --- the client over a scripted transport -----------------------------------------------------

API = "http://activity.test"
SETTINGS = ActivityApiSettings(
    url=API, token="t0ken", page_size=2, connect_timeout=5.0, read_timeout=30.0,
    deadline_seconds=60.0, max_pages=100, backoff_base=0.5, backoff_max=4.0,
)
START = datetime(2026, 11, 27, 8, tzinfo=UTC)
END = datetime(2026, 11, 27, 9, tzinfo=UTC)


def page(data: list, cursor: str | None) -> bytes:
    return json.dumps({"data": data, "next_cursor": cursor}).encode()


@dataclasses.dataclass
class Answer:
    status: int
    body: bytes
    every: float = 0.0  # seconds of the clock per byte; 0 sends the body in one read
    headers: dict = dataclasses.field(default_factory=dict)


class _Raw:
    """A streamed body as requests hands it on: ``read1`` moves the clock as the bytes come."""

    def __init__(self, clock: _Clock, answer: Answer) -> None:
        self.clock, self.answer, self.at = clock, answer, 0

    def read1(self, amt: int, decode_content: bool = True) -> bytes:
        body, every = self.answer.body, self.answer.every
        step = 1 if every else amt
        chunk = body[self.at:self.at + step]
        if chunk:
            self.clock.now += every
        self.at += len(chunk)
        return chunk

    def close(self) -> None:
        pass


class _Script(requests.adapters.BaseAdapter):
    """requests' transport, answering from a script instead of the network; records the
    ``(connect, read)`` timeout of each request and the time left when it was sent."""

    def __init__(self, clock: _Clock, answers: list[Answer], deadline: float) -> None:
        super().__init__()
        self.clock, self.answers, self.deadline = clock, list(answers), deadline
        self.sent: list[tuple[str, tuple[float, float], float]] = []
        self.began: float | None = None

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        assert stream, "the client must stream bodies to bound reading them"
        if self.began is None:
            self.began = self.clock.now
        left = self.deadline - (self.clock.now - self.began)
        self.sent.append((request.url, timeout, left))
        answer = self.answers.pop(0)
        response = requests.Response()
        response.status_code = answer.status
        response.headers.update(answer.headers)
        response.raw = _Raw(self.clock, answer)
        response.request, response.url = request, request.url
        return response

    def close(self) -> None:
        pass


def scripted(answers: list[Answer], **overrides) -> tuple[ActivityApiClient, _Script, _Clock]:
    clock = _Clock()
    settings = dataclasses.replace(SETTINGS, **overrides)
    script = _Script(clock, answers, settings.deadline_seconds)
    session = requests.Session()
    session.mount(API, script)
    client = ActivityApiClient(
        settings, session=session, sleep=clock.sleep,
        clock=clock, rng=random.Random(3),
    )
    return client, script, clock


ERROR_200 = Answer(200, b'{"error": "upstream query timed out"}')


def test_a_200_with_an_error_object_fails_after_the_bounded_attempts_naming_it():
    client, script, clock = scripted([ERROR_200] * 5)

    with pytest.raises(ActivityApiError) as caught:
        list(client.iter_events(START, END))

    assert MALFORMED_PAGE_ATTEMPTS == 3
    assert str(caught.value) == (
        "page 1 of 2026-11-27T08:00:00Z..2026-11-27T09:00:00Z: the activity API at "
        "http://activity.test/v1/events answered 3 times with a body that is not a page of the "
        "contract (MALFORMED_PAGE_ATTEMPTS = 3); last answer: HTTP 200, an error object instead "
        "of a page: upstream query timed out"
    )
    assert len(script.sent) == 3
    assert client.stats == {"requests": 3, "retries": 2, "pages": 0, "events": 0}
    # two backoffs of full jitter (0.5 s, then 1 s ceilings), far from the 60 s deadline
    assert 0 < clock.now - 1000.0 <= 1.5


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b"<html><h1>502 Bad Gateway</h1></html>",
         "body is not JSON: <html><h1>502 Bad Gateway</h1></html>"),
        (b'{"data": [{"event_id": "e1"}, {"ev', 'body is not JSON: {"data": [{"event_id": '
         '"e1"}, {"ev'),
        (b'{"data": {"event_id": "e1"}, "next_cursor": null}',
         "'data' is missing or not a list: {\"data\": {\"event_id\": \"e1\"}, "
         '"next_cursor": null}'),
    ],
)
def test_a_2xx_that_stays_no_page_fails_naming_what_came_back(body, said):
    client, script, _ = scripted([Answer(200, body)] * MALFORMED_PAGE_ATTEMPTS)

    with pytest.raises(ActivityApiError) as caught:
        list(client.iter_events(START, END))

    assert str(caught.value).endswith(f"last answer: HTTP 200, {said}")
    assert script.answers == []


def test_malformed_answers_between_good_pages_are_retried_and_lose_nothing():
    first = [{"event_id": "e1"}, {"event_id": "e2"}]
    second = [{"event_id": "e3"}]
    client, script, _ = scripted([
        Answer(200, page(first, "c1")),
        ERROR_200,
        Answer(200, b"<html>oops</html>"),  # the page's second malformed answer: still allowed
        Answer(200, page(second, None)),
    ])

    events = list(client.iter_events(START, END))

    assert events == first + second
    assert client.stats == {"requests": 4, "retries": 2, "pages": 2, "events": 3}
    assert [url.endswith("cursor=c1") for url, _, _ in script.sent] == [False, True, True, True]


def test_malformed_answers_are_counted_per_page():
    answers = []
    for n in range(4):  # each page answers badly twice before it comes
        answers += [ERROR_200, ERROR_200, Answer(200, page([{"event_id": f"e{n}"}],
                                                           f"c{n}" if n < 3 else None))]
    client, _, _ = scripted(answers)

    assert [e["event_id"] for e in client.iter_events(START, END)] == ["e0", "e1", "e2", "e3"]


def test_a_dripping_page_is_cut_at_the_deadline_naming_the_setting_and_the_page():
    body = page([{"event_id": "e3", "note": "x" * 200}], None)
    client, script, clock = scripted([
        Answer(200, page([{"event_id": "e1"}, {"event_id": "e2"}], "c1")),
        Answer(200, body, every=1.0),  # a byte a second: each read is prompt, the page is not
    ], deadline_seconds=20.0)
    received = []

    with pytest.raises(ActivityApiError) as caught:
        for events in client.iter_pages(START, END):
            received.append(events)
            clock.now += 5.0  # the consumer's time counts: the deadline is the fetch's

    assert received == [[{"event_id": "e1"}, {"event_id": "e2"}]]
    assert str(caught.value) == (
        "fetching 2026-11-27T08:00:00Z..2026-11-27T09:00:00Z exceeded the deadline of 20s "
        "(ACTIVITY_API_DEADLINE_SECONDS) while reading the body of page 2 (15 bytes received) "
        "(2 requests in this fetch)"
    )
    assert clock.now - 1000.0 == 20.0
    assert len(body) > 15


def test_each_request_is_timed_out_no_later_than_the_time_left():
    pages = [Answer(200, page([{"event_id": f"e{n}"}], f"c{n}"), every=0.01) for n in range(5)]
    pages.append(Answer(200, page([], None)))
    client, script, clock = scripted(pages, deadline_seconds=15.0)

    def slowly():
        for events in client.iter_pages(START, END):
            yield events
            clock.now += 2.0

    assert len(list(slowly())) == 6
    timeouts = [timeout for _, timeout, _ in script.sent]
    lefts = [left for _, _, left in script.sent]
    assert timeouts[0] == (5.0, 15.0)
    assert all(connect <= left and read <= left for (connect, read), left in zip(
        timeouts, lefts, strict=True))
    assert timeouts[-1] == pytest.approx((lefts[-1], lefts[-1])) and lefts[-1] < 5.0


def test_no_request_starts_once_the_fetch_is_out_of_time():
    client, script, clock = scripted([
        Answer(200, page([{"event_id": "e1"}], "c1")),
        Answer(200, page([], None)),
    ], deadline_seconds=30.0)
    pages = client.iter_pages(START, END)

    assert next(pages) == [{"event_id": "e1"}]
    clock.now += 31.0
    with pytest.raises(ActivityApiError, match=(
        r"exceeded the deadline of 30s \(ACTIVITY_API_DEADLINE_SECONDS\) before requesting "
        r"page 2 \(1 requests in this fetch\)"
    )):
        next(pages)
    assert len(script.sent) == 1


def test_an_error_status_names_the_servers_text_from_a_streamed_body():
    client, _, _ = scripted([
        Answer(401, b'{"error": "token expired"}', headers={"WWW-Authenticate": "Bearer"}),
    ])

    with pytest.raises(ActivityApiError) as caught:
        list(client.iter_events(START, END))

    assert str(caught.value) == (
        "the activity API at http://activity.test/v1/events rejected the token (HTTP 401: "
        "token expired); check ACTIVITY_API_TOKEN"
    )
