"""The activity API client's pure parts: backoff, Retry-After, timestamps, page bodies."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

import pytest

from mage_project.sources.activity_api import (
    MalformedPage,
    backoff_delay,
    format_rfc3339,
    parse_page,
    parse_retry_after,
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
    ],
)
def test_a_body_that_is_not_a_page_is_malformed(body, problem):
    with pytest.raises(MalformedPage) as caught:
        parse_page(body)

    assert str(caught.value).startswith(problem)
