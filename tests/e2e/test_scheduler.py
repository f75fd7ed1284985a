"""The Mage scheduler itself runs the pipeline from a trigger, and alerts through metadata.yaml.

A copy of the project gets a trigger that fires at once (the committed one fires at 02:00
UTC); the scheduler (`mage start --instance-type scheduler`) runs it against an API that
refuses the token, emails the failure through Mage's notification settings to a real SMTP
server, and the failure callback records the run in ops.pipeline_runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, query
from support import SIM, SmtpSink, emitted_events, free_port, stop_group

from mage_project.lineage.tracking import run_uuid
from mage_project.sources.activity_simulator import ActivitySimulator

pytestmark = pytest.mark.e2e

PROJECT_FILES = ("metadata.yaml", "io_config.yaml", "pipelines", "data_loaders", "transformers",
                 "data_exporters", "callbacks", "conditionals", "sensors", "dbt")


def project_copy(target: Path, trigger: dict) -> Path:
    target.mkdir()
    for name in PROJECT_FILES:
        source = ROOT / name
        if name == "pipelines":
            # Only this pipeline: another's triggers (warehouse_elt polls every 5 minutes)
            # must not fire during the test.
            shutil.copytree(source / "user_activity_ingest",
                            target / name / "user_activity_ingest",
                            ignore=shutil.ignore_patterns("__pycache__"))
        elif source.is_dir():
            shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, target / name)
    triggers = target / "pipelines" / "user_activity_ingest" / "triggers.yaml"
    triggers.write_text(yaml.safe_dump({"triggers": [trigger]}))
    return target


def wait_for_rows(conn, statement: str, timeout: float) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = query(conn, statement)
        if rows:
            return rows
        time.sleep(1)
    return []


def test_scheduler_run_failure_emails_the_alert_and_records_the_run(warehouse, tmp_path):
    trigger = {
        "name": "once_now",
        "schedule_type": "time",
        "schedule_interval": "@once",
        "start_time": (datetime.now(UTC) - timedelta(minutes=1)).replace(microsecond=0),
        "status": "active",
        "variables": {"window_start": "2026-11-01", "window_end": "2026-11-02"},
    }
    project = project_copy(tmp_path / "project", trigger)
    with ActivitySimulator(token="right-token", **SIM) as api, SmtpSink() as smtp:
        env = {
            **os.environ,
            "ACTIVITY_API_URL": api.url,
            "ACTIVITY_API_TOKEN": "revoked-token",
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(smtp.port),
            "ALERT_EMAIL_TO": "data-team@example.com",
            "MAGE_DATA_DIR": str(tmp_path / "mage"),
        }
        log = tmp_path / "scheduler.log"
        with open(log, "w") as out:
            # Its own process group: Mage starts workers that must stop with it.
            scheduler = subprocess.Popen(
                [sys.executable, "-m", "mage_project.mage_cli", "start", str(project),
                 "--instance-type", "scheduler", "--host", "127.0.0.1", "--port", str(free_port())],
                cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            messages = smtp.wait_for(1, timeout=240)
            runs = wait_for_rows(
                warehouse, "select run_id, status, error from ops.pipeline_runs"
                " where pipeline = 'user_activity_ingest'", timeout=60
            )
        finally:
            stop_group(scheduler)
        output = log.read_text()
    assert messages, f"no alert email arrived; scheduler output:\n{output[-4000:]}"
    msg = messages[0]
    assert msg["To"] == "data-team@example.com"
    assert "user_activity_ingest" in msg["Subject"] and "fail" in msg["Subject"].lower()
    (run_id, status, error), = runs
    assert run_id.startswith("mage-") and status == "failed"
    assert "401" in error and "ACTIVITY_API_TOKEN" in error
    assert query(warehouse, "select count(*) from raw.user_activity") == [(0,)]
    # The scheduler's run emits the lineage the command line's does, its run named by Mage's:
    # each attempt of the block (Mage retries it) starts and fails; the run fails after the last.
    events = emitted_events()
    fetch = "user_activity_ingest.fetch_activity_user_activity"
    seen = [(e["job"]["name"], e["eventType"]) for e in events]
    attempts = (len(seen) - 2) // 2
    assert attempts >= 1 and seen == [("user_activity_ingest", "START"),
                                      *[(fetch, "START"), (fetch, "FAIL")] * attempts,
                                      ("user_activity_ingest", "FAIL")]
    assert {e["run"]["runId"] for e in events if e["job"]["name"] == "user_activity_ingest"} == {
        run_uuid("user_activity_ingest", run_id)}
    assert "401" in events[-1]["run"]["facets"]["errorMessage"]["message"]
