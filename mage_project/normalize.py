"""Dropped CSV files checked row by row against their entity's declared columns.

Files dropped by other systems (``warehouse_elt``) are not trusted to be anything: whatever
bytes a file holds, each of its rows ends in the valid file or in the rejects file with a
reason, and the only thing that fails a whole file is its header (or a drift policy of
``freeze``). That is what keeps one bad export from blocking a pipeline.

Reading. The file is read as bytes (``.gz`` decompressed), in chunks of 1 MiB, and split into
records by the rules of the csv module (RFC 4180 quoting, strict): a record ends at a line
break (``\\r\\n``, ``\\n`` or ``\\r``) outside quotes. Each record is then decoded on its own as
UTF-8, so an undecodable byte rejects its row only ("is not UTF-8"), and split into fields. A
UTF-8 BOM is skipped; a UTF-16 file (one that starts with a UTF-16 BOM) fails as a whole, since
the drops are UTF-8. A record is kept in memory up to a bound (about two field limits per header
column), so a field of any size, even a quote never closed, costs bounded memory.

What a row must be to load: as many fields as the header; no field over MAX_FIELD_BYTES
(``<column> is <n> bytes, over the <limit>-byte limit of a field``); every field valid UTF-8; no
NUL in a declared column (PostgreSQL text cannot hold one); each declared value of its type.
Those poison checks reject the row whatever the drift policy. Control characters other than NUL
are data and load as they are.

Drift, from the contract (``entity.drift_policy``; see ``entities.DriftPolicy``):

- ``unknown_field`` (a header column not declared): ``discard_value`` loads without it,
  ``discard_row`` rejects every row naming it, ``freeze`` fails the file naming it.
- ``missing_field`` (a declared column absent from the header): ``freeze`` fails the file naming
  it; ``discard_value`` loads NULL for an optional column; ``discard_row`` rejects every row
  naming it. A missing required column fails the file under any mode.
- ``wrong_type``: ``discard_row`` rejects the row with the reason; ``discard_value`` loads NULL
  for an optional column and rejects the row for a required one; ``freeze`` fails the file
  naming the column and the row.

What drifted is counted per kind and column (``FileCounts.drift``) and said in ``notes``, for
example ``unknown_field extra: ignored in 2 rows; wrong_type signup_at: NULL in 1 row``.

The rejects' ``raw_line`` is the record as the file holds it, without its line break, decoded
as UTF-8. When the record holds a NUL or bytes that are not UTF-8 (its reason says so), it is
escaped so that both warehouses can store it: every backslash is doubled, NUL is written
``\\x00`` and each undecodable byte ``\\xNN``. A record longer than RAW_LINE_CHARS characters is
cut there and ends with `` [... truncated: the row is <n> bytes]``.
"""

from __future__ import annotations

import csv
import gzip
import re
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mage_project.entities import Entity
from mage_project.landing import csv_line
from mage_project.validation import FileCounts, Rejected, value_check

MAX_FIELD_BYTES = 1 << 20  # one field of a row, in bytes as the file holds it (UTF-8)
RAW_LINE_CHARS = 64 * 1024  # what a reject keeps of its record: the landing file keeps it all
MAX_HEADER_BYTES = 1 << 20
_CHUNK = 1 << 20
_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


class UnreadableFile(ValueError):
    """The whole file cannot be read as the entity's CSV; the message says why."""


# --- the raw_line form ---------------------------------------------------------------------

_UNSAFE = re.compile("[\x00\ud800-\udfff]")
_ESCAPED = re.compile("[\\\\\x00\ud800-\udfff]")


def _escape(match: re.Match) -> str:
    char = match.group()
    if char == "\\":
        return "\\\\"
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte, as surrogateescape keeps it
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str) -> str:
    """``text`` itself, or when it holds NUL or undecodable bytes, escaped (see the module)."""
    if _UNSAFE.search(text) is None:
        return text
    return _ESCAPED.sub(_escape, text)


def _raw_line(text: str, size: int) -> str:
    text = _strip_terminator(text)
    if len(text) > RAW_LINE_CHARS:
        return f"{visible(text[:RAW_LINE_CHARS])} [... truncated: the row is {size} bytes]"
    return visible(text)


# --- records: split by the csv module's rules, in bounded memory ----------------------------

_NEWLINE = re.compile(rb"\r\n|\r|\n")
# Where the splitter is inside a record, as the csv module's states.
_FIELD_START, _UNQUOTED, _QUOTED, _QUOTE_IN_QUOTED = range(4)


def _pieces(stream) -> Iterator[bytes]:
    """The stream's physical lines with their line break; a line longer than a chunk comes in
    pieces (all but the last without a line break)."""
    buf, pos, eof = b"", 0, False
    while True:
        m = _NEWLINE.search(buf, pos)
        # A "\r" at the end of what was read may be the first half of "\r\n".
        if m is not None and not (m.group() == b"\r" and m.end() == len(buf) and not eof):
            yield buf[pos:m.end()]
            pos = m.end()
            continue
        if eof:
            if pos < len(buf):
                yield buf[pos:]
            return
        if m is None and len(buf) - pos >= _CHUNK:
            yield buf[pos:]
            buf, pos = b"", 0
        more = stream.read(_CHUNK)
        buf, pos, eof = buf[pos:] + more, 0, not more


def _scan(piece: bytes, state: int) -> int:
    """The splitter's state after ``piece`` (only quotes and the commas before them matter)."""
    i, n = 0, len(piece)
    while i < n:
        if state == _QUOTED:
            j = piece.find(b'"', i)
            if j < 0:
                return _QUOTED
            state, i = _QUOTE_IN_QUOTED, j + 1
        elif state == _UNQUOTED:
            j = piece.find(b',"', i)
            if j < 0:
                return _FIELD_START if piece.endswith(b",") else _UNQUOTED
            state, i = _QUOTED, j + 2
        elif piece[i] == 0x22:  # a quote opening a field, or the second of a doubled quote
            state, i = _QUOTED, i + 1
        else:  # after a closing quote, or at a field's start: an unquoted stretch
            state = _UNQUOTED
    return state


@dataclass
class _Record:
    head: bytes  # the record, or its first ``keep`` bytes
    size: int  # its whole size in bytes, line break included
    unclosed: bool  # the file ended inside a quoted field

    @property
    def cut(self) -> bool:
        return len(self.head) < self.size


class _Records:
    """A file's records; ``keep`` bounds the bytes kept of each (the rest is only counted)."""

    def __init__(self, stream, keep: int):
        self.keep = keep
        self._pieces = _pieces(stream)

    def __iter__(self) -> Iterator[_Record]:
        parts: list[bytes] = []
        kept = size = 0
        state = _FIELD_START
        for piece in self._pieces:
            state = _scan(piece, state)
            if kept < self.keep:
                parts.append(piece[:self.keep - kept])
                kept += len(parts[-1])
            size += len(piece)
            if state != _QUOTED and piece[-1:] in (b"\n", b"\r"):
                yield _Record(b"".join(parts), size, False)
                parts, kept, size, state = [], 0, 0, _FIELD_START
        if size:
            yield _Record(b"".join(parts), size, state == _QUOTED)


# --- fields of one record -------------------------------------------------------------------

_QUOTED_FIELD = re.compile(r'"((?:[^"]++|"")*+)"')
_UNQUOTED_FIELD = re.compile(r"[^,\r\n]*+")


class _BadCsv(ValueError):
    pass


def _strip_terminator(text: str) -> str:
    if text.endswith("\r\n"):
        return text[:-2]
    return text[:-1] if text[-1:] in ("\r", "\n") else text


def _fields(text: str) -> list[str]:
    """The fields of one record, as the csv module (strict) reads them."""
    if len(text) < csv.field_size_limit():
        # No field can reach the csv module's limit: let it parse (the same rules, in C).
        try:
            return next(csv.reader((text,), strict=True), [])
        except csv.Error as exc:
            raise _BadCsv(str(exc)) from None
    return _parse_fields(text)


def _parse_fields(text: str, partial: bool = False) -> list[str]:
    """``_fields`` for records of any size. With ``partial`` (the head of a cut record), a last
    field left open is returned as far as it goes."""
    text = _strip_terminator(text)
    if not text:
        return []
    if '"' not in text:
        return text.split(",")
    fields: list[str] = []
    pos, n = 0, len(text)
    while True:
        if text.startswith('"', pos):
            m = _QUOTED_FIELD.match(text, pos)
            if m is None:
                if partial:
                    fields.append(text[pos + 1:].replace('""', '"'))
                    return fields
                raise _BadCsv("a quoted field is not closed before the end of the file")
            fields.append(m.group(1).replace('""', '"'))
            pos = m.end()
            if pos < n and text[pos] != ",":
                raise _BadCsv(f"',' expected after the closing quote of field {len(fields)}")
        else:
            m = _UNQUOTED_FIELD.match(text, pos)
            fields.append(m.group())
            pos = m.end()
            if pos < n and text[pos] != ",":  # a line break outside quotes: not split so
                raise _BadCsv(f"a line break in unquoted field {len(fields)}")
        if pos >= n:
            return fields
        pos += 1
        if pos == n:
            fields.append("")
            return fields


def _byte_size(value: str) -> int:
    return len(value) if value.isascii() else len(value.encode("utf-8", "surrogateescape"))


_SURROGATE = re.compile("[\ud800-\udfff]")


def _holds_undecodable(text: str) -> bool:
    return not text.isascii() and _SURROGATE.search(text) is not None


# --- the file -------------------------------------------------------------------------------


def _open_bytes(path: Path, key: str):
    if key.endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


class _Skip(Exception):
    """The row is rejected; the message is the reason, ``drift`` the (kind, column) if drift."""

    def __init__(self, reason: str, drift: tuple[str, str] | None = None):
        super().__init__(reason)
        self.drift = drift


def _drift_notes(drift: dict[tuple[str, str], Counter]) -> str:
    """``{(kind, action): {column: rows}}`` as the manifest's notes say it."""
    order = {"unknown_field": 0, "missing_field": 1, "wrong_type": 2}
    entries = sorted(((order[kind], column, action, kind, rows)
                      for (kind, action), columns in drift.items()
                      for column, rows in columns.items()))
    parts = []
    for _, column, action, kind, rows in entries:
        plural = "row" if rows == 1 else "rows"
        parts.append(f"{kind} {column}: {rows} {plural} rejected" if action == "rejected"
                     else f"{kind} {column}: {action} in {rows} {plural}")
    return "; ".join(parts)


def normalize_file(entity: Entity, source_path: Path, key: str, file_no: int,
                   out_dir: Path) -> FileCounts:
    """Check a dropped CSV file (by header names, in any column order) row by row.

    Writes ``valid-<n>.csv`` (the declared columns in order, plus ``_row_number``) and
    ``rejects-<n>.csv`` (row number, reason, raw line). Raises UnreadableFile when the file's
    own content cannot be loaded at all: empty, no header or a header that is not UTF-8 CSV,
    a repeated or (by the drift policy) missing or unknown column, not gzip though named
    ``.gz``, or a drift policy of ``freeze`` met by a row. Any other exception (an OSError
    writing the work files, say) is not the file's fault and goes up as it is.
    """
    if source_path.stat().st_size == 0:
        raise UnreadableFile("the file is empty (0 bytes)")
    valid_path = out_dir / f"valid-{file_no:05d}.csv"
    rejects_path = out_dir / f"rejects-{file_no:05d}.csv"
    try:
        with _open_bytes(source_path, key) as src:
            counts = _normalize(entity, _Source(src), key, valid_path, rejects_path)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        # A damaged or truncated .gz: the file's own bytes (every other OSError is local).
        raise UnreadableFile(f"the file is not valid gzip: {exc}") from None
    counts.valid_path = str(valid_path)
    counts.rejects_path = str(rejects_path)
    return counts


class _Source:
    """The byte stream with its BOM skipped; refuses UTF-16."""

    def __init__(self, stream):
        self._stream = stream
        self._start = b""
        while len(self._start) < 3:
            more = stream.read(3 - len(self._start))
            if not more:
                break
            self._start += more
        if self._start.startswith(_UTF16_BOMS):
            raise UnreadableFile("the file is UTF-16 (it starts with a UTF-16 byte order mark);"
                                 " dropped files must be UTF-8")
        if self._start == _BOM:
            self._start = b""

    def read(self, size: int) -> bytes:
        if self._start:
            start, self._start = self._start, b""
            return start + self._stream.read(max(size - len(start), 0))
        return self._stream.read(size)


def _header(record: _Record | None) -> list[str]:
    if record is None:
        raise UnreadableFile("the file has no header row")
    if record.cut:
        raise UnreadableFile(f"the header is over {MAX_HEADER_BYTES} bytes")
    text = record.head.decode("utf-8", "surrogateescape")
    if _holds_undecodable(text):
        raise UnreadableFile(f"the header is not UTF-8: {visible(_strip_terminator(text))[:200]}")
    if "\x00" in text:
        raise UnreadableFile(f"the header holds a NUL character (is the file UTF-16?):"
                             f" {visible(_strip_terminator(text))[:200]}")
    try:
        header = _fields(text)
    except _BadCsv as exc:
        raise UnreadableFile(f"the header is not valid CSV: {exc}") from None
    if not header or header == [""]:
        raise UnreadableFile("the file has no header row")
    header = [h.strip() for h in header]
    if len(set(header)) != len(header):
        raise UnreadableFile(f"the header repeats a column: {header}")
    return header


def _normalize(entity: Entity, src: _Source, key: str, valid_path: Path,
               rejects_path: Path) -> FileCounts:
    """The file's header, what it drifted from the declaration, then every row checked and
    written to the valid or the rejects file; the counts, with the drift."""
    records = _Records(src, MAX_HEADER_BYTES)
    rows = iter(records)
    header = _header(next(rows, None))
    # A record of more bytes than this has a field over the limit (a quoted field takes at most
    # twice its size plus two quotes and a comma).
    records.keep = len(header) * (2 * MAX_FIELD_BYTES + 3) + 2
    shape = _HeaderDrift.of(entity, header)
    counts = FileCounts(key=key)
    check_row = _row_check(entity, header, shape.reason)
    _write_rows(rows, check_row, entity, shape, counts, valid_path, rejects_path)
    for (kind, _action), columns in shape.drift.items():
        for column, rows_ in columns.items():
            counts.drift.setdefault(kind, {}).setdefault(column, 0)
            counts.drift[kind][column] += rows_
    counts.notes = _drift_notes(shape.drift)
    return counts


@dataclass
class _HeaderDrift:
    """How a file's header differs from its entity's declared columns."""

    missing: list[str]  # declared columns not in the header
    extra: list[str]  # header columns not declared
    # Under discard_row, the (reason, drift) every row that gets that far is rejected for.
    reason: tuple[str, tuple[str, str]] | None
    # The drift counted so far, {(kind, action): {column: rows}}, action one of "ignored",
    # "NULL", "rejected": the header's, to which _write_rows adds each row's.
    drift: dict[tuple[str, str], Counter]

    @classmethod
    def of(cls, entity: Entity, header: list[str]) -> _HeaderDrift:
        """The header's drift; raises UnreadableFile where the policy (or a missing required
        column) refuses the file as a whole."""
        policy, names = entity.drift_policy, entity.column_names
        missing = [n for n in names if n not in header]
        required_missing = [c.name for c in entity.columns if c.required and c.name in missing]
        if missing and (policy.missing_field == "freeze" or required_missing):
            which = (f"{missing}" if policy.missing_field == "freeze"
                     else f"the required {required_missing}")
            raise UnreadableFile(f"the header lacks {which} (it has {header})")
        extra = [h for h in header if h not in names]
        if extra and policy.unknown_field == "freeze":
            raise UnreadableFile(f"the header has the undeclared columns {extra} (it has"
                                 f" {header}; unknown_field is freeze)")
        drift: dict[tuple[str, str], Counter] = {}
        # Header drift is noted even when no row loads: the file changed shape all the same.
        for kind, columns in (("unknown_field", extra), ("missing_field", missing)):
            for name in columns:  # (freeze failed the file above)
                action = {"discard_value": "ignored" if kind == "unknown_field" else "NULL",
                          "discard_row": "rejected"}[getattr(policy, kind)]
                drift.setdefault((kind, action), Counter())[name] += 0
        reason = None
        if extra and policy.unknown_field == "discard_row":
            reason = (f"{extra[0]} is not a declared column (unknown_field is discard_row)",
                      ("unknown_field", extra[0]))
        elif missing and policy.missing_field == "discard_row":
            reason = (f"{missing[0]} is not in the file's header (missing_field is"
                      " discard_row)", ("missing_field", missing[0]))
        return cls(missing, extra, reason, drift)


def _row_check(entity: Entity, header: list[str], header_reason: tuple | None):
    """The check of one row of a file with ``header``: ``check_row(row_no, text, record)``
    returns the row's declared values and the columns set NULL for their type, and raises
    _Skip with the reason when the row is rejected (UnreadableFile under wrong_type=freeze)."""
    policy, width = entity.drift_policy, len(header)
    # Per declared column: its position in the row (None when missing), its value_check.
    checks = [(c.name, header.index(c.name) if c.name in header else None, value_check(c),
               c.kind, c.required) for c in entity.columns]

    def check_row(row_no: int, text: str, record: _Record) -> tuple[list[str | None], list[str]]:
        if record.cut:
            raise _Skip(_oversize_reason(text, header, record.size))
        if record.unclosed:
            raise _Skip("is not valid CSV: a quoted field is not closed before the end of the"
                        " file")
        try:
            row = _fields(text)
        except _BadCsv as exc:
            raise _Skip(f"is not valid CSV: {exc}") from None
        if len(row) != width:
            raise _Skip(f"has {len(row)} fields, the header has {width}")
        for name, value in zip(header, row, strict=True) if record.size > MAX_FIELD_BYTES else ():
            if len(value) > MAX_FIELD_BYTES // 4 and _byte_size(value) > MAX_FIELD_BYTES:
                raise _Skip(f"{name} is {_byte_size(value)} bytes, over the {MAX_FIELD_BYTES}-byte"
                            " limit of a field")
        if _holds_undecodable(text):
            name, value = next((n, v) for n, v in zip(header, row, strict=True)
                               if _holds_undecodable(v))
            raise _Skip(f"{name} is not UTF-8: {value[:40].encode('utf-8', 'surrogateescape')!r}")
        if header_reason:
            raise _Skip(*header_reason)
        values: list[str | None] = []
        nulled: list[str] = []
        for name, position, check, kind, required in checks:
            value = None if position is None else row[position]
            if not value:
                if required and value is not None:
                    raise _Skip(f"{name} is missing")
                values.append(None)
                continue
            if "\x00" in value:
                raise _Skip(f"{name} contains a NUL character")
            try:
                check(value)
            except Exception as exc:  # noqa: BLE001 - whatever a parser trips on is the value's fault
                reason = _wrong_type_reason(name, kind, value, exc)
                if policy.wrong_type == "freeze":
                    raise UnreadableFile(f"row {row_no}: {reason} (wrong_type is freeze)") from None
                if policy.wrong_type == "discard_row" or required:
                    raise _Skip(reason, ("wrong_type", name)) from None
                nulled.append(name)
                value = None
            values.append(value)
        return values, nulled

    return check_row


def _write_rows(rows: Iterator[_Record], check_row, entity: Entity, shape: _HeaderDrift,
                counts: FileCounts, valid_path: Path, rejects_path: Path) -> None:
    """Every row after the header into the valid file (the declared columns and the row's
    number) or the rejects file (its number, the reason, the raw line), counted, with the drift
    of each row added to ``shape.drift``."""
    policy, drift, extra, missing = entity.drift_policy, shape.drift, shape.extra, shape.missing
    with (
        open(valid_path, "w", encoding="utf-8", newline="") as valid,
        open(rejects_path, "w", encoding="utf-8", newline="") as rejects,
    ):
        valid.write(csv_line([*entity.column_names, "_row_number"]))
        rejects.write(csv_line(["row_number", "reason", "raw_line"]))
        row_no = 0
        for record in rows:
            row_no += 1
            text = record.head.decode("utf-8", "surrogateescape")
            try:
                values, nulled = check_row(row_no, text, record)
            except _Skip as exc:
                if exc.drift:
                    drift.setdefault((exc.drift[0], "rejected"), Counter())[exc.drift[1]] += 1
                rejects.write(csv_line([str(row_no), str(exc), _raw_line(text, record.size)]))
                counts.rejected += 1
                continue
            valid.write(csv_line([*values, str(row_no)]))
            counts.valid += 1
            for name in nulled:
                drift.setdefault(("wrong_type", "NULL"), Counter())[name] += 1
            if policy.unknown_field == "discard_value":
                for name in extra:
                    drift[("unknown_field", "ignored")][name] += 1
            if policy.missing_field == "discard_value":
                for name in missing:
                    drift[("missing_field", "NULL")][name] += 1
        counts.rows = row_no


def _wrong_type_reason(name: str, kind: str, value: str, exc: Exception) -> str:
    """Why ``value`` is not of its column's type: the check's reason, or, for a value the kind's
    parser cannot even take (int() refuses more than 4300 digits, say), what it tripped on."""
    if isinstance(exc, Rejected):
        return f"{name} {exc}"
    return f"{name} is not a valid {kind} ({type(exc).__name__}): {value[:40]!r}"


def _oversize_reason(head: str, header: list[str], size: int) -> str:
    """The reason of a record too long to keep: the first field over the limit, or the one the
    cut went through (the others are too short to make up the rest)."""
    try:
        fields = _parse_fields(head, partial=True)
    except _BadCsv as exc:
        return f"is not valid CSV: {exc} (the row is {size} bytes)"
    for i, value in enumerate(fields):
        if _byte_size(value) > MAX_FIELD_BYTES or i == len(fields) - 1:
            name = header[i] if i < len(header) else f"field {i + 1}"
            return (f"{name} is over the {MAX_FIELD_BYTES}-byte limit of a field (the row is"
                    f" {size} bytes)")
    return f"the row is {size} bytes"
