"""The data products' contracts (contracts/<domain>/<product>.yaml): each follows ODCS v3.1.0 and
the project's rules, says what the warehouse really holds (the migrations' raw tables, the dbt
marts and their YAML), and is what the catalogue and the pipelines' tags are derived from."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from mage_project import contracts, entities
from mage_project.contracts import ContractError

ROOT = Path(__file__).resolve().parents[2]
MARTS_YAML = ROOT / "dbt" / "warehouse" / "models" / "marts" / "_marts.yml"
MIGRATIONS = ROOT / "mage_project" / "warehouse" / "sql" / "postgres"
PIPELINES = sorted(p.parent.name for p in (ROOT / "pipelines").glob("*/metadata.yaml"))
REVENUE = "contracts/finance/revenue.yaml"


@pytest.fixture(scope="module")
def products() -> dict[str, contracts.Product]:
    return {p.key: p for p in contracts.load_products()}


def marts_models() -> dict[str, dict]:
    return {m["name"]: m for m in yaml.safe_load(MARTS_YAML.read_text())["models"]}


def test_the_vendored_schema_is_odcs_v3_1_0_as_published():
    text = (ROOT / contracts.SCHEMA).read_text(encoding="utf-8")
    assert len(text) == 86885  # the published file's length, in characters
    schema = json.loads(text)
    assert schema["$schema"] == "https://json-schema.org/draft/2019-09/schema"
    assert schema["title"] == "Open Data Contract Standard (ODCS)"
    assert schema["required"] == ["version", "apiVersion", "kind", "id", "status"]
    assert schema["properties"]["apiVersion"]["enum"][0] == "v3.1.0"
    assert schema["additionalProperties"] is False
    assert schema["$defs"]["TeamMember"]["required"] == ["username"]
    assert schema["$defs"]["SchemaBaseProperty"]["properties"]["logicalType"]["enum"] == [
        "string", "date", "timestamp", "time", "number", "integer", "object", "array", "boolean"]
    assert "02765470088391c197d76d381bb470c21d45e2d9" in (ROOT / "contracts/schema/NOTICE.md").read_text()


# The products this project ships; a domain's product that new-product writes comes beside them.
SHIPPED = ("finance/revenue", "marketing/campaign_performance", "platform/file_drops",
           "product/user_activity")


def test_the_products_are_the_domains_products(products):
    assert set(SHIPPED) <= set(products)
    assert {k: (products[k].owner, products[k].owner_email) for k in SHIPPED} == {
        "finance/revenue": ("finance-data", "finance-data@example.com"),
        "marketing/campaign_performance": ("marketing-analytics", "marketing-analytics@example.com"),
        "platform/file_drops": ("data-platform", "data-team@example.com"),
        "product/user_activity": ("product-analytics", "product-analytics@example.com"),
    }
    assert {k: products[k].table_names for k in SHIPPED} == {
        "finance/revenue": ("marts.fct_daily_revenue", "marts.dim_customers"),
        "marketing/campaign_performance": ("marts.fct_campaign_performance",),
        "platform/file_drops": ("raw.crm__customers", "raw.billing__payments", "raw.marketing__ad_spend"),
        "product/user_activity": ("raw.user_activity", "marts.fct_daily_active_users"),
    }


@pytest.mark.parametrize("path", [p.relative_to(ROOT) for p in contracts.contract_paths()], ids=str)
def test_every_contract_validates(path):
    product = contracts.load_contract(path)
    assert product.contract == str(path) == f"contracts/{product.domain}/{product.product}.yaml"
    assert re.fullmatch(r"\d+\.\d+\.\d+", product.version) and product.status == "active"
    assert {s.property for s in product.slos} >= {"frequency", "latency", "retention"}
    assert product.alert_routes and product.pipelines
    for table in product.tables:
        assert all(c.classification in contracts.CLASSIFICATIONS for c in table.columns)


def test_the_schema_folder_holds_no_contract():
    assert all("schema" not in p.relative_to(ROOT / "contracts").parts for p in contracts.contract_paths())
    assert len(contracts.contract_paths()) == len(contracts.load_products()) >= len(SHIPPED)


# --- broken contracts are refused, naming the file, the JSON path and what is wrong -----------

@pytest.fixture
def project(tmp_path) -> Path:
    """A copy of the project's contracts and pipeline declarations to break."""
    shutil.copytree(ROOT / "contracts", tmp_path / "contracts")
    for name in PIPELINES:
        (tmp_path / "pipelines" / name).mkdir(parents=True)
        for file in ("metadata.yaml", "triggers.yaml"):
            shutil.copy(ROOT / "pipelines" / name / file, tmp_path / "pipelines" / name / file)
    return tmp_path


def edit(root: Path, old: str, new: str, path: str = REVENUE) -> None:
    file = root / path
    text = file.read_text()
    assert old in text, old
    file.write_text(text.replace(old, new, 1))


BREAKS = {
    "wrong apiVersion": (
        "apiVersion: v3.1.0", "apiVersion: v4.0.0",
        "$.apiVersion", "'v4.0.0' is not one of ['v3.1.0', 'v3.0.2',"),
    "an older apiVersion": (
        "apiVersion: v3.1.0", "apiVersion: v3.0.2", "$.apiVersion", "'v3.1.0' was expected"),
    "a column without a name": (
        "      - name: gross_revenue\n        logicalType", "      - logicalType",
        "$.schema[0].properties[1]", "'name' is a required property"),
    "a misspelt top-level field": (
        "slaProperties:", "slaPropertes:",
        "$", "Additional properties are not allowed ('slaPropertes' was unexpected)"),
    "a misspelt quality operator": (
        "        mustBe: 0\n        dimension: consistency",
        "        mustbe: 0\n        dimension: consistency",
        "$.schema[0].quality[0]",
        "Unevaluated properties are not allowed ('mustbe', 'query' were unexpected)"),
    "a classification of its own": (
        "        classification: confidential\n        description: Sum of the amounts of the day's",
        "        classification: secret\n        description: Sum of the amounts of the day's",
        "$.schema[0].properties[1].classification",
        "'secret' is not one of ['public', 'internal', 'confidential', 'pii']"),
    "a column without a type": (
        "        logicalType: number\n        physicalType: numeric(18,2)\n"
        "        classification: confidential\n        description: Sum of the amounts of the day's",
        "        logicalType: number\n"
        "        classification: confidential\n        description: Sum of the amounts of the day's",
        "$.schema[0].properties[1]", "'physicalType' is a required property"),
    "a table not schema-qualified": (
        "physicalName: marts.dim_customers", "physicalName: dim_customers",
        "$.schema[1].physicalName", "'dim_customers' does not match"),
    "a routing key instead of its variable's name": (
        "pagerdutyRoutingKeyEnv: PAGERDUTY_ROUTING_KEY_FINANCE",
        "pagerdutyRoutingKeyEnv: 0123456789abcdef0123456789abcdef",
        "$.customProperties[2].value[0].pagerdutyRoutingKeyEnv",
        "'0123456789abcdef0123456789abcdef' does not match '^[A-Z][A-Z0-9_]*$'"),
    "a pipeline that does not exist": (
        "value: [warehouse_elt]", "value: [warehouse_etl]",
        "$.customProperties[0].value", "pipeline 'warehouse_etl' does not exist"),
    "no success-rate objective": (
        "  - property: successRateObjective", "  - property: successRate",
        "$.customProperties", "no 'successRateObjective' custom property"),
    "no retention": (
        "  - property: retention", "  - property: durability",
        "$.slaProperties", "no 'retention' SLA property"),
    "an owner without an e-mail": (
        "    - username: finance-data@example.com", "    - username: finance-data",
        "$.team.members", "no member with role 'owner' and an e-mail as username"),
    "a pii column in a published table without its masking": (
        "        classification: internal\n        description: Country of the customer's",
        "        classification: pii\n        description: Country of the customer's",
        "$.schema[1].properties[1]",
        "marts.dim_customers.country is pii in a published table: declare its masking"),
    "a masking of its own": (
        "        classification: internal\n        description: Country of the customer's",
        "        classification: pii\n        customProperties:\n          - property: masking\n"
        "            value: rot13\n        description: Country of the customer's",
        "$.schema[1].properties[1].customProperties", "masking 'rot13' is not one of sha256, md5"),
    "a masking on a column that is not pii": (
        "        classification: internal\n        description: Country of the customer's",
        "        classification: internal\n        customProperties:\n          - property: masking\n"
        "            value: sha256\n        description: Country of the customer's",
        "$.schema[1].properties[1].customProperties",
        "masking is declared on a column that is not classified pii"),
    "a version that is not semver": (
        "version: 1.0.0", "version: '1.0'", "$.version", "'1.0' does not match"),
}


@pytest.mark.parametrize("old, new, json_path, message", BREAKS.values(), ids=BREAKS.keys())
def test_a_broken_contract_is_refused_with_its_file_and_path(project, old, new, json_path, message):
    edit(project, old, new)
    with pytest.raises(ContractError) as raised:
        contracts.load_contract(project / REVENUE, root=project)
    error = raised.value
    assert error.path == REVENUE
    assert any(path == json_path and message in text for path, text in error.violations), error.violations
    assert str(error).startswith(f"{REVENUE}: ")
    assert f"  {json_path}: " in str(error)
    with pytest.raises(ContractError, match=re.escape(REVENUE)):
        contracts.load_products(project)


def test_every_violation_of_a_contract_is_in_its_one_error(project):
    edit(project, "apiVersion: v3.1.0", "apiVersion: v4.0.0")
    edit(project, "slaProperties:", "slaPropertes:")
    edit(project, "physicalName: marts.dim_customers", "physicalName: dim_customers")
    with pytest.raises(ContractError) as raised:
        contracts.load_contract(project / REVENUE, root=project)
    paths = [path for path, _ in raised.value.violations]
    assert {"$.apiVersion", "$", "$.schema[1].physicalName"} <= set(paths)
    # Unknown fields are named once, though the root forbids them twice over.
    assert sum("'slaPropertes' was unexpected" in m for _, m in raised.value.violations) == 1


def line_of(root: Path, text: str, path: str = REVENUE) -> int:
    return (root / path).read_text().splitlines().index(text) + 1


@pytest.mark.parametrize("old, new, problem", [
    ("status: active", "status: active: really", "mapping values are not allowed here"),
    ("status: active", "status: active\nstatus: draft", "key 'status' given twice in one mapping"),
])
def test_a_contract_that_is_not_yaml_names_its_file_and_line(project, old, new, problem):
    line = line_of(project, "status: active") + (1 if "\n" in new else 0)
    edit(project, old, new)
    with pytest.raises(ContractError) as raised:
        contracts.load_contract(project / REVENUE, root=project)
    assert raised.value.line == line
    assert str(raised.value) == f"{REVENUE}:{line}: not valid YAML: {problem}"


def test_a_contract_in_another_products_folder_is_refused(project):
    folder = project / "contracts" / "finance"
    (folder / "revenue.yaml").rename(folder / "sales.yaml")
    with pytest.raises(ContractError) as raised:
        contracts.load_products(project)
    assert raised.value.violations == [
        ("$", "a contract of domain 'finance' and dataProduct 'revenue' belongs at "
              "contracts/finance/revenue.yaml")]


def test_a_table_of_two_products_is_refused(project):
    edit(project, "physicalName: marts.fct_campaign_performance", "physicalName: marts.dim_customers",
         path="contracts/marketing/campaign_performance.yaml")
    with pytest.raises(ContractError) as raised:
        contracts.load_products(project)
    assert raised.value.path == "contracts/marketing/campaign_performance.yaml"
    assert raised.value.violations == [("$.schema[0].physicalName", (
        "marts.dim_customers already belongs to finance/revenue (contracts/finance/revenue.yaml): "
        "a table belongs to one product"))]


# --- the contracts say what the warehouse holds ----------------------------------------------

def test_every_marts_model_belongs_to_exactly_one_product(products):
    models = marts_models()
    sql_models = {p.stem for p in MARTS_YAML.parent.glob("*.sql")}
    assert set(models) == sql_models >= {"dim_customers", "fct_campaign_performance",
                                         "fct_daily_active_users", "fct_daily_revenue"}
    for model in models:
        owners = [k for k, p in products.items() if f"marts.{model}" in p.table_names]
        assert len(owners) == 1, (model, owners)
        assert model in products[owners[0]].dbt_models
    declared = {t for p in products.values() for t in p.table_names if t.startswith("marts.")}
    assert declared == {f"marts.{m}" for m in models}
    assert sorted(m for p in products.values() for m in p.dbt_models) == sorted(models)


def dbt_tests(entry: dict) -> list[tuple[str, dict]]:
    """(test name, its arguments) of a model's or column's ``tests:``."""
    found = []
    for test in entry.get("tests") or []:
        if isinstance(test, str):
            found.append((test, {}))
        else:
            ((kind, spec),) = test.items()
            found.append((kind, spec or {}))
    return found


def marts_tables(products) -> list[tuple[str, contracts.Table]]:
    return [(t.table, t) for p in products.values() for t in p.tables if t.schema == "marts"]


@pytest.mark.parametrize("model", sorted(marts_models()))
def test_marts_columns_and_constraints_are_the_dbt_models(products, model):
    (table,) = [t for name, t in marts_tables(products) if name == model]
    documented = marts_models()[model]
    assert table.column_names == tuple(c["name"] for c in documented["columns"])
    not_null = {c["name"] for c in documented["columns"] if ("not_null", {}) in dbt_tests(c)}
    unique = {c["name"] for c in documented["columns"] if ("unique", {}) in dbt_tests(c)}
    assert {c.name for c in table.columns if c.required} == not_null
    assert {c.name for c in table.columns if c.unique} == unique
    assert {c.name for c in table.columns if c.primary_key} >= unique


@pytest.mark.parametrize("model", sorted(marts_models()))
def test_every_marts_invariant_of_dbt_is_a_quality_rule_of_the_contract(products, model):
    (table,) = [t for name, t in marts_tables(products) if name == model]
    contract = yaml.safe_load((ROOT / next(p.contract for p in products.values() if table in p.tables))
                              .read_text())
    (obj,) = [o for o in contract["schema"] if o["physicalName"] == table.name]
    rules = {r["name"]: r for r in obj.get("quality") or []}
    named = [(spec, kind) for kind, spec in dbt_tests(marts_models()[model]) + [
        t for c in marts_models()[model]["columns"] for t in dbt_tests(c)] if "name" in spec]
    assert named, f"{model} has no named invariant: the dbt YAML changed"
    for spec, kind in named:
        rule = rules[spec["name"]]
        severity = (spec.get("config") or {}).get("severity", "error")
        assert rule["severity"] == {"error": "error", "warn": "warning"}[severity]
        if kind == "expression_is_true":
            expression = " ".join(spec["arguments"]["expression"].split())
            assert rule["type"] == "sql" and rule["mustBe"] == 0
            assert f"where not ({expression})" in " ".join(rule["query"].split())
    assert set(rules) - {spec["name"] for spec, _ in named} <= {
        "fct_campaign_performance_date_campaign_is_unique"}  # dbt's unnamed unique(date || campaign)


def test_the_products_quality_rules_are_typed_with_their_table_and_column(products):
    revenue = products["finance/revenue"].table("marts.fct_daily_revenue")
    assert [(r.name, r.type, r.severity, r.column) for r in revenue.quality] == [
        ("fct_daily_revenue_net_is_gross_minus_refunds", "sql", "error", None),
        ("fct_daily_revenue_refunds_within_gross", "sql", "error", None),
        ("fct_daily_revenue_paying_customers_is_not_negative", "sql", "error", None),
        ("fct_daily_revenue_net_revenue_only_with_paying_customers", "sql", "error", None),
        ("fct_daily_revenue_paying_customers_at_most_the_days_customers", "custom", "error", None),
    ]
    payments = products["platform/file_drops"].table("raw.billing__payments")
    assert [(r.name, r.column, r.severity) for r in payments.quality] == [
        ("billing_payments_updated_after_paid", None, "warning"),
        ("payment_amount_is_plausible", "amount", "error"),
        ("payment_status_is_known", "status", "error"),
    ]


def test_a_rule_keeps_what_checking_it_needs(products):
    revenue = products["finance/revenue"]
    net = revenue.table("marts.fct_daily_revenue").quality[0]
    assert (net.query, net.operator, net.threshold, net.metric) == (
        "select count(*) from {object} where not (net_revenue = gross_revenue - refunds)",
        "mustBe", 0, None)
    custom = revenue.table("marts.fct_daily_revenue").quality[4]
    assert (custom.type, custom.engine, custom.query) == ("custom", "dbt", None)
    campaign = products["marketing/campaign_performance"].table("marts.fct_campaign_performance")
    unique = next(r for r in campaign.quality if r.metric == "duplicateValues")
    assert (unique.arguments, unique.operator, unique.threshold) == (
        {"properties": ["date", "campaign"]}, "mustBe", 0)
    status = next(r for r in products["platform/file_drops"].table("raw.billing__payments").quality
                  if r.name == "payment_status_is_known")
    assert (status.metric, status.arguments, status.column) == (
        "invalidValues", {"validValues": ["succeeded", "failed", "refunded"]}, "status")


def test_a_pii_column_may_be_published_hashed_as_declared(project):
    edit(project, "        classification: internal\n        description: Country of the customer's",
         "        classification: pii\n        customProperties:\n          - property: masking\n"
         "            value: sha256\n        description: Country of the customer's")
    country = contracts.load_contract(project / REVENUE, root=project).table("marts.dim_customers").columns[1]
    assert (country.name, country.classification, country.masking) == ("country", "pii", "sha256")


def test_a_date_the_standard_formats_is_checked(project):
    edit(project, "      role: owner\n", "      role: owner\n      dateIn: '15 January 2024'\n")
    with pytest.raises(ContractError) as raised:
        contracts.load_contract(project / REVENUE, root=project)
    assert raised.value.violations == [("$.team.members[0].dateIn", "'15 January 2024' is not a 'date'")]


def test_the_campaign_mart_is_unique_on_date_and_campaign_as_dbt_tests(products):
    table = products["marketing/campaign_performance"].table("marts.fct_campaign_performance")
    assert [c.name for c in table.columns if c.primary_key] == ["date", "campaign"]
    assert {"unique": {"column_name": "date || '|' || campaign"}} in marts_models()[
        "fct_campaign_performance"]["tests"]


def migrated_tables() -> dict[str, list[tuple[str, str, bool, bool]]]:
    """schema.table -> its columns (name, type, not null, primary key) after every migration."""
    tables: dict[str, list[list]] = {}
    for path in sorted(MIGRATIONS.glob("*.sql")):
        sql = re.sub(r"--[^\n]*", "", path.read_text())
        for name, body in re.findall(r"create table if not exists (\w+\.\w+) \((.*?)\n\);", sql, re.S):
            columns, keys = [], []
            for item in (i.strip() for i in re.split(r",\s*\n", body)):
                if m := re.fullmatch(r"primary key \(([^)]*)\)", item):
                    keys = [k.strip() for k in m[1].split(",")]
                elif item:
                    column, rest = item.split(None, 1)
                    kind = re.split(r"\s+(?:not null|primary key|default|check|generated)\b", rest)[0]
                    key = "primary key" in rest
                    columns.append([column, kind.replace(", ", ","), "not null" in rest or key, key])
            for column in columns:
                if column[0] in keys:
                    column[2:] = [True, True]
            tables[name] = columns
        for name, clauses in re.findall(r"alter table (\w+\.\w+)\s+(add column .*?);", sql, re.S):
            for column, kind in re.findall(r"add column if not exists (\w+) (\w+)", clauses):
                tables[name].append([column, kind, False, False])
    return {name: [tuple(c) for c in columns] for name, columns in tables.items()}


def test_the_migrations_are_read_as_postgresql_holds_them():
    tables = migrated_tables()
    assert tables["raw.billing__payments"][2] == ("amount", "numeric(18,2)", True, False)
    assert tables["raw.user_activity"][0] == ("event_id", "text", True, True)
    assert tables["ops.watermarks"][:2] == [("pipeline", "text", True, True), ("entity", "text", True, True)]
    assert tables["ops.file_manifest"][-3:] == [("source_tag", "text", False, False),
                                                 ("quality_status", "text", False, False),
                                                 ("quality_run_id", "text", False, False)]


def raw_tables(products) -> list[contracts.Table]:
    return [t for p in products.values() for t in p.tables if t.schema == "raw"]


@pytest.mark.parametrize("name", ["raw.user_activity", "raw.crm__customers", "raw.billing__payments",
                                  "raw.marketing__ad_spend"])
def test_raw_columns_are_the_migrations_columns(products, name):
    (table,) = [t for t in raw_tables(products) if t.name == name]
    assert [(c.name, c.physical_type, c.required, c.primary_key) for c in table.columns] == (
        migrated_tables()[name])
    assert {c.name for c in table.columns if c.unique} == {c.name for c in table.columns if c.primary_key}


@pytest.mark.parametrize("entity", [entities.USER_ACTIVITY, *entities.FILE_ENTITIES.values()],
                         ids=lambda e: e.table)
def test_raw_columns_are_the_entities_declarations(products, entity):
    (table,) = [t for t in raw_tables(products) if t.name == f"{entity.schema}.{entity.table}"]
    declared = [(c.name, c.physical_type, c.required) for c in table.columns if not c.name.startswith("_")]
    assert declared == [(c.name, c.pg_type, c.required) for c in entity.columns]
    assert entity.pipeline in next(p for p in products.values() if table in p.tables).pipelines


FILE_DROPS = "contracts/platform/file_drops.yaml"
FILE_POLICY = "value: {unknownField: discard_value, missingField: freeze, wrongType: discard_row}"


def test_each_raw_tables_drift_policy_is_its_contracts():
    assert entities.USER_ACTIVITY.drift is None  # none of its own: the contract's
    assert entities.USER_ACTIVITY.drift_policy == entities.DriftPolicy(
        unknown_field="discard_value", missing_field="discard_value", wrong_type="discard_row")
    for entity in entities.FILE_ENTITIES.values():
        assert entity.drift_policy == entities.DriftPolicy(
            unknown_field="discard_value", missing_field="freeze", wrong_type="discard_row")
    tried = entities.DriftPolicy(unknown_field="freeze")
    assert dataclasses.replace(entities.USER_ACTIVITY, drift=tried).drift_policy == tried


def test_a_drift_policy_read_from_the_contract_follows_its_edit(project):
    edit(project, FILE_POLICY, FILE_POLICY.replace("unknownField: discard_value", "unknownField: freeze"),
         FILE_DROPS)
    _, table = contracts.raw_table("raw.crm__customers", project)
    assert table.drift == {"unknown_field": "freeze", "missing_field": "freeze", "wrong_type": "discard_row"}


@pytest.mark.parametrize("old, new, path, message", [
    (FILE_POLICY, FILE_POLICY.replace("wrongType: discard_row", "wrongType: evolve"), FILE_DROPS,
     "schemaDrift: 'evolve' is not one of ['freeze', 'discard_row', 'discard_value']"),
    (FILE_POLICY, FILE_POLICY.replace(", wrongType: discard_row", ""), FILE_DROPS,
     "schemaDrift: 'wrongType' is a required property"),
    ("      - property: schemaDrift\n        " + FILE_POLICY + "\n", "", FILE_DROPS,
     "raw table raw.crm__customers declares no schemaDrift (customProperties: unknownField, "
     "missingField, wrongType, each one of freeze, discard_row, discard_value)"),
    ("    physicalName: marts.fct_daily_revenue\n", "    physicalName: marts.fct_daily_revenue\n"
     "    customProperties:\n      - property: schemaDrift\n        " + FILE_POLICY + "\n", REVENUE,
     "schemaDrift is a raw table's: what its loads do with drift"),
], ids=["an unknown mode", "a kind left out", "a raw table without one", "a mart with one"])
def test_a_drift_policy_the_loads_cannot_follow_is_refused(project, old, new, path, message):
    edit(project, old, new, path)
    with pytest.raises(ContractError) as raised:
        contracts.load_contract(project / path, root=project)
    assert any(message in text for _, text in raised.value.violations), raised.value.violations


AMOUNT_RULE = "kwargs: {column: amount, min_value: 0, strict_min: true, max_value: 100000}"
MART_RULE = ("        type: sql\n"
             "        query: select count(*) from {object} where not (paying_customers >= 0)\n"
             "        mustBe: 0\n")

@pytest.mark.parametrize("old, new, path, message", [
    ("type: expect_column_values_to_be_between", "type: expect_column_values_to_be_unique", FILE_DROPS,
     "implementation must be {type: expect_column_values_to_... or expect_column_pair_values_..., "
     "kwargs: {...}}: the raw gate checks it row by row"),
    ("type: expect_column_values_to_be_between", "type: expect_table_row_count_to_be_between", FILE_DROPS,
     "implementation must be {type: expect_column_values_to_..."),
    (AMOUNT_RULE, AMOUNT_RULE.replace("max_value: 100000", "max_value: 100000, mostly: 0.99"), FILE_DROPS,
     "kwargs.mostly is not supported: every row must pass (the gate checks in chunks)"),
    ("pattern: '^[A-Z]{2}$'\n            mustBe: 0", "pattern: '^[A-Z]{2}$'\n            mustBeLessThan: 5",
     FILE_DROPS, "a pattern is checked row by row: every value must match it (mustBe: 0)"),
    (MART_RULE, "        type: custom\n        engine: great-expectations\n        implementation: {type: "
     "expect_column_values_to_be_between, kwargs: {column: paying_customers, min_value: 0}}\n", REVENUE,
     "a Great Expectations rule is checked on a raw table only (by the raw gate)"),
], ids=["a uniqueness", "a table expectation", "mostly", "a pattern with a threshold", "on a mart"])
def test_a_quality_rule_no_run_can_check_is_refused(project, old, new, path, message):
    edit(project, old, new, path)
    with pytest.raises(ContractError) as raised:
        contracts.load_contract(project / path, root=project)
    assert any(message in text for _, text in raised.value.violations), raised.value.violations


@pytest.mark.parametrize("entity", list(entities.FILE_ENTITIES.values()), ids=lambda e: e.table)
def test_the_loaders_enumerations_are_the_contracts_valid_values(entity):
    _, table = contracts.raw_table(entity.qualified_name)
    valid = {r.column: tuple(r.arguments["validValues"]) for r in table.quality
             if r.metric == "invalidValues" and "validValues" in r.arguments}
    assert {c.name: c.allowed for c in entity.columns if c.kind == "enum"} == valid


def test_personal_data_is_classified_and_stays_out_of_the_marts(products):
    pii = {(t.name, c.name) for p in products.values() for t in p.tables for c in t.columns
           if c.classification == "pii"}
    assert pii == {("raw.crm__customers", "email"), ("raw.crm__customers", "full_name")}
    # The customer id is one pseudonymous key from the raw tables to the mart: classified alike.
    assert [products[k].table(t).classifications()[c] for k, t, c in [
        ("finance/revenue", "marts.dim_customers", "customer_id"),
        ("platform/file_drops", "raw.crm__customers", "customer_id"),
        ("platform/file_drops", "raw.billing__payments", "customer_id"),
        ("product/user_activity", "raw.user_activity", "user_id"),
    ]] == ["confidential"] * 4
    marts = [c.classification for _, t in marts_tables(products) for c in t.columns]
    assert "pii" not in marts and {"public", "internal", "confidential"} == set(marts)


# --- the catalogue --------------------------------------------------------------------------

def test_the_catalogue_json_holds_the_revenue_product(products):
    catalogue = json.loads(contracts.products_command(as_json=True))
    keys = [f"{p['domain']}/{p['product']}" for p in catalogue]
    assert keys == sorted(keys) and set(SHIPPED) <= set(keys)
    for entry in catalogue:
        assert {"domain", "product", "version", "owner_email", "tables", "pipelines",
                "alert_routes"} <= set(entry)
    revenue = catalogue[keys.index("finance/revenue")]
    assert revenue == {
        "domain": "finance",
        "product": "revenue",
        "version": "1.0.0",
        "status": "active",
        "id": "e5a0fc03-9e08-5111-9eb2-5574b0787210",
        "contract": "contracts/finance/revenue.yaml",
        "owner": "finance-data",
        "owner_email": "finance-data@example.com",
        "tables": ["marts.fct_daily_revenue", "marts.dim_customers"],
        "pipelines": ["warehouse_elt"],
        "dbt_models": ["fct_daily_revenue", "dim_customers"],
        "triggers": [
            {"pipeline": "warehouse_elt", "name": "on_file_arrival", "schedule_interval": "*/5 * * * *",
             "sla_seconds": 86400},
            {"pipeline": "warehouse_elt", "name": "daily_warehouse_elt_0300_utc",
             "schedule_interval": "0 3 * * *", "sla_seconds": 7200},
        ],
        "slos": [
            {"property": "frequency", "value": 1, "unit": "d", "element": None},
            {"property": "latency", "value": 5, "unit": "h", "element": "fct_daily_revenue.date"},
            {"property": "retention", "value": 2, "unit": "y", "element": None},
        ],
        "success_rate_objective": {"target": 0.99, "window": "30d"},
        "alert_routes": [{"name": "finance-data", "email": "finance-data@example.com",
                          "pagerduty_routing_key_env": "PAGERDUTY_ROUTING_KEY_FINANCE"}],
    }
    assert catalogue[keys.index("product/user_activity")]["triggers"][0] == {
        "pipeline": "user_activity_ingest", "name": "daily_user_activity_0200_utc",
        "schedule_interval": "0 2 * * *", "sla_seconds": 7200}


def test_the_catalogue_text_lists_each_product_and_its_promises():
    text = contracts.products_command(as_json=False)
    lines = text.splitlines()
    assert lines[0].split() == ["DOMAIN", "PRODUCT", "VERSION", "STATUS", "OWNER", "OWNER", "E-MAIL",
                                "TABLES", "PIPELINES"]
    assert lines[1].split() == ["finance", "revenue", "1.0.0", "active", "finance-data",
                                "finance-data@example.com", "2", "warehouse_elt"]
    block = text.split("\n\n")[1].splitlines()
    assert block == [
        "finance/revenue 1.0.0 (active), owner finance-data <finance-data@example.com>",
        "  contract     contracts/finance/revenue.yaml",
        "  tables       marts.fct_daily_revenue, marts.dim_customers",
        "  pipelines    warehouse_elt",
        "  dbt models   fct_daily_revenue, dim_customers",
        "  triggers     warehouse_elt:on_file_arrival (*/5 * * * *, SLA 1d), "
        "warehouse_elt:daily_warehouse_elt_0300_utc (0 3 * * *, SLA 2h)",
        "  SLOs         frequency 1 d; latency 5 h; retention 2 y; run success rate 99.0% over 30d",
        "  alert routes finance-data <finance-data@example.com>, "
        "PagerDuty key in $PAGERDUTY_ROUTING_KEY_FINANCE",
    ]


def test_the_contracts_name_routing_key_variables_never_keys():
    for path in contracts.contract_paths():
        text = path.read_text()
        assert not re.search(r"\b[0-9a-f]{32}\b", text), path
        assert re.findall(r"pagerdutyRoutingKeyEnv: (\S+)", text) == [
            f"PAGERDUTY_ROUTING_KEY_{path.parent.name.upper()}"]


# --- Mage's tags are the contracts' -----------------------------------------------------------

def pipeline_metadata(name: str) -> dict:
    return yaml.safe_load((ROOT / "pipelines" / name / "metadata.yaml").read_text())


@pytest.mark.parametrize("name", PIPELINES)
def test_a_pipelines_domain_and_product_tags_are_its_contracts(products, name):
    tags = pipeline_metadata(name)["tags"]
    derived = contracts.pipeline_tags(products.values())
    assert tuple(t for t in tags if t.startswith(("domain:", "product:"))) == derived[name]
    owners = [t.removeprefix("owner:") for t in tags if t.startswith("owner:")]
    assert len(owners) == 1 and owners[0] in {p.owner for p in products.values()}


def test_every_pipeline_belongs_to_a_product(products):
    tags = contracts.pipeline_tags(products.values())
    assert {name: tags[name] for name in ("user_activity_ingest", "warehouse_elt")} == {
        "user_activity_ingest": ("domain:product", "product:user_activity"),
        "warehouse_elt": ("domain:finance", "domain:marketing", "domain:platform", "domain:product",
                          "product:campaign_performance", "product:file_drops", "product:revenue",
                          "product:user_activity"),
    }
    assert sorted(contracts.pipeline_tags(products.values())) == PIPELINES
    scheduled = {(name, t["name"]) for name in PIPELINES for t in
                 yaml.safe_load((ROOT / "pipelines" / name / "triggers.yaml").read_text())["triggers"]}
    covered = {(t.pipeline, t.name) for p in products.values() for t in p.triggers}
    assert covered == scheduled


def test_a_tag_that_disagrees_with_the_contracts_is_caught(project, products):
    """The tags test reads the files as they are: a product dropped from a contract shows."""
    edit(project, "value: [user_activity_ingest, warehouse_elt]", "value: [user_activity_ingest]",
         path="contracts/product/user_activity.yaml")
    derived = contracts.pipeline_tags(contracts.load_products(project))
    tags = pipeline_metadata("warehouse_elt")["tags"]
    assert tuple(t for t in tags if t.startswith(("domain:", "product:"))) != derived["warehouse_elt"]
    assert "product:user_activity" not in derived["warehouse_elt"]
