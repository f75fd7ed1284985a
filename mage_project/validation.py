"""Record validation against an entity's declared columns.

Every row of a file ends in exactly one of two places: the rows ready for COPY, or the rejects
with their reason and the raw record. Only values PostgreSQL stores as they are pass (strict
RFC 3339 timestamps, integers in range, JSON objects jsonb accepts, amounts with 2 decimals).

- ``validate_file``/``validate_files``: landing files the ingestion wrote itself (known header);
  a clean file is loaded as it is, in parallel worker processes.
Files dropped by other systems are checked by ``mage_project.normalize``; both check each value
with its column's ``value_check`` (allowed values, then the kind's parser).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime
from pathlib import Path

import orjson

from mage_project.entities import Column, Entity
from mage_project.landing import csv_line
from mage_project.windows import Window

BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1
_INTEGER = re.compile(r"-?[0-9]+")
_DECIMAL = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_RFC3339 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?"
                      r"(?:Z|[+-][0-9]{2}:[0-9]{2})")
_NAIVE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?")


class Rejected(ValueError):
    """The field cannot be stored as its declared type; the message is the reject reason."""


def _text(value: str) -> None:
    if "\x00" in value:
        raise Rejected("contains a NUL character")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise Rejected("holds a lone surrogate (not UTF-8 text)") from None


def _key(value: str) -> None:
    if not value.strip():
        raise Rejected("is empty")
    _text(value)


def _bigint(value: str) -> None:
    digits = value[1:] if value[:1] == "-" else value
    if not (digits.isascii() and digits.isdigit()):
        raise Rejected(f"is not an integer: {value[:40]!r}")
    # Past 19 significant digits it is out of range, without int() (which refuses 4300 digits).
    significant = digits.lstrip("0")
    if len(significant) > 19 or len(significant) == 19 and not (
            BIGINT_MIN <= int(value[:1] + significant if value[:1] == "-" else significant)
            <= BIGINT_MAX):
        raise Rejected("is out of the bigint range")


def _timestamptz(value: str) -> datetime:
    # Strict RFC 3339, so that every accepted value is one PostgreSQL parses the same way.
    if not _RFC3339.fullmatch(value):
        if _NAIVE.fullmatch(value):
            raise Rejected(f"has no UTC offset: {value[:40]!r}")
        raise Rejected(f"is not an RFC 3339 timestamp: {value[:40]!r}")
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise Rejected(f"is not an RFC 3339 timestamp: {value[:40]!r}") from None


def _json_object(value: str) -> None:
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError:
        # orjson also refuses NaN, unpaired surrogates and numbers beyond a double.
        raise Rejected("is not valid JSON") from None
    if type(parsed) is not dict:
        raise Rejected(f"is not a JSON object but {type(parsed).__name__}")
    if "\\u0000" in value and _holds_nul(parsed):
        # PostgreSQL's jsonb refuses \u0000, which JSON parsers accept.
        raise Rejected("holds a NUL character")


def _holds_nul(value) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(map(_holds_nul, value))
    return False


def _numeric(value: str) -> None:
    if not _DECIMAL.fullmatch(value) or not math.isfinite(float(value)):
        raise Rejected(f"is not a number: {value[:40]!r}")


_MONEY = re.compile(r"[0-9]{1,16}(?:\.[0-9]{1,2})?")
_COUNTRY = re.compile(r"[A-Z]{2}")


def _decimal(value: str) -> None:
    """Non-negative money: at most 2 decimals (more would be rounded away by numeric(18,2))."""
    if not _MONEY.fullmatch(value):
        raise Rejected(f"is not an amount with at most 2 decimals: {value[:40]!r}")


def _positive_decimal(value: str) -> None:
    _decimal(value)
    if float(value) <= 0:
        raise Rejected(f"is not positive: {value!r}")


def _count(value: str) -> None:
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise Rejected(f"is not a non-negative integer: {value[:40]!r}")


def _date(value: str) -> None:
    if len(value) != 10:
        raise Rejected(f"is not a date (YYYY-MM-DD): {value[:40]!r}")
    try:
        date.fromisoformat(value)
    except ValueError:
        raise Rejected(f"is not a date (YYYY-MM-DD): {value[:40]!r}") from None


def _country(value: str) -> None:
    if not _COUNTRY.fullmatch(value):
        raise Rejected(f"is not an ISO 3166 alpha-2 code: {value[:40]!r}")


PARSERS: dict[str, Callable[[str], object]] = {
    "key": _key,
    "text": _text,
    "bigint": _bigint,
    "timestamptz": _timestamptz,
    "json_object": _json_object,
    "numeric": _numeric,
    "decimal": _decimal,
    "positive_decimal": _positive_decimal,
    "count": _count,
    "date": _date,
    "country": _country,
    "enum": _text,  # the allowed values are the column's own (Column.allowed)
}


def value_check(column: Column) -> Callable[[str], object]:
    """The check of one non-empty text value of ``column``, for API records and file rows
    alike: one of its allowed values when it declares them (``Column.allowed``), then of its
    kind (``PARSERS``). Raises Rejected with the reason, which the caller prefixes with the
    column's name; returns what the kind's parser returns (a timestamptz's datetime).

    Made once per column: a column without allowed values is checked by its parser itself, so
    the per-row path calls one function per value either way."""
    parse = PARSERS[column.kind]
    if not column.allowed:
        return parse
    allowed = frozenset(column.allowed)
    listed = list(column.allowed)

    def one_of(value: str) -> object:
        if value not in allowed:
            raise Rejected(f"is not one of {listed}: {value[:40]!r}")
        return parse(value)

    return one_of


RECORD_COLUMN = "_record"

# One encoder, built once (json.dumps builds one per call when given options).
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def record_text(record) -> str:
    """The record's JSON text as the landing copy keeps it: compact, keys in the order sent."""
    return _ENCODE(record)


def landing_value(value) -> str | None:
    """How a source value is written to a landing CSV cell (a declared column's copy)."""
    if value is None or isinstance(value, str):
        return value
    return _ENCODE(value)


def landing_header(entity: Entity) -> list[str]:
    return [*entity.column_names, RECORD_COLUMN]


def landing_row(entity: Entity, record) -> list[str | None]:
    """The landing CSV row of one API record: the declared fields, then the whole record.

    The ``_record`` cell is the truth (what validation reads, what a replay reads); the declared
    cells are a convenience for a reader of the file. A record that is not an object has only
    its ``_record``.
    """
    if not isinstance(record, dict):
        return [None] * len(entity.columns) + [_ENCODE(record)]
    return [*(landing_value(record.get(name)) for name in entity.column_names), _ENCODE(record)]


# The JSON types a declared kind accepts: nothing is coerced (a string is not an integer, an
# object sent as text is not an object), so what loads is what the API declared it would send.
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "key": (str,), "text": (str,), "enum": (str,), "timestamptz": (str,), "date": (str,),
    "country": (str,), "bigint": (int,), "count": (int,), "json_object": (dict,),
    "numeric": (int, float), "decimal": (int, float), "positive_decimal": (int, float),
}
_JSON_NAMES = {str: "string", int: "integer", float: "number", bool: "boolean", dict: "object",
               list: "array", type(None): "null"}
# numeric columns are number(38,10) on Snowflake: larger amounts would fail its COPY.
NUMERIC_LIMIT = 10**28
_INT64 = float(2**63)  # exactly


def json_type(value) -> str:
    return _JSON_NAMES.get(type(value), type(value).__name__)


def _past_int64(value) -> bool:
    """Whether a parsed value holds a float of 2**63 or more: orjson reads an integer past 64
    bits as such a float (changing it), so the record is read again with Python's parser."""
    for item in value.values() if type(value) is dict else value:
        kind = type(item)
        if kind is float:
            if not -_INT64 < item < _INT64:
                return True
        elif (kind is dict or kind is list) and _past_int64(item):
            return True
    return False


def _parse_record(text: str) -> tuple[object, bool]:
    """The record of a ``_record`` cell, and whether orjson read it: orjson's speed where it
    reads exactly what Python's parser (the API client's) does; Python's for integers past 64
    bits, NaN, Infinity and lone surrogates (which orjson refuses, and the checks then catch)."""
    try:
        record = orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text), False
    if _past_int64([record]):
        return json.loads(text), False
    return record, True


class SchemaFrozen(ValueError):
    """A record drifted from its entity's declaration where the policy is ``freeze``."""


def _drifted(counts: FileCounts, kind: str, field_name: str) -> None:
    fields = counts.drift.setdefault(kind, {})
    fields[field_name] = fields.get(field_name, 0) + 1


_MISSING = object()
_TEXT_KINDS = frozenset({"key", "text", "enum"})  # free text: may need quoting by hand in CSV


class _RecordCheck:
    """One entity's record check: the declared fields by type and value, drift by policy.

    ``cells`` returns the declared columns' cells of a valid record. Values of their declared
    JSON type take one converter per column (made once, by kind); anything else (a missing,
    null or wrongly typed value) goes through ``_irregular``, which applies the drift policy.
    """

    def __init__(self, entity: Entity, window: Window, source_key: str, counts: FileCounts):
        self.entity, self.window, self.key, self.counts = entity, window, source_key, counts
        self.declared = frozenset(entity.column_names)
        self.policy = entity.drift_policy
        self.columns = [(c.name, _JSON_TYPES[c.kind], self._converter(c), c)
                        for c in entity.columns]
        self.strict = False  # the record was read by Python's parser: check objects in full
        self.hand_quoted = False  # a cell of the last record needs csv_field's quoting

    def _drift(self, kind: str, field_name: str, row_no: int, detail: str) -> str:
        """Count the drift; raise under ``freeze``; return the mode to apply."""
        _drifted(self.counts, kind, field_name)
        mode = getattr(self.policy, kind)
        if mode == "freeze":
            raise SchemaFrozen(
                f"{self.entity.name}: {detail} (record {row_no} of {self.key}); the entity's drift "
                f"policy is {kind}=freeze: declare the change, or choose another mode"
            )
        return mode

    def cells(self, record, row_no: int, orjson_read: bool = True) -> list[str | None]:
        """The declared columns' cells of a valid record; raises Rejected with the reason."""
        if type(record) is not dict:
            raise Rejected(f"the record is a JSON {json_type(record)}, not an object")
        if not self.declared.issuperset(record):
            for name in record:
                if name not in self.declared and self._drift(
                    "unknown_field", name, row_no, f"undeclared field {name!r}"
                ) == "discard_row":
                    raise Rejected(f"has the undeclared field {name!r}")
        self.strict, self.hand_quoted = not orjson_read, False
        out = []
        for name, types, convert, column in self.columns:
            value = record.get(name, _MISSING)  # None and _MISSING are of no declared type
            out.append(convert(value) if type(value) in types
                       else self._irregular(column, value, row_no))
        return out

    def _irregular(self, column, value, row_no: int) -> None:
        """A declared field that is missing, null or of another JSON type: None or Rejected."""
        name = column.name
        if value is _MISSING:
            if column.required:
                raise Rejected(f"{name} is missing")
            if self._drift("missing_field", name, row_no, f"field {name!r} is missing") \
                    == "discard_row":
                raise Rejected(f"{name} is missing")
            return None
        if value is None:
            if column.required:
                raise Rejected(f"{name} is null")
            return None
        expected = " or ".join(_JSON_NAMES[t] for t in _JSON_TYPES[column.kind])
        detail = f"{name} is a JSON {json_type(value)}, not {expected}: {_ENCODE(value)[:40]}"
        if self._drift("wrong_type", name, row_no, detail) == "discard_value" \
                and not column.required:
            return None
        raise Rejected(detail)

    def _converter(self, column) -> Callable[[object], str | None]:
        """The cell of a value of the column's JSON type; raises Rejected with the reason."""
        name, kind, parse = column.name, column.kind, value_check(column)
        window = self.window if name == self.entity.cursor_field else None

        def checked(text: str) -> str | None:
            if text == "":
                # One spelling of "no value" in the raw tables, as in the file drops (whose CSV
                # cannot tell "" from null); the landing copy keeps the "" as sent.
                if column.required:
                    raise Rejected(f"{name} is empty")
                return None
            try:
                parsed = parse(text)
            except Rejected as exc:
                raise Rejected(f"{name} {exc}") from None
            if window is not None and not window.start <= parsed < window.end:
                raise Rejected(
                    f"{name} {text} is outside the requested window "
                    f"[{window.start.isoformat()}, {window.end.isoformat()})"
                )
            if kind in _TEXT_KINDS and ("\r" in text or text[0].isspace() or text[-1].isspace()):
                self.hand_quoted = True
            return text

        if kind == "bigint":
            def integer(value: int) -> str:
                if not BIGINT_MIN <= value <= BIGINT_MAX:
                    raise Rejected(f"{name} is out of the bigint range")
                return str(value)
            return integer
        if kind == "count":
            return lambda value: checked(str(value))
        if kind == "json_object":
            def json_object(value: dict) -> str:
                text = _ENCODE(value)
                if self.strict:  # NaN, lone surrogates, numbers beyond a double
                    try:
                        _json_object(text)
                    except Rejected as exc:
                        raise Rejected(f"{name} {exc}") from None
                elif "\\u0000" in text and _holds_nul(value):
                    raise Rejected(f"{name} holds a NUL character")  # jsonb refuses \u0000
                return text
            return json_object
        if kind in ("numeric", "decimal", "positive_decimal"):
            def number(value: int | float) -> str | None:
                if type(value) is float and not (math.isfinite(value)
                                                 and abs(value) < NUMERIC_LIMIT) \
                        or type(value) is int and kind == "numeric" and abs(value) >= NUMERIC_LIMIT:
                    raise Rejected(f"{name} is not a finite number below 1e28: {_ENCODE(value)[:40]}")
                return checked(repr(value))
            return number
        return checked  # the text kinds


@dataclass
class FileCounts:
    key: str
    rows: int = 0
    valid: int = 0
    rejected: int = 0
    valid_path: str = ""
    rejects_path: str = ""
    notes: str = ""
    drift: dict = field(default_factory=dict)  # kind -> field -> records

    def as_dict(self) -> dict:
        return dict(self.__dict__)


REJECT_HEADER = ["run_id", "source_file", "row_number", "reason", "raw_payload"]


def validate_file(
    entity: Entity,
    source_path: Path,
    source_key: str,
    file_no: int,
    run_id: str,
    window: Window,
    out_dir: Path,
) -> FileCounts:
    """Check every record of one landing file, from its ``_record`` (the JSON as sent).

    Writes ``valid-<n>.csv`` (the declared columns of the valid records, for COPY) and
    ``rejects-<n>.csv`` (each rejected record's JSON text with its reason). Raises SchemaFrozen
    when a record drifts where the entity's policy is ``freeze``.
    """
    header = landing_header(entity)
    counts = FileCounts(key=source_key)
    check = _RecordCheck(entity, window, source_key, counts)
    valid_path = out_dir / f"valid-{file_no:05d}.csv"
    rejects_path = out_dir / f"rejects-{file_no:05d}.csv"
    with (
        open(source_path, encoding="utf-8", newline="") as src,
        open(valid_path, "w", encoding="utf-8", newline="") as valid,
        open(rejects_path, "w", encoding="utf-8", errors="backslashreplace", newline="") as rejects,
    ):
        reader = csv.reader(src, strict=True)
        found = next(reader, None)
        if found != header:
            raise ValueError(f"landing file {source_key} has header {found}, expected {header}")
        valid.write(csv_line(entity.column_names))
        rejects.write(csv_line(REJECT_HEADER))
        # The C writer quotes as csv_field does except for a "\r" or padding in free text
        # (csv_field quotes those too) and "" (which a cell never is): those rows go by hand.
        write_valid = csv.writer(valid, lineterminator="\n").writerow
        row_no = 0
        for row_no, row in enumerate(reader, start=1):
            text = row[-1]
            try:
                record, orjson_read = _parse_record(text)
                cells = check.cells(record, row_no, orjson_read)
            except Rejected as exc:
                rejects.write(csv_line([run_id, source_key, str(row_no), str(exc), text]))
                counts.rejected += 1
                continue
            if check.hand_quoted:
                valid.write(csv_line(cells))
            else:
                write_valid(cells)
            counts.valid += 1
        counts.rows = row_no
    counts.valid_path = str(valid_path)
    counts.rejects_path = str(rejects_path)
    return counts


def validate_files(
    entity: Entity,
    files: list[tuple[Path, str]],
    run_id: str,
    window: Window,
    out_dir: Path,
    workers: int | None = None,
) -> list[FileCounts]:
    """Validate landing files, in parallel worker processes when there are several.

    ``files`` are (local path, landing key) in delivery order; their position is their file_no.
    Workers are fresh interpreters (``python -m mage_project.validation``), not forks: Mage
    runs blocks beside threads and inside notebook kernels, where fork and spawn misbehave.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [
        {"entity": entity.pipeline, "drift": asdict(entity.drift_policy), "path": str(path), "key": key,
         "file_no": file_no, "run_id": run_id, "start": window.start.isoformat(),
         "end": window.end.isoformat(), "out_dir": str(out_dir)}
        for file_no, (path, key) in enumerate(files)
    ]
    workers = min(len(jobs), workers or os.cpu_count() or 1)
    if workers <= 1:
        return [_run_job(job) for job in jobs]
    procs = []
    for n in range(workers):
        share = out_dir / f"jobs-{n}.json"
        share.write_text(json.dumps(jobs[n::workers]))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "mage_project.validation", str(share)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
    outputs = [proc.communicate() for proc in procs]
    results: list[FileCounts] = []
    for proc, (stdout, stderr) in zip(procs, outputs, strict=True):
        if proc.returncode != 0:
            raise RuntimeError(f"validation worker failed (exit {proc.returncode}):\n{stderr[-4000:]}")
        answer = json.loads(stdout)
        if isinstance(answer, dict):
            raise SchemaFrozen(answer["frozen"])
        results += [FileCounts(**item) for item in answer]
    order = {job["key"]: job["file_no"] for job in jobs}
    return sorted(results, key=lambda c: order[c.key])


def _run_job(job: dict) -> FileCounts:
    from mage_project.entities import ENTITIES, DriftPolicy

    entity = replace(ENTITIES[job["entity"]], drift=DriftPolicy(**job["drift"]))
    return validate_file(
        entity, Path(job["path"]), job["key"], job["file_no"], job["run_id"],
        Window(datetime.fromisoformat(job["start"]), datetime.fromisoformat(job["end"])),
        Path(job["out_dir"]),
    )


def _worker_main() -> None:
    jobs = json.loads(Path(sys.argv[1]).read_text())
    try:
        answer: list | dict = [_run_job(job).as_dict() for job in jobs]
    except SchemaFrozen as exc:
        answer = {"frozen": str(exc)}
    json.dump(answer, sys.stdout)


def merge_drift(counts: list[FileCounts]) -> dict:
    """The files' drift counts summed: kind -> field -> records."""
    merged: dict = {}
    for item in counts:
        for kind, fields in item.drift.items():
            into = merged.setdefault(kind, {})
            for name, n in fields.items():
                into[name] = into.get(name, 0) + n
    return merged


if __name__ == "__main__":
    _worker_main()
