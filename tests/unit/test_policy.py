"""python -m mage_project check: the repository is clean, and each rule fires on its defect.

Each rule's test builds a copy of the project's files in tmp_path with one defect, and asserts the
exact finding lines (rule, path, line, message) that rule gives on it: nothing more.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from support import project_copy

from mage_project import policy

ROOT = Path(__file__).resolve().parents[2]
REVENUE = "contracts/finance/revenue.yaml"
FILE_DROPS = "contracts/platform/file_drops.yaml"
DIM_CUSTOMERS = "dbt/warehouse/models/marts/dim_customers.sql"


def test_the_repository_has_no_finding():
    assert [f.text() for f in policy.check(ROOT)] == []


def test_every_rule_has_a_test_that_makes_it_fire():
    tested = {name.rpartition("_")[2].upper() for name in globals()
              if name.startswith("test_") and name.rpartition("_")[2].startswith("dp")}
    assert tested == {rule.id for rule in policy.RULES}
    assert [rule.id for rule in policy.RULES] == [f"DP{n:03d}" for n in range(1, 17)]
    assert {rule.severity for rule in policy.RULES} == {policy.ERROR}


# ---------------------------------------------------------------------------------------------
# The project copies.

@pytest.fixture
def root(tmp_path) -> Path:
    return project_copy(tmp_path)


def edit(root: Path, name: str, old: str, new: str) -> None:
    """Replace the one occurrence of ``old`` in the file (a text edit: the other lines keep their numbers)."""
    path = root / name
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {name}"
    path.write_text(text.replace(old, new))


def fired(root: Path, rule: str, base: str | None = None) -> list[str]:
    return [f.text() for f in policy.check(root, base=base, rules=[rule])]


def fix(rule: str) -> str:
    return next(r.fix for r in policy.RULES if r.id == rule)


def test_a_copy_of_the_project_has_no_finding(root):
    assert [f.text() for f in policy.check(root)] == []


# ---------------------------------------------------------------------------------------------
# One test (at least) per rule.

def test_an_unknown_contract_field_fires_dp001(root):
    edit(root, REVENUE, "status: active\n", "status: active\nstatuss: active\n")
    assert fired(root, "DP001") == [
        f"DP001 {REVENUE}:8: $: Additional properties are not allowed ('statuss' was unexpected): "
        "make the contract valid ODCS v3.1.0 and meet mage_project.contracts.PROFILE"]


def test_a_version_that_is_not_semver_fires_dp001(root):
    edit(root, REVENUE, "version: 1.0.0", "version: one")
    [finding] = fired(root, "DP001")
    assert finding.startswith(f"DP001 {REVENUE}:6: $.version: 'one' does not match ")


def test_a_contract_without_an_owner_fires_dp002(root):
    edit(root, REVENUE, "role: owner", "role: analyst")
    assert fired(root, "DP002") == [
        f"DP002 {REVENUE}:25: $.team.members: no member with role 'owner' and an e-mail as username: "
        "add a team member with role owner and an e-mail as username"]
    assert fired(root, "DP001") == []  # the owner is DP002's, not DP001's


def test_an_owner_without_an_email_fires_dp002(root):
    edit(root, REVENUE, "username: finance-data@example.com", "username: finance-data")
    assert fired(root, "DP002") == [
        f"DP002 {REVENUE}:25: $.team.members: no member with role 'owner' and an e-mail as username: "
        "add a team member with role owner and an e-mail as username"]


def test_a_mart_without_its_model_fires_dp003(root):
    (root / DIM_CUSTOMERS).unlink()
    assert fired(root, "DP003") == [
        f"DP003 {REVENUE}:108: marts.dim_customers has no dbt model {DIM_CUSTOMERS}: "
        "add the dbt model or migration, or remove the table from the contract"]


def test_a_raw_table_no_migration_creates_fires_dp003(root):
    edit(root, "mage_project/warehouse/sql/postgres/002_file_drops.sql",
         "create table if not exists raw.crm__customers (", "create table if not exists raw.crm__clients (")
    assert fired(root, "DP003") == [
        f"DP003 {FILE_DROPS}:29: raw.crm__customers is created by no migration in "
        "mage_project/warehouse/sql/postgres: add the dbt model or migration, or remove the table "
        "from the contract"]


def test_a_model_column_renamed_in_its_yaml_fires_dp004(root):
    edit(root, "dbt/warehouse/models/marts/_marts.yml", "      - name: utm_campaign\n",
         "      - name: utm_campaign_x\n")
    assert fired(root, "DP004") == [
        f"DP004 {REVENUE}:108: marts.dim_customers column 'utm_campaign_x' of "
        "dbt/warehouse/models/marts/_marts.yml is not in the contract: " + fix("DP004"),
        f"DP004 {REVENUE}:145: marts.dim_customers column 'utm_campaign' is not in "
        "dbt/warehouse/models/marts/_marts.yml: " + fix("DP004")]


def test_a_contract_type_the_ddl_does_not_have_fires_dp005(root):
    edit(root, FILE_DROPS, "        physicalType: text\n        classification: pii\n"
         "        description: The customer's full name.",
         "        physicalType: varchar(200)\n        classification: pii\n"
         "        description: The customer's full name.")
    assert fired(root, "DP005") == [
        f"DP005 {FILE_DROPS}:63: raw.crm__customers column 'full_name' is TEXT in "
        "mage_project/warehouse/sql/postgres/002_file_drops.sql, varchar(200) in the contract: "
        + fix("DP005")]


CAMPAIGNS = "dbt/warehouse/models/marts/fct_campaign_performance.sql"


def test_a_model_column_renamed_in_its_sql_only_fires_dp004(root):
    """A breaking change to a model's SQL alone (its YAML and contract untouched) is caught before
    merge, on the model's line, not first by the publish."""
    edit(root, CAMPAIGNS, "as bigint) as clicks,", "as bigint) as link_clicks,")
    assert fired(root, "DP004") == [
        f"DP004 {CAMPAIGNS}: marts.fct_campaign_performance column 'clicks' is not an output of "
        f"{CAMPAIGNS}: " + fix("DP004"),
        f"DP004 {CAMPAIGNS}:16: marts.fct_campaign_performance column 'link_clicks', an output of "
        f"{CAMPAIGNS}, is not in the contract: " + fix("DP004")]


def test_the_rename_the_publish_refuses_fires_dp004_before_merge(root):
    """The change tests/integration/test_contract_enforcement.py's publish refuses at run time
    (dim_customers' country renamed in its SQL) is found by check first, naming the column."""
    edit(root, DIM_CUSTOMERS, "customers.country,", "customers.country as country_code,")
    assert fired(root, "DP004") == [
        f"DP004 {DIM_CUSTOMERS}: marts.dim_customers column 'country' is not an output of "
        f"{DIM_CUSTOMERS}: " + fix("DP004"),
        f"DP004 {DIM_CUSTOMERS}:22: marts.dim_customers column 'country_code', an output of "
        f"{DIM_CUSTOMERS}, is not in the contract: " + fix("DP004")]


def test_a_model_casting_a_column_to_another_type_fires_dp005(root):
    edit(root, CAMPAIGNS, "cast(coalesce(spend.impressions, 0) as bigint)",
         "cast(coalesce(spend.impressions, 0) as integer)")
    assert fired(root, "DP005") == [
        f"DP005 {CAMPAIGNS}:15: marts.fct_campaign_performance column 'impressions' is cast to INT in "
        f"{CAMPAIGNS}, bigint in the contract: " + fix("DP005")]


def test_a_pipeline_tagged_with_another_domain_fires_dp006(root):
    edit(root, "pipelines/warehouse_elt/metadata.yaml", "- domain:finance", "- domain:sales")
    assert fired(root, "DP006") == [
        "DP006 pipelines/warehouse_elt/metadata.yaml:186: pipeline warehouse_elt's tags ['domain:marketing', "
        "'domain:platform', 'domain:product', 'domain:sales', 'product:campaign_performance', "
        "'product:file_drops', 'product:revenue', 'product:user_activity'] are not its products' "
        "['domain:finance', 'domain:marketing', 'domain:platform', 'domain:product', "
        "'product:campaign_performance', 'product:file_drops', 'product:revenue', "
        "'product:user_activity']: " + fix("DP006")]


def new_pipeline(root: Path) -> None:
    """A scheduled pipeline no contract lists."""
    folder = root / "pipelines/orders_ingest"
    folder.mkdir()
    (folder / "metadata.yaml").write_text(
        "blocks: []\nname: orders_ingest\ntags: []\ntype: python\nuuid: orders_ingest\n")
    (folder / "triggers.yaml").write_text(
        "triggers:\n- name: hourly_orders\n  pipeline_uuid: orders_ingest\n  schedule_interval: '@hourly'\n"
        "  schedule_type: time\n  sla: 3600\n  status: active\n")


def test_a_pipeline_of_no_product_fires_dp006(root):
    new_pipeline(root)
    assert fired(root, "DP006") == [
        "DP006 pipelines/orders_ingest/metadata.yaml: pipeline orders_ingest belongs to no product: "
        "list the pipeline in its product's contract (customProperties pipelines) and tag it with "
        "contracts.pipeline_tags"]


def test_a_mart_of_no_product_fires_dp007(root):
    (root / "dbt/warehouse/models/marts/fct_refunds.sql").write_text("select 1 as n\n")
    assert fired(root, "DP007") == [
        "DP007 dbt/warehouse/models/marts/fct_refunds.sql: marts.fct_refunds belongs to no product: "
        "declare the mart in its product's contract (schema[])"]


def test_a_scheduled_trigger_without_sla_fires_dp008(root):
    edit(root, "pipelines/warehouse_elt/triggers.yaml", "  sla: 7200\n", "")
    assert fired(root, "DP008") == [
        "DP008 pipelines/warehouse_elt/triggers.yaml:19: trigger warehouse_elt:daily_warehouse_elt_0300_utc "
        "has no SLA: give the trigger an sla (seconds) in triggers.yaml"]


def test_a_block_that_turns_retries_off_fires_dp009(root):
    edit(root, "pipelines/user_activity_ingest/metadata.yaml",
         "  name: validate_activity_user_activity\n  retry_config: null",
         "  name: validate_activity_user_activity\n  retry_config:\n    retries: 0")
    assert fired(root, "DP009") == [
        "DP009 pipelines/user_activity_ingest/triggers.yaml:2: trigger "
        "user_activity_ingest:daily_user_activity_0200_utc runs blocks without retries: "
        "validate_activity_user_activity: set retry_config: {retries: N} in metadata.yaml (the "
        "project's or each block's)"]


def test_a_project_without_retry_config_fires_dp009_for_every_trigger(root):
    edit(root, "metadata.yaml", "  retries: 2\n", "  retries: 0\n")
    findings = [f.split(" runs blocks")[0] for f in fired(root, "DP009")]
    triggers = [t for path in sorted(root.glob("pipelines/*/triggers.yaml"))
                for t in yaml.safe_load(path.read_text())["triggers"]]
    assert len(findings) == len(triggers)
    assert {
        "DP009 pipelines/user_activity_ingest/triggers.yaml:2: trigger "
        "user_activity_ingest:daily_user_activity_0200_utc",
        "DP009 pipelines/warehouse_elt/triggers.yaml:2: trigger warehouse_elt:on_file_arrival",
        "DP009 pipelines/warehouse_elt/triggers.yaml:19: trigger warehouse_elt:daily_warehouse_elt_0300_utc",
    } <= set(findings)


def test_a_scheduled_pipeline_of_no_product_has_no_alert_route_dp010(root):
    new_pipeline(root)
    assert fired(root, "DP010") == [
        "DP010 pipelines/orders_ingest/triggers.yaml:2: trigger orders_ingest:hourly_orders has no alert "
        "route (no product of orders_ingest names one): list the pipeline in a contract that has "
        "alertRoutes"]


def test_a_block_without_a_test_fires_dp011(root):
    edit(root, "data_loaders/fetch_activity_user_activity.py", "@test\ndef", "def")
    assert fired(root, "DP011") == [
        "DP011 data_loaders/fetch_activity_user_activity.py: block fetch_activity_user_activity has no "
        "@test: add an @test that calls a check of mage_project.checks"]


def test_a_test_with_a_bare_assert_fires_dp012(root):
    edit(root, "data_loaders/fetch_activity_user_activity.py",
         "    checks.require(checks.landing_files_complete(output))", "    assert output is not None")
    assert fired(root, "DP012") == [
        "DP012 data_loaders/fetch_activity_user_activity.py:28: @test test_landing_files_complete calls no "
        "check of mage_project: call a named check, e.g. checks.require(checks.<check>(output)), not a "
        "bare assert"]


def test_io_config_literal_password_fires_dp013(root):
    edit(root, "io_config.yaml", "\"{{ env_var('POSTGRES_PASSWORD') }}\"", "hunter2")
    [line] = [n for n, text in enumerate((root / "io_config.yaml").read_text().splitlines(), 1)
              if "hunter2" in text]
    assert fired(root, "DP013") == [
        f"DP013 io_config.yaml:{line}: default.POSTGRES_PASSWORD holds a value, not an environment "
        "reference: use \"{{ env_var('NAME') }}\" and set NAME in the environment (.env)"]


def test_a_committed_aws_key_fires_dp015(root):
    key = "AKIA" + "QYLPMN5HHHFPZAM2"  # split, so that this file holds no key for the scanner
    (root / "data_loaders/settings.py").write_text(f'aws_access_key_id = "{key}"\n')
    assert fired(root, "DP015") == [
        "DP015 data_loaders/settings.py:1: possible secret (AWS Access Key): " + fix("DP015")]


def test_a_baseline_secret_not_audited_fires_dp015(root):
    path = root / ".secrets.baseline"
    baseline = json.loads(path.read_text())
    baseline["results"]["mage_project/editor.py"][0]["is_secret"] = True
    path.write_text(json.dumps(baseline, indent=2))
    assert fired(root, "DP015") == [
        "DP015 mage_project/editor.py:29: Secret Keyword in the baseline, not audited as a false "
        "positive: " + fix("DP015")]


# ---------------------------------------------------------------------------------------------
# DP014: breaking contract changes against a git base.

def git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=root,
                   check=True, capture_output=True)


@pytest.fixture
def committed(root) -> Path:
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "base")
    return root


SHOWN = (f"(at HEAD {REVENUE} 1.0.0, now 1.0.0): make the change additive, or raise the contract's "
         "major version")
LAST_COLUMN = ("      - name: lifetime_net_revenue\n        logicalType: number\n        physicalType: "
               "numeric(18,2)\n        classification: confidential\n        description: Sum of the "
               "customer's succeeded payments (refunded ones excluded), 0 when none. USD.\n")


def test_removed_column_fires_dp014(committed):
    edit(committed, REVENUE, LAST_COLUMN, "")
    assert fired(committed, "DP014", "HEAD") == [
        f"DP014 {REVENUE}:108: marts.dim_customers column 'lifetime_net_revenue' removed {SHOWN}"]


def test_removed_column_with_major_version_raised_is_not_breaking(committed):
    edit(committed, REVENUE, LAST_COLUMN, "")
    edit(committed, REVENUE, "version: 1.0.0", "version: 2.0.0")
    assert fired(committed, "DP014", "HEAD") == []


def test_added_column_is_not_breaking(committed):
    edit(committed, REVENUE, LAST_COLUMN, LAST_COLUMN + LAST_COLUMN.replace("lifetime_net", "lifetime_gross"))
    assert fired(committed, "DP014", "HEAD") == []


COUNTRY = ("      - name: country\n        logicalType: string\n        physicalType: text\n"
           "        classification: internal\n        description: Country of the customer's latest")


def test_changed_type_is_breaking(committed):
    edit(committed, REVENUE, COUNTRY, COUNTRY.replace("physicalType: text", "physicalType: varchar(2)"))
    assert fired(committed, "DP014", "HEAD") == [
        f"DP014 {REVENUE}:128: marts.dim_customers column 'country': physicalType changed from text to "
        f"varchar(2) {SHOWN}"]


def test_same_type_written_otherwise_is_not_breaking(committed):
    edit(committed, REVENUE, "physicalType: numeric(18,2)\n        classification: confidential\n"
         "        description: Sum of the customer's", "physicalType: NUMERIC(18, 2)\n"
         "        classification: confidential\n        description: Sum of the customer's")
    assert fired(committed, "DP014", "HEAD") == []


def test_column_turned_required_is_breaking(committed):
    edit(committed, REVENUE, COUNTRY, COUNTRY.replace("physicalType: text\n", "physicalType: text\n"
                                                      "        required: true\n"))
    assert fired(committed, "DP014", "HEAD") == [
        f"DP014 {REVENUE}:128: marts.dim_customers column 'country': required changed from False to True "
        f"{SHOWN}"]


def test_removed_enum_value_is_breaking_an_added_one_is_not(committed):
    edit(committed, FILE_DROPS, "validValues: [succeeded, failed, refunded]",
         "validValues: [succeeded, failed, refunded, disputed]")
    assert fired(committed, "DP014", "HEAD") == []
    edit(committed, FILE_DROPS, "validValues: [succeeded, failed, refunded, disputed]",
         "validValues: [succeeded, refunded]")
    assert_breaking_with_downstream(
        fired(committed, "DP014", "HEAD"),
        f"DP014 {FILE_DROPS}:179: raw.billing__payments column 'status': enumeration lost ['failed'] "
        f"(at HEAD {FILE_DROPS} 1.0.0, now 1.0.0)",
        # The mart columns whose lineage reaches payments.status (the refunds' CASE conditions).
        {"marts.dim_customers.lifetime_net_revenue (finance/revenue, owner finance-data)",
         "marts.fct_daily_revenue.net_revenue (finance/revenue, owner finance-data)",
         "marts.fct_daily_revenue.paying_customers (finance/revenue, owner finance-data)",
         "marts.fct_daily_revenue.refunds (finance/revenue, owner finance-data)"})


def assert_breaking_with_downstream(found: list[str], finding: str, downstream: set[str]) -> None:
    """``found`` is the one DP014 ``finding``, quoting at least ``downstream`` (a copy of the
    project may hold more products reading the same column: new-product's tests add some)."""
    fix = ": make the change additive, or raise the contract's major version"
    [line] = found
    assert line.startswith(f"{finding}; downstream: ") and line.endswith(fix), line
    quoted = set(re.split(r", (?=marts\.)", line[len(f"{finding}; downstream: "):-len(fix)]))
    assert downstream <= quoted, quoted


EMAIL_OPTIONS = "          format: email\n"


def test_a_bound_added_is_breaking_a_looser_one_is_not(committed):
    edit(committed, FILE_DROPS, EMAIL_OPTIONS, EMAIL_OPTIONS + "          maxLength: 320\n")
    assert fired(committed, "DP014", "HEAD") == [
        f"DP014 {FILE_DROPS}:48: raw.crm__customers column 'email': logicalTypeOptions.maxLength "
        f"tightened from unset to 320 (at HEAD {FILE_DROPS} 1.0.0, now 1.0.0): make the change "
        "additive, or raise the contract's major version"]
    git(committed, "commit", "-q", "-am", "maxLength 320")
    edit(committed, FILE_DROPS, "maxLength: 320", "maxLength: 400")
    assert fired(committed, "DP014", "HEAD") == []
    edit(committed, FILE_DROPS, "maxLength: 400", "maxLength: 254")
    assert [f.split(": ", 1)[1] for f in fired(committed, "DP014", "HEAD")] == [
        f"raw.crm__customers column 'email': logicalTypeOptions.maxLength tightened from 320 to 254 "
        f"(at HEAD {FILE_DROPS} 1.0.0, now 1.0.0): make the change additive, or raise the contract's "
        "major version"]


def test_a_changed_pattern_is_breaking(committed):
    edit(committed, FILE_DROPS, "pattern: '^[A-Z]{2}$'", "pattern: '^[A-Z]{2,3}$'")
    assert_breaking_with_downstream(
        fired(committed, "DP014", "HEAD"),
        f"DP014 {FILE_DROPS}:68: raw.crm__customers column 'country': quality invalidValues pattern "
        f"changed from ^[A-Z]{{2}}$ to ^[A-Z]{{2,3}}$ (at HEAD {FILE_DROPS} 1.0.0, now 1.0.0)",
        {"marts.dim_customers.country (finance/revenue, owner finance-data)"})


def test_removed_table_is_breaking(committed):
    path = committed / REVENUE
    document = yaml.safe_load(path.read_text())
    document["schema"] = [t for t in document["schema"] if t["physicalName"] != "marts.dim_customers"]
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    assert fired(committed, "DP014", "HEAD") == [
        f"DP014 {REVENUE}: table marts.dim_customers removed {SHOWN}"]


def test_a_base_that_is_no_commit_fires_dp014(committed):
    assert fired(committed, "DP014", "no-such-ref") == [
        "DP014 contracts: git base 'no-such-ref' is not a commit of this repository: make the change "
        "additive, or raise the contract's major version"]


# ---------------------------------------------------------------------------------------------
# DP016: no pii column published in clear, from the models' SQL.

CUSTOMERS_SELECT = "        customers.country,\n"  # dim_customers.sql line 22, in its final select
DP016_FIX = fix("DP016")


def test_a_mart_selecting_a_pii_column_in_clear_fires_dp016(root):
    edit(root, DIM_CUSTOMERS, CUSTOMERS_SELECT, CUSTOMERS_SELECT + "        customers.email,\n")
    assert fired(root, "DP016") == [
        f"DP016 {DIM_CUSTOMERS}:23: marts.dim_customers column 'email' publishes pii "
        f"raw.crm__customers.email in clear: {DP016_FIX}"]


def test_a_pii_column_under_another_name_and_function_fires_dp016(root):
    edit(root, DIM_CUSTOMERS, CUSTOMERS_SELECT,
         CUSTOMERS_SELECT + "        lower(customers.full_name) || customers.country as label,\n")
    assert fired(root, "DP016") == [
        f"DP016 {DIM_CUSTOMERS}:23: marts.dim_customers column 'label' publishes pii "
        f"raw.crm__customers.full_name in clear: {DP016_FIX}"]


def test_a_pii_column_hashed_with_one_path_in_clear_fires_dp016(root):
    edit(root, DIM_CUSTOMERS, CUSTOMERS_SELECT,
         CUSTOMERS_SELECT + "        md5(customers.email) || customers.email as email_key,\n")
    assert fired(root, "DP016") == [
        f"DP016 {DIM_CUSTOMERS}:23: marts.dim_customers column 'email_key' publishes pii "
        f"raw.crm__customers.email in clear: {DP016_FIX}"]


HASHED = "        encode(sha256(convert_to(customers.email, 'UTF8')), 'hex') as email_sha256,\n"


def test_a_hashed_pii_column_its_contract_does_not_declare_fires_dp016(root):
    edit(root, DIM_CUSTOMERS, CUSTOMERS_SELECT, CUSTOMERS_SELECT + HASHED)
    assert fired(root, "DP016") == [
        f"DP016 {DIM_CUSTOMERS}:23: marts.dim_customers column 'email_sha256' hashes pii "
        f"raw.crm__customers.email but its contract declares no masking: {DP016_FIX}"]


def test_a_hashed_pii_column_declared_masked_passes_every_rule(root):
    edit(root, DIM_CUSTOMERS, CUSTOMERS_SELECT, CUSTOMERS_SELECT + HASHED)
    edit(root, REVENUE, COUNTRY, (
        "      - name: email_sha256\n        logicalType: string\n        physicalType: text\n"
        "        classification: pii\n        customProperties:\n          - property: masking\n"
        "            value: sha256\n        description: The SHA-256 of the customer's e-mail (hex).\n")
        + COUNTRY)
    edit(root, "dbt/warehouse/models/marts/_marts.yml", "      - name: signup_at\n",
         "      - name: email_sha256\n        description: The SHA-256 of the customer's e-mail (hex).\n"
         "      - name: signup_at\n")
    assert [f.text() for f in policy.check(root)] == []


def test_a_masking_macro_of_the_project_counts_as_a_hash(root):
    (root / "dbt/warehouse/macros/mask_pii.sql").write_text(
        "{% macro mask_pii(column) -%}\n    md5({{ column }})\n{%- endmacro %}\n")
    edit(root, DIM_CUSTOMERS, CUSTOMERS_SELECT,
         CUSTOMERS_SELECT + "        {{ mask_pii('customers.full_name') }} as name_md5,\n")
    assert fired(root, "DP016") == [
        f"DP016 {DIM_CUSTOMERS}:23: marts.dim_customers column 'name_md5' hashes pii "
        f"raw.crm__customers.full_name but its contract declares no masking: {DP016_FIX}"]


def test_a_pii_column_only_joined_on_or_filtered_by_is_not_published(root):
    edit(root, DIM_CUSTOMERS, "    from customers\n",
         "    from customers\n    where customers.email is not null\n")
    assert fired(root, "DP016") == []


def test_a_model_that_cannot_be_rendered_or_traced_is_a_dp016_finding(root):
    edit(root, DIM_CUSTOMERS, CUSTOMERS_SELECT, CUSTOMERS_SELECT + "        {{ customers.email,\n")
    assert fired(root, "DP016") == [
        f"DP016 {DIM_CUSTOMERS}: marts.dim_customers cannot be rendered without dbt (TemplateSyntaxError: "
        "expected token ':', got '}'), so its columns are not traced: " + DP016_FIX]


# ---------------------------------------------------------------------------------------------
# The command: text or JSON, exit status.

def test_check_command_prints_json_and_exits_1_on_an_error(root, capsys):
    edit(root, "io_config.yaml", "\"{{ env_var('POSTGRES_PASSWORD') }}\"", "hunter2")
    (root / "dbt/warehouse/models/marts/fct_refunds.sql").write_text("select 1 as n\n")
    [line] = [n for n, text in enumerate((root / "io_config.yaml").read_text().splitlines(), 1)
              if "hunter2" in text]
    assert policy.check_command(as_json=True, root=root) == 1
    out, err = capsys.readouterr()
    assert json.loads(out) == [
        {"rule": "DP007", "severity": "error", "path": "dbt/warehouse/models/marts/fct_refunds.sql",
         "line": None, "message": "marts.fct_refunds belongs to no product: " + fix("DP007")},
        {"rule": "DP013", "severity": "error", "path": "io_config.yaml", "line": line,
         "message": "default.POSTGRES_PASSWORD holds a value, not an environment reference: " + fix("DP013")},
        # The secret scanner sees the same password: two rules, one line.
        {"rule": "DP015", "severity": "error", "path": "io_config.yaml", "line": line,
         "message": "possible secret (Secret Keyword): " + fix("DP015")}]
    assert err == "check: 3 error(s), 0 warning(s), 16 rules\n"


def test_check_command_prints_one_line_per_finding(root, capsys):
    (root / "dbt/warehouse/models/marts/fct_refunds.sql").write_text("select 1 as n\n")
    assert policy.check_command(root=root) == 1
    out, _ = capsys.readouterr()
    assert out == ("DP007 dbt/warehouse/models/marts/fct_refunds.sql: marts.fct_refunds belongs to no "
                   "product: declare the mart in its product's contract (schema[])\n")


def test_check_command_exits_0_with_no_finding_or_only_warnings(root, capsys, monkeypatch):
    assert policy.check_command(as_json=True, root=root) == 0
    assert json.loads(capsys.readouterr().out) == []
    monkeypatch.setattr(policy, "RULES", tuple(
        dataclasses.replace(r, severity=policy.WARNING) if r.id == "DP007" else r for r in policy.RULES))
    (root / "dbt/warehouse/models/marts/fct_refunds.sql").write_text("select 1 as n\n")
    assert policy.check_command(as_json=True, root=root) == 0
    out, err = capsys.readouterr()
    assert [(f["rule"], f["severity"]) for f in json.loads(out)] == [("DP007", "warning")]
    assert err == "check: 0 error(s), 1 warning(s), 16 rules\n"


# ---------------------------------------------------------------------------------------------
# The CI formats: GitHub Actions' workflow commands, GitLab's Code Quality report.

def test_check_command_prints_github_annotations(root, capsys):
    edit(root, "io_config.yaml", "\"{{ env_var('POSTGRES_PASSWORD') }}\"", "hunter2")
    (root / "dbt/warehouse/models/marts/fct_refunds.sql").write_text("select 1 as n\n")
    [line] = [n for n, text in enumerate((root / "io_config.yaml").read_text().splitlines(), 1)
              if "hunter2" in text]
    assert policy.check_command(root=root, output_format="github") == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "::error file=dbt/warehouse/models/marts/fct_refunds.sql,title=DP007::marts.fct_refunds belongs"
        " to no product: " + fix("DP007"),
        f"::error file=io_config.yaml,line={line},title=DP013::default.POSTGRES_PASSWORD holds a value,"
        " not an environment reference: " + fix("DP013"),
        f"::error file=io_config.yaml,line={line},title=DP015::possible secret (Secret Keyword): "
        + fix("DP015")]
    assert err == "check: 3 error(s), 0 warning(s), 16 rules\n"


def test_github_annotations_escape_what_the_runner_unescapes():
    finding = policy.Finding("DP099", policy.WARNING, "a,b:c.yaml", 7, "100% wrong\nsee: docs")
    assert policy.github_annotation(finding) == (
        "::warning file=a%2Cb%3Ac.yaml,line=7,title=DP099::100%25 wrong%0Asee: docs")


def test_check_command_writes_a_gitlab_code_quality_report(root, capsys):
    (root / "dbt/warehouse/models/marts/fct_refunds.sql").write_text("select 1 as n\n")
    assert policy.check_command(root=root, output_format="gitlab") == 1
    out, err = capsys.readouterr()
    message = "marts.fct_refunds belongs to no product: " + fix("DP007")
    [issue] = json.loads(out)
    assert issue == {
        "description": f"DP007: {message}", "check_name": "DP007", "fingerprint": issue["fingerprint"],
        "severity": "major",
        "location": {"path": "dbt/warehouse/models/marts/fct_refunds.sql", "lines": {"begin": 1}}}
    assert re.fullmatch(r"[0-9a-f]{64}", issue["fingerprint"])
    # The job's log still shows the findings as text.
    assert err == (f"DP007 dbt/warehouse/models/marts/fct_refunds.sql: {message}\n"
                   "check: 1 error(s), 0 warning(s), 16 rules\n")


def test_a_code_quality_fingerprint_follows_the_finding_not_its_line():
    first = policy.Finding("DP004", policy.ERROR, REVENUE, 10, "column 'x' is not in y")
    moved = dataclasses.replace(first, line=12)
    other = dataclasses.replace(first, message="column 'z' is not in y")
    issues = [policy.code_quality_issue(f) for f in (first, moved, other)]
    assert issues[0]["fingerprint"] == issues[1]["fingerprint"] != issues[2]["fingerprint"]
    assert [i["location"]["lines"]["begin"] for i in issues] == [10, 12, 10]
    warning = dataclasses.replace(first, severity=policy.WARNING)
    assert policy.code_quality_issue(warning)["severity"] == "minor"
