"""What `python -m mage_project run` shows when it is not on a terminal: a line per block on
stderr as it ends (name, outcome, seconds, rows) and one last line (stdout: the summary; stderr:
what failed, what to do, the log file), Mage's and dbt's output in the run's log file instead
(`--verbose`: on the terminal)."""

from __future__ import annotations

import re
from datetime import date

import pytest
from conftest import query, run_cli
from support import expected_rows

from mage_project import config
from mage_project.landing import LandingZone
from mage_project.sources.file_drops import write_drops

pytestmark = pytest.mark.e2e  # whole runs through Mage

WINDOW = ("run", "user_activity_ingest", "--start", "2026-11-01", "--end", "2026-11-03")
# A block's line: name, outcome, seconds (not for a skipped block), rows (when it counts rows).
BLOCK = re.compile(r"  (\w+) +(ok|failed|skipped)(?: +(\d+\.\d)s)?(?:  ([\d,]+) rows?)?")
MAGE_RECORD = '"block_uuid": '  # in each of Mage's JSON log records


def blocks(text: str) -> list[tuple[str, str, int | None]]:
    """(name, outcome, rows) of each block line of ``text``, which must hold nothing else."""
    shown = []
    for line in text.splitlines():
        match = BLOCK.fullmatch(line)
        assert match, f"not a block line: {line!r}"
        name, outcome, seconds, rows = match.groups()
        assert (seconds is None) == (outcome == "skipped"), line
        shown.append((name, outcome, None if rows is None else int(rows.replace(",", ""))))
    return shown


def run_log(pipeline: str, run_id: str):
    return config.data_dir() / "logs" / f"{pipeline}-{run_id}.log"


def test_a_run_shows_its_blocks_and_a_summary_and_logs_mages_output_to_its_file(warehouse, simulator):
    simulator()
    result = run_cli(*WINDOW, "--run-id", "shown")
    assert result.returncode == 0, result.stderr[-3000:]
    rows, rejected, fetched = expected_rows()
    assert blocks(result.stderr) == [
        ("fetch_activity_user_activity", "ok", fetched),
        ("validate_activity_user_activity", "ok", fetched - rejected),
        ("load_postgres_user_activity", "ok", len(rows)),
    ]
    log = run_log("user_activity_ingest", "shown")
    assert re.fullmatch(r"user_activity_ingest run shown succeeded in \d+\.\d s \(log: (\S+)\)\n",
                        result.stdout)[1] == str(log), result.stdout
    # Mage's records, the blocks' @tests and the library's own log records: in the log file only.
    text = log.read_text()
    assert MAGE_RECORD not in result.stdout + result.stderr
    assert text.count(MAGE_RECORD) > 10 and text.count("1/1 tests passed.") == 3
    for check in ("landing_files_complete", "every_landed_row_validated", "load_reconciles"):
        assert f"{check} passed" in text
    assert f"user_activity_ingest: fetched {fetched} events into 2 files" in text


def test_verbose_shows_mages_output_and_writes_no_log_file(warehouse, simulator):
    simulator()
    result = run_cli(*WINDOW, "--run-id", "verbose", "--verbose")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count(MAGE_RECORD) > 10 and result.stderr.count("1/1 tests passed.") == 3
    # The block lines are there too, in order, among Mage's output.
    shown = [line for line in result.stderr.splitlines() if BLOCK.fullmatch(line)]
    assert [blocks(line)[0][:2] for line in shown] == [
        ("fetch_activity_user_activity", "ok"), ("validate_activity_user_activity", "ok"),
        ("load_postgres_user_activity", "ok")]
    assert re.fullmatch(r"user_activity_ingest run verbose succeeded in \d+\.\d s\n", result.stdout)
    assert not run_log("user_activity_ingest", "verbose").exists()


def test_a_failed_run_ends_in_one_line_naming_the_block_what_to_do_and_the_log(
        warehouse, simulator, monkeypatch):
    sim = simulator()
    monkeypatch.setenv("ACTIVITY_API_TOKEN", "revoked")
    result = run_cli(*WINDOW, "--run-id", "failing")
    assert result.returncode == 1, result.stderr[-3000:]
    assert result.stdout == ""
    log = run_log("user_activity_ingest", "failing")
    error = (f"ActivityApiError: the activity API at {sim.url}/v1/events rejected the token (HTTP 401:"
             " missing or invalid bearer token); check ACTIVITY_API_TOKEN")
    first, *rest = result.stderr.splitlines()
    # The blocks after the failed one never ran, and are not shown.
    assert blocks(first) == [("fetch_activity_user_activity", "failed", None)]
    assert rest == [
        f"user_activity_ingest run failing failed: {error}",
        "  (no alert sent: SMTP_HOST is unset)",
        f"error: block fetch_activity_user_activity failed: {error}; fix the cause, then run the same"
        f" command again (the traceback and Mage's output: {log})",
    ]
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and MAGE_RECORD in text
    assert "ALERT (SMTP_HOST unset, not emailed): user_activity_ingest run failing failed" in text
    assert query(warehouse, "select run_id, status, error from ops.pipeline_runs") == [
        ("failing", "failed", error)]


def test_skipped_blocks_are_shown_skipped_and_file_loads_count_their_rows(warehouse):
    write_drops(LandingZone(config.landing_url()), date(2026, 11, 1), date(2026, 11, 3))
    first = run_cli("run", "warehouse_elt", "--run-id", "build")
    assert first.returncode == 0, first.stderr[-3000:]
    (raw_rows,), = query(warehouse, "select (select count(*) from raw.crm__customers)"
                                    " + (select count(*) from raw.billing__payments)"
                                    " + (select count(*) from raw.marketing__ad_spend)")
    assert blocks(first.stderr) == [
        ("detect_landing_file_drops", "ok", None),
        ("load_landing_file_drops", "ok", raw_rows),
        ("check_raw_quality_file_drops", "ok", None),
        ("plan_marts_build", "ok", None),
        ("build_dbt_warehouse", "ok", None),
        ("publish_marts", "ok", None),
    ]
    assert "Running with dbt" in run_log("warehouse_elt", "build").read_text()
    assert "Running with dbt" not in first.stdout + first.stderr
    # Nothing new: no file loaded, the marts up to date, so the build and the publish skipped.
    again = run_cli("run", "warehouse_elt", "--run-id", "again")
    assert again.returncode == 0, again.stderr[-3000:]
    assert blocks(again.stderr) == [
        ("detect_landing_file_drops", "ok", None),
        ("load_landing_file_drops", "ok", 0),
        ("check_raw_quality_file_drops", "ok", None),
        ("plan_marts_build", "ok", None),
        ("build_dbt_warehouse", "skipped", None),
        ("publish_marts", "skipped", None),
    ]
    assert re.fullmatch(r"warehouse_elt run again succeeded in \d+\.\d s \(log: (\S+)\)\n",
                        again.stdout)[1] == str(run_log("warehouse_elt", "again"))
