"""In-warehouse transformation: the dbt project in ``dbt/warehouse``, run against the
configured warehouse (the embedded PostgreSQL when POSTGRES_HOST is unset)."""

from __future__ import annotations

import os
import subprocess
import sys
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


def run_dbt(*args: str) -> subprocess.CompletedProcess:
    """``dbt ARGS`` on the project; raises with dbt's own output when it fails."""
    dbt = Path(sys.executable).parent / "dbt"
    result = subprocess.run(
        [str(dbt), *args, "--project-dir", str(DBT_PROJECT)],
        cwd=DBT_PROJECT, env=dbt_environment(), capture_output=True, text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"dbt {' '.join(args)} failed:\n{result.stdout[-4000:]}")
    return result
