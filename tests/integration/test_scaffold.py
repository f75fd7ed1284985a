"""python -m mage_project new-product, in a copy of the project (a git repository of its own):
what it writes passes check, its own tests and the project's unit tests pass, and its pipeline
runs through Mage on the embedded defaults, publishing by write-audit-publish; a name already
taken is refused, exit 2, nothing touched."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from conftest import query
from support import run_log

from mage_project import contracts

ROOT = Path(__file__).resolve().parents[2]
MARTS_YAML = "dbt/warehouse/models/marts/_marts.yml"
WRITTEN = ["contracts/product/activity_events.yaml", "dbt/warehouse/models/marts/activity_events.sql",
           "pipelines/activity_events/metadata.yaml",
           "pipelines/activity_events/triggers.yaml", "data_loaders/build_dbt_activity_events.py",
           "tests/unit/test_activity_events_product.py"]

# The unit tests that read the project's products, contracts, pipelines or layout.
PROJECT_READING_TESTS = ["ci_templates", "cli", "config", "contracts", "imports", "lint",
                         "pipeline_metadata", "policy", "project_integrity", "transform"]


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
    """The project as a domain team's clone of it holds it: every file git tracks or would (the
    working tree's, so a change not yet committed is tested too)."""
    root = tmp_path_factory.mktemp("scaffold") / "project"
    listed = git(ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():  # not one deleted in the working tree
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, root / name)
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
    assert "dbt_build_passed passed" in run_log(result.stdout)


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
            (("Product", "x"),
             "error: domain 'Product' is not a lower-case name ([a-z][a-z0-9_]*, at most 63 characters)\n"),
            (("product", "x" * 64),
             f"error: name {'x' * 64!r} is not a lower-case name ([a-z][a-z0-9_]*, at most 63 characters)\n"),
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


def test_a_build_that_breaks_the_contract_is_not_published_and_the_previous_mart_stays(
        project, generated, warehouse):
    """The product's pipeline publishes by write-audit-publish: a build that breaks the contract
    stays in marts__audit, the published mart keeps the previous build, and every check is in
    ops.quality_results under the product's pipeline."""
    assert cli(project, "run", "activity_events").returncode == 0  # migrations; an empty mart
    with warehouse.cursor() as cur:
        cur.execute("insert into raw.user_activity (event_id, user_id, event_type, occurred_at,"
                    " amount, _run_id, _source_file) values ('e1', 7, 'purchase',"
                    " '2026-12-01 10:00:00+00', 12.50, 'test', 'test')")
    assert cli(project, "run", "activity_events").returncode == 0
    published = "select event_id, user_id, event_type, amount from marts.activity_events"
    assert query(warehouse, published) == [("e1", 7, "purchase", Decimal("12.50"))]

    path = project / WRITTEN[0]
    text = path.read_text()
    assert text.count("- name: event_type\n") == 1
    path.write_text(text.replace("- name: event_type\n", "- name: event_kind\n"))
    try:
        result = cli(project, "run", "activity_events")
    finally:
        path.write_text(text)
    assert result.returncode == 1, result.stderr[-4000:]
    [line] = [line for line in result.stderr.splitlines() if line.startswith("activity_events run ")]
    assert line.endswith(
        " failed: QualityGateFailed: not publishing the marts: they break their contracts: "
        "product/activity_events marts.activity_events: schema: column event_kind is missing "
        "(renamed or removed?); column event_type is not in the contract")
    assert query(warehouse, published) == [("e1", 7, "purchase", Decimal("12.50"))]
    assert query(warehouse, "select count(*) from marts__audit.activity_events") == [(1,)]
    assert query(warehouse, "select pipeline, check_kind, check_name, table_name, count(*)"
                            " from ops.quality_results where passed = false"
                            " group by 1, 2, 3, 4") == [
        ("activity_events", "contract", "contract_schema", "marts.activity_events", 1)]
    assert query(warehouse, "select status, count(*) from ops.pipeline_runs"
                            " where pipeline = 'activity_events' group by 1 order by 1") == [
        ("failed", 1), ("success", 2)]


def test_a_products_build_leaves_the_views_on_what_it_rebuilt_in_place(project, generated, warehouse):
    """customer_signups is built from stg_crm__customers, which int_campaign_signups__daily (a
    view of warehouse_elt's) reads: rebuilding the staging view drops the views on it (cascade),
    so the product's build builds them again."""
    first = cli(project, "run", "customer_signups")  # the migrations, and the mart
    assert first.returncode == 0, first.stderr[-6000:]
    built = cli(project, "dbt", "run", "--select", "path:models/staging path:models/intermediate")
    assert built.returncode == 0, built.stdout[-3000:]
    view = "select to_regclass('intermediate.int_campaign_signups__daily') is not null"
    assert query(warehouse, view) == [(True,)]
    result = cli(project, "run", "customer_signups")
    assert result.returncode == 0, result.stderr[-4000:]
    assert query(warehouse, view) == [(True,)]
    assert query(warehouse, "select count(*) from marts.customer_signups") == [(0,)]


def test_the_projects_unit_tests_pass_with_the_new_products(project, generated):
    """Nothing in the project's own tests holds it to today's products only: with the two
    products new-product wrote beside them, each unit test that reads the project (project
    integrity, the contracts, the catalogue, check and its rules) passes in the copy. Those of
    the library's logic alone do not change with the products; the suite runs them once."""
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
                             *(f"tests/unit/test_{name}.py" for name in PROJECT_READING_TESTS)],
                            cwd=project, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:]
    assert [p.key for p in contracts.load_products(project)] == [
        "finance/revenue", "growth/customer_signups", "marketing/campaign_performance",
        "platform/file_drops", "product/activity_events", "product/user_activity"]
