"""The Mage project hangs together: blocks exist and import, graphs are consistent, schedules
have an owner, an SLA and alerting, and every setting is documented."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = {"data_loader": "data_loaders", "transformer": "transformers",
           "data_exporter": "data_exporters", "callback": "callbacks", "sensor": "sensors"}
PIPELINES = sorted(p.parent.name for p in (ROOT / "pipelines").glob("*/metadata.yaml"))


def pipeline(name: str) -> dict:
    return yaml.safe_load((ROOT / "pipelines" / name / "metadata.yaml").read_text())


def test_there_are_pipelines():
    assert PIPELINES == ["user_activity_ingest", "warehouse_elt"]


@pytest.mark.parametrize("name", PIPELINES)
def test_every_block_file_exists_imports_and_has_tests(name):
    meta = pipeline(name)
    assert meta["uuid"] == name
    for block in meta["blocks"] + meta.get("callbacks", []):
        path = ROOT / FOLDERS[block["type"]] / f"{block['uuid']}.py"
        assert path.is_file(), path
        spec = importlib.util.spec_from_file_location(f"block_{block['uuid']}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        assert hasattr(module, block["uuid"]), f"{path} defines no function {block['uuid']}"
        if block["type"] not in ("callback", "sensor"):
            tests = [n for n in vars(module) if n.startswith("test_")]
            assert tests, f"{path} has no @test"
            assert "checks." in path.read_text(), f"{path}'s tests call no named check"


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
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"mage-web", "mage-scheduler", "mage-db", "warehouse"} <= set(services)
    for name in ("mage-web", "mage-scheduler"):
        command = services[name]["command"]
        assert command[:2] == ["mage", "start"] and "/home/src/project" in command
    assert services["mage-scheduler"]["command"][-1] == "scheduler"
    variables = set(re.findall(r"\$\{([A-Z_]+)", (ROOT / "docker-compose.yml").read_text()))
    assert variables - documented_settings() == set()
    for service in services.values():
        for volume in service.get("volumes", []):
            assert volume.split(":")[0] in compose["volumes"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "-r requirements.txt" in dockerfile
