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

from psycopg2 import sql

from mage_project import alerts, config
from mage_project.entities import FILE_ENTITIES, Entity
from mage_project.landing import LandingZone
from mage_project.runs import new_run_id
from mage_project.validation import UnreadableFile, normalize_file
from mage_project.warehouse import postgres

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
        "select distinct on (file_key) file_key, size_bytes, source_tag from ops.file_manifest"
        " order by file_key, version desc"
    )
    return {key: (size, tag) for key, size, tag in cur.fetchall()}


def pending_drops(zone: LandingZone | None = None) -> list[DropFile]:
    """Files new or rewritten since they were last seen: one listing and one query, no reads."""
    zone = zone or LandingZone(config.landing_url())
    with postgres.connection() as conn:
        postgres.migrate(conn)
        with conn, conn.cursor() as cur:
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
        with postgres.connection() as conn, conn, conn.cursor() as cur:
            postgres.acquire_run_lock(cur, PIPELINE, config.run_lock_timeout_seconds())
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
                return {**result, "status": "skipped", "version": latest[0]}
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
                failed = {**result, "status": "failed", "version": version, "error": str(exc)}
            else:
                _copy_rows(cur, drop.entity, drop.key, checksum, counts)
                _record(cur, manifest, status="loaded", rows_total=counts.rows,
                        rows_loaded=counts.valid, rows_rejected=counts.rejected,
                        notes=counts.notes or None)
                return {**result, "status": "loaded", "version": version, "rows": counts.rows,
                        "rows_loaded": counts.valid, "rows_rejected": counts.rejected}
        # Recorded (and committed) as failed: tell someone, and go on with the other files.
        alerts.send_failure_alert(PIPELINE, run_id, f"{drop.key} cannot be loaded: "
                                  f"{failed['error']}", file=drop.key)
        return failed
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _copy_rows(cur, entity: Entity, key: str, checksum: str, counts) -> None:
    cur.execute("select set_config('mage_project.file_key', %s, true),"
                " set_config('mage_project.file_checksum', %s, true)", (key, checksum))
    postgres.copy_csv(cur, sql.Identifier(entity.schema, entity.table),
                      [*entity.column_names, "_row_number"], Path(counts.valid_path))
    cur.execute("create temporary table if not exists stage_load_rejects"
                " (row_number bigint, reason text, raw_line text) on commit drop")
    cur.execute("truncate stage_load_rejects")
    postgres.copy_csv(cur, sql.Identifier("stage_load_rejects"),
                      ["row_number", "reason", "raw_line"], Path(counts.rejects_path))
    cur.execute(
        "insert into raw.load_rejects (file_key, file_checksum, row_number, reason, raw_line)"
        " select %s, %s, row_number, reason, raw_line from stage_load_rejects",
        (key, checksum),
    )


_MANIFEST_COLUMNS = ("file_key", "version", "entity", "size_bytes", "checksum", "status",
                     "rows_total", "rows_loaded", "rows_rejected", "error", "notes", "run_id",
                     "source_tag")


def _record(cur, manifest: dict, **values) -> None:
    row = {**manifest, **values}
    cur.execute(
        sql.SQL("insert into ops.file_manifest ({}) values ({})").format(
            sql.SQL(", ").join(map(sql.Identifier, _MANIFEST_COLUMNS)),
            sql.SQL(", ").join(sql.Placeholder() * len(_MANIFEST_COLUMNS)),
        ),
        [row.get(c) for c in _MANIFEST_COLUMNS],
    )


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
