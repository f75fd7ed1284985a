"""SIGKILL at every point of both pipelines, then a re-run: exactly the source's rows, none
twice, the marts equal to an independent computation, and nothing the killed run left (a lock,
the marts' build lease, a half-built audit schema) that makes the re-run wait or fail.

Each run is ``python -m mage_project run ...`` through Mage, in a process group of its own. A
run dies at a failpoint (``MAGE_PROJECT_FAILPOINT``: it SIGKILLs itself there), or the test
SIGKILLs its whole group while a proxy holds the run's connection at a moment of the traffic
(mid-page from the API, mid-COPY, at the marts' swap, after the server committed but before the
run heard). The re-runs have RUN_LOCK_TIMEOUT_SECONDS=0: anything the killed run still held
would fail them at once instead of making them wait. These are marked ``reliability`` (``make
test-reliability``); the lease's own tests at the end take seconds and run with ``make test``,
except those of scheduled runs (marked ``reliability``: one starts Mage's scheduler itself).

user_activity_ingest's own failpoints (after_landing_part, after_validate, after_staging_copy,
before_commit, after_commit) are killed the same way in
tests/e2e/test_user_activity_mage.py::test_sigkill_at_any_point_then_rerun_gives_exactly_the_expected_rows.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from conftest import ROOT, query
from support import END, expected_rows, free_port, loaded_rows

from mage_project import config
from mage_project.entities import USER_ACTIVITY as ENTITY
from mage_project.landing import LandingZone
from mage_project.pipelines import quality_gates
from mage_project.sources.file_drops import render_csv
from mage_project.warehouse import RunLockError

from .conftest import (
    Commit,
    CopyData,
    Drops,
    Proxy,
    Query,
    Run,
    ServerBytes,
    _pg_socket,
    assert_elt_complete,
    expected_marts,
    finished,
    group_running,
    lease_holder,
    published_marts,
    raw_versions,
    read_csv,
)

RERUN = {"RUN_LOCK_TIMEOUT_SECONDS": "0"}


def killed_at_failpoint(*args: str, failpoint: str) -> Run:
    run = Run(*args, env={"MAGE_PROJECT_FAILPOINT": failpoint})
    status = run.wait()
    assert status == -9, f"not killed at {failpoint} (exit {status}):\n{run.output()[-4000:]}"
    return run


def killed_at(trigger, *args: str) -> Run:
    """Start the run, SIGKILL its process group when the armed ``trigger`` holds its connection,
    then close that connection as the dead process's socket would be."""
    run = Run(*args)
    trigger.wait(proc=run)
    run.kill()
    trigger.connection.close()
    return run


# --- user_activity_ingest ---------------------------------------------------------------------

WINDOW = ("run", "user_activity_ingest", "--start", "2026-11-01", "--end", "2026-11-03")


@pytest.fixture
def api(activity_api):
    return activity_api


def _kill_mid_fetch(warehouse, api, pg_proxy, tcp_proxy, monkeypatch):
    """Mid-page: 100 kB into the API's answers, before the first day is all fetched."""
    url = urlsplit(api.url)
    proxy = tcp_proxy(url.hostname, url.port)
    monkeypatch.setenv("ACTIVITY_API_URL", api.url.replace(f":{url.port}", f":{proxy.port}"))
    killed_at(proxy.arm(ServerBytes(100_000, "hold")), *WINDOW)
    monkeypatch.setenv("ACTIVITY_API_URL", api.url)
    landed = LandingZone(config.landing_url()).list(ENTITY.landing_prefix())
    assert not [key for key in landed if "date=2026-11-02" in key], "the first day's fetch had ended"


def _kill_mid_copy(warehouse, api, pg_proxy, tcp_proxy, monkeypatch):
    """Mid-COPY of the first landing part straight into raw.user_activity."""
    killed_at(pg_proxy().arm(CopyData(64_000, "hold")), *WINDOW)


def _kill_with_commit_unanswered(warehouse, api, pg_proxy, tcp_proxy, monkeypatch):
    """The server committed the load; the run never heard (killed while the answer was on its
    way): rows, watermark and the run's success are in, the work files left behind."""
    killed_at(pg_proxy().arm(Commit("hold", answered=True)), *WINDOW)


def _kill_mid_staging_copy(warehouse, api, pg_proxy, tcp_proxy, monkeypatch):
    """A re-load of a window loaded before goes through staging and upsert: killed mid-COPY
    into the staging table."""
    finished(Run(*WINDOW))
    killed_at(pg_proxy().arm(CopyData(64_000, "hold")), *WINDOW)


ACTIVITY_KILLS = {
    "mid_fetch": (_kill_mid_fetch, "nothing"),
    "mid_copy": (_kill_mid_copy, "nothing"),
    "commit_unanswered": (_kill_with_commit_unanswered, "everything"),
    "mid_staging_copy": (_kill_mid_staging_copy, "everything"),
}


@pytest.mark.reliability
@pytest.mark.parametrize("point", ACTIVITY_KILLS)
def test_activity_killed_then_rerun_loads_exactly_the_window(point, warehouse, api, pg_proxy,
                                                             tcp_proxy, monkeypatch):
    kill, committed = ACTIVITY_KILLS[point]
    rows, rejected, fetched = expected_rows()
    kill(warehouse, api, pg_proxy, tcp_proxy, monkeypatch)
    if committed == "nothing":
        assert query(warehouse, "select count(*) from raw.user_activity") == [(0,)]
        assert query(warehouse, "select count(*) from ops.watermarks") == [(0,)]
        assert query(warehouse, "select count(*) from ops.pipeline_runs") == [(0,)]
    else:
        assert loaded_rows(warehouse) == rows
    before = query(warehouse, "select count(*) from ops.pipeline_runs where status = 'success'")[0][0]

    finished(Run(*WINDOW, "--run-id", "rerun", env=RERUN))
    assert loaded_rows(warehouse) == rows  # a primary key on event_id: none twice
    assert query(warehouse, "select watermark from ops.watermarks") == [(END,)]
    assert query(warehouse, "select status, rows_fetched, rows_rejected, rows_changed from ops.pipeline_runs"
                            " where run_id = 'rerun'") == [
        ("success", fetched, rejected, 0 if committed == "everything" else len(rows))]
    successes = query(warehouse, "select count(*) from ops.pipeline_runs where status = 'success'")
    assert successes == [(before + 1,)]


# --- warehouse_elt ----------------------------------------------------------------------------

ELT = ("run", "warehouse_elt")
FIRST = (date(2026, 11, 1), date(2026, 11, 3))
FIRST_FILES = 7  # the customers' snapshot, then customers, payments and ad spend of each day
AUDIT_TABLE = r'create\s+table\s+"[^"]+"\."marts__audit"\.'  # dbt building a mart


@pytest.fixture
def drops(warehouse):
    return Drops(LandingZone(config.landing_url()))


def loaded_files(conn) -> int:
    return query(conn, "select count(*) from ops.file_manifest where status = 'loaded'")[0][0]


def dbt_results(conn, run_id: str) -> int:
    return query(conn, "select count(*) from ops.quality_results where run_id = %s"
                       " and check_kind = 'dbt_test'", (run_id,))[0][0]


def published(conn) -> bool:
    """A build is in the published schema (which the migrations create empty)."""
    return query(conn, "select count(*) > 0 from pg_class where relnamespace = 'marts'::regnamespace"
                       " and relkind in ('r', 'v', 'm', 'p')") == [(True,)]


# Each point: how the run is killed (a failpoint's name, or a trigger of the proxy), then what
# the killed run has committed, checked before the re-run.
ELT_KILLS = {
    "drops_mid_copy": (lambda: CopyData(200, "hold"),
                       lambda c: loaded_files(c) == 0 and raw_versions(c) == {}),
    "drops_before_commit": ("drops_before_commit", lambda c: loaded_files(c) == 0 and raw_versions(c) == {}),
    "drops_commit_unanswered": (lambda: Commit("hold", answered=True),
                                lambda c: loaded_files(c) == 1 and len(raw_versions(c)) == 1),
    "drops_after_file": ("drops_after_file", lambda c: loaded_files(c) == 1 and len(raw_versions(c)) == 1),
    "gate_before_verdict": ("gate_before_verdict", lambda c: loaded_files(c) == FIRST_FILES and query(
        c, "select count(*) from ops.file_manifest where quality_status is not null") == [(0,)]),
    "gate_after_verdict": ("gate_after_verdict", lambda c: query(
        c, "select count(*) from ops.file_manifest where quality_status = 'passed'") == [(FIRST_FILES,)]),
    "plan_after_lease": ("plan_after_lease", lambda c: lease_holder(c) == "killed"),
    "dbt_mid_build": (lambda: Query(AUDIT_TABLE, "hold"),
                      lambda c: lease_holder(c) == "killed" and dbt_results(c, "killed") == 0),
    "publish_start": ("publish_start",
                      lambda c: lease_holder(c) == "killed" and dbt_results(c, "killed") == 0),
    "publish_before_swap": ("publish_before_swap", lambda c: lease_holder(c) == "killed"
                            and dbt_results(c, "killed") > 0 and not published(c)),
    "publish_mid_swap": (lambda: Query(r"\bset\s+schema\b", "hold"),
                         lambda c: lease_holder(c) == "killed" and not published(c)),
    "publish_after_swap": ("publish_after_swap", lambda c: lease_holder(c) == "killed" and published(c)
                           and query(c, "select count(*) from ops.marts_publications") == [(0,)]),
    "publish_after_record": ("publish_after_record", lambda c: lease_holder(c) == "killed" and query(
        c, "select run_id from ops.marts_publications") == [("killed",)]),
}


def kill_elt(point: str, pg_proxy) -> Run:
    how, _ = ELT_KILLS[point]
    args = (*ELT, "--run-id", "killed")
    if isinstance(how, str):
        return killed_at_failpoint(*args, failpoint=how)
    return killed_at(pg_proxy().arm(how()), *args)


@pytest.mark.reliability
@pytest.mark.parametrize("point", ELT_KILLS)
def test_elt_killed_then_rerun_loads_each_file_once_and_publishes_the_marts(point, warehouse, drops,
                                                                            pg_proxy):
    drops.write(*FIRST)
    kill_elt(point, pg_proxy)
    _, committed = ELT_KILLS[point]
    assert committed(warehouse), f"the killed run's state is not the one {point} leaves"

    rerun = finished(Run(*ELT, "--run-id", "rerun", env=RERUN))
    if point == "publish_after_record":
        # The killed run had published: nothing to rebuild, and the lease, still its own, is
        # not needed. The next file's build takes it over without waiting.
        assert re.search(r"^  build_dbt_warehouse +skipped$", rerun.output(), re.MULTILINE), (
            rerun.output()[-3000:])
        assert published_marts(warehouse) == expected_marts(drops.versions)
        assert lease_holder(warehouse) == "killed"
        drops.write(date(2026, 11, 3), date(2026, 11, 4), snapshot=False)
        finished(Run(*ELT, "--run-id", "next", env=RERUN))
        assert_elt_complete(warehouse, drops)
        assert query(warehouse, "select run_id from ops.marts_publications order by published_at") == [
            ("killed",), ("next",)]
    else:
        assert_elt_complete(warehouse, drops)
        assert query(warehouse, "select run_id from ops.marts_publications") == [("rerun",)]


# Between file versions: the files of 2026-11-01..02 loaded and published, then the payments of
# 2026-11-02 rewritten with one more payment (version 2) and the files of 2026-11-03 dropped. The
# rewritten file is the first one loaded (by table, then path date).
REWRITTEN = "billing/payments/2026-11-02/export.csv"
VERSION_KILLS = {
    "drops_before_commit": 0,  # versions of the new round committed by the killed run
    "drops_after_file": 1,
}


@pytest.mark.reliability
@pytest.mark.parametrize("failpoint", VERSION_KILLS)
def test_elt_killed_between_file_versions_then_rerun_loads_each_version_once(failpoint, warehouse, drops):
    drops.write(*FIRST)
    finished(Run(*ELT, "--run-id", "first"))
    rows = read_csv(REWRITTEN, drops.zone.read_bytes(REWRITTEN))
    extra = {**rows[0], "payment_id": "pay_v2_only", "amount": "12.34",
             "paid_at": "2026-11-02T12:00:00Z", "updated_at": "2026-11-02T12:00:00Z"}
    drops.rewrite(REWRITTEN, render_csv("billing/payments", [*rows, extra]))
    drops.write(date(2026, 11, 3), date(2026, 11, 4), snapshot=False)

    killed_at_failpoint(*ELT, "--run-id", "killed", failpoint=failpoint)
    assert query(warehouse, "select count(*) from ops.file_manifest where run_id = 'killed'") == [
        (VERSION_KILLS[failpoint],)]
    assert query(warehouse, "select max(version) from ops.file_manifest where file_key = %s",
                 (REWRITTEN,)) == [(1 + VERSION_KILLS[failpoint],)]

    finished(Run(*ELT, "--run-id", "rerun", env=RERUN))
    assert_elt_complete(warehouse, drops)  # the rewritten file's versions are 1 and 2, each once
    assert query(warehouse, "select count(*) from raw.billing__payments where payment_id = 'pay_v2_only'"
                 ) == [(1,)]
    assert query(warehouse, "select run_id from ops.marts_publications order by published_at") == [
        ("first",), ("rerun",)]



# --- the marts' build lease of a killed run (seconds: in make test) ---------------------------

HOLD_LEASE = """
import os, signal, sys
from mage_project.pipelines import quality_gates
assert quality_gates.plan_build(sys.argv[1])["up_to_date"] is False
print("holding", flush=True)
if sys.argv[2] == "die":
    os.kill(os.getpid(), signal.SIGKILL)
sys.stdin.read()  # until the test closes it
"""

# As Mage's scheduler runs a block (see quality_gates._scheduler_group): in a process group of
# its own, the scheduler starts a process for the block, which takes the lease in plan_build.
# argv: run id, then what the block does after the plan ("end": ends, as a block that finished;
# "die": SIGKILLed, as an OOM kill; "run": goes on running), then what the scheduler does
# ("wait": goes on with the run, until the test closes stdin; "die": SIGKILLed).
IN_A_SCHEDULER_BLOCK = """
import multiprocessing, os, signal, sys, time
from mage_project.pipelines import quality_gates

def block(run_id, then, planned):
    quality_gates.plan_build(run_id)
    planned.set()
    if then == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    while then == "run":
        time.sleep(1)

if __name__ == "__main__":
    run_id, block_then, scheduler_then = sys.argv[1:]
    planned = multiprocessing.Event()
    child = multiprocessing.Process(target=block, args=(run_id, block_then, planned))
    child.start()
    if block_then != "run":
        child.join()
    assert planned.wait(120), "the block did not plan"
    print("scheduled", flush=True)
    if scheduler_then == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    sys.stdin.read()  # until the test closes it
"""


def hold_lease(run_id: str, then: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LEASE, run_id, then], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    if then == "wait":
        assert proc.stdout.readline() == "holding\n"
    else:
        assert proc.wait(120) == -9
    return proc


@pytest.fixture
def no_waiting(monkeypatch):
    monkeypatch.setenv("RUN_LOCK_TIMEOUT_SECONDS", "0")
    yield
    quality_gates.store_failed_build("next")  # gives up this process's lease, if it took it


def test_the_lease_of_a_killed_run_is_taken_over_at_once(warehouse, no_waiting):
    hold_lease("dead", then="die")
    assert lease_holder(warehouse) == "dead"
    assert quality_gates.plan_build("next")["up_to_date"] is False
    assert lease_holder(warehouse) == "next"


def test_a_resumed_run_whose_lease_was_taken_over_builds_nothing(warehouse, no_waiting):
    # Mage resumes a killed run by running its crashed block again: its dbt block's condition
    # finds the lease gone to the next run, so it does not build into that run's audit schema.
    hold_lease("dead", then="die")
    resumed = {"run_id": "dead", "up_to_date": False}  # the killed run's plan, as Mage kept it
    assert quality_gates.build_still_planned(resumed) is True  # nobody took it over yet
    planned = quality_gates.plan_build("next")
    assert quality_gates.build_still_planned(resumed) is False
    assert quality_gates.build_still_planned(planned) is True
    assert quality_gates.build_still_planned({**planned, "up_to_date": True}) is False


def test_the_lease_of_a_live_run_is_not_taken_until_its_process_ends(warehouse, no_waiting):
    live = hold_lease("live", then="wait")
    try:
        with pytest.raises(RunLockError, match=r"another run \(live\) is building the marts"):
            quality_gates.plan_build("next")
    finally:
        live.kill()
        live.wait(60)
    assert quality_gates.plan_build("next")["up_to_date"] is False
    assert lease_holder(warehouse) == "next"


def scheduled(run_id: str, block: str, then: str) -> subprocess.Popen:
    """IN_A_SCHEDULER_BLOCK in a process group of its own, once its block has planned."""
    proc = subprocess.Popen([sys.executable, "-c", IN_A_SCHEDULER_BLOCK, run_id, block, then],
                            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    assert proc.stdout.readline() == "scheduled\n", f"exit {proc.wait(60)}"
    return proc


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL to every process of the group ``proc`` leads; returns when none runs."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while group_running(proc.pid):
        proc.poll()
        assert time.monotonic() < deadline, f"process group {proc.pid} outlived SIGKILL"
        time.sleep(0.05)
    proc.wait(60)


@pytest.mark.reliability
def test_the_lease_of_a_scheduled_run_is_taken_over_once_its_process_group_is_gone(warehouse,
                                                                                  no_waiting):
    """A scheduler SIGKILLed after the plan's block process ended: no process of the run is
    left, and the next run takes its lease over at once."""
    scheduler = scheduled("mage-7", block="end", then="die")
    assert scheduler.wait(60) == -signal.SIGKILL
    assert not group_running(scheduler.pid)
    assert lease_holder(warehouse) == "mage-7"
    assert quality_gates.plan_build("next")["up_to_date"] is False
    assert lease_holder(warehouse) == "next"


@pytest.mark.reliability
@pytest.mark.parametrize(("block", "then"), [("end", "wait"), ("die", "wait"), ("run", "die")],
                         ids=["between_blocks", "block_killed", "scheduler_killed_block_runs_on"])
def test_the_lease_of_a_scheduled_run_is_kept_while_a_process_of_its_group_lives(
        block, then, warehouse, no_waiting):
    """Between blocks (the plan's process ended, the scheduler goes on), after the block's
    process was SIGKILLed (an OOM kill: Mage runs the block again, in the same run), or with
    the scheduler SIGKILLed while the block's process runs on (nothing kills it): the run may go
    on, so the next run is refused, naming it. Once the group is gone, it takes the lease over."""
    scheduler = scheduled("mage-8", block, then)
    try:
        with pytest.raises(RunLockError, match=r"another run \(mage-8\) is building the marts"):
            quality_gates.plan_build("next")
        assert lease_holder(warehouse) == "mage-8"
    finally:
        kill_group(scheduler)
    assert quality_gates.plan_build("next")["up_to_date"] is False
    assert lease_holder(warehouse) == "next"


def warehouse_elt_once(target: Path) -> Path:
    """A copy of the project with only warehouse_elt, whose one trigger fires at once and does
    not wait for files."""
    target.mkdir()
    for name in ("metadata.yaml", "io_config.yaml", "data_loaders", "transformers",
                 "data_exporters", "callbacks", "conditionals", "sensors", "dbt"):
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, target / name, ignore=shutil.ignore_patterns(
                "__pycache__", "target", "logs"))
        else:
            shutil.copy(ROOT / name, target / name)
    pipeline = target / "pipelines" / "warehouse_elt"
    shutil.copytree(ROOT / "pipelines" / "warehouse_elt", pipeline,
                    ignore=shutil.ignore_patterns("__pycache__"))
    (pipeline / "triggers.yaml").write_text(yaml.safe_dump({"triggers": [{
        "name": "once_now", "schedule_type": "time", "schedule_interval": "@once",
        "start_time": (datetime.now(UTC) - timedelta(minutes=1)).replace(microsecond=0),
        "status": "active", "variables": {"wait_for_files": False}}]}))
    return target


@pytest.mark.reliability
def test_mages_scheduler_keeps_its_runs_lease_while_it_lives_and_loses_it_when_killed(
        warehouse, no_waiting, tmp_path):
    """``mage start --instance-type scheduler`` runs warehouse_elt; a proxy holds the dbt
    block's first query, after the plan's block process took the lease and ended. While the
    scheduler lives, the next run is refused, naming the scheduled run; once the scheduler's
    process group is SIGKILLed (as a crash or a reboot ends it), the next run takes the lease
    over at once."""
    proxy = Proxy(_pg_socket(os.environ["POSTGRES_HOST"], int(os.environ["POSTGRES_PORT"])),
                  postgres=True)
    dbt_starts = proxy.arm(Query(r'"app": "dbt"', "hold"))  # dbt's comment on every query
    project = warehouse_elt_once(tmp_path / "project")
    env = {**os.environ, "POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": str(proxy.port),
           "MAGE_DATA_DIR": str(tmp_path / "mage")}
    with open(tmp_path / "scheduler.log", "w") as out:
        scheduler = subprocess.Popen(
            [sys.executable, "-m", "mage_project.mage_cli", "start", str(project),
             "--instance-type", "scheduler", "--host", "127.0.0.1", "--port", str(free_port())],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        try:
            dbt_starts.wait(timeout=180)
        except AssertionError:
            raise AssertionError((tmp_path / "scheduler.log").read_text()[-6000:]) from None
        holder = lease_holder(warehouse)
        run = int(holder.removeprefix("mage-"))
        database = next((tmp_path / "mage").rglob("mage-ai.db"))  # Mage's own, SQLite
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as mage:
            assert mage.execute("select status from pipeline_run where id = ?", (run,)
                                ).fetchall() == [("RUNNING",)]  # enum names
            assert dict(mage.execute("select block_uuid, status from block_run"
                                     " where pipeline_run_id = ?", (run,)).fetchall()) == {
                "detect_landing_file_drops": "COMPLETED", "load_landing_file_drops": "COMPLETED",
                "check_raw_quality_file_drops": "COMPLETED", "plan_marts_build": "COMPLETED",
                "build_dbt_warehouse": "RUNNING", "publish_marts": "INITIAL"}
        with pytest.raises(RunLockError, match=rf"another run \({holder}\) is building the marts"):
            quality_gates.plan_build("next")
        kill_group(scheduler)
        dbt_starts.connection.close()  # as the dead dbt's socket would be
        assert quality_gates.plan_build("next")["up_to_date"] is False
        assert lease_holder(warehouse) == "next"
    finally:
        kill_group(scheduler)
        proxy.close()
