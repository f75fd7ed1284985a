"""Window logic: scheduled windows with lookback and gaps, explicit windows, the watermark."""

import time
from datetime import UTC, datetime, timedelta

import pytest

from mage_project.windows import Window, days, next_watermark, parse_bound, scheduled_window


def at(day, hour=0):
    return datetime(2026, 11, day, hour, tzinfo=UTC)


def test_first_scheduled_run_covers_the_previous_day():
    assert scheduled_window(at(5, 2), None, timedelta(days=1)) == Window(at(4), at(5))


def test_scheduled_run_reaches_back_by_the_lookback():
    assert scheduled_window(at(5, 2), at(5), timedelta(days=1)) == Window(at(4), at(5))


def test_after_downtime_the_window_covers_the_whole_gap():
    assert scheduled_window(at(9, 2), at(3), timedelta(days=1)) == Window(at(2), at(9))


def test_no_window_when_nothing_new():
    assert scheduled_window(at(5, 2), at(5), timedelta(0)) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-01", at(1)),
        ("2026-11-01T10:00:00Z", at(1, 10)),
        ("2026-11-01T12:00:00+02:00", at(1, 10)),
        ("2026-11-01T10:00:00", at(1, 10)),
    ],
)
def test_parse_bound(text, expected):
    assert parse_bound(text) == expected


def test_parse_bound_rejects_garbage():
    with pytest.raises(ValueError, match="neither a date"):
        parse_bound("yesterday")


def test_days_cut_at_utc_midnight():
    assert days(Window(at(1, 20), at(3, 5))) == [
        Window(at(1, 20), at(2)), Window(at(2), at(3)), Window(at(3), at(3, 5))
    ]


@pytest.mark.parametrize(
    ("current", "window", "expected"),
    [
        (None, Window(at(1), at(3)), at(3)),
        (at(2), Window(at(1), at(3)), at(3)),   # overlaps: advances
        (at(3), Window(at(3), at(4)), at(4)),   # contiguous: advances
        (at(5), Window(at(1), at(3)), at(5)),   # backfill of the past: never backwards
        (at(3), Window(at(6), at(7)), at(3)),   # leaves a gap: does not jump over it
    ],
)
def test_next_watermark(current, window, expected):
    assert next_watermark(current, window) == expected



def test_a_naive_execution_date_is_local_time_in_the_notebook_and_utc_in_a_pipeline_run(monkeypatch):
    from mage_project.runs import execution_date_for

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        naive = datetime(2026, 11, 1, 22, 30)  # 22:30 in New York (EST after the DST end) is 03:30 UTC
        assert execution_date_for({"execution_date": naive}) == datetime(2026, 11, 2, 3, 30, tzinfo=UTC)
        assert execution_date_for({"execution_date": naive, "pipeline_run_id": 7}) == naive
        assert execution_date_for({"execution_date": naive, "run_id": "r"}) == naive
        aware = datetime(2026, 11, 1, 22, 30, tzinfo=UTC)
        assert execution_date_for({"execution_date": aware}) == aware
        assert execution_date_for({}) is None
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
