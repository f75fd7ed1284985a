"""Mage's process queue (mage-ai 0.9.80), without its two races on ``multiprocessing.Queue.empty()``.

Mage's scheduler hands each block run to ``ProcessQueue``: ``enqueue`` puts the job on an
``mp.Queue``, marks it ``queued`` in a shared dict and starts a worker-pool process that
starts one worker per job. Mage decides from ``queue.empty()`` whether a job is still waiting,
but ``empty()`` reads the pipe, which the putting process's feeder thread fills *after*
``put`` returns. So, on a loaded machine:

- a new worker pool can find the queue empty and exit before the job reached the pipe; the
  next ``has_job`` then sees the job in the queue, never starts a pool, and the run waits
  forever with its block ``queued``;
- ``has_job`` answers False for a job still queued (not yet flushed, or just taken by a worker
  that has not yet written its pid), the scheduler takes the block run for crashed and queues
  it again, and the block runs twice.

Here the shared dict is the truth. A ``queued`` job is waiting until the pool, the one reader
of the queue, takes it and records the pid of the worker it started for it; a pool exits only
when no worker runs and no job is queued; a job queued while no pool lives (one that was
exiting as it arrived, or one that was killed) gets a new pool at the next ``has_job``, which
the scheduler asks of every queued block run on each tick, and reads the queue under a new
lock, since a pool killed while it waited on the queue died holding the old one. Mage's own
statuses and kill are unchanged; ``stop`` drains the queue without Mage's AttributeError.
The project's Mage launcher (``python -m mage_project.mage_cli``) makes Mage's queue factory
build this queue.
"""

from __future__ import annotations

import multiprocessing as mp
import queue as queue_module
import time

from mage_ai.orchestration.db.process import start_session_and_run
from mage_ai.orchestration.queue import process_queue
from mage_ai.orchestration.queue.process_queue import (
    LIVENESS_TIMEOUT_SECONDS,
    JobStatus,
    QueueStatus,
)

POLL_SECONDS = 1.0
NOTICE = f"block runs are queued through {__name__}.ProcessQueue"


class ProcessQueue(process_queue.ProcessQueue):
    """Mage's ``ProcessQueue`` whose pool and ``has_job`` trust the job dict, not ``empty()``."""

    def __init__(self, queue_config) -> None:
        super().__init__(queue_config)
        print(NOTICE, flush=True)  # in the scheduler's log: which queue this Mage runs

    def enqueue(self, job_id: str, target, *args, **kwargs) -> None:
        if self.status != QueueStatus.ACTIVE:
            self._print("Cannot enqueue a job to an inactive queue.")
            return
        if self.has_job(job_id):
            self._print(f"Job {job_id} exists. Skip enqueue.")
            return
        self._print(f"Enqueue job {job_id}")
        if self.redis_client:
            self.redis_client.set(job_id, self.client_id)
            self.redis_client.set(self.client_id, "1", ex=LIVENESS_TIMEOUT_SECONDS)
        # Queued before it is put: the pool that takes it must find it queued, not missing.
        self.job_dict[job_id] = JobStatus.QUEUED
        self.queue.put([job_id, target, args, kwargs])
        self._ensure_pool()

    def has_job(self, job_id: str, logger=None, logging_tags: dict | None = None) -> bool:
        if self.job_dict.get(job_id) != JobStatus.QUEUED:
            return super().has_job(job_id, logger=logger, logging_tags=logging_tags)
        if self.redis_client and not self.redis_client.get(job_id):
            return False
        if self.is_worker_pool_alive():
            return True  # the pool takes it, or has taken it and is starting its worker
        if self._jobs_waiting():
            self._ensure_pool()
            return True
        # Queued, nobody to take it and nothing in the queue: the pool died holding it.
        return False

    def start_worker_pool(self) -> None:
        self.worker_pool_proc = mp.Process(
            target=serve_jobs,
            args=[self.queue, self.size, self.job_dict, self.redis_client, self.client_id],
        )
        self.worker_pool_proc.start()

    def stop(self) -> None:
        """Mage's ``stop``, whose drain catches ``queue.Empty`` (Mage's names ``self.queue.Empty``,
        which does not exist, so a drain that lost the race with the pool raised AttributeError)."""
        self.status = QueueStatus.INACTIVE
        while not self.queue.empty():
            try:
                self.queue.get_nowait()
            except queue_module.Empty:
                break
        for job_id in list(self.job_dict.keys()):
            if isinstance(self.job_dict.get(job_id), int):
                self.kill_job(job_id)
            self.job_dict.pop(job_id, None)

    def _ensure_pool(self) -> None:
        if self.is_worker_pool_alive():
            return
        if self.worker_pool_proc is not None:
            # A pool killed while it waited on the queue (most of its life) died holding the
            # queue's read lock, which no one would ever release: every later pool would wait on
            # it, and each queued run with it. The pool is the queue's one reader and it is
            # dead, so the next pool reads under a new lock.
            self.queue._rlock = mp.Lock()
        self.start_worker_pool()

    def _jobs_waiting(self) -> bool:
        """Whether a job was put and not yet taken: ``qsize()`` counts at ``put``, unlike
        ``empty()`` (where ``qsize()`` is not implemented, ``empty()`` is the best there is)."""
        try:
            return self.queue.qsize() > 0
        except NotImplementedError:
            return not self.queue.empty()


class Worker(process_queue.Worker):
    """Runs one job the pool took from the queue (Mage's worker takes it itself)."""

    def __init__(self, job: list, job_dict) -> None:
        super().__init__(None, job_dict)
        self.job = job

    def run(self) -> None:
        job_id, target, args, kwargs = self.job
        print(f"Run worker for job {job_id}")
        try:
            start_session_and_run(target, *args, **kwargs)
        finally:
            self.job_dict[job_id] = JobStatus.COMPLETED


def serve_jobs(queue: mp.Queue, size: int, job_dict, redis_client, client_id: str) -> None:
    """The worker pool: take each job off the queue, run it in its own worker, at most
    ``size`` at once; exit when no worker runs and no job is queued."""
    workers: list[Worker] = []
    while True:
        workers = [w for w in workers if w.is_alive()]
        if redis_client and client_id:
            redis_client.set(client_id, "1", ex=LIVENESS_TIMEOUT_SECONDS)
        if len(workers) >= size:
            time.sleep(POLL_SECONDS)
            continue
        try:
            job = queue.get(timeout=POLL_SECONDS)
        except queue_module.Empty:
            if not workers and JobStatus.QUEUED not in job_dict.values():
                return
            continue
        if job_dict.get(job[0]) != JobStatus.QUEUED:
            continue  # cancelled, or the queue was stopped, while it waited
        worker = Worker(job, job_dict)
        worker.start()
        if job_dict.get(job[0]) == JobStatus.CANCELLED:  # killed while its worker started
            worker.kill()
        else:
            job_dict[job[0]] = worker.pid
            # A quick job can be over before its pid is noted: the pid would hide its COMPLETED.
            if not worker.is_alive() and job_dict.get(job[0]) == worker.pid:
                job_dict[job[0]] = JobStatus.COMPLETED
        workers.append(worker)
