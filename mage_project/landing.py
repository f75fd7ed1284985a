"""The landing zone: where source records are written as CSV files before they are loaded.

Files follow PostgreSQL's CSV conventions, so they can be COPY'd as they are: a header row,
RFC 4180 quoting, an unquoted empty field is NULL and a quoted empty field ("") is an empty
string. A file is written under a temporary name and renamed when complete, so a killed run
never leaves a half-written file under a final name.

Only ``file://`` URLs are served for now; the interface (keys relative to the zone's root) is
the one an object store implements too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

_NEEDS_QUOTES = (",", '"', "\n", "\r")


def csv_field(value: str | None) -> str:
    if value is None:
        return ""
    if value == "" or any(ch in value for ch in _NEEDS_QUOTES) or value != value.strip():
        return '"' + value.replace('"', '""') + '"'
    return value


def csv_line(values: Iterable[str | None]) -> str:
    return ",".join(map(csv_field, values)) + "\n"


@dataclass(frozen=True)
class LandedFile:
    key: str
    rows: int
    bytes: int

    def as_dict(self) -> dict:
        return {"key": self.key, "rows": self.rows, "bytes": self.bytes}


class LandingZone:
    def __init__(self, url: str):
        parsed = urlparse(url)
        if parsed.scheme != "file":
            raise ValueError(
                f"LANDING_URL={url!r}: only file:// landing zones are supported so far"
            )
        self.url = url
        self.root = Path(unquote(parsed.path))

    def path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"landing key {key!r} escapes the landing zone")
        return path

    def local_path(self, key: str) -> Path:
        """A local file to read ``key`` from (an object store downloads it first)."""
        return self.path(key)

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def write_bytes(self, key: str, data: bytes) -> LandedFile:
        """Write one whole file under ``key`` (atomically: a reader sees all of it or nothing)."""
        final = self.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.tmp")
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, final)
        return LandedFile(key=key, rows=-1, bytes=len(data))

    def read_bytes(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def list(self, prefix: str = "") -> list[str]:
        """Keys under ``prefix``, sorted; files being written (temporary names) are not listed."""
        base = self.root.resolve()
        start = self.path(prefix) if prefix else base
        if start.is_file():
            return [prefix]
        if not start.is_dir():
            return []
        return sorted(
            p.relative_to(base).as_posix()
            for p in start.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )

    def write_parts(
        self,
        key_of_part: callable,
        header: list[str],
        rows: Iterable[list[str | None]],
        chunk_rows: int,
    ) -> Iterator[LandedFile]:
        """Write ``rows`` as CSV files of at most ``chunk_rows`` rows each.

        ``key_of_part(n)`` names part ``n`` (from 0). Yields each file once it is complete.
        """
        part = 0
        handle = None
        tmp = final = None
        count = 0
        try:
            for row in rows:
                if handle is None:
                    final = self.path(key_of_part(part))
                    final.parent.mkdir(parents=True, exist_ok=True)
                    tmp = final.with_name(f".{final.name}.tmp")
                    # A lone surrogate from the API cannot be UTF-8: keep it visible as an escape.
                    handle = open(tmp, "w", encoding="utf-8", errors="backslashreplace", newline="")
                    handle.write(csv_line(header))
                    count = 0
                handle.write(csv_line(row))
                count += 1
                if count >= chunk_rows:
                    yield self._finish(handle, tmp, final, count)
                    handle = None
                    part += 1
            if handle is not None:
                yield self._finish(handle, tmp, final, count)
                handle = None
        finally:
            if handle is not None:
                handle.close()
                tmp.unlink(missing_ok=True)

    def _finish(self, handle, tmp: Path, final: Path, count: int) -> LandedFile:
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        os.replace(tmp, final)
        key = final.relative_to(self.root.resolve()).as_posix()
        return LandedFile(key=key, rows=count, bytes=final.stat().st_size)
