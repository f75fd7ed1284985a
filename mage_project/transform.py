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
    """The environment dbt's profiles.yml reads: the target WAREHOUSE names and its settings
    (for PostgreSQL, the resolved ones: the embedded server's when POSTGRES_HOST is unset)."""
    env = dict(os.environ)
    env.update(DBT_PROFILES_DIR=str(DBT_PROJECT), DBT_SEND_ANONYMOUS_USAGE_STATS="false",
               DBT_TARGET=config.warehouse())
    if config.warehouse() == "snowflake":
        config.snowflake()  # a missing setting fails here, naming the variable
        return env
    settings = config.postgres()
    env.update(
        POSTGRES_HOST=settings.host,
        POSTGRES_PORT=str(settings.port),
        POSTGRES_USER=settings.user,
        POSTGRES_DBNAME=settings.dbname,
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


# The layer published by write-audit-publish (its schema is in dbt_project.yml's published_schemas).
PUBLISHED_SELECTOR = "path:models/marts"


class DbtBuildError(RuntimeError):
    """``dbt build`` failed. ``summary`` is what ran, as ``build`` returns it, test results
    included (the evidence of why nothing was published)."""

    def __init__(self, message: str, summary: dict) -> None:
        super().__init__(message)
        self.summary = summary


def build(select: str | None = None, *, audit: bool = False) -> dict:
    """``dbt build`` (models and their tests) and a summary of what ran, from run_results.json:
    counts by status and, in ``test_results``, every test with its status and tested table.

    ``audit`` (write-audit-publish): the published layer (marts) builds into its audit schema
    (``marts__audit``) and is tested there; ``publish()`` swaps it in. Since the marts are
    published whole, they are always built, ``select`` adding to them.

    Raises DbtBuildError when a model or an error-level test fails, so the block fails and alerts.
    """
    args = ["build"]
    if audit:
        args += ["--vars", json.dumps({"audit": True})]
        if select:
            # With their children: rebuilding a view drops the views on it (cascade) on
            # PostgreSQL, so what depends on the selection is built again after it.
            args += ["--select", f"{select}+ {PUBLISHED_SELECTOR}"]
    elif select:
        # cautious: a test that also reads a model outside the selection does not run.
        args += ["--select", select, "--indirect-selection", "cautious"]
    with tempfile.TemporaryDirectory(prefix="dbt-target-", dir=config.work_dir()) as target:
        try:
            run_dbt(*args, target_path=Path(target))
        except RuntimeError as exc:
            if not (Path(target) / "run_results.json").exists():
                raise  # dbt stopped before running anything (a parse or connection error)
            raise DbtBuildError(str(exc), _summary(Path(target))) from None
        return _summary(Path(target))


def publish() -> None:
    """Swap the audited build into the published schemas, atomically: the dispatched macro
    ``publish_audit_schemas`` (dbt/warehouse/macros/write_audit_publish.sql)."""
    with tempfile.TemporaryDirectory(prefix="dbt-target-", dir=config.work_dir()) as target:
        run_dbt("run-operation", "publish_audit_schemas", target_path=Path(target))


def _summary(target: Path) -> dict:
    results = json.loads((target / "run_results.json").read_text())["results"]
    manifest = target / "manifest.json"
    nodes = json.loads(manifest.read_text())["nodes"] if manifest.exists() else {}
    summary: dict = {"models": 0, "tests": 0, "statuses": {}, "test_results": []}
    for result in results:
        kind = result["unique_id"].split(".", 1)[0]
        if kind == "model":
            summary["models"] += 1
        elif kind == "test":
            summary["tests"] += 1
            summary["test_results"].append(_test_result(result, nodes))
        summary["statuses"][result["status"]] = summary["statuses"].get(result["status"], 0) + 1
    return summary


def _test_result(result: dict, nodes: dict) -> dict:
    """One test's outcome, the model it tests (``table``: as published; ``relation``: where it
    ran) and, when it did not pass, its compiled query (which selects the failing rows)."""
    node = nodes.get(result["unique_id"], {})
    parents = node.get("depends_on", {}).get("nodes", [])
    model = nodes.get(node.get("attached_node") or (parents[0] if parents else ""), {})
    table = relation = None
    if model:
        relation = f"{model['schema']}.{model['alias']}"
        table = f"{model['config'].get('schema') or model['schema']}.{model['alias']}"
    failed = result["status"] not in ("pass", "skipped")
    return {
        "name": node.get("name") or result["unique_id"].split(".")[2],
        "status": result["status"],
        "failures": result.get("failures"),
        "message": result.get("message"),
        "severity": str(node.get("config", {}).get("severity", "error")).lower(),
        "table": table,
        "relation": relation,
        "compiled_code": (result.get("compiled_code") or node.get("compiled_code")) if failed else None,
    }
