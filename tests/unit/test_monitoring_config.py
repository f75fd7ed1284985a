"""monitoring/ hangs together with docker-compose.yml: Prometheus scrapes the Mage services where
they listen, Grafana's datasource is that Prometheus, and every dashboard panel queries it.

Prometheus and Grafana do not run here (no Docker engine, no binaries): tests/e2e/test_deployment.py
checks against a real scrape of Mage that the metrics these panels query exist.
"""

from __future__ import annotations

import pytest
import yaml
from deployment import (
    DASHBOARDS,
    MONITORING,
    bind_mounts,
    compose,
    dashboards,
    jobs,
    metric_names,
    option,
    panels,
)

PROVISIONING = MONITORING / "grafana" / "provisioning"


def load(path) -> dict:
    return yaml.safe_load(path.read_text())


def prometheus_config() -> dict:
    return load(MONITORING / "prometheus.yml")


def datasource() -> dict:
    (source,) = load(PROVISIONING / "datasources" / "prometheus.yml")["datasources"]
    return source


def container_port(service: dict) -> str:
    """The container side of the service's one published port ("127.0.0.1:9090:9090" -> "9090")."""
    (published,) = service["ports"]
    assert published.startswith("127.0.0.1:"), f"{published} is not bound to 127.0.0.1"
    return published.rsplit(":", 1)[1]


def test_prometheus_scrapes_each_mage_service_where_it_listens():
    services = compose()["services"]
    scrape = {job["job_name"]: job for job in prometheus_config()["scrape_configs"]}
    assert set(scrape) == {"mage-web", "mage-scheduler"}
    for name, job in scrape.items():
        command = services[name]["command"]
        assert job["metrics_path"] == "/metrics"
        assert job["static_configs"] == [{"targets": [f"{name}:{option(command, '--port')}"]}]
        assert option(command, "--host") == "0.0.0.0", f"{name} must listen beyond its own loopback"
        assert services[name]["environment"]["ENABLE_PROMETHEUS"] == "1", f"{name} serves no /metrics"


def test_prometheus_reads_the_mounted_config_and_keeps_its_data_in_a_named_volume():
    service = compose()["services"]["prometheus"]
    flags = dict(arg.removeprefix("--").split("=", 1) for arg in service["command"])
    assert bind_mounts(service)[flags["config.file"]] == MONITORING / "prometheus.yml"
    assert f"prometheus:{flags['storage.tsdb.path']}" in service["volumes"]
    assert "prometheus" in compose()["volumes"]


def test_grafana_datasource_is_the_stacks_prometheus():
    services = compose()["services"]
    source = datasource()
    assert (source["type"], source["uid"], source["access"]) == ("prometheus", "prometheus", "proxy")
    assert source["url"] == f"http://prometheus:{container_port(services['prometheus'])}"
    # Grafana's $__rate_interval must span at least one scrape.
    assert source["jsonData"]["timeInterval"] == prometheus_config()["global"]["scrape_interval"]


def test_grafana_loads_the_dashboards_compose_mounts():
    grafana = compose()["services"]["grafana"]
    mounts = bind_mounts(grafana)
    assert mounts["/etc/grafana/provisioning"] == PROVISIONING
    (provider,) = load(PROVISIONING / "dashboards" / "mage.yml")["providers"]
    assert provider["type"] == "file"
    assert mounts[provider["options"]["path"]] == DASHBOARDS
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    directory, name = home.rsplit("/", 1)
    assert (mounts[directory] / name).is_file(), f"{home} is not a mounted dashboard"


def test_grafana_login_stays_on_with_the_password_from_the_environment():
    environment = compose()["services"]["grafana"]["environment"]
    assert environment["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GF_ADMIN_PASSWORD:?")
    assert environment["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert environment["GF_USERS_ALLOW_SIGN_UP"] == "false"


def test_there_are_dashboards():
    assert list(dashboards()) == ["mage.json"]


@pytest.mark.parametrize("name", list(dashboards()))
def test_every_panel_queries_named_metrics_of_a_scraped_job_on_the_provisioned_datasource(name):
    dashboard = dashboards()[name]
    reference = {"type": datasource()["type"], "uid": datasource()["uid"]}
    scraped_jobs = {job["job_name"] for job in prometheus_config()["scrape_configs"]}
    assert dashboard["uid"] and dashboard["title"]
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids)), f"{name}: panel ids repeat: {ids}"
    for panel in panels(dashboard):
        where = f"{name}, panel {panel['title']!r}"
        assert panel["datasource"] == reference, where
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, f"{where} is wider than the grid"
        assert panel["targets"], f"{where} has no query"
        for target in panel["targets"]:
            expr = target["expr"]
            assert target["datasource"] == reference, where
            assert metric_names(expr), f"{where}: {expr} selects no metric"
            assert jobs(expr) and jobs(expr) <= scraped_jobs, f"{where}: {expr} names no scraped job"


@pytest.mark.parametrize("expr, names", [
    ('sum by (le) (rate(a_bucket{job="x"}[$__rate_interval]))', {"a_bucket"}),
    ('time() - process_start_time_seconds{job=~"x|y"}', {"process_start_time_seconds"}),
    ('sum(increase(a_count{code=~"5.."}[1h])) or vector(0)', {"a_count"}),
    ("histogram_quantile(0.95, sum without (instance) (rate(a_bucket[5m])))", {"a_bucket"}),
    ("rate(a[1m]) / on (job) group_left (name) b offset 5m", {"a", "b"}),
    ("1e3 * up", {"up"}),
])
def test_metric_names_are_read_from_promql(expr, names):
    assert metric_names(expr) == names


def test_jobs_are_read_from_matchers():
    assert jobs('a{job="x"} / b{job=~"x|y", code="5"}') == {"x", "y"}
    assert jobs("a") == set()
