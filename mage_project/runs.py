"""Run bookkeeping: run ids, watermarks and ``ops.pipeline_runs`` rows."""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime

from mage_project import config
from mage_project.entities import Entity
from mage_project.warehouse import backend, backend_for, migrate

log = logging.getLogger(__name__)


def new_run_id() -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def run_id_for(mage_kwargs: dict, notebook: str | None = None) -> str:
    """The run id of a block's run: the runner's, else one derived from Mage's pipeline run.

    Derived ids are stable across a run's blocks and retries, so a failure callback and the
    exporter name the same run. A block run from the editor's notebook belongs to no pipeline
    run. With ``notebook``, it belongs to its editor session's: ``<notebook>-<pid>-<hash>``, of
    the process that runs it. Mage runs every notebook block of a session in the session's
    kernel, one process, so the blocks a user runs there (a plan, the dbt block, the publish, a
    failure callback) name one run, and running one again is that run again; another editor
    (another Mage server, or this one's kernel after a restart) is another run. The hash of the
    host, pid and process start time tells apart processes that had the same pid. Without
    ``notebook``, a new id.
    """
    if mage_kwargs.get("run_id"):
        return str(mage_kwargs["run_id"])
    if mage_kwargs.get("pipeline_run_id") is not None:
        return f"mage-{mage_kwargs['pipeline_run_id']}"
    if not notebook:
        return new_run_id()
    import hashlib
    import os
    import socket

    import psutil

    pid = os.getpid()
    process = f"{socket.gethostname()}/{pid}/{psutil.Process(pid).create_time()!r}"
    return f"{notebook}-{pid}-{hashlib.sha256(process.encode()).hexdigest()[:8]}"


def execution_date_for(mage_kwargs: dict):
    """The block's ``execution_date``, with a naive one given its zone.

    Mage hands a notebook run ``datetime.now()``: naive, the machine's local time. A scheduled
    run gets its pipeline run's execution date, naive UTC where Mage's database keeps no zone
    (SQLite). So a naive time is local in the notebook (no pipeline run, no runner's run id)
    and UTC otherwise; the command-line runner passes an aware RFC 3339 text.
    """
    value = mage_kwargs.get("execution_date")
    notebook = not mage_kwargs.get("run_id") and mage_kwargs.get("pipeline_run_id") is None
    if notebook and isinstance(value, datetime) and value.tzinfo is None:
        return value.astimezone(UTC)  # a naive datetime's astimezone reads it as local time
    return value


def read_watermark(cur, entity: Entity) -> datetime | None:
    return backend_for(cur).read_watermark(cur, entity)


def write_watermark(cur, entity: Entity, watermark: datetime, run_id: str) -> None:
    """Set the watermark, never moving it backwards (each warehouse upserts in its own SQL)."""
    backend_for(cur).upsert_watermark(cur, entity, watermark, run_id)


def window_loaded_before(cur, pipeline: str, start: datetime, end: datetime) -> bool:
    """Whether a successful run of ``pipeline`` covered any part of ``[start, end)``."""
    return backend_for(cur).window_loaded_before(cur, pipeline, start, end)


RUN_COLUMNS = (
    "run_id", "pipeline", "window_start", "window_end", "status", "rows_fetched", "rows_loaded",
    "rows_rejected", "rows_duplicate", "rows_changed", "started_at", "duration_seconds", "error",
    "drift",
)


def record_run(cur, **values) -> None:
    """Insert or update the row of one run: a retried run keeps one row with its last outcome,
    and a failure recorded after a success (a block's @test failing after the load committed)
    keeps the counts already recorded."""
    row = {name: values.get(name) for name in RUN_COLUMNS}
    if row["started_at"] is not None and row["duration_seconds"] is None:
        row["duration_seconds"] = (datetime.now(UTC) - row["started_at"]).total_seconds()
    backend_for(cur).upsert_run(cur, row)


def record_block_failure(mage_kwargs: dict, error) -> None:
    """A block failed under Mage: record its pipeline's run (the failure callback)."""
    from mage_project import lineage

    reason = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(error)
    run_id = run_id_for(mage_kwargs)
    if mage_kwargs.get("run_id") or mage_kwargs.get("pipeline_run_id") is not None:
        # A notebook's block belongs to no pipeline run: its own lineage said it failed.
        lineage.run_failed(mage_kwargs["pipeline_uuid"], run_id, reason)
    try:
        record_failed_run(
            mage_kwargs["pipeline_uuid"],
            run_id,
            reason,
            window_start=mage_kwargs.get("window_start"),
            window_end=mage_kwargs.get("window_end"),
        )
    except Exception:  # the warehouse itself may be what failed; Mage still alerts
        log.exception("could not record the failed run")


def record_failed_run(pipeline: str, run_id: str, error: str, *, window_start=None,
                      window_end=None, started_at: datetime | None = None) -> None:
    """Record a failed run in ``ops.pipeline_runs`` of the configured warehouse, in its own
    transaction (after the run's own rollback)."""
    db = backend()
    migrate(db)
    with db.connection(config.LOADER) as conn:
        with db.transaction(conn) as cur:
            record_run(cur, run_id=run_id, pipeline=pipeline, window_start=window_start,
                       window_end=window_end, status="failed", started_at=started_at,
                       error=str(error)[:4000])
