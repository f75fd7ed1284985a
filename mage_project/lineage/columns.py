"""Column-level lineage of the dbt models: OpenLineage ``columnLineage`` facets (the 1-2-0 facet
openlineage-python 1.31 emits), computed from each model's compiled SQL with sqlglot.

dbt knows which models a model reads, never which columns feed which: that is read here from the
SQL dbt compiled (``manifest.json``'s ``compiled_code``), the parents' columns taken from the
manifest (their YAML) or, when given, from dbt's ``catalog.json``, so that ``select *`` expands.
A ``select *`` over a relation neither describes (the raw sources declare no columns) is followed
by the names the selects above it use.

Each input field's transformation follows the facet's definitions
(openlineage.io/docs/spec/facets/dataset-facets/column_lineage_facet), decided by where the input
column sits in the expression of the output column, or in the clauses of the select:

==============================================  ========================  =================
input column                                    type/subtype              placed in
==============================================  ========================  =================
selected as is (``a``, ``t.a as b``)            DIRECT/IDENTITY           ``fields[col]``
in an expression, a cast, a function, a         DIRECT/TRANSFORMATION     ``fields[col]``
CASE result, a COALESCE or NULLIF value
under an aggregate (sum, min, count, ...)       DIRECT/AGGREGATION        ``fields[col]``
a CASE/IF condition, a COALESCE argument        INDIRECT/CONDITIONAL      ``fields[col]``
tested for null (all but the last), NULLIF's
a window's PARTITION BY or ORDER BY             INDIRECT/WINDOW           ``fields[col]``
WHERE, HAVING, QUALIFY                          INDIRECT/FILTER           ``dataset``
JOIN ... ON (sqlglot turns USING into ON)       INDIRECT/JOIN             ``dataset``
GROUP BY, SELECT DISTINCT, UNION (distinct)     INDIRECT/GROUP_BY         ``dataset``
ORDER BY of the model's select (or of a         INDIRECT/SORT             ``dataset``
select with LIMIT: elsewhere it sorts nothing)
==============================================  ========================  =================

``masking`` is true under a hash (the functions ``mage_project.policy`` counts as masking a pii
column: md5, sha256, sha2, digest, a macro named for masking, ...) and under ``count``, which the
spec names as the masking aggregation (OpenLineage's Spark integration marks it so too).

Through CTEs and subqueries the transformations compose as OpenLineage's Spark integration
composes them (``TransformationInfo.merge``): an INDIRECT one wins, the outer first; between
DIRECT ones the stronger, AGGREGATION over TRANSFORMATION over IDENTITY; masking when either masks.
A filter, join or grouping of a CTE shapes the rows of every select that reads it, so it is carried
up to the model's ``dataset`` list.

The facet body returned has no ``_producer``/``_schemaURL``: the emitter adds them (or build the
client's class with ``to_client_facet``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import sqlglot
from openlineage.client.generated import column_lineage_dataset as cl
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import OptimizeError, SqlglotError
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import Scope, build_scope

log = logging.getLogger(__name__)

DIRECT, INDIRECT = "DIRECT", "INDIRECT"
# The DIRECT subtypes, strongest first (the order of Spark's TransformationInfo.Subtypes).
_STRENGTH = {"AGGREGATION": 0, "TRANSFORMATION": 1, "IDENTITY": 2}

Dataset = Callable[[str], tuple[str, str]]


class Transformation(NamedTuple):
    """One entry of an input field's ``transformations``."""

    type: str
    subtype: str
    description: str = ""
    masking: bool = False


IDENTITY = Transformation(DIRECT, "IDENTITY")
TRANSFORMATION = Transformation(DIRECT, "TRANSFORMATION")

Field = tuple[str, str]  # (relation "schema.table", column)
Deps = dict[Field, set[Transformation]]


def indirect(subtype: str, description: str) -> Transformation:
    return Transformation(INDIRECT, subtype, description)


def merge(outer: Transformation, inner: Transformation) -> Transformation:
    """The transformation from a to c, given b = ``inner``(a) and c = ``outer``(b): an INDIRECT
    step decides the relation (the outer first), else the stronger DIRECT one; masked if either is.
    (OpenLineage's Spark integration, TransformationInfo.merge, so both producers agree.)"""
    if outer.type == INDIRECT:
        chosen = outer
    elif inner.type == INDIRECT or _STRENGTH[inner.subtype] < _STRENGTH[outer.subtype]:
        chosen = inner
    else:
        chosen = outer
    description = chosen.description or (inner.description if chosen.subtype == inner.subtype else "")
    return chosen._replace(description=description, masking=outer.masking or inner.masking)


def _add(into: Deps, deps: Deps, outer: Transformation | None = None) -> None:
    for key, transformations in deps.items():
        found = into.setdefault(key, set())
        found.update(t if outer is None else merge(outer, t) for t in transformations)


# Functions that hash what they are given (PostgreSQL's md5, sha256, digest; Snowflake's sha2, md5,
# hash), and any function or macro whose name says it masks or hashes: the rule by which
# ``mage_project.policy`` (DP016) lets a pii column reach a mart. Kept here, below the policy
# layer, so that the policy can read its lineage from this module without an import circle.
HASHING_FUNCTIONS = frozenset({"md5", "sha1", "sha224", "sha256", "sha384", "sha512", "sha2", "digest",
                               "hash", "md5_hex", "sha1_hex", "sha2_hex"})


def _is_hashing(node: exp.Expression) -> bool:
    name = (node.name if isinstance(node, exp.Anonymous) else type(node).__name__).lower()
    return (name in HASHING_FUNCTIONS or name.startswith(("md5", "sha")) or "mask" in name
            or "hash" in name)


def _function_name(node: exp.Func, dialect: Dialect) -> str:
    """The function as the model's SQL names it (sqlglot's class names differ: SHA2Digest)."""
    return node.name.lower() if isinstance(node, exp.Anonymous) else node.sql(dialect).split("(")[0].lower()


def _aggregation(node: exp.AggFunc, dialect: Dialect) -> Transformation:
    name = _function_name(node, dialect)
    name = f"{name} distinct" if isinstance(node.this, exp.Distinct) else name
    return Transformation(DIRECT, "AGGREGATION", name, isinstance(node, exp.Count) or _is_hashing(node))


def _steps(node: exp.Expression, dialect: Dialect) -> Iterator[tuple[exp.Expression, Transformation]]:
    """(child, how the child's value reaches ``node``'s value) for each child of ``node``."""
    if isinstance(node, exp.Alias | exp.Paren | exp.Distinct | exp.Ordered):
        yield from ((child, IDENTITY) for child in node.iter_expressions())
    elif isinstance(node, exp.Window):
        yield node.this, IDENTITY
        for child in node.args.get("partition_by") or ():
            yield child, indirect("WINDOW", "partition by")
        if node.args.get("order"):
            yield node.args["order"], indirect("WINDOW", "order by")
    elif isinstance(node, exp.Case):
        if node.this:
            yield node.this, indirect("CONDITIONAL", "case")
        for branch in node.args["ifs"]:
            yield branch.this, indirect("CONDITIONAL", "case when")
            yield branch.args["true"], TRANSFORMATION
        if node.args.get("default"):
            yield node.args["default"], TRANSFORMATION
    elif isinstance(node, exp.If):
        yield node.this, indirect("CONDITIONAL", "if")
        yield from ((node.args[k], TRANSFORMATION) for k in ("true", "false") if node.args.get(k))
    elif isinstance(node, exp.Coalesce):
        values = [node.this, *node.expressions]
        for tested in values[:-1]:  # the last one is returned, never tested
            yield tested, indirect("CONDITIONAL", "coalesce")
        yield from ((value, TRANSFORMATION) for value in values)
    elif isinstance(node, exp.Nullif):
        yield node.this, TRANSFORMATION
        yield from ((v, indirect("CONDITIONAL", "nullif")) for v in (node.this, node.expression))
    elif isinstance(node, exp.Filter):  # agg(x) FILTER (WHERE c)
        yield node.this, IDENTITY
        yield node.expression, indirect("CONDITIONAL", "filter")
    elif isinstance(node, exp.AggFunc):
        step = _aggregation(node, dialect)
        yield from ((child, step) for child in node.iter_expressions())
    else:
        hashed = isinstance(node, exp.Func) and _is_hashing(node)
        step = TRANSFORMATION._replace(description=_function_name(node, dialect), masking=True) if (
            hashed) else TRANSFORMATION
        yield from ((child, step) for child in node.iter_expressions())


def _uses(node: exp.Expression, so_far: Transformation,
          dialect: Dialect) -> Iterator[tuple[exp.Expression, Transformation]]:
    """Every column and subquery under ``node``, with the transformation from it to ``node``."""
    if isinstance(node, exp.Column) and not isinstance(node.this, exp.Star):
        yield node, so_far
    elif isinstance(node, exp.Subquery | exp.Query):
        yield node, merge(so_far, TRANSFORMATION)
    else:
        for child, step in _steps(node, dialect):
            yield from _uses(child, merge(so_far, step), dialect)


@dataclass
class _Lineage:
    """Of one select: each output column's input fields, the fields that shape its rows, and the
    sources a ``*`` passes through unexpanded (their columns unknown)."""

    columns: dict[str, Deps]
    rows: Deps
    stars: list[str | None]


class _Model:
    """The lineage of one model's compiled SQL, select by select (sqlglot's scopes)."""

    def __init__(self, root: Scope, dialect: Dialect, where: str):
        self.root, self.dialect, self.where = root, dialect, where
        self.scopes = {id(s.expression): s for s in root.traverse()}
        self.done: dict[int, _Lineage] = {}

    def name(self, identifier: exp.Identifier | str) -> str:
        """A name as the warehouse resolves it, plain names in lower case (as dbt and the
        project's schema facet name them, on PostgreSQL and on Snowflake alike)."""
        if isinstance(identifier, str):
            return identifier.lower()
        text = identifier.this
        return text if identifier.quoted and self.dialect.case_sensitive(text) else text.lower()

    def relation(self, table: exp.Table) -> str:
        """``schema.table`` of a table the SQL names ``"db"."schema"."table"``."""
        parts = [table.args.get("db"), table.this]
        return ".".join(self.name(p) for p in parts if isinstance(p, exp.Identifier))

    def lineage(self, scope: Scope) -> _Lineage:
        if id(scope) not in self.done:
            is_set = isinstance(scope.expression, exp.SetOperation)
            self.done[id(scope)] = self._set_operation(scope) if is_set else self._select(scope)
        return self.done[id(scope)]

    def _select(self, scope: Scope) -> _Lineage:
        select = scope.expression
        found = _Lineage({}, {}, [])
        for projection in select.selects:
            if isinstance(projection, exp.Star):
                found.stars.append(None)
            elif isinstance(projection, exp.Column) and isinstance(projection.this, exp.Star):
                found.stars.append(projection.table)
            else:
                name = (projection.args["alias"] if isinstance(projection, exp.Alias) else
                        projection.this if isinstance(projection, exp.Column) else projection.alias_or_name)
                found.columns[self.name(name)] = self.expression(scope, projection, IDENTITY)
        for _node, source in scope.selected_sources.values():
            if isinstance(source, Scope):  # a CTE's or subquery's filters shape these rows too
                _add(found.rows, self.lineage(source).rows)
        for clause, transformation in _clauses(scope):
            # GROUP BY and ORDER BY may name the select's output columns (ORDER BY before its inputs').
            aliases = found.columns if isinstance(clause, exp.Group | exp.Order) else None
            _add(found.rows, self.expression(scope, clause, transformation, aliases,
                                             aliases_first=isinstance(clause, exp.Order)))
        if select.args.get("distinct"):
            for deps in found.columns.values():
                _add(found.rows, deps, indirect("GROUP_BY", "distinct"))
        return found

    def _set_operation(self, scope: Scope) -> _Lineage:
        """UNION: each output column from both sides; INTERSECT and EXCEPT: from the left, the
        right deciding which rows stay."""
        left, right = (self.lineage(s) for s in scope.set_operation_scopes)
        found = _Lineage({name: dict(deps) for name, deps in left.columns.items()}, {}, left.stars)
        _add(found.rows, left.rows)
        _add(found.rows, right.rows)
        node = scope.expression
        for name, deps in zip(found.columns, right.columns.values(), strict=False):
            if isinstance(node, exp.Union):
                _add(found.columns[name], deps)
            else:
                _add(found.rows, deps, indirect("FILTER", node.key))
        if isinstance(node, exp.Union) and node.args.get("distinct"):
            for deps in found.columns.values():
                _add(found.rows, deps, indirect("GROUP_BY", "union"))
        return found

    def expression(self, scope: Scope, node: exp.Expression, outer: Transformation,
                   aliases: dict[str, Deps] | None = None, aliases_first: bool = False) -> Deps:
        """The input fields of ``node`` in ``scope``, each with its transformations."""
        deps: Deps = {}
        for used, transformation in _uses(node, outer, self.dialect):
            if isinstance(used, exp.Column):
                _add(deps, self.column(scope, used, aliases, aliases_first), transformation)
            else:
                _add(deps, self.subquery(used), transformation)
        return deps

    def subquery(self, node: exp.Expression) -> Deps:
        """A subquery in an expression: whatever it selects, and what shapes its rows."""
        query = node.this if isinstance(node, exp.Subquery) else node
        scope = self.scopes.get(id(query))
        if scope is None:
            log.warning("%s: no scope for the subquery %s: left out of the lineage", self.where, node.sql())
            return {}
        lineage, deps = self.lineage(scope), {}
        for column_deps in lineage.columns.values():
            _add(deps, column_deps)
        _add(deps, lineage.rows)
        return deps

    def column(self, scope: Scope, column: exp.Column, aliases: dict[str, Deps] | None = None,
               aliases_first: bool = False) -> Deps:
        """A column reference, through its source: a table, a CTE, a subquery, the outer select
        of a correlated subquery."""
        name = self.name(column.this)
        if column.table:
            source = _source_of(scope, column.table)
            deps = None if source is None else self.through(source, name)
        else:
            deps = self._unqualified(scope, name, aliases or {}, aliases_first)
        if deps is None:
            log.warning("%s: cannot resolve the column %s: left out of the lineage", self.where, column.sql())
            return {}
        return deps

    def _unqualified(self, scope: Scope, name: str, aliases: dict[str, Deps],
                     aliases_first: bool) -> Deps | None:
        """A column sqlglot could not qualify (its source's columns are unknown, or it names an
        output column): the one source that knows it, else an output column (``aliases``,
        first when ``aliases_first``), else the only source there is."""
        if aliases_first and name in aliases:
            return aliases[name]
        sources = [source for _node, source in scope.selected_sources.values()]
        known = [deps for deps in (self.through(s, name, infer=False) for s in sources) if deps is not None]
        if len(known) == 1:
            return known[0]
        if not known and name in aliases:
            return aliases[name]
        if not known and len(sources) == 1:
            return self.through(sources[0], name)
        return None

    def through(self, source: exp.Expression | Scope, name: str, infer: bool = True) -> Deps | None:
        """Column ``name`` of ``source``: a select's output, or a table's column. A table's
        columns the schema does not list are known only from the names the selects use: any
        name is taken for one of them when ``infer``, and none otherwise."""
        if isinstance(source, exp.Table):
            return {(self.relation(source), name): {IDENTITY}} if infer else None
        if not isinstance(source, Scope):
            return None  # a table function, VALUES, ...: not followed
        lineage = self.lineage(source)
        if name in lineage.columns:
            return lineage.columns[name]
        candidates = [s for alias, (_node, s) in source.selected_sources.items()
                      if None in lineage.stars or alias in lineage.stars]
        resolved = [d for d in (self.through(s, name, infer=False) for s in candidates) if d is not None]
        if len(resolved) == 1:
            return resolved[0]
        if infer and not resolved and len(candidates) == 1:
            return self.through(candidates[0], name)
        return None


def _clauses(scope: Scope) -> Iterator[tuple[exp.Expression, Transformation]]:
    """The clauses of a select that shape its rows, each with its INDIRECT transformation."""
    select = scope.expression
    for key, subtype, description in (("where", "FILTER", "where"), ("group", "GROUP_BY", "group by"),
                                      ("having", "FILTER", "having"), ("qualify", "FILTER", "qualify")):
        if select.args.get(key):
            yield select.args[key], indirect(subtype, description)
    for join in select.args.get("joins") or ():
        if join.args.get("on"):
            yield join.args["on"], indirect("JOIN", "join")
    # An ORDER BY sorts the output only at the top, or where a LIMIT keeps the first rows.
    if select.args.get("order") and (scope.is_root or select.args.get("limit") or select.args.get("fetch")):
        yield select.args["order"], indirect("SORT", "order by")


def _source_of(scope: Scope, alias: str) -> exp.Expression | Scope | None:
    """What ``alias`` names in ``scope``: one of its sources, or an outer select's (correlated)."""
    current = scope
    while current is not None:
        if alias in current.selected_sources:
            return current.selected_sources[alias][1]
        current = current.parent
    return scope.sources.get(alias)


def _relation_parts(node: dict) -> tuple[str, str, str]:
    table = node.get("alias") or node.get("identifier") or node["name"]
    return node.get("database") or "", node["schema"], table


def parent_schema(manifest: dict, unique_id: str, catalog: dict | None = None) -> dict:
    """sqlglot's schema ({database: {schema: {table: {column: type}}}}) of the relations the model
    reads: each parent's columns from ``catalog`` (dbt docs generate) when given, else from its YAML.
    A parent with neither is left out: its columns are inferred from the names the SQL uses."""
    schema: dict = {}
    for parent in manifest["nodes"][unique_id]["depends_on"]["nodes"]:
        node = manifest["nodes"].get(parent) or manifest["sources"].get(parent)
        if node is None:
            continue
        described = ((catalog or {}).get("nodes", {}).get(parent)
                     or (catalog or {}).get("sources", {}).get(parent) or {}).get("columns") or {}
        columns = {c.get("name", key): c.get("type") or c.get("data_type") or "text"
                   for key, c in (described or node.get("columns") or {}).items()}
        if columns:
            database, schema_name, table = _relation_parts(node)
            schema.setdefault(database, {}).setdefault(schema_name, {})[table] = columns
    return schema


def _distinct(transformations: set[Transformation]) -> list[Transformation]:
    """One entry per (type, subtype, masking), the constructs that made it named together
    (``case when, coalesce``): the same relation reached twice is one relation."""
    grouped: dict[tuple, set[str]] = {}
    for t in transformations:
        grouped.setdefault((t.type, t.subtype, t.masking), set()).add(t.description)
    ordered = sorted(grouped, key=lambda k: (k[0], _STRENGTH.get(k[1], 9), k[1], k[2]))
    return [Transformation(kind, subtype, ", ".join(sorted(grouped[kind, subtype, masking] - {""})), masking)
            for kind, subtype, masking in ordered]


def _input_fields(deps: Deps, dataset: Dataset) -> list[dict]:
    fields = []
    for (relation, column), transformations in deps.items():
        namespace, name = dataset(relation)
        fields.append({"namespace": namespace, "name": name, "field": column,
                       "transformations": [t._asdict() for t in _distinct(transformations)]})
    return sorted(fields, key=lambda f: (f["namespace"], f["name"], f["field"]))


def _qualified(parsed: exp.Expression, dialect: str, schema: dict) -> exp.Expression:
    """The SQL with its columns qualified and its stars expanded where the columns are known.
    ``lower(email) as email, left(email, 3)`` is ambiguous to sqlglot (the source's email, or
    Snowflake's lateral reference to the alias?) when the source's columns are unknown: then it
    is qualified again without expanding references to aliases, which PostgreSQL never makes
    in a select list (GROUP BY and ORDER BY ones are resolved here, ``_Model._unqualified``)."""
    options = {"dialect": dialect, "schema": schema, "validate_qualify_columns": False,
               "quote_identifiers": False}
    try:
        return qualify(parsed.copy(), **options)
    except OptimizeError as error:
        log.debug("qualified again without expanding alias references: %s", error)
        return qualify(parsed, expand_alias_refs=False, **options)


def column_lineage(manifest: dict, unique_id: str, dataset: Dataset, dialect: str = "postgres",
                   *, catalog: dict | None = None) -> dict:
    """The ``columnLineage`` facet body (``fields`` and ``dataset``, without ``_producer`` and
    ``_schemaURL``) of model ``unique_id``, from its compiled SQL (run ``dbt compile`` or ``build``
    first). ``dataset("schema.table")`` names a relation the model reads as OpenLineage does
    (namespace, name). Raises sqlglot's errors when the SQL cannot be parsed."""
    node = manifest["nodes"][unique_id]
    sql = node.get("compiled_code")
    if not sql:
        raise ValueError(f"{unique_id} has no compiled SQL: run dbt compile first")
    qualified = _qualified(sqlglot.parse_one(sql, read=dialect), dialect,
                           parent_schema(manifest, unique_id, catalog))
    model = _Model(build_scope(qualified), Dialect.get_or_raise(dialect), unique_id)
    root = model.lineage(model.root)
    columns = dict(root.columns)
    if root.stars:  # a select * over a relation of unknown columns: the model's YAML names them
        for declared in node.get("columns") or {}:
            columns.setdefault(model.name(declared), model.through(model.root, model.name(declared)) or {})
    return {"fields": {name: {"inputFields": _input_fields(deps, dataset)} for name, deps in columns.items()},
            "dataset": _input_fields(root.rows, dataset)}


def models_lineage(manifest: dict, dataset: Dataset, dialect: str = "postgres", *,
                   catalog: dict | None = None) -> dict[str, dict]:
    """The ``columnLineage`` facet body of every model of the manifest built as a relation
    (ephemeral ones are CTEs of the others), by unique_id. A model sqlglot cannot read is left out
    with a warning: one model's SQL must not cost the lineage of all the others."""
    facets = {}
    for unique_id, node in sorted(manifest["nodes"].items()):
        if node.get("resource_type") != "model" or node.get("config", {}).get("materialized") == "ephemeral":
            continue
        try:
            facets[unique_id] = column_lineage(manifest, unique_id, dataset, dialect, catalog=catalog)
        except (SqlglotError, ValueError) as error:
            log.warning("no column lineage for %s: %s", unique_id, error)
    return facets


def model_relation(manifest: dict, unique_id: str) -> str:
    """``schema.table`` of the relation a model builds (its output dataset's relation)."""
    node = manifest["nodes"][unique_id]
    return f"{node['schema']}.{node.get('alias') or node['name']}".lower()


def by_dataset(manifest: dict, facets: dict[str, dict], dataset: Dataset) -> dict[tuple[str, str], dict]:
    """``models_lineage``'s facets keyed by their output dataset's (namespace, name), as
    ``upstream_columns`` walks them (and as they arrive in the events)."""
    return {dataset(model_relation(manifest, unique_id)): facet for unique_id, facet in facets.items()}


class Hop(NamedTuple):
    """One step back: an input field, and how the column one step downstream was made from it."""

    namespace: str
    name: str
    field: str
    transformations: tuple[Transformation, ...]


Facets = dict[tuple[str, str], dict]


def _inputs(facets: Facets, at: tuple[str, str, str], include_dataset: bool) -> list[dict] | None:
    """The input fields of column ``at``, or None when no facet describes it (a raw table's)."""
    facet = facets.get(at[:2])
    entry = (facet or {}).get("fields", {}).get(at[2])
    if entry is None:
        return None
    return [*entry["inputFields"], *(facet.get("dataset") or () if include_dataset else ())]


def upstream_paths(facets: Facets, namespace: str, name: str, column: str, *,
                   include_dataset: bool = False) -> list[tuple[Hop, ...]]:
    """Every path from ``column`` of dataset (namespace, name) back to a column with no further
    lineage (a raw table's, or one no facet describes), hop by hop with its transformations: the
    ``lineage graph --column`` view. Follows ``fields``: what the value is made of, CONDITIONAL
    and WINDOW inputs included; with ``include_dataset`` also each model's ``dataset`` list, the
    filters, joins and groupings that decide its rows (what a change could affect)."""
    paths: list[tuple[Hop, ...]] = []

    def walk(at: tuple[str, str, str], path: tuple[Hop, ...]) -> None:
        inputs = _inputs(facets, at, include_dataset)
        if inputs is None:
            paths.append(path)
            return
        for field in inputs:
            hop = Hop(field["namespace"], field["name"], field["field"],
                      tuple(Transformation(**t) for t in field.get("transformations") or ()))
            if hop[:3] != start and all(h[:3] != hop[:3] for h in path):  # a cycle: not followed
                walk(hop[:3], (*path, hop))

    start = (namespace, name, column)
    walk(start, ())
    return [path for path in paths if path]


def upstream_columns(facets: Facets, namespace: str, name: str, column: str, *,
                     include_dataset: bool = False) -> set[tuple[str, str, str]]:
    """The (namespace, name, column) of the columns with no further lineage (raw tables') that
    ``column`` of dataset (namespace, name) is computed from, through every model in between
    (``include_dataset`` as for ``upstream_paths``). Each column is visited once, so this stays
    linear where the paths multiply."""
    start = (namespace, name, column)
    found: set[tuple[str, str, str]] = set()
    seen, stack = {start}, [start]
    while stack:
        at = stack.pop()
        inputs = _inputs(facets, at, include_dataset)
        if inputs is None:
            if at != start:
                found.add(at)
            continue
        for field in inputs:
            key = (field["namespace"], field["name"], field["field"])
            if key not in seen:
                seen.add(key)
                stack.append(key)
    return found


def to_client_facet(body: dict) -> cl.ColumnLineageDatasetFacet:
    """The facet body as openlineage-python's ``ColumnLineageDatasetFacet`` (whose serialization
    adds ``_producer`` and ``_schemaURL``), for an emitter that builds events with the client."""

    def field(f: dict) -> cl.InputField:
        return cl.InputField(namespace=f["namespace"], name=f["name"], field=f["field"],
                             transformations=[cl.Transformation(**t) for t in f["transformations"]])

    return cl.ColumnLineageDatasetFacet(
        fields={name: cl.Fields(inputFields=[field(f) for f in entry["inputFields"]])
                for name, entry in body["fields"].items()},
        dataset=[field(f) for f in body.get("dataset") or ()])
