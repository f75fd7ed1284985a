"""Delivery of OpenLineage events, in openlineage-python's own terms: one ``OpenLineageClient``
whose transport comes from configuration (``config.lineage()``), a composite of

- ``EventFiles``: a file per event in the data directory (``lineage/events/``), always; and
- ``Outbox``: when ``OPENLINEAGE_URL`` is set, HTTP to ``{url}/api/v1/lineage`` (Marquez's path,
  the lineage hub's), with ``OPENLINEAGE_API_KEY`` as a bearer token.

A receiver that is down or slow never fails a run, nor slows it by more than one request's
timeout: the outbox keeps each event as a file until the receiver has taken it, posts what it
holds oldest first and stops at the first failure, and after one it only queues, for
``OPENLINEAGE_RETRY_AFTER_SECONDS``, in every process (a marker file). What it kept goes with the
next run's events: nothing lost, and each event always the same bytes, which the receiver
deduplicates by run id, event type and event time. An event the receiver refuses as invalid (400,
422) is moved aside to ``lineage/refused/`` with the reason and never blocks the others.
``OPENLINEAGE_DISABLED=true`` turns it all off (the client's own switch).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import attr
from openlineage.client import OpenLineageClient
from openlineage.client.serde import Serde
from openlineage.client.transport.http import HttpConfig, HttpTransport
from openlineage.client.transport.transport import Config, Transport

from mage_project import config

log = logging.getLogger(__name__)

REFUSED_STATUSES = (400, 413, 422)  # the receiver will never take it: kept aside, not retried


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def event_file_name(event: dict) -> str:
    """``<eventTime>-<runId>-<eventType>.json``: sorted by time, unique per event."""
    stamp = event["eventTime"].replace(":", "").replace("-", "").replace("+", "p")
    return f"{stamp}-{event['run']['runId']}-{event['eventType']}.json"


@dataclass
class EventFilesConfig(Config):
    directory: str

    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> EventFilesConfig:
        return cls(directory=params["directory"])


class EventFiles(Transport):
    """A file per event under ``directory`` (the client's FileTransport names files by the
    clock alone, which two events of one millisecond share)."""

    kind = "mage_event_files"
    config_class = EventFilesConfig

    def __init__(self, config: EventFilesConfig) -> None:
        self.directory = Path(config.directory)

    def emit(self, event) -> None:
        body = Serde.to_dict(event)
        _write_atomically(self.directory / event_file_name(body), json.dumps(body, sort_keys=True))


@attr.s
class OutboxConfig(HttpConfig):
    """HttpConfig, and where the outbox keeps events (its ``from_dict`` reads these too)."""

    directory: str = attr.ib(default="")
    retry_after_seconds: float = attr.ib(default=60.0)


class Outbox(HttpTransport):
    """HTTP delivery through a directory of events not yet delivered (see the module's text)."""

    kind = "mage_outbox"
    config_class = OutboxConfig

    def __init__(self, config: OutboxConfig) -> None:
        super().__init__(config)
        self.directory = Path(config.directory)
        self.retry_after = config.retry_after_seconds
        self.marker = self.directory / ".receiver-down"
        self.down = False  # this process's client met a failure: its later events only queue

    def emit(self, event) -> None:
        body = Serde.to_dict(event)
        _write_atomically(self.directory / event_file_name(body), Serde.to_json(event))
        self.flush()

    def pending(self) -> list[Path]:
        return sorted(self.directory.glob("*.json")) if self.directory.is_dir() else []

    def flush(self) -> int:
        """Post what the outbox holds, oldest first, until the first failure: how many went."""
        if self.down or (self.marker.exists()
                         and time.time() - self.marker.stat().st_mtime < self.retry_after):
            return 0
        sent = 0
        for path in self.pending():
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError:  # another process delivered it meanwhile
                continue
            status, reason = self._post(text)
            if status is not None and 200 <= status < 300:
                path.unlink(missing_ok=True)
                sent += 1
            elif status in REFUSED_STATUSES:
                log.error("the lineage receiver refused %s (%s): %s; kept in lineage/refused/",
                          path.name, status, reason)
                _write_atomically(self.directory.parent / "refused" / path.name, text)
                _write_atomically(self.directory.parent / "refused" / f"{path.stem}.reason",
                                  f"{status} {reason}\n")
                path.unlink(missing_ok=True)
            else:
                log.warning("the lineage receiver at %s did not take %s (%s); %d events kept for"
                            " the next run", self.url, path.name, reason, len(self.pending()))
                _write_atomically(self.marker, reason)
                self.down = True
                return sent
        self.marker.unlink(missing_ok=True)
        return sent

    def _post(self, text: str) -> tuple[int | None, str]:
        """POST one stored event, as HttpTransport.emit does: (status or None, reason)."""
        import requests

        body, headers = self._prepare_request(text)
        headers.update({"Content-Type": "application/json", **self._auth_headers(self.config.auth),
                        **self.config.custom_headers})
        try:
            with requests.Session() as session:
                response = session.post(f"{self.url}/{self.endpoint}", data=body, headers=headers,
                                        timeout=self.timeout, verify=self.verify)
        except requests.RequestException as exc:
            return None, f"{type(exc).__name__}: {exc}"
        return response.status_code, response.text[:500].strip() or response.reason


def transport_config(settings: config.LineageSettings) -> dict:
    """The client's transport configuration (what an ``openlineage.yml`` would say)."""
    transports: list[dict] = [
        {"type": f"{__name__}.EventFiles", "directory": str(settings.directory / "events")}]
    if settings.url:
        transports.append({
            "type": f"{__name__}.Outbox", "url": settings.url, "endpoint": "api/v1/lineage",
            "timeout": settings.timeout_seconds, "directory": str(settings.directory / "outbox"),
            "retry_after_seconds": settings.retry_after_seconds,
            **({"auth": {"type": "api_key", "apiKey": settings.api_key}} if settings.api_key else {}),
        })
    return {"type": "composite", "transports": transports, "continue_on_failure": True}


def client(settings: config.LineageSettings) -> OpenLineageClient:
    return OpenLineageClient(config={"transport": transport_config(settings)})


def emit(events: list) -> None:
    """Deliver ``events`` (openlineage-python event objects) in order. Never raises: lineage
    must not fail a run (what it could not deliver stays in the outbox)."""
    settings = config.lineage()
    if not settings.enabled or not events:
        return
    try:
        ol = client(settings)
        for event in events:
            ol.emit(event)
    except Exception:
        log.exception("could not emit the run's lineage")
