"""Data products, read from their contracts: ``contracts/<domain>/<product>.yaml``.

Each contract is in the Open Data Contract Standard v3.1.0 (ODCS) and is the truth about its
product: the tables and their columns, who owns it, its quality rules, its service levels and,
in ``customProperties`` (what the standard has no field for), the Mage pipelines and dbt models
that produce it, where its alerts go and its run success-rate objective. Everything else
(pipeline tags, the catalogue, later the run-time checks) is derived from or checked against it.

``load_products`` validates every contract against the vendored ODCS JSON schema
(``contracts/schema/``, Draft 2019-09) and then against this project's own rules for contracts
(``PROFILE``: the fields the platform relies on), and hands on frozen ``Product`` objects. A
contract that breaks either raises one ``ContractError`` naming the file and, per violation, its
JSON path and message; a file that is not YAML names the file and line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml
from jsonschema import Draft201909Validator

from mage_project.config import PROJECT_ROOT

CONTRACTS = Path("contracts")
SCHEMA = CONTRACTS / "schema" / "odcs-json-schema-v3.1.0.json"
API_VERSION = "v3.1.0"
CLASSIFICATIONS = ("public", "internal", "confidential", "pii")
OWNER_ROLE = "owner"
# How a pii column may reach a published (marts) table: hashed, declared on the column as the
# custom property ``masking`` (ODCS has no field for it); the value says with what.
MASKINGS = ("sha256", "md5")
PUBLISHED_SCHEMAS = ("marts",)
# Loaded by the pipelines, held to their contracts at load time, each with its schema-drift
# policy (custom property ``schemaDrift``: what a load does with a field it does not know, a
# field missing, a value of the wrong type; ``mage_project.entities.DriftPolicy``).
RAW_SCHEMAS = ("raw",)
DRIFT_KINDS = {"unknownField": "unknown_field", "missingField": "missing_field", "wrongType": "wrong_type"}
DRIFT_MODES = ("freeze", "discard_row", "discard_value")
# A quality rule of one of these engines (type custom) is a Great Expectations expectation,
# ``implementation: {type: expect_..., kwargs: {...}}``; on a raw table the raw gate runs it over the
# rows of the file versions it checks, in chunks: so only one whose rows pass or fail each on
# their own (a column's or a pair's values, not their uniqueness), without ``mostly``.
GE_ENGINES = ("great-expectations", "greatExpectations")
_ROW_WISE_EXPECTATION = re.compile(r"expect_column(_pair)?_values_(?!to_be_unique)(a_)?to_\w+")
# What a load adds to each raw row (its run, its file): no contract's business.
LINEAGE_COLUMNS = ("_run_id", "_loaded_at", "_source_file", "_file_key", "_file_checksum", "_row_number")
_SCHEMA_DRIFT = {"type": "object", "additionalProperties": False, "required": list(DRIFT_KINDS),
                 "properties": {kind: {"enum": list(DRIFT_MODES)} for kind in DRIFT_KINDS}}

_SEMVER = r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$"
_EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
_NAME = r"^[a-z][a-z0-9_]*$"
_ENV_VAR = r"^[A-Z][A-Z0-9_]*$"
# A column's name, as the checks write it into their SQL unquoted (quality.identifier): refused
# here, with the contract's path, rather than when a run first checks the table.
_COLUMN = r"^[a-z_][a-z0-9_]*$"
# Quality rules name columns too: duplicateValues over arguments.properties.
_QUALITY = {"type": "array", "items": {"type": "object", "properties": {"arguments": {
    "type": "object", "properties": {"properties": {
        "type": "array", "items": {"type": "string", "pattern": _COLUMN}}}}}}}

# What this platform needs of a contract beyond the standard: ODCS leaves these optional (or free
# text), the catalogue, the tags and the checks cannot do without them.
_CUSTOM_PROPERTIES = {
    "pipelines": {"type": "array", "minItems": 1, "uniqueItems": True,
                  "items": {"type": "string", "pattern": _NAME}},
    "dbtModels": {"type": "array", "uniqueItems": True, "items": {"type": "string", "pattern": _NAME}},
    "alertRoutes": {
        "type": "array", "minItems": 1,
        "items": {
            "type": "object", "additionalProperties": False,
            "required": ["name", "email", "pagerdutyRoutingKeyEnv"],
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "email": {"type": "string", "pattern": _EMAIL},
                # The NAME of the variable that holds the routing key: never the key itself.
                "pagerdutyRoutingKeyEnv": {"type": "string", "pattern": _ENV_VAR},
            },
        },
    },
    "successRateObjective": {
        "type": "object", "additionalProperties": False, "required": ["target", "window"],
        "properties": {
            "target": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
            "window": {"type": "string", "pattern": r"^[1-9]\d*d$"},
        },
    },
}
REQUIRED_SLA_PROPERTIES = ("frequency", "latency", "retention")

PROFILE = {
    "$schema": "https://json-schema.org/draft/2019-09/schema",
    "type": "object",
    "required": ["name", "domain", "dataProduct", "team", "description", "schema",
                 "slaProperties", "customProperties"],
    "properties": {
        "apiVersion": {"const": API_VERSION},
        "version": {"type": "string", "pattern": _SEMVER},
        "domain": {"type": "string", "pattern": _NAME},
        "dataProduct": {"type": "string", "pattern": _NAME},
        "team": {
            "type": "object", "required": ["name", "members"],
            "properties": {"name": {"type": "string", "minLength": 1},
                           "members": {"type": "array", "minItems": 1}},
        },
        "schema": {
            "type": "array", "minItems": 1,
            "items": {
                "type": "object", "required": ["name", "physicalName", "physicalType", "properties"],
                "properties": {
                    # Schema-qualified, as the warehouse names it: raw.user_activity.
                    "physicalName": {"type": "string", "pattern": r"^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$"},
                    "physicalType": {"enum": ["table", "view"]},
                    "quality": _QUALITY,
                    "properties": {
                        "type": "array", "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["name", "logicalType", "physicalType", "classification",
                                         "description"],
                            "properties": {"name": {"type": "string", "pattern": _COLUMN},
                                           "classification": {"enum": list(CLASSIFICATIONS)},
                                           "quality": _QUALITY},
                        },
                    },
                },
            },
        },
        "slaProperties": {"type": "array", "minItems": 1},
        "customProperties": {"type": "array"},
    },
}


class ContractError(ValueError):
    """A contract that cannot be read or breaks the standard or the project's rules for contracts.

    ``violations`` holds ``(json_path, message)`` pairs; ``line`` the YAML line of a syntax error.
    """

    def __init__(self, path: Path | str, violations: Iterable[tuple[str, str]], line: int | None = None):
        self.path = str(path)
        self.violations = list(violations)
        self.line = line
        where = f"{self.path}:{line}" if line else self.path
        if len(self.violations) == 1 and line:
            message = f"{where}: {self.violations[0][1]}"
        else:
            lines = "\n".join(f"  {p}: {m}" for p, m in self.violations)
            message = (f"{where}: {len(self.violations)} violation(s) of ODCS {API_VERSION} "
                       f"and the project's contract rules:\n{lines}")
        super().__init__(message)


@dataclass(frozen=True)
class Column:
    name: str
    logical_type: str
    physical_type: str
    classification: str
    required: bool = False
    unique: bool = False
    primary_key: bool = False
    description: str = ""
    masking: str | None = None  # one of MASKINGS: how a pii column is hashed where published


@dataclass(frozen=True)
class QualityRule:
    name: str
    table: str  # schema.table
    column: str | None  # None for a rule on the whole table
    type: str  # ODCS quality type: library, sql, custom, text
    severity: str
    description: str = ""
    metric: str | None = None  # library rules: nullValues, invalidValues, duplicateValues, rowCount
    arguments: dict = field(default_factory=dict, hash=False)  # the metric's (validValues, ...)
    query: str | None = None  # sql rules: a select of one number, {object} the table
    operator: str | None = None  # mustBe, mustNotBe, mustBeGreaterThan, ... (ODCS's names)
    threshold: object = field(default=None, hash=False)  # the operator's value (a pair: Between)
    engine: str | None = None  # custom rules: the tool that runs them (dbt: a test of that name)
    implementation: object = field(default=None, hash=False)  # custom rules: what the engine runs

    @property
    def level(self) -> str:
        """The check's severity as the results store it: ``warn`` for ODCS's warning (or info)."""
        return "warn" if self.severity in ("warning", "warn", "info") else "error"

    @property
    def great_expectation(self) -> tuple[str, dict] | None:
        """The rule as one row-wise Great Expectations expectation, ``(type, kwargs)``, when it is
        one: a ``custom`` rule of engine great-expectations (``implementation: {type, kwargs}``), or
        a library metric that every row must pass (``mustBe: 0``): ``nullValues``, and
        ``invalidValues`` with ``validValues`` or ``pattern``. None: the warehouse measures it
        (``sql``, ``rowCount``, ``duplicateValues``, another threshold)."""
        if self.type == "custom":
            if self.engine in GE_ENGINES and isinstance(self.implementation, dict):
                return self.implementation["type"], dict(self.implementation.get("kwargs") or {})
            return None
        if self.column is None or self.operator != "mustBe" or self.threshold != 0:
            return None
        valid, pattern = self.arguments.get("validValues"), self.arguments.get("pattern")
        if self.metric == "nullValues":
            return "expect_column_values_to_not_be_null", {"column": self.column}
        if self.metric == "invalidValues" and valid and not pattern:
            return "expect_column_values_to_be_in_set", {"column": self.column, "value_set": list(valid)}
        if self.metric == "invalidValues" and pattern and not valid:
            return "expect_column_values_to_match_regex", {"column": self.column, "regex": pattern}
        return None


@dataclass(frozen=True)
class Table:
    name: str  # schema.table
    columns: tuple[Column, ...]
    quality: tuple[QualityRule, ...] = ()
    description: str = ""
    # A raw table's schema-drift policy, DriftPolicy's keywords: {"unknown_field": "freeze", ...}.
    drift: dict[str, str] | None = field(default=None, hash=False)

    @property
    def schema(self) -> str:
        return self.name.partition(".")[0]

    @property
    def table(self) -> str:
        return self.name.partition(".")[2]

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def classifications(self) -> dict[str, str]:
        return {c.name: c.classification for c in self.columns}


@dataclass(frozen=True)
class Slo:
    property: str  # an ODCS slaProperties property: frequency, latency, retention, ...
    value: object
    unit: str | None = None
    element: str | None = None
    description: str = ""


@dataclass(frozen=True)
class SuccessRateObjective:
    target: float  # share of scheduled runs that succeed, 0 < target <= 1
    window: str  # e.g. "30d"


@dataclass(frozen=True)
class AlertRoute:
    name: str
    email: str
    pagerduty_routing_key_env: str  # the environment variable's name, never its value


@dataclass(frozen=True)
class Trigger:
    pipeline: str
    name: str
    schedule_interval: str | None
    sla_seconds: int | None


@dataclass(frozen=True)
class Product:
    domain: str
    product: str
    version: str
    status: str
    id: str
    contract: str  # the contract's path, relative to the project root
    owner: str  # the owning team
    owner_email: str
    tables: tuple[Table, ...]
    pipelines: tuple[str, ...]
    dbt_models: tuple[str, ...]
    triggers: tuple[Trigger, ...]  # derived: the pipelines' triggers.yaml
    slos: tuple[Slo, ...]
    success_rate_objective: SuccessRateObjective
    alert_routes: tuple[AlertRoute, ...]

    @property
    def key(self) -> str:
        return f"{self.domain}/{self.product}"

    @property
    def table_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tables)

    def table(self, name: str) -> Table:
        for table in self.tables:
            if table.name == name:
                return table
        raise KeyError(f"{self.key} declares no table {name}")

    @property
    def tags(self) -> tuple[str, str]:
        """The Mage pipeline tags that say a pipeline serves this product."""
        return f"domain:{self.domain}", f"product:{self.product}"


class _StrictLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice in one mapping", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


@cache
def _odcs_validator(root: Path) -> Draft201909Validator:
    schema = json.loads((root / SCHEMA).read_text(encoding="utf-8"))
    # The standard's "format"s (date, date-time, uri) are assertions here, not annotations.
    return Draft201909Validator(schema, format_checker=Draft201909Validator.FORMAT_CHECKER)


_PROFILE_VALIDATOR = Draft201909Validator(PROFILE)


def _violations(validator: Draft201909Validator, document: object,
                prefix: str = "$") -> list[tuple[str, str]]:
    found = []
    for error in validator.iter_errors(document):
        message = error.message if len(error.message) <= 300 else error.message[:297] + "..."
        found.append((prefix + error.json_path[1:], message))
    return found


def _read(path: Path, shown: str) -> dict:
    try:
        document = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark else None
        problem = error.problem or error.context or str(error)
        raise ContractError(shown, [("$", f"not valid YAML: {problem}")], line=line) from error
    except yaml.YAMLError as error:
        raise ContractError(shown, [("$", f"not valid YAML: {error}")]) from error
    if not isinstance(document, dict):
        raise ContractError(shown, [("$", "a contract is a YAML mapping")])
    return document


def _custom_properties(document: dict) -> tuple[dict, list[tuple[str, str]]]:
    values, problems = {}, []
    for index, item in enumerate(document.get("customProperties") or []):
        if not isinstance(item, dict) or "property" not in item:
            continue  # the standard's schema already says what is wrong with it
        name = item["property"]
        if name in values:
            problems.append((f"$.customProperties[{index}].property", f"{name!r} given twice"))
            continue
        values[name] = item.get("value")
        if name in _CUSTOM_PROPERTIES:
            problems += _violations(Draft201909Validator(_CUSTOM_PROPERTIES[name]), item.get("value"),
                                    prefix=f"$.customProperties[{index}].value")
    for name in _CUSTOM_PROPERTIES if isinstance(document.get("customProperties"), list) else ():
        if name not in values:
            problems.append(("$.customProperties", f"no {name!r} custom property"))
    return values, problems


def _owner_email(document: dict) -> tuple[str | None, list[tuple[str, str]]]:
    members = (document.get("team") or {}).get("members") or []
    for member in members:
        if (isinstance(member, dict) and member.get("role") == OWNER_ROLE
                and re.match(_EMAIL, str(member.get("username", "")))):
            return member["username"], []
    return None, [("$.team.members", f"no member with role {OWNER_ROLE!r} and an e-mail as username")]


def _sla_problems(document: dict) -> list[tuple[str, str]]:
    if not isinstance(document.get("slaProperties"), list):
        return []  # the profile already says it is missing
    declared = {p.get("property") for p in document["slaProperties"] if isinstance(p, dict)}
    return [("$.slaProperties", f"no {name!r} SLA property")
            for name in REQUIRED_SLA_PROPERTIES if name not in declared]


def _path_problems(document: dict, relative: Path) -> list[tuple[str, str]]:
    expected = CONTRACTS / str(document.get("domain")) / f"{document.get('dataProduct')}.yaml"
    if relative != expected:
        return [("$", f"a contract of domain {document.get('domain')!r} and dataProduct "
                      f"{document.get('dataProduct')!r} belongs at {expected}")]
    return []


def _triggers(root: Path, pipelines: Iterable[str]) -> tuple[list[Trigger], list[str]]:
    triggers, missing = [], []
    for pipeline in pipelines:
        folder = root / "pipelines" / pipeline
        if not (folder / "metadata.yaml").is_file():
            missing.append(pipeline)
            continue
        path = folder / "triggers.yaml"
        declared = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path.is_file() else {}
        for trigger in declared.get("triggers") or []:
            triggers.append(Trigger(pipeline=pipeline, name=trigger["name"],
                                    schedule_interval=trigger.get("schedule_interval"),
                                    sla_seconds=trigger.get("sla")))
    return triggers, missing


def _table(obj: dict) -> Table:
    name = obj["physicalName"]
    columns, quality = [], []
    for rule in obj.get("quality") or []:
        quality.append(_rule(rule, name, None))
    for prop in obj["properties"]:
        columns.append(Column(
            name=prop["name"], logical_type=prop["logicalType"], physical_type=prop["physicalType"],
            classification=prop["classification"], required=prop.get("required", False),
            unique=prop.get("unique", False), primary_key=prop.get("primaryKey", False),
            description=prop.get("description", "").strip(), masking=_masking(prop)))
        for rule in prop.get("quality") or []:
            quality.append(_rule(rule, name, prop["name"]))
    drift = _schema_drift(obj)
    return Table(name=name, columns=tuple(columns), quality=tuple(quality),
                 description=(obj.get("description") or "").strip(),
                 drift={DRIFT_KINDS[k]: v for k, v in drift.items()} if drift else None)


def _schema_drift(obj: dict) -> dict | None:
    found = [p.get("value") for p in obj.get("customProperties") or []
             if isinstance(p, dict) and p.get("property") == "schemaDrift"]
    return found[0] if found else None


def _drift_problems(document: dict) -> list[tuple[str, str]]:
    """A raw table declares its schema-drift policy, and only a raw table does."""
    problems = []
    for index, obj in enumerate(document.get("schema") or []):
        if not isinstance(obj, dict) or not isinstance(obj.get("physicalName"), str):
            continue
        drift, raw = _schema_drift(obj), obj["physicalName"].partition(".")[0] in RAW_SCHEMAS
        where = f"$.schema[{index}]"
        if raw and drift is None:
            problems.append((where, f"raw table {obj['physicalName']} declares no schemaDrift "
                                    f"(customProperties: {', '.join(DRIFT_KINDS)}, each one of "
                                    f"{', '.join(DRIFT_MODES)})"))
        elif drift is not None and not raw:
            problems.append((where, "schemaDrift is a raw table's: what its loads do with drift"))
        elif drift is not None:
            problems += [(f"{where}.customProperties", f"schemaDrift: {e.message}")
                         for e in Draft201909Validator(_SCHEMA_DRIFT).iter_errors(drift)]
    return problems


def _quality_problems(document: dict) -> list[tuple[str, str]]:
    """The quality rules the runs cannot check: a Great Expectations rule that is not a row-wise
    expectation of a raw table (the raw gate is what runs them), and a pattern that not every
    value must match (a pattern is checked row by row)."""
    problems = []
    for t, obj in enumerate(document.get("schema") or []):
        if not isinstance(obj, dict):
            continue
        raw = str(obj.get("physicalName", "")).partition(".")[0] in RAW_SCHEMAS
        located = [(f"$.schema[{t}].quality[{r}]", rule) for r, rule in enumerate(obj.get("quality") or [])]
        located += [(f"$.schema[{t}].properties[{c}].quality[{r}]", rule)
                    for c, prop in enumerate(obj.get("properties") or []) if isinstance(prop, dict)
                    for r, rule in enumerate(prop.get("quality") or [])]
        for where, rule in located:
            if isinstance(rule, dict):
                problems += [(where, problem) for problem in _rule_problems(rule, raw)]
    return problems


def _rule_problems(rule: dict, raw: bool) -> list[str]:
    if rule.get("type") == "custom" and rule.get("engine") in GE_ENGINES:
        implementation = rule.get("implementation")
        if not raw:
            return ["a Great Expectations rule is checked on a raw table only (by the raw gate)"]
        if not (isinstance(implementation, dict) and isinstance(implementation.get("kwargs", {}), dict)
                and _ROW_WISE_EXPECTATION.fullmatch(str(implementation.get("type")))):
            return ["implementation must be {type: expect_column_values_to_... or "
                    "expect_column_pair_values_..., kwargs: {...}}: the raw gate checks it row by row"]
        if "mostly" in implementation.get("kwargs", {}):
            return ["kwargs.mostly is not supported: every row must pass (the gate checks in chunks)"]
    if (rule.get("arguments") or {}).get("pattern") is not None and rule.get("mustBe") != 0:
        return ["a pattern is checked row by row: every value must match it (mustBe: 0)"]
    return []


OPERATORS = ("mustBe", "mustNotBe", "mustBeGreaterThan", "mustBeGreaterOrEqualTo",
             "mustBeLessThan", "mustBeLessOrEqualTo", "mustBeBetween", "mustNotBeBetween")


def _rule(rule: dict, table: str, column: str | None) -> QualityRule:
    kind = rule.get("type", "library")
    operator = next((op for op in OPERATORS if op in rule), None)
    return QualityRule(name=rule.get("name") or f"{table}.{column or ''}:{rule.get('metric', kind)}",
                       table=table, column=column, type=kind, severity=rule.get("severity", "error"),
                       description=(rule.get("description") or "").strip(),
                       metric=rule.get("metric"), arguments=dict(rule.get("arguments") or {}),
                       query=rule.get("query"), operator=operator,
                       threshold=rule.get(operator) if operator else None, engine=rule.get("engine"),
                       implementation=rule.get("implementation"))


def _masking(prop: dict) -> str | None:
    for custom in prop.get("customProperties") or []:
        if isinstance(custom, dict) and custom.get("property") == "masking":
            return custom.get("value")
    return None


def _masking_problems(document: dict) -> list[tuple[str, str]]:
    """A pii column of a published table must declare its masking, and only a pii column may."""
    problems = []
    for t, obj in enumerate(document.get("schema") or []):
        if not isinstance(obj, dict):
            continue  # the schema's own violation
        published = str(obj.get("physicalName", "")).partition(".")[0] in PUBLISHED_SCHEMAS
        for c, prop in enumerate(obj.get("properties") or []):
            if not isinstance(prop, dict):
                continue
            masking, where = _masking(prop), f"$.schema[{t}].properties[{c}]"
            if masking is not None and masking not in MASKINGS:
                problems.append((f"{where}.customProperties", f"masking {masking!r} is not one of "
                                 f"{', '.join(MASKINGS)}"))
            elif prop.get("classification") == "pii" and published and masking is None:
                problems.append((where, f"{obj['physicalName']}.{prop.get('name')} is pii in a "
                                 "published table: declare its masking (customProperties: "
                                 f"masking: one of {', '.join(MASKINGS)}), or do not publish it"))
            elif masking is not None and prop.get("classification") != "pii":
                problems.append((f"{where}.customProperties",
                                 "masking is declared on a column that is not classified pii"))
    return problems


def load_contract(path: Path, root: Path = PROJECT_ROOT) -> Product:
    """The product of one contract file, validated; ``ContractError`` names every violation."""
    path = Path(path)
    absolute = path if path.is_absolute() else root / path
    try:
        relative = absolute.resolve().relative_to(root.resolve())
    except ValueError:
        relative = absolute
    document = _read(absolute, str(relative))
    problems = _violations(_odcs_validator(root), document)
    # The root forbids unknown fields twice (additionalProperties and unevaluatedProperties): once is enough.
    unknown = {p for p, m in problems if m.startswith("Additional properties")}
    problems = [(p, m) for p, m in problems
                if not (p in unknown and m.startswith("Unevaluated properties"))]
    problems += _violations(_PROFILE_VALIDATOR, document)
    custom, custom_problems = _custom_properties(document)
    owner_email, owner_problems = _owner_email(document)
    problems += custom_problems + owner_problems + _sla_problems(document)
    problems += _path_problems(document, relative) + _masking_problems(document)
    problems += _drift_problems(document) + _quality_problems(document)
    triggers: list[Trigger] = []
    if isinstance(custom.get("pipelines"), list):
        triggers, missing = _triggers(root, custom["pipelines"])
        index = next(i for i, p in enumerate(document["customProperties"])
                     if isinstance(p, dict) and p.get("property") == "pipelines")
        problems += [(f"$.customProperties[{index}].value",
                      f"pipeline {name!r} does not exist (no pipelines/{name}/metadata.yaml)")
                     for name in missing]
    if problems:
        raise ContractError(relative, sorted(dict.fromkeys(problems)))
    objective = custom["successRateObjective"]
    return Product(
        domain=document["domain"], product=document["dataProduct"], version=document["version"],
        status=document["status"], id=document["id"], contract=str(relative),
        owner=document["team"]["name"], owner_email=owner_email,
        tables=tuple(_table(obj) for obj in document["schema"]),
        pipelines=tuple(custom["pipelines"]), dbt_models=tuple(custom["dbtModels"]),
        triggers=tuple(triggers),
        slos=tuple(Slo(property=p["property"], value=p["value"], unit=p.get("unit"),
                       element=p.get("element"), description=(p.get("description") or "").strip())
                   for p in document["slaProperties"]),
        success_rate_objective=SuccessRateObjective(target=objective["target"], window=objective["window"]),
        alert_routes=tuple(AlertRoute(name=r["name"], email=r["email"],
                                      pagerduty_routing_key_env=r["pagerdutyRoutingKeyEnv"])
                           for r in custom["alertRoutes"]),
    )


def contract_paths(root: Path = PROJECT_ROOT) -> list[Path]:
    """Every contract file under ``contracts/`` (the vendored schema folder is not one)."""
    folder = root / CONTRACTS
    return sorted(p for p in folder.rglob("*.yaml")
                  if (root / SCHEMA).parent not in p.parents)


def load_products(root: Path = PROJECT_ROOT) -> tuple[Product, ...]:
    """Every product of the project, by domain and name; ``ContractError`` on the first bad contract,
    or when two contracts claim the same product name or the same table."""
    products = sorted((load_contract(p, root) for p in contract_paths(root)),
                      key=lambda p: (p.domain, p.product))
    seen_names: dict[str, Product] = {}
    seen_tables: dict[str, Product] = {}
    for product in products:
        if product.product in seen_names:
            # Mage's tags name the product without its domain: the name is unique project-wide.
            raise ContractError(product.contract, [("$.dataProduct", (
                f"product {product.product!r} is already {seen_names[product.product].key} "
                f"({seen_names[product.product].contract})"))])
        seen_names[product.product] = product
        for index, table in enumerate(product.tables):
            if table.name in seen_tables:
                raise ContractError(product.contract, [(f"$.schema[{index}].physicalName", (
                    f"{table.name} already belongs to {seen_tables[table.name].key} "
                    f"({seen_tables[table.name].contract}): a table belongs to one product"))])
            seen_tables[table.name] = product
    return tuple(products)


def raw_table(name: str, root: Path = PROJECT_ROOT) -> tuple[Product, Table]:
    """The product that declares the raw table ``name`` (schema.table), and its declaration;
    ``LookupError`` when no contract does."""
    for product, table in _raw_tables(root.resolve()):
        if table.name == name:
            return product, table
    raise LookupError(f"no contract declares the raw table {name}: a raw table belongs to a product")


@cache
def _raw_tables(root: Path) -> tuple[tuple[Product, Table], ...]:
    # Read once per process: a load looks its table up for every file.
    return tuple((product, table) for product in load_products(root) for table in product.tables
                 if table.schema in RAW_SCHEMAS)


def pipeline_tags(products: Iterable[Product]) -> dict[str, tuple[str, ...]]:
    """Pipeline -> the ``domain:`` and ``product:`` tags its metadata.yaml carries, from the contracts."""
    tags: dict[str, set[str]] = {}
    for product in products:
        for pipeline in product.pipelines:
            tags.setdefault(pipeline, set()).update(product.tags)
    return {pipeline: tuple(sorted(found, key=lambda t: (not t.startswith("domain:"), t)))
            for pipeline, found in sorted(tags.items())}


def catalogue(products: Iterable[Product]) -> list[dict]:
    """The products as JSON-ready objects, one per product (``products --json``)."""
    return [{
        "domain": p.domain,
        "product": p.product,
        "version": p.version,
        "status": p.status,
        "id": p.id,
        "contract": p.contract,
        "owner": p.owner,
        "owner_email": p.owner_email,
        "tables": list(p.table_names),
        "pipelines": list(p.pipelines),
        "dbt_models": list(p.dbt_models),
        "triggers": [{"pipeline": t.pipeline, "name": t.name, "schedule_interval": t.schedule_interval,
                      "sla_seconds": t.sla_seconds} for t in p.triggers],
        "slos": [{"property": s.property, "value": s.value, "unit": s.unit, "element": s.element}
                 for s in p.slos],
        "success_rate_objective": {"target": p.success_rate_objective.target,
                                   "window": p.success_rate_objective.window},
        "alert_routes": [{"name": r.name, "email": r.email,
                          "pagerduty_routing_key_env": r.pagerduty_routing_key_env}
                         for r in p.alert_routes],
    } for p in products]


def _duration(seconds: int | None) -> str:
    if not seconds:
        return "none"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def catalogue_text(products: Iterable[Product]) -> str:
    """The products as a table, then what each one promises (``products``)."""
    products = list(products)
    header = ("DOMAIN", "PRODUCT", "VERSION", "STATUS", "OWNER", "OWNER E-MAIL", "TABLES", "PIPELINES")
    rows = [header] + [(p.domain, p.product, p.version, p.status, p.owner, p.owner_email,
                        str(len(p.tables)), ", ".join(p.pipelines)) for p in products]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = ["  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]).rstrip()
             for row in rows]
    for p in products:
        slos = [f"{s.property} {s.value}{' ' + s.unit if s.unit else ''}" for s in p.slos]
        slos.append(f"run success rate {p.success_rate_objective.target:.1%} over "
                    f"{p.success_rate_objective.window}")
        details = {
            "contract": p.contract,
            "tables": ", ".join(p.table_names),
            "pipelines": ", ".join(p.pipelines),
            "dbt models": ", ".join(p.dbt_models) or "none",
            "triggers": ", ".join(
                f"{t.pipeline}:{t.name} ({t.schedule_interval}, SLA {_duration(t.sla_seconds)})"
                for t in p.triggers) or "none",
            "SLOs": "; ".join(slos),
            "alert routes": ", ".join(f"{r.name} <{r.email}>, PagerDuty key in ${r.pagerduty_routing_key_env}"
                                      for r in p.alert_routes),
        }
        lines += ["", f"{p.key} {p.version} ({p.status}), owner {p.owner} <{p.owner_email}>"]
        lines += [f"  {label:<13}{value}" for label, value in details.items()]
    return "\n".join(lines)


def products_command(as_json: bool = False, root: Path = PROJECT_ROOT) -> str:
    """What ``python -m mage_project products [--json]`` prints; ``ContractError`` when a contract is bad."""
    products = load_products(root)
    if as_json:
        return json.dumps(catalogue(products), indent=2)
    return catalogue_text(products)
