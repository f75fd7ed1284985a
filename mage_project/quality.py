"""Quality checks and their results: Great Expectations on the raw loads, dbt tests on the models.

Every check gives a ``QualityResult`` (name, kind, table, severity, passed, observed values,
a small failing sample), and ``store`` keeps them all in ``ops.quality_results``.

- ``run_expectations``: the suites declared beside the entities (``mage_project.entities``)
  over the rows of given file versions, read back from the raw table in chunks of
  ``chunk_rows`` (never the whole table in memory), each chunk validated by Great
  Expectations, counts and verdicts added up per expectation.
- ``dbt_test_results``: the tests of a ``dbt build`` (``mage_project.transform``) as results.

Functions take a DB-API connection and never open one: plain ``select``s with ``%s``
parameters, which both warehouses' drivers accept (what differs, a streaming cursor, comes
from the connection's warehouse backend). Identifiers are checked
against a strict pattern and left unquoted, so each warehouse folds them to its own case.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from mage_project import warehouse
from mage_project.entities import Entity, Expectation

log = logging.getLogger(__name__)

CHUNK_ROWS = 50_000
SAMPLE_SIZE = 10
LINEAGE = ("_file_key", "_file_checksum", "_row_number")
VERSIONS_PER_QUERY = 100
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")


@dataclass(frozen=True)
class FileVersion:
    """One loaded version of a landing file: its rows carry ``_file_key`` and ``_file_checksum``."""

    entity: Entity
    file_key: str
    checksum: str


@dataclass(frozen=True)
class QualityResult:
    check_name: str
    check_kind: str  # "great_expectations" | "dbt_test" | "contract"
    table_name: str
    severity: str  # "error" | "warn"
    passed: bool | None  # None: the check did not run
    observed: dict = field(hash=False)
    failing_sample: list | None = field(default=None, hash=False)

    @property
    def blocking(self) -> bool:
        """Failed at error level: the marts must not be published."""
        return self.passed is False and self.severity == "error"

    @property
    def problem(self) -> str:
        """What a failed check found, in a line: a contract check's own message, or an
        expectation's counts and first failing rows."""
        o = self.observed
        if "message" in o:
            return o["message"]
        if "unexpected_count" in o:
            return (f"{self.table_name} {self.check_name}: {o['unexpected_count']} of "
                    f"{o['element_count']} unexpected, e.g. {(self.failing_sample or [])[:3]}")
        return f"{self.table_name} {self.check_name}: failed ({o})"

    def __str__(self) -> str:
        status = {True: "passed", False: "FAILED", None: "not run"}[self.passed]
        return f"{self.table_name} {self.check_name} [{self.severity}] {status}: {self.observed}"


def identifier(name: str) -> str:
    """``name`` if it is a plain lower-case SQL identifier; raises otherwise."""
    if not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"not a plain SQL identifier: {name!r}")
    return name


# --- Great Expectations over the raw rows -------------------------------------------------------


def run_expectations(conn, versions: Iterable[FileVersion], *, chunk_rows: int = CHUNK_ROWS,
                     sample_size: int = SAMPLE_SIZE) -> list[QualityResult]:
    """Each checked entity's suite over the rows of ``versions``: one result per expectation."""
    by_entity: dict[str, tuple[Entity, list[FileVersion]]] = {}
    for version in versions:
        by_entity.setdefault(version.entity.table, (version.entity, []))[1].append(version)
    if not by_entity:
        return []
    validator = _Validator(sample_size)
    results = []
    for entity, entity_versions in by_entity.values():
        results += _run_suite(conn, validator, entity, entity_versions, chunk_rows)
    return results


def _run_suite(conn, validator: _Validator, entity: Entity, versions: list[FileVersion],
               chunk_rows: int) -> list[QualityResult]:
    import pandas as pd

    rows_suite = [e for e in entity.expectations if e.scope == "rows"]
    files_suite = [e for e in entity.expectations if e.scope == "files"]
    tallies = {e.check_name: _Tally() for e in entity.expectations}
    rows_per_version = {(v.file_key, v.checksum): 0 for v in versions}
    for chunk in read_rows(conn, entity, versions, chunk_rows):
        for (key, checksum), n in chunk.groupby(["_file_key", "_file_checksum"]).size().items():
            rows_per_version[(key, checksum)] += int(n)
        if rows_suite:
            index = ["_file_key", "_row_number", *entity.key_columns]
            for name, result in validator.validate(chunk, rows_suite, index).items():
                tallies[name].add(result, validator.sample_size)
    if files_suite:
        files = pd.DataFrame(
            [(key, checksum, n) for (key, checksum), n in rows_per_version.items()],
            columns=["_file_key", "_file_checksum", "rows"],
        )
        for name, result in validator.validate(files, files_suite, ["_file_key"]).items():
            tallies[name].add(result, validator.sample_size)
    table = f"{entity.schema}.{entity.table}"
    return [
        QualityResult(
            check_name=e.check_name,
            check_kind="great_expectations",
            table_name=table,
            severity=e.severity,
            passed=tallies[e.check_name].passed,
            observed={"expectation_type": e.type, **tallies[e.check_name].observed(),
                      "file_versions": len(versions)},
            failing_sample=tallies[e.check_name].sample or None,
        )
        for e in entity.expectations
    ]


def read_rows(conn, entity: Entity, versions: Sequence[FileVersion],
              chunk_rows: int = CHUNK_ROWS) -> Iterator:
    """The entity's raw rows of ``versions`` (declared columns plus lineage), as DataFrames of
    at most ``chunk_rows`` rows, streamed from the warehouse."""
    import pandas as pd

    columns = ", ".join(identifier(c) for c in [*entity.column_names, *LINEAGE])
    table = f"{identifier(entity.schema)}.{identifier(entity.table)}"
    for start in range(0, len(versions), VERSIONS_PER_QUERY):
        batch = versions[start:start + VERSIONS_PER_QUERY]
        where = " or ".join(["(_file_key = %s and _file_checksum = %s)"] * len(batch))
        cur = warehouse.backend_for(conn).streaming_cursor(conn)
        try:
            cur.execute(f"select {columns} from {table} where {where}",  # noqa: S608 - identifiers checked, values bound
                        [p for v in batch for p in (v.file_key, v.checksum)])
            names = None
            while rows := cur.fetchmany(chunk_rows):
                # Snowflake answers unquoted names in upper case.
                names = names or [d[0].lower() for d in cur.description]
                yield pd.DataFrame.from_records(rows, columns=names)
        finally:
            cur.close()


class _Validator:
    """Great Expectations on pandas DataFrames, with an ephemeral context that writes nothing."""

    def __init__(self, sample_size: int) -> None:
        os.environ.setdefault("GE_USAGE_STATS", "False")
        import great_expectations as gx  # slow (about 6 s): only when a check runs
        from great_expectations.data_context.types.base import ProgressBarsConfig

        for name in ("great_expectations", "great_expectations.data_context.types.base"):
            logging.getLogger(name).setLevel(logging.WARNING)  # the second sets its own INFO
        self.sample_size = sample_size
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        self._context = context
        self._asset = context.sources.add_or_update_pandas("quality").add_dataframe_asset("rows")

    def validate(self, frame, expectations: list[Expectation], index_columns: list[str]) -> dict:
        """GE's result of each expectation over ``frame``, by check name."""
        from great_expectations.core import ExpectationSuite
        from great_expectations.core.expectation_configuration import ExpectationConfiguration

        suite = ExpectationSuite("quality", expectations=[
            ExpectationConfiguration(e.type, dict(e.kwargs), meta={"check": e.check_name})
            for e in expectations
        ])
        validator = self._context.get_validator(
            batch_request=self._asset.build_batch_request(dataframe=frame), expectation_suite=suite)
        outcome = validator.validate(catch_exceptions=False, result_format={
            "result_format": "SUMMARY", "partial_unexpected_count": self.sample_size,
            "unexpected_index_column_names": list(dict.fromkeys(index_columns)),
        })
        return {r.expectation_config.meta["check"]: r for r in outcome.results}


class _Tally:
    """One expectation's counts and verdict, added up over chunks."""

    def __init__(self) -> None:
        self.passed = True
        self.element_count = self.unexpected_count = self.missing_count = 0
        self.sample: list = []

    def add(self, result, sample_size: int) -> None:
        counts = result.result
        if "unexpected_count" not in counts:
            raise ValueError(f"{result.expectation_config.expectation_type} is not row-wise: "
                             "its verdict cannot be added up over chunks")
        # Without "mostly" (refused by Expectation) an expectation holds only where it holds in
        # every chunk, so "and" over the chunks' verdicts is exact.
        self.passed = self.passed and bool(result.success)
        self.element_count += counts["element_count"]
        self.unexpected_count += counts["unexpected_count"]
        self.missing_count += counts.get("missing_count", 0)
        room = sample_size - len(self.sample)
        self.sample += [jsonable(row) for row in counts.get("partial_unexpected_index_list", [])[:room]]

    def observed(self) -> dict:
        checked = self.element_count - self.missing_count
        return {
            "element_count": self.element_count,
            "missing_count": self.missing_count,
            "unexpected_count": self.unexpected_count,
            "unexpected_percent": round(100 * self.unexpected_count / checked, 6) if checked else 0.0,
        }


def jsonable(value):
    """``value`` with what JSON cannot hold turned into text (timestamps as ISO 8601 in UTC,
    exact decimals as strings) and missing values as None."""
    import numpy as np
    import pandas as pd

    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.datetime64):
        value = pd.Timestamp(value)
    elif isinstance(value, np.generic):
        value = value.item()
    if value is None or pd.isna(value):
        return None
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).isoformat()
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


# --- dbt tests ------------------------------------------------------------------------------------


def dbt_test_results(tests: Iterable[dict], conn=None, sample_size: int = SAMPLE_SIZE
                     ) -> list[QualityResult]:
    """The tests of a dbt build (``transform.summary``'s ``test_results``) as results.

    With ``conn``, a failed test's sample is the first rows of its own query (the rows that
    make it fail), read back from the relation it tested.
    """
    results = []
    for test in tests:
        passed = {"pass": True, "skipped": None}.get(test["status"], False)
        sample = None
        if passed is False and conn is not None and test.get("compiled_code"):
            sample = query_sample(conn, test["compiled_code"], sample_size)
        observed = {"status": test["status"], "failures": test.get("failures")}
        if test.get("relation"):
            observed["relation"] = test["relation"]
        if passed is not True and test.get("message"):
            observed["message"] = test["message"]
        results.append(QualityResult(
            check_name=test["name"], check_kind="dbt_test", table_name=test["table"] or "-",
            severity=test["severity"], passed=passed, observed=observed, failing_sample=sample,
        ))
    return results


def query_sample(conn, select: str, limit: int) -> list | None:
    """The first ``limit`` rows of a ``select`` as dicts, or None when it cannot be read."""
    cur = conn.cursor()
    try:
        cur.execute(f"select * from ({select}) as failing limit {int(limit)}")  # noqa: S608 - dbt's compiled test
        names = [d[0].lower() for d in cur.description]
        return [jsonable(dict(zip(names, row, strict=True))) for row in cur.fetchall()]
    except Exception as exc:  # the sample is a courtesy: the result is stored without it
        log.warning("no failing sample: %s", exc)
        conn.rollback()
        return None
    finally:
        cur.close()


# --- storing ------------------------------------------------------------------------------------

_COLUMNS = ("run_id", "pipeline", "check_name", "check_kind", "table_name", "severity", "passed",
            "observed", "failing_sample")


def store(cur, run_id: str, pipeline: str, results: Sequence[QualityResult]) -> int:
    """Add ``results`` to ops.quality_results, whatever their verdicts, through the cursor of the
    caller's transaction. Returns the rows added.

    ``observed`` and ``failing_sample`` are bound as JSON text (PostgreSQL casts it to jsonb).
    """
    rows = [
        (run_id, pipeline, r.check_name, r.check_kind, r.table_name, r.severity, r.passed,
         json.dumps(r.observed), None if r.failing_sample is None else json.dumps(r.failing_sample))
        for r in results
    ]
    if rows:
        cur.executemany(
            f"insert into ops.quality_results ({', '.join(_COLUMNS)})"  # noqa: S608 - constants
            f" values ({', '.join(['%s'] * len(_COLUMNS))})",
            rows,
        )
    return len(rows)


def summary(results: Sequence[QualityResult]) -> dict:
    """Counts and the names of what failed, small enough to pass between blocks."""
    return {
        "checks": len(results),
        "passed": sum(1 for r in results if r.passed),
        "failed_error": [f"{r.table_name} {r.check_name}" for r in results if r.blocking],
        "failed_warn": [f"{r.table_name} {r.check_name}" for r in results
                        if r.passed is False and r.severity == "warn"],
    }
