"""In-warehouse transformation: the dbt project in ``dbt/warehouse``, run against the
configured warehouse (the embedded PostgreSQL when POSTGRES_HOST is unset)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from mage_project import config

DBT_PROJECT = config.PROJECT_ROOT / "dbt" / "warehouse"


def dbt_environment() -> dict:
    """The environment dbt's profiles.yml reads: the resolved warehouse settings."""
    settings = config.postgres()
    env = dict(os.environ)
    env.update(
        POSTGRES_HOST=settings.host,
        POSTGRES_PORT=str(settings.port),
        POSTGRES_USER=settings.user,
        POSTGRES_DBNAME=settings.dbname,
        DBT_PROFILES_DIR=str(DBT_PROJECT),
        DBT_SEND_ANONYMOUS_USAGE_STATS="false",
    )
    if settings.password:
        env["POSTGRES_PASSWORD"] = settings.password
    return env


def run_dbt(*args: str, target_path: Path | None = None) -> subprocess.CompletedProcess:
    """``dbt ARGS`` on the project; raises with dbt's own output when it fails.

    ``target_path`` keeps this invocation's artifacts apart from a concurrent one's.
    """
    dbt = Path(sys.executable).parent / "dbt"
    env = dbt_environment()
    if target_path is not None:
        env["DBT_TARGET_PATH"] = str(target_path)
    result = subprocess.run(
        [str(dbt), *args, "--project-dir", str(DBT_PROJECT)],
        cwd=DBT_PROJECT, env=env, capture_output=True, text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"dbt {' '.join(args)} failed:\n{result.stdout[-4000:]}")
    return result


def build(select: str | None = None) -> dict:
    """``dbt build`` (models and their tests) and a summary of what ran, from run_results.json.

    Raises when a model or an error-level test fails, so the block fails and alerts.
    """
    # cautious: a test that also reads a model outside the selection does not run.
    args = ["build"] + (["--select", select, "--indirect-selection", "cautious"] if select else [])
    with tempfile.TemporaryDirectory(prefix="dbt-target-", dir=config.work_dir()) as target:
        run_dbt(*args, target_path=Path(target))
        results = json.loads((Path(target) / "run_results.json").read_text())["results"]
    summary: dict = {"models": 0, "tests": 0, "statuses": {}}
    for result in results:
        kind = result["unique_id"].split(".", 1)[0]
        if kind == "model":
            summary["models"] += 1
        elif kind == "test":
            summary["tests"] += 1
        summary["statuses"][result["status"]] = summary["statuses"].get(result["status"], 0) + 1
    return summary
