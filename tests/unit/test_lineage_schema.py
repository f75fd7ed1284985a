"""``lineage.schema.validate``: events the real openlineage-python 1.31 client builds, and one as
Airflow's provider sends it, pass; each broken rule is reported with its JSON path."""

from __future__ import annotations

import copy
import importlib
import inspect
import pkgutil

import pytest
from openlineage.client import generated
from openlineage.client.event_v2 import (
    DatasetEvent,
    InputDataset,
    Job,
    JobEvent,
    OutputDataset,
    Run,
    RunEvent,
    RunState,
)
from openlineage.client.facet_v2 import (
    BaseFacet,
    column_lineage_dataset,
    data_quality_assertions_dataset,
    data_quality_metrics_input_dataset,
    dataset_type_dataset,
    dataset_version_dataset,
    datasource_dataset,
    documentation_dataset,
    documentation_job,
    error_message_run,
    extraction_error_run,
    input_statistics_input_dataset,
    job_type_job,
    lifecycle_state_change_dataset,
    nominal_time_run,
    output_statistics_output_dataset,
    ownership_dataset,
    ownership_job,
    parent_run,
    processing_engine_run,
    schema_dataset,
    source_code_location_job,
    sql_job,
    storage_dataset,
    symlinks_dataset,
    tags_dataset,
    tags_job,
    tags_run,
)
from openlineage.client.generated.base import StaticDataset
from openlineage.client.serde import Serde
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from mage_project.lineage import schema

PRODUCER = "urn:mage-project:lineage"
RUN_ID = "0195f3c4-8b7a-7c3e-9d2f-4a1b2c3d4e5f"
PARENT_RUN_ID = "0195f3c4-0000-7000-8000-000000000001"
EVENT_TIME = "2025-05-01T10:00:00.000000+00:00"
NAMESPACE = "postgres://warehouse:5432"
GOVERNANCE_URL = ("urn:mage-project:lineage:facets:1-0-0:DataProductGovernanceDatasetFacet.json"
                  "#/$defs/DataProductGovernanceDatasetFacet")
MESH_URL = "https://openlineage.io/spec/facets/1-0-0/DataMeshGovernanceDatasetFacet.json"


def _job(name: str = "user_activity.load_events", **facets) -> Job:
    return Job(namespace="mage_project", name=name, facets=facets)


def start_event() -> dict:
    parent = parent_run.ParentRunFacet(
        run=parent_run.Run(runId=PARENT_RUN_ID),
        job=parent_run.Job(namespace="mage_project", name="user_activity"),
        root=parent_run.Root(run=parent_run.RootRun(runId=PARENT_RUN_ID),
                             job=parent_run.RootJob(namespace="mage_project", name="user_activity")),
        producer=PRODUCER)
    return Serde.to_dict(RunEvent(
        eventType=RunState.START, eventTime=EVENT_TIME, producer=PRODUCER,
        run=Run(runId=RUN_ID, facets={
            "parent": parent,
            "nominalTime": nominal_time_run.NominalTimeRunFacet(
                nominalStartTime="2025-05-01T00:00:00+00:00", nominalEndTime="2025-05-02T00:00:00+00:00"),
            "processing_engine": processing_engine_run.ProcessingEngineRunFacet(
                version="0.9.76", name="mage", openlineageAdapterVersion="1.31.0"),
            "tags": tags_run.TagsRunFacet(tags=[tags_run.TagsRunFacetFields(key="trigger", value="daily")]),
        }),
        job=_job(
            jobType=job_type_job.JobTypeJobFacet(processingType="BATCH", integration="MAGE", jobType="TASK"),
            sql=sql_job.SQLJobFacet(query="select * from raw.events"),
            documentation=documentation_job.DocumentationJobFacet(description="Loads the day's events."),
            ownership=ownership_job.OwnershipJobFacet(owners=[ownership_job.Owner(name="team:growth")]),
            sourceCodeLocation=source_code_location_job.SourceCodeLocationJobFacet(
                type="git", url="https://example.com/mage/data_loaders/load_events.py"),
            tags=tags_job.TagsJobFacet(tags=[tags_job.TagsJobFacetFields(key="layer", value="staging")]),
        ),
    ))


def _input_dataset() -> InputDataset:
    assertions = data_quality_assertions_dataset.DataQualityAssertionsDatasetFacet(assertions=[
        data_quality_assertions_dataset.Assertion(assertion="not_null", success=True, column="user_id"),
        data_quality_assertions_dataset.Assertion(assertion="row_count_between", success=False)])
    metrics = data_quality_metrics_input_dataset.DataQualityMetricsInputDatasetFacet(
        rowCount=1200, columnMetrics={"user_id": data_quality_metrics_input_dataset.ColumnMetrics(
            nullCount=0, distinctCount=950, quantiles={"0.5": 480.0})})
    return InputDataset(
        namespace=NAMESPACE, name="staging.events",
        facets={"schema": schema_dataset.SchemaDatasetFacet(fields=[
            schema_dataset.SchemaDatasetFacetFields(name="user_id", type="bigint")])},
        inputFacets={
            "dataQualityAssertions": assertions, "dataQualityMetrics": metrics,
            "inputStatistics": input_statistics_input_dataset.InputStatisticsInputDatasetFacet(
                rowCount=1200, size=48_000)})


def _output_dataset() -> OutputDataset:
    upstream = column_lineage_dataset.InputField(
        namespace=NAMESPACE, name="staging.events", field="amount",
        transformations=[column_lineage_dataset.Transformation(type="DIRECT", subtype="AGGREGATION",
                                                               masking=False)])
    facets = {
        "schema": schema_dataset.SchemaDatasetFacet(fields=[
            schema_dataset.SchemaDatasetFacetFields(name="user_id", type="bigint"),
            schema_dataset.SchemaDatasetFacetFields(name="net_revenue", type="numeric", fields=[
                schema_dataset.SchemaDatasetFacetFields(name="currency", type="text")])]),
        "columnLineage": column_lineage_dataset.ColumnLineageDatasetFacet(
            fields={"net_revenue": column_lineage_dataset.Fields(inputFields=[upstream])},
            dataset=[column_lineage_dataset.InputField(namespace=NAMESPACE, name="staging.events",
                                                       field="user_id")]),
        "symlinks": symlinks_dataset.SymlinksDatasetFacet(identifiers=[symlinks_dataset.Identifier(
            namespace="s3://landing", name="events/2025-05-01", type="LOCATION")]),
        "dataSource": datasource_dataset.DatasourceDatasetFacet(name="warehouse", uri=NAMESPACE),
        "documentation": documentation_dataset.DocumentationDatasetFacet(description="Revenue per user."),
        "ownership": ownership_dataset.OwnershipDatasetFacet(owners=[
            ownership_dataset.Owner(name="team:finance", type="TEAM")]),
        "tags": tags_dataset.TagsDatasetFacet(tags=[tags_dataset.TagsDatasetFacetFields(
            key="pii", value="false", field="user_id")]),
        "lifecycleStateChange": lifecycle_state_change_dataset.LifecycleStateChangeDatasetFacet(
            lifecycleStateChange=lifecycle_state_change_dataset.LifecycleStateChange.OVERWRITE),
        "datasetType": dataset_type_dataset.DatasetTypeDatasetFacet(datasetType="TABLE"),
        "version": dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion="42"),
        "storage": storage_dataset.StorageDatasetFacet(storageLayer="postgres", fileFormat="heap"),
    }
    stats = output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(rowCount=1200, size=9_000)
    return OutputDataset(namespace=NAMESPACE, name="marts.revenue", facets=facets,
                         outputFacets={"outputStatistics": stats})


def complete_event() -> dict:
    return Serde.to_dict(RunEvent(
        eventType=RunState.COMPLETE, eventTime=EVENT_TIME, producer=PRODUCER, run=Run(runId=RUN_ID),
        job=_job(), inputs=[_input_dataset()], outputs=[_output_dataset()]))


def fail_event() -> dict:
    error = error_message_run.ErrorMessageRunFacet(
        message="relation raw.events does not exist", programmingLanguage="PYTHON",
        stackTrace="Traceback (most recent call last): ...")
    extraction = extraction_error_run.ExtractionErrorRunFacet(totalTasks=2, failedTasks=1, errors=[
        extraction_error_run.Error(errorMessage="cannot parse", task="select ??", taskNumber=1)])
    return Serde.to_dict(RunEvent(
        eventType=RunState.FAIL, eventTime=EVENT_TIME, producer=PRODUCER,
        run=Run(runId=RUN_ID, facets={"errorMessage": error, "extractionError": extraction}), job=_job()))


def dataset_event() -> dict:
    return Serde.to_dict(DatasetEvent(
        eventTime=EVENT_TIME, producer=PRODUCER,
        dataset=StaticDataset(namespace=NAMESPACE, name="marts.revenue", facets={
            "schema": schema_dataset.SchemaDatasetFacet(fields=[
                schema_dataset.SchemaDatasetFacetFields(name="user_id", type="bigint")]),
            "documentation": documentation_dataset.DocumentationDatasetFacet(description="Revenue.")})))


def job_event() -> dict:
    return Serde.to_dict(JobEvent(
        eventTime=EVENT_TIME, producer=PRODUCER,
        job=_job("marts.revenue", sql=sql_job.SQLJobFacet(query="select 1")),
        inputs=[InputDataset(namespace=NAMESPACE, name="staging.events")],
        outputs=[OutputDataset(namespace=NAMESPACE, name="marts.revenue")]))


def airflow_event() -> dict:
    """A task's COMPLETE event as apache-airflow-providers-openlineage 2.1.0 sends it: its own
    facets name schemas this project does not vendor, so they are custom facets."""
    airflow = "https://github.com/apache/airflow/tree/providers-openlineage/2.1.0"
    static = "https://airflow.apache.org/docs/apache-airflow-providers-openlineage/2.1.0/_static/openlineage.json"
    return {
        "eventType": "COMPLETE",
        "eventTime": "2025-05-01T10:04:12.361402+00:00",
        "producer": airflow,
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
        "run": {"runId": "01968a8f-4c1e-7b55-a0b4-1f0f3b7a9c11", "facets": {
            "airflow": {"_producer": airflow, "_schemaURL": f"{static}#/definitions/AirflowRunFacet",
                        "dag": {"dag_id": "billing", "schedule_interval": "@daily"},
                        "dagRun": {"run_id": "scheduled__2025-05-01T00:00:00+00:00"},
                        "task": {"task_id": "load", "operator_class": "SQLExecuteQueryOperator"},
                        "taskInstance": {"try_number": 1},
                        "taskUuid": "01968a8f-4c1e-7b55-a0b4-1f0f3b7a9c11"},
            "airflowState": {"_producer": airflow,
                             "_schemaURL": f"{static}#/definitions/AirflowStateRunFacet",
                             "dagRunState": "success", "tasksState": {"load": "success"}},
            "processing_engine": {
                "_producer": airflow,
                "_schemaURL": "https://openlineage.io/spec/facets/1-1-1/ProcessingEngineRunFacet.json"
                              "#/$defs/ProcessingEngineRunFacet",
                "name": "Airflow", "version": "2.10.5", "openlineageAdapterVersion": "2.1.0"},
        }},
        "job": {"namespace": "default", "name": "billing.load", "facets": {
            "jobType": {"_producer": airflow,
                        "_schemaURL": "https://openlineage.io/spec/facets/2-0-3/JobTypeJobFacet.json"
                                      "#/$defs/JobTypeJobFacet",
                        "processingType": "BATCH", "integration": "AIRFLOW", "jobType": "TASK"},
            "airflow": {"_producer": airflow, "_schemaURL": f"{static}#/definitions/AirflowJobFacet",
                        "taskTree": {}, "taskGroups": {}, "tasks": {"load": {"operator": "SQL"}}},
        }},
        "inputs": [{"namespace": NAMESPACE, "name": "raw.invoices", "facets": {}}],
        "outputs": [],
    }


def _schema_bases(event: dict) -> set[str]:
    """The schema files the event's facets name, so a test can show they were held to them."""
    found = set()

    def walk(value):
        if isinstance(value, dict):
            if isinstance(value.get("_schemaURL"), str):
                found.add(value["_schemaURL"].partition("#")[0])
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(event)
    return found


@pytest.mark.parametrize("build", [start_event, complete_event, fail_event, dataset_event, job_event],
                         ids=["start-with-parent", "complete-with-datasets", "fail-with-error",
                              "dataset-event", "job-event"])
def test_event_the_client_builds_is_valid_and_its_facets_are_held_to_vendored_schemas(build):
    event = build()
    facet_bases = _schema_bases(event) - {schema.SPEC_URL}

    assert schema.validate(event) == []
    assert facet_bases  # the event carries facets, and every one of them has its schema here
    assert facet_bases <= schema.facet_schema_urls()


def test_airflow_provider_event_with_its_custom_facets_is_valid():
    assert schema.validate(airflow_event()) == []


def _set(path: tuple, value):
    def mutate(event):
        *parents, last = path
        for key in parents:
            event = event[key]
        event[last] = value
    return mutate


def _delete(path: tuple):
    def mutate(event):
        *parents, last = path
        for key in parents:
            event = event[key]
        del event[last]
    return mutate


COLUMN_LINEAGE = ("outputs", 0, "facets", "columnLineage")


@pytest.mark.parametrize(("mutate", "reasons"), [
    pytest.param(_delete(("run", "runId")), ["run: 'runId' is a required property"], id="missing-runId"),
    pytest.param(_set(("run", "runId"), "run-42"), ["run.runId: 'run-42' is not a 'uuid'"],
                 id="runId-not-uuid"),
    pytest.param(_set(("eventType",), "FINISHED"),
                 ["eventType: 'FINISHED' is not one of ['START', 'RUNNING', 'COMPLETE', 'ABORT', 'FAIL', "
                  "'OTHER']"], id="unknown-eventType"),
    pytest.param(_set(("eventTime",), "2025-05-01 10:00"),
                 ["eventTime: '2025-05-01 10:00' is not a 'date-time'"], id="eventTime-not-date-time"),
    pytest.param(_set(("eventTime",), "2025-05-01T10:00:00"),
                 ["eventTime: '2025-05-01T10:00:00' is not a 'date-time'"], id="eventTime-without-offset"),
    pytest.param(_delete(("outputs", 0, "outputFacets", "outputStatistics", "_producer")),
                 ["outputs[0].outputFacets.outputStatistics: '_producer' is a required property"],
                 id="facet-without-producer"),
    pytest.param(_delete((*COLUMN_LINEAGE, "fields", "net_revenue", "inputFields")),
                 ["outputs[0].facets.columnLineage.fields.net_revenue: 'inputFields' is a required property"],
                 id="column-lineage-without-inputFields"),
    pytest.param(_delete(("outputs", 0, "facets", "schema", "fields", 1, "name")),
                 ["outputs[0].facets.schema.fields[1]: 'name' is a required property"],
                 id="schema-field-without-name"),
    pytest.param(_set((*COLUMN_LINEAGE, "fields", "net_revenue", "inputFields", 0, "transformations", 0,
                       "masking"), "no"),
                 ["outputs[0].facets.columnLineage.fields.net_revenue.inputFields[0].transformations[0].masking:"
                  " 'no' is not of type 'boolean'"], id="column-lineage-masking-not-boolean"),
    pytest.param(_set(("inputs", 0, "inputFacets", "dataQualityAssertions", "assertions", 1, "success"),
                      None),
                 ["inputs[0].inputFacets.dataQualityAssertions.assertions[1].success: None is not of type "
                  "'boolean'"], id="assertion-success-not-boolean"),
    pytest.param(_set(("outputs", 0, "facets", "dataSource", "_producer"), "mage project"),
                 ["outputs[0].facets.dataSource._producer: 'mage project' is not a 'uri'"],
                 id="producer-not-uri"),
    pytest.param(_delete(("outputs", 0, "namespace")), ["outputs[0]: 'namespace' is a required property"],
                 id="dataset-without-namespace"),
])
def test_broken_rule_is_reported_with_its_path(mutate, reasons):
    event = complete_event()
    mutate(event)

    assert schema.validate(event) == reasons


def test_custom_facet_is_held_to_the_base_facet_only():
    event = airflow_event()
    airflow_facet = event["run"]["facets"]["airflow"]
    del airflow_facet["dag"]  # nothing here says what Airflow's facet requires ...
    del airflow_facet["_schemaURL"]  # ... but every facet names its schema

    assert schema.validate(event) == ["run.facets.airflow: '_schemaURL' is a required property"]


def test_facet_at_a_version_not_vendored_is_a_custom_facet():
    event = complete_event()
    lineage = event["outputs"][0]["facets"]["columnLineage"]
    lineage["_schemaURL"] = lineage["_schemaURL"].replace("/1-2-0/", "/1-1-0/")
    del lineage["fields"]["net_revenue"]["inputFields"]

    assert schema.validate(event) == []


def test_schema_url_naming_no_definition_of_a_vendored_schema_is_reported():
    event = complete_event()
    lineage = event["outputs"][0]["facets"]["columnLineage"]
    lineage["_schemaURL"] = lineage["_schemaURL"].replace("$defs/ColumnLineageDatasetFacet", "$defs/Lineage")

    assert schema.validate(event) == [
        "outputs[0].facets.columnLineage._schemaURL: 'https://openlineage.io/spec/facets/1-2-0/"
        "ColumnLineageDatasetFacet.json#/$defs/Lineage' names no definition of the vendored "
        "https://openlineage.io/spec/facets/1-2-0/ColumnLineageDatasetFacet.json"]


def test_deleted_facet_needs_no_body():
    event = complete_event()
    schema_facet = event["outputs"][0]["facets"]["schema"]
    event["outputs"][0]["facets"]["schema"] = {
        "_producer": PRODUCER, "_schemaURL": schema_facet["_schemaURL"], "_deleted": True}

    assert schema.validate(event) == []


def test_event_type_follows_the_schema_url_fragment():
    event = job_event()
    event["schemaURL"] = f"{schema.SPEC_URL}#/$defs/RunEvent"

    assert schema.validate(event) == ["$: 'run' is a required property"]


def test_dataset_event_must_not_carry_a_run_and_a_job():
    event = dataset_event()
    event.update(run={"runId": RUN_ID}, job={"namespace": "mage_project", "name": "x"})

    assert schema.validate(event) == ['$: must not match {"required": ["job", "run"]}']


def _governance() -> dict:
    return {"_producer": PRODUCER, "_schemaURL": GOVERNANCE_URL, "domain": "finance", "product": "revenue",
            "owner": "finance-analytics", "classification": "pii", "piiColumns": ["email"],
            "contract": {"id": "finance.revenue", "version": "1.2.0"}}


def test_project_governance_facet_is_held_to_its_vendored_schema():
    event = complete_event()
    facets = event["outputs"][0]["facets"]
    facets["dataProductGovernance"] = _governance()
    assert schema.validate(event) == []

    del facets["dataProductGovernance"]["product"]
    del facets["dataProductGovernance"]["contract"]["version"]
    assert schema.validate(event) == [
        "outputs[0].facets.dataProductGovernance: 'product' is a required property",
        "outputs[0].facets.dataProductGovernance.contract: 'version' is a required property"]


def test_proposed_data_mesh_governance_facet_is_held_to_its_vendored_schema():
    event = complete_event()
    event["outputs"][0]["facets"]["dataMeshGovernance"] = {
        "_producer": PRODUCER, "_schemaURL": MESH_URL, "domain": "finance", "dataClassification": "SECRET"}

    assert schema.validate(event) == [
        "outputs[0].facets.dataMeshGovernance: 'owner' is a required property",
        "outputs[0].facets.dataMeshGovernance.dataClassification: 'SECRET' is not one of ['PUBLIC', "
        "'INTERNAL', 'CONFIDENTIAL', 'RESTRICTED']"]


def _client_facet_schema_urls() -> set[str]:
    urls = set()
    for module in pkgutil.iter_modules(generated.__path__):
        for _, cls in inspect.getmembers(importlib.import_module(f"{generated.__name__}.{module.name}"),
                                         inspect.isclass):
            if issubclass(cls, BaseFacet) and cls.__module__ != f"{generated.__name__}.base":
                urls.add(cls._get_schema().partition("#")[0])
    return urls


def test_every_facet_schema_the_client_names_is_vendored():
    client_urls = _client_facet_schema_urls()

    assert len(client_urls) == 30
    assert client_urls <= schema.facet_schema_urls()


def test_vendored_core_is_the_one_the_client_emits():
    core = schema._documents()[schema.SPEC_URL]
    run_event = core["$defs"]["RunEvent"]["allOf"][1]

    assert RunEvent._get_schema() == f"{schema.SPEC_URL}#/$defs/RunEvent"
    assert run_event["properties"]["eventType"]["enum"] == [state.value for state in RunState]
    assert run_event["required"] == ["run", "job"]
    assert core["$defs"]["BaseEvent"]["required"] == ["eventTime", "producer", "schemaURL"]
    assert core["$defs"]["Run"]["properties"]["runId"]["format"] == "uuid"


def _refs(value):
    if isinstance(value, dict):
        if isinstance(value.get("$ref"), str):
            yield value["$ref"]
        for item in value.values():
            yield from _refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _refs(item)


def test_every_ref_of_the_vendored_schemas_resolves_offline():
    documents = schema._documents()
    registry = Registry().with_resources(
        (uri, DRAFT202012.create_resource(document)) for uri, document in documents.items())
    refs = [(uri, ref) for uri, document in documents.items() for ref in _refs(document)]

    for uri, ref in refs:
        registry.resolver(base_uri=uri).lookup(ref)  # raises Unresolvable: no retrieval to fall back on
    assert len(refs) > 60


def test_validation_does_not_change_the_event():
    event = complete_event()
    before = copy.deepcopy(event)

    schema.validate(event)

    assert event == before
