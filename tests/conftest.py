"""Fixtures: real services started by the suite on 127.0.0.1 or unix sockets.

One embedded PostgreSQL serves the session; every test that needs the warehouse gets a fresh
database of its own (dropped after), reached through the same POSTGRES_* settings a user sets
for their own server.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import sql

from mage_project import config
from mage_project.warehouse import embedded

ROOT = Path(__file__).resolve().parent.parent

# Settings a developer may have exported (or `make` read from .env) must not leak into the
# tests: every setting .env.example names, and these, which it does not.
_PROJECT_VARS = (
    "POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_DBNAME", "POSTGRES_USER", "POSTGRES_PASSWORD",
    "ACTIVITY_API_URL", "ACTIVITY_API_TOKEN", "LANDING_URL", "WORK_DIR", "PROJECT_DATA_DIR",
    "SMTP_HOST", "SMTP_PORT", "SMTP_USER", "SMTP_PASSWORD", "ALERT_EMAIL_TO", "ALERT_EMAIL_FROM",
    "MAGE_DATA_DIR", "MAGE_REPO_PATH", "MAGE_PROJECT_FAILPOINT", "RUN_LOCK_TIMEOUT_SECONDS",
    "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION", "AWS_PROFILE", "WAREHOUSE", "SNOWFLAKE_ACCOUNT", "SNOWFLAKE_USER",
    "SNOWFLAKE_PASSWORD", "SNOWFLAKE_DATABASE", "SNOWFLAKE_WAREHOUSE", "SNOWFLAKE_ROLE",
    "SNOWFLAKE_HOST", "SNOWFLAKE_PORT", "SNOWFLAKE_PROTOCOL", "SNOWFLAKE_NETWORK_TIMEOUT",
)


def env_example_settings(text: str) -> list[str]:
    """The setting names of .env.example's text: lines ``NAME=...`` or ``# NAME=...``."""
    return re.findall(r"^#?[ \t]*([A-Z][A-Z0-9_]*)=", text, re.MULTILINE)


_SETTINGS = tuple(dict.fromkeys(
    (*_PROJECT_VARS, *env_example_settings((ROOT / ".env.example").read_text()))))


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in _SETTINGS:
        monkeypatch.delenv(name, raising=False)
    # Not under pytest's tmp dirs, which another pytest session resets to mode 0700: a test
    # that starts the embedded PostgreSQL in its data dir would lock out the server's user.
    data = Path(tempfile.mkdtemp(prefix="mage-project-data-"))
    monkeypatch.setenv("PROJECT_DATA_DIR", str(data))
    monkeypatch.setenv("ACTIVITY_API_BACKOFF_BASE", "0.01")
    monkeypatch.setenv("ACTIVITY_API_BACKOFF_MAX", "0.05")
    yield
    embedded.stop(data / "postgres")  # when a test started one there
    shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server():
    # Not under pytest's tmp dirs: another pytest session resets their modes to 0700, which
    # locks out the server's own system user.
    root = Path(tempfile.mkdtemp(prefix="mage-project-pg-"))
    pgdata = root / "pgdata"
    server = embedded.ensure_running(pgdata)
    # The project's roles, as logins: each test database is used as a deployment with a login per
    # role would be (the ``warehouse`` fixture).
    embedded.ensure_database(server, "postgres", tuple(config.POSTGRES_ROLES.values()))
    yield server
    embedded.stop(pgdata)
    shutil.rmtree(root, ignore_errors=True)


def _admin(server):
    conn = psycopg2.connect(
        host=server.socket_dir, port=server.port, user=server.user, dbname="postgres"
    )
    conn.autocommit = True
    return conn


@pytest.fixture
def warehouse(pg_server, monkeypatch):
    """A fresh database on the embedded server, selected through the POSTGRES_* settings: the
    superuser owns it (and migrates it), each role of the project logs in as its own login."""
    dbname = f"test_{uuid.uuid4().hex[:12]}"
    admin = _admin(pg_server)
    with admin.cursor() as cur:
        cur.execute(sql.SQL("create database {}").format(sql.Identifier(dbname)))
    monkeypatch.setenv("POSTGRES_HOST", pg_server.socket_dir)
    monkeypatch.setenv("POSTGRES_PORT", str(pg_server.port))
    monkeypatch.setenv("POSTGRES_USER", pg_server.user)
    monkeypatch.setenv("POSTGRES_DBNAME", dbname)
    for role, login in config.POSTGRES_ROLES.items():
        monkeypatch.setenv(f"POSTGRES_{role.upper()}_USER", login)
    conn = psycopg2.connect(
        host=pg_server.socket_dir, port=pg_server.port, user=pg_server.user, dbname=dbname
    )
    conn.autocommit = True
    yield conn
    conn.close()
    with admin.cursor() as cur:
        cur.execute(sql.SQL("drop database {} with (force)").format(sql.Identifier(dbname)))
    admin.close()


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on 127.0.0.1, from its own virtual environment (.venv-standins)."""
    import time
    import urllib.request

    from support import free_port

    moto = ROOT / ".venv-standins" / "bin" / "moto_server"
    if not moto.exists():
        raise RuntimeError(f"{moto} is missing: run `make setup`")
    port = free_port()
    proc = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=2)
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("moto's S3 server did not start") from None
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture
def s3_bucket(s3_server, monkeypatch):
    """A fresh bucket on the S3 stand-in, with boto3's standard settings pointing at it."""
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    name = f"landing-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


def _serve(argv: list[str], url: str, probe: str, name: str) -> subprocess.Popen:
    """Start a stand-in server and wait until ``url + probe`` answers."""
    import time
    import urllib.error
    import urllib.request

    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}{probe}", timeout=2)
            return proc
        except urllib.error.HTTPError:
            return proc  # it answers
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError(f"{name} did not start") from None
            time.sleep(0.2)


# The stand-in's administrator (fakesnow takes any password), as the tests connect to create
# their databases: connect(**FAKESNOW_ADMIN, port=snowflake_server).
FAKESNOW_ADMIN = {"account": "fakesnow", "user": "admin", "password": "test", "host": "127.0.0.1",
                  "protocol": "http", "network_timeout": 60}


@pytest.fixture(scope="session")
def snowflake_server():
    """fakesnow's Snowflake-protocol server on 127.0.0.1, from .venv-standins; the tests speak
    to it with the real snowflake-connector-python (support/fakesnow_server.py: fakesnow with
    its CREATE OR REPLACE ... CLONE kept a replace). Returns its port."""
    from support import free_port

    python = ROOT / ".venv-standins" / "bin" / "python"
    if not (ROOT / ".venv-standins" / "bin" / "fakesnow").exists():
        raise RuntimeError(f"fakesnow is missing from {python.parent.parent}: run `make setup`")
    port = free_port()
    server = Path(__file__).parent / "support" / "fakesnow_server.py"
    proc = _serve([str(python), str(server), "--server", "--host", "127.0.0.1", "--port", str(port)],
                  f"http://127.0.0.1:{port}", "/", "fakesnow's server")
    yield port
    proc.terminate()
    proc.wait(timeout=30)


def fakesnow_settings(port: int, database: str) -> dict[str, str]:
    """The SNOWFLAKE_* settings a user sets for their own account, for the stand-in's ``database``."""
    return {
        "SNOWFLAKE_ACCOUNT": "fakesnow", "SNOWFLAKE_USER": "loader",
        "SNOWFLAKE_PASSWORD": "test", "SNOWFLAKE_WAREHOUSE": "transforming",
        "SNOWFLAKE_ROLE": "transformer", "SNOWFLAKE_HOST": "127.0.0.1",
        "SNOWFLAKE_PORT": str(port), "SNOWFLAKE_PROTOCOL": "http",
        "SNOWFLAKE_DATABASE": database,
        # A statement the stand-in cannot run answers 500, which the connector retries.
        "SNOWFLAKE_NETWORK_TIMEOUT": "30",
    }


@pytest.fixture
def snowflake_warehouse(snowflake_server, monkeypatch):
    """A fresh database on the Snowflake stand-in, selected through WAREHOUSE=snowflake and the
    SNOWFLAKE_* settings a user sets for their own account. Yields a connection to it."""
    import snowflake.connector

    settings = fakesnow_settings(snowflake_server, f"TEST_{uuid.uuid4().hex[:12].upper()}")
    connect = {**FAKESNOW_ADMIN, "port": snowflake_server}
    admin = snowflake.connector.connect(**connect)
    admin.cursor().execute(f"create database {settings['SNOWFLAKE_DATABASE']}")
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("WAREHOUSE", "snowflake")
    conn = snowflake.connector.connect(**connect, database=settings["SNOWFLAKE_DATABASE"])
    yield conn
    conn.close()
    admin.close()  # fakesnow has no DROP DATABASE: its databases end with the server


@pytest.fixture
def simulator(monkeypatch):
    """Start activity API simulators (support.SIM, with overrides) that the settings point at."""
    from support import SIM

    from mage_project.sources.activity_simulator import ActivitySimulator

    def start(**overrides):
        sim = ActivitySimulator(token="t0ken", **{**SIM, **overrides})
        sim.__enter__()
        started.append(sim)
        monkeypatch.setenv("ACTIVITY_API_URL", sim.url)
        monkeypatch.setenv("ACTIVITY_API_TOKEN", "t0ken")
        monkeypatch.setenv("ACTIVITY_API_PAGE_SIZE", "250")
        return sim

    started = []
    yield start
    for sim in started:
        sim.__exit__(None, None, None)


def query(conn, statement: str, params=None) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(statement, params)
        return cur.fetchall()


def run_cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m mage_project ARGS`` in a child process with the test's environment."""
    return subprocess.run(
        [sys.executable, "-m", "mage_project", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
