"""A new data product: ``python -m mage_project new-product <domain> <name> [--from SOURCE]``.

Writes, from what the project already declares about ``SOURCE`` (a raw table such as
``raw.user_activity``, the default, or a dbt model: its columns from the dbt YAML, their types
and classifications from the contracts), a product that passes ``check`` as written:

- ``contracts/<domain>/<name>.yaml``: ODCS v3.1.0; the domain's owning team, e-mail and alert
  route when another contract of the domain names them, else ``<domain>-data`` with
  ``<domain>-data@example.com`` and ``PAGERDUTY_ROUTING_KEY_<DOMAIN>``; SLAs and a run success-rate
  objective;
- ``dbt/warehouse/models/marts/<name>.sql`` and its entry in ``_marts.yml`` (every column
  described and typed; the primary key tested unique and not null): the source's columns, pii ones left out
  (DP016), selected from the source's staging model when it has one;
- ``pipelines/<name>/`` (tags ``domain:``, ``product:``, ``owner:``; a daily trigger with an SLA),
  whose one block (``data_loaders/build_dbt_<name>.py``) builds and publishes the mart by
  write-audit-publish (``quality_gates.build_and_publish``: built into ``marts__audit``, held to
  its contract, then swapped in) and tests the build with ``checks.dbt_build_passed``, and the
  project's ``record_run_failure`` callback;
- ``tests/unit/test_<name>_product.py``.

A name already taken (its contract, model, pipeline, block or test file exists) is refused before
anything is written (``ScaffoldError``; the command exits 2).
"""

from __future__ import annotations

import re
import string
import uuid
from dataclasses import dataclass
from pathlib import Path

import yaml

from mage_project import contracts, pipeline_metadata
from mage_project.config import PROJECT_ROOT

DEFAULT_SOURCE = "raw.user_activity"
STAGING = Path("dbt/warehouse/models/staging")
MODELS = Path("dbt/warehouse/models")
MARTS = MODELS / "marts"
MARTS_YAML = MARTS / "_marts.yml"
NAME = re.compile(r"^[a-z][a-z0-9_]*$")
MAX_NAME = 63  # PostgreSQL's identifier limit: the name is the mart's table name
# The namespace of the contracts' ids (uuid5 of "<domain>/<product>").
ID_NAMESPACE = uuid.UUID("6ba7b811-9dad-11d1-80b4-00c04fd430c8")
SCHEDULE = "0 4 * * *"  # after the ingestion (02:00) and warehouse_elt (03:00)
SLA_SECONDS = 7200
# Types a mart column takes as it is, and how a number of unknown scale is published.
PASSED_TYPES = ("string", "integer", "number", "boolean", "date", "timestamp")
MONEY = "numeric(18,2)"


# The mart, as the house writes models: import the input in a CTE, end in select * from final.
MODEL = string.Template("""\
-- $name: the publishable columns of $source, one row per row of it.
with source as (
    select * from $relation
),

final as (
    select
        $columns
    from source
)

select * from final
""")


# A contract's sql quality rule: the rows that break the invariant, none expected ({object} is the table).
RULE_QUERY = string.Template("select count(*) from {object} where not ($expression)")


class ScaffoldError(ValueError):
    """The product cannot be written: the message says why; nothing was written."""


@dataclass(frozen=True)
class SourceColumn:
    name: str
    logical_type: str
    physical_type: str
    classification: str
    description: str
    required: bool = False
    primary_key: bool = False
    timezone: bool = False


@dataclass(frozen=True)
class Source:
    name: str  # as given: raw.user_activity or a model name
    relation: str  # the Jinja the mart selects from: {{ ref('...') }} or {{ source('...', '...') }}
    columns: tuple[SourceColumn, ...]
    left_out: tuple[str, ...]  # columns not published, and why


# ---------------------------------------------------------------------------------------------
# What the project says about the source.

def _yaml_models(root: Path) -> dict[str, dict]:
    found: dict[str, dict] = {}
    for path in sorted((root / MODELS).rglob("*.yml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for model in data.get("models") or []:
            if isinstance(model, dict) and "name" in model:
                found.setdefault(model["name"], model)
    return found


def _staging_model_of(root: Path, table: str) -> str | None:
    """The staging model that reads the raw table ``schema.table`` (its ``source()`` call)."""
    schema, _, name = table.partition(".")
    call = re.compile(rf"source\(\s*['\"]{re.escape(schema)}['\"]\s*,\s*['\"]{re.escape(name)}['\"]\s*\)")
    for path in sorted((root / STAGING).glob("*.sql")):
        if call.search(path.read_text(encoding="utf-8")):
            return path.stem
    return None


def _column(column: contracts.Column, description: str | None = None) -> SourceColumn:
    return SourceColumn(name=column.name, logical_type=column.logical_type,
                        physical_type=column.physical_type, classification=column.classification,
                        description=" ".join((description or column.description).split()),
                        required=column.required,
                        primary_key=column.primary_key,
                        timezone=column.physical_type.lower() in ("timestamptz", "timestamp with time zone"))


def resolve_source(source: str, root: Path = PROJECT_ROOT) -> Source:
    """The source's columns, each with its contract's type and classification; pii, JSON and
    columns of no known type left out, saying why."""
    tables = {t.name: t for p in contracts.load_products(root) for t in p.tables}
    models = _yaml_models(root)
    if "." in source:
        if source not in tables:
            raise ScaffoldError(f"--from {source}: no contract declares the table {source}")
        table = tables[source]
        staging = _staging_model_of(root, source)
        if staging is None:
            schema, _, name = source.partition(".")
            relation = f"{{{{ source('{schema}', '{name}') }}}}"
            model_columns = None
        else:
            relation = f"{{{{ ref('{staging}') }}}}"
            model_columns = {c["name"]: c.get("description")
                             for c in models.get(staging, {}).get("columns") or []}
        by_name = {c.name: c for c in table.columns}
        names = list(model_columns) if model_columns is not None else list(by_name)
        typed = {n: _column(by_name[n], model_columns.get(n) if model_columns else None)
                 for n in names if n in by_name}
        unknown = [n for n in names if n not in by_name]
    else:
        if source not in models:
            raise ScaffoldError(f"--from {source}: no dbt model {source} is documented under {MODELS}")
        model = models[source]
        contract_table = tables.get(f"marts.{source}")
        raw = next((name for name in tables if _staging_model_of(root, name) == source), None)
        known = {c.name: c for c in (contract_table or tables.get(raw or "")).columns} \
            if (contract_table or raw) else {}
        names = [c["name"] for c in model.get("columns") or []]
        descriptions = {c["name"]: c.get("description") for c in model.get("columns") or []}
        typed = {n: _column(known[n], descriptions[n]) for n in names if n in known}
        unknown = [n for n in names if n not in known]
        relation = f"{{{{ ref('{source}') }}}}"
    columns, left_out = [], [f"{n} (no contract gives its type)" for n in unknown]
    for column in typed.values():
        if column.classification == "pii":
            left_out.append(f"{column.name} (pii)")
        elif column.logical_type not in PASSED_TYPES:
            left_out.append(f"{column.name} ({column.logical_type})")
        else:
            columns.append(column)
    if not columns:
        raise ScaffoldError(f"--from {source}: no column of it can be published")
    return Source(name=source, relation=relation, columns=tuple(columns), left_out=tuple(left_out))


def _owner(root: Path, domain: str) -> tuple[str, str, str, str]:
    """(team, owner e-mail, alert route name, routing key variable) of the domain."""
    for product in contracts.load_products(root):
        if product.domain == domain and product.alert_routes:
            route = product.alert_routes[0]
            return product.owner, product.owner_email, route.name, route.pagerduty_routing_key_env
    team = f"{domain.replace('_', '-')}-data"
    return team, f"{team}@example.com", team, f"PAGERDUTY_ROUTING_KEY_{domain.upper()}"


# ---------------------------------------------------------------------------------------------
# The files.

def _invariant(name: str, source: Source) -> tuple[str, str] | None:
    """(name, SQL expression) of the mart's one invariant as written: its key (or first required
    column) is always there. A placeholder the owning team replaces with the product's own rules,
    asserted both by dbt (expression_is_true) and by the contract (a quality rule of type sql)."""
    column = next((c for c in source.columns if c.primary_key), None) or next(
        (c for c in source.columns if c.required), None)
    if column is None:
        return None
    return f"{name}_{column.name}_is_present", f"{column.name} is not null"


def _published_type(column: SourceColumn) -> str:
    if column.logical_type == "number" and "(" not in column.physical_type:
        return MONEY  # a number of unknown scale: published as money, the same on both warehouses
    return column.physical_type


def _contract(domain: str, name: str, source: Source, owner: tuple[str, str, str, str]) -> str:
    team, email, route, key_env = owner
    properties = []
    for column in source.columns:
        prop: dict = {"name": column.name, "logicalType": column.logical_type}
        if column.timezone:
            prop["logicalTypeOptions"] = {"timezone": True}
        prop["physicalType"] = _published_type(column)
        if column.required or column.primary_key:
            prop["required"] = True
        if column.primary_key:
            prop.update(unique=True, primaryKey=True, primaryKeyPosition=1)
        prop.update(classification=column.classification, description=column.description)
        properties.append(prop)
    document = {
        "apiVersion": contracts.API_VERSION, "kind": "DataContract",
        "id": str(uuid.uuid5(ID_NAMESPACE, f"{domain}/{name}")), "name": name, "version": "0.1.0",
        "status": "active", "domain": domain, "dataProduct": name, "tenant": "mage-project",
        "description": {
            "purpose": f"The columns of {source.name} that may be published, as the mart marts.{name}.",
            "usage": f"Read marts.{name}; it is rebuilt daily by the pipeline {name}.",
            "limitations": "Generated by new-product: say here what the product does not promise.",
        },
        "team": {"name": team, "members": [{"username": email, "name": team, "role": contracts.OWNER_ROLE}]},
        "schema": [{
            "name": name, "physicalName": f"marts.{name}", "physicalType": "table",
            "description": f"One row per row of {source.name}.", "properties": properties,
        }],
        "slaProperties": [
            {"property": "frequency", "value": 1, "unit": "d",
             "description": f"Rebuilt daily at 04:00 UTC by the pipeline {name}."},
            {"property": "latency", "value": SLA_SECONDS // 3600, "unit": "h",
             "description": "The daily build is done two hours after it starts (its trigger's SLA)."},
            {"property": "retention", "value": 2, "unit": "y",
             "description": f"As long as {source.name} keeps its rows."},
        ],
        "customProperties": [
            {"property": "pipelines", "value": [name]},
            {"property": "dbtModels", "value": [name]},
            {"property": "alertRoutes", "value": [{"name": route, "email": email,
                                                    "pagerdutyRoutingKeyEnv": key_env}]},
            {"property": "successRateObjective", "value": {"target": 0.99, "window": "30d"},
             "description": "Share of the producing pipeline's scheduled runs that succeed, over 30 days."},
        ],
    }
    invariant = _invariant(name, source)
    if invariant is not None:
        rule, expression = invariant
        document["schema"][0]["quality"] = [{
            "name": rule, "description": "Generated by new-product: replace with the product's own rules.",
            "type": "sql", "query": RULE_QUERY.substitute(expression=expression),
            "mustBe": 0, "dimension": "completeness", "severity": "error"}]
    header = (f"# What the {domain} domain's {name} product promises (ODCS v3.1.0; contracts/schema/).\n"
              f"# Written by python -m mage_project new-product {domain} {name} --from {source.name}.\n")
    return header + yaml.safe_dump(document, sort_keys=False, width=100, allow_unicode=True)


def _model_sql(name: str, source: Source) -> str:
    lines = []
    for column in source.columns:
        published = _published_type(column)
        if published != column.physical_type:
            lines.append(f"cast({column.name} as {published.replace(',', ', ')}) as {column.name}")
        else:
            lines.append(column.name)
    return MODEL.substitute(name=name, source=source.name, relation=source.relation,
                            columns=",\n        ".join(lines))


def _model_entry(name: str, source: Source) -> str:
    """The model's entry, as a block of the ``models:`` list of ``_marts.yml`` (its indentation)."""
    columns = []
    for column in source.columns:
        entry: dict = {"name": column.name, "description": column.description,
                       "data_type": _published_type(column)}
        tests = (["not_null"] if column.required or column.primary_key else []) + \
            (["unique"] if column.primary_key else [])
        if tests:
            entry["tests"] = tests
        columns.append(entry)
    model: dict = {"name": name,
                   "description": f"The publishable columns of {source.name} (contracts: marts.{name})."}
    invariant = _invariant(name, source)
    if invariant is not None:
        model["tests"] = [{"expression_is_true": {"name": invariant[0],
                                                  "arguments": {"expression": invariant[1]}}}]
    model["columns"] = columns
    text = yaml.safe_dump([model], sort_keys=False, width=100, indent=2)
    # safe_dump writes a list's items at the left margin: indent them under models:, as the file does.
    lines = [("  " + line) if line else line for line in text.splitlines()]
    return "\n".join(lines) + "\n"


def _with_entry(marts_yaml: str, name: str, entry: str) -> str:
    """_marts.yml's text with the model's entry appended to its models list (the file's last key)."""
    text = marts_yaml if marts_yaml.endswith("\n") else marts_yaml + "\n"
    updated = text + "\n" + entry
    models = (yaml.safe_load(updated) or {}).get("models") or []
    if [m.get("name") for m in models][-1:] != [name]:
        raise ScaffoldError(f"{MARTS_YAML}: models is not its last key, so {name}'s entry cannot be appended")
    return updated


def _block(name: str) -> str:
    return f'''"""Build the product's mart with dbt (the model, what it is built from, and their tests) into
the audit schema, hold it to its contract, then publish it (write-audit-publish) on the configured
warehouse. Returns the build's summary (models, tests, statuses, published), not the data.
"""
from mage_project import checks, runs
from mage_project.pipelines import quality_gates

if 'data_loader' not in globals():
    from mage_ai.data_preparation.decorators import data_loader
if 'test' not in globals():
    from mage_ai.data_preparation.decorators import test

PRODUCT = '{name}'


@data_loader
def build_dbt_{name}(*args, **kwargs):
    return quality_gates.build_and_publish(PRODUCT, runs.run_id_for(kwargs), pipeline=PRODUCT)


@test
def test_dbt_build_passed(output, *args) -> None:
    checks.require(checks.dbt_build_passed(output))
'''


def _block_entry(uuid_: str, kind: str, downstream: list[str], upstream: list[str]) -> dict:
    return {"all_upstream_blocks_executed": not upstream, "color": None, "configuration": {},
            "downstream_blocks": downstream, "executor_config": None, "executor_type": "local_python",
            "has_callback": False, "language": "python", "name": uuid_, "retry_config": None,
            "status": "not_executed", "timeout": None, "type": kind, "upstream_blocks": upstream,
            "uuid": uuid_}


def _pipeline(domain: str, name: str, team: str) -> str:
    block = f"build_dbt_{name}"
    document = {
        "blocks": [_block_entry(block, "data_loader", [], [])],
        "cache_block_output_in_memory": False,
        "callbacks": [_block_entry("record_run_failure", "callback", [], [block])],
        "concurrency_config": {}, "conditionals": [], "created_at": None, "data_integration": None,
        "description": f"Builds marts.{name} (the {domain}/{name} data product) with dbt, daily.",
        "executor_config": {}, "executor_count": 1, "executor_type": None, "extensions": {},
        "name": name, "notification_config": {}, "remote_variables_dir": None, "retry_config": {},
        "run_pipeline_in_one_process": False, "settings": {"triggers": None}, "spark_config": {},
        "tags": [f"owner:{team}", f"domain:{domain}", f"product:{name}"], "type": "python",
        "uuid": name, "variables": {}, "variables_dir": None, "widgets": [],
    }
    return pipeline_metadata.committed_form(yaml.safe_dump(document))


def _triggers(name: str, team: str) -> str:
    document = {"triggers": [{
        "description": f"Daily at 04:00 UTC, after warehouse_elt. Owner {team}.",
        "envs": [], "name": f"daily_{name}_0400_utc", "pipeline_uuid": name,
        "schedule_interval": SCHEDULE, "schedule_type": "time",
        "settings": {"skip_if_previous_running": True, "timeout": 10800, "timeout_status": "failed"},
        "sla": SLA_SECONDS, "start_time": "2026-11-01 04:00:00+00:00", "status": "active",
        "token": None, "variables": {},
    }]}
    return yaml.safe_dump(document, sort_keys=False, width=100)


def _tests(domain: str, name: str) -> str:
    return f'''"""The {domain}/{name} data product, as new-product wrote it: its contract loads, the
project's rules find nothing in its files, and its block's @test holds the dbt build to
checks.dbt_build_passed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from mage_project import contracts, policy

ROOT = Path(__file__).resolve().parents[2]
FILES = ("contracts/{domain}/{name}.yaml", "dbt/warehouse/models/marts/{name}.sql",
         "dbt/warehouse/models/marts/_marts.yml", "pipelines/{name}/metadata.yaml",
         "pipelines/{name}/triggers.yaml", "data_loaders/build_dbt_{name}.py")


def test_the_contract_names_the_mart_its_pipeline_and_model():
    product = contracts.load_contract(Path(FILES[0]), ROOT)
    assert (product.domain, product.product) == ("{domain}", "{name}")
    assert product.table_names == ("marts.{name}",)
    assert (product.pipelines, product.dbt_models) == (("{name}",), ("{name}",))
    assert [t.name for t in product.triggers] == ["daily_{name}_0400_utc"]


def test_the_rules_find_nothing_in_the_products_files():
    assert [f.text() for f in policy.check(ROOT) if f.path in FILES] == []


def block():
    spec = importlib.util.spec_from_file_location("build_dbt_{name}", ROOT / FILES[-1])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_blocks_test_passes_a_build_and_fails_a_failed_one():
    module = block()
    module.test_dbt_build_passed({{"models": 2, "tests": 3, "statuses": {{"success": 2, "pass": 3}}}})
    with pytest.raises(AssertionError, match="dbt_build_passed FAILED"):
        module.test_dbt_build_passed({{"models": 2, "tests": 3, "statuses": {{"success": 2, "fail": 1}}}})
'''


def planned_files(domain: str, name: str) -> list[Path]:
    """The files a product writes (``MARTS_YAML``, which it adds an entry to, apart)."""
    return [contracts.CONTRACTS / domain / f"{name}.yaml", MARTS / f"{name}.sql",
            Path("pipelines") / name / "metadata.yaml", Path("pipelines") / name / "triggers.yaml",
            Path("data_loaders") / f"build_dbt_{name}.py", Path("tests/unit") / f"test_{name}_product.py"]


def _taken(root: Path, domain: str, name: str) -> list[str]:
    taken = [str(p) for p in planned_files(domain, name) if (root / p).exists()]
    taken += [p.relative_to(root).as_posix() for p in (root / contracts.CONTRACTS).glob(f"*/{name}.yaml")
              if p.relative_to(root) != contracts.CONTRACTS / domain / f"{name}.yaml"]
    taken += [p.relative_to(root).as_posix() for p in (root / MODELS).rglob(f"{name}.sql")
              if p.relative_to(root) != MARTS / f"{name}.sql"]
    if (root / "pipelines" / name).exists() and str(Path("pipelines") / name / "metadata.yaml") not in taken:
        taken.append(f"pipelines/{name}/")
    if name in _yaml_models(root):
        taken.append(f"a dbt YAML entry of model {name}")
    return sorted(set(taken))


def new_product(domain: str, name: str, source: str = DEFAULT_SOURCE,
                root: Path = PROJECT_ROOT) -> tuple[list[Path], Source]:
    """Write the product's files; returns them (relative to ``root``) and the source read.
    ``ScaffoldError`` before anything is written when a name is taken or the source unusable."""
    root = Path(root)
    for what, value in (("domain", domain), ("name", name)):
        if not NAME.match(value) or len(value) > MAX_NAME:
            raise ScaffoldError(
                f"{what} {value!r} is not a lower-case name ([a-z][a-z0-9_]*, at most {MAX_NAME} characters)")
    taken = _taken(root, domain, name)
    if taken:
        raise ScaffoldError(f"{name} is taken: {', '.join(taken)} already exist(s); nothing was written")
    resolved = resolve_source(source, root)
    owner = _owner(root, domain)
    marts_yaml = _with_entry((root / MARTS_YAML).read_text(encoding="utf-8"), name,
                             _model_entry(name, resolved))
    contents = [_contract(domain, name, resolved, owner), _model_sql(name, resolved),
                _pipeline(domain, name, owner[0]), _triggers(name, owner[0]), _block(name),
                _tests(domain, name)]
    files = planned_files(domain, name)
    for path, text in zip(files, contents, strict=True):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text, encoding="utf-8")
    (root / MARTS_YAML).write_text(marts_yaml, encoding="utf-8")
    return files, resolved


def new_product_command(domain: str, name: str, source: str | None, root: Path = PROJECT_ROOT) -> int:
    """``python -m mage_project new-product``: 0 and the files written, or 2 and why not."""
    import sys

    try:
        files, resolved = new_product(domain, name, source or DEFAULT_SOURCE, root)
    except (ScaffoldError, contracts.ContractError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"new product {domain}/{name} from {resolved.name} "
          f"({len(resolved.columns)} columns: {', '.join(c.name for c in resolved.columns)})")
    if resolved.left_out:
        print(f"left out: {', '.join(resolved.left_out)}")
    for path in files:
        print(f"  wrote {path}")
    print(f"  added {name} to {MARTS_YAML}")
    print(f"next: python -m mage_project check; python -m mage_project run {name}")
    return 0
