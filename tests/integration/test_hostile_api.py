"""An API nobody here wrote: records of every wrong shape, each kept as it was sent.

A small server on 127.0.0.1 serves a fixed page of records (the contract's shape); the real
fetch, validation and load run against the embedded PostgreSQL.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import query
from support import run_steps

from mage_project.validation import record_text

pytestmark = pytest.mark.integration

START, END = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC)
GOOD = {"event_id": "e1", "user_id": 1, "event_type": "click", "occurred_at": "2026-11-01T10:00:00Z",
        "session_id": "s", "page_url": "https://x.example/", "properties": {"a": 1}, "amount": None}


def _hostile() -> list:
    """Distinct invalid records (each its own JSON), a few valid ones, one identical re-delivery."""
    bad: list = ["oops", 42, [1, 2], None, True, {}, {"event_id": "e9"}]
    bad += [{k: v for k, v in GOOD.items() if k != "event_id"}, {**GOOD, "event_id": ""},
            {**GOOD, "event_id": " "}, {**GOOD, "event_id": None}, {**GOOD, "event_id": 7}]
    for field, values in {
        "user_id": ["1", "abc", 1.5, 1.0, True, None, 2**64, -(2**63) - 1, [1], {"v": 1}],
        "event_type": ["", None, 3, ["click"]],
        "occurred_at": ["2026-11-01T10:00:00", "yesterday", 1793527200, None,
                        "2026-11-02T00:00:00Z", "2026-10-31T23:59:59.999Z"],
        "properties": ['{"a":1}', [1], "x", 5, {"k": "\u0000"}],
        "amount": ["10", "ten", True, {"v": 1}, float("inf"), 1e40],
        "page_url": ["a\x00b", 5],
        "session_id": [1, {"s": 1}],
    }.items():
        bad += [{**GOOD, "event_id": f"bad-{field}-{i}", field: v} for i, v in enumerate(values)]
    good = [{**GOOD, "event_id": f"ok-{i}", "extra": i} for i in range(5)]
    return [*bad, *good, bad[8]], bad, good


class _Page(BaseHTTPRequestHandler):
    records: list = []

    def do_GET(self):  # noqa: N802 - http.server's hook name
        body = json.dumps({"data": self.records, "next_cursor": None}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def hostile_api(monkeypatch):
    def serve(records):
        _Page.records = records
        return server

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("ACTIVITY_API_URL", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("ACTIVITY_API_TOKEN", "t")
    yield serve
    server.shutdown()
    server.server_close()


def test_every_distinct_bad_record_is_kept_once_as_sent_and_counts_reconcile(warehouse, hostile_api):
    served, bad, good = _hostile()
    hostile_api(served)
    summary = run_steps(window_start=START, window_end=END)
    stored = query(warehouse, "select raw_payload, reason from raw.user_activity_rejects")
    assert sorted(p for p, _ in stored) == sorted(record_text(r) for r in bad)
    assert len(stored) == len(bad) == 47 and all(reason for _, reason in stored)
    assert sorted(e for (e,) in query(warehouse, "select event_id from raw.user_activity")) == [
        f"ok-{i}" for i in range(5)]
    assert (summary["rows_fetched"], summary["rows_loaded"], summary["rows_rejected"],
            summary["rows_duplicate"], summary["rejects_new"]) == (53, 5, 47, 1, 47)
    drift = {"unknown_field": {"extra": 5},
             "wrong_type": {"event_id": 1, "user_id": 7, "event_type": 2, "occurred_at": 1,
                            "properties": 4, "amount": 4, "page_url": 1, "session_id": 2}}
    assert summary["drift"] == drift
    assert query(warehouse, "select rows_rejected, drift from ops.pipeline_runs") == [(47, drift)]

    # Again, plus two new bad records: the run counts all it rejected, the table adds the new.
    hostile_api([*served, {**GOOD, "event_id": "new-1", "user_id": "2"}, "new"])
    again = run_steps(window_start=START, window_end=END)
    assert (again["rows_rejected"], again["rejects_new"]) == (49, 2)
    assert query(warehouse, "select count(*) from raw.user_activity_rejects") == [(49,)]
    first_seen = query(warehouse, "select run_id, count(*) from raw.user_activity_rejects"
                                  " group by run_id order by count(*) desc")
    assert first_seen == [(summary["run_id"], 47), (again["run_id"], 2)]


def test_snowflake_keeps_the_same_rejects_and_counts(snowflake_warehouse, hostile_api):
    served, bad, _ = _hostile()
    hostile_api(served)
    summary = run_steps(window_start=START, window_end=END)
    cur = snowflake_warehouse.cursor()
    cur.execute("select raw_payload from raw.user_activity_rejects")
    assert sorted(p for (p,) in cur.fetchall()) == sorted(record_text(r) for r in bad)
    assert (summary["rows_loaded"], summary["rows_rejected"], summary["rejects_new"]) == (5, 47, 47)
    cur.execute("select rows_rejected, drift from ops.pipeline_runs")
    (rejected, drift), = cur.fetchall()
    assert (rejected, json.loads(drift)) == (47, summary["drift"])


def test_a_frozen_entity_fails_the_run_naming_the_field_and_loads_nothing(warehouse, hostile_api,
                                                                         monkeypatch):
    from dataclasses import replace

    from mage_project.pipelines import user_activity
    from mage_project.validation import SchemaFrozen

    frozen = replace(user_activity.ENTITY, drift=replace(user_activity.ENTITY.drift_policy,
                                                         unknown_field="freeze"))
    monkeypatch.setattr(user_activity, "ENTITY", frozen)
    hostile_api([GOOD, {**GOOD, "event_id": "e2", "utm_source": "x"}])
    with pytest.raises(SchemaFrozen, match="undeclared field 'utm_source' .*unknown_field=freeze"):
        run_steps(window_start=START, window_end=END)
    assert query(warehouse, "select count(*) from raw.user_activity") == [(0,)]
    assert query(warehouse, "select count(*) from ops.watermarks") == [(0,)]
