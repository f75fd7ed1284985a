"""mage_queue.ProcessQueue against the race in Mage 0.9.80's own process queue.

The race is made deterministic the way a loaded machine makes it: the test holds the queue's
write lock, so the feeder thread cannot write to the pipe what ``put`` buffered. Mage's
``empty()`` then says the queue is empty while it holds a job, which is what a fresh clone's
CI once saw (a run waiting forever with its dbt block queued; a sensor block run twice).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest
from conftest import ROOT
from mage_ai.orchestration.queue.config import QueueConfig
from mage_ai.orchestration.queue.process_queue import JobStatus, QueueStatus
from mage_ai.orchestration.queue.process_queue import ProcessQueue as MageProcessQueue

from mage_project import mage_cli
from mage_project.mage_queue import POLL_SECONDS, ProcessQueue


@pytest.fixture(autouse=True)
def mage_data_dir(monkeypatch, tmp_path):
    """Where the workers (forked from this process) keep Mage's database."""
    monkeypatch.setenv("MAGE_DATA_DIR", str(tmp_path / "mage"))


def record(path: str, seconds: float = 0.0) -> None:
    """The job: note one run in ``path`` (a line with the worker's pid)."""
    time.sleep(seconds)
    with open(path, "a") as out:
        out.write(f"{os.getpid()}\n")


def runs(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def wait_for(condition, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@contextlib.contextmanager
def started(kind):
    q = kind(QueueConfig(concurrency=4))
    q.start()
    try:
        yield q
    finally:
        q.stop()
        if q.worker_pool_proc is not None:
            q.worker_pool_proc.kill()
            q.worker_pool_proc.join(10)
        q.mp_manager.shutdown()


@contextlib.contextmanager
def feeder_stalled(q):
    """Hold the queue's write lock: what ``put`` buffers stays out of the pipe until released."""
    q.queue._wlock.acquire()
    try:
        yield
    finally:
        q.queue._wlock.release()


def test_mage_0_9_80_queue_has_the_race_this_module_fixes(tmp_path):
    """If this fails after a Mage upgrade, Mage fixed its queue: mage_queue can go."""
    with started(MageProcessQueue) as q:
        with feeder_stalled(q):
            q.enqueue("block_run_1", record, str(tmp_path / "job"))
            assert not q.has_job("block_run_1")  # queued, yet "no such job": run again
            q.worker_pool_proc.join(30)
            assert not q.is_worker_pool_alive()  # the pool found the queue empty and left
        # Released, the feeder writes it to the pipe (a moment later): then it is "queued" again,
        # so the next enqueue skips it and starts no pool.
        assert wait_for(lambda: q.has_job("block_run_1"))
        q.enqueue("block_run_1", record, str(tmp_path / "job"))
        assert not q.is_worker_pool_alive() and runs(tmp_path / "job") == 0


def test_a_job_put_before_the_feeder_wrote_it_runs_once(tmp_path):
    job = tmp_path / "job"
    with started(ProcessQueue) as q:
        with feeder_stalled(q):
            q.enqueue("block_run_1", record, str(job))
            assert q.has_job("block_run_1")  # not taken for crashed, so not queued twice
            q.enqueue("block_run_1", record, str(job))
            q.worker_pool_proc.join(3 * POLL_SECONDS)
            assert q.is_worker_pool_alive()  # it waits for the queued job
        assert wait_for(lambda: q.job_dict.get("block_run_1") == JobStatus.COMPLETED)
        assert runs(job) == 1
        q.worker_pool_proc.join(30)
        assert not q.is_worker_pool_alive()  # nothing left queued or running: it exits


def holds_the_read_lock(q) -> bool:
    """Whether another process (the pool, waiting on the queue) holds the queue's read lock."""
    if q.queue._rlock.acquire(False):
        q.queue._rlock.release()
        return False
    return True


@pytest.mark.parametrize("waiting", [False, True], ids=["as-it-started", "waiting-on-the-queue"])
def test_a_job_queued_while_no_pool_lives_gets_one(tmp_path, waiting):
    """The pool was killed (or was exiting as the job came): the scheduler's next look at the
    queued block run starts one, and the job runs. Killed while it waited on the queue, the
    pool died holding the queue's read lock (what a loaded CI machine once hit)."""
    job = tmp_path / "job"
    with started(ProcessQueue) as q:
        with feeder_stalled(q):
            q.enqueue("block_run_1", record, str(job))
            assert not waiting or wait_for(lambda: holds_the_read_lock(q))
            os.kill(q.worker_pool_proc.pid, signal.SIGKILL)
            q.worker_pool_proc.join(30)
            assert q.has_job("block_run_1") and q.is_worker_pool_alive()
        # The worker notes its run, then marks the job completed: wait for the mark.
        assert wait_for(lambda: q.job_dict.get("block_run_1") == JobStatus.COMPLETED)
        assert runs(job) == 1


@pytest.mark.parametrize("kind", [MageProcessQueue, ProcessQueue], ids=["mage", "mage_queue"])
def test_stop_while_another_reader_holds_the_queue(kind):
    """Mage's drain names ``self.queue.Empty``, which does not exist: a drain that finds the
    read lock taken (the pool waiting on the queue) raises AttributeError out of ``stop``."""
    with started(kind) as q:
        q.queue.put(["block_run_1", record, (), {}])
        assert wait_for(lambda: not q.queue.empty())
        with q.queue._rlock:
            if kind is MageProcessQueue:
                with pytest.raises(AttributeError):
                    q.stop()
            else:
                q.stop()
                assert q.status == QueueStatus.INACTIVE


def test_a_queued_job_the_pool_died_holding_is_no_longer_a_job(tmp_path):
    """Queued, no pool and nothing in the queue: the scheduler may queue it again."""
    with started(ProcessQueue) as q:
        q.job_dict["block_run_1"] = JobStatus.QUEUED
        assert not q.has_job("block_run_1") and not q.is_worker_pool_alive()


def test_a_job_cancelled_while_queued_never_runs(tmp_path):
    job = tmp_path / "job"
    with started(ProcessQueue) as q:
        with feeder_stalled(q):
            q.enqueue("block_run_1", record, str(job))
            q.kill_job("block_run_1")
        q.worker_pool_proc.join(30)
        assert not q.is_worker_pool_alive() and runs(job) == 0
        assert q.job_dict.get("block_run_1") == JobStatus.CANCELLED


def test_block_runs_the_scheduler_asks_after_on_every_tick_each_run_once(tmp_path):
    """The scheduler's loop: every block run not yet done that it finds no job for is queued
    (again, if Mage's queue lost it); it asks again on every tick while they wait and run, the
    first ticks while the feeder thread lags behind. Each runs once."""
    jobs = {f"block_run_{n}": tmp_path / f"job{n}" for n in range(12)}

    def tick() -> list[str]:
        queued = [job_id for job_id, path in jobs.items() if not runs(path) and not q.has_job(job_id)]
        for job_id in queued:
            q.enqueue(job_id, record, str(jobs[job_id]), 0.2)
        q.clean_up_jobs()
        return queued

    with started(ProcessQueue) as q:
        with feeder_stalled(q):
            assert tick() == list(jobs)
            assert tick() == []
        assert wait_for(lambda: tick() == [] and all(runs(path) for path in jobs.values()))
        q.worker_pool_proc.join(30)
        assert not q.is_worker_pool_alive()
    assert {job_id: runs(path) for job_id, path in jobs.items()} == dict.fromkeys(jobs, 1)


def test_the_launcher_makes_mage_build_this_queue(monkeypatch):
    from mage_ai.orchestration.queue.queue_factory import QueueFactory

    monkeypatch.setenv("MAGE_REPO_PATH", str(ROOT))
    monkeypatch.setattr(QueueFactory, "queue", None)
    monkeypatch.setattr(QueueFactory, "get_queue", QueueFactory.__dict__["get_queue"])
    mage_cli.install()
    installed = QueueFactory.get_queue.__func__
    mage_cli.install()  # twice: still the one wrapper
    assert QueueFactory.get_queue.__func__ is installed
    assert installed.installed_by == "mage_project.mage_cli"
    q = QueueFactory.get_queue()
    try:
        assert type(q) is ProcessQueue and QueueFactory.get_queue() is q
    finally:
        q.mp_manager.shutdown()
