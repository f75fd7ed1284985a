"""The OpenLineage runs of the project's pipeline runs and block runs.

A pipeline run is an OpenLineage run of the job ``<pipeline>``; each block run a child run of the
job ``<pipeline>.<block>`` (its ``parent`` facet names the pipeline run); a dbt model or test a
child of the dbt block's run. Run ids are UUIDs derived from the project's own run id, so every
process of one run (Mage's scheduler runs each block in its own process) names the same run.

The library emits them around each block's work (``block``), whichever way the block runs: the
scheduler, the editor's notebook or the command line. The first block of a run emits the
pipeline's START, its last block (or the failure callback, or the condition that skips the rest)
the pipeline's COMPLETE or FAIL, once: a small state file per run (``lineage/runs/``) says what
was emitted. A run cancelled or killed is ABORTed by the next run of its pipeline, which finds
it dead (``abort_dead_runs``).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import socket
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from openlineage.client.event_v2 import Job, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    error_message_run,
    job_type_job,
    nominal_time_run,
    parent_run,
    processing_engine_run,
    set_producer,
)

from mage_project import config
from mage_project.lineage import emitter
from mage_project.lineage.facets import PRODUCER

log = logging.getLogger(__name__)
set_producer(PRODUCER)  # every facet's _producer: this project, not the client library

TERMINAL = ("COMPLETE", "FAIL", "ABORT")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def run_uuid(pipeline: str, run_id: str, *parts: str) -> str:
    """The OpenLineage run id of the project's run ``run_id`` (or of one of its children)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(("mage_project", pipeline, run_id, *parts))))


@functools.cache
def _engine() -> processing_engine_run.ProcessingEngineRunFacet:
    from importlib.metadata import version

    return processing_engine_run.ProcessingEngineRunFacet(
        version=version("mage-ai"), name="Mage",
        openlineageAdapterVersion=version("openlineage-python"))


@dataclass
class Step:
    """One run (a pipeline's, a block's, a model's): what its events say."""

    pipeline: str
    run_id: str
    job: str  # the job's name: <pipeline>[.<block>[.<model>]]
    job_type: str  # PIPELINE, BLOCK, MODEL, TEST
    uuid: str
    parent: Step | None = None
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    window: tuple[str, str] | None = None
    checks: dict = field(default_factory=dict)  # relation -> the QualityResults run on it
    last: bool = False  # the run ends with this block (set by a block that skips the rest)

    def event(self, state: str, *, at: str | None = None, error: str | None = None,
              stack: str | None = None) -> RunEvent:
        settings = config.lineage()
        facets: dict = {"processing_engine": _engine()}
        if self.window:
            facets["nominalTime"] = nominal_time_run.NominalTimeRunFacet(
                nominalStartTime=self.window[0], nominalEndTime=self.window[1])
        if self.parent is not None:
            root = self.parent
            while root.parent is not None:
                root = root.parent
            facets["parent"] = parent_run.ParentRunFacet(
                run=parent_run.Run(runId=self.parent.uuid),
                job=parent_run.Job(namespace=settings.namespace, name=self.parent.job),
                root=parent_run.Root(run=parent_run.RootRun(runId=root.uuid),
                                     job=parent_run.RootJob(namespace=settings.namespace,
                                                            name=root.job)))
        if error is not None:
            facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
                message=error[:4000], programmingLanguage="python", stackTrace=stack)
        job_facets = {"jobType": job_type_job.JobTypeJobFacet(
            processingType="BATCH", integration="MAGE", jobType=self.job_type)}
        return RunEvent(eventType=RunState[state], eventTime=at or now(),
                        run=Run(runId=self.uuid, facets=facets),
                        job=Job(namespace=settings.namespace, name=self.job, facets=job_facets),
                        inputs=self.inputs, outputs=self.outputs, producer=PRODUCER)


def pipeline_step(pipeline: str, run_id: str) -> Step:
    return Step(pipeline, run_id, pipeline, "PIPELINE", run_uuid(pipeline, run_id))


def block_step(pipeline: str, run_id: str, block: str) -> Step:
    return Step(pipeline, run_id, f"{pipeline}.{block}", "BLOCK", run_uuid(pipeline, run_id, block),
                parent=pipeline_step(pipeline, run_id))


# --- the runs' state, shared by the processes of a run ------------------------------------------

def _state_path(pipeline: str, run_id: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", run_id)
    return config.lineage().directory / "runs" / pipeline / f"{safe}.json"


def read_state(pipeline: str, run_id: str) -> dict:
    try:
        return json.loads(_state_path(pipeline, run_id).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}


def _write_state(pipeline: str, run_id: str, state: dict) -> None:
    state["owner"] = _process()
    emitter._write_atomically(_state_path(pipeline, run_id), json.dumps(state, sort_keys=True))


def _process() -> dict:
    import psutil

    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "created": psutil.Process(pid).create_time()}


def _alive(owner: dict | None) -> bool:
    import psutil

    if not owner or owner.get("host") != socket.gethostname():
        return True  # another machine's: not ours to judge
    try:
        return psutil.Process(owner["pid"]).create_time() == owner["created"]
    except psutil.NoSuchProcess:
        return False


def _window(window) -> tuple[str, str] | None:
    if not window or window[0] is None:
        return None
    return tuple(w.isoformat() if isinstance(w, datetime) else str(w) for w in window)


# --- the lifecycle ---------------------------------------------------------------------------

def _pipeline_events(state: dict, pipeline: str, run_id: str, kind: str, **details) -> list:
    """The pipeline run's ``kind`` event, once: [] when the run already ended."""
    if state.get("state") in TERMINAL:
        return []
    step = pipeline_step(pipeline, run_id)
    step.window = tuple(state["window"]) if state.get("window") else None
    # A run that failed before its first block began still shows, started and failed.
    opened = [] if state.get("started") else [step.event("START")]
    state.update(run_id=run_id, state=kind, started=state.get("started") or now())
    state.setdefault("blocks", {})
    return [*opened, step.event(kind, **details)]


def _begin(pipeline: str, run_id: str, step: Step) -> list:
    """The events that open ``step``: the pipeline's START first when the run has none (and the
    ABORT of the pipeline's dead runs before it)."""
    state = read_state(pipeline, run_id)
    events: list = []
    if not state:
        events += abort_dead_runs(pipeline)
    if not state or state.get("state") in ("FAIL", "ABORT"):
        # A new run, or a failed one run again (Mage's retry of a pipeline run keeps its id).
        state = {"run_id": run_id, "started": now(), "state": "START",
                 "blocks": state.get("blocks", {}), "window": state.get("window")}
        events.append(pipeline_step(pipeline, run_id).event("START", at=state["started"]))
    state["blocks"][step.job] = "START"
    _write_state(pipeline, run_id, state)
    return [*events, step.event("START")]


def _end(pipeline: str, run_id: str, step: Step, kind: str, *, last: bool = False,
         error: str | None = None, stack: str | None = None) -> list:
    state = read_state(pipeline, run_id) or {"blocks": {}}
    if step.window:
        state["window"] = list(step.window)
    events = [] if state["blocks"].get(step.job) in TERMINAL else [
        *_checks_events(step), step.event(kind, error=error, stack=stack)]
    state["blocks"][step.job] = kind
    # A failed block fails the run only when its last attempt failed: Mage's failure callback
    # and the command line say so (``run_failed``), after the retries of its retry_config.
    if kind == "COMPLETE" and (last or step.last):
        events += _pipeline_events(state, pipeline, run_id, kind)
    _write_state(pipeline, run_id, state)
    return events


def mark_block(pipeline: str, run_id: str, job: str, kind: str) -> None:
    """Record that the run's ``job`` (a block Mage ran without the library around it) ended."""
    state = read_state(pipeline, run_id) or {"run_id": run_id, "blocks": {}}
    state["blocks"][job] = kind
    _write_state(pipeline, run_id, state)


def _checks_events(step: Step) -> list:
    """The checks a block ran, as its child run ``<block>.checks`` (the way dbt's tests are
    jobs of their own): each checked table an input with its ``dataQualityAssertions``."""
    if not step.checks:
        return []
    from mage_project.lineage import facets

    child = Step(step.pipeline, step.run_id, f"{step.job}.checks", "TEST",
                 run_uuid(step.pipeline, step.run_id, step.job, "checks"), parent=step,
                 inputs=[facets.input_table(rel, results) for rel, results in step.checks.items()],
                 window=step.window)
    start = child.event("START")
    failed = [r.check_name for results in step.checks.values() for r in results if r.blocking]
    return [start, child.event("FAIL", error=f"checks failed: {', '.join(failed)}") if failed
            else child.event("COMPLETE")]


def tables_written(db, role: str, tables: list[tuple[str, int | None]]) -> list:
    """The output datasets of tables a block wrote (relation, rows), their schema read as
    ``role`` after the block's work committed; [] if even that fails (the warehouse is away)."""
    from mage_project.lineage import facets

    if not tables:
        return []
    try:
        with db.connection(role) as conn, db.transaction(conn) as cur:
            return [facets.output_table(rel, db=db, cur=cur, rows=rows) for rel, rows in tables]
    except Exception:
        log.exception("could not describe the tables written, for their lineage")
        return []


@contextlib.contextmanager
def block(pipeline: str, block_uuid: str, run_id: str, *, window=None, last: bool = False):
    """Emit the block run's START, then its COMPLETE (the pipeline's too when ``last``) or FAIL
    with the error. The block adds its ``inputs``, ``outputs`` and
    ``window`` to the ``Step`` it is given."""
    step = block_step(pipeline, run_id, block_uuid)
    step.window = _window(window)
    emitter.emit(_safely(_begin, pipeline, run_id, step))
    try:
        yield step
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}"
        emitter.emit(_safely(_end, pipeline, run_id, step, "FAIL", error=error,
                             stack=traceback.format_exc()[-8000:]))
        raise
    emitter.emit(_safely(_end, pipeline, run_id, step, "COMPLETE", last=last))


def _safely(build, *args, **kwargs) -> list:
    """Events, or none when they cannot be built (a full disk...): lineage never fails a run."""
    try:
        return build(*args, **kwargs)
    except Exception:
        log.exception("could not record the run's lineage")
        return []


def run_completed(pipeline: str, run_id: str, window=None) -> None:
    """The run ended early and well (its remaining blocks are skipped)."""
    def build():
        state = read_state(pipeline, run_id)
        if window and not state.get("window"):
            state["window"] = list(_window(window) or ()) or None
        events = _pipeline_events(state, pipeline, run_id, "COMPLETE")
        _write_state(pipeline, run_id, state)
        return events
    emitter.emit(_safely(build))


def run_failed(pipeline: str, run_id: str, error: str, block_uuid: str | None = None) -> None:
    """The run failed (Mage's failure callback, the command line): FAIL of the block, when it
    had not ended yet, and of the run, once."""
    step = block_step(pipeline, run_id, block_uuid) if block_uuid else None

    def build():
        if step is None:
            state = read_state(pipeline, run_id)
            events = _pipeline_events(state, pipeline, run_id, "FAIL", error=error)
            _write_state(pipeline, run_id, state)
            return events
        return _end(pipeline, run_id, step, "FAIL", error=error)
    emitter.emit(_safely(build))


def aborted(pipeline: str, run_id: str, reason: str) -> list:
    """ABORT of the run's blocks that had not ended, and of the run (its events, to emit)."""
    state = read_state(pipeline, run_id)
    if not state or state.get("state") in TERMINAL:
        return []
    events = []
    for job, kind in state["blocks"].items():
        if kind not in TERMINAL:
            block_uuid = job.removeprefix(f"{pipeline}.")
            events.append(block_step(pipeline, run_id, block_uuid).event("ABORT", error=reason))
            state["blocks"][job] = "ABORT"
    events += _pipeline_events(state, pipeline, run_id, "ABORT", error=reason)
    _write_state(pipeline, run_id, state)
    return events


def abort(pipeline: str, run_id: str, reason: str) -> None:
    emitter.emit(_safely(aborted, pipeline, run_id, reason))


def abort_dead_runs(pipeline: str) -> list:
    """ABORT of the runs of ``pipeline`` that never ended and never will: the process that
    last worked for one is gone, or Mage says its pipeline run was cancelled or failed."""
    directory = config.lineage().directory / "runs" / pipeline
    events: list = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if state.get("state") in TERMINAL or not state.get("run_id"):
            continue
        reason = _why_dead(state)
        if reason:
            events += aborted(pipeline, state["run_id"], reason)
    return events


def _why_dead(state: dict) -> str | None:
    mage_run = re.fullmatch(r"mage-(\d+)", state["run_id"])
    if mage_run:
        status = _mage_run_status(int(mage_run.group(1)))
        return f"Mage's pipeline run {mage_run.group(1)} is {status}" if status in (
            "cancelled", "failed") else None
    if not _alive(state.get("owner")):
        return f"the process of run {state['run_id']} ended before the run did"
    return None


def _mage_run_status(pipeline_run_id: int) -> str | None:
    try:
        from mage_ai.orchestration.db.models.schedules import PipelineRun

        run = PipelineRun.query.get(pipeline_run_id)
        return str(getattr(run.status, "value", run.status)) if run is not None else None
    except Exception:  # not under Mage, or its database is away: no judgement
        return None
