"""The warehouse failing under a run, for real: PostgreSQL stopped with ``pg_ctl -m immediate``
mid-load, and the run's connection cut by a proxy mid-COPY, before its COMMIT reaches the
server, or after the server committed but before the run heard. The run fails with an error that
says the connection went, nothing half-loaded is left, and the next run completes correctly
(for a COMMIT whose answer was lost: without loading anything twice).
"""

from __future__ import annotations

from datetime import date

import pytest
from conftest import query
from support import END, expected_rows, loaded_rows

from mage_project import config
from mage_project.landing import LandingZone

from .conftest import (
    Commit,
    CopyData,
    Drops,
    Run,
    assert_elt_complete,
    finished,
    raw_versions,
)

pytestmark = pytest.mark.reliability

FAULTS = ["server_stopped", "cut_mid_copy", "cut_before_commit", "cut_after_commit"]

WINDOW = ("run", "user_activity_ingest", "--start", "2026-11-01", "--end", "2026-11-03")
ELT = ("run", "warehouse_elt")
LOST_CONNECTION = "server closed the connection unexpectedly"

# name: (the trigger, given how many bytes into a COPY is mid-COPY; whether the server carried
# out the load's COMMIT)
CUTS = {
    "cut_mid_copy": (lambda mid: CopyData(mid, "cut"), False),
    "cut_before_commit": (lambda mid: Commit("cut"), False),
    "cut_after_commit": (lambda mid: Commit("cut", answered=True), True),
}


def faulty_run(*args: str, proxy, fault: str, mid_copy: int, server=None) -> Run:
    """A run whose warehouse connection ``fault`` breaks ("server_stopped": the server stops
    with -m immediate while the proxy holds the run's COPY ``mid_copy`` bytes in; then it starts
    again)."""
    if fault == "server_stopped":
        trigger = proxy.arm(CopyData(mid_copy, "hold"))
        run = Run(*args, "--run-id", "faulty")
        trigger.wait(proc=run)
        server.stop("immediate")
        trigger.release()
        run.wait()
        server.start()
        return run
    trigger = proxy.arm(CUTS[fault][0](mid_copy))
    run = Run(*args, "--run-id", "faulty")
    run.wait()
    assert trigger.fired.is_set()
    return run


def said(message: str, output: str) -> None:
    lines = [line for line in output.splitlines() if "faulty failed" in line or ": error: " in line]
    assert message in output, f"{message!r} not said; the run said: {lines[-3:]}"


# --- user_activity_ingest ---------------------------------------------------------------------


@pytest.mark.parametrize("fault", FAULTS)
def test_activity_load_losing_its_connection_fails_then_next_run_loads_the_window(
        fault, dedicated_server, activity_api, pg_proxy):
    proxy = pg_proxy()
    rows, rejected, fetched = expected_rows()
    # A landing part is some 500 kB: 64 kB is well inside the first one's COPY.
    run = faulty_run(*WINDOW, proxy=proxy, fault=fault, mid_copy=64_000, server=dedicated_server)
    output = run.output()
    assert run.proc.returncode == 1, output[-4000:]

    conn = dedicated_server.connect("warehouse")
    try:
        committed = fault != "server_stopped" and CUTS[fault][1]
        assert loaded_rows(conn) == (rows if committed else {})
        assert query(conn, "select watermark from ops.watermarks") == ([(END,)] if committed else [])
        # The failure is recorded over the run's success when the success committed; not at all
        # while the server is down.
        assert query(conn, "select status, rows_fetched from ops.pipeline_runs") == (
            [] if fault == "server_stopped" else [("failed", fetched if committed else None)])

        finished(Run(*WINDOW, "--run-id", "next"))
        assert loaded_rows(conn) == rows
        assert query(conn, "select watermark from ops.watermarks") == [(END,)]
        assert query(conn, "select status, rows_fetched, rows_rejected, rows_changed from ops.pipeline_runs"
                           " where run_id = 'next'") == [
            ("success", fetched, rejected, 0 if committed else len(rows))]
    finally:
        conn.close()
    # Last, so that the recovery above is checked whatever the message says.
    said(f"user_activity_ingest run faulty failed: OperationalError: {LOST_CONNECTION}", output)


# --- warehouse_elt ----------------------------------------------------------------------------

FIRST_FILE = "billing/payments/2026-11-01/export.csv"  # loaded first: by table, then path date


@pytest.mark.parametrize("fault", FAULTS)
def test_file_load_losing_its_connection_fails_then_next_run_loads_each_file_once(
        fault, dedicated_server, pg_proxy):
    proxy = pg_proxy()
    drops = Drops(LandingZone(config.landing_url()))
    drops.write(date(2026, 11, 1), date(2026, 11, 3))
    # The first file's valid rows are a few kilobytes.
    run = faulty_run(*ELT, proxy=proxy, fault=fault, mid_copy=200, server=dedicated_server)
    output = run.output()
    conn = dedicated_server.connect("warehouse")
    try:
        if fault == "server_stopped":
            # Every file's load and its record failed: the run says so and fails.
            assert run.proc.returncode == 1, output[-4000:]
            assert "warehouse_elt run faulty failed: FileLoadsNotRecorded" in output
            message = f"{FIRST_FILE} (error: OperationalError: {LOST_CONNECTION}"
            assert raw_versions(conn) == {}
            errors = ()
        else:
            # The other files are loaded and published; the run exits 3 naming the file.
            assert run.proc.returncode == 3, output[-4000:]
            message = f"  {FIRST_FILE}: error: OperationalError: {LOST_CONNECTION}"
            first = {k for k, _ in raw_versions(conn) if k == FIRST_FILE}
            assert first == ({FIRST_FILE} if CUTS[fault][1] else set())
            assert len(raw_versions(conn)) == 7 - (0 if CUTS[fault][1] else 1)
            errors = ((FIRST_FILE, "faulty"),)

        finished(Run(*ELT, "--run-id", "next"))
        assert_elt_complete(conn, drops, errors=errors)
    finally:
        conn.close()
    said(message, output)  # last: the recovery above is checked whatever the message says
