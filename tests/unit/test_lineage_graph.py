"""The lineage graph of stored OpenLineage events (mage_project.lineage.graph), built from a small
hand-built company: the project's loads and dbt models (raw -> staging -> marts, with
columnLineage facets) and an Airflow task of the finance team reading the revenue mart."""

from __future__ import annotations

import json

import pytest

from mage_project import contracts
from mage_project.lineage import graph as lineage
from mage_project.lineage.graph import AffectedProduct, Impact, LineageLookupError, Transformation

PG = "postgres://127.0.0.1:5432"
RAW = f"{PG}/warehouse.raw.billing__payments"
REJECTS = f"{PG}/warehouse.raw.load_rejects"
STG = f"{PG}/warehouse.staging.stg_billing__payments"
FCT = f"{PG}/warehouse.marts.fct_daily_revenue"
REPORT = f"{PG}/warehouse.finance.revenue_report"
FILES = "file//landing/billing/payments"
OURS = "urn:mage-project:lineage"
AIRFLOW = "https://github.com/apache/airflow/tree/providers-openlineage/2.1.0"


def field(name: str, column: str, kind: str, subtype: str, masking: bool = False) -> dict:
    return {"namespace": PG, "name": name, "field": column,
            "transformations": [{"type": kind, "subtype": subtype, "masking": masking}]}


def lineage_facet(fields: dict) -> dict:
    return {"columnLineage": {"_producer": OURS, "_schemaURL": "https://openlineage.io/spec/facets/1-2-0/"
                              "ColumnLineageDatasetFacet.json#/$defs/ColumnLineageDatasetFacet",
                              "fields": {c: {"inputFields": f} for c, f in fields.items()}}}


def event(job: str, time: str, inputs: list, outputs: list, *, namespace: str = "mage_project",
          producer: str = OURS, event_type: str = "COMPLETE", run: str = "0") -> dict:
    return {"eventType": event_type, "eventTime": time, "producer": producer,
            "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
            "run": {"runId": f"01936f5e-0000-7000-8000-{int(run):012d}"},
            "job": {"namespace": namespace, "name": job}, "inputs": inputs, "outputs": outputs}


def ds(key: str, facets: dict | None = None) -> dict:
    namespace, name = (PG, key[len(PG) + 1:]) if key.startswith(PG) else ("file", key[len("file/"):])
    return {"namespace": namespace, "name": name, "facets": facets or {}}


def company() -> list[dict]:
    """The events, newest first (the order must not matter)."""
    staging = lineage_facet({
        "payment_id": [field("warehouse.raw.billing__payments", "payment_id", "DIRECT", "IDENTITY")],
        "amount": [field("warehouse.raw.billing__payments", "amount", "DIRECT", "IDENTITY")],
        "status": [field("warehouse.raw.billing__payments", "status", "DIRECT", "IDENTITY")],
        "paid_on": [field("warehouse.raw.billing__payments", "paid_at", "DIRECT", "TRANSFORMATION")],
    })
    marts = lineage_facet({
        "revenue_date": [field("warehouse.staging.stg_billing__payments", "paid_on", "DIRECT", "IDENTITY")],
        "net_revenue": [field("warehouse.staging.stg_billing__payments", "amount", "DIRECT", "AGGREGATION"),
                        field("warehouse.staging.stg_billing__payments", "status", "INDIRECT", "FILTER")],
    })
    governance = {"dataProductGovernance": {"domain": "finance", "product": "revenue_reporting",
                                            "owner": "finance-reporting"}}
    return [
        event("finance_export.export_revenue", "2026-11-02T04:00:00Z", [ds(FCT)], [ds(REPORT, governance)],
              namespace="airflow", producer=AIRFLOW, run="4"),
        event("warehouse_elt.fct_daily_revenue", "2026-11-02T03:10:00Z", [ds(STG)], [ds(FCT, marts)],
              run="3"),
        event("warehouse_elt.stg_billing__payments", "2026-11-02T03:05:00Z", [ds(RAW)], [ds(STG, staging)],
              run="2"),
        event("warehouse_elt.load_billing_payments", "2026-11-02T03:00:00Z", [ds(FILES)],
              [ds(RAW), ds(REJECTS)], run="1"),
        # Yesterday's model read a table it no longer reads: its newest event decides.
        event("warehouse_elt.fct_daily_revenue", "2026-11-01T03:10:00Z",
              [ds(f"{PG}/warehouse.staging.stg_old_payments")], [ds(FCT)], run="5"),
    ]


@pytest.fixture(scope="module")
def products():
    return contracts.load_products()


@pytest.fixture(scope="module")
def graph():
    return lineage.build(company())


def test_a_jobs_newest_event_decides_its_inputs_and_outputs(graph):
    assert graph.jobs["mage_project/warehouse_elt.fct_daily_revenue"].inputs == (STG,)
    assert f"{PG}/warehouse.staging.stg_old_payments" not in graph.datasets
    assert sorted(graph.datasets) == sorted([RAW, REJECTS, STG, FCT, REPORT, FILES])


def test_a_later_event_naming_no_dataset_changes_no_edge():
    heartbeat = event("warehouse_elt.fct_daily_revenue", "2026-11-03T00:00:00Z", [], [],
                      event_type="RUNNING")
    built = lineage.build([*company(), heartbeat])
    assert built.jobs["mage_project/warehouse_elt.fct_daily_revenue"].inputs == (STG,)


@pytest.mark.parametrize(("text", "key"), [
    (FCT, FCT),
    ("warehouse.marts.fct_daily_revenue", FCT),
    ("marts.fct_daily_revenue", FCT),
    ("MARTS.FCT_DAILY_REVENUE", FCT),  # as Snowflake spells it
    ("fct_daily_revenue", FCT),
])
def test_a_dataset_is_named_in_full_or_by_the_end_of_its_name(graph, text, key):
    assert graph.resolve(text) == key


def test_a_short_name_of_two_datasets_is_refused_naming_both():
    other = event("copy", "2026-11-02T00:00:00Z", [ds(FCT)],
                  [{"namespace": "snowflake://acme-eu", "name": "DB.MARTS.FCT_DAILY_REVENUE"}])
    built = lineage.build([*company(), other])
    with pytest.raises(LineageLookupError) as error:
        built.resolve("marts.fct_daily_revenue")
    assert str(error.value) == ("'marts.fct_daily_revenue' names 2 datasets: "
                                f"{FCT}, snowflake://acme-eu/DB.MARTS.FCT_DAILY_REVENUE;"
                                " give one as namespace/name")
    assert built.resolve("snowflake://acme-eu/DB.MARTS.FCT_DAILY_REVENUE").startswith("snowflake")
    with pytest.raises(LineageLookupError, match="no dataset 'marts.nothing' in the lineage events"):
        built.resolve("marts.nothing")


def test_the_subgraph_of_a_dataset_is_what_feeds_it_and_what_it_feeds(graph):
    part = lineage.subgraph(graph, "staging.stg_billing__payments")

    assert sorted(part.datasets) == sorted([FILES, RAW, STG, FCT, REPORT])  # not the rejects
    assert {k: (j.inputs, j.outputs) for k, j in part.jobs.items()} == {
        "mage_project/warehouse_elt.load_billing_payments": ((FILES,), (RAW,)),
        "mage_project/warehouse_elt.stg_billing__payments": ((RAW,), (STG,)),
        "mage_project/warehouse_elt.fct_daily_revenue": ((STG,), (FCT,)),
        "airflow/finance_export.export_revenue": ((FCT,), (REPORT,)),
    }


def test_a_column_is_traced_upstream_across_two_hops_with_its_transformations(graph):
    trace = lineage.trace_column(graph, "marts.fct_daily_revenue", "net_revenue")

    assert lineage.render_trace(trace) == "\n".join([
        f"{FCT}.net_revenue",
        f"  <- {STG}.amount  DIRECT/AGGREGATION",
        f"    <- {RAW}.amount  DIRECT/IDENTITY",
        f"  <- {STG}.status  INDIRECT/FILTER",
        f"    <- {RAW}.status  DIRECT/IDENTITY",
    ])
    identity = [{"type": "DIRECT", "subtype": "IDENTITY", "description": None, "masking": False}]
    assert json.loads(lineage.render_trace(trace, "json"))["upstream"][0] == {
        "dataset": STG, "column": "amount",
        "transformations": [{"type": "DIRECT", "subtype": "AGGREGATION", "description": None,
                             "masking": False}],
        "upstream": [{"dataset": RAW, "column": "amount", "transformations": identity, "upstream": []}],
    }


def test_a_column_trace_renders_as_mermaid_and_dot(graph):
    trace = lineage.trace_column(graph, FCT, "revenue_date")

    assert lineage.render_trace(trace, "mermaid") == "\n".join([
        "flowchart LR",
        f'    c1["{FCT}.revenue_date"]',
        f'    c2["{STG}.paid_on"]',
        f'    c3["{RAW}.paid_at"]',
        '    c2 -->|"DIRECT/IDENTITY"| c1',
        '    c3 -->|"DIRECT/TRANSFORMATION"| c2',
    ])
    assert lineage.render_trace(trace, "dot") == "\n".join([
        "digraph lineage {",
        "    rankdir=LR;",
        f'    c1 [label="{FCT}.revenue_date", shape=box];',
        f'    c2 [label="{STG}.paid_on", shape=box];',
        f'    c3 [label="{RAW}.paid_at", shape=box];',
        '    c2 -> c1 [label="DIRECT/IDENTITY"];',
        '    c3 -> c2 [label="DIRECT/TRANSFORMATION"];',
        "}",
    ])


def test_an_unknown_column_is_refused(graph):
    with pytest.raises(LineageLookupError, match=f"no column 'nope' of {RAW}"):
        lineage.trace_column(graph, RAW, "nope")


def test_the_impact_of_a_raw_column_reaches_the_mart_its_product_and_the_finance_report(graph, products):
    result = lineage.impact(graph, "raw.billing__payments", "amount", products)

    assert result == Impact(
        dataset=RAW, column="amount",
        datasets=(REPORT, FCT, STG),
        jobs=("airflow/finance_export.export_revenue", "mage_project/warehouse_elt.fct_daily_revenue",
              "mage_project/warehouse_elt.stg_billing__payments"),
        columns=((FCT, "net_revenue"), (STG, "amount")),
        untraced=(REPORT,),
        products=(
            AffectedProduct("finance", "revenue", "finance-data", "finance-data@example.com", (FCT,),
                            ("contract",)),
            AffectedProduct("finance", "revenue_reporting", "finance-reporting", None, (REPORT,),
                            ("facet",)),
        ),
    )
    assert lineage.render_impact(result) == "\n".join([
        f"downstream of {RAW}.amount:",
        "columns (2)",
        f"  {FCT}.net_revenue",
        f"  {STG}.amount",
        "datasets (3)",
        f"  {REPORT}  (no column lineage: any column may be affected)",
        f"  {FCT}",
        f"  {STG}",
        "jobs (3)",
        "  airflow/finance_export.export_revenue",
        "  mage_project/warehouse_elt.fct_daily_revenue",
        "  mage_project/warehouse_elt.stg_billing__payments",
        "products (2)",
        "  finance/revenue  owner finance-data <finance-data@example.com>",
        f"    {FCT}",
        "  finance/revenue_reporting  owner finance-reporting",
        f"    {REPORT}",
    ])


def test_a_column_no_one_reads_reaches_nothing(graph, products):
    result = lineage.impact(graph, RAW, "payment_id", products)
    assert (result.datasets, result.columns, result.jobs, result.products) == (
        (STG,), ((STG, "payment_id"),), ("mage_project/warehouse_elt.stg_billing__payments",), ())


def test_the_impact_of_a_whole_dataset_is_everything_downstream(graph, products):
    result = lineage.impact(company(), "warehouse.staging.stg_billing__payments", products=products)

    assert result.datasets == (REPORT, FCT)
    assert result.columns == ((FCT, "net_revenue"), (FCT, "revenue_date"))
    assert result.jobs == ("airflow/finance_export.export_revenue",
                           "mage_project/warehouse_elt.fct_daily_revenue")
    assert result.untraced == (REPORT,)
    assert [p.key for p in result.products] == ["finance/revenue", "finance/revenue_reporting"]


def test_a_contract_owner_wins_over_a_governance_facet_naming_the_same_product(products):
    facet = {"dataProductGovernance": {"domain": "finance", "product": "revenue", "owner": "someone"}}
    built = lineage.build([event("x", "2026-11-02T00:00:00Z", [ds(STG)], [ds(FCT, facet)])])
    assert lineage.products_of(built, [FCT], products) == (
        AffectedProduct("finance", "revenue", "finance-data", "finance-data@example.com", (FCT,),
                        ("contract", "facet")),)


@pytest.mark.parametrize(("text", "split"), [
    ("raw.billing__payments", (RAW, None)),
    ("raw.billing__payments.amount", (RAW, "amount")),
    (f"{RAW}.amount", (RAW, "amount")),
])
def test_a_dataset_or_a_column_of_it(graph, text, split):
    assert lineage.split_column(graph, text) == split


def test_the_graph_as_text_lists_sources_first_then_the_products(graph, products):
    assert lineage.render_graph(graph, "text", products) == "\n".join([
        "datasets, sources first:",
        f"  {FILES}",
        f"  {RAW}  [platform/file_drops]",
        f"  {REJECTS}",
        f"  {STG}",
        f"  {FCT}  [finance/revenue]",
        f"  {REPORT}  [finance/revenue_reporting]",
        "jobs, sources first:",
        f"  mage_project/warehouse_elt.load_billing_payments  ({OURS}, 2026-11-02T03:00:00Z)",
        f"    in   {FILES}",
        f"    out  {RAW}",
        f"    out  {REJECTS}",
        f"  mage_project/warehouse_elt.stg_billing__payments  ({OURS}, 2026-11-02T03:05:00Z)",
        f"    in   {RAW}",
        f"    out  {STG}",
        f"  mage_project/warehouse_elt.fct_daily_revenue  ({OURS}, 2026-11-02T03:10:00Z)",
        f"    in   {STG}",
        f"    out  {FCT}",
        f"  airflow/finance_export.export_revenue  ({AIRFLOW}, 2026-11-02T04:00:00Z)",
        f"    in   {FCT}",
        f"    out  {REPORT}",
        "products:",
        "  finance/revenue  owner finance-data <finance-data@example.com>",
        f"    {FCT}",
        "  finance/revenue_reporting  owner finance-reporting",
        f"    {REPORT}",
        "  platform/file_drops  owner data-platform <data-team@example.com>",
        f"    {RAW}",
    ])


def test_the_graph_as_json(graph, products):
    data = json.loads(lineage.render_graph(lineage.subgraph(graph, FCT), "json", products))

    assert [d["id"] for d in data["datasets"]] == [FILES, RAW, STG, FCT, REPORT]
    assert data["datasets"][3] == {"id": FCT, "namespace": PG, "name": "warehouse.marts.fct_daily_revenue",
                                   "products": ["finance/revenue"]}
    assert data["jobs"][3] == {"id": "airflow/finance_export.export_revenue", "namespace": "airflow",
                               "name": "finance_export.export_revenue", "producer": AIRFLOW,
                               "eventTime": "2026-11-02T04:00:00Z", "inputs": [FCT], "outputs": [REPORT]}
    assert data["products"] == [
        {"id": "finance/revenue", "domain": "finance", "product": "revenue", "owner": "finance-data",
         "owner_email": "finance-data@example.com", "datasets": [FCT]},
        {"id": "finance/revenue_reporting", "domain": "finance", "product": "revenue_reporting",
         "owner": "finance-reporting", "owner_email": None, "datasets": [REPORT]},
        {"id": "platform/file_drops", "domain": "platform", "product": "file_drops",
         "owner": "data-platform", "owner_email": "data-team@example.com", "datasets": [RAW]},
    ]


def test_the_graph_as_mermaid_and_dot(graph, products):
    assert lineage.render_graph(lineage.subgraph(graph, STG), "mermaid", products[:1]) == "\n".join([
        "flowchart LR",
        f'    d1[("{FILES}")]',
        f'    d2[("{RAW}")]',
        f'    d3[("{STG}")]',
        f'    d4[("{FCT}")]',
        f'    d5[("{REPORT}")]',
        '    j1[["mage_project/warehouse_elt.load_billing_payments"]]',
        '    j2[["mage_project/warehouse_elt.stg_billing__payments"]]',
        '    j3[["mage_project/warehouse_elt.fct_daily_revenue"]]',
        '    j4[["airflow/finance_export.export_revenue"]]',
        '    p1{{"finance/revenue (owner finance-data)"}}',
        '    p2{{"finance/revenue_reporting (owner finance-reporting)"}}',
        "    d1 --> j1",
        "    j1 --> d2",
        "    d2 --> j2",
        "    j2 --> d3",
        "    d3 --> j3",
        "    j3 --> d4",
        "    d4 --> j4",
        "    j4 --> d5",
        "    d4 -.-> p1",
        "    d5 -.-> p2",
    ])
    # No contracts: the finance report's product is still known from its governance facet.
    dot = lineage.render_graph(lineage.subgraph(graph, REPORT), "dot", ())
    assert dot.splitlines()[:4] == ["digraph lineage {", "    rankdir=LR;",
                                    f'    d1 [label="{FILES}", shape=cylinder];',
                                    f'    d2 [label="{RAW}", shape=cylinder];']
    assert dot.splitlines()[7:] == [
        '    j1 [label="mage_project/warehouse_elt.load_billing_payments", shape=box, style=rounded];',
        '    j2 [label="mage_project/warehouse_elt.stg_billing__payments", shape=box, style=rounded];',
        '    j3 [label="mage_project/warehouse_elt.fct_daily_revenue", shape=box, style=rounded];',
        '    j4 [label="airflow/finance_export.export_revenue", shape=box, style=rounded];',
        '    p1 [label="finance/revenue_reporting (owner finance-reporting)", shape=hexagon];',
        "    d1 -> j1;", "    j1 -> d2;", "    d2 -> j2;", "    j2 -> d3;", "    d3 -> j3;",
        "    j3 -> d4;", "    d4 -> j4;", "    j4 -> d5;", "    d5 -> p1 [style=dashed];", "}",
    ]


def test_labels_with_quotes_and_brackets_stay_inside_their_quotes():
    name = 'we"ird <name> #1 `x`\\n'
    built = lineage.build([event("j", "2026-11-02T00:00:00Z", [], [{"namespace": "s3://b", "name": name}])])

    mermaid = lineage.render_graph(built, "mermaid")
    dot = lineage.render_graph(built, "dot")

    assert '    d1[("s3://b/we#quot;ird #lt;name#gt; #35;1 #96;x#96;\\n")]' in mermaid.splitlines()
    assert '    d1 [label="s3://b/we\\"ird <name> #1 `x`\\\\n", shape=cylinder];' in dot.splitlines()


@pytest.mark.parametrize(("given", "text"), [
    (Transformation("DIRECT", "IDENTITY"), "DIRECT/IDENTITY"),
    (Transformation("INDIRECT", None), "INDIRECT"),
    (Transformation("DIRECT", "TRANSFORMATION", masking=True), "DIRECT/TRANSFORMATION (masked)"),
])
def test_a_transformation_in_words(given, text):
    assert given.text() == text


def test_the_facets_older_flat_transformation_fields_are_read_too():
    # columnLineage 1-0-x: one transformationType for all of a column's inputs
    old = {"columnLineage": {"fields": {"amount": {"inputFields": [
        {"namespace": PG, "name": "warehouse.raw.billing__payments", "field": "amount"}],
        "transformationType": "IDENTITY", "transformationDescription": "as is"}}}}
    built = lineage.build([event("j", "2026-11-02T00:00:00Z", [ds(RAW)], [ds(STG, old)])])
    assert lineage.render_trace(lineage.trace_column(built, STG, "amount")).splitlines()[1] == (
        f"  <- {RAW}.amount  IDENTITY")


def test_the_data_flow_leaves_out_the_jobs_that_only_read():
    checks = event("warehouse_elt.fct_daily_revenue.not_null_date", "2026-11-02T03:11:00Z", [ds(FCT)], [],
                   run="6")
    pipeline = event("warehouse_elt", "2026-11-02T03:12:00Z", [], [], run="7")
    full = lineage.build([*company(), checks, pipeline])
    assert "mage_project/warehouse_elt.fct_daily_revenue.not_null_date" in full.jobs
    flow = lineage.data_flow(full)
    assert sorted(flow.jobs) == ["airflow/finance_export.export_revenue",
                                 "mage_project/warehouse_elt.fct_daily_revenue",
                                 "mage_project/warehouse_elt.load_billing_payments",
                                 "mage_project/warehouse_elt.stg_billing__payments"]
    assert flow.datasets == full.datasets
