"""The production client of the activity REST API.

It owns what talking to the API takes: the bearer token, timeouts, cursor pagination, retries
of transient failures (full-jitter exponential backoff that never waits less than the server's
``Retry-After``), a deadline for the whole fetch, and guards against a looping cursor or an
endless stream. It yields the API's records as sent; validating them is the next step's job.

The deadline holds inside a request too: bodies are read as they arrive, each socket read
waiting at most the time left, so a server that drips a byte a second is cut off when the
deadline passes instead of keeping the fetch alive. A 2xx answer that is not a page of the
contract is retried ``MALFORMED_PAGE_ATTEMPTS`` times at most, then fails naming what came back.
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
import urllib3.exceptions

from mage_project.config import ActivityApiSettings

log = logging.getLogger(__name__)

EVENTS_PATH = "/v1/events"
# Answers per page whose body is not a page of the contract before the fetch gives up: a proxy's
# hiccup passes on a retry, an API that keeps answering so will not pass by the deadline.
MALFORMED_PAGE_ATTEMPTS = 3
_EXCERPT_CHARS = 200
_READ_BYTES = 64 * 1024
_ERROR_BODY_BYTES = 16 * 1024  # of a non-2xx answer: enough for its error text


class ActivityApiError(RuntimeError):
    """The fetch cannot succeed: a rejected request, an exhausted deadline, a looping API."""


class MalformedPage(ValueError):
    """A 2xx answer whose body is not a page of the contract (retried a bounded number of times)."""


class BodyCut(Exception):
    """A body that stopped before its end: a read waited ``waited`` seconds in vain, or the
    deadline passed (``deadline``), after ``received`` bytes."""

    def __init__(self, received: int, waited: float, deadline: bool) -> None:
        what = "the deadline passed" if deadline else f"no byte came for {waited:g}s"
        super().__init__(f"{what} after {received} bytes of the body")
        self.received = received
        self.waited = waited
        self.deadline = deadline


@dataclass
class _Fetch:
    """One ``iter_pages`` call: its window, its first request's clock, its counts."""

    window: str
    began: float | None = None
    requests: int = 0
    page: int = 0
    failures: int = 0  # of the current page
    last_error: str | None = None  # of the current page


class _Transient(Exception):
    def __init__(
        self, reason: str, retry_after: float | None = None, malformed: bool = False
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.malformed = malformed


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
    if "data" not in body and "error" in body:
        raise MalformedPage("an error object instead of a page")
    data = body.get("data")
    if not isinstance(data, list):
        raise MalformedPage("'data' is missing or not a list")
    if "next_cursor" not in body:
        raise MalformedPage("'next_cursor' is missing")
    cursor = body["next_cursor"]
    if cursor is not None and (not isinstance(cursor, str) or not cursor):
        raise MalformedPage("'next_cursor' is neither null nor a non-empty string")
    return data, cursor


def excerpt(content: bytes) -> str:
    """The server's ``error`` text if the body is the contract's error object, else its start."""
    try:
        body = json.loads(content)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"][:_EXCERPT_CHARS]
    text = " ".join(content[: _EXCERPT_CHARS * 4].decode("utf-8", "replace").split())
    if len(text) > _EXCERPT_CHARS:
        text = text[:_EXCERPT_CHARS] + "..."
    return text or "(empty body)"


def request_timeouts(connect: float, read: float, time_left: float) -> tuple[float, float]:
    """``(connect, read)`` timeouts of one request: the settings', never past the time left."""
    return min(connect, time_left), min(read, time_left)


def read_body(
    read: Callable[[float], bytes],
    time_left: Callable[[], float],
    read_timeout: float,
    limit: int | None = None,
    complete: Callable[[], bool] = lambda: False,
) -> bytes:
    """A body read by ``read(wait)`` until it returns ``b""``, each wait at most the time left.

    ``read`` returns what one socket read brought, or raises ``TimeoutError`` when nothing came
    within ``wait`` seconds. Reading stops after ``limit`` bytes, if given. ``BodyCut`` when a read
    times out or the time is up, so a server that sends slowly but steadily cannot outlast it;
    a body that has all come (``complete()``, its Content-Length reached) is kept even then.
    """
    received = bytearray()
    while limit is None or len(received) < limit:
        left = time_left()
        if left <= 0:
            if complete():
                break
            raise BodyCut(len(received), 0.0, deadline=True)
        wait = min(read_timeout, left)
        try:
            chunk = read(wait)
        except TimeoutError:
            raise BodyCut(len(received), wait, deadline=left <= read_timeout) from None
        if not chunk:
            break
        received += chunk
    return bytes(received if limit is None else received[:limit])


def _read1(response: requests.Response, wait: float) -> bytes:
    """What one socket read of a streamed body brings (``b""`` at its end), waiting ``wait``."""
    raw = response.raw
    # requests applies its read timeout per socket read and only when the request starts;
    # setting it on the socket before each read is what keeps a read within the time left.
    sock = getattr(getattr(raw, "connection", None), "sock", None)
    if sock is not None:
        sock.settimeout(wait)
    try:
        # read1, not iter_content: iter_content fills each chunk with as many socket reads as it
        # takes, so a drip of one byte per read timeout would never time out. One read1 is one
        # socket read of a plain body; a chunk-size line or a gzip header may take a few, each
        # within this wait, so the deadline can be overrun by that much and no more.
        return raw.read1(_READ_BYTES, decode_content=True)
    except urllib3.exceptions.ReadTimeoutError as exc:
        raise TimeoutError(str(exc)) from exc


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
        fetch.failures, fetch.last_error = 0, None
        malformed = 0
        while True:
            if fetch.began is None:
                fetch.began = self._clock()
            if self._time_left(fetch) <= 0:
                if fetch.failures:  # the backoff's sleep overran what was left
                    raise self._gave_up(fetch)
                # the pages before, or whoever consumed them, took all the time
                raise self._out_of_time(fetch, f"before requesting page {fetch.page}")
            fetch.requests += 1
            self.stats["requests"] += 1
            if fetch.failures:
                self.stats["retries"] += 1
            try:
                return self._request(params, fetch)
            except _Transient as exc:
                fetch.failures += 1
                fetch.last_error = exc.reason
                if exc.malformed:
                    malformed += 1
                    if malformed >= MALFORMED_PAGE_ATTEMPTS:
                        raise ActivityApiError(
                            f"page {fetch.page} of {fetch.window}: the activity API at "
                            f"{self._url} answered {malformed} times with a body that is not "
                            f"a page of the contract (MALFORMED_PAGE_ATTEMPTS = "
                            f"{MALFORMED_PAGE_ATTEMPTS}); last answer: {exc.reason}"
                        ) from exc
                delay = backoff_delay(
                    fetch.failures - 1, settings.backoff_base, settings.backoff_max, self._rng
                )
                if exc.retry_after is not None:
                    delay = max(delay, exc.retry_after)
                # Strictly less: a retry needs some time left after the wait to be worth sending.
                if not delay < self._time_left(fetch):
                    raise self._gave_up(fetch) from exc
                log.warning(
                    "activity API page %d of %s failed (%s); retry %d in %.2fs",
                    fetch.page, fetch.window, exc.reason, fetch.failures, delay,
                )
                self._sleep(delay)

    def _gave_up(self, fetch: _Fetch) -> ActivityApiError:
        """No time is left for another attempt at the page."""
        return ActivityApiError(
            f"fetching {fetch.window} exceeded the deadline of "
            f"{self.settings.deadline_seconds:g}s (ACTIVITY_API_DEADLINE_SECONDS): "
            f"page {fetch.page} failed after {fetch.failures} attempts "
            f"({fetch.requests} requests in this fetch); last error: {fetch.last_error}"
        )

    def _time_left(self, fetch: _Fetch) -> float:
        assert fetch.began is not None
        return self.settings.deadline_seconds - (self._clock() - fetch.began)

    def _out_of_time(self, fetch: _Fetch, doing: str) -> ActivityApiError:
        """The time ran out in the middle of ``doing``."""
        before = (
            f"; page {fetch.page} had failed {fetch.failures} times before, last error: "
            f"{fetch.last_error}" if fetch.failures else ""
        )
        return ActivityApiError(
            f"fetching {fetch.window} exceeded the deadline of "
            f"{self.settings.deadline_seconds:g}s (ACTIVITY_API_DEADLINE_SECONDS) {doing} "
            f"({fetch.requests} requests in this fetch){before}"
        )

    def _request(self, params: dict, fetch: _Fetch) -> tuple[list, str | None]:
        settings = self.settings
        left = self._time_left(fetch)
        connect, read = request_timeouts(settings.connect_timeout, settings.read_timeout, left)
        try:
            response = self._session.get(
                self._url,
                params=params,
                headers={
                    "Authorization": f"Bearer {settings.token}",
                    "Accept": "application/json",
                },
                timeout=(connect, read),
                stream=True,
            )
        except requests.ConnectTimeout as exc:
            if left <= settings.connect_timeout:
                raise self._out_of_time(fetch, f"while connecting for page {fetch.page}") from exc
            raise _Transient(f"{type(exc).__name__}: {exc}") from exc
        except requests.ReadTimeout as exc:
            if left <= settings.read_timeout:
                raise self._out_of_time(
                    fetch, f"while waiting for the answer to page {fetch.page}"
                ) from exc
            raise _Transient(f"{type(exc).__name__}: {exc}") from exc
        except (
            requests.ConnectionError,
            requests.Timeout,
            requests.exceptions.ChunkedEncodingError,
            requests.exceptions.ContentDecodingError,
        ) as exc:
            raise _Transient(f"{type(exc).__name__}: {exc}") from exc
        try:
            return self._answer(response, fetch)
        finally:
            response.close()

    def _answer(self, response: requests.Response, fetch: _Fetch) -> tuple[list, str | None]:
        status = response.status_code
        if 200 <= status <= 299:
            content = self._body(response, fetch)
            try:
                return parse_page(content)
            except MalformedPage as exc:
                raise _Transient(
                    f"HTTP {status}, {exc}: {excerpt(content)}", malformed=True
                ) from exc
        try:
            said = excerpt(self._body(response, fetch, limit=_ERROR_BODY_BYTES))
        except _Transient as exc:
            said = f"(body unreadable: {exc.reason})"
        if status == 429 or 500 <= status <= 599:
            raise _Transient(
                f"HTTP {status}: {said}", parse_retry_after(response.headers.get("Retry-After"))
            )
        if status == 401:
            raise ActivityApiError(
                f"the activity API at {self._url} rejected the token (HTTP 401: "
                f"{said}); check ACTIVITY_API_TOKEN"
            )
        if status == 400:
            raise ActivityApiError(
                f"the activity API at {self._url} rejected the request (HTTP 400): {said}"
            )
        raise ActivityApiError(f"the activity API at {self._url} answered HTTP {status}: {said}")

    def _body(self, response: requests.Response, fetch: _Fetch, limit: int | None = None) -> bytes:
        """The answer's body, read within the read timeout and the time left."""
        try:
            return read_body(
                lambda wait: _read1(response, wait),
                lambda: self._time_left(fetch),
                self.settings.read_timeout,
                limit,
                # urllib3 closes its side once the last byte the headers announced has come
                getattr(response.raw, "isclosed", lambda: False),
            )
        except BodyCut as cut:
            if cut.deadline:
                raise self._out_of_time(
                    fetch,
                    f"while reading the body of page {fetch.page} "
                    f"({cut.received} bytes received)",
                ) from cut
            raise _Transient(f"page {fetch.page}'s body stalled: {cut}") from cut
        except (
            urllib3.exceptions.ProtocolError,
            urllib3.exceptions.DecodeError,
            urllib3.exceptions.SSLError,
        ) as exc:
            raise _Transient(f"{type(exc).__name__}: {exc}") from exc
