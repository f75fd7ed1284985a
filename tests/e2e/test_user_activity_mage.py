"""The whole pipeline through Mage, from the command line, with the blocks' @tests on.

Each run is a child process (``python -m mage_project run ...``), so a SIGKILL at a failpoint
is a real crash of a real run.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import ROOT, query, run_cli
from support import END, SIM, START, SmtpSink, expected_rows, loaded_rows, run_log

from mage_project.sources.activity_simulator import ActivitySimulator

pytestmark = pytest.mark.e2e

WINDOW_ARGS = ("run", "user_activity_ingest", "--start", "2026-11-01", "--end", "2026-11-03")




@pytest.fixture
def api(monkeypatch):
    with ActivitySimulator(token="t0ken", **SIM) as sim:
        monkeypatch.setenv("ACTIVITY_API_URL", sim.url)
        monkeypatch.setenv("ACTIVITY_API_TOKEN", "t0ken")
        monkeypatch.setenv("ACTIVITY_API_PAGE_SIZE", "500")
        monkeypatch.setenv("LANDING_CHUNK_ROWS", "1000")
        yield sim


def test_cli_run_through_mage_loads_the_window_with_block_tests(warehouse, api):
    result = run_cli(*WINDOW_ARGS)
    assert result.returncode == 0, result.stderr[-3000:]
    log = run_log(result.stdout)
    for check in ("landing_files_complete", "every_landed_row_validated", "load_reconciles"):
        assert f"{check} passed" in log, f"block test {check} did not run"
    assert log.count("1/1 tests passed.") == 3
    rows, rejected, fetched = expected_rows()
    assert loaded_rows(warehouse) == rows
    assert query(warehouse, "select status, rows_fetched, rows_rejected from ops.pipeline_runs") == [
        ("success", fetched, rejected)
    ]


def test_cli_failure_exits_non_zero_records_the_run_and_emails_an_alert(warehouse, api, monkeypatch):
    monkeypatch.setenv("ACTIVITY_API_TOKEN", "revoked")
    with SmtpSink() as smtp:
        monkeypatch.setenv("SMTP_HOST", "127.0.0.1")
        monkeypatch.setenv("SMTP_PORT", str(smtp.port))
        monkeypatch.setenv("ALERT_EMAIL_TO", "data-team@example.com")
        result = run_cli(*WINDOW_ARGS)
        messages = smtp.wait_for(1)
    assert result.returncode == 1
    # Once, not after metadata.yaml's retries (the scheduler's): one attempt of the failed block.
    log = run_log(result.stderr)
    assert "attempt 1 of 1" in log and "attempt 1 of 3" not in log
    assert "user_activity_ingest run" in result.stderr and "401" in result.stderr
    (msg,) = messages
    assert msg["To"] == "data-team@example.com"
    assert "user_activity_ingest failed" in msg["Subject"]
    assert "ACTIVITY_API_TOKEN" in msg.get_content()
    (status, error, window_start), = query(
        warehouse, "select status, error, window_start from ops.pipeline_runs"
    )
    assert status == "failed" and "401" in error and window_start == START
    assert query(warehouse, "select count(*) from raw.user_activity") == [(0,)]


def test_without_smtp_host_the_alert_is_logged_and_the_outcome_unchanged(warehouse, api, monkeypatch):
    monkeypatch.setenv("ACTIVITY_API_TOKEN", "revoked")
    result = run_cli(*WINDOW_ARGS)
    assert result.returncode == 1
    # The run's own error is what it reports, last; that no alert went out is said beside it.
    assert "\n  (no alert sent: SMTP_HOST is unset)\n" in result.stderr
    last = result.stderr.splitlines()[-1]
    assert re.match(r"error: block fetch_activity_user_activity failed: .*401", last), last
    assert "ALERT (SMTP_HOST unset, not emailed): user_activity_ingest" in run_log(result.stderr)


def test_missing_setting_fails_naming_it(warehouse, monkeypatch):
    result = run_cli(*WINDOW_ARGS)
    assert result.returncode == 2
    assert "ACTIVITY_API_URL" in result.stderr


@pytest.mark.parametrize(
    "failpoint",
    ["after_landing_part", "after_validate", "after_staging_copy", "before_commit", "after_commit"],
)
def test_sigkill_at_any_point_then_rerun_gives_exactly_the_expected_rows(warehouse, api, failpoint):
    killed = run_cli(*WINDOW_ARGS, env={"MAGE_PROJECT_FAILPOINT": failpoint})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    committed = failpoint == "after_commit"
    rows, _, _ = expected_rows()
    assert query(warehouse, "select count(*) from raw.user_activity") == [(len(rows) if committed else 0,)]
    rerun = run_cli(*WINDOW_ARGS)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert loaded_rows(warehouse) == rows
    assert query(warehouse, "select watermark from ops.watermarks") == [(END,)]
    successes = query(warehouse, "select rows_changed from ops.pipeline_runs where status = 'success'"
                      " order by finished_at")
    assert successes == ([(len(rows),), (0,)] if committed else [(len(rows),)])


def test_concurrent_runs_serialise_and_load_once(warehouse, api):
    procs = [
        subprocess.Popen([sys.executable, "-m", "mage_project", *WINDOW_ARGS], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n-----\n".join(e[-6000:] for _, e in outputs)
    rows, _, _ = expected_rows()
    assert loaded_rows(warehouse) == rows
    changed = sorted(c for (c,) in query(warehouse, "select rows_changed from ops.pipeline_runs"))
    assert changed == [0, len(rows)]


def test_scheduled_style_run_without_window_uses_the_execution_date(warehouse, api):
    result = run_cli("run", "user_activity_ingest", "--execution-date", "2026-11-03T02:00:00Z")
    assert result.returncode == 0, result.stderr[-3000:]
    rows, _, _ = expected_rows(datetime(2026, 11, 2, tzinfo=UTC), END)
    assert loaded_rows(warehouse) == rows


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_editor_starts_on_loopback_and_a_signal_stops_all_of_it(warehouse, tmp_path, signum):
    """make editor as a process manager (or Ctrl-C) stops it: the signal to the editor's own
    process only; within seconds no process of Mage's is left and the port is free again."""
    import socket
    import time
    import urllib.request

    from support import free_port, stop_group

    from mage_project.processes import group_running

    port = free_port()
    log = tmp_path / "editor.log"
    with open(log, "w") as out:
        editor = subprocess.Popen(
            [sys.executable, "-m", "mage_project", "editor"], cwd=ROOT,
            env={**os.environ, "MAGE_EDITOR_PORT": str(port)},
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        deadline, status = time.monotonic() + 120, None
        while time.monotonic() < deadline and status is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=5) as r:
                    status = r.status
            except OSError:
                time.sleep(1)
        assert status == 200, log.read_text()[-3000:]
        assert f"Mage editor: http://127.0.0.1:{port}" in log.read_text()
        mage = [int(p.name) for p in Path("/proc").glob("[0-9]*")
                if _parent_of(p) == editor.pid]
        assert mage, "the editor started no Mage process"
        os.kill(editor.pid, signum)
        assert editor.wait(timeout=30) == 0, log.read_text()[-3000:]
        assert not any(group_running(pid) for pid in mage), "a process of Mage's outlived the editor"
        with socket.socket() as probe:
            # Free: nothing listens on it (a server restarting sets SO_REUSEADDR, as Mage does).
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", port))
    finally:
        stop_group(editor, timeout=60)


def _parent_of(proc: Path) -> int | None:
    try:
        return int((proc / "stat").read_text().rpartition(")")[2].split()[1])
    except (OSError, ValueError):
        return None
