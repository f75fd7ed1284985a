"""The lineage graph of every stored OpenLineage event, whoever produced it (this project, Airflow's
provider, dbt-ol, Spark): datasets, the jobs between them, the columns traced through their
``columnLineage`` facets, and the data products (contracts) the tables belong to.

Pure functions of the events: ``build`` makes a ``Graph`` (a job's current inputs and outputs are
those of its newest event that names any dataset: a job that stopped reading a table stops being
downstream of it), ``subgraph`` keeps what is up- and downstream of one dataset, ``trace_column``
follows a column upstream across hops, ``impact`` says what is downstream of a dataset or column
and whose products those are: the answer a reviewer of a breaking contract change needs. The
renderers print a graph or a trace as text, JSON, Graphviz dot or Mermaid.

A dataset is one node whoever names it: the same ``namespace`` and ``name`` (OpenLineage's naming
conventions, which every producer follows) are the same table.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from mage_project.lineage import naming

FORMATS = ("text", "json", "dot", "mermaid")
GOVERNANCE_FACET = "dataProductGovernance"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class LineageLookupError(LookupError):
    """A dataset or column the events do not name, or a short name that several datasets share."""


# --- the model -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Transformation:
    """How an input column becomes an output column (the columnLineage facet's words)."""

    type: str  # DIRECT, INDIRECT
    subtype: str | None = None  # IDENTITY, TRANSFORMATION, AGGREGATION, JOIN, FILTER, ...
    description: str | None = None
    masking: bool = False

    def text(self) -> str:
        return "/".join(filter(None, (self.type, self.subtype))) + (" (masked)" if self.masking else "")

    def to_dict(self) -> dict:
        return {"type": self.type, "subtype": self.subtype, "description": self.description,
                "masking": self.masking}


@dataclass(frozen=True)
class ColumnSource:
    """One input column of an output column, and the transformations between them."""

    namespace: str  # the input dataset's
    name: str
    column: str
    transformations: tuple[Transformation, ...]

    @property
    def dataset(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Dataset:
    namespace: str
    name: str
    facets: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def relation(self) -> str:
        """``schema.table`` of a table's name (``db.schema.table``), lower case, for the contracts."""
        return naming.relation_of(self.name)

    @property
    def column_sources(self) -> dict[str, tuple[ColumnSource, ...]]:
        """Output column -> its input columns, from the dataset's ``columnLineage`` facet."""
        facet = self.facets.get("columnLineage") or {}
        fields = facet.get("fields") if isinstance(facet, dict) else None
        return {column: tuple(_sources(spec)) for column, spec in (fields or {}).items()
                if isinstance(spec, dict)}

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns the dataset's ``schema`` and ``columnLineage`` facets name."""
        schema = self.facets.get("schema") or {}
        named = [f.get("name") for f in schema.get("fields") or () if isinstance(f, dict)]
        return tuple(dict.fromkeys([*filter(None, named), *self.column_sources]))


def _sources(spec: dict) -> Iterable[ColumnSource]:
    """The input columns of one output column's spec; an input without namespace, name and field
    is skipped (it names no column to trace)."""
    for item in spec.get("inputFields") or ():
        if not isinstance(item, dict) or not {"namespace", "name", "field"} <= set(item):
            continue
        given = item.get("transformations")
        flat = item if item.get("transformationType") else spec  # the facet's 1-0 spelling
        if given is None and flat.get("transformationType"):
            given = [{"type": flat["transformationType"],
                      "description": flat.get("transformationDescription")}]
        transformations = tuple(
            Transformation(t.get("type") or "UNKNOWN", t.get("subtype"), t.get("description"),
                           bool(t.get("masking"))) for t in given or () if isinstance(t, dict))
        yield ColumnSource(str(item["namespace"]), str(item["name"]), str(item["field"]), transformations)


@dataclass(frozen=True)
class Job:
    namespace: str
    name: str
    producer: str
    event_time: str  # of the event its inputs and outputs come from
    inputs: tuple[str, ...]  # dataset keys
    outputs: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass
class Graph:
    datasets: dict[str, Dataset] = field(default_factory=dict)
    jobs: dict[str, Job] = field(default_factory=dict)

    def readers(self, dataset: str) -> list[Job]:
        return [job for job in self.jobs.values() if dataset in job.inputs]

    def writers(self, dataset: str) -> list[Job]:
        return [job for job in self.jobs.values() if dataset in job.outputs]

    def resolve(self, text: str) -> str:
        """The key of the dataset ``text`` names: ``namespace/name``, or its ``name``, or the end
        of its name (``schema.table``, any case) when only one dataset matches."""
        lowered = text.lower()
        for matches in (lambda d: d.key == text, lambda d: d.name == text,
                        lambda d: d.key.lower() == lowered or d.name.lower() == lowered
                        or d.name.lower().endswith(f".{lowered}")):
            found = sorted(d.key for d in self.datasets.values() if matches(d))
            if len(found) == 1:
                return found[0]
            if found:
                raise LineageLookupError(f"{text!r} names {len(found)} datasets: {', '.join(found)};"
                                         " give one as namespace/name")
        raise LineageLookupError(f"no dataset {text!r} in the lineage events")


def _instant(text: object) -> datetime:
    """An event's time, for ordering (an unreadable one sorts first: the hub stores none)."""
    try:
        value = datetime.fromisoformat(str(text))
    except ValueError:
        return _EPOCH
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _dataset(graph: Graph, spec: object) -> str | None:
    """Add the dataset an event names (its facets newer than those held, facet by facet)."""
    if not isinstance(spec, dict) or not spec.get("namespace") or not spec.get("name"):
        return None
    key = f"{spec['namespace']}/{spec['name']}"
    held = graph.datasets.get(key)
    facets = {**(held.facets if held else {}), **(spec.get("facets") or {})}
    graph.datasets[key] = Dataset(spec["namespace"], spec["name"], facets)
    return key


def build(events: Iterable[dict]) -> Graph:
    """The graph of ``events`` (as JSON: RunEvents, JobEvents and DatasetEvents alike), oldest first
    so that the newest event of a job decides its inputs and outputs, and the newest of each
    facet of a dataset is the one kept. A job's event that names no dataset (a heartbeat, a FAIL
    without them) changes neither. Kept datasets: those of the jobs' current inputs and outputs,
    of DatasetEvents, and the input columns' (a table a job no longer reads is gone)."""
    graph, named = Graph(), set()
    ordered = sorted(enumerate(events), key=lambda item: (_instant(item[1].get("eventTime")), item[0]))
    for _, event in ordered:
        if (key := _dataset(graph, event.get("dataset"))) is not None:  # a DatasetEvent
            named.add(key)
        inputs = [k for k in (_dataset(graph, s) for s in event.get("inputs") or ()) if k]
        outputs = [k for k in (_dataset(graph, s) for s in event.get("outputs") or ()) if k]
        job = event.get("job") or {}
        if not job.get("namespace") or not job.get("name"):
            continue
        key = f"{job['namespace']}/{job['name']}"
        if inputs or outputs or key not in graph.jobs:
            graph.jobs[key] = Job(job["namespace"], job["name"], str(event.get("producer", "")),
                                  str(event.get("eventTime", "")), tuple(dict.fromkeys(inputs)),
                                  tuple(dict.fromkeys(outputs)))
    named.update(k for job in graph.jobs.values() for k in (*job.inputs, *job.outputs))
    every, graph.datasets = graph.datasets, {k: d for k, d in graph.datasets.items() if k in named}
    for dataset in list(graph.datasets.values()):
        for sources in dataset.column_sources.values():
            for s in sources:
                graph.datasets.setdefault(s.dataset, every.get(s.dataset) or Dataset(s.namespace, s.name))
    return graph


def _reach(graph: Graph, start: str, forward: bool) -> tuple[set[str], set[str]]:
    """(datasets, jobs) reached from dataset ``start`` downstream (``forward``) or upstream."""
    datasets, jobs, todo = {start}, set(), [start]
    while todo:
        current = todo.pop()
        for job in graph.readers(current) if forward else graph.writers(current):
            jobs.add(job.key)
            for key in job.outputs if forward else job.inputs:
                if key not in datasets:
                    datasets.add(key)
                    todo.append(key)
    return datasets, jobs


def data_flow(graph: Graph) -> Graph:
    """The jobs that write a dataset and what they read and write: the flow of the data, without
    the checks and tests that only read a table (nor jobs that name no dataset, as a pipeline's
    own run)."""
    return Graph(datasets=dict(graph.datasets), jobs={k: j for k, j in graph.jobs.items() if j.outputs})


def subgraph(graph: Graph, dataset: str) -> Graph:
    """What feeds ``dataset`` and what it feeds: the jobs on those paths, with only the edges
    between kept nodes (a downstream job's other inputs are not the dataset's lineage)."""
    key = graph.resolve(dataset)
    up_datasets, up_jobs = _reach(graph, key, forward=False)
    down_datasets, down_jobs = _reach(graph, key, forward=True)
    part = Graph(datasets={k: graph.datasets[k] for k in sorted(up_datasets | down_datasets)})

    def kept(job_key: str, dataset_key: str) -> bool:
        return ((job_key in up_jobs and dataset_key in up_datasets)
                or (job_key in down_jobs and dataset_key in down_datasets))

    for job_key in sorted(up_jobs | down_jobs):
        job = graph.jobs[job_key]
        part.jobs[job_key] = Job(job.namespace, job.name, job.producer, job.event_time,
                                 tuple(k for k in job.inputs if kept(job_key, k)),
                                 tuple(k for k in job.outputs if kept(job_key, k)))
    return part


# --- columns ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ColumnTrace:
    """A column and, recursively, the columns it is computed from."""

    dataset: str
    column: str
    transformations: tuple[Transformation, ...]  # into the column downstream of it; () at the root
    upstream: tuple[ColumnTrace, ...]

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "column": self.column,
                "transformations": [t.to_dict() for t in self.transformations],
                "upstream": [u.to_dict() for u in self.upstream]}


def _known_columns(graph: Graph, key: str) -> set[str]:
    """The columns of a dataset the events name: its facets', and those read from it."""
    known = set(graph.datasets[key].columns)
    for dataset in graph.datasets.values():
        for sources in dataset.column_sources.values():
            known.update(s.column for s in sources if s.dataset == key)
    return known


def trace_column(graph: Graph, dataset: str, column: str) -> ColumnTrace:
    """``column`` of ``dataset`` and its upstream columns across every hop the ``columnLineage``
    facets describe, with the transformations between (a cycle is followed once)."""
    key = graph.resolve(dataset)
    if column not in _known_columns(graph, key):
        raise LineageLookupError(f"no column {column!r} of {key} in the lineage events (its schema"
                                 " and columnLineage facets, and the columns read from it)")
    return _trace(graph, key, column, (), frozenset())


def _trace(graph: Graph, key: str, column: str, transformations: tuple[Transformation, ...],
           seen: frozenset) -> ColumnTrace:
    here = (key, column)
    sources = () if here in seen else graph.datasets[key].column_sources.get(column, ())
    return ColumnTrace(key, column, transformations, tuple(
        _trace(graph, s.dataset, s.column, s.transformations, seen | {here}) for s in sources))


def _column_reach(graph: Graph, starts: set[tuple[str, str]]) -> tuple[set, set]:
    """The columns computed, over any number of hops, from ``starts`` ((dataset, column) pairs),
    and the (input dataset, output dataset) pairs those hops cross."""
    readers: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for dataset in graph.datasets.values():
        for column, sources in dataset.column_sources.items():
            for source in sources:
                readers.setdefault((source.dataset, source.column), []).append((dataset.key, column))
    reached, crossed, todo = set(), set(), list(starts)
    while todo:
        current = todo.pop()
        for target in readers.get(current, ()):
            crossed.add((current[0], target[0]))
            if target not in reached and target not in starts:
                reached.add(target)
                todo.append(target)
    return reached, crossed


# --- impact --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AffectedProduct:
    domain: str
    product: str
    owner: str
    owner_email: str | None  # None: known from a governance facet only
    datasets: tuple[str, ...]  # its affected datasets
    found_by: tuple[str, ...]  # "contract" (the table's name), "facet" (dataProductGovernance)

    @property
    def key(self) -> str:
        return f"{self.domain}/{self.product}"

    def owner_text(self) -> str:
        return f"{self.owner} <{self.owner_email}>" if self.owner_email else self.owner


@dataclass(frozen=True)
class Impact:
    """What is downstream of a dataset (or of one of its columns)."""

    dataset: str
    column: str | None
    datasets: tuple[str, ...]  # every downstream dataset
    jobs: tuple[str, ...]  # the jobs between
    columns: tuple[tuple[str, str], ...]  # (dataset, column) computed from it, per columnLineage
    untraced: tuple[str, ...]  # downstream datasets with no column lineage: any column may be hit
    products: tuple[AffectedProduct, ...]

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "column": self.column, "datasets": list(self.datasets),
                "jobs": list(self.jobs),
                "columns": [{"dataset": d, "column": c} for d, c in self.columns],
                "untraced": list(self.untraced),
                "products": [{"domain": p.domain, "product": p.product, "owner": p.owner,
                              "owner_email": p.owner_email, "datasets": list(p.datasets),
                              "found_by": list(p.found_by)} for p in self.products]}


def _product_hits(dataset: Dataset, by_table: dict) -> list[tuple[tuple[str, str], str, object]]:
    """(domain, product), how it was found, the facet's owner: the products ``dataset`` is of."""
    hits: list[tuple[tuple[str, str], str, object]] = []
    if (product := by_table.get(dataset.relation)) is not None:
        hits.append(((product.domain, product.product), "contract", None))
    facet = dataset.facets.get(GOVERNANCE_FACET)
    if isinstance(facet, dict) and facet.get("domain") and facet.get("product"):
        hits.append(((str(facet["domain"]), str(facet["product"])), "facet", facet.get("owner")))
    return hits


def products_of(graph: Graph, keys: Iterable[str], products: Sequence) -> tuple[AffectedProduct, ...]:
    """The data products ``keys`` belong to: a contract's table whose ``schema.table`` ends the
    dataset's name (any case: ``warehouse.marts.t`` on PostgreSQL, ``DB.MARTS.T`` on Snowflake),
    or the dataset's ``dataProductGovernance`` facet. The contract's owner wins where both name
    one; a product no contract declares keeps the facet's owner."""
    by_table = {table.name.lower(): p for p in products for table in p.tables}
    by_key = {(p.domain, p.product): p for p in products}
    datasets: dict[tuple[str, str], dict[str, None]] = {}
    found_by: dict[tuple[str, str], set[str]] = {}
    owners: dict[tuple[str, str], str] = {}
    for key in keys:
        for name, how, facet_owner in _product_hits(graph.datasets[key], by_table):
            datasets.setdefault(name, {})[key] = None
            found_by.setdefault(name, set()).add(how)
            owners.setdefault(name, str(facet_owner or "unknown"))
    affected = []
    for name in sorted(datasets):
        contract = by_key.get(name)
        affected.append(AffectedProduct(
            name[0], name[1], contract.owner if contract else owners[name],
            contract.owner_email if contract else None, tuple(sorted(datasets[name])),
            tuple(sorted(found_by[name]))))
    return tuple(affected)


def _untraced_downstream(graph: Graph, starts: Iterable[str]) -> tuple[set[str], set[str]]:
    """(datasets, jobs) a change in ``starts`` reaches where column lineage cannot tell: a job's
    output it reports no column lineage of may use any column of its inputs, so it counts as
    wholly changed, and so does everything downstream of it."""
    untraced: set[str] = set()
    jobs: set[str] = set()
    todo = list(starts)
    while todo:
        current = todo.pop()
        for job in graph.readers(current):
            for output in job.outputs:
                if current in untraced or not graph.datasets[output].column_sources:
                    jobs.add(job.key)
                    if output not in untraced:
                        untraced.add(output)
                        todo.append(output)
    return untraced, jobs


def impact(events_or_graph: Graph | Iterable[dict], dataset: str, column: str | None = None,
           products: Sequence | None = None) -> Impact:
    """What a change to ``dataset`` (or its ``column``) reaches downstream, and whose products
    (``products``: the contracts' ``Product``s, by default every contract of the project).

    A dataset: everything downstream through the jobs, and every column computed from any of its
    columns. A column: the columns computed from it (columnLineage facets, across hops), their
    datasets, and, where a job reports no column lineage of an output, that whole output and all
    that is downstream of it, listed as ``untraced`` too (nothing says which columns it uses)."""
    graph = events_or_graph if isinstance(events_or_graph, Graph) else build(events_or_graph)
    key = graph.resolve(dataset)
    if products is None:
        from mage_project import contracts

        products = contracts.load_products()
    if column is None:
        datasets, jobs = _reach(graph, key, forward=True)
        datasets.discard(key)
        columns, _ = _column_reach(graph, {(key, c) for c in _known_columns(graph, key)})
        untraced = {d for d in datasets if not graph.datasets[d].column_sources}
    else:
        if column not in _known_columns(graph, key):
            raise LineageLookupError(f"no column {column!r} of {key} in the lineage events")
        columns, crossed = _column_reach(graph, {(key, column)})
        traced = {d for d, _ in columns}
        untraced, jobs = _untraced_downstream(graph, [key, *sorted(traced)])
        jobs |= {job.key for job in graph.jobs.values()
                 if any((i, o) in crossed for i in job.inputs for o in job.outputs)}
        datasets = traced | untraced
    return Impact(key, column, tuple(sorted(datasets)), tuple(sorted(jobs)), tuple(sorted(columns)),
                  tuple(sorted(untraced)), products_of(graph, sorted(datasets), products))


# --- rendering -------------------------------------------------------------------------------------


def _depths(graph: Graph) -> dict[str, int]:
    """Each dataset's and job's distance from the sources (datasets no job writes): the order
    the renderers list them in, sources first, then raw, staging, marts. A cycle is cut."""
    depth: dict[str, int] = {}

    def of_dataset(key: str, path: frozenset) -> int:
        if f"d:{key}" not in depth:
            writers = [j for j in graph.writers(key) if f"j:{j.key}" not in path]
            depth[f"d:{key}"] = max((of_job(j, path | {f"d:{key}"}) + 1 for j in writers), default=0)
        return depth[f"d:{key}"]

    def of_job(job: Job, path: frozenset) -> int:
        if f"j:{job.key}" not in depth:
            inputs = [k for k in job.inputs if f"d:{k}" not in path]
            depth[f"j:{job.key}"] = max((of_dataset(k, path | {f"j:{job.key}"}) for k in inputs),
                                        default=0)
        return depth[f"j:{job.key}"]

    for key in graph.datasets:
        of_dataset(key, frozenset())
    for job in graph.jobs.values():
        of_job(job, frozenset())
    return depth


def _ordered(graph: Graph) -> tuple[list[Dataset], list[Job]]:
    depth = _depths(graph)
    return (sorted(graph.datasets.values(), key=lambda d: (depth[f"d:{d.key}"], d.key)),
            sorted(graph.jobs.values(), key=lambda j: (depth[f"j:{j.key}"], j.key)))


def graph_to_dict(graph: Graph, products: Sequence = ()) -> dict:
    """The graph as JSON-ready data, sources first: what every renderer draws from, so the text,
    JSON, dot and Mermaid of one graph always show the same nodes."""
    datasets, jobs = _ordered(graph)
    owned = products_of(graph, [d.key for d in datasets], products)
    of = {key: [p.key for p in owned if key in p.datasets] for key in graph.datasets}
    return {
        "datasets": [{"id": d.key, "namespace": d.namespace, "name": d.name, "products": of[d.key]}
                     for d in datasets],
        "jobs": [{"id": j.key, "namespace": j.namespace, "name": j.name, "producer": j.producer,
                  "eventTime": j.event_time, "inputs": list(j.inputs), "outputs": list(j.outputs)}
                 for j in jobs],
        "products": [{"id": p.key, "domain": p.domain, "product": p.product, "owner": p.owner,
                      "owner_email": p.owner_email, "datasets": list(p.datasets)} for p in owned],
    }


def _graph_text(data: dict) -> str:
    """Datasets, then each job with its inputs and outputs, then the products: readable in a
    terminal without drawing edges."""
    lines = ["datasets, sources first:"]
    lines += [f"  {d['id']}" + (f"  [{', '.join(d['products'])}]" if d["products"] else "")
              for d in data["datasets"]]
    lines.append("jobs, sources first:")
    for job in data["jobs"]:
        lines.append(f"  {job['id']}  ({job['producer']}, {job['eventTime']})")
        lines += [f"    in   {key}" for key in job["inputs"]]
        lines += [f"    out  {key}" for key in job["outputs"]]
    lines.append("products:")
    for product in data["products"]:
        email = product["owner_email"]
        owner = f"{product['owner']} <{email}>" if email else product["owner"]
        lines.append(f"  {product['id']}  owner {owner}")
        lines += [f"    {key}" for key in product["datasets"]]
    return "\n".join(lines)


def _mermaid_label(text: str) -> str:
    """A Mermaid label between double quotes: its own quotes, angle brackets, backticks and ``#``
    as Mermaid's entity codes (``#`` first: it starts them), line breaks as spaces."""
    text = " ".join(text.split())
    for char, code in (("#", "#35;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;"), ("`", "#96;")):
        text = text.replace(char, code)
    return f'"{text}"'


def _dot_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


# Node shapes: dataset, job, product, column.
_MERMAID_SHAPES = {"d": ("[(", ")]"), "j": ("[[", "]]"), "p": ("{{", "}}"), "c": ("[", "]")}
_DOT_SHAPES = {"d": "shape=cylinder", "j": "shape=box, style=rounded", "p": "shape=hexagon",
               "c": "shape=box"}


def _diagram(nodes: list[tuple[str, str]], edges: list[tuple[str, str, str | None, bool]],
             fmt: str) -> str:
    """``nodes`` (id, label) with ids that start with their kind's letter (d, j, p, c) and are
    safe as bare identifiers; ``edges`` (from, to, label, dashed); as Mermaid or dot."""
    if fmt == "mermaid":
        lines = ["flowchart LR"]
        lines += [f"    {node}{_MERMAID_SHAPES[node[0]][0]}{_mermaid_label(label)}"
                  f"{_MERMAID_SHAPES[node[0]][1]}" for node, label in nodes]
        for source, target, label, dashed in edges:
            arrow = "-.->" if dashed else "-->"
            lines.append(f"    {source} {arrow}{f'|{_mermaid_label(label)}|' if label else ''} {target}")
        return "\n".join(lines)
    lines = ["digraph lineage {", "    rankdir=LR;"]
    lines += [f"    {node} [label={_dot_string(label)}, {_DOT_SHAPES[node[0]]}];" for node, label in nodes]
    for source, target, label, dashed in edges:
        attributes = [f"label={_dot_string(label)}"] if label else []
        attributes += ["style=dashed"] if dashed else []
        listed = f" [{', '.join(attributes)}]" if attributes else ""
        lines.append(f"    {source} -> {target}{listed};")
    lines.append("}")
    return "\n".join(lines)


def _graph_diagram(data: dict, fmt: str) -> str:
    """Dot or Mermaid of the graph: node ids numbered by kind (names are no safe identifiers),
    a product joined to its tables by a dashed edge (it is no job)."""
    ids = {("d", d["id"]): f"d{i}" for i, d in enumerate(data["datasets"], 1)}
    ids |= {("j", j["id"]): f"j{i}" for i, j in enumerate(data["jobs"], 1)}
    ids |= {("p", p["id"]): f"p{i}" for i, p in enumerate(data["products"], 1)}
    nodes = [(ids[("d", d["id"])], d["id"]) for d in data["datasets"]]
    nodes += [(ids[("j", j["id"])], j["id"]) for j in data["jobs"]]
    nodes += [(ids[("p", p["id"])], f"{p['id']} (owner {p['owner']})") for p in data["products"]]
    edges: list[tuple[str, str, str | None, bool]] = []
    for job in data["jobs"]:
        edges += [(ids[("d", key)], ids[("j", job["id"])], None, False) for key in job["inputs"]]
        edges += [(ids[("j", job["id"])], ids[("d", key)], None, False) for key in job["outputs"]]
    for product in data["products"]:
        edges += [(ids[("d", key)], ids[("p", product["id"])], None, True) for key in product["datasets"]]
    return _diagram(nodes, edges, fmt)


def render_graph(graph: Graph, fmt: str = "text", products: Sequence = ()) -> str:
    """The graph as ``fmt`` (one of FORMATS), datasets and jobs sources first, with the products
    its tables belong to (``products``: the contracts' ``Product``s)."""
    data = graph_to_dict(graph, products)
    if fmt == "json":
        return json.dumps(data, indent=2)
    if fmt == "text":
        return _graph_text(data)
    return _graph_diagram(data, fmt)


def _trace_edges(trace: ColumnTrace) -> list[tuple[tuple[str, str], tuple[str, str], str]]:
    """(upstream column, downstream column, transformations) of every hop of ``trace``."""
    edges = []
    for source in trace.upstream:
        label = ", ".join(t.text() for t in source.transformations)
        edges.append(((source.dataset, source.column), (trace.dataset, trace.column), label))
        edges += _trace_edges(source)
    return list(dict.fromkeys(edges))


def _trace_text(trace: ColumnTrace, depth: int = 0) -> list[str]:
    how = ", ".join(t.text() for t in trace.transformations)
    line = f"{'  ' * depth}{'<- ' if depth else ''}{trace.dataset}.{trace.column}{f'  {how}' if how else ''}"
    return [line] + [text for source in trace.upstream for text in _trace_text(source, depth + 1)]


def render_trace(trace: ColumnTrace, fmt: str = "text") -> str:
    """A column's upstream trace as ``fmt``: text indents each hop under the column it feeds."""
    if fmt == "json":
        return json.dumps(trace.to_dict(), indent=2)
    if fmt == "text":
        return "\n".join(_trace_text(trace))
    edges = _trace_edges(trace)
    columns = list(dict.fromkeys([(trace.dataset, trace.column)]
                                 + [column for edge in edges for column in edge[:2]]))
    ids = {column: f"c{i}" for i, column in enumerate(columns, 1)}
    nodes = [(ids[column], f"{column[0]}.{column[1]}") for column in columns]
    return _diagram(nodes, [(ids[a], ids[b], label or None, False) for a, b, label in edges], fmt)


def render_impact(result: Impact, fmt: str = "text") -> str:
    """The impact as JSON, or as text for a reviewer: columns, datasets (marked where no column
    lineage says which of their columns are hit), jobs, then products with their owners."""
    if fmt == "json":
        return json.dumps(result.to_dict(), indent=2)
    what = f"{result.dataset}.{result.column}" if result.column else result.dataset
    lines = [f"downstream of {what}:", f"columns ({len(result.columns)})"]
    lines += [f"  {dataset}.{column}" for dataset, column in result.columns]
    lines.append(f"datasets ({len(result.datasets)})")
    lines += [f"  {key}" + ("  (no column lineage: any column may be affected)"
                            if key in result.untraced else "") for key in result.datasets]
    lines.append(f"jobs ({len(result.jobs)})")
    lines += [f"  {key}" for key in result.jobs]
    lines.append(f"products ({len(result.products)})")
    for product in result.products:
        lines.append(f"  {product.key}  owner {product.owner_text()}")
        lines += [f"    {key}" for key in product.datasets]
    return "\n".join(lines)


def split_column(graph: Graph, text: str) -> tuple[str, str | None]:
    """``<dataset>[.<column>]`` as (dataset key, column or None): the whole text when it names a
    dataset, else its last dot-separated part is the column."""
    try:
        return graph.resolve(text), None
    except LineageLookupError as whole:
        dataset, dot, column = text.rpartition(".")
        if not dot or not dataset or not column:
            raise
        try:
            return graph.resolve(dataset), column
        except LineageLookupError:
            raise whole from None
