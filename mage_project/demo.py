"""``make demo``: ingest the last 3 days from the activity API (the bundled simulator when
ACTIVITY_API_URL is unset) and print what landed where, read through the warehouse interface
from the warehouse WAREHOUSE names (the same summary on PostgreSQL and Snowflake)."""

from __future__ import annotations

import os
import sys
import time
from datetime import UTC, datetime, timedelta

from mage_project import config, warehouse
from mage_project.progress import Progress, error_line
from mage_project.runner import SIMULATOR, activity_api, first_line, output_to, run_pipeline

MARTS = ("dim_customers", "fct_daily_revenue", "fct_campaign_performance",
         "fct_daily_active_users")


def main() -> int:
    from mage_project.runs import new_run_id

    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start, end = today - timedelta(days=3), today
    run_id = new_run_id()
    db = warehouse.backend()
    # Before the runs: they export the embedded server's socket as POSTGRES_HOST for dbt.
    where = db.describe()
    elapsed = _run_pipelines(run_id, start, end)
    if elapsed is None:
        return 1
    with db.connection(config.TRANSFORMER) as conn:
        with db.transaction(conn) as cur:
            _print_activity(db, cur, run_id, start, end, elapsed, where)
        with db.transaction(conn) as cur:
            _print_file_drops(db, cur)
        with db.transaction(conn) as cur:
            _print_marts(db, cur)
    return 0


def _run_pipelines(run_id: str, start: datetime, end: datetime) -> float | None:
    """Both pipelines over ``[start, end)``, a line each once it ends, their own output in a log
    file: the seconds user_activity_ingest took, or None (said on stderr, with the log file) when
    a run failed."""
    from mage_project.runs import new_run_id

    simulated = not os.environ.get("ACTIVITY_API_URL")
    log = config.data_dir() / "logs" / f"demo-{run_id}.log"
    with activity_api() as url:
        print(f"activity API: {url}\nlog (Mage's and dbt's output): {log}")
        elapsed = _ran(log, "user_activity_ingest",
                       {"run_id": run_id, "window_start": start.isoformat(),
                        "window_end": end.isoformat()})
        if elapsed is None:
            return None
        if simulated:
            # The other systems' exports for the same days, consistent with the simulator.
            from mage_project.landing import LandingZone
            from mage_project.sources.file_drops import write_drops

            with output_to(log):
                write_drops(LandingZone(config.landing_url()), start.date(), end.date(), **SIMULATOR)
        variables = {"run_id": new_run_id(), "wait_for_files": False}
        if _ran(log, "warehouse_elt", variables) is None:
            return None
    return elapsed


def _ran(log, pipeline: str, variables: dict) -> float | None:
    """Run ``pipeline``, its output into ``log``, its blocks shown as they end (on stderr: a line
    each; on a terminal, rich's live display, gone once the run ends): the seconds it took, or
    None when it failed."""
    t0 = time.monotonic()
    error = None
    with Progress(transient=True) as shown:
        try:
            with output_to(log):
                run_pipeline(pipeline, variables, observer=shown)
        except Exception as exc:
            error = exc
    if error is not None:
        print(f"{pipeline} ... failed", flush=True)
        block = shown.failed
        what = (f"block {block.block} of {pipeline} failed: {block.error}" if block is not None
                else f"{pipeline} failed before its first block: {first_line(error)}")
        print(error_line(what, "fix the cause, then run the demo again", log), file=sys.stderr)
        return None
    elapsed = time.monotonic() - t0
    print(f"{pipeline} ... done in {elapsed:.1f} s", flush=True)
    return elapsed


def _print_activity(db, cur, run_id: str, start: datetime, end: datetime, elapsed: float,
                    where: str) -> None:
    counts = db.run_counts(cur, run_id) or {}
    print(f"\nuser_activity_ingest run {run_id}: [{start:%Y-%m-%d}, {end:%Y-%m-%d}) "
          f"in {elapsed:.1f} s into {where}")
    print(f"  fetched {counts.get('rows_fetched')}, loaded {counts.get('rows_loaded')}, "
          f"rejected {counts.get('rows_rejected')}, duplicates collapsed "
          f"{counts.get('rows_duplicate')}, rows changed {counts.get('rows_changed')}")
    print(f"\n  {'day':<12}{'events':>8}{'users':>7}{'purchases':>11}{'revenue':>12}")
    for d in db.activity_by_day(cur, start, end):
        print(f"  {d.day!s:<12}{d.events:>8}{d.users:>7}{d.purchases:>11}{d.revenue:>12.2f}")
    total = db.row_count(cur, "raw", "user_activity")
    rejects_total = db.row_count(cur, "raw", "user_activity_rejects")
    print(f"\n  raw.user_activity: {total} rows; raw.user_activity_rejects: {rejects_total} rows")


def _print_file_drops(db, cur) -> None:
    print("\nwarehouse_elt: landing files by entity (versions loaded, failed; raw rows, rejects)")
    for f in db.file_loads_by_entity(cur):
        print(f"  {f.entity:<22}{f.loaded:>4} loaded{f.failed:>3} failed{f.rows_loaded:>8} rows"
              f"{f.rows_rejected:>4} rejected")


def _print_marts(db, cur) -> None:
    print("\nmarts (dbt):")
    for mart in MARTS:
        print(f"  marts.{mart}: {db.row_count(cur, 'marts', mart)} rows")
    net, refunds, paying = db.marts_totals(cur)
    print(f"  net revenue {net:.2f} USD (refunds {refunds:.2f}); {paying} paying customers")
