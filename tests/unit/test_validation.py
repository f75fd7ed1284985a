"""Record validation: every landed record ends valid or rejected with its reason, read from the
record as the API sent it (``_record``), its drift handled by the entity's policy."""

import csv
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mage_project.entities import USER_ACTIVITY, DriftPolicy
from mage_project.landing import csv_line
from mage_project.validation import (
    SchemaFrozen,
    landing_header,
    landing_row,
    merge_drift,
    validate_file,
)
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
}


def _landing(tmp_path, records):
    src = tmp_path / "in.csv"
    # As the landing zone writes: a lone surrogate stays visible as its JSON escape.
    with open(src, "w", encoding="utf-8", errors="backslashreplace", newline="") as f:
        f.write(csv_line(landing_header(USER_ACTIVITY)))
        for record in records:
            f.write(csv_line(landing_row(USER_ACTIVITY, record)))
    return src


def _validate(tmp_path, records, entity=USER_ACTIVITY):
    src = _landing(tmp_path, records)
    counts = validate_file(entity, src, "k/in.csv", 3, "run-1", WINDOW, tmp_path)
    with open(counts.valid_path, newline="") as f:
        valid = list(csv.DictReader(f))
    with open(counts.rejects_path, newline="") as f:
        rejects = list(csv.DictReader(f))
    return counts, valid, rejects


def test_landing_row_keeps_the_record_as_sent_beside_its_declared_fields(tmp_path):
    sent = {**GOOD, "user_id": "42", "properties": '{"a":1}', "extra": [1, {"b": None}]}
    row = landing_row(USER_ACTIVITY, sent)
    assert landing_header(USER_ACTIVITY)[-1] == "_record"
    assert json.loads(row[-1]) == sent
    assert list(json.loads(row[-1])) == list(sent)  # keys in the order sent
    assert row[1] == "42" and row[6] == '{"a":1}'
    src = _landing(tmp_path, [sent, "oops", 42, [1, 2], None])
    with open(src, newline="") as f:
        records = [json.loads(r["_record"]) for r in csv.DictReader(f)]
    assert records == [sent, "oops", 42, [1, 2], None]


def test_valid_records_keep_every_declared_value(tmp_path):
    nulls = {**GOOD, "event_id": "evt_2", "session_id": None, "properties": None, "amount": None}
    counts, valid, rejects = _validate(tmp_path, [GOOD, nulls])
    assert (counts.rows, counts.valid, counts.rejected) == (2, 2, 0)
    assert rejects == [] and counts.drift == {}
    assert counts.valid_path == str(tmp_path / "valid-00003.csv")
    assert list(valid[0]) == USER_ACTIVITY.column_names  # no _record: the file is COPY'd
    assert valid[0]["occurred_at"] == "2026-11-01T10:00:00+02:00"
    assert json.loads(valid[0]["properties"]) == {"utm_campaign": "black_friday", "items": 2}
    assert (valid[0]["user_id"], valid[0]["amount"]) == ("42", "19.99")
    assert (valid[1]["session_id"], valid[1]["properties"], valid[1]["amount"]) == ("", "", "")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"event_id": None}, "event_id is null"),
        ({"event_id": ""}, "event_id is empty"),
        ({"event_id": "   "}, "event_id is empty"),
        ({"event_id": 17}, "event_id is a JSON integer, not string: 17"),
        ({"user_id": "42"}, 'user_id is a JSON string, not integer: "42"'),
        ({"user_id": "abc"}, 'user_id is a JSON string, not integer: "abc"'),
        ({"user_id": 12.5}, "user_id is a JSON number, not integer: 12.5"),
        ({"user_id": 42.0}, "user_id is a JSON number, not integer: 42.0"),
        ({"user_id": True}, "user_id is a JSON boolean, not integer: true"),
        ({"user_id": 2**63}, "user_id is out of the bigint range"),
        ({"user_id": None}, "user_id is null"),
        ({"event_type": ""}, "event_type is empty"),
        ({"occurred_at": "2026-11-01T10:00:00"}, "occurred_at has no UTC offset"),
        ({"occurred_at": "not-a-time"}, "occurred_at is not an RFC 3339 timestamp"),
        ({"occurred_at": 1793527200}, "occurred_at is a JSON integer, not string"),
        ({"occurred_at": "2026-11-02T00:00:00Z"}, "occurred_at 2026-11-02T00:00:00Z is outside"),
        ({"occurred_at": "2026-02-30T10:00:00Z"}, "occurred_at is not an RFC 3339 timestamp"),
        ({"amount": "ten"}, 'amount is a JSON string, not integer or number: "ten"'),
        ({"amount": "19.99"}, 'amount is a JSON string, not integer or number: "19.99"'),
        ({"amount": float("nan")}, "amount is not a finite number below 1e28: NaN"),
        ({"amount": 1e30}, "amount is not a finite number below 1e28"),
        ({"properties": [1, 2]}, "properties is a JSON array, not object: [1,2]"),
        ({"properties": '{"a":1}'}, 'properties is a JSON string, not object'),
        ({"properties": {"k": "\u0000"}}, "properties holds a NUL character"),
        ({"page_url": "a\x00b"}, "page_url contains a NUL character"),
        ({"session_id": "\ud800"}, "session_id holds a lone surrogate"),
    ],
)
def test_bad_record_is_rejected_with_its_reason_and_the_json_as_sent(tmp_path, change, reason):
    bad = {**GOOD, "event_id": "evt_2", **change}
    counts, valid, rejects = _validate(tmp_path, [GOOD, bad])
    assert (counts.rows, counts.valid, counts.rejected) == (2, 1, 1)
    assert [v["event_id"] for v in valid] == ["evt_1"]
    (reject,) = rejects
    assert reject["reason"].startswith(reason), reject["reason"]
    assert (reject["run_id"], reject["source_file"], reject["row_number"]) == ("run-1", "k/in.csv", "2")
    assert reject["raw_payload"] == landing_row(USER_ACTIVITY, bad)[-1].replace("\ud800", "\\ud800")


@pytest.mark.parametrize(
    ("record", "reason"),
    [("oops", "the record is a JSON string, not an object"),
     (42, "the record is a JSON integer, not an object"),
     ([1, 2], "the record is a JSON array, not an object"),
     (None, "the record is a JSON null, not an object")],
)
def test_a_record_that_is_not_an_object_is_rejected_as_such(tmp_path, record, reason):
    counts, valid, rejects = _validate(tmp_path, [record])
    assert (counts.valid, counts.rejected, valid) == (0, 1, [])
    assert rejects[0]["reason"] == reason
    assert json.loads(rejects[0]["raw_payload"]) == record


def test_missing_and_empty_keys_are_two_distinct_rejects(tmp_path):
    missing = {k: v for k, v in GOOD.items() if k != "event_id"}
    empty = {**GOOD, "event_id": ""}
    _, _, rejects = _validate(tmp_path, [missing, empty])
    assert [r["reason"] for r in rejects] == ["event_id is missing", "event_id is empty"]
    assert rejects[0]["raw_payload"] != rejects[1]["raw_payload"]


def test_empty_optional_text_is_stored_as_null(tmp_path):
    counts, _, _ = _validate(tmp_path, [{**GOOD, "session_id": ""}, {**GOOD, "event_id": "evt_2"}])
    lines = Path(counts.valid_path).read_text().splitlines()
    # COPY's CSV: an unquoted empty field is NULL, a quoted one ("") an empty string.
    assert lines[1].startswith("evt_1,42,purchase,2026-11-01T10:00:00+02:00,,https://")
    assert lines[2].startswith("evt_2,42,purchase,2026-11-01T10:00:00+02:00,s1,https://")


def test_default_policy_loads_unknown_fields_and_missing_optional_ones_counting_the_drift(tmp_path):
    extra = {**GOOD, "event_id": "evt_2", "utm": "x", "device": "ios"}
    missing = {k: v for k, v in GOOD.items() if k not in ("session_id", "amount")} | {"event_id": "evt_3"}
    wrong = {**GOOD, "event_id": "evt_4", "user_id": "7"}
    counts, valid, rejects = _validate(tmp_path, [extra, missing, wrong, {**extra, "event_id": "evt_5"}])
    assert [v["event_id"] for v in valid] == ["evt_2", "evt_3", "evt_5"]
    assert (valid[1]["session_id"], valid[1]["amount"]) == ("", "")
    assert [r["reason"][:25] for r in rejects] == ['user_id is a JSON string,']
    assert counts.drift == {"unknown_field": {"utm": 2, "device": 2},
                            "missing_field": {"session_id": 1, "amount": 1},
                            "wrong_type": {"user_id": 1}}


@pytest.mark.parametrize("kind", ["unknown_field", "missing_field", "wrong_type"])
def test_freeze_fails_naming_the_field(tmp_path, kind):
    entity = replace(USER_ACTIVITY, drift=replace(USER_ACTIVITY.drift_policy, **{kind: "freeze"}))
    record = {"unknown_field": {**GOOD, "utm": "x"},
              "missing_field": {k: v for k, v in GOOD.items() if k != "page_url"},
              "wrong_type": {**GOOD, "amount": "1.00"}}[kind]
    field_name = {"unknown_field": "utm", "missing_field": "page_url", "wrong_type": "amount"}[kind]
    with pytest.raises(SchemaFrozen, match=rf"{field_name}.*record 2 of k/in.csv.*{kind}=freeze"):
        _validate(tmp_path, [GOOD, record], entity)


def test_discard_row_rejects_unknown_and_missing_fields(tmp_path):
    entity = replace(USER_ACTIVITY, drift=DriftPolicy(unknown_field="discard_row",
                                                      missing_field="discard_row"))
    missing = {k: v for k, v in GOOD.items() if k != "page_url"} | {"event_id": "evt_3"}
    counts, valid, rejects = _validate(tmp_path, [GOOD, {**GOOD, "event_id": "evt_2", "utm": 1}, missing],
                                       entity)
    assert [v["event_id"] for v in valid] == ["evt_1"]
    assert [r["reason"] for r in rejects] == ["has the undeclared field 'utm'", "page_url is missing"]


def test_discard_value_nulls_an_optional_value_of_the_wrong_type_and_rejects_a_required_one(tmp_path):
    entity = replace(USER_ACTIVITY, drift=DriftPolicy(wrong_type="discard_value"))
    counts, valid, rejects = _validate(
        tmp_path, [{**GOOD, "amount": "19.99"}, {**GOOD, "event_id": "evt_2", "user_id": "42"}], entity)
    assert [(v["event_id"], v["amount"]) for v in valid] == [("evt_1", "")]
    assert [r["reason"][:26] for r in rejects] == ["user_id is a JSON string, "]
    assert counts.drift == {"wrong_type": {"amount": 1, "user_id": 1}}


def test_drift_of_several_files_is_summed():
    from mage_project.validation import FileCounts

    a = FileCounts(key="a", drift={"unknown_field": {"x": 2}})
    b = FileCounts(key="b", drift={"unknown_field": {"x": 1, "y": 1}, "wrong_type": {"amount": 3}})
    assert merge_drift([a, b]) == {"unknown_field": {"x": 3, "y": 1}, "wrong_type": {"amount": 3}}


def test_wrong_header_fails_clearly(tmp_path):
    src = tmp_path / "bad.csv"
    src.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="has header \\['a', 'b'\\], expected"):
        validate_file(USER_ACTIVITY, src, "bad.csv", 0, "r", WINDOW, tmp_path)


def test_integers_past_64_bits_keep_every_digit(tmp_path):
    record = {**GOOD, "properties": {"order": 2**70, "n": -(2**65)}}
    counts, valid, _ = _validate(tmp_path, [record])
    assert counts.valid == 1
    assert json.loads(valid[0]["properties"]) == {"order": 2**70, "n": -(2**65)}
    big = {**GOOD, "event_id": "evt_big", "amount": 2**65}
    counts, valid, rejects = _validate(tmp_path, [big, -(2**63) - 1])
    assert valid[0]["amount"] == str(2**65)
    assert rejects[0]["reason"] == "the record is a JSON integer, not an object"


@pytest.mark.parametrize("session_id", [
    "plain", " padded", "padded ", "a\rb", "a\r\nb", 'say "hi"', "a,b", "\u2028x", "x\xa0",
    "é", "a\nb",
])
def test_the_valid_file_quotes_every_cell_as_the_landing_csv_does(tmp_path, session_id):
    # Cells of free text with a carriage return or padding are quoted (COPY and every CSV
    # reader then keep them as they are); the C writer writes the rest the same way.
    record = {**GOOD, "session_id": session_id}
    counts, valid, _ = _validate(tmp_path, [record])
    assert valid[0]["session_id"] == session_id
    cells = [valid[0][name] or None for name in USER_ACTIVITY.column_names]
    lines = Path(counts.valid_path).read_bytes().decode("utf-8")
    assert lines == csv_line(USER_ACTIVITY.column_names) + csv_line(cells)


def test_api_records_are_held_to_a_columns_allowed_values_as_file_rows_are(tmp_path):
    """One value check for both paths (validation.value_check): an API entity whose column
    declares allowed values rejects a record outside them, naming the column and the value."""
    enum = replace(USER_ACTIVITY, columns=tuple(
        replace(c, kind="enum", allowed=("page_view", "purchase")) if c.name == "event_type" else c
        for c in USER_ACTIVITY.columns))
    counts, valid, rejects = _validate(tmp_path, [GOOD, {**GOOD, "event_id": "evt_2",
                                                         "event_type": "refund"}], entity=enum)
    assert (counts.valid, counts.rejected) == (1, 1)
    assert [v["event_id"] for v in valid] == ["evt_1"]
    assert rejects[0]["reason"] == "event_type is not one of ['page_view', 'purchase']: 'refund'"
