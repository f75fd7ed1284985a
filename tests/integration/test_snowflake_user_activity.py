"""user_activity_ingest into Snowflake (WAREHOUSE=snowflake): fetch -> validate -> load against
the API simulator and the fakesnow stand-in, through the real connector, with the same outcomes
as on PostgreSQL (test_user_activity_pipeline.py).

Expected rows come from the independent oracle in tests/support/.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from support import END, START, expected_rows, run_steps

from mage_project import config
from mage_project.entities import USER_ACTIVITY
from mage_project.faults import failpoint
from mage_project.pipelines import user_activity
from mage_project.runs import (
    read_watermark,
    record_failed_run,
    window_loaded_before,
    write_watermark,
)
from mage_project.warehouse import snowflake

pytestmark = pytest.mark.integration

LATER = datetime(2026, 11, 5, tzinfo=UTC)


def rows(conn, statement: str, params=None) -> list[tuple]:
    return conn.cursor().execute(statement, params).fetchall()


def loaded_rows(conn) -> dict:
    """raw.user_activity as the oracle states it (a VARIANT comes back as JSON text)."""
    found = rows(conn, "select event_id, user_id, event_type, occurred_at, session_id, page_url,"
                       " properties, amount from raw.user_activity")
    return {r[0]: (r[1], r[2], r[3].astimezone(UTC), r[4], r[5],
                   None if r[6] is None else json.loads(r[6]), r[7]) for r in found}


def table_counts(conn) -> dict[str, int]:
    tables = ("raw.user_activity", "raw.user_activity_rejects", "ops.watermarks",
              "ops.pipeline_runs")
    return {t: rows(conn, f"select count(*) from {t}")[0][0] for t in tables}  # noqa: S608


def test_window_loads_every_valid_event_once_and_rejects_the_rest(snowflake_warehouse, simulator):
    simulator()
    fetched = user_activity.fetch(window_start=START, window_end=END)
    summary = user_activity.load(user_activity.validate(fetched))
    expected, rejected, total = expected_rows()
    conn = snowflake_warehouse
    assert loaded_rows(conn) == expected
    # Re-delivered events (2 % of them) collapsed to their later delivery.
    duplicates = total - rejected - len(expected)
    assert duplicates > 0
    assert any((r[5] or {}).get("delivery") == 2 for r in expected.values())
    assert (summary["rows_fetched"], summary["rows_loaded"], summary["rows_rejected"],
            summary["rows_duplicate"], summary["rows_changed"]) == (
        total, len(expected), rejected, duplicates, len(expected))
    assert rows(conn, "select status, rows_fetched, rows_loaded, rows_rejected, rows_duplicate,"
                      " rows_changed, window_start, window_end, error from ops.pipeline_runs") == [
        ("success", total, len(expected), rejected, duplicates, len(expected), START, END, None)]
    assert rows(conn, "select pipeline, entity, watermark, run_id from ops.watermarks") == [
        ("user_activity_ingest", "user_activity", END, summary["run_id"])]
    # Each bad record once, with its reason.
    assert rows(conn, "select count(*), count(distinct payload_md5) from raw.user_activity_rejects"
                ) == [(rejected, rejected)]
    reasons = {r for (r,) in rows(conn, "select reason from raw.user_activity_rejects")}
    assert any(r.startswith('user_id is a JSON string, not integer: "abc"') for r in reasons)
    assert any(r.startswith("occurred_at has no UTC offset") for r in reasons)
    assert any(r.startswith("properties is a JSON array, not object") for r in reasons)
    assert "event_id is missing" in reasons and "event_id is empty" in reasons
    # Lineage: the run, and the landing file each row came from.
    lineage = rows(conn, "select distinct _run_id, _source_file from raw.user_activity")
    assert {run for run, _ in lineage} == {fetched["run_id"]}
    assert {key for _, key in lineage} == {f["key"] for f in fetched["files"]}
    # Nothing went to PostgreSQL: the embedded server was never even started.
    assert not (config.data_dir() / "postgres").exists()
    assert not (config.work_dir() / "user_activity_ingest" / summary["run_id"]).exists()


def test_rerun_of_same_window_changes_no_row(snowflake_warehouse, simulator):
    simulator()
    first = run_steps(window_start=START, window_end=END)
    conn = snowflake_warehouse
    snapshot = ("select event_id, _run_id, _loaded_at, _source_file from raw.user_activity"
                " union all select payload_md5, run_id, rejected_at, source_file"
                " from raw.user_activity_rejects order by 1")
    before = rows(conn, snapshot)
    again = run_steps(window_start=START, window_end=END)
    assert rows(conn, snapshot) == before
    assert again["rows_rejected"] == first["rows_rejected"] > 0  # validated again, stored once
    assert again["rows_loaded"] == first["rows_loaded"]
    assert again["rows_changed"] == 0
    assert rows(conn, "select run_id, status, rows_changed from ops.pipeline_runs"
                      " order by rows_changed") == [
        (again["run_id"], "success", 0), (first["run_id"], "success", first["rows_loaded"])]
    assert rows(conn, "select watermark, run_id from ops.watermarks") == [(END, first["run_id"])]
    with snowflake.transaction(conn) as cur:
        assert window_loaded_before(cur, "user_activity_ingest", START, END)
        assert not window_loaded_before(cur, "user_activity_ingest", END, LATER)


def test_later_delivery_wins_across_runs(snowflake_warehouse, simulator):
    simulator(redelivery_rate=0.0)
    first = run_steps(window_start=START, window_end=END)
    simulator(redelivery_rate=0.05)
    summary = run_steps(window_start=START, window_end=END)
    expected, _, _ = expected_rows(redelivery_rate=0.05)
    assert loaded_rows(snowflake_warehouse) == expected
    redelivered = {k for k, r in expected.items() if (r[5] or {}).get("delivery") == 2}
    assert redelivered
    assert summary["rows_changed"] == len(redelivered)
    # Exactly the changed rows carry the second run's id.
    by_run = rows(snowflake_warehouse, "select event_id, _run_id from raw.user_activity")
    assert {k for k, run in by_run if run == summary["run_id"]} == redelivered
    assert {run for k, run in by_run if k not in redelivered} == {first["run_id"]}


def test_failure_before_commit_leaves_nothing_written(snowflake_warehouse, simulator, monkeypatch):
    simulator()
    validated = user_activity.validate(user_activity.fetch(window_start=START, window_end=END))

    def fail_before_commit(name: str) -> None:
        if name == "before_commit":
            raise RuntimeError("killed before commit")

    monkeypatch.setattr(user_activity, "failpoint", fail_before_commit)
    with pytest.raises(RuntimeError, match="killed before commit"):
        user_activity.load(validated)
    assert table_counts(snowflake_warehouse) == {
        "raw.user_activity": 0, "raw.user_activity_rejects": 0, "ops.watermarks": 0,
        "ops.pipeline_runs": 0}
    # The same run, retried, loads everything exactly once.
    monkeypatch.setattr(user_activity, "failpoint", failpoint)
    summary = user_activity.load(validated)
    expected, rejected, _ = expected_rows()
    assert loaded_rows(snowflake_warehouse) == expected
    assert table_counts(snowflake_warehouse) == {
        "raw.user_activity": len(expected), "raw.user_activity_rejects": rejected,
        "ops.watermarks": 1, "ops.pipeline_runs": 1}
    assert summary["status"] == "success"


def test_failed_run_is_recorded_in_snowflake_keeping_its_counts(snowflake_warehouse, simulator):
    simulator(invalid_rate=0.0, redelivery_rate=0.0)
    summary = run_steps(window_start=START, window_end=END)
    # A block's @test failing after the load committed: the same run, now failed.
    record_failed_run("user_activity_ingest", summary["run_id"], "check failed: 'x'")
    record_failed_run("user_activity_ingest", "other-run", "API down",
                      window_start=START.isoformat(), window_end=END.isoformat())
    assert rows(snowflake_warehouse,
                "select run_id, status, rows_loaded, window_start, window_end, error"
                " from ops.pipeline_runs order by error") == [
        ("other-run", "failed", None, START, END, "API down"),
        (summary["run_id"], "failed", summary["rows_loaded"], START, END, "check failed: 'x'"),
    ]


def test_scheduled_runs_follow_the_watermark_in_snowflake(snowflake_warehouse, simulator):
    simulator(invalid_rate=0.0)
    first = run_steps(execution_date=datetime(2026, 11, 2, 2, tzinfo=UTC))
    assert (first["window_start"], first["window_end"]) == (
        START.isoformat(), datetime(2026, 11, 2, tzinfo=UTC).isoformat())
    later = run_steps(execution_date=datetime(2026, 11, 3, 2, tzinfo=UTC))
    # The lookback (24 h) reaches back to the start of the day already loaded.
    assert (later["window_start"], later["window_end"]) == (START.isoformat(), END.isoformat())
    expected, _, _ = expected_rows(invalid_rate=0.0)
    assert loaded_rows(snowflake_warehouse) == expected
    assert rows(snowflake_warehouse, "select watermark from ops.watermarks") == [(END,)]


def test_watermark_never_moves_backwards(snowflake_warehouse):
    conn = snowflake_warehouse
    snowflake.migrate(conn)
    # (watermark written, run) -> the watermark and run recorded after it
    steps = [((END, "r1"), (END, "r1")), ((START, "r2"), (END, "r1")),
             ((END, "r3"), (END, "r1")), ((LATER, "r4"), (LATER, "r4"))]
    for (watermark, run_id), expected in steps:
        with snowflake.transaction(conn) as cur:
            write_watermark(cur, USER_ACTIVITY, watermark, run_id)
            assert read_watermark(cur, USER_ACTIVITY) == expected[0]
        assert rows(conn, "select watermark, run_id from ops.watermarks") == [expected]
