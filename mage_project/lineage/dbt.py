"""The dbt block's lineage, from the artifacts of its build (``run_results.json`` and
``manifest.json`` in the run's target path): the block's run, and a child run per model and test
with the times dbt measured, each model's inputs (its parents) and output (its table, with the
``columnLineage`` that ``columns`` computes from its compiled SQL), each test's tested model as
its input with the test's ``dataQualityAssertions``.

Mage runs the dbt block itself, without the library around it: these events are emitted by the
block after it (``publish_marts``), or by its failure callback when the build failed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from openlineage.client.event_v2 import InputDataset, OutputDataset
from openlineage.client.facet_v2 import data_quality_assertions_dataset, schema_dataset

from mage_project import config
from mage_project.lineage import emitter, facets, naming, tracking

log = logging.getLogger(__name__)

AUDIT_SUFFIX = "__audit"  # the audit build's schemas (transform.audit_relation): named as published


def published(relation: str) -> str:
    schema, _, table = relation.lower().rpartition(".")
    schema = schema.rpartition(".")[2]  # "db"."schema"."table" -> schema
    return f"{schema.removesuffix(AUDIT_SUFFIX)}.{table}"


def _relation(node: dict) -> str:
    return published(f"{node['config'].get('schema') or node['schema']}.{node.get('alias') or node['name']}")


def _dataset(relation: str) -> tuple[str, str]:
    return naming.table(published(relation))


def build_events(pipeline: str, run_id: str, block: str, target: Path) -> list:
    """The events of the dbt build in ``target``: the block's START, its nodes' children and its
    COMPLETE (FAIL when a node failed). [] when dbt ran nothing there."""
    try:
        results = json.loads((target / "run_results.json").read_text())
        manifest = json.loads((target / "manifest.json").read_text())
    except (FileNotFoundError, ValueError):
        return []
    step = tracking.block_step(pipeline, run_id, block)
    state = tracking.read_state(pipeline, run_id)
    if state.get("window"):
        step.window = tuple(state["window"])
    lineage_by_model = _column_lineage(manifest)
    children, failed = [], []
    times = []
    for result in results["results"]:
        node = manifest["nodes"].get(result["unique_id"])
        if node is None or node["resource_type"] not in ("model", "test"):
            continue
        started, ended = _timing(result)
        times += [t for t in (started, ended) if t]
        child = _node_step(step, node, manifest, result, lineage_by_model.get(result["unique_id"]))
        children += [child.event("START", at=started)]
        if result["status"] in ("error", "fail", "runtime error"):
            failed.append(node["name"])
            children.append(child.event("FAIL", at=ended, error=result.get("message") or result["status"]))
        else:
            children.append(child.event("COMPLETE", at=ended))
    start = step.event("START", at=min(times) if times else None)
    end = step.event("FAIL", error=f"dbt build failed: {', '.join(failed)}") if failed else (
        step.event("COMPLETE", at=max(times) if times else None))
    return [start, *children, end]


def _timing(result: dict) -> tuple[str | None, str | None]:
    execute = [t for t in result.get("timing", []) if t.get("name") == "execute"]
    phases = execute or result.get("timing", [])
    if not phases:
        return None, None
    return _iso(phases[0].get("started_at")), _iso(phases[-1].get("completed_at"))


def _iso(stamp: str | None) -> str | None:
    if not stamp:
        return None
    return stamp.replace("Z", "+00:00") if stamp.endswith("Z") else stamp


def _node_step(parent: tracking.Step, node: dict, manifest: dict, result: dict,
               column_lineage: dict | None) -> tracking.Step:
    is_model = node["resource_type"] == "model"
    child = tracking.Step(
        parent.pipeline, parent.run_id, f"{parent.job}.{node['name']}", "MODEL" if is_model else "TEST",
        tracking.run_uuid(parent.pipeline, parent.run_id, parent.job, node["unique_id"]),
        parent=parent, window=parent.window)
    parents = [manifest["nodes"].get(u) or manifest["sources"].get(u)
               for u in node.get("depends_on", {}).get("nodes", [])]
    parents = [p for p in parents if p and p.get("resource_type") in ("model", "source", "seed")]
    if is_model:
        child.inputs = [_input(p) for p in parents]
        child.outputs = [_output(node, result, column_lineage)]
    else:
        passed = result["status"] == "pass"
        assertion = data_quality_assertions_dataset.Assertion(
            assertion=node["name"], success=passed, column=node.get("column_name"))
        child.inputs = [_input(p, {"dataQualityAssertions": data_quality_assertions_dataset.
                                   DataQualityAssertionsDatasetFacet(assertions=[assertion])})
                        for p in parents]
    return child


def _input(node: dict, input_facets: dict | None = None) -> InputDataset:
    if node["resource_type"] == "source":
        relation = f"{node['schema']}.{node.get('identifier') or node['name']}".lower()
    else:
        relation = _relation(node)
    namespace, name = naming.table(relation)
    return InputDataset(namespace=namespace, name=name, facets=facets.governance_facets(relation),
                        inputFacets=input_facets or {})


def _output(node: dict, result: dict, column_lineage: dict | None) -> OutputDataset:
    relation = _relation(node)
    namespace, name = naming.table(relation)
    dataset_facets = dict(facets.governance_facets(relation))
    columns = node.get("columns") or {}
    if columns:
        dataset_facets["schema"] = schema_dataset.SchemaDatasetFacet(fields=[
            schema_dataset.SchemaDatasetFacetFields(name=c["name"], type=c.get("data_type"),
                                                    description=c.get("description") or None)
            for c in columns.values()])
    if column_lineage:
        from mage_project.lineage import columns

        dataset_facets["columnLineage"] = columns.to_client_facet(column_lineage)
    rows = (result.get("adapter_response") or {}).get("rows_affected")
    output_facets = {}
    if isinstance(rows, int) and rows >= 0:
        from openlineage.client.facet_v2 import output_statistics_output_dataset as stats

        output_facets["outputStatistics"] = stats.OutputStatisticsOutputDatasetFacet(rowCount=rows)
    return OutputDataset(namespace=namespace, name=name, facets=dataset_facets,
                         outputFacets=output_facets)


def _column_lineage(manifest: dict) -> dict:
    """Each model's columnLineage facet body (``columns.models_lineage``); {} when it cannot be
    computed (the build's lineage is still emitted, without its columns)."""
    try:
        from mage_project.lineage import columns

        dialect = "snowflake" if config.warehouse() == "snowflake" else "postgres"
        return columns.models_lineage(manifest, _dataset, dialect=dialect)
    except Exception:
        log.exception("could not compute the dbt models' column lineage")
        return {}


def emit_build(pipeline: str, run_id: str, block: str, target: Path) -> None:
    """Emit the dbt build's lineage (see ``build_events``), once per run."""
    state = tracking.read_state(pipeline, run_id)
    job = f"{pipeline}.{block}"
    if state.get("blocks", {}).get(job) in tracking.TERMINAL:
        return
    events = tracking._safely(build_events, pipeline, run_id, block, target)
    if events:
        tracking.mark_block(pipeline, run_id, job, events[-1].eventType.value)
    emitter.emit(events)
