"""In-warehouse transformation: the dbt project in ``dbt/warehouse``, run against the
configured warehouse (the embedded PostgreSQL when POSTGRES_HOST is unset)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import jinja2

from mage_project import config, warehouse

DBT_PROJECT = config.PROJECT_ROOT / "dbt" / "warehouse"


def warehouse_environment() -> dict:
    """What Mage's dbt block needs in the environment of the process that runs it, beyond the
    settings already there: where dbt keeps its logs and artifacts (the data directory) and,
    what the warehouse backend adds (for PostgreSQL the resolved connection settings: the
    embedded server's, started if need be, when POSTGRES_HOST is unset; for Snowflake nothing,
    its settings checked). ``make editor`` and the project's runner export them."""
    dbt_dir = config.data_dir() / "dbt"
    env = {"DBT_LOG_PATH": str(dbt_dir / "logs"), "DBT_TARGET_PATH": str(dbt_dir / "target")}
    env.update(warehouse.backend().dbt_environment())
    return env


def render_profiles(env: dict) -> str:
    """profiles.yml rendered as Mage renders it before its dbt blocks run dbt: Jinja with
    ``env_var`` reading ``env`` (Mage's reads the process environment)."""
    template = jinja2.Template((DBT_PROJECT / "profiles.yml").read_text(encoding="utf-8"))
    return template.render(env_var=lambda name, default=None: env.get(name, default))


@contextmanager
def dbt_invocation(target_path: Path | None = None):
    """The environment and the trailing arguments of a dbt command on the project, with
    profiles.yml rendered as Mage renders it. ``target_path`` keeps the invocation's artifacts
    apart from a concurrent one's."""
    env = {**os.environ, **warehouse_environment(), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    if target_path is not None:
        env["DBT_TARGET_PATH"] = str(target_path)
    # The rendered profile holds the password: a private directory, removed after the run.
    with tempfile.TemporaryDirectory(prefix="dbt-profiles-", dir=config.work_dir()) as profiles:
        Path(profiles, "profiles.yml").write_text(render_profiles(env), encoding="utf-8")
        yield env, ["--project-dir", str(DBT_PROJECT), "--profiles-dir", profiles]


DBT = Path(sys.executable).parent / "dbt"


def run_dbt(*args: str, target_path: Path | None = None) -> subprocess.CompletedProcess:
    """``dbt ARGS`` on the project; raises with dbt's own output when it fails."""
    with dbt_invocation(target_path) as (env, trailing):
        result = subprocess.run([str(DBT), *args, *trailing], cwd=DBT_PROJECT, env=env,
                                capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"dbt {' '.join(args)} failed:\n{result.stdout[-4000:]}")
    return result


def dbt_command(args: list[str]) -> int:
    """``python -m mage_project dbt ARGS``: dbt on the project from a terminal, on the
    configured warehouse, its output as it comes. Returns dbt's exit status."""
    with dbt_invocation() as (env, trailing):
        return subprocess.run([str(DBT), *args, *trailing], cwd=DBT_PROJECT, env=env).returncode


# The layer published by write-audit-publish (its schema is in dbt_project.yml's published_schemas).
PUBLISHED_SELECTOR = "path:models/marts"


def build_args(select: str | None = None) -> list[str]:
    """The arguments of the write-audit-publish ``dbt build`` (models and their tests), after
    the command itself: the published layer (marts) builds into its audit schema
    (``marts__audit``) and is tested there; ``publish()`` swaps it in. Since the marts are
    published whole, they are always built, ``select`` adding to them.
    """
    args = ["--vars", json.dumps({"audit": True})]
    if select:
        # With their children: rebuilding a view drops the views on it (cascade) on
        # PostgreSQL, so what depends on the selection is built again after it.
        args += ["--select", f"{select}+ {PUBLISHED_SELECTOR}"]
    return args


def audit_relation(name: str) -> str:
    """Where the audit build puts a published table: ``marts.x`` -> ``marts__audit.x``
    (the macro audit_schema_name)."""
    schema, _, table = name.partition(".")
    return f"{schema}__audit.{table}"


def publish() -> None:
    """Swap the audited build into the published schemas: the dispatched macro
    ``publish_audit_schemas`` (dbt/warehouse/macros/write_audit_publish.sql)."""
    with tempfile.TemporaryDirectory(prefix="dbt-target-", dir=config.work_dir()) as target:
        run_dbt("run-operation", "publish_audit_schemas", target_path=Path(target))


RUN_TARGETS_KEPT_SECONDS = 7 * 86400


def run_target_path(run_id: str) -> Path:
    """Where a pipeline run's dbt build writes its artifacts (``--target-path``): apart from any
    other run's, and found again from the run id alone (by the block that publishes the build,
    and by the failure callback that stores its test results)."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in run_id)
    return config.work_dir() / "dbt-runs" / safe


def prune_run_targets(keep_seconds: float = RUN_TARGETS_KEPT_SECONDS) -> int:
    """Remove the artifacts of runs older than ``keep_seconds`` (a run killed before it cleaned
    up leaves them). Returns how many were removed."""
    root = config.work_dir() / "dbt-runs"
    cutoff = time.time() - keep_seconds
    stale = [d for d in root.iterdir() if d.is_dir() and d.stat().st_mtime < cutoff] \
        if root.exists() else []
    for directory in stale:
        shutil.rmtree(directory, ignore_errors=True)
    return len(stale)


def summary(target: Path) -> dict:
    """What a dbt invocation with ``target`` as its target path ran, from its run_results.json:
    counts by status and, in ``test_results``, every test with its status and tested table.
    Raises FileNotFoundError when dbt ran nothing there."""
    results = json.loads((target / "run_results.json").read_text())["results"]
    manifest = target / "manifest.json"
    nodes = json.loads(manifest.read_text())["nodes"] if manifest.exists() else {}
    out: dict = {"models": 0, "tests": 0, "statuses": {}, "test_results": []}
    for result in results:
        kind = result["unique_id"].split(".", 1)[0]
        if kind == "model":
            out["models"] += 1
        elif kind == "test":
            out["tests"] += 1
            out["test_results"].append(_test_result(result, nodes))
        out["statuses"][result["status"]] = out["statuses"].get(result["status"], 0) + 1
    return out


def built_views(target: Path) -> list[str]:
    """The models materialized as views that the dbt invocation with ``target`` built."""
    results = json.loads((target / "run_results.json").read_text())["results"]
    nodes = json.loads((target / "manifest.json").read_text())["nodes"]
    return [nodes[r["unique_id"]]["name"] for r in results
            if r["unique_id"].startswith("model.") and r["status"] == "success"
            and nodes[r["unique_id"]]["config"].get("materialized") == "view"]


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
