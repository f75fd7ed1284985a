"""Record validation against an entity's declared columns.

Every row of a file ends in exactly one of two places: the rows ready for COPY, or the rejects
with their reason and the raw record. Only values PostgreSQL stores as they are pass (strict
RFC 3339 timestamps, integers in range, JSON objects jsonb accepts, amounts with 2 decimals).

- ``validate_file``/``validate_files``: landing files the ingestion wrote itself (known header);
  a clean file is loaded as it is, in parallel worker processes.
Files dropped by other systems are checked by ``mage_project.normalize``, with the same parsers.
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
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import orjson

from mage_project.entities import Entity
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


def _key(value: str) -> None:
    if value.isspace():
        raise Rejected("is empty")
    _text(value)


def _bigint(value: str) -> None:
    digits = value[1:] if value[:1] == "-" else value
    if not (digits.isascii() and digits.isdigit()):
        raise Rejected(f"is not an integer: {value[:40]!r}")
    if len(digits) > 18 and not BIGINT_MIN <= int(value) <= BIGINT_MAX:
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


def landing_value(value) -> str | None:
    """How a source value is written to a landing CSV cell."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def landing_row(entity: Entity, record) -> list[str | None]:
    if not isinstance(record, dict):
        # Keep what was sent: it is rejected as a record without a key, payload intact.
        return [None] * (len(entity.columns) - 1) + [landing_value(record)]
    return [landing_value(record.get(name)) for name in entity.column_names]


@dataclass
class FileCounts:
    key: str
    rows: int = 0
    valid: int = 0
    rejected: int = 0
    valid_path: str = ""
    rejects_path: str = ""
    notes: str = ""

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def validate_file(
    entity: Entity,
    source_path: Path,
    source_key: str,
    file_no: int,
    run_id: str,
    window: Window,
    out_dir: Path,
) -> FileCounts:
    """Check every row of one landing file; write its rejects to ``rejects-<n>.csv``.

    A file without rejects is loaded as it is (``valid_path`` is the landing file); a file with
    rejects gets a copy without them (``valid-<n>.csv``), so the loader never sees a bad row.
    """
    names = entity.column_names
    checks = [(i, c.name, PARSERS[c.kind], c.required) for i, c in enumerate(entity.columns)]
    cursor_index = names.index(entity.cursor_field)
    start, end = window.start, window.end
    width = len(names)
    counts = FileCounts(key=source_key)
    rejected_rows: set[int] = set()
    rejects_path = out_dir / f"rejects-{file_no:05d}.csv"
    with (
        open(source_path, encoding="utf-8", newline="") as src,
        open(rejects_path, "w", encoding="utf-8", newline="") as rejects,
    ):
        reader = csv.reader(src, strict=True)
        header = next(reader, None)
        if header != names:
            raise ValueError(f"landing file {source_key} has header {header}, expected {names}")
        rejects.write(csv_line(["run_id", "source_file", "row_number", "reason", "raw_payload"]))
        row_no = 0
        for row in reader:
            row_no += 1
            reason = None
            if len(row) != width:
                reason = f"has {len(row)} fields, expected {width}"
            else:
                for i, name, check, required in checks:
                    value = row[i]
                    if not value:
                        if required:
                            reason = f"{name} is missing"
                            break
                        continue
                    try:
                        result = check(value)
                    except Rejected as exc:
                        reason = f"{name} {exc}"
                        break
                    if i == cursor_index and not start <= result < end:
                        reason = (
                            f"{name} {value} is outside the requested window "
                            f"[{start.isoformat()}, {end.isoformat()})"
                        )
                        break
            if reason is not None:
                payload = json.dumps(dict(zip(names, row, strict=True)) if len(row) == width else row)
                rejects.write(csv_line([run_id, source_key, str(row_no), reason, payload]))
                rejected_rows.add(row_no)
        counts.rows = row_no
    counts.rejected = len(rejected_rows)
    counts.valid = counts.rows - counts.rejected
    counts.rejects_path = str(rejects_path)
    counts.valid_path = str(source_path)
    if rejected_rows:
        counts.valid_path = str(_copy_without(source_path, out_dir / f"valid-{file_no:05d}.csv",
                                              rejected_rows))
    return counts


def _copy_without(source: Path, target: Path, skip: set[int]) -> Path:
    with (
        open(source, encoding="utf-8", newline="") as src,
        open(target, "w", encoding="utf-8", newline="") as out,
    ):
        reader = csv.reader(src, strict=True)
        out.write(csv_line(next(reader)))
        for row_no, row in enumerate(reader, start=1):
            if row_no not in skip:
                out.write(csv_line(row))
    return target


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
        {"entity": entity.pipeline, "path": str(path), "key": key, "file_no": file_no,
         "run_id": run_id, "start": window.start.isoformat(), "end": window.end.isoformat(),
         "out_dir": str(out_dir)}
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
        results += [FileCounts(**item) for item in json.loads(stdout)]
    order = {job["key"]: job["file_no"] for job in jobs}
    return sorted(results, key=lambda c: order[c.key])


def _run_job(job: dict) -> FileCounts:
    from mage_project.entities import ENTITIES

    return validate_file(
        ENTITIES[job["entity"]], Path(job["path"]), job["key"], job["file_no"], job["run_id"],
        Window(datetime.fromisoformat(job["start"]), datetime.fromisoformat(job["end"])),
        Path(job["out_dir"]),
    )


def _worker_main() -> None:
    jobs = json.loads(Path(sys.argv[1]).read_text())
    json.dump([_run_job(job).as_dict() for job in jobs], sys.stdout)


if __name__ == "__main__":
    _worker_main()
