"""Record validation: every landed row ends valid (normalised) or rejected with its reason."""

import csv
import json
from datetime import UTC, datetime

import pytest

from mage_project.entities import USER_ACTIVITY
from mage_project.landing import csv_line
from mage_project.validation import landing_row, validate_file
from mage_project.windows import Window

WINDOW = Window(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC))

GOOD = {
    "event_id": "evt_1",
    "user_id": 42,
    "event_type": "purchase",
    "occurred_at": "2026-11-01T10:00:00+02:00",
    "session_id": "s1",
    "page_url": "https://shop.example.com/checkout",
    "properties": {"utm_campaign": "black_friday", "items": 2},
    "amount": 19.99,
    "unknown_extra": "ignored",
}


def _validate(tmp_path, records):
    src = tmp_path / "in.csv"
    with open(src, "w", encoding="utf-8", newline="") as f:
        f.write(csv_line(USER_ACTIVITY.column_names))
        for record in records:
            f.write(csv_line(landing_row(USER_ACTIVITY, record)))
    counts = validate_file(USER_ACTIVITY, src, "k/in.csv", 3, "run-1", WINDOW, tmp_path)
    with open(counts.valid_path, newline="") as f:
        valid = list(csv.DictReader(f))
    with open(counts.rejects_path, newline="") as f:
        rejects = list(csv.DictReader(f))
    return counts, valid, rejects


def test_clean_file_is_loaded_as_it_is(tmp_path):
    counts, valid, rejects = _validate(tmp_path, [GOOD, {**GOOD, "event_id": "evt_2"}])
    assert (counts.rows, counts.valid, counts.rejected) == (2, 2, 0)
    assert rejects == []
    assert counts.valid_path == str(tmp_path / "in.csv")
    assert [v["event_id"] for v in valid] == ["evt_1", "evt_2"]


def test_file_with_rejects_gets_a_copy_without_them_keeping_every_value(tmp_path):
    nulls = {**GOOD, "event_id": "evt_3", "session_id": None, "properties": None, "amount": None}
    counts, valid, _ = _validate(tmp_path, [GOOD, {**GOOD, "user_id": "x"}, nulls])
    assert counts.valid_path == str(tmp_path / "valid-00003.csv")
    assert [v["event_id"] for v in valid] == ["evt_1", "evt_3"]
    assert valid[0]["occurred_at"] == "2026-11-01T10:00:00+02:00"
    assert json.loads(valid[0]["properties"]) == {"utm_campaign": "black_friday", "items": 2}
    assert (valid[1]["session_id"], valid[1]["properties"], valid[1]["amount"]) == ("", "", "")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"event_id": None}, "event_id is missing"),
        ({"event_id": ""}, "event_id is missing"),
        ({"event_id": "   "}, "event_id is empty"),
        ({"user_id": "abc"}, "user_id is not an integer: 'abc'"),
        ({"user_id": 12.5}, "user_id is not an integer: '12.5'"),
        ({"user_id": 2**63}, "user_id is out of the bigint range"),
        ({"user_id": None}, "user_id is missing"),
        ({"event_type": None}, "event_type is missing"),
        ({"occurred_at": "2026-11-01T10:00:00"}, "occurred_at has no UTC offset"),
        ({"occurred_at": "not-a-time"}, "occurred_at is not an RFC 3339 timestamp"),
        ({"occurred_at": "2026-11-02T00:00:00Z"}, "occurred_at 2026-11-02T00:00:00Z is outside"),
        ({"occurred_at": "2026-02-30T10:00:00Z"}, "occurred_at is not an RFC 3339 timestamp"),
        ({"occurred_at": "20261101T100000Z"}, "occurred_at is not an RFC 3339 timestamp"),
        ({"amount": "ten"}, "amount is not a number: 'ten'"),
        ({"amount": "NaN"}, "amount is not a number"),
        ({"properties": [1, 2]}, "properties is not a JSON object but list"),
        ({"properties": "plain string"}, "properties is not valid JSON"),
        ({"properties": {"k": "\u0000"}}, "properties holds"),
        ({"page_url": "a\x00b"}, "page_url contains a NUL character"),
    ],
)
def test_bad_record_is_rejected_with_its_reason_and_raw_payload(tmp_path, change, reason):
    bad = {**GOOD, "event_id": "evt_2", **change}
    counts, valid, rejects = _validate(tmp_path, [GOOD, bad])
    assert (counts.rows, counts.valid, counts.rejected) == (2, 1, 1)
    assert [v["event_id"] for v in valid] == ["evt_1"]
    (reject,) = rejects
    assert reject["reason"].startswith(reason), reject["reason"]
    assert (reject["run_id"], reject["source_file"], reject["row_number"]) == ("run-1", "k/in.csv", "2")
    landed = [v or "" for v in landing_row(USER_ACTIVITY, bad)]
    assert json.loads(reject["raw_payload"]) == dict(zip(USER_ACTIVITY.column_names, landed, strict=False))


def test_non_object_record_is_rejected_with_its_payload(tmp_path):
    counts, valid, rejects = _validate(tmp_path, [42])
    assert counts.rejected == 1 and valid == []
    assert rejects[0]["reason"] == "event_id is missing"
    assert json.loads(rejects[0]["raw_payload"])["amount"] == "42"


def test_wrong_header_fails_clearly(tmp_path):
    src = tmp_path / "bad.csv"
    src.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="has header \\['a', 'b'\\], expected"):
        validate_file(USER_ACTIVITY, src, "bad.csv", 0, "r", WINDOW, tmp_path)
