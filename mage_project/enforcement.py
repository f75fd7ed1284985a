"""The data products' contracts held at run time: before the marts are published, every table a
contract declares in a published schema is checked, as the audit build left it, against what the
contract promises (``mage_project.contracts``):

- ``schema``: every declared column is there with a compatible type, and no other column is
  (a renamed column is one missing and one undeclared; types compared in one spelling on both
  warehouses, ``warehouse.portable.canonical_type``);
- ``required``: no nulls; ``unique``: no value twice;
- ``masking``: a ``pii`` column holds only hashes of its declared masking (never a value in clear);
- ``quality``: each of the table's quality rules: ``sql`` (its query over the table against its
  operator), the library metrics ``nullValues``, ``duplicateValues``, ``invalidValues``
  (``validValues``) and ``rowCount``, and ``custom`` rules of engine ``dbt`` (the dbt test of that
  name must have run in the build and passed).

At load time (``check_loaded``) the rows a load wrote to a raw table, in its transaction, are
held to the same ``schema``, ``required`` and ``unique`` promises of the table's contract. Its
quality rules are the raw gate's (``mage_project.pipelines.quality_gates``), over the rows of the
file versions it checks: those that are Great Expectations (``QualityRule.great_expectation``)
as the entity's suite, the others here (``check_versions``).

Each check is a ``quality.QualityResult`` of kind ``contract`` (stored in ``ops.quality_results``
with the others); ``observed`` names the product, table, column and rule. Plain SQL with ``%s``
parameters and unquoted lower-case names, as ``mage_project.quality``: the same on both
warehouses.
"""

from __future__ import annotations

import operator as op
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass

from mage_project.contracts import (
    LINEAGE_COLUMNS,
    PUBLISHED_SCHEMAS,
    Product,
    QualityRule,
    Table,
    raw_table,
)
from mage_project.quality import FileVersion, QualityResult, identifier
from mage_project.warehouse.portable import canonical_type

KIND = "contract"
# A hash of each masking as the warehouse stores it: lower- or upper-case hex of this length.
HASH_LENGTH = {"sha256": 64, "md5": 32}
_OPERATORS: dict[str, Callable[[object, object], bool]] = {
    "mustBe": op.eq, "mustNotBe": op.ne, "mustBeGreaterThan": op.gt,
    "mustBeGreaterOrEqualTo": op.ge, "mustBeLessThan": op.lt, "mustBeLessOrEqualTo": op.le,
    "mustBeBetween": lambda v, t: t[0] <= v <= t[1],
    "mustNotBeBetween": lambda v, t: not t[0] <= v <= t[1],
}


def check_published(db, cur, products: Iterable[Product], *, relation: Callable[[str], str],
                    dbt_tests: Sequence[dict] = ()) -> list[QualityResult]:
    """Every check of every table the products declare in a published schema. ``relation``:
    where a published table's new build is (``marts.x`` -> ``marts__audit.x``); ``dbt_tests``:
    the build's test results (``transform.summary``) that ``custom`` dbt rules look up."""
    results: list[QualityResult] = []
    for product in products:
        for table in product.tables:
            if table.schema in PUBLISHED_SCHEMAS:
                results += check_table(db, cur, product, table, relation(table.name), dbt_tests)
    return results


def grant_reads(db, cur, products: Iterable[Product], *, relation: Callable[[str], str]) -> dict:
    """Let the analyst role read, of every table the products declare in a published schema, the
    columns its contract does not classify pii (``relation`` as for ``check_published``).
    Returns {table: columns granted}."""
    granted = {}
    for product in products:
        for table in product.tables:
            if table.schema in PUBLISHED_SCHEMAS:
                columns = [c.name for c in table.columns if c.classification != "pii"]
                db.grant_reads(cur, relation(table.name), columns)
                granted[table.name] = columns
    return granted


@dataclass(frozen=True)
class Rows:
    """The rows a check reads: all of a table's, or those of ``predicate`` (SQL with ``%s``
    parameters ``params``), such as one load's: a raw table is held to its contract at load
    time over what the load wrote, not over all it ever held."""

    source: str
    params: tuple = ()

    @classmethod
    def of(cls, where: str, predicate: str | None = None, params: tuple = ()) -> Rows:
        if predicate is None:
            return cls(where)
        return cls(f"(select * from {where} where {predicate}) as checked", tuple(params))  # noqa: S608

    def count(self, cur, condition: str = "", params: tuple = ()) -> int:
        """``count(*)`` of the rows (where ``condition``)."""
        return _count(cur, f"select count(*) from {self.source}"  # noqa: S608 - identifiers checked
                           + (f" where {condition}" if condition else ""), self.params + params)

    @classmethod
    def of_versions(cls, where: str, versions: Sequence[tuple[str, str]]) -> Rows:
        """The rows of the raw table ``where`` from the file versions ``(file key, checksum)``:
        joined to them, one scan however many there are."""
        pairs = ", ".join(["(%s, %s)"] * len(versions))
        return cls(f"(select r.* from {where} as r join (values {pairs}) as v (file_key, checksum)"  # noqa: S608 - identifiers checked, values bound
                   " on r._file_key = v.file_key and r._file_checksum = v.checksum) as checked",
                   tuple(value for version in versions for value in version))


class ContractBroken(Exception):
    """A load wrote rows that break their raw table's contract: nothing of it is kept (its
    transaction is rolled back); ``results`` are every check of the load, to store."""

    def __init__(self, product: Product, results: list[QualityResult]):
        self.product, self.results = product, results
        self.broken = [r for r in results if r.blocking]
        # A table whose columns are not the contract's is ours to fix (a migration), not the data's.
        self.of_the_table = any(r.observed["rule"] == "schema" for r in self.broken)
        super().__init__("; ".join(violations(self.broken)))


def check_loaded(db, cur, name: str, predicate: str, params: tuple) -> list[QualityResult]:
    """Hold the rows a load just wrote to the raw table ``name`` (those of ``predicate``, in the
    load's transaction) to the table's contract: its columns and types, ``required`` and
    ``unique``; raises ``ContractBroken`` when they break it. The contract's quality rules on
    raw rows are the raw gate's (``check_versions``: a bad value stops the marts, it does not
    hold back the rest of its file). Lineage columns the contract does not declare are not its
    business."""
    product, table = raw_table(name)
    results = check_table(db, cur, product, table, name, rows=Rows.of(name, predicate, params),
                          ignored=set(LINEAGE_COLUMNS) - set(table.column_names), rules=False)
    if any(r.blocking for r in results):
        raise ContractBroken(product, results)
    return results


def check_versions(cur, versions: Sequence[FileVersion]) -> list[QualityResult]:
    """The raw gate's share of the raw tables' contracts: each quality rule of a table that is not
    one of the Great Expectations the gate runs itself (``Entity.expectations``), measured in the
    warehouse over the rows of the file ``versions`` it checks."""
    by_table: dict[str, list[FileVersion]] = {}
    for version in versions:
        by_table.setdefault(version.entity.qualified_name, []).append(version)
    results = []
    for name, checked in by_table.items():
        product, table = raw_table(name)
        rows = Rows.of_versions(name, [(v.file_key, v.checksum) for v in checked])
        results += [_rule(_Checker(product, table), cur, rows, rule, ())
                    for rule in table.quality if rule.great_expectation is None]
    return results


def check_table(db, cur, product: Product, table: Table, where: str,
                dbt_tests: Sequence[dict] = (), rows: Rows | None = None,
                ignored: Collection[str] = (), rules: bool = True) -> list[QualityResult]:
    """The checks of one declared ``table``, whose rows are at ``where`` (schema.table): all of
    them, or ``rows``. ``ignored``: columns of ``where`` that are not the contract's business (a
    raw table's lineage); ``rules``: whether its quality rules are checked too."""
    check = _Checker(product, table)
    rows = rows or Rows.of(where)
    schema_name, _, table_name = where.partition(".")
    actual = {c.name: c for c in db.table_columns(cur, identifier(schema_name), identifier(table_name))
              if c.name not in ignored}
    if not actual:
        return [check.result("schema", None, False, f"{where} does not exist: the build made no "
                             f"{table.name}")]
    declared = {c.name: c for c in table.columns}
    results = [check.schema(declared, actual)]
    if not results[0].passed:
        # The values of a table whose columns are not the contract's are not checked: its rules
        # may not even run (a column missing, compared as another type).
        return results
    for column in table.columns:
        if column.required:
            nulls = rows.count(cur, f"{identifier(column.name)} is null")
            results.append(check.result("required", column.name, nulls == 0,
                                        f"{nulls} null(s) in a required column", nulls=nulls))
        if column.unique:
            duplicates = _duplicates(cur, rows, [column.name])
            results.append(check.result("unique", column.name, duplicates == 0,
                                        f"{duplicates} value(s) more than once in a unique column",
                                        duplicates=duplicates))
        if column.masking:
            # A pii column declared hashed (a published one always is: the contract refuses it
            # otherwise; a raw one may hold pii in clear, its contract says so).
            results.append(_masking(check, cur, rows, column.name, column.masking))
    if rules:
        results += [_rule(check, cur, rows, rule, dbt_tests) for rule in table.quality]
    return results


class _Checker:
    """Makes the results of one product's table."""

    def __init__(self, product: Product, table: Table):
        self.product, self.table = product, table

    def result(self, rule: str, column: str | None, passed: bool | None, problem: str,
               severity: str = "error", name: str | None = None, **observed) -> QualityResult:
        where = f"{self.table.name}.{column}" if column else self.table.name
        return QualityResult(
            check_name=name or f"contract_{rule}" + (f"_{column}" if column else ""),
            check_kind=KIND, table_name=self.table.name, severity=severity, passed=passed,
            observed={"product": self.product.key, "version": self.product.version,
                      "owner_email": self.product.owner_email, "table": self.table.name,
                      "column": column, "rule": rule, **observed,
                      **({} if passed else {"message": f"{self.product.key} {where}: {rule}: {problem}"})})

    def schema(self, declared: dict, actual: dict) -> QualityResult:
        missing = [name for name in declared if name not in actual]
        undeclared = [name for name in actual if name not in declared]
        retyped = {name: {"contract": c.physical_type, "build": actual[name].data_type}
                   for name, c in declared.items() if name in actual
                   and not compatible(c.physical_type, actual[name].canonical)}
        problems = ([f"column {name} is missing (renamed or removed?)" for name in missing]
                    + [f"column {name} is not in the contract" for name in undeclared]
                    + [f"column {name} is {t['build']} in the build, the contract says "
                       f"{t['contract']}" for name, t in retyped.items()])
        column = next(iter([*missing, *undeclared, *retyped]), None) if len(problems) == 1 else None
        return self.result("schema", column, not problems, "; ".join(problems),
                           name="contract_schema", missing=missing, undeclared=undeclared,
                           retyped=retyped)


def compatible(physical_type: str, canonical: str) -> bool:
    """Whether a column the warehouse holds as ``canonical`` keeps the contract's type: the same
    canonical type; an unconstrained ``numeric`` accepts any decimal."""
    declared = canonical_type(physical_type)
    return declared == canonical or (declared == "decimal" and canonical.startswith("decimal"))


def _count(cur, statement: str, params: tuple = ()) -> int:
    cur.execute(statement, params or None)  # no parameters: a % in a rule's query is literal
    (value,) = cur.fetchone()
    return int(value or 0)


def _duplicates(cur, rows: Rows, columns: list[str]) -> int:
    """Rows beyond the first of each value of ``columns`` (nulls not counted)."""
    names = ", ".join(identifier(c) for c in columns)
    not_null = " and ".join(f"{c} is not null" for c in columns)
    return _count(cur, f"select coalesce(sum(n - 1), 0) from (select count(*) as n from {rows.source}"  # noqa: S608 - identifiers checked
                       f" where {not_null} group by {names} having count(*) > 1) as repeated", rows.params)


def _masking(check: _Checker, cur, rows: Rows, column: str, masking: str) -> QualityResult:
    length, column = HASH_LENGTH[masking], identifier(column)
    clear = rows.count(cur, f"{column} is not null and (length({column}) <> %s or"
                            f" translate(lower({column}), '0123456789abcdef', '') <> '')", (length,))
    return check.result("masking", column, clear == 0,
                        f"{clear} value(s) that are not {masking} hashes: pii in clear",
                        masking=masking, in_clear=clear)


def _rule(check: _Checker, cur, rows: Rows, rule: QualityRule,
          dbt_tests: Sequence[dict]) -> QualityResult:
    base = {"name": rule.name, "severity": rule.level}
    if rule.type == "custom" and rule.engine == "dbt":
        ran = [t for t in dbt_tests if t["name"] == rule.name]
        status = ran[0]["status"] if ran else None
        return check.result("quality", rule.column, status == "pass",
                            f"rule {rule.name}: the dbt test "
                            + ("did not run in the build" if status is None else f"ended {status}"),
                            dbt_status=status, **base)
    value = _measure(cur, rows, rule)
    if value is None or rule.operator is None:
        return check.result("quality", rule.column, None,
                            f"rule {rule.name} ({rule.type} {rule.metric or ''}) is not checked at "
                            "run time", **base)
    passed = _OPERATORS[rule.operator](value, rule.threshold)
    return check.result("quality", rule.column, passed,
                        f"rule {rule.name}: measured {value}, {rule.operator} {rule.threshold}",
                        value=value, **base)


def _measure(cur, rows: Rows, rule: QualityRule) -> float | None:
    """What a rule measures on the table, or None when it is not measured here."""
    if rule.type == "sql" and rule.query:
        # With parameters, a % of the rule's own query is doubled to stay a literal %.
        query = rule.query.replace("%", "%%") if rows.params else rule.query
        return _count(cur, query.replace("{object}", rows.source), rows.params)
    column = identifier(rule.column) if rule.column else None
    if rule.metric == "rowCount":
        return rows.count(cur)
    if rule.metric == "nullValues" and column:
        return rows.count(cur, f"{column} is null")
    if rule.metric == "duplicateValues":
        return _duplicates(cur, rows, list(rule.arguments.get("properties") or [column]))
    if rule.metric == "invalidValues" and column and rule.arguments.get("validValues"):
        values = tuple(rule.arguments["validValues"])
        marks = ", ".join(["%s"] * len(values))
        return rows.count(cur, f"{column} is not null and {column} not in ({marks})", values)
    return None


def violations(results: Iterable[QualityResult]) -> list[str]:
    """The message of each blocking result: product, table, column, rule and what is wrong."""
    return [r.observed["message"] for r in results if r.blocking]
