"""Properties of the file drops' load, over generated CSV files (hypothesis).

Files of every shape a foreign export job can produce: UTF-8 with or without a BOM, Latin-1
bytes, UTF-16; minimal or full quoting, quoted line breaks, ``\\n`` or ``\\r\\n`` line ends;
ragged rows, NUL and control characters, fields over the size limit, values of the wrong type,
extra and missing columns under every drift policy; empty files and random bytes; gzip.

- ``normalize_file`` never raises anything but UnreadableFile, and every data row ends valid or
  rejected (valid + rejected == rows, each reject with a reason); a valid row holds exactly the
  values the file held; a row that cannot be stored (NUL, not UTF-8, oversize) is rejected.
- The record splitter and field parser read what the csv module reads.
- Through the real PostgreSQL (``load_new_files``, 25 derandomized examples): no exception, and
  every row is in its raw table or in ``raw.load_rejects``, reconciling with ``ops.file_manifest``.

The size limits are shrunk here (a field of 200 bytes, reads of 37 bytes) so that oversize
fields, cut records and rows across reads come up in small files; test_poison_files.py loads a
real 10 MB field.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from unittest import mock

import pytest
from conftest import query
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mage_project import normalize
from mage_project.entities import DRIFT_MODES, FILE_ENTITIES, DriftPolicy
from mage_project.landing import LandingZone, csv_field
from mage_project.normalize import UnreadableFile, normalize_file
from mage_project.pipelines.file_drops import load_new_files

FIELD_LIMIT = 200

# --- generated files --------------------------------------------------------------------------

_VALID = {
    "key": st.from_regex(r"[a-z0-9_]{1,12}", fullmatch=True),
    "text": st.text(max_size=20),
    "bigint": st.integers(-(2**63), 2**63 - 1).map(str),
    "timestamptz": st.sampled_from(["2026-11-01T10:00:00Z", "2026-11-01T10:00:00.123+01:00",
                                    "2026-02-28 23:59:59-05:00"]),
    "decimal": st.sampled_from(["0", "12.5", "120.50", "9999999999999999.99"]),
    "positive_decimal": st.sampled_from(["0.01", "12.5", "120.50"]),
    "count": st.integers(0, 10**12).map(str),
    "date": st.sampled_from(["2026-11-01", "2024-02-29"]),
    "country": st.sampled_from(["US", "DE", "FR"]),
}
# Junk: what breaks types, quoting and encodings (no lone surrogates: a str cannot be UTF-8).
_JUNK_CHARS = st.one_of(
    st.sampled_from(list(',"\r\n\x00\x01\x1b\x7f\t \\.;é€\u2028\ufeff')),
    st.characters(blacklist_categories=("Cs",)),
)
_JUNK = st.one_of(
    st.text(_JUNK_CHARS, max_size=12),
    st.builds("{}\x00{}".format, st.text(max_size=4), st.text(max_size=4)),
    st.sampled_from(["", " ", "NULL", "1e5", "-0", "2026-13-01", "usa", "1.005", "abc"]),
    st.text(st.sampled_from("xé\"\n"), min_size=FIELD_LIMIT // 2, max_size=3 * FIELD_LIMIT),
)


def value_for(column) -> st.SearchStrategy[str]:
    valid = st.sampled_from(column.allowed) if column.allowed else _VALID[column.kind]
    return st.one_of(valid, valid, _JUNK)


@dataclass
class Drop:
    entity: object
    header: list[str]
    rows: list[list[str]]  # as the file holds them (decoded), ragged ones included
    encoding: str
    data: bytes
    gz: bool

    @property
    def name(self) -> str:
        return "f.csv.gz" if self.gz else "f.csv"


def render(fields: list[str], quote_all: bool, newline: str) -> str:
    quoted = ['"' + f.replace('"', '""') + '"' for f in fields] if quote_all \
        else [csv_field(f) for f in fields]
    return ",".join(quoted) + newline


@st.composite
def drops(draw, entity=None) -> Drop:
    entity = entity or draw(st.sampled_from(sorted(FILE_ENTITIES.values(), key=lambda e: e.table)))
    if draw(st.booleans()):  # half the files under a policy of any modes, half the default
        entity = replace(entity, drift=DriftPolicy(*(draw(st.sampled_from(DRIFT_MODES))
                                                     for _ in range(3))))
    columns = list(entity.columns)
    kept = draw(st.lists(st.sampled_from(columns), unique_by=lambda c: c.name, min_size=1)) \
        if draw(st.integers(0, 3)) == 0 else columns
    header = [c.name for c in kept] + (["extra"] if draw(st.booleans()) else [])
    order = draw(st.permutations(range(len(header))))
    header = [header[i] for i in order]
    by_name = {c.name: c for c in columns}
    rows = []
    for _ in range(draw(st.integers(0, 8))):
        fields = [draw(value_for(by_name[h]) if h in by_name else _JUNK) for h in header]
        if draw(st.integers(0, 9)) == 0:  # ragged
            fields = fields[:-1] if fields and draw(st.booleans()) else [*fields, "more"]
        rows.append(fields)
    quote_all, newline = draw(st.booleans()), draw(st.sampled_from(["\n", "\r\n"]))
    text = render(header, quote_all, newline) + "".join(render(r, quote_all, newline)
                                                         for r in rows)
    if rows and draw(st.booleans()):
        text = text[:-len(newline)]  # no line break after the last row
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-8-sig", "latin-1", "utf-16"]))
    if encoding == "latin-1":
        # Latin-1 bytes: rows with anything but ASCII are not UTF-8 any more.
        rows = [[f.encode("latin-1", "replace").decode("latin-1") for f in r] for r in rows]
        header = [h.encode("latin-1", "replace").decode("latin-1") for h in header]
        data = text.encode("latin-1", "replace")
    else:
        data = text.encode(encoding)
    gz = draw(st.booleans())
    return Drop(entity, header, rows, encoding, gzip.compress(data) if gz else data, gz)


@contextmanager
def small_limits():
    with (mock.patch.object(normalize, "MAX_FIELD_BYTES", FIELD_LIMIT),
          mock.patch.object(normalize, "RAW_LINE_CHARS", 300),
          mock.patch.object(normalize, "_CHUNK", 37)):
        yield


def normalized(drop: Drop):
    """normalize_file on the drop: (counts, valid rows, rejects), or the UnreadableFile."""
    with tempfile.TemporaryDirectory() as tmp, small_limits():
        source = Path(tmp) / drop.name
        source.write_bytes(drop.data)
        try:
            counts = normalize_file(drop.entity, source, drop.name, 0, Path(tmp))
        except UnreadableFile as exc:
            return exc
        with open(counts.valid_path, encoding="utf-8", newline="") as f:
            valid = list(csv.DictReader(f))
        with open(counts.rejects_path, encoding="utf-8", newline="") as f:
            rejects = list(csv.DictReader(f))
    return counts, valid, rejects


def poisoned(drop: Drop, fields: list[str]) -> bool:
    """A row that cannot load whatever its types: not UTF-8, a NUL, a field over the limit."""
    declared = set(drop.entity.column_names)
    return any(
        (drop.encoding == "latin-1" and not f.isascii())
        or len(f.encode("latin-1" if drop.encoding == "latin-1" else "utf-8")) > FIELD_LIMIT
        or ("\x00" in f and h in declared)
        for h, f in zip(drop.header, fields, strict=False)
    )


# --- properties of normalize_file -------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(drops())
def test_every_row_of_any_file_ends_valid_or_rejected_with_a_reason(drop):
    outcome = normalized(drop)
    if isinstance(outcome, UnreadableFile):
        # Only the header (or a freeze policy) fails a file; a UTF-16 file always does.
        assert str(outcome)
        event("file unreadable")
        return
    event("file read")
    assert drop.encoding != "utf-16"
    counts, valid, rejects = outcome
    assert counts.rows == len(drop.rows)
    assert counts.valid + counts.rejected == counts.rows
    assert (len(valid), len(rejects)) == (counts.valid, counts.rejected)
    numbers = sorted([int(v["_row_number"]) for v in valid] + [int(r["row_number"]) for r in rejects])
    assert numbers == list(range(1, counts.rows + 1))
    for r in rejects:
        assert r["reason"] and "\x00" not in r["raw_line"] and "\x00" not in r["reason"]
    header = [h.strip() for h in drop.header]
    for v in valid:
        source = dict(zip(header, drop.rows[int(v["_row_number"]) - 1], strict=True))
        for name in drop.entity.column_names:
            expected = source.get(name, "")
            # discard_value may load NULL (an empty field) for a value of the wrong type.
            assert v[name] == expected or (v[name] == "" and drop.entity.drift_policy.wrong_type ==
                                           "discard_value"), (name, v, source)
    rejected = {int(r["row_number"]) for r in rejects}
    for number, fields in enumerate(drop.rows, 1):
        if poisoned(drop, fields) or len(fields) != len(header):
            assert number in rejected, (number, fields)


@settings(max_examples=150, deadline=None)
@given(header=st.sampled_from(sorted(FILE_ENTITIES.values(), key=lambda e: e.table)),
       body=st.lists(st.binary(max_size=60), max_size=10),
       newline=st.sampled_from([b"\n", b"\r\n", b"\r"]))
def test_random_bytes_after_a_header_never_fail_the_file(header, body, newline):
    data = (",".join(header.column_names) + "\n").encode() + newline.join(body)
    drop = Drop(header, header.column_names, [], "bytes", data, False)
    outcome = normalized(drop)
    if isinstance(outcome, UnreadableFile):
        # The header is fine, so only a freeze policy could fail it, and FILE_DRIFT has none for
        # wrong types: nothing may.
        raise AssertionError(f"failed the file: {outcome}")
    counts, valid, rejects = outcome
    assert counts.valid + counts.rejected == counts.rows
    assert all(r["reason"] for r in rejects)
    body_text = data.split(b"\n", 1)[1].decode("utf-8", "surrogateescape")
    try:
        expected = list(csv.reader(io.StringIO(body_text, newline=""), strict=True))
    except csv.Error:
        return
    assert counts.rows == len(expected)


def test_an_empty_file_and_a_header_only_file(tmp_path):
    from mage_project.entities import CRM_CUSTOMERS

    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(UnreadableFile, match="the file is empty"):
        normalize_file(CRM_CUSTOMERS, empty, "empty.csv", 0, tmp_path)
    for name, data in (("h.csv", b"customer_id,email,full_name,country,signup_at,utm_campaign,"
                                 b"updated_at"),
                       ("h.csv.gz", gzip.compress(b""))):
        path = tmp_path / name
        path.write_bytes(data)
        if name.endswith(".gz"):
            with pytest.raises(UnreadableFile, match="the file has no header row"):
                normalize_file(CRM_CUSTOMERS, path, name, 0, tmp_path)
        else:
            assert normalize_file(CRM_CUSTOMERS, path, name, 0, tmp_path).rows == 0


# --- the record splitter and field parser are the csv module's ------------------------------

_CSV_TEXT = st.lists(st.sampled_from(['a', 'é', ',', '"', '""', '\n', '\r', '\r\n', ' ', '\x00']),
                     max_size=40).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=_CSV_TEXT, chunk=st.integers(1, 8))
def test_records_and_fields_are_those_the_csv_module_reads(text, chunk):
    with mock.patch.object(normalize, "_CHUNK", chunk):
        records = list(normalize._Records(io.BytesIO(text.encode()), 1 << 20))
    assert b"".join(r.head for r in records) == text.encode()
    ours = []
    for r in records:
        try:
            ours.append(None if r.unclosed else normalize._parse_fields(r.head.decode()))
        except normalize._BadCsv:
            ours.append(None)
    try:
        expected = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except csv.Error:
        assert None in ours  # the csv module refuses it: so do we, for some record
        return
    assert ours == expected


# --- through the real PostgreSQL ---------------------------------------------------------------

_keys = itertools.count(1)


@pytest.mark.integration
@settings(max_examples=25, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(drop=drops())
def test_any_file_loads_into_postgresql_with_every_row_accounted_for(warehouse, tmp_path_factory,
                                                                     monkeypatch, drop):
    # One warehouse and zone for all examples; each example drops a file under a new key.
    root = tmp_path_factory.getbasetemp() / "property-landing"
    monkeypatch.setenv("LANDING_URL", root.as_uri())
    monkeypatch.setitem(FILE_ENTITIES, drop.entity.landing_prefix(), drop.entity)
    n = next(_keys)
    key = f"{drop.entity.landing_prefix()}/2026-11-01/f{n:03d}.csv" + (".gz" if drop.gz else "")
    LandingZone(root.as_uri()).write_bytes(key, drop.data)
    with small_limits():
        summary = load_new_files(run_id=f"property-{n}")
    ((result),) = summary["files"]
    assert result["key"] == key and result["status"] in ("loaded", "failed"), result
    ((status, total, loaded, rejected, error, run_id),) = query(
        warehouse, "select status, rows_total, rows_loaded, rows_rejected, error, run_id"
                   " from ops.file_manifest where file_key = %s", (key,))
    assert (status, run_id) == (result["status"], f"property-{n}")
    event(f"file {status}")
    table = f"{drop.entity.schema}.{drop.entity.table}"
    (in_table,), = query(warehouse, f"select count(*) from {table} where _file_key = %s",  # noqa: S608
                         (key,))
    (in_rejects, unreasoned), = query(
        warehouse, "select count(*), count(*) filter (where reason = '') from raw.load_rejects"
                   " where file_key = %s", (key,))
    if status == "failed":
        assert error and (in_table, in_rejects) == (0, 0)
        return
    assert drop.encoding != "utf-16"
    assert total == len(drop.rows) == loaded + rejected
    assert (in_table, in_rejects, unreasoned) == (loaded, rejected, 0)


SHAPES = {
    "utf-16": lambda d: d.encoding == "utf-16",
    "latin-1 bytes": lambda d: d.encoding == "latin-1" and not d.data.isascii(),
    "bom": lambda d: d.encoding == "utf-8-sig",
    "gzip": lambda d: d.gz,
    "ragged": lambda d: any(len(r) != len(d.header) for r in d.rows),
    "nul": lambda d: any("\x00" in f for r in d.rows for f in r),
    "control characters": lambda d: any(c in f for r in d.rows for f in r for c in "\x01\x1b\x7f"),
    "oversize": lambda d: any(len(f) > FIELD_LIMIT for r in d.rows for f in r),
    "cut record": lambda d: any(len(f) > 2 * FIELD_LIMIT for r in d.rows for f in r),
    "quoted line break": lambda d: any("\n" in f for r in d.rows for f in r),
    "extra column": lambda d: "extra" in d.header,
    "missing column": lambda d: len(set(d.header) - {"extra"}) < len(d.entity.columns),
    "no rows": lambda d: not d.rows,
    "freeze": lambda d: "freeze" in (d.entity.drift_policy.unknown_field, d.entity.drift_policy.wrong_type),
}


def test_the_generator_makes_every_kind_of_file():
    """The properties above see every shape of file: 200 derandomized draws hold each."""
    seen: set[str] = set()

    @settings(max_examples=200, deadline=None, derandomize=True, database=None)
    @given(drops())
    def draw(drop):
        seen.update(name for name, shape in SHAPES.items() if shape(drop))

    draw()
    assert seen == set(SHAPES)
