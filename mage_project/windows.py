"""Which window of time a run covers, in UTC.

A scheduled run covers ``[watermark - lookback, start of its execution day)``: the lookback
catches late events, and after downtime the window reaches back to the watermark, so the gap is
covered. An explicit window runs exactly that window.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime

    def __post_init__(self):
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("window bounds must be timezone-aware")
        if self.end <= self.start:
            raise ValueError(f"empty window: end {self.end} is not after start {self.start}")


def parse_bound(text: str) -> datetime:
    """A window bound from the command line: a date (midnight UTC) or an RFC 3339 datetime.

    A datetime without an offset is taken as UTC.
    """
    text = text.strip()
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(0), tzinfo=UTC)
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a date (YYYY-MM-DD) nor an RFC 3339 datetime"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def as_utc(value) -> datetime:
    """A datetime (naive means UTC) or a string bound, as an aware UTC datetime."""
    if isinstance(value, str):
        return parse_bound(value)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def start_of_day(at: datetime) -> datetime:
    at = as_utc(at)
    return datetime.combine(at.date(), time(0), tzinfo=UTC)


def scheduled_window(
    execution_date: datetime, watermark: datetime | None, lookback: timedelta
) -> Window | None:
    """The window of a scheduled run, or None when there is nothing to fetch yet.

    With no watermark (the first run), the window is the day before the execution day.
    """
    end = start_of_day(execution_date)
    start = (watermark - lookback) if watermark is not None else end - timedelta(days=1)
    start = as_utc(start)
    if start >= end:
        return None
    return Window(start, end)


def explicit_window(start, end) -> Window:
    return Window(as_utc(start), as_utc(end))


def days(window: Window) -> list[Window]:
    """The window cut at UTC midnights: one piece per landing partition."""
    pieces = []
    cursor = window.start
    while cursor < window.end:
        next_day = start_of_day(cursor) + timedelta(days=1)
        piece_end = min(next_day, window.end)
        pieces.append(Window(cursor, piece_end))
        cursor = piece_end
    return pieces


def next_watermark(current: datetime | None, window: Window) -> datetime | None:
    """The watermark after ``window`` has been loaded.

    It only advances over contiguous loaded time: a window that starts after the current
    watermark leaves a gap, so it does not move it; nor does a window that ends before it.
    """
    if current is None or window.start <= current:
        return max(filter(None, [current, window.end]))
    return current
