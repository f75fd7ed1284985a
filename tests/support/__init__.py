"""Shared test helpers: the independent oracle of the activity API's expected rows, an SMTP
sink, and stopping a process group. Beside it, code only the tests call:

- ``support.file_drops``: the oracle of the file drops (``expected_latest``);
- ``support.write_audit_publish``: warehouse_elt's write-audit-publish in one call, through the
  functions its blocks call (``build_and_publish``).
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal
from email import message_from_bytes, policy
from pathlib import Path

from aiosmtpd.controller import Controller

from mage_project import processes
from mage_project.sources.activity_simulator import generate_events

START = datetime(2026, 11, 1, tzinfo=UTC)
END = datetime(2026, 11, 3, tzinfo=UTC)
SIM = {"seed": 7, "events_per_day": 1500, "invalid_rate": 0.01, "redelivery_rate": 0.02}


def is_valid_event(event) -> bool:
    """An oracle independent of mage_project.validation, for the simulator's defect kinds."""
    if not isinstance(event, dict):
        return False
    if not isinstance(event.get("event_id"), str) or not event["event_id"].strip():
        return False
    if type(event.get("user_id")) is not int or not event.get("event_type"):
        return False
    try:
        at = datetime.fromisoformat(event["occurred_at"])
    except (TypeError, ValueError):
        return False
    if at.tzinfo is None:
        return False
    amount = event.get("amount")
    if amount is not None and (isinstance(amount, bool) or not isinstance(amount, int | float)):
        return False
    return event.get("properties") is None or isinstance(event["properties"], dict)


def expected_rows(start=START, end=END, **params):
    """(rows by event_id, rejected count, fetched count) for a window of the simulator."""
    params = {**SIM, **params}
    events = list(generate_events(start, end, **params))
    latest = {}
    for event in events:
        if is_valid_event(event):
            latest[event["event_id"]] = event  # the later delivery wins
    rows = {
        e["event_id"]: (
            e["user_id"],
            e["event_type"],
            datetime.fromisoformat(e["occurred_at"]).astimezone(UTC),
            e["session_id"],
            e["page_url"],
            e["properties"],
            None if e["amount"] is None else Decimal(repr(e["amount"])),
        )
        for e in latest.values()
    }
    rejected = sum(1 for e in events if not is_valid_event(e))
    return rows, rejected, len(events)


def loaded_rows(conn):
    with conn.cursor() as cur:
        cur.execute(
            "select event_id, user_id, event_type, occurred_at, session_id, page_url,"
            " properties, amount from raw.user_activity"
        )
        return {r[0]: (r[1], r[2], r[3].astimezone(UTC), *r[4:]) for r in cur.fetchall()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_group(proc: subprocess.Popen, timeout: float = 30) -> None:
    """Stop the process group ``proc`` leads (it was started with ``start_new_session=True``), so
    what it started stops with it (Mage's scheduler, workers and kernels): the library's
    ``processes.stop_group``, with the tests' longer grace."""
    processes.stop_group(proc, grace=timeout)


class SmtpSink:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 that keeps what it receives."""

    def __init__(self):
        self.messages = []
        self._lock = threading.Lock()
        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        with self._lock:
            self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 Message accepted for delivery"

    def wait_for(self, count: int, timeout: float = 30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.messages) >= count:
                    return list(self.messages)
            time.sleep(0.1)
        return list(self.messages)

    def __enter__(self):
        self._controller.start()
        return self

    def __exit__(self, *exc):
        self._controller.stop()


def run_steps(**kwargs) -> dict:
    """The ingestion pipeline's three steps in this process: fetch, validate, load."""
    from mage_project.pipelines import user_activity

    return user_activity.load(user_activity.validate(user_activity.fetch(**kwargs)))


def run_log(output: str) -> str:
    """The run's log file (Mage's output, the blocks' @tests, the library's log records), as the
    last line of ``output`` (its stdout when it succeeded, its stderr when not) names it."""
    last = output.rstrip("\n").rpartition("\n")[2]
    named = re.search(r"(?:\(log: |Mage's output: )(.+)\)$", last)
    assert named, f"the run's last line names no log file: {last!r}"
    return Path(named[1]).read_text()


def project_copy(tmp_path: Path) -> Path:
    """The files ``python -m mage_project check`` reads, copied to ``tmp_path/project``."""
    root = tmp_path / "project"
    project = Path(__file__).resolve().parents[2]
    for name in ("contracts", "pipelines", "data_loaders", "transformers", "data_exporters",
                 "dbt/warehouse/models", "dbt/warehouse/macros", "mage_project/warehouse/sql/postgres"):
        shutil.copytree(project / name, root / name)
    for name in ("io_config.yaml", "metadata.yaml", ".secrets.baseline"):
        shutil.copy(project / name, root / name)
    return root


def emitted_events() -> list[dict]:
    """The OpenLineage events this project wrote (a file per event), oldest first."""
    import json

    from mage_project import config

    directory = config.lineage().directory / "events"
    return [json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))]


def start_hub(port: int, env: dict | None = None, log=None):
    """``python -m mage_project lineage serve`` on ``port``; returns once it says it serves."""
    import os
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "mage_project", "lineage", "serve", "--port", str(port)],
                            cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE,
                            stderr=log or subprocess.DEVNULL, text=True, env={**os.environ, **(env or {})})
    banner = proc.stdout.readline().strip()
    assert banner == f"serving on http://127.0.0.1:{port}/api/v1/lineage", banner
    return proc


def stop_hub(proc, signum: int = signal.SIGTERM) -> float:
    """Send ``signum`` and wait: the seconds it took to exit."""
    started = time.monotonic()
    proc.send_signal(signum)
    proc.wait(timeout=10)
    return time.monotonic() - started
