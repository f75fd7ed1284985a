"""The lineage hub (``python -m mage_project lineage serve``) against the embedded PostgreSQL (and the
Snowflake stand-in): real HTTP from openlineage-python's own transport and from requests, the
events stored once in ops.lineage_events, and the graph and impact commands reading them back."""

from __future__ import annotations

import gzip
import json
import signal
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
import requests
from conftest import query, run_cli
from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import column_lineage_dataset as cl
from openlineage.client.transport.http import ApiKeyTokenProvider, HttpConfig, HttpTransport
from support import free_port, start_hub, stop_hub

from mage_project import config
from mage_project.lineage import hub as lineage_hub
from mage_project.lineage import store
from mage_project.lineage.facets import PRODUCER
from mage_project.warehouse import backend, migrate

pytestmark = pytest.mark.integration

KEY = "s3cret-hub-key"
PG = "postgres://127.0.0.1:5432"
AIRFLOW = "https://github.com/apache/airflow/tree/providers-openlineage/2.1.0"
SCHEMA_URL = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
LINEAGE_URL = ("https://openlineage.io/spec/facets/1-2-0/ColumnLineageDatasetFacet.json"
               "#/$defs/ColumnLineageDatasetFacet")
RAW, STG, FCT = "warehouse.raw.billing__payments", "warehouse.staging.stg_billing__payments", \
    "warehouse.marts.fct_daily_revenue"
REPORT = "warehouse.finance.revenue_report"


def run_id(n: int) -> str:
    return f"01936f5e-0000-7000-8000-{n:012d}"


def dataset(name: str, columns: dict | None = None, namespace: str = PG) -> dict:
    """A dataset; ``columns``: output column -> [(input name, field, type, subtype)]."""
    facets = {}
    if columns:
        facets["columnLineage"] = {"_producer": PRODUCER, "_schemaURL": LINEAGE_URL, "fields": {
            column: {"inputFields": [{"namespace": PG, "name": n, "field": f,
                                      "transformations": [{"type": t, "subtype": s}]}
                                     for n, f, t, s in inputs]}
            for column, inputs in columns.items()}}
    return {"namespace": namespace, "name": name, "facets": facets}


def event(job: str, n: int, inputs: list, outputs: list, *, event_type: str = "COMPLETE",
          time: str = "2026-11-02T03:00:00Z", namespace: str = "mage_project",
          producer: str = PRODUCER) -> dict:
    return {"eventType": event_type, "eventTime": time, "producer": producer, "schemaURL": SCHEMA_URL,
            "run": {"runId": run_id(n)}, "job": {"namespace": namespace, "name": job},
            "inputs": inputs, "outputs": outputs}


def company() -> list[dict]:
    """The project's models raw -> staging -> marts, with column lineage, and an Airflow task of
    the finance team reading the mart (START, then COMPLETE)."""
    staging = {"amount": [(RAW, "amount", "DIRECT", "IDENTITY")],
               "status": [(RAW, "status", "DIRECT", "IDENTITY")]}
    marts = {"net_revenue": [(STG, "amount", "DIRECT", "AGGREGATION"), (STG, "status", "INDIRECT", "FILTER")]}
    airflow = {"namespace": "airflow", "producer": AIRFLOW}
    return [
        event("warehouse_elt.stg_billing__payments", 1, [dataset(RAW)], [dataset(STG, staging)],
              time="2026-11-02T03:05:00Z"),
        event("warehouse_elt.fct_daily_revenue", 2, [dataset(STG)], [dataset(FCT, marts)],
              time="2026-11-02T03:10:00Z"),
        event("finance_export.export_revenue", 3, [dataset(FCT)], [dataset(REPORT)], event_type="START",
              time="2026-11-02T04:00:00Z", **airflow),
        event("finance_export.export_revenue", 3, [dataset(FCT)], [dataset(REPORT)],
              time="2026-11-02T04:02:30.5Z", **airflow),
    ]


@pytest.fixture
def hub(warehouse, monkeypatch):
    """The hub in this process, on a free port, with an API key, on the test's database."""
    monkeypatch.delenv(lineage_hub.KEY_VARIABLE, raising=False)
    with lineage_hub.Hub(port=0, key=KEY) as running:
        yield running


def post(url: str, body, key: str | None = KEY, **headers) -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return requests.post(f"{url}/api/v1/lineage", data=data, timeout=10,
                         headers={"Content-Type": "application/json", **headers})


def stored(conn) -> list[tuple]:
    return query(conn, "select run_id, event_type, job_namespace, job_name, producer from"
                       " ops.lineage_events order by event_time, event_type")


def test_events_sent_with_openlineage_pythons_http_transport_are_stored(hub, warehouse):
    client = OpenLineageClient(transport=HttpTransport(HttpConfig(
        url=hub.url, endpoint="api/v1/lineage", auth=ApiKeyTokenProvider({"apiKey": KEY}))))
    lineage = cl.ColumnLineageDatasetFacet(fields={"amount": cl.Fields(inputFields=[
        cl.InputField(PG, RAW, "amount", transformations=[cl.Transformation("DIRECT", "IDENTITY")])])})
    run, job = Run(runId=str(uuid.uuid4())), Job(namespace="mage_project", name="warehouse_elt.stg")
    inputs, outputs = [InputDataset(PG, RAW)], [OutputDataset(PG, STG, facets={"columnLineage": lineage})]
    for state, at in ((RunState.START, "2026-11-02T03:00:00+00:00"),
                      (RunState.COMPLETE, "2026-11-02T03:01:00+00:00")):
        client.emit(RunEvent(eventType=state, eventTime=at, run=run, job=job, producer=PRODUCER,
                             inputs=inputs, outputs=outputs))

    assert stored(warehouse) == [
        (run.runId, "START", "mage_project", "warehouse_elt.stg", PRODUCER),
        (run.runId, "COMPLETE", "mage_project", "warehouse_elt.stg", PRODUCER),
    ]
    (event,) = query(warehouse, "select event from ops.lineage_events where event_type = 'COMPLETE'")[0]
    assert event["outputs"][0]["facets"]["columnLineage"]["fields"]["amount"]["inputFields"] == [
        {"namespace": PG, "name": RAW, "field": "amount",
         "transformations": [{"type": "DIRECT", "subtype": "IDENTITY"}]}]
    assert query(warehouse, "select output_datasets from ops.lineage_events where event_type = 'START'") == [
        (f"{PG}\t{STG}\n",)]


def test_a_foreign_producers_events_join_the_projects_in_one_graph(hub, warehouse):
    answers = [post(hub.url, e).status_code for e in company()]

    assert answers == [201, 201, 201, 201]
    result = run_cli("lineage", "graph", "--dataset", "marts.fct_daily_revenue", "--format", "json")
    assert result.returncode == 0, result.stderr
    graph = json.loads(result.stdout)
    jobs = {job["id"]: (job["inputs"], job["outputs"], job["producer"]) for job in graph["jobs"]}
    assert jobs == {
        "mage_project/warehouse_elt.stg_billing__payments": ([f"{PG}/{RAW}"], [f"{PG}/{STG}"], PRODUCER),
        "mage_project/warehouse_elt.fct_daily_revenue": ([f"{PG}/{STG}"], [f"{PG}/{FCT}"], PRODUCER),
        "airflow/finance_export.export_revenue": ([f"{PG}/{FCT}"], [f"{PG}/{REPORT}"], AIRFLOW),
    }
    assert [d["id"] for d in graph["datasets"]] == [f"{PG}/{n}" for n in (RAW, STG, FCT, REPORT)]


def test_the_runs_of_other_producers_that_wrote_a_products_tables(hub, warehouse):
    for e in company():
        post(hub.url, e)
    failed = event("spark_job", 9, [dataset(STG)], [dataset("WAREHOUSE.MARTS.FCT_DAILY_REVENUE")],
                   event_type="FAIL", time="2026-11-02T05:00:00Z", namespace="spark",
                   producer="https://github.com/OpenLineage/OpenLineage/tree/1.31.0/integration/spark")
    post(hub.url, failed)

    runs = store.runs_outputting(backend(), ["finance.revenue_report", "marts.fct_daily_revenue"])

    assert runs == [
        store.ForeignRun(run_id(3), "airflow", "finance_export.export_revenue", AIRFLOW,
                         ("finance.revenue_report",), "COMPLETE", True,
                         datetime(2026, 11, 2, 4, tzinfo=UTC),
                         datetime(2026, 11, 2, 4, 2, 30, 500000, tzinfo=UTC)),
        store.ForeignRun(run_id(9), "spark", "spark_job", failed["producer"], ("marts.fct_daily_revenue",),
                         "FAIL", True, None, datetime(2026, 11, 2, 5, tzinfo=UTC)),
    ]
    assert store.runs_outputting(backend(), ["staging.stg_billing__payments"]) == []  # ours


def test_the_same_event_posted_twice_is_stored_once_and_both_answers_are_success(hub, warehouse):
    first = event("warehouse_elt.x", 1, [], [dataset(RAW)], time="2026-11-02T03:00:00Z")
    same_instant = {**first, "eventTime": "2026-11-02T04:00:00+01:00"}

    answers = [post(hub.url, e) for e in (first, first, same_instant)]

    assert [a.status_code for a in answers] == [201, 200, 200]
    assert answers[0].json() == {"stored": True, "eventKey": store.event_key(first)}
    assert answers[1].json() == {"stored": False, "eventKey": store.event_key(first),
                                 "reason": "stored before"}
    assert len(stored(warehouse)) == 1


def test_the_same_event_posted_at_once_by_several_clients_is_stored_once(hub, warehouse):
    same = event("warehouse_elt.x", 1, [], [dataset(RAW)])
    with ThreadPoolExecutor(8) as pool:
        answers = sorted(pool.map(lambda _: post(hub.url, same).status_code, range(8)))

    assert answers == [200] * 7 + [201]
    assert len(stored(warehouse)) == 1


def test_a_refused_request_leaves_its_kept_alive_connection_usable(hub, warehouse):
    with requests.Session() as session:
        url, body = f"{hub.url}/api/v1/lineage", json.dumps(event("j", 1, [], [])).encode()
        refused = session.post(url, data=body, timeout=10)
        taken = session.post(url, data=body, timeout=10, headers={"Authorization": f"Bearer {KEY}"})

    assert (refused.status_code, taken.status_code) == (401, 201)


@pytest.mark.parametrize(("body", "error", "reasons"), [
    ({**event("j", 1, [], []), "eventType": "DONE"}, "not a valid OpenLineage event",
     ["eventType: 'DONE' is not one of ['START', 'RUNNING', 'COMPLETE', 'ABORT', 'FAIL', 'OTHER']"]),
    ({**event("j", 1, [], []), "run": {}}, "not a valid OpenLineage event",
     ["run: 'runId' is a required property"]),
    (b'{"eventType": "START",', "the body is not JSON: Expecting property name enclosed in double"
                                " quotes: line 1 column 23 (char 22)", None),
    ([event("j", 1, [], [])], "one event per request, as a JSON object (as Marquez takes them), not a"
                              " JSON list", None),
    (b'{"eventTime": NaN}', "the body is not JSON: NaN is not JSON", None),
    (event("a\u0000b", 1, [], []), "not a valid OpenLineage event",
     ["job.name: holds U+0000 or a lone surrogate, which the warehouse cannot store"]),
], ids=["bad-event-type", "no-run-id", "not-json", "a-list", "nan", "nul"])
def test_an_invalid_event_is_refused_with_the_reason(hub, warehouse, body, error, reasons):
    answer = post(hub.url, body)

    assert answer.status_code == 400
    assert answer.json() == {"error": error, **({"reasons": reasons} if reasons else {})}
    assert stored(warehouse) == []


@pytest.mark.parametrize("key", [None, "wrong-key", f"{KEY}x", ""], ids=["none", "wrong", "longer", "empty"])
def test_without_the_api_key_nothing_is_stored(hub, warehouse, key):
    answer = post(hub.url, event("j", 1, [], []), key=key)

    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == 'Bearer realm="lineage"'
    assert answer.json() == {"error": "missing or wrong API key: send Authorization: Bearer <key>"}
    assert stored(warehouse) == []


def test_a_body_over_the_limit_is_refused_plain_or_gzipped(hub, warehouse):
    big = event("j", 1, [], [dataset(f"warehouse.raw.{'x' * lineage_hub.MAX_BODY_BYTES}")])
    text = json.dumps(big).encode()

    plain = post(hub.url, text)
    zipped = post(hub.url, gzip.compress(text), **{"Content-Encoding": "gzip"})
    small = post(hub.url, gzip.compress(json.dumps(event("j", 1, [], [])).encode()),
                 **{"Content-Encoding": "gzip"})

    assert (plain.status_code, plain.json()) == (413, {
        "error": f"the body is {len(text)} bytes, over the limit of {1 << 20} (one event per request)"})
    assert (zipped.status_code, zipped.json()) == (413, {"error": "the event is over the limit of 1048576"
                                                                  " bytes, unzipped"})
    assert small.status_code == 201
    assert stored(warehouse) == [(run_id(1), "COMPLETE", "mage_project", "j", PRODUCER)]


def test_health_answers_200_when_the_warehouse_does(hub):
    answer = requests.get(f"{hub.url}/healthz", timeout=10)
    assert (answer.status_code, answer.json()) == (200, {"status": "ok", "warehouse": "postgres"})
    other = requests.get(f"{hub.url}/api/v1/lineage", timeout=10)
    assert (other.status_code, other.headers["Allow"]) == (405, "POST")
    assert requests.post(f"{hub.url}/api/v1/other", data=b"{}", timeout=10).status_code == 404


def test_with_the_warehouse_down_health_and_posts_answer_503(monkeypatch):
    monkeypatch.setenv("POSTGRES_HOST", "127.0.0.1")
    monkeypatch.setenv("POSTGRES_PORT", str(free_port()))  # nothing listens there
    monkeypatch.setenv("POSTGRES_DBNAME", "warehouse")
    monkeypatch.setenv("POSTGRES_USER", "owner")
    with lineage_hub.Hub(port=0, key=None) as down:
        health = requests.get(f"{down.url}/healthz", timeout=10)
        answer = post(down.url, event("j", 1, [], []), key=None)

    assert (health.status_code, health.json()) == (503, {"status": "unavailable", "warehouse": "postgres",
                                                         "error": "the warehouse does not answer"})
    assert (answer.status_code, answer.headers["Retry-After"]) == (503, "30")
    assert answer.json() == {
        "error": "the warehouse does not answer: the event was not stored; post it again"}


def test_stopping_lets_a_request_being_answered_finish_and_store_its_event(warehouse, monkeypatch):
    monkeypatch.delenv(lineage_hub.KEY_VARIABLE, raising=False)
    running = lineage_hub.Hub(port=0, key=None).start()
    body = json.dumps(event("j", 1, [], [])).encode()
    with socket.create_connection(("127.0.0.1", running.port), timeout=10) as client:
        client.sendall(b"POST /api/v1/lineage HTTP/1.1\r\nHost: hub\r\nContent-Type: application/json\r\n"
                       b"Content-Length: %d\r\n\r\n" % len(body) + body[:10])
        time.sleep(0.3)  # the hub is reading the body
        stopping = ThreadPoolExecutor(1).submit(running.stop)
        time.sleep(0.3)
        client.sendall(body[10:])
        answer = client.recv(65536).decode()
        stopping.result(timeout=10)

    assert answer.startswith("HTTP/1.1 201 Created\r\n"), answer
    assert stored(warehouse) == [(run_id(1), "COMPLETE", "mage_project", "j", PRODUCER)]


# --- the command line: a real process, stopped by signals ---------------------------------------


def test_a_restarted_hub_loses_nothing_and_duplicates_nothing(warehouse, tmp_path):
    port, events = free_port(), company()
    with open(tmp_path / "hub.log", "w") as log:
        proc = start_hub(port, {lineage_hub.KEY_VARIABLE: KEY}, log)
        try:
            first = [post(f"http://127.0.0.1:{port}", e).status_code for e in events[:3]]
        finally:
            stop_hub(proc)
        proc = start_hub(port, {lineage_hub.KEY_VARIABLE: KEY}, log)
        try:
            second = [post(f"http://127.0.0.1:{port}", e).status_code for e in events]
        finally:
            stop_hub(proc)

    assert (first, second) == ([201, 201, 201], [200, 200, 200, 201])
    assert len(stored(warehouse)) == 4
    assert proc.returncode == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_hub_within_seconds_and_frees_its_port(warehouse, signum):
    port = free_port()
    proc = start_hub(port)
    session = requests.Session()  # a kept-alive connection must not hold the hub up
    assert session.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200

    took = stop_hub(proc, signum)

    assert (proc.returncode, took < 3) == (0, True)
    with socket.socket() as probe:  # nothing listens there any more
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))
    session.close()


def test_impact_of_a_raw_column_names_the_columns_and_the_marts_product_and_owner(hub, warehouse):
    for e in company():
        post(hub.url, e)

    result = run_cli("lineage", "impact", "raw.billing__payments.amount")

    assert (result.returncode, result.stdout) == (0, "\n".join([
        f"downstream of {PG}/{RAW}.amount:",
        "columns (2)",
        f"  {PG}/{FCT}.net_revenue",
        f"  {PG}/{STG}.amount",
        "datasets (3)",
        f"  {PG}/{REPORT}  (no column lineage: any column may be affected)",
        f"  {PG}/{FCT}",
        f"  {PG}/{STG}",
        "jobs (3)",
        "  airflow/finance_export.export_revenue",
        "  mage_project/warehouse_elt.fct_daily_revenue",
        "  mage_project/warehouse_elt.stg_billing__payments",
        "products (1)",
        "  finance/revenue  owner finance-data <finance-data@example.com>",
        f"    {PG}/{FCT}",
    ]) + "\n")


def test_graph_traces_a_column_across_two_hops_and_renders_mermaid(hub, warehouse):
    for e in company():
        post(hub.url, e)

    trace = run_cli("lineage", "graph", "--dataset", "marts.fct_daily_revenue", "--column", "net_revenue")
    mermaid = run_cli("lineage", "graph", "--dataset", "finance.revenue_report", "--format", "mermaid")
    unknown = run_cli("lineage", "impact", "marts.nothing.amount")

    assert (trace.returncode, trace.stdout) == (0, "\n".join([
        f"{PG}/{FCT}.net_revenue",
        f"  <- {PG}/{STG}.amount  DIRECT/AGGREGATION",
        f"    <- {PG}/{RAW}.amount  DIRECT/IDENTITY",
        f"  <- {PG}/{STG}.status  INDIRECT/FILTER",
        f"    <- {PG}/{RAW}.status  DIRECT/IDENTITY",
    ]) + "\n")
    assert mermaid.stdout.splitlines() == [
        "flowchart LR",
        f'    d1[("{PG}/{RAW}")]', f'    d2[("{PG}/{STG}")]', f'    d3[("{PG}/{FCT}")]',
        f'    d4[("{PG}/{REPORT}")]',
        '    j1[["mage_project/warehouse_elt.stg_billing__payments"]]',
        '    j2[["mage_project/warehouse_elt.fct_daily_revenue"]]',
        '    j3[["airflow/finance_export.export_revenue"]]',
        '    p1{{"finance/revenue (owner finance-data)"}}',
        '    p2{{"platform/file_drops (owner data-platform)"}}',
        "    d1 --> j1", "    j1 --> d2", "    d2 --> j2", "    j2 --> d3", "    d3 --> j3", "    j3 --> d4",
        "    d3 -.-> p1", "    d1 -.-> p2",
    ]
    assert (unknown.returncode, unknown.stderr.splitlines()[-1]) == (
        2, "error: no dataset 'marts.nothing.amount' in the lineage events")


def test_graph_with_the_warehouse_down_exits_1_saying_so():
    port = free_port()  # nothing listens there
    result = run_cli("lineage", "graph", env={"POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": str(port),
                                              "POSTGRES_DBNAME": "warehouse", "POSTGRES_USER": "owner"})

    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 1
    assert errors == [f"error: cannot read the lineage events: cannot connect to PostgreSQL (127.0.0.1:{port}"
                      f"/warehouse) as the loader's login owner: connection to server at \"127.0.0.1\","
                      f" port {port} failed: Connection refused"]


# --- Snowflake -----------------------------------------------------------------------------------


def test_the_snowflake_store_takes_each_event_once_and_reads_it_back(snowflake_warehouse):
    db = backend()
    migrate(db)
    events = company()

    with db.connection(config.LOADER) as conn, db.transaction(conn) as cur:
        new = [store.insert_event(cur, e) for e in [*events, events[0]]]
    with lineage_hub.Hub(port=0, key=None, db=db) as running:
        again = post(running.url, events[1], key=None)
    with db.connection(config.LOADER) as conn, db.transaction(conn) as cur:
        read = store.read_events(cur)
        runs = store.runs_outputting(cur, ["finance.revenue_report"])

    assert (new, again.status_code) == ([True, True, True, True, False], 200)
    assert read == events
    assert [(r.run_id, r.state, r.ended_at) for r in runs] == [
        (run_id(3), "COMPLETE", datetime(2026, 11, 2, 4, 2, 30, 500000, tzinfo=UTC))]
