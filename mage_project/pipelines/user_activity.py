"""The ``user_activity_ingest`` pipeline's three steps, one per Mage block.

fetch   the window's events from the API into CSV files in the landing zone -> manifest
validate each landing file into valid rows and rejects                    -> manifest
load    bulk load (the backend's ``load_rows``: PostgreSQL COPY straight in, or staging +
        upsert; Snowflake PUT + COPY INTO staging + upsert), rejects, watermark and the run's
        row, in one transaction of the warehouse WAREHOUSE names

Blocks hand each other manifests (file keys and counts), never the day's data.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path

from mage_project import alerts, config, enforcement, lineage, quality, warehouse
from mage_project.entities import USER_ACTIVITY as ENTITY
from mage_project.faults import failpoint
from mage_project.landing import LandingZone
from mage_project.lineage import facets, naming
from mage_project.runs import (
    new_run_id,
    read_watermark,
    record_run,
    window_loaded_before,
    write_watermark,
)
from mage_project.sources.activity_api import EVENTS_PATH, ActivityApiClient
from mage_project.validation import landing_header, landing_row, merge_drift, validate_files
from mage_project.windows import (
    Window,
    as_utc,
    days,
    explicit_window,
    next_watermark,
    scheduled_window,
)

log = logging.getLogger(__name__)
PIPELINE = ENTITY.pipeline
FETCH, VALIDATE, LOAD = ("fetch_activity_user_activity", "validate_activity_user_activity",
                         "load_postgres_user_activity")  # the blocks, for their lineage


def resolve_window(cur, window_start=None, window_end=None, execution_date=None) -> Window | None:
    if window_start or window_end:
        if not (window_start and window_end):
            raise ValueError("an explicit window needs both window_start and window_end")
        return explicit_window(window_start, window_end)
    lookback = timedelta(hours=config.activity_lookback_hours())
    return scheduled_window(
        as_utc(execution_date or datetime.now(UTC)), read_watermark(cur, ENTITY), lookback
    )


def fetch(
    run_id: str | None = None,
    window_start=None,
    window_end=None,
    execution_date=None,
    sample_rows: int | None = None,
) -> dict:
    """Fetch the run's window into landing files, one partition per UTC day.

    Each landing row keeps the record as the API sent it (``_record``) beside its declared
    fields. ``sample_rows`` (at least 1) stops after that many events, for trials; the
    watermark then stays where it was.
    """
    sample_rows = config.sample_rows(sample_rows)
    started_at = datetime.now(UTC)
    run_id = run_id or new_run_id()
    api = config.activity_api()
    landing = LandingZone(config.landing_url())
    chunk_rows = config.landing_chunk_rows()
    _remove_stale_run_dirs()
    with lineage.block(PIPELINE, FETCH, run_id) as step:
        window = _planned_window(window_start, window_end, execution_date)
        manifest = _manifest(run_id, started_at, window, landing, sample_rows,
                             explicit=bool(window_start or window_end))
        if window is None:
            log.info("%s: nothing to fetch yet (watermark is at the execution day)", PIPELINE)
            return manifest
        step.window = (manifest["window_start"], manifest["window_end"])
        with ActivityApiClient(api) as client:
            _land_window(client, landing, window, manifest, chunk_rows)
            manifest["api_requests"] = client.stats
        step.inputs = [facets.files_dataset(naming.http_api(api.url, EVENTS_PATH), output=False)]
        step.outputs = [_landing_dataset(manifest, output=True)]
    log.info(
        "%s: fetched %d events into %d files for [%s, %s)",
        PIPELINE, manifest["rows_fetched"], len(manifest["files"]),
        manifest["window_start"], manifest["window_end"],
    )
    return manifest


def _manifest(run_id: str, started_at: datetime, window: Window | None, landing: LandingZone,
              sample_rows: int | None, explicit: bool) -> dict:
    return {
        "run_id": run_id,
        "pipeline": PIPELINE,
        "started_at": started_at.isoformat(),
        "explicit": explicit,
        "window_start": window.start.isoformat() if window else None,
        "window_end": window.end.isoformat() if window else None,
        "landing_url": landing.url,
        "files": [],
        "rows_fetched": 0,
        "sample_rows": sample_rows,
    }


def _landing_dataset(manifest: dict, output: bool):
    """The landing zone's files of the entity, as one dataset (with this run's counts)."""
    return facets.files_dataset(
        naming.landing(manifest["landing_url"], ENTITY.landing_prefix()), output=output,
        rows=manifest["rows_fetched"], files=len(manifest["files"]),
        size=sum(f["bytes"] for f in manifest["files"]))


def _planned_window(window_start, window_end, execution_date) -> Window | None:
    """The run's window, read against the warehouse's watermark (migrated first)."""
    db = warehouse.backend()
    warehouse.migrate(db)
    with db.connection(config.LOADER) as conn:
        with db.transaction(conn) as cur:
            return resolve_window(cur, window_start, window_end, execution_date)


def _land_window(client: ActivityApiClient, landing: LandingZone, window: Window,
                 manifest: dict, chunk_rows: int) -> None:
    """The window's events into landing files, day by day, each file added to ``manifest``;
    stops after ``manifest["sample_rows"]`` events when that is set."""
    run_id, sample_rows = manifest["run_id"], manifest["sample_rows"]
    remaining = sample_rows
    for day in days(window):
        events = client.iter_events(day.start, day.end)
        rows = (landing_row(ENTITY, event) for event in islice(events, remaining))
        partition = f"{ENTITY.landing_prefix()}/date={day.start:%Y-%m-%d}"
        for landed in landing.write_parts(
            lambda part, p=partition: f"{p}/{run_id}-{part:05d}.csv",
            landing_header(ENTITY),
            rows,
            chunk_rows,
        ):
            manifest["files"].append(landed.as_dict())
            manifest["rows_fetched"] += landed.rows
            failpoint("after_landing_part")
        if remaining is not None:
            remaining = sample_rows - manifest["rows_fetched"]
            if remaining <= 0:
                break


def _run_dir(run_id: str) -> Path:
    return config.work_dir() / PIPELINE / run_id


STALE_WORK_SECONDS = 24 * 3600  # well past the trigger's 3 h timeout


def _remove_stale_run_dirs() -> None:
    """Scratch files of runs that died before their load committed (a committed run removes
    its own)."""
    root = config.work_dir() / PIPELINE
    if not root.is_dir():
        return
    cutoff = time.time() - STALE_WORK_SECONDS
    for run_dir in root.iterdir():
        if run_dir.is_dir() and run_dir.stat().st_mtime < cutoff:
            shutil.rmtree(run_dir, ignore_errors=True)


def validate(manifest: dict) -> dict:
    """Split each landing file into valid rows and rejects; add their files and counts."""
    result = dict(manifest)
    result["validated"] = []
    with lineage.block(PIPELINE, VALIDATE, manifest["run_id"],
                       window=(manifest["window_start"], manifest["window_end"])) as step:
        if not manifest["files"]:
            return result
        step.inputs = [_landing_dataset(manifest, output=False)]
        _validate_files(manifest, result)
    return result


def _validate_files(manifest: dict, result: dict) -> None:
    landing = LandingZone(manifest["landing_url"])
    window = explicit_window(manifest["window_start"], manifest["window_end"])
    run_dir = _run_dir(manifest["run_id"])
    files = [(landing.local_copy(f["key"], run_dir), f["key"]) for f in manifest["files"]]
    counts = validate_files(ENTITY, files, manifest["run_id"], window, run_dir)
    result["validated"] = [c.as_dict() for c in counts]
    result["rows_valid"] = sum(c.valid for c in counts)
    result["rows_rejected"] = sum(c.rejected for c in counts)
    result["drift"] = merge_drift(counts)
    if result["drift"]:
        log.warning("%s: records drifted from the declaration: %s", PIPELINE, result["drift"])
    failpoint("after_validate")


def load(validated: dict) -> dict:
    """Write the run in one transaction: rows, rejects, watermark and the run's success."""
    summary = _summary(validated)
    with lineage.block(PIPELINE, LOAD, validated["run_id"], last=True,
                       window=(validated["window_start"], validated["window_end"])) as step:
        if validated["window_start"] is None:
            summary["status"] = "success"
            return summary
        step.inputs = [_landing_dataset(validated, output=False)]
        _load_window(validated, summary, step)
    return summary


def _load_window(validated: dict, summary: dict, step) -> None:
    t0 = time.monotonic()
    db = warehouse.backend()
    warehouse.migrate(db)
    with db.connection(config.LOADER) as conn:
        db.prepare_upsert(conn, ENTITY)  # Snowflake: its DDL commits, so before the transaction
        try:
            with db.transaction(conn) as cur:
                db.acquire_run_lock(cur, PIPELINE, config.run_lock_timeout_seconds())
                step.checks[ENTITY.qualified_name] = _write_run(db, cur, validated, summary)
                failpoint("before_commit")
        except enforcement.ContractBroken as exc:
            step.checks[ENTITY.qualified_name] = exc.results
            # Nothing of the run was kept (rows, rejects, watermark): the next run loads the
            # window again. The checks say why; the owning domain is told.
            with db.transaction(conn) as cur:
                quality.store(cur, validated["run_id"], PIPELINE, exc.results)
            alerts.send_contract_alert(PIPELINE, validated["run_id"], exc.broken, [exc.product], "loaded")
            raise
    failpoint("after_commit")
    step.outputs = lineage.tables_written(db, config.LOADER, [
        (ENTITY.qualified_name, summary["rows_loaded"]),
        (f"{ENTITY.schema}.{ENTITY.rejects_table}", summary["rejects_new"])])
    summary["load_seconds"] = round(time.monotonic() - t0, 3)
    shutil.rmtree(_run_dir(validated["run_id"]), ignore_errors=True)


def _summary(validated: dict) -> dict:
    """The run's summary before anything is loaded."""
    return {
        "run_id": validated["run_id"],
        "pipeline": PIPELINE,
        "window_start": validated["window_start"],
        "window_end": validated["window_end"],
        "rows_fetched": validated["rows_fetched"],
        "rows_loaded": 0,
        "rows_rejected": validated.get("rows_rejected", 0),
        "rows_duplicate": 0,
        "rows_changed": 0,
        "rejects_new": 0,
        "drift": validated.get("drift") or {},
    }


def _write_run(db, cur, validated: dict, summary: dict) -> list:
    """Inside the load's transaction, under the write lock: the rows, the rejects, the
    watermark and the run's row; ``summary`` gets the counts. Returns the contract's checks."""
    run_id = validated["run_id"]
    window = explicit_window(validated["window_start"], validated["window_end"])
    files = [(item["key"], Path(item["valid_path"])) for item in validated["validated"]]
    # A window no successful run covered may go straight into the table where the warehouse
    # can refuse a key twice (the backend chooses).
    staged, distinct, changed = db.load_rows(
        cur, ENTITY, run_id, files,
        new_window=not window_loaded_before(cur, PIPELINE, window.start, window.end))
    # The rows this run wrote held to raw.user_activity's contract: ContractBroken rolls it back.
    checks = enforcement.check_loaded(db, cur, ENTITY.qualified_name, "_run_id = %s", (run_id,))
    quality.store(cur, run_id, PIPELINE, checks)
    # Rejects count once per distinct record: the same JSON twice in a run is a duplicate.
    rejected, rejects_new = db.insert_rejects(
        cur, ENTITY, [Path(item["rejects_path"]) for item in validated["validated"]]
    )
    # A sampled (interactive) run loaded only part of its window: the watermark stays.
    if validated.get("sample_rows") is None:
        current = read_watermark(cur, ENTITY)
        target = next_watermark(current, window)
        if target is not None and target != current:
            write_watermark(cur, ENTITY, target, run_id)
    summary.update(
        rows_loaded=distinct,
        rows_rejected=rejected,
        rows_duplicate=staged - distinct + summary["rows_rejected"] - rejected,
        rows_changed=changed,
        rejects_new=rejects_new,
        status="success",
    )
    record_run(
        cur,
        **{**summary, "drift": json.dumps(summary["drift"]) if summary["drift"] else None},
        started_at=datetime.fromisoformat(validated["started_at"]),
    )
    return checks
