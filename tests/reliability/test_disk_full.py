"""A full disk under a run, for real: a tmpfs of the test's own, filled to the last byte before
the run, holds the landing zone (LANDING_URL) or the work directory (WORK_DIR). The run fails
with an error that says the disk is full, nothing is half-loaded, and once the space is freed
the next run loads everything, once.
"""

from __future__ import annotations

from datetime import date

import pytest
from conftest import query
from support import END, expected_rows, loaded_rows, run_log

from mage_project import config
from mage_project.landing import LandingZone

from .conftest import Drops, Run, assert_elt_complete, finished, lease_holder, raw_versions

pytestmark = pytest.mark.reliability

WINDOW = ("run", "user_activity_ingest", "--start", "2026-11-01", "--end", "2026-11-03")
FULL = "[Errno 28] No space left on device"




class HalfWritten(AssertionError):
    """A failed run left a file it wrote half on the disk."""


@pytest.mark.parametrize("setting", ["LANDING_URL", "WORK_DIR"])
def test_a_full_disk_fails_the_ingest_cleanly_then_next_run_loads_the_window(
        setting, warehouse, activity_api, small_disk, monkeypatch):
    disk = small_disk(4096)
    monkeypatch.setenv(setting, disk.path.as_uri() if setting == "LANDING_URL" else str(disk.path))
    disk.fill()
    run = Run(*WINDOW, "--run-id", "faulty")
    assert run.wait() == 1, run.output()[-4000:]
    assert "user_activity_ingest run faulty failed: OSError: " in run.output()
    assert FULL in run.output()
    assert loaded_rows(warehouse) == {}
    assert query(warehouse, "select count(*) from raw.user_activity_rejects") == [(0,)]
    assert query(warehouse, "select count(*) from ops.watermarks") == [(0,)]
    (status, error), = query(warehouse, "select status, error from ops.pipeline_runs")
    assert status == "failed" and FULL in error
    # In the work dir the failed run's own scratch may stay (user_activity_ingest/<run id>/, which
    # no other run reads, removed by a run a day later): nothing else, on either disk.
    leftovers = [f for f in disk.files()
                 if not (setting == "WORK_DIR" and f.startswith("user_activity_ingest/faulty/"))]

    disk.free()
    finished(Run(*WINDOW, "--run-id", "next"))
    rows, rejected, fetched = expected_rows()
    assert loaded_rows(warehouse) == rows
    assert query(warehouse, "select watermark from ops.watermarks") == [(END,)]
    assert query(warehouse, "select rows_fetched, rows_rejected, rows_changed from ops.pipeline_runs"
                            " where run_id = 'next' and status = 'success'") == [
        (fetched, rejected, len(rows))]
    if leftovers:  # last, so that the recovery above is checked whatever the run left
        raise HalfWritten(f"the failed run left {leftovers} on the full disk")


def test_a_full_work_dir_fails_the_file_loads_and_the_build_then_next_run_loads_every_file(
        warehouse, small_disk, monkeypatch):
    disk = small_disk(4096)
    monkeypatch.setenv("WORK_DIR", str(disk.path))
    drops = Drops(LandingZone(config.landing_url()))
    keys = drops.write(date(2026, 11, 1), date(2026, 11, 3))
    disk.fill()
    run = Run("run", "warehouse_elt", "--run-id", "faulty")
    assert run.wait() == 1, run.output()[-4000:]
    output = run.output()
    log = run_log(output)
    for key in keys:  # each file tried, each failing for a reason of ours, not its content
        assert f"{key} could not be loaded (OSError: {FULL}" in log
    # The build cannot write its artifacts either: the run fails, its failure callback having
    # given the lease up.
    (failed,) = [line for line in output.splitlines() if line.startswith("warehouse_elt run faulty failed: ")]
    assert FULL in failed
    assert raw_versions(warehouse) == {}
    assert query(warehouse, "select status, count(*) from ops.file_manifest group by 1") == [
        ("error", len(keys))]
    assert lease_holder(warehouse) is None
    # Nothing published: the published schema (the migrations') holds no relation.
    in_marts = "select count(*) from pg_class where relnamespace = 'marts'::regnamespace"
    assert query(warehouse, in_marts) == [(0,)]

    disk.free()
    finished(Run("run", "warehouse_elt", "--run-id", "next"))
    assert_elt_complete(warehouse, drops, errors=tuple((key, "faulty") for key in keys))
