"""Time: a machine and a PostgreSQL session in New York time load what UTC loads, across the
change from daylight saving time (2026-11-01, 06:00 UTC: 02:00 EDT becomes 01:00 EST), and a
scheduled run after an outage catches up every day it missed, each once.

New York time is set where a user's machine sets it: TZ for the process, and for PostgreSQL both
the database's default (``alter database ... set timezone``) and libpq's PGTZ. Every run here is
a real child process; the runs under test go through the command line (Mage and all).
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import uuid
from collections import Counter, defaultdict
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg2
import pytest
from conftest import ROOT, _admin, query, run_cli
from psycopg2 import sql
from support import SIM, expected_rows, loaded_rows
from support.file_drops import expected_latest

from mage_project.landing import LandingZone
from mage_project.sources.activity_simulator import generate_events
from mage_project.sources.file_drops import write_drops

NEW_YORK = "America/New_York"
# New York's 30 and 31 October and 1 November, as a user there types them: 73 hours, the last
# day 25 hours long.
LOCAL_START, LOCAL_END = "2026-10-30T00:00:00-04:00", "2026-11-02T00:00:00-05:00"
WINDOW_START = datetime(2026, 10, 30, 4, tzinfo=UTC)
WINDOW_END = datetime(2026, 11, 2, 5, tzinfo=UTC)
CATCH_UP = "2026-11-04T02:00:00Z"  # the scheduled run two days later: the 02:00 UTC trigger's
LOOKBACK = timedelta(hours=24)  # ACTIVITY_LOOKBACK_HOURS' default

# The ingest's three steps in a child process (the library, where Mage is not what is tested).
STEPS = """
import json, sys
from mage_project.pipelines import user_activity as steps
print(json.dumps(steps.load(steps.validate(steps.fetch(**json.loads(sys.argv[1])))), default=str))
"""


@contextmanager
def database(pg_server, timezone: str, landing):
    """A fresh database whose sessions default to ``timezone``, and the settings of a process
    that uses it: its POSTGRES_*, TZ and PGTZ, and a landing zone of its own."""
    name = f"tz_{uuid.uuid4().hex[:12]}"
    admin = _admin(pg_server)
    with admin.cursor() as cur:
        cur.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
        cur.execute(sql.SQL("alter database {} set timezone = {}").format(
            sql.Identifier(name), sql.Literal(timezone)))
    env = {"POSTGRES_HOST": pg_server.socket_dir, "POSTGRES_PORT": str(pg_server.port),
           "POSTGRES_USER": pg_server.user, "POSTGRES_DBNAME": name, "TZ": timezone,
           "PGTZ": timezone, "LANDING_URL": landing.as_uri()}
    conn = psycopg2.connect(host=pg_server.socket_dir, port=pg_server.port, user=pg_server.user,
                            dbname=name)
    conn.autocommit = True
    try:
        assert query(conn, "show timezone") == [(timezone,)]
        yield conn, env
    finally:
        conn.close()
        with admin.cursor() as cur:
            cur.execute(sql.SQL("drop database {} with (force)").format(sql.Identifier(name)))
        admin.close()


def run_steps(env: dict, **kwargs) -> dict:
    result = subprocess.run([sys.executable, "-c", STEPS, json.dumps(kwargs)], cwd=ROOT,
                            env={**os.environ, **env}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


def run_records(conn) -> list[tuple]:
    return query(conn, "select window_start, window_end, status, rows_fetched, rows_loaded,"
                       " rows_rejected, rows_duplicate, rows_changed from ops.pipeline_runs"
                       " order by started_at")


def partitions(conn, landing) -> list[dict[date, int]]:
    """Each run's landing files (in run order) as {partition date: rows}; every row's occurred_at
    falls on its partition's UTC date."""
    zone = LandingZone(landing.as_uri())
    by_run: dict[str, Counter] = defaultdict(Counter)
    for entry in zone.entries("activity/user_activity"):
        folder, name = entry.key.split("/")[-2:]
        day = date.fromisoformat(folder.removeprefix("date="))
        for row in csv.DictReader(io.StringIO(zone.read_bytes(entry.key).decode())):
            try:
                at = datetime.fromisoformat(row["occurred_at"])
            except (TypeError, ValueError):
                at = None  # one of the simulator's invalid records
            if at is not None and at.tzinfo is not None:
                assert at.astimezone(UTC).date() == day, f"{entry.key} holds an event of {at}"
            by_run[name.rsplit("-", 1)[0]][day] += 1
    order = [run for (run,) in query(conn, "select run_id from ops.pipeline_runs order by started_at")]
    assert sorted(by_run) == sorted(order)
    return [dict(by_run[run]) for run in order]


def events_by_day(start: datetime, end: datetime) -> dict[date, int]:
    """How many events the simulator serves for each UTC day's part of ``[start, end)``."""
    served, cursor = {}, start
    while cursor < end:
        midnight = datetime.combine(cursor.date() + timedelta(days=1), datetime.min.time(), UTC)
        served[cursor.date()] = sum(1 for _ in generate_events(cursor, min(midnight, end), **SIM))
        cursor = min(midnight, end)
    return served


@pytest.mark.reliability
def test_a_new_york_machine_and_session_load_what_utc_loads_across_the_dst_end(
        pg_server, simulator, tmp_path):
    """A window of New York days across the DST end, then the scheduled run two days later,
    once on a UTC machine and session and once in New York time: the same rows, the same landing
    partitions (UTC dates), the same run windows and counts, the same watermark."""
    simulator()
    with database(pg_server, "UTC", tmp_path / "utc") as (utc, utc_env), \
            database(pg_server, NEW_YORK, tmp_path / "new_york") as (ny, ny_env):
        run_steps(utc_env, window_start=LOCAL_START, window_end=LOCAL_END)
        run_steps(utc_env, execution_date=CATCH_UP)
        for args in (("--start", LOCAL_START, "--end", LOCAL_END), ("--execution-date", CATCH_UP)):
            result = run_cli("run", "user_activity_ingest", *args, env=ny_env)
            assert result.returncode == 0, result.stderr[-3000:]

        catch_up_end = datetime(2026, 11, 4, tzinfo=UTC)
        rows, _, _ = expected_rows(WINDOW_START, catch_up_end)
        assert loaded_rows(ny) == loaded_rows(utc) == rows
        records = run_records(ny)
        assert records == run_records(utc)
        assert [r[:3] for r in records] == [(WINDOW_START, WINDOW_END, "success"),
                                            (WINDOW_END - LOOKBACK, catch_up_end, "success")]
        assert query(ny, "select watermark from ops.watermarks") == query(
            utc, "select watermark from ops.watermarks") == [(catch_up_end,)]
        landed = partitions(ny, tmp_path / "new_york")
        assert landed == partitions(utc, tmp_path / "utc")
        assert landed == [events_by_day(WINDOW_START, WINDOW_END),
                          events_by_day(WINDOW_END - LOOKBACK, catch_up_end)]
        assert sorted(landed[0]) == [date(2026, 10, 30), date(2026, 10, 31), date(2026, 11, 1),
                                   date(2026, 11, 2)]


@pytest.mark.reliability
def test_the_scheduled_run_after_a_three_day_outage_loads_every_missed_day_once(warehouse,
                                                                              simulator):
    """The watermark is at 30 October: the runs of 31 October, 1 and 2 November never happened.
    The scheduled run of 2 November catches up from the watermark (less the lookback) to its
    execution day, in one run: each day's events are loaded once, the earlier day's rows are
    left as they were."""
    simulator()
    before, outage_start = datetime(2026, 10, 29, tzinfo=UTC), datetime(2026, 10, 30, tzinfo=UTC)
    execution_day = datetime(2026, 11, 2, tzinfo=UTC)
    first = run_steps({}, window_start=before.isoformat(), window_end=outage_start.isoformat())
    assert query(warehouse, "select watermark from ops.watermarks") == [(outage_start,)]

    result = run_cli("run", "user_activity_ingest", "--execution-date", "2026-11-02T02:00:00Z")
    assert result.returncode == 0, result.stderr[-3000:]

    rows, _, _ = expected_rows(before, execution_day)
    assert loaded_rows(warehouse) == rows
    [(catch_up,)] = query(warehouse, "select run_id from ops.pipeline_runs where run_id <> %s",
                          (first["run_id"],))
    earlier, _, _ = expected_rows(before, outage_start)
    assert run_records(warehouse) == [
        (before, outage_start, "success", *[first[k] for k in (
            "rows_fetched", "rows_loaded", "rows_rejected", "rows_duplicate", "rows_changed")]),
        (outage_start - LOOKBACK, execution_day, "success", *expected_counts(
            outage_start - LOOKBACK, execution_day), len(rows) - len(earlier))]
    assert query(warehouse, "select watermark, run_id from ops.watermarks") == [
        (execution_day, catch_up)]
    # Every day once, by one run: the lookback day stays the first run's.
    per_day = Counter(at.date() for _, _, at, *_ in rows.values())
    assert query(warehouse, "select (occurred_at at time zone 'UTC')::date, _run_id, count(*)"
                            " from raw.user_activity group by 1, 2 order by 1") == [
        (day, first["run_id"] if day < outage_start.date() else catch_up, per_day[day])
        for day in sorted(per_day)]
    assert sorted(per_day) == [date(2026, 10, 29), date(2026, 10, 30), date(2026, 10, 31),
                               date(2026, 11, 1)]


def expected_counts(start: datetime, end: datetime) -> tuple[int, int, int, int]:
    """(fetched, loaded, rejected, duplicate) of a run of ``[start, end)``, from the oracle."""
    rows, rejected, fetched = expected_rows(start, end)
    return fetched, len(rows), rejected, fetched - rejected - len(rows)


def file_rows(landing, keys: list[str]) -> dict[str, list[dict]]:
    zone = LandingZone(landing.as_uri())
    return {key: list(csv.DictReader(io.StringIO(zone.read_bytes(key).decode()))) for key in keys}


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@pytest.mark.reliability
def test_file_drops_under_new_york_time_keep_their_days_and_instants(pg_server, tmp_path):
    """warehouse_elt on a New York machine and session, over file drops of the days around the
    DST end: each file is loaded into its day, every timestamp is the instant the file says, every
    date the date it says, and the marts' dates are the UTC dates of those instants."""
    landing = tmp_path / "landing"
    with database(pg_server, NEW_YORK, landing) as (ny, env):
        keys = write_drops(LandingZone(landing.as_uri()), date(2026, 10, 31), date(2026, 11, 3),
                           seed=11, events_per_day=300, users=120)
        assert {key.split("/")[2] for key in keys} == {"2026-10-31", "2026-11-01", "2026-11-02"}
        result = run_cli("run", "warehouse_elt", env=env)
        assert result.returncode == 0, result.stderr[-3000:]

        rows = file_rows(landing, keys)
        assert query(ny, "select file_key, version, status from ops.file_manifest order by 1") == [
            (key, 1, "loaded") for key in sorted(keys)]

        def loaded(table: str, columns: str) -> set[tuple]:
            return set(query(ny, sql.SQL("select _file_key, _row_number, {} from {}").format(
                sql.SQL(columns), sql.Identifier("raw", table))))

        def landed(prefix: str, *convert) -> set[tuple]:
            return {(key, n, *(f(row[c]) for c, f in convert))
                    for key, file in rows.items() if key.startswith(prefix)
                    for n, row in enumerate(file, start=1)}

        assert loaded("billing__payments", "paid_at, updated_at") == landed(
            "billing/payments", ("paid_at", instant), ("updated_at", instant))
        assert loaded("crm__customers", "signup_at, updated_at") == landed(
            "crm/customers", ("signup_at", instant), ("updated_at", instant))
        assert loaded("marketing__ad_spend", "date") == landed(
            "marketing/ad_spend", ("date", date.fromisoformat))

        payments = expected_latest([(k, r) for k, r in rows.items()
                                    if k.startswith("billing/payments")], "billing/payments")
        paid_days = sorted({instant(p["paid_at"]).date() for p in payments.values()
                            if p["status"] in ("succeeded", "refunded")})
        assert query(ny, "select date from marts.fct_daily_revenue order by 1") == [
            (day,) for day in paid_days]
        customers = expected_latest([(k, r) for k, r in rows.items()
                                     if k.startswith("crm/customers")], "crm/customers")
        assert dict(query(ny, "select customer_id, signup_date from marts.dim_customers")) == {
            int(c["customer_id"]): instant(c["signup_at"]).date() for c in customers.values()}
        # Some instants do fall on another date in New York: the test can tell the two apart.
        assert any(instant(c["signup_at"]).astimezone(ZoneInfo(NEW_YORK)).date()
                   != instant(c["signup_at"]).date() for c in customers.values())


# The ingest's loader run the way Mage's notebook runs it (execute_custom_code: the block's
# execute_with_callback(from_notebook=True)), with the execution_date Mage's websocket server
# gives a notebook run (mage_ai/server/websocket_server.py: `now = datetime.now()`, naive
# local time). Prints the manifest's window.
NOTEBOOK_FETCH = """
import json
from datetime import datetime, timedelta

from mage_project import config
from mage_project.runner import prepare_mage_environment

prepare_mage_environment()
from mage_ai.settings.repo import set_repo_path

set_repo_path(str(config.PROJECT_ROOT))
from mage_ai.data_preparation.models.pipeline import Pipeline
from mage_ai.data_preparation.variable_manager import get_global_variables
from mage_ai.orchestration.db import db_connection

db_connection.start_session()
pipeline = Pipeline.get("user_activity_ingest", repo_path=str(config.PROJECT_ROOT))
now = datetime.now()
global_vars = {**(get_global_variables(pipeline.uuid) or {}), "env": "dev", "execution_date": now,
               "interval_end_datetime": now + timedelta(days=1), "interval_seconds": None,
               "interval_start_datetime": now, "interval_start_datetime_previous": None,
               "event": {}, "sample_rows": 50}
result = pipeline.get_block("fetch_activity_user_activity").execute_with_callback(
    from_notebook=True, global_vars=global_vars, update_status=False)
manifest = next(o for o in result["output"] if o is not None)
print("WINDOW", manifest["window_start"], manifest["window_end"])
"""


@pytest.mark.reliability
def test_a_notebook_run_on_a_machine_off_utc_fetches_the_day_before_today(warehouse, simulator,
                                                                          tmp_path):
    """Mage gives a notebook run ``execution_date = datetime.now()``, naive local time (a
    pipeline run's is naive UTC): taken as UTC, a notebook off UTC would fetch the wrong day."""
    simulator()
    # A zone whose date differs from UTC's now (and for the next hour): 12 hours behind before
    # 11:00 UTC, 14 hours ahead after.
    zone = "Etc/GMT+12" if datetime.now(UTC).hour < 11 else "Pacific/Kiritimati"
    today = datetime.now(UTC).date()
    result = subprocess.run([sys.executable, "-c", NOTEBOOK_FETCH], cwd=ROOT, capture_output=True,
                            text=True, timeout=300, env={**os.environ, "TZ": zone, "PGTZ": zone,
                                                         "MAGE_DATA_DIR": str(tmp_path / "mage")})
    assert result.returncode == 0, result.stderr[-3000:]
    [window] = [line.split()[1:] for line in result.stdout.splitlines() if line.startswith("WINDOW ")]
    start, end = (datetime.fromisoformat(bound) for bound in window)
    midnight = datetime.combine(today, datetime.min.time(), UTC)
    assert datetime.now(UTC).date() == today, "midnight UTC passed during the run: run it again"
    assert (start, end) == (midnight - timedelta(days=1), midnight), f"{zone}: {window}"
