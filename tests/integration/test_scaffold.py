"""python -m mage_project new-product, in a copy of the project (a git repository of its own):
what it writes passes check, its own tests pass and its pipeline runs through Mage on the
embedded defaults; a name already taken is refused, exit 2, nothing touched."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mage_project import contracts

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("contracts", "pipelines", "data_loaders", "transformers", "data_exporters", "sensors",
           "callbacks", "conditionals", "dbt", "mage_project", "tests")
FILES = ("metadata.yaml", "io_config.yaml", ".secrets.baseline", "pyproject.toml", ".env.example",
         ".gitignore")
IGNORED = shutil.ignore_patterns("__pycache__", "target", "logs", "*.pyc")
MARTS_YAML = "dbt/warehouse/models/marts/_marts.yml"
WRITTEN = ["contracts/product/activity_events.yaml", "dbt/warehouse/models/marts/activity_events.sql",
           "pipelines/activity_events/metadata.yaml",
           "pipelines/activity_events/triggers.yaml", "data_loaders/build_dbt_activity_events.py",
           "tests/unit/test_activity_events_product.py"]


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *args],
                          cwd=root, check=True, capture_output=True, text=True).stdout


def cli(root: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m mage_project ARGS`` run in the copy: ``-m`` puts the copy first on sys.path, so
    its own mage_project (and PROJECT_ROOT) is the one that runs."""
    return subprocess.run([sys.executable, "-m", "mage_project", *args], cwd=root, env=dict(os.environ),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scaffold") / "project"
    for name in FOLDERS:
        shutil.copytree(ROOT / name, root / name, ignore=IGNORED)
    for name in FILES:
        shutil.copy(ROOT / name, root / name)
    git(root, "init", "--quiet", "--initial-branch", "main")
    git(root, "add", "--all")
    git(root, "commit", "--quiet", "-m", "the project")
    return root


@pytest.fixture(scope="module")
def generated(project) -> subprocess.CompletedProcess:
    return cli(project, "new-product", "product", "activity_events", "--from", "raw.user_activity")


def test_new_product_writes_the_products_files_and_says_which(project, generated):
    assert generated.returncode == 0, generated.stderr
    assert generated.stdout.splitlines() == [
        "new product product/activity_events from raw.user_activity (7 columns: event_id, user_id, "
        "event_type, occurred_at, session_id, page_url, amount)",
        "left out: occurred_date (no contract gives its type), properties (object)",
        *(f"  wrote {path}" for path in WRITTEN),
        f"  added activity_events to {MARTS_YAML}",
        "next: python -m mage_project check; python -m mage_project run activity_events"]
    untracked = git(project, "ls-files", "--others", "--exclude-standard").split()
    assert sorted(untracked) == sorted(WRITTEN)
    assert git(project, "diff", "--name-only").split() == [MARTS_YAML]
    # The entry is appended: every line of the file before it is as it was.
    diff = git(project, "diff", "--unified=0", MARTS_YAML).splitlines()
    assert [line for line in diff if line.startswith("-") and not line.startswith("---")] == []


def test_the_contract_is_the_domains_and_the_mart_is_the_sources_columns(project, generated):
    product = contracts.load_contract(Path(WRITTEN[0]), project)
    assert (product.owner, product.owner_email) == ("product-analytics", "product-analytics@example.com")
    assert [(r.email, r.pagerduty_routing_key_env) for r in product.alert_routes] == [
        ("product-analytics@example.com", "PAGERDUTY_ROUTING_KEY_PRODUCT")]
    assert [t.sla_seconds for t in product.triggers] == [7200]
    [table] = product.tables
    assert [(c.name, c.physical_type, c.required, c.primary_key) for c in table.columns] == [
        ("event_id", "text", True, True), ("user_id", "bigint", True, False),
        ("event_type", "text", True, False), ("occurred_at", "timestamptz", True, False),
        ("session_id", "text", False, False), ("page_url", "text", False, False),
        ("amount", "numeric(18,2)", False, False)]
    sql = (project / WRITTEN[1]).read_text()
    assert "{{ ref('stg_activity__user_activity') }}" in sql
    assert "cast(amount as numeric(18, 2)) as amount" in sql
    [model] = [m for m in yaml.safe_load((project / MARTS_YAML).read_text())["models"]
               if m["name"] == "activity_events"]
    assert all(c["description"] for c in model["columns"])
    assert model["columns"][0]["tests"] == ["not_null", "unique"]
    tags = yaml.safe_load((project / WRITTEN[2]).read_text())["tags"]
    assert tags == ["owner:product-analytics", "domain:product", "product:activity_events"]


def test_check_finds_nothing_in_the_generated_project(project, generated):
    result = cli(project, "check", "--base", "main")
    assert (result.returncode, result.stdout) == (0, ""), result.stdout + result.stderr[-2000:]
    assert result.stderr == "check: 0 error(s), 0 warning(s), 16 rules\n"


def test_the_products_own_tests_pass(project, generated):
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             WRITTEN[-1]], cwd=project, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "3 passed" in result.stdout


def test_the_generated_pipeline_runs_on_the_embedded_defaults(project, generated):
    # PROJECT_DATA_DIR (conftest): a fresh directory, so the run starts its own embedded PostgreSQL.
    result = cli(project, "run", "activity_events")
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.startswith("activity_events run ") and " succeeded in " in result.stdout
    assert "dbt_build_passed passed" in result.stderr


def test_a_name_taken_is_refused_and_nothing_is_touched(project, generated):
    git(project, "add", "--all")
    git(project, "commit", "--quiet", "-m", "the new product")
    before = git(project, "rev-parse", "HEAD:")
    for args, taken in (
            (("product", "activity_events"), "contracts/product/activity_events.yaml"),
            # Product names are unique across domains; a model of that name is taken too.
            (("finance", "activity_events"), "contracts/product/activity_events.yaml"),
            (("finance", "fct_daily_revenue"), "dbt/warehouse/models/marts/fct_daily_revenue.sql"),
            (("product", "warehouse_elt"), "pipelines/warehouse_elt/"),
    ):
        result = cli(project, "new-product", *args)
        assert result.returncode == 2, result.stdout
        assert result.stderr.startswith(f"error: {args[1]} is taken: ")
        assert taken in result.stderr and result.stderr.endswith("nothing was written\n")
    assert git(project, "status", "--porcelain", "--untracked-files=all") == ""
    assert git(project, "rev-parse", "HEAD:") == before


def test_a_bad_name_or_source_is_refused_without_writing(project, generated):
    for args, message in (
            (("Product", "x"), "error: domain 'Product' is not a lower-case name ([a-z][a-z0-9_]*)\n"),
            (("product", "x", "--from", "raw.nothing"),
             "error: --from raw.nothing: no contract declares the table raw.nothing\n"),
            (("product", "x", "--from", "no_model"),
             "error: --from no_model: no dbt model no_model is documented under dbt/warehouse/models\n"),
    ):
        result = cli(project, "new-product", *args)
        assert (result.returncode, result.stderr) == (2, message)
    assert git(project, "status", "--porcelain", "--untracked-files=all") == ""


def test_a_product_of_a_new_domain_from_a_dbt_model_leaves_pii_out_and_passes_check(project, generated):
    result = cli(project, "new-product", "growth", "customer_signups", "--from", "stg_crm__customers")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[:2] == [
        "new product growth/customer_signups from stg_crm__customers (5 columns: customer_id, country, "
        "signup_at, utm_campaign, updated_at)",
        "left out: email (pii), full_name (pii)"]
    product = contracts.load_contract(Path("contracts/growth/customer_signups.yaml"), project)
    assert (product.owner, product.owner_email) == ("growth-data", "growth-data@example.com")
    assert [r.pagerduty_routing_key_env for r in product.alert_routes] == ["PAGERDUTY_ROUTING_KEY_GROWTH"]
    checked = cli(project, "check", "--base", "main")
    assert (checked.returncode, checked.stdout) == (0, ""), checked.stdout + checked.stderr[-2000:]


def test_the_generated_pipeline_fails_when_the_built_mart_breaks_its_contract(project, generated):
    path = project / WRITTEN[0]
    text = path.read_text()
    assert text.count("- name: event_type\n") == 1
    path.write_text(text.replace("- name: event_type\n", "- name: event_kind\n"))
    result = cli(project, "run", "activity_events")
    assert result.returncode == 1, result.stderr[-4000:]
    [line] = [line for line in result.stderr.splitlines() if line.startswith("activity_events run ")]
    assert line.endswith(
        " failed: RuntimeError: activity_events breaks its contract: product/activity_events "
        "marts.activity_events: schema: column event_kind is missing (renamed or removed?); column "
        "event_type is not in the contract")
