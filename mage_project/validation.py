"""Record validation against an entity's declared columns.

A landing file is read row by row and split into two files: valid rows, normalised (timestamps
in UTC, NULL for empty optional fields) and ready for COPY; and rejects, each with its reason
and the raw record as JSON text. Nothing is dropped: every landed row ends in exactly one of
the two.
"""

from __future__ import annotations

import csv
import json
import math
import multiprocessing
import os
import re
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mage_project.entities import Entity
from mage_project.landing import csv_line

BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1
_INTEGER = re.compile(r"-?[0-9]+")
_DECIMAL = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


class Rejected(ValueError):
    """The field cannot be stored as its declared type; the message is the reject reason."""


def _text(value: str) -> str:
    if "\x00" in value:
        raise Rejected("contains a NUL character")
    return value


def _key(value: str) -> str:
    if value.strip() == "":
        raise Rejected("is empty")
    return _text(value)


def _bigint(value: str) -> str:
    value = value.strip()
    if not _INTEGER.fullmatch(value):
        raise Rejected(f"is not an integer: {value[:40]!r}")
    if not BIGINT_MIN <= int(value) <= BIGINT_MAX:
        raise Rejected("is out of the bigint range")
    return value


def _timestamptz(value: str) -> str:
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise Rejected(f"is not an RFC 3339 timestamp: {value[:40]!r}") from None
    if parsed.tzinfo is None:
        raise Rejected(f"has no UTC offset: {value[:40]!r}")
    return parsed.astimezone(UTC).isoformat()


def _reject_constant(name: str):
    raise ValueError(name)


def _json_object(value: str) -> str:
    try:
        parsed = json.loads(value, parse_constant=_reject_constant)
    except ValueError:
        raise Rejected("is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise Rejected(f"is not a JSON object but {type(parsed).__name__}")
    if "\\u" in value:
        # PostgreSQL's jsonb refuses \u0000 and unpaired surrogates, which Python accepts.
        try:
            json.dumps(parsed, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise Rejected("holds an invalid unicode escape") from None
        if "\\u0000" in value and _holds_nul(parsed):
            raise Rejected("holds a NUL character")
    return value


def _holds_nul(value) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(map(_holds_nul, value))
    return False


def _numeric(value: str) -> str:
    value = value.strip()
    if not _DECIMAL.fullmatch(value) or not math.isfinite(float(value)):
        raise Rejected(f"is not a number: {value[:40]!r}")
    return value


PARSERS: dict[str, Callable[[str], str]] = {
    "key": _key,
    "text": _text,
    "bigint": _bigint,
    "timestamptz": _timestamptz,
    "json_object": _json_object,
    "numeric": _numeric,
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


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime

    def __post_init__(self):
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("window bounds must be timezone-aware")
        if self.end <= self.start:
            raise ValueError(f"empty window: end {self.end} is not after start {self.start}")


@dataclass
class FileCounts:
    key: str
    rows: int = 0
    valid: int = 0
    rejected: int = 0
    valid_path: str = ""
    rejects_path: str = ""

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
    """Split one landing file into ``valid-<n>.csv`` and ``rejects-<n>.csv`` in ``out_dir``.

    Valid rows carry ``file_no`` and their row number, so the loader can tell which delivery of
    a key came last.
    """
    names = entity.column_names
    parsers = [(c.name, PARSERS[c.kind], c.required) for c in entity.columns]
    cursor_index = names.index(entity.cursor_field)
    start_iso, end_iso = window.start.astimezone(UTC), window.end.astimezone(UTC)
    counts = FileCounts(key=source_key)
    valid_path = out_dir / f"valid-{file_no:05d}.csv"
    rejects_path = out_dir / f"rejects-{file_no:05d}.csv"
    with (
        open(source_path, encoding="utf-8", newline="") as src,
        open(valid_path, "w", encoding="utf-8", newline="") as valid,
        open(rejects_path, "w", encoding="utf-8", newline="") as rejects,
    ):
        reader = csv.reader(src, strict=True)
        header = next(reader, None)
        if header != names:
            raise ValueError(
                f"landing file {source_key} has header {header}, expected {names}"
            )
        valid.write(csv_line([*names, "_file_no", "_row_no"]))
        rejects.write(csv_line(["run_id", "source_file", "row_number", "reason", "raw_payload"]))
        row_no = 0
        for row in reader:
            row_no += 1
            reason = None
            out: list[str | None] = []
            if len(row) != len(names):
                reason = f"has {len(row)} fields, expected {len(names)}"
            else:
                for (name, parse, required), value in zip(parsers, row, strict=True):
                    if value == "":
                        if required:
                            reason = f"{name} is missing"
                            break
                        out.append(None)
                        continue
                    try:
                        out.append(parse(value))
                    except Rejected as exc:
                        reason = f"{name} {exc}"
                        break
                else:
                    at = datetime.fromisoformat(out[cursor_index])
                    if not start_iso <= at < end_iso:
                        reason = (
                            f"{entity.cursor_field} {out[cursor_index]} is outside the "
                            f"requested window [{start_iso.isoformat()}, {end_iso.isoformat()})"
                        )
            if reason is None:
                out.append(str(file_no))
                out.append(str(row_no))
                valid.write(csv_line(out))
                counts.valid += 1
            else:
                payload = json.dumps(
                    dict(zip(names, row, strict=False)) if len(row) == len(names) else row
                )
                rejects.write(csv_line([run_id, source_key, str(row_no), reason, payload]))
                counts.rejected += 1
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
    """Validate landing files, in parallel processes when there are several.

    ``files`` are (local path, landing key) in delivery order; their position is their file_no.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [
        (entity, path, key, file_no, run_id, window, out_dir)
        for file_no, (path, key) in enumerate(files)
    ]
    workers = min(len(jobs), workers or os.cpu_count() or 1)
    if workers <= 1:
        return [validate_file(*job) for job in jobs]
    # spawn, not fork: Mage runs blocks beside threads, and forking a threaded process can hang.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        return list(pool.map(validate_file, *zip(*jobs, strict=True)))
