"""Raw load of file drops: each landing file version loaded exactly once into its raw table.

A file at ``<source>/<entity>/<YYYY-MM-DD>/<name>.csv[.gz]`` is checked row by row and, in one
transaction, its valid rows are COPY'd into ``raw.<source>__<entity>`` (append-only, with the
file's key, checksum and row number), its bad rows into ``raw.load_rejects`` and its version
into ``ops.file_manifest``. The same content under the same key again is skipped; changed
content is loaded as a new version.

One file's failure never stops the others. What ``ops.file_manifest.status`` then says:

- ``failed``: the file's own content cannot be loaded (``normalize.UnreadableFile``: empty, a
  bad header, not gzip, a drift policy of ``freeze``...), or the file is not one to load (a
  symbolic link, not a regular file, a hidden name, a key not in the layout: the landing zone's
  ``RefusedKey``; never read). Alerted; tried again only when the file is rewritten.
- ``failed`` too: its rows break their raw table's contract (``enforcement.check_loaded``, in
  the load's transaction: nothing of the file is kept); the checks are in ``ops.quality_results``
  and the table's owning domain is alerted.
- ``error``: the load failed for a reason of ours (an OSError writing the work files, a full
  disk, permissions, the warehouse connection, any other exception). Alerted, and pending again
  for the next run, which loads it as the next version.

Both are recorded with the run's ``run_id``. When even that cannot be recorded (the warehouse is
down), the other files are still tried, and ``load_new_files`` raises FileLoadsNotRecorded at
the end, naming every file that was not loaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from mage_project import alerts, config, enforcement, lineage, quality, warehouse
from mage_project.entities import FILE_ENTITIES, Entity
from mage_project.faults import failpoint
from mage_project.landing import LandingZone, RefusedKey
from mage_project.lineage import facets, naming
from mage_project.normalize import UnreadableFile, normalize_file, visible
from mage_project.runs import new_run_id

log = logging.getLogger(__name__)
PIPELINE = "warehouse_elt"
LOAD_BLOCK = "load_landing_file_drops"
_LAYOUT = re.compile(r"(?P<prefix>[a-z0-9_]+/[a-z0-9_]+)/(?P<day>\d{4}-\d{2}-\d{2})/[^/]+\.csv(\.gz)?")


@dataclass(frozen=True)
class DropFile:
    key: str
    entity: Entity
    day: str
    size: int = -1
    tag: str = ""
    refused: str | None = None  # why it is not loaded (the zone's reason, or not in the layout)

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
    """Every file under an entity's prefix. One the zone does not read (a link, a hidden name,
    ...) or not in the layout is listed with the reason it is not loaded, to be recorded and
    reported as such: nothing under a prefix is silently left out."""
    files = []
    for prefix, entity in FILE_ENTITIES.items():
        for e in zone.entries(prefix):
            drop = drop_file(e.key, e.size, e.tag)
            if drop is None or e.refused:
                drop = DropFile(e.key, entity, drop.day if drop else "", e.size, e.tag,
                                e.refused or f"not in the landing layout {prefix}/<YYYY-MM-DD>/"
                                "<name>.csv (or .csv.gz): not loaded")
            files.append(drop)
    return sorted(files, key=lambda f: (f.entity.table, f.order))


def pending_drops(zone: LandingZone | None = None) -> list[DropFile]:
    """Files new or rewritten since they were last seen: one listing and one query, no reads."""
    zone = zone or LandingZone(config.landing_url())
    db = warehouse.backend()
    warehouse.migrate(db)
    with db.connection(config.LOADER) as conn:
        with db.transaction(conn) as cur:
            seen = db.files_last_seen(cur)
    return [f for f in list_drops(zone) if seen.get(f.key) != (f.size, f.tag)]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _work_dir(run_id: str) -> Path:
    return config.work_dir() / PIPELINE / run_id


class FileLoadsNotRecorded(RuntimeError):
    """Files failed and even their failure could not be recorded (the warehouse is down, say)."""


def load_file(zone: LandingZone, drop: DropFile, run_id: str) -> dict:
    """Load one landing file's current content, once. Returns what happened to it; never raises
    for a failure of the file (see the module's statuses), only when the process is stopped."""
    known = {"key": drop.key, "size": drop.size, "checksum": ""}
    work = None
    try:
        if drop.refused:
            raise RefusedKey(f"{drop.key}: {drop.refused}")
        work = _work_dir(run_id) / hashlib.sha1(drop.key.encode()).hexdigest()[:16]
        work.mkdir(parents=True, exist_ok=True)
        local = zone.local_copy(drop.key, work)
        known.update(checksum=sha256_of(local), size=local.stat().st_size)
        result = dict(known)
        db = warehouse.backend()
        with db.connection(config.LOADER) as conn:
            db.prepare_file_load(conn, drop.entity)
            with db.transaction(conn) as cur:
                result.update(_load_version(db, cur, drop, local, work, run_id, result))
                failpoint("drops_before_commit")
        failpoint("drops_after_file")
    except RefusedKey as exc:
        # The file itself (a link, a hidden name, ...): failed, until it is replaced. Nothing of
        # what a link points to is read, so nothing of it can reach the manifest or an alert.
        log.warning("%s not loaded: %s", drop.key, exc)
        result = _record_not_loaded(drop, run_id, known, "failed", _message_text(str(exc)))
    except enforcement.ContractBroken as exc:
        return _contract_broken(drop, run_id, known, exc)
    except Exception as exc:  # noqa: BLE001 - one file's failure, whatever it is, stops no other
        return _load_error(drop, run_id, known, exc)
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
    if result["status"] == "failed":
        # Recorded (and committed) as failed: tell someone, and go on with the other files.
        alerts.send_failure_alert(PIPELINE, run_id, f"{drop.key} cannot be loaded: "
                                  f"{result['error']}", file=drop.key)
    return result


_MAX_MESSAGE = 2000


def _message_text(text: str) -> str:
    """Text for the manifest: NUL and undecodable bytes escaped, at most _MAX_MESSAGE long."""
    text = visible(text)
    return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE] + " [... truncated]"


def _message(exc: BaseException) -> str:
    """An exception as the manifest and the alert say it."""
    return _message_text(f"{type(exc).__name__}: {exc}".strip())


def _load_error(drop: DropFile, run_id: str, known: dict, exc: Exception) -> dict:
    """Record a load that failed for a reason of ours as 'error' (pending again), in a
    transaction of its own: the load's own was rolled back."""
    error = _message(exc)
    log.error("%s could not be loaded (%s): the next run tries it again", drop.key, error,
              exc_info=exc)
    result = _record_not_loaded(drop, run_id, known, "error", error)
    alerts.send_failure_alert(PIPELINE, run_id, f"{drop.key} could not be loaded ({error}); the"
                              " next run tries it again", file=drop.key)
    return result


def _contract_broken(drop: DropFile, run_id: str, known: dict, exc: enforcement.ContractBroken) -> dict:
    """The file's rows break their raw table's contract, so its load was rolled back. Recorded
    as 'failed' (its content: tried again when the file is rewritten), or as 'error' (pending
    again) when it is the table's columns that are not the contract's; every check stored in
    ops.quality_results; the owning domain alerted."""
    error = _message_text(f"breaks the contract of {exc.product.key}: {exc}")
    status = "error" if exc.of_the_table else "failed"
    log.error("%s not loaded (%s): %s", drop.key, status, error)
    result = _record_not_loaded(drop, run_id, known, status, error, exc.results)
    alerts.send_contract_alert(PIPELINE, run_id, exc.broken, [exc.product], "loaded")
    return result


def _record_not_loaded(drop: DropFile, run_id: str, known: dict, status: str, error: str,
                       results: list | None = None) -> dict:
    """Record the file's version as ``status`` (with the checks of its load, if any), in a
    transaction of its own: the load's own was rolled back."""
    result = {**known, "status": status, "error": error, "recorded": False}
    try:
        db = warehouse.backend()
        with db.connection(config.LOADER) as conn, db.transaction(conn) as cur:
            result["version"] = db.last_file_version(cur, drop.key) + 1
            _record(db, cur, {"file_key": drop.key, "version": result["version"],
                          "entity": drop.entity.table, "size_bytes": known["size"],
                          "checksum": known["checksum"], "run_id": run_id,
                          "source_tag": drop.tag}, status=status, error=error)
            quality.store(cur, run_id, PIPELINE, results or [])
        result["recorded"] = True
    except Exception as record_exc:  # noqa: BLE001 - said at the end of the run, with the others
        result["record_error"] = _message(record_exc)
        log.error("%s: the %s could not be recorded either (%s)", drop.key, status,
                  result["record_error"])
    return result


def _load_version(db, cur, drop: DropFile, local: Path, work: Path, run_id: str,
                  result: dict) -> dict:
    """Inside the load's transaction: skip the same content, else load it as a new version."""
    checksum, size = result["checksum"], result["size"]
    db.acquire_run_lock(cur, PIPELINE, config.run_lock_timeout_seconds())
    last = db.last_file_version(cur, drop.key)
    # Attempts that ended in 'error' loaded nothing: the content to compare with is the one
    # before them.
    latest = db.latest_file_content(cur, drop.key)
    if latest and latest[1] == checksum:
        # Delivered again with the same content: remember it as seen, load nothing.
        db.mark_file_seen(cur, drop.key, latest[0], drop.tag)
        return {"status": "skipped", "version": latest[0]}
    version = last + 1
    if latest:
        log.warning("%s changed since version %d: loading it as version %d",
                    drop.key, latest[0], version)
    manifest = {"file_key": drop.key, "version": version, "entity": drop.entity.table,
                "size_bytes": size, "checksum": checksum, "run_id": run_id,
                "source_tag": drop.tag}
    try:
        counts = normalize_file(drop.entity, local, drop.key, 0, work)
    except UnreadableFile as exc:
        error = _message_text(str(exc))
        _record(db, cur, manifest, status="failed", error=error)
        return {"status": "failed", "version": version, "error": error}
    db.copy_file_rows(cur, drop.entity, drop.key, checksum, counts)
    # The rows just written held to their table's contract: ContractBroken rolls all of it back.
    checks = enforcement.check_loaded(db, cur, drop.entity.qualified_name,
                                      "_file_key = %s and _file_checksum = %s", (drop.key, checksum))
    quality.store(cur, run_id, PIPELINE, checks)
    _record(db, cur, manifest, status="loaded", rows_total=counts.rows, rows_loaded=counts.valid,
            rows_rejected=counts.rejected, notes=_message_text(counts.notes) or None)
    return {"status": "loaded", "version": version, "rows": counts.rows,
            "rows_loaded": counts.valid, "rows_rejected": counts.rejected,
            "drift": counts.drift, "contract_checks": len(checks)}


def _record(db, cur, manifest: dict, **values) -> None:
    db.record_file_version(cur, {**manifest, **values})


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

    A rewritten file whose content is unchanged is skipped (and remembered as seen). Every file
    is tried whatever happened to the ones before; the summary counts each status and lists the
    files not loaded (``not_loaded``: key, status, error). Raises FileLoadsNotRecorded, after
    trying every file, when a failure could not even be recorded.
    """
    run_id = run_id or new_run_id()
    zone = zone or LandingZone(config.landing_url())
    with lineage.block(PIPELINE, LOAD_BLOCK, run_id) as step:
        drops = pending_drops(zone)
        files = [load_file(zone, drop, run_id) for drop in drops]
        step.inputs, loaded = _lineage_of(zone, drops, files)
        step.outputs = lineage.tables_written(warehouse.backend(), config.LOADER, loaded)
        return _summarize(run_id, files)


def _lineage_of(zone: LandingZone, drops: list[DropFile], files: list[dict]) -> tuple[list, list]:
    """The landing prefixes read (as datasets) and the raw tables written, with their rows."""
    prefixes, rows = {}, {}
    for drop, loaded in zip(drops, files, strict=True):
        prefixes.setdefault(drop.entity.landing_prefix(), drop.entity)
        if loaded["status"] == "loaded":
            table = drop.entity.qualified_name
            rows[table] = rows.get(table, 0) + loaded["rows_loaded"]
    inputs = [facets.files_dataset(naming.landing(zone.url, prefix), output=False)
              for prefix in sorted(prefixes)]
    return inputs, sorted(rows.items())


def _summarize(run_id: str, files: list[dict]) -> dict:
    with contextlib.suppress(OSError):  # an unusable work dir was each file's error already
        shutil.rmtree(_work_dir(run_id), ignore_errors=True)
    summary = {"run_id": run_id, "pipeline": PIPELINE, "files": files}
    for status in ("loaded", "skipped", "failed", "error"):
        summary[status] = sum(1 for f in files if f["status"] == status)
    summary["not_loaded"] = [{"key": f["key"], "status": f["status"], "error": f["error"]}
                             for f in files if f["status"] in ("failed", "error")]
    log.info("%s: %d files loaded, %d skipped (same content), %d failed (their content), %d in"
             " error (tried again next run)", PIPELINE, summary["loaded"], summary["skipped"],
             summary["failed"], summary["error"])
    unrecorded = [f for f in files if f.get("recorded") is False]
    if unrecorded:
        listed = "; ".join(f"{f['key']} ({f['status']}: {f['error']})"
                           for f in summary["not_loaded"])
        raise FileLoadsNotRecorded(
            f"{PIPELINE} run {run_id}: {len(summary['not_loaded'])} files not loaded: {listed}."
            f" Not even recorded in ops.file_manifest ({unrecorded[0]['record_error']}):"
            f" {[f['key'] for f in unrecorded]}; the next run tries them again")
    return summary
