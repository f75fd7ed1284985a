"""Runs beside runs: two of each pipeline started together, a scheduler run beside a command-line
run of the same window, and notebook builds of the marts beside other builds.

Each promise is shown with real processes (the command line's ``python -m mage_project run``,
Mage's scheduler, and an editor session's kernel) on one warehouse: each pipeline's write lock
(RUN_LOCK_TIMEOUT_SECONDS) and the marts' build lease (ops.build_leases) make them take turns,
and the tables end holding each row once.

An editor session is played by ``NotebookSession``: a process that runs the blocks it is told, one
at a time, the way Mage's notebook runs a block in the session's kernel (``execute_custom_code``
in mage_ai/server/utils/execute_custom_code.py: ``block.execute_with_callback(from_notebook=True,
...)``, then the block's tests), with the variables Mage's websocket server gives a notebook run.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import os
import queue
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, query, run_cli
from support import END, START, expected_rows, free_port, loaded_rows, stop_group
from support.file_drops import expected_latest

from mage_project import config, runs
from mage_project.landing import LandingZone
from mage_project.sources.file_drops import write_drops
from mage_project.warehouse import postgres

DROPS = (date(2026, 11, 1), date(2026, 11, 3))  # the file drops' days: [start, end)
DROP_PARAMS = {"seed": 5, "events_per_day": 400, "users": 150}
ELT = "warehouse_elt"

# One editor session's kernel. Reads block uuids on stdin, one a line; runs each as the notebook
# does and answers one line, "RESULT <json>" ({"block", "output"} or {"block", "error"}).
NOTEBOOK_KERNEL = r"""
import json
import os
import sys
from datetime import datetime, timedelta

from mage_project import config, transform
from mage_project.runner import prepare_mage_environment

prepare_mage_environment()
from mage_ai.settings.repo import set_repo_path

set_repo_path(str(config.PROJECT_ROOT))
from mage_ai.data_preparation.models.constants import BlockStatus
from mage_ai.data_preparation.models.pipeline import Pipeline
from mage_ai.data_preparation.variable_manager import get_global_variables
from mage_ai.orchestration.db import db_connection

db_connection.start_session()
os.environ.update(transform.warehouse_environment())  # as `make editor` exports them
pipeline = Pipeline.get(sys.argv[1], repo_path=str(config.PROJECT_ROOT))
print("READY", flush=True)
for line in sys.stdin:
    block = pipeline.get_block(line.strip())
    # The variables of a notebook run, as mage_ai/server/websocket_server.py sets them.
    now = datetime.now()
    global_vars = {**(get_global_variables(pipeline.uuid) or {}), "env": "dev",
                   "execution_date": now, "interval_end_datetime": now + timedelta(days=1),
                   "interval_seconds": None, "interval_start_datetime": now,
                   "interval_start_datetime_previous": None, "event": {}}
    try:
        # update_status=False: the committed metadata.yaml stays as it is.
        result = block.execute_with_callback(from_notebook=True, global_vars=global_vars,
                                             update_status=False)
        block.run_tests(from_notebook=True, global_vars=global_vars, update_tests=False)
        # What update_status would write into metadata.yaml, kept in this session instead.
        block.status = BlockStatus.EXECUTED
        output = next((o for o in (result or {}).get("output") or [] if o is not None), None)
        reply = {"block": block.uuid, "output": output}
    except Exception as error:
        reply = {"block": block.uuid, "error": f"{type(error).__name__}: {error}"}
    print("RESULT " + json.dumps(reply, default=str), flush=True)
"""


class NotebookSession:
    """An editor session: one kernel process that runs the blocks a user runs, in turn."""

    def __init__(self, pipeline: str, data_dir: Path, env: dict | None = None):
        self.log = data_dir / "kernel.log"
        data_dir.mkdir(parents=True, exist_ok=True)
        self._lines: queue.Queue[str] = queue.Queue()
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", NOTEBOOK_KERNEL, pipeline], cwd=ROOT,
                # Its own Mage state, as another editor has.
                env={**os.environ, "MAGE_DATA_DIR": str(data_dir / "mage"), **(env or {})},
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True)
        threading.Thread(target=self._read, daemon=True).start()
        self._expect("READY", timeout=180)

    def _read(self) -> None:
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put("")  # ended

    def _expect(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is not None and line.startswith(prefix):
                return line[len(prefix):]
            if line == "" or (line is None and time.monotonic() >= deadline):
                raise AssertionError(f"the notebook session gave no {prefix!r} line; its log:\n"
                                     f"{self.log.read_text()[-4000:]}")

    def run(self, block: str, timeout: float = 300) -> dict:
        """Run ``block`` as the notebook does; its output, or {"error": ...} when it raised."""
        self.process.stdin.write(block + "\n")
        self.process.stdin.flush()
        reply = json.loads(self._expect("RESULT ", timeout))
        assert reply["block"] == block, reply
        return reply

    def close(self) -> None:
        self.process.stdin.close()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def lease(conn) -> str | None:
    [(holder,)] = query(conn, "select run_id from ops.build_leases where name = %s",
                        (f"{ELT}:marts",))
    return holder


def land_drops() -> list[str]:
    return write_drops(LandingZone(config.landing_url()), *DROPS, **DROP_PARAMS)


def file_rows(keys: list[str]) -> dict[str, list[dict]]:
    """Each landed file's rows, read back with the csv module (not the project's loader)."""
    zone = LandingZone(config.landing_url())
    rows = {}
    for key in keys:
        data = zone.read_bytes(key)
        text = (gzip.decompress(data) if key.endswith(".gz") else data).decode()
        rows[key] = list(csv.DictReader(io.StringIO(text)))
    return rows


def expected_marts(keys: list[str]) -> dict[str, object]:
    """What the marts hold, told from the files alone: fct_daily_revenue's rows by date, and
    the customers of dim_customers."""
    rows = file_rows(keys)

    def latest(prefix: str):
        return expected_latest([(k, r) for k, r in rows.items() if k.startswith(prefix)],
                               prefix).values()

    revenue: dict = defaultdict(lambda: [Decimal(0), Decimal(0), set()])
    for payment in latest("billing/payments"):
        if payment["status"] not in ("succeeded", "refunded"):
            continue
        day = revenue[datetime.fromisoformat(payment["paid_at"]).astimezone(UTC).date()]
        day[0] += Decimal(payment["amount"])
        if payment["status"] == "refunded":
            day[1] += Decimal(payment["amount"])
        else:
            day[2].add(int(payment["customer_id"]))
    return {
        "fct_daily_revenue": [(d, g, r, g - r, len(c)) for d, (g, r, c) in sorted(revenue.items())],
        "dim_customers": sorted(int(c["customer_id"]) for c in latest("crm/customers")),
    }


def published_marts(conn) -> dict[str, object]:
    return {
        "fct_daily_revenue": query(conn, "select date, gross_revenue, refunds, net_revenue,"
                                         " paying_customers from marts.fct_daily_revenue order by 1"),
        "dim_customers": [c for (c,) in query(conn, "select customer_id from marts.dim_customers"
                                                    " order by 1")],
    }


@pytest.mark.reliability
def test_a_command_line_build_beside_a_notebook_build_is_refused_by_its_lease(warehouse, tmp_path,
                                                                             monkeypatch):
    """The notebook's session holds the marts' build lease from its plan to its publish: a
    command-line run of warehouse_elt meanwhile is refused, naming the session's run; the
    session's build publishes the marts once, and they hold what the files hold."""
    keys = land_drops()
    session = NotebookSession(ELT, tmp_path / "session")
    try:
        for block in ("detect_landing_file_drops", "load_landing_file_drops",
                      "check_raw_quality_file_drops"):
            assert "error" not in session.run(block), session.log.read_text()[-3000:]
        plan = session.run("plan_marts_build")["output"]
        editor_run = plan["run_id"]
        assert editor_run.startswith(f"editor-{session.process.pid}-"), plan
        assert (plan["up_to_date"], lease(warehouse)) == (False, editor_run)

        monkeypatch.setenv("RUN_LOCK_TIMEOUT_SECONDS", "3")
        refused = run_cli("run", ELT)
        assert refused.returncode == 1, refused.stdout[-3000:]
        assert f"another run ({editor_run}) is building the marts since" in refused.stderr, (
            refused.stderr[-3000:])
        [(cli_run, error)] = query(warehouse, "select run_id, error from ops.pipeline_runs"
                                              " where pipeline = %s and status = 'failed'", (ELT,))
        assert error.startswith(f"RunLockError: another run ({editor_run}) is building"), error
        assert lease(warehouse) == editor_run  # the refused run took nothing
        assert query(warehouse, "select count(*) from ops.marts_publications") == [(0,)]

        assert "error" not in session.run("build_dbt_warehouse"), session.log.read_text()[-3000:]
        published = session.run("publish_marts")["output"]
    finally:
        session.close()
    assert published["published"] is True, published
    assert query(warehouse, "select run_id, inputs_fingerprint from ops.marts_publications") == [
        (editor_run, plan["inputs_fingerprint"])]
    assert lease(warehouse) is None
    assert published_marts(warehouse) == expected_marts(keys)
    assert cli_run != editor_run




SESSION_RUN_ID = """
from mage_project import runs
from mage_project.pipelines import quality_gates

ids = {runs.run_id_for({"env": "dev", "execution_date": None}, notebook=quality_gates.EDITOR)
       for _ in range(3)}
print(*ids)
"""


def test_each_process_is_its_own_notebook_run_and_keeps_it():
    """What run_id_for gives a notebook run: one id for every block run in a process (a kernel),
    another in another process; a pipeline run's id whatever process runs its block."""
    ids = [subprocess.run([sys.executable, "-c", SESSION_RUN_ID], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout.split() for _ in range(2)]
    assert [len(i) for i in ids] == [1, 1], ids  # stable within the process
    (first,), (second,) = ids
    assert first != second, ids
    for run_id in (first, second):
        assert re.fullmatch(r"editor-\d+-[0-9a-f]{8}", run_id), run_id
    assert runs.run_id_for({"pipeline_run_id": 7}, notebook="editor") == "mage-7"
    assert runs.run_id_for({"run_id": "cli-run"}, notebook="editor") == "cli-run"


@pytest.mark.reliability
def test_two_editor_sessions_build_as_two_runs_and_a_failed_build_frees_its_own_lease(
        warehouse, tmp_path):
    """Two editor sessions (two kernels, as two editors have) on one warehouse: the second's plan
    is refused while the first's build holds the lease, naming the first; the first's dbt block
    fails, and its failure callback, run in the same kernel, gives the lease up; then the
    second's plan takes it as its own run."""
    land_drops()
    first = NotebookSession(ELT, tmp_path / "first")
    second = NotebookSession(ELT, tmp_path / "second", env={"RUN_LOCK_TIMEOUT_SECONDS": "0"})
    try:
        for session in (first, second):
            for block in ("detect_landing_file_drops", "load_landing_file_drops",
                          "check_raw_quality_file_drops"):
                assert "error" not in session.run(block), session.log.read_text()[-3000:]
        first_run = first.run("plan_marts_build")["output"]["run_id"]
        assert lease(warehouse) == first_run
        refused = second.run("plan_marts_build")
        assert refused.get("error", "").startswith(
            f"RunLockError: another run ({first_run}) is building the marts since"), refused
        assert lease(warehouse) == first_run

        # The first session's build fails: a raw table lost a column dbt's staging reads.
        with warehouse.cursor() as cur:
            cur.execute("alter table raw.billing__payments rename column amount to amount_lost")
        failed = first.run("build_dbt_warehouse")
        assert "error" in failed, failed
        assert lease(warehouse) is None, "the failure callback did not give up the session's lease"
        with warehouse.cursor() as cur:
            cur.execute("alter table raw.billing__payments rename column amount_lost to amount")

        plan = second.run("plan_marts_build")["output"]
        assert plan["run_id"].startswith(f"editor-{second.process.pid}-"), plan
        assert plan["run_id"] != first_run and lease(warehouse) == plan["run_id"]
    finally:
        first.close()
        second.close()
    assert query(warehouse, "select count(*) from ops.marts_publications") == [(0,)]


def start_cli(*args: str, env: dict | None = None) -> subprocess.Popen:
    """``python -m mage_project ARGS`` started in a child process, not waited for."""
    return subprocess.Popen([sys.executable, "-m", "mage_project", *args], cwd=ROOT,
                            env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(procs: list[subprocess.Popen], pipeline: str, timeout: float = 900) -> list[str]:
    """Wait for the runs; each must succeed. Returns their run ids, in start order."""
    outputs = [p.communicate(timeout=timeout) for p in procs]
    assert [p.returncode for p in procs] == [0] * len(procs), "\n-----\n".join(
        err[-6000:] for _, err in outputs)
    return [re.search(rf"^{pipeline} run (\S+) succeeded in ", out, re.MULTILINE)[1]
            for out, _ in outputs]


@pytest.mark.reliability
def test_two_ingest_runs_of_one_window_started_together_load_it_once(warehouse, simulator):
    """Both runs end: the second to reach its load waits for the first's write lock, then finds
    every row loaded and changes none. ops.pipeline_runs tells which did what."""
    simulator()
    window = ("--start", START.isoformat(), "--end", END.isoformat())
    # A third writer holds the write lock until both runs wait for it: then they load together
    # whatever the machine's scheduling (a fresh clone's CI once started the second run after
    # the first had ended).
    holder = postgres.connect("owner")
    try:
        with holder.cursor() as cur:
            cur.execute("select pg_advisory_xact_lock(%s)",
                        (postgres.lock_key("pipeline:user_activity_ingest"),))
        procs = [start_cli("run", "user_activity_ingest", *window) for _ in range(2)]
        both = wait_until(lambda: lock_waiters(warehouse, "user_activity_ingest") == 2, 300)
        holder.commit()
    finally:
        holder.close()
    run_ids = finish(procs, "user_activity_ingest")
    assert both, "the runs never both waited to load"
    rows, rejected, fetched = expected_rows()
    assert loaded_rows(warehouse) == rows
    records = query(warehouse, "select run_id, status, window_start, window_end, rows_fetched,"
                               " rows_loaded, rows_rejected, rows_duplicate, rows_changed"
                               " from ops.pipeline_runs order by rows_changed desc")
    assert sorted(r[0] for r in records) == sorted(run_ids)
    counts = ("success", START, END, fetched, len(rows), rejected, fetched - rejected - len(rows))
    assert [r[1:] for r in records] == [(*counts, len(rows)), (*counts, 0)], records
    first, second = records[0][0], records[1][0]
    # The first to commit wrote every row, reject and the watermark; the second none.
    assert query(warehouse, "select distinct _run_id from raw.user_activity") == [(first,)]
    assert query(warehouse, "select distinct run_id from raw.user_activity_rejects") == [(first,)]
    assert query(warehouse, "select watermark, run_id from ops.watermarks") == [(END, first)]
    # They ran together: the second started before the first ended.
    [(overlap,)] = query(warehouse, "select b.started_at < a.started_at + a.duration_seconds"
                                    " * interval '1 second' from ops.pipeline_runs a,"
                                    " ops.pipeline_runs b where a.run_id = %s and b.run_id = %s",
                         (first, second))
    assert overlap is True


@pytest.mark.reliability
def test_two_elt_runs_started_together_load_each_file_once_and_publish_what_the_files_hold(
        warehouse):
    """Both runs end: they take turns on each file's load (the pipeline's write lock), the one
    that comes second skips the version already loaded, and they take turns on the marts' build
    lease. Each file version is loaded once, by one of them; the marts hold what the files hold."""
    keys = land_drops()
    run_ids = finish([start_cli("run", ELT) for _ in range(2)], ELT)
    loaders = query(warehouse, "select file_key, version, status, run_id from ops.file_manifest"
                               " order by file_key")
    assert [row[:3] for row in loaders] == [(key, 1, "loaded") for key in sorted(keys)]
    assert {row[3] for row in loaders} <= set(run_ids)
    rows = file_rows(keys)
    for table, prefix in (("crm__customers", "crm/customers"),
                          ("billing__payments", "billing/payments"),
                          ("marketing__ad_spend", "marketing/ad_spend")):
        assert query(warehouse, f"select count(*) from raw.{table}") == [  # noqa: S608
            (sum(len(r) for k, r in rows.items() if k.startswith(prefix)),)]
    assert published_marts(warehouse) == expected_marts(keys)
    # One build: the run that waited for the lease found the marts built from its inputs.
    [(publisher,)] = query(warehouse, "select run_id from ops.marts_publications")
    assert publisher in run_ids
    assert lease(warehouse) is None


def running(thread: threading.Thread, function: str) -> bool:
    """Whether ``thread`` is inside ``function`` now (a frame of its stack runs that code)."""
    frame = sys._current_frames().get(thread.ident)
    while frame is not None:
        if frame.f_code.co_name == function:
            return True
        frame = frame.f_back
    return False


@pytest.mark.reliability
def test_a_build_that_waited_for_the_lease_builds_nothing_the_holder_published(warehouse,
                                                                             monkeypatch):
    from mage_project.pipelines import file_drops, quality_gates
    from mage_project.transform import run_dbt

    land_drops()
    assert file_drops.load_new_files()["failed"] == 0
    quality_gates.check_raw_file_drops("gate")
    holder = quality_gates.plan_build("run-a")
    assert lease(warehouse) == "run-a"
    monkeypatch.setenv("RUN_LOCK_TIMEOUT_SECONDS", "300")
    waiter: dict = {}
    thread = threading.Thread(target=lambda: waiter.update(quality_gates.plan_build("run-b")))
    thread.start()
    deadline = time.monotonic() + 60
    # Waiting for the lease, so past deciding whether the marts are up to date.
    while not running(thread, "_take_lease"):
        assert thread.is_alive() and time.monotonic() < deadline, "run-b is not waiting"
        time.sleep(0.1)
    run_dbt("build", *shlex.split(holder["dbt_args"]))
    assert quality_gates.publish_build(holder)["published"] is True
    thread.join(60)
    assert not thread.is_alive()
    assert (waiter["up_to_date"], lease(warehouse)) == (True, None), waiter


PROJECT_FILES = ("metadata.yaml", "io_config.yaml", "pipelines", "data_loaders", "transformers",
                 "data_exporters", "callbacks", "conditionals", "sensors", "dbt")


def project_with_trigger(target: Path, pipeline: str, trigger: dict) -> Path:
    """A copy of the project holding only ``pipeline``, its triggers replaced by ``trigger``
    (the committed ones fire on their schedule, not at once)."""
    target.mkdir()
    for name in PROJECT_FILES:
        source = ROOT / name
        if name == "pipelines":
            shutil.copytree(source / pipeline, target / name / pipeline,
                            ignore=shutil.ignore_patterns("__pycache__"))
        elif source.is_dir():
            shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, target / name)
    (target / "pipelines" / pipeline / "triggers.yaml").write_text(
        yaml.safe_dump({"triggers": [trigger]}))
    return target


def mage_runs(data_dir: Path, pipeline: str) -> list[tuple[int, str]]:
    """(id, status) of the pipeline's runs in the scheduler's own database (SQLite)."""
    found = sorted(data_dir.rglob("mage-ai.db"))
    if not found:
        return []
    try:
        with contextlib.closing(sqlite3.connect(f"{found[0].as_uri()}?mode=ro", uri=True,
                                                timeout=10)) as db:
            return db.execute("select id, lower(status) from pipeline_run where pipeline_uuid = ?",
                              (pipeline,)).fetchall()
    except sqlite3.OperationalError:  # not created yet, or a write in progress
        return []


def lock_waiters(conn, pipeline: str) -> int:
    """How many sessions wait for the pipeline's write lock (warehouse.postgres.acquire_run_lock)."""
    key = postgres.lock_key(f"pipeline:{pipeline}") & 0xFFFFFFFFFFFFFFFF
    [(waiting,)] = query(conn, "select count(*) from pg_locks where locktype = 'advisory'"
                               " and not granted and classid::bigint = %s and objid::bigint = %s",
                         (key >> 32, key & 0xFFFFFFFF))
    return waiting


def wait_until(condition, timeout: float, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(interval)
    return None


@pytest.mark.reliability
def test_a_scheduler_run_and_a_command_line_run_of_one_window_load_it_once(warehouse, simulator,
                                                                           tmp_path):
    """Mage's scheduler runs the window from a trigger; a command-line run of the same window
    starts while the scheduler's runs. Both end; the window is loaded once, and ops.pipeline_runs
    holds both: the scheduler's (mage-<id>) and the command line's."""
    simulator()
    window = {"window_start": START.isoformat(), "window_end": END.isoformat()}
    project = project_with_trigger(tmp_path / "project", "user_activity_ingest", {
        "name": "once_now", "schedule_type": "time", "schedule_interval": "@once",
        "start_time": (datetime.now(UTC) - timedelta(minutes=1)).replace(microsecond=0),
        "status": "active", "variables": window})
    mage_data, log = tmp_path / "mage", tmp_path / "scheduler.log"
    env = {**os.environ, "MAGE_DATA_DIR": str(mage_data), "SCHEDULER_TRIGGER_INTERVAL": "3"}
    with open(log, "w") as out:
        # Its own process group: Mage runs each block run in a child that must stop with it.
        scheduler = subprocess.Popen(
            [sys.executable, "-m", "mage_project.mage_cli", "start", str(project), "--instance-type",
             "scheduler", "--host", "127.0.0.1", "--port", str(free_port())],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    # A third writer holds the write lock until both runs wait for it: then they load together.
    holder = postgres.connect("owner")
    try:
        with holder.cursor() as cur:
            cur.execute("select pg_advisory_xact_lock(%s)",
                        (postgres.lock_key("pipeline:user_activity_ingest"),))
        started = wait_until(lambda: mage_runs(mage_data, "user_activity_ingest"), timeout=180)
        assert started, f"the scheduler started no run:\n{log.read_text()[-4000:]}"
        [(mage_run, _)] = started
        cli = start_cli("run", "user_activity_ingest", "--start", window["window_start"],
                        "--end", window["window_end"])
        both = wait_until(lambda: lock_waiters(warehouse, "user_activity_ingest") == 2, 300)
        holder.commit()
        assert both, f"the runs never both waited to load:\n{log.read_text()[-4000:]}"
        [cli_run] = finish([cli], "user_activity_ingest")
        ended = wait_until(lambda: [r for r in mage_runs(mage_data, "user_activity_ingest")
                                    if r[1] in ("completed", "failed", "cancelled")], timeout=300)
    finally:
        holder.close()
        stop_group(scheduler)
    assert ended == [(mage_run, "completed")], f"{ended}\n{log.read_text()[-4000:]}"
    rows, rejected, fetched = expected_rows()
    assert loaded_rows(warehouse) == rows
    [(writer, watermark)] = query(warehouse, "select run_id, watermark from ops.watermarks")
    assert writer in (f"mage-{mage_run}", cli_run) and watermark == END
    # The one that committed first wrote the rows; the other found them and changed none.
    assert query(warehouse, "select run_id, status, rows_fetched, rows_rejected, rows_changed"
                            " from ops.pipeline_runs order by run_id") == sorted(
        (run, "success", fetched, rejected, len(rows) if run == writer else 0)
        for run in (f"mage-{mage_run}", cli_run))
    assert query(warehouse, "select distinct _run_id from raw.user_activity") == [(writer,)]
    # They ran together: each started before the other ended.
    assert query(warehouse, "select bool_and(a.started_at < b.started_at + b.duration_seconds"
                            " * interval '1 second') from ops.pipeline_runs a"
                            " join ops.pipeline_runs b on a.run_id <> b.run_id") == [(True,)]


def test_finished_at_is_when_the_run_finished(warehouse, simulator):
    """A load that waits for another writer's lock finishes after that writer lets go: its
    ops.pipeline_runs row says so."""
    from mage_project.pipelines import user_activity

    simulator()
    validated = user_activity.validate(user_activity.fetch(
        window_start=START, window_end=datetime(2026, 11, 1, 6, tzinfo=UTC)))
    holder = postgres.connect("owner")
    result: dict = {}
    try:
        with holder.cursor() as cur:
            cur.execute("select pg_advisory_xact_lock(%s)",
                        (postgres.lock_key("pipeline:user_activity_ingest"),))
        loader = threading.Thread(target=lambda: result.update(user_activity.load(validated)))
        loader.start()
        assert wait_until(lambda: lock_waiters(warehouse, "user_activity_ingest") == 1, 60)
        released = datetime.now(UTC)
        holder.commit()
    finally:
        holder.close()
    loader.join(60)
    assert result["status"] == "success"
    [(finished,)] = query(warehouse, "select finished_at from ops.pipeline_runs")
    assert finished >= released, f"finished at {finished}, the lock was let go at {released}"
