"""The ingestion steps against the embedded PostgreSQL and the API simulator (real servers).

Expected rows are computed independently from the simulator's deterministic generator.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import psycopg2
import pytest
from conftest import query
from support import END, START, expected_rows, loaded_rows, run_steps

from mage_project import config
from mage_project.pipelines import user_activity
from mage_project.sources.activity_api import ActivityApiError
from mage_project.sources.activity_simulator import FaultPlan
from mage_project.warehouse import postgres

pytestmark = pytest.mark.integration

def test_window_loads_every_valid_event_once_and_rejects_the_rest(warehouse, simulator):
    simulator()
    summary = run_steps(window_start=START, window_end=END)
    rows, rejected, fetched = expected_rows()
    assert loaded_rows(warehouse) == rows
    assert summary["rows_fetched"] == fetched
    assert summary["rows_loaded"] == len(rows)
    assert summary["rows_rejected"] == rejected > 0
    assert summary["rows_duplicate"] == fetched - rejected - len(rows) > 0
    run = query(
        warehouse,
        "select status, rows_fetched, rows_loaded, rows_rejected, rows_duplicate, window_start,"
        " window_end, error from ops.pipeline_runs",
    )
    assert run == [("success", fetched, len(rows), rejected, fetched - rejected - len(rows),
                    START, END, None)]
    assert query(warehouse, "select watermark from ops.watermarks") == [(END,)]
    reasons = {r for (r,) in query(warehouse, "select reason from raw.user_activity_rejects")}
    assert query(warehouse, "select count(*) from raw.user_activity_rejects") == [(rejected,)]
    assert any(r.startswith('user_id is a JSON string, not integer: "abc"') for r in reasons)
    assert any(r.startswith("occurred_at has no UTC offset") for r in reasons)
    assert any(r.startswith("properties is a JSON array, not object") for r in reasons)
    assert any(r.startswith("properties is a JSON string, not object") for r in reasons)
    assert "event_id is missing" in reasons and "event_id is empty" in reasons
    # Landing files follow the documented layout, one partition per UTC day.
    landing = sorted(
        p.relative_to(config.data_dir() / "landing").parent.as_posix()
        for p in (config.data_dir() / "landing").rglob("*.csv")
    )
    assert sorted(set(landing)) == [
        "activity/user_activity/date=2026-11-01",
        "activity/user_activity/date=2026-11-02",
    ]


def test_rerun_of_same_window_changes_no_row(warehouse, simulator):
    simulator()
    run_steps(window_start=START, window_end=END)
    snapshot = ("select event_id, xmin::text, _run_id from raw.user_activity union all"
                " select payload_md5, xmin::text, run_id from raw.user_activity_rejects order by 1")
    before = query(warehouse, snapshot)
    again = run_steps(window_start=START, window_end=END)
    assert query(warehouse, snapshot) == before
    assert again["rows_rejected"] > 0
    assert again["rows_changed"] == 0
    assert query(warehouse, "select count(*), count(distinct status) from ops.pipeline_runs") == [(2, 1)]


def test_later_delivery_wins_across_runs(warehouse, simulator):
    simulator(redelivery_rate=0.0)
    run_steps(window_start=START, window_end=END)
    simulator(redelivery_rate=0.05)
    summary = run_steps(window_start=START, window_end=END)
    rows, _, _ = expected_rows(redelivery_rate=0.05)
    assert loaded_rows(warehouse) == rows
    redelivered = sum(1 for r in rows.values() if (r[5] or {}).get("delivery") == 2)
    assert redelivered > 0
    assert summary["rows_changed"] == redelivered


def test_api_faults_are_survived_with_the_same_rows(warehouse, simulator):
    faults = FaultPlan(by_request={1: "429", 2: "503", 4: "truncate", 5: "500", 7: "drop"},
                       retry_after=0.1)
    sim = simulator(faults=faults)
    summary = run_steps(window_start=START, window_end=END)
    rows, _, _ = expected_rows()
    assert loaded_rows(warehouse) == rows
    assert summary["status"] == "success"
    statuses = [status for _, status in sim.requests]
    assert statuses[:2] == [429, 503]


def test_failed_fetch_writes_nothing(warehouse, simulator, monkeypatch):
    simulator()
    monkeypatch.setenv("ACTIVITY_API_TOKEN", "wrong")
    with pytest.raises(ActivityApiError, match="401"):
        run_steps(window_start=START, window_end=END)
    assert query(warehouse, "select count(*) from raw.user_activity") == [(0,)]
    assert query(warehouse, "select count(*) from ops.watermarks") == [(0,)]


def test_scheduled_runs_follow_the_watermark_and_cover_gaps(warehouse, simulator):
    simulator()
    first = run_steps(execution_date=datetime(2026, 11, 2, 2, tzinfo=UTC))
    assert (first["window_start"], first["window_end"]) == (START.isoformat(),
                                                            datetime(2026, 11, 2, tzinfo=UTC).isoformat())
    # Three days of downtime: the next run covers the gap, reaching back by the lookback.
    later = run_steps(execution_date=datetime(2026, 11, 5, 2, tzinfo=UTC))
    assert (later["window_start"], later["window_end"]) == (START.isoformat(),
                                                            datetime(2026, 11, 5, tzinfo=UTC).isoformat())
    rows, _, _ = expected_rows(START, datetime(2026, 11, 5, tzinfo=UTC))
    assert loaded_rows(warehouse) == rows
    assert query(warehouse, "select watermark from ops.watermarks") == [
        (datetime(2026, 11, 5, tzinfo=UTC),)
    ]
    # Later the same day: nothing new beyond the lookback window, and no row changes.
    again = run_steps(execution_date=datetime(2026, 11, 5, 9, tzinfo=UTC))
    assert again["rows_changed"] == 0


def test_second_writer_waits_for_the_lock_then_gives_up_with_a_clear_message(
    warehouse, simulator, monkeypatch
):
    simulator()
    validated = user_activity.validate(user_activity.fetch(window_start=START, window_end=END))
    holder = postgres.connect("owner")
    with holder.cursor() as cur:
        cur.execute("begin")
        postgres.acquire_run_lock(cur, "user_activity_ingest", 5)
        monkeypatch.setenv("RUN_LOCK_TIMEOUT_SECONDS", "0.5")
        with pytest.raises(postgres.RunLockError, match="another run of user_activity_ingest"):
            user_activity.load(validated)
        # With a longer wait, the second writer proceeds once the first commits.
        monkeypatch.setenv("RUN_LOCK_TIMEOUT_SECONDS", "30")
        result = {}
        waiter = threading.Thread(target=lambda: result.update(user_activity.load(validated)))
        waiter.start()
        waiter.join(1.0)
        assert waiter.is_alive(), "the second writer must wait while the lock is held"
        cur.execute("commit")
    waiter.join(60)
    holder.close()
    assert result["status"] == "success"
    rows, _, _ = expected_rows()
    assert loaded_rows(warehouse) == rows


def test_missing_setting_is_named(warehouse, monkeypatch):
    monkeypatch.setenv("ACTIVITY_API_URL", "http://127.0.0.1:9")
    with pytest.raises(config.ConfigError, match="ACTIVITY_API_TOKEN"):
        user_activity.fetch(window_start=START, window_end=END)
    monkeypatch.delenv("POSTGRES_USER")
    with pytest.raises(config.ConfigError, match="POSTGRES_USER"):
        config.postgres()


def test_embedded_server_is_used_when_no_host_is_set(tmp_path, monkeypatch):
    assert config.postgres().embedded
    assert not (config.data_dir() / "postgres").exists()  # the settings alone start nothing
    settings = postgres.resolve_settings()  # started on the first connection
    assert settings.embedded and settings.dbname == "warehouse"
    conn = psycopg2.connect(**settings.dsn_kwargs())
    try:
        assert query(conn, "select current_database()") == [("warehouse",)]
    finally:
        conn.close()
        from mage_project.warehouse import embedded

        embedded.stop(config.data_dir() / "postgres")


def test_first_load_of_a_clean_window_takes_the_bulk_path_with_lineage(warehouse, simulator, caplog):
    caplog.set_level("INFO", logger="mage_project.warehouse.postgres")
    simulator(redelivery_rate=0.0)
    fetched = user_activity.fetch(window_start=START, window_end=END)
    summary = user_activity.load(user_activity.validate(fetched))
    rows, rejected, _ = expected_rows(redelivery_rate=0.0)
    assert loaded_rows(warehouse) == rows
    assert (summary["rows_loaded"], summary["rows_duplicate"], summary["rows_rejected"]) == (
        len(rows), 0, rejected)
    lineage = query(warehouse, "select distinct _run_id, _source_file from raw.user_activity")
    assert {run for run, _ in lineage} == {fetched["run_id"]}
    assert {key for _, key in lineage} == {f["key"] for f in fetched["files"]}
    assert "staging and upserting" not in caplog.text


def test_keys_delivered_twice_in_one_run_fall_back_to_staging(warehouse, simulator, caplog):
    caplog.set_level("INFO", logger="mage_project.warehouse.postgres")
    simulator()
    summary = run_steps(window_start=START, window_end=END)
    assert "keys already loaded or delivered twice; staging and upserting" in caplog.text
    rows, _, _ = expected_rows()
    assert loaded_rows(warehouse) == rows and summary["rows_duplicate"] > 0


def test_sampled_run_loads_a_few_rows_and_leaves_the_watermark(warehouse, simulator):
    simulator(invalid_rate=0.0, redelivery_rate=0.0)
    summary = run_steps(window_start=START, window_end=END, sample_rows=50)
    assert summary["rows_fetched"] == summary["rows_loaded"] == 50
    assert query(warehouse, "select count(*) from raw.user_activity") == [(50,)]
    assert query(warehouse, "select count(*) from ops.watermarks") == [(0,)]


def test_landing_on_s3_loads_the_same_rows(warehouse, simulator, s3_bucket, monkeypatch):
    from mage_project.landing import LandingZone

    monkeypatch.setenv("LANDING_URL", f"s3://{s3_bucket}/landing")
    simulator()
    summary = run_steps(window_start=START, window_end=END)
    rows, rejected, _ = expected_rows()
    assert loaded_rows(warehouse) == rows and summary["rows_rejected"] == rejected
    keys = LandingZone(f"s3://{s3_bucket}/landing").list("activity/user_activity")
    assert {k.rsplit("/", 1)[0] for k in keys} == {
        "activity/user_activity/date=2026-11-01", "activity/user_activity/date=2026-11-02"}
    assert all(k.rsplit("/", 1)[1].startswith(summary["run_id"]) for k in keys)
    # The local copies made for validation and COPY are gone once the run committed.
    assert not (config.work_dir() / "user_activity_ingest" / summary["run_id"]).exists()


def test_scratch_files_of_dead_runs_are_removed_a_day_later(warehouse, simulator):
    import os
    import time

    simulator(invalid_rate=0.0, redelivery_rate=0.0)
    root = config.work_dir() / "user_activity_ingest"
    stale, fresh = root / "dead-run-old", root / "dead-run-recent"
    for run_dir in (stale, fresh):
        run_dir.mkdir(parents=True)
        (run_dir / "valid-00000.csv").write_text("x\n")
    day_ago = time.time() - 25 * 3600
    os.utime(stale, (day_ago, day_ago))
    run_steps(window_start=START, window_end=END)
    assert not stale.exists() and fresh.exists()
