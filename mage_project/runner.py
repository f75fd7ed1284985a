"""Runs a pipeline through Mage, in this process: what the entry points (``cli``, ``demo``,
``editor``) stand on. It imports none of them.

- ``prepare_mage_environment``: point Mage at this project before ``mage_ai`` is imported.
- ``output_to``: a run's output (Mage's log records, dbt's) into a log file.
- ``run_pipeline``: execute a pipeline's blocks as the scheduler does, each block's start and
  end told to an observer (``BlockEvent``).
- ``activity_api``: the configured activity API, or the bundled simulator for a local session.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from mage_project import config, transform

log = logging.getLogger("mage_project")

DEMO_TOKEN = "demo-token"

# The simulator's data, which the demo's file drops must match.
SIMULATOR = {"seed": 0, "events_per_day": 5000}


# Mage's RetryConfig for the command line's runs (see run_pipeline).
ONCE = {"retries": 0}


# Warnings no user of this project can act on, silenced where they are raised.
_UNACTIONABLE = (
    # Mage asks scikit-learn whether each block's output is a model; scikit-learn 1.6+ warns for
    # every value that is not (a dict, a str, None).
    (DeprecationWarning, r"The following error was raised: .*__sklearn_tags__"),
    # Jupyter's paths, read when Mage is imported, on a machine without a login session.
    (Warning, r"XDG_RUNTIME_DIR is not set"),
)


def prepare_mage_environment() -> None:
    """Point Mage at this project and keep its state in the project's data directory, and
    silence what Mage's libraries say that no one can act on (above; and Jupyter's "Message
    signing is disabled": no kernel messages are signed or sent on the command line).

    Must run before ``mage_ai`` is imported: Mage reads these at import time.
    """
    os.environ.setdefault("MAGE_DATA_DIR", str(config.data_dir() / "mage"))
    os.environ.setdefault("MAGE_REPO_PATH", str(config.PROJECT_ROOT))
    os.environ.setdefault("ENV", "prod")
    for category, message in _UNACTIONABLE:
        warnings.filterwarnings("ignore", message=message, category=category)
    logging.getLogger("traitlets").setLevel(logging.ERROR)


@contextlib.contextmanager
def output_to(path: Path) -> Iterator[Path]:
    """Everything this process writes to its stdout and stderr while the block lasts (Mage's log
    records, dbt's output, the libraries' warnings: file descriptors 1 and 2, whoever holds
    them) is appended to the log file ``path`` instead."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    try:
        yield path
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in zip((1, 2), saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)


@dataclass(frozen=True)
class BlockEvent:
    """A block starting (``status`` "started") or ending: "ok", "failed" or "skipped" (its
    condition is false, or an upstream block was skipped). ``seconds`` since it started;
    ``rows``: what its output counts (``rows_of``), when it counts rows; ``error``: the first
    line of a failed block's error."""

    block: str
    status: str
    seconds: float = 0.0
    rows: int | None = None
    error: str | None = None


Observer = Callable[[BlockEvent], None]

# The row counts of the project's block summaries, most telling first: the rows a load wrote,
# those that passed validation, those fetched (see mage_project.pipelines).
ROW_COUNTS = ("rows_loaded", "rows_valid", "rows_fetched")


def rows_of(output) -> int | None:
    """The rows a block's output counts: a DataFrame's length; a summary's row count
    (``ROW_COUNTS``); a file-loads summary's rows loaded, over its files; else None."""
    import pandas as pd

    if isinstance(output, pd.DataFrame):
        return len(output)
    if not isinstance(output, dict):
        return None
    for key in ROW_COUNTS:
        if type(output.get(key)) is int:
            return output[key]
    files = output.get("files")
    if isinstance(files, list) and all(isinstance(f, dict) for f in files):
        return sum(f["rows_loaded"] for f in files if type(f.get("rows_loaded")) is int)
    return None


def first_line(error: BaseException) -> str:
    """``Type: message``, the message's first line only (``Type`` when it has none)."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def run_pipeline(pipeline_uuid: str, variables: dict, observer: Observer | None = None) -> None:
    """Execute the pipeline's blocks in this process, as the scheduler does. Raises on failure.

    Block by block through Mage's block executor, in dependency order: each block's @tests
    and failure callbacks run, and its output is kept under the run's own partition
    (``variables["run_id"]``), so concurrent runs never read each other's outputs. Each block
    runs once: the retries of metadata.yaml's ``retry_config`` are the scheduler's; a failed
    command-line run fails at once, with its exit code and alert, and is re-run whole.
    ``observer`` is told each block's start and end, in that order (``BlockEvent``).
    """
    observe = observer or (lambda event: None)
    pipeline, global_vars = _load_pipeline(pipeline_uuid, variables)
    run_id = variables["run_id"]
    skipped: set[str] = set()
    for block_uuid in dependency_order(
        {uuid: block.upstream_block_uuids for uuid, block in pipeline.blocks_by_uuid.items()}
    ):
        observe(BlockEvent(block_uuid, "started"))
        t0 = time.monotonic()
        try:
            if _skipped(pipeline.blocks_by_uuid[block_uuid], run_id, global_vars, skipped):
                # As the scheduler does: a block whose condition is false is skipped, and so is
                # everything downstream of it; the run still succeeds.
                log.info("%s: %s skipped (its condition is false or an upstream block was"
                         " skipped)", pipeline_uuid, block_uuid)
                skipped.add(block_uuid)
                observe(BlockEvent(block_uuid, "skipped", time.monotonic() - t0))
                continue
            output = _execute(pipeline, block_uuid, run_id, global_vars)
        except BaseException as exc:
            observe(BlockEvent(block_uuid, "failed", time.monotonic() - t0, error=first_line(exc)))
            raise
        observe(BlockEvent(block_uuid, "ok", time.monotonic() - t0, rows=rows_of(output)))


def _load_pipeline(pipeline_uuid: str, variables: dict):
    """Mage's Pipeline for ``pipeline_uuid`` and the run's global variables (its own, then
    ``variables``), with Mage pointed at this project and its database session open."""
    prepare_mage_environment()
    from mage_ai.settings.repo import set_repo_path

    set_repo_path(str(config.PROJECT_ROOT))
    from mage_ai.data_preparation.models.pipeline import Pipeline
    from mage_ai.data_preparation.variable_manager import get_global_variables
    from mage_ai.orchestration.db import db_connection

    db_connection.start_session()
    # Mage's dbt block renders dbt's profile from this process's environment.
    os.environ.update(transform.warehouse_environment())
    pipeline = Pipeline.get(pipeline_uuid, repo_path=str(config.PROJECT_ROOT))
    return pipeline, {**(get_global_variables(pipeline_uuid) or {}), **variables}


def _skipped(block, run_id: str, global_vars: dict, skipped: set[str]) -> bool:
    """Whether ``block`` is skipped: an upstream block was, or one of its conditions is false."""
    return bool(skipped.intersection(block.upstream_block_uuids)) or not all(
        condition.execute_conditional(block, execution_partition=run_id, global_vars=global_vars)
        for condition in block.conditional_blocks
    )


def _execute(pipeline, block_uuid: str, run_id: str, global_vars: dict):
    """Run one block through Mage's block executor: its output (the first, when it has more),
    or None."""
    from mage_ai.data_preparation.executors.executor_factory import ExecutorFactory

    result = ExecutorFactory.get_block_executor(
        pipeline, block_uuid, execution_partition=run_id
    ).execute(analyze_outputs=False, global_vars=global_vars, update_status=False,
              retry_config=ONCE)
    outputs = result.get("output") if isinstance(result, dict) else None
    return outputs[0] if isinstance(outputs, list) and outputs else None


def dependency_order(upstream: dict[str, list[str]]) -> list[str]:
    """Blocks ordered so that each comes after all of its upstream blocks."""
    order: list[str] = []
    done: set[str] = set()
    pending = dict(upstream)
    while pending:
        ready = sorted(u for u, ups in pending.items() if set(ups) <= done)
        if not ready:
            raise ValueError(f"the block graph has a cycle among {sorted(pending)}")
        for uuid in ready:
            order.append(uuid)
            done.add(uuid)
            del pending[uuid]
    return order


@contextlib.contextmanager
def activity_api():
    """The configured API, or the simulator on 127.0.0.1 for as long as the block lasts."""
    if os.environ.get("ACTIVITY_API_URL"):
        yield os.environ["ACTIVITY_API_URL"]
        return
    from mage_project.sources.activity_simulator import ActivitySimulator

    with ActivitySimulator(
        token=DEMO_TOKEN, invalid_rate=0.002, redelivery_rate=0.01, **SIMULATOR
    ) as sim:
        os.environ["ACTIVITY_API_URL"] = sim.url
        os.environ["ACTIVITY_API_TOKEN"] = DEMO_TOKEN
        try:
            yield sim.url
        finally:
            del os.environ["ACTIVITY_API_URL"], os.environ["ACTIVITY_API_TOKEN"]
