"""What the deployment's tests read: docker-compose.yml, monitoring/ and the PromQL in dashboards."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "monitoring"
DASHBOARDS = MONITORING / "grafana" / "dashboards"
CONTAINER_PROJECT = "/home/src/project"  # the Dockerfile's WORKDIR, where the image holds the repo
# How the stack starts Mage: its command line with the project's fix to its queue installed.
MAGE = ["python", "-m", "mage_project.mage_cli"]
# Where the postgres image finds the scripts it runs at its first initialisation (an empty volume).
INITDB = "/docker-entrypoint-initdb.d"


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<kind>:[-?])(?P<word>[^}]*))?\}")


class MissingSetting(ValueError):
    """What ``docker compose`` stops with when a ``${VAR:?message}`` is unset or empty."""


def interpolate(value: str, settings: dict[str, str]) -> str:
    """``value`` as docker compose interpolates it from ``settings`` (the .env): ``${VAR}``,
    ``${VAR:-default}`` (unset or empty: the default) and ``${VAR:?message}`` (unset or empty:
    compose refuses to start, with the message)."""
    def one(match: re.Match) -> str:
        found = settings.get(match["name"]) or ""
        if match["kind"] == ":?" and not found:
            raise MissingSetting(f"required variable {match['name']} is missing a value: {match['word']}")
        return found or (match["word"] if match["kind"] == ":-" else "")

    return _VARIABLE.sub(one, value)


def option(command: list[str], name: str) -> str:
    """The value after ``name`` in a command line (``--port`` -> ``6789``)."""
    assert name in command, f"{command} has no {name}"
    return command[command.index(name) + 1]


def bind_mounts(service: dict) -> dict[str, Path]:
    """Container path -> repo path of a service's bind mounts (short syntax, relative sources)."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts[target] = (ROOT / source).resolve()
    return mounts


def host_path(service: dict, container_path: str) -> Path:
    """The repo path a service's bind mounts show at ``container_path`` (a mount, or a path in one)."""
    for target, source in bind_mounts(service).items():
        if container_path == target or container_path.startswith(f"{target.rstrip('/')}/"):
            return source / container_path[len(target):].lstrip("/")
    raise AssertionError(f"no bind mount of the service holds {container_path}")


def dashboards() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def panels(dashboard: dict) -> list[dict]:
    """Every panel, the ones inside collapsed rows included; rows themselves query nothing."""
    found = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            found += panel.get("panels", [])
        else:
            found.append(panel)
    return found


_NOT_METRICS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
                "and", "or", "unless", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: not functions, labels, keywords or numbers."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", " ", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # range and subquery windows
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    # Atomic match of a whole identifier, then "not a function call"; not the tail of a number.
    names = re.findall(r"(?<![\w.])[a-zA-Z_:][a-zA-Z0-9_:]*+(?!\s*\()", expr)
    return set(names) - _NOT_METRICS


def jobs(expr: str) -> set[str]:
    """The Prometheus jobs an expression's ``job="..."`` or ``job=~"a|b"`` matchers name."""
    return {job for value in re.findall(r'\bjob=~?"([^"]*)"', expr) for job in value.split("|")}


def dashboard_metrics_by_job() -> dict[str, set[str]]:
    """Job -> the metric names the dashboards query from it."""
    wanted: dict[str, set[str]] = {}
    for dashboard in dashboards().values():
        for panel in panels(dashboard):
            for target in panel["targets"]:
                for job in jobs(target["expr"]):
                    wanted.setdefault(job, set()).update(metric_names(target["expr"]))
    return wanted
