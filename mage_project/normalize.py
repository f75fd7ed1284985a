"""Dropped CSV files checked row by row against their entity's declared columns.

Files dropped by other systems (``warehouse_elt``): the header is matched by name, a BOM is
skipped, ``.gz`` is decompressed, extra columns are noted. Each row ends in the valid file or the
rejects file with its reason; a file that cannot be read at all raises UnreadableFile.
"""

from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path

from mage_project.entities import Entity
from mage_project.landing import csv_line
from mage_project.validation import PARSERS, FileCounts, Rejected


class UnreadableFile(ValueError):
    """The whole file cannot be read as the entity's CSV; the message says why."""


def _open_text(path: Path, key: str):
    if key.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def _raw_line(row: list[str]) -> str:
    """The record as a CSV line again (RFC 4180 quoting, as a file would have it)."""
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(row)
    return out.getvalue()


def normalize_file(entity: Entity, source_path: Path, key: str, file_no: int,
                   out_dir: Path) -> FileCounts:
    """Check a dropped CSV file (by header names, in any column order) row by row.

    Writes ``valid-<n>.csv`` (the declared columns in order, plus ``_row_number``) and
    ``rejects-<n>.csv`` (row number, reason, the raw line). A UTF-8 BOM is skipped, ``.gz``
    files are decompressed, extra columns are ignored (and noted). Raises UnreadableFile for
    an empty file, a missing header or declared column, bad encoding or broken CSV.
    """
    if source_path.stat().st_size == 0:
        raise UnreadableFile("the file is empty (0 bytes)")
    names = entity.column_names
    counts = FileCounts(key=key)
    valid_path = out_dir / f"valid-{file_no:05d}.csv"
    rejects_path = out_dir / f"rejects-{file_no:05d}.csv"
    try:
        with (
            _open_text(source_path, key) as src,
            open(valid_path, "w", encoding="utf-8", newline="") as valid,
            open(rejects_path, "w", encoding="utf-8", newline="") as rejects,
        ):
            reader = csv.reader(src, strict=True)
            header = next(reader, None)
            if not header or header == [""]:
                raise UnreadableFile("the file has no header row")
            header = [h.strip() for h in header]
            if len(set(header)) != len(header):
                raise UnreadableFile(f"the header repeats a column: {header}")
            missing = [n for n in names if n not in header]
            if missing:
                raise UnreadableFile(f"the header lacks {missing} (it has {header})")
            extra = [h for h in header if h not in names]
            if extra:
                counts.notes = f"ignored extra columns {extra}"
            positions = [header.index(n) for n in names]
            checks = [(c.name, PARSERS[c.kind], c.required, c.allowed) for c in entity.columns]
            valid.write(csv_line([*names, "_row_number"]))
            rejects.write(csv_line(["row_number", "reason", "raw_line"]))
            row_no = 0
            for row in reader:
                row_no += 1
                reason = None
                values: list[str | None] = []
                if len(row) != len(header):
                    reason = f"has {len(row)} fields, the header has {len(header)}"
                else:
                    for position, (name, check, required, allowed) in zip(
                        positions, checks, strict=True
                    ):
                        value = row[position]
                        if value == "":
                            if required:
                                reason = f"{name} is missing"
                                break
                            values.append(None)
                            continue
                        try:
                            if allowed:
                                if value not in allowed:
                                    raise Rejected(f"is not one of {list(allowed)}: {value[:40]!r}")
                            else:
                                check(value)
                        except Rejected as exc:
                            reason = f"{name} {exc}"
                            break
                        values.append(value)
                if reason is None:
                    valid.write(csv_line([*values, str(row_no)]))
                    counts.valid += 1
                else:
                    rejects.write(csv_line([str(row_no), reason, _raw_line(row)]))
                    counts.rejected += 1
            counts.rows = row_no
    except UnicodeDecodeError as exc:
        bad = exc.object[exc.start:exc.start + 4]
        raise UnreadableFile(f"the file is not UTF-8 ({exc.reason}: {bad!r})") from None
    except csv.Error as exc:
        raise UnreadableFile(f"the file is not valid CSV: {exc}") from None
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        if isinstance(exc, FileNotFoundError):
            raise
        raise UnreadableFile(f"the file cannot be read: {exc}") from None
    counts.valid_path = str(valid_path)
    counts.rejects_path = str(rejects_path)
    return counts
