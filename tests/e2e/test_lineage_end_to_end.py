"""Done-when of the lineage: both pipelines run from the command line through Mage, their events
sent over HTTP to the lineage hub (``lineage serve``, a real process), and ``lineage graph`` shows
the path from the activity API and the landing files through raw, staging and intermediate to every
mart, each mart column traced to its raw columns, with the products' owners."""

from __future__ import annotations

import json
from datetime import date

import pytest
from conftest import run_cli
from support import END, START, free_port, start_hub, stop_hub

from mage_project import config
from mage_project.landing import LandingZone
from mage_project.lineage import naming
from mage_project.sources.file_drops import write_drops

pytestmark = pytest.mark.e2e

KEY = "hub-key-for-the-graph"

# Each mart column's raw columns (its DIRECT and INDIRECT inputs, field by field, through
# staging and intermediate), written by hand from the models' SQL.
RAW_COLUMNS = {
    ("fct_daily_revenue", "net_revenue"): {("billing__payments", "amount"),
                                           ("billing__payments", "status")},
    ("dim_customers", "country"): {("crm__customers", "country")},
}


@pytest.fixture
def hub(warehouse, monkeypatch, tmp_path):
    """``python -m mage_project lineage serve`` on a free port, the project pointed at it."""
    port = free_port()
    with open(tmp_path / "hub.log", "w") as log:
        proc = start_hub(port, {"LINEAGE_HUB_API_KEY": KEY}, log)
    monkeypatch.setenv("OPENLINEAGE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OPENLINEAGE_API_KEY", KEY)
    yield port
    stop_hub(proc)
    assert proc.returncode == 0, (tmp_path / "hub.log").read_text()[-3000:]


def graph(*args: str) -> str:
    shown = run_cli("lineage", "graph", *args)
    assert shown.returncode == 0, shown.stderr[-3000:]
    return shown.stdout


def reaches(data: dict, source: str, target: str) -> bool:
    """Whether the graph's edges (dataset -> job -> dataset) lead from ``source`` to ``target``."""
    downstream: dict[str, set[str]] = {}
    for job in data["jobs"]:
        for key in job["inputs"]:
            downstream.setdefault(key, set()).update(job["outputs"])
    seen, todo = set(), [source]
    while todo:
        key = todo.pop()
        if key == target:
            return True
        if key not in seen:
            seen.add(key)
            todo += downstream.get(key, ())
    return False


def key(relation: str) -> str:
    namespace, name = naming.table(relation)
    return f"{namespace}/{name}"


def raw_columns(trace: dict) -> set[tuple[str, str]]:
    """The (raw table, column) pairs a column's trace ends in."""
    if not trace["upstream"]:
        *_, schema, table = trace["dataset"].split(".")
        return {(table, trace["column"])} if schema == "raw" else set()
    return {pair for source in trace["upstream"] for pair in raw_columns(source)}


def untraced_mart_columns() -> set[tuple[str, str]]:
    """The contracts' mart columns whose trace (from the hub's events) reaches no raw column."""
    from mage_project import contracts
    from mage_project.lineage import graph as lineage_graph
    from mage_project.lineage import store
    from mage_project.warehouse import backend

    db = backend()
    with db.connection(config.LOADER) as conn, db.transaction(conn) as cur:
        built = lineage_graph.build(store.read_events(cur))
    marts = [t for p in contracts.load_products() for t in p.tables if t.schema == "marts"]
    return {(t.table, c.name) for t in marts for c in t.columns
            if not raw_columns(lineage_graph.trace_column(built, key(t.name), c.name).to_dict())}


def test_the_graph_goes_from_the_api_and_the_landing_files_to_every_mart_column(hub, simulator):
    api = simulator()
    ingest = run_cli("run", "user_activity_ingest", "--start", START.isoformat(), "--end", END.isoformat())
    assert ingest.returncode == 0, ingest.stderr[-3000:]
    write_drops(LandingZone(config.landing_url()), date(2026, 11, 1), date(2026, 11, 3))
    elt = run_cli("run", "warehouse_elt")
    assert elt.returncode == 0, elt.stderr[-3000:]
    assert list((config.lineage().directory / "outbox").glob("*.json")) == []  # all delivered
    data = json.loads(graph("--format", "json"))
    landing = config.landing_url().removeprefix("file://")
    paths = {  # source -> mart, every hop in between emitted by the runs
        f"{api.url}//v1/events": "marts.fct_daily_active_users",
        f"file/{landing}/billing/payments": "marts.fct_daily_revenue",
        f"file/{landing}/crm/customers": "marts.dim_customers",
        f"file/{landing}/marketing/ad_spend": "marts.fct_campaign_performance",
    }
    assert {source: reaches(data, source, key(mart)) for source, mart in paths.items()} == dict.fromkeys(
        paths, True)
    assert reaches(data, key("raw.user_activity"), key("staging.stg_activity__user_activity"))
    owners = {p["id"]: (p["owner"], sorted(p["datasets"])) for p in data["products"]}
    assert owners["finance/revenue"] == ("finance-data", [key("marts.dim_customers"),
                                                           key("marts.fct_daily_revenue")])
    for (mart, column), raw in RAW_COLUMNS.items():
        trace = json.loads(graph("--dataset", naming.table(f"marts.{mart}")[1], "--column", column,
                                 "--format", "json"))
        assert raw_columns(trace) == raw, (mart, column)
    # Every other mart column reaches its raw columns; these two count rows (count(*)): no column
    # of theirs is an input, only the rows the filters keep.
    assert untraced_mart_columns() == {("fct_campaign_performance", "signups"),
                                       ("fct_daily_active_users", "events")}
    impact = run_cli("lineage", "impact", f"{naming.table('raw.billing__payments')[1]}.amount")
    assert impact.returncode == 0, impact.stderr
    assert f"{key('marts.fct_daily_revenue')}.net_revenue" in impact.stdout
    assert "finance/revenue  owner finance-data <finance-data@example.com>" in impact.stdout
    mermaid = graph("--format", "mermaid")
    assert mermaid.startswith("flowchart LR\n") and "finance/revenue (owner finance-data)" in mermaid
