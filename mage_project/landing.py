"""The landing zone: where source files wait, as CSV, before they are loaded.

``LANDING_URL`` picks the store: ``file:///path`` (the default, a folder in the data
directory) or ``s3://bucket/prefix`` (with the standard AWS settings, and AWS_ENDPOINT_URL for
S3-compatible stores). Both behave the same: keys are paths relative to the zone's root, a file
appears whole or not at all (written under a temporary name and renamed; an S3 PUT is atomic),
and readers get a local copy to stream from.

Confined to its root: only regular files under it are listed as readable and read. A symbolic
link (to a file or a folder), any other kind of file (a FIFO, a device), a key that would leave
the root (a ``..``, ``.`` or empty segment, on S3), a hidden name (a segment starting with
``.``) and a name that is not UTF-8 (listed with its bytes escaped, as no warehouse could store
it) are listed with the reason they are not read (``Entry.refused``), never followed and never
silently left out; reading one raises ``RefusedKey``. The one exception is the zone's own
``.<name>.tmp`` of a file being written, which is not there yet.

Files follow PostgreSQL's CSV conventions, so they can be COPY'd as they are: a header row,
RFC 4180 quoting, an unquoted empty field is NULL and a quoted empty field ("") is an empty
string.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
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
class Entry:
    """A file of the zone as a listing sees it: its key, size and a tag that changes whenever
    the file is written again (the modification time on disk, the ETag on S3); ``refused``: why
    the zone does not read it (a link, not a regular file, a hidden name, outside the root)."""

    key: str
    size: int
    tag: str
    refused: str | None = None


class RefusedKey(ValueError):
    """A key the zone does not read: a symbolic link on its way, not a regular file."""


# The zone's own file being published (FileLandingZone._publish): not there yet.
_IN_FLIGHT = re.compile(r"\..+\.tmp")
HIDDEN = "a hidden name (starting with '.'): not read; rename it to load it"
NOT_UTF8 = ("a name that is not UTF-8 (listed with its undecodable bytes as \\xNN): not read;"
            " rename it to load it")
# An undecodable byte of a file name, as the file system hands it over (surrogateescape): no
# warehouse stores it, so such a key is listed with each such byte as \xNN, and refused.
_UNDECODABLE = re.compile("[\udc80-\udcff]")


def _escaped(key: str) -> str:
    return _UNDECODABLE.sub(lambda m: f"\\x{ord(m[0]) - 0xDC00:02x}", key)


@dataclass(frozen=True)
class LandedFile:
    key: str
    rows: int
    bytes: int

    def as_dict(self) -> dict:
        return {"key": self.key, "rows": self.rows, "bytes": self.bytes}


def _check_key(key: str) -> str:
    if _outside(key):
        raise ValueError(f"landing key {key!r} is not a relative path inside the landing zone")
    return key


def _outside(key: str) -> bool:
    return not key or key.startswith("/") or any(p in ("", ".", "..") for p in key.split("/"))


def _refusal(key: str) -> str | None:
    """Why a listed key is not read, from its name alone (a store without links: S3)."""
    if _outside(key):
        return "leaves the landing zone's root (a '..', '.' or empty segment): not read"
    if any(part.startswith(".") for part in key.split("/")):
        return HIDDEN
    return None


class LandingZone:
    """A landing zone at ``url``; ``LandingZone(url)`` returns the store's implementation."""

    url: str

    def __new__(cls, url: str):
        if cls is LandingZone:
            scheme = urlparse(url).scheme
            if scheme == "file":
                cls = FileLandingZone
            elif scheme == "s3":
                cls = S3LandingZone
            else:
                raise ValueError(
                    f"LANDING_URL={url!r}: use file:///path or s3://bucket/prefix"
                )
        return super().__new__(cls)

    # What each store provides.
    def exists(self, key: str) -> bool:
        raise NotImplementedError

    def read_bytes(self, key: str) -> bytes:
        raise NotImplementedError

    def entries(self, prefix: str = "") -> list[Entry]:
        """Files under ``prefix`` (a folder), sorted by key; files still being written are not
        listed. One listing call per page of keys: no per-file request."""
        raise NotImplementedError

    def list(self, prefix: str = "") -> list[str]:
        """The keys of the files under ``prefix`` that the zone reads."""
        return [entry.key for entry in self.entries(prefix) if entry.refused is None]

    def local_copy(self, key: str, directory: Path) -> Path:
        """A local file with the content of ``key``, to stream from (copied into ``directory``
        when the store is remote)."""
        raise NotImplementedError

    def _publish(self, local: Path, key: str) -> None:
        """Make the complete local file ``local`` the content of ``key``, atomically."""
        raise NotImplementedError

    # Shared behaviour.
    def write_bytes(self, key: str, data: bytes) -> LandedFile:
        """Write one whole file under ``key``."""
        with tempfile.TemporaryDirectory(prefix="landing-") as tmp:
            local = Path(tmp) / "file"
            local.write_bytes(data)
            self._publish(local, _check_key(key))
        return LandedFile(key=key, rows=-1, bytes=len(data))

    def write_parts(
        self,
        key_of_part: Callable[[int], str],
        header: list[str],
        rows: Iterable[list[str | None]],
        chunk_rows: int,
    ) -> Iterator[LandedFile]:
        """Write ``rows`` as CSV files of at most ``chunk_rows`` rows each.

        ``key_of_part(n)`` names part ``n`` (from 0). Each part is written to a local
        temporary file and published when complete; yields each published file.
        """
        with tempfile.TemporaryDirectory(prefix="landing-") as tmp:
            part, count, handle = 0, 0, None
            local = Path(tmp) / "part.csv"
            for row in rows:
                if handle is None:
                    # A lone surrogate from an API cannot be UTF-8: keep it visible as an escape.
                    handle = open(local, "w", encoding="utf-8", errors="backslashreplace",
                                  newline="")
                    handle.write(csv_line(header))
                    count = 0
                handle.write(csv_line(row))
                count += 1
                if count >= chunk_rows:
                    handle.close()
                    handle = None
                    yield self._publish_part(local, key_of_part(part), count)
                    part += 1
            if handle is not None:
                handle.close()
                yield self._publish_part(local, key_of_part(part), count)

    def _publish_part(self, local: Path, key: str, rows: int) -> LandedFile:
        size = local.stat().st_size
        self._publish(local, _check_key(key))
        return LandedFile(key=key, rows=rows, bytes=size)


class FileLandingZone(LandingZone):
    def __init__(self, url: str):
        self.url = url
        self.root = Path(unquote(urlparse(url).path)).resolve()

    def path(self, key: str) -> Path:
        """Where ``key`` is, inside the root; ``RefusedKey`` when a symbolic link is on the way
        (a link to a file or a folder, wherever it points)."""
        path = self.root / _check_key(key)
        if path.resolve() != path:
            raise RefusedKey(f"{key}: a symbolic link is on its path: not followed")
        return path

    def _regular(self, key: str) -> Path:
        path = self.path(key)
        mode = os.lstat(path).st_mode
        if not stat.S_ISREG(mode):
            raise RefusedKey(f"{key}: {_kind(mode)}, not a regular file: not read")
        return path

    def exists(self, key: str) -> bool:
        try:
            return stat.S_ISREG(os.lstat(self.path(key)).st_mode)
        except (FileNotFoundError, RefusedKey):
            return False

    def read_bytes(self, key: str) -> bytes:
        return self._regular(key).read_bytes()

    def entries(self, prefix: str = "") -> list[Entry]:
        wanted = _check_key(prefix.rstrip("/")) if prefix else ""
        return sorted(self._walk(self.root, wanted), key=lambda e: e.key)

    def _walk(self, folder: Path, wanted: str) -> Iterator[Entry]:
        """The entries under ``folder`` that are under ``wanted`` (a key prefix), or on the way to
        it: into real folders only, never through a link."""
        try:
            items = list(os.scandir(folder))
        except FileNotFoundError:
            return
        for item in items:
            key = Path(item.path).relative_to(self.root).as_posix()
            inside = not wanted or key == wanted or key.startswith(wanted + "/")
            if not (inside or wanted.startswith(key + "/")) or _IN_FLIGHT.fullmatch(item.name):
                continue
            info = item.stat(follow_symlinks=False)
            mode = info.st_mode
            refused = (HIDDEN if item.name.startswith(".")
                       else NOT_UTF8 if _UNDECODABLE.search(item.name)
                       else None if stat.S_ISREG(mode) or stat.S_ISDIR(mode)
                       else f"{_kind(mode)}, not a regular file: not followed or read")
            if stat.S_ISDIR(mode) and refused is None:
                yield from self._walk(Path(item.path), wanted)
            elif inside or refused:
                yield Entry(_escaped(key) if refused is NOT_UTF8 else key, info.st_size,
                            str(info.st_mtime_ns), refused)

    def local_copy(self, key: str, directory: Path) -> Path:
        return self._regular(key)  # already local: read in place

    def _publish(self, local: Path, key: str) -> None:
        final = self.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.tmp")
        try:
            shutil.move(local, tmp)  # a rename when the temporary folder is on the same disk
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a disk that filled mid-copy keeps no half of a file
            raise


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device" if stat.S_ISBLK(mode) or stat.S_ISCHR(mode) else "an unknown kind of file"


class S3LandingZone(LandingZone):
    """An S3 bucket and prefix, through boto3 and its standard settings (AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, AWS_ENDPOINT_URL for S3-compatible stores)."""

    def __init__(self, url: str):
        import boto3

        parsed = urlparse(url)
        if not parsed.netloc:
            raise ValueError(f"LANDING_URL={url!r}: no bucket (s3://bucket/prefix)")
        self.url = url
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self.client = boto3.client("s3")

    def _object(self, key: str) -> str:
        key = _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._object(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def read_bytes(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=self._object(key))["Body"].read()

    def entries(self, prefix: str = "") -> list[Entry]:
        base = f"{self.prefix}/" if self.prefix else ""
        wanted = base + (prefix.rstrip("/") + "/" if prefix else "")
        found = []
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=wanted
        ):
            found += [Entry(item["Key"][len(base):], item["Size"], item["ETag"].strip('"'),
                            _refusal(item["Key"][len(base):]))
                      for item in page.get("Contents", [])
                      if not _IN_FLIGHT.fullmatch(item["Key"].rsplit("/", 1)[-1])]
        return sorted(found, key=lambda e: e.key)

    def local_copy(self, key: str, directory: Path) -> Path:
        target = directory / "landing" / _check_key(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        self.client.download_file(self.bucket, self._object(key), str(target))
        return target

    def _publish(self, local: Path, key: str) -> None:
        self.client.upload_file(str(local), self.bucket, self._object(key))
