"""Mage's scheduler runs warehouse_elt from a trigger: the sensor holds the run while the
landing zone is empty and lets it go on when a file drops.

A copy of the project holds only warehouse_elt, with an ``@once`` trigger (the committed
``on_file_arrival`` fires every 5 minutes) that waits for files. The scheduler
(``mage start --instance-type scheduler``) keeps its own state in SQLite in a temporary
MAGE_DATA_DIR; the warehouse is the test's own database.

Mage 0.9.80 has no setting for a sensor's poll interval: ``SensorBlock.execute_block_function``
(mage_ai/data_preparation/models/block/__init__.py) calls the sensor, and while it returns
false prints "Sensor sleeping for 1 minute..." and sleeps a fixed ``time.sleep(60)``. So the
file drops after the sensor's first (empty) poll, and the run goes on at the next, about a
minute later. SCHEDULER_TRIGGER_INTERVAL (Mage's scheduler tick, 10 s by default) is set
short so each block after the sensor starts within seconds of the one before it ending.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, query
from support import free_port, stop_group
from test_scheduler import PROJECT_FILES

from mage_project import config
from mage_project.landing import LandingZone
from mage_project.sources.file_drops import CUSTOMERS, customer_snapshot, drop_key, render_csv

pytestmark = pytest.mark.e2e

PIPELINE = "warehouse_elt"
SENSOR, LOADER = "detect_landing_file_drops", "load_landing_file_drops"
BLOCKS = (SENSOR, LOADER, "check_raw_quality_file_drops", "plan_marts_build", "build_dbt_warehouse",
          "publish_marts")
DAY = date(2026, 11, 1)
# How long the run must stay parked in the sensor, after its first poll, before the file
# drops. Mage's next poll comes 60 s after the first, so this must stay well under that.
WAITING_SECONDS = 20
FINISHED = ("completed", "failed", "cancelled")
SENSOR_SLEEPING = "Sensor sleeping for 1 minute..."  # Mage's SensorBlock, before each sleep


def project_copy(target: Path, trigger: dict) -> Path:
    """The project with only warehouse_elt, its triggers replaced by ``trigger``."""
    target.mkdir()
    for name in PROJECT_FILES:
        source = ROOT / name
        if name == "pipelines":
            shutil.copytree(source / PIPELINE, target / name / PIPELINE,
                            ignore=shutil.ignore_patterns("__pycache__"))
        elif source.is_dir():
            shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, target / name)
    (target / "pipelines" / PIPELINE / "triggers.yaml").write_text(
        yaml.safe_dump({"triggers": [trigger]}))
    return target


class MageState:
    """Read-only view of the scheduler's own database (SQLite under MAGE_DATA_DIR)."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir

    def _rows(self, statement: str, params=()) -> list[tuple]:
        found = sorted(self.data_dir.rglob("mage-ai.db"))
        if not found:
            return []
        try:
            with contextlib.closing(
                sqlite3.connect(f"{found[0].as_uri()}?mode=ro", uri=True, timeout=10)
            ) as db:
                return db.execute(statement, params).fetchall()
        except sqlite3.OperationalError:  # tables not created yet, or a write in progress
            return []

    def run(self) -> tuple[int, str] | None:
        """(id, status) of the pipeline's run, when there is one; statuses in lower case."""
        rows = self._rows("select id, lower(status) from pipeline_run where pipeline_uuid = ?",
                          (PIPELINE,))
        assert len(rows) <= 1, f"the @once trigger made more than one run: {rows}"
        return rows[0] if rows else None

    def block_runs(self, run_id: int) -> dict[str, str]:
        """Status of each block run of the pipeline run (Mage stores them upper case)."""
        return dict(self._rows("select block_uuid, lower(status) from block_run"
                               " where pipeline_run_id = ?", (run_id,)))


def table_exists(conn, name: str) -> bool:
    return query(conn, "select to_regclass(%s) is not null", (name,)) == [(True,)]


def empty_polls(mage_data: Path) -> int:
    """How many times the sensor answered false, from its block run's log."""
    return sum(path.read_text(errors="replace").count(SENSOR_SLEEPING)
               for path in mage_data.rglob(f"{SENSOR}.log"))


def wait_until(condition, timeout: float, interval: float = 1.0):
    """``condition()``'s first truthy value within ``timeout`` seconds, else None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    return None


def tail(path: Path, chars: int = 6000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else f"({path} missing)"


@contextlib.contextmanager
def scheduler(project: Path, env: dict, log: Path, mage_data: Path):
    """Mage's scheduler on ``project``; stopped with its workers, its log printed on failure."""
    with open(log, "w") as out:
        # Its own process group: Mage runs each block run in a child that must stop with it.
        proc = subprocess.Popen(
            [sys.executable, "-m", "mage_project.mage_cli", "start", str(project),
             "--instance-type", "scheduler", "--host", "127.0.0.1", "--port", str(free_port())],
            cwd=log.parent, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    except BaseException:
        stop_group(proc)
        print(f"--- scheduler log ({log}), tail:\n{tail(log)}")
        for block_log in sorted(mage_data.rglob(f"{SENSOR}.log")):
            print(f"--- sensor block log ({block_log}), tail:\n{tail(block_log, 2000)}")
        raise
    else:
        stop_group(proc)


def test_sensor_holds_the_scheduled_run_until_a_file_drops_then_it_loads(
        warehouse, tmp_path, monkeypatch):
    trigger = {
        "name": "once_waiting_for_files",
        "schedule_type": "time",
        "schedule_interval": "@once",
        "start_time": (datetime.now(UTC) - timedelta(minutes=1)).replace(microsecond=0),
        "status": "active",
        "variables": {"wait_for_files": True},
    }
    project = project_copy(tmp_path / "project", trigger)
    landing = tmp_path / "landing"
    landing.mkdir()  # empty when the run starts
    monkeypatch.setenv("LANDING_URL", landing.as_uri())
    mage_data = tmp_path / "mage"
    env = {**os.environ, "MAGE_DATA_DIR": str(mage_data), "SCHEDULER_TRIGGER_INTERVAL": "3"}
    mage = MageState(mage_data)
    log = tmp_path / "scheduler.log"  # kept with the pytest tmp dir, beside Mage's block logs

    with scheduler(project, env, log, mage_data):
        # Mage logs each empty poll of the sensor before its 60 s sleep. Stop waiting as soon
        # as the run has polled once, or got past the sensor (or ended) without waiting.
        def polled_or_past_the_sensor():
            run = mage.run()
            if run is None:
                return None
            blocks = mage.block_runs(run[0])
            past = run[1] in FINISHED or any(blocks.get(b) not in (None, "initial")
                                             for b in BLOCKS[1:])
            return (run, blocks) if past or empty_polls(mage_data) >= 1 else None

        seen = wait_until(polled_or_past_the_sensor, timeout=150)
        assert seen, f"the run never reached a polling sensor: run {mage.run()}"
        (run_id, status), blocks = seen
        first_poll = time.monotonic()
        assert (status, blocks.get(SENSOR), empty_polls(mage_data)) == ("running", "running", 1), \
            f"the sensor did not hold the run: run {status}, blocks {blocks}"
        # That poll migrated the warehouse, listed the zone and queried the manifest.
        assert table_exists(warehouse, "ops.file_manifest")

        deadline = time.monotonic() + WAITING_SECONDS
        while time.monotonic() < deadline:
            assert mage.run() == (run_id, "running")
            blocks = mage.block_runs(run_id)
            assert blocks.get(SENSOR) == "running", blocks
            assert all(blocks.get(b) in (None, "initial") for b in BLOCKS[1:]), blocks
            assert query(warehouse, "select count(*) from ops.file_manifest") == [(0,)]
            time.sleep(1)

        rows = customer_snapshot(DAY)
        key = drop_key(CUSTOMERS, DAY)
        LandingZone(config.landing_url()).write_bytes(key, render_csv(CUSTOMERS, rows))
        dropped = time.monotonic()
        # Mage's next poll is due 60 s after the first: the file must be there before it.
        assert dropped - first_poll < 50, f"the file dropped {dropped - first_poll:.0f} s late"

        # The next poll sees the file; then the load, the quality gate and dbt.
        finished = wait_until(lambda: (r := mage.run()) and r[1] in FINISHED and r, timeout=180)
        waited = time.monotonic() - dropped
        blocks = mage.block_runs(run_id)

        assert finished == (run_id, "completed"), f"run {finished}, blocks {blocks}"
        assert blocks == dict.fromkeys(BLOCKS, "completed")
        assert waited < 60 + 90, f"the run took {waited:.0f} s after the file dropped"
        # One empty poll, then the one that saw the file.
        assert empty_polls(mage_data) == 1
        # Block runs went through the project's queue, not Mage 0.9.80's (which can run the
        # sensor twice, or leave a block queued forever).
        assert "block runs are queued through mage_project.mage_queue.ProcessQueue" in log.read_text()

    assert len(rows) > 100
    expected = {(int(r["customer_id"]), r["email"], r["updated_at"], key, n)
                for n, r in enumerate(rows, start=1)}
    loaded = query(warehouse, "select customer_id, email, updated_at, _file_key, _row_number"
                              " from raw.crm__customers")
    assert {(c, e, u.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), k, n)
            for c, e, u, k, n in loaded} == expected
    assert len(loaded) == len(rows)
    assert query(warehouse, "select file_key, version, status, rows_loaded, rows_rejected, run_id"
                            " from ops.file_manifest") == [
        (key, 1, "loaded", len(rows), 0, f"mage-{run_id}")]
