"""The lineage hub: a small OpenLineage receiver for the whole company
(``python -m mage_project lineage serve``).

``POST /api/v1/lineage`` (Marquez's path: what openlineage-python's HTTP transport, Airflow's
provider, dbt-ol and Spark post to) takes one event per request, as Marquez does, from any
producer; holds it to the vendored OpenLineage schema (``lineage.schema``); and stores it in
``ops.lineage_events`` once (``lineage.store``), connected as the loader, the role that writes
``ops``. ``GET /healthz`` says whether the warehouse answers.

Answers (JSON bodies, each with Content-Length):

- 201 the event is stored (Marquez answers 201); 200 it was stored before: nothing new, still a
  success, so a producer may post again whatever it is unsure was taken;
- 400 not an event: not JSON, not one JSON object, or invalid (``reasons``: JSON path and rule);
- 401 ``LINEAGE_HUB_API_KEY`` is set and the request's ``Authorization: Bearer <key>`` is not it
  (compared in constant time); checked before the body is read;
- 404 another path; 405 another method; 411 no Content-Length (a chunked body); 413 a body over
  ``max_body_bytes`` (1 MiB by default), before or after gzip; 415 neither JSON nor gzip'd JSON;
- 503 the warehouse does not answer (with Retry-After): the event was not stored, try again.

It binds 127.0.0.1 unless told otherwise. SIGINT and SIGTERM stop it within a few seconds (the
requests being answered finish first), its port freed. The warehouse may be down when it starts:
it migrates the warehouse as soon as it answers (tried again at most every few seconds), and
answers 503 until then.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import logging
import signal
import socket
import sys
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler

from mage_project import config, processes, warehouse
from mage_project.lineage import schema, store

log = logging.getLogger(__name__)

ENDPOINT = "/api/v1/lineage"
HEALTH = "/healthz"
KEY_VARIABLE = "LINEAGE_HUB_API_KEY"
MAX_BODY_BYTES = 1 << 20  # one event; the biggest seen from Spark's column lineage are ~200 KiB
_DRAIN_LIMIT = 16 << 20  # a refused body up to this is read, so the answer reaches the client
_RETRY_AFTER_SECONDS = 30  # what a 503 tells the producer to wait
_MIGRATION_RETRY_SECONDS = 5  # between attempts to migrate a warehouse that refused
_STOP_GRACE_SECONDS = 3.0  # on a signal, for the requests being answered (their events stored)


def api_key() -> str | None:
    """``LINEAGE_HUB_API_KEY``, None when unset or blank: the key producers must present."""
    return config.lineage_hub_api_key()


class _Refused(Exception):
    """A request answered with ``status`` and ``body`` (a JSON object) before it was stored."""

    def __init__(self, status: int, body: dict, headers: dict | None = None) -> None:
        super().__init__(body.get("error"))
        self.status, self.body, self.headers = status, body, headers or {}


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _unstorable(value, path: str = "") -> str | None:
    """Where the event holds a string no warehouse stores as JSON text: one with U+0000 (jsonb
    refuses it) or a lone surrogate (no UTF-8 for it); None when it holds none."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path or "$"
        return (path or "$") if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else key
            found = _unstorable(key, where) or _unstorable(item, where)
            if found:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            if found := _unstorable(item, f"{path}[{index}]"):
                return found
    return None


def parse_event(body: bytes) -> dict:
    """The event a request's body holds; ``_Refused`` (400) saying why it holds none."""
    try:
        event = json.loads(body.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _Refused(400, {"error": f"the body is not JSON: {exc}"}) from None
    if not isinstance(event, dict):
        raise _Refused(400, {"error": "one event per request, as a JSON object (as Marquez takes"
                                      f" them), not a JSON {type(event).__name__}"})
    reasons = schema.validate(event)
    if not reasons:
        try:
            store.event_time(event)
        except ValueError as exc:
            reasons = [str(exc)]
    if not reasons and (where := _unstorable(event)) is not None:
        reasons = [f"{where}: holds U+0000 or a lone surrogate, which the warehouse cannot store"]
    if reasons:
        raise _Refused(400, {"error": "not a valid OpenLineage event", "reasons": reasons})
    return event


class Hub:
    """The receiver on ``host:port`` (0: a free port), served from a daemon thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 5000, key: str | None = None,
                 db=None, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.host, self.port, self.key = host, port, key
        self.db = db or warehouse.backend()
        self.max_body_bytes = max_body_bytes
        self._migrated = False
        self._migrate_lock = threading.Lock()
        self._next_migration = 0.0  # monotonic time of the next attempt after a failed one
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Hub:
        """Bind and serve, then migrate: a request meanwhile waits for the migration (its lock)."""
        if not _is_loopback(self.host) and self.key is None:
            log.warning("the lineage hub listens on %s without %s: whoever reaches it can write"
                        " lineage", self.host, KEY_VARIABLE)
        self._server = _Server((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"lineage-hub-{self.port}", daemon=True)
        self._thread.start()
        self.ensure_migrated()
        return self

    def stop(self) -> None:
        """Stop serving and close kept-alive connections too, so the port is free when it returns."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.wait_idle(_STOP_GRACE_SECONDS)  # requests being answered finish, new ones wait
        server.close_open_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Hub:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def ensure_migrated(self) -> bool:
        """The warehouse's migrations applied (as its owner), once per process: whether they are.
        After a failure (the warehouse not up yet, no owner's login here) requests go on without
        them, to tables an earlier migration made, and the next attempt waits a while."""
        with self._migrate_lock:
            if not self._migrated and time.monotonic() >= self._next_migration:
                try:
                    warehouse.migrate(self.db)
                    self._migrated = True
                except warehouse.WarehouseError as exc:
                    self._next_migration = time.monotonic() + _MIGRATION_RETRY_SECONDS
                    log.warning("the lineage hub could not migrate the warehouse: %s", exc)
            return self._migrated

    def authorized(self, header: str | None) -> bool:
        if self.key is None:
            return True
        return hmac.compare_digest((header or "").encode(), f"Bearer {self.key}".encode())

    def receive(self, event: dict) -> tuple[int, dict]:
        """Store a valid event: 201 when new, 200 when stored before; 503 when the warehouse
        does not answer (``_Refused``)."""
        key = store.event_key(event)
        self.ensure_migrated()
        try:
            with self.db.connection(config.LOADER) as conn, self.db.transaction(conn) as cur:
                new = store.insert_event(cur, event)
        except warehouse.WarehouseError as exc:
            log.warning("lineage event %s not stored: %s", key, exc)
            raise _Refused(503, {"error": "the warehouse does not answer: the event was not stored;"
                                          " post it again"},
                           {"Retry-After": str(_RETRY_AFTER_SECONDS)}) from None
        log.info("lineage event %s %s of %s from %s", key[:12], "stored" if new else "already stored",
                 (event.get("job") or {}).get("name"), event.get("producer"))
        return (201, {"stored": True, "eventKey": key}) if new else (
            200, {"stored": False, "eventKey": key, "reason": "stored before"})

    def health(self) -> tuple[int, dict]:
        """200 when the warehouse answers (and holds the events' table), 503 otherwise."""
        self.ensure_migrated()
        try:
            with self.db.connection(config.LOADER) as conn, self.db.transaction(conn) as cur:
                cur.execute("select count(*) from ops.lineage_events where 1 = 0")
                cur.fetchall()
            return 200, {"status": "ok", "warehouse": self.db.NAME}
        except Exception as exc:  # whatever the driver raises, the answer is: not healthy
            log.warning("lineage hub health: the warehouse does not answer: %s", exc)
        return 503, {"status": "unavailable", "warehouse": self.db.NAME,
                     "error": "the warehouse does not answer"}


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Server(processes.HTTPServer):
    def __init__(self, address: tuple[str, int], hub: Hub) -> None:
        self.hub = hub
        self._busy = 0  # requests being answered (not idle kept-alive connections)
        self._idle = threading.Condition()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    @contextlib.contextmanager
    def answering(self):
        """Count a request as being answered while it is."""
        with self._idle:
            self._busy += 1
        try:
            yield
        finally:
            with self._idle:
                self._busy -= 1
                self._idle.notify_all()

    def wait_idle(self, timeout: float) -> None:
        """Wait until no request is being answered, or ``timeout`` seconds."""
        with self._idle:
            self._idle.wait_for(lambda: self._busy == 0, timeout)

    def handle_error(self, request, client_address) -> None:
        log.debug("lineage hub: error serving %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "LineageHub/1"
    timeout = 30  # a client that stops sending mid-body, or an idle kept-alive connection
    disable_nagle_algorithm = True  # headers and body go out in two writes
    server: _Server

    def log_message(self, format: str, *args) -> None:
        log.debug("lineage hub: %s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        with self.server.answering():
            self._get()

    def _get(self) -> None:
        path = self.path.partition("?")[0]
        if path == HEALTH:
            self._send(*self.server.hub.health())
        elif path == ENDPOINT:
            self._send(405, {"error": f"POST events to {ENDPOINT}"}, {"Allow": "POST"})
        else:
            self._send(404, {"error": f"no route for {path}"})

    def do_POST(self) -> None:
        with self.server.answering():
            self._post()

    def _post(self) -> None:
        """An event in, its answer out; a client gone midway gets none, a bug of ours a 500."""
        try:
            event = self._event()
            status, body = self.server.hub.receive(event)
        except _Refused as refused:
            if refused.status != 401:
                log.info("lineage hub: %s refused: %s %s", self.address_string(), refused.status,
                         refused.body)
            self._send(refused.status, refused.body, refused.headers)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True
        except Exception:
            log.exception("lineage hub: failed to take an event")
            self._send(500, {"error": "the hub failed to take the event (its log says why)"})
        else:
            self._send(status, body)

    def _refuse_others(self) -> None:
        path = self.path.partition("?")[0]
        self._drain(self._length(required=False))
        if path in (ENDPOINT, HEALTH):
            self._send(405, {"error": f"{self.command} is not served here"},
                       {"Allow": "POST" if path == ENDPOINT else "GET"})
        else:
            self._send(404, {"error": f"no route for {path}"})

    do_PUT = do_DELETE = do_PATCH = _refuse_others

    def _event(self) -> dict:
        """The request's event, its key checked first, its body read whole; ``_Refused`` when
        there is none to store (the body read even then, so the client gets the answer)."""
        hub, path = self.server.hub, self.path.partition("?")[0]
        if path != ENDPOINT:
            self._drain(self._length(required=False))
            raise _Refused(404, {"error": f"no route for {path}: POST events to {ENDPOINT}"})
        length = self._length(required=True)
        if not hub.authorized(self.headers.get("Authorization")):
            self._drain(length)
            raise _Refused(401, {"error": "missing or wrong API key: send Authorization: Bearer <key>"},
                           {"WWW-Authenticate": 'Bearer realm="lineage"'})
        if length > hub.max_body_bytes:
            self._drain(length)
            raise _Refused(413, {"error": f"the body is {length} bytes, over the limit of"
                                          f" {hub.max_body_bytes} (one event per request)"})
        body = self.rfile.read(length)
        media = (self.headers.get("Content-Type") or "application/json").split(";")[0].strip().lower()
        encoding = (self.headers.get("Content-Encoding") or "identity").strip().lower()
        if not (media == "application/json" or media.endswith("+json")) or encoding not in (
                "identity", "gzip"):
            raise _Refused(415, {"error": f"send the event as application/json, plain or gzip, not"
                                          f" {media} ({encoding})"})
        return parse_event(self._inflated(body) if encoding == "gzip" else body)

    def _inflated(self, body: bytes) -> bytes:
        """A gzip'd body (openlineage-python's ``compression: gzip``), no bigger than the limit."""
        limit = self.server.hub.max_body_bytes
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            data = inflater.decompress(body, limit + 1)
        except zlib.error as exc:
            raise _Refused(400, {"error": f"the body is not gzip: {exc}"}) from None
        if len(data) > limit or inflater.unconsumed_tail:
            raise _Refused(413, {"error": f"the event is over the limit of {limit} bytes, unzipped"})
        return data

    def _length(self, required: bool) -> int:
        """The body's Content-Length: a chunked or unsized body cannot be held to the limit
        before it is read, so it is refused (411) and the connection closed."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self.close_connection = True
            raise _Refused(411, {"error": "send the event with a Content-Length, not chunked"})
        text = self.headers.get("Content-Length")
        if text is None and not required:
            return 0
        if text is None or not text.strip().isdigit():
            self.close_connection = True
            raise _Refused(411 if text is None else 400,
                           {"error": f"a Content-Length is needed, got {text!r}"})
        return int(text)

    def _drain(self, length: int) -> None:
        """Read and drop a body that is refused: closing with it unread would reset the
        connection, and the client would never read the answer. One too big is not read."""
        if length > _DRAIN_LIMIT:
            self.close_connection = True
            return
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 16))
            if not chunk:
                break
            length -= len(chunk)

    def _send(self, status: int, body: dict, headers: dict | None = None) -> None:
        """A JSON answer with its Content-Length (kept-alive connections need it)."""
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **(headers or {}),
                                "Content-Length": str(len(data))}.items():
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


def serve(host: str = "127.0.0.1", port: int = 5000) -> int:
    """Serve until SIGINT or SIGTERM (exit 0), the key from ``LINEAGE_HUB_API_KEY``; exit 2 when
    the address cannot be bound."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        hub = Hub(host, port, api_key()).start()
    except OSError as exc:
        print(f"error: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except config.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        print(f"serving on {hub.url}{ENDPOINT}", flush=True)
        while not stop.wait(0.2):
            pass
    finally:
        hub.stop()
    return 0
