"""The datasets of the project's events and their facets, computed where the facts are known:

- ``schema``: the table's columns as the warehouse reports them (``table_columns``);
- ``outputStatistics``: rows, files and bytes from the loads' own counts;
- ``dataQualityAssertions`` (an input facet: the checked table is what the check read): every
  check of the run, GE expectations, dbt tests and contract checks, with their column;
- ``ownership`` and ``dataProductGovernance`` (a custom facet, schema vendored in ``spec/``):
  the product's domain, owner, classification and ``pii`` columns, from its contract.
"""

from __future__ import annotations

import functools

import attr
from openlineage.client.event_v2 import InputDataset, OutputDataset
from openlineage.client.facet_v2 import (
    DatasetFacet,
    data_quality_assertions_dataset,
    output_statistics_output_dataset,
    ownership_dataset,
    schema_dataset,
)

from mage_project.lineage import naming

# Who produced an event or facet: this project (a URN, as it has no public URL of its own), as
# Airflow's provider says https://github.com/apache/airflow/tree/providers-openlineage/<version>.
PRODUCER = "urn:mage-project:lineage"
GOVERNANCE_SCHEMA_URL = "urn:mage-project:lineage:facets:1-0-0:DataProductGovernanceDatasetFacet.json"


@attr.define
class DataProductGovernanceDatasetFacet(DatasetFacet):
    """Who owns a product's table and what it holds (``spec/facets/`` has its schema)."""

    domain: str
    product: str
    owner: str
    classification: str
    piiColumns: list[str] = attr.field(factory=list)  # noqa: N815
    contract: dict = attr.field(factory=dict)

    @staticmethod
    def _get_schema() -> str:
        return f"{GOVERNANCE_SCHEMA_URL}#/$defs/DataProductGovernanceDatasetFacet"


@functools.cache
def _products_by_table() -> dict:
    from mage_project import contracts

    return {table.name: (product, table) for product in contracts.load_products()
            for table in product.tables}


# The most guarded classification of a table's columns names the table's.
_CLASSES = ("public", "internal", "confidential", "restricted", "pii")


def governance_facets(relation: str) -> dict:
    """``ownership`` and ``dataProductGovernance`` of a product's table; {} for another."""
    found = _products_by_table().get(relation)
    if found is None:
        return {}
    product, table = found
    classes = {c.classification for c in table.columns}
    classification = max(classes, key=lambda c: _CLASSES.index(c) if c in _CLASSES else 0,
                         default="internal")
    return {
        "ownership": ownership_dataset.OwnershipDatasetFacet(owners=[
            ownership_dataset.Owner(name=f"team:{product.owner}", type="TEAM"),
            ownership_dataset.Owner(name=f"mailto:{product.owner_email}", type="EMAIL")]),
        "dataProductGovernance": DataProductGovernanceDatasetFacet(
            domain=product.domain, product=product.product, owner=product.owner,
            classification=classification,
            piiColumns=[c.name for c in table.columns if c.classification == "pii"],
            contract={"id": product.id, "version": product.version}),
    }


def schema_facet(db, cur, relation: str) -> schema_dataset.SchemaDatasetFacet | None:
    schema, _, table = relation.partition(".")
    columns = db.table_columns(cur, schema, table)
    if not columns:
        return None
    return schema_dataset.SchemaDatasetFacet(fields=[
        schema_dataset.SchemaDatasetFacetFields(name=c.name, type=c.data_type) for c in columns])


def output_table(relation: str, *, db=None, cur=None, rows: int | None = None,
                 size: int | None = None, files: int | None = None, extra: dict | None = None,
                 ) -> OutputDataset:
    """A warehouse table the job wrote, with what is known of it."""
    namespace, name = naming.table(relation)
    facets = dict(governance_facets(relation))
    if cur is not None and (schema := schema_facet(db, cur, relation)) is not None:
        facets["schema"] = schema
    facets.update(extra or {})
    output_facets = {}
    if rows is not None or size is not None or files is not None:
        output_facets["outputStatistics"] = (
            output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
                rowCount=rows, size=size, fileCount=files))
    return OutputDataset(namespace=namespace, name=name, facets=facets, outputFacets=output_facets)


def input_table(relation: str, results=()) -> InputDataset:
    """A warehouse table the job read, with the checks it ran on it (``QualityResult``s)."""
    namespace, name = naming.table(relation)
    return InputDataset(namespace=namespace, name=name, facets=governance_facets(relation),
                        inputFacets=assertions_facet(results))


def assertions_facet(results) -> dict:
    assertions = [
        data_quality_assertions_dataset.Assertion(
            assertion=r.check_name, success=r.passed is True, column=_column_of(r))
        for r in results if r.passed is not None]
    return {"dataQualityAssertions":
            data_quality_assertions_dataset.DataQualityAssertionsDatasetFacet(assertions=assertions)
            } if assertions else {}


def _column_of(result) -> str | None:
    observed = result.observed if isinstance(result.observed, dict) else {}
    column = observed.get("column") or observed.get("column_name")
    return column if isinstance(column, str) else None


def files_dataset(namespace_name: tuple[str, str], *, output: bool, rows=None, size=None,
                  files=None):
    """Landing files (or the API's events) under one name: input or output."""
    namespace, name = namespace_name
    if not output:
        return InputDataset(namespace=namespace, name=name)
    stats = output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
        rowCount=rows, size=size, fileCount=files)
    return OutputDataset(namespace=namespace, name=name, outputFacets={"outputStatistics": stats})
