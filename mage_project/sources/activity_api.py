"""The production client of the activity REST API.

It owns what talking to the API takes: the bearer token, timeouts, cursor pagination, retries
of transient failures (full-jitter exponential backoff that never waits less than the server's
``Retry-After``), a deadline for the whole fetch, and guards against a looping cursor or an
endless stream. It yields the API's records as sent; validating them is the next step's job.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import requests

from mage_project.config import ActivityApiSettings

log = logging.getLogger(__name__)

EVENTS_PATH = "/v1/events"
_EXCERPT_CHARS = 200


class ActivityApiError(RuntimeError):
    """The fetch cannot succeed: a rejected request, an exhausted deadline, a looping API."""


class MalformedPage(ValueError):
    """A 2xx answer whose body is not a page of the contract (treated as transient)."""


@dataclass
class _Fetch:
    """One ``iter_pages`` call: its window, its first request's clock, its counts."""

    window: str
    began: float | None = None
    requests: int = 0
    page: int = 0


class _Transient(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def format_rfc3339(value: datetime) -> str:
    """An aware datetime as RFC 3339 in UTC with ``Z``: ``2026-11-01T10:00:00Z``."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{value!r} is naive; pass a timezone-aware datetime")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or HTTP-date).

    ``None`` when the header is absent or unreadable; a date in the past gives 0.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.isascii() and text.replace(".", "", 1).isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" means UTC without saying where the sender is
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Full jitter: uniform in ``[0, min(cap, base * 2**attempt)]``; attempt 0 is the first retry."""
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt}")
    ceiling = cap if attempt >= 64 else min(cap, base * 2**attempt)
    return rng.uniform(0.0, max(0.0, ceiling))


def parse_page(content: bytes) -> tuple[list, str | None]:
    """``(data, next_cursor)`` of a page body; ``MalformedPage`` if it is not one."""
    try:
        body = json.loads(content)
    except ValueError:
        raise MalformedPage("body is not JSON") from None
    if not isinstance(body, dict):
        raise MalformedPage(f"body is a JSON {type(body).__name__}, not an object")
    data = body.get("data")
    if not isinstance(data, list):
        raise MalformedPage("'data' is missing or not a list")
    if "next_cursor" not in body:
        raise MalformedPage("'next_cursor' is missing")
    cursor = body["next_cursor"]
    if cursor is not None and (not isinstance(cursor, str) or not cursor):
        raise MalformedPage("'next_cursor' is neither null nor a non-empty string")
    return data, cursor


def _excerpt(response: requests.Response) -> str:
    """The server's ``error`` text if the body is the contract's error object, else its start."""
    try:
        body = json.loads(response.content)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"][:_EXCERPT_CHARS]
    text = " ".join(response.content.decode("utf-8", "replace").split())
    if len(text) > _EXCERPT_CHARS:
        text = text[:_EXCERPT_CHARS] + "..."
    return text or "(empty body)"


class ActivityApiClient:
    """Reads ``GET /v1/events`` page by page for a half-open ``[start, end)`` window."""

    def __init__(
        self,
        settings: ActivityApiSettings,
        *,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self._url = settings.url.rstrip("/") + EVENTS_PATH
        self._owns_session = session is None
        self._session = session if session is not None else requests.Session()
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()
        # Totals over the client's life, JSON-ready for run manifests.
        self.stats: dict[str, int] = {"requests": 0, "retries": 0, "pages": 0, "events": 0}

    def close(self) -> None:
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> ActivityApiClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def iter_events(self, start: datetime, end: datetime) -> Iterator[Any]:
        for page in self.iter_pages(start, end):
            yield from page

    def iter_pages(self, start: datetime, end: datetime) -> Iterator[list]:
        """Each page's ``data`` list as sent, until the API returns ``next_cursor: null``."""
        start_text, end_text = format_rfc3339(start), format_rfc3339(end)
        if end <= start:
            raise ValueError(f"empty window: end {end_text} is not after start {start_text}")
        return self._pages(start_text, end_text)

    def _pages(self, start: str, end: str) -> Iterator[list]:
        settings = self.settings
        fetch = _Fetch(window=f"{start}..{end}")
        seen: set[str] = set()
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"start": start, "end": end, "limit": settings.page_size}
            if cursor is not None:
                params["cursor"] = cursor
            fetch.page += 1
            data, next_cursor = self._fetch_page(params, fetch)
            self.stats["pages"] += 1
            self.stats["events"] += len(data)
            if next_cursor is not None:
                if next_cursor in seen:
                    raise ActivityApiError(
                        f"repeated cursor {next_cursor[:60]!r} on page {fetch.page} of "
                        f"{fetch.window}: the API is looping"
                    )
                seen.add(next_cursor)
            yield data
            if next_cursor is None:
                return
            if fetch.page >= settings.max_pages:
                raise ActivityApiError(
                    f"{fetch.window} needs more than {settings.max_pages} pages of "
                    f"{settings.page_size}; raise ACTIVITY_API_MAX_PAGES or fetch a smaller window"
                )
            cursor = next_cursor

    def _fetch_page(self, params: dict, fetch: _Fetch) -> tuple[list, str | None]:
        """One page, retrying transient failures until it comes or the deadline would pass."""
        settings = self.settings
        failures = 0
        while True:
            if fetch.began is None:
                fetch.began = self._clock()
            fetch.requests += 1
            self.stats["requests"] += 1
            try:
                return self._request(params)
            except _Transient as exc:
                failures += 1
                delay = backoff_delay(
                    failures - 1, settings.backoff_base, settings.backoff_max, self._rng
                )
                if exc.retry_after is not None:
                    delay = max(delay, exc.retry_after)
                elapsed = self._clock() - fetch.began
                if elapsed + delay > settings.deadline_seconds:
                    raise ActivityApiError(
                        f"fetching {fetch.window} exceeded the deadline of "
                        f"{settings.deadline_seconds:g}s (ACTIVITY_API_DEADLINE_SECONDS): "
                        f"page {fetch.page} failed after {failures} attempts "
                        f"({fetch.requests} requests in this fetch); last error: {exc.reason}"
                    ) from exc
                log.warning(
                    "activity API page %d of %s failed (%s); retry %d in %.2fs",
                    fetch.page, fetch.window, exc.reason, failures, delay,
                )
                self.stats["retries"] += 1
                self._sleep(delay)

    def _request(self, params: dict) -> tuple[list, str | None]:
        settings = self.settings
        try:
            response = self._session.get(
                self._url,
                params=params,
                headers={
                    "Authorization": f"Bearer {settings.token}",
                    "Accept": "application/json",
                },
                timeout=(settings.connect_timeout, settings.read_timeout),
            )
        except (
            requests.ConnectionError,
            requests.Timeout,
            requests.exceptions.ChunkedEncodingError,
            requests.exceptions.ContentDecodingError,
        ) as exc:
            raise _Transient(f"{type(exc).__name__}: {exc}") from exc

        status = response.status_code
        if status == 429 or 500 <= status <= 599:
            raise _Transient(
                f"HTTP {status}: {_excerpt(response)}",
                parse_retry_after(response.headers.get("Retry-After")),
            )
        if status == 401:
            raise ActivityApiError(
                f"the activity API at {self._url} rejected the token (HTTP 401: "
                f"{_excerpt(response)}); check ACTIVITY_API_TOKEN"
            )
        if status == 400:
            raise ActivityApiError(
                f"the activity API at {self._url} rejected the request (HTTP 400): "
                f"{_excerpt(response)}"
            )
        if not 200 <= status <= 299:
            raise ActivityApiError(
                f"the activity API at {self._url} answered HTTP {status}: {_excerpt(response)}"
            )
        try:
            return parse_page(response.content)
        except MalformedPage as exc:
            raise _Transient(f"malformed page (HTTP {status}): {exc}") from exc
