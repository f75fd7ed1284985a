"""The project's events delivered over HTTP to the lineage hub (a real server on 127.0.0.1, storing
into the embedded PostgreSQL), and what happens when the receiver is down or slow: the run is not
failed, it waits for at most one request's timeout, and the events it kept arrive with the next run,
each once."""

from __future__ import annotations

import socket
import threading
from collections import Counter

import pytest
from support import END, START, emitted_events, free_port, run_steps

from mage_project import config
from mage_project.lineage import hub as lineage_hub
from mage_project.lineage import store
from mage_project.warehouse import backend

pytestmark = pytest.mark.integration

KEY = "hub-key-for-the-tests"


def stored() -> Counter:
    """The hub's events, by (runId, eventType, eventTime): how many times each is stored."""
    db = backend()
    with db.connection(config.LOADER) as conn, db.transaction(conn) as cur:
        events = store.read_events(cur)
    return Counter((e["run"]["runId"], e["eventType"], e["eventTime"]) for e in events)


def emitted() -> Counter:
    return Counter((e["run"]["runId"], e["eventType"], e["eventTime"]) for e in emitted_events())


def outbox() -> list[str]:
    return sorted(p.name for p in (config.lineage().directory / "outbox").glob("*.json"))


@pytest.fixture
def receiver(warehouse, monkeypatch):
    """Point the project at a port: start(), the hub on it (with its key)."""
    port = free_port()
    monkeypatch.setenv("OPENLINEAGE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OPENLINEAGE_API_KEY", KEY)
    hubs = []

    def start():
        hubs.append(lineage_hub.Hub(port=port, key=KEY).start())
        return hubs[-1]
    yield start
    for hub in hubs:
        hub.stop()


def test_the_hub_receives_every_event_of_a_run_once(receiver, simulator):
    receiver()
    simulator()
    run_steps(window_start=START, window_end=END)
    events = emitted()
    assert len(events) == 10 and set(events.values()) == {1}
    assert stored() == events
    assert outbox() == []


def test_a_receiver_that_is_down_fails_no_run_and_gets_the_events_with_the_next(receiver, simulator,
                                                                                monkeypatch):
    simulator()
    first = run_steps(window_start=START, window_end=END)
    assert first["status"] == "success"
    kept = outbox()
    assert len(kept) == len(emitted()) == 10  # every event of the run, kept for the next
    receiver()
    # The next run within OPENLINEAGE_RETRY_AFTER_SECONDS only queues (after one failure, runs
    # do not wait on a receiver that was down); past it, it delivers what was kept, then its own.
    run_steps(window_start=START, window_end=END)
    assert outbox()[:len(kept)] == kept and len(outbox()) == 20
    monkeypatch.setenv("OPENLINEAGE_RETRY_AFTER_SECONDS", "0")
    run_steps(window_start=START, window_end=END)
    assert outbox() == []
    assert stored() == emitted() and set(stored().values()) == {1}
    assert len(stored()) == 30


def test_a_slow_receiver_costs_a_run_one_timeout(warehouse, simulator, monkeypatch):
    """A receiver that takes the connection and never answers: each event's request would wait for
    OPENLINEAGE_TIMEOUT_SECONDS; the run makes one, then only queues."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted = []

    def accept():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(conn)
    threading.Thread(target=accept, daemon=True).start()
    monkeypatch.setenv("OPENLINEAGE_URL", f"http://127.0.0.1:{listener.getsockname()[1]}")
    monkeypatch.setenv("OPENLINEAGE_TIMEOUT_SECONDS", "0.5")
    simulator()
    try:
        summary = run_steps(window_start=START, window_end=END)
    finally:
        listener.close()
        for conn in accepted:
            conn.close()
    assert summary["status"] == "success"
    assert len(accepted) == 1
    assert len(outbox()) == len(emitted()) == 10
    refusal = (config.lineage().directory / "outbox" / ".receiver-down").read_text()
    assert "ReadTimeout" in refusal, refusal
