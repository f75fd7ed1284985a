"""The OpenLineage events of whole runs through Mage from the command line, against the real
embedded PostgreSQL and the activity API simulator: every event valid against the vendored spec,
START and COMPLETE paired per run and per block, the blocks' parents, the loads' counts equal to
the tables', FAIL with the error, ABORT of a killed run found by the next one."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import date

import pytest
from conftest import query, run_cli
from support import END, START, emitted_events

from mage_project import config
from mage_project.landing import LandingZone
from mage_project.lineage import naming, schema
from mage_project.sources.file_drops import write_drops

pytestmark = pytest.mark.e2e

INGEST = "user_activity_ingest"
INGEST_BLOCKS = ("fetch_activity_user_activity", "validate_activity_user_activity",
                 "load_postgres_user_activity")


def by_job(events: list[dict]) -> dict[str, list[str]]:
    """Each job's event types, in the order emitted."""
    jobs: dict[str, list[str]] = {}
    for event in events:
        jobs.setdefault(event["job"]["name"], []).append(event["eventType"])
    return jobs


def parent_of(event: dict) -> str | None:
    parent = event["run"]["facets"].get("parent")
    return parent["run"]["runId"] if parent else None


def assert_valid(events: list[dict]) -> None:
    reasons = {f"{e['job']['name']} {e['eventType']}": schema.validate(e) for e in events}
    assert {k: v for k, v in reasons.items() if v} == {}


def dataset(events: list[dict], job: str, relation: str, key: str = "outputs") -> dict:
    namespace, name = naming.table(relation)
    [found] = [d for e in events if e["job"]["name"] == job and e["eventType"] == "COMPLETE"
               for d in e[key] if (d["namespace"], d["name"]) == (namespace, name)]
    return found


def test_an_ingest_run_emits_each_block_as_a_child_run_with_the_tables_counts(warehouse, simulator):
    simulator()
    done = run_cli("run", INGEST, "--start", START.isoformat(), "--end", END.isoformat())
    assert done.returncode == 0, done.stderr[-3000:]
    events = emitted_events()
    assert_valid(events)
    blocks = {f"{INGEST}.{b}": ["START", "COMPLETE"] for b in INGEST_BLOCKS}
    assert by_job(events) == {INGEST: ["START", "COMPLETE"], **blocks,
                              f"{INGEST}.load_postgres_user_activity.checks": ["START", "COMPLETE"]}
    assert events[0]["job"]["name"] == INGEST and events[-1]["job"]["name"] == INGEST
    run = {e["run"]["runId"] for e in events if e["job"]["name"] == INGEST}
    assert len(run) == 1
    (run_id,) = run
    assert {parent_of(e) for e in events if e["job"]["name"] in blocks} == {run_id}
    assert all(e["run"]["facets"]["parent"]["root"]["run"]["runId"] == run_id
               for e in events if e["job"]["name"] != INGEST)
    assert events[-1]["run"]["facets"]["nominalTime"] == {
        **events[-1]["run"]["facets"]["nominalTime"],
        "nominalStartTime": START.isoformat(), "nominalEndTime": END.isoformat()}
    load = f"{INGEST}.load_postgres_user_activity"
    table = dataset(events, load, "raw.user_activity")
    (rows,) = query(warehouse, "select count(*) from raw.user_activity")[0]
    assert table["outputFacets"]["outputStatistics"]["rowCount"] == rows > 0
    columns = [r[0] for r in query(warehouse, "select column_name from information_schema.columns"
                                   " where table_schema = 'raw' and table_name = 'user_activity'"
                                   " order by ordinal_position")]
    assert [f["name"] for f in table["facets"]["schema"]["fields"]] == columns
    governance = table["facets"]["dataProductGovernance"]
    assert (governance["domain"], governance["product"]) == ("product", "user_activity")
    (rejects,) = query(warehouse, "select count(*) from raw.user_activity_rejects")[0]
    rejected = dataset(events, load, "raw.user_activity_rejects")
    assert rejected["outputFacets"]["outputStatistics"]["rowCount"] == rejects > 0
    [fetched] = [e for e in events if e["job"]["name"].endswith("fetch_activity_user_activity")
                 and e["eventType"] == "COMPLETE"]
    api = config.activity_api().url
    assert [(d["namespace"], d["name"]) for d in fetched["inputs"]] == [
        naming.http_api(api, "/v1/events")]
    [landing] = fetched["outputs"]
    (landed,) = query(warehouse, "select rows_fetched from ops.pipeline_runs")[0]
    assert landing["outputFacets"]["outputStatistics"]["rowCount"] == landed
    checks = [e for e in events if e["job"]["name"] == f"{load}.checks"][-1]
    [checked] = checks["inputs"]
    assertions = checked["inputFacets"]["dataQualityAssertions"]["assertions"]
    assert assertions and all(a["success"] for a in assertions)


def test_a_failing_run_ends_in_fail_with_the_error(warehouse, simulator):
    simulator()
    failed = run_cli("run", INGEST, "--start", START.isoformat(), "--end",
                     END.isoformat(), env={"ACTIVITY_API_TOKEN": "wrong"})
    assert failed.returncode == 1, failed.stderr[-3000:]
    events = emitted_events()
    assert_valid(events)
    assert by_job(events) == {INGEST: ["START", "FAIL"],
                              f"{INGEST}.fetch_activity_user_activity": ["START", "FAIL"]}
    for event in events[-2:]:
        message = event["run"]["facets"]["errorMessage"]["message"]
        assert "401" in message and message.startswith("ActivityApi"), message
    assert events[-1]["job"]["name"] == INGEST


def test_a_killed_run_is_aborted_by_the_next(warehouse, simulator):
    simulator()
    window = ("--start", START.isoformat(), "--end", END.isoformat())
    killed = run_cli("run", INGEST, *window, env={"MAGE_PROJECT_FAILPOINT": "after_validate"})
    assert killed.returncode != 0
    events = emitted_events()
    assert by_job(events) == {INGEST: ["START"], f"{INGEST}.fetch_activity_user_activity":
                              ["START", "COMPLETE"],
                              f"{INGEST}.validate_activity_user_activity": ["START"]}
    again = run_cli("run", INGEST, *window)
    assert again.returncode == 0, again.stderr[-3000:]
    events = emitted_events()
    assert_valid(events)
    runs = Counter((e["run"]["runId"], e["eventType"]) for e in events if e["job"]["name"] == INGEST)
    first, second = dict.fromkeys(e["run"]["runId"] for e in events if e["job"]["name"] == INGEST)
    assert runs == {(first, "START"): 1, (first, "ABORT"): 1, (second, "START"): 1,
                    (second, "COMPLETE"): 1}
    [aborted] = [e for e in events if e["eventType"] == "ABORT" and e["job"]["name"] != INGEST]
    assert aborted["job"]["name"] == f"{INGEST}.validate_activity_user_activity"
    assert "ended before the run did" in aborted["run"]["facets"]["errorMessage"]["message"]
    uuid.UUID(first)


def test_a_warehouse_elt_run_emits_the_dbt_models_and_tests_as_children(warehouse):
    write_drops(LandingZone(config.landing_url()), date(2026, 11, 1), date(2026, 11, 3))
    done = run_cli("run", "warehouse_elt")
    assert done.returncode == 0, done.stderr[-3000:]
    events = emitted_events()
    assert_valid(events)
    jobs = by_job(events)
    pipeline = "warehouse_elt"
    assert jobs[pipeline] == ["START", "COMPLETE"]
    for block in ("load_landing_file_drops", "check_raw_quality_file_drops", "plan_marts_build",
                  "build_dbt_warehouse", "publish_marts"):
        assert jobs[f"{pipeline}.{block}"] == ["START", "COMPLETE"], block
    dbt = f"{pipeline}.build_dbt_warehouse"
    models = {j for j in jobs if j.startswith(f"{dbt}.") and not j.startswith(f"{dbt}.not_null")}
    assert {f"{dbt}.fct_daily_revenue", f"{dbt}.dim_customers", f"{dbt}.stg_billing__payments",
            f"{dbt}.int_payments__counted"} <= models
    assert all(jobs[j] == ["START", "COMPLETE"] for j in jobs if j.startswith(f"{dbt}."))
    [dbt_run] = {e["run"]["runId"] for e in events if e["job"]["name"] == dbt}
    assert {parent_of(e) for e in events if e["job"]["name"].startswith(f"{dbt}.")} == {dbt_run}
    revenue = dataset(events, f"{dbt}.fct_daily_revenue", "marts.fct_daily_revenue")
    net = revenue["facets"]["columnLineage"]["fields"]["net_revenue"]["inputFields"]
    assert {f["name"].rpartition(".")[2] for f in net} == {"int_payments__counted"}
    assert dataset(events, f"{dbt}.fct_daily_revenue", "intermediate.int_payments__counted",
                   key="inputs")
    loaded = dataset(events, f"{pipeline}.load_landing_file_drops", "raw.billing__payments")
    (payments,) = query(warehouse, "select count(*) from raw.billing__payments")[0]
    assert loaded["outputFacets"]["outputStatistics"]["rowCount"] == payments > 0
    published = dataset(events, f"{pipeline}.publish_marts", "marts.fct_daily_revenue")
    assert published["facets"]["dataProductGovernance"]["domain"] == "finance"
    tests = [e for e in events if e["job"]["name"].startswith(f"{dbt}.")
             and e["job"]["facets"]["jobType"]["jobType"] == "TEST"]
    assert tests and all(
        d["inputFacets"]["dataQualityAssertions"]["assertions"][0]["success"]
        for e in tests if e["eventType"] == "COMPLETE" for d in e["inputs"])
