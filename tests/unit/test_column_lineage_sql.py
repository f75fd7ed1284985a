"""Column lineage of compiled SQL (mage_project.lineage.columns) on small models written here:
each construct of the transformation table in the module's docstring, on PostgreSQL and Snowflake
SQL, without dbt or a warehouse. The project's own models are traced in
tests/integration/test_column_lineage.py."""

from __future__ import annotations

import logging

import pytest

from mage_project.lineage.columns import (
    IDENTITY,
    TRANSFORMATION,
    Transformation,
    column_lineage,
    indirect,
    merge,
    models_lineage,
    to_client_facet,
    upstream_columns,
    upstream_paths,
)

NS = "postgres://127.0.0.1:5432"
MODEL = "model.p.m"


def dataset(relation: str) -> tuple[str, str]:
    return NS, f"db.{relation}"


def manifest(sql: str, parents: dict[str, tuple[str, ...]] | None = None, columns: tuple[str, ...] = (),
             materialized: str = "table") -> dict:
    """A manifest of one model ``marts.m`` with ``sql`` as its compiled code, reading the sources
    ``parents`` ({"schema.table": its columns, none when undeclared})."""
    sources = {}
    for relation, cols in (parents or {}).items():
        schema, table = relation.split(".")
        sources[f"source.p.{relation}"] = {"database": "db", "schema": schema, "identifier": table,
                                           "name": table, "columns": {c: {"name": c} for c in cols}}
    node = {"resource_type": "model", "compiled_code": sql, "database": "db", "schema": "marts",
            "name": "m", "alias": "m", "columns": {c: {"name": c} for c in columns},
            "config": {"materialized": materialized}, "depends_on": {"nodes": sorted(sources)}}
    return {"nodes": {MODEL: node}, "sources": sources}


def lineage(sql: str, parents=None, dialect: str = "postgres", columns=()) -> dict:
    return column_lineage(manifest(sql, parents, columns), MODEL, dataset, dialect)


def kinds(inputs: list[dict]) -> dict[tuple[str, str], set[tuple]]:
    """input fields as {(relation, column): {(type, subtype, masking), ...}}."""
    return {(f["name"].removeprefix("db."), f["field"]): {
        (t["type"], t["subtype"], t["masking"]) for t in f["transformations"]} for f in inputs}


def fields(facet: dict) -> dict[str, dict]:
    return {name: kinds(entry["inputFields"]) for name, entry in facet["fields"].items()}


ID = ("DIRECT", "IDENTITY", False)
TR = ("DIRECT", "TRANSFORMATION", False)
AGG = ("DIRECT", "AGGREGATION", False)
COND = ("INDIRECT", "CONDITIONAL", False)
T = "raw.t"


def test_identity_transformation_and_aggregation():
    facet = lineage('select id, id as key, upper(name) as loud, cast(amount as numeric(18, 2)) as money,'
                    ' amount * 2 as twice from "db"."raw"."t"')
    assert fields(facet) == {
        "id": {(T, "id"): {ID}}, "key": {(T, "id"): {ID}}, "loud": {(T, "name"): {TR}},
        "money": {(T, "amount"): {TR}}, "twice": {(T, "amount"): {TR}}}
    assert facet["dataset"] == []

    facet = lineage('select k, sum(a) as total, min(b) as first, count(c) as n, count(distinct c) as nd,'
                    ' count(*) as rows from "db"."raw"."t" group by k')
    counted = ("DIRECT", "AGGREGATION", True)  # the spec's masking aggregation
    assert fields(facet) == {"k": {(T, "k"): {ID}}, "total": {(T, "a"): {AGG}}, "first": {(T, "b"): {AGG}},
                             "n": {(T, "c"): {counted}}, "nd": {(T, "c"): {counted}}, "rows": {}}
    assert kinds(facet["dataset"]) == {(T, "k"): {("INDIRECT", "GROUP_BY", False)}}
    descriptions = {f["field"]: [t["description"] for t in f["transformations"]]
                    for name in ("total", "nd") for f in facet["fields"][name]["inputFields"]}
    assert descriptions == {"a": ["sum"], "c": ["count distinct"]}


@pytest.mark.parametrize(("expression", "function"), [
    ("md5(email)", "md5"), ("sha256(email::bytea)", "sha256"),
    ("encode(sha256(email::bytea), 'hex')", "sha256"), ("md5(lower(trim(email)))", "md5"),
    ("digest(email, 'sha256')", "digest"), ("mask_email(email)", "mask_email")])
def test_a_hashed_column_is_masked(expression, function):
    facet = lineage(f'select {expression} as email_hash from "db"."raw"."t"')  # noqa: S608 (constants)
    assert fields(facet) == {"email_hash": {(T, "email"): {("DIRECT", "TRANSFORMATION", True)}}}
    assert facet["fields"]["email_hash"]["inputFields"][0]["transformations"][0]["description"] == function


def test_a_column_merely_transformed_is_not_masked():
    # an alias that is also a source column's name, the source's columns unknown
    facet = lineage('select lower(email) as email, left(email, 3) as prefix from "db"."raw"."t"')
    assert fields(facet) == {"email": {(T, "email"): {TR}}, "prefix": {(T, "email"): {TR}}}


def test_group_by_an_output_column():
    facet = lineage('select upper(country) as nation, count(*) as n from "db"."raw"."t" group by nation')
    assert fields(facet) == {"nation": {(T, "country"): {TR}}, "n": {}}
    assert kinds(facet["dataset"]) == {(T, "country"): {("INDIRECT", "GROUP_BY", False)}}


def test_conditions_are_indirect_on_their_column_only():
    facet = lineage("""select
        case when status = 'refunded' then amount else 0 end as refunded,
        case kind when 'a' then 1 end as is_a,
        coalesce(first_try, second_try, 0) as tried,
        coalesce(preferred, fallback) as chosen,
        nullif(campaign, '') as campaign,
        id
        from "db"."raw"."t" """)
    assert fields(facet) == {
        "refunded": {(T, "status"): {COND}, (T, "amount"): {TR}},
        "is_a": {(T, "kind"): {COND}},
        # every argument but the last is tested for null; all are possible values
        "tried": {(T, "first_try"): {TR, COND}, (T, "second_try"): {TR, COND}},
        "chosen": {(T, "preferred"): {TR, COND}, (T, "fallback"): {TR}},  # returned, never tested
        "campaign": {(T, "campaign"): {TR, COND}},
        "id": {(T, "id"): {ID}}}
    assert facet["dataset"] == []


def test_an_aggregate_of_a_case_keeps_its_condition_indirect():
    facet = lineage("select sum(case when refunded then 0 else amount end) as net,"
                    ' count(case when kind = \'buy\' then 1 end) as buys from "db"."raw"."t"')
    assert fields(facet) == {"net": {(T, "refunded"): {COND}, (T, "amount"): {AGG}},
                             "buys": {(T, "kind"): {("INDIRECT", "CONDITIONAL", True)}}}


def test_window_inputs_are_on_the_windowed_column_and_a_filter_on_it_on_the_dataset():
    facet = lineage("""with ranked as (
            select id, v, row_number() over (partition by id order by updated_at desc) as rank,
                   sum(v) over (partition by id) as total
            from "db"."raw"."t")
        select id, v, total from ranked where rank = 1""")
    window = ("INDIRECT", "WINDOW", False)
    assert fields(facet) == {"id": {(T, "id"): {ID}}, "v": {(T, "v"): {ID}},
                             "total": {(T, "v"): {AGG}, (T, "id"): {window}}}
    # rank = 1 keeps rows by what ranks them: a FILTER of the whole dataset
    filtered = ("INDIRECT", "FILTER", False)
    assert kinds(facet["dataset"]) == {(T, "id"): {filtered}, (T, "updated_at"): {filtered}}


def test_row_clauses_are_on_the_dataset():
    facet = lineage("""select a.id, b.name from "db"."raw"."a" as a
        join "db"."raw"."b" as b on a.b_id = b.id
        where a.status = 'ok' and b.deleted is null
        order by b.name""")
    assert fields(facet) == {"id": {("raw.a", "id"): {ID}}, "name": {("raw.b", "name"): {ID}}}
    assert kinds(facet["dataset"]) == {
        ("raw.a", "b_id"): {("INDIRECT", "JOIN", False)}, ("raw.b", "id"): {("INDIRECT", "JOIN", False)},
        ("raw.a", "status"): {("INDIRECT", "FILTER", False)},
        ("raw.b", "deleted"): {("INDIRECT", "FILTER", False)},
        ("raw.b", "name"): {("INDIRECT", "SORT", False)}}
    # USING is a join on the column of both sides
    facet = lineage('select a.x from "db"."raw"."a" as a join "db"."raw"."b" as b using (id)',
                    {"raw.a": ("id", "x"), "raw.b": ("id",)})
    assert kinds(facet["dataset"]) == {("raw.a", "id"): {("INDIRECT", "JOIN", False)},
                                       ("raw.b", "id"): {("INDIRECT", "JOIN", False)}}


def test_order_by_sorts_only_at_the_top_or_under_a_limit():
    unsorted = lineage('with s as (select id from "db"."raw"."t" order by ts) select id from s')
    assert unsorted["dataset"] == []
    top = lineage('with s as (select id from "db"."raw"."t" order by ts desc limit 10) select id from s')
    assert kinds(top["dataset"]) == {(T, "ts"): {("INDIRECT", "SORT", False)}}
    by_alias = lineage('select upper(name) as n from "db"."raw"."t" order by n')  # an output column
    assert kinds(by_alias["dataset"]) == {(T, "name"): {("INDIRECT", "SORT", False)}}


def test_distinct_and_union():
    facet = lineage('select distinct country from "db"."raw"."t"')
    assert kinds(facet["dataset"]) == {(T, "country"): {("INDIRECT", "GROUP_BY", False)}}
    facet = lineage('select id, x from "db"."raw"."a" where ok union all select id, y from "db"."raw"."b"')
    assert fields(facet) == {"id": {("raw.a", "id"): {ID}, ("raw.b", "id"): {ID}},
                             "x": {("raw.a", "x"): {ID}, ("raw.b", "y"): {ID}}}
    assert kinds(facet["dataset"]) == {("raw.a", "ok"): {("INDIRECT", "FILTER", False)}}


def test_subqueries():
    facet = lineage("""select t.id,
            (select max(u.v) from "db"."raw"."u" as u where u.k = t.id) as top
        from "db"."raw"."t" as t
        where t.c in (select w.c from "db"."raw"."w" as w where w.live)""")
    filtered = ("INDIRECT", "FILTER", False)
    assert fields(facet) == {"id": {(T, "id"): {ID}},
                             # a correlated subquery's condition decides which rows it aggregates
                             "top": {("raw.u", "v"): {AGG}, ("raw.u", "k"): {filtered},
                                     (T, "id"): {filtered}}}
    assert kinds(facet["dataset"]) == {(T, "c"): {filtered}, ("raw.w", "c"): {filtered},
                                       ("raw.w", "live"): {filtered}}


def test_ctes_compose_like_openlineages_spark_integration():
    facet = lineage("""with base as (select id, amount * 100 as cents, status from "db"."raw"."t"
                                     where not deleted),
        grouped as (select id, sum(cents) as cents, max(status) as status from base group by id)
        select id, cents, case when status = 'x' then cents end as x_cents from grouped""")
    assert fields(facet) == {"id": {(T, "id"): {ID}}, "cents": {(T, "amount"): {AGG}},
                             "x_cents": {(T, "amount"): {AGG}, (T, "status"): {COND}}}
    assert kinds(facet["dataset"]) == {(T, "deleted"): {("INDIRECT", "FILTER", False)},
                                       (T, "id"): {("INDIRECT", "GROUP_BY", False)}}


def test_merge():
    aggregation = Transformation("DIRECT", "AGGREGATION", "count", True)
    assert merge(TRANSFORMATION, aggregation) == aggregation
    assert merge(aggregation, IDENTITY) == aggregation
    assert merge(IDENTITY, IDENTITY) == IDENTITY
    assert merge(indirect("FILTER", "where"), indirect("WINDOW", "order by")) == indirect("FILTER", "where")
    assert merge(aggregation, indirect("CONDITIONAL", "case when")) == Transformation(
        "INDIRECT", "CONDITIONAL", "case when", True)


def test_parents_columns_expand_a_star_and_undeclared_ones_are_followed_by_name():
    facet = lineage('with s as (select * from "db"."staging"."s") select x from s',
                    {"staging.s": ("x", "y")})
    assert fields(facet) == {"x": {("staging.s", "x"): {ID}}}
    # A source without columns: a select * of it is expanded by the model's YAML
    facet = lineage('with src as (select * from "db"."raw"."t") select * from src', columns=("a", "b"))
    assert fields(facet) == {"a": {(T, "a"): {ID}}, "b": {(T, "b"): {ID}}}


def test_a_catalog_gives_the_columns_the_yaml_does_not():
    document = manifest('with s as (select * from "db"."raw"."t") select * from s', {"raw.t": ()})
    catalog = {"sources": {"source.p.raw.t": {"columns": {"id": {"name": "id", "type": "integer"},
                                                           "kind": {"name": "kind", "type": "text"}}}}}
    assert fields(column_lineage(document, MODEL, dataset, catalog=catalog)) == {
        "id": {(T, "id"): {ID}}, "kind": {(T, "kind"): {ID}}}
    # On Snowflake the catalog names them in upper case, as Snowflake stores plain names
    document = manifest("with s as (select * from db.raw.t) select * from s", {"raw.t": ()})
    catalog = {"sources": {"source.p.raw.t": {"columns": {"ID": {"name": "ID", "type": "NUMBER"}}}}}
    assert fields(column_lineage(document, MODEL, dataset, "snowflake", catalog=catalog)) == {
        "id": {(T, "id"): {ID}}}


def test_quoted_names_keep_their_case():
    facet = lineage('select "Amount" as "Total", "id" from "db"."Raw"."T"')
    assert fields(facet) == {"Total": {("Raw.T", "Amount"): {ID}}, "id": {("Raw.T", "id"): {ID}}}


def test_snowflake():
    facet = lineage("""with src as (select * from TEST_DB.raw.t),
        final as (
            select cast(convert_timezone('UTC', Paid_At) as date) as paid_date,
                   iff(is_refunded, 0, amount) as net,
                   nvl(campaign, 'none') as campaign,
                   sha2(email, 256) as email_hash,
                   "Quoted" as quoted
            from src qualify row_number() over (partition by id order by updated_at desc) = 1)
        select * from final""", dialect="snowflake")
    assert fields(facet) == {
        "paid_date": {(T, "paid_at"): {TR}}, "net": {(T, "is_refunded"): {COND}, (T, "amount"): {TR}},
        "campaign": {(T, "campaign"): {TR, COND}},
        "email_hash": {(T, "email"): {("DIRECT", "TRANSFORMATION", True)}},
        "quoted": {(T, "Quoted"): {ID}}}
    filtered = ("INDIRECT", "FILTER", False)
    assert kinds(facet["dataset"]) == {(T, "id"): {filtered}, (T, "updated_at"): {filtered}}


def test_a_model_sqlglot_cannot_read_is_skipped_with_a_warning(caplog):
    document = manifest('select a from "db"."raw"."t"')
    document["nodes"]["model.p.broken"] = {**document["nodes"][MODEL], "compiled_code": "select (a from"}
    document["nodes"]["model.p.not_compiled"] = {**document["nodes"][MODEL], "compiled_code": None}
    document["nodes"]["model.p.ephemeral"] = {**document["nodes"][MODEL],
                                              "config": {"materialized": "ephemeral"}}
    document["nodes"]["test.p.a_test"] = {"resource_type": "test", "compiled_code": "select 1"}
    with caplog.at_level(logging.WARNING, logger="mage_project.lineage.columns"):
        facets = models_lineage(document, dataset)
    assert set(facets) == {MODEL}
    assert {r.getMessage().split(":")[0] for r in caplog.records} == {
        "no column lineage for model.p.broken", "no column lineage for model.p.not_compiled"}


def test_a_column_that_cannot_be_resolved_is_left_out_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="mage_project.lineage.columns"):
        facet = lineage('select x from "db"."raw"."a" as a, "db"."raw"."b" as b')  # whose x?
    assert facet["fields"] == {"x": {"inputFields": []}}
    assert "cannot resolve the column x" in caplog.text


FACETS = {  # raw.t -> staging.s -> marts.m, by hand
    (NS, "db.staging.s"): {
        "fields": {"a": {"inputFields": [{"namespace": NS, "name": "db.raw.t", "field": "a",
                                          "transformations": [IDENTITY._asdict()]}]},
                   "n": {"inputFields": []}},
        "dataset": [{"namespace": NS, "name": "db.raw.t", "field": "ok",
                     "transformations": [indirect("FILTER", "where")._asdict()]}]},
    (NS, "db.marts.m"): {
        "fields": {"total": {"inputFields": [
            {"namespace": NS, "name": "db.staging.s", "field": "a",
             "transformations": [{"type": "DIRECT", "subtype": "AGGREGATION", "description": "sum",
                                  "masking": False}]},
            {"namespace": NS, "name": "db.raw.t", "field": "b", "transformations": []}]},
            "rows": {"inputFields": [{"namespace": NS, "name": "db.staging.s", "field": "n",
                                      "transformations": [IDENTITY._asdict()]}]}},
        "dataset": []},
}


def test_upstream_columns_and_paths():
    raw = (NS, "db.raw.t")
    assert upstream_columns(FACETS, NS, "db.marts.m", "total") == {(*raw, "a"), (*raw, "b")}
    assert upstream_columns(FACETS, NS, "db.marts.m", "rows") == set()  # a count(*) of staging
    assert upstream_columns(FACETS, NS, "db.marts.m", "rows", include_dataset=True) == {(*raw, "ok")}
    assert upstream_columns(FACETS, NS, "db.raw.t", "a") == set()
    paths = upstream_paths(FACETS, NS, "db.marts.m", "total")
    assert [[(h.name, h.field, [t.subtype for t in h.transformations]) for h in p] for p in paths] == [
        [("db.staging.s", "a", ["AGGREGATION"]), ("db.raw.t", "a", ["IDENTITY"])],
        [("db.raw.t", "b", [])]]


def test_a_cycle_in_broken_facets_ends():
    cycle = {(NS, "x"): {"fields": {"c": {"inputFields": [{"namespace": NS, "name": "y", "field": "c"}]}}},
             (NS, "y"): {"fields": {"c": {"inputFields": [{"namespace": NS, "name": "x", "field": "c"}]}}}}
    assert upstream_columns(cycle, NS, "x", "c") == set()
    assert upstream_paths(cycle, NS, "x", "c") == []


def test_the_client_facet_serializes_to_the_same_body():
    from openlineage.client.serde import Serde

    body = lineage("select case when ok then sum(a) end as s from \"db\".\"raw\".\"t\" where b group by ok")
    serialized = Serde.to_dict(to_client_facet(body))
    assert serialized["_schemaURL"].startswith("https://openlineage.io/spec/facets/1-2-0/ColumnLineageDatasetFacet")
    assert {k: v for k, v in serialized.items() if not k.startswith("_")} == body
