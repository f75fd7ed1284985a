"""The progress printer of a run (mage_project.progress): its block lines, plain and live, on the
terminal the run started with; and the rows a block's line shows (runner.rows_of)."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
from conftest import ROOT

from mage_project.progress import Progress, block_line, error_line, succeeded
from mage_project.runner import BlockEvent, first_line, rows_of


@pytest.mark.parametrize(("event", "line"), [
    (BlockEvent("load_api_user_activity", "ok", 2.14, rows=5000),
     "  load_api_user_activity           ok         2.1s  5,000 rows"),
    (BlockEvent("fetch_activity_user_activity", "ok", 0.05, rows=1),
     "  fetch_activity_user_activity     ok         0.1s  1 row"),
    (BlockEvent("load_landing_file_drops", "ok", 12.0, rows=0),
     "  load_landing_file_drops          ok        12.0s  0 rows"),
    (BlockEvent("plan_marts_build", "ok", 0.02), "  plan_marts_build                 ok         0.0s"),
    (BlockEvent("build_dbt_warehouse", "failed", 3.96, error="RuntimeError: dbt"),
     "  build_dbt_warehouse              failed     4.0s"),
    (BlockEvent("publish_marts", "skipped", 0.3), "  publish_marts                    skipped"),
])
def test_a_block_line_says_name_outcome_seconds_and_rows(event, line):
    assert block_line(event) == line


def test_plain_mode_prints_a_line_per_block_as_it_ends_and_knows_the_failed_one():
    stream = io.StringIO()
    with Progress(stream) as shown:
        assert shown.live is False  # not a terminal
        shown(BlockEvent("fetch", "started"))
        assert stream.getvalue() == ""
        shown(BlockEvent("fetch", "ok", 1.26, rows=12_345))
        shown(BlockEvent("load", "started"))
        shown(BlockEvent("load", "failed", 0.5, error="OSError: disk full"))
    assert stream.getvalue().splitlines() == [
        f"  {'fetch':<32} ok         1.3s  12,345 rows",
        f"  {'load':<32} failed     0.5s",
    ]
    assert shown.failed == BlockEvent("load", "failed", 0.5, error="OSError: disk full")


def test_the_last_lines_name_the_run_its_outcome_and_its_log(tmp_path):
    log = tmp_path / "logs" / "x-1.log"
    assert succeeded("x", "1", 12.34, log) == f"x run 1 succeeded in 12.3 s (log: {log})"
    assert succeeded("x", "1", 12.34, None) == "x run 1 succeeded in 12.3 s"
    assert error_line("block b failed: E: m", "do this", log) == (
        f"error: block b failed: E: m; do this (the traceback and Mage's output: {log})")
    assert error_line("block b failed: E: m", "do this", None) == (
        "error: block b failed: E: m; do this (the whole output is above)")


# A process whose fds 1 and 2 are redirected into a log file (as a run's are) while blocks end.
REDIRECTED = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from mage_project.progress import Progress
    from mage_project.runner import BlockEvent, output_to

    with Progress(sys.stderr) as shown, output_to(Path(sys.argv[1])):
        print("what Mage prints", flush=True)
        os.write(2, b"what dbt writes\\n")
        shown(BlockEvent("fetch", "started"))
        shown(BlockEvent("fetch", "ok", 1.0, rows=3))
    print("after")
""")


def test_the_lines_reach_the_terminal_the_run_started_with_not_its_log(tmp_path):
    log = tmp_path / "run.log"
    result = subprocess.run([sys.executable, "-c", REDIRECTED, str(log)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == ("after\n", f"  {'fetch':<32} ok         1.0s  3 rows\n")
    assert log.read_text() == "what Mage prints\nwhat dbt writes\n"


def test_on_a_terminal_the_display_is_live_and_ends_showing_every_block():
    master, slave = pty.openpty()
    try:
        with open(slave, "w") as terminal, Progress(terminal) as shown:
            assert shown.live is True
            shown(BlockEvent("fetch", "started"))
            shown(BlockEvent("fetch", "ok", 1.0, rows=3))
            shown(BlockEvent("load", "started"))
            shown(BlockEvent("load", "skipped", 0.0))
        shown_text = os.read(master, 1 << 16).decode()
    finally:
        os.close(master)
    assert "\x1b[" in shown_text  # rich's control codes: a live display, not plain lines
    assert f"✓ {'fetch':<32} ok         1.0s  3 rows" in shown_text
    assert f"- {'load':<32} skipped" in shown_text


@pytest.mark.parametrize(("output", "rows"), [
    (pd.DataFrame({"a": [1, 2, 3]}), 3),
    ({"rows_fetched": 10, "rows_valid": 9, "rows_loaded": 8}, 8),  # the load's summary
    ({"rows_fetched": 10, "rows_valid": 9, "files": [{"rows": 10}]}, 9),  # validated
    ({"rows_fetched": 10, "files": [{"key": "a.csv", "rows": 10}]}, 10),  # fetched
    ({"files": [{"status": "loaded", "rows_loaded": 4}, {"status": "skipped"},
                {"status": "loaded", "rows_loaded": 5}]}, 9),  # file loads
    ({"files": []}, 0),  # no file was new
    ({"models": 4, "tests": 12, "published": True}, None),  # a dbt build's summary
    ({"rows_loaded": True}, None),
    (True, None),  # a sensor's answer
    (None, None),
])
def test_the_rows_a_block_shows_are_those_its_output_counts(output, rows):
    assert rows_of(output) == rows


@pytest.mark.parametrize(("error", "line"), [
    (ValueError("first\nsecond"), "ValueError: first"),
    (RuntimeError(), "RuntimeError"),
    (KeyError("x"), "KeyError: 'x'"),
])
def test_an_error_is_told_by_its_type_and_first_line(error, line):
    assert first_line(error) == line
