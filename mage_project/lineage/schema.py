"""Whether an OpenLineage event is valid: against the vendored 2-0-2 core schema and the facet
schemas in ``spec/facets/``, offline (nothing is fetched; ``spec/SOURCES.md`` says where each file
came from).

The hub receives events from producers it does not control (Airflow's provider, dbt-ol, Spark) and
the project's own emitter must not drift from the spec, so both run every event through
``validate``, which answers with reasons a producer can act on: a JSON path and the rule broken.

- The core schema decides the event's shape: RunEvent, DatasetEvent or JobEvent, picked by the
  event's ``schemaURL`` fragment or else by its keys. Every facet is held there to the base facet
  (``_producer`` and ``_schemaURL``, both URIs), which is all the spec asks of a custom facet.
- A facet whose ``_schemaURL`` names a vendored facet schema (file and definition, for example
  ``https://openlineage.io/spec/facets/1-2-0/ColumnLineageDatasetFacet.json#/$defs/ColumnLineageDatasetFacet``)
  is also held to that schema. Another version, or a producer's own facet, is a custom facet.
- Formats are checked (``uuid`` runIds, ``date-time`` times, ``uri`` producers): the spec relies
  on them and jsonschema ignores them unless told.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from importlib.resources import files
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry
from referencing.jsonschema import DRAFT202012

SPEC_URL = "https://openlineage.io/spec/2-0-2/OpenLineage.json"

_EVENT_TYPES = ("RunEvent", "DatasetEvent", "JobEvent")
# The formats the vendored schemas use; each needs its checker installed (rfc3339-validator for
# date-time, rfc3986-validator for uri), or jsonschema would pass any string silently.
_FORMATS = ("date-time", "uri", "uuid")
_FORMAT_CHECKER = Draft202012Validator.FORMAT_CHECKER
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_MESSAGE_LIMIT = 240  # a reason quotes the offending value; a whole facet would drown the rule


def validate(event: Mapping[str, Any]) -> list[str]:
    """The reasons ``event`` is not a valid OpenLineage event, ``[]`` when it is, in the order of
    where they are in the event (an object's own before its members').

    Each reason reads ``<json path>: <rule broken>``, for example
    ``outputs[0].facets.columnLineage.fields.net_revenue: 'inputFields' is a required property``.
    """
    events, facets = _validators()
    found = _reasons((), events[_event_type(event)].iter_errors(event))
    if isinstance(event, Mapping):
        for path, facet in _facets(event):
            found.extend(_facet_reasons(path, facet, facets))
    unique = dict.fromkeys(found)  # a facet schema repeats the core's base-facet rules
    return [f"{_path(path)}: {message}" for path, message in sorted(unique, key=_order)]


def facet_schema_urls() -> frozenset[str]:
    """The ``$id`` of every vendored facet schema, without fragment: an emitter checks that the
    ``_schemaURL`` of each facet it sends (fragment removed) is one of them, so its facets are
    held to a schema here rather than passed as custom ones."""
    return frozenset(uri for uri in _documents() if uri != SPEC_URL)


def _event_type(event: Any) -> str:
    """RunEvent, DatasetEvent or JobEvent: as the event's ``schemaURL`` says (``#/$defs/JobEvent``,
    or ``#/definitions/JobEvent`` from a 1.x producer), else by its keys (a ``run``: RunEvent; a
    ``dataset``: DatasetEvent; a ``job`` only: JobEvent). Anything else is judged as a RunEvent,
    the common case, so its reasons name what a run event lacks."""
    if not isinstance(event, Mapping):
        return "RunEvent"
    url = event.get("schemaURL")
    if isinstance(url, str):
        named = url.partition("#")[2].rstrip("/").rpartition("/")[2]
        if named in _EVENT_TYPES:
            return named
    if "run" in event:
        return "RunEvent"
    if "dataset" in event:
        return "DatasetEvent"
    return "JobEvent" if "job" in event else "RunEvent"


def _facets(event: Mapping[str, Any]) -> Iterator[tuple[tuple, Any]]:
    """(path, facet) of every facet of the event: run, job and dataset facets, and the facets,
    inputFacets and outputFacets of each input and output."""
    bags: list[tuple[tuple, Any]] = []
    for owner in ("run", "job", "dataset"):
        if isinstance(event.get(owner), Mapping):
            bags.append(((owner, "facets"), event[owner].get("facets")))
    for side, own in (("inputs", "inputFacets"), ("outputs", "outputFacets")):
        datasets = event.get(side)
        for i, dataset in enumerate(datasets if isinstance(datasets, list) else []):
            if isinstance(dataset, Mapping):
                bags += [((side, i, "facets"), dataset.get("facets")), ((side, i, own), dataset.get(own))]
    for path, bag in bags:
        if isinstance(bag, Mapping):
            for name, facet in bag.items():
                yield (*path, name), facet


def _facet_reasons(path: tuple, facet: Any, facets: Mapping[str, Draft202012Validator],
                   ) -> list[tuple[tuple, str]]:
    """Reasons a facet breaks the vendored schema its ``_schemaURL`` names; none for a custom
    facet (the core already held it to the base facet) or a deletion, whose body is empty by
    design (``_deleted: true`` carries no fields)."""
    if not isinstance(facet, Mapping) or facet.get("_deleted") is True:
        return []
    url = facet.get("_schemaURL")
    if not isinstance(url, str):
        return []
    base, _, fragment = url.partition("#")
    if base not in facets:
        return []
    validator = facets.get(f"{base}#{fragment}" if fragment.strip("/") else base)
    if validator is None:
        return [((*path, "_schemaURL"), f"{url!r} names no definition of the vendored {base}")]
    return _reasons(path, validator.iter_errors(facet))


def _reasons(prefix: tuple, errors: Iterable[ValidationError]) -> list[tuple[tuple, str]]:
    """(path, message) of each error that names a rule (see ``_leaves``), its path prefixed with
    where the validated value sits in the event."""
    return [((*prefix, *leaf.absolute_path), _message(leaf)) for error in errors for leaf in _leaves(error)]


def _order(reason: tuple[tuple, str]) -> tuple:
    """Sort key of a reason: by path, list items by index, then by message."""
    path, message = reason
    return tuple((0, part, "") if isinstance(part, int) else (1, 0, part) for part in path), message


def _leaves(error: ValidationError) -> list[ValidationError]:
    """The errors that say what is wrong. The core wraps every facet map in a one-branch
    ``anyOf``, whose own message ("is not valid under any of the given schemas") names no rule:
    descend into the branch, or into the best-matching branch where there are several."""
    if error.validator not in ("anyOf", "oneOf") or not error.context:
        return [error]
    branches: dict[Any, list[ValidationError]] = {}
    for sub in error.context:
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)
    chosen = next(iter(branches.values())) if len(branches) == 1 else [best_match(error.context)]
    return [leaf for sub in chosen for leaf in _leaves(sub)]


def _message(error: ValidationError) -> str:
    """jsonschema's message, shortened: its ``not`` message and any over-long one quote whole
    values (a dataset, a facet), which would bury the rule in a hub's logs."""
    if error.validator == "not":
        return f"must not match {json.dumps(error.validator_value)}"
    message = error.message
    return message if len(message) <= _MESSAGE_LIMIT else message[:_MESSAGE_LIMIT - 1] + "…"


def _path(parts: tuple) -> str:
    """``outputs[0].facets.columnLineage``; a key that is no identifier is quoted in brackets
    (``fields["order id"]``), so the path stays unambiguous; ``$`` is the event itself."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _IDENTIFIER.match(part):
            text += f".{part}" if text else part
        else:
            text += f"[{json.dumps(part)}]"
    return text or "$"


@functools.cache
def _documents() -> dict[str, dict]:
    """Every vendored schema by its ``$id``: the core and ``facets/*.json``, read from the package
    (they ship as package data). Each must declare draft 2020-12, the dialect they are read as."""
    spec = files(__package__) / "spec"
    paths = [spec / "OpenLineage.json"]
    facets = (path for path in (spec / "facets").iterdir() if path.name.endswith(".json"))
    paths += sorted(facets, key=lambda path: path.name)
    documents = {}
    for path in paths:
        document = json.loads(path.read_text(encoding="utf-8"))
        if document.get("$schema") != "https://json-schema.org/draft/2020-12/schema":
            raise ValueError(f"{path.name}: $schema is {document.get('$schema')!r}, not draft 2020-12")
        if document["$id"] in documents:
            raise ValueError(f"{path.name}: $id {document['$id']} is vendored twice")
        documents[document["$id"]] = document
    return documents


@functools.cache
def _validators() -> tuple[dict[str, Draft202012Validator], dict[str, Draft202012Validator]]:
    """The event validators by type and the facet validators by URL (each facet file, and each of
    its ``$defs`` as ``<file>#/$defs/<name>``), built once: the hub validates every POST.

    The registry holds only the vendored files and has no ``retrieve``: a ``$ref`` to anything
    else fails instead of being fetched."""
    missing = [name for name in _FORMATS if name not in _FORMAT_CHECKER.checkers]
    if missing:
        raise RuntimeError(f"jsonschema cannot check format {', '.join(missing)}: install "
                           "rfc3339-validator and rfc3986-validator (requirements.txt pins them)")
    documents = _documents()
    registry = Registry().with_resources(
        (uri, DRAFT202012.create_resource(document)) for uri, document in documents.items()).crawl()

    def compile_(ref: str) -> Draft202012Validator:
        return Draft202012Validator({"$ref": ref}, registry=registry, format_checker=_FORMAT_CHECKER)

    events = {name: compile_(f"{SPEC_URL}#/$defs/{name}") for name in _EVENT_TYPES}
    facets = {}
    for uri, document in documents.items():
        if uri == SPEC_URL:
            continue
        facets[uri] = compile_(uri)
        facets.update({f"{uri}#/$defs/{name}": compile_(f"{uri}#/$defs/{name}")
                       for name in document.get("$defs", {})})
    return events, facets
