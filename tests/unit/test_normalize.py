"""Dropped files checked row by row: whatever the bytes, each row ends valid or rejected with its
reason, and only the header (or a ``freeze`` policy) fails a whole file."""

from __future__ import annotations

import csv
import gzip
import io
from dataclasses import replace

import pytest

from mage_project import normalize
from mage_project.entities import CRM_CUSTOMERS, DriftPolicy
from mage_project.landing import csv_line
from mage_project.normalize import UnreadableFile, normalize_file, visible

HEADER = "customer_id,email,full_name,country,signup_at,utm_campaign,updated_at\n"
TS = "2026-11-01T10:00:00Z"


def row(customer_id="1", email="ann@example.com", full_name="Ann", country="US", signup_at=TS,
        utm_campaign=None, updated_at=TS) -> str:
    return csv_line([customer_id, email, full_name, country, signup_at, utm_campaign, updated_at])


def check(tmp_path, data: bytes, entity=CRM_CUSTOMERS, name="f.csv"):
    """normalize_file on ``data``: (counts, valid rows as dicts, rejects as (row, reason, raw))."""
    source = tmp_path / name
    source.write_bytes(data)
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    counts = normalize_file(entity, source, name, 0, out)
    with open(counts.valid_path, encoding="utf-8", newline="") as f:
        valid = list(csv.DictReader(f))
    with open(counts.rejects_path, encoding="utf-8", newline="") as f:
        rejects = [(int(r["row_number"]), r["reason"], r["raw_line"]) for r in csv.DictReader(f)]
    assert (counts.valid, counts.rejected) == (len(valid), len(rejects))
    assert counts.valid + counts.rejected == counts.rows
    return counts, valid, rejects


def policy(**modes):
    return replace(CRM_CUSTOMERS, drift=DriftPolicy(**modes))


# --- poison rows: each one rejected with its reason, the rows around it load ------------------


def test_a_nul_byte_rejects_its_row_and_the_raw_line_shows_it_escaped(tmp_path):
    bad = row(customer_id="2", full_name="Bo\x00b \\ Li")
    counts, valid, rejects = check(tmp_path, (HEADER + row() + bad + row("3")).encode())
    assert [v["customer_id"] for v in valid] == ["1", "3"]
    assert rejects == [(2, "full_name contains a NUL character",
                        "2,ann@example.com,Bo\\x00b \\\\ Li,US,2026-11-01T10:00:00Z,,"
                        "2026-11-01T10:00:00Z")]


def test_a_row_that_is_not_utf8_is_rejected_naming_the_column_and_its_bytes(tmp_path):
    data = (HEADER + row() + row("2", full_name="Ren\xe9e")).encode("latin-1")
    counts, valid, rejects = check(tmp_path, data)
    assert [v["customer_id"] for v in valid] == ["1"]
    assert rejects == [(2, "full_name is not UTF-8: b'Ren\\xe9e'",
                        "2,ann@example.com,Ren\\xe9e,US,2026-11-01T10:00:00Z,,2026-11-01T10:00:00Z")]


def test_an_undecodable_byte_in_an_ignored_column_still_rejects_the_row(tmp_path):
    data = HEADER.rstrip("\n").encode() + b",extra\n" + row().rstrip("\n").encode() + b",\xff\n"
    _, valid, rejects = check(tmp_path, data)
    assert valid == [] and rejects[0][1] == "extra is not UTF-8: b'\\xff'"


def test_control_characters_other_than_nul_are_data(tmp_path):
    name = "".join(chr(c) for c in range(1, 32)) + "\x7f\u2028end"
    _, valid, rejects = check(tmp_path, (HEADER + row(full_name=name)).encode())
    assert rejects == [] and valid[0]["full_name"] == name


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain, \"quoted\" \\ text", "plain, \"quoted\" \\ text"),  # nothing to escape: as is
        ("a\x00b", "a\\x00b"),
        ("a\\b\x00", "a\\\\b\\x00"),  # once escaped, a backslash is doubled
        ("Ren\udce9e", "Ren\\xe9e"),  # an undecodable byte, as surrogateescape holds it
        ("lone \ud800", "lone \\ud800"),
        ("\x01\x1b\x7f", "\x01\x1b\x7f"),
    ],
)
def test_visible_escapes_nul_and_undecodable_bytes_only(text, shown):
    assert visible(text) == shown
    shown.encode("utf-8")  # storable as text in both warehouses


def test_a_field_over_the_limit_rejects_its_row_naming_the_column_and_its_size(
        tmp_path, monkeypatch):
    monkeypatch.setattr(normalize, "MAX_FIELD_BYTES", 100)
    big = "é" * 60  # 120 bytes
    _, valid, rejects = check(tmp_path, (HEADER + row() + row("2", full_name=big) + row("3")).encode())
    assert [v["customer_id"] for v in valid] == ["1", "3"]
    assert rejects[0][:2] == (2, "full_name is 120 bytes, over the 100-byte limit of a field")


def test_a_row_too_long_to_keep_is_rejected_with_a_truncated_raw_line(tmp_path, monkeypatch):
    monkeypatch.setattr(normalize, "MAX_FIELD_BYTES", 100)
    monkeypatch.setattr(normalize, "RAW_LINE_CHARS", 50)
    monkeypatch.setattr(normalize, "_CHUNK", 64)
    huge = row("2", full_name="x" * 5000)
    _, valid, rejects = check(tmp_path, (HEADER + row() + huge + row("3")).encode())
    assert [v["customer_id"] for v in valid] == ["1", "3"]
    (number, reason, raw), = rejects
    assert number == 2
    assert reason == (f"full_name is over the 100-byte limit of a field (the row is {len(huge)}"
                      " bytes)")
    assert raw == f"{huge[:50]} [... truncated: the row is {len(huge)} bytes]"


def test_a_quote_never_closed_rejects_the_rest_of_the_file_as_one_row(tmp_path):
    data = HEADER + row() + '2,a@example.com,"Ann\n3,b,c\n'
    _, valid, rejects = check(tmp_path, data.encode())
    assert [v["customer_id"] for v in valid] == ["1"]
    assert rejects == [(2, "is not valid CSV: a quoted field is not closed before the end of the"
                           " file", '2,a@example.com,"Ann\n3,b,c')]


def test_bad_quoting_rejects_its_row_only(tmp_path):
    bad = '2,"a@example.com"x,Ann,US,2026-11-01T10:00:00Z,,2026-11-01T10:00:00Z\n'
    _, valid, rejects = check(tmp_path, (HEADER + row() + bad + row("3")).encode())
    assert [v["customer_id"] for v in valid] == ["1", "3"]
    assert rejects[0][:2] == (2, "is not valid CSV: ',' expected after '\"'")


def test_ragged_and_blank_rows_are_rejected_with_their_field_count(tmp_path):
    data = HEADER + row() + "2,only,three\n" + "\n" + row("4").rstrip("\n") + ",one too many\n"
    _, valid, rejects = check(tmp_path, data.encode())
    assert [v["customer_id"] for v in valid] == ["1"]
    assert [r[:2] for r in rejects] == [(2, "has 3 fields, the header has 7"),
                                        (3, "has 0 fields, the header has 7"),
                                        (4, "has 8 fields, the header has 7")]


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_every_line_break_ends_a_row_and_quoted_ones_are_data(tmp_path, newline):
    lines = [HEADER, row(), row("2", full_name=f"two{newline}lines"), row("3")]
    data = "\ufeff" + "".join(line[:-1] + newline for line in lines)  # with a BOM
    _, valid, rejects = check(tmp_path, data.encode())
    assert rejects == []
    assert [(v["customer_id"], v["full_name"]) for v in valid] == [
        ("1", "Ann"), ("2", f"two{newline}lines"), ("3", "Ann")]


def test_rows_are_found_across_reads_of_any_size(tmp_path, monkeypatch):
    monkeypatch.setattr(normalize, "_CHUNK", 3)
    data = HEADER + row() + row("2", full_name='a "quoted"\r\nname,') + "\r\n" + row("3")
    _, valid, rejects = check(tmp_path, data.encode())
    assert [v["full_name"] for v in valid] == ["Ann", 'a "quoted"\r\nname,', "Ann"]
    assert rejects == [(3, "has 0 fields, the header has 7", "")]


# --- the header, and files that cannot be read at all ----------------------------------------


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", "the file is empty (0 bytes)"),
        (b"\xef\xbb\xbf", "the file has no header row"),
        (b"\n" + row().encode(), "the file has no header row"),
        (b"\xff\xfe" + HEADER.encode("utf-16-le"), "the file is UTF-16"),
        (HEADER.encode("utf-16-le"), "the header holds a NUL character (is the file UTF-16?)"),
        ("customer_id,emai\xe9\n".encode("latin-1"), "the header is not UTF-8: customer_id,emai\\xe9"),
        (b'"customer_id"x,email\n', "the header is not valid CSV"),
        (b"customer_id,customer_id\n", "the header repeats a column"),
        (b"customer_id,email\n1,a\n", "the header lacks ['full_name', 'country', 'signup_at',"),
    ],
)
def test_files_whose_header_cannot_be_read_are_unreadable(tmp_path, data, error):
    with pytest.raises(UnreadableFile) as raised:
        check(tmp_path, data)
    assert str(raised.value).startswith(error)


def test_a_header_only_file_has_no_rows(tmp_path):
    counts, valid, rejects = check(tmp_path, HEADER.encode())
    assert (counts.rows, valid, rejects, counts.notes) == (0, [], [], "")


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"not gzip", "the file is not valid gzip: Not a gzipped file"),
        (gzip.compress((HEADER + row() * 50).encode())[:-12],
         "the file is not valid gzip: Compressed file ended before the end-of-stream marker"),
    ],
    ids=["not-gzip", "truncated"],
)
def test_a_damaged_gzip_is_unreadable(tmp_path, data, error):
    with pytest.raises(UnreadableFile) as raised:
        check(tmp_path, data, name="f.csv.gz")
    assert str(raised.value).startswith(error)


def test_gzip_files_are_read_like_plain_ones(tmp_path):
    _, valid, _ = check(tmp_path, gzip.compress((HEADER + row() + row("2")).encode()),
                        name="f.csv.gz")
    assert [v["customer_id"] for v in valid] == ["1", "2"]


@pytest.mark.parametrize("out", ["missing", "a-file"])
def test_failing_to_write_the_work_files_is_not_the_files_fault(tmp_path, out):
    source = tmp_path / "f.csv"
    source.write_bytes((HEADER + row()).encode())
    target = tmp_path / out
    if out == "a-file":
        target.write_text("")
    with pytest.raises(OSError) as raised:
        normalize_file(CRM_CUSTOMERS, source, "f.csv", 0, target)
    assert not isinstance(raised.value, UnreadableFile)


# --- drift policies --------------------------------------------------------------------------

EXTRA = HEADER.rstrip("\n") + ",extra\n"
NO_UTM = "customer_id,email,full_name,country,signup_at,updated_at\n"


def extra_row(customer_id="1", extra="x"):
    return row(customer_id).rstrip("\n") + f",{extra}\n"


def no_utm_row(customer_id="1"):
    return f"{customer_id},ann@example.com,Ann,US,{TS},{TS}\n"


@pytest.mark.parametrize(
    ("modes", "data", "loaded", "rejected", "notes"),
    [
        ({"unknown_field": "discard_value"}, EXTRA + extra_row() + extra_row("2", ""),
         ["1", "2"], [], "unknown_field extra: ignored in 2 rows"),
        ({"unknown_field": "discard_row"}, EXTRA + extra_row() + extra_row("2"),
         [], [(1, "extra is not a declared column (unknown_field is discard_row)"),
              (2, "extra is not a declared column (unknown_field is discard_row)")],
         "unknown_field extra: 2 rows rejected"),
        ({"missing_field": "discard_value"}, NO_UTM + no_utm_row() + no_utm_row("2"),
         ["1", "2"], [], "missing_field utm_campaign: NULL in 2 rows"),
        ({"missing_field": "discard_row"}, NO_UTM + no_utm_row(),
         [], [(1, "utm_campaign is not in the file's header (missing_field is discard_row)")],
         "missing_field utm_campaign: 1 row rejected"),
        ({"wrong_type": "discard_row"}, HEADER + row() + row("2", country="usa"),
         ["1"], [(2, "country is not an ISO 3166 alpha-2 code: 'usa'")],
         "wrong_type country: 1 row rejected"),
        ({"wrong_type": "discard_value"},
         HEADER + row() + row("2", country="usa") + row("x3") + row("4", email=None, country="?"),
         ["1", "2", "4"], [(3, "customer_id is not an integer: 'x3'")],
         "wrong_type country: NULL in 2 rows; wrong_type customer_id: 1 row rejected"),
        ({"unknown_field": "discard_value"}, EXTRA, [], [], "unknown_field extra: ignored in 0 rows"),
    ],
    ids=["unknown-discard_value", "unknown-discard_row", "missing-discard_value",
         "missing-discard_row", "wrong_type-discard_row", "wrong_type-discard_value",
         "header-only-drift-is-noted"],
)
def test_drift_is_handled_by_the_entitys_policy_and_counted(tmp_path, modes, data, loaded,
                                                           rejected, notes):
    counts, valid, rejects = check(tmp_path, data.encode(), policy(**modes))
    assert [v["customer_id"] for v in valid] == loaded
    assert [r[:2] for r in rejects] == rejected
    assert counts.notes == notes


def test_a_value_of_the_wrong_type_under_discard_value_loads_as_null(tmp_path):
    _, valid, _ = check(tmp_path, (HEADER + row("2", country="usa")).encode(),
                        policy(wrong_type="discard_value"))
    assert valid[0]["country"] == "" and valid[0]["email"] == "ann@example.com"


def test_drift_counts_are_per_kind_and_column(tmp_path):
    data = EXTRA + extra_row() + row("2", country="usa").rstrip("\n") + ",y\n"
    counts, _, _ = check(tmp_path, data.encode(), policy(wrong_type="discard_value"))
    assert counts.drift == {"unknown_field": {"extra": 2}, "wrong_type": {"country": 1}}


@pytest.mark.parametrize(
    ("modes", "data", "error"),
    [
        ({"unknown_field": "freeze"}, EXTRA + extra_row(),
         "the header has the undeclared columns ['extra'] (it has ["),
        ({"missing_field": "freeze"}, NO_UTM + no_utm_row(), "the header lacks ['utm_campaign']"),
        ({"missing_field": "discard_value"}, "customer_id,email,full_name,country,signup_at\n",
         "the header lacks the required ['updated_at']"),
        ({"missing_field": "discard_row"}, "customer_id,email,full_name,country,updated_at\n",
         "the header lacks the required ['signup_at']"),
        ({"wrong_type": "freeze"}, HEADER + row() + row("2") + row("3", signup_at="yesterday"),
         "row 3: signup_at is not an RFC 3339 timestamp: 'yesterday' (wrong_type is freeze)"),
    ],
    ids=["unknown-freeze", "missing-freeze", "missing-required-discard_value",
         "missing-required-discard_row", "wrong_type-freeze"],
)
def test_freeze_and_missing_required_columns_fail_the_file_naming_them(tmp_path, modes, data,
                                                                       error):
    with pytest.raises(UnreadableFile) as raised:
        check(tmp_path, data.encode(), policy(**modes))
    assert str(raised.value).startswith(error)


def test_poison_rejects_the_row_whatever_the_policy(tmp_path):
    data = (HEADER + row(full_name="N\x00L") + row("2", full_name="Ren\xe9e")).encode("latin-1")
    _, valid, rejects = check(tmp_path, data, policy(wrong_type="freeze"))
    assert valid == []
    assert [r[1] for r in rejects] == ["full_name contains a NUL character",
                                       "full_name is not UTF-8: b'Ren\\xe9e'"]


# --- the record splitter and field parser against the csv module ------------------------------


@pytest.mark.parametrize(
    "text",
    ['a,b\n', 'a,"b,c"\r\n', '"a""b",c\n', '"multi\nline",x\r\n', ',,\n', '""\n', 'a"b,c\n',
     ' "a",b\n', '"a",\n', 'a\rb\r', 'x,"y\r\nz"', 'last,no,newline', '"\n"\n"\r"\r'],
)
def test_records_and_fields_are_the_csv_modules(text, monkeypatch):
    monkeypatch.setattr(normalize, "_CHUNK", 2)
    expected = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    records = list(normalize._Records(io.BytesIO(text.encode()), 1 << 20))
    assert [normalize._parse_fields(r.head.decode()) for r in records] == expected
    assert [normalize._fields(r.head.decode()) for r in records] == expected


def test_a_value_its_parser_cannot_take_is_of_the_wrong_type(tmp_path):
    digits = "9" * 5000  # int() refuses strings of more than 4300 digits
    _, valid, rejects = check(tmp_path, (HEADER + row(digits) + row("2")).encode())
    assert [v["customer_id"] for v in valid] == ["2"]
    # (validation's own reason once it stops calling int() on such strings)
    assert rejects[0][1] in (f"customer_id is not a valid bigint (ValueError): {digits[:40]!r}",
                             "customer_id is out of the bigint range")
