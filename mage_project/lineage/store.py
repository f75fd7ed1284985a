"""``ops.lineage_events``: every OpenLineage event the lineage hub took, whoever produced it, each
stored once; and what is read back (every event, for the graph; the runs of other producers that
wrote a product's tables, for its service levels).

An event is identified by its run id, event type and event time (the time as an instant: ``Z``
and ``+00:00`` are one), as the emitter's outbox and Marquez have it; a JobEvent or DatasetEvent,
which have no run, by its job's or dataset's name instead of the run id. The same event posted
again stores nothing and is still a success, so a producer may retry whatever it is unsure of.

The statements that differ between the warehouses are chosen here by the cursor's backend
(``warehouse.backend_for``), not added to the warehouse interface: PostgreSQL inserts with
``on conflict do nothing`` on the key into jsonb; Snowflake, which enforces no key, inserts where
the key is absent under the hub's write lock (``acquire_run_lock``: ops.run_locks), parsing the
text into a VARIANT (``parse_json``, which a VALUES list cannot call).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from mage_project import config, warehouse
from mage_project.lineage import naming
from mage_project.lineage.facets import PRODUCER

LOCK = "lineage_hub"  # Snowflake: the write lock of insert-where-absent (ops.run_locks)
TERMINAL = ("COMPLETE", "FAIL", "ABORT")
_COLUMNS = ("event_key", "run_id", "event_type", "event_time", "job_namespace", "job_name",
            "producer", "output_datasets", "event")


def event_time(event: dict) -> datetime:
    """The event's ``eventTime`` as an aware datetime; ValueError, naming the field, otherwise."""
    text = event.get("eventTime")
    try:
        value = datetime.fromisoformat(str(text))
    except ValueError:
        raise ValueError(f"$.eventTime: {text!r} is not an RFC 3339 date-time") from None
    if value.tzinfo is None:
        raise ValueError(f"$.eventTime: {text!r} has no UTC offset")
    return value.astimezone(UTC)


def event_key(event: dict) -> str:
    """What identifies the event (see the module's text), hashed: the table's key."""
    if (run := (event.get("run") or {}).get("runId")) is not None:
        subject = f"run:{run}"
    elif isinstance(event.get("dataset"), dict):
        subject = f"dataset:{event['dataset'].get('namespace')}/{event['dataset'].get('name')}"
    else:
        subject = f"job:{(event.get('job') or {}).get('namespace')}/{(event.get('job') or {}).get('name')}"
    identity = [subject, event.get("eventType"), event_time(event).isoformat()]
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()


def _outputs(event: dict) -> str:
    """The outputs as ``output_datasets`` holds them: ``namespace<TAB>name`` lines, each ended."""
    return "".join(f"{o.get('namespace')}\t{o.get('name')}\n" for o in event.get("outputs") or ()
                   if isinstance(o, dict))


def _row(event: dict) -> dict:
    job = event.get("job") or {}
    return {"event_key": event_key(event), "run_id": (event.get("run") or {}).get("runId"),
            "event_type": event.get("eventType"), "event_time": event_time(event).isoformat(),
            "job_namespace": job.get("namespace"), "job_name": job.get("name"),
            "producer": str(event.get("producer")), "output_datasets": _outputs(event),
            "event": json.dumps(event, ensure_ascii=False, separators=(",", ":"))}


def insert_event(cur, event: dict) -> bool:
    """Store ``event`` (validated) unless it is stored already: whether it was new."""
    row = _row(event)
    columns = ", ".join(_COLUMNS)
    if warehouse.backend_for(cur).NAME == "snowflake":
        db = warehouse.backend_for(cur)
        db.acquire_run_lock(cur, LOCK, config.run_lock_timeout_seconds())
        # The connector binds by writing values into the statement's text, where the stand-in
        # (fakesnow) reads "$name" even inside a string as a session variable: "$" goes as its
        # JSON escape, which parse_json reads back as "$" (a "$" is only ever in a JSON string).
        row["event"] = row["event"].replace("$", "\\u0024")
        values = ", ".join(f"%({c})s::timestamp_tz" if c == "event_time" else
                           f"parse_json(%({c})s)" if c == "event" else f"%({c})s" for c in _COLUMNS)
        cur.execute(f"insert into ops.lineage_events ({columns}) select {values}"  # noqa: S608 - constants
                    " where not exists (select 1 from ops.lineage_events where event_key = %(event_key)s)",
                    row)
    else:
        values = ", ".join(f"%({c})s::timestamptz" if c == "event_time" else
                           f"%({c})s::jsonb" if c == "event" else f"%({c})s" for c in _COLUMNS)
        cur.execute(f"insert into ops.lineage_events ({columns}) values ({values})"  # noqa: S608 - constants
                    " on conflict (event_key) do nothing", row)
    return cur.rowcount == 1


def _parsed(value) -> dict:
    """A JSON column's value: psycopg2 parses jsonb, Snowflake's connector hands a VARIANT as text."""
    return value if isinstance(value, dict) else json.loads(value)


def read_events(cur) -> list[dict]:
    """Every stored event, oldest first (as the graph reads them: the newest decides)."""
    cur.execute("select event from ops.lineage_events order by event_time, received_at, event_key")
    return [_parsed(value) for (value,) in cur.fetchall()]


@dataclass(frozen=True)
class ForeignRun:
    """A run of another producer (Airflow, dbt-ol, Spark, ...) that wrote some of the tables."""

    run_id: str
    job_namespace: str
    job_name: str
    producer: str
    tables: tuple[str, ...]  # the ``names`` (schema.table, lower case) it wrote
    state: str  # its newest terminal event's type (COMPLETE, FAIL, ABORT), else its newest's
    terminal: bool  # whether the run has ended
    started_at: datetime | None  # of its START event, if it sent one
    ended_at: datetime | None  # of its terminal event, if it has one


def _matching_runs(cur, relations: list[str], own_producers: Iterable[str]) -> list[tuple]:
    """The events of every run of another producer that output one of ``relations``, by run and
    time. ``like`` finds the candidates (an ``_`` matches any character there: the caller keeps
    only the exact ones), without reading the events' JSON."""
    own = list(own_producers)
    patterns = [p for r in relations for p in (f"%.{r}\n%", f"%\t{r}\n%")]
    not_own = "".join(" and producer <> %s" for _ in own)
    likes = " or ".join(["lower(output_datasets) like %s"] * len(patterns))
    columns = "run_id, event_type, event_time, job_namespace, job_name, producer, output_datasets"
    statement = (
        f"select {columns} from ops.lineage_events where run_id in"  # noqa: S608 - placeholders only
        f" (select run_id from ops.lineage_events where run_id is not null{not_own} and ({likes}))"
        " order by run_id, event_time")
    cur.execute(statement, [*own, *patterns])
    return cur.fetchall()


def _run(rows: list[tuple], relations: set[str]) -> ForeignRun | None:
    """One run from its events' rows (oldest first); None when none of its outputs is one of
    ``relations`` exactly."""
    tables = {naming.relation_of(line.partition("\t")[2]) for row in rows
              for line in (row[6] or "").splitlines()} & relations
    if not tables:
        return None
    run_id, _, _, namespace, name, producer, _ = rows[-1]
    ended = [row for row in rows if row[1] in TERMINAL]
    started = [row for row in rows if row[1] == "START"]
    last = ended[-1] if ended else rows[-1]
    return ForeignRun(run_id, namespace, name, producer, tuple(sorted(tables)), str(last[1]),
                      bool(ended), started[0][2] if started else None, ended[-1][2] if ended else None)


def runs_outputting(cur_or_db, names: Iterable[str], *,
                    own_producers: Iterable[str] = (PRODUCER,)) -> list[ForeignRun]:
    """The runs of producers other than this project (``own_producers``) that output any of
    ``names`` (a product's tables, ``schema.table``: matched to the end of a dataset's name, any
    case, as the graph matches them), each with its terminal state and time, oldest first.

    ``cur_or_db``: a cursor, or a warehouse backend (``warehouse.backend()``) to read through as
    the loader, in a transaction of its own."""
    if not hasattr(cur_or_db, "execute"):
        db = cur_or_db
        with db.connection(config.LOADER) as conn, db.transaction(conn) as cur:
            return runs_outputting(cur, names, own_producers=own_producers)
    relations = sorted({name.lower() for name in names})
    if not relations:
        return []
    by_run: dict[str, list[tuple]] = {}
    for row in _matching_runs(cur_or_db, relations, own_producers):
        by_run.setdefault(row[0], []).append(row)
    runs = [run for rows in by_run.values() if (run := _run(rows, set(relations))) is not None]
    return sorted(runs, key=lambda r: (r.started_at or r.ended_at or datetime.min.replace(tzinfo=UTC),
                                       r.run_id))
