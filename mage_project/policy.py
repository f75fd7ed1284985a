"""Policy-as-code: ``python -m mage_project check [--json | --format FORMAT] [--base REF]``.

The platform's rules for a project, as plain Python: one function per rule, all listed in
``RULES`` below (id, severity, how to fix it), each made to fire by ``tests/unit/test_policy.py``.
A finding is ``<RULE-ID> <path>[:<line>]: <what is wrong>: <how to fix it>``; ``check`` exits 1
when any finding is an error. It reads files only: the contracts (through
``mage_project.contracts``), the dbt models' YAML and SQL, the migrations, the pipelines'
metadata.yaml and triggers.yaml, the block files, ``io_config.yaml`` and git (for ``--base``, and the
commits DP015 scans since the secrets baseline's last change). No warehouse, no network, no dbt run
(``dbt/warehouse/target/manifest.json`` is not needed).

No pii in clear (DP016) reads the models' SQL, not column names: each model's Jinja is rendered
here as dbt renders it on PostgreSQL (``ref``, ``source``, the project's own macros), and every
marts column is traced by ``sqlglot.lineage`` through the staging and intermediate models to the
raw columns it is computed from. A path that reaches a column its contract classifies ``pii``
must pass a hash (md5, sha256, sha2, hash, or a function or macro named for masking or hashing),
and the mart's contract must say so: the column classified ``pii`` with
``customProperties: [{property: masking, value: sha256}]`` (``md5`` the other value
``mage_project.contracts`` takes). A pii column used only in a join or a filter is not published.

Breaking changes (DP014) compare each contract with the same file at ``--base`` (default: the merge
base with ``main``; ``HEAD`` when that is ``HEAD`` itself, so an uncommitted change is compared with
the last commit). An error unless the contract's major version was raised:

- a table removed (datacontract-cli: ``model_removed``, an error; dbt errors only for a versioned
  contracted model and warns for an unversioned one);
- a column removed (dbt: a column removed; datacontract-cli: ``field_removed``);
- ``logicalType`` or ``physicalType`` changed (dbt: ``data_type`` changed; datacontract-cli:
  ``field_type_updated``), types compared in their canonical form (``numeric(18,2)`` is
  ``numeric(18, 2)``);
- ``required`` or ``unique`` changed, either way (datacontract-cli: ``field_required_updated``,
  ``field_unique_updated``). Here we differ from dbt, which breaks only on an enforced constraint
  removed (``enforced_column_constraint_removed``), never on one added: the issue counts a column
  turned required as breaking (a producer's rows with nulls would now fail), and dropping it
  loosens what consumers relied on;
- ``primaryKey`` changed, either way. Here we differ: datacontract-cli only warns
  (``field_primary_updated``); dbt breaks on a primary key constraint removed, not added;
- a value removed from an enumeration (ODCS has no ``enum``: a quality rule ``invalidValues`` with
  ``arguments.validValues``). Here we differ too: datacontract-cli's ``field_enum_updated`` is an
  error whatever changed; as the issue asks, a value added is fine (an enumeration where there
  was none is a tighter constraint);
- a tighter constraint: a ``logicalTypeOptions`` bound added or moved inwards (``minLength``,
  ``maxLength``, ``minimum``, ``maximum``, their exclusive forms, ``minItems``, ``maxItems``), a
  ``pattern``, ``format`` or ``multipleOf`` added or changed, or a quality rule's
  ``invalidValues`` pattern added or changed (datacontract-cli: ``field_*_updated`` errors and
  ``*_added`` warnings; here an added constraint breaks too, as the issue asks; a looser one is fine);

Additions (a table, a column, an enumeration value) are fine. Not compared: descriptions,
classifications (datacontract-cli errors on ``field_classification_updated`` and
``field_pii_removed``; here DP016 holds what is published to the pii classification instead),
quality rules other than enumerations and patterns, SLAs, and dbt's enforcement and
materialization switches (the contracts have neither). A contract deleted counts as all its tables removed.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import yaml

from mage_project import contracts
from mage_project.config import PROJECT_ROOT

ERROR, WARNING = "error", "warning"
Hit = tuple[str, int | None, str]  # (path relative to the project, line or None, what is wrong)


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str
    path: str
    line: int | None
    message: str

    def text(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{self.rule} {where}: {self.message}"

    def as_dict(self) -> dict:
        return {"rule": self.rule, "severity": self.severity, "path": self.path, "line": self.line,
                "message": self.message}


@dataclass(frozen=True)
class Rule:
    id: str
    severity: str
    fix: str  # one line: how to fix it; every finding's message ends with it
    check: Callable[[Project], Iterable[Hit]]


# ---------------------------------------------------------------------------------------------
# What the rules read, once per run.

MARTS_MODELS = Path("dbt/warehouse/models/marts")
DBT_MODELS = Path("dbt/warehouse/models")
DBT_MACROS = Path("dbt/warehouse/macros")
MIGRATIONS = Path("mage_project/warehouse/sql/postgres")
IO_CONFIG = Path("io_config.yaml")
BASELINE = Path(".secrets.baseline")
BLOCK_FOLDERS = {"data_loader": "data_loaders", "transformer": "transformers",
                 "data_exporter": "data_exporters", "custom": "custom", "sensor": "sensors",
                 "callback": "callbacks", "conditional": "conditionals"}
# Blocks whose output Mage hands to their @tests: these must have one (a sensor, a callback
# and a condition return no data to test).
TESTED_BLOCK_TYPES = ("data_loader", "transformer", "data_exporter", "custom")


def _path_tuple(json_path: str) -> tuple:
    """``$.schema[0].properties[2].name`` -> ``("schema", 0, "properties", 2, "name")``."""
    parts: list = []
    for key, index, quoted in re.findall(r"\.([^.\[\]]+)|\[(\d+)\]|\['([^']*)'\]", json_path):
        parts.append(int(index) if index else (key or quoted))
    return tuple(parts)


@dataclass
class YamlFile:
    """A YAML file's data and the line of each of its nodes (by path of keys and indexes)."""

    data: object
    lines: dict[tuple, int]

    @classmethod
    def read(cls, path: Path) -> YamlFile:
        text = path.read_text(encoding="utf-8")
        lines: dict[tuple, int] = {}

        def walk(node: yaml.Node, at: tuple) -> None:
            lines.setdefault(at, node.start_mark.line + 1)
            if isinstance(node, yaml.MappingNode):
                for key, value in node.value:
                    lines[(*at, key.value)] = key.start_mark.line + 1
                    walk(value, (*at, key.value))
            elif isinstance(node, yaml.SequenceNode):
                for index, item in enumerate(node.value):
                    walk(item, (*at, index))

        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            return cls(None, {})
        if root is not None:
            walk(root, ())
        return cls(data, lines)

    def line(self, at: tuple | str) -> int | None:
        """The line of ``at`` (a key path or a JSON path), or of its nearest ancestor."""
        at = _path_tuple(at) if isinstance(at, str) else at
        while at and at not in self.lines:
            at = at[:-1]
        return self.lines.get(at)


@dataclass
class Project:
    root: Path
    base: str | None = None  # git ref for DP014 and DP015; None: the default base
    _contract_errors: dict[str, contracts.ContractError] = field(default_factory=dict)

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    @cached_property
    def contract_files(self) -> dict[str, YamlFile]:
        return {self.rel(p): YamlFile.read(p) for p in contracts.contract_paths(self.root)}

    @cached_property
    def products(self) -> list[contracts.Product]:
        """The products of the contracts that are valid (the others are DP001's findings)."""
        valid = []
        for path in self.contract_files:
            try:
                valid.append(contracts.load_contract(Path(path), self.root))
            except contracts.ContractError as error:
                self._contract_errors[path] = error
        return valid

    def contract_errors(self) -> dict[str, contracts.ContractError]:
        self.products  # noqa: B018 - loads them
        return self._contract_errors

    @cached_property
    def pipelines(self) -> dict[str, YamlFile]:
        return {p.parent.name: YamlFile.read(p) for p in sorted(self.root.glob("pipelines/*/metadata.yaml"))}

    @cached_property
    def dbt_models(self) -> dict[str, tuple[str, YamlFile, tuple]]:
        """dbt model name -> (YAML file, the file, key path of its entry) for every documented model."""
        found = {}
        for path in sorted((self.root / DBT_MODELS).rglob("*.yml")):
            doc = YamlFile.read(path)
            models = doc.data.get("models") if isinstance(doc.data, dict) else None
            for index, model in enumerate(models or []):
                if isinstance(model, dict) and "name" in model:
                    found.setdefault(model["name"], (self.rel(path), doc, ("models", index)))
        return found

    @cached_property
    def rendered_models(self) -> dict[str, tuple[Path, str | None, str | None]]:
        return _rendered_models(self.root)

    @cached_property
    def mart_lineage(self) -> tuple[dict[tuple[str, str], object], list[Hit]]:
        """(each mart column's sqlglot lineage through the rendered staging and intermediate
        models, keyed (mart, column); the marts and columns that could not be traced, as findings)."""
        return _mart_lineage(self)

    @cached_property
    def migration_tables(self) -> dict[str, tuple[str, dict[str, tuple[str, bool]]]]:
        return _migration_tables(self.root / MIGRATIONS, self.rel)

    def products_of(self, pipeline: str) -> list[contracts.Product]:
        return [p for p in self.products if pipeline in p.pipelines]

    def table_line(self, product: contracts.Product, table: int, column: int | None = None,
                   key: str | None = None) -> int | None:
        at: tuple = ("schema", table) if column is None else ("schema", table, "properties", column)
        return self.contract_files[product.contract].line((*at, key) if key else at)


def _canonical_type(sql_type: str) -> str:
    """A SQL type as sqlglot writes it for PostgreSQL: ``numeric(18,2)`` and ``decimal(18, 2)``
    are both ``DECIMAL(18, 2)``; a type it cannot parse, lower-cased and without spaces."""
    from sqlglot import exp
    from sqlglot.errors import ParseError

    try:
        return exp.DataType.build(sql_type, dialect="postgres").sql("postgres")
    except (ParseError, ValueError):
        return re.sub(r"\s+", "", sql_type.lower())


def _migration_tables(folder: Path, rel: Callable[[Path], str]) -> dict:
    """schema.table -> (the migration that creates it, column -> (canonical type, nullable)),
    columns added by later ``alter table ... add column`` included, dropped ones removed."""
    import sqlglot
    from sqlglot import exp

    tables: dict[str, tuple[str, dict[str, tuple[str, bool]]]] = {}
    for path in sorted(folder.glob("*.sql")):
        for statement in sqlglot.parse(path.read_text(encoding="utf-8"), read="postgres"):
            if isinstance(statement, exp.Create) and statement.kind == "TABLE":
                schema = statement.this
                name = f"{schema.this.db}.{schema.this.name}"
                keys = {c.name for k in schema.expressions if isinstance(k, exp.PrimaryKey)
                        for c in k.expressions}
                tables[name] = (rel(path), {c.name: _column_def(c, keys) for c in schema.expressions
                                            if isinstance(c, exp.ColumnDef)})
            elif isinstance(statement, exp.Alter) and statement.args.get("kind") == "TABLE":
                name = f"{statement.this.db}.{statement.this.name}"
                for action in statement.args.get("actions") or []:
                    if name in tables and isinstance(action, exp.ColumnDef):
                        tables[name][1][action.name] = _column_def(action, set())
                    elif (name in tables and isinstance(action, exp.Drop)
                          and action.args.get("kind") == "COLUMN"):
                        tables[name][1].pop(action.this.name, None)
    return tables


def _column_def(column, primary_key: set[str]) -> tuple[str, bool]:
    from sqlglot import exp

    kinds = [c.args.get("kind") for c in column.constraints]
    not_null = column.name in primary_key or any(
        isinstance(k, exp.PrimaryKeyColumnConstraint)
        or (isinstance(k, exp.NotNullColumnConstraint) and not k.args.get("allow_null")) for k in kinds)
    data_type = column.args.get("kind")
    return (data_type.sql("postgres") if data_type is not None else "", not not_null)


# ---------------------------------------------------------------------------------------------
# The rules: one function each.

def contract_is_valid(project: Project) -> Iterator[Hit]:
    """DP001: ODCS v3.1.0 schema and the project's contract rules (mage_project.contracts)."""
    for path, error in project.contract_errors().items():
        for json_path, message in error.violations:
            if not _is_owner_violation(json_path, message):
                line = error.line or _violation_line(project.contract_files[path], json_path, message)
                yield path, line, f"{json_path}: {message}"
    if not project.contract_errors():
        try:  # what holds across contracts: a product name and a table belong to one contract
            contracts.load_products(project.root)
        except contracts.ContractError as error:
            for json_path, message in error.violations:
                line = project.contract_files[error.path].line(json_path)
                yield error.path, line, f"{json_path}: {message}"


def _violation_line(doc: YamlFile, json_path: str, message: str) -> int | None:
    """The line of the field a violation is about: the first unexpected key's, else its path's."""
    unexpected = re.search(r"\('([^']+)'(?:, '[^']+')* (?:was|were) unexpected\)", message)
    if unexpected:
        return doc.line((*_path_tuple(json_path), unexpected.group(1)))
    return doc.line(json_path)


def _is_owner_violation(json_path: str, message: str) -> bool:
    return json_path.startswith("$.team") or message.startswith("'team' is a required property")


def contract_names_an_owner(project: Project) -> Iterator[Hit]:
    """DP002: a team, with a member of role owner whose username is an e-mail."""
    for path, error in project.contract_errors().items():
        for json_path, message in error.violations:
            if _is_owner_violation(json_path, message):
                yield path, project.contract_files[path].line(json_path), f"{json_path}: {message}"


def declared_tables_exist(project: Project) -> Iterator[Hit]:
    """DP003: a marts table is a dbt model under models/marts/; any other table a migration's."""
    models = {p.stem for p in (project.root / MARTS_MODELS).rglob("*.sql")}
    for product in project.products:
        for index, table in enumerate(product.tables):
            if table.schema == "marts" and table.table not in models:
                yield (product.contract, project.table_line(product, index),
                       f"{table.name} has no dbt model {MARTS_MODELS / table.table}.sql")
            elif table.schema != "marts" and table.name not in project.migration_tables:
                yield (product.contract, project.table_line(product, index),
                       f"{table.name} is created by no migration in {MIGRATIONS}")


def _actual_columns(project: Project, table: contracts.Table) -> tuple[str, dict[str, dict]] | None:
    """Where the repo says the table's columns, and each one's type and nullability if it says them."""
    if table.schema == "marts":
        if table.table not in project.dbt_models:
            return None
        path, doc, at = project.dbt_models[table.table]
        columns = doc.data["models"][at[1]].get("columns") or []
        return path, {c["name"]: {"type": c.get("data_type"), "nullable": None}
                      for c in columns if isinstance(c, dict) and "name" in c}
    if table.name not in project.migration_tables:
        return None
    path, columns = project.migration_tables[table.name]
    return path, {name: {"type": kind, "nullable": nullable} for name, (kind, nullable) in columns.items()}


def _model_projections(project: Project, table: contracts.Table) -> tuple[Path, list] | None:
    """(the mart's .sql, its final select's (name, expression) pairs), when it renders and parses."""
    from sqlglot.errors import SqlglotError

    path, sql, _error = project.rendered_models.get(table.name, (None, None, None))
    if sql is None:
        return None  # DP003 says it is missing, DP016 why it does not render
    try:
        return path, _output_projections(sql)
    except SqlglotError:
        return None  # DP016 says so


def _sql_column_problems(project: Project, table: contracts.Table) -> Iterator[tuple[str, int | None, str]]:
    """(path, line, problem) where the mart's SQL outputs other columns than its contract's."""
    found = _model_projections(project, table)
    if found is None:
        return
    path, projections = found
    outputs = [name for name, _expression in projections]
    where = project.rel(path)
    for column in table.columns:
        if column.name not in outputs:
            yield where, None, f"{table.name} column {column.name!r} is not an output of {where}"
    for name in outputs:
        if name not in table.column_names:
            yield (where, _projection_line(path, name),
                   f"{table.name} column {name!r}, an output of {where}, is not in the contract")


def declared_columns_match(project: Project) -> Iterator[Hit]:
    """DP004: the model's YAML and its SQL's final select (marts) or the migrations (raw) have the
    contract's columns, no more."""
    for product in project.products:
        for index, table in enumerate(product.tables):
            if table.schema == "marts":
                yield from _sql_column_problems(project, table)
            if table.schema == "marts" and table.table not in project.dbt_models and any(
                    p.stem == table.table for p in (project.root / MARTS_MODELS).rglob("*.sql")):
                yield (product.contract, project.table_line(product, index),
                       f"{table.name}: no dbt YAML under {DBT_MODELS} documents model {table.table}")
            actual = _actual_columns(project, table)
            if actual is None:
                continue  # DP003 (or the line above) says so
            where, columns = actual
            for column_index, column in enumerate(table.columns):
                if column.name not in columns:
                    yield (product.contract, project.table_line(product, index, column_index),
                           f"{table.name} column {column.name!r} is not in {where}")
            for name in columns:
                if name not in table.column_names:
                    yield (product.contract, project.table_line(product, index),
                           f"{table.name} column {name!r} of {where} is not in the contract")


# ODCS logical type -> the canonical PostgreSQL types (by name, without arguments) that hold it.
LOGICAL_TYPES = {
    "string": {"TEXT", "VARCHAR", "CHAR", "UUID", "CITEXT"},
    "integer": {"SMALLINT", "INT", "BIGINT"},
    "number": {"SMALLINT", "INT", "BIGINT", "DECIMAL", "REAL", "DOUBLE PRECISION"},
    "boolean": {"BOOLEAN"},
    "date": {"DATE"},
    "timestamp": {"TIMESTAMP", "TIMESTAMPTZ"},
    "time": {"TIME", "TIMETZ"},
    "object": {"JSON", "JSONB"},
    "array": {"JSON", "JSONB"},
}


def _type_problems(table: contracts.Table, column: contracts.Column, actual: dict | None,
                   where: str) -> Iterator[str]:
    contract_type = _canonical_type(column.physical_type)
    base, _, arguments = contract_type.partition("(")
    known = set().union(*LOGICAL_TYPES.values())
    # An integer fits a numeric without scale exactly (sum() of a bigint is one in PostgreSQL).
    scale = arguments.rstrip(")").partition(",")[2].strip()
    whole = column.logical_type == "integer" and base == "DECIMAL" and scale in ("", "0")
    if base in known and not whole and base not in LOGICAL_TYPES.get(column.logical_type, known):
        yield (f"{table.name} column {column.name!r}: logicalType {column.logical_type} cannot be "
               f"physicalType {column.physical_type}")
    if actual and actual["type"] and _canonical_type(actual["type"]) != contract_type:
        yield (f"{table.name} column {column.name!r} is {actual['type']} in {where}, "
               f"{column.physical_type} in the contract")
    if actual and column.required and actual["nullable"]:
        yield f"{table.name} column {column.name!r} is required but nullable in {where}"


def _sql_type_problems(project: Project, table: contracts.Table) -> Iterator[tuple[str, int | None, str]]:
    """(path, line, problem) where the mart's SQL casts a column to another type than its
    contract's physicalType (a column it does not cast is held to its type at run time)."""
    from sqlglot import exp

    found = _model_projections(project, table)
    if found is None:
        return
    path, projections = found
    declared = {c.name: c.physical_type for c in table.columns}
    for name, expression in projections:
        if isinstance(expression, exp.Cast) and name in declared:
            cast = _canonical_type(expression.to.sql("postgres"))
            if cast != _canonical_type(declared[name]):
                yield (project.rel(path), _projection_line(path, name),
                       f"{table.name} column {name!r} is cast to {cast} in {project.rel(path)}, "
                       f"{declared[name]} in the contract")


def declared_types_match(project: Project) -> Iterator[Hit]:
    """DP005: logicalType fits physicalType; physicalType and required agree with the migration
    DDL (raw), the model YAML's data_type and the casts of its SQL's final select (marts, where
    given)."""
    for product in project.products:
        for index, table in enumerate(product.tables):
            if table.schema == "marts":
                yield from _sql_type_problems(project, table)
            where, columns = _actual_columns(project, table) or ("", {})
            for column_index, column in enumerate(table.columns):
                for problem in _type_problems(table, column, columns.get(column.name), where):
                    yield product.contract, project.table_line(product, index, column_index), problem


def pipelines_belong_to_a_product(project: Project) -> Iterator[Hit]:
    """DP006: every pipeline is in a contract's pipelines, and its tags say which (domain:, product:)."""
    expected = contracts.pipeline_tags(project.products)
    for name, meta in project.pipelines.items():
        path = f"pipelines/{name}/metadata.yaml"
        if name not in expected:
            yield path, None, f"pipeline {name} belongs to no product"
            continue
        tags = (meta.data or {}).get("tags") or []
        declared = tuple(sorted((t for t in tags if t.startswith(("domain:", "product:"))),
                                key=lambda t: (not t.startswith("domain:"), t)))
        if declared != expected[name]:
            yield (path, meta.line(("tags",)),
                   f"pipeline {name}'s tags {list(declared)} are not its products' {list(expected[name])}")


def published_tables_belong_to_a_product(project: Project) -> Iterator[Hit]:
    """DP007: every marts model is a table of exactly one contract."""
    declared = {t.name for p in project.products for t in p.tables}
    for path in sorted((project.root / MARTS_MODELS).rglob("*.sql")):
        if f"marts.{path.stem}" not in declared:
            yield project.rel(path), None, f"marts.{path.stem} belongs to no product"


def _scheduled_triggers(project: Project) -> Iterator[tuple[str, str, dict, YamlFile, int]]:
    """(pipeline, triggers.yaml path, trigger, the file, index) of every active scheduled trigger."""
    for name in project.pipelines:
        path = project.root / "pipelines" / name / "triggers.yaml"
        if not path.is_file():
            continue
        doc = YamlFile.read(path)
        for index, trigger in enumerate((doc.data or {}).get("triggers") or []):
            if (isinstance(trigger, dict) and trigger.get("status") == "active"
                    and trigger.get("schedule_type", "time") == "time"):
                yield name, project.rel(path), trigger, doc, index


def triggers_have_an_sla(project: Project) -> Iterator[Hit]:
    """DP008: every active scheduled trigger has ``sla`` (seconds, > 0)."""
    for pipeline, path, trigger, doc, index in _scheduled_triggers(project):
        sla = trigger.get("sla")
        if not isinstance(sla, int) or isinstance(sla, bool) or sla <= 0:
            yield path, doc.line(("triggers", index)), f"trigger {pipeline}:{trigger.get('name')} has no SLA"


def _retries(config: object) -> int:
    value = config.get("retries") if isinstance(config, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def triggers_have_retries(project: Project) -> Iterator[Hit]:
    """DP009: every block a scheduled trigger runs retries (``retry_config.retries`` >= 1).

    Mage retries a block by the project's ``metadata.yaml`` ``retry_config`` merged with the
    block's own (the scheduler's ``merge_dict(repo_config.retry_config, block.retry_config)``); the
    trigger has no retry setting, and a pipeline's top-level ``retry_config`` serves streaming
    pipelines only. The project's metadata.yaml sets ``retry_config`` for every block.
    """
    root_meta = YamlFile.read(project.root / "metadata.yaml") if (project.root / "metadata.yaml").is_file() \
        else YamlFile(None, {})
    project_retries = (root_meta.data or {}).get("retry_config") if isinstance(root_meta.data, dict) else None
    for pipeline, path, trigger, doc, index in _scheduled_triggers(project):
        blocks = ((project.pipelines[pipeline].data or {}).get("blocks")) or []
        without = [b.get("uuid") for b in blocks if _retries(
            {**(project_retries or {}), **(b.get("retry_config") or {})}) < 1]
        if without:
            yield (path, doc.line(("triggers", index)), f"trigger {pipeline}:{trigger.get('name')} runs "
                   f"blocks without retries: {', '.join(without)}")


def triggers_have_an_alert_route(project: Project) -> Iterator[Hit]:
    """DP010: the products of a scheduled trigger's pipeline route its alerts (alertRoutes)."""
    for pipeline, path, trigger, doc, index in _scheduled_triggers(project):
        if not any(p.alert_routes for p in project.products_of(pipeline)):
            yield (path, doc.line(("triggers", index)),
                   f"trigger {pipeline}:{trigger.get('name')} has no alert route (no product of "
                   f"{pipeline} names one)")


def _python_blocks(project: Project) -> Iterator[tuple[str, Path]]:
    for name, meta in project.pipelines.items():
        for group in ("blocks", "callbacks", "conditionals"):
            for block in (meta.data or {}).get(group) or []:
                if (isinstance(block, dict) and block.get("language", "python") == "python"
                        and block.get("type") in TESTED_BLOCK_TYPES):
                    yield name, project.root / BLOCK_FOLDERS[block["type"]] / f"{block['uuid']}.py"


def _test_functions(tree: ast.Module) -> list[ast.FunctionDef]:
    def is_test(decorator: ast.expr) -> bool:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        return (isinstance(target, ast.Name) and target.id == "test") or (
            isinstance(target, ast.Attribute) and target.attr == "test")

    return [node for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and any(is_test(d) for d in node.decorator_list)]


def blocks_have_tests(project: Project) -> Iterator[Hit]:
    """DP011: every Python block with an output (loader, transformer, exporter) has an @test."""
    for pipeline, path in _python_blocks(project):
        if not path.is_file():
            yield (f"pipelines/{pipeline}/metadata.yaml", None,
                   f"block file {project.rel(path)} does not exist")
        elif not _test_functions(ast.parse(path.read_text(encoding="utf-8"))):
            yield project.rel(path), None, f"block {path.stem} has no @test"


def _mage_project_names(tree: ast.Module) -> set[str]:
    """The names a module binds to mage_project or something imported from it."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "mage_project":
            names.update(alias.asname or alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.asname or alias.name.split(".")[0] for alias in node.names
                         if alias.name.split(".")[0] == "mage_project")
    return names


def _calls_a_named_check(function: ast.FunctionDef, names: set[str]) -> bool:
    for node in ast.walk(function):
        if isinstance(node, ast.Call):
            target = node.func
            while isinstance(target, ast.Attribute):
                target = target.value
            if isinstance(target, ast.Name) and target.id in names:
                return True
    return False


def tests_call_named_checks(project: Project) -> Iterator[Hit]:
    """DP012: each @test calls a check from mage_project (checks.require(checks.x(output)))."""
    for _pipeline, path in _python_blocks(project):
        if not path.is_file():
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = _mage_project_names(tree)
        for function in _test_functions(tree):
            if not _calls_a_named_check(function, names):
                yield (project.rel(path), function.lineno,
                       f"@test {function.name} calls no check of mage_project")


CREDENTIAL_WORDS = {"PASSWORD", "PASSWD", "PWD", "PASS", "PASSPHRASE", "SECRET", "TOKEN", "KEY", "USER",
                    "USERNAME", "ACCOUNT", "CREDENTIAL", "CREDENTIALS", "AUTH", "DSN", "URI", "URL",
                    "CONNECTION", "PRIVATE"}
# A whole value that only names where the setting comes from: Mage's env_var / mage_secret_var, or ${X}.
ENV_REFERENCE = re.compile(
    r"^\s*(\{\{\s*(env_var|mage_secret_var)\(\s*(['\"])[A-Za-z_][A-Za-z0-9_]*\3\s*\)\s*\}\}"
    r"|\$\{[A-Za-z_][A-Za-z0-9_]*\}|\$[A-Za-z_][A-Za-z0-9_]*)\s*$")


def _literal_credentials(value: object, at: tuple, credential: bool) -> Iterator[tuple]:
    if isinstance(value, dict):
        for key, item in value.items():
            words = set(re.split(r"[^A-Za-z0-9]+", str(key).upper()))
            yield from _literal_credentials(item, (*at, key), credential or bool(words & CREDENTIAL_WORDS))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _literal_credentials(item, (*at, index), credential)
    elif credential and value not in (None, ""):
        if not (isinstance(value, str) and ENV_REFERENCE.match(value)):
            yield at


def io_config_references_the_environment(project: Project) -> Iterator[Hit]:
    """DP013: every credential-like key of io_config.yaml is an environment reference."""
    path = project.root / IO_CONFIG
    if not path.is_file():
        return
    doc = YamlFile.read(path)
    for at in _literal_credentials(doc.data, (), False):
        yield (str(IO_CONFIG), doc.line(at),
               f"{'.'.join(map(str, at))} holds a value, not an environment reference")


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)


def default_base(root: Path) -> str | None:
    """The merge base with ``main``, or ``HEAD`` when that is ``HEAD`` (or there is no ``main``);
    None outside a git work tree or before the first commit."""
    if _git(root, "rev-parse", "--verify", "--quiet", "HEAD").returncode != 0:
        return None
    head = _git(root, "rev-parse", "HEAD").stdout.strip()
    merge_base = _git(root, "merge-base", "main", "HEAD")
    if merge_base.returncode != 0 or merge_base.stdout.strip() == head:
        return "HEAD"
    return merge_base.stdout.strip()


def _resolved_base(project: Project) -> tuple[str | None, str | None]:
    """(the base ref, or None; why it cannot be read, or None)."""
    base = project.base or default_base(project.root)
    if base is None:
        return None, None  # not a git work tree: nothing to compare with
    if _git(project.root, "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}").returncode != 0:
        return None, f"git base {base!r} is not a commit of this repository"
    return base, None


def _contracts_at(root: Path, base: str) -> dict[str, dict]:
    """Each contract's document at ``base`` (path relative to the project -> its data)."""
    listed = _git(root, "ls-tree", "-r", "--name-only", base, "--", str(contracts.CONTRACTS)).stdout.split()
    schema_folder = contracts.SCHEMA.parent.as_posix() + "/"
    documents = {}
    for path in listed:
        if path.endswith(".yaml") and not path.startswith(schema_folder):
            try:
                document = yaml.safe_load(_git(root, "show", f"{base}:./{path}").stdout)
            except yaml.YAMLError:
                continue  # unreadable then: nothing it promised can be held against it
            if isinstance(document, dict):
                documents[path] = document
    return documents


def _major(version: object) -> int | None:
    match = re.match(r"^(\d+)\.", str(version))
    return int(match.group(1)) if match else None


def _tables_of(document: dict) -> dict[str, dict]:
    return {t["physicalName"]: t for t in document.get("schema") or []
            if isinstance(t, dict) and "physicalName" in t}


def _valid_values(column: dict) -> set | None:
    values = None
    for rule in column.get("quality") or []:
        if isinstance(rule, dict) and rule.get("metric") == "invalidValues":
            allowed = (rule.get("arguments") or {}).get("validValues")
            if isinstance(allowed, list):
                values = (values or set()) | {str(v) for v in allowed}
    return values


# logicalTypeOptions whose rise (lower bounds) or fall (upper bounds) narrows what a column may hold;
# the exclusive bounds of dates are strings in ODCS, compared as ISO dates sort.
LOWER_BOUNDS = ("minLength", "minimum", "exclusiveMinimum", "minItems", "minProperties")
UPPER_BOUNDS = ("maxLength", "maximum", "exclusiveMaximum", "maxItems", "maxProperties")
FORMS = ("pattern", "format", "multipleOf")


def _patterns(column: dict) -> set[str]:
    return {str((rule.get("arguments") or {}).get("pattern")) for rule in column.get("quality") or []
            if isinstance(rule, dict) and rule.get("metric") == "invalidValues"
            and (rule.get("arguments") or {}).get("pattern") is not None}


def _tightened(old: dict, new: dict) -> Iterator[tuple[str, str, object, object]]:
    """(what, "tightened" or "changed", before, after) for each constraint of ``new`` that ``old``
    did not impose: a bound added or moved inwards, a pattern, format or multipleOf added or changed."""
    before, after = old.get("logicalTypeOptions") or {}, new.get("logicalTypeOptions") or {}
    for key in LOWER_BOUNDS + UPPER_BOUNDS:
        was, now = before.get(key), after.get(key)
        if now is None or was == now or isinstance(now, bool):
            continue
        try:
            inwards = was is None or (now > was if key in LOWER_BOUNDS else now < was)
        except TypeError:
            inwards = True  # a bound of another kind: a different promise
        if inwards:
            yield f"logicalTypeOptions.{key}", "tightened", "unset" if was is None else was, now
    for key in FORMS:
        if after.get(key) is not None and after.get(key) != before.get(key):
            yield f"logicalTypeOptions.{key}", "changed", before.get(key, "unset"), after[key]
    old_patterns = ", ".join(sorted(_patterns(old))) or "unset"
    for pattern in sorted(_patterns(new) - _patterns(old)):
        yield "quality invalidValues pattern", "changed", old_patterns, pattern


def _column_changes(table: str, old: dict, new: dict) -> Iterator[str]:
    name = old.get("name")
    for key in ("logicalType", "physicalType"):
        before, after = old.get(key), new.get(key)
        if key == "physicalType" and before and after:
            before, after = _canonical_type(str(before)), _canonical_type(str(after))
        if before != after:
            yield f"{table} column {name!r}: {key} changed from {old.get(key)} to {new.get(key)}"
    for key in ("required", "unique", "primaryKey"):
        if bool(old.get(key, False)) != bool(new.get(key, False)):
            yield f"{table} column {name!r}: {key} changed from {bool(old.get(key))} to {bool(new.get(key))}"
    before, after = _valid_values(old), _valid_values(new)
    if before is not None and (after is not None and before - after):
        yield f"{table} column {name!r}: enumeration lost {sorted(before - after)}"
    elif before is None and after is not None:
        yield f"{table} column {name!r}: enumeration {sorted(after)} added"
    for what, verb, was, now in _tightened(old, new):
        yield f"{table} column {name!r}: {what} {verb} from {was} to {now}"


def _table_changes(table: str, old: dict, new: dict) -> Iterator[tuple[str, str | None]]:
    """(what broke, the column it is about or None) between two versions of one table."""
    new_columns = {c.get("name"): c for c in new.get("properties") or [] if isinstance(c, dict)}
    for column in old.get("properties") or []:
        if not isinstance(column, dict):
            continue
        if column.get("name") not in new_columns:
            yield f"{table} column {column.get('name')!r} removed", None
        else:
            for change in _column_changes(table, column, new_columns[column.get("name")]):
                yield change, column.get("name")


def contracts_keep_compatibility(project: Project) -> Iterator[Hit]:
    """DP014: no breaking change against the git base unless the major version was raised
    (the module's docstring lists what breaks and where this differs from dbt and datacontract-cli)."""
    base, problem = _resolved_base(project)
    if problem:
        yield str(contracts.CONTRACTS), None, problem
    if base is None:
        return
    before = _contracts_at(project.root, base)
    now = {path: doc.data for path, doc in project.contract_files.items() if isinstance(doc.data, dict)}
    now_tables = {name: (path, t) for path, doc in now.items() for name, t in _tables_of(doc).items()}
    for path, old in sorted(before.items()):
        for name, table in _tables_of(old).items():
            current_path, current = now_tables.get(name, (path, None))
            current_doc = now.get(current_path) or {}
            old_major, new_major = _major(old.get("version")), _major(current_doc.get("version"))
            if old_major is not None and new_major is not None and new_major > old_major:
                continue
            shown = f"(at {base} {path} {old.get('version')}, now {current_doc.get('version', 'deleted')})"
            if current is None:
                yield current_path, None, f"table {name} removed {shown}{_downstream(project, name, None)}"
                continue
            doc = project.contract_files[current_path]
            index = next(i for i, t in enumerate(current_doc["schema"]) if t is current)
            for change, column in _table_changes(name, table, current):
                columns = [c.get("name") for c in current.get("properties") or [] if isinstance(c, dict)]
                at = ("schema", index, "properties", columns.index(column)) if column else ("schema", index)
                yield current_path, doc.line(at), f"{change} {shown}{_downstream(project, name, column)}"


def _changed_files(project: Project, base: str | None) -> list[str]:
    """The files to scan for secrets: those that differ from ``base`` (committed or not) and the
    untracked ones git does not ignore; every tracked file without a base."""
    if base is None:
        listed = _git(project.root, "ls-files", "-z")
        names = listed.stdout.split("\0") if listed.returncode == 0 else [
            project.rel(p) for p in project.root.rglob("*") if p.is_file()]
    else:
        names = _git(project.root, "diff", "--name-only", "-z", "--diff-filter=d", base).stdout.split("\0")
        names += _git(project.root, "ls-files", "-z", "--others", "--exclude-standard").stdout.split("\0")
    return sorted({n for n in names if n and n != str(BASELINE) and (project.root / n).is_file()})


# One ``git log -p`` of the commits since the baseline's last change, read here: detect-secrets' own
# scan_diff needs unidiff, which the lock does not hold. -U0: a hunk holds only removed and added lines.
HISTORY_LOG = ("-c", "core.quotePath=true", "-c", "log.showRoot=true", "log", "-p", "-U0", "-M",
               "--full-index", "--diff-merges=first-parent", "--relative", "--no-color", "--no-ext-diff",
               "--no-textconv", "--src-prefix=a/", "--dst-prefix=b/", "--format=commit %H")
HUNK = re.compile(r"@@ -\d+(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
# The added lines of history scanned, newest commits first: about 0.3 ms a line, 10000 lines some 3 s
# (the whole history of this repository, 41000 lines, 11 s). Older commits are reported as not scanned
# until a baseline committed after them covers them.
HISTORY_LINES = 10000
HISTORY_NOTE = "removed since, but still in history: rewrite history and rotate the key"


def _history_range(root: Path) -> str | None:
    """``<the last commit to change the baseline>..HEAD`` (the baseline's audit covers what came before),
    ``HEAD`` (all of history) when no commit holds it; None outside a git work tree or before a commit."""
    if _git(root, "rev-parse", "--verify", "--quiet", "HEAD").returncode != 0:
        return None
    audited = _git(root, "log", "-1", "--format=%H", "HEAD", "--", str(BASELINE)).stdout.strip()
    return f"{audited}..HEAD" if audited else "HEAD"


def _diff_path(header: str) -> str | None:
    """The path of a ``+++ b/<path>`` line (git C-quotes one with special characters and ends one
    with a space with a tab); None for ``/dev/null`` (a deleted file)."""
    name = header[4:].removesuffix("\t")
    if name.startswith('"'):
        name = ast.literal_eval("b" + name).decode("utf-8", "surrogateescape")
    return name[2:] if name.startswith("b/") else None


def _added_lines(root: Path, revisions: str) -> dict[str, dict[tuple[str, str], set[int]]]:
    """commit -> (path, blob) -> the numbers (in that blob) of the lines the commit added to the file,
    for each commit of ``revisions``, newest first: a merge against its first parent, a root commit
    against the empty tree. A binary file has no hunk and a file only renamed none added: neither is
    listed, nor is the baseline."""
    log = subprocess.run(["git", *HISTORY_LOG, revisions, "--"], cwd=root, capture_output=True, check=False)
    commits: dict[str, dict[tuple[str, str], set[int]]] = {}
    files: dict[tuple[str, str], set[int]] = {}
    path = blob = ""
    numbers: set[int] | None = None
    old_left = new_left = number = 0
    for raw in log.stdout.split(b"\n") if log.returncode == 0 else []:
        if old_left or new_left:  # a line of a hunk: the counts tell it from a header
            if raw.startswith(b"-"):
                old_left -= 1
            elif raw.startswith(b"+"):
                new_left -= 1
                if numbers is not None:
                    numbers.add(number)
                number += 1
            continue
        line = raw.decode("utf-8", "surrogateescape")
        if line.startswith("commit "):
            files = commits.setdefault(line.split()[1], {})
        elif line.startswith("diff --git "):
            path = blob = ""
        elif line.startswith("index "):
            blob = line.split()[1].partition("..")[2]
        elif line.startswith("+++ "):
            path = _diff_path(line) or ""
        elif (hunk := HUNK.match(line)) is not None:
            old_left, number = int(hunk.group(1) or 1), int(hunk.group(2))
            new_left = int(hunk.group(3) or 1)
            keep = path and blob and path != str(BASELINE)
            numbers = files.setdefault((path, blob), set()) if keep else None
    return commits


def _blobs(root: Path, names: Iterable[str]) -> dict[str, bytes]:
    """Each blob's content (``git cat-file --batch``: one process for all of them)."""
    names = sorted(set(names))
    batch = subprocess.run(["git", "cat-file", "--batch"], cwd=root, capture_output=True, check=False,
                           input="".join(f"{name}\n" for name in names).encode())
    out, at, blobs = batch.stdout, 0, {}
    for name in names:
        end = out.find(b"\n", at)
        if end < 0:
            break
        header = out[at:end].split()
        if len(header) == 3 and header[1] == b"blob":
            size = int(header[2])
            blobs[name] = out[end + 1:end + 1 + size]
            at = end + 1 + size + 1  # the content, then a newline
        else:
            at = end + 1  # "<name> missing" (a submodule's commit)
    return blobs


def _line_secrets(filename: str, lines: list[str], number: int) -> list:
    """What detect-secrets' plugins find on line ``number`` of ``lines`` that its filters keep."""
    from detect_secrets.core import scan
    from detect_secrets.settings import get_plugins
    from detect_secrets.util.code_snippet import get_code_snippet

    line, context = lines[number - 1].rstrip(), get_code_snippet(lines=lines, line_number=number)
    if scan._is_filtered_out(required_filter_parameters=["line"], filename=filename, line=line,
                             context=context):
        return []
    return [secret for plugin in get_plugins()
            for secret in scan._scan_line(plugin=plugin, filename=filename, line=line, line_number=number,
                                          context=context)
            if not scan._is_filtered_out(required_filter_parameters=["context"], filename=filename, line=line,
                                         secret=secret.secret_value, plugin=plugin, context=context)]


def _secrets_on_lines(filename: str, numbers: set[int]) -> list:
    """detect-secrets' scan of one file (``scan.scan_file``: its file filters, transformers, line
    filters and plugins) run on the lines ``numbers`` only, each in its context in the whole file.
    The plugins and filters of each line are the cost, and a commit mostly adds a few lines to a long
    file. The steps are those of detect-secrets 1.5.0's ``scan_file`` and ``_process_line_based_plugins``
    (the lock pins it; tests/unit/test_secret_history.py runs them)."""
    from detect_secrets.core import scan

    if scan._is_filtered_out(required_filter_parameters=["filename"], filename=filename):
        return []
    found: list = []
    try:
        for lines in scan._get_lines_from_file(filename):  # as they read, then eagerly transformed
            found = [secret for number in sorted(numbers) if number <= len(lines)
                     for secret in _line_secrets(filename, lines, number)]
            if found:
                break
    except OSError:
        return []
    return found


def _scan_version(folder: str, path: str, content: bytes, numbers: set[int]) -> list:
    """The secrets on the lines ``numbers`` of one version of a file, written under its own path in
    ``folder`` (the filters read the name) and removed after it."""
    target = Path(folder, "tree", path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    except OSError:  # a file where another version has a folder, or the other way round
        target = Path(tempfile.mkdtemp(dir=folder), path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    try:
        return _secrets_on_lines(str(target), numbers)
    finally:
        target.unlink()


def _history_secrets(root: Path) -> tuple[list[tuple[str, str, object]], int]:
    """([(commit, path, potential secret)], how many commits were not scanned): each secret a commit
    since the baseline's last change added, each (path, type, secret) once, from its oldest commit, in
    the newest commits adding up to ``HISTORY_LINES`` lines, their added lines scanned as the working
    tree's files are. Call it under the baseline's settings."""
    revisions = _history_range(root)
    commits = _added_lines(root, revisions) if revisions else {}
    scanned, budget = [], HISTORY_LINES
    for commit, files in commits.items():
        budget -= sum(len(numbers) for numbers in files.values())
        if budget < 0:
            break
        scanned.append(commit)
    blobs = _blobs(root, (blob for commit in scanned for _, blob in commits[commit]))
    found, seen = [], set()
    with tempfile.TemporaryDirectory(prefix="dp015-") as folder:
        for commit in reversed(scanned):
            for (path, blob), numbers in commits[commit].items():
                content = blobs.get(blob)
                if content is None or b"\0" in content:
                    continue  # binary (git shows no hunk for it either) or a submodule's commit
                for secret in _scan_version(folder, path, content, numbers):
                    if (path, secret.type, secret.secret_hash) not in seen:
                        seen.add((path, secret.type, secret.secret_hash))
                        found.append((commit, path, secret))
    return found, len(commits) - len(scanned)


def _baseline_secrets(baseline: dict) -> tuple[set[tuple], list[Hit]]:
    """(the (filename, type, hashed secret) the baseline holds, a finding for each not audited as a
    false positive)."""
    known, unaudited = set(), []
    for filename, secrets in sorted((baseline.get("results") or {}).items()):
        for secret in secrets:
            known.add((filename, secret.get("type"), secret.get("hashed_secret")))
            if secret.get("is_secret") is not False:
                unaudited.append((filename, secret.get("line_number"),
                                  f"{secret.get('type')} in the baseline, not audited as a false positive"))
    return known, unaudited


def no_secrets_committed(project: Project) -> Iterator[Hit]:
    """DP015: detect-secrets (the plugins and filters of ``.secrets.baseline``) finds nothing the
    baseline does not hold in the files changed since the base, nor in the lines added by the commits
    reachable from HEAD since the last commit that changed the baseline (all of history when none did;
    the newest ``HISTORY_LINES`` lines of it), and the baseline holds only secrets audited as false
    positives (``is_secret: false``).

    Files unchanged since the base were scanned when they changed; ``detect-secrets scan --baseline
    .secrets.baseline`` rescans them all. A secret a commit added and a later one deleted is still in
    every clone: it is reported with that commit, at its line in that commit's file, unless the file
    still holds it (then it is the working tree's finding). A baseline committed after a commit covers
    it (it was audited then): the scan of history starts after the baseline's last change.
    """
    try:
        from detect_secrets import SecretsCollection
        from detect_secrets.settings import transient_settings
    except ImportError:
        yield str(BASELINE), None, "detect-secrets is not installed (make setup)"
        return
    path = project.root / BASELINE
    if not path.is_file():
        yield str(BASELINE), None, "no secrets baseline"
        return
    baseline = json.loads(path.read_text(encoding="utf-8"))
    known, unaudited = _baseline_secrets(baseline)
    yield from unaudited
    base, _problem = _resolved_base(project)  # DP014 reports a bad base
    with transient_settings({k: baseline[k] for k in ("plugins_used", "filters_used") if k in baseline}):
        history, skipped = _history_secrets(project.root)
        history = [(c, p, s) for c, p, s in history if (p, s.type, s.secret_hash) not in known]
        found = SecretsCollection(root=str(project.root))
        still_there = {p for _, p, _ in history if (project.root / p).is_file()}
        for filename in sorted(set(_changed_files(project, base)) | still_there):
            found.scan_file(filename)
    if skipped:
        yield (str(BASELINE), None, f"{skipped} older commit(s) since the baseline was last committed not "
               f"scanned for secrets (the scan stops after {HISTORY_LINES} added lines): check them "
               "(git log -p), then rescan and commit the baseline")
    now = {(filename, secret.type, secret.secret_hash) for filename, secret in found}
    for filename, secret in found:
        if (filename, secret.type, secret.secret_hash) not in known:
            yield filename, secret.line_number, f"possible secret ({secret.type})"
    for commit, filename, secret in history:
        if (filename, secret.type, secret.secret_hash) not in now:
            yield (filename, secret.line_number,
                   f"possible secret ({secret.type}) in commit {commit[:8]} ({HISTORY_NOTE})")


# Functions that hash or mask what they are given (PostgreSQL's md5, sha256, digest; Snowflake's
# sha2, md5, hash); a function or macro whose name says mask or hash counts too.
HASHING_FUNCTIONS = {"md5", "sha1", "sha224", "sha256", "sha384", "sha512", "sha2", "digest", "hash",
                     "md5_hex", "sha1_hex", "sha2_hex"}


def _is_hashing(node) -> bool:
    from sqlglot import exp

    if not isinstance(node, exp.Func):
        return False
    # sqlglot's own classes for the known ones (MD5, SHA2, SHA2Digest, StandardHash, ...).
    name = (node.name if isinstance(node, exp.Anonymous) else type(node).__name__).lower()
    return (name in HASHING_FUNCTIONS or name.startswith(("md5", "sha")) or "mask" in name
            or "hash" in name)


class _Macros:
    """The project's own macros (dbt/warehouse/macros/*.sql) as Jinja, rendered the way dbt
    renders them on PostgreSQL: ``adapter.dispatch(name)`` picks ``postgres__name``, else
    ``default__name``; ``return(x)`` gives x."""

    def __init__(self, environment, folder: Path):
        text = "\n".join(p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.sql")))
        self.module = environment.from_string(text).make_module({"adapter": self, "return": lambda v: v})

    def dispatch(self, name: str, macro_namespace: str | None = None):
        return getattr(self.module, f"postgres__{name}", None) or getattr(self.module, f"default__{name}")

    def get(self, name: str):
        macro = getattr(self.module, name, None)
        if macro is not None:
            return macro
        # A macro of a package: called by name, so a masking macro still reads as one.
        return lambda *args, **kwargs: f"{name}({', '.join(map(str, args))})"


def _rendered_models(root: Path) -> dict[str, tuple[Path, str | None, str | None]]:
    """schema.model -> (its .sql file, its SQL, or None and why it could not be rendered): the
    Jinja rendered without dbt or a warehouse
    (``ref('m')`` is ``<folder of m>.m``, ``source('raw', 't')`` is ``raw.t``, ``config()`` nothing,
    the project's macros as dbt renders them on PostgreSQL)."""
    import jinja2
    import jinja2.meta

    environment = jinja2.Environment(extensions=["jinja2.ext.do"])
    macros = _Macros(environment, root / DBT_MACROS)
    paths = {p.stem: p for p in sorted((root / DBT_MODELS).rglob("*.sql"))}
    schemas = {name: path.parent.name for name, path in paths.items()}
    fixed = {"ref": lambda model: f"{schemas.get(model, 'unknown')}.{model}",
             "source": lambda source, table: f"{source}.{table}", "config": lambda *a, **k: "",
             "var": lambda name, default=None: default, "is_incremental": lambda: False}
    rendered = {}
    for name, path in paths.items():
        text = path.read_text(encoding="utf-8")
        try:
            names = jinja2.meta.find_undeclared_variables(environment.parse(text))
            context = {n: fixed.get(n) or macros.get(n) for n in names}
            rendered[f"{schemas[name]}.{name}"] = (path, environment.from_string(text).render(context), None)
        except (jinja2.TemplateError, TypeError, AttributeError) as error:
            rendered[f"{schemas[name]}.{name}"] = (path, None, f"{type(error).__name__}: {error}")
    return rendered


def _output_projections(sql: str) -> list[tuple[str, object]]:
    """(name, expression) of each column of a model's final select (after expanding ``select *
    from final``), the expression without its alias."""
    import sqlglot
    from sqlglot import exp

    query = sqlglot.parse_one(sql, read="postgres")
    selects = query.selects
    if len(selects) == 1 and selects[0].is_star:
        table = query.args["from_"].this.name if query.args.get("from_") else None
        cte = next((c for c in query.ctes if c.alias == table), None)
        if cte is not None:
            selects = cte.this.selects
    return [(s.alias_or_name, s.this if isinstance(s, exp.Alias) else s)
            for s in selects if not s.is_star]


def _output_columns(sql: str) -> list[str]:
    """The names a model's final select gives its columns."""
    return [name for name, _expression in _output_projections(sql)]


def _projection_line(path: Path, column: str) -> int | None:
    """The last line of the model that names ``column`` as an output (``as column`` or ``.column,``)."""
    name = re.escape(column)
    pattern = re.compile(rf"\bas\s+{name}\b|\.{name}\s*,?\s*$|^\s*{name}\s*,?\s*$", re.IGNORECASE)
    text = path.read_text(encoding="utf-8").splitlines()
    lines = [number for number, line in enumerate(text, 1) if pattern.search(line)]
    return lines[-1] if lines else None


def _edge_is_hashed(node, child) -> bool:
    """Every use, in ``node``'s expression, of the column ``child`` traces to is inside a hash."""
    from sqlglot import exp

    name = child.name.rpartition(".")[2]
    uses = [c for c in node.expression.find_all(exp.Column) if c.name == name]
    return bool(uses) and all(any(_is_hashing(a) for a in _ancestors(c, node.expression)) for c in uses)


def _ancestors(node, top) -> Iterator:
    while node is not None and node is not top:
        node = node.parent
        if node is not None:
            yield node


def _pii_paths(node, pii: dict[str, str], hashed: bool = False) -> Iterator[tuple[str, bool]]:
    """(pii source column, whether its path was hashed) for every path from ``node`` to a source."""
    from sqlglot import exp

    if not node.downstream:
        if isinstance(node.source, exp.Table):
            name = f"{node.source.db}.{node.source.name}.{node.name.rpartition('.')[2]}"
            if name in pii:
                yield name, hashed
        return
    for child in node.downstream:
        yield from _pii_paths(child, pii, hashed or _edge_is_hashed(node, child))


def _source_schema(project: Project) -> dict:
    """sqlglot's schema of the tables the models read: the migrations' DDL, else the contracts."""
    schema: dict = {}
    for name, (_path, columns) in project.migration_tables.items():
        db, _, table = name.partition(".")
        schema.setdefault(db, {})[table] = {c: kind or "text" for c, (kind, _null) in columns.items()}
    for product in project.products:
        for table in product.tables:
            db, _, name = table.name.partition(".")
            if db not in contracts.PUBLISHED_SCHEMAS:
                schema.setdefault(db, {}).setdefault(name, {c.name: c.physical_type for c in table.columns})
    return schema


def _mart_lineage(project: Project) -> tuple[dict[tuple[str, str], object], list[Hit]]:
    """See ``Project.mart_lineage``."""
    from sqlglot.errors import SqlglotError
    from sqlglot.lineage import lineage

    schema = _source_schema(project)
    models = project.rendered_models
    sources = {name: sql for name, (_path, sql, _error) in models.items()
               if sql is not None and not name.startswith("marts.")}
    roots, untraced = {}, []
    for name, (path, sql, error) in sorted(models.items()):
        if error is not None:
            untraced.append((project.rel(path), None, f"{name} cannot be rendered without dbt"
                             f" ({error}), so its columns are not traced"))
        if sql is None or not name.startswith("marts."):
            continue
        try:
            columns = _output_columns(sql)
        except SqlglotError as error:
            untraced.append((project.rel(path), None,
                             f"{name} cannot be parsed ({error}), so its columns are not traced"))
            continue
        for column in columns:
            try:
                roots[(name, column)] = lineage(column, sql, schema=schema, sources=sources,
                                                dialect="postgres")
            except SqlglotError as error:
                untraced.append((project.rel(path), None, f"{name} column {column!r}: no lineage ({error})"))
    return roots, untraced


def _source_columns(node) -> Iterator[str]:
    """``schema.table.column`` of every source column ``node``'s lineage reaches."""
    from sqlglot import exp

    if not node.downstream:
        if isinstance(node.source, exp.Table):
            yield f"{node.source.db}.{node.source.name}.{node.name.rpartition('.')[2]}"
        return
    for child in node.downstream:
        yield from _source_columns(child)


IMPACT_SHOWN = 6  # downstream columns quoted in a DP014 finding; the rest counted


def _downstream(project: Project, table: str, column: str | None) -> str:
    """``; downstream: <mart column> (<product>, owner <team>), ...`` for the mart columns whose
    lineage reaches ``table``'s ``column`` (any of its columns when None): what a reviewer of the
    breaking change weighs (``lineage impact`` answers the same from the runs' events)."""
    prefix = f"{table}.{column}" if column else f"{table}."
    owners = {t.name: p for p in project.products for t in p.tables}
    hit = sorted(f"{mart}.{col}" for (mart, col), root in project.mart_lineage[0].items()
                 if any(source == prefix or (column is None and source.startswith(prefix))
                        for source in _source_columns(root)))
    if not hit:
        return ""
    shown = [f"{name} ({owners[name.rpartition('.')[0]].key}, owner {owners[name.rpartition('.')[0]].owner})"
             if name.rpartition(".")[0] in owners else name for name in hit[:IMPACT_SHOWN]]
    more = f" and {len(hit) - IMPACT_SHOWN} more" if len(hit) > IMPACT_SHOWN else ""
    return f"; downstream: {', '.join(shown)}{more}"


def no_pii_in_clear(project: Project) -> Iterator[Hit]:
    """DP016: no marts column traces (sqlglot lineage through the rendered staging and intermediate
    models) to a source column its contract classifies ``pii``, unless every such path passes a hash
    (md5, sha256, sha2, hash, a masking macro) and the mart's contract declares the column's
    masking (``customProperties: [{property: masking, value: sha256}]``)."""
    pii = {f"{t.name}.{c.name}": t.name for p in project.products for t in p.tables
           for c in t.columns if c.classification == "pii"}
    if not pii:
        return
    declared = {f"{t.name}.{c.name}": c.masking
                for p in project.products for t in p.tables for c in t.columns}
    roots, untraced = project.mart_lineage
    yield from untraced
    for (name, column), root in sorted(roots.items()):
        path = project.rendered_models[name][0]
        paths = dict.fromkeys(sorted(_pii_paths(root, pii)))
        clear = sorted({source for source, hashed in paths if not hashed})
        hashed = sorted({source for source, was_hashed in paths if was_hashed} - set(clear))
        line = _projection_line(path, column)
        if clear:
            yield (project.rel(path), line, f"{name} column {column!r} publishes pii "
                   f"{', '.join(clear)} in clear")
        elif hashed and not declared.get(f"{name}.{column}"):
            yield (project.rel(path), line, f"{name} column {column!r} hashes pii "
                   f"{', '.join(hashed)} but its contract declares no masking")


RULES: tuple[Rule, ...] = (
    Rule("DP001", ERROR, "make the contract valid ODCS v3.1.0 and meet mage_project.contracts.PROFILE",
         contract_is_valid),
    Rule("DP002", ERROR, "add a team member with role owner and an e-mail as username",
         contract_names_an_owner),
    Rule("DP003", ERROR, "add the dbt model or migration, or remove the table from the contract",
         declared_tables_exist),
    Rule("DP004", ERROR,
         "make the model's YAML and SQL columns (marts) or the migrations (raw) the contract's",
         declared_columns_match),
    Rule("DP005", ERROR, "make the contract's types and required agree with the DDL, data_type or SQL casts",
         declared_types_match),
    Rule("DP006", ERROR, "list the pipeline in its product's contract (customProperties pipelines) "
         "and tag it with contracts.pipeline_tags", pipelines_belong_to_a_product),
    Rule("DP007", ERROR, "declare the mart in its product's contract (schema[])",
         published_tables_belong_to_a_product),
    Rule("DP008", ERROR, "give the trigger an sla (seconds) in triggers.yaml", triggers_have_an_sla),
    Rule("DP009", ERROR, "set retry_config: {retries: N} in metadata.yaml (the project's or each block's)",
         triggers_have_retries),
    Rule("DP010", ERROR, "list the pipeline in a contract that has alertRoutes",
         triggers_have_an_alert_route),
    Rule("DP011", ERROR, "add an @test that calls a check of mage_project.checks", blocks_have_tests),
    Rule("DP012", ERROR, "call a named check, e.g. checks.require(checks.<check>(output)), not a bare assert",
         tests_call_named_checks),
    Rule("DP013", ERROR, "use \"{{ env_var('NAME') }}\" and set NAME in the environment (.env)",
         io_config_references_the_environment),
    Rule("DP014", ERROR, "make the change additive, or raise the contract's major version",
         contracts_keep_compatibility),
    Rule("DP015", ERROR, "remove the secret and read it from the environment; a false positive: "
         "detect-secrets scan --baseline .secrets.baseline, then detect-secrets audit .secrets.baseline",
         no_secrets_committed),
    Rule("DP016", ERROR, "leave it out of the mart, or hash it (sha256, md5) and declare the column's "
         "masking in its contract (classification pii, customProperties masking)", no_pii_in_clear),
)


def check(root: Path = PROJECT_ROOT, base: str | None = None,
          rules: Iterable[str] | None = None) -> list[Finding]:
    """Every finding of ``rules`` (default: all) on the project at ``root``, by rule, path and line."""
    project = Project(root=Path(root), base=base)
    wanted = set(rules) if rules is not None else None
    findings = []
    for rule in RULES:
        if wanted is None or rule.id in wanted:
            findings += [Finding(rule.id, rule.severity, path, line, f"{detail}: {rule.fix}")
                         for path, line, detail in rule.check(project)]
    return sorted(dict.fromkeys(findings), key=lambda f: (f.rule, f.path, f.line or 0, f.message))


# Code Quality severities (GitLab reads Code Climate's: info, minor, major, critical, blocker).
CODE_QUALITY_SEVERITY = {ERROR: "major", WARNING: "minor"}
FORMATS = ("text", "json", "github", "gitlab")


def _github_escape(value: str, is_property: bool = False) -> str:
    """A workflow command's data (``%``, CR, LF) or property value (also ``:`` and ``,``), escaped as
    the runner unescapes them (actions/toolkit ``command.ts``)."""
    value = value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return value.replace(":", "%3A").replace(",", "%2C") if is_property else value


def github_annotation(finding: Finding) -> str:
    """The finding as a GitHub Actions workflow command: an annotation on the file and line."""
    level = "error" if finding.severity == ERROR else "warning"
    properties = [f"file={_github_escape(finding.path, True)}"]
    if finding.line:
        properties.append(f"line={finding.line}")
    properties.append(f"title={_github_escape(finding.rule, True)}")
    return f"::{level} {','.join(properties)}::{_github_escape(finding.message)}"


def code_quality_issue(finding: Finding) -> dict:
    """The finding as one issue of a GitLab Code Quality report (Code Climate's format). The
    fingerprint leaves the line out, so a finding that only moves is the same issue in the MR view."""
    identity = "\0".join((finding.rule, finding.path, finding.message))
    fingerprint = hashlib.sha256(identity.encode()).hexdigest()
    return {"description": f"{finding.rule}: {finding.message}", "check_name": finding.rule,
            "fingerprint": fingerprint, "severity": CODE_QUALITY_SEVERITY[finding.severity],
            "location": {"path": finding.path, "lines": {"begin": finding.line or 1}}}


def check_command(as_json: bool = False, base: str | None = None, root: Path = PROJECT_ROOT,
                  output_format: str = "text") -> int:
    """``python -m mage_project check [--json | --format FORMAT] [--base REF]``: prints the findings
    (``text``: one line each; ``json``: one JSON list; ``github``: one workflow command each, which
    GitHub Actions shows as annotations; ``gitlab``: a Code Quality report, with the text lines on
    stderr for the job's log), a summary on stderr; 1 when any is an error, else 0."""
    output_format = "json" if as_json else output_format
    if output_format not in FORMATS:
        raise ValueError(f"unknown format {output_format!r}: one of {', '.join(FORMATS)}")
    findings = check(root, base)
    if output_format == "json":
        print(json.dumps([f.as_dict() for f in findings], indent=2))
    elif output_format == "gitlab":
        print(json.dumps([code_quality_issue(f) for f in findings], indent=2))
        for finding in findings:
            print(finding.text(), file=sys.stderr)
    else:
        for finding in findings:
            print(github_annotation(finding) if output_format == "github" else finding.text())
    errors = sum(f.severity == ERROR for f in findings)
    print(f"check: {errors} error(s), {len(findings) - errors} warning(s), {len(RULES)} rules",
          file=sys.stderr)
    return 1 if errors else 0
