"""``make demo``: ingest the last 3 days from the activity API (the bundled simulator when
ACTIVITY_API_URL is unset) and print what landed where."""

from __future__ import annotations

import os
import sys
import time
from datetime import UTC, datetime, timedelta

from psycopg2 import sql

from mage_project import config
from mage_project.runner import SIMULATOR, activity_api

SUMMARY = """
select occurred_at::date as day, count(*) as events, count(distinct user_id) as users,
       count(*) filter (where event_type = 'purchase') as purchases,
       coalesce(sum(amount), 0) as revenue
from raw.user_activity
where occurred_at >= %s and occurred_at < %s
group by 1 order by 1
"""


FILES = """
select entity, count(*) filter (where status = 'loaded'), count(*) filter (where status = 'failed'),
       coalesce(sum(rows_loaded), 0), coalesce(sum(rows_rejected), 0)
from ops.file_manifest group by entity order by entity
"""


def main() -> int:
    from mage_project.runner import run_pipeline
    from mage_project.runs import new_run_id
    from mage_project.warehouse import postgres

    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start, end = today - timedelta(days=3), today
    run_id = new_run_id()
    simulated = not os.environ.get("ACTIVITY_API_URL")
    with activity_api() as url:
        print(f"activity API: {url}")
        t0 = time.monotonic()
        try:
            run_pipeline(
                "user_activity_ingest",
                {"run_id": run_id, "window_start": start.isoformat(),
                 "window_end": end.isoformat()},
            )
        except Exception as exc:
            print(f"demo run failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        elapsed = time.monotonic() - t0
        if simulated:
            # The other systems' exports for the same days, consistent with the simulator.
            from mage_project.landing import LandingZone
            from mage_project.sources.file_drops import write_drops

            write_drops(LandingZone(config.landing_url()), start.date(), end.date(), **SIMULATOR)
        try:
            run_pipeline("warehouse_elt", {"run_id": new_run_id(), "wait_for_files": False})
        except Exception as exc:
            print(f"demo run failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
    with postgres.connection() as conn, conn.cursor() as cur:
        cur.execute(SUMMARY, (start, end))
        days = cur.fetchall()
        cur.execute(
            "select rows_fetched, rows_loaded, rows_rejected, rows_duplicate, rows_changed"
            " from ops.pipeline_runs where run_id = %s", (run_id,))
        fetched, loaded, rejected, duplicate, changed = cur.fetchone()
        cur.execute("select count(*) from raw.user_activity")
        (total,) = cur.fetchone()
        cur.execute("select count(*) from raw.user_activity_rejects")
        (rejects_total,) = cur.fetchone()
    settings = config.postgres()
    where = "embedded PostgreSQL" if settings.embedded else f"{settings.host}:{settings.port}"
    print(f"\nuser_activity_ingest run {run_id}: [{start:%Y-%m-%d}, {end:%Y-%m-%d}) "
          f"in {elapsed:.1f} s into {where}/{settings.dbname}")
    print(f"  fetched {fetched}, loaded {loaded}, rejected {rejected}, "
          f"duplicates collapsed {duplicate}, rows changed {changed}")
    print(f"\n  {'day':<12}{'events':>8}{'users':>7}{'purchases':>11}{'revenue':>12}")
    for day, events, users, purchases, revenue in days:
        print(f"  {day!s:<12}{events:>8}{users:>7}{purchases:>11}{revenue:>12.2f}")
    print(f"\n  raw.user_activity: {total} rows; raw.user_activity_rejects: {rejects_total} rows")
    with postgres.connection() as conn, conn.cursor() as cur:
        cur.execute(FILES)
        files = cur.fetchall()
    print("\nwarehouse_elt: landing files by entity (versions loaded, failed; raw rows, rejects)")
    for entity, loaded, failed, rows, rejected in files:
        print(f"  {entity:<22}{loaded:>4} loaded{failed:>3} failed{rows:>8} rows{rejected:>4} rejected")
    with postgres.connection() as conn, conn.cursor() as cur:
        print("\nmarts (dbt):")
        for mart in ("dim_customers", "fct_daily_revenue", "fct_campaign_performance",
                     "fct_daily_active_users"):
            cur.execute(sql.SQL("select count(*) from {}").format(sql.Identifier("marts", mart)))
            print(f"  marts.{mart}: {cur.fetchone()[0]} rows")
        cur.execute("select sum(net_revenue), sum(refunds) from marts.fct_daily_revenue")
        net, refunds = cur.fetchone()
        cur.execute("select count(*) filter (where first_paid_at is not null) from marts.dim_customers")
        (paying,) = cur.fetchone()
    print(f"  net revenue {net:.2f} USD (refunds {refunds:.2f}); {paying} paying customers")
    return 0
