"""OpenLineage lineage of every run: emitted around each block and dbt model (``tracking``,
``facets``, ``naming``, delivered by ``emitter``), validated against the vendored spec
(``schema``), received from every producer by the hub (``hub``, ``store``) and read as a graph
(``graph``)."""

from mage_project.lineage.tracking import abort, block, run_completed, run_failed, tables_written

__all__ = ["abort", "block", "run_completed", "run_failed", "tables_written"]
