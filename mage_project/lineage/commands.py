"""``python -m mage_project lineage serve|graph|impact``: the lineage hub, and the graph of the
events it stored, for people (text) and tools (JSON, Graphviz dot, Mermaid).

Exit status: 0 done; 1 the warehouse could not be read; 2 bad arguments (a dataset or column the
events do not name, or name ambiguously; an address that cannot be bound).
"""

from __future__ import annotations

import logging
import sys

from mage_project import config, warehouse
from mage_project.lineage import graph as lineage

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_BAD_ARGUMENTS = 0, 1, 2


def stored_graph() -> lineage.Graph:
    """The graph of every event in the configured warehouse, migrated first where this login may
    (a hub that never ran leaves an empty graph, not a missing table); a reader without the
    owner's login reads what the hub's migrations made."""
    from mage_project.lineage import store

    db = warehouse.backend()
    try:
        warehouse.migrate(db)
    except warehouse.WarehouseError as exc:
        log.warning("not migrating the warehouse: %s", exc)
    with db.connection(config.LOADER) as conn, db.transaction(conn) as cur:
        return lineage.build(store.read_events(cur))


def _products() -> tuple:
    from mage_project import contracts

    return contracts.load_products()


def serve_command(host: str, port: int) -> int:
    from mage_project.lineage import hub

    return hub.serve(host, port)


def graph_command(dataset: str | None, column: str | None, fmt: str, every_job: bool = False) -> int:
    """The whole graph; with ``dataset`` what is up- and downstream of it; with ``column`` too,
    that column's upstream columns and the transformations between. Only the jobs that write a
    dataset (the flow of the data) unless ``every_job``: the checks and tests as well."""
    if column is not None and dataset is None:
        print("error: --column needs --dataset", file=sys.stderr)
        return EXIT_BAD_ARGUMENTS

    def show(graph: lineage.Graph) -> str:
        if column is not None:
            return lineage.render_trace(lineage.trace_column(graph, dataset, column), fmt)
        shown = graph if every_job else lineage.data_flow(graph)
        shown = lineage.subgraph(shown, dataset) if dataset is not None else shown
        return lineage.render_graph(shown, fmt, _products())
    return _print_from_stored(show)


def impact_command(target: str, fmt: str) -> int:
    """What is downstream of ``<dataset>[.<column>]``: datasets, columns, jobs, and the products
    and owners they belong to."""
    def show(graph: lineage.Graph) -> str:
        dataset, column = lineage.split_column(graph, target)
        return lineage.render_impact(lineage.impact(graph, dataset, column, _products()), fmt)
    return _print_from_stored(show)


def _print_from_stored(show) -> int:
    """Print ``show(graph)`` of the stored events: exit 2 for a name that is not in the graph, 1
    when the events cannot be read."""
    try:
        print(show(stored_graph()))
    except lineage.LineageLookupError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return EXIT_BAD_ARGUMENTS
    except (warehouse.WarehouseError, config.ConfigError) as exc:
        print(f"error: cannot read the lineage events: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
