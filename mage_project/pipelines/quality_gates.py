"""warehouse_elt's quality gates: expectations on the raw loads, then write-audit-publish.

1. ``check_raw_file_drops`` runs the entities' Great Expectations suites over every loaded file
   version the gate has not passed yet (the latest loaded version of each landing file), stores
   every result in ``ops.quality_results`` and the verdict on each version in
   ``ops.file_manifest.quality_status``, and raises when an error-level expectation failed. A
   version that failed is checked again by every run until a new version of its file replaces
   it, so the marts stay as they are until then.
2. ``build_and_publish`` builds the dbt project with the marts in their audit schema, stores
   every dbt test result, and only when all passed swaps the marts in. It refuses to publish
   while a loaded version has not passed the gate (the dbt block run on its own, or a file
   loaded by another run meanwhile).

Results are committed before anything raises: they are the evidence of why nothing was published.
Everything runs on the configured warehouse (``warehouse.writer()``), in portable SQL.
"""

from __future__ import annotations

import hashlib
import logging
from contextlib import contextmanager

from mage_project import config, quality, transform, warehouse
from mage_project.entities import FILE_ENTITIES

log = logging.getLogger(__name__)
PIPELINE = "warehouse_elt"
_ENTITIES = {e.table: e for e in FILE_ENTITIES.values()}


class QualityGateFailed(RuntimeError):
    """An error-level check failed, or raw data has not passed the gate: nothing is published."""


def versions_to_check(cur) -> list[quality.FileVersion]:
    """The latest loaded version of every landing file, unless the gate passed it already."""
    cur.execute(
        "select m.entity, m.file_key, m.checksum from ops.file_manifest as m"
        " join (select file_key, max(version) as version from ops.file_manifest"
        "       where status = 'loaded' group by file_key) as latest"
        " on latest.file_key = m.file_key and latest.version = m.version"
        " where m.quality_status is distinct from 'passed'"
        " order by m.entity, m.file_key"
    )
    return [quality.FileVersion(_ENTITIES[entity], key, checksum)
            for entity, key, checksum in cur.fetchall()]


def _mark(cur, versions: list[quality.FileVersion], status: str, run_id: str) -> None:
    cur.executemany(
        "update ops.file_manifest set quality_status = %s, quality_run_id = %s"
        " where file_key = %s and checksum = %s and status = 'loaded'",
        [(status, run_id, v.file_key, v.checksum) for v in versions],
    )


def check_raw_file_drops(run_id: str) -> dict:
    """The raw-load gate. Returns a summary of the checks; raises QualityGateFailed when an
    error-level expectation failed (after storing every result)."""
    db = warehouse.writer()
    with db.connection() as conn:
        db.migrate(conn)
        with db.transaction(conn) as cur:
            versions = versions_to_check(cur)
        results = quality.run_expectations(conn, versions)
        conn.rollback()  # end the reading transaction (psycopg2 opens one implicitly)
        summary = {"run_id": run_id, "file_versions": len(versions), **quality.summary(results)}
        with db.transaction(conn) as cur:
            _mark(cur, versions, "failed" if summary["failed_error"] else "passed", run_id)
            summary["stored"] = quality.store(cur, run_id, PIPELINE, results)
    for result in results:
        if result.passed is False:
            log.warning("%s", result)
    log.info("%s: quality gate over %d file versions: %d checks, %d failed at error level, "
             "%d at warn level", PIPELINE, len(versions), summary["checks"],
             len(summary["failed_error"]), len(summary["failed_warn"]))
    if summary["failed_error"]:
        raise QualityGateFailed(_failure_message(results))
    return summary


def _failure_message(results: list[quality.QualityResult]) -> str:
    blocking = [r for r in results if r.blocking]
    lines = [f"raw quality gate: {len(blocking)} error-level check(s) failed; the marts were not "
             "rebuilt and stay as they were (details in ops.quality_results)"]
    for r in blocking:
        o = r.observed
        lines.append(f"- {r.table_name} {r.check_name}: {o['unexpected_count']} of "
                     f"{o['element_count']} unexpected, e.g. {(r.failing_sample or [])[:3]}")
    return "\n".join(lines)


def inputs_fingerprint(cur) -> str:
    """What the marts are built from: the loaded file versions, the successful activity loads
    and the dbt project's own files. Unchanged since the last publish: nothing to rebuild."""
    cur.execute("select count(*), max(recorded_at) from ops.file_manifest where status = 'loaded'")
    files = cur.fetchone()
    cur.execute("select count(*), max(finished_at) from ops.pipeline_runs"
                " where pipeline = 'user_activity_ingest' and status = 'success'")
    activity = cur.fetchone()
    digest = hashlib.sha256(repr((tuple(files), tuple(activity))).encode())
    for path in sorted(p for p in transform.DBT_PROJECT.rglob("*")
                       if p.is_file() and p.suffix in (".sql", ".yml")):
        digest.update(str(path.relative_to(transform.DBT_PROJECT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _last_published(cur) -> str | None:
    cur.execute("select inputs_fingerprint from ops.marts_publications"
                " order by published_at desc limit 1")
    row = cur.fetchone()
    return row[0] if row else None


def build_and_publish(run_id: str, select: str | None = None) -> dict:
    """Write-audit-publish of the marts: build and test them in the audit schema, store every
    test result, publish when all passed. Raises (and publishes nothing) otherwise.

    When nothing they are built from changed since the last publish (and no ``select`` asks
    for a build), the marts are up to date: nothing is built."""
    db = warehouse.writer()
    with db.connection() as conn:
        db.migrate(conn)
        with _publish_lock(conn):
            _require_gate_passed(db, conn)
            with db.transaction(conn) as cur:
                inputs = inputs_fingerprint(cur)
                if not select and _last_published(cur) == inputs:
                    log.info("%s: nothing the marts are built from changed since their last "
                             "publish; not rebuilding them", PIPELINE)
                    return {"models": 0, "tests": 0, "statuses": {}, "published": False,
                            "up_to_date": True}
            try:
                summary = transform.build(select, audit=True)
            except transform.DbtBuildError as exc:
                _store_tests(db, conn, run_id, exc.summary)
                raise
            results = _store_tests(db, conn, run_id, summary)
            _require_gate_passed(db, conn)  # nothing loaded meanwhile that the gate has not seen
            transform.publish()
            with db.transaction(conn) as cur:
                cur.execute("insert into ops.marts_publications (run_id, inputs_fingerprint)"
                            " values (%s, %s)", (run_id, inputs))
    log.info("%s: marts published after %d dbt tests passed", PIPELINE, summary["tests"])
    return {**{k: v for k, v in summary.items() if k != "test_results"},
            "quality": quality.summary(results), "published": True}


def _store_tests(db, conn, run_id: str, summary: dict) -> list[quality.QualityResult]:
    results = quality.dbt_test_results(summary["test_results"], conn)
    with db.transaction(conn) as cur:
        quality.store(cur, run_id, PIPELINE, results)
    return results


def _require_gate_passed(db, conn) -> None:
    with db.transaction(conn) as cur:
        pending = versions_to_check(cur)
    if pending:
        keys = ", ".join(v.file_key for v in pending[:5])
        raise QualityGateFailed(
            f"not publishing the marts: {len(pending)} loaded file version(s) have not passed the "
            f"raw quality gate (check_raw_quality_file_drops), e.g. {keys}")


@contextmanager
def _publish_lock(conn):
    """One build-and-publish at a time: a second waits (RUN_LOCK_TIMEOUT_SECONDS), since two
    builds into the same audit schema would publish each other's half-built tables.

    On PostgreSQL a session-level advisory lock, held without an open transaction for the length
    of the dbt build. Snowflake has none to offer (a row lock in ops.run_locks would need a
    transaction open for as long, and would stop the loads meanwhile): there the scheduler's
    skip_if_previous_running keeps runs apart.
    """
    if config.warehouse() != "postgres":
        yield
        return
    import psycopg2

    from mage_project.warehouse import postgres

    key = postgres.lock_key(f"pipeline:{PIPELINE}:publish")
    timeout = config.run_lock_timeout_seconds()
    with conn.cursor() as cur:
        if timeout > 0:
            cur.execute("select set_config('lock_timeout', %s, false)", (f"{int(timeout * 1000)}ms",))
            try:
                cur.execute("select pg_advisory_lock(%s)", (key,))
            except psycopg2.errors.LockNotAvailable:
                conn.rollback()
                raise warehouse.RunLockError(
                    f"another run of {PIPELINE} is building the marts; gave up after {timeout:g} s"
                    " (RUN_LOCK_TIMEOUT_SECONDS)") from None
            finally:
                cur.execute("select set_config('lock_timeout', '0', false)")
        else:
            cur.execute("select pg_try_advisory_lock(%s)", (key,))
            if not cur.fetchone()[0]:
                raise warehouse.RunLockError(f"another run of {PIPELINE} is building the marts")
    conn.commit()
    try:
        yield
    finally:
        try:
            conn.rollback()
            with conn.cursor() as cur:
                cur.execute("select pg_advisory_unlock(%s)", (key,))
            conn.commit()
        except psycopg2.Error:
            log.warning("could not release the publish lock; closing the connection releases it")
