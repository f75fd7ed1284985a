"""Raw load of file drops: each landing file version loaded exactly once into its raw table.

A file at ``<source>/<entity>/<YYYY-MM-DD>/<name>.csv[.gz]`` is checked row by row and, in one
transaction, its valid rows are COPY'd into ``raw.<source>__<entity>`` (append-only, with the
file's key, checksum and row number), its bad rows into ``raw.load_rejects`` and its version
into ``ops.file_manifest``. The same content under the same key again is skipped; changed
content is loaded as a new version. A file that cannot be read at all is recorded as failed,
alerted, and blocks no other file.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from mage_project import alerts, config, warehouse
from mage_project.entities import FILE_ENTITIES, Entity
from mage_project.faults import failpoint
from mage_project.landing import LandingZone
from mage_project.normalize import UnreadableFile, normalize_file
from mage_project.runs import new_run_id

log = logging.getLogger(__name__)
PIPELINE = "warehouse_elt"
_LAYOUT = re.compile(r"(?P<prefix>[a-z0-9_]+/[a-z0-9_]+)/(?P<day>\d{4}-\d{2}-\d{2})/[^/]+\.csv(\.gz)?")


@dataclass(frozen=True)
class DropFile:
    key: str
    entity: Entity
    day: str
    size: int = -1
    tag: str = ""

    @property
    def order(self) -> tuple[str, str]:
        """Files of an entity are applied by path date, then name."""
        return (self.day, self.key.rsplit("/", 1)[1])


def drop_file(key: str, size: int = -1, tag: str = "") -> DropFile | None:
    """The file's entity and day, or None when the key is not in the landing layout."""
    match = _LAYOUT.fullmatch(key)
    if not match or match["prefix"] not in FILE_ENTITIES:
        return None
    return DropFile(key=key, entity=FILE_ENTITIES[match["prefix"]], day=match["day"],
                    size=size, tag=tag)


def list_drops(zone: LandingZone) -> list[DropFile]:
    files = [
        f
        for prefix in FILE_ENTITIES
        for e in zone.entries(prefix)
        if (f := drop_file(e.key, e.size, e.tag))
    ]
    return sorted(files, key=lambda f: (f.entity.table, f.order))


def _last_seen(cur) -> dict[str, tuple[int, str | None]]:
    """(size, source tag) of the latest version of every file in the manifest."""
    cur.execute(
        "select m.file_key, m.size_bytes, m.source_tag from ops.file_manifest as m"
        " join (select file_key, max(version) as version from ops.file_manifest"
        " group by file_key) as latest"
        " on latest.file_key = m.file_key and latest.version = m.version"
    )
    return {key: (int(size), tag) for key, size, tag in cur.fetchall()}


def pending_drops(zone: LandingZone | None = None) -> list[DropFile]:
    """Files new or rewritten since they were last seen: one listing and one query, no reads."""
    zone = zone or LandingZone(config.landing_url())
    db = warehouse.writer()
    with db.connection() as conn:
        db.migrate(conn)
        with db.transaction(conn) as cur:
            seen = _last_seen(cur)
    return [f for f in list_drops(zone) if seen.get(f.key) != (f.size, f.tag)]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_file(zone: LandingZone, drop: DropFile, run_id: str) -> dict:
    """Load one landing file's current content, once. Returns what happened to it."""
    work = config.work_dir() / PIPELINE / run_id / hashlib.sha1(drop.key.encode()).hexdigest()[:16]
    work.mkdir(parents=True, exist_ok=True)
    try:
        local = zone.local_copy(drop.key, work)
        checksum, size = sha256_of(local), local.stat().st_size
        result = {"key": drop.key, "checksum": checksum, "size": size}
        db = warehouse.writer()
        with db.connection() as conn:
            db.prepare_file_load(conn, drop.entity)
            with db.transaction(conn) as cur:
                result.update(_load_version(db, cur, drop, local, work, run_id, result))
                failpoint("drops_before_commit")
        failpoint("drops_after_file")
        if result["status"] == "failed":
            # Recorded (and committed) as failed: tell someone, and go on with the other files.
            alerts.send_failure_alert(PIPELINE, run_id, f"{drop.key} cannot be loaded: "
                                      f"{result['error']}", file=drop.key)
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _load_version(db, cur, drop: DropFile, local: Path, work: Path, run_id: str,
                  result: dict) -> dict:
    """Inside the load's transaction: skip the same content, else load it as a new version."""
    checksum, size = result["checksum"], result["size"]
    db.acquire_run_lock(cur, PIPELINE, config.run_lock_timeout_seconds())
    cur.execute(
        "select version, checksum from ops.file_manifest where file_key = %s"
        " order by version desc limit 1",
        (drop.key,),
    )
    latest = cur.fetchone()
    if latest and latest[1] == checksum:
        # Delivered again with the same content: remember it as seen, load nothing.
        cur.execute("update ops.file_manifest set source_tag = %s where file_key = %s"
                    " and version = %s", (drop.tag, drop.key, latest[0]))
        return {"status": "skipped", "version": latest[0]}
    version = latest[0] + 1 if latest else 1
    if latest:
        log.warning("%s changed since version %d: loading it as version %d",
                    drop.key, latest[0], version)
    manifest = {"file_key": drop.key, "version": version, "entity": drop.entity.table,
                "size_bytes": size, "checksum": checksum, "run_id": run_id,
                "source_tag": drop.tag}
    try:
        counts = normalize_file(drop.entity, local, drop.key, 0, work)
    except UnreadableFile as exc:
        _record(cur, manifest, status="failed", error=str(exc))
        return {"status": "failed", "version": version, "error": str(exc)}
    db.copy_file_rows(cur, drop.entity, drop.key, checksum, counts)
    _record(cur, manifest, status="loaded", rows_total=counts.rows, rows_loaded=counts.valid,
            rows_rejected=counts.rejected, notes=counts.notes or None)
    return {"status": "loaded", "version": version, "rows": counts.rows,
            "rows_loaded": counts.valid, "rows_rejected": counts.rejected}


_MANIFEST_COLUMNS = ("file_key", "version", "entity", "size_bytes", "checksum", "status",
                     "rows_total", "rows_loaded", "rows_rejected", "error", "notes", "run_id",
                     "source_tag")
_INSERT_MANIFEST = (
    "insert into ops.file_manifest (file_key, version, entity, size_bytes, checksum, status,"
    " rows_total, rows_loaded, rows_rejected, error, notes, run_id, source_tag)"
    " values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)


def _record(cur, manifest: dict, **values) -> None:
    row = {**manifest, **values}
    cur.execute(_INSERT_MANIFEST, [row.get(c) for c in _MANIFEST_COLUMNS])


def sensor_ready(wait_for_files: bool = True) -> bool:
    """The sensor's answer: go on when a file is pending, or at once when not waiting."""
    if not wait_for_files or str(wait_for_files).lower() in ("false", "0", "no"):
        return True
    pending = pending_drops()
    if pending:
        log.info("%s: %d landing files to load, first %s", PIPELINE, len(pending),
                 pending[0].key)
    return bool(pending)


def load_new_files(run_id: str | None = None, zone: LandingZone | None = None) -> dict:
    """Load every landing file new or rewritten since it was last seen, in path order.

    A rewritten file whose content is unchanged is skipped (and remembered as seen).
    """
    run_id = run_id or new_run_id()
    zone = zone or LandingZone(config.landing_url())
    files = [load_file(zone, drop, run_id) for drop in pending_drops(zone)]
    shutil.rmtree(config.work_dir() / PIPELINE / run_id, ignore_errors=True)
    summary = {"run_id": run_id, "pipeline": PIPELINE, "files": files}
    for status in ("loaded", "skipped", "failed"):
        summary[status] = sum(1 for f in files if f["status"] == status)
    log.info("%s: %d files loaded, %d skipped (same content), %d failed", PIPELINE,
             summary["loaded"], summary["skipped"], summary["failed"])
    return summary
