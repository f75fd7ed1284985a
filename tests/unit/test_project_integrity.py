"""The Mage project hangs together: blocks exist and import, graphs are consistent, schedules
have an owner, an SLA and alerting, and every setting is documented."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from deployment import (
    CONTAINER_PROJECT,
    INITDB,
    MAGE,
    MissingSetting,
    compose,
    host_path,
    interpolate,
    option,
)

from mage_project import cli, config
from mage_project.lineage import emitter
from mage_project.lineage import hub as lineage_hub

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = {"data_loader": "data_loaders", "transformer": "transformers",
           "data_exporter": "data_exporters", "callback": "callbacks", "sensor": "sensors",
           "conditional": "conditionals"}
PIPELINES = sorted(p.parent.name for p in (ROOT / "pipelines").glob("*/metadata.yaml"))


def pipeline(name: str) -> dict:
    return yaml.safe_load((ROOT / "pipelines" / name / "metadata.yaml").read_text())


def test_there_are_pipelines():
    # At least the project's own; a product new-product writes brings its pipeline.
    assert {"user_activity_ingest", "warehouse_elt"} <= set(PIPELINES)


@pytest.mark.parametrize("name", PIPELINES)
def test_every_block_file_exists_imports_and_has_tests(name):
    meta = pipeline(name)
    assert meta["uuid"] == name
    for block in meta["blocks"] + meta.get("callbacks", []) + meta.get("conditionals", []):
        if block["type"] == "dbt":
            continue  # test_dbt_blocks_run_the_projects_dbt_project
        path = ROOT / FOLDERS[block["type"]] / f"{block['uuid']}.py"
        assert path.is_file(), path
        spec = importlib.util.spec_from_file_location(f"block_{block['uuid']}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        assert hasattr(module, block["uuid"]), f"{path} defines no function {block['uuid']}"
        if block["type"] not in ("callback", "sensor", "conditional"):
            tests = [n for n in vars(module) if n.startswith("test_")]
            assert tests, f"{path} has no @test"
            assert "checks." in path.read_text(), f"{path}'s tests call no named check"


def test_dbt_blocks_run_the_projects_dbt_project():
    blocks = [b for name in PIPELINES for b in pipeline(name)["blocks"] if b["type"] == "dbt"]
    assert [b["uuid"] for b in blocks] == ["build_dbt_warehouse"]
    for block in blocks:
        conf = block["configuration"]
        assert (block["language"], conf["dbt"]["command"]) == ("yaml", "build")
        assert (ROOT / conf["dbt_project_name"] / "dbt_project.yml").is_file()
        assert conf["file_source"] == {"path": conf["file_path"], "project_path": conf["dbt_project_name"]}
        content = (ROOT / conf["file_path"]).read_text()
        # Its arguments are the ones its upstream block planned for this run.
        assert re.fullmatch(r"\{\{ block_output\('(\w+)', parse=.*\) \}\}\n", content)
        assert re.match(r"\{\{ block_output\('(\w+)'", content)[1] in block["upstream_blocks"]


def test_dbt_sources_of_mage_blocks_are_committed_as_mage_writes_them():
    """Mage writes models/mage_sources.yml (a source per Python block upstream of a dbt block)
    when the editor saves a pipeline: committed in that form, git status stays clean."""
    sources = yaml.safe_load((ROOT / "dbt" / "warehouse" / "models" / "mage_sources.yml").read_text())
    (source,) = sources["sources"]
    assert (source["name"], source["schema"]) == ("mage_warehouse", "analytics")
    blocks = {b["uuid"]: b for name in PIPELINES for b in pipeline(name)["blocks"]}
    upstream_of_dbt = {u for b in blocks.values() if b["type"] == "dbt" for u in b["upstream_blocks"]}
    assert {t["meta"]["block_uuid"] for t in source["tables"]} == upstream_of_dbt


@pytest.mark.parametrize("name", PIPELINES)
def test_graph_is_consistent(name):
    blocks = {b["uuid"]: b for b in pipeline(name)["blocks"]}
    for uuid, block in blocks.items():
        for up in block["upstream_blocks"]:
            assert uuid in blocks[up]["downstream_blocks"]
        for down in block["downstream_blocks"]:
            assert uuid in blocks[down]["upstream_blocks"]
    callbacks = pipeline(name).get("callbacks", [])
    assert {u for c in callbacks for u in c["upstream_blocks"]} == set(blocks), (
        "every block records its failure through the callback"
    )


@pytest.mark.parametrize("name", PIPELINES)
def test_scheduled_triggers_have_an_owner_an_sla_and_alerting(name):
    triggers = yaml.safe_load((ROOT / "pipelines" / name / "triggers.yaml").read_text())
    assert triggers["triggers"]
    for trigger in triggers["triggers"]:
        assert trigger["sla"] > 0
        assert trigger["settings"]["skip_if_previous_running"] is True
    assert any(tag.startswith("owner:") for tag in pipeline(name)["tags"])
    notifications = yaml.safe_load((ROOT / "metadata.yaml").read_text())["notification_config"]
    assert {"trigger_failure", "trigger_passed_sla"} <= set(notifications["alert_on"])
    assert "ALERT_EMAIL_TO" in notifications["email_config"]["to_emails"][0]


def documented_settings() -> set[str]:
    return set(re.findall(r"^# ([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))


def test_every_setting_the_library_reads_is_documented():
    used = set()
    for path in (ROOT / "mage_project").rglob("*.py"):
        used |= set(re.findall(r'(?:_get|require|_number|_flag)\(\s*"([A-Z][A-Z0-9_]+)"',
                               path.read_text()))
    assert used, "no settings found: the pattern is stale"
    assert used - documented_settings() == set()


def test_config_files_name_only_environment_variables():
    for name in ("io_config.yaml", "metadata.yaml", "docker-compose.yml"):
        text = (ROOT / name).read_text()
        for line in text.splitlines():
            if re.search(r"(PASSWORD|SECRET|TOKEN)\w*:\s*\S", line, re.I):
                assert "env_var(" in line or "${" in line, f"{name}: {line.strip()}"


def test_docker_compose_refers_to_what_exists():
    stack = compose()
    services = stack["services"]
    assert set(services) == {"mage-web", "mage-scheduler", "lineage-hub", "mage-db", "warehouse",
                             "prometheus", "grafana"}
    # The image holds the repo in its WORKDIR; both Mage services start that project.
    assert f"WORKDIR {CONTAINER_PROJECT}\n" in (ROOT / "Dockerfile").read_text()
    for name, instance_type in (("mage-web", "web_server"), ("mage-scheduler", "scheduler")):
        command = services[name]["command"]
        assert command[:5] == [*MAGE, "start", CONTAINER_PROJECT], command
        assert option(command, "--instance-type") == instance_type
        assert services[name]["build"] == "." and services[name]["env_file"] == ".env"
        assert services[name]["environment"]["REQUIRE_USER_AUTHENTICATION"] == "1"
        port = option(command, "--port")
        assert f"http://127.0.0.1:{port}/api/status" in " ".join(services[name]["healthcheck"]["test"])
    variables = set(re.findall(r"\$\{([A-Z_]+)", (ROOT / "docker-compose.yml").read_text()))
    assert variables - documented_settings() == set()
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which is not in the repo"
            else:
                assert source in stack["volumes"], f"{name}: volume {source} is not declared"
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        for dependency, condition in service.get("depends_on", {}).items():
            # Healthy, but for the lineage hub, which no run needs (test_the_mage_services_report_...).
            wanted = "service_started" if dependency == "lineage-hub" else "service_healthy"
            assert condition == {"condition": wanted}, f"{name} -> {dependency}"
            assert "healthcheck" in services[dependency]
        for published in service.get("ports", []):
            assert published.startswith("127.0.0.1:"), f"{name} publishes {published} beyond 127.0.0.1"
        if "image" in service:
            tag = service["image"].rpartition(":")[2]
            assert re.fullmatch(r"v?\d+\.\d+(\.\d+)?(-\w+)?", tag), f"{name}: pin {service['image']}"


CREDENTIALS = ("DEFAULT_OWNER_EMAIL", "DEFAULT_OWNER_PASSWORD", "JWT_SECRET")
# Sign-in, no terminal, no pipeline or block edited in place; each user's Mage role decides the rest.
# REQUIRE_USER_PERMISSIONS is pinned off: in mage-ai 0.9.80, beside DISABLE_NOTEBOOK_EDIT_ACCESS it
# refuses the owner everything (tests/e2e/test_deployment.py shows what each user may do).
LOCKED_DOWN = {"REQUIRE_USER_AUTHENTICATION": "1", "REQUIRE_USER_PERMISSIONS": "0", "DISABLE_TERMINAL": "1",
               "DISABLE_NOTEBOOK_EDIT_ACCESS": "2"}


@pytest.mark.parametrize("name", ["mage-web", "mage-scheduler"])
@pytest.mark.parametrize("missing", CREDENTIALS)
def test_the_stack_refuses_to_start_without_each_credential(name, missing):
    """docker compose's ``${VAR:?message}``: no credential falls back to a default (Mage's
    admin@admin.com / admin, its public JWT constant)."""
    environment = compose()["services"][name]["environment"]
    dotenv = {setting: "set" for setting in CREDENTIALS if setting != missing}
    refusal = f"required variable {missing} is missing a value: set {missing} in .env"
    with pytest.raises(MissingSetting, match=refusal):
        interpolate(environment[missing], dotenv)


@pytest.mark.parametrize("name", ["mage-web", "mage-scheduler"])
def test_the_shared_editor_is_locked_down(name):
    environment = compose()["services"][name]["environment"]
    given = {setting: f"the {setting}" for setting in CREDENTIALS}
    interpolated = {k: interpolate(environment[k], given) for k in (*CREDENTIALS, *LOCKED_DOWN)}
    assert interpolated == {**given, **LOCKED_DOWN}
    text = (ROOT / "docker-compose.yml").read_text()
    defaulted = re.findall(r"\$\{([A-Z_]*(?:PASSWORD|SECRET|TOKEN|KEY)[A-Z_]*):-", text)
    assert defaulted == [], f"credentials with a default: {defaulted}"


# The warehouse's superuser's and each project login's (docker-compose.yml, deploy/warehouse-init/).
WAREHOUSE_PASSWORDS = ("POSTGRES_PASSWORD", "POSTGRES_LOADER_PASSWORD", "POSTGRES_TRANSFORMER_PASSWORD",
                       "POSTGRES_ANALYST_PASSWORD")
HUB_KEY = "LINEAGE_HUB_API_KEY"  # what the lineage hub requires, and the Mage services send it
EVERY_PASSWORD = (*CREDENTIALS, "MAGE_DB_PASSWORD", *WAREHOUSE_PASSWORDS, HUB_KEY)


def interpolated_environment(name: str, dotenv: dict[str, str]) -> dict[str, str]:
    return {k: interpolate(str(v), dotenv) for k, v in compose()["services"][name]["environment"].items()}


@pytest.mark.parametrize("name", ["mage-web", "mage-scheduler", "warehouse"])
@pytest.mark.parametrize("missing", WAREHOUSE_PASSWORDS)
def test_the_stack_refuses_to_start_without_each_warehouse_password(name, missing):
    dotenv = {setting: "set" for setting in EVERY_PASSWORD if setting != missing}
    refusal = f"required variable {missing} is missing a value: set {missing} in .env"
    with pytest.raises(MissingSetting, match=refusal):
        interpolated_environment(name, dotenv)


@pytest.mark.parametrize("name", ["mage-web", "mage-scheduler"])
def test_the_services_log_in_as_the_logins_the_warehouse_creates(name):
    """Only the migrations run as the warehouse container's superuser; each other connection as
    the login of its role, which the warehouse's init script creates from the same settings."""
    dotenv = {setting: f"the {setting}" for setting in EVERY_PASSWORD}  # the logins' defaults
    warehouse = interpolated_environment("warehouse", dotenv)
    mage = interpolated_environment(name, dotenv)
    superuser = (warehouse["POSTGRES_USER"], warehouse["POSTGRES_PASSWORD"])
    assert superuser == ("loader", "the POSTGRES_PASSWORD")
    assert (mage["POSTGRES_OWNER_USER"], mage["POSTGRES_OWNER_PASSWORD"]) == superuser
    logins = {role: (mage[f"POSTGRES_{role}_USER"], mage[f"POSTGRES_{role}_PASSWORD"])
              for role in ("LOADER", "TRANSFORMER", "ANALYST")}
    assert logins == {
        "LOADER": ("etl_loader", "the POSTGRES_LOADER_PASSWORD"),
        "TRANSFORMER": ("etl_dbt", "the POSTGRES_TRANSFORMER_PASSWORD"),
        "ANALYST": ("analyst", "the POSTGRES_ANALYST_PASSWORD"),
    }
    assert logins == {role: (warehouse[f"POSTGRES_{role}_USER"], warehouse[f"POSTGRES_{role}_PASSWORD"])
                      for role in logins}
    # io_config.yaml's login, Mage's SQL blocks': the analyst's, not the superuser.
    assert (mage["POSTGRES_USER"], mage["POSTGRES_PASSWORD"]) == logins["ANALYST"]


HUB = "lineage-hub"


def test_the_lineage_hub_serves_the_projects_image_on_the_port_it_publishes_and_checks():
    """The project's own command, on every address of the container, its port published on the
    host's 127.0.0.1 only, and its healthcheck asking /healthz of that port."""
    services = compose()["services"]
    hub = services[HUB]
    assert hub["build"] == services["mage-web"]["build"] == "."
    command = hub["command"]
    assert command[:3] == ["python", "-m", "mage_project"], command
    args = cli.build_parser().parse_args(command[3:])
    assert (args.command, args.action, args.host, args.port) == ("lineage", "serve", "0.0.0.0", 5000)
    assert hub["ports"] == ["127.0.0.1:5000:5000"]
    kind, program, flag, code = hub["healthcheck"]["test"]
    assert (kind, program, flag) == ("CMD", "python", "-c")
    assert re.findall(r"'(https?://[^']*)'", code) == [f"http://127.0.0.1:{args.port}{lineage_hub.HEALTH}"]
    assert hub["depends_on"] == {"warehouse": {"condition": "service_healthy"}}
    assert hub["restart"] == services["mage-web"]["restart"] == "unless-stopped"
    # compose's default stop: SIGTERM, which the hub stops on (tests/e2e/test_deployment.py).
    assert "stop_signal" not in hub and "stop_signal" not in services["mage-web"]


@pytest.mark.parametrize("name", [HUB, "mage-web", "mage-scheduler"])
def test_the_stack_refuses_to_start_without_the_lineage_hubs_key(name):
    dotenv = {setting: "set" for setting in EVERY_PASSWORD if setting != HUB_KEY}
    refusal = (f"required variable {HUB_KEY} is missing a value: set {HUB_KEY} in .env to a long random"
               " value")
    with pytest.raises(MissingSetting, match=re.escape(refusal)):
        interpolated_environment(name, dotenv)


def environment_of(name: str, dotenv: dict[str, str], monkeypatch) -> None:
    """The process environment compose gives the service, and nothing of this shell's settings."""
    for setting in os.environ:
        if setting.startswith(("POSTGRES_", "OPENLINEAGE_", "LINEAGE_", "PROJECT_DATA_DIR")):
            monkeypatch.delenv(setting)
    for setting, value in interpolated_environment(name, dotenv).items():
        monkeypatch.setenv(setting, value)


@pytest.mark.parametrize("missing", ["POSTGRES_PASSWORD", "POSTGRES_LOADER_PASSWORD"])
def test_the_lineage_hub_refuses_to_start_without_its_warehouse_logins_password(missing):
    dotenv = {setting: "set" for setting in EVERY_PASSWORD if setting != missing}
    with pytest.raises(MissingSetting, match=f"required variable {missing} is missing a value"):
        interpolated_environment(HUB, dotenv)


def test_the_lineage_hub_writes_as_the_loaders_login_and_migrates_as_the_superuser(monkeypatch):
    """The loader writes ops (the events); the migrations, which give a new warehouse the events'
    table, run as the warehouse's superuser. No other login, nothing else of .env."""
    dotenv = {setting: f"the {setting}" for setting in EVERY_PASSWORD}
    warehouse = interpolated_environment("warehouse", dotenv)
    assert interpolated_environment(HUB, dotenv) == {
        "POSTGRES_HOST": "warehouse",
        "POSTGRES_PORT": "5432",
        "POSTGRES_DBNAME": warehouse["POSTGRES_DB"],
        "POSTGRES_OWNER_USER": warehouse["POSTGRES_USER"],
        "POSTGRES_OWNER_PASSWORD": warehouse["POSTGRES_PASSWORD"],
        "POSTGRES_LOADER_USER": warehouse["POSTGRES_LOADER_USER"],
        "POSTGRES_LOADER_PASSWORD": warehouse["POSTGRES_LOADER_PASSWORD"],
        HUB_KEY: f"the {HUB_KEY}",
    }
    assert "env_file" not in compose()["services"][HUB]
    environment_of(HUB, dotenv, monkeypatch)
    logins = {role: (s.host, s.port, s.dbname, s.user, s.password)
              for role in (config.OWNER, config.LOADER) for s in [config.postgres(role)]}
    assert logins == {
        config.OWNER: ("warehouse", 5432, "warehouse", "loader", "the POSTGRES_PASSWORD"),
        config.LOADER: ("warehouse", 5432, "warehouse", "etl_loader", "the POSTGRES_LOADER_PASSWORD"),
    }
    assert lineage_hub.api_key() == f"the {HUB_KEY}"


@pytest.mark.parametrize("name", ["mage-web", "mage-scheduler"])
def test_the_mage_services_report_their_lineage_to_the_hub_with_its_key(name, monkeypatch):
    """Their runs post each event to the hub's endpoint with the key the hub requires. They depend
    on it started, not healthy: a run does not need it (the outbox keeps what it did not take)."""
    services = compose()["services"]
    dotenv = {setting: f"the {setting}" for setting in EVERY_PASSWORD}
    mage = interpolated_environment(name, dotenv)
    port = option(services[HUB]["command"], "--port")
    assert (mage["OPENLINEAGE_URL"], mage["OPENLINEAGE_API_KEY"]) == (
        f"http://{HUB}:{port}", f"the {HUB_KEY}")
    assert interpolated_environment(HUB, dotenv)[HUB_KEY] == mage["OPENLINEAGE_API_KEY"]
    assert services[name]["depends_on"][HUB] == {"condition": "service_started"}
    environment_of(name, dotenv, monkeypatch)
    settings = config.lineage()
    _files, outbox = emitter.transport_config(settings)["transports"]
    assert (outbox["url"], f"/{outbox['endpoint']}", outbox["auth"]) == (
        "http://lineage-hub:5000", lineage_hub.ENDPOINT, {"type": "api_key", "apiKey": f"the {HUB_KEY}"})
    assert settings.enabled and settings.namespace == "mage_project"


def test_the_warehouse_mounts_its_init_script_and_the_projects_roles():
    warehouse = compose()["services"]["warehouse"]
    scripts = sorted(host_path(warehouse, INITDB).iterdir())
    assert scripts == [ROOT / "deploy" / "warehouse-init" / "10-project-roles.sh"]
    (script,) = scripts
    # Executable: the image runs it with its own shell (it sources a script that is not, into its own).
    assert os.access(script, os.X_OK) and script.read_text().startswith("#!/bin/sh\n")
    roles_sql = warehouse["environment"]["PROJECT_ROLES_SQL"]
    assert host_path(warehouse, roles_sql) == ROOT / "mage_project/warehouse/sql/roles/postgres_roles.sql"
    mounts = [v for v in warehouse["volumes"] if v.split(":")[1] in (INITDB, roles_sql)]
    assert len(mounts) == 2 and all(v.endswith(":ro") for v in mounts), mounts
    # The script reads the passwords as psql variables and only its SQL quotes them (:'name').
    text = script.read_text()
    for role in ("loader", "transformer", "analyst"):
        variable = f"POSTGRES_{role.upper()}_PASSWORD"
        assert text.count(f"${variable}") == 1, f"{variable} is used other than as one psql variable"
        assert f'-v {role}_password="${variable}"' in text
        assert f"password :'{role}_password';" in text
    assert "<<'SQL'" in text, "an unquoted here-document would expand $ in the SQL"


def test_the_image_installs_the_lock():
    dockerfile = (ROOT / "Dockerfile").read_text()
    lock = (ROOT / "requirements.txt").read_text()
    python = re.search(r"^FROM python:(\d+\.\d+)\.\d+-", dockerfile, re.M)
    assert python and f"--python-version {python[1]} requirements.in" in lock, "other Python than the lock"
    uv = re.search(r"uv==([\d.]+)", dockerfile)
    assert uv and f"uv=={uv[1]}" in (ROOT / "requirements-dev.txt").read_text(), "other uv than the dev lock"
    install = dockerfile.index("-r requirements.txt")
    assert dockerfile.index("COPY requirements.txt") < install < dockerfile.index("--no-deps -e .")


def distributions_by_file() -> dict[str, set[str]]:
    """Installed file (``opentelemetry/sdk/__init__.py``) -> the distributions that ship it."""
    owners: dict[str, set[str]] = {}
    for dist in metadata.distributions():
        name = canonical(dist.metadata["Name"])
        for file in dist.files or []:
            owners.setdefault(str(file), set()).add(name)
    return owners


def canonical(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def test_the_lock_has_what_mages_metrics_import():
    """compose sets ENABLE_PROMETHEUS; mage-ai does not require what Mage then imports."""
    assert compose()["services"]["mage-web"]["environment"]["ENABLE_PROMETHEUS"] == "1"
    server = Path(metadata.distribution("mage-ai").locate_file("mage_ai/server/server.py"))
    imported = {"prometheus_client"}  # by its /metrics handler
    for node in ast.walk(ast.parse(server.read_text())):
        if isinstance(node, ast.If) and "ENABLE_PROMETHEUS" in ast.dump(node.test):
            imported |= {f"{n.module}.{alias.name}" for n in ast.walk(node)
                         if isinstance(n, ast.ImportFrom) for alias in n.names}
    assert "opentelemetry.exporter.prometheus.PrometheusMetricReader" in imported, "Mage's source changed"
    lock = (ROOT / "requirements.txt").read_text()
    pinned = {canonical(m[1]) for m in re.finditer(r"^([\w.-]+)==", lock, re.M)}
    shipped = distributions_by_file()
    for name in sorted(imported):
        parts, owners = name.split("."), set()
        while parts and not owners:  # the module itself, else the module the name is in
            path = "/".join(parts)
            owners = shipped.get(f"{path}/__init__.py", set()) | shipped.get(f"{path}.py", set())
            parts.pop()
        assert owners & pinned, f"{name} (from {owners or 'nothing installed'}) is not in requirements.txt"
